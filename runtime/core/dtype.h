// Element types the runtime stores and communicates.
#ifndef TRIREME_RUNTIME_CORE_DTYPE_H_
#define TRIREME_RUNTIME_CORE_DTYPE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/core/half.h"

namespace trireme {

enum class DType : uint8_t {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kI32 = 3,
  kI64 = 4,
  kU8 = 5,
};

// Bytes per element.
int64_t DTypeSize(DType dtype);

// "f32", "bf16", "f16", "i32", "i64", "u8".
const char* DTypeName(DType dtype);

// Inverse of DTypeName; InvalidArgument naming the text and the choices otherwise.
absl::StatusOr<DType> ParseDType(absl::string_view name);

// f32, bf16 and f16.
bool IsFloat(DType dtype);

// The C++ type stored for each DType.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<BF16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<F16> {
  static constexpr DType value = DType::kF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};

// Widens element `i` of a float buffer of `dtype` (f32, bf16 or f16) to f32.
// Host and device code (the per-element body of the cast kernels).
TRIREME_HD float LoadAsF32(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16:
      return BF16ToF32(static_cast<const BF16*>(data)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const F16*>(data)[i]);
    default:
      return static_cast<const float*>(data)[i];
  }
}

// Rounds `v` to `dtype` (f32, bf16 or f16) and stores it as element `i`.
TRIREME_HD void StoreFromF32(void* data, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::kBF16:
      static_cast<BF16*>(data)[i] = F32ToBF16(v);
      break;
    case DType::kF16:
      static_cast<F16*>(data)[i] = F32ToF16(v);
      break;
    default:
      static_cast<float*>(data)[i] = v;
  }
}

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_DTYPE_H_
