// Training-step throughput of the GPT: tokens/s and achieved FLOP/s (6 x
// parameters x tokens plus attention, 12 x layers x seq x hidden per token)
// next to this machine's OpenBLAS sgemm FLOP/s measured in the same run, at
// (1, 1, 1) and on a 3D grid; and, where Debian's python3-torch is installed,
// the same model, batch and threads in PyTorch for a side-by-side ratio.
//
//   ./bazelw run -c opt //bench:step
//   ./bazelw run -c opt //bench:step -- --hidden=512 --heads=8 --layers=2 --grid=2,1,2
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "models/gpt_trainer.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "runtime/core/stream.h"

ABSL_FLAG(std::string, preset, "gpt2",
          "the architecture: gpt2, or llama (RMSNorm, RoPE, SwiGLU, 2 KV heads, untied head, no "
          "biases)");
ABSL_FLAG(int, layers, 4, "transformer blocks");
ABSL_FLAG(int, hidden, 768, "hidden size (GPT-2 small's width)");
ABSL_FLAG(int, heads, 12, "attention heads");
ABSL_FLAG(int, vocab, 256, "vocabulary");
ABSL_FLAG(int, seq, 128, "sequence length");
ABSL_FLAG(int, micro_batch, 4, "sequences per micro-batch");
ABSL_FLAG(int, steps, 3, "timed steps (after one warm-up step)");
ABSL_FLAG(int, threads, 2, "OpenBLAS / PyTorch threads at (1,1,1)");
ABSL_FLAG(std::string, grid, "2,2,2", "the 3D grid dp,tp,pp (empty: skip)");
ABSL_FLAG(std::string, torch_script, "bench/torch_step.py", "the PyTorch side");
ABSL_FLAG(std::string, device, "host",
          "host (cpu and cpu_async, against OpenBLAS sgemm) or cuda (cuda:0, against cuBLAS "
          "sgemm measured in the same run; the grid's ranks are threads sharing the GPU)");

