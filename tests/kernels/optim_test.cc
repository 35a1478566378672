// The CPU optimizer kernels against plain reference loops written here, for
// every length class (empty, shorter than a vector, vector multiples, tails,
// large), on the AVX2 and the scalar path, and 1, 2 and 3 threads: bitwise
// equal where the operation order is the same, and identical across paths and
// thread counts.
#include "kernels/optim.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cast.h"

namespace trireme::kernels {
namespace {

// Tolerances per dtype, in one place: the relative error of one rounding.
double Tolerance(DType d) {
  switch (d) {
    case DType::kBF16:
      return std::ldexp(1.0, -8);
    case DType::kF16:
      return std::ldexp(1.0, -11);
    default:
      return std::ldexp(1.0, -24);
  }
}

const int64_t kLengths[] = {0, 1, 7, 8, 9, 1021, (1 << 20) + 3};

std::vector<float> Random(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = scale * u(rng);
  return x;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

// A plain AdamW in torch's operation order (independent of optim_body.h).
void ReferenceAdamW(const AdamWScalars& s, std::vector<float>& p, const std::vector<float>& g,
                    std::vector<float>& m, std::vector<float>& v) {
  for (size_t i = 0; i < p.size(); ++i) {
    const float gi = g[i] * s.grad_scale;
    p[i] = p[i] * s.decay_factor;
    if (s.small_weight) {
      m[i] = m[i] + s.lerp_weight * (gi - m[i]);
    } else {
      m[i] = gi - (gi - m[i]) * (1.0f - s.lerp_weight);
    }
    v[i] = v[i] * s.beta2;
    const float t = s.one_minus_beta2 * gi;
    v[i] = v[i] + t * gi;
    const float denom = std::sqrt(v[i]) / s.bias_correction2_sqrt + s.eps;
    const float num = s.neg_step_size * m[i];
    p[i] = p[i] + num / denom;
  }
}

AdamWScalars Scalars(bool small) {
  AdamWScalars s;
  s.grad_scale = 0.5f;
  s.decay_factor = 1.0f - 1e-3f * 0.01f;
  s.lerp_weight = small ? 0.1f : 0.7f;
  s.beta2 = 0.999f;
  s.one_minus_beta2 = 1.0f - 0.999f;
  s.bias_correction2_sqrt = 0.0447f;
  s.eps = 1e-8f;
  s.neg_step_size = -1e-3f / 0.19f;
  s.small_weight = small;
  return s;
}

using Param = std::tuple<int64_t, bool>;  // length, scalar path
class OptimKernelTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override { ForceScalar(std::get<1>(GetParam())); }
  void TearDown() override { ForceScalar(false); }
};

TEST_P(OptimKernelTest, AdamWBitwiseEqualsReferenceForAnyThreadCount) {
  const int64_t n = std::get<0>(GetParam());
  for (bool small : {true, false}) {
    const AdamWScalars s = Scalars(small);
    std::vector<float> p0 = Random(n, 1, 1.0f), g = Random(n, 2, 0.1f), m0 = Random(n, 3, 0.01f);
    std::vector<float> v0 = Random(n, 4, 0.001f);
    for (float& x : v0) x = std::fabs(x);
    std::vector<float> rp = p0, rm = m0, rv = v0;
    for (int step = 0; step < 3; ++step) ReferenceAdamW(s, rp, g, rm, rv);
    for (int threads : {1, 2, 3}) {
      std::vector<float> p = p0, m = m0, v = v0;
      std::vector<uint16_t> bf(n);
      for (int step = 0; step < 3; ++step) {
        AdamW(s, p.data(), g.data(), m.data(), v.data(), n, {bf.data(), DType::kBF16}, threads);
      }
      EXPECT_TRUE(SameBits(p, rp) && SameBits(m, rm) && SameBits(v, rv))
          << "n " << n << " threads " << threads << " small " << small;
      // The fused compute copy is the rounded parameter.
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(bf[i], F32ToBF16(p[i]).bits) << i;
      }
    }
  }
}

TEST_P(OptimKernelTest, SgdBitwiseEqualsReference) {
  const int64_t n = std::get<0>(GetParam());
  SgdScalars s{0.25f, 0.01f, 0.9f, -0.05f, true, false};
  std::vector<float> p0 = Random(n, 5, 1.0f), g = Random(n, 6, 0.1f), b0 = Random(n, 7, 0.1f);
  std::vector<float> rp = p0, rb = b0;
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] * s.grad_scale;
    gi = gi + s.weight_decay * rp[i];
    rb[i] = rb[i] * s.momentum + gi;
    rp[i] = rp[i] + s.neg_lr * rb[i];
  }
  for (int threads : {1, 3}) {
    std::vector<float> p = p0, b = b0;
    std::vector<uint16_t> h(n);
    Sgd(s, p.data(), g.data(), b.data(), n, {h.data(), DType::kF16}, threads);
    EXPECT_TRUE(SameBits(p, rp) && SameBits(b, rb)) << "n " << n << " threads " << threads;
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(h[i], F32ToF16(p[i]).bits) << i;
  }
}

