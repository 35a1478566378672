#include "runtime/core/tensor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace trireme {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<Tensor> Tensor::Empty(Device device, DType dtype, Shape shape, MemCategory category,
                                     MemoryTracker* tracker, Stream* stream) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor shape ", ShapeString(shape), " has a negative dimension"));
    }
  }
  Tensor t;
  t.numel_ = NumElements(shape);
  auto b = Buffer::Allocate(device, t.numel_ * DTypeSize(dtype), category, tracker, stream);
  if (!b.ok()) return b.status();
  t.owner_ = std::make_shared<Buffer>(std::move(*b));
  t.data_ = t.owner_->data();
  t.device_ = device;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.defined_ = true;
  return t;
}

Tensor Tensor::Borrow(void* data, Device device, DType dtype, Shape shape) {
  Tensor t;
  t.data_ = data;
  t.device_ = device;
  t.dtype_ = dtype;
  t.numel_ = NumElements(shape);
  t.shape_ = std::move(shape);
  t.defined_ = true;
  return t;
}

Tensor Tensor::Slice(int64_t offset, Shape shape) const {
  Tensor t = *this;
  t.numel_ = NumElements(shape);
  t.shape_ = std::move(shape);
  if (data_ != nullptr) t.data_ = static_cast<char*>(data_) + offset * DTypeSize(dtype_);
  return t;
}

Tensor Tensor::Reshaped(Shape shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

std::string Tensor::ToString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeString(shape_), " on ", device_.ToString());
}

void Tensor::RecordStream(Stream& s) const {
  if (owner_ != nullptr) owner_->RecordStream(s);
}

}  // namespace trireme