namespace trireme {
namespace {

double SgemmGflops(int threads) {
  kernels::SetGemmThreads(threads);
  return kernels::MeasureGemmFlops(1024) / 1e9;
}

struct Result {
  double tokens_per_s = 0, gflops = 0;
  int64_t params = 0;
  int micro_batches = 0;
  std::vector<GptStepTiming> timing;  // per rank, summed over the timed steps
  // DP communication per rank and step, mean over ranks: time in flight and
  // time the compute stream (or, on cpu, the host) was blocked on it.
  double dp_busy_ms = 0, dp_exposed_ms = 0;
};

absl::StatusOr<Result> Measure(const GptConfig& model, GridDims grid, int gemm_threads,
                               Device device) {
  kernels::SetGemmThreads(gemm_threads);
  const int world = grid.dp * grid.tp * grid.pp;
  GptTrainOptions o;
  o.model = model;
  o.grid = grid;
  o.engine.device = device;
  o.engine.stage = grid.dp > 1 ? 3 : 0;
  // One rank per core budget: a lone rank's optimizer, norm and casts use
  // the GEMM threads too; ranks as threads keep one each.
  o.engine.kernel_threads = world == 1 ? gemm_threads : 1;
  o.micro_batches = grid.pp;  // keep every pipeline stage busy
  const int steps = absl::GetFlag(FLAGS_steps);
  double seconds = 0, dp_busy = 0, dp_exposed = 0;
  std::vector<GptStepTiming> timing(world);
  std::mutex mu;
  RETURN_IF_ERROR(RunOnRanks(world, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
    RETURN_IF_ERROR(t->Step(0).status());
    RETURN_IF_ERROR(c.Barrier());
    const double busy0 = t->grid().dp_group().stats().busy_seconds;
    const double exposed0 = t->exposed_dp_seconds();
    const absl::Time t0 = absl::Now();
    for (int s = 1; s <= steps; ++s) {
      ASSIGN_OR_RETURN(GptStepResult r, t->Step(s));
      timing[c.rank()] += r.timing;
      if (c.rank() == 0) printf("  step %d  loss %.4f\n", s, r.loss);
    }
    RETURN_IF_ERROR(c.Barrier());
    std::lock_guard<std::mutex> lock(mu);
    if (c.rank() == 0) seconds = absl::ToDoubleSeconds(absl::Now() - t0) / steps;
    dp_busy += (t->grid().dp_group().stats().busy_seconds - busy0) / world;
    dp_exposed += (t->exposed_dp_seconds() - exposed0) / world;
    return absl::OkStatus();
  }));
  Result r;
  r.dp_busy_ms = 1e3 * dp_busy / steps;
  r.dp_exposed_ms = 1e3 * dp_exposed / steps;
  r.timing = std::move(timing);
  r.micro_batches = o.micro_batches;
  const int64_t C = model.hidden, T = model.seq;
  r.params = GptParameterCount(model);
  const double tokens = static_cast<double>(grid.dp) * o.micro_batches * model.micro_batch * T;
  r.tokens_per_s = tokens / seconds;
  const double flops_per_token = 6.0 * r.params + 12.0 * model.layers * T * C;
  r.gflops = r.tokens_per_s * flops_per_token / 1e9;
  return r;
}

// f32 GEMM (n^3, through the Gemm launcher: cuBLAS on a CUDA stream) on
// `device`, GFLOP/s.
absl::StatusOr<double> DeviceGemmGflops(const Device& device, int64_t n) {
  ASSIGN_OR_RETURN(std::unique_ptr<Stream> s, NewStream(device, "bench:gemm"));
  MemoryTracker mem;
  std::vector<Buffer> buf;
  for (int i = 0; i < 3; ++i) {
    ASSIGN_OR_RETURN(Buffer b,
                     Buffer::Allocate(device, n * n * 4, MemCategory::kWorkspace, &mem, s.get()));
    RETURN_IF_ERROR(kernels::Memset(*s, b.data(), b.bytes()));
    buf.push_back(std::move(b));
  }
  const float *a = buf[0].as<float>(), *b = buf[1].as<float>();
  float* c = buf[2].as<float>();
  RETURN_IF_ERROR(kernels::Gemm(*s, false, false, n, n, n, 1, a, n, b, n, 0, c, n));  // warm-up
  RETURN_IF_ERROR(s->Synchronize());
  const int reps = 10;
  const absl::Time t0 = absl::Now();
  for (int i = 0; i < reps; ++i) {
    RETURN_IF_ERROR(kernels::Gemm(*s, false, false, n, n, n, 1, a, n, b, n, 0, c, n));
  }
  RETURN_IF_ERROR(s->Synchronize());
  return reps * 2.0 * n * n * n / absl::ToDoubleSeconds(absl::Now() - t0) / 1e9;
}

double TorchTokensPerSecond(const GptConfig& m, int threads, const char* device = "cpu") {
  if (absl::GetFlag(FLAGS_preset) != "gpt2") return 0;  // bench/torch_step.py is GPT-2 only
  std::string script = absl::GetFlag(FLAGS_torch_script);
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && script[0] != '/') {
    script = absl::StrCat(ws, "/", script);
  }
  const std::string cmd =
      absl::StrCat("/usr/bin/python3 ", script, " ", m.layers, " ", m.hidden, " ", m.heads, " ",
                   m.vocab, " ", m.seq, " ", m.micro_batch, " ", absl::GetFlag(FLAGS_steps), " ",
                   threads, " ", device, " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return 0;
  char buf[128] = {0};
  const bool got = fgets(buf, sizeof(buf), p) != nullptr;
  pclose(p);
  double v = 0;
  return got && absl::SimpleAtod(absl::StripAsciiWhitespace(buf), &v) ? v : 0;
}

absl::StatusOr<GridDims> GridFlag() {
  std::vector<int> d;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_grid), ',')) {
    int v;
    if (!absl::SimpleAtoi(part, &v)) return absl::InvalidArgumentError("--grid=dp,tp,pp");
    d.push_back(v);
  }
  if (d.size() != 3) return absl::InvalidArgumentError("--grid=dp,tp,pp");
  return GridDims{d[0], d[1], d[2]};
}

