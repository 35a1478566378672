#!/bin/bash
# The C API from Python (ctypes + numpy) on the installed libtrireme.so.
set -euo pipefail
install="$PWD/$1" script="$PWD/$2"
work="${TEST_TMPDIR:-$(mktemp -d)}"
"$install" --prefix="$work/prefix"
# Debian's interpreter, which has python3-numpy (installed by ./bazelw).
exec /usr/bin/python3 "$script" --lib "$work/prefix/lib/libtrireme.so"
