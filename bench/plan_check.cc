// The planner's time model against this machine: //:train configurations
// (the options TrainConfig::ToOptions makes, ranks as threads, one rank per
// core) run for a few steps and their measured step time printed next to
// PredictStepTime's, on this host's hardware description measured in the
// same run (MeasureThisMachine: one thread's sgemm and memcpy).
//
// The one efficiency constant of this machine is measured too: the ratio of
// the (1,1,1) run's predicted time at efficiency 1 to its measured time
// (one rank: no communication, so every term of the prediction scales with
// it). Every other row is then a prediction; the target is +-25%.
#include <algorithm>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "kernels/gemm.h"
#include "models/planner.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

ABSL_FLAG(int, steps, 7, "timed steps per configuration (after one warm-up step; the median)");
ABSL_FLAG(int, hidden, 256, "model width");
ABSL_FLAG(int, layers, 4, "blocks");
ABSL_FLAG(int, seq, 128, "sequence length");
ABSL_FLAG(int, global_batch, 16, "sequences per step");

namespace trireme {
namespace {

// Seconds per step of //:train's options for `c` (the slowest rank's median
// step, wall clock).
absl::StatusOr<double> MeasureStep(const Workload& w, const PlanConfig& c) {
  ASSIGN_OR_RETURN(const TrainConfig tc, TrainConfigFor(w, c));
  ASSIGN_OR_RETURN(GptTrainOptions o, tc.ToOptions());
  o.engine.kernel_threads = 1;
  kernels::SetGemmThreads(1);
  const int steps = absl::GetFlag(FLAGS_steps);
  double seconds = 0;
  std::mutex mu;
  RETURN_IF_ERROR(RunOnRanks(c.dp * c.tp * c.pp, [&](Communicator& comm) -> absl::Status {
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(comm, o, &mem));
    RETURN_IF_ERROR(t->Step(0).status());
    RETURN_IF_ERROR(comm.Barrier());
    std::vector<double> each;
    for (int s = 1; s <= steps; ++s) {
      const absl::Time t0 = absl::Now();
      RETURN_IF_ERROR(t->Step(s).status());
      each.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
    }
    std::sort(each.begin(), each.end());
    std::lock_guard<std::mutex> lock(mu);
    seconds = std::max(seconds, each[each.size() / 2]);  // the median step
    return absl::OkStatus();
  }));
  return seconds;
}

absl::Status Run() {
  Workload base;
  base.model.layers = absl::GetFlag(FLAGS_layers);
  base.model.hidden = absl::GetFlag(FLAGS_hidden);
  base.model.heads = 4;
  base.model.seq = absl::GetFlag(FLAGS_seq);
  base.model.vocab = 256;
  base.model.precision = "f32";
  base.global_batch = absl::GetFlag(FLAGS_global_batch);
  Hardware hw = MeasureThisMachine(1.0);
  printf(
      "planner check on this host: %s\nmodel: GPT-2, %d layers, hidden %d, seq %d, global "
      "batch %lld, f32; ranks as threads, one per core\n\n",
      hw.description.c_str(), base.model.layers, base.model.hidden, base.model.seq,
      static_cast<long long>(base.global_batch));
  const std::vector<std::string> configs = {
      "dp1.tp1.pp1.v1.z0.mb4.rc0.sp0", "dp2.tp1.pp1.v1.z0.mb4.rc0.sp0",
      "dp2.tp1.pp1.v1.z3.mb4.rc0.sp0", "dp2.tp1.pp1.v1.z1.mb2.rc1.sp0",
      "dp1.tp2.pp1.v1.z0.mb4.rc0.sp0", "dp1.tp2.pp1.v1.z0.mb4.rc0.sp1",
      "dp1.tp1.pp2.v1.z0.mb2.rc0.sp0", "dp1.tp1.pp2.v2.z0.mb2.rc1.sp0"};
  printf("%-32s %5s %12s %12s %8s  %s\n", "configuration", "ranks", "measured (s)", "predicted (s)",
         "error", "predicted breakdown (s)");
  int beyond = 0;
  for (size_t i = 0; i < configs.size(); ++i) {
    ASSIGN_OR_RETURN(const PlanConfig c, ParsePlanConfig(configs[i]));
    Workload w = base;
    w.gpus = c.dp * c.tp * c.pp;
    ASSIGN_OR_RETURN(const double measured, MeasureStep(w, c));
    if (i == 0) {  // the calibration row: efficiency = predicted at 1 / measured
      ASSIGN_OR_RETURN(const StepTime at_one, PredictStepTime(w, c, hw));
      hw.efficiency = at_one.total / measured;
      printf("(efficiency of this host, from the (1,1,1) row: %.3f)\n", hw.efficiency);
    }
    ASSIGN_OR_RETURN(const StepTime t, PredictStepTime(w, c, hw));
    const double error = t.total / measured - 1;
    if (i > 0 && std::abs(error) > 0.25) ++beyond;
    printf(
        "%-32s %5d %12.4f %12.4f %+7.1f%%  compute %.4f tp %.4f dp %.4f p2p %.4f bubble "
        "%.4f opt %.4f%s\n",
        c.Name().c_str(), w.gpus, measured, t.total, 100 * error, t.compute, t.exposed_tp,
        t.exposed_dp, t.pp_p2p, t.bubble, t.optimizer, i == 0 ? "  (calibration)" : "");
    fflush(stdout);
  }
  printf("\n%d of %zu predicted rows beyond +-25%% of measured\n", beyond, configs.size() - 1);
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status s = trireme::Run();
  if (!s.ok()) {
    fprintf(stderr, "plan_check: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
