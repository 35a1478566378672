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
#include "tests/runtime/zero/mlp.h"

namespace trireme {
namespace {

using testing::Reference;

constexpr int kSteps = 20;
constexpr int kMicroBatch = 2;
// Tolerance in f32, normwise: ||got - want|| <= kRtol * ||want||. Sharded
// and reference sums run in different orders (the reference adds all
// dp * micro_batch samples at once; ranks add micro_batch samples and the
// engine averages over dp), so single elements that are sums with
// cancellation differ by more ulps than the tensor as a whole.
constexpr double kRtol = 1e-6;

absl::Status Compare(const std::string& what, const float* got, const float* want, int64_t n) {
  double err2 = 0, ref2 = 0, worst = 0;
  int64_t worst_i = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = static_cast<double>(got[i]) - want[i];
    err2 += e * e;
    ref2 += static_cast<double>(want[i]) * want[i];
    if (std::abs(e) > worst) {
      worst = std::abs(e);
      worst_i = i;
    }
  }
  if (std::sqrt(err2) > kRtol * std::sqrt(ref2) || std::isnan(err2)) {
    return absl::InternalError(absl::StrCat(
        what, ": relative error ", std::sqrt(err2 / ref2), " > ", kRtol, "; worst element ",
        worst_i, ": got ", got[worst_i], ", reference ", want[worst_i]));
  }
  return absl::OkStatus();
}

struct Expected {
  std::vector<double> loss, norm;
  std::vector<std::vector<std::vector<float>>> grads, params;  // [step][unit]
};

Expected RunReference(const EngineOptions& o, int dp) {
  Reference ref(o, dp);
  Expected e;
  for (int s = 1; s <= kSteps; ++s) {
    ref.Step(s, kMicroBatch);
    e.loss.push_back(ref.loss());
    e.norm.push_back(ref.grad_norm());
    e.grads.emplace_back();
    e.params.emplace_back();
    for (int u = 0; u < 3; ++u) {
      e.grads.back().push_back(ref.grads(u));
      e.params.back().push_back(ref.params(u));
    }
  }
  return e;
}

absl::Status TrainAndCompare(Communicator& c, const EngineOptions& o, const Expected& want) {
  MemoryTracker mem;
  ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
  RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
  for (int s = 1; s <= kSteps; ++s) {
    const std::string at = absl::StrCat("stage ", o.stage, " dp ", c.size(), " rank ", c.rank(),
                                        " step ", s);
    ASSIGN_OR_RETURN(double local, testing::RunMicroBatches(*e, c.rank(), c.size(), s, kMicroBatch));
    float loss = static_cast<float>(local);
    RETURN_IF_ERROR(c.AllReduce({&loss, 1, DType::kF32}, {&loss, 1, DType::kF32}, ReduceOp::kAvg));
    const float want_loss = static_cast<float>(want.loss[s - 1]);
    RETURN_IF_ERROR(Compare(at + " loss", &loss, &want_loss, 1));
    RETURN_IF_ERROR(e->ReduceGradients());
    for (int u = 0; u < e->num_units(); ++u) {
      ASSIGN_OR_RETURN(std::vector<float> g, e->GradShard(u));
      const Range r = e->master_range(u);
      RETURN_IF_ERROR(Compare(at + " grad of unit " + e->unit_name(u), g.data(),
                              want.grads[s - 1][u].data() + r.begin, r.size()));
    }
    ASSIGN_OR_RETURN(StepStats st, e->Step());
    const float norm = static_cast<float>(st.grad_norm), want_norm = static_cast<float>(want.norm[s - 1]);
    RETURN_IF_ERROR(Compare(at + " grad norm", &norm, &want_norm, 1));
    for (int u = 0; u < e->num_units(); ++u) {
      const Range r = e->master_range(u);
      RETURN_IF_ERROR(Compare(at + " params of unit " + e->unit_name(u), e->master_data(u),
                              want.params[s - 1][u].data() + r.begin, r.size()));
    }
  }
  // The full values, gathered, equal the reference too.
  for (const char* name : {"w1", "b3", "gain"}) {
    ASSIGN_OR_RETURN(std::vector<float> full, e->GatherFull(name));
    ASSIGN_OR_RETURN(ParamInfo p, e->param(name));
    RETURN_IF_ERROR(Compare(absl::StrCat("GatherFull(", name, ")"), full.data(),
                            want.params.back()[p.unit].data() + p.unit_range.begin, p.numel));
  }
  return absl::OkStatus();
}

using ParityParam = std::tuple<int, int, OptimizerKind>;  // stage, dp, optimizer

class ParityTest : public ::testing::TestWithParam<ParityParam> {};

TEST_P(ParityTest, MatchesSingleRankEveryStep) {
  const auto [stage, dp, kind] = GetParam();
  EngineOptions o;
  o.stage = stage;
  o.optimizer.kind = kind;
  o.optimizer.weight_decay = 0.01f;
  o.lr.lr = kind == OptimizerKind::kAdamW ? 1e-2f : 0.3f;
  const Expected want = RunReference(o, dp);
  // The reference must actually learn, or parity proves little.
  // (Batches are small and differ every step: compare the first and last
  // five steps' mean loss.)
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += want.loss[i] / 5;
    last += want.loss[kSteps - 1 - i] / 5;
  }
  ASSERT_LT(last, 0.9 * first) << "mean loss of the first 5 steps " << first << ", last 5 " << last;
  absl::Status s = RunOnRanks(dp, [&](Communicator& c) { return TrainAndCompare(c, o, want); });
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
