// The executor runs every schedule over real communicators (ranks as
// threads) on a toy model -- a chain of global stages y = tanh(w_s * x) on a
// 3-vector per micro-batch, loss = 0.5 sum(y^2) -- and the per-stage weight
// gradients equal a single-process reference bit for bit (both sum the
// micro-batches in order): on the cpu and cpu_async devices, with eager and
// with rendezvous sends.
#include "runtime/pipeline/executor.h"

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/core/stream.h"
#include "runtime/core/tensor.h"

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

// A rank's toy model: y = tanh(w_s x) per global stage s, on host tensors
// whose values are computed by tasks on the compute stream (inline on cpu,
// on the worker on cpu_async).
class ToyStage {
 public:
  ToyStage(int pp, int v, int rank, Stream& compute, int fail_mb = -1)
      : pp_(pp), v_(v), r_(rank), s_(compute), fail_mb_(fail_mb) {}

  StageModel Model() {
    StageModel m;
    m.input_buffer = [this](int, int) { return NewTensor(); };
    m.grad_output_buffer = [this](int, int) { return NewTensor(); };
    m.forward = [this](int mb, int chunk, const Tensor& in, Tensor* out) -> absl::Status {
      const int s = chunk * pp_ + r_, stages = pp_ * v_;
      if (mb == fail_mb_) return absl::InternalError(absl::StrCat("injected failure at mb ", mb));
      ASSIGN_OR_RETURN(Tensor y, NewTensor());
      Tensor x = in;
      if (s == 0) {
        ASSIGN_OR_RETURN(x, NewTensor());
        Run([x, mb] { std::copy_n(Input(mb).data(), kWidth, x.as<float>()); });
      }
      if (!x.defined() || x.numel() != kWidth) return absl::InternalError("bad input size");
      Run([x, y, s] {
        for (int i = 0; i < kWidth; ++i) y.as<float>()[i] = std::tanh(Weight(s) * x.as<float>()[i]);
      });
      saved_[{mb, chunk}] = {x, y};
      if (s < stages - 1) *out = y;
      return absl::OkStatus();
    };
    m.backward = [this](int mb, int chunk, const Tensor& gout, Tensor* gin) -> absl::Status {
      const int s = chunk * pp_ + r_, stages = pp_ * v_;
      auto [x, y] = saved_[{mb, chunk}];
      const Tensor g = s == stages - 1 ? y : gout;
      if (!g.defined()) return absl::InternalError("no output gradient");
      ASSIGN_OR_RETURN(Tensor gx, NewTensor());
      float* acc = &gw_[chunk];
      Run([x, y, g, gx, s, acc] {
        float sum = 0;
        for (int i = 0; i < kWidth; ++i) {
          const float yi = y.as<float>()[i];
          const float d = g.as<float>()[i] * (1 - yi * yi);
          sum += d * x.as<float>()[i];
          gx.as<float>()[i] = d * Weight(s);
        }
        *acc += sum;
      });
      if (s > 0) *gin = gx;
      return absl::OkStatus();
    };
    return m;
  }

  // The weight gradients per local chunk, summed over micro-batches in
  // order (read after synchronizing the stream).
  std::vector<float> gw_ = std::vector<float>(4, 0.0f);

 private:
  absl::StatusOr<Tensor> NewTensor() {
    return Tensor::Empty(s_.device(), DType::kF32, {kWidth}, MemCategory::kComm, nullptr, &s_);
  }
  template <typename F>
  void Run(F f) {
    s_.host()->Enqueue([f] {
      f();
      return absl::OkStatus();
    });
  }
  const int pp_, v_, r_;
  Stream& s_;
  const int fail_mb_;
  std::map<std::pair<int, int>, std::pair<Tensor, Tensor>> saved_;
};

struct RunOptions {
  Device device = Device::Cpu();
  bool rendezvous = false;
  P2PPolicy policy;
  bool policy_for_kind = true;  // P2PPolicyFor(kind) instead of `policy`
  absl::Duration timeout = absl::Seconds(60);
  int fail_rank = -1, fail_mb = -1;  // this rank's forward of this mb fails
};

