// CheckSameConfig: equal configurations pass; one rank with a different value,
// an extra key or a missing key makes every rank fail with the same message
// naming the rank, the key and both values.
#include "runtime/comm/config_check.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

std::vector<absl::Status> Check(const std::function<ConfigEntries(int rank)>& config) {
  std::vector<absl::Status> got(4);
  absl::Status s = RunOnRanks(4, [&](Communicator& c) {
    got[c.rank()] = CheckSameConfig(c, config(c.rank()));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  return got;
}

TEST(ConfigCheckTest, SameConfigPasses) {
  for (const absl::Status& s : Check([](int) {
         return ConfigEntries{{"lr", "0.01"}, {"dp", "2"}};
       })) {
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST(ConfigCheckTest, ADifferentRankIsNamedOnEveryRank) {
  struct Case {
    std::function<ConfigEntries(int)> config;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](int r) {
         return ConfigEntries{{"lr", r == 2 ? "0.02" : "0.01"}, {"dp", "2"}};
       },
       "rank 2 has lr = 0.02 where rank 0 has lr = 0.01"},
      {[](int r) {
         ConfigEntries c{{"lr", "0.01"}};
         if (r == 3) c.push_back({"extra", "1"});
         return c;
       },
       "rank 3 has extra = 1 which rank 0 does not have"},
      {[](int r) {
         ConfigEntries c{{"lr", "0.01"}};
         if (r != 1) c.push_back({"seed", "7"});
         return c;
       },
       "rank 0 has seed = 7 which rank 1 does not have"},
  };
  for (const Case& k : cases) {
    const std::vector<absl::Status> got = Check(k.config);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(got[r].code(), absl::StatusCode::kFailedPrecondition) << r;
      EXPECT_THAT(std::string(got[r].message()), HasSubstr(k.message)) << r;
    }
  }
  EXPECT_NE(ConfigHash({{"a", "1"}}), ConfigHash({{"a", "2"}}));
}

}  // namespace
}  // namespace trireme
