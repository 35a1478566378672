#include "runtime/grid/grid.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/comm/simulated_comm.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

TEST(GridShape, RejectsInvalidGridsWithEveryNumber) {
  auto g = GridShape::Create({-1, 4, 1}, 6);
  EXPECT_TRUE(absl::IsInvalidArgument(g.status()));
  EXPECT_THAT(std::string(g.status().message()),
              HasSubstr("world size 6 is not divisible by tp (4) x pp (1)"));
  g = GridShape::Create({3, 2, 1}, 8);
  EXPECT_THAT(std::string(g.status().message()),
              HasSubstr("dp (3) x tp (2) x pp (1) = 6 does not equal world size 8"));
  g = GridShape::Create({2, 0, 1}, 8);
  EXPECT_THAT(std::string(g.status().message()), HasSubstr("tp 0"));
  g = GridShape::Create({2, 1, 1}, 0);
  EXPECT_FALSE(g.ok());
}

TEST(GridShape, RankOrderIsTpFastestThenDpThenPp) {
  auto g = GridShape::Create({2, 2, 2}, 8);
  ASSERT_TRUE(g.ok());
  // rank 5 = (pp 1, dp 0, tp 1)
  const GridCoord c = g->CoordOf(5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 0);
  EXPECT_EQ(c.pp, 1);
  EXPECT_EQ(g->RankOf({1, 0, 1}), 6);  // dp 1, tp 0, pp 1
  EXPECT_EQ(g->ToString(), "dp=2 x tp=2 x pp=2 (world 8)");
}

// Every factorization world = dp * tp * pp for world in {1, 2, 4, 6, 8}; each
// rank checks, through an all-gather of world ranks on each group, that its
// DP, TP and PP groups hold exactly the ranks the formula says, in order.
TEST(ParallelGrid, EveryFactorizationHasTheRightGroups) {
  for (int world : {1, 2, 4, 6, 8}) {
    for (int tp = 1; tp <= world; ++tp) {
      for (int pp = 1; pp <= world; ++pp) {
        if (world % (tp * pp) != 0) continue;
        const GridDims dims{-1, tp, pp};
        absl::Status s = RunOnRanks(world, [&](Communicator& comm) -> absl::Status {
          ASSIGN_OR_RETURN(auto grid, ParallelGrid::Create(dims, comm));
          const GridShape& sh = grid->shape();
          const GridCoord me = grid->coord();
          if (sh.RankOf(me) != comm.rank()) return absl::InternalError("coord mismatch");
          struct Axis {
            Communicator* group;
            int degree;
            int GridCoord::*field;
          };
          for (Axis a : {Axis{&grid->dp_group(), sh.dp(), &GridCoord::dp},
                         Axis{&grid->tp_group(), sh.tp(), &GridCoord::tp},
                         Axis{&grid->pp_group(), sh.pp(), &GridCoord::pp}}) {
            if (a.group->size() != a.degree || a.group->rank() != me.*a.field) {
              return absl::InternalError(
                  absl::StrCat(a.group->name(), " group: rank ", a.group->rank(), " of ",
                               a.group->size(), ", expected ", me.*a.field, " of ", a.degree));
            }
            std::vector<int64_t> mine{comm.rank()}, all(a.degree);
            RETURN_IF_ERROR(a.group->AllGather(ViewOf(mine), ViewOf(all)));
            for (int j = 0; j < a.degree; ++j) {
              GridCoord want = me;
              want.*a.field = j;
              if (all[j] != sh.RankOf(want)) {
                return absl::InternalError(absl::StrCat(a.group->name(), " member ", j,
                                                        " is world rank ", all[j], ", expected ",
                                                        sh.RankOf(want)));
              }
            }
          }
          return absl::OkStatus();
        });
        EXPECT_TRUE(s.ok()) << "world " << world << " tp " << tp << " pp " << pp << ": " << s;
      }
    }
  }
}

TEST(ParallelGrid, InvalidGridFailsOnEveryRank) {
  absl::Status s = RunOnRanks(6, [](Communicator& comm) -> absl::Status {
    auto g = ParallelGrid::Create({-1, 4, 1}, comm);
    if (g.ok()) return absl::InternalError("accepted an invalid grid");
    return absl::IsInvalidArgument(g.status()) ? absl::OkStatus() : g.status();
  });
  EXPECT_TRUE(s.ok()) << s;
}

// A data device the backend cannot move is refused before any split, naming
// the backend and the device (the simulated backend, like mpi, moves no GPU
// memory); the threads backend takes GPU memory (its CUDA data mover).
TEST(ParallelGrid, DataDeviceTheBackendCannotMoveIsRefused) {
  std::unique_ptr<Communicator> sim = CreateSimulatedCommunicator(0, 1, "world");
  auto g = ParallelGrid::Create({1, 1, 1}, *sim, Device::Cuda(0));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(g.status().message()), HasSubstr("cuda:0"));
  EXPECT_THAT(std::string(g.status().message()), HasSubstr("--backend=nccl"));
  // Marked by hand, the communicator refuses every op, naming its backend.
  sim->SetDataDevice(Device::Cuda(0));
  const absl::Status op = sim->AllReduce(MutView{nullptr, 4, DType::kF32},
                                         MutView{nullptr, 4, DType::kF32}, ReduceOp::kSum);
  EXPECT_EQ(op.code(), absl::StatusCode::kFailedPrecondition) << op;
  EXPECT_THAT(std::string(op.message()), HasSubstr("cannot move cuda:0 memory"));
  absl::Status s = RunOnRanks(2, [](Communicator& comm) -> absl::Status {
    if (!comm.moves_memory_of(Device::Cuda(0)) || !comm.moves_memory_of(Device::CpuAsync())) {
      return absl::InternalError("the threads backend should move host and GPU memory");
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

// A data world must be the world's ranks.
TEST(ParallelGrid, DataWorldOfOtherRanksIsRefused) {
  absl::Status s = RunOnRanks(2, [](Communicator& comm) -> absl::Status {
    std::unique_ptr<Communicator> other = CreateSimulatedCommunicator(0, 3, "other");
    auto g = ParallelGrid::Create({2, 1, 1}, comm, std::nullopt, other.get());
    if (g.ok()) return absl::InternalError("accepted a data world of 3 ranks for a world of 2");
    if (!absl::IsInvalidArgument(g.status()) ||
        std::string(g.status().message()).find("data world 'other'") == std::string::npos) {
      return g.status();
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace trireme
