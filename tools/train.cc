// Trains the GPT on the grid you choose and shows what Trireme does: the loss
// falling toward the data's entropy, validation loss, throughput and per-rank
// memory as it goes, sharded checkpoints that resume bitwise and load onto
// another grid, and a summary at the end. Ranks are threads in this process
// (--backend=threads, the default) or MPI processes (started by mpirun).
//
//   ./bazelw run //:train                                  the embedded default
//   ./bazelw run //:train -- --dp=1 --tp=2 --pp=2 --zero=1 --steps=100
//   ./bazelw run //:train -- --data=/path/to/text.txt      byte-level text
//   ./bazelw run //:train -- --config=run.json --steps=50  a file, flags override
//   ./bazelw run //:train -- --checkpoint_dir=/tmp/ck --resume=auto
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "models/gpt_trainer.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/config_check.h"
#include "runtime/comm/flight_recorder.h"
#include "runtime/comm/mpi_comm.h"
#include "runtime/core/json.h"
#if TRIREME_WITH_NCCL
#include "runtime/comm/nccl_comm.h"
#endif
#include "runtime/comm/threads_comm.h"
#include "runtime/core/allocator.h"
#include "runtime/core/device.h"
#include "runtime/core/hash.h"
#include "runtime/core/host_memory.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"

ABSL_FLAG(std::string, config, "", "a JSON file whose keys mirror these flags (flags override it)");
ABSL_FLAG(std::string, preset, "", "model shape preset: tiny, default, small (explicit flags win)");
ABSL_FLAG(int, layers, 4, "transformer blocks");
ABSL_FLAG(int, hidden, 64, "hidden size");
ABSL_FLAG(int, heads, 4, "attention heads");
ABSL_FLAG(int, seq, 32, "sequence length");
ABSL_FLAG(int, vocab, 256, "vocabulary size (>= 256 with --data: byte-level tokens)");
ABSL_FLAG(int, micro_batch, 4, "sequences per micro-batch");
ABSL_FLAG(int, grad_accum, 2, "micro-batches per DP rank per step");
ABSL_FLAG(int, global_batch, 0,
          "sequences per step; must equal micro_batch x grad_accum x dp (0: that product)");
ABSL_FLAG(int, dp, 2, "data-parallel degree");
ABSL_FLAG(int, tp, 2, "tensor-parallel degree");
ABSL_FLAG(int, pp, 2, "pipeline-parallel degree");
ABSL_FLAG(int, virtual_stages, 1, "model chunks per pipeline rank (interleaved 1F1B)");
ABSL_FLAG(int, zero, 3, "ZeRO stage (0-3)");
ABSL_FLAG(bool, sequence_parallel, false, "sequence parallelism in the TP regions");
ABSL_FLAG(bool, recompute, false, "recompute every block in backward (activation checkpointing)");
ABSL_FLAG(std::string, schedule, "1f1b", "gpipe, 1f1b or interleaved");
ABSL_FLAG(std::string, precision, "f32",
          "compute and gradient dtype: f32, bf16 or f16 (+ loss "
          "scaling); masters and optimizer state are f32");
ABSL_FLAG(std::string, optimizer, "adamw", "adamw or sgd (momentum 0.9)");
ABSL_FLAG(double, lr, 3e-3, "peak learning rate");
ABSL_FLAG(std::string, lr_schedule, "cosine", "cosine (linear warmup, decay to lr/10) or constant");
ABSL_FLAG(int, warmup, 10, "warmup steps");
ABSL_FLAG(double, weight_decay, 0.01, "decoupled weight decay (AdamW) / L2 (SGD)");
ABSL_FLAG(double, clip, 1.0, "global grad-norm clipping (0: off)");
ABSL_FLAG(std::string, on_nonfinite, "skip",
          "a non-finite gradient on any rank (f32/bf16): skip the step everywhere, or abort");
ABSL_FLAG(uint64_t, seed, 1, "parameter and data seed");
ABSL_FLAG(int, steps, 150, "optimizer steps (the last step number, when resuming)");
ABSL_FLAG(std::string, data, "",
          "a text file (byte-level tokens; the last 10% is validation); "
          "empty: the synthetic corpus");
ABSL_FLAG(int, eval_every, 50, "validation loss every N steps and at the end (0: off)");
ABSL_FLAG(int, eval_batches, 2, "global batches per validation");
ABSL_FLAG(int, log_every, 10, "print a progress line every N steps");
ABSL_FLAG(std::string, checkpoint_dir, "", "where checkpoints go (empty: none)");
ABSL_FLAG(int, checkpoint_every, 0, "save every N steps and at the end (0: only at the end)");
ABSL_FLAG(int, keep_checkpoints, 3, "committed checkpoints kept (0: all)");
ABSL_FLAG(std::string, resume, "",
          "a checkpoint directory, a checkpoint root (its latest), or "
          "'auto' (--checkpoint_dir's newest committed step, if there is one)");
ABSL_FLAG(std::string, save_on_signal, "TERM,INT,USR1",
          "signals (comma-separated names: TERM, INT, USR1, USR2, HUP) on which every rank "
          "finishes the current step, saves a checkpoint (with --checkpoint_dir) and the job "
          "exits with status 3; a second signal (2 s or more after the first) exits at once. "
          "Empty: the default actions");
ABSL_FLAG(std::string, memory_budget, "",
          "at most this much host memory for the job's ranks on each host, e.g. 16G or 512M "
          "(empty: what the kernel reports available, cgroup limit included); GPUs: their free "
          "memory");
ABSL_FLAG(bool, force, false,
          "start even when the memory check says the run will not fit (a warning instead of the "
          "error)");
ABSL_FLAG(std::string, backend, "auto",
          "threads, mpi, nccl (under mpirun with --device=cuda: NCCL data communicators, mpi for "
          "host values), or auto (mpi when started by mpirun)");
ABSL_FLAG(std::string, device, "cpu",
          "cpu (synchronous: every kernel and collective completes before the next starts), "
          "cpu_async (kernels, copies and collectives on streams; communication overlaps compute), "
          "or cuda (a GPU per rank, ranks spread over the visible GPUs: by rank with threads, by "
          "local rank under mpirun; cuda:N puts every rank of this process on GPU N)");

