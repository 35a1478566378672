// Stream and Event over cudaStream_t / cudaEvent_t (--config=cuda only).
#ifndef TRIREME_RUNTIME_CORE_CUDA_STREAM_H_
#define TRIREME_RUNTIME_CORE_CUDA_STREAM_H_

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/core/stream.h"

namespace trireme {

class CudaEvent final : public Event {
 public:
  ~CudaEvent() override;
  static absl::StatusOr<std::unique_ptr<CudaEvent>> Create(int device);
  bool Query() const override;  // cudaEventQuery; never blocks
  // Polls cudaEventQuery until complete or `timeout` (DeadlineExceeded).
  absl::Status Synchronize(absl::Duration timeout) override;
  using Event::Synchronize;
  cudaEvent_t native() const { return event_; }

 private:
  CudaEvent(int device, cudaEvent_t e) : device_(device), event_(e) {}
  int device_;
  cudaEvent_t event_;
};

// Owns a non-blocking cudaStream_t on one device. Thread-compatible.
class CudaStream final : public Stream {
 public:
  ~CudaStream() override;
  static absl::StatusOr<std::unique_ptr<CudaStream>> Create(int device, std::string name = "cuda");

  Device device() const override { return Device::Cuda(device_); }
  const std::string& name() const override { return name_; }
  std::unique_ptr<Event> NewEvent() override;  // nullptr if creation fails
  absl::Status Record(Event* event) override;
  // CUDA events: cudaStreamWaitEvent (the host does not block). Host events
  // (CpuEvent): the host blocks until complete (a CUDA stream cannot wait on
  // a host flag). `blocked` is not counted.
  absl::Status Wait(const Event& event, WaitCounter blocked = nullptr) override;
  absl::Status Synchronize() override;
  cudaStream_t native() const { return stream_; }
  int ordinal() const { return device_; }
  // A library handle bound to this stream (the kernels' cuBLAS handle), made
  // by its user on first use and destroyed with the stream, before it.
  std::shared_ptr<void>& library_handle() { return library_handle_; }

 private:
  CudaStream(int device, cudaStream_t s, std::string name)
      : device_(device), stream_(s), name_(std::move(name)) {}
  int device_;
  cudaStream_t stream_;
  std::string name_;
  std::shared_ptr<void> library_handle_;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_CUDA_STREAM_H_
