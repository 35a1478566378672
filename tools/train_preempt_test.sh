#!/usr/bin/env bash
# Graceful preemption: a signal at a random step, every trial. Each time
# every rank finishes its step, a checkpoint of that step is committed, the
# job exits with status 3, and resuming with --resume=auto reaches the
# uninterrupted run's final checkpoint byte for byte. Threads: SIGTERM to
# the process. With "mpi" as $2: 8 processes under mpirun and SIGUSR1 to
# mpirun, which forwards it (mpirun answers SIGTERM by killing the ranks
# 1 s later -- odls_base_sigkill_timeout -- so USR1 is the signal to use).
set -uo pipefail
train="$1"
mode="${2:-threads}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/preempt_$mode"
rm -rf "$tmp" && mkdir -p "$tmp"
source "$(dirname "$0")/train_test_lib.sh"
train_cmd "$mode" "$train"  # a command, not a function: the signal must reach it
run() { "${cmd[@]}" "$@"; }
# Enough steps that the signal lands before the end (mpirun's output comes
# in bursts, and its steps are quick).
if [ "$mode" = mpi ]; then steps=120; else steps=24; fi
common=(--steps=$steps --lr=1e-2 --warmup=2 --log_every=1 --eval_every=0 --keep_checkpoints=0)
run "${common[@]}" --checkpoint_dir="$tmp/full" > "$tmp/full.log" 2>&1 || { cat "$tmp/full.log"; exit 1; }
if [ "$mode" = mpi ]; then trials="${TRIALS:-3}" sig=USR1; else trials="${TRIALS:-10}" sig=TERM; fi
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
  kill "-$sig" "$pid" 2> /dev/null
  wait "$pid"
  rc=$?
  if [ $rc -eq 0 ]; then
    cat "$tmp/p$trial.log"; echo "trial $trial: the run finished before the signal (step $k)"; exit 1
  fi
  stopped=$(sed -nE "s/^train: stopped by SIG$sig after step ([0-9]+) of .*/\1/p" "$tmp/p$trial.log")
  if [ -z "$stopped" ]; then cat "$tmp/p$trial.log"; echo "trial $trial: exit $rc, no clean stop"; exit 1; fi
  [ $rc -eq 3 ] || { echo "trial $trial: exit status $rc, not 3"; exit 1; }
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
  echo "trial $trial: SIG$sig at step $k, stopped after $stopped (exit $rc), resumed to step $steps: identical"
  preempted=$((preempted + 1))
done
[ $preempted -eq "$trials" ] || { echo "only $preempted of $trials trials were preempted"; exit 1; }
echo "$preempted preempted trials passed"

# A second signal, 2.5 s after the first, while the current step is still
# running (slowed by random delays before every communicator op), exits at
# once with 128 + the signal, and no incomplete checkpoint is committed.
if [ "$mode" != mpi ]; then
  dir="$tmp/second"
  TRIREME_COMM_RANDOM_DELAY_US=400000 "${cmd[@]}" "${common[@]}" --checkpoint_dir="$dir" \
    > "$tmp/second.log" 2>&1 &
  pid=$!
  sleep 1
  kill -TERM "$pid"
  sleep 2.5
  kill -0 "$pid" 2> /dev/null || { cat "$tmp/second.log"; echo "second signal: the job ended early"; exit 1; }
  t0=$(date +%s%N)
  kill -TERM "$pid"
  wait "$pid"
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ $rc -eq 143 ] || { cat "$tmp/second.log"; echo "second signal: exit $rc, not 143"; exit 1; }
  [ $ms -lt 1000 ] || { echo "second signal: exited after $ms ms"; exit 1; }
  grep -q "signal received" "$tmp/second.log" || { echo "second signal: the first was not announced"; exit 1; }
  for d in "$dir"/step-*; do
    [ -e "$d" ] || continue
    "$(dirname "$train")/ckpt" --dir="$d" > /dev/null 2>&1 || { echo "second signal: $d is incomplete"; exit 1; }
  done
  echo "second signal: exit $rc after $ms ms"
fi