namespace trireme {
namespace {

// Graceful preemption (--save_on_signal): the first signal asks every rank
// to stop after the current step with a checkpoint; a second exits at once.
std::atomic<int> g_stop_signals{0};
std::atomic<int> g_stop_signal{0};
std::atomic<int64_t> g_first_stop_ns{0};
std::atomic<bool> g_preempted{false};  // set when the ranks stopped for a signal
constexpr int kPreemptedExitStatus = 3;
// Failing: a signal now (mpirun ending the job) exits at once, quietly.
std::atomic<bool> g_failing{false};
// Under mpirun, a failure every process agreed on before the first step:
// the leader reports it, the others stay quiet (one message per job).
std::atomic<bool> g_leader_reports{false};

int64_t MonotonicNs() {  // async-signal-safe
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

extern "C" void OnStopSignal(int sig) {
  // A second signal exits at once -- but one that follows the first within
  // 2 s is the same request delivered twice (a scheduler signalling the
  // ranks and mpirun forwarding its own copy), not an insistence.
  if (g_failing.load()) _exit(1);
  const int64_t now = MonotonicNs();
  if (g_stop_signals.fetch_add(1) >= 1) {
    if (now - g_first_stop_ns.load() >= int64_t{2000000000}) _exit(128 + sig);
    return;
  }
  g_first_stop_ns = now;
  g_stop_signal = sig;
  static const char msg[] =
      "\ntrain: signal received: every rank finishes its step and saves; a second signal "
      "exits at once\n";
  (void)!::write(2, msg, sizeof(msg) - 1);
}

// Installs OnStopSignal for the signals --save_on_signal names.
absl::Status InstallStopSignals(const std::string& names) {
  for (absl::string_view name : absl::StrSplit(names, ',', absl::SkipWhitespace())) {
    name = absl::StripAsciiWhitespace(name);
    if (name.empty()) continue;
    int sig = 0;
    if (name == "TERM") sig = SIGTERM;
    if (name == "INT") sig = SIGINT;
    if (name == "USR1") sig = SIGUSR1;
    if (name == "USR2") sig = SIGUSR2;
    if (name == "HUP") sig = SIGHUP;
    if (sig == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--save_on_signal: '", name, "' is not one of TERM, INT, USR1, USR2, HUP"));
    }
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (::sigaction(sig, &sa, nullptr) != 0) {
      return absl::InternalError(absl::StrCat("--save_on_signal: sigaction(SIG", name, ") failed"));
    }
  }
  return absl::OkStatus();
}

// ---- configuration -----------------------------------------------------------

// Shape presets; flags set on the command line or in --config win.
const std::map<std::string, std::map<std::string, std::string>>& Presets() {
  static const auto* p = new std::map<std::string, std::map<std::string, std::string>>{
      {"tiny", {{"layers", "2"}, {"hidden", "32"}, {"heads", "4"}, {"seq", "16"}}},
      {"default", {{"layers", "4"}, {"hidden", "64"}, {"heads", "4"}, {"seq", "32"}}},
      {"small", {{"layers", "6"}, {"hidden", "128"}, {"heads", "8"}, {"seq", "64"}}},
  };
  return *p;
}

// Flags given on the command line (they win over --preset and --config).
std::set<std::string>& CommandLineFlags() {
  static auto* s = new std::set<std::string>;
  return *s;
}

void RecordCommandLineFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view a(argv[i]);
    if (a == "--") break;
    if (!absl::ConsumePrefix(&a, "-")) continue;
    absl::ConsumePrefix(&a, "-");
    const std::string name(a.substr(0, a.find('=')));
    CommandLineFlags().insert(name);
    if (name.size() > 2 && name.compare(0, 2, "no") == 0) CommandLineFlags().insert(name.substr(2));
  }
}

absl::Status SetFlag(const std::string& key, const std::string& value, const std::string& where) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(key);
  if (flag == nullptr || key == "config") {
    return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", key, "'"));
  }
  if (CommandLineFlags().count(key) > 0) return absl::OkStatus();  // the command line wins
  std::string err;
  if (!flag->ParseFrom(value, &err)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": '", key, "' = '", value, "': ", err));
  }
  return absl::OkStatus();
}

// Applies --preset, then --config's keys, to every flag not given on the
// command line.
absl::Status ApplyPresetAndConfig() {
  const std::string path = absl::GetFlag(FLAGS_config);
  Json config = Json::Object();
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--config: cannot open '", path, "'"));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto parsed = Json::Parse(text);
    if (!parsed.ok()) return Annotate(parsed.status(), absl::StrCat("--config '", path, "'"));
    if (!parsed->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("--config '", path, "' is not a JSON object"));
    }
    config = *parsed;
  }
  const std::string where = absl::StrCat("--config '", path, "'");
  if (const Json* p = config.Find("preset"); p != nullptr && p->is_string()) {
    RETURN_IF_ERROR(SetFlag("preset", p->string_value(), where));
  }
  const std::string preset = absl::GetFlag(FLAGS_preset);
  if (!preset.empty()) {
    auto it = Presets().find(preset);
    if (it == Presets().end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--preset='", preset, "': use tiny, default or small"));
    }
    for (const auto& [k, v] : it->second) {
      if (config.Find(k) == nullptr) RETURN_IF_ERROR(SetFlag(k, v, "--preset"));
    }
  }
  for (const auto& [key, value] : config.members()) {
    std::string text;
    switch (value.kind()) {
      case Json::Kind::kString:
        text = value.string_value();
        break;
      case Json::Kind::kBool:
        text = value.bool_value() ? "true" : "false";
        break;
      case Json::Kind::kInt:
        text = absl::StrCat(value.int_value());
        break;
      case Json::Kind::kDouble:
        text = absl::StrFormat("%.17g", value.number_value());
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": '", key, "' must be a string, number or bool"));
    }
    RETURN_IF_ERROR(SetFlag(key, text, where));
  }
  return absl::OkStatus();
}

absl::StatusOr<DType> ParsePrecision(const std::string& p) {
  if (p == "f32") return DType::kF32;
  if (p == "bf16") return DType::kBF16;
  if (p == "f16") return DType::kF16;
  return absl::InvalidArgumentError(absl::StrCat("--precision='", p, "': use f32, bf16 or f16"));
}

