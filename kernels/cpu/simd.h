// Private: AVX2 helpers shared by the CPU kernels (compiled only inside
// functions marked TRIREME_AVX2; callers check UsingAvx2() first).
#ifndef TRIREME_KERNELS_CPU_SIMD_H_
#define TRIREME_KERNELS_CPU_SIMD_H_

#include <immintrin.h>

#include <cstdint>

#include "runtime/core/dtype.h"

#define TRIREME_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace trireme::kernels::simd {

// True when the CPU supports AVX2, FMA and F16C and the scalar path is not
// forced.
bool Enabled();
void SetForceScalar(bool scalar);

// 8 floats -> 8 bf16, round to nearest even, NaN quieted with sign and top
// payload kept: bit-identical to F32ToBF16.
TRIREME_AVX2 inline __m128i ToBF16(__m256 x) {
  const __m256i xi = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(xi, 16), _mm256_set1_epi32(1));
  __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(xi, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(xi, 16), _mm256_set1_epi32(0x40));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  r = _mm256_blendv_epi8(r, quiet, nan);
  r = _mm256_and_si256(r, _mm256_set1_epi32(0xffff));
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

// Stores 8 floats at element i of a compute copy of `dtype` (f32, bf16, f16).
TRIREME_AVX2 inline void Store8(void* out, DType dtype, int64_t i, __m256 x) {
  if (dtype == DType::kBF16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i), ToBF16(x));
  } else if (dtype == DType::kF16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    _mm256_storeu_ps(static_cast<float*>(out) + i, x);
  }
}

// Loads 8 elements of a float buffer of `dtype` as f32 (exact widening).
TRIREME_AVX2 inline __m256 Load8(const void* in, DType dtype, int64_t i) {
  if (dtype == DType::kBF16) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(in) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  if (dtype == DType::kF16) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(in) + i));
    return _mm256_cvtph_ps(h);
  }
  return _mm256_loadu_ps(static_cast<const float*>(in) + i);
}

}  // namespace trireme::kernels::simd

#endif  // TRIREME_KERNELS_CPU_SIMD_H_
