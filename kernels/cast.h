// Element-wise dtype casts between f32, bf16 and f16 (round to nearest even).
// The per-element arithmetic is runtime/core/half.h, shared by the CPU kernel
// here and the CUDA kernel in kernels/cuda/cast.h, so the CPU tests test the
// GPU arithmetic.
#ifndef TRIREME_KERNELS_CAST_H_
#define TRIREME_KERNELS_CAST_H_

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/core/dtype.h"

namespace trireme::kernels {

// in: n elements of `in_dtype`; out: n elements of `out_dtype` (host memory,
// may not overlap unless in == out with equal element sizes). Float dtypes
// only (InvalidArgument otherwise). AVX2 (F16C) when the CPU has it, else
// scalar, bit-identical either way; split over `threads` (kernels/optim.h).
// Blocks the caller.
absl::Status CastCpu(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                     int threads = 1);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CAST_H_
