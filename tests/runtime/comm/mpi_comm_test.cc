// The collective suite on the mpi backend: one rank per process. Run under
// `mpirun -np 4` by mpi_comm_test.sh. Every rank runs every test; only rank 0
// prints gtest's report, and the exit code is non-zero if any rank failed.
#include "runtime/comm/mpi_comm.h"

#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/core/status.h"
#include "tests/runtime/comm/collective_suite.h"

namespace trireme {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

Communicator* g_world = nullptr;

using SuiteParam = std::tuple<DType, int64_t>;
class MpiCollectiveSuiteTest : public ::testing::TestWithParam<SuiteParam> {};

TEST_P(MpiCollectiveSuiteTest, MatchesClosedForm) {
  const auto [dtype, count] = GetParam();
  absl::Status s = testing::CheckCollectives(*g_world, dtype, count);
  EXPECT_TRUE(s.ok()) << s;
}

INSTANTIATE_TEST_SUITE_P(Mpi, MpiCollectiveSuiteTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16,
                                                              DType::kF16),
                                            ::testing::Values(0, 1, 7, 1021, 1 << 20)),
                         [](const ::testing::TestParamInfo<SuiteParam>& info) {
                           return absl::StrCat(DTypeName(std::get<0>(info.param)), "_n",
                                               std::get<1>(info.param));
                         });

TEST(MpiComm, IntegerAllReduce) {
  absl::Status s = testing::CheckIntegerAllReduce(*g_world, 37);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(MpiComm, TwoAsyncCollectivesInFlight) {
  absl::Status s = testing::CheckTwoInFlight(*g_world, 100003);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(MpiComm, SplitIntoPairs) {
  auto sub = g_world->Split(g_world->rank() / 2, -g_world->rank(), "pair");
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_NE(*sub, nullptr);
  EXPECT_EQ((*sub)->size(), 2);
  EXPECT_EQ((*sub)->rank(), 1 - g_world->rank() % 2);  // descending key
  absl::Status s = testing::CheckCollectives(**sub, DType::kF32, 33);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(MpiComm, DesyncCheckNamesEveryRanksCall) {
  CommOptions o;
  o.check_desync = true;
  o.timeout = absl::Seconds(20);
  auto comm = MpiRuntime::Wrap(MPI_COMM_WORLD, "checked", o);
  ASSERT_TRUE(comm.ok());
  Communicator& c = **comm;
  std::vector<float> x(c.rank() == 1 ? 9 : 8, 1.0f);
  absl::Status s = c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("desync on group 'checked'"),
                    HasSubstr("rank 0: AllReduce(f32, count 8, sum) seq 0"),
                    HasSubstr("rank 1: AllReduce(f32, count 9, sum) seq 0")));
  EXPECT_EQ(x[0], 1.0f);  // no data moved
}

TEST(MpiComm, TimeoutNamesOpGroupAndSeq) {
  CommOptions o;
  o.timeout = absl::Milliseconds(500);
  auto comm = MpiRuntime::Wrap(MPI_COMM_WORLD, "slow", o);
  ASSERT_TRUE(comm.ok());
  Communicator& c = **comm;
  if (c.rank() != c.size() - 1) {
    absl::Status s = c.Barrier();
    EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
    EXPECT_THAT(std::string(s.message()),
                AllOf(HasSubstr("Barrier"), HasSubstr("group 'slow'"), HasSubstr("seq 0"),
                      HasSubstr("timed out after 500ms")));
  }
  // Let the late rank arrive so nothing is left pending, then move on together.
  ASSERT_TRUE(g_world->Barrier().ok());
  if (c.rank() == c.size() - 1) {
    EXPECT_TRUE(c.Barrier().ok());
  }
  ASSERT_TRUE(g_world->Barrier().ok());
}

TEST(MpiComm, RecvOfWrongLengthIsInvalidArgument) {
  if (g_world->size() < 2 || g_world->rank() > 1) return;
  std::vector<float> x(5, 1.0f), y(6), z(4);
  if (g_world->rank() == 0) {
    ASSERT_TRUE(g_world->Send(ViewOf(x), 1).ok());
    ASSERT_TRUE(g_world->Send(ViewOf(x), 1).ok());
  } else {
    absl::Status s = g_world->Recv(ViewOf(y), 0);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("sent count 5"));
    s = g_world->Recv(ViewOf(z), 0);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  }
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (absl::Status s = trireme::MpiRuntime::Init(&argc, &argv); !s.ok()) {
    fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  int failed = 0;
  {
    trireme::CommOptions o;
    o.timeout = absl::Seconds(60);
    auto world = trireme::MpiRuntime::World(o);
    if (!world.ok()) {
      fprintf(stderr, "%s\n", world.status().ToString().c_str());
      return 2;
    }
    trireme::g_world = world->get();
    if ((*world)->rank() != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
    }
    int mine = RUN_ALL_TESTS() != 0 ? 1 : 0;
    MPI_Allreduce(&mine, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if ((*world)->rank() == 0) {
      printf("mpi_comm_test: %d of %d ranks failed\n", failed, (*world)->size());
    }
  }
  trireme::MpiRuntime::Finalize();
  return failed ? 1 : 0;
}
