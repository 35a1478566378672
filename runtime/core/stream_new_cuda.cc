// CUDA streams in builds with --config=cuda.
#include "runtime/core/cuda_stream.h"
#include "runtime/core/internal/cuda_stream_factory.h"

namespace trireme::internal {

absl::StatusOr<std::unique_ptr<Stream>> NewCudaStream(int index, std::string name) {
  auto s = CudaStream::Create(index, std::move(name));
  if (!s.ok()) return s.status();
  return std::unique_ptr<Stream>(std::move(*s));
}

}  // namespace trireme::internal
