// Private: the CUDA stream NewStream hands out for cuda devices. Implemented
// by stream_new_cuda.cc (--config=cuda) or stream_new_none.cc.
#ifndef TRIREME_RUNTIME_CORE_INTERNAL_CUDA_STREAM_FACTORY_H_
#define TRIREME_RUNTIME_CORE_INTERNAL_CUDA_STREAM_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/core/stream.h"

namespace trireme::internal {

absl::StatusOr<std::unique_ptr<Stream>> NewCudaStream(int index, std::string name);

}  // namespace trireme::internal

#endif  // TRIREME_RUNTIME_CORE_INTERNAL_CUDA_STREAM_FACTORY_H_
