// CUDA and NCCL error conversion. Include only from code built under
// --config=cuda (it needs cuda_runtime.h / nccl.h).
#ifndef TRIREME_RUNTIME_CORE_CUDA_STATUS_H_
#define TRIREME_RUNTIME_CORE_CUDA_STATUS_H_

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "runtime/core/status.h"

namespace trireme {

// "No device" (no driver, insufficient driver, no capable device) maps to
// kUnavailable so callers can treat it as a normal condition.
inline absl::Status CudaToStatus(cudaError_t err, const char* expr,
                                 const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  const bool no_device = err == cudaErrorNoDevice ||
                         err == cudaErrorInsufficientDriver;
  std::string msg = absl::StrFormat("%s failed: %s (%s) at %s:%d", expr,
                                    cudaGetErrorString(err),
                                    cudaGetErrorName(err), file, line);
  return no_device ? absl::UnavailableError(msg) : absl::InternalError(msg);
}

}  // namespace trireme

#define CUDA_RETURN_IF_ERROR(expr) \
  RETURN_IF_ERROR(::trireme::CudaToStatus((expr), #expr, __FILE__, __LINE__))

#ifdef TRIREME_WITH_NCCL
#include <nccl.h>
namespace trireme {
inline absl::Status NcclToStatus(ncclResult_t r, const char* expr,
                                 const char* file, int line) {
  if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("%s failed: %s at %s:%d", expr,
                                             ncclGetErrorString(r), file, line));
}
}  // namespace trireme
#define NCCL_RETURN_IF_ERROR(expr) \
  RETURN_IF_ERROR(::trireme::NcclToStatus((expr), #expr, __FILE__, __LINE__))
#endif  // TRIREME_WITH_NCCL

#endif  // TRIREME_RUNTIME_CORE_CUDA_STATUS_H_