absl::Status Positive(const char* name, double v) {
  if (v > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--", name, "=", v, " must be > 0"));
}
absl::Status NonNegative(const char* name, double v) {
  if (v >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--", name, "=", v, " must be >= 0"));
}

// Every flag, for the checkpoint's record of the run.
Json FlagsJson() {
  Json j = Json::Object();
  for (const char* k :
       {"layers",     "hidden",    "heads",     "seq", "vocab",          "micro_batch",
        "grad_accum", "dp",        "tp",        "pp",  "virtual_stages", "zero",
        "schedule",   "precision", "optimizer", "lr",  "lr_schedule",    "warmup",
        "seed",       "steps",     "data"}) {
    j.Set(k, Json(absl::FindCommandLineFlag(k)->CurrentValue()));
  }
  return j;
}

// TRIREME_FAULT_SAVE="<rank>[:kill][@<step>]": that world rank fails halfway
// through writing its checkpoint file -- with an error, or by SIGKILL (a
// crash mid-save) -- on every save or only on step <step>'s. For tests of the
// commit protocol; the library itself only calls the hook.
absl::StatusOr<std::function<absl::Status(int, int64_t)>> SaveFaultFromEnv() {
  const char* env = std::getenv("TRIREME_FAULT_SAVE");
  if (env == nullptr || *env == '\0') return std::function<absl::Status(int, int64_t)>();
  absl::string_view v(env);
  int64_t at_step = -1;
  int rank = -1;
  if (size_t at = v.find('@'); at != absl::string_view::npos) {
    if (!absl::SimpleAtoi(v.substr(at + 1), &at_step)) at_step = -2;
    v = v.substr(0, at);
  }
  const bool kill = absl::ConsumeSuffix(&v, ":kill");
  if (!absl::SimpleAtoi(v, &rank) || rank < 0 || at_step == -2) {
    return absl::InvalidArgumentError(
        absl::StrCat("TRIREME_FAULT_SAVE='", env, "' is not <rank>[:kill][@<step>]"));
  }
  return std::function<absl::Status(int, int64_t)>(
      [rank, kill, at_step](int me, int64_t step) -> absl::Status {
        if (me != rank || (at_step >= 0 && step != at_step)) return absl::OkStatus();
        if (kill) {
          fprintf(stderr,
                  "rank %d: TRIREME_FAULT_SAVE: killing myself halfway through its "
                  "step-%lld checkpoint file\n",
                  me, static_cast<long long>(step));
          fflush(stderr);
          raise(SIGKILL);
        }
        return absl::AbortedError(
            absl::StrCat("TRIREME_FAULT_SAVE: injected fault halfway "
                         "through rank ",
                         me, "'s checkpoint file"));
      });
}

Json LrJson(const LrSchedule& l) {
  return Json::Object(
      {{"kind", Json(l.kind == LrSchedule::Kind::kConstant ? "constant" : "cosine")},
       {"lr", Json(static_cast<double>(l.lr))},
       {"min_lr", Json(static_cast<double>(l.min_lr))},
       {"warmup_steps", Json(l.warmup_steps)},
       {"total_steps", Json(l.total_steps)}});
}

// ---- the run --------------------------------------------------------------------

struct RankSummary {
  MemoryTracker::Snapshot memory;
  CommStats dp, tp, pp;
  GridCoord coord;
  GptStepTiming timing;     // summed over the steps of this run
  double comm_s = 0;        // DP and TP communication not hidden behind compute (exposed)
  double dp_exposed_s = 0;  // ... of which DP (the engine's gathers and reductions)
  double dp_busy_s = 0, tp_busy_s = 0;  // communication in flight, hidden or not
  int64_t activation_estimate = 0;      // predicted activation peak (GptTrainer)
};

// The device of world rank `rank`. --device=cuda spreads the ranks over the
// visible GPUs (CUDA_VISIBLE_DEVICES chooses them): by rank with threads, by
// local rank under mpirun (OMPI_COMM_WORLD_LOCAL_RANK, else SLURM_LOCALID,
// else the world rank). cuda:N and the host devices are taken as given.
absl::StatusOr<Device> RankDevice(const Device& d, int rank, bool use_mpi) {
  if (d.kind != DeviceKind::kCuda || absl::StrContains(absl::GetFlag(FLAGS_device), ':')) return d;
  ASSIGN_OR_RETURN(const int gpus, CudaDeviceCount());
  if (gpus == 0) return absl::UnavailableError("--device=cuda: no CUDA device is visible");
  int slot = rank;
  if (use_mpi) {
    for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
      const char* v = std::getenv(var);
      int local = 0;
      if (v != nullptr && absl::SimpleAtoi(v, &local) && local >= 0) {
        slot = local;
        break;
      }
    }
  }
  return Device::Cuda(slot % gpus);
}

// The NCCL world over `control`'s ranks on `gpu` (--backend=nccl).
absl::StatusOr<std::unique_ptr<Communicator>> NewNcclWorld(Communicator& control, const Device& gpu,
                                                           const CommOptions& options) {
#if TRIREME_WITH_NCCL
  return CreateNcclCommunicator(control, gpu.index, options);
#else
  (void)control;
  (void)options;
  return absl::UnavailableError(absl::StrCat("--backend=nccl on ", gpu.ToString(),
                                             ": this binary was built without --config=cuda"));
#endif
}

// The model settings a checkpoint must have been written with (the rest --
// grid, stage, schedule, batch -- may change on resume).
constexpr const char* kModelFlags[] = {"layers", "hidden",    "heads",    "vocab",
                                       "seq",    "precision", "optimizer"};

// The leader's checks before the first step (see Main). Takes the root's
// lock into *lock; resolves `--resume=auto` in *resume ("" if the root holds
// no checkpoint yet).
absl::Status PrepareCheckpoints(const std::string& ckpt_dir, std::string* resume,
                                checkpoint::RootLock* lock) {
  if (!ckpt_dir.empty()) {
    std::string note;
    ASSIGN_OR_RETURN(*lock, checkpoint::RootLock::Acquire(ckpt_dir, &note));
    if (!note.empty()) printf("checkpoints: %s: %s\n", ckpt_dir.c_str(), note.c_str());
  }
  // What the root holds: committed steps, whatever `latest` says (a job
  // killed between a commit and `latest` leaves it behind).
  const std::vector<int64_t> committed =
      ckpt_dir.empty() ? std::vector<int64_t>() : checkpoint::CommittedSteps(ckpt_dir);
  if (*resume == "auto") {
    *resume = committed.empty() ? "" : checkpoint::StepDir(ckpt_dir, committed.back());
  }
  if (resume->empty()) {
    // A fresh run would collide with the committed steps at its saves.
    if (!committed.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--checkpoint_dir=", ckpt_dir, " already holds a run's checkpoints (newest: ",
          checkpoint::StepDir(ckpt_dir, committed.back()),
          "): continue it with --resume=auto, or give a new --checkpoint_dir"));
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const std::string dir, checkpoint::Resolve(*resume));
  // The manifest now (the load verifies every file before the first step).
  absl::StatusOr<checkpoint::ManifestSummary> read = checkpoint::ReadSummary(dir);
  RETURN_IF_ERROR(Annotate(read.status(), absl::StrCat("--resume=", *resume)));
  const checkpoint::ManifestSummary& m = *read;
  // Every rank loads exactly the checkpoint checked here.
  *resume = dir;
  // Saving into a root that holds later steps would collide with them.
  if (!committed.empty() && committed.back() > m.step) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--resume=", dir, " is step ", m.step, " but --checkpoint_dir=", ckpt_dir,
        " holds later steps (newest: ", committed.back(),
        "), which this run would collide with: resume the newest (--resume=auto), or give a "
        "new --checkpoint_dir"));
  }
  const Json* flags = m.trainer.Find("flags");
  if (flags == nullptr) return absl::OkStatus();  // written by another program
  std::vector<std::string> differ;
  for (const char* k : kModelFlags) {
    const Json* saved = flags->Find(k);
    const std::string now = absl::FindCommandLineFlag(k)->CurrentValue();
    if (saved != nullptr && saved->is_string() && saved->string_value() != now) {
      differ.push_back(
          absl::StrCat("--", k, "=", now, " (the checkpoint has ", saved->string_value(), ")"));
    }
  }
  if (differ.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--resume=", *resume, ": checkpoint '", dir, "' is of another model: ",
      absl::StrJoin(differ, ", "), "; resume with the model's settings, or start afresh"));
}

// The memory check, one row per rank: what the rank will hold at most (the
// trainer's own accounting on the meta device: GptTrainer::EstimateMemory)
// and what its host or GPU has available, read by the rank's own process.
struct MemoryNeed {
  int64_t host = 0;                                  // a hash of the host's name
  int64_t device = -1;                               // the CUDA ordinal; -1: host memory
  int64_t peak = 0;                                  // the tracker's peak of the total
  int64_t states = 0, activations = 0, buffers = 0;  // peaks: param+grad+master+optim, ...
  int64_t available = 0;
  int64_t resident = 0;  // the process's resident bytes now (host memory)
  std::vector<int64_t> Row() const {
    return {host, device, peak, states, activations, buffers, available, resident};
  }
  static MemoryNeed FromRow(const int64_t* x) {
    return {x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]};
  }
};

// "512M", "16G", "1.5T", "1000000" (bytes; K/M/G/T binary) -> bytes; "" -> -1.
absl::StatusOr<int64_t> ParseBytes(const char* flag, const std::string& text) {
  if (text.empty()) return -1;
  static const std::map<char, double> kUnits = {{'K', 1024.0},
                                                {'M', 1024.0 * 1024},
                                                {'G', 1024.0 * 1024 * 1024},
                                                {'T', 1024.0 * 1024 * 1024 * 1024}};
  std::string digits = text;
  double unit = 1;
  if (auto u = kUnits.find(static_cast<char>(std::toupper(text.back()))); u != kUnits.end()) {
    unit = u->second;
    digits.pop_back();
  }
  double v = 0;
  if (!absl::SimpleAtod(digits, &v) || !(v > 0) || v * unit > 9e18) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "='", text, "': expected a positive size such as 16G, 512M or 1000000"));
  }
  return static_cast<int64_t>(v * unit);
}

