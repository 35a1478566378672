// The nccl backend (--config=cuda): collectives on GPU memory, on the
// communicator's own CUDA stream.
//
// Buffers are device pointers on the rank's GPU. Each backend operation
// enqueues the NCCL call on the stream, records an event and polls it (and
// ncclCommGetAsyncError) against the op's deadline; on expiry the NCCL
// communicator is aborted (ncclCommAbort) so no kernel spins forever, and the
// op returns DeadlineExceeded. NCCL reduces bf16/f16 in its own arithmetic.
#ifndef TRIREME_RUNTIME_COMM_NCCL_COMM_H_
#define TRIREME_RUNTIME_COMM_NCCL_COMM_H_

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"

namespace trireme {

// Creates the NCCL communicator of `bootstrap`'s group on GPU `device`:
// rank 0 makes the unique id and broadcasts it over `bootstrap` (any backend,
// normally mpi). Collective over `bootstrap`. Unavailable when there is no GPU.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    Communicator& bootstrap, int device, CommOptions options);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_NCCL_COMM_H_
