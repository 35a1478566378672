// GptTrainer::Evaluate: forward only on held-out batches. The validation loss
// agrees across grids and ZeRO stages (within the parity tolerance), and
// evaluating between steps changes nothing: the training losses that follow
// are bitwise those of a run without evaluation.
#include <mutex>
#include <vector>

#include "gtest/gtest.h"
#include "models/gpt_trainer.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/models/tiny_gpt.h"

namespace trireme {
namespace {

struct Result {
  std::vector<double> train, val;
};

absl::StatusOr<Result> TrainAndEval(int dp, int tp, int pp, int stage, bool evaluate, int v = 1) {
  Result out;
  std::mutex mu;
  absl::Status s = RunOnRanks(dp * tp * pp, [&](Communicator& c) -> absl::Status {
    GptTrainOptions o;
    o.engine.device = testing::TestDevice();
    o.model = testing::TinyGpt();
    o.grid = {dp, tp, pp};
    o.virtual_stages = v;
    if (v > 1) o.schedule = ScheduleKind::kInterleaved1F1B;
    o.engine.stage = stage;
    o.engine.lr.lr = 1e-2f;
    o.micro_batches = 4 / dp;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
    Result mine;
    for (int step = 1; step <= 4; ++step) {
      ASSIGN_OR_RETURN(GptStepResult r, t->Step(step));
      mine.train.push_back(r.loss);
      if (evaluate) {
        ASSIGN_OR_RETURN(double val, t->Evaluate(2));
        mine.val.push_back(val);
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    if (c.rank() == 0) out = mine;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

TEST(GptEvaluateTest, AgreesAcrossGridsAndChangesNothing) {
  auto ref = TrainAndEval(1, 1, 1, 0, true);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(ref->val.size(), 4u);
  EXPECT_LT(ref->val.back(), ref->val.front());  // the held-out loss falls too
  struct G {
    int dp, tp, pp, stage, v;
  };
  for (G g : {G{2, 2, 2, 3, 1}, G{2, 1, 2, 1, 1}, G{1, 2, 1, 0, 1}, G{1, 1, 2, 3, 2}}) {
    SCOPED_TRACE(::testing::Message() << "(" << g.dp << "," << g.tp << "," << g.pp << ") ZeRO-"
                                      << g.stage << " v=" << g.v);
    auto with = TrainAndEval(g.dp, g.tp, g.pp, g.stage, true, g.v);
    auto without = TrainAndEval(g.dp, g.tp, g.pp, g.stage, false, g.v);
    ASSERT_TRUE(with.ok()) << with.status();
    ASSERT_TRUE(without.ok()) << without.status();
    EXPECT_EQ(with->train, without->train);  // bitwise: evaluation changed nothing
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(with->val[i], ref->val[i], 1e-5 * ref->val[i]);
  }
}

}  // namespace
}  // namespace trireme
