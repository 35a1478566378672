// The threads backend's reduction kernel on CUDA memory (--config=cuda).
#ifndef TRIREME_RUNTIME_COMM_CUDA_REDUCE_H_
#define TRIREME_RUNTIME_COMM_CUDA_REDUCE_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/comm/reduce_body.h"
#include "runtime/core/dtype.h"

namespace trireme {

// Most inputs one launch takes (they travel as a kernel argument).
inline constexpr int kMaxCudaReduceRanks = 64;

// out[0, end - begin) = the reduction of elements [begin, end) of the `n`
// device arrays ins[0..n) (a host array of device pointers), in rank order,
// with reduce_body.h's arithmetic; enqueued on `stream`. `out` may be one
// input's own range. InvalidArgument for n outside [1, kMaxCudaReduceRanks]
// or a dtype that is not f32, bf16, f16, i32 or i64.
absl::Status ReduceRanksCuda(DType dtype, ReduceOp op, const void* const* ins, int n, int64_t begin,
                             int64_t end, void* out, cudaStream_t stream);

// out[i] = FinishF32(in[i] as f32, op, ranks) rounded to out_dtype, for n
// elements of float dtypes: widens 16-bit inputs to f32 before a reduction
// (op kSum: the identity) and finishes one (kAvg divides by `ranks`, as the
// host loop does) and rounds it once. `out` may be `in` when the dtypes are
// the same size. Enqueued on `stream`.
absl::Status ConvertCuda(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                         ReduceOp op, int ranks, cudaStream_t stream);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_CUDA_REDUCE_H_
