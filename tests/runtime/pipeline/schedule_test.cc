// The schedules as tables: order, matching sends and receives, no deadlock
// when simulated, and the bubble fraction against the closed forms.
#include "runtime/pipeline/schedule.h"

#include <map>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace trireme {
namespace {

std::string Table(const Schedule& s, int r) {
  std::vector<std::string> out;
  for (const Action& a : s.per_rank[r]) {
    if (a.type == ActionType::kForward) out.push_back(absl::StrCat("F", a.micro_batch));
    if (a.type == ActionType::kBackward) out.push_back(absl::StrCat("B", a.micro_batch));
  }
  return absl::StrJoin(out, " ");
}

TEST(Schedule, OneF1BTableIsTheTextbookOne) {
  auto s = BuildSchedule(ScheduleKind::k1F1B, 4, 8);
  ASSERT_TRUE(s.ok());
  // Warm-up of pp - r - 1 forwards, then one forward / one backward, then the rest.
  EXPECT_EQ(Table(*s, 0), "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(Table(*s, 3), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
  auto g = BuildSchedule(ScheduleKind::kGPipe, 2, 3);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(Table(*g, 1), "F0 F1 F2 B0 B1 B2");
  // Stage 0 of 2 sends activations to 1 and receives gradients from it.
  EXPECT_EQ(g->per_rank[0][1].ToString(), "SendAct(mb 0, chunk 0, to 1)");
  EXPECT_EQ(g->per_rank[1][0].ToString(), "RecvAct(mb 0, chunk 0, from 0)");
}

using Param = std::tuple<ScheduleKind, int, int, int>;  // kind, pp, m, v
class ScheduleTableTest : public ::testing::TestWithParam<Param> {};

TEST_P(ScheduleTableTest, ValidDeadlockFreeAndBubbleMatchesFormula) {
  const auto [kind, pp, m, v] = GetParam();
  auto s = BuildSchedule(kind, pp, m, v);
  ASSERT_TRUE(s.ok()) << s.status();
  for (int r = 0; r < pp; ++r) {
    // Every (mb, chunk) is forwarded once and backwarded once, forward first.
    std::map<std::pair<int, int>, int> seen;  // -> 1 after F, 2 after B
    for (const Action& a : s->per_rank[r]) {
      auto& st = seen[{a.micro_batch, a.chunk}];
      if (a.type == ActionType::kForward) {
        EXPECT_EQ(st, 0) << "rank " << r << " " << a.ToString();
        st = 1;
      } else if (a.type == ActionType::kBackward) {
        EXPECT_EQ(st, 1) << "rank " << r << " " << a.ToString();
        st = 2;
      }
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(m * v));
    for (const auto& [k, st] : seen) EXPECT_EQ(st, 2);
  }
  // Equal and unequal forward / backward costs.
  for (double tb : {1.0, 2.0}) {
    auto sim = Simulate(*s, 1.0, tb);
    ASSERT_TRUE(sim.ok()) << sim.status();
    const double want = static_cast<double>(pp - 1) / (v * m + pp - 1);
    EXPECT_NEAR(sim->bubble_fraction, want, 1e-12)
        << ScheduleName(kind) << " pp " << pp << " m " << m << " v " << v << " t_b " << tb;
  }
}

INSTANTIATE_TEST_SUITE_P(Plain, ScheduleTableTest,
                         ::testing::Combine(::testing::Values(ScheduleKind::kGPipe,
                                                              ScheduleKind::k1F1B),
                                            ::testing::Values(1, 2, 3, 4),
                                            ::testing::Values(1, 2, 3, 8), ::testing::Values(1)));
INSTANTIATE_TEST_SUITE_P(Interleaved, ScheduleTableTest,
                         ::testing::Combine(::testing::Values(ScheduleKind::kInterleaved1F1B),
                                            ::testing::Values(2, 4), ::testing::Values(4, 8),
                                            ::testing::Values(1, 2, 3)));

TEST(Schedule, SimulatorCatchesBrokenTables) {
  auto s = BuildSchedule(ScheduleKind::k1F1B, 2, 2);
  ASSERT_TRUE(s.ok());
  Schedule swapped = *s;  // rank 1 receives mb 1 before mb 0
  std::swap(swapped.per_rank[1][0], swapped.per_rank[1][4]);
  auto r = Simulate(swapped);
  EXPECT_FALSE(r.ok());
  Schedule deadlock = *s;  // rank 0 waits for a gradient before sending anything
  deadlock.per_rank[0].insert(deadlock.per_rank[0].begin(), {ActionType::kRecvGrad, 0, 0, 1});
  r = Simulate(deadlock);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("deadlock"), std::string::npos) << r.status();
  Schedule early = *s;  // a backward before its forward
  early.per_rank[1].insert(early.per_rank[1].begin(), {ActionType::kBackward, 1, 0, -1});
  r = Simulate(early);
  EXPECT_NE(r.status().message().find("backward before the forward"), std::string::npos);
}

// Every schedule is deadlock-free under rendezvous sends (NCCL's semantics)
// once the executor groups the sends and receives between two computes:
// pp 1-4, m in {1, pp, 2 pp + 1} (and 2 pp, for interleaving), with and
// without virtual stages. Each still moves every message to the right place.
TEST(Schedule, GroupedPlansAreRendezvousSafe) {
  int checked = 0;
  for (ScheduleKind kind :
       {ScheduleKind::kGPipe, ScheduleKind::k1F1B, ScheduleKind::kInterleaved1F1B}) {
    for (int pp = 1; pp <= 4; ++pp) {
      for (int m : {1, pp, 2 * pp, 2 * pp + 1}) {
        for (int v : {1, 2, 3}) {
          auto s = BuildSchedule(kind, pp, m, v);
          if (!s.ok()) continue;  // v > 1 needs interleaving; interleaving needs pp | m
          SimulationOptions o;
          o.mode = P2PMode::kRendezvous;
          o.policy = P2PPolicyFor(kind);
          auto sim = Simulate(*s, o);
          ASSERT_TRUE(sim.ok()) << ScheduleName(kind) << " pp " << pp << " m " << m << " v " << v
                                << ": " << sim.status();
          // Deferred sends cost nothing with free communication: the bubble
          // is the schedule's, as with eager sends.
          const double want = static_cast<double>(pp - 1) / (v * m + pp - 1);
          if (kind != ScheduleKind::kInterleaved1F1B) {
            EXPECT_NEAR(sim->bubble_fraction, want, 1e-12)
                << ScheduleName(kind) << " pp " << pp << " m " << m;
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_GE(checked, 40);
}

// The same lists run one action at a time -- the eager-only order -- deadlock
// under rendezvous as soon as two neighbours both send first (1F1B, pp 2, two
// micro-batches: rank 0 sends micro-batch 1's activation while rank 1 sends
// micro-batch 0's gradient), and the simulator says so.
TEST(Schedule, UngroupedPlanDeadlocksUnderRendezvous) {
  auto s = BuildSchedule(ScheduleKind::k1F1B, 2, 2);
  ASSERT_TRUE(s.ok());
  SimulationOptions o;
  o.mode = P2PMode::kRendezvous;
  o.policy.grouped = false;
  o.policy.deferred_sends = false;
  auto sim = Simulate(*s, o);
  ASSERT_FALSE(sim.ok());
  EXPECT_NE(sim.status().message().find("deadlock (rendezvous sends)"), std::string::npos)
      << sim.status();
  o.mode = P2PMode::kEager;  // the same order completes with eager sends
  EXPECT_TRUE(Simulate(*s, o).ok());
}

TEST(Schedule, PlanGroupsTheSendsAndReceivesBetweenComputes) {
  auto s = BuildSchedule(ScheduleKind::k1F1B, 2, 2);
  ASSERT_TRUE(s.ok());
  // Rank 0: F0 {SendAct0} F1 {SendAct1, RecvGrad0} B0 {RecvGrad1} B1.
  const std::vector<ExecStep> plan = PlanSteps(s->per_rank[0]);
  ASSERT_EQ(plan.size(), 7u);
  EXPECT_FALSE(plan[2].group);
  ASSERT_TRUE(plan[3].group);
  ASSERT_EQ(plan[3].actions.size(), 2u);
  EXPECT_EQ(plan[3].actions[0].type, ActionType::kSendActivation);
  EXPECT_EQ(plan[3].actions[1].type, ActionType::kRecvGrad);
  P2PPolicy ungrouped;
  ungrouped.grouped = false;
  EXPECT_EQ(PlanSteps(s->per_rank[0], ungrouped).size(), s->per_rank[0].size());
}

TEST(Schedule, InvalidArgumentsNameTheNumbers) {
  auto s = BuildSchedule(ScheduleKind::kInterleaved1F1B, 4, 6, 2);
  EXPECT_NE(s.status().message().find("micro_batches (6) divisible by pp (4)"), std::string::npos);
  s = BuildSchedule(ScheduleKind::k1F1B, 2, 4, 2);
  EXPECT_NE(s.status().message().find("virtual_stages (2)"), std::string::npos);
  s = BuildSchedule(ScheduleKind::kGPipe, 0, 4);
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(ParseSchedule("zb-v").ok());
}

}  // namespace
}  // namespace trireme
