// Builds without --config=cuda: no CUDA data mover.
#include "absl/strings/str_cat.h"
#include "runtime/comm/internal/data_mover.h"

namespace trireme::internal {

absl::StatusOr<std::unique_ptr<DataMover>> NewCudaDataMover(int device) {
  return absl::UnavailableError(absl::StrCat("a communicator on cuda:", device,
                                             ": this binary was built without --config=cuda"));
}

absl::StatusOr<Device> DeviceOfPointer(const void*) { return Device::Cpu(); }

}  // namespace trireme::internal
