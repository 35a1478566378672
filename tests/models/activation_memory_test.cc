// Activation memory is predicted exactly: on every rank, the tracker's
// measured `activation` peak after two steps equals ActivationPeakEstimate()
// (shapes walked through the rank's schedule) -- for GPipe, 1F1B and
// interleaved schedules, tensor and sequence parallelism, a padded vocabulary
// and recomputed blocks.
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
};

TEST(ActivationMemoryTest, MeasuredPeakEqualsEstimateOnEveryRank) {
  const std::vector<Case> cases = {
      {1, 1, 1, 1, ScheduleKind::kGPipe, false, {}},
      {1, 1, 2, 1, ScheduleKind::kGPipe, false, {}},
      {1, 1, 2, 1, ScheduleKind::k1F1B, false, {}},
      {1, 1, 2, 2, ScheduleKind::kInterleaved1F1B, false, {}},
      {1, 2, 1, 1, ScheduleKind::k1F1B, true, {}},
      {2, 2, 2, 1, ScheduleKind::k1F1B, false, {true, false, true, false}},
      {1, 2, 2, 1, ScheduleKind::kGPipe, true, {false, true, true, true}},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(::testing::Message() << "(" << k.dp << "," << k.tp << "," << k.pp << ") v=" << k.v
                                      << " " << ScheduleName(k.schedule) << (k.sp ? " SP" : "")
                                      << " recompute " << k.recompute.size());
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> got(k.dp * k.tp * k.pp);
    absl::Status s = RunOnRanks(k.dp * k.tp * k.pp, [&](Communicator& c) -> absl::Status {
      GptTrainOptions o;
      o.engine.device = testing::TestDevice();
      o.model = testing::TinyGpt();
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

}  // namespace
}  // namespace trireme
