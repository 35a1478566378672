#!/usr/bin/env bash
# Another ecosystem reads Trireme's checkpoints: Python's standard library
# (safetensors_interop.py, no Trireme code) reassembles every tensor of a
# (2,2,2) ZeRO-3 checkpoint, and each equals the C++ reader's bit for bit.
set -euo pipefail
train="$1"; ckpt="$2"; py="$3"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/interop"
rm -rf "$tmp" && mkdir -p "$tmp/py"
"$train" --preset=tiny --vocab=97 --steps=3 --eval_every=0 --checkpoint_dir="$tmp/ck" > "$tmp/train.log" 2>&1 ||
  { cat "$tmp/train.log"; exit 1; }
"$ckpt" --dir="$tmp/ck"
dir="$tmp/ck/step-00000003"
for state in master v; do
  python3 "$py" "$dir" "$state" "$tmp/py"
  n=0
  for f in "$tmp"/py/*.f32; do
    name="$(basename "$f" .f32)"
    "$ckpt" --dir="$dir" --tensor="$name" --state="$state" --out="$tmp/cc.f32" > /dev/null
    cmp "$f" "$tmp/cc.f32" || { echo "$name $state differs between Python and C++"; exit 1; }
    n=$((n + 1))
  done
  echo "$state: $n tensors equal"
done
echo "1 passed, 0 failed"
