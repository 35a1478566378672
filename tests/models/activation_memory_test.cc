// Activation memory is predicted exactly: on every rank, the tracker's
// measured `activation` peak after two steps equals ActivationPeakEstimate()
// (shapes walked through the rank's schedule) -- for GPipe, 1F1B and
// interleaved schedules, tensor and sequence parallelism, a padded vocabulary
// and recomputed blocks -- for GPT-2 and for the Llama architecture (shared or
// split key/value heads, a sliding window).
//
// The whole of a rank's memory is predicted exactly too: GptTrainer::
// EstimateMemory (the trainer on the meta device over a simulated grid, no
// peers) gives, category by category, the peaks and the steady bytes the
// real run's tracker records -- at every grid position, ZeRO stage and
// precision below, pipelined or not: every category's peak and steady bytes
// and the total's peak, exactly (the pipeline releases a sent buffer at a
// fixed point of its plan, not when the peer takes it).
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/gpt_trainer.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/models/tiny_gpt.h"

namespace trireme {
namespace {

struct Case {
  int dp, tp, pp, v;
  ScheduleKind schedule;
  bool sp;
  std::vector<bool> recompute;
  int kv_heads = 0;  // > 0: the Llama architecture with that many (1: and a window)
};

GptConfig ModelOf(int kv_heads) {
  if (kv_heads == 0) return testing::TinyGpt();
  return testing::TinyLlama(kv_heads, kv_heads == 1 ? 5 : 0);
}

TEST(ActivationMemoryTest, MeasuredPeakEqualsEstimateOnEveryRank) {
  const std::vector<Case> cases = {
      {1, 1, 1, 1, ScheduleKind::kGPipe, false, {}},
      {1, 1, 2, 1, ScheduleKind::kGPipe, false, {}},
      {1, 1, 2, 1, ScheduleKind::k1F1B, false, {}},
      {1, 1, 2, 2, ScheduleKind::kInterleaved1F1B, false, {}},
      {1, 2, 1, 1, ScheduleKind::k1F1B, true, {}},
      {2, 2, 2, 1, ScheduleKind::k1F1B, false, {true, false, true, false}},
      {1, 2, 2, 1, ScheduleKind::kGPipe, true, {false, true, true, true}},
      {1, 2, 2, 1, ScheduleKind::k1F1B, true, {false, true, true, false}, 1},
      {2, 2, 2, 1, ScheduleKind::k1F1B, false, {}, 2},
      {1, 2, 2, 2, ScheduleKind::kInterleaved1F1B, false, {true, false, false, true}, 1},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "(" << k.dp << "," << k.tp << "," << k.pp << ") v=" << k.v << " "
                 << ScheduleName(k.schedule) << (k.sp ? " SP" : "") << " recompute "
                 << k.recompute.size() << " kv_heads " << k.kv_heads);
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> got(k.dp * k.tp * k.pp);
    absl::Status s = RunOnRanks(k.dp * k.tp * k.pp, [&](Communicator& c) -> absl::Status {
      GptTrainOptions o;
      o.engine.device = testing::TestDevice();
      o.model = ModelOf(k.kv_heads);
      o.model.sequence_parallel = k.sp;
      o.model.recompute = k.recompute;
      o.grid = {k.dp, k.tp, k.pp};
      o.virtual_stages = k.v;
      o.schedule = k.schedule;
      o.engine.stage = k.dp > 1 ? 3 : 0;
      o.micro_batches = 4;
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
      for (int step = 1; step <= 2; ++step) RETURN_IF_ERROR(t->Step(step).status());
      std::lock_guard<std::mutex> lock(mu);
      got[c.rank()] = {mem.peak(MemCategory::kActivation), t->ActivationPeakEstimate()};
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    for (size_t r = 0; r < got.size(); ++r) {
      EXPECT_GT(got[r].first, 0) << "rank " << r;
      EXPECT_EQ(got[r].first, got[r].second) << "rank " << r << ": measured vs estimate";
    }
  }
}

struct StateCase {
  int dp, tp, pp, v;
  ScheduleKind schedule;
  int stage;
  DType compute;
  bool recompute;
  int kv_heads = 0;  // as Case
  int micro_batches = 4;
  bool sp = false;
};

TEST(MemoryEstimateTest, EqualsTheRealRunsTrackerOnEveryRank) {
  const std::vector<StateCase> cases = {
      {1, 1, 1, 1, ScheduleKind::k1F1B, 0, DType::kF32, false},
      {2, 1, 1, 1, ScheduleKind::k1F1B, 1, DType::kBF16, false},
      {3, 1, 1, 1, ScheduleKind::kGPipe, 2, DType::kF32, true},  // uneven shards
      {2, 2, 1, 1, ScheduleKind::k1F1B, 3, DType::kBF16, false},
      {2, 1, 2, 1, ScheduleKind::k1F1B, 3, DType::kF32, false},
      {1, 2, 2, 2, ScheduleKind::kInterleaved1F1B, 0, DType::kF16, true},
      {2, 2, 2, 1, ScheduleKind::kGPipe, 2, DType::kBF16, false},
      {2, 2, 1, 1, ScheduleKind::k1F1B, 3, DType::kBF16, false, 1},
      {2, 2, 2, 1, ScheduleKind::k1F1B, 3, DType::kBF16, false, 1},
      {1, 2, 2, 2, ScheduleKind::kInterleaved1F1B, 1, DType::kF32, true, 2},
      {2, 1, 2, 1, ScheduleKind::k1F1B, 3, DType::kBF16, false, 0, 14},  // estimated with 8
      {1, 2, 2, 1, ScheduleKind::k1F1B, 2, DType::kF32, true, 2, 4, true},
      {2, 2, 2, 1, ScheduleKind::kGPipe, 3, DType::kBF16, false, 0, 4, true},
  };
  for (const StateCase& k : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "(" << k.dp << "," << k.tp << "," << k.pp << ") v=" << k.v << " "
                 << ScheduleName(k.schedule) << " ZeRO-" << k.stage << " " << DTypeName(k.compute)
                 << (k.recompute ? " recompute" : "") << (k.sp ? " SP" : "") << " kv_heads "
                 << k.kv_heads << " m " << k.micro_batches);
    const int world = k.dp * k.tp * k.pp;
    GptTrainOptions o;
    o.engine.device = testing::TestDevice();
    o.model = ModelOf(k.kv_heads);
    if (k.recompute) o.model.recompute.assign(o.model.layers, true);
    o.model.sequence_parallel = k.sp;
    o.grid = {k.dp, k.tp, k.pp};
    o.virtual_stages = k.v;
    o.schedule = k.schedule;
    o.engine.stage = k.stage;
    o.engine.compute_dtype = k.compute;
    o.micro_batches = k.micro_batches;
    std::mutex mu;
    std::vector<MemoryTracker::Snapshot> real(world);
    absl::Status s = RunOnRanks(world, [&](Communicator& c) -> absl::Status {
      MemoryTracker mem;
      {
        ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
        for (int step = 1; step <= 2; ++step) RETURN_IF_ERROR(t->Step(step).status());
        std::lock_guard<std::mutex> lock(mu);
        real[c.rank()] = mem.snapshot();
      }
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    for (int r = 0; r < world; ++r) {
      absl::StatusOr<MemoryTracker::Snapshot> est = GptTrainer::EstimateMemory(o, world, r);
      ASSERT_TRUE(est.ok()) << est.status();
      EXPECT_GT(real[r].total_peak, 0);
      for (int c = 0; c < kNumMemCategories; ++c) {
        const char* name = MemCategoryName(static_cast<MemCategory>(c));
        EXPECT_EQ(est->peak[c], real[r].peak[c]) << "rank " << r << " peak " << name;
        EXPECT_EQ(est->current[c], real[r].current[c]) << "rank " << r << " current " << name;
      }
      EXPECT_EQ(est->total_peak, real[r].total_peak) << "rank " << r;
    }
  }
}

// EstimateMemory runs 4 pp micro-batches when there are more than 5 pp: the
// steady state repeats, so every figure is the full schedule's.
TEST(MemoryEstimateTest, AShortenedSteadyStateHoldsWhatTheFullStepHolds) {
  struct Shape {
    int dp, tp, pp, v, stage, micro_batches;
    ScheduleKind schedule;
    bool recompute;
  };
  for (const Shape& k : {Shape{1, 1, 2, 1, 0, 24, ScheduleKind::k1F1B, false},
                         Shape{2, 1, 3, 1, 3, 31, ScheduleKind::k1F1B, true},
                         Shape{1, 2, 2, 2, 1, 26, ScheduleKind::kInterleaved1F1B, false},
                         Shape{1, 1, 4, 1, 2, 40, ScheduleKind::k1F1B, false},
                         Shape{1, 1, 3, 3, 0, 33, ScheduleKind::kInterleaved1F1B, true},
                         Shape{2, 1, 1, 1, 3, 9, ScheduleKind::k1F1B, false}}) {
    SCOPED_TRACE(::testing::Message() << "(" << k.dp << "," << k.tp << "," << k.pp << ") v=" << k.v
                                      << " m=" << k.micro_batches);
    GptTrainOptions o;
    o.model = ModelOf(k.v > 1 ? 2 : 0);
    o.model.layers = std::max(o.model.layers, k.pp * k.v);
    o.model.recompute.assign(k.recompute ? o.model.layers : 0, true);
    o.grid = {k.dp, k.tp, k.pp};
    o.virtual_stages = k.v;
    o.schedule = k.schedule;
    o.engine.stage = k.stage;
    o.micro_batches = k.micro_batches;
    ASSERT_LT(GptTrainer::EstimateMicroBatches(o), o.micro_batches);
    const int world = k.dp * k.tp * k.pp;
    for (int r = 0; r < world; ++r) {
      absl::StatusOr<MemoryTracker::Snapshot> full = GptTrainer::EstimateMemory(o, world, r, true);
      absl::StatusOr<MemoryTracker::Snapshot> quick = GptTrainer::EstimateMemory(o, world, r);
      ASSERT_TRUE(full.ok() && quick.ok()) << full.status() << quick.status();
      for (int c = 0; c < kNumMemCategories; ++c) {
        const char* name = MemCategoryName(static_cast<MemCategory>(c));
        EXPECT_EQ(quick->peak[c], full->peak[c]) << "rank " << r << " peak " << name;
        EXPECT_EQ(quick->current[c], full->current[c]) << "rank " << r << " current " << name;
      }
      EXPECT_EQ(quick->total_peak, full->total_peak) << "rank " << r;
      // The lower bound is one.
      absl::StatusOr<int64_t> bound = GptTrainer::MemoryLowerBound(o, world, r);
      ASSERT_TRUE(bound.ok()) << bound.status();
      EXPECT_GT(*bound, 0);
      EXPECT_LE(*bound, full->total_peak) << "rank " << r;
    }
  }
}

TEST(MemoryEstimateTest, InvalidOptionsAreTheCreateErrors) {
  GptTrainOptions o;
  o.model = testing::TinyGpt();
  o.grid = {1, 3, 1};  // heads not divisible by tp
  absl::StatusOr<MemoryTracker::Snapshot> est = GptTrainer::EstimateMemory(o, 3, 0);
  EXPECT_EQ(est.status().code(), absl::StatusCode::kInvalidArgument) << est.status();
  o.grid = {2, 1, 1};
  est = GptTrainer::EstimateMemory(o, 3, 0);  // 2 x 1 x 1 != 3
  EXPECT_EQ(est.status().code(), absl::StatusCode::kInvalidArgument) << est.status();
  EXPECT_NE(est.status().message().find("3"), std::string::npos) << est.status();
}

}  // namespace
}  // namespace trireme
