#include "runtime/comm/threads_comm.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/core/status.h"
#include "tests/runtime/comm/collective_suite.h"

namespace trireme {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

CommOptions Fast(double seconds) {
  CommOptions o;
  o.timeout = absl::Seconds(seconds);
  return o;
}

// ---- every collective, against closed-form values -------------------------

using SuiteParam = std::tuple<int, DType, int64_t>;

class CollectiveSuiteTest : public ::testing::TestWithParam<SuiteParam> {};

TEST_P(CollectiveSuiteTest, MatchesClosedForm) {
  const auto [world, dtype, count] = GetParam();
  absl::Status s = RunOnRanks(world, [&, dtype = dtype, count = count](Communicator& c) {
    return testing::CheckCollectives(c, dtype, count);
  });
  EXPECT_TRUE(s.ok()) << s;
}

INSTANTIATE_TEST_SUITE_P(Threads, CollectiveSuiteTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 8),
                                            ::testing::Values(DType::kF32, DType::kBF16),
                                            ::testing::Values(0, 1, 7, 1021, 1 << 20)),
                         [](const ::testing::TestParamInfo<SuiteParam>& info) {
                           return absl::StrCat("world", std::get<0>(info.param), "_",
                                               DTypeName(std::get<1>(info.param)), "_n",
                                               std::get<2>(info.param));
                         });

INSTANTIATE_TEST_SUITE_P(ThreadsF16, CollectiveSuiteTest,
                         ::testing::Combine(::testing::Values(2, 3), ::testing::Values(DType::kF16),
                                            ::testing::Values(0, 7, 1021)),
                         [](const ::testing::TestParamInfo<SuiteParam>& info) {
                           return absl::StrCat("world", std::get<0>(info.param), "_f16_n",
                                               std::get<2>(info.param));
                         });

TEST(ThreadsComm, IntegerAllReduce) {
  for (int world : {1, 2, 3, 8}) {
    absl::Status s =
        RunOnRanks(world, [](Communicator& c) { return testing::CheckIntegerAllReduce(c, 37); });
    EXPECT_TRUE(s.ok()) << "world " << world << ": " << s;
  }
}

TEST(ThreadsComm, TwoAsyncCollectivesInFlight) {
  absl::Status s =
      RunOnRanks(4, [](Communicator& c) { return testing::CheckTwoInFlight(c, 100003); });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ThreadsComm, ReductionIsBitwiseReproducible) {
  // Values whose f32 sum depends on the order of addition.
  std::vector<std::vector<float>> results(5);
  for (int trial = 0; trial < 5; ++trial) {
    ASSERT_TRUE(RunOnRanks(4, [&](Communicator& c) {
                  std::vector<float> x(4099);
                  for (size_t i = 0; i < x.size(); ++i) {
                    x[i] = (c.rank() % 2 ? 1e8f : 1.0f) / static_cast<float>(i + 1 + c.rank());
                  }
                  if (c.rank() == 3) std::this_thread::sleep_for(std::chrono::milliseconds(trial));
                  absl::Status s = c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
                  if (c.rank() == 0) results[trial] = x;
                  return s;
                }).ok());
  }
  for (int trial = 1; trial < 5; ++trial) {
    EXPECT_EQ(0, std::memcmp(results[0].data(), results[trial].data(),
                             results[0].size() * sizeof(float)));
  }
}

// ---- sub-groups ----------------------------------------------------------------

