#!/bin/bash
# The C API from outside Bazel: install into a fresh prefix, build the C
# trainer with plain make + pkg-config, run it. WIP (#18).
set -euo pipefail
lib="$1" header="$2" install="$3" example="$4"
work="${TEST_TMPDIR:-$(mktemp -d)}"
"$install" --prefix="$work/prefix" --lib="$lib" --header="$header"
cp -r "$(dirname "$example")" "$work/src"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
make -C "$work/src" train
"$work/src/train"
nm -D --defined-only "$work/prefix/lib/libtrireme.so" | awk '$3 != "" {print $3}' > "$work/symbols"
if grep -v '^trireme_' "$work/symbols" | grep -v '^TRIREME_1$'; then
  echo "FAIL: symbols other than trireme_* are exported"; exit 1
fi
echo "exported: $(wc -l < "$work/symbols") symbols, all trireme_*"
