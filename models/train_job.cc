#include "models/train_job.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "models/gpt_data.h"
#include "models/train_loop.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/config_check.h"
#include "runtime/comm/mpi_comm.h"
#if TRIREME_WITH_NCCL
#include "runtime/comm/nccl_comm.h"
#endif
#include "runtime/comm/threads_comm.h"
#include "runtime/core/allocator.h"
#include "runtime/core/device.h"
#include "runtime/core/host_memory.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

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

// The device of world rank `rank`. --device=cuda spreads the ranks over the
// visible GPUs (CUDA_VISIBLE_DEVICES chooses them): by rank with threads, by
// local rank under mpirun (OMPI_COMM_WORLD_LOCAL_RANK, else SLURM_LOCALID,
// else the world rank). cuda:N and the host devices are taken as given.
absl::StatusOr<Device> RankDevice(const TrainConfig& c, const Device& d, int rank, bool use_mpi) {
  if (d.kind != DeviceKind::kCuda || absl::StrContains(c.device, ':')) return d;
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

// The leader's checks before the first step (see Main). Takes the root's
// lock into *lock; resolves `--resume=auto` in *resume ("" if the root holds
// no checkpoint yet).
absl::Status PrepareCheckpoints(const TrainConfig& c, std::string* resume,
                                checkpoint::RootLock* lock) {
  const std::string& ckpt_dir = c.checkpoint_dir;
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
  for (const std::string& k : TrainConfig::ModelOptions()) {
    const Json* saved = flags->Find(k);
    const std::string now = c.Get(k);
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

absl::StatusOr<MemoryNeed> EstimateRankMemory(const TrainConfig& c, const GptTrainOptions& o,
                                              int world, int rank, bool use_mpi,
                                              std::string* where) {
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
  ASSIGN_OR_RETURN(const Device d, RankDevice(c, o.engine.device, rank, use_mpi));
  ASSIGN_OR_RETURN(const int64_t budget, ParseBytes("memory_budget", c.memory_budget));
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

// What the job knows once set up: shared by the ranks and the summary.
struct Job {
  const TrainConfig& config;
  GptTrainOptions options;  // data set; the device before it is spread over the ranks
  GptData data;
  bool use_mpi = false;
  int world = 1;
  int64_t tokens_per_step = 0;
  double best = 0;             // the data's entropy rate, when known
  int64_t estimated_rss = -1;  // this process: resident before the first step + its ranks' peaks
  std::string resume;          // the checkpoint directory every rank loads ("": none)
};

// The progress lines of world rank 0.
class ConsoleObserver : public TrainObserver {
 public:
  ConsoleObserver(const Job& j, const TrainJobHooks& hooks, const Device& rank0_device)
      : j_(j), hooks_(hooks), device_(rank0_device) {}
  void OnResumed(const checkpoint::LoadResult& r, int64_t first,
                 const std::string& lr_note) override {
    if (!lr_note.empty()) {
      printf(
          "note: the learning-rate schedule differs from the checkpoint's (%s): training "
          "continues, but not as the saved run would have\n",
          lr_note.c_str());
    }
    printf("resumed from %s (step %lld, written at grid %s); continuing at step %lld\n",
           r.path.c_str(), static_cast<long long>(r.step), r.grid.Dump().c_str(),
           static_cast<long long>(first));
    fflush(stdout);
  }
  void OnStep(const StepReport& s) override;
  void OnCheckpoint(const std::string& dir, double ms) override {
    printf("checkpoint: %s (%.0f ms)\n", dir.c_str(), ms);
    fflush(stdout);
  }
  void OnStopped(int64_t step, const std::string& checkpoint) override {
    const std::string why = hooks_.stop_reason ? hooks_.stop_reason() : "";
    printf("train: stopped by %s after step %lld of %d; %s\n",
           why.empty() ? "a signal to another process" : why.c_str(), static_cast<long long>(step),
           j_.config.steps,
           j_.config.checkpoint_dir.empty()
               ? "no --checkpoint_dir: nothing saved"
               : absl::StrCat("checkpoint ", checkpoint, " committed: continue with --resume=auto")
                     .c_str());
    fflush(stdout);
  }

 private:
  const Job& j_;
  const TrainJobHooks& hooks_;
  const Device device_;
};

void ConsoleObserver::OnStep(const StepReport& s) {
  const GptStepResult& r = s.result;
  if (r.stats.nonfinite) {
    printf(
        "step %4lld  inf/NaN in the reduced gradients of %d of %d ranks (grad norm %g): the step "
        "is skipped on every rank%s\n",
        static_cast<long long>(s.step), r.stats.nonfinite_ranks, j_.world, r.stats.grad_norm,
        j_.options.engine.loss_scaling ? " and the loss scale backs off" : "");
  }
  const int log_every = std::max(1, j_.config.log_every);
  if (!(s.step == s.first_step || s.step % log_every == 0 || s.step == j_.config.steps ||
        s.val >= 0)) {
    return;
  }
  std::string gpu;  // what the driver says of rank 0's GPU
  if (device_.kind == DeviceKind::kCuda) {
    if (absl::StatusOr<CudaMemory> m = CudaMemoryInfo(device_.index); m.ok()) {
      gpu = absl::StrCat("  ", device_.ToString(), " in use ", FormatBytes(m->total - m->free),
                         " of ", FormatBytes(m->total));
    }
  }
  printf(
      "step %4lld  loss %.4f%s  lr %.2e  grad norm %6.3f  %7.0f tokens/s  %6.1f ms  peak "
      "memory/rank %s%s%s\n",
      static_cast<long long>(s.step), r.loss,
      s.val >= 0 ? absl::StrFormat("  val %.4f", s.val).c_str() : "", r.stats.lr, r.stats.grad_norm,
      j_.tokens_per_step / s.seconds, s.seconds * 1e3, FormatBytes(s.peak_bytes).c_str(),
      gpu.c_str(), r.stats.skipped ? "  (skipped)" : "");
  fflush(stdout);
}

// The summary's first lines; false if the run took no step.
bool PrintHeadline(const Job& j, const TrainSummary& sh) {
  const int64_t ran = static_cast<int64_t>(sh.losses.size());
  if (ran == 0) {
    printf("\nNothing to do: the checkpoint is at step %lld and --steps=%d.\n",
           static_cast<long long>(sh.first_step - 1), j.config.steps);
    return false;
  }
  double last = 0;
  const int tail = std::min<int>(10, static_cast<int>(ran));
  for (int i = 0; i < tail; ++i) last += sh.losses[ran - 1 - i] / tail;
  printf(
      "\nSummary: steps %lld-%d, %.1f s, %.0f tokens/s; loss %.3f -> %.3f (mean of the last "
      "%d)",
      static_cast<long long>(sh.first_step), j.config.steps, sh.train_seconds,
      ran * j.tokens_per_step / sh.train_seconds, sh.first_loss, last, tail);
  if (sh.last_val >= 0) printf("; validation %.3f", sh.last_val);
  if (j.best > 0) printf("; the data's entropy rate is %.3f", j.best);
  printf("\n");
  if (!sh.last_checkpoint.empty()) {
    printf("Last checkpoint: %s (resume: --resume=%s; any grid)\n", sh.last_checkpoint.c_str(),
           j.config.checkpoint_dir.c_str());
  }
  return true;
}

void PrintMemory(const Job& j, const TrainSummary& sh) {
  printf("\nPeak memory per rank and category (MemoryTracker)\n%-5s %-9s", "rank", "dp,tp,pp");
  for (int k = 0; k < kNumMemCategories; ++k) {
    printf(" %10s", MemCategoryName(static_cast<MemCategory>(k)));
  }
  printf(" %10s %12s\n", "total", "act. estim.");
  for (int r = 0; r < j.world; ++r) {
    const RankSummary& s = sh.ranks[r];
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
  if (j.estimated_rss > 0 && j.options.engine.device.kind != DeviceKind::kCuda) {
    const int64_t hwm = PeakResidentBytes();
    printf(
        "Host memory of %s: peak resident %s (VmHWM); estimated before the first step: %s "
        "(measured/estimated %.3f)\n",
        j.use_mpi ? "rank 0's process" : "this process", FormatBytes(hwm).c_str(),
        FormatBytes(j.estimated_rss).c_str(), static_cast<double>(hwm) / j.estimated_rss);
  }
  if (j.options.engine.device.kind == DeviceKind::kCuda) {
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
  if (const DeviceAllocator* a = DeviceAllocator::For(j.options.engine.device);
      a != nullptr && !j.use_mpi) {
    const AllocatorStats st = a->stats();
    printf(
        "The %s caching allocator (this process, every rank): %s held from the system "
        "(peak %s), %.0f%% of %lld allocations served from its cache.\n",
        j.options.engine.device.ToString().c_str(), FormatBytes(st.reserved).c_str(),
        FormatBytes(st.peak_reserved).c_str(),
        st.allocations > 0 ? 100.0 * st.cache_hits / st.allocations : 0.0,
        static_cast<long long>(st.allocations));
  }
}

void PrintCommunication(const Job& j, const TrainSummary& sh) {
  const int64_t ran = static_cast<int64_t>(sh.losses.size());
  printf(
      "\nCommunication per step (bytes sent; ring accounting) and where each rank's step time "
      "went\n%-5s %10s %10s %10s | %8s %8s %8s %7s | %12s %12s\n",
      "rank", "DP", "TP", "PP", "compute", "comm", "idle", "bubble", "DP hidden", "TP hidden");
  double bubble = 0, dp_busy = 0, dp_exposed = 0, tp_busy = 0, tp_exposed = 0;
  const auto hidden = [](double busy, double exposed) {
    return busy > 0 ? 100 * std::max(0.0, 1 - exposed / busy) : 0.0;
  };
  for (int r = 0; r < j.world; ++r) {
    const RankSummary& s = sh.ranks[r];
    const double total = std::max(1e-12, s.timing.total_s);
    const double idle = s.timing.pipeline.wait_s;
    const double compute = std::max(0.0, total - s.comm_s - idle);
    const double tp_exp = s.comm_s - s.dp_exposed_s;
    bubble += s.timing.pipeline.bubble() / j.world;
    dp_busy += s.dp_busy_s;
    dp_exposed += s.dp_exposed_s;
    tp_busy += s.tp_busy_s;
    tp_exposed += tp_exp;
    printf("%-5d %10s %10s %10s | %7.1f%% %7.1f%% %7.1f%% %6.1f%% | %11.1f%% %11.1f%%\n", r,
           FormatBytes(s.dp_sent / ran).c_str(), FormatBytes(s.tp_sent / ran).c_str(),
           FormatBytes(s.pp_sent / ran).c_str(), 100 * compute / total, 100 * s.comm_s / total,
           100 * idle / total, 100 * s.timing.pipeline.bubble(),
           hidden(s.dp_busy_s, s.dp_exposed_s), hidden(s.tp_busy_s, tp_exp));
  }
  printf(
      "Communication in flight vs exposed (the compute stream, or on cpu the host, blocked on "
      "it), all ranks:\n  DP (ZeRO gathers, reductions): %.2f s in flight, %.2f s exposed: "
      "%.0f%% hidden behind compute\n  TP (the layers' collectives):  %.2f s in flight, %.2f s "
      "exposed: %.0f%% hidden\n  on --device=%s%s.\n",
      dp_busy, dp_exposed, hidden(dp_busy, dp_exposed), tp_busy, tp_exposed,
      hidden(tp_busy, tp_exposed), j.options.engine.device.ToString().c_str(),
      j.options.engine.device.asynchronous()
          ? " (the compute stream waits only where it needs the data: gathers are prefetched "
            "and\n  reductions run on their own stream)"
          : " (synchronous: every collective blocks the host; --device=cpu_async overlaps)");
  const int pp = j.options.grid.pp, m = j.options.micro_batches, v = j.options.virtual_stages;
  const double theory = j.options.schedule == ScheduleKind::kInterleaved1F1B
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
      j.options.schedule == ScheduleKind::kInterleaved1F1B ? "(pp-1)/(v*m+pp-1)"
                                                           : "(pp-1)/(m+pp-1)",
      !j.use_mpi && j.world > 2 ? "\n(Ranks are threads sharing this machine's cores, so waits "
                                  "also include time a neighbour was descheduled.)"
                                : "");
}

// The world of this process (mpirun) and, on GPUs with --backend=nccl, the
// NCCL world for tensors.
struct Worlds {
  std::unique_ptr<Communicator> mpi, nccl;
};

absl::Status SetUp(Job& j, const CommOptions& co, Worlds* w) {
  ASSIGN_OR_RETURN(j.options, j.config.ToOptions());
  // Data: a text file's bytes (90% train, 10% validation), or the Markov corpus.
  if (j.config.data.empty()) {
    j.data = MarkovData(j.options.model);
  } else {
    ASSIGN_OR_RETURN(j.data, TextFileData(j.config.data, j.options.model));
  }
  j.options.data = j.data.train;
  j.options.eval_data = j.data.eval;
  j.best = j.data.entropy_rate;
  j.world = j.config.world_size();
  j.tokens_per_step = j.config.global_batch_size() * j.config.seq;
  if (!j.use_mpi) return absl::OkStatus();
  ASSIGN_OR_RETURN(w->mpi, MpiRuntime::World(co));
  if (w->mpi->size() != j.world) {
    return absl::InvalidArgumentError(
        absl::StrCat("mpirun started ", w->mpi->size(), " processes but dp (", j.config.dp,
                     ") x tp (", j.config.tp, ") x pp (", j.config.pp, ") = ", j.world));
  }
  if (j.config.backend == "nccl") {
    ASSIGN_OR_RETURN(const Device gpu,
                     RankDevice(j.config, j.options.engine.device, w->mpi->rank(), true));
    ASSIGN_OR_RETURN(w->nccl, NewNcclWorld(*w->mpi, gpu, co));
    j.options.data_world = w->nccl.get();
  }
  return absl::OkStatus();
}

void PrintHeader(const Job& j) {
  const GptTrainOptions& o = j.options;
  printf("data: %s\n", j.data.description.c_str());
  printf(
      "model: decoder of %.2fM parameters, %d layers, hidden %lld, %d heads, seq %lld, vocab "
      "%lld (%s); grid dp=%d x tp=%d x pp=%d (%d %s), ZeRO-%d, %s, %s; %d micro-batches of %lld "
      "per DP rank (global batch %lld sequences)\n",
      GptParameterCount(o.model) / 1e6, o.model.layers, static_cast<long long>(o.model.hidden),
      o.model.heads, static_cast<long long>(o.model.seq), static_cast<long long>(o.model.vocab),
      GptArchitecture(o.model).c_str(), o.grid.dp, o.grid.tp, o.grid.pp, j.world,
      j.use_mpi ? (j.world == 1 ? "MPI process" : "MPI processes")
                : (j.world == 1 ? "rank as a thread" : "ranks as threads"),
      o.engine.stage, ScheduleName(o.schedule), j.config.precision.c_str(), o.micro_batches,
      static_cast<long long>(o.model.micro_batch),
      static_cast<long long>(j.config.global_batch_size()));
  fflush(stdout);
}

// Before the first step: the checkpoint root is this job's alone (a lock
// held for the job's lifetime) and writable; the checkpoint to resume is
// complete and of this model. The leader checks; every process agrees.
absl::Status CheckCheckpoints(Job& j, Communicator* mpi, bool lead, checkpoint::RootLock* lock,
                              TrainJobFailure* failure) {
  j.resume = j.config.resume;
  absl::Status ready;
  if (lead) ready = PrepareCheckpoints(j.config, &j.resume, lock);
  if (mpi != nullptr) {
    ready = AgreeOnStatus(*mpi, ready);
    if (ready.ok()) {
      ASSIGN_OR_RETURN(std::vector<std::string> r, AllGatherStrings(*mpi, j.resume));
      j.resume = r[0];  // `auto` resolved by the leader
    }
  }
  if (!ready.ok() && !lead) failure->leader_reports = true;
  return ready;
}

// Before the first step: what every rank will hold fits in its host's or
// GPU's memory (--force: a warning instead).
absl::Status CheckMemory(Job& j, Communicator* mpi, bool lead, TrainJobFailure* failure) {
  std::vector<MemoryNeed> needs(j.world);
  std::string where;
  absl::Status est;
  if (mpi != nullptr) {
    absl::StatusOr<MemoryNeed> mine =
        EstimateRankMemory(j.config, j.options, j.world, mpi->rank(), true, &where);
    est = AgreeOnStatus(*mpi, mine.status());
    if (est.ok()) {
      const std::vector<int64_t> row = mine->Row();
      std::vector<int64_t> all(row.size() * j.world);
      RETURN_IF_ERROR(mpi->AllGather(ViewOf(row), ViewOf(all)));
      for (int r = 0; r < j.world; ++r) {
        needs[r] = MemoryNeed::FromRow(all.data() + r * row.size());
      }
      j.estimated_rss = mine->resident + mine->peak;
    }
  } else {
    for (int r = 0; r < j.world && est.ok(); ++r) {
      absl::StatusOr<MemoryNeed> n =
          EstimateRankMemory(j.config, j.options, j.world, r, false, &where);
      est = n.status();
      if (n.ok()) needs[r] = *n;
    }
    if (est.ok()) {
      j.estimated_rss = needs[0].resident;
      for (const MemoryNeed& n : needs) j.estimated_rss += n.peak;
    }
  }
  if (!est.ok() && !lead) failure->leader_reports = true;
  RETURN_IF_ERROR(est);
  std::string report;
  absl::Status fits = CheckMemoryFits(needs, j.options, where, &report);
  if (lead && (fits.ok() || j.config.force)) {
    printf("%s", report.c_str());
    if (!fits.ok()) {
      printf("warning: --force: starting although %s\n", std::string(fits.message()).c_str());
    }
    fflush(stdout);
  }
  if (!fits.ok() && !j.config.force) {
    if (!lead) failure->leader_reports = true;
    return fits;
  }
  return absl::OkStatus();
}

// Every rank's loop; the summary (the same on every rank).
absl::StatusOr<TrainSummary> RunRanks(const Job& j, Communicator* mpi, const TrainJobHooks& hooks) {
  // Every setting of this process (a rank started with other settings, or
  // another binary, is caught before training); the progress period may differ.
  ConfigEntries settings;
  for (const TrainConfig::Option& opt : TrainConfig::Options()) {
    if (opt.name != "log_every") settings.emplace_back(opt.name, j.config.Get(opt.name));
  }
  std::sort(settings.begin(), settings.end());
  TrainLoopOptions lo;
  lo.steps = j.config.steps;
  lo.eval_every = j.config.eval_every;
  lo.eval_batches = j.config.eval_batches;
  lo.resume = j.resume;
  lo.checkpoint_dir = j.config.checkpoint_dir;
  lo.checkpoint_every = j.config.checkpoint_every;
  lo.keep_checkpoints = j.config.keep_checkpoints;
  lo.record = Json::Object({{"data", Json(j.data.name)},
                            {"seed", Json(static_cast<int64_t>(j.options.model.seed))},
                            {"lr_schedule", LrScheduleJson(j.options.engine.lr)},
                            {"flags", j.config.RecordJson()}});
  ASSIGN_OR_RETURN(lo.save_fault, SaveFaultFromEnv());
  lo.stop_requested = hooks.stop_requested;
  TrainSummary summary;
  auto rank_main = [&](Communicator& c) -> absl::Status {
    RETURN_IF_ERROR(CheckSameConfig(c, settings));
    MemoryTracker mem(absl::StrCat("rank ", c.rank()));
    TrainLoopOptions mine = lo;
    mine.trainer = j.options;
    ASSIGN_OR_RETURN(mine.trainer.engine.device,
                     RankDevice(j.config, j.options.engine.device, c.rank(), j.use_mpi));
    // This rank's thread serves its GPU: every context it touches is that one's.
    RETURN_IF_ERROR(BindThreadToDevice(mine.trainer.engine.device));
    ConsoleObserver console(j, hooks, mine.trainer.engine.device);
    ASSIGN_OR_RETURN(TrainSummary s,
                     RunTraining(c, mine, &mem, c.rank() == 0 ? &console : nullptr));
    if (c.rank() == 0) summary = std::move(s);
    return absl::OkStatus();
  };
  if (mpi != nullptr) {
    RETURN_IF_ERROR(rank_main(*mpi));
  } else {
    ASSIGN_OR_RETURN(CommOptions co, CommOptionsFromEnv());
    RETURN_IF_ERROR(RunOnRanks(j.world, rank_main, co));
  }
  return summary;
}

}  // namespace

absl::StatusOr<TrainJobEnd> RunTrainJob(const TrainConfig& config, bool use_mpi,
                                        const TrainJobHooks& hooks, TrainJobFailure* failure) {
  TrainJobFailure ignored;
  if (failure == nullptr) failure = &ignored;
  Job j{config};
  j.use_mpi = use_mpi;
  ASSIGN_OR_RETURN(CommOptions co, CommOptionsFromEnv());
  Worlds w;
  RETURN_IF_ERROR(SetUp(j, co, &w));
  const bool lead = !use_mpi || w.mpi->rank() == 0;
  if (lead) PrintHeader(j);
  checkpoint::RootLock lock;
  RETURN_IF_ERROR(CheckCheckpoints(j, w.mpi.get(), lead, &lock, failure));
  RETURN_IF_ERROR(CheckMemory(j, w.mpi.get(), lead, failure));
  ASSIGN_OR_RETURN(TrainSummary sh, RunRanks(j, w.mpi.get(), hooks));
  if (sh.stopped) return TrainJobEnd::kStopped;
  if (!lead) return TrainJobEnd::kFinished;
  if (PrintHeadline(j, sh)) {
    PrintMemory(j, sh);
    PrintCommunication(j, sh);
  }
  return TrainJobEnd::kFinished;
}

}  // namespace trireme
