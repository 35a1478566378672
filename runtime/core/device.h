// Devices: where a buffer lives and how work on it runs.
//
//   cpu        host memory; every kernel, copy and collective runs to
//              completion before the call returns (streams run inline). The
//              bitwise reference.
//   cpu_async  host memory, but every kernel, copy and memset is enqueued on a
//              CpuStream (a worker thread), so the host thread runs ahead of the
//              work exactly as it does with CUDA; cross-stream order comes only
//              from events. How the GPU orchestration is tested without a GPU.
//   cuda       GPU memory (only in builds with --config=cuda).
//   meta       allocates nothing but is accounted like a real device, so the
//              runtime can run "as if" on a cluster this machine cannot hold.
#ifndef TRIREME_RUNTIME_CORE_DEVICE_H_
#define TRIREME_RUNTIME_CORE_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace trireme {

enum class DeviceKind { kCpu, kCuda, kMeta, kCpuAsync };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // GPU ordinal for kCuda; 0 otherwise.

  static Device Cpu() { return {DeviceKind::kCpu, 0}; }
  static Device CpuAsync() { return {DeviceKind::kCpuAsync, 0}; }
  static Device Meta() { return {DeviceKind::kMeta, 0}; }
  static Device Cuda(int index) { return {DeviceKind::kCuda, index}; }

  // "cpu", "cpu_async", "meta", "cuda:1".
  std::string ToString() const;
  // Memory the host may read and write directly (after synchronizing the
  // streams that use it): cpu and cpu_async.
  bool host_accessible() const { return kind == DeviceKind::kCpu || kind == DeviceKind::kCpuAsync; }
  // Work on this device's streams runs asynchronously to the host (cpu_async,
  // cuda): the host must order its own reads through events or Synchronize.
  bool asynchronous() const { return kind == DeviceKind::kCpuAsync || kind == DeviceKind::kCuda; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// Inverse of ToString ("cuda" alone means cuda:0); InvalidArgument naming the
// text and the choices otherwise.
absl::StatusOr<Device> ParseDevice(absl::string_view text);

// True when this binary was built with --config=cuda.
bool BuiltWithCuda();

// Number of usable CUDA devices. No device, no driver, or a build without CUDA
// is a normal answer (0), not an error; other CUDA failures (a driver older
// than the CUDA runtime this binary was built with, among them) are errors.
// Thread-safe; does not block beyond the driver's own initialization.
absl::StatusOr<int> CudaDeviceCount();

// OK when at least one CUDA device is usable; otherwise why not, named:
// "built without --config=cuda", "no NVIDIA driver is installed", "no CUDA
// device is visible" (kUnavailable), or the CUDA error (a driver too old is
// kFailedPrecondition). For code and tests that need a GPU and must say why
// they cannot run.
absl::Status CudaDeviceAvailable();

// Makes `device` the calling thread's current CUDA device (cudaSetDevice)
// and leaves it so: for a program's own threads, each of which serves one
// GPU (a rank's thread), so every context it touches is that GPU's. Host
// devices: nothing to do. The library's own calls never change the current
// device (they bind and restore); this one is the caller's decision.
absl::Status BindThreadToDevice(const Device& device);

// What the driver reports for one GPU (cudaMemGetInfo): bytes free and in
// total, whoever holds them (this process's caching allocator, other
// processes, the CUDA context itself). Unavailable without a device.
struct CudaMemory {
  int64_t free = 0;
  int64_t total = 0;
};
absl::StatusOr<CudaMemory> CudaMemoryInfo(int device);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_DEVICE_H_