// --device=cuda: (1,1,1) and the grid on cuda:0 against cuBLAS sgemm and
// PyTorch on the same GPU, all measured in this run.
absl::Status MainCuda(const GptConfig& m) {
  RETURN_IF_ERROR(Annotate(CudaDeviceAvailable(), "--device=cuda"));
  const Device gpu = Device::Cuda(0);
  ASSIGN_OR_RETURN(const double peak, DeviceGemmGflops(gpu, 4096));
  printf("%s %d layers, hidden %lld, %d heads, vocab %lld, seq %lld, micro-batch %lld; f32 (%s)\n",
         absl::GetFlag(FLAGS_preset).c_str(), m.layers, static_cast<long long>(m.hidden), m.heads,
         static_cast<long long>(m.vocab), static_cast<long long>(m.seq),
         static_cast<long long>(m.micro_batch), GptArchitecture(m).c_str());
  printf("cuBLAS sgemm 4096^3 on %s: %.1f GFLOP/s (this run)\n\n", gpu.ToString().c_str(), peak);
  printf("grid (1,1,1), %s:\n", gpu.ToString().c_str());
  ASSIGN_OR_RETURN(Result one, Measure(m, {1, 1, 1}, 1, gpu));
  const double torch = TorchTokensPerSecond(m, 1, "cuda");
  printf("\n%-22s %12s %12s %10s %14s %8s\n", "grid, device", "tokens/s", "GFLOP/s", "of sgemm",
         "torch tokens/s", "ratio");
  printf("%-22s %12.0f %12.1f %9.1f%% %14s %8s\n", "(1,1,1) cuda:0", one.tokens_per_s, one.gflops,
         100 * one.gflops / peak, torch > 0 ? absl::StrCat(static_cast<int>(torch)).c_str() : "n/a",
         torch > 0 ? absl::StrFormat("%.2fx", one.tokens_per_s / torch).c_str() : "n/a");
  if (!absl::GetFlag(FLAGS_grid).empty()) {
    ASSIGN_OR_RETURN(const GridDims dims, GridFlag());
    printf("\ngrid (%d,%d,%d): %d ranks as threads sharing cuda:0, ZeRO-3, 1F1B:\n", dims.dp,
           dims.tp, dims.pp, dims.dp * dims.tp * dims.pp);
    ASSIGN_OR_RETURN(Result r, Measure(m, dims, 1, gpu));
    printf("%-22s %12.0f %12.1f %9.1f%% %11.1f ms DP in flight, %.1f ms exposed\n",
           absl::StrCat("(", absl::GetFlag(FLAGS_grid), ") cuda:0").c_str(), r.tokens_per_s,
           r.gflops, 100 * r.gflops / peak, r.dp_busy_ms, r.dp_exposed_ms);
  }
  printf("\nFLOPs per token = 6 x %lld parameters + 12 x layers x seq x hidden (attention).\n",
         static_cast<long long>(one.params));
  return absl::OkStatus();
}

