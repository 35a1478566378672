// Parity under mpirun -np 4: one rank per process, every stage, AdamW and SGD,
// against the single-rank reference. Exits non-zero if any rank fails.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "runtime/comm/mpi_comm.h"
#include "tests/runtime/zero/parity.h"

int main(int argc, char** argv) {
  using namespace trireme;
  if (absl::Status s = MpiRuntime::Init(&argc, &argv); !s.ok()) {
    fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  int failures = 0, cases = 0;
  {
    CommOptions co;
    co.timeout = absl::Seconds(60);
    auto world = MpiRuntime::World(co);
    if (!world.ok()) return 2;
    Communicator& c = **world;
    for (int stage = 0; stage <= 3; ++stage) {
      for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kSgd}) {
        EngineOptions o;
        o.stage = stage;
        o.optimizer.kind = kind;
        o.optimizer.weight_decay = 0.01f;
        o.lr.lr = kind == OptimizerKind::kAdamW ? 1e-2f : 0.3f;
        const testing::Expected want = testing::RunReference(o, c.size());
        // OpenMPI reduces in its own order (not the reference's rank order), so
        // results agree to rounding rather than bitwise.
        absl::Status s = testing::TrainAndCompare(c, o, want, /*rtol=*/2e-5);
        if (!s.ok()) {
          // The other ranks may be inside a collective: end the job now.
          fprintf(stderr, "FAILED on rank %d: %s\n", c.rank(), s.ToString().c_str());
          MpiRuntime::AbortJob(1);
        }
        int bad = 0, any = 0;
        MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        ++cases;
        if (c.rank() == 0) {
          printf("%-6s stage %d, %s, dp %d: %s\n", any ? "FAILED" : "OK", stage,
                 kind == OptimizerKind::kAdamW ? "adamw" : "sgd", c.size(),
                 any ? "mismatch (see stderr)" : "matches the reference every step");
        }
        failures += any ? 1 : 0;
      }
    }
    if (c.rank() == 0) printf("%d passed, %d failed\n", cases - failures, failures);
  }
  MpiRuntime::Finalize();
  return failures ? 1 : 0;
}
