// NewStream for builds without --config=cuda.
#include "absl/strings/str_cat.h"
#include "runtime/core/stream.h"

namespace trireme {

absl::StatusOr<std::unique_ptr<Stream>> NewStream(Device device, std::string name) {
  switch (device.kind) {
    case DeviceKind::kCpu:
    case DeviceKind::kMeta:
      return std::unique_ptr<Stream>(new InlineStream(std::move(name), device));
    case DeviceKind::kCpuAsync:
      return std::unique_ptr<Stream>(new CpuStream(std::move(name), device));
    case DeviceKind::kCuda:
      break;
  }
  return absl::UnavailableError(absl::StrCat("cannot create stream '", name, "' on ",
                                             device.ToString(),
                                             ": this binary was built without --config=cuda"));
}

}  // namespace trireme
