// Parity: sharded training against a single-rank reference, every step, for
// every stage, several dp, AdamW and SGD-momentum (Adam is scale-invariant and
// would hide a missing 1/dp), with uneven shapes so padding is exercised.
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"
#include "tests/runtime/zero/parity.h"

namespace trireme {
namespace {


using testing::Expected;
using testing::kSteps;

using ParityParam = std::tuple<int, int, OptimizerKind>;  // stage, dp, optimizer

class ParityTest : public ::testing::TestWithParam<ParityParam> {};

TEST_P(ParityTest, MatchesSingleRankEveryStep) {
  const auto [stage, dp, kind] = GetParam();
  EngineOptions o;
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
  absl::Status s = RunOnRanks(dp, [&](Communicator& c) { return testing::TrainAndCompare(c, o, want); });
  EXPECT_TRUE(s.ok()) << s;
}

INSTANTIATE_TEST_SUITE_P(
    AllStages, ParityTest,
    ::testing::Combine(::testing::Values(0, 1, 2, 3), ::testing::Values(2, 3, 4, 8),
                       ::testing::Values(OptimizerKind::kAdamW, OptimizerKind::kSgd)),
    [](const ::testing::TestParamInfo<ParityParam>& info) {
      return absl::StrCat("stage", std::get<0>(info.param), "_dp", std::get<1>(info.param), "_",
                          std::get<2>(info.param) == OptimizerKind::kAdamW ? "adamw" : "sgd");
    });

}  // namespace
}  // namespace trireme