TEST(ThreadsComm, SplitFormsGroupsOrderedByKey) {
  absl::Status s = RunOnRanks(8, [](Communicator& c) -> absl::Status {
    // Even and odd ranks, ordered by descending world rank; rank 7 opts out.
    const int color = c.rank() == 7 ? -1 : c.rank() % 2;
    auto sub = c.Split(color, -c.rank(), "parity");
    if (!sub.ok()) return sub.status();
    if (c.rank() == 7) {
      if (*sub != nullptr) return absl::InternalError("rank 7 got a communicator");
      return c.Barrier();
    }
    Communicator& g = **sub;
    const std::vector<int> members =
        color == 0 ? std::vector<int>{6, 4, 2, 0} : std::vector<int>{5, 3, 1};
    if (g.size() != static_cast<int>(members.size()) || members[g.rank()] != c.rank() ||
        g.name() != "parity") {
      return absl::InternalError(
          absl::StrCat("rank ", c.rank(), " got group rank ", g.rank(), " of ", g.size()));
    }
    std::vector<int64_t> ranks(g.size()), mine{c.rank()};
    if (absl::Status st = g.AllGather(ViewOf(mine), ViewOf(ranks)); !st.ok()) return st;
    for (int j = 0; j < g.size(); ++j) {
      if (ranks[j] != members[j]) {
        return absl::InternalError(absl::StrCat("member ", j, " is world rank ", ranks[j]));
      }
    }
    // The parent still works while the child exists.
    return c.Barrier();
  });
  EXPECT_TRUE(s.ok()) << s;
}

// ---- failures ------------------------------------------------------------------

TEST(ThreadsComm, TimeoutNamesOpGroupSeqAndMissingRank) {
  absl::Status seen;
  absl::Status s = RunOnRanks(
      3,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 2) {
          std::this_thread::sleep_for(std::chrono::milliseconds(800));
          return absl::OkStatus();
        }
        std::vector<float> x(5, 1.0f);
        RETURN_IF_ERROR(c.Barrier());  // seq 0, rank 2 is absent
        return absl::OkStatus();
      },
      Fast(0.3));
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  EXPECT_THAT(
      std::string(s.message()),
      AllOf(HasSubstr("Barrier"), HasSubstr("seq 0"), HasSubstr("group 'world'"),
            HasSubstr("ranks not arrived: 2 (world rank 2)"), HasSubstr("timed out after 300ms")));
  // The process ran throughout: no claim that this rank was stopped.
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr("not running")));
}

// A process stopped (SIGSTOP) past the timeout, then continued: the waiting
// rank's timeout says it was not running, rather than blaming a peer. The
// stop comes from a child process, as a scheduler or a debugger would send
// it.
TEST(ThreadsComm, StoppedProcessSaysItWasNotRunning) {
  auto body = [&](Communicator& c) -> absl::Status {
    if (c.rank() == 1) {
      const std::string cmd = absl::StrCat("(sleep 0.3; kill -STOP ", getpid(),
                                           "; sleep 2.5; kill -CONT ", getpid(), ") &");
      if (std::system(cmd.c_str()) != 0) return absl::InternalError("cannot start the stopper");
      std::this_thread::sleep_for(std::chrono::seconds(4));  // arrives after the deadline
      return absl::OkStatus();
    }
    return c.Barrier();  // rank 1 never calls it
  };
  absl::Status s = RunOnRanks(2, body, Fast(1.5));
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("ranks not arrived: 1"),
                                              HasSubstr("this rank itself was not running for"),
                                              HasSubstr("did not time out on a peer")));
}

TEST(AgreeOnStatusTest, EveryRankReturnsTheFirstFailingRanksError) {
  std::vector<absl::Status> got(3);
  absl::Status s = RunOnRanks(3, [&](Communicator& c) -> absl::Status {
    absl::Status local;
    if (c.rank() >= 1) local = absl::DataLossError(absl::StrCat("disk of rank ", c.rank()));
    got[c.rank()] = AgreeOnStatus(c, local);
    return AgreeOnStatus(c, absl::OkStatus());  // all fine: OK everywhere
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got[0], absl::DataLossError("rank 1: disk of rank 1"));
  EXPECT_EQ(got[1], absl::DataLossError("disk of rank 1"));  // its own, unprefixed
  EXPECT_EQ(got[2], absl::DataLossError("rank 1: disk of rank 1"));
}

TEST(ThreadsComm, FailingRankAbortsBlockedRanksWithinOneSecond) {
  std::atomic<int> aborted{0};
  std::atomic<int64_t> worst_ms{0};
  absl::Status s = RunOnRanks(
      4,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 2) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          return absl::DataLossError("rank 2 lost its data");
        }
        std::vector<float> x(16, 1.0f);
        const absl::Time start = absl::Now();
        absl::Status st = c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
        const int64_t ms = absl::ToInt64Milliseconds(absl::Now() - start);
        int64_t prev = worst_ms.load();
        while (ms > prev && !worst_ms.compare_exchange_weak(prev, ms)) {
        }
        if (absl::IsAborted(st) && absl::StrContains(st.message(), "rank 2 failed")) ++aborted;
        return st;
      },
      Fast(60));
  EXPECT_EQ(aborted.load(), 3);
  EXPECT_LT(worst_ms.load(), 1100);  // 100 ms before the failure + < 1 s to notice
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank 2"));
}

