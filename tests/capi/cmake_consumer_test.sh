#!/bin/bash
# The C API from a CMake project (find_package(PkgConfig) + trireme.pc) in
# C++, run under mpirun -np 2: ZeRO-3 over the processes against a 1-rank
# reference, then its checkpoint resumed on 1 rank with ZeRO-1.
set -euo pipefail
install="$PWD/$1" src="$(dirname "$PWD/$2")"
work="${TEST_TMPDIR:-$(mktemp -d)}"
"$install" --prefix="$work/prefix"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release > "$work/cmake.log" ||
  { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/build" 2>&1 | tail -n 3
mpirun --allow-run-as-root -np 2 --oversubscribe --bind-to none --mca btl self,vader \
  "$work/build/train" --ckpt "$work/ckpt"
