// Devices: where a buffer lives.
//
//   cpu   host memory, 64-byte aligned.
//   cuda  GPU memory (only in builds with --config=cuda).
//   meta  allocates nothing but is accounted like a real device, so the runtime
//         can run "as if" on a cluster this machine cannot hold.
#ifndef TRIREME_RUNTIME_CORE_DEVICE_H_
#define TRIREME_RUNTIME_CORE_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"

namespace trireme {

enum class DeviceKind { kCpu, kCuda, kMeta };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // GPU ordinal for kCuda; 0 otherwise.

  static Device Cpu() { return {DeviceKind::kCpu, 0}; }
  static Device Meta() { return {DeviceKind::kMeta, 0}; }
  static Device Cuda(int index) { return {DeviceKind::kCuda, index}; }

  // "cpu", "meta", "cuda:1".
  std::string ToString() const;
  bool operator==(const Device& o) const {
    return kind == o.kind && index == o.index;
  }
};

// True when this binary was built with --config=cuda.
bool BuiltWithCuda();

// Number of usable CUDA devices. No device, no driver, or a build without CUDA
// is a normal answer (0), not an error; other CUDA failures are errors.
// Thread-safe; does not block beyond the driver's own initialization.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_DEVICE_H_
