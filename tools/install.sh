#!/bin/bash
# Installs the C API into a prefix, for builds outside Bazel:
#   PREFIX/lib/libtrireme.so.1 (soname; only trireme_* exported), libtrireme.so -> it
#   PREFIX/lib/libtrireme.a    (one archive, trireme_* global, the rest local)
#   PREFIX/include/trireme/trireme.h
#   PREFIX/lib/pkgconfig/trireme.pc
#
#   ./bazelw run //:install -- --prefix=DIR   (a relative DIR: from the repository root)
#
# The files come from the runfiles of //:install (the built libraries and the
# header); a test passes --from=DIR, a runfiles root holding them.
set -euo pipefail
prefix="" from=""
for a in "$@"; do
  case "$a" in
    --prefix=*) prefix="${a#--prefix=}" ;;
    --from=*) from="${a#--from=}" ;;
    -h | --help)
      sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "install: unknown argument '$a' (usage: --prefix=DIR)" >&2; exit 2 ;;
  esac
done
[[ -n "$prefix" ]] || { echo "install: --prefix=DIR is required" >&2; exit 2; }
if [[ -z "$from" ]]; then
  for d in "$0.runfiles/trireme" "${RUNFILES_DIR:-/nonexistent}/trireme" \
    "${TEST_SRCDIR:-/nonexistent}/trireme" "$PWD"; do
    if [[ -f "$d/runtime/capi/libtrireme.so" ]]; then from="$d"; break; fi
  done
fi
for f in runtime/capi/libtrireme.so runtime/capi/libtrireme.a runtime/capi/libtrireme.a.linkopts \
  include/trireme/trireme.h; do
  [[ -f "$from/$f" ]] || { echo "install: $f not found under '${from:-runfiles}' (run it as ./bazelw run //:install -- --prefix=DIR)" >&2; exit 2; }
done
# bazel run starts in the runfiles; a relative prefix is from where bazel ran.
if [[ "$prefix" != /* && -n "${BUILD_WORKING_DIRECTORY:-}" ]]; then
  prefix="$BUILD_WORKING_DIRECTORY/$prefix"
fi
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include/trireme"
prefix="$(cd "$prefix" && pwd)"
# (cp + chmod, not install(1): this script is itself named `install`.)
put() { rm -f "$3" && cp "$2" "$3" && chmod "$1" "$3"; }
put 0755 "$from/runtime/capi/libtrireme.so" "$prefix/lib/libtrireme.so.1"
ln -sf libtrireme.so.1 "$prefix/lib/libtrireme.so"
put 0644 "$from/runtime/capi/libtrireme.a" "$prefix/lib/libtrireme.a"
put 0644 "$from/include/trireme/trireme.h" "$prefix/include/trireme/trireme.h"
version=$(sed -n 's/^#define TRIREME_VERSION_STRING "\([0-9.]*\)".*/\1/p' "$from/include/trireme/trireme.h")
# The shared library records its own dependencies (DT_NEEDED); a static link
# needs them named: the archive's linkopts, and the C++ runtime.
private="$(cat "$from/runtime/capi/libtrireme.a.linkopts") -lstdc++ -lm"
cat > "$prefix/lib/pkgconfig/trireme.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: trireme
Description: Trireme, the sharded (ZeRO) optimizer runtime: C API
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -ltrireme
Libs.private: $private
PC
echo "installed trireme $version into $prefix:"
echo "  lib/libtrireme.so.1 (+ libtrireme.so), lib/libtrireme.a, include/trireme/trireme.h, lib/pkgconfig/trireme.pc"
echo "  use: PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs trireme"
