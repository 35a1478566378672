// The per-element body of the cast kernels, shared by CPU and CUDA: widen to
// f32, round to the output dtype (runtime/core/dtype.h, host and device).
#ifndef TRIREME_KERNELS_CAST_BODY_H_
#define TRIREME_KERNELS_CAST_BODY_H_

#include <cstdint>

#include "runtime/core/dtype.h"

namespace trireme::kernels {

TRIREME_HD void CastElement(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t i) {
  StoreFromF32(out, out_dtype, i, LoadAsF32(in, in_dtype, i));
}

// out[i] = round(out[i] + in[i]) in out_dtype, the sum in f32.
TRIREME_HD void AccumulateElement(const void* in, DType in_dtype, void* out, DType out_dtype,
                                  int64_t i) {
  StoreFromF32(out, out_dtype, i, LoadAsF32(out, out_dtype, i) + LoadAsF32(in, in_dtype, i));
}

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CAST_BODY_H_
