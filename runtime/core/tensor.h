// Tensors: a typed, shaped region of device memory -- the activations and
// gradients the model and the pipeline pass around.
//
// A tensor either owns its memory (a Buffer shared by every copy and slice;
// freed when the last one goes) or borrows memory owned elsewhere (a view of
// an engine buffer; the owner keeps it alive). Copies are cheap and alias the
// same memory. Row-major, contiguous. On an asynchronous device the memory
// must be touched only by work on streams (kernels/ops.h), or by the host
// after synchronizing them.
#ifndef TRIREME_RUNTIME_CORE_TENSOR_H_
#define TRIREME_RUNTIME_CORE_TENSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "runtime/core/view.h"

namespace trireme {

using Shape = std::vector<int64_t>;

// Product of the dimensions (1 for a scalar shape {}).
int64_t NumElements(const Shape& shape);
// "[2, 8, 32]".
std::string ShapeString(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // Uninitialized memory for `shape` on `device`, recorded under `category`
  // in `tracker` (may be null), for work on `stream` (see Buffer).
  static absl::StatusOr<Tensor> Empty(Device device, DType dtype, Shape shape, MemCategory category,
                                      MemoryTracker* tracker, Stream* stream);
  // A view of memory owned elsewhere (data may be null for meta or empty).
  static Tensor Borrow(void* data, Device device, DType dtype, Shape shape);

  // Elements [offset, offset + NumElements(shape)) as a tensor of `shape`,
  // sharing this one's memory. REQUIRES: inside this tensor.
  Tensor Slice(int64_t offset, Shape shape) const;
  // The same memory with another shape of the same element count.
  Tensor Reshaped(Shape shape) const;

  bool defined() const { return defined_; }
  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return numel_; }
  int64_t bytes() const { return numel_ * DTypeSize(dtype_); }
  MutView view() const { return {data_, numel_, dtype_}; }
  // "f32[2, 8, 32] on cpu_async"
  std::string ToString() const;

  // Buffer::RecordStream of the owning buffer (nothing for borrowed memory).
  void RecordStream(Stream& s) const;
  // Drops this reference (the memory is freed with the last one).
  void Reset() { *this = Tensor(); }

 private:
  std::shared_ptr<Buffer> owner_;
  void* data_ = nullptr;
  Device device_;
  DType dtype_ = DType::kF32;
  Shape shape_;
  int64_t numel_ = 0;
  bool defined_ = false;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_TENSOR_H_
