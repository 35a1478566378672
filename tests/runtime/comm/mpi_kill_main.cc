// A job in which one rank is killed (SIGKILL) in the middle of a collective.
// mpi_kill_test.sh checks that the job ends promptly, non-zero, naming the rank.
#include <csignal>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/comm/mpi_comm.h"

int main(int argc, char** argv) {
  using namespace trireme;
  if (absl::Status s = MpiRuntime::Init(&argc, &argv); !s.ok()) return 2;
  CommOptions o;
  o.timeout = absl::Seconds(10);
  auto world = MpiRuntime::World(o);
  if (!world.ok()) return 2;
  Communicator& c = **world;
  std::vector<float> x(1 << 16, 1.0f);
  for (int step = 0; step < 1000; ++step) {
    if (step == 5 && c.rank() == 2) raise(SIGKILL);  // dies mid-job
    absl::Status s = c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kAvg);
    if (!s.ok()) {
      fprintf(stderr, "rank %d: step %d: %s\n", c.rank(), step, s.ToString().c_str());
      MpiRuntime::AbortJob(3);
    }
  }
  printf("rank %d finished without noticing the dead rank\n", c.rank());
  world->reset();
  MpiRuntime::Finalize();
  return 0;
}
