// The DP x TP x PP arrangement of the world.
//
// Rank order: tp varies fastest, then dp, then pp:
//   world_rank = (pp_rank * dp + dp_rank) * tp + tp_rank
// so a TP group is a run of consecutive ranks (the fastest links on a node),
// and a pipeline stage is a contiguous block of dp * tp ranks.
#ifndef TRIREME_RUNTIME_GRID_GRID_H_
#define TRIREME_RUNTIME_GRID_GRID_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/device.h"

namespace trireme {

struct GridDims {
  int dp = -1;  // -1: infer as world / (tp * pp)
  int tp = 1;
  int pp = 1;
};

struct GridCoord {
  int dp = 0;
  int tp = 0;
  int pp = 0;
};

// The pure arithmetic of a grid: validation and rank <-> coordinates.
class GridShape {
 public:
  // Validates `dims` against `world_size`: every degree >= 1 (dp may be -1),
  // and dp * tp * pp == world_size. Errors name every number, e.g.
  // "world size 6 is not divisible by tp (4) x pp (1)".
  static absl::StatusOr<GridShape> Create(GridDims dims, int world_size);

  int dp() const { return dp_; }
  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int world_size() const { return dp_ * tp_ * pp_; }

  GridCoord CoordOf(int world_rank) const;
  int RankOf(GridCoord c) const;
  // "dp=2 x tp=2 x pp=2 (world 8)"
  std::string ToString() const;

 private:
  GridShape(int dp, int tp, int pp) : dp_(dp), tp_(tp), pp_(pp) {}
  int dp_, tp_, pp_;
};

// A grid bound to a world communicator: this rank's coordinates and, for each
// of its DP, TP and PP groups, two communicators (built with Split, ordered by
// the group coordinate): a data communicator for tensors on the device
// (marked with SetDataDevice when a data device is given) and a control
// communicator for host values (norms, flags, losses, agreements). The world
// communicator is a control communicator. Not thread-safe: used from the
// rank's thread.
class ParallelGrid {
 public:
  // Collective over `world`: every rank must call it with the same dims.
  // `world` must outlive the grid. With `data_device`, the data
  // communicators accept only that device's memory. The data communicators
  // are split from `data_world` when given (the same ranks on another
  // backend, e.g. NCCL over an mpi world; it must outlive the grid), else
  // from `world`; a data device the backend cannot move is an error.
  static absl::StatusOr<std::unique_ptr<ParallelGrid>> Create(
      GridDims dims, Communicator& world, std::optional<Device> data_device = std::nullopt,
      Communicator* data_world = nullptr);
  // Rank `world_rank` of a grid that exists only on paper: every group is a
  // simulated communicator of the right size and rank (simulated_comm.h), so
  // a trainer can run on the meta device to account what this rank would
  // hold, without its peers. The grid owns its world.
  static absl::StatusOr<std::unique_ptr<ParallelGrid>> CreateSimulated(GridDims dims,
                                                                       int world_size,
                                                                       int world_rank);

  const GridShape& shape() const { return shape_; }
  const GridCoord& coord() const { return coord_; }
  Communicator& world() const { return world_; }
  // The world the data communicators were split from (`world` unless a
  // data world was given): for more data groups (pipeline channels, tied
  // embeddings).
  Communicator& data_world() const { return data_world_; }
  // Data communicators (tensors).
  Communicator& dp_group() const { return *dp_; }
  Communicator& tp_group() const { return *tp_; }
  Communicator& pp_group() const { return *pp_; }
  // Control communicators (host values) over the same ranks.
  Communicator& dp_control() const { return *dp_ctl_; }
  Communicator& tp_control() const { return *tp_ctl_; }
  Communicator& pp_control() const { return *pp_ctl_; }

 private:
  ParallelGrid(GridShape shape, GridCoord coord, Communicator& world, Communicator& data_world)
      : shape_(shape), coord_(coord), world_(world), data_world_(data_world) {}
  GridShape shape_;
  GridCoord coord_;
  Communicator& world_;
  Communicator& data_world_;
  std::unique_ptr<Communicator> dp_, tp_, pp_, dp_ctl_, tp_ctl_, pp_ctl_;
  std::unique_ptr<Communicator> owned_world_;  // simulated grids only
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_GRID_GRID_H_
