// CUDA entry points for builds with --config=cuda (host API only; gcc compiles it).
#include <cuda_runtime.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "runtime/core/cuda_status.h"
#include "runtime/core/device.h"
#include "runtime/core/internal/cuda_alloc.h"
#include "runtime/core/pinned.h"

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

absl::Status BindThreadToDevice(const Device& device) {
  if (device.kind != DeviceKind::kCuda) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device.index));
  return absl::OkStatus();
}

absl::StatusOr<CudaMemory> CudaMemoryInfo(int device) {
  CudaDeviceScope scope(device);
  RETURN_IF_ERROR(scope.status());
  size_t free = 0, total = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free, &total));
  return CudaMemory{static_cast<int64_t>(free), static_cast<int64_t>(total)};
}

namespace {
// Pinned blocks, told apart from the fallback's aligned ones at free time.
std::mutex pinned_mu;
std::unordered_set<void*>* pinned_blocks = new std::unordered_set<void*>();
}  // namespace

void* AllocateStagingHost(size_t bytes) {
  if (bytes == 0) return nullptr;
  static const bool usable = CudaDeviceAvailable().ok();
  void* p = nullptr;
  if (usable && cudaHostAlloc(&p, bytes, cudaHostAllocPortable) == cudaSuccess) {
    std::lock_guard<std::mutex> lock(pinned_mu);
    pinned_blocks->insert(p);
    return p;
  }
  cudaGetLastError();  // a failed pinning is not an error: fall back
  p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void FreeStagingHost(void* p) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(pinned_mu);
    if (pinned_blocks->erase(p) == 0) {
      std::free(p);
      return;
    }
  }
  cudaFreeHost(p);
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
