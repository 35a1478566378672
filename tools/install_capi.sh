#!/bin/bash
# Installs the C API into a prefix: lib/libtrireme.so.1 (+ libtrireme.so),
# include/trireme/trireme.h and lib/pkgconfig/trireme.pc. WIP (#18).
#   tools/install_capi.sh --prefix=DIR             builds with ./bazelw first
#   tools/install_capi.sh --prefix=DIR --lib=F --header=H   from built files
set -euo pipefail
prefix="" lib="" header=""
for a in "$@"; do
  case "$a" in
    --prefix=*) prefix="${a#--prefix=}" ;;
    --lib=*) lib="${a#--lib=}" ;;
    --header=*) header="${a#--header=}" ;;
    *) echo "install_capi: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
[[ -n "$prefix" ]] || { echo "install_capi: --prefix=DIR is required" >&2; exit 2; }
if [[ -z "$lib" ]]; then
  cd "$(dirname "$0")/.."
  ./bazelw build //runtime/capi:libtrireme.so
  lib=bazel-bin/runtime/capi/libtrireme.so
  header=include/trireme/trireme.h
fi
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include/trireme"
prefix="$(cd "$prefix" && pwd)"
install -m 0755 "$lib" "$prefix/lib/libtrireme.so.1"
ln -sf libtrireme.so.1 "$prefix/lib/libtrireme.so"
install -m 0644 "$header" "$prefix/include/trireme/trireme.h"
version=$(sed -n 's/.*return "\([0-9.]*\)";.*/\1/p' "$(dirname "$0")/../runtime/capi/trireme_c.cc" 2>/dev/null | head -1 || true)
cat > "$prefix/lib/pkgconfig/trireme.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: trireme
Description: Sharded (ZeRO) optimizer runtime, C API
Version: ${version:-0.17.0}
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -ltrireme
PC
echo "installed into $prefix: lib/libtrireme.so.1, include/trireme/trireme.h, lib/pkgconfig/trireme.pc"
