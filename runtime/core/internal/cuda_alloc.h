// Private: the CUDA allocation hooks Buffer uses. Implemented by
// cuda_device.cc (--config=cuda) or cuda_device_none.cc.
#ifndef TRIREME_RUNTIME_CORE_INTERNAL_CUDA_ALLOC_H_
#define TRIREME_RUNTIME_CORE_INTERNAL_CUDA_ALLOC_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace trireme::internal {

absl::StatusOr<void*> CudaAllocate(int index, int64_t bytes);
void CudaFree(int index, void* p);

}  // namespace trireme::internal

#endif  // TRIREME_RUNTIME_CORE_INTERNAL_CUDA_ALLOC_H_
