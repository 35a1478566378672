#!/usr/bin/env bash
# The GPU acceptance run, from a bundle made by tools/gpu_bundle.sh. Run it on
# the GPU machine from the bundle's folder:
#
#   ./gpu_check.sh            # everything; exits non-zero on any failure
#   ./gpu_check.sh --dry-run  # checks the bundle and lists what would run
#
# It unpacks payload.tar.xz into $TMPDIR, finds the machine's CUDA runtime
# and cuBLAS (CUDA_LIB_DIR, /usr/local/cuda, the pip wheels PyTorch brings,
# the linker cache), and runs every binary through the bundled loader and
# libraries. Then, each with a time limit (all of it well under 8 minutes):
#   1. every GPU test (the CUDA kernels against their CPU twins, shapes past
#      the old launch limits, the threads backend on GPU memory, the streams);
#   2. the single-GPU 3D parity: 8 thread ranks on one GPU against the
#      (1,1,1) run and against the CPU reference;
#   3. //:train --device=cuda for 100 steps: the loss must fall;
#   4. //bench:step --device=cuda: FLOP/s against cuBLAS sgemm measured in the
#      same run (and PyTorch on the GPU where it imports);
#   5. //bench:optimizer on cuda:0 against device memcpy bandwidth, same run;
#   6. the GPT's loss and gradients against PyTorch (float64) on the GPU,
#      GPT-2 and the Llama architecture, where `python3 -c 'import torch'`
#      works;
#   7. //:generate on cuda: TP 1 and TP 2 give the same greedy text.
# The dry run (any machine) unpacks the bundle, checks that every binary's
# libraries resolve through the bundled loader, starts every GPU test binary
# to list its cases, and reports the GPU steps as not run.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--dry-run]" >&2
    exit 2
    ;;
esac
start=$(date +%s)
work="${TMPDIR:-/tmp}/trireme_gpu_check.$$"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
log="$here/gpu_check.log"
: > "$log"

say() { echo "$@" | tee -a "$log"; }
say "== Trireme GPU check ($([ $dry -eq 1 ] && echo 'dry run' || echo 'full run'))"
[ -f "$here/VERSION" ] && sed 's/^/   /' "$here/VERSION" | tee -a "$log"
if ! tar -C "$work" -xJf "$here/payload.tar.xz"; then
  say "FAIL: cannot unpack $here/payload.tar.xz"
  exit 1
fi
loader="$(ls "$work"/lib/ld-linux-*.so.* 2>/dev/null | head -n 1)"
if [ -z "$loader" ]; then
  say "FAIL: the bundle has no dynamic loader"
  exit 1
fi

# The machine's CUDA runtime and cuBLAS (the bundle does not carry them).
cuda_dirs=()
add_dir() { [ -d "$1" ] && cuda_dirs+=("$1"); }
[ -n "${CUDA_LIB_DIR:-}" ] && add_dir "$CUDA_LIB_DIR"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
  add_dir "$d"
done
if command -v python3 > /dev/null; then
  while read -r d; do add_dir "$d"; done < <(python3 - 2> /dev/null << 'EOF'
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for d in glob.glob(os.path.join(root, "*", "lib")):
            print(d)
except Exception:
    pass
EOF
  )
fi
while read -r d; do add_dir "$d"; done < <(ldconfig -p 2> /dev/null |
  awk '/libcudart\.so|libcublas\.so|libcuda\.so|libnccl\.so/ {print $NF}' | xargs -r -n1 dirname | sort -u)
cuda_path="$(IFS=:; echo "${cuda_dirs[*]:-}")"
libpath="$work/lib${cuda_path:+:$cuda_path}"
say "   CUDA libraries looked up in: ${cuda_path:-(none found)}"

# Runs a bundled binary through the bundled loader.
run_bin() {
  local name="$1"
  shift
  "$loader" --library-path "$libpath" "$work/bin/$name" "$@"
}

export loader libpath work here
export -f run_bin

failed=0
results=()
record() { results+=("$(printf '%-9s %s' "$1" "$2")"); }

# Bundle integrity: every binary's libraries resolve.
for b in $(ls "$work/bin"); do
  missing="$("$loader" --library-path "$libpath" --list "$work/bin/$b" 2>&1 | grep 'not found')"
  if [ -n "$missing" ]; then
    only_cuda="$(echo "$missing" | grep -v -E 'libcuda|libcudart|libcublas|libnccl')"
    if [ -n "$only_cuda" ] || [ $dry -eq 0 ]; then
      say "FAIL: $b cannot load: $(echo "$missing" | tr -s ' \t\n' ' ')"
      record FAIL "bundle: $b loads"
      failed=1
      continue
    fi
    record ok "bundle: $b loads (CUDA libraries not on this machine: the GPU machine has them)"
  else
    record ok "bundle: $b loads"
  fi
done

# Runs one step with a time limit, logging its output; `name` is its line.
step() {
  local name="$1" limit="$2"
  shift 2
  if [ $dry -eq 1 ]; then
    record "NOT RUN" "$name (dry run: $*)"
    return
  fi
  say ""
  say "== $name"
  local t0=$(date +%s)
  # The steps are shell functions: a child bash runs them under the limit
  # (with pipefail: a pipeline fails if any part does).
  timeout --kill-after=10 "$limit" bash -c 'set -o pipefail; "$@"' step "$@" >> "$log" 2>&1
  local rc=$?
  local dt=$(($(date +%s) - t0))
  if [ $rc -eq 0 ]; then
    record PASS "$name (${dt} s)"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    record FAIL "$name (timed out after ${limit} s)"
    failed=1
  else
    record FAIL "$name (exit $rc after ${dt} s; see gpu_check.log)"
    failed=1
  fi
  tail -n 4 "$log" | sed 's/^/   /'
}

