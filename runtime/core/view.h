// Views of typed buffers: a pointer, an element count and a dtype. No
// ownership. The communicators take these; Tensor::view() makes one.
#ifndef TRIREME_RUNTIME_CORE_VIEW_H_
#define TRIREME_RUNTIME_CORE_VIEW_H_

#include <cstdint>
#include <vector>

#include "runtime/core/dtype.h"

namespace trireme {

// A read-only buffer of `count` elements of `dtype`.
struct ConstView {
  const void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;
  int64_t bytes() const { return count * DTypeSize(dtype); }
};

// A writable buffer of `count` elements of `dtype`.
struct MutView {
  void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;
  int64_t bytes() const { return count * DTypeSize(dtype); }
  operator ConstView() const { return {data, count, dtype}; }
};

// Views of host vectors: for control communicators (host values) and tests.
template <typename T>
ConstView ViewOf(const std::vector<T>& v) {
  return {v.data(), static_cast<int64_t>(v.size()), DTypeOf<T>::value};
}
template <typename T>
MutView ViewOf(std::vector<T>& v) {
  return {v.data(), static_cast<int64_t>(v.size()), DTypeOf<T>::value};
}

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_VIEW_H_
