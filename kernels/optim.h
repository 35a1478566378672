// CPU optimizer kernels on flat fp32 spans (one rank's shard): AdamW and
// SGD-momentum updates (optionally writing the updated compute copy in the
// same pass), sum of squares, unscale + finite check.
//
// Vectorized for AVX2 (+FMA/F16C hardware, though the arithmetic uses no FMA:
// see optim_body.h), selected at run time; a scalar path otherwise. With
// `threads` > 1 a span is split into contiguous chunks run on a shared worker
// pool; element-wise results do not depend on the split, and reductions sum
// fixed-size blocks in block order, so results are identical for any thread
// count and either path. All functions block the calling thread until done.
// Spans must not overlap unless stated.
#ifndef TRIREME_KERNELS_OPTIM_H_
#define TRIREME_KERNELS_OPTIM_H_

#include <cstdint>

#include "kernels/optim_body.h"
#include "runtime/core/dtype.h"

namespace trireme::kernels {

// The compute copy to write after an update: `count` = the span length,
// dtype f32, bf16 or f16. data == nullptr: none.
struct ComputeOut {
  void* data = nullptr;
  DType dtype = DType::kBF16;
};

// p, g, m, v: n floats (g read only). Writes the updated p also to `out`.
void AdamW(const AdamWScalars& s, float* p, const float* g, float* m, float* v, int64_t n,
           ComputeOut out = {}, int threads = 1);

// p, g, buf: n floats.
void Sgd(const SgdScalars& s, float* p, const float* g, float* buf, int64_t n, ComputeOut out = {},
         int threads = 1);

// Sum of x[i]^2 accumulated in double: squares are exact in double; the sum
// is taken in 2048-element blocks (8 lanes each), blocks added in order.
double SumOfSquares(const float* x, int64_t n, int threads = 1);

// x[i] *= scale in place; returns true if every result is finite.
bool UnscaleAndCheckFinite(float* x, int64_t n, float scale, int threads = 1);

// True if every x[i] is finite.
bool AllFinite(const float* x, int64_t n, int threads = 1);

// Which implementation runs: true if this CPU has AVX2, FMA and F16C (and
// ForceScalar(false)). ForceScalar(true) selects the scalar path everywhere
// (tests and benchmarks compare the two). Thread-safe.
bool UsingAvx2();
void ForceScalar(bool scalar);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_OPTIM_H_
