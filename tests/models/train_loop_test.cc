// The training loop as a library (models/train_loop.h), as an embedder uses
// it: its own world and data, an observer for progress, a stop on request
// after the same step on every rank with a checkpoint that resumes, and the
// typed summary of every rank.
#include "models/train_loop.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/models/tiny_gpt.h"

namespace trireme {
namespace {

class Recorder : public TrainObserver {
 public:
  void OnStep(const StepReport& s) override { steps.push_back(s.step); }
  void OnCheckpoint(const std::string& dir, double) override { checkpoints.push_back(dir); }
  void OnStopped(int64_t step, const std::string&) override { stopped_after = step; }
  void OnResumed(const checkpoint::LoadResult& r, int64_t first, const std::string&) override {
    resumed_at = first;
  }
  std::vector<int64_t> steps;
  std::vector<std::string> checkpoints;
  int64_t stopped_after = -1, resumed_at = -1;
};

TrainLoopOptions Options(const std::string& dir) {
  TrainLoopOptions o;
  o.trainer.model = testing::TinyGpt();
  o.trainer.grid = {2, 1, 2};
  o.trainer.micro_batches = 2;
  o.trainer.engine.stage = 3;
  o.trainer.engine.keep_params_until_backward = false;
  o.trainer.engine.lr.lr = 1e-2f;
  o.steps = 6;
  o.eval_every = 3;
  o.eval_batches = 1;
  o.checkpoint_dir = dir;
  o.record = Json::Object({{"data", Json("GptBatch")}});
  return o;
}

absl::StatusOr<TrainSummary> RunJob(const TrainLoopOptions& o, Recorder* rec) {
  TrainSummary out;
  absl::Status s = RunOnRanks(4, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem;
    ASSIGN_OR_RETURN(TrainSummary sh, RunTraining(c, o, &mem, c.rank() == 0 ? rec : nullptr));
    if (c.rank() == 0) out = sh;
    return absl::OkStatus();
  });
  RETURN_IF_ERROR(s);
  return out;
}

TEST(TrainLoop, StopsEverywhereAfterTheSameStepAndResumes) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/loop";
  TrainLoopOptions o = Options(dir);
  std::atomic<int> polls{0};
  // One rank asks (the first to poll a 3rd time): every rank stops after step 3.
  std::atomic<int> askers{0};
  o.stop_requested = [&] {
    ++polls;
    return false;
  };
  Recorder full;
  absl::StatusOr<TrainSummary> whole = RunJob(o, &full);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(whole->stopped);
  EXPECT_EQ(full.steps, std::vector<int64_t>({1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(polls.load(), 6 * 4);  // every rank, every step
  ASSERT_EQ(whole->ranks.size(), 4u);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(whole->ranks[r].coord.dp, r % 2) << r;
    EXPECT_EQ(whole->ranks[r].coord.pp, r / 2) << r;
    EXPECT_GT(whole->ranks[r].memory.total_peak, 0);
    EXPECT_GT(whole->ranks[r].dp_sent, 0);
    EXPECT_GT(whole->ranks[r].activation_estimate, 0);
  }
  EXPECT_GE(whole->last_val, 0);
  EXPECT_EQ(whole->losses.size(), 6u);

  // A fresh root; a stop asked by one rank only.
  o = Options(dir + "2");
  thread_local int my_polls = 0;
  o.stop_requested = [&] { return ++my_polls == 3 && askers.fetch_add(1) == 0; };
  Recorder part;
  absl::StatusOr<TrainSummary> stopped = RunJob(o, &part);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_TRUE(stopped->stopped);
  EXPECT_EQ(part.stopped_after, 3);
  EXPECT_EQ(stopped->losses.size(), 3u);
  EXPECT_EQ(stopped->last_checkpoint, checkpoint::StepDir(dir + "2", 3));
  // Resuming reaches the uninterrupted run's losses.
  o.stop_requested = nullptr;
  o.resume = stopped->last_checkpoint;
  Recorder rest;
  absl::StatusOr<TrainSummary> resumed = RunJob(o, &rest);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(rest.resumed_at, 4);
  ASSERT_EQ(resumed->losses.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(resumed->losses[i], whole->losses[3 + i]) << i;
}

}  // namespace
}  // namespace trireme
