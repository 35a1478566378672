#!/usr/bin/env bash
# Determinism: the same configuration twice gives byte-identical checkpoints
# (every master, Adam moment and counter), and random delays injected before
# every communicator op (TRIREME_COMM_RANDOM_DELAY_US) change nothing. $2:
# "mpi" runs 8 processes under mpirun, otherwise 8 thread-ranks.
set -euo pipefail
train="$1"
mode="${2:-threads}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/determinism_$mode"
rm -rf "$tmp" && mkdir -p "$tmp"
source "$(dirname "$0")/train_test_lib.sh"
train_cmd "$mode" "$train" 8 -x TRIREME_COMM_RANDOM_DELAY_US
run() { "${cmd[@]}" "$@"; }
common=(--preset=tiny --vocab=97 --steps=6 --lr=1e-2 --eval_every=0 --log_every=1)
export TRIREME_COMM_RANDOM_DELAY_US=0
run "${common[@]}" --checkpoint_dir="$tmp/a" > "$tmp/a.log" 2>&1 || { cat "$tmp/a.log"; exit 1; }
run "${common[@]}" --checkpoint_dir="$tmp/b" > "$tmp/b.log" 2>&1 || { cat "$tmp/b.log"; exit 1; }
export TRIREME_COMM_RANDOM_DELAY_US=3000
run "${common[@]}" --checkpoint_dir="$tmp/c" > "$tmp/c.log" 2>&1 || { cat "$tmp/c.log"; exit 1; }
for other in b c; do
  for f in "$tmp"/a/step-00000006/*; do
    cmp "$f" "$tmp/$other/step-00000006/$(basename "$f")" ||
      { echo "run $other: $(basename "$f") differs from run a"; exit 1; }
  done
done
echo "3 runs ($mode, the last with random communicator delays): identical checkpoints"
if [ "$mode" = mpi ]; then
  # Ranks started with different settings are caught before training.
  if out="$(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader \
      -np 4 "$train" --preset=tiny --steps=2 --lr=0.01 : \
      -np 4 "$train" --preset=tiny --steps=2 --lr=0.02 2>&1)"; then
    echo "ranks with different --lr trained together"; exit 1
  fi
  grep -q "configuration differs across ranks: rank 4 has lr = 0.02 where rank 0 has lr = 0.01" <<< "$out" ||
    { echo "unclear: $out"; exit 1; }
fi
echo "1 passed, 0 failed"
