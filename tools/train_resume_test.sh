#!/usr/bin/env bash
# Resume is bitwise: 10 steps straight, and 5 steps + a checkpoint + 5 resumed
# steps, give identical losses for steps 6-10 and byte-identical step-10
# checkpoints. With "mpi" as $2 the runs are 8 processes under mpirun,
# otherwise 8 thread-ranks. Then the checkpoint is resumed on another grid.
set -euo pipefail
train="$1"
mode="${2:-threads}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/resume_$mode"
rm -rf "$tmp" && mkdir -p "$tmp"
source "$(dirname "$0")/train_test_lib.sh"
train_cmd "$mode" "$train"
run() { "${cmd[@]}" "$@"; }
common=(--preset=tiny --steps=10 --lr=1e-2 --warmup=2 --log_every=1 --eval_every=0)
run "${common[@]}" --checkpoint_dir="$tmp/a" > "$tmp/a.log" 2>&1 || { cat "$tmp/a.log"; exit 1; }
run "${common[@]}" --checkpoint_dir="$tmp/b" --checkpoint_every=5 --keep_checkpoints=0 \
  > "$tmp/b.log" 2>&1 || { cat "$tmp/b.log"; exit 1; }
rm -rf "$tmp/b/step-00000010"
echo "step-00000005" > "$tmp/b/latest"
run "${common[@]}" --checkpoint_dir="$tmp/b" --resume=auto > "$tmp/c.log" 2>&1 ||
  { cat "$tmp/c.log"; exit 1; }
cat "$tmp/c.log"
grep -q "resumed from .*step-00000005 (step 5" "$tmp/c.log" || { echo "did not resume"; exit 1; }
for s in 6 7 8 9 10; do
  a=$(grep "^step *$s " "$tmp/a.log" | awk '{print $4}')
  c=$(grep "^step *$s " "$tmp/c.log" | awk '{print $4}')
  [ -n "$a" ] && [ "$a" = "$c" ] || { echo "step $s: loss $a straight, $c resumed"; exit 1; }
done
for f in "$tmp"/a/step-00000010/*; do
  cmp "$f" "$tmp/b/step-00000010/$(basename "$f")" ||
    { echo "$(basename "$f") differs between the straight and the resumed run"; exit 1; }
done
# The same checkpoint continues on another grid and ZeRO stage (threads).
out="$("$train" --backend=threads "${common[@]}" --dp=1 --tp=1 --pp=2 --zero=1 --grad_accum=4 \
  --resume="$tmp/b/step-00000005" 2>&1)"
grep -q "^Summary: steps 6-10" <<< "$out" || { echo "no resume on (1,1,2): $out"; exit 1; }
a6=$(grep "^step *6 " "$tmp/a.log" | awk '{print $4}')
o6=$(echo "$out" | grep "^step *6 " | awk '{print $4}')
awk -v a="$a6" -v o="$o6" 'BEGIN { d = a - o; if (d < 0) d = -d; exit !(d <= 1e-4 * a) }' ||
  { echo "step 6 on (1,1,2): $o6 vs $a6"; exit 1; }
# A rank killed halfway through writing the step-10 checkpoint: the job ends
# non-zero, step 5 stays the newest complete checkpoint, and relaunching
# resumes from it to the straight run's step-10 state, byte for byte.
if TRIREME_FAULT_SAVE="3:kill@10" run "${common[@]}" --checkpoint_dir="$tmp/k" \
    --checkpoint_every=5 > "$tmp/k.log" 2>&1; then
  cat "$tmp/k.log"; echo "the job survived a killed rank"; exit 1
fi
grep -q "killing myself halfway" "$tmp/k.log" || { cat "$tmp/k.log"; echo "no fault"; exit 1; }
[ "$(cat "$tmp/k/latest")" = "step-00000005" ] || { echo "latest: $(cat "$tmp/k/latest")"; exit 1; }
[ ! -e "$tmp/k/step-00000010" ] || { echo "a partial step-10 checkpoint was committed"; exit 1; }
run "${common[@]}" --checkpoint_dir="$tmp/k" --checkpoint_every=5 --resume=auto > "$tmp/k2.log" 2>&1 ||
  { cat "$tmp/k2.log"; exit 1; }
grep -q "resumed from .*step-00000005" "$tmp/k2.log" || { cat "$tmp/k2.log"; exit 1; }
for f in "$tmp"/a/step-00000010/*; do
  cmp "$f" "$tmp/k/step-00000010/$(basename "$f")" ||
    { echo "$(basename "$f") differs after the relaunch"; exit 1; }
done
echo "1 passed, 0 failed"