absl::StatusOr<MemoryNeed> EstimateRankMemory(const GptTrainOptions& o, int world, int rank,
                                              bool use_mpi, std::string* where) {
  ASSIGN_OR_RETURN(const MemoryTracker::Snapshot est, GptTrainer::EstimateMemory(o, world, rank));
  MemoryNeed n;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  n.host = static_cast<int64_t>(std::hash<std::string>()(host) & 0x7fffffffffffffff);
  n.peak = est.total_peak;
  for (MemCategory c :
       {MemCategory::kParam, MemCategory::kGrad, MemCategory::kMaster, MemCategory::kOptim}) {
    n.states += est.peak[static_cast<int>(c)];
  }
  n.activations = est.peak[static_cast<int>(MemCategory::kActivation)];
  n.buffers = est.peak[static_cast<int>(MemCategory::kComm)] +
              est.peak[static_cast<int>(MemCategory::kWorkspace)];
  n.resident = std::max<int64_t>(0, ResidentBytes());
  ASSIGN_OR_RETURN(const Device d, RankDevice(o.engine.device, rank, use_mpi));
  ASSIGN_OR_RETURN(const int64_t budget,
                   ParseBytes("memory_budget", absl::GetFlag(FLAGS_memory_budget)));
  if (d.kind == DeviceKind::kCuda) {
    n.device = d.index;
    ASSIGN_OR_RETURN(const CudaMemory m, CudaMemoryInfo(d.index));
    n.available = m.free;
    *where = absl::StrCat(FormatBytes(m.free), " free on ", d.ToString(), " (of ",
                          FormatBytes(m.total), ")");
  } else {
    ASSIGN_OR_RETURN(const HostMemory m, ReadHostMemory());
    n.available = m.available();
    *where = m.ToString();
    if (budget >= 0 && budget < n.available) {
      n.available = budget;
      *where =
          absl::StrCat(FormatBytes(budget), " (--memory_budget; the kernel reports ", *where, ")");
    }
  }
  return n;
}

// "ranks 0-3, 6" for a sorted list.
std::string RankList(const std::vector<int>& r) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    parts.push_back(j == i ? absl::StrCat(r[i]) : absl::StrCat(r[i], "-", r[j]));
    i = j + 1;
  }
  return absl::StrCat(r.size() == 1 ? "rank " : "ranks ", absl::StrJoin(parts, ", "));
}

// Held against what each host (or GPU) has: OK, or ResourceExhausted with
// needed vs available and what to change. `where` describes the
// availability as the leader's process read it. Appends one line per host
// or GPU to `report`.
absl::Status CheckMemoryFits(const std::vector<MemoryNeed>& needs, const GptTrainOptions& o,
                             const std::string& where, std::string* report) {
  std::map<std::pair<int64_t, int64_t>, std::vector<int>> groups;  // (host, device) -> ranks
  for (int r = 0; r < static_cast<int>(needs.size()); ++r) {
    groups[{needs[r].host, needs[r].device}].push_back(r);
  }
  std::vector<std::string> errors;
  for (const auto& [key, ranks] : groups) {
    int64_t need = 0, available = needs[ranks[0]].available;
    int biggest = ranks[0];
    for (int r : ranks) {
      need += needs[r].peak;
      available = std::min(available, needs[r].available);
      if (needs[r].peak > needs[biggest].peak) biggest = r;
    }
    const MemoryNeed& b = needs[biggest];
    const std::string memory =
        key.second < 0 ? absl::StrCat("rank ", ranks[0], "'s host")
                       : absl::StrCat("cuda:", key.second, " of rank ", ranks[0], "'s host");
    const std::string line = absl::StrCat(
        RankList(ranks), " on ", memory, " need ", FormatBytes(need), " at peak; ",
        FormatBytes(available), " available. Largest: rank ", biggest, ", ", FormatBytes(b.peak),
        " = model states ", FormatBytes(b.states), " + activations ", FormatBytes(b.activations),
        " + communication and workspace buffers ", FormatBytes(b.buffers), " (peaks)");
    absl::StrAppend(report, "memory: ", line, "\n");
    if (need > available) errors.push_back(line);
  }
  if (errors.empty()) return absl::OkStatus();
  std::vector<std::string> fixes;
  const int dp = std::max(1, o.grid.dp);
  if (o.engine.stage < 3) {
    fixes.push_back(absl::StrCat("--zero=3 (now ", o.engine.stage,
                                 ") shards parameters, gradients and optimizer state over dp"));
  }
  fixes.push_back(absl::StrCat("more data-parallel ranks (--dp, now ", dp,
                               ") on more hosts or GPUs divide the sharded states"));
  if (o.model.recompute.empty()) {
    fixes.push_back("--recompute keeps one input per block instead of its activations");
  }
  if (o.model.micro_batch > 1) {
    fixes.push_back(absl::StrCat("a smaller --micro_batch (now ", o.model.micro_batch,
                                 ") shrinks the activations"));
  }
  fixes.push_back("--force starts anyway");
  return absl::ResourceExhaustedError(absl::StrCat(
      "this run will not fit in memory: ", absl::StrJoin(errors, "; "),
      ". Available on the leader's host: ", where,
      ". The figures are the trainer's own accounting (its tracker, run on the meta device "
      "before the first step). To fit: ",
      absl::StrJoin(fixes, "; "), "."));
}

struct Shared {  // written by world rank 0 (or each rank, for the summary)
  std::vector<RankSummary> summary;
  std::vector<double> losses;
  double first_loss = 0, last_val = -1, train_seconds = 0;
  int64_t first_step = 1;
  std::string resumed_from, last_checkpoint;
};

