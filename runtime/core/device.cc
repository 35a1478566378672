#include "runtime/core/device.h"

#include "absl/strings/str_cat.h"

namespace trireme {

std::string Device::ToString() const {
  switch (kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kMeta:
      return "meta";
    case DeviceKind::kCuda:
      return absl::StrCat("cuda:", index);
  }
  return "?";
}

}  // namespace trireme
