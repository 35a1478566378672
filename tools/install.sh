#!/bin/bash
# Installs the C API into a prefix, for builds outside Bazel:
#   PREFIX/lib/libtrireme.so.1 (soname; only trireme_* exported), libtrireme.so -> it
#   PREFIX/lib/libtrireme.a    (one archive, trireme_* global, the rest local or weak;
#                              lib/trireme-static/ holds a link to it alone)
#   PREFIX/include/trireme/trireme.h
#   PREFIX/lib/pkgconfig/trireme.pc (the shared library), trireme-static.pc (the archive)
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
# trireme-static.pc's library directory holds the archive alone, so `-ltrireme`
# there is the archive for every build tool (CMake resolves -l flags to files;
# a bare path to the .a would land before the program's objects).
mkdir -p "$prefix/lib/trireme-static"
ln -sf ../libtrireme.a "$prefix/lib/trireme-static/libtrireme.a"
put 0644 "$from/include/trireme/trireme.h" "$prefix/include/trireme/trireme.h"
version=$(sed -n 's/^#define TRIREME_VERSION_STRING "\([0-9.]*\)".*/\1/p' "$from/include/trireme/trireme.h")
# The shared library carries its dependencies itself (DT_NEEDED: Debian's
# Abseil, OpenBLAS and OpenMPI shared libraries, needed at run time), so
# trireme.pc names none. The archive's are named in trireme-static.pc's
# Libs: the Bazel build's link flags, with the modules Debian ships a .pc
# for (absl_*, openblas, ompi-c) expanded by pkg-config here, once --
# resolving Abseil's module graph costs about a second per pkg-config call,
# which a CMake configure would pay dozens of times.
modules="" flags=""
for opt in $(cat "$from/runtime/capi/libtrireme.a.linkopts"); do
  case "$opt" in
    -labsl_*) modules="$modules ${opt#-l}" ;;
    -lopenblas) modules="$modules openblas" ;;
    -lmpi) modules="$modules ompi-c" ;;
    -L*) ;;  # OpenMPI's library directory: ompi-c names it
    *) flags="$flags $opt" ;;
  esac
done
if command -v pkg-config > /dev/null && resolved=$(pkg-config --libs $modules 2> /dev/null); then
  flags="$resolved$flags"
else  # no pkg-config (or a module missing): the flags as Bazel linked them
  flags="$(cat "$from/runtime/capi/libtrireme.a.linkopts")"
fi
flags="$flags -lstdc++ -lm"
# The prefix is absolute (the rpath is baked into programs, so it must not
# depend on where they are built or run from); moving an installation means
# installing it again.
pc_head="prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include
"
cat > "$prefix/lib/pkgconfig/trireme.pc" <<PC
$pc_head
Name: trireme
Description: Trireme, the sharded (ZeRO) optimizer runtime: C API (shared library)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -ltrireme
PC
cat > "$prefix/lib/pkgconfig/trireme-static.pc" <<PC
$pc_head
Name: trireme-static
Description: Trireme, the sharded (ZeRO) optimizer runtime: C API (libtrireme.a)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir}/trireme-static -ltrireme $flags
PC
echo "installed trireme $version into $prefix:"
echo "  lib/libtrireme.so.1 (+ libtrireme.so), lib/libtrireme.a, include/trireme/trireme.h,"
echo "  lib/pkgconfig/trireme.pc (the shared library), lib/pkgconfig/trireme-static.pc (the archive)"
echo "  use: PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs trireme"
echo "  at run time libtrireme.so.1 needs Debian's libabsl (20220623), libopenblas0 and libopenmpi3"
