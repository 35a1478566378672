#!/bin/bash
# The memory check before the first step (//:train): every rank's peak from
# the trainer's own accounting, held against the memory available.
#  - a model far beyond this machine is refused within a second, with the
#    numbers and what to change;
#  - the default run is accepted, and --memory_budget below its need is
#    refused, unless --force (a warning, then it trains);
#  - on mid-size runs the estimate is within 5% of the measured peak
#    resident memory (VmHWM) of the process;
#  - under mpirun (MODE mpi), the refusal reaches the console once per job,
#    and rank 0's estimate is within 0.95-1.25 of its process's peak RSS.
# Usage: train_memory_test.sh TRAIN [MODE]
set -u
TRAIN="$(realpath "$1")"
MODE="${2:-threads}"
source "$(dirname "$0")/train_test_lib.sh"
fail() {
  echo "FAIL: $*"
  exit 1
}
cd "${TEST_TMPDIR:-/tmp}"
# Under AddressSanitizer (--config=asan sets ASAN_OPTIONS) resident memory
# includes the shadow and the quarantine, and the run is slower: the ratio
# to the estimate is printed but not held, and the refusal gets 5 s.
sanitized=0
[ -n "${ASAN_OPTIONS:-}" ] && sanitized=1
within() {  # within RATIO LOW HIGH
  [ $sanitized -eq 1 ] && { echo "(sanitizer build: ratio $1 not checked)"; return 0; }
  awk -v r="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(r >= lo && r <= hi) }'
}

if [ "$MODE" = mpi ]; then
  train_cmd mpi "$TRAIN" 4
  out=$("${cmd[@]}" --dp=2 --tp=2 --pp=1 --steps=2 --memory_budget=1M 2>&1)
  rc=$?
  echo "$out" | tail -5
  [ $rc -ne 0 ] || fail "mpirun: a budget of 1 MiB was accepted"
  echo "$out" | grep -q "this run will not fit in memory: ranks 0-3 on rank 0's host need" ||
    fail "mpirun: no refusal naming the ranks"
  echo "$out" | grep -q "1.00 MiB (--memory_budget" || fail "mpirun: the budget is not named"
  n=$(echo "$out" | grep -c "will not fit")
  [ "$n" -eq 1 ] || fail "mpirun: the refusal printed $n times (want once: the leader)"
  echo "$out" | grep -q "^step" && fail "mpirun: a refused run took a step"
  train_cmd mpi "$TRAIN" 2
  out=$("${cmd[@]}" --dp=2 --tp=1 --pp=1 --zero=1 --hidden=512 --layers=8 --heads=8 --steps=3 \
    --eval_every=0 2>&1) || fail "mpirun: mid-size run failed: $out"
  echo "$out" | grep -q "^memory: ranks 0-1 on rank 0's host need" ||
    fail "mpirun: the accepted run does not report its memory check"
  line=$(echo "$out" | grep "^Host memory of rank 0's process")
  echo "$line"
  ratio=$(echo "$line" | sed -n 's/.*measured\/estimated \([0-9.]*\)).*/\1/p')
  # Looser than the threads runs' 5%: the mpi backend's transient host
  # copies (half-precision widening, aliasing copies) and Open MPI's own
  # reduction buffers and shared-memory segments are outside the tracker
  # (measured: 1.08 on this model).
  within "$ratio" 0.95 1.25 ||
    fail "mpirun: rank 0's peak RSS / estimate = '$ratio', not within 0.95-1.25"
  echo "PASS"
  exit 0
fi

train_cmd threads "$TRAIN"
start=$(date +%s%N)
out=$("${cmd[@]}" --hidden=8192 --layers=64 2>&1)
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
echo "$out" | tail -2
echo "refused in $ms ms (rc $rc)"
[ $rc -ne 0 ] || fail "--hidden=8192 --layers=64 was not refused"
limit=1000
[ $sanitized -eq 1 ] && limit=5000
[ $ms -lt $limit ] || fail "the refusal took $ms ms (want < $limit ms)"
for want in "this run will not fit in memory: ranks 0-7 on rank 0's host need" "GiB at peak" \
  "available" "model states" "activations" "--recompute" "--micro_batch" "--force" \
  "MemAvailable"; do
  echo "$out" | grep -qF -- "$want" || fail "the refusal does not say '$want'"
done
echo "$out" | grep -q "^step" && fail "a refused run took a step"

out=$("${cmd[@]}" --steps=2 --eval_every=0 2>&1) || fail "the default run failed: $out"
echo "$out" | grep -q "^memory: ranks 0-7 on rank 0's host need" ||
  fail "the default run does not report its memory check"

out=$("${cmd[@]}" --steps=2 --eval_every=0 --memory_budget=1M 2>&1) &&
  fail "a 1 MiB budget was accepted"
echo "$out" | grep -q "will not fit in memory" || fail "no refusal for a 1 MiB budget: $out"
echo "$out" | grep -q "^step" && fail "a run over its budget took a step"
out=$("${cmd[@]}" --steps=2 --eval_every=0 --memory_budget=1M --force 2>&1) ||
  fail "--force did not start the run: $out"
echo "$out" | grep -q "^warning: --force: starting although this run will not fit" ||
  fail "--force gave no warning"
echo "$out" | grep -q "^step    2" || fail "--force: the run did not train"
out=$("${cmd[@]}" --memory_budget=lots 2>&1) && fail "--memory_budget=lots accepted"
echo "$out" | grep -q "memory_budget='lots'" || fail "a bad budget is not named: $out"

# Mid-size runs: the estimate against the measured peak resident memory.
for grid in "--dp=1 --tp=1 --pp=1" "--dp=2 --tp=1 --pp=1 --zero=1" \
  "--dp=2 --tp=1 --pp=2 --precision=bf16"; do
  out=$("${cmd[@]}" $grid --hidden=512 --layers=8 --heads=8 --steps=3 --eval_every=0 2>&1) ||
    fail "mid-size run ($grid) failed: $out"
  line=$(echo "$out" | grep "^Host memory of this process")
  echo "$grid: $line"
  ratio=$(echo "$line" | sed -n 's/.*measured\/estimated \([0-9.]*\)).*/\1/p')
  [ -n "$ratio" ] || fail "no measured/estimated ratio ($grid)"
  within "$ratio" 0.95 1.05 ||
    fail "$grid: peak RSS / estimate = $ratio, not within 5%"
done
echo "PASS"
