// NewStream for builds with --config=cuda.
#include "runtime/core/cuda_stream.h"
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
  auto s = CudaStream::Create(device.index, std::move(name));
  if (!s.ok()) return s.status();
  return std::unique_ptr<Stream>(std::move(*s));
}

}  // namespace trireme
