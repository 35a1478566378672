#!/bin/bash
# The C API from a CMake project (find_package(PkgConfig) + trireme.pc) in
# C++, linked against libtrireme.so and against libtrireme.a, each run under
# mpirun -np 2: ZeRO-3 over the processes against a 1-rank
# reference, then its checkpoint resumed on 1 rank with ZeRO-1.
set -euo pipefail
install="$PWD/$1" src="$(dirname "$PWD/$2")"
work="${TEST_TMPDIR:-$(mktemp -d)}"
"$install" --prefix="$work/prefix"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release > "$work/cmake.log" ||
  { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/build" 2>&1 | tail -n 3
for program in train train_static; do  # against libtrireme.so, then libtrireme.a
  echo "== $program"
  mpirun --allow-run-as-root -np 2 --oversubscribe --bind-to none --mca btl self,vader \
    "$work/build/$program" --ckpt "$work/ckpt-$program"
done
if ldd "$work/build/train_static" | grep -q libtrireme; then
  echo "FAIL: train_static loads libtrireme.so"; exit 1
fi
