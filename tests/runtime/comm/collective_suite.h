// Backend-independent checks of every collective against closed-form expected
// values (as nccl-tests does). Each function runs on one rank and returns the
// first mismatch as an error naming op, dtype, count, rank, index, got and
// expected. Used by the threads tests (ranks as threads) and the MPI tests
// (ranks as processes).
#ifndef TRIREME_TESTS_RUNTIME_COMM_COLLECTIVE_SUITE_H_
#define TRIREME_TESTS_RUNTIME_COMM_COLLECTIVE_SUITE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"

namespace trireme::testing {

// The value rank `r` contributes at element `i`: a small integer, so sums over
// up to 8 ranks are exact in f32, bf16 and f16.
float ValueAt(int r, int64_t i);

// All-gather, reduce-scatter (sum, avg), all-reduce (sum, avg, max; also in
// place), broadcast from every root, a send/recv ring, and the exact byte
// accounting of each, for `dtype` (f32, bf16, f16) and `count` elements per rank.
absl::Status CheckCollectives(Communicator& comm, DType dtype, int64_t count);

// All-reduce sum and max of i32 and i64 values.
absl::Status CheckIntegerAllReduce(Communicator& comm, int64_t count);

// Two asynchronous collectives in flight at once complete with correct results.
absl::Status CheckTwoInFlight(Communicator& comm, int64_t count);

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_RUNTIME_COMM_COLLECTIVE_SUITE_H_
