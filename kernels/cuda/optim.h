// CUDA launchers of the optimizer kernels (--config=cuda). Same element
// bodies as the CPU kernels (kernels/optim_body.h, compiled with
// --fmad=false), so results match the CPU kernels bit for bit. All buffers
// are device memory; every launcher enqueues on `stream` and does not block
// the host.
#ifndef TRIREME_KERNELS_CUDA_OPTIM_H_
#define TRIREME_KERNELS_CUDA_OPTIM_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/optim_body.h"
#include "runtime/core/dtype.h"

namespace trireme::kernels {

// p, g, m, v: n floats. out: n elements of out_dtype, or nullptr.
absl::Status AdamWCuda(const AdamWScalars& s, float* p, const float* g, float* m, float* v,
                       int64_t n, void* out, DType out_dtype, cudaStream_t stream);

absl::Status SgdCuda(const SgdScalars& s, float* p, const float* g, float* buf, int64_t n,
                     void* out, DType out_dtype, cudaStream_t stream);

// Doubles of scratch SumOfSquaresCuda needs for n elements.
int64_t SumOfSquaresScratch(int64_t n);
// *result = sum of x[i]^2 in double: 2048-element blocks (one per CUDA block),
// then the block sums in block order -- deterministic.
absl::Status SumOfSquaresCuda(const float* x, int64_t n, double* scratch, double* result,
                              cudaStream_t stream);

// x[i] *= scale; *not_finite is set to 1 if any result is inf or NaN (it is
// never cleared here: zero it before the first call of a step).
absl::Status UnscaleAndCheckFiniteCuda(float* x, int64_t n, float scale, int* not_finite,
                                       cudaStream_t stream);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_OPTIM_H_
