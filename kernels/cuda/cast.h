// CUDA launcher of the cast kernel (--config=cuda).
#ifndef TRIREME_KERNELS_CUDA_CAST_H_
#define TRIREME_KERNELS_CUDA_CAST_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/core/dtype.h"

namespace trireme::kernels {

// Device buffers of n elements; enqueued on `stream`, does not block the host.
// Same contract and arithmetic as CastCpu.
absl::Status CastCuda(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                      cudaStream_t stream);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_CAST_H_
