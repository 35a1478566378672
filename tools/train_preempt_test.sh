#!/usr/bin/env bash
# Graceful preemption: SIGTERM at a random step, several times. Each time
# every rank finishes its step, a checkpoint of that step is committed, the
# job exits with status 3 (mpirun: non-zero), and resuming with
# --resume=auto reaches the uninterrupted run's final checkpoint byte for
# byte. With "mpi" as $2 the jobs are 8 processes under mpirun (SIGTERM to
# mpirun, which forwards it), otherwise 8 thread-ranks.
set -uo pipefail
train="$1"
mode="${2:-threads}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/preempt_$mode"
rm -rf "$tmp" && mkdir -p "$tmp"
source "$(dirname "$0")/train_test_lib.sh"
train_cmd "$mode" "$train"  # a command, not a function: the signal must reach it
run() { "${cmd[@]}" "$@"; }
steps=24
common=(--steps=$steps --lr=1e-2 --warmup=2 --log_every=1 --eval_every=0 --keep_checkpoints=0)
run "${common[@]}" --checkpoint_dir="$tmp/full" > "$tmp/full.log" 2>&1 || { cat "$tmp/full.log"; exit 1; }
if [ "$mode" = mpi ]; then trials="${TRIALS:-3}"; else trials="${TRIALS:-10}"; fi
preempted=0
for trial in $(seq 1 "$trials"); do
  k=$((2 + RANDOM % 12))
  dir="$tmp/p$trial"
  "${cmd[@]}" "${common[@]}" --checkpoint_dir="$dir" > "$tmp/p$trial.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    grep -qE "^step +$k " "$tmp/p$trial.log" && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.02
  done
  kill -TERM "$pid" 2> /dev/null
  wait "$pid"
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "trial $trial: the run finished before the signal (step $k); not counted"
    continue
  fi
  stopped=$(sed -nE 's/^train: stopped by SIGTERM after step ([0-9]+) of .*/\1/p' "$tmp/p$trial.log")
  if [ -z "$stopped" ]; then cat "$tmp/p$trial.log"; echo "trial $trial: exit $rc, no clean stop"; exit 1; fi
  if [ "$mode" != mpi ] && [ $rc -ne 3 ]; then echo "trial $trial: exit status $rc, not 3"; exit 1; fi
  want=$(printf 'step-%08d' "$stopped")
  [ "$(cat "$dir/latest")" = "$want" ] ||
    { echo "trial $trial: stopped after $stopped but latest is $(cat "$dir/latest")"; exit 1; }
  run "${common[@]}" --checkpoint_dir="$dir" --resume=auto > "$tmp/r$trial.log" 2>&1 ||
    { cat "$tmp/r$trial.log"; echo "trial $trial: resume failed"; exit 1; }
  grep -q "resumed from .*$want" "$tmp/r$trial.log" || { cat "$tmp/r$trial.log"; exit 1; }
  final=$(printf 'step-%08d' $steps)
  for f in "$tmp/full/$final"/*; do
    cmp -s "$f" "$dir/$final/$(basename "$f")" ||
      { echo "trial $trial: $(basename "$f") differs from the uninterrupted run's"; exit 1; }
  done
  echo "trial $trial: SIGTERM at step $k, stopped after $stopped (exit $rc), resumed to step $steps: identical"
  preempted=$((preempted + 1))
done
[ $preempted -ge $((trials / 2)) ] || { echo "only $preempted of $trials trials were preempted"; exit 1; }
echo "$preempted preempted trials passed"
