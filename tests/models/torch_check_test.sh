#!/usr/bin/env bash
# Trireme's GPT against PyTorch (Debian's python3-torch, installed by ./bazelw).
set -euo pipefail
dir="${TEST_TMPDIR:-/tmp}/torch_check"
mkdir -p "$dir"
"$1" "$dir"
# Debian's interpreter, where apt installed torch and numpy.
exec /usr/bin/python3 "$2" "$dir"
