#!/usr/bin/env bash
# The training binary runs end to end on a small 3D grid and the loss falls.
set -euo pipefail
out="$("$1" --layers=2 --hidden=32 --seq=16 --micro_batch=2 --steps=40 --lr=1e-2 --warmup=5 --log_every=10 2>&1)"
echo "$out"
echo "$out" | grep -q "^Summary: 40 steps" || { echo "no summary"; exit 1; }
first=$(echo "$out" | sed -n 's/.*loss \([0-9.]*\) -> \([0-9.]*\).*/\1/p')
last=$(echo "$out" | sed -n 's/.*loss \([0-9.]*\) -> \([0-9.]*\).*/\2/p')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < 0.9 * f) }' ||
  { echo "loss did not fall: $first -> $last"; echo "0 passed, 1 failed"; exit 1; }
# An invalid grid is refused up front, with the numbers.
if err="$("$1" --tp=3 --steps=1 2>&1)"; then echo "tp=3 with 4 heads was accepted"; exit 1; fi
echo "$err" | grep -q "tp (3) must divide heads (4)" || { echo "unclear error: $err"; exit 1; }
echo "1 passed, 0 failed"
