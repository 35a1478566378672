// Small, stable, non-cryptographic hashes: the same value on every machine,
// process and run (configuration fingerprints, parameter seeds, synthetic
// data). One home for them, so no copy drifts.
#ifndef TRIREME_RUNTIME_CORE_HASH_H_
#define TRIREME_RUNTIME_CORE_HASH_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace trireme {

inline constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ull;

// 64-bit FNV-1a of `bytes`, from `basis` (FNV's offset basis by default).
inline uint64_t Fnv1a64(absl::string_view bytes, uint64_t basis = kFnvOffsetBasis) {
  uint64_t h = basis;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// splitmix64's odd constants: the golden-ratio increment and its two mixing
// multipliers.
inline constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ull;
inline constexpr uint64_t kSplitMixM1 = 0xBF58476D1CE4E5B9ull;
inline constexpr uint64_t kSplitMixM2 = 0x94D049BB133111EBull;

// Counter-based hashing of small integer tuples (a stateless generator):
// the tuple is folded into one word with the constants above, then mixed.
// MixShort: two xor-shifts around one multiply (enough for sampling);
// MixFull: a further multiply and xor-shift (every output bit depends on
// every input bit).
inline uint64_t MixShort(uint64_t x) {
  x ^= x >> 31;
  x *= kSplitMixM1;
  x ^= x >> 29;
  return x;
}
inline uint64_t MixFull(uint64_t x) {
  x = MixShort(x) * kSplitMixM2;
  return x ^ (x >> 32);
}

// The 53 high bits of `x` as a double in [0, 1).
inline double UnitInterval(uint64_t x) { return (x >> 11) * (1.0 / (uint64_t{1} << 53)); }

// A uniform double in [0, 1) from a pair of integers (the GPT's initial
// values and its synthetic batches).
inline double PairUniform(uint64_t a, uint64_t b) {
  return UnitInterval(MixFull(a * kSplitMixGamma + b * kSplitMixM1 + kSplitMixM2));
}

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_HASH_H_
