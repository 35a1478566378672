// The runtime base in one minute: 4 ranks as threads on a dp=2 x tp=2 grid run
// the collectives the ZeRO engine is built from, on buffers allocated through
// each rank's memory tracker, check the results, and print what every rank
// held and moved. (It becomes //:train when the training binary exists.)
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "runtime/grid/grid.h"

ABSL_FLAG(int, world, 4, "ranks (threads)");
ABSL_FLAG(int, tp, 2, "tensor-parallel degree; dp = world / tp");
ABSL_FLAG(int64_t, params, 1 << 20, "elements in the simulated flat parameter space");

namespace trireme {
namespace {

struct RankReport {
  GridCoord coord;
  MemoryTracker::Snapshot memory;
  CommStats world, dp, tp;
};

// One "step" of the ZeRO-3 data path for a flat space of `n` elements:
// gather the parameter shards over DP, reduce-scatter gradients back into the
// shard, then an all-reduce over TP (a row-parallel layer's output).
absl::Status RankMain(Communicator& world, int tp, int64_t n, RankReport* report) {
  ASSIGN_OR_RETURN(auto grid, ParallelGrid::Create({-1, tp, 1}, world));
  Communicator& dp = grid->dp_group();
  MemoryTracker mem(absl::StrCat("rank ", world.rank(), " (dp ", grid->coord().dp, ", tp ",
                                 grid->coord().tp, ")"));
  const int64_t padded = (n + dp.size() - 1) / dp.size() * dp.size();
  const int64_t shard = padded / dp.size();
  const Device cpu = Device::Cpu();
  ASSIGN_OR_RETURN(Buffer master, Buffer::Allocate(cpu, shard * 4, MemCategory::kMaster, &mem));
  ASSIGN_OR_RETURN(Buffer full, Buffer::Allocate(cpu, padded * 4, MemCategory::kComm, &mem));
  ASSIGN_OR_RETURN(Buffer grad, Buffer::Allocate(cpu, padded * 4, MemCategory::kGrad, &mem));
  ASSIGN_OR_RETURN(Buffer gshard, Buffer::Allocate(cpu, shard * 4, MemCategory::kGrad, &mem));
  float* m = master.as<float>();
  for (int64_t i = 0; i < shard; ++i) m[i] = static_cast<float>(dp.rank() * shard + i);

  // Gather the full parameters from the DP shards.
  RETURN_IF_ERROR(dp.AllGather({m, shard, DType::kF32}, {full.data(), padded, DType::kF32}));
  for (int64_t i = 0; i < padded; ++i) {
    if (full.as<float>()[i] != static_cast<float>(i)) {
      return absl::InternalError(absl::StrCat("gathered element ", i, " is wrong"));
    }
  }
  full.Reset();  // release after use, as stage 3 does
  // Gradients: every DP rank contributes (rank + 1); the shard gets their mean.
  for (int64_t i = 0; i < padded; ++i) grad.as<float>()[i] = static_cast<float>(dp.rank() + 1);
  RETURN_IF_ERROR(dp.ReduceScatter({grad.data(), padded, DType::kF32},
                                   {gshard.data(), shard, DType::kF32}, ReduceOp::kAvg));
  const float want = (dp.size() + 1) / 2.0f;
  if (gshard.as<float>()[0] != want) {
    return absl::InternalError(
        absl::StrCat("reduced gradient ", gshard.as<float>()[0], ", expected ", want));
  }
  // A row-parallel output summed over TP.
  ASSIGN_OR_RETURN(Buffer act, Buffer::Allocate(cpu, 4096 * 4, MemCategory::kActivation, &mem));
  for (int i = 0; i < 4096; ++i) act.as<float>()[i] = static_cast<float>(grid->coord().tp);
  RETURN_IF_ERROR(grid->tp_group().AllReduce({act.data(), 4096, DType::kF32},
                                             {act.data(), 4096, DType::kF32}, ReduceOp::kSum));
  RETURN_IF_ERROR(world.Barrier());

  report->coord = grid->coord();
  report->memory = mem.snapshot();
  report->world = world.stats();
  report->dp = dp.stats();
  report->tp = grid->tp_group().stats();
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int world = absl::GetFlag(FLAGS_world);
  const int tp = absl::GetFlag(FLAGS_tp);
  const int64_t n = absl::GetFlag(FLAGS_params);
  if (world < 1 || tp < 1 || n < 1) {
    fprintf(stderr, "demo: --world (%d), --tp (%d) and --params (%lld) must be >= 1\n", world, tp,
            static_cast<long long>(n));
    return 2;
  }
  printf("Trireme demo: %d ranks as threads, tp=%d, a flat space of %lld fp32 parameters\n", world,
         tp, static_cast<long long>(n));
  std::vector<trireme::RankReport> reports(world);
  const absl::Time start = absl::Now();
  absl::Status s = trireme::RunOnRanks(world, [&](trireme::Communicator& c) {
    return trireme::RankMain(c, tp, n, &reports[c.rank()]);
  });
  if (!s.ok()) {
    fprintf(stderr, "demo failed: %s\n", s.ToString().c_str());
    return 1;
  }
  using trireme::FormatBytes;
  printf("\nPeak memory per rank and category (MemoryTracker)\n%-5s %-9s", "rank", "dp,tp");
  for (int c = 0; c < trireme::kNumMemCategories; ++c) {
    printf(" %11s", trireme::MemCategoryName(static_cast<trireme::MemCategory>(c)));
  }
  printf(" %11s\n", "total");
  for (int r = 0; r < world; ++r) {
    const auto& m = reports[r].memory;
    printf("%-5d %-9s", r, absl::StrCat(reports[r].coord.dp, ",", reports[r].coord.tp).c_str());
    for (int c = 0; c < trireme::kNumMemCategories; ++c)
      printf(" %11s", FormatBytes(m.peak[c]).c_str());
    printf(" %11s\n", FormatBytes(m.total_peak).c_str());
  }
  printf("\nCommunication per rank (bytes sent / received, ring accounting)\n");
  printf("%-5s %-6s %-14s %6s %12s %12s\n", "rank", "group", "op", "calls", "sent", "received");
  for (int r = 0; r < world; ++r) {
    const std::pair<const char*, const trireme::CommStats*> groups[] = {
        {"world", &reports[r].world}, {"dp", &reports[r].dp}, {"tp", &reports[r].tp}};
    for (const auto& [name, st] : groups) {
      for (int o = 0; o < trireme::kNumCommOps; ++o) {
        const auto& op = st->ops[o];
        if (op.calls == 0) continue;
        printf("%-5d %-6s %-14s %6lld %12s %12s\n", r, name,
               trireme::CommOpName(static_cast<trireme::CommOp>(o)),
               static_cast<long long>(op.calls), FormatBytes(op.bytes_sent).c_str(),
               FormatBytes(op.bytes_received).c_str());
      }
    }
  }
  printf(
      "\nall collectives checked against closed-form results on every rank "
      "(%.1f ms)\n",
      absl::ToDoubleMilliseconds(absl::Now() - start));
  return 0;
}