TEST(ThreadsComm, AbortReachesSubGroups) {
  absl::Status s = RunOnRanks(
      4,
      [&](Communicator& c) -> absl::Status {
        ASSIGN_OR_RETURN(auto pair, c.Split(c.rank() / 2, c.rank(), "pair"));
        if (c.rank() == 0) return absl::InternalError("boom");
        // Ranks 2 and 3 are in the other pair, and rank 1 waits for rank 0.
        std::vector<float> x(3);
        RETURN_IF_ERROR(pair->AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum));
        return c.Barrier();
      },
      Fast(60));
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank 0"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("boom"));
}

TEST(ThreadsComm, ExceptionInOneRankIsReportedWithItsRank) {
  absl::Status s = RunOnRanks(
      3,
      [](Communicator& c) -> absl::Status {
        if (c.rank() == 1) throw std::runtime_error("bad thing");
        return c.Barrier();
      },
      Fast(60));
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("rank 1"), HasSubstr("bad thing")));
}

TEST(ThreadsComm, DesyncIsReportedOnEveryRankBeforeDataMoves) {
  std::vector<std::string> messages(3);
  RunOnRanks(
      3,
      [&](Communicator& c) -> absl::Status {
        std::vector<float> x(8, 1.0f), y(9, 1.0f), big(24, 7.0f);
        absl::Status st;
        if (c.rank() == 0) st = c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
        if (c.rank() == 1) st = c.AllGather(ViewOf(x), ViewOf(big));
        if (c.rank() == 2) st = c.AllReduce(ViewOf(y), ViewOf(y), ReduceOp::kSum);
        messages[c.rank()] = st.ToString();
        // No data moved: x still holds its ones.
        if (x[0] != 1.0f || big[0] != 7.0f) messages[c.rank()] += " DATA MOVED";
        return absl::OkStatus();
      },
      Fast(60))
      .IgnoreError();
  for (const std::string& m : messages) {
    EXPECT_THAT(m, AllOf(HasSubstr("FAILED_PRECONDITION"), HasSubstr("desync"),
                         HasSubstr("rank 0: AllReduce(f32, count 8, sum) seq 0"),
                         HasSubstr("rank 1: AllGather(f32, count 8) seq 0"),
                         HasSubstr("rank 2: AllReduce(f32, count 9, sum) seq 0")));
    EXPECT_THAT(m, ::testing::Not(HasSubstr("DATA MOVED")));
  }
}

