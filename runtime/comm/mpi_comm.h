// The mpi backend: one rank per process under mpirun (OpenMPI), multi-node on
// CPUs, and the bootstrap for NCCL.
//
// Each backend operation is a non-blocking MPI call completed by polling
// MPI_Test against the op's deadline, so a wait never hangs: on expiry it
// returns DeadlineExceeded (MPI cannot tell which ranks are missing; enable
// the desync check to compare calls). bf16/f16 reductions are widened to f32,
// reduced, and rounded once. With CommOptions::check_desync every collective
// first all-gathers the ranks' fingerprints.
//
// After a DeadlineExceeded the communicator refuses further work, and MPI
// cannot cancel the timed-out collective: it may still write the op's receive
// buffer if the missing rank arrives later. A job that sees a timeout should
// report it and end (MpiRuntime::AbortJob), as the binaries here do.
#ifndef TRIREME_RUNTIME_COMM_MPI_COMM_H_
#define TRIREME_RUNTIME_COMM_MPI_COMM_H_

#include <mpi.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"

namespace trireme {

// Process-wide MPI set-up. Thread-safe.
class MpiRuntime {
 public:
  // True when this process was started by mpirun (OpenMPI's environment).
  static bool LaunchedByMpirun();
  // Initializes MPI with MPI_THREAD_MULTIPLE (once; later calls are no-ops).
  // FailedPrecondition if the library cannot provide that thread level.
  static absl::Status Init(int* argc, char*** argv);
  // The world communicator (a duplicate of MPI_COMM_WORLD). REQUIRES: Init.
  static absl::StatusOr<std::unique_ptr<Communicator>> World(CommOptions options);
  // Wraps a duplicate of `comm` (the caller keeps ownership of `comm`).
  static absl::StatusOr<std::unique_ptr<Communicator>> Wrap(MPI_Comm comm, const std::string& name,
                                                            CommOptions options);
  // MPI_Finalize if initialized by Init. Call after every communicator is gone.
  static void Finalize();
  // Ends the whole job (MPI_Abort): for a rank that cannot go on and must not
  // leave the others waiting. Used by binaries, never by library code paths.
  static void AbortJob(int exit_code);
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_MPI_COMM_H_
