#!/usr/bin/env bash
# Refactoring guard: fixed //:train runs must write checkpoints whose every
# file (the ranks' tensors and the manifest) has the SHA-256 recorded in
# tools/testdata/golden_checkpoints.sha256 -- recorded at 0b46bf0, the
# commit before the restructuring of issue #15. Same numbers, same files.
# The manifests were recorded again for issue #16 (they now record the
# architecture flags); every tensor file kept its recorded hash.
# Record again (only for a deliberate change of the numbers or the format,
# said in the commit): train_golden_test.sh TRAIN GOLDEN --record
set -euo pipefail
train="$(realpath "$1")"
golden="$(realpath "$2")"
record="${3:-}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/golden"
rm -rf "$tmp" && mkdir -p "$tmp"
cd "$tmp"
common=(--backend=threads --steps=6 --checkpoint_every=3 --lr=1e-2 --eval_every=0 --log_every=3)
"$train" "${common[@]}" --checkpoint_dir=3d > 3d.log 2>&1 || { cat 3d.log; exit 1; }
"$train" "${common[@]}" --dp=2 --tp=1 --pp=2 --virtual_stages=2 --schedule=interleaved \
  --zero=1 --precision=bf16 --checkpoint_dir=interleaved > interleaved.log 2>&1 ||
  { cat interleaved.log; exit 1; }
sha256sum 3d/step-*/* interleaved/step-*/* > got.sha256
if [ "$record" = --record ]; then
  cp got.sha256 "$golden"
  echo "recorded $(wc -l < got.sha256) files into $golden"
  exit 0
fi
if ! diff <(sort -k2 "$golden") <(sort -k2 got.sha256); then
  echo "FAIL: the checkpoints differ from the recorded ones (lines above: < recorded, > now)"
  exit 1
fi
echo "PASS: $(wc -l < got.sha256) checkpoint files byte-identical to the recorded run"
