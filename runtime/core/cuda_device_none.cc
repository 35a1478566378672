// CUDA entry points for builds without --config=cuda.
#include "absl/strings/str_cat.h"
#include "runtime/core/device.h"
#include "runtime/core/internal/cuda_alloc.h"

namespace trireme {

bool BuiltWithCuda() { return false; }

absl::StatusOr<int> CudaDeviceCount() { return 0; }

absl::Status CudaDeviceAvailable() {
  return absl::UnavailableError("no CUDA device: this binary was built without --config=cuda");
}

absl::StatusOr<CudaMemory> CudaMemoryInfo(int device) {
  return absl::UnavailableError(absl::StrCat(
      "no memory information for cuda:", device, ": this binary was built without --config=cuda"));
}

namespace internal {

absl::StatusOr<void*> CudaAllocate(int index, int64_t bytes) {
  return absl::UnavailableError(absl::StrCat(
      "cannot allocate ", bytes, " bytes on cuda:", index,
      ": this binary was built without --config=cuda"));
}

void CudaFree(int, void*) {}

}  // namespace internal
}  // namespace trireme
