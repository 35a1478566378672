// Decode throughput of //:generate's generator against the memory-bandwidth
// bound, measured side by side in one run: each decode step reads every
// weight once and the key/value cache of every sequence, so tokens/s is at
// most batch x bandwidth / (weight bytes + cache bytes read). The bandwidth
// is this machine's, measured here (memcpy of 256 MiB: bytes read + written
// per second). Prefill tokens/s for comparison (compute-bound GEMMs).
//
//   ./bazelw run -c opt //bench:generate
//   ./bazelw run -c opt //bench:generate -- --hidden=1024 --layers=8 --tp=2
#include "models/generate.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "kernels/gemm.h"
#include "models/gpt.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/hash.h"
#include "runtime/core/host_memory.h"
#include "runtime/core/status.h"

ABSL_FLAG(std::string, preset, "llama", "the architecture: gpt2 or llama (as //bench:step)");
ABSL_FLAG(int, layers, 4, "transformer blocks");
ABSL_FLAG(int, hidden, 512, "hidden size");
ABSL_FLAG(int, heads, 8, "attention heads");
ABSL_FLAG(int, vocab, 256, "vocabulary (byte-level)");
ABSL_FLAG(int, prompt, 64, "prompt tokens per sequence");
ABSL_FLAG(int, new_tokens, 64, "generated tokens per sequence");
ABSL_FLAG(std::string, batches, "1,4,16", "batch sizes (comma-separated)");
ABSL_FLAG(int, tp, 1, "tensor-parallel ranks (threads)");
ABSL_FLAG(int, threads, 2, "OpenBLAS threads (per rank: threads / tp, at least 1)");

namespace trireme {
namespace {

absl::Status Main() {
  GptConfig m;
  m.layers = absl::GetFlag(FLAGS_layers);
  m.hidden = absl::GetFlag(FLAGS_hidden);
  m.heads = absl::GetFlag(FLAGS_heads);
  m.vocab = absl::GetFlag(FLAGS_vocab);
  const int prompt = absl::GetFlag(FLAGS_prompt), fresh = absl::GetFlag(FLAGS_new_tokens);
  m.seq = prompt + fresh;
  if (absl::GetFlag(FLAGS_preset) == "llama") {
    UseLlamaArchitecture(&m);
  } else if (absl::GetFlag(FLAGS_preset) != "gpt2") {
    return absl::InvalidArgumentError("--preset: gpt2 or llama");
  }
  const int tp = absl::GetFlag(FLAGS_tp);
  RETURN_IF_ERROR(m.Validate(1, tp));
  kernels::SetGemmThreads(std::max(1, absl::GetFlag(FLAGS_threads) / tp));
  const double bandwidth = MeasureMemcpyBandwidth(size_t{256} << 20) / 1e9;
  const int64_t params = GptParameterCount(m);
  printf("%s: %d layers, hidden %lld, %d heads, vocab %lld (%s); %.2fM parameters, f32; tp %d\n",
         absl::GetFlag(FLAGS_preset).c_str(), m.layers, static_cast<long long>(m.hidden), m.heads,
         static_cast<long long>(m.vocab), GptArchitecture(m).c_str(), params / 1e6, tp);
  printf("memory bandwidth (memcpy 256 MiB, read + written): %.1f GB/s (this run)\n\n", bandwidth);
  printf("%6s %8s %14s %14s %16s %14s %8s\n", "batch", "context", "prefill tok/s", "decode tok/s",
         "bytes/step read", "bound tok/s", "of bound");
  // Random weights: the speed does not depend on them.
  const GptGenerator::ValueFn value =
      [&](const std::string& name) -> absl::StatusOr<std::vector<float>> {
    for (const checkpoint::TensorSpec& t : GptCheckpointTensors(m)) {
      if (t.name != name) continue;
      std::vector<float> v(NumElements(t.shape));
      const bool gain = name.find("_g") != std::string::npos;
      for (size_t i = 0; i < v.size(); ++i) {
        v[i] = gain ? 1.0f : static_cast<float>(PairUniform(Fnv1a64(name), i) - 0.5) * 0.05f;
      }
      return v;
    }
    return absl::NotFoundError(name);
  };
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int batch = 0;
    if (!absl::SimpleAtoi(part, &batch) || batch < 1) {
      return absl::InvalidArgumentError("--batches: positive integers, comma-separated");
    }
    std::vector<std::vector<int32_t>> prompts(batch, std::vector<int32_t>(prompt));
    for (int b = 0; b < batch; ++b) {
      for (int i = 0; i < prompt; ++i) prompts[b][i] = (b * 31 + i * 7) % m.vocab;
    }
    SamplingOptions o;
    o.temperature = 0;
    o.max_new_tokens = fresh;
    Generation g;
    int64_t weights = 0;
    std::mutex mu;
    RETURN_IF_ERROR(RunOnRanks(tp, [&](Communicator& c) -> absl::Status {
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto gen, GptGenerator::Create(c, m, Device::Cpu(), value, &mem));
      ASSIGN_OR_RETURN(Generation r, gen->Generate(prompts, o));  // warm-up
      ASSIGN_OR_RETURN(r, gen->Generate(prompts, o));
      std::lock_guard<std::mutex> lock(mu);
      if (c.rank() == 0) {
        g = std::move(r);
        weights = mem.current(MemCategory::kParam);
      }
      return absl::OkStatus();
    }));
    // Per decode step, on one rank: its weights and, per sequence, the
    // cache up to the mean context of the decode steps (read once each).
    const double context = prompt + fresh / 2.0;
    const double cache_read =
        static_cast<double>(g.kv_cache_bytes) / batch / (prompt + fresh) * context * batch;
    const double bytes = weights + cache_read;
    const double bound = batch * bandwidth * 1e9 / bytes;
    const double decode = g.decode_tokens / g.decode_seconds;
    printf("%6d %8.0f %14.0f %14.0f %16.0f %14.0f %7.1f%%\n", batch, context,
           g.prefill_tokens / g.prefill_seconds, decode, bytes, bound, 100 * decode / bound);
  }
  printf(
      "\nbytes/step read: one rank's weights (f32) + its key/value cache at the mean context;\n"
      "bound: batch x bandwidth / bytes per step (each rank reads its share at the same time).\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status s = trireme::Main();
  if (!s.ok()) {
    fprintf(stderr, "generate bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
