#include "runtime/grid/grid.h"

#include "absl/strings/str_cat.h"
#include "runtime/comm/simulated_comm.h"
#include "runtime/core/status.h"

namespace trireme {

absl::StatusOr<GridShape> GridShape::Create(GridDims d, int world_size) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world size ", world_size, " must be at least 1"));
  }
  if (d.tp < 1 || d.pp < 1 || d.dp == 0 || d.dp < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid degrees must be >= 1 (dp may be -1 to infer): got dp ", d.dp, ", tp ",
                     d.tp, ", pp ", d.pp));
  }
  const int64_t model = int64_t{d.tp} * d.pp;
  if (world_size % model != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world size ", world_size, " is not divisible by tp (", d.tp, ") x pp (", d.pp, ")"));
  }
  const int inferred = static_cast<int>(world_size / model);
  if (d.dp == -1) d.dp = inferred;
  if (int64_t{d.dp} * model != world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("dp (", d.dp, ") x tp (", d.tp, ") x pp (", d.pp, ") = ", d.dp * model,
                     " does not equal world size ", world_size, " (dp would be ", inferred, ")"));
  }
  return GridShape(d.dp, d.tp, d.pp);
}

GridCoord GridShape::CoordOf(int r) const {
  GridCoord c;
  c.tp = r % tp_;
  c.dp = (r / tp_) % dp_;
  c.pp = r / (tp_ * dp_);
  return c;
}

int GridShape::RankOf(GridCoord c) const { return (c.pp * dp_ + c.dp) * tp_ + c.tp; }

std::string GridShape::ToString() const {
  return absl::StrCat("dp=", dp_, " x tp=", tp_, " x pp=", pp_, " (world ", world_size(), ")");
}

absl::StatusOr<std::unique_ptr<ParallelGrid>> ParallelGrid::Create(
    GridDims dims, Communicator& world, std::optional<Device> data_device,
    Communicator* data_world) {
  ASSIGN_OR_RETURN(GridShape shape, GridShape::Create(dims, world.size()));
  Communicator& dw = data_world != nullptr ? *data_world : world;
  if (dw.size() != world.size() || dw.rank() != world.rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the data world '", dw.name(), "' (rank ", dw.rank(), " of ", dw.size(),
                     ") is not the world's ranks (rank ", world.rank(), " of ", world.size(), ")"));
  }
  if (data_device && !dw.moves_memory_of(*data_device)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ", dw.backend(), " backend cannot move tensors in ", data_device->ToString(),
        " memory: on GPUs use the threads backend (ranks as threads of one process) or, under "
        "mpirun, NCCL data communicators (--backend=nccl)"));
  }
  const GridCoord c = shape.CoordOf(world.rank());
  std::unique_ptr<ParallelGrid> g(new ParallelGrid(shape, c, world, dw));
  // Each group's color is the rank's position along the other two axes; the
  // key orders members by the group's own coordinate.
  const int tp_color = c.pp * shape.dp() + c.dp, dp_color = c.pp * shape.tp() + c.tp,
            pp_color = c.dp * shape.tp() + c.tp;
  ASSIGN_OR_RETURN(g->tp_, dw.Split(tp_color, c.tp, "tp"));
  ASSIGN_OR_RETURN(g->dp_, dw.Split(dp_color, c.dp, "dp"));
  ASSIGN_OR_RETURN(g->pp_, dw.Split(pp_color, c.pp, "pp"));
  ASSIGN_OR_RETURN(g->tp_ctl_, world.Split(tp_color, c.tp, "tp_ctl"));
  ASSIGN_OR_RETURN(g->dp_ctl_, world.Split(dp_color, c.dp, "dp_ctl"));
  ASSIGN_OR_RETURN(g->pp_ctl_, world.Split(pp_color, c.pp, "pp_ctl"));
  if (data_device) {
    for (Communicator* d : {g->tp_.get(), g->dp_.get(), g->pp_.get()})
      d->SetDataDevice(*data_device);
  }
  return g;
}

absl::StatusOr<std::unique_ptr<ParallelGrid>> ParallelGrid::CreateSimulated(GridDims dims,
                                                                            int world_size,
                                                                            int world_rank) {
  ASSIGN_OR_RETURN(GridShape shape, GridShape::Create(dims, world_size));
  if (world_rank < 0 || world_rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", world_rank, " is not in a world of ", world_size));
  }
  std::unique_ptr<Communicator> world =
      CreateSimulatedCommunicator(world_rank, world_size, "world");
  const GridCoord c = shape.CoordOf(world_rank);
  std::unique_ptr<ParallelGrid> g(new ParallelGrid(shape, c, *world, *world));
  g->owned_world_ = std::move(world);
  g->tp_ = CreateSimulatedCommunicator(c.tp, shape.tp(), "tp");
  g->dp_ = CreateSimulatedCommunicator(c.dp, shape.dp(), "dp");
  g->pp_ = CreateSimulatedCommunicator(c.pp, shape.pp(), "pp");
  g->tp_ctl_ = CreateSimulatedCommunicator(c.tp, shape.tp(), "tp_ctl");
  g->dp_ctl_ = CreateSimulatedCommunicator(c.dp, shape.dp(), "dp_ctl");
  g->pp_ctl_ = CreateSimulatedCommunicator(c.pp, shape.pp(), "pp_ctl");
  return g;
}

}  // namespace trireme
