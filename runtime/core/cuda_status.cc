#include "runtime/core/cuda_status.h"

#include <cuda.h>  // types only: the driver entry points come through cudart

namespace trireme {
namespace {

// cuCtxGetCurrent / cuCtxSetCurrent through the runtime's driver entry
// points (no link against libcuda: binaries still start where no driver is
// installed). Null where the driver does not provide them.
struct DriverContextCalls {
  CUresult (*get)(CUcontext*) = nullptr;
  CUresult (*set)(CUcontext) = nullptr;
};

const DriverContextCalls& Driver() {
  static const DriverContextCalls calls = [] {
    DriverContextCalls c;
    void* get = nullptr;
    void* set = nullptr;
    cudaDriverEntryPointQueryResult r1, r2;
    if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &get, 12000, cudaEnableDefault, &r1) ==
            cudaSuccess &&
        r1 == cudaDriverEntryPointSuccess &&
        cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &set, 12000, cudaEnableDefault, &r2) ==
            cudaSuccess &&
        r2 == cudaDriverEntryPointSuccess) {
      c.get = reinterpret_cast<CUresult (*)(CUcontext*)>(get);
      c.set = reinterpret_cast<CUresult (*)(CUcontext)>(set);
    }
    cudaGetLastError();  // a missing driver here is reported by the calls that need one
    return c;
  }();
  return calls;
}

}  // namespace

CudaDeviceScope::CudaDeviceScope(int device) {
  const DriverContextCalls& d = Driver();
  CUcontext ctx = nullptr;
  had_context_ = d.get == nullptr || (d.get(&ctx) == CUDA_SUCCESS && ctx != nullptr);
  status_ = CudaToStatus(cudaGetDevice(&previous_), "cudaGetDevice", __FILE__, __LINE__);
  if (status_.ok() && (previous_ != device || !had_context_)) {
    status_ = CudaToStatus(cudaSetDevice(device), "cudaSetDevice", __FILE__, __LINE__);
    switched_ = status_.ok();
  }
}

CudaDeviceScope::~CudaDeviceScope() {
  if (!switched_) return;
  if (had_context_) {
    cudaSetDevice(previous_);
  } else {
    Driver().set(nullptr);  // back to no current context
  }
}

}  // namespace trireme
