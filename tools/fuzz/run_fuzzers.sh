#!/usr/bin/env bash
# Builds the checkpoint parsers' libFuzzer targets with Debian's clang
# (-fsanitize=fuzzer,address,undefined) and runs each for a bounded time
# (default 30 s) from a seed corpus of valid and damaged inputs. A crash,
# sanitizer report, leak or timeout fails the run and leaves the input in
# $out/crash-*.
#   tools/fuzz/run_fuzzers.sh [seconds per target]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-30}"
out="${FUZZ_OUT:-/tmp/trireme_fuzz}"
mkdir -p "$out"
# clang with libFuzzer: Debian's clang, plus its runtime libraries (only a
# "Recommends", so minimal images lack them).
can_fuzz() {
  printf 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }\n' \
    > "$out/probe.cc"
  clang++ -fsanitize=fuzzer "$out/probe.cc" -o "$out/probe" > /dev/null 2>&1
}
if ! command -v clang++ > /dev/null || ! can_fuzz; then
  if [ "$(id -u)" != 0 ]; then
    echo "run_fuzzers: clang++ with libFuzzer is missing (as root: apt-get install clang libclang-rt-dev)"
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang > /dev/null
  major="$(clang++ --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$major-dev" > /dev/null
  can_fuzz || { echo "run_fuzzers: clang++ -fsanitize=fuzzer still does not link"; exit 1; }
fi
absl_libs=(-labsl_statusor -labsl_status -labsl_cord -labsl_cordz_info -labsl_cord_internal
  -labsl_cordz_functions -labsl_cordz_handle -labsl_crc_cord_state -labsl_crc32c
  -labsl_crc_internal -labsl_crc_cpu_detect -labsl_hash -labsl_city -labsl_low_level_hash
  -labsl_raw_hash_set -labsl_synchronization -labsl_graphcycles_internal -labsl_stacktrace
  -labsl_symbolize -labsl_debugging_internal -labsl_demangle_internal -labsl_malloc_internal
  -labsl_time -labsl_civil_time -labsl_time_zone -labsl_str_format_internal -labsl_strings
  -labsl_strings_internal -labsl_int128 -labsl_throw_delegate -labsl_base -labsl_spinlock_wait
  -labsl_raw_logging_internal -labsl_log_severity -labsl_exponential_biased)
# Link only the libraries this system's Abseil has (the set varies by version).
libs=()
for l in "${absl_libs[@]}"; do
  name="lib${l#-l}"
  if ls /usr/lib/x86_64-linux-gnu/"$name".so > /dev/null 2>&1; then libs+=("$l"); fi
done
src=(runtime/core/json.cc runtime/checkpoint/crc32c.cc runtime/checkpoint/safetensors.cc
  runtime/checkpoint/filesystem.cc
  runtime/checkpoint/manifest.cc runtime/core/status.cc)
flags=(-std=c++17 -O1 -g -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

# Seeds: valid files and manifests, and a few damaged ones.
seeds="$out/seeds"
rm -rf "$seeds" && mkdir -p "$seeds/safetensors" "$seeds/manifest"
python3 - "$seeds" <<'PY'
import json, struct, sys, os
d = sys.argv[1]
def st(header, data):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data
ok = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
      "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
      "__metadata__": {"k": "v"}}
seeds = {"ok": st(ok, bytes(22)), "gap": st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)),
         "short": st(ok, bytes(10)), "len": struct.pack("<Q", 1 << 40) + b"{}"}
for k, v in seeds.items():
    open(os.path.join(d, "safetensors", k), "wb").write(v)
chunk = lambda f, b, e, off, shape: {"file": f, "view": [4, 3, 4], "block_offset": off,
                                     "block_shape": shape, "begin": b, "end": e}
m = {"format": "trireme-checkpoint", "version": 1, "step": 3, "states": ["master", "m", "v"],
     "grid": {"dp": 2}, "engine": {"step": 3, "optimizer_step": 3, "loss_scaling": False,
     "loss_scale": 1.0, "good_steps": 0, "hysteresis_left": 1}, "trainer": {},
     "files": {"rank-00000.safetensors": {"size": 100, "crc32c": "0a0b0c0d"},
               "rank-00001.safetensors": {"size": 100, "crc32c": "0a0b0c0e"}},
     "tensors": {"qkv": {"shape": [4, 12], "dtype": "F32", "chunks": [
         chunk("rank-00000.safetensors", 0, 24, [0, 0, 0], [4, 3, 2]),
         chunk("rank-00001.safetensors", 0, 24, [0, 0, 2], [4, 3, 2])]}}}
open(os.path.join(d, "manifest", "ok"), "w").write(json.dumps(m))
m["files"]["../x.safetensors"] = m["files"].pop("rank-00001.safetensors")
open(os.path.join(d, "manifest", "escape"), "w").write(json.dumps(m))
PY
for target in safetensors manifest; do
  bin="$out/fuzz_$target"
  clang++ "${flags[@]}" "tools/fuzz/fuzz_$target.cc" "${src[@]}" "${libs[@]}" -o "$bin"
  corpus="$out/corpus_$target"
  mkdir -p "$corpus"
  echo "== fuzz_$target: $seconds s"
  (cd "$out" && "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
     -max_len=4096 -print_final_stats=1 "$corpus" "$seeds/$target" 2>&1 | tail -n 8)
done
echo "fuzzers: no crash"
