// CUDA entry points for builds with --config=cuda (host API only; gcc compiles it).
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "runtime/core/cuda_status.h"
#include "runtime/core/device.h"
#include "runtime/core/internal/cuda_alloc.h"

namespace trireme {

bool BuiltWithCuda() { return true; }

absl::StatusOr<int> CudaDeviceCount() {
  int n = 0;
  absl::Status s = CudaToStatus(cudaGetDeviceCount(&n), "cudaGetDeviceCount",
                                __FILE__, __LINE__);
  if (absl::IsUnavailable(s)) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  if (!s.ok()) return s;
  return n;
}

namespace internal {

absl::StatusOr<void*> CudaAllocate(int index, int64_t bytes) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(index));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, static_cast<size_t>(bytes));
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaMalloc of ", bytes, " bytes on cuda:", index, " failed"));
  }
  CUDA_RETURN_IF_ERROR(err);
  return p;
}

void CudaFree(int index, void* p) {
  cudaSetDevice(index);
  cudaFree(p);
}

}  // namespace internal
}  // namespace trireme
