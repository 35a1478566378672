// CUDA entry points for builds with --config=cuda (host API only; gcc compiles it).
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "runtime/core/cuda_status.h"
#include "runtime/core/device.h"
#include "runtime/core/internal/cuda_alloc.h"

namespace trireme {

bool BuiltWithCuda() { return true; }

absl::Status CudaDeviceAvailable() {
  int n = 0;
  absl::Status s = CudaToStatus(cudaGetDeviceCount(&n), "cudaGetDeviceCount", __FILE__, __LINE__);
  if (!s.ok()) {
    cudaGetLastError();  // clear the "no device" error, which is not sticky
    return s;
  }
  if (n == 0) return absl::UnavailableError("cudaGetDeviceCount found no CUDA device");
  return absl::OkStatus();
}

absl::StatusOr<int> CudaDeviceCount() {
  absl::Status s = CudaDeviceAvailable();
  if (absl::IsUnavailable(s)) return 0;
  if (!s.ok()) return s;
  int n = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&n));
  return n;
}

absl::StatusOr<CudaMemory> CudaMemoryInfo(int device) {
  CudaDeviceScope scope(device);
  RETURN_IF_ERROR(scope.status());
  size_t free = 0, total = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free, &total));
  return CudaMemory{static_cast<int64_t>(free), static_cast<int64_t>(total)};
}

namespace internal {

absl::StatusOr<void*> CudaAllocate(int index, int64_t bytes) {
  CudaDeviceScope scope(index);
  RETURN_IF_ERROR(scope.status());
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
  CudaDeviceScope scope(index);
  cudaFree(p);
}

}  // namespace internal
}  // namespace trireme
