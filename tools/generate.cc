// //:generate: samples from a //:train checkpoint (saved on any grid) on a
// tensor-parallel group of --tp ranks (threads, or the processes of
// mpirun -np TP), with a key/value cache sharded by key/value head. Prompts
// and output are byte-level text (tokens 0-255). --help lists the flags.
#include "models/generate.h"

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "runtime/comm/mpi_comm.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

constexpr char kUsage[] =
    "usage: generate --checkpoint=DIR [flags]\n"
    "  --checkpoint=DIR     a //:train checkpoint directory, or a checkpoint root (its latest)\n"
    "  --prompt=TEXT        a prompt (repeat the flag for a batch of prompts; default \"The \")\n"
    "  --max_new_tokens=N   tokens generated per prompt (default 64)\n"
    "  --temperature=T      0: greedy; else sampling at temperature T (default 0.8)\n"
    "  --top_k=K            sample among the K most likely tokens (0: all; default 0)\n"
    "  --top_p=P            sample among the most likely tokens reaching P (default 1: all)\n"
    "  --seed=S             sampling seed (default 1)\n"
    "  --tp=N               tensor-parallel ranks (default 1; under mpirun: the processes)\n"
    "  --backend=B          threads, mpi or auto (mpi when started by mpirun; default auto)\n"
    "  --device=D           cpu, cpu_async or cuda (default cpu)\n"
    "  --no_cache           recompute the whole prefix every step (the cache's reference)\n";

struct Flags {
  std::string checkpoint, backend = "auto", device = "cpu";
  std::vector<std::string> prompts;
  SamplingOptions sampling;
  int tp = 1;
  bool tp_given = false;
};

absl::StatusOr<Flags> Parse(const std::vector<std::string>& args) {
  Flags f;
  f.sampling.temperature = 0.8f;
  for (const std::string& a : args) {
    if (a == "--no_cache") {
      f.sampling.use_cache = false;
      continue;
    }
    const size_t eq = a.find('=');
    if (!absl::StartsWith(a, "--") || eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", a, "' is not --name=value"));
    }
    const std::string name = a.substr(2, eq - 2), v = a.substr(eq + 1);
    bool ok = true;
    if (name == "checkpoint") {
      f.checkpoint = v;
    } else if (name == "prompt") {
      f.prompts.push_back(v);
    } else if (name == "backend") {
      f.backend = v;
    } else if (name == "device") {
      f.device = v;
    } else if (name == "max_new_tokens") {
      ok = absl::SimpleAtoi(v, &f.sampling.max_new_tokens) && f.sampling.max_new_tokens >= 0;
    } else if (name == "temperature") {
      ok = absl::SimpleAtof(v, &f.sampling.temperature) && f.sampling.temperature >= 0;
    } else if (name == "top_k") {
      ok = absl::SimpleAtoi(v, &f.sampling.top_k) && f.sampling.top_k >= 0;
    } else if (name == "top_p") {
      ok = absl::SimpleAtof(v, &f.sampling.top_p) && f.sampling.top_p > 0 && f.sampling.top_p <= 1;
    } else if (name == "seed") {
      ok = absl::SimpleAtoi(v, &f.sampling.seed);
    } else if (name == "tp") {
      ok = absl::SimpleAtoi(v, &f.tp) && f.tp >= 1;
      f.tp_given = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '--", name, "'"));
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("--", name, "='", v, "' is invalid"));
  }
  if (f.checkpoint.empty()) return absl::InvalidArgumentError("--checkpoint is required");
  if (f.prompts.empty()) f.prompts.push_back("The ");
  return f;
}

// Text as byte tokens, and back (bytes outside printable ASCII escaped).
std::vector<int32_t> Tokens(const std::string& text) {
  std::vector<int32_t> t;
  for (unsigned char c : text) t.push_back(c);
  return t;
}
std::string Text(const std::vector<int32_t>& tokens) {
  std::string s;
  for (int32_t t : tokens) {
    if (t == '\n' || (t >= 32 && t < 127)) {
      s += static_cast<char>(t);
    } else {
      s += absl::StrFormat("\\x%02x", t);
    }
  }
  return s;
}

std::string Bytes(double b) {
  if (b >= 1 << 30) return absl::StrFormat("%.2f GiB", b / (1 << 30));
  if (b >= 1 << 20) return absl::StrFormat("%.2f MiB", b / (1 << 20));
  return absl::StrFormat("%.2f KiB", b / 1024);
}

