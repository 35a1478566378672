// The GPT at (dp, tp, pp) = (2, 2, 2) with ZeRO-3 and 1F1B under mpirun -np 8
// (one rank per process), on $TRIREME_TEST_DEVICE (cpu or cpu_async), against
// the (1, 1, 1) run computed in each process on a one-rank threads world:
// loss every step within 1e-5 relative.
#include <cmath>
#include <cstdio>
#include <vector>

#include "models/gpt_trainer.h"
#include "runtime/comm/mpi_comm.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/models/tiny_gpt.h"

namespace {

trireme::GptTrainOptions Options(int dp, int tp, int pp, int stage) {
  trireme::GptTrainOptions o;
  o.model = trireme::testing::TinyGpt(/*layers=*/2);
  o.grid = {dp, tp, pp};
  o.engine.stage = stage;
  o.engine.lr.lr = 1e-2f;
  o.engine.device = trireme::testing::TestDevice();
  o.schedule = trireme::ScheduleKind::k1F1B;
  o.micro_batches = 4 / dp;
  return o;
}

absl::StatusOr<std::vector<double>> Losses(trireme::Communicator& world,
                                           const trireme::GptTrainOptions& o, int steps) {
  trireme::MemoryTracker mem;
  ASSIGN_OR_RETURN(auto t, trireme::GptTrainer::Create(world, o, &mem));
  std::vector<double> out;
  for (int s = 1; s <= steps; ++s) {
    ASSIGN_OR_RETURN(trireme::GptStepResult r, t->Step(s));
    out.push_back(r.loss);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace trireme;
  if (absl::Status s = MpiRuntime::Init(&argc, &argv); !s.ok()) return 2;
  constexpr int kSteps = 10;
  int bad = 0;
  {
    CommOptions co;
    co.timeout = absl::Seconds(120);
    auto world = MpiRuntime::World(co);
    if (!world.ok()) return 2;
    std::vector<double> ref;
    absl::Status s = RunOnRanks(1, [&](Communicator& one) -> absl::Status {
      ASSIGN_OR_RETURN(ref, Losses(one, Options(1, 1, 1, 0), kSteps));
      return absl::OkStatus();
    });
    auto got = s.ok() ? Losses(**world, Options(2, 2, 2, 3), kSteps)
                      : absl::StatusOr<std::vector<double>>(s);
    if (!got.ok()) {
      fprintf(stderr, "rank %d: %s\n", (*world)->rank(), got.status().ToString().c_str());
      MpiRuntime::AbortJob(1);
    }
    for (int i = 0; i < kSteps; ++i) {
      if (std::abs((*got)[i] - ref[i]) > 1e-5 * ref[i]) ++bad;
      if ((*world)->rank() == 0) {
        printf("step %2d  loss %.6f  reference %.6f\n", i + 1, (*got)[i], ref[i]);
      }
    }
    if ((*world)->rank() == 0) printf("%d passed, %d failed\n", bad ? 0 : 1, bad ? 1 : 0);
  }
  MpiRuntime::Finalize();
  return bad ? 1 : 0;
}
