// Inputs and comparisons shared by the kernel tests.
#ifndef TRIREME_TESTS_KERNELS_TEST_UTIL_H_
#define TRIREME_TESTS_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace trireme::testing {

// n values uniform in [lo, hi), from `seed`.
inline std::vector<float> Random(int64_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng);
  return x;
}

// Bitwise equality (NaNs with the same bits are equal).
inline bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_KERNELS_TEST_UTIL_H_
