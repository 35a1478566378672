// CUDA and NCCL error conversion. Include only from code built under
// --config=cuda (it needs cuda_runtime.h / nccl.h).
#ifndef TRIREME_RUNTIME_CORE_CUDA_STATUS_H_
#define TRIREME_RUNTIME_CORE_CUDA_STATUS_H_

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "runtime/core/status.h"

namespace trireme {

// "No device" maps to kUnavailable, so callers can treat it as a normal
// condition: no CUDA device visible, or no NVIDIA driver installed at all
// (cudart reports that as cudaErrorInsufficientDriver with driver version 0).
// A driver that is installed but older than the runtime this binary was built
// with is an error (kFailedPrecondition) naming both versions: it must be
// updated, and reading it as "no GPU" would hide the machine's GPUs.
inline absl::Status CudaToStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  std::string msg = absl::StrFormat("%s failed: %s (%s) at %s:%d", expr, cudaGetErrorString(err),
                                    cudaGetErrorName(err), file, line);
  if (err == cudaErrorNoDevice) return absl::UnavailableError(msg + ": no CUDA device is visible");
  if (err == cudaErrorInsufficientDriver) {
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    if (driver == 0) {
      return absl::UnavailableError(msg +
                                    ": no NVIDIA driver is installed (libcuda.so.1 not found)");
    }
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the NVIDIA driver supports CUDA up to %d.%d, but this binary uses the CUDA %d.%d "
        "runtime; install a newer driver",
        msg, driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10));
  }
  return absl::InternalError(msg);
}

}  // namespace trireme

#define CUDA_RETURN_IF_ERROR(expr) \
  RETURN_IF_ERROR(::trireme::CudaToStatus((expr), #expr, __FILE__, __LINE__))

namespace trireme {

// Makes `device` the calling thread's current CUDA device for its scope and
// restores the thread's previous state on exit, so no call leaves the
// current device changed: the previous device if the thread had a context
// current, else no current context at all -- so a thread that never chose a
// device is not left holding one, and no context is created on GPU 0 just to
// restore a default. Every CUDA call on behalf of a device-bound object
// (stream, event, buffer, cuBLAS handle, communicator) runs inside one. Check
// status() before relying on the binding.
class CudaDeviceScope {
 public:
  explicit CudaDeviceScope(int device);
  ~CudaDeviceScope();
  CudaDeviceScope(const CudaDeviceScope&) = delete;
  CudaDeviceScope& operator=(const CudaDeviceScope&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = 0;
  bool switched_ = false;
  bool had_context_ = false;
  absl::Status status_;
};

}  // namespace trireme

#ifdef TRIREME_WITH_NCCL
#include <nccl.h>
namespace trireme {
inline absl::Status NcclToStatus(ncclResult_t r, const char* expr, const char* file, int line) {
  if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
  return absl::InternalError(
      absl::StrFormat("%s failed: %s at %s:%d", expr, ncclGetErrorString(r), file, line));
}
}  // namespace trireme
#define NCCL_RETURN_IF_ERROR(expr) \
  RETURN_IF_ERROR(::trireme::NcclToStatus((expr), #expr, __FILE__, __LINE__))
#endif  // TRIREME_WITH_NCCL

#endif  // TRIREME_RUNTIME_CORE_CUDA_STATUS_H_
