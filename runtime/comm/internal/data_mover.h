// How a backend that moves data itself (the threads backend) touches the
// memory of its data device: copies, staging to and from the host, and the
// element-wise reductions of runtime/comm/reduce_body.h.
//
// The host mover works on host memory (cpu, cpu_async) and runs everything
// at once. The CUDA mover (--config=cuda) works on one GPU's memory (device
// pointers of any GPU the device can address): copies and reduction kernels
// go on a stream of its own, bound to its device for the call and the
// previous current device restored; Finish() waits for them. Both give the
// same bits: the kernel runs the host loop's element arithmetic.
//
// A mover belongs to one communicator and is used from its worker thread.
#ifndef TRIREME_RUNTIME_COMM_INTERNAL_DATA_MOVER_H_
#define TRIREME_RUNTIME_COMM_INTERNAL_DATA_MOVER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/comm/reduce_body.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"

namespace trireme::internal {

class DataMover {
 public:
  virtual ~DataMover() = default;
  // dst[0, bytes) = src[0, bytes), both memory of the device (may overlap:
  // a memmove).
  virtual absl::Status Copy(void* dst, const void* src, int64_t bytes) = 0;
  // Device memory to host memory and back; complete when they return.
  virtual absl::Status ToHost(void* host, const void* src, int64_t bytes) = 0;
  virtual absl::Status FromHost(void* dst, const void* host, int64_t bytes) = 0;
  // out[0, end - begin) = the reduction over `ins` (rank order) of elements
  // [begin, end) of each; `out` may be one input's own range [begin, end).
  virtual absl::Status Reduce(DType dtype, ReduceOp op, const std::vector<const void*>& ins,
                              int64_t begin, int64_t end, void* out) = 0;
  // Waits until every Copy and Reduce issued so far is complete (before
  // another rank may read what they wrote, and before the op completes).
  virtual absl::Status Finish() = 0;
};

std::unique_ptr<DataMover> NewHostDataMover();

// Unavailable in a build without --config=cuda.
absl::StatusOr<std::unique_ptr<DataMover>> NewCudaDataMover(int device);

// The device whose memory `p` is: cuda:N for GPU memory (in a CUDA build),
// else cpu (host memory, or null).
absl::StatusOr<Device> DeviceOfPointer(const void* p);

// The mover for `device` (host memory when nullopt or not cuda).
absl::StatusOr<std::unique_ptr<DataMover>> NewDataMover(const Device& device);

}  // namespace trireme::internal

#endif  // TRIREME_RUNTIME_COMM_INTERNAL_DATA_MOVER_H_
