// The nccl backend (--config=cuda): collectives on GPU memory, on the
// communicator's own CUDA stream, bootstrapped over a control communicator
// (normally mpi) that stays beside it.
//
// Creation. Rank 0 makes the unique id and broadcasts it over the control
// communicator together with its own status, so a rank 0 that cannot make an
// id fails every rank with its reason instead of stranding them (and one that
// dies leaves them with the control communicator's timeout). Every rank then
// initializes its NCCL communicator non-blocking and polls it against the
// control communicator's timeout; on expiry it is aborted (ncclCommAbort).
// The ranks then agree over the control communicator: if any rank failed,
// every rank aborts its communicator and returns an error naming the failed
// ranks. Split (the grid's DP, TP and PP groups) does the same with
// ncclCommSplit and splits the control communicator alongside.
//
// Operations. Each enqueues on the stream (a non-blocking communicator's
// enqueue is polled to completion first), records an event and polls it and
// ncclCommGetAsyncError against the op's deadline; on expiry the NCCL
// communicator is aborted so no kernel spins forever, and the op returns
// DeadlineExceeded. Point-to-point groups are one ncclGroupStart/End.
// With CommOptions::check_desync every op first compares its fingerprint
// across ranks over the control communicator; the flight recorder is the
// base class's, as for every backend.
//
// Arithmetic. bf16 and f16 reductions accumulate in f32, as the CPU backends
// do: the inputs are widened to f32 scratch, reduced by NCCL in f32 and
// rounded once. Averages are a sum divided by the group size (not NCCL's
// pre-multiplied average), as on the CPU. The order in which NCCL adds the
// ranks is its own, so results can differ from the threads backend in the
// last bit of f32 (not in the rounding of a 16-bit result, but for ties).
#ifndef TRIREME_RUNTIME_COMM_NCCL_COMM_H_
#define TRIREME_RUNTIME_COMM_NCCL_COMM_H_

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"

namespace trireme {

// Creates the NCCL communicator of `control`'s group on GPU `device`.
// Collective over `control`, which must outlive the result (it carries the
// desync checks and the splits' agreement). Unavailable when there is no GPU.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Communicator& control,
                                                                     int device,
                                                                     CommOptions options);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_NCCL_COMM_H_
