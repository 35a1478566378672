// Gradient accumulation policies of the ZeRO engine, measured: per-rank peak
// memory (MemoryTracker) and bytes sent per step (communicator accounting)
// for reduce-every-micro-batch vs accumulate-then-reduce, stages 2 and 3.
//
//   ./bazelw run -c opt //bench:zero_accum -- --dp=4 --accum=4 --units=8 --unit_params=1000000
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"

ABSL_FLAG(int, dp, 4, "data-parallel ranks (threads)");
ABSL_FLAG(int, accum, 4, "micro-batches per step");
ABSL_FLAG(int, units, 8, "units (e.g. transformer blocks)");
ABSL_FLAG(int64_t, unit_params, 1000000, "parameters per unit");

namespace trireme {
namespace {

struct Row {
  int stage;
  GradAccumPolicy policy;
  bool keep_for_step = false;
  int64_t peak_total = 0, peak_comm = 0, grad = 0, sent = 0;
};

absl::Status Measure(Row& row) {
  const int dp = absl::GetFlag(FLAGS_dp);
  std::vector<UnitSpec> units;
  for (int u = 0; u < absl::GetFlag(FLAGS_units); ++u) {
    units.push_back(
        {absl::StrCat("block", u), {{absl::StrCat("w", u), {absl::GetFlag(FLAGS_unit_params)}}}});
  }
  return RunOnRanks(dp, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = row.stage;
    o.compute_dtype = DType::kBF16;
    o.grad_dtype = DType::kBF16;
    o.grad_accum = absl::GetFlag(FLAGS_accum);
    o.accum_policy = row.policy;
    o.keep_params_for_step = row.keep_for_step;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
    RETURN_IF_ERROR(e->Initialize([](const ParamInfo&, float*) { return absl::OkStatus(); }));
    for (int step = 0; step < 2; ++step) {  // the second step is measured
      mem.ResetPeak();
      const int64_t before = c.stats().total_sent();
      for (int k = 0; k < o.grad_accum; ++k) {
        for (int u = 0; u < e->num_units(); ++u) {
          RETURN_IF_ERROR(e->PreForward(u));
          RETURN_IF_ERROR(e->PostForward(u));
        }
        for (int u = e->num_units() - 1; u >= 0; --u) {
          RETURN_IF_ERROR(e->PreBackward(u));
          RETURN_IF_ERROR(e->PostBackward(u));
        }
      }
      RETURN_IF_ERROR(e->Step().status());
      if (step == 1 && c.rank() == 0) {
        row.peak_total = mem.snapshot().total_peak;
        row.peak_comm = mem.peak(MemCategory::kComm);
        row.grad = mem.current(MemCategory::kGrad);
        row.sent = c.stats().total_sent() - before;
      }
    }
    return absl::OkStatus();
  });
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace trireme;
  printf(
      "ZeRO gradient accumulation policies: dp=%d, %d micro-batches, %d units x %lld "
      "params, bf16 compute and grads (measured, rank 0)\n\n",
      absl::GetFlag(FLAGS_dp), absl::GetFlag(FLAGS_accum), absl::GetFlag(FLAGS_units),
      static_cast<long long>(absl::GetFlag(FLAGS_unit_params)));
  printf("%-6s %-26s %14s %14s %14s %16s\n", "stage", "policy", "grad shard", "peak comm",
         "peak total", "sent per step");
  for (int stage : {2, 3}) {
    for (GradAccumPolicy p :
         {GradAccumPolicy::kReduceEveryMicroBatch, GradAccumPolicy::kAccumulateThenReduce}) {
      Row row{stage, p};
      if (absl::Status s = Measure(row); !s.ok()) {
        fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
      printf("%-6d %-26s %14s %14s %14s %16s\n", stage,
             p == GradAccumPolicy::kReduceEveryMicroBatch ? "reduce every micro-batch"
                                                          : "accumulate, reduce once",
             FormatBytes(row.grad).c_str(), FormatBytes(row.peak_comm).c_str(),
             FormatBytes(row.peak_total).c_str(), FormatBytes(row.sent).c_str());
    }
  }
  // Stage 3's gather policy across micro-batches (explicit: the engine's
  // keep_params_for_step; with pipelining, micro-batches interleave).
  Row keep{3, GradAccumPolicy::kReduceEveryMicroBatch, true};
  if (absl::Status s = Measure(keep); !s.ok()) {
    fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  printf("%-6d %-26s %14s %14s %14s %16s\n", 3, "every mb, params kept",
         FormatBytes(keep.grad).c_str(), FormatBytes(keep.peak_comm).c_str(),
         FormatBytes(keep.peak_total).c_str(), FormatBytes(keep.sent).c_str());
  printf(
      "\nreduce-every keeps at most two full unit gradients at a time but reduce-scatters "
      "every micro-batch;\naccumulate-then-reduce holds every unit's full gradient for the "
      "step and reduce-scatters once.\nStage 3 gathers each unit for every micro-batch's "
      "forward and backward; with params kept for the step it gathers once per step and holds "
      "full parameters meanwhile.\n");
  return 0;
}
