#!/usr/bin/env bash
# Trireme's decoder against PyTorch (Debian's python3-torch, installed by
# ./bazelw): GPT-2, each Llama option on its own, and the whole Llama preset.
set -euo pipefail
failed=()
for variant in gpt2 rmsnorm rope swiglu kv1 kv2 window untied nobias ffn llama; do
  dir="${TEST_TMPDIR:-/tmp}/torch_check/$variant"
  mkdir -p "$dir"
  echo "== $variant"
  "$1" "$dir" cpu "$variant"
  # Debian's interpreter, where apt installed torch and numpy.
  /usr/bin/python3 "$2" "$dir" || failed+=("$variant")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all variants match PyTorch"