TEST(ThreadsComm, BadLengthsAreInvalidArgumentAndConsumeNoSequenceNumber) {
  absl::Status s = RunOnRanks(2, [](Communicator& c) -> absl::Status {
    std::vector<float> a(4), b(7), one(1);
    absl::Status bad = c.AllGather(ViewOf(a), ViewOf(b));
    if (!absl::IsInvalidArgument(bad) ||
        !absl::StrContains(bad.message(), "recv count 7 must be size (2) x send count (4) = 8")) {
      return absl::InternalError(absl::StrCat("unexpected: ", bad.ToString()));
    }
    bad = c.ReduceScatter(ViewOf(b), ViewOf(a), ReduceOp::kSum);
    if (!absl::StrContains(bad.message(), "send count 7 must be size (2) x recv count (4) = 8")) {
      return absl::InternalError(absl::StrCat("unexpected: ", bad.ToString()));
    }
    bad = c.AllReduce(ViewOf(a), ViewOf(b), ReduceOp::kSum);
    if (!absl::StrContains(bad.message(), "send count 4 differs from recv count 7")) {
      return absl::InternalError(absl::StrCat("unexpected: ", bad.ToString()));
    }
    bad = c.Broadcast(ViewOf(a), 5);
    if (!absl::StrContains(bad.message(), "root 5 is not a rank of a group of size 2")) {
      return absl::InternalError(absl::StrCat("unexpected: ", bad.ToString()));
    }
    std::vector<uint8_t> bytes(4);
    bad = c.AllReduce(ViewOf(bytes), ViewOf(bytes), ReduceOp::kSum);
    if (!absl::IsInvalidArgument(bad)) return absl::InternalError(bad.ToString());
    // The group is still in step: a real collective works.
    one[0] = 1;
    RETURN_IF_ERROR(c.AllReduce(ViewOf(one), ViewOf(one), ReduceOp::kSum));
    return one[0] == 2 ? absl::OkStatus() : absl::InternalError("wrong sum");
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ThreadsComm, RecvOfWrongLengthNamesBothLengths) {
  absl::Status s = RunOnRanks(2, [](Communicator& c) -> absl::Status {
    std::vector<float> x(5), y(6);
    if (c.rank() == 0) return c.Send(ViewOf(x), 1);
    absl::Status st = c.Recv(ViewOf(y), 0);
    if (absl::IsInvalidArgument(st) && absl::StrContains(st.message(), "count 5") &&
        absl::StrContains(st.message(), "expects 6 elements")) {
      return absl::OkStatus();
    }
    return absl::InternalError(st.ToString());
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ThreadsComm, WorkWaitTimesOutWhileTheOpContinues) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        std::vector<float> x(3, 1.0f);
        if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        Work w = c.AllReduceAsync(ViewOf(x), ViewOf(x), ReduceOp::kSum);
        if (c.rank() == 0) {
          absl::Status early = w.Wait(absl::Milliseconds(20));
          if (!absl::IsDeadlineExceeded(early) || w.Test()) {
            return absl::InternalError(absl::StrCat("early wait: ", early.ToString()));
          }
        }
        RETURN_IF_ERROR(w.Wait());
        return x[0] == 2.0f ? absl::OkStatus() : absl::InternalError("wrong sum");
      },
      Fast(10));
  EXPECT_TRUE(s.ok()) << s;
}

TEST(CommOptions, EnvironmentOverridesAndRejectsGarbage) {
  setenv("TRIREME_COMM_TIMEOUT_S", "2.5", 1);
  setenv("TRIREME_DESYNC_CHECK", "true", 1);
  auto o = CommOptionsFromEnv();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->timeout, absl::Milliseconds(2500));
  EXPECT_TRUE(o->check_desync);
  setenv("TRIREME_COMM_TIMEOUT_S", "soon", 1);
  o = CommOptionsFromEnv();
  EXPECT_TRUE(absl::IsInvalidArgument(o.status()));
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("TRIREME_COMM_TIMEOUT_S='soon'"));
  unsetenv("TRIREME_COMM_TIMEOUT_S");
  setenv("TRIREME_DESYNC_CHECK", "maybe", 1);
  EXPECT_FALSE(CommOptionsFromEnv().ok());
  unsetenv("TRIREME_DESYNC_CHECK");
  setenv("TRIREME_FLIGHT_RECORDER", "64", 1);
  o = CommOptionsFromEnv();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->flight_recorder_entries, 64);
  setenv("TRIREME_FLIGHT_RECORDER", "-1", 1);
  o = CommOptionsFromEnv();
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("TRIREME_FLIGHT_RECORDER='-1'"));
  unsetenv("TRIREME_FLIGHT_RECORDER");
}

// One prefix per error: RunOnRanks names the failing rank, unless the error
// already names the rank it came from (an error the ranks agreed on).
TEST(RunOnRanksTest, ErrorsCarryOneRankPrefix) {
  absl::Status plain = RunOnRanks(3, [](Communicator& c) -> absl::Status {
    return c.rank() == 1 ? absl::InternalError("boom") : absl::OkStatus();
  });
  EXPECT_EQ(plain.message(), "rank 1: boom");
  absl::Status agreed = RunOnRanks(3, [](Communicator& c) -> absl::Status {
    return c.rank() == 2 ? absl::InternalError("rank 0: disk full") : absl::OkStatus();
  });
  EXPECT_EQ(agreed.message(), "rank 0: disk full");
}

}  // namespace
}  // namespace trireme
