#!/bin/bash
# The C API from outside Bazel: //:install into a fresh prefix, build
# examples/c_trainer with plain make + pkg-config against libtrireme.so and
# against libtrireme.a, run both (each checks ZeRO-3 on 4 thread ranks against
# 1 rank, and that it learns), and check what the libraries export.
set -euo pipefail
install="$PWD/$1" example_dir="$(dirname "$2")"
work="${TEST_TMPDIR:-$(mktemp -d)}"
"$install" --prefix="$work/prefix"
cp -r "$example_dir" "$work/src"
chmod -R u+w "$work/src"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
make -C "$work/src" train train_static
echo "== shared"
"$work/src/train"
echo "== static"
"$work/src/train_static"
if ldd "$work/src/train_static" | grep -q libtrireme; then
  echo "FAIL: train_static loads libtrireme.so"; exit 1
fi
lib="$work/prefix/lib/libtrireme.so.1"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[[ "$soname" == libtrireme.so.1 ]] || { echo "FAIL: soname '$soname'"; exit 1; }
nm -D --defined-only "$lib" | awk '$3 != "" {print $3}' > "$work/symbols"
if grep -v '^trireme_' "$work/symbols" | grep -v '^TRIREME_1$'; then
  echo "FAIL: libtrireme.so exports symbols other than trireme_*"; exit 1
fi
# Every trireme_* symbol is under the version node TRIREME_1.
if nm -D --defined-only --with-symbol-versions "$lib" | grep ' T trireme_' | grep -v '@@TRIREME_1$'; then
  echo "FAIL: unversioned trireme_* symbols"; exit 1
fi
# The archive: its strong global definitions (T, D, B, R) are trireme_* only;
# weak and GNU-unique ones (W, V, u: inline C++ and template instances, which
# a C++ program may define too) stay global for the linker to merge.
nm -g --defined-only "$work/prefix/lib/libtrireme.a" | awk 'NF == 3 && $2 ~ /^[TDBR]$/ {print $3}' > "$work/archive"
if grep -v '^trireme_' "$work/archive"; then
  echo "FAIL: libtrireme.a defines strong global symbols other than trireme_*"; exit 1
fi
echo "libtrireme.so.1: $(wc -l < "$work/symbols") symbols, all trireme_* @TRIREME_1;" \
  "libtrireme.a: $(wc -l < "$work/archive") strong global, all trireme_*"
