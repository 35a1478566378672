#!/usr/bin/env bash
# Two jobs started at the same moment into one --checkpoint_dir (4 thread
# ranks each, or with "mpi" as $3 two mpirun jobs of 4 processes), 50
# times (TRIALS): every time exactly one trains and commits its
# checkpoints; the other stops before its first step, saying why (the root
# is in use by the other job, or -- if it started after the first ended --
# already holds a run's checkpoints). Every committed checkpoint validates
# completely (//tools:ckpt), and the survivor's run resumes.
set -uo pipefail
train="$1"
ckpt="$2"
mode="${3:-threads}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/two_jobs_$mode"
rm -rf "$tmp" && mkdir -p "$tmp"
common=(--preset=tiny --dp=2 --tp=2 --pp=1 --steps=6 --checkpoint_every=2 --eval_every=0
  --log_every=1)
source "$(dirname "$0")/train_test_lib.sh"
train_cmd "$mode" "$train" 4
job() { "${cmd[@]}" "$@"; }
trials="${TRIALS:-50}"
contested=0
for trial in $(seq 1 "$trials"); do
  root="$tmp/root$trial"
  job "${common[@]}" --checkpoint_dir="$root" > "$tmp/a$trial.log" 2>&1 &
  a=$!
  job "${common[@]}" --checkpoint_dir="$root" > "$tmp/b$trial.log" 2>&1 &
  b=$!
  wait "$a"
  ra=$?
  wait "$b"
  rb=$?
  if [ $ra -eq 0 ] && [ $rb -eq 0 ]; then
    echo "trial $trial: both jobs succeeded into one root"; exit 1
  fi
  if [ $ra -ne 0 ] && [ $rb -ne 0 ]; then
    cat "$tmp/a$trial.log" "$tmp/b$trial.log"; echo "trial $trial: both jobs failed"; exit 1
  fi
  loser="$tmp/b$trial.log"
  [ $ra -ne 0 ] && loser="$tmp/a$trial.log"
  if grep -q "^step " "$loser"; then
    cat "$loser"; echo "trial $trial: the refused job ran steps"; exit 1
  fi
  grep -qE "is in use by another job \(host .* pid [0-9]+|already holds a run's checkpoints" "$loser" ||
    { cat "$loser"; echo "trial $trial: the refused job did not say why"; exit 1; }
  for d in "$root"/step-*; do
    "$ckpt" --dir="$d" > "$tmp/ckpt.log" 2>&1 ||
      { cat "$tmp/ckpt.log"; echo "trial $trial: $d does not validate"; exit 1; }
  done
  [ "$(cat "$root/latest")" = "step-00000006" ] ||
    { echo "trial $trial: latest is $(cat "$root/latest")"; exit 1; }
  ls -a "$root" | grep -q '^\.tmp-' && { ls -a "$root"; echo "trial $trial: leftovers"; exit 1; }
  why=$(grep -oE "in use by another job|already holds" "$loser" | head -n 1)
  [ "$why" = "in use by another job" ] && contested=$((contested + 1))
  echo "trial $trial: one job trained, the other was refused: $why"
done
# Most trials must have met the lock itself (not a finished first job).
[ $contested -ge $((trials / 2)) ] ||
  { echo "only $contested of $trials trials contested the lock"; exit 1; }
# The survivor's run continues.
job --preset=tiny --dp=2 --tp=2 --pp=1 --steps=8 --eval_every=0 \
  --checkpoint_dir="$tmp/root1" --resume=auto > "$tmp/resume.log" 2>&1 ||
  { cat "$tmp/resume.log"; exit 1; }
grep -q "resumed from .*step-00000006" "$tmp/resume.log" || { cat "$tmp/resume.log"; exit 1; }
echo "$trials trials passed"
