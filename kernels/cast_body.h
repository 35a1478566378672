// The per-element body of the cast kernels, shared by CPU and CUDA.
// Dtype codes are DType's values (0 f32, 1 bf16, 2 f16).
#ifndef TRIREME_KERNELS_CAST_BODY_H_
#define TRIREME_KERNELS_CAST_BODY_H_

#include <cstdint>

#include "runtime/core/half.h"

namespace trireme::kernels {

TRIREME_HD float LoadF32(const void* p, int code, int64_t i) {
  if (code == 1) return BF16ToF32(static_cast<const BF16*>(p)[i]);
  if (code == 2) return F16ToF32(static_cast<const F16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

TRIREME_HD void StoreF32(void* p, int code, int64_t i, float v) {
  if (code == 1) {
    static_cast<BF16*>(p)[i] = F32ToBF16(v);
  } else if (code == 2) {
    static_cast<F16*>(p)[i] = F32ToF16(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

TRIREME_HD void CastElement(const void* in, int in_code, void* out, int out_code, int64_t i) {
  StoreF32(out, out_code, i, LoadF32(in, in_code, i));
}

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CAST_BODY_H_
