#include "kernels/cuda/cast.h"

#include "absl/strings/str_cat.h"
#include "kernels/cast_body.h"

namespace trireme::kernels {
namespace {

// Grid-stride loop over the shared per-element body.
__global__ void CastKernel(const void* in, DType in_dtype, void* out, DType out_dtype,
                           int64_t n) {
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
  const int threads = 256;
  const int64_t wanted = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
  CastKernel<<<blocks, threads, 0, stream>>>(in, in_dtype, out, out_dtype, n);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("CastKernel launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace trireme::kernels
