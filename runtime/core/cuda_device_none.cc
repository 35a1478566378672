// CUDA entry points for builds without --config=cuda.
#include <cstdlib>
#include <new>

#include "absl/strings/str_cat.h"
#include "runtime/core/device.h"
#include "runtime/core/internal/cuda_alloc.h"
#include "runtime/core/pinned.h"

namespace trireme {

bool BuiltWithCuda() { return false; }

absl::StatusOr<int> CudaDeviceCount() { return 0; }

absl::Status CudaDeviceAvailable() {
  return absl::UnavailableError("no CUDA device: this binary was built without --config=cuda");
}

absl::Status BindThreadToDevice(const Device& device) {
  if (device.kind != DeviceKind::kCuda) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("cannot use ", device.ToString(),
                                             ": this binary was built without --config=cuda"));
}

absl::StatusOr<CudaMemory> CudaMemoryInfo(int device) {
  return absl::UnavailableError(absl::StrCat("no memory information for cuda:", device,
                                             ": this binary was built without --config=cuda"));
}

void* AllocateStagingHost(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void FreeStagingHost(void* p) { std::free(p); }

namespace internal {

absl::StatusOr<void*> CudaAllocate(int index, int64_t bytes) {
  return absl::UnavailableError(absl::StrCat("cannot allocate ", bytes, " bytes on cuda:", index,
                                             ": this binary was built without --config=cuda"));
}

void CudaFree(int, void*) {}

}  // namespace internal
}  // namespace trireme
