// The element arithmetic of every reduction a communicator backend computes
// itself (the threads backend on host memory and on CUDA memory), shared by
// the CPU loop and the CUDA kernel: inputs combined in rank order 0, 1, ...,
// n-1, 16-bit floats widened to f32 and rounded once at the end. Header-only
// and __host__ __device__.
#ifndef TRIREME_RUNTIME_COMM_REDUCE_BODY_H_
#define TRIREME_RUNTIME_COMM_REDUCE_BODY_H_

#include <cstdint>

#include "runtime/core/half.h"

namespace trireme {

enum class ReduceOp : uint8_t { kSum = 0, kAvg = 1, kMax = 2 };

// acc combined with the next rank's v: a sum (kSum, kAvg), or a max through
// which a NaN passes (so a NaN anywhere is a NaN in the result).
TRIREME_HD float CombineF32(float acc, float v, ReduceOp op) {
  return op == ReduceOp::kMax ? ((v != v || v > acc) ? v : acc) : acc + v;
}

// The result after the last rank: the mean for kAvg.
TRIREME_HD float FinishF32(float acc, ReduceOp op, int ranks) {
  return op == ReduceOp::kAvg ? acc / static_cast<float>(ranks) : acc;
}

// Integers accumulate in int64 (kAvg is rejected for them by validation).
TRIREME_HD int64_t CombineI64(int64_t acc, int64_t v, ReduceOp op) {
  return op == ReduceOp::kMax ? (v > acc ? v : acc) : acc + v;
}

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_REDUCE_BODY_H_