// Runs the schedule on pp thread ranks; returns the per-stage weight gradients.
absl::StatusOr<std::vector<float>> RunToy(ScheduleKind kind, int pp, int m, int v,
                                          const RunOptions& ro) {
  auto sched = BuildSchedule(kind, pp, m, v);
  if (!sched.ok()) return sched.status();
  std::vector<float> got(pp * v, 0.0f);
  std::mutex mu;
  CommOptions co;
  co.p2p_rendezvous = ro.rendezvous;
  co.timeout = ro.timeout;
  absl::Status st = RunOnRanks(
      pp,
      [&](Communicator& world) -> absl::Status {
        ASSIGN_OR_RETURN(auto acts, world.Split(0, world.rank(), "pp_act"));
        ASSIGN_OR_RETURN(auto grads, world.Split(0, world.rank(), "pp_grad"));
        acts->SetDataDevice(ro.device);
        grads->SetDataDevice(ro.device);
        const int r = world.rank();
        ASSIGN_OR_RETURN(std::unique_ptr<Stream> compute, NewStream(ro.device, "compute"));
        ToyStage stage(pp, v, r, *compute, r == ro.fail_rank ? ro.fail_mb : -1);
        const P2PPolicy policy = ro.policy_for_kind ? P2PPolicyFor(kind) : ro.policy;
        // The trainer's overload: deferred sends released at their plan's
        // release points (ReleasePoints) -- under rendezvous too.
        const absl::Status run =
            RunPipeline(*sched, r, *acts, *grads, *compute, stage.Model(), policy);
        // The stream's tasks use the stage: drain them before it goes, error or not.
        const absl::Status sync = compute->Synchronize();
        RETURN_IF_ERROR(run);
        RETURN_IF_ERROR(sync);
        std::lock_guard<std::mutex> lock(mu);
        for (int c = 0; c < v; ++c) got[c * pp + r] = stage.gw_[c];
        return absl::OkStatus();
      },
      co);
  if (!st.ok()) return st;
  return got;
}

using Param = std::tuple<ScheduleKind, int, int, int, DeviceKind, bool>;
class ExecutorTest : public ::testing::TestWithParam<Param> {};

TEST_P(ExecutorTest, GradientsEqualSingleProcessReference) {
  const auto [kind, pp, m, v, device, rendezvous] = GetParam();
  RunOptions ro;
  ro.device = {device, 0};
  ro.rendezvous = rendezvous;
  auto got = RunToy(kind, pp, m, v, ro);
  if (!got.ok() && absl::IsInvalidArgument(got.status())) {
    GTEST_SKIP() << got.status();  // not a valid (kind, pp, m, v)
  }
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<float> want = ReferenceGrads(pp * v, m);
  for (int s = 0; s < pp * v; ++s) EXPECT_EQ((*got)[s], want[s]) << "stage " << s;
}

// The executor that waits for every send in list order (the eager-only
// order) deadlocks under rendezvous sends -- rank 0 sends micro-batch 1's
// activation while rank 1 sends micro-batch 0's gradient -- and the deadlock
// is reported by the timeout, naming the rank that never posted the receive.
// So the rendezvous runs above are a test that can fail.
TEST(ExecutorRendezvousTest, EagerOnlyOrderDeadlocksAndTimesOut) {
  RunOptions ro;
  ro.rendezvous = true;
  ro.policy_for_kind = false;
  ro.policy.grouped = false;
  ro.policy.deferred_sends = false;
  ro.timeout = absl::Milliseconds(500);
  auto got = RunToy(ScheduleKind::k1F1B, 2, 2, 1, ro);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded) << got.status();
  EXPECT_NE(got.status().message().find("has not posted the matching receive"), std::string::npos)
      << got.status();
  ro.rendezvous = false;  // the same order completes with eager sends
  EXPECT_TRUE(RunToy(ScheduleKind::k1F1B, 2, 2, 1, ro).ok());
}

// A rank whose model fails mid-run while its peers have sends and receives
// in flight: every rank returns (no hang, the world is aborted), the error
// names the failure, and the in-flight buffers are released only after the
// streams have waited for their ops -- on both devices, eager and rendezvous.
TEST(ExecutorFailureTest, ModelErrorMidRunEndsEveryRankWithTheError) {
  for (DeviceKind device : {DeviceKind::kCpu, DeviceKind::kCpuAsync}) {
    for (bool rendezvous : {false, true}) {
      for (auto [kind, pp, m, v, fail_rank, fail_mb] :
           {std::tuple{ScheduleKind::k1F1B, 2, 4, 1, 1, 0},
            std::tuple{ScheduleKind::k1F1B, 3, 6, 1, 1, 2},
            std::tuple{ScheduleKind::kInterleaved1F1B, 2, 4, 2, 0, 3}}) {
        RunOptions ro;
        ro.device = {device, 0};
        ro.rendezvous = rendezvous;
        ro.timeout = absl::Seconds(20);
        ro.fail_rank = fail_rank;
        ro.fail_mb = fail_mb;
        const absl::Time start = absl::Now();
        auto got = RunToy(kind, pp, m, v, ro);
        ASSERT_FALSE(got.ok());
        EXPECT_THAT(std::string(got.status().message()),
                    ::testing::HasSubstr(absl::StrCat("injected failure at mb ", fail_mb)))
            << got.status();
        // The abort reaches the other ranks, not their timeouts.
        EXPECT_LT(absl::Now() - start, absl::Seconds(10));
      }
    }
  }
}