absl::Status Main(bool use_mpi) {
  RETURN_IF_ERROR(ApplyPresetAndConfig());
  GptTrainOptions o;
  o.model.layers = absl::GetFlag(FLAGS_layers);
  o.model.hidden = absl::GetFlag(FLAGS_hidden);
  o.model.heads = absl::GetFlag(FLAGS_heads);
  o.model.vocab = absl::GetFlag(FLAGS_vocab);
  o.model.seq = absl::GetFlag(FLAGS_seq);
  o.model.micro_batch = absl::GetFlag(FLAGS_micro_batch);
  o.model.seed = absl::GetFlag(FLAGS_seed);
  o.model.sequence_parallel = absl::GetFlag(FLAGS_sequence_parallel);
  if (absl::GetFlag(FLAGS_recompute)) o.model.recompute.assign(o.model.layers, true);
  o.grid = {absl::GetFlag(FLAGS_dp), absl::GetFlag(FLAGS_tp), absl::GetFlag(FLAGS_pp)};
  o.virtual_stages = absl::GetFlag(FLAGS_virtual_stages);
  o.micro_batches = absl::GetFlag(FLAGS_grad_accum);
  const int steps = absl::GetFlag(FLAGS_steps);
  RETURN_IF_ERROR(Positive("steps", steps));
  RETURN_IF_ERROR(Positive("grad_accum", o.micro_batches));
  RETURN_IF_ERROR(Positive("micro_batch", o.model.micro_batch));
  RETURN_IF_ERROR(Positive("lr", absl::GetFlag(FLAGS_lr)));
  RETURN_IF_ERROR(Positive("vocab", o.model.vocab));
  RETURN_IF_ERROR(NonNegative("warmup", absl::GetFlag(FLAGS_warmup)));
  RETURN_IF_ERROR(NonNegative("clip", absl::GetFlag(FLAGS_clip)));
  RETURN_IF_ERROR(NonNegative("eval_every", absl::GetFlag(FLAGS_eval_every)));
  RETURN_IF_ERROR(Positive("eval_batches", absl::GetFlag(FLAGS_eval_batches)));
  RETURN_IF_ERROR(NonNegative("checkpoint_every", absl::GetFlag(FLAGS_checkpoint_every)));
  RETURN_IF_ERROR(NonNegative("keep_checkpoints", absl::GetFlag(FLAGS_keep_checkpoints)));
  if (o.grid.dp < 1 || o.grid.tp < 1 || o.grid.pp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("dp (", o.grid.dp, "), tp (", o.grid.tp,
                                                   ") and pp (", o.grid.pp, ") must be >= 1"));
  }
  const int world = o.grid.dp * o.grid.tp * o.grid.pp;
  const int64_t global = int64_t{o.model.micro_batch} * o.micro_batches * o.grid.dp;
  if (absl::GetFlag(FLAGS_global_batch) != 0 && absl::GetFlag(FLAGS_global_batch) != global) {
    return absl::InvalidArgumentError(
        absl::StrCat("--global_batch=", absl::GetFlag(FLAGS_global_batch), " but micro_batch (",
                     o.model.micro_batch, ") x grad_accum (", o.micro_batches, ") x dp (",
                     o.grid.dp, ") = ", global));
  }
  o.engine.stage = absl::GetFlag(FLAGS_zero);
  ASSIGN_OR_RETURN(o.engine.device, ParseDevice(absl::GetFlag(FLAGS_device)));
  if (o.engine.device.kind == DeviceKind::kMeta) {
    return absl::InvalidArgumentError(
        "--device=meta: //:train computes; the meta device only accounts (see //bench:footprint)");
  }
  if (o.engine.device.kind == DeviceKind::kCuda) {
    RETURN_IF_ERROR(
        Annotate(CudaDeviceAvailable(), absl::StrCat("--device=", absl::GetFlag(FLAGS_device))));
  }
  ASSIGN_OR_RETURN(o.engine.compute_dtype, ParsePrecision(absl::GetFlag(FLAGS_precision)));
  o.engine.grad_dtype = o.engine.compute_dtype;
  o.engine.loss_scaling = o.engine.compute_dtype == DType::kF16;
  const std::string opt = absl::GetFlag(FLAGS_optimizer);
  if (opt != "adamw" && opt != "sgd") {
    return absl::InvalidArgumentError(absl::StrCat("--optimizer='", opt, "': use adamw or sgd"));
  }
  o.engine.optimizer.kind = opt == "sgd" ? OptimizerKind::kSgd : OptimizerKind::kAdamW;
  o.engine.optimizer.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  const std::string sched = absl::GetFlag(FLAGS_lr_schedule);
  if (sched != "cosine" && sched != "constant") {
    return absl::InvalidArgumentError(
        absl::StrCat("--lr_schedule='", sched, "': use cosine or constant"));
  }
  o.engine.lr.kind =
      sched == "cosine" ? LrSchedule::Kind::kWarmupCosine : LrSchedule::Kind::kConstant;
  o.engine.lr.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.engine.lr.min_lr = o.engine.lr.lr / 10;
  o.engine.lr.warmup_steps = std::min(absl::GetFlag(FLAGS_warmup), steps);
  o.engine.lr.total_steps = steps;
  o.engine.clip_norm = static_cast<float>(absl::GetFlag(FLAGS_clip));
  const std::string nonfinite = absl::GetFlag(FLAGS_on_nonfinite);
  if (nonfinite != "skip" && nonfinite != "abort") {
    return absl::InvalidArgumentError(
        absl::StrCat("--on_nonfinite='", nonfinite, "': use skip or abort"));
  }
  o.engine.on_nonfinite =
      nonfinite == "abort" ? EngineOptions::NonFinite::kAbort : EngineOptions::NonFinite::kSkip;
  RETURN_IF_ERROR(o.engine.optimizer.Validate());
  ASSIGN_OR_RETURN(o.schedule, ParseSchedule(absl::GetFlag(FLAGS_schedule)));
  RETURN_IF_ERROR(o.model.Validate(o.grid.pp, o.grid.tp, o.virtual_stages));
  const int64_t mbs = o.model.micro_batch;

  // Data: a text file's bytes (90% train, 10% validation), or the Markov corpus.
  const std::string path = absl::GetFlag(FLAGS_data);
  GptData data;
  if (path.empty()) {
    data = MarkovData(o.model);
  } else {
    ASSIGN_OR_RETURN(data, TextFileData(path, o.model));
  }
  o.data = data.train;
  o.eval_data = data.eval;
  const double best = data.entropy_rate;

  // The world: one process of threads, or this MPI process.
  std::unique_ptr<Communicator> mpi_world, nccl_world;
  const bool use_nccl = absl::GetFlag(FLAGS_backend) == "nccl";
  if (use_nccl && o.engine.device.kind != DeviceKind::kCuda) {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend=nccl moves GPU memory: use it with --device=cuda (not --device=",
                     o.engine.device.ToString(), ")"));
  }
  if (use_mpi) {
    ASSIGN_OR_RETURN(CommOptions co, CommOptionsFromEnv());
    ASSIGN_OR_RETURN(mpi_world, MpiRuntime::World(co));
    if (mpi_world->size() != world) {
      return absl::InvalidArgumentError(
          absl::StrCat("mpirun started ", mpi_world->size(), " processes but dp (", o.grid.dp,
                       ") x tp (", o.grid.tp, ") x pp (", o.grid.pp, ") = ", world));
    }
    if (use_nccl) {
      ASSIGN_OR_RETURN(const Device gpu, RankDevice(o.engine.device, mpi_world->rank(), true));
      ASSIGN_OR_RETURN(nccl_world, NewNcclWorld(*mpi_world, gpu, co));
      o.data_world = nccl_world.get();
    }
  }
  const bool lead = !use_mpi || mpi_world->rank() == 0;
  if (lead) {
    printf("data: %s\n", data.description.c_str());
    printf(
        "model: GPT, %d layers, hidden %lld, %d heads, seq %lld, vocab %lld; grid dp=%d x "
        "tp=%d x pp=%d (%d %s), ZeRO-%d, %s, %s; %d micro-batches of %lld per DP "
        "rank (global batch %lld sequences)\n",
        o.model.layers, static_cast<long long>(o.model.hidden), o.model.heads,
        static_cast<long long>(o.model.seq), static_cast<long long>(o.model.vocab), o.grid.dp,
        o.grid.tp, o.grid.pp, world,
        use_mpi ? (world == 1 ? "MPI process" : "MPI processes")
                : (world == 1 ? "rank as a thread" : "ranks as threads"),
        o.engine.stage, ScheduleName(o.schedule), absl::GetFlag(FLAGS_precision).c_str(),
        o.micro_batches, static_cast<long long>(mbs), static_cast<long long>(global));
    fflush(stdout);
  }
  const int64_t tokens_per_step = global * o.model.seq;
  const int log_every = std::max(1, absl::GetFlag(FLAGS_log_every));
  const int eval_every = absl::GetFlag(FLAGS_eval_every);
  const int eval_batches = absl::GetFlag(FLAGS_eval_batches);
  const std::string ckpt_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  const int ckpt_every = absl::GetFlag(FLAGS_checkpoint_every);
  std::string resume = absl::GetFlag(FLAGS_resume);
  if (resume == "auto" && ckpt_dir.empty()) {
    return absl::InvalidArgumentError("--resume=auto needs --checkpoint_dir");
  }
  // Before the first step: the checkpoint root is this job's alone (a lock
  // held for the job's lifetime) and writable; the checkpoint to resume is
  // complete and of this model. The leader checks; every process agrees.
  checkpoint::RootLock root_lock;
  {
    absl::Status ready;
    if (lead) ready = PrepareCheckpoints(ckpt_dir, &resume, &root_lock);
    if (use_mpi) {
      ready = AgreeOnStatus(*mpi_world, ready);
      std::vector<std::string> r;
      if (ready.ok()) {
        ASSIGN_OR_RETURN(r, AllGatherStrings(*mpi_world, resume));
        resume = r[0];  // `auto` resolved by the leader
      }
    }
    if (!ready.ok() && !lead) g_leader_reports = true;
    RETURN_IF_ERROR(ready);
  }
  // Before the first step: what every rank will hold fits in its host's or
  // GPU's memory (--force: a warning instead).
  int64_t estimated_rss = -1;  // this process: resident now + its ranks' peaks
  {
    std::vector<MemoryNeed> needs(world);
    std::string where;
    absl::Status est;
    if (use_mpi) {
      absl::StatusOr<MemoryNeed> mine =
          EstimateRankMemory(o, world, mpi_world->rank(), use_mpi, &where);
      est = AgreeOnStatus(*mpi_world, mine.status());
      if (est.ok()) {
        const std::vector<int64_t> row = mine->Row();
        std::vector<int64_t> all(row.size() * world);
        RETURN_IF_ERROR(mpi_world->AllGather(ViewOf(row), ViewOf(all)));
        for (int r = 0; r < world; ++r) needs[r] = MemoryNeed::FromRow(all.data() + r * row.size());
        estimated_rss = mine->resident + mine->peak;
      }
    } else {
      for (int r = 0; r < world && est.ok(); ++r) {
        absl::StatusOr<MemoryNeed> n = EstimateRankMemory(o, world, r, use_mpi, &where);
        est = n.status();
        if (n.ok()) needs[r] = *n;
      }
      if (est.ok()) {
        estimated_rss = needs[0].resident;
        for (const MemoryNeed& n : needs) estimated_rss += n.peak;
      }
    }
    if (!est.ok() && !lead) g_leader_reports = true;
    RETURN_IF_ERROR(est);
    std::string report;
    absl::Status fits = CheckMemoryFits(needs, o, where, &report);
    if (lead && (fits.ok() || absl::GetFlag(FLAGS_force))) {
      printf("%s", report.c_str());
      if (!fits.ok() && absl::GetFlag(FLAGS_force)) {
        printf("warning: --force: starting although %s\n", std::string(fits.message()).c_str());
      }
      fflush(stdout);
    }
    if (!fits.ok() && !absl::GetFlag(FLAGS_force)) {
      if (!lead) g_leader_reports = true;
      return fits;
    }
  }
  Shared sh;
  sh.summary.resize(world);
  ASSIGN_OR_RETURN(auto save_fault, SaveFaultFromEnv());

  // Every setting of this process (a rank started with other flags, or
  // another binary, is caught before training).
  ConfigEntries settings;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (name.rfind("log_", 0) == 0) continue;  // harmless if they differ
    settings.emplace_back(name, flag->CurrentValue());
  }
  std::sort(settings.begin(), settings.end());
  auto rank_main = [&](Communicator& c) -> absl::Status {
    RETURN_IF_ERROR(CheckSameConfig(c, settings));
    MemoryTracker mem(absl::StrCat("rank ", c.rank()));
    GptTrainOptions ro = o;
    ASSIGN_OR_RETURN(ro.engine.device, RankDevice(o.engine.device, c.rank(), use_mpi));
    // This rank's thread serves its GPU: every context it touches is that one's.
    RETURN_IF_ERROR(BindThreadToDevice(ro.engine.device));
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, ro, &mem));
    int64_t first = 1;
    if (!resume.empty()) {
      ASSIGN_OR_RETURN(checkpoint::LoadResult r, t->LoadCheckpoint(resume));
      first = r.step + 1;
      const Json* saved_lr = r.trainer.Find("lr_schedule");
      if (c.rank() == 0 && saved_lr != nullptr && saved_lr->Dump() != LrJson(o.engine.lr).Dump()) {
        printf(
            "note: the learning-rate schedule differs from the checkpoint's (%s now, %s then):"
            " training continues, but not as the saved run would have\n",
            LrJson(o.engine.lr).Dump().c_str(), saved_lr->Dump().c_str());
      }
      if (c.rank() == 0) {
        sh.resumed_from = r.path;
        printf("resumed from %s (step %lld, written at grid %s); continuing at step %lld\n",
               r.path.c_str(), static_cast<long long>(r.step), r.grid.Dump().c_str(),
               static_cast<long long>(first));
        fflush(stdout);
      }
    }
    if (c.rank() == 0) sh.first_step = first;
    auto save = [&](int64_t step) -> absl::Status {
      checkpoint::SaveOptions so;
      so.root = ckpt_dir;
      so.keep_last = absl::GetFlag(FLAGS_keep_checkpoints);
      so.midway_fault = save_fault;
      so.trainer = Json::Object({{"step", Json(step)},
                                 {"next_step", Json(step + 1)},
                                 {"data", Json(data.name)},
                                 {"seed", Json(static_cast<int64_t>(o.model.seed))},
                                 {"lr_schedule", LrJson(o.engine.lr)},
                                 {"flags", FlagsJson()}});
      const absl::Time t0 = absl::Now();
      ASSIGN_OR_RETURN(std::string dir, t->SaveCheckpoint(step, so));
      if (c.rank() == 0) {
        sh.last_checkpoint = dir;
        printf("checkpoint: %s (%.0f ms)\n", dir.c_str(),
               absl::ToDoubleMilliseconds(absl::Now() - t0));
        fflush(stdout);
      }
      return absl::OkStatus();
    };
    RankSummary& mine = sh.summary[c.rank()];
    const absl::Time start = absl::Now();
    for (int64_t step = first; step <= steps; ++step) {
      const absl::Time t0 = absl::Now();
      const double dp_exposed0 = t->exposed_dp_seconds(), tp_exposed0 = t->exposed_tp_seconds();
      const double dp_busy0 = t->grid().dp_group().stats().busy_seconds;
      const double tp_busy0 = t->grid().tp_group().stats().busy_seconds;
      ASSIGN_OR_RETURN(GptStepResult r, t->Step(step));
      const double dt = absl::ToDoubleSeconds(absl::Now() - t0);
      mine.timing += r.timing;
      mine.dp_exposed_s += t->exposed_dp_seconds() - dp_exposed0;
      mine.comm_s += t->exposed_dp_seconds() - dp_exposed0 + t->exposed_tp_seconds() - tp_exposed0;
      mine.dp_busy_s += t->grid().dp_group().stats().busy_seconds - dp_busy0;
      mine.tp_busy_s += t->grid().tp_group().stats().busy_seconds - tp_busy0;
      double val = -1;
      if (eval_every > 0 && (step % eval_every == 0 || step == steps)) {
        ASSIGN_OR_RETURN(val, t->Evaluate(eval_batches));
      }
      // The peak over all ranks, for the progress line, and whether any rank
      // got a stop signal: all ranks stop after the same step.
      float agree[2] = {static_cast<float>(mem.snapshot().total_peak),
                        g_stop_signals.load() > 0 ? 1.0f : 0.0f};
      RETURN_IF_ERROR(
          c.AllReduce({agree, 2, DType::kF32}, {agree, 2, DType::kF32}, ReduceOp::kMax));
      const float peak = agree[0];
      const bool stop = agree[1] > 0;
      if (c.rank() == 0) {
        sh.losses.push_back(r.loss);
        if (step == first) sh.first_loss = r.loss;
        if (val >= 0) sh.last_val = val;
        if (r.stats.nonfinite) {
          printf(
              "step %4lld  inf/NaN in the reduced gradients of %d of %d ranks (grad norm %g): "
              "the step is skipped on every rank%s\n",
              static_cast<long long>(step), r.stats.nonfinite_ranks, c.size(), r.stats.grad_norm,
              o.engine.loss_scaling ? " and the loss scale backs off" : "");
        }
        if (step == first || step % log_every == 0 || step == steps || val >= 0) {
          std::string gpu;  // what the driver says of rank 0's GPU
          if (ro.engine.device.kind == DeviceKind::kCuda) {
            if (absl::StatusOr<CudaMemory> m = CudaMemoryInfo(ro.engine.device.index); m.ok()) {
              gpu = absl::StrCat("  ", ro.engine.device.ToString(), " in use ",
                                 FormatBytes(m->total - m->free), " of ", FormatBytes(m->total));
            }
          }
          printf(
              "step %4lld  loss %.4f%s  lr %.2e  grad norm %6.3f  %7.0f tokens/s  %6.1f ms  "
              "peak memory/rank %s%s%s\n",
              static_cast<long long>(step), r.loss,
              val >= 0 ? absl::StrFormat("  val %.4f", val).c_str() : "", r.stats.lr,
              r.stats.grad_norm, tokens_per_step / dt, dt * 1e3,
              FormatBytes(static_cast<int64_t>(peak)).c_str(), gpu.c_str(),
              r.stats.skipped ? "  (skipped)" : "");
          fflush(stdout);
        }
      }
      const bool periodic = (ckpt_every > 0 && step % ckpt_every == 0) || step == steps;
      if (!ckpt_dir.empty() && (periodic || stop)) RETURN_IF_ERROR(save(step));
      if (stop && step < steps) {
        if (c.rank() == 0) {
          const int sig = g_stop_signal.load();
          printf("train: stopped by %s after step %lld of %d; %s\n",
                 sig > 0 ? absl::StrCat("SIG", sigabbrev_np(sig)).c_str()
                         : "a signal to another process",
                 static_cast<long long>(step), steps,
                 ckpt_dir.empty() ? "no --checkpoint_dir: nothing saved"
                                  : absl::StrCat("checkpoint ", sh.last_checkpoint,
                                                 " committed: continue with --resume=auto")
                                        .c_str());
          fflush(stdout);
        }
        g_preempted = true;
        return absl::CancelledError("preempted");  // every rank, after the same step
      }
    }
    if (c.rank() == 0) sh.train_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    mine.memory = mem.snapshot();
    mine.dp = t->grid().dp_group().stats();
    mine.tp = t->grid().tp_group().stats();
    mine.pp = t->pipeline_stats();
    mine.coord = t->grid().coord();
    mine.activation_estimate = t->ActivationPeakEstimate();
    return absl::OkStatus();
  };
  if (use_mpi) {
    RETURN_IF_ERROR(rank_main(*mpi_world));
    // The summary needs every rank's figures: gather them (bytes and
    // microseconds as int64).
    const RankSummary& me = sh.summary[mpi_world->rank()];
    std::vector<int64_t> row;
    for (int k = 0; k < kNumMemCategories; ++k) row.push_back(me.memory.peak[k]);
    row.push_back(me.memory.total_peak);
    row.push_back(me.dp.total_sent());
    row.push_back(me.tp.total_sent());
    row.push_back(me.pp.total_sent());
    for (double sec :
         {me.timing.pipeline.compute_s, me.timing.pipeline.wait_s, me.timing.optimizer_s,
          me.timing.total_s, me.comm_s, me.dp_exposed_s, me.dp_busy_s, me.tp_busy_s}) {
      row.push_back(static_cast<int64_t>(sec * 1e6));
    }
    row.push_back(me.coord.dp);
    row.push_back(me.coord.tp);
    row.push_back(me.coord.pp);
    row.push_back(me.activation_estimate);
    std::vector<int64_t> all(row.size() * world);
    RETURN_IF_ERROR(mpi_world->AllGather(ViewOf(row), ViewOf(all)));
    for (int r = 0; r < world; ++r) {
      const int64_t* x = all.data() + r * row.size();
      RankSummary& s = sh.summary[r];
      int i = 0;
      for (int k = 0; k < kNumMemCategories; ++k) s.memory.peak[k] = x[i++];
      s.memory.total_peak = x[i++];
      s.dp = {};
      s.dp.ops[0].bytes_sent = x[i++];
      s.tp = {};
      s.tp.ops[0].bytes_sent = x[i++];
      s.pp = {};
      s.pp.ops[0].bytes_sent = x[i++];
      s.timing.pipeline.compute_s = x[i++] * 1e-6;
      s.timing.pipeline.wait_s = x[i++] * 1e-6;
      s.timing.optimizer_s = x[i++] * 1e-6;
      s.timing.total_s = x[i++] * 1e-6;
      s.comm_s = x[i++] * 1e-6;
      s.dp_exposed_s = x[i++] * 1e-6;
      s.dp_busy_s = x[i++] * 1e-6;
      s.tp_busy_s = x[i++] * 1e-6;
      s.coord.dp = static_cast<int>(x[i++]);
      s.coord.tp = static_cast<int>(x[i++]);
      s.coord.pp = static_cast<int>(x[i++]);
      s.activation_estimate = x[i++];
    }
    if (!lead) return absl::OkStatus();
  } else {
    ASSIGN_OR_RETURN(CommOptions co, CommOptionsFromEnv());
    RETURN_IF_ERROR(RunOnRanks(world, rank_main, co));
  }

  const int64_t ran = static_cast<int64_t>(sh.losses.size());
  if (ran == 0) {
    printf("\nNothing to do: the checkpoint is at step %lld and --steps=%d.\n",
           static_cast<long long>(sh.first_step - 1), steps);
    return absl::OkStatus();
  }
  double last = 0;
  const int tail = std::min<int>(10, static_cast<int>(ran));
  for (int i = 0; i < tail; ++i) last += sh.losses[ran - 1 - i] / tail;
  printf(
      "\nSummary: steps %lld-%d, %.1f s, %.0f tokens/s; loss %.3f -> %.3f (mean of the last "
      "%d)",
      static_cast<long long>(sh.first_step), steps, sh.train_seconds,
      ran * tokens_per_step / sh.train_seconds, sh.first_loss, last, tail);
  if (sh.last_val >= 0) printf("; validation %.3f", sh.last_val);
  if (best > 0) printf("; the data's entropy rate is %.3f", best);
  printf("\n");
  if (!sh.last_checkpoint.empty()) {
    printf("Last checkpoint: %s (resume: --resume=%s; any grid)\n", sh.last_checkpoint.c_str(),
           ckpt_dir.c_str());
  }
  printf("\nPeak memory per rank and category (MemoryTracker)\n%-5s %-9s", "rank", "dp,tp,pp");
  for (int k = 0; k < kNumMemCategories; ++k) {
    printf(" %10s", MemCategoryName(static_cast<MemCategory>(k)));
  }
  printf(" %10s %12s\n", "total", "act. estim.");
  for (int r = 0; r < world; ++r) {
    const RankSummary& s = sh.summary[r];
    printf("%-5d %-9s", r, absl::StrCat(s.coord.dp, ",", s.coord.tp, ",", s.coord.pp).c_str());
    for (int k = 0; k < kNumMemCategories; ++k) {
      printf(" %10s", FormatBytes(s.memory.peak[k]).c_str());
    }
    printf(" %10s %12s\n", FormatBytes(s.memory.total_peak).c_str(),
           FormatBytes(s.activation_estimate).c_str());
  }
  printf(
      "(act. estim.: the activation peak predicted from the shapes and the schedule; the "
      "activation column is measured.)\n");
  if (estimated_rss > 0 && o.engine.device.kind != DeviceKind::kCuda) {
    const int64_t hwm = PeakResidentBytes();
    printf(
        "Host memory of %s: peak resident %s (VmHWM); estimated before the first step: %s "
        "(measured/estimated %.3f)\n",
        use_mpi ? "rank 0's process" : "this process", FormatBytes(hwm).c_str(),
        FormatBytes(estimated_rss).c_str(), static_cast<double>(hwm) / estimated_rss);
  }
  if (o.engine.device.kind == DeviceKind::kCuda) {
    // The tracker's columns are the bytes the runtime asked for; the driver
    // counts everything on the GPU (caches, the CUDA context, other users).
    absl::StatusOr<int> gpus = CudaDeviceCount();
    for (int d = 0; gpus.ok() && d < *gpus; ++d) {
      if (absl::StatusOr<CudaMemory> m = CudaMemoryInfo(d); m.ok()) {
        printf("cuda:%d (cudaMemGetInfo, every holder): %s in use of %s\n", d,
               FormatBytes(m->total - m->free).c_str(), FormatBytes(m->total).c_str());
      }
    }
  }
  if (const DeviceAllocator* a = DeviceAllocator::For(o.engine.device); a != nullptr && !use_mpi) {
    const AllocatorStats st = a->stats();
    printf(
        "The %s caching allocator (this process, every rank): %s held from the system "
        "(peak %s), %.0f%% of %lld allocations served from its cache.\n",
        o.engine.device.ToString().c_str(), FormatBytes(st.reserved).c_str(),
        FormatBytes(st.peak_reserved).c_str(),
        st.allocations > 0 ? 100.0 * st.cache_hits / st.allocations : 0.0,
        static_cast<long long>(st.allocations));
  }
  printf(
      "\nCommunication per step (bytes sent; ring accounting) and where each rank's step time "
      "went\n%-5s %10s %10s %10s | %8s %8s %8s %7s | %12s %12s\n",
      "rank", "DP", "TP", "PP", "compute", "comm", "idle", "bubble", "DP hidden", "TP hidden");
  double bubble = 0, dp_busy = 0, dp_exposed = 0, tp_busy = 0, tp_exposed = 0;
  const auto hidden = [](double busy, double exposed) {
    return busy > 0 ? 100 * std::max(0.0, 1 - exposed / busy) : 0.0;
  };
  for (int r = 0; r < world; ++r) {
    const RankSummary& s = sh.summary[r];
    const double total = std::max(1e-12, s.timing.total_s);
    const double idle = s.timing.pipeline.wait_s;
    const double compute = std::max(0.0, total - s.comm_s - idle);
    const double tp_exp = s.comm_s - s.dp_exposed_s;
    bubble += s.timing.pipeline.bubble() / world;
    dp_busy += s.dp_busy_s;
    dp_exposed += s.dp_exposed_s;
    tp_busy += s.tp_busy_s;
    tp_exposed += tp_exp;
    printf("%-5d %10s %10s %10s | %7.1f%% %7.1f%% %7.1f%% %6.1f%% | %11.1f%% %11.1f%%\n", r,
           FormatBytes(s.dp.total_sent() / ran).c_str(),
           FormatBytes(s.tp.total_sent() / ran).c_str(),
           FormatBytes(s.pp.total_sent() / ran).c_str(), 100 * compute / total,
           100 * s.comm_s / total, 100 * idle / total, 100 * s.timing.pipeline.bubble(),
           hidden(s.dp_busy_s, s.dp_exposed_s), hidden(s.tp_busy_s, tp_exp));
  }
  printf(
      "Communication in flight vs exposed (the compute stream, or on cpu the host, blocked on "
      "it), all ranks:\n  DP (ZeRO gathers, reductions): %.2f s in flight, %.2f s exposed: "
      "%.0f%% hidden behind compute\n  TP (the layers' collectives):  %.2f s in flight, %.2f s "
      "exposed: %.0f%% hidden\n  on --device=%s%s.\n",
      dp_busy, dp_exposed, hidden(dp_busy, dp_exposed), tp_busy, tp_exposed,
      hidden(tp_busy, tp_exposed), o.engine.device.ToString().c_str(),
      o.engine.device.asynchronous()
          ? " (the compute stream waits only where it needs the data: gathers are prefetched "
            "and\n  reductions run on their own stream)"
          : " (synchronous: every collective blocks the host; --device=cpu_async overlaps)");
  const int pp = o.grid.pp, m = o.micro_batches, v = o.virtual_stages;
  const double theory = o.schedule == ScheduleKind::kInterleaved1F1B
                            ? (pp - 1.0) / (v * m + pp - 1.0)
                            : (pp - 1.0) / (m + pp - 1.0);
  printf(
      "comm: blocked on DP and TP communication (exposed: what overlap did not hide); in "
      "flight: the\ncommunicators' time inside operations (waiting for peers included); idle: "
      "waiting on "
      "pipeline\nneighbours (the bubble, and point-to-point transfers); compute: the rest of the "
      "step.\nBubble: idle / (pipeline compute + idle). Measured bubble (mean over ranks) "
      "%.1f%%; the\nschedule's is %.1f%% (%s).%s\n",
      100 * bubble, 100 * theory,
      o.schedule == ScheduleKind::kInterleaved1F1B ? "(pp-1)/(v*m+pp-1)" : "(pp-1)/(m+pp-1)",
      !use_mpi && world > 2 ? "\n(Ranks are threads sharing this machine's cores, so waits "
                              "also include time a neighbour was descheduled.)"
                            : "");
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  // Host temporaries of a megabyte or more (initial values, checkpoint
  // staging, the communicators' copies) go back to the system when freed,
  // not into malloc's per-thread arenas: resident memory then stays at what
  // the tracker counts (a fixed threshold also stops glibc raising it).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  trireme::RecordCommandLineFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend != "auto" && backend != "threads" && backend != "mpi" && backend != "nccl") {
    fprintf(stderr, "train: --backend='%s': use threads, mpi, nccl or auto\n", backend.c_str());
    return 1;
  }
  const bool use_mpi = backend == "mpi" || backend == "nccl" ||
                       (backend == "auto" && trireme::MpiRuntime::LaunchedByMpirun());
  if (use_mpi) {
    if (absl::Status s = trireme::MpiRuntime::Init(&argc, &argv); !s.ok()) {
      fprintf(stderr, "train: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  if (absl::Status s = trireme::InstallStopSignals(absl::GetFlag(FLAGS_save_on_signal)); !s.ok()) {
    fprintf(stderr, "train: %s\n", s.ToString().c_str());
    if (use_mpi) trireme::MpiRuntime::AbortJob(1);
    return 1;
  }
  absl::Status s = trireme::Main(use_mpi);
  if (trireme::g_preempted.load()) {  // every rank saved and stopped together
    if (use_mpi) trireme::MpiRuntime::Finalize();
    return trireme::kPreemptedExitStatus;
  }
  if (!s.ok()) {
    trireme::g_failing = true;
    if (!trireme::g_leader_reports.load()) fprintf(stderr, "train: %s\n", s.ToString().c_str());
    if (absl::IsDeadlineExceeded(s) || absl::IsAborted(s)) {
      fprintf(stderr,
              "train: each rank's last communicator calls are in %s/flight-rank-*.txt; "
              "./bazelw run //tools:flight -- %s names the first divergence\n",
              trireme::FlightDumpDir().c_str(), trireme::FlightDumpDir().c_str());
    }
    // Under mpirun a failing rank must not leave the others waiting; but
    // first every rank's own message gets out (the others fail at about the
    // same time: a short grace before the abort that kills them).
    if (use_mpi) {
      fflush(stdout);
      fflush(stderr);
      absl::SleepFor(absl::Seconds(2));
      trireme::MpiRuntime::AbortJob(1);
    }
    return 1;
  }
  if (use_mpi) trireme::MpiRuntime::Finalize();
  return 0;
}
