#include "runtime/core/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace trireme {

std::string Device::ToString() const {
  switch (kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCpuAsync:
      return "cpu_async";
    case DeviceKind::kMeta:
      return "meta";
    case DeviceKind::kCuda:
      return absl::StrCat("cuda:", index);
  }
  return "?";
}

absl::StatusOr<Device> ParseDevice(absl::string_view text) {
  if (text == "cpu") return Device::Cpu();
  if (text == "cpu_async") return Device::CpuAsync();
  if (text == "meta") return Device::Meta();
  if (text == "cuda") return Device::Cuda(0);
  absl::string_view rest = text;
  int index = -1;
  if (absl::ConsumePrefix(&rest, "cuda:") && absl::SimpleAtoi(rest, &index) && index >= 0) {
    return Device::Cuda(index);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", text, "' (expected cpu, cpu_async, meta, cuda or cuda:N)"));
}

}  // namespace trireme