absl::Status Main() {
  GptConfig m;
  m.layers = absl::GetFlag(FLAGS_layers);
  m.hidden = absl::GetFlag(FLAGS_hidden);
  m.heads = absl::GetFlag(FLAGS_heads);
  m.vocab = absl::GetFlag(FLAGS_vocab);
  m.seq = absl::GetFlag(FLAGS_seq);
  m.micro_batch = absl::GetFlag(FLAGS_micro_batch);
  const int threads = absl::GetFlag(FLAGS_threads);
  const std::string preset = absl::GetFlag(FLAGS_preset);
  if (preset == "llama") {
    UseLlamaArchitecture(&m);
  } else if (preset != "gpt2") {
    return absl::InvalidArgumentError(absl::StrCat("--preset=", preset, ": use gpt2 or llama"));
  }
  RETURN_IF_ERROR(m.Validate(1));
  if (absl::GetFlag(FLAGS_device) == "cuda") return MainCuda(m);
  if (absl::GetFlag(FLAGS_device) != "host") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", absl::GetFlag(FLAGS_device), ": use host or cuda"));
  }
  const double peak = SgemmGflops(threads);
  printf("%s %d layers, hidden %lld, %d heads, vocab %lld, seq %lld, micro-batch %lld; f32 (%s)\n",
         absl::GetFlag(FLAGS_preset).c_str(), m.layers, static_cast<long long>(m.hidden), m.heads,
         static_cast<long long>(m.vocab), static_cast<long long>(m.seq),
         static_cast<long long>(m.micro_batch), GptArchitecture(m).c_str());
  printf("OpenBLAS sgemm 1024^3 with %d threads: %.1f GFLOP/s (this run)\n\n", threads, peak);
  // (1,1,1) on the synchronous device and on the asynchronous one (every
  // kernel handed to a stream worker), next to PyTorch.
  printf("grid (1,1,1), %d GEMM threads, cpu:\n", threads);
  ASSIGN_OR_RETURN(Result one, Measure(m, {1, 1, 1}, threads, Device::Cpu()));
  printf("grid (1,1,1), %d GEMM threads, cpu_async:\n", threads);
  ASSIGN_OR_RETURN(Result one_async, Measure(m, {1, 1, 1}, threads, Device::CpuAsync()));
  const double torch = TorchTokensPerSecond(m, threads);
  printf("\n%-22s %12s %12s %10s %14s %8s\n", "grid, device", "tokens/s", "GFLOP/s", "of sgemm",
         "torch tokens/s", "ratio");
  for (const auto& [name, res] :
       {std::make_pair("(1,1,1) cpu", &one), std::make_pair("(1,1,1) cpu_async", &one_async)}) {
    printf("%-22s %12.0f %12.1f %9.0f%% %14s %8s\n", name, res->tokens_per_s, res->gflops,
           100 * res->gflops / peak,
           torch > 0 ? absl::StrCat(static_cast<int>(torch)).c_str() : "n/a",
           torch > 0 ? absl::StrFormat("%.2fx", res->tokens_per_s / torch).c_str() : "n/a");
  }
  const std::string g = absl::GetFlag(FLAGS_grid);
  if (!g.empty()) {
    ASSIGN_OR_RETURN(const GridDims dims, GridFlag());
    const std::vector<int> d = {dims.dp, dims.tp, dims.pp};
    const int world = d[0] * d[1] * d[2];
    printf("\ngrid (%d,%d,%d): %d ranks as threads, 1 GEMM thread each, ZeRO-3, 1F1B, cpu:\n", d[0],
           d[1], d[2], world);
    ASSIGN_OR_RETURN(Result r, Measure(m, dims, 1, Device::Cpu()));
    printf("grid (%d,%d,%d), cpu_async:\n", d[0], d[1], d[2]);
    ASSIGN_OR_RETURN(Result ra, Measure(m, dims, 1, Device::CpuAsync()));
    printf("\n%-22s %12s %12s %10s %14s %14s\n", "grid, device", "tokens/s", "GFLOP/s", "of sgemm",
           "DP in flight", "DP exposed");
    for (const auto& [dev, res] : {std::make_pair("cpu", &r), std::make_pair("cpu_async", &ra)}) {
      printf("%-22s %12.0f %12.1f %9.0f%% %11.1f ms %11.1f ms\n",
             absl::StrCat("(", g, ") ", dev).c_str(), res->tokens_per_s, res->gflops,
             100 * res->gflops / peak, res->dp_busy_ms, res->dp_exposed_ms);
    }
    printf(
        "(DP: the ZeRO-3 gathers and reductions per rank and step, mean over ranks; exposed:\n"
        " the compute stream -- on cpu the host -- blocked on them.)\n");
    // Measured bubble per pipeline stage (mean over its ranks) next to 1F1B's
    // (pp - 1) / (m + pp - 1).
    const int pp = d[2];
    printf("\npipeline time per step at (%s), cpu, m = %d micro-batches per DP rank:\n", g.c_str(),
           r.micro_batches);
    printf("%-8s %12s %12s %12s %10s %10s\n", "stage", "compute ms", "wait ms", "optimizer ms",
           "bubble", "theory");
    const double theory = static_cast<double>(pp - 1) / (r.micro_batches + pp - 1);
    const int steps = absl::GetFlag(FLAGS_steps);
    for (int stage = 0; stage < pp; ++stage) {
      GptStepTiming sum;
      int n = 0;
      for (int rank = 0; rank < world; ++rank) {
        if (rank / (d[0] * d[1]) != stage) continue;  // pp is the slowest grid axis
        sum += r.timing[rank];
        ++n;
      }
      printf("%-8d %12.1f %12.1f %12.1f %9.1f%% %9.1f%%\n", stage,
             1e3 * sum.pipeline.compute_s / n / steps, 1e3 * sum.pipeline.wait_s / n / steps,
             1e3 * sum.optimizer_s / n / steps, 100 * sum.pipeline.bubble(), 100 * theory);
    }
    printf(
        "(bubble = wait / (compute + wait). %d rank threads share %d cores here: a waiting\n"
        " rank's core goes to its neighbours, whose compute stretches, so the measured\n"
        " bubble is not comparable to theory unless every rank has a core of its own.)\n",
        world, static_cast<int>(std::thread::hardware_concurrency()));
  }
  printf("\nFLOPs per token = 6 x %lld parameters + 12 x layers x seq x hidden (attention).\n",
         static_cast<long long>(one.params));
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = trireme::Main(); !s.ok()) {
    fprintf(stderr, "step: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
