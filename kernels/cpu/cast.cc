#include "kernels/cast.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cast_body.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace trireme::kernels {
namespace {

void CastScalar(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) CastElement(in, in_dtype, out, out_dtype, i);
}

TRIREME_AVX2 void CastAvx2(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t b,
                           int64_t e) {
  int64_t i = b;
  for (; i + 8 <= e; i += 8) simd::Store8(out, out_dtype, i, simd::Load8(in, in_dtype, i));
  CastScalar(in, in_dtype, out, out_dtype, i, e);
}

}  // namespace

absl::Status CastCpu(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                     int threads) {
  if (!IsFloat(in_dtype) || !IsFloat(out_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("cast from ", DTypeName(in_dtype), " to ",
                                                   DTypeName(out_dtype),
                                                   ": only f32, bf16 and f16 are supported"));
  }
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cast of ", n, " elements"));
  if (in_dtype == out_dtype) {
    if (in != out && n > 0) std::memmove(out, in, n * DTypeSize(in_dtype));
    return absl::OkStatus();
  }
  const bool avx2 = simd::Enabled();
  ParallelFor(n, threads, [&](int64_t b, int64_t e) {
    avx2 ? CastAvx2(in, in_dtype, out, out_dtype, b, e)
         : CastScalar(in, in_dtype, out, out_dtype, b, e);
  });
  return absl::OkStatus();
}

}  // namespace trireme::kernels
