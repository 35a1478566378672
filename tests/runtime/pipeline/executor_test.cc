// The executor runs every schedule over real communicators (ranks as
// threads) on a toy model -- a chain of global stages y = tanh(w_s * x) on a
// 3-vector per micro-batch, loss = 0.5 sum(y^2) -- and the per-stage weight
// gradients equal a single-process reference bit for bit (both sum the
// micro-batches in order).
#include "runtime/pipeline/executor.h"

#include <cmath>
#include <map>
#include <chrono>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

constexpr int kWidth = 3;

float Weight(int stage) { return 0.5f + 0.1f * stage; }
std::vector<float> Input(int mb) { return {0.1f * (mb + 1), -0.2f, 0.3f - 0.05f * mb}; }

// Reference: all stages in one process; d loss / d w_s summed over mbs in order.
std::vector<float> ReferenceGrads(int stages, int m) {
  std::vector<float> grads(stages, 0.0f);
  for (int mb = 0; mb < m; ++mb) {
    std::vector<std::vector<float>> xs{Input(mb)};
    for (int s = 0; s < stages; ++s) {
      std::vector<float> y(kWidth);
      for (int i = 0; i < kWidth; ++i) y[i] = std::tanh(Weight(s) * xs.back()[i]);
      xs.push_back(y);
    }
    std::vector<float> g = xs.back();  // d(0.5 y^2)/dy
    for (int s = stages - 1; s >= 0; --s) {
      float gw = 0;
      std::vector<float> gx(kWidth);
      for (int i = 0; i < kWidth; ++i) {
        const float y = xs[s + 1][i];
        const float d = g[i] * (1 - y * y);
        gw += d * xs[s][i];
        gx[i] = d * Weight(s);
      }
      grads[s] += gw;
      g = gx;
    }
  }
  return grads;
}

using Param = std::tuple<ScheduleKind, int, int, int>;
class ExecutorTest : public ::testing::TestWithParam<Param> {};

TEST_P(ExecutorTest, GradientsEqualSingleProcessReference) {
  const auto [kind, pp, m, v] = GetParam();
  auto sched = BuildSchedule(kind, pp, m, v);
  ASSERT_TRUE(sched.ok()) << sched.status();
  const int stages = pp * v;
  std::vector<float> got(stages, 0.0f);
  std::mutex mu;
  absl::Status st = RunOnRanks(pp, [&](Communicator& world) -> absl::Status {
    ASSIGN_OR_RETURN(auto acts, world.Split(0, world.rank(), "pp_act"));
    ASSIGN_OR_RETURN(auto grads, world.Split(0, world.rank(), "pp_grad"));
    const int r = world.rank();
    std::map<std::pair<int, int>, std::pair<std::vector<float>, std::vector<float>>> saved;
    std::vector<float> gw(v, 0.0f);
    StageModel model;
    model.input_count = [](int, int) { return kWidth; };
    model.output_count = [](int, int) { return kWidth; };
    model.forward = [&](int mb, int chunk, const std::vector<float>& in,
                        std::vector<float>& out) -> absl::Status {
      const int s = chunk * pp + r;
      const std::vector<float> x = s == 0 ? Input(mb) : in;
      if (static_cast<int>(x.size()) != kWidth) return absl::InternalError("bad input size");
      std::vector<float> y(kWidth);
      for (int i = 0; i < kWidth; ++i) y[i] = std::tanh(Weight(s) * x[i]);
      saved[{mb, chunk}] = {x, y};
      if (s < stages - 1) out = y;
      return absl::OkStatus();
    };
    model.backward = [&](int mb, int chunk, const std::vector<float>& gout,
                         std::vector<float>& gin) -> absl::Status {
      const int s = chunk * pp + r;
      auto& [x, y] = saved[{mb, chunk}];
      const std::vector<float> g = s == stages - 1 ? y : gout;
      float acc = 0;
      std::vector<float> gx(kWidth);
      for (int i = 0; i < kWidth; ++i) {
        const float d = g[i] * (1 - y[i] * y[i]);
        acc += d * x[i];
        gx[i] = d * Weight(s);
      }
      gw[chunk] += acc;
      if (s > 0) gin = gx;
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(RunPipeline(sched->per_rank[r], *acts, *grads, model));
    std::lock_guard<std::mutex> lock(mu);
    for (int c = 0; c < v; ++c) got[c * pp + r] = gw[c];
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;
  const std::vector<float> want = ReferenceGrads(stages, m);
  for (int s = 0; s < stages; ++s) EXPECT_EQ(got[s], want[s]) << "stage " << s;
}

// The executor's timing: with forward and backward each sleeping a fixed time
// (no CPU used, so two cores do not distort it), every rank's compute time is
// what it slept and its measured bubble approaches the schedule's simulated
// one, (pp - 1) / (m + pp - 1) for 1F1B with equal forward and backward costs.
TEST(ExecutorTimingTest, MeasuredBubbleMatchesTheSimulatedOne) {
  const int pp = 2, m = 3;
  const auto cost = std::chrono::milliseconds(20);
  auto sched = BuildSchedule(ScheduleKind::k1F1B, pp, m, 1);
  ASSERT_TRUE(sched.ok()) << sched.status();
  std::vector<PipelineTiming> timing(pp);
  absl::Status st = RunOnRanks(pp, [&](Communicator& world) -> absl::Status {
    ASSIGN_OR_RETURN(auto acts, world.Split(0, world.rank(), "pp_act"));
    ASSIGN_OR_RETURN(auto grads, world.Split(0, world.rank(), "pp_grad"));
    StageModel model;
    model.input_count = [](int, int) { return kWidth; };
    model.output_count = [](int, int) { return kWidth; };
    model.forward = [&](int, int, const std::vector<float>&, std::vector<float>& out) {
      std::this_thread::sleep_for(cost);
      out.assign(kWidth, 1.0f);
      return absl::OkStatus();
    };
    model.backward = [&](int, int, const std::vector<float>&, std::vector<float>& gin) {
      std::this_thread::sleep_for(cost);
      gin.assign(kWidth, 1.0f);
      return absl::OkStatus();
    };
    return RunPipeline(sched->per_rank[world.rank()], *acts, *grads, model,
                       &timing[world.rank()]);
  });
  ASSERT_TRUE(st.ok()) << st;
  const double theory = static_cast<double>(pp - 1) / (m + pp - 1);
  double mean_bubble = 0;
  for (int r = 0; r < pp; ++r) {
    // 2m actions of `cost` each (sleep overshoot allowed).
    EXPECT_GE(timing[r].compute_s, 2 * m * 0.020) << "rank " << r;
    EXPECT_LT(timing[r].compute_s, 2 * m * 0.020 * 1.5) << "rank " << r;
    mean_bubble += timing[r].bubble() / pp;
  }
  EXPECT_NEAR(mean_bubble, theory, 0.08) << "simulated " << theory;
}

INSTANTIATE_TEST_SUITE_P(
    Plain, ExecutorTest,
    ::testing::Combine(::testing::Values(ScheduleKind::kGPipe, ScheduleKind::k1F1B),
                       ::testing::Values(1, 2, 3, 4), ::testing::Values(1, 4, 5),
                       ::testing::Values(1)));
INSTANTIATE_TEST_SUITE_P(Interleaved, ExecutorTest,
                         ::testing::Combine(::testing::Values(ScheduleKind::kInterleaved1F1B),
                                            ::testing::Values(2, 4), ::testing::Values(4, 8),
                                            ::testing::Values(2, 3)));

}  // namespace
}  // namespace trireme
