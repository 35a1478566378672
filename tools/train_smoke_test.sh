#!/usr/bin/env bash
# The training binary runs end to end on a small 3D grid and the loss falls;
# --config files and flag overrides work; bad settings are refused up front
# with the numbers.
set -euo pipefail
train="$1"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
out="$("$train" --layers=2 --hidden=32 --seq=16 --micro_batch=2 --steps=40 --lr=1e-2 --warmup=5 \
  --log_every=10 --eval_every=20 2>&1)"
echo "$out"
grep -q "^Summary: steps 1-40" <<< "$out" || { echo "no summary"; exit 1; }
grep -q "val [0-9]" <<< "$out" || { echo "no validation loss"; exit 1; }
first=$(echo "$out" | sed -n 's/.*loss \([0-9.]*\) -> \([0-9.]*\).*/\1/p')
last=$(echo "$out" | sed -n 's/.*loss \([0-9.]*\) -> \([0-9.]*\).*/\2/p')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < 0.9 * f) }' ||
  { echo "loss did not fall: $first -> $last"; exit 1; }

# A config file sets the run; a flag on the command line overrides it.
cat > "$tmp/run.json" <<'JSON'
{"preset": "tiny", "dp": 1, "tp": 2, "pp": 1, "zero": 1, "steps": 3, "lr": 0.01,
 "eval_every": 0, "precision": "bf16", "optimizer": "sgd"}
JSON
out="$("$train" --config="$tmp/run.json" --steps=2 --log_every=1 2>&1)"
grep -q "grid dp=1 x tp=2 x pp=1" <<< "$out" || { echo "config not applied: $out"; exit 1; }
grep -q "2 layers, hidden 32" <<< "$out" || { echo "preset not applied: $out"; exit 1; }
grep -q "^Summary: steps 1-2," <<< "$out" || { echo "flag did not override config: $out"; exit 1; }

expect_error() {  # expect_error "message" args...
  local msg="$1"; shift
  local err
  if err="$("$train" "$@" 2>&1)"; then echo "accepted: $*"; exit 1; fi
  grep -qF -- "$msg" <<< "$err" || { echo "unclear error for $*: $err"; exit 1; }
}
expect_error "tp (3) must divide heads (4)" --tp=3 --steps=1
expect_error "--global_batch=10 but micro_batch (4) x grad_accum (2) x dp (2) = 16" --global_batch=10
expect_error "--lr=-1 must be > 0" --lr=-1
expect_error "--grad_accum=0 must be > 0" --grad_accum=0
expect_error "pp (4) x virtual stages (1) must be between 1 and layers (2)" --layers=2 --pp=4
expect_error "unknown key 'lrr'" --config=<(echo '{"lrr": 1}')
expect_error "--precision='f8': use f32, bf16 or f16" --precision=f8
echo "1 passed, 0 failed"
