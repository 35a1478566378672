#!/usr/bin/env bash
# Builds the GPU acceptance bundle: every GPU test (the targets tagged "gpu"),
# //:train, //bench:step, //bench:optimizer and the PyTorch cross-check's
# exporter, built here under --config=cuda, with every non-CUDA shared library
# they load -- glibc and its loader included, so the binaries run on whatever
# distribution the GPU machine has. CUDA, cuBLAS and NCCL are the GPU
# machine's own (gpu_check.sh finds them there).
#
# The binaries and libraries travel xz-compressed in payload.tar.xz; next to
# it: gpu_check.sh (run it there), the two PyTorch scripts, the commit and the
# list of what was bundled. The bundle must stay under 40 MiB (the GPU
# machine takes a working tree of at most 64 MiB).
#
#   tools/gpu_bundle.sh [OUT_DIR]     (default: gpu_bundle/, ignored by git)
set -euo pipefail
out="${1:-gpu_bundle}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac  # relative to the caller's directory
cd "$(dirname "$0")/.."
limit_mib=40

mapfile -t gpu_tests < <(./bazelw query 'attr(tags, "\bgpu\b", tests(//...))' 2>/dev/null)
if [ "${#gpu_tests[@]}" -eq 0 ]; then
  echo "gpu_bundle: no GPU tests found (bazel query failed?)" >&2
  exit 1
fi
targets=()
for t in "${gpu_tests[@]}"; do targets+=("${t}_bin"); done
targets+=(//tools:train //tools:generate //bench:step //bench:optimizer //tests/models:export_for_torch)

echo "== building ${#targets[@]} targets under --config=cuda"
./bazelw build --config=cuda "${targets[@]}" 2>&1 | tail -n 3
bin_dir="$(./bazelw info --config=cuda bazel-bin 2>/dev/null)"

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/bin" "$staging/lib"
for t in "${targets[@]}"; do
  path="${t#//}"
  path="$bin_dir/${path/://}"
  cp -L "$path" "$staging/bin/"
done

# Every library the binaries load, except the GPU machine's own CUDA stack
# and the kernel's vDSO. The loader is the one they name (PT_INTERP).
is_cuda_stack() {
  case "$1" in
    libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnccl.so* | linux-vdso.so*) return 0 ;;
  esac
  return 1
}
for f in "$staging"/bin/*; do
  while read -r name path; do
    [ -n "$path" ] || continue
    is_cuda_stack "$name" && continue
    [ -e "$staging/lib/$name" ] || cp -L "$path" "$staging/lib/$name"
  done < <(ldd "$f" | awk '/=>/ && $3 ~ /^\// {print $1, $3}')
done
interp="$(readelf -l "$staging/bin/train" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
cp -L "$interp" "$staging/lib/$(basename "$interp")"

rm -rf "$out"
mkdir -p "$out"
echo "== compressing $(du -sh "$staging" | cut -f1) of binaries and libraries"
tar -C "$staging" -cf - bin lib | xz -T0 -6 > "$out/payload.tar.xz"
cp tools/gpu_check.sh bench/torch_step.py tests/models/torch_check.py "$out/"
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version | head -n 1)"
  echo "loader $(basename "$interp")"
} > "$out/VERSION"
printf '%s\n' "${gpu_tests[@]}" > "$out/gpu_tests.txt"
ls "$staging/bin" > "$out/binaries.txt"
ls "$staging/lib" > "$out/libraries.txt"

size_kib="$(du -sk "$out" | cut -f1)"
echo "== $out: $(ls "$out" | wc -l) files, $((size_kib / 1024)) MiB ($size_kib KiB; limit $limit_mib MiB):" \
  "$(wc -l < "$out/binaries.txt") binaries, $(wc -l < "$out/libraries.txt") libraries"
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu_bundle: $out is over $limit_mib MiB" >&2
  exit 1
fi