// The executor's timing: with forward and backward each sleeping a fixed time
// (no CPU used, so two cores do not distort it), every rank's compute time is
// what it slept and its measured bubble approaches the schedule's simulated
// one, (pp - 1) / (m + pp - 1) for 1F1B with equal forward and backward costs
// -- on the synchronous and on the asynchronous device.
TEST(ExecutorTimingTest, MeasuredBubbleMatchesTheSimulatedOne) {
  const int pp = 2, m = 3;
  const auto cost = std::chrono::milliseconds(20);
  auto sched = BuildSchedule(ScheduleKind::k1F1B, pp, m, 1);
  ASSERT_TRUE(sched.ok()) << sched.status();
  for (Device device : {Device::Cpu(), Device::CpuAsync()}) {
    SCOPED_TRACE(device.ToString());
    std::vector<PipelineTiming> timing(pp);
    absl::Status st = RunOnRanks(pp, [&](Communicator& world) -> absl::Status {
      ASSIGN_OR_RETURN(auto acts, world.Split(0, world.rank(), "pp_act"));
      ASSIGN_OR_RETURN(auto grads, world.Split(0, world.rank(), "pp_grad"));
      ASSIGN_OR_RETURN(std::unique_ptr<Stream> compute, NewStream(device, "compute"));
      auto tensor = [&]() {
        return Tensor::Empty(device, DType::kF32, {kWidth}, MemCategory::kComm, nullptr,
                             compute.get());
      };
      auto sleep_task = [&] {
        compute->host()->Enqueue([cost] {
          std::this_thread::sleep_for(cost);
          return absl::OkStatus();
        });
      };
      StageModel model;
      model.input_buffer = [&](int, int) { return tensor(); };
      model.grad_output_buffer = [&](int, int) { return tensor(); };
      model.forward = [&](int, int, const Tensor&, Tensor* out) -> absl::Status {
        sleep_task();
        ASSIGN_OR_RETURN(*out, tensor());
        return absl::OkStatus();
      };
      model.backward = [&](int, int, const Tensor&, Tensor* gin) -> absl::Status {
        sleep_task();
        ASSIGN_OR_RETURN(*gin, tensor());
        return absl::OkStatus();
      };
      const PipelineTiming before = PipelineClock(*compute, *acts, *grads);
      RETURN_IF_ERROR(RunPipeline(PlanFor(*sched, world.rank()), *acts, *grads, *compute, model));
      RETURN_IF_ERROR(compute->Synchronize());
      timing[world.rank()] = PipelineClock(*compute, *acts, *grads) - before;
      return absl::OkStatus();
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
}

std::string Name(const ::testing::TestParamInfo<Param>& info) {
  const auto [kind, pp, m, v, device, rendezvous] = info.param;
  return absl::StrCat(ScheduleName(kind), "_pp", pp, "_m", m, "_v", v, "_",
                      Device{device, 0}.ToString(), rendezvous ? "_rendezvous" : "_eager");
}

// pp 1-4 and m in {1, pp, 2 pp + 1} (here 1, 3, 4, 5, 9 cover them); with
// virtual stages m in {pp, 2 pp, ...} (4 and 12; combinations the schedule
// refuses are skipped).
INSTANTIATE_TEST_SUITE_P(
    Plain, ExecutorTest,
    ::testing::Combine(::testing::Values(ScheduleKind::kGPipe, ScheduleKind::k1F1B),
                       ::testing::Values(1, 2, 3, 4), ::testing::Values(1, 2, 3, 4, 5, 7, 9),
                       ::testing::Values(1),
                       ::testing::Values(DeviceKind::kCpu, DeviceKind::kCpuAsync),
                       ::testing::Values(false, true)),
    Name);
INSTANTIATE_TEST_SUITE_P(
    Interleaved, ExecutorTest,
    ::testing::Combine(::testing::Values(ScheduleKind::kInterleaved1F1B),
                       ::testing::Values(1, 2, 3, 4), ::testing::Values(1, 2, 3, 4, 6, 8, 12),
                       ::testing::Values(2, 3),
                       ::testing::Values(DeviceKind::kCpu, DeviceKind::kCpuAsync),
                       ::testing::Values(false, true)),
    Name);

}  // namespace
}  // namespace trireme