TEST_P(OptimKernelTest, SumOfSquaresIsAccurateAndIdenticalAcrossThreads) {
  const int64_t n = std::get<0>(GetParam());
  const std::vector<float> x = Random(n, 8, 3.0f);
  long double ref = 0;
  for (float v : x) ref += static_cast<long double>(v) * v;
  const double one = SumOfSquares(x.data(), n, 1);
  EXPECT_NEAR(one, static_cast<double>(ref), 1e-12 * static_cast<double>(ref) + 1e-300);
  for (int threads : {2, 3}) EXPECT_EQ(one, SumOfSquares(x.data(), n, threads));
  ForceScalar(!std::get<1>(GetParam()));  // the other path gives the same bits
  EXPECT_EQ(one, SumOfSquares(x.data(), n, 1));
}

TEST_P(OptimKernelTest, UnscaleAndFiniteCheck) {
  const int64_t n = std::get<0>(GetParam());
  std::vector<float> x = Random(n, 9, 100.0f), want = x;
  for (float& v : want) v = v * 0.125f;
  EXPECT_TRUE(UnscaleAndCheckFinite(x.data(), n, 0.125f, 2));
  EXPECT_TRUE(SameBits(x, want));
  EXPECT_TRUE(AllFinite(x.data(), n, 2));
  if (n == 0) return;
  for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
    for (float bad : {INFINITY, -INFINITY, NAN}) {
      std::vector<float> y = Random(n, 10, 1.0f);
      y[at] = bad;
      EXPECT_FALSE(UnscaleAndCheckFinite(y.data(), n, 1.0f, 3)) << "at " << at;
      EXPECT_FALSE(AllFinite(y.data(), n, 1)) << "at " << at;
    }
  }
  // Overflow caused by the scaling itself is caught too.
  std::vector<float> big(n, 3e38f);
  EXPECT_FALSE(UnscaleAndCheckFinite(big.data(), n, 2.0f, 1));
}

TEST_P(OptimKernelTest, CastsMatchScalarConversionsAndStayWithinTolerance) {
  const int64_t n = std::get<0>(GetParam());
  std::mt19937 rng(11);
  std::vector<float> x(n);
  for (auto& v : x) {  // every kind of bit pattern: NaN, inf, subnormal, normal
    const uint32_t bits = rng();
    std::memcpy(&v, &bits, 4);
  }
  for (DType d : {DType::kBF16, DType::kF16}) {
    std::vector<uint16_t> h(n);
    std::vector<float> back(n);
    ASSERT_TRUE(CastCpu(x.data(), DType::kF32, h.data(), d, n, 2).ok());
    ASSERT_TRUE(CastCpu(h.data(), d, back.data(), DType::kF32, n, 3).ok());
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = d == DType::kBF16 ? F32ToBF16(x[i]).bits : F32ToF16(x[i]).bits;
      ASSERT_EQ(h[i], want) << DTypeName(d) << " element " << i << " of " << n;
      const float wide = d == DType::kBF16 ? BF16ToF32({h[i]}) : F16ToF32({h[i]});
      ASSERT_TRUE(SameBits({back[i]}, {wide})) << i;
      // Normal values in range round within the dtype's tolerance.
      const float a = std::fabs(x[i]);
      const bool in_range =
          std::isfinite(x[i]) &&
          (d == DType::kBF16 ? (a > 1e-37f && a < 3.38e38f) : (a > 6.2e-5f && a < 65000.0f));
      if (in_range) {
        ASSERT_LE(std::fabs(back[i] - x[i]), Tolerance(d) * a) << DTypeName(d) << " " << x[i];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(LengthsAndPaths, OptimKernelTest,
                         ::testing::Combine(::testing::ValuesIn(kLengths), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return absl::StrCat("n", std::get<0>(info.param),
                                               std::get<1>(info.param) ? "_scalar" : "_simd");
                         });

TEST(OptimKernels, ReportsThePath) {
  // On these machines AVX2 exists; the scalar path is what a CPU without it runs.
  ForceScalar(true);
  EXPECT_FALSE(UsingAvx2());
  ForceScalar(false);
  EXPECT_EQ(UsingAvx2(), static_cast<bool>(__builtin_cpu_supports("avx2")));
}

}  // namespace
}  // namespace trireme::kernels