# 1. GPU tests (the parity test runs as step 2).
gpu_test_bins=()
while read -r t; do
  [ -n "$t" ] || continue
  gpu_test_bins+=("$(basename "${t//://}")_bin")
done < "$here/gpu_tests.txt"
for b in ${gpu_test_bins[@]+"${gpu_test_bins[@]}"}; do
  if [ $dry -eq 1 ]; then
    # Starting it needs no GPU: the binary loads and lists its cases.
    if n="$(run_bin "$b" --gtest_list_tests 2>&1 | grep -c '^  ')"; then
      record ok "bundle: $b starts ($n cases)"
    else
      record FAIL "bundle: $b does not start"
      failed=1
    fi
  fi
  [ "$b" = gpt_parity_cuda_test_bin ] && continue
  step "GPU test ${b%_bin}" 180 run_bin "$b"
done

# 2. The single-GPU 3D parity: (2,2,2) under every ZeRO stage and schedule
#    against (1,1,1) on the GPU, and the GPU against the CPU reference.
step "single-GPU 3D parity (8 thread ranks on cuda:0)" 240 run_bin gpt_parity_cuda_test_bin \
  "--gtest_filter=GptCuda.*:Grids/GptParityTest.MatchesSingleRank/dp2_tp2_pp2_*:Llama/GptParityTest.MatchesSingleRank/dp2_tp2_pp2_*"

# 3. Training with a learning check: the last logged loss must be below 75%
#    of the first (on the CPU the default run goes 5.54 -> 2.01 in 100 steps).
train_check() {
  set -o pipefail  # a crashed run fails even though tee succeeds
  run_bin train --device=cuda --steps=100 --log_every=10 | tee "$work/train.out" || return 1
  awk '/^step +[0-9]+ +loss/ {l[++n] = $4}
       END {
         if (n < 2) { print "no progress lines"; exit 1 }
         printf "first loss %.4f, last logged %.4f\n", l[1], l[n]
         exit !(l[n] < 0.75 * l[1])
       }' "$work/train.out"
}
export -f train_check
step "//:train --device=cuda, 100 steps, loss must fall" 180 train_check

# 4. and 5. Benchmarks against ceilings measured in the same run.
step "//bench:step --device=cuda (against cuBLAS sgemm, this run)" 180 \
  run_bin step --device=cuda --grid=2,2,2 --steps=3 --torch_script="$here/torch_step.py"
step "//bench:optimizer on cuda:0 (against device copy bandwidth, this run)" 120 \
  run_bin optimizer --benchmark_filter=cuda

# 6. PyTorch on the GPU: GPT-2 and the Llama architecture.
torch_check() {
  for variant in gpt2 llama; do
    mkdir -p "$work/torch/$variant"
    run_bin export_for_torch "$work/torch/$variant" cuda "$variant" || return 1
    python3 "$here/torch_check.py" "$work/torch/$variant" cuda || return 1
  done
}
export -f torch_check
mkdir -p "$work/torch"
if [ $dry -eq 1 ]; then
  step "the GPT's loss and gradients against PyTorch on the GPU" 120 torch_check
elif python3 -c 'import torch; assert torch.cuda.is_available()' 2> /dev/null; then
  step "the GPT's loss and gradients against PyTorch on the GPU" 120 torch_check
else
  record "NOT RUN" "the GPT against PyTorch (python3 cannot import torch with CUDA here)"
fi

# 7. Generation on the GPU: a Llama-architecture model trained on cuda:0,
#    greedy text with TP 1 and TP 2 (two thread ranks on the GPU) the same.
generate_check() {
  set -o pipefail
  run_bin train --device=cuda --preset=llama,tiny --sliding_window=8 --steps=40 --eval_every=0 \
    --checkpoint_dir="$work/gen_ck" > "$work/gen_train.out" || { cat "$work/gen_train.out"; return 1; }
  local args=(--checkpoint="$work/gen_ck" --device=cuda --temperature=0 --prompt=ab --prompt=hello)
  run_bin generate --tp=1 "${args[@]}" | tee "$work/gen1.out" || return 1
  run_bin generate --tp=2 "${args[@]}" | tee "$work/gen2.out" || return 1
  diff <(grep -E '^\[[0-9]+\] ' "$work/gen1.out") <(grep -E '^\[[0-9]+\] ' "$work/gen2.out")
}
export -f generate_check
step "//:generate --device=cuda: the same greedy text at TP 1 and TP 2" 180 generate_check

say ""
say "== Summary ($(($(date +%s) - start)) s)"
for r in ${results[@]+"${results[@]}"}; do say "$r"; done
if [ $failed -ne 0 ]; then
  say "RESULT: FAILED"
  exit 1
fi
if [ $dry -eq 1 ]; then
  say "RESULT: the bundle is complete; nothing ran on a GPU (dry run)"
else
  say "RESULT: PASSED"
fi
