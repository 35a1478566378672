#!/usr/bin/env bash
# Kills one of 4 ranks mid-collective; the job must end non-zero within
# (timeout 10 s + a few seconds), with a message naming the dead rank.
set -uo pipefail
bin="$1"
log="${TEST_TMPDIR:-/tmp}/kill.log"
start=$(date +%s)
mpirun -np 4 --oversubscribe --bind-to none --mca btl self,vader "$bin" >"$log" 2>&1
code=$?
elapsed=$(( $(date +%s) - start ))
cat "$log"
echo "exit code $code after ${elapsed}s"
fail=0
if [ "$code" -eq 0 ]; then echo "FAIL: the job exited 0 although rank 2 died"; fail=1; fi
if [ "$elapsed" -gt 20 ]; then echo "FAIL: took ${elapsed}s (limit 20s)"; fail=1; fi
if ! grep -qiE 'rank 2|process rank 2' "$log"; then
  echo "FAIL: no message names rank 2"; fail=1
fi
if grep -q "finished without noticing" "$log"; then
  echo "FAIL: a rank finished without noticing"; fail=1
fi
[ "$fail" -eq 0 ] && echo "1 passed, 0 failed"
exit "$fail"
