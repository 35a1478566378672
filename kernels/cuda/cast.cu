#include "kernels/cast_body.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/launch.h"

namespace trireme::kernels {
namespace {

// Grid-stride loop over the shared per-element body.
__global__ void CastKernel(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    CastElement(in, in_dtype, out, out_dtype, i);
  }
}

}  // namespace

absl::Status CastCuda(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                      cudaStream_t stream) {
  if (!IsFloat(in_dtype) || !IsFloat(out_dtype) || n < 0) {
    return absl::InvalidArgumentError("CastCuda: float dtypes and n >= 0 only");
  }
  if (n == 0) return absl::OkStatus();
  CastKernel<<<GridFor(n), kThreadsPerBlock, 0, stream>>>(in, in_dtype, out, out_dtype, n);
  return LaunchStatus("CastKernel");
}

}  // namespace trireme::kernels
