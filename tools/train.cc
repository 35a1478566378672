// //:train: the command line and the signals around the training library
// (models/train_config.h, train_job.h, train_loop.h). --help lists the flags.
#include <malloc.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "models/train_config.h"
#include "models/train_job.h"
#include "runtime/comm/flight_recorder.h"
#include "runtime/comm/mpi_comm.h"

namespace trireme {
namespace {

constexpr int kPreemptedExitStatus = 3;

// Graceful preemption (--save_on_signal): the first signal asks every rank
// to stop after the current step with a checkpoint; a second exits at once.
std::atomic<int> g_stop_signals{0};
std::atomic<int> g_stop_signal{0};
std::atomic<int64_t> g_first_stop_ns{0};
// Failing: a signal now (mpirun ending the job) exits at once, quietly.
std::atomic<bool> g_failing{false};

int64_t MonotonicNs() {  // async-signal-safe
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

extern "C" void OnStopSignal(int sig) {
  if (g_failing.load()) _exit(1);
  // A second signal within 2 s is the first delivered twice (a scheduler
  // and mpirun both forwarding it), not an insistence.
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

absl::Status InstallStopSignals(const std::string& names) {
  for (absl::string_view name : absl::StrSplit(names, ',', absl::SkipWhitespace())) {
    name = absl::StripAsciiWhitespace(name);
    const int sig = name == "TERM"   ? SIGTERM
                    : name == "INT"  ? SIGINT
                    : name == "USR1" ? SIGUSR1
                    : name == "USR2" ? SIGUSR2
                    : name == "HUP"  ? SIGHUP
                                     : 0;
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

// The job's end: 0 finished, 3 stopped by a signal (a checkpoint saved), 1
// failed (under mpirun every rank's message first, then the job is ended).
int Run(const TrainConfig& config, bool use_mpi) {
  TrainJobHooks hooks;
  hooks.stop_requested = [] { return g_stop_signals.load() > 0; };
  hooks.stop_reason = []() -> std::string {
    const int sig = g_stop_signal.load();
    return sig > 0 ? absl::StrCat("SIG", sigabbrev_np(sig)) : "";
  };
  TrainJobFailure failure;
  absl::StatusOr<TrainJobEnd> end = RunTrainJob(config, use_mpi, hooks, &failure);
  if (end.ok()) {
    if (use_mpi) MpiRuntime::Finalize();
    return *end == TrainJobEnd::kStopped ? kPreemptedExitStatus : 0;
  }
  g_failing = true;
  const absl::Status& s = end.status();
  if (!failure.leader_reports) fprintf(stderr, "train: %s\n", s.ToString().c_str());
  if (absl::IsDeadlineExceeded(s) || absl::IsAborted(s)) {
    fprintf(stderr,
            "train: each rank's last communicator calls are in %s/flight-rank-*.txt; "
            "./bazelw run //tools:flight -- %s names the first divergence\n",
            FlightDumpDir().c_str(), FlightDumpDir().c_str());
  }
  // Under mpirun: every rank's message gets out (a short grace), then the
  // job ends, so no rank is left waiting.
  if (use_mpi) {
    fflush(stdout);
    fflush(stderr);
    absl::SleepFor(absl::Seconds(2));
    MpiRuntime::AbortJob(1);
  }
  return 1;
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  // Host temporaries of 1 MiB or more go back to the system when freed (not
  // into malloc's per-thread arenas): resident memory stays at the tracker's.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h" || a == "--helpfull") {
      printf("%s", trireme::TrainConfigUsage().c_str());
      return 0;
    }
  }
  absl::StatusOr<trireme::TrainConfig> config = trireme::TrainConfigFromArgs(args);
  if (!config.ok()) {
    fprintf(stderr, "train: %s\n", config.status().ToString().c_str());
    return 1;
  }
  const bool use_mpi = config->backend == "mpi" || config->backend == "nccl" ||
                       (config->backend == "auto" && trireme::MpiRuntime::LaunchedByMpirun());
  if (use_mpi) {
    if (absl::Status s = trireme::MpiRuntime::Init(&argc, &argv); !s.ok()) {
      fprintf(stderr, "train: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  if (absl::Status s = trireme::InstallStopSignals(config->save_on_signal); !s.ok()) {
    fprintf(stderr, "train: %s\n", s.ToString().c_str());
    if (use_mpi) trireme::MpiRuntime::AbortJob(1);
    return 1;
  }
  return trireme::Run(*config, use_mpi);
}
