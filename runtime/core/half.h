// Bit-exact conversions between f32 and the 16-bit float formats.
//
// Header-only and __host__ __device__, so CPU code, CUDA kernels and the CPU
// tests share one implementation of the arithmetic. All f32 -> 16-bit
// conversions round to nearest, ties to even; NaN stays NaN (quieted, sign
// kept), +-Inf stays Inf, values past the format's range become Inf, and
// subnormals are produced and consumed exactly.
#ifndef TRIREME_RUNTIME_CORE_HALF_H_
#define TRIREME_RUNTIME_CORE_HALF_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TRIREME_HD __host__ __device__ __forceinline__
#else
#define TRIREME_HD inline
#endif

namespace trireme {

// Storage types: a bf16 or f16 value is its 16 bits.
struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

TRIREME_HD uint32_t F32ToBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

TRIREME_HD float BitsToF32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

TRIREME_HD float BF16ToF32(BF16 h) { return BitsToF32(uint32_t{h.bits} << 16); }

TRIREME_HD BF16 F32ToBF16(float f) {
  uint32_t x = F32ToBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign and top payload, quiet it
    return BF16{static_cast<uint16_t>((x >> 16) | 0x0040u)};
  }
  // Round to nearest even on bit 16; a carry into the exponent is correct
  // (including overflow of the largest finite values to Inf).
  x += 0x7fffu + ((x >> 16) & 1u);
  return BF16{static_cast<uint16_t>(x >> 16)};
}

TRIREME_HD float F16ToF32(F16 h) {
  const uint32_t sign = uint32_t{h.bits & 0x8000u} << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t man = h.bits & 0x3ffu;
  if (exp == 0x1f) return BitsToF32(sign | 0x7f800000u | (man << 13));  // Inf/NaN
  if (exp == 0) {
    if (man == 0) return BitsToF32(sign);  // +-0
    // Subnormal man * 2^-24: normalize into an f32 normal.
    uint32_t e = 113;  // f32 biased exponent of 2^-14
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --e;
    }
    return BitsToF32(sign | (e << 23) | ((man & 0x3ffu) << 13));
  }
  return BitsToF32(sign | ((exp + 112u) << 23) | (man << 13));
}

TRIREME_HD F16 F32ToF16(float f) {
  const uint32_t x = F32ToBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) {  // NaN: quiet, keep the top payload bits
    return F16{static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu))};
  }
  // 65520 is halfway between 65504 (max f16) and 65536; ties go to even = Inf.
  if (ax >= 0x477ff000u) return F16{static_cast<uint16_t>(sign | 0x7c00u)};
  if (ax < 0x38800000u) {                     // below 2^-14: f16 subnormal or zero
    if (ax <= 0x33000000u) return F16{sign};  // <= 2^-25 (a tie at 2^-25 -> 0)
    const uint32_t e = ax >> 23;              // 102..112
    const uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // value / 2^-24 = man >> shift
    uint32_t q = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;  // may become 0x400: min normal
    return F16{static_cast<uint16_t>(sign | q)};
  }
  // Normal: round to nearest even on bit 13, then rebias 127 -> 15.
  uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
  r -= 0x38000000u;
  return F16{static_cast<uint16_t>(sign | (r >> 13))};
}

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_HALF_H_
