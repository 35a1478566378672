// CUDA streams in builds without --config=cuda: there are none.
#include "absl/strings/str_cat.h"
#include "runtime/core/internal/cuda_stream_factory.h"

namespace trireme::internal {

absl::StatusOr<std::unique_ptr<Stream>> NewCudaStream(int index, std::string name) {
  return absl::UnavailableError(absl::StrCat("cannot create stream '", name, "' on cuda:", index,
                                             ": this binary was built without --config=cuda"));
}

}  // namespace trireme::internal
