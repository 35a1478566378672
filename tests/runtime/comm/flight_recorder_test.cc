// The flight recorder: a rank that skips a collective makes the others time
// out; every rank dumps its ring automatically, and the analysis names the
// group, the sequence number, the call, who issued it and what the missing
// rank did last. A desync (different counts) dumped on request is reported as
// ranks calling different collectives.
#include "runtime/comm/flight_recorder.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tools/flight_analysis.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string FreshDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(base ? base : "/tmp") + "/" + name;
  std::filesystem::remove_all(dir);
  setenv("TRIREME_FLIGHT_DIR", dir.c_str(), 1);
  return dir;
}

TEST(FlightRecorderTest, NamesTheRankThatNeverCalled) {
  const std::string dir = FreshDir("skip");
  CommOptions o;
  o.timeout = absl::Milliseconds(500);
  absl::Status s = RunOnRanks(
      4,
      [](Communicator& world) -> absl::Status {
        ASSIGN_OR_RETURN(auto dp, world.Split(world.rank() % 2, world.rank(), "dp"));
        std::vector<float> x(4, 1.0f);
        const int calls = world.rank() == 3 ? 3 : 4;  // world rank 3 skips one
        for (int i = 0; i < calls; ++i) {
          RETURN_IF_ERROR(dp->AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum));
        }
        return world.Barrier();
      },
      o);
  ASSERT_FALSE(s.ok());
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(std::filesystem::exists(FlightDumpPath(r))) << "no dump of rank " << r;
  }
  auto report = AnalyzeFlightDumps(dir);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(*report, HasSubstr("group 'world/dp#1' seq 3: AllReduce(f32, count 4, sum) was "
                                 "issued by ranks 0 (world 1) but never by ranks 1 (world 3): "
                                 "last called seq 2 AllReduce(f32, count 4, sum) (done)"))
      << *report;
  EXPECT_THAT(*report, HasSubstr("Barrier")) << *report;  // the world barrier rank 1 never reached
  EXPECT_THAT(*report, Not(HasSubstr("world/dp#0"))) << *report;  // that group was fine
}

TEST(FlightRecorderTest, DesyncDumpedOnRequest) {
  const std::string dir = FreshDir("desync");
  absl::Status s = RunOnRanks(3, [](Communicator& c) -> absl::Status {
    std::vector<float> x(c.rank() == 1 ? 5 : 4, 1.0f);
    absl::Status st = c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
    RETURN_IF_ERROR(c.DumpFlightRecord("test"));
    return st.ok() ? absl::InternalError("the desync was not detected") : absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  auto report = AnalyzeFlightDumps(dir);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(*report, HasSubstr("group 'world' seq 0: ranks called different collectives: "
                                 "AllReduce(f32, count 4, sum) on ranks 0 (world 0), 2 (world 2); "
                                 "AllReduce(f32, count 5, sum) on ranks 1 (world 1)"))
      << *report;
}

TEST(FlightRecorderTest, DumpRoundTripsAndRingKeepsTheNewest) {
  FlightRecorder rec(7, 3);
  for (int i = 0; i < 5; ++i) {
    FlightEntry e;
    e.group = "world";
    e.group_size = 2;
    e.fp.op = CommOp::kBroadcast;
    e.fp.seq = i;
    e.fp.root = 1;
    const uint64_t id = rec.Add(e);
    rec.Start(id);
    if (i != 4) rec.Finish(id, absl::OkStatus());
  }
  const std::string path = FreshDir("ring") + "/flight-rank-00007.txt";
  ASSERT_TRUE(rec.Dump(path, "test").ok());
  auto back = ReadFlightDump(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 3u);
  EXPECT_EQ((*back)[0].fp.seq, 2u);
  EXPECT_EQ((*back)[2].state, FlightEntry::State::kStarted);
  EXPECT_EQ((*back)[1].world_rank, 7);
  EXPECT_EQ((*back)[1].fp.op, CommOp::kBroadcast);
}

}  // namespace
}  // namespace trireme
