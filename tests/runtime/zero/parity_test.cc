// Parity: sharded training against a single-rank reference, every step, for
// every stage, several dp, AdamW and SGD-momentum (Adam is scale-invariant and
// would hide a missing 1/dp), with uneven shapes so padding is exercised.
#include "tests/runtime/zero/parity.h"

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"
#include "tests/runtime/zero/mlp.h"

namespace trireme {
namespace {

using testing::Expected;
using testing::kSteps;

// stage, dp, optimizer, device
using ParityParam = std::tuple<int, int, OptimizerKind, DeviceKind>;

class ParityTest : public ::testing::TestWithParam<ParityParam> {};

TEST_P(ParityTest, MatchesSingleRankEveryStep) {
  const auto [stage, dp, kind, device] = GetParam();
  EngineOptions o;
  o.device = {device, 0};
  o.stage = stage;
  o.optimizer.kind = kind;
  o.optimizer.weight_decay = 0.01f;
  o.lr.lr = kind == OptimizerKind::kAdamW ? 1e-2f : 0.3f;
  const Expected want = testing::RunReference(o, dp);
  // The reference must actually learn, or parity proves little.
  // (Batches are small and differ every step: compare the first and last
  // five steps' mean loss.)
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += want.loss[i] / 5;
    last += want.loss[kSteps - 1 - i] / 5;
  }
  ASSERT_LT(last, 0.9 * first) << "mean loss of the first 5 steps " << first << ", last 5 " << last;
  absl::Status s =
      RunOnRanks(dp, [&](Communicator& c) { return testing::TrainAndCompare(c, o, want); });
  EXPECT_TRUE(s.ok()) << s;
}

INSTANTIATE_TEST_SUITE_P(
    AllStages, ParityTest,
    ::testing::Combine(::testing::Values(0, 1, 2, 3), ::testing::Values(2, 3, 4, 8),
                       ::testing::Values(OptimizerKind::kAdamW, OptimizerKind::kSgd),
                       ::testing::Values(DeviceKind::kCpu, DeviceKind::kCpuAsync)),
    [](const ::testing::TestParamInfo<ParityParam>& info) {
      return absl::StrCat("stage", std::get<0>(info.param), "_dp", std::get<1>(info.param), "_",
                          std::get<2>(info.param) == OptimizerKind::kAdamW ? "adamw" : "sgd", "_",
                          Device{std::get<3>(info.param), 0}.ToString());
    });

// What a run leaves behind, to compare devices bit for bit.
struct Trace {
  std::vector<double> losses, norms;
  std::vector<std::vector<float>> full;  // GatherFull of every parameter, at the end
};

absl::StatusOr<Trace> RunOn(Device device, int stage, int dp, DType dtype, OptimizerKind kind) {
  std::vector<Trace> per_rank(dp);
  absl::Status s = RunOnRanks(dp, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.device = device;
    o.stage = stage;
    o.compute_dtype = dtype;
    o.grad_dtype = dtype;
    o.grad_accum = 2;
    o.optimizer.kind = kind;
    o.lr.lr = 1e-2f;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
    RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
    Trace& t = per_rank[c.rank()];
    for (int step = 1; step <= 6; ++step) {
      ASSIGN_OR_RETURN(double loss, testing::RunMicroBatches(*e, c.rank(), dp, step, 2));
      ASSIGN_OR_RETURN(StepStats st, e->Step());
      t.losses.push_back(loss);
      t.norms.push_back(st.grad_norm);
    }
    for (int u = 0; u < e->num_units(); ++u) {
      for (const ParamInfo& p : e->unit_params(u)) {
        ASSIGN_OR_RETURN(std::vector<float> v, e->GatherFull(p.name));
        t.full.push_back(std::move(v));
      }
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return per_rank[dp - 1];  // the last rank: its shard differs from rank 0's
}

// The asynchronous CPU device runs the same orchestration with every kernel,
// copy and collective on streams, the host running ahead: its results must be
// the synchronous reference's, bit for bit.
TEST(AsyncDevice, BitwiseEqualToCpuForEveryStageAndDtype) {
  for (int stage = 0; stage <= 3; ++stage) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kSgd}) {
        SCOPED_TRACE(absl::StrCat("stage ", stage, " ", DTypeName(dtype),
                                  kind == OptimizerKind::kAdamW ? " adamw" : " sgd"));
        auto cpu = RunOn(Device::Cpu(), stage, 3, dtype, kind);
        auto async = RunOn(Device::CpuAsync(), stage, 3, dtype, kind);
        ASSERT_TRUE(cpu.ok()) << cpu.status();
        ASSERT_TRUE(async.ok()) << async.status();
        EXPECT_EQ(cpu->losses, async->losses);
        EXPECT_EQ(cpu->norms, async->norms);
        ASSERT_EQ(cpu->full.size(), async->full.size());
        for (size_t i = 0; i < cpu->full.size(); ++i) {
          EXPECT_EQ(0, std::memcmp(cpu->full[i].data(), async->full[i].data(),
                                   cpu->full[i].size() * sizeof(float)))
              << "parameter " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace trireme