absl::Status RunRank(Communicator& tp, const Flags& f, std::mutex& print) {
  ASSIGN_OR_RETURN(const Device device, ParseDevice(f.device));
  MemoryTracker mem;
  ASSIGN_OR_RETURN(auto g, GptGenerator::Load(tp, f.checkpoint, device, &mem));
  const int64_t weights = mem.current(MemCategory::kParam);
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& p : f.prompts) prompts.push_back(Tokens(p));
  if (tp.rank() == 0) {
    printf("model: %d layers, hidden %lld, %d heads, vocab %lld (%s); tp %d, %s\n",
           g->config().layers, static_cast<long long>(g->config().hidden), g->config().heads,
           static_cast<long long>(g->config().vocab), GptArchitecture(g->config()).c_str(),
           tp.size(), f.sampling.temperature == 0 ? "greedy" : "sampling");
    fflush(stdout);
  }
  ASSIGN_OR_RETURN(Generation r, g->Generate(prompts, f.sampling));
  std::lock_guard<std::mutex> lock(print);
  if (tp.rank() == 0) {
    for (size_t b = 0; b < r.tokens.size(); ++b) {
      printf("\n[%zu] %s\n", b, Text(r.tokens[b]).c_str());
    }
    double lp = 0;
    int64_t n = 0;
    for (const auto& l : r.logprobs) {
      for (double x : l) lp += x, ++n;
    }
    printf(
        "\nprefill: %lld tokens in %.1f ms (%.0f tokens/s); decode: %lld tokens in %.1f ms "
        "(%.0f tokens/s)%s\n",
        static_cast<long long>(r.prefill_tokens), r.prefill_seconds * 1e3,
        r.prefill_tokens / std::max(r.prefill_seconds, 1e-9),
        static_cast<long long>(r.decode_tokens), r.decode_seconds * 1e3,
        r.decode_tokens / std::max(r.decode_seconds, 1e-9),
        f.sampling.use_cache ? "" : " -- without the cache: every step recomputes the prefix");
    if (n > 0) printf("mean log-probability of the generated tokens: %.3f nats\n", lp / n);
  }
  printf("rank %d: weights %s, key/value cache %s (%d of %d KV heads%s), peak %s\n", tp.rank(),
         Bytes(weights).c_str(), Bytes(r.kv_cache_bytes).c_str(), g->config().local_kv(tp.size()),
         g->config().kv(),
         g->config().sliding_window > 0
             ? absl::StrCat("; a ring of ", g->config().sliding_window, " positions").c_str()
             : "",
         Bytes(mem.snapshot().total_peak).c_str());
  fflush(stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  using namespace trireme;
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      printf("%s", kUsage);
      return 0;
    }
  }
  absl::StatusOr<Flags> f = Parse(args);
  if (!f.ok()) {
    fprintf(stderr, "generate: %s\n%s", f.status().message().data(), kUsage);
    return 2;
  }
  const bool mpi = f->backend == "mpi" || (f->backend == "auto" && MpiRuntime::LaunchedByMpirun());
  std::mutex print;
  absl::Status s;
  if (mpi) {
    if (s = MpiRuntime::Init(&argc, &argv); !s.ok()) {
      fprintf(stderr, "generate: %s\n", s.ToString().c_str());
      return 1;  // MPI is not running: nothing to abort
    }
    absl::StatusOr<std::unique_ptr<Communicator>> world = MpiRuntime::World(CommOptions());
    if (world.ok() && f->tp_given && f->tp != (*world)->size()) {
      s = absl::InvalidArgumentError(
          absl::StrCat("--tp=", f->tp, " but mpirun started ", (*world)->size(), " processes"));
    } else {
      s = world.ok() ? RunRank(**world, *f, print) : world.status();
    }
  } else if (f->backend == "threads" || f->backend == "auto") {
    s = RunOnRanks(f->tp, [&](Communicator& c) { return RunRank(c, *f, print); });
  } else {
    s = absl::InvalidArgumentError(
        absl::StrCat("--backend='", f->backend, "': use threads, mpi or auto"));
  }
  if (!s.ok()) {
    fprintf(stderr, "generate: %s\n", s.ToString().c_str());
    if (mpi) {  // every rank's message gets out (a short grace), then the job ends
      fflush(stdout);
      fflush(stderr);
      absl::SleepFor(absl::Seconds(2));
      MpiRuntime::AbortJob(1);
    }
    return 1;
  }
  if (mpi) MpiRuntime::Finalize();
  return 0;
}
