#include "runtime/core/cuda_stream.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/core/cuda_status.h"

namespace trireme {

CudaEvent::~CudaEvent() {
  CudaDeviceScope scope(device_);
  cudaEventDestroy(event_);
}

absl::StatusOr<std::unique_ptr<CudaEvent>> CudaEvent::Create(int device) {
  CudaDeviceScope scope(device);
  RETURN_IF_ERROR(scope.status());
  cudaEvent_t e;
  CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return std::unique_ptr<CudaEvent>(new CudaEvent(device, e));
}

// Complete only on success: an event whose work failed is not "done" (a
// pending free behind it is never reused, a Work behind it is not reported
// finished); Synchronize returns the error.
bool CudaEvent::Query() const {
  CudaDeviceScope scope(device_);  // no context is made current on another GPU
  const cudaError_t err = cudaEventQuery(event_);
  if (err == cudaErrorNotReady) cudaGetLastError();  // not an error: clear it
  return err == cudaSuccess;
}

absl::Status CudaEvent::Synchronize(absl::Duration timeout) {
  CudaDeviceScope scope(device_);
  RETURN_IF_ERROR(scope.status());
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    cudaError_t err = cudaEventQuery(event_);
    if (err != cudaErrorNotReady) {
      return CudaToStatus(err, "cudaEventQuery", __FILE__, __LINE__);
    }
    cudaGetLastError();  // "not ready" is not an error: clear it for later launch checks
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "CUDA event on device ", device_, " not complete after ", absl::FormatDuration(timeout)));
    }
    std::this_thread::yield();
  }
}

CudaStream::~CudaStream() {
  library_handle_.reset();  // it may use the stream while it goes
  CudaDeviceScope scope(device_);
  cudaStreamDestroy(stream_);
}

absl::StatusOr<std::unique_ptr<CudaStream>> CudaStream::Create(int device, std::string name) {
  CudaDeviceScope scope(device);
  RETURN_IF_ERROR(scope.status());
  cudaStream_t s;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return std::unique_ptr<CudaStream>(new CudaStream(device, s, std::move(name)));
}

std::unique_ptr<Event> CudaStream::NewEvent() {
  auto e = CudaEvent::Create(device_);
  if (!e.ok()) return nullptr;
  return std::move(*e);
}

absl::Status CudaStream::Record(Event* event) {
  auto* e = dynamic_cast<CudaEvent*>(event);
  if (e == nullptr) return absl::InvalidArgumentError("CudaStream records CudaEvents only");
  CudaDeviceScope scope(device_);
  RETURN_IF_ERROR(scope.status());
  CUDA_RETURN_IF_ERROR(cudaEventRecord(e->native(), stream_));
  return absl::OkStatus();
}

absl::Status CudaStream::Wait(const Event& event, WaitCounter) {
  auto* e = dynamic_cast<const CudaEvent*>(&event);
  if (e == nullptr) {
    // A host event (a communicator's completion): the host waits for it.
    return const_cast<Event&>(event).Synchronize();
  }
  CudaDeviceScope scope(device_);
  RETURN_IF_ERROR(scope.status());
  CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, e->native(), 0));
  return absl::OkStatus();
}

absl::Status CudaStream::Synchronize() {
  CudaDeviceScope scope(device_);
  RETURN_IF_ERROR(scope.status());
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

}  // namespace trireme
