#include "optimizer/optimizer.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

// |actual - expected| <= rel * |expected| (plus a tiny absolute floor for zeros).
void ExpectRelNear(double actual, double expected, double rel, const char* what, int64_t i) {
  const double tol = rel * std::fabs(expected) + 1e-30;
  EXPECT_NEAR(actual, expected, tol) << what << "[" << i << "]";
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Deterministic pseudo-random floats in [lo, hi) (no <random> distribution, whose
// output is implementation-defined).
std::vector<float> Values(int64_t n, uint32_t seed, float lo, float hi) {
  std::vector<float> out(n);
  uint32_t state = seed * 2654435761u + 12345u;
  for (int64_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    const double u = static_cast<double>(state >> 8) / static_cast<double>(1u << 24);
    out[i] = static_cast<float>(lo + (hi - lo) * u);
  }
  return out;
}

// ----------------------------------------------------------------------------
// AdamW

// The header's formula, in double.
struct AdamRef {
  double p, m, v;
};

void AdamRefStep(const OptimizerConfig& c, int64_t step, double lr, bool decay, double grad_scale,
                 double g, AdamRef& s) {
  const double b1 = c.beta1, b2 = c.beta2, eps = c.eps, wd = c.weight_decay;
  g *= grad_scale;
  s.m = b1 * s.m + (1 - b1) * g;
  s.v = b2 * s.v + (1 - b2) * g * g;
  if (decay) s.p -= lr * wd * s.p;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step));
  s.p -= lr * (s.m / bc1) / (std::sqrt(s.v / bc2) + eps);
}

TEST(AdamWTest, MatchesClosedFormForThreeSteps) {
  OptimizerConfig c;
  c.beta1 = 0.9f;
  c.beta2 = 0.95f;
  c.eps = 1e-8f;
  c.weight_decay = 0.1f;
  const float lr = 1e-2f;
  std::vector<float> p = {0.5f, -1.25f, 2.0f, 0.75f, -3.0f};
  const std::vector<std::vector<float>> grads = {
      {0.1f, -0.2f, 3.0f, -1e-3f, 0.0f},
      {0.3f, -0.1f, 2.5f, -2e-3f, 0.5f},
      {0.2f, -0.4f, 1.0f, -5e-3f, 0.25f},
  };
  // Each element's gradient keeps its sign over the steps, so m does not cancel
  // and a relative tolerance is meaningful.
  const int64_t n = static_cast<int64_t>(p.size());
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  std::vector<AdamRef> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = {p[i], 0.0, 0.0};

  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<float>& g = grads[step - 1];
    ASSERT_TRUE(AdamWUpdate(c, step, lr, /*decay=*/true, /*grad_scale=*/1.0f, p.data(), g.data(),
                            m.data(), v.data(), n)
                    .ok());
    for (int64_t i = 0; i < n; ++i) {
      AdamRefStep(c, step, lr, true, 1.0, g[i], ref[i]);
      ExpectRelNear(p[i], ref[i].p, 1e-6, "p", i);
      ExpectRelNear(m[i], ref[i].m, 1e-6, "m", i);
      ExpectRelNear(v[i], ref[i].v, 1e-6, "v", i);
    }
  }
}

TEST(AdamWTest, FirstStepMovesByLrThanksToBiasCorrection) {
  // At step 1, m_hat = g and sqrt(v_hat) = |g|, so the update is lr * g / (|g| + eps):
  // lr in magnitude (up to eps / |g|), whatever the gradient's size.
  OptimizerConfig c;
  const float lr = 1e-3f;
  const std::vector<float> g = {1e-3f, -0.5f, 3.0f, -100.0f, 7e4f};
  const int64_t n = static_cast<int64_t>(g.size());
  std::vector<float> p(n, 0.0f), m(n, 0.0f), v(n, 0.0f);
  ASSERT_TRUE(
      AdamWUpdate(c, 1, lr, /*decay=*/false, 1.0f, p.data(), g.data(), m.data(), v.data(), n).ok());
  for (int64_t i = 0; i < n; ++i) {
    const double tol = lr * (1e-6 + c.eps / std::fabs(g[i]));
    EXPECT_NEAR(std::fabs(p[i]), lr, tol) << i;
    EXPECT_EQ(std::signbit(p[i]), !std::signbit(g[i])) << "moves against the gradient, " << i;
  }
}

TEST(AdamWTest, DecoupledWeightDecayOnlyWhenDecay) {
  OptimizerConfig c;
  c.weight_decay = 0.1f;
  const float lr = 0.01f;
  const std::vector<float> p0 = {0.5f, -2.0f, 4.0f};
  const std::vector<float> zero_g(3, 0.0f);
  const std::vector<float> g = {0.3f, -0.7f, 1.1f};

  // Zero gradient: the Adam term is 0 / eps = 0, only the decay moves p.
  {
    std::vector<float> p = p0, m(3, 0.0f), v(3, 0.0f);
    ASSERT_TRUE(
        AdamWUpdate(c, 1, lr, /*decay=*/true, 1.0f, p.data(), zero_g.data(), m.data(), v.data(), 3)
            .ok());
    for (int i = 0; i < 3; ++i) {
      ExpectRelNear(p[i], p0[i] * (1.0 - static_cast<double>(lr) * c.weight_decay), 1e-7, "p", i);
    }
    p = p0;
    ASSERT_TRUE(
        AdamWUpdate(c, 1, lr, /*decay=*/false, 1.0f, p.data(), zero_g.data(), m.data(), v.data(), 3)
            .ok());
    EXPECT_TRUE(BitwiseEqual(p, p0));
  }

  // Nonzero gradient: decay=false ignores weight_decay entirely (bitwise equal to
  // weight_decay = 0); decay=true additionally shrinks p by lr * wd * p.
  std::vector<float> p_decay = p0, m1(3, 0.0f), v1(3, 0.0f);
  std::vector<float> p_nodecay = p0, m2(3, 0.0f), v2(3, 0.0f);
  std::vector<float> p_wd0 = p0, m3(3, 0.0f), v3(3, 0.0f);
  OptimizerConfig c0 = c;
  c0.weight_decay = 0.0f;
  ASSERT_TRUE(
      AdamWUpdate(c, 1, lr, true, 1.0f, p_decay.data(), g.data(), m1.data(), v1.data(), 3).ok());
  ASSERT_TRUE(
      AdamWUpdate(c, 1, lr, false, 1.0f, p_nodecay.data(), g.data(), m2.data(), v2.data(), 3).ok());
  ASSERT_TRUE(
      AdamWUpdate(c0, 1, lr, true, 1.0f, p_wd0.data(), g.data(), m3.data(), v3.data(), 3).ok());
  EXPECT_TRUE(BitwiseEqual(p_nodecay, p_wd0));
  for (int i = 0; i < 3; ++i) {
    const double decay_term = static_cast<double>(lr) * c.weight_decay * p0[i];
    EXPECT_NEAR(p_nodecay[i] - p_decay[i], decay_term, 1e-6) << i;
    EXPECT_NE(p_decay[i], p_nodecay[i]) << i;
  }
  // The moments do not see the weight decay (it is decoupled).
  EXPECT_TRUE(BitwiseEqual(m1, m2));
  EXPECT_TRUE(BitwiseEqual(v1, v2));
}

TEST(AdamWTest, GradScaleHalfEqualsHalvedGradientBitwise) {
  OptimizerConfig c;
  c.weight_decay = 0.05f;
  const int64_t n = 37;
  const std::vector<float> p0 = Values(n, 1, -2.0f, 2.0f);
  std::vector<float> pa = p0, ma(n, 0.0f), va(n, 0.0f);
  std::vector<float> pb = p0, mb(n, 0.0f), vb(n, 0.0f);
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<float> g = Values(n, 10 + static_cast<uint32_t>(step), -1.0f, 1.0f);
    std::vector<float> half_g(n);
    for (int64_t i = 0; i < n; ++i) half_g[i] = g[i] / 2.0f;
    ASSERT_TRUE(
        AdamWUpdate(c, step, 1e-3f, true, 0.5f, pa.data(), g.data(), ma.data(), va.data(), n).ok());
    ASSERT_TRUE(
        AdamWUpdate(c, step, 1e-3f, true, 1.0f, pb.data(), half_g.data(), mb.data(), vb.data(), n)
            .ok());
  }
  EXPECT_TRUE(BitwiseEqual(pa, pb));
  EXPECT_TRUE(BitwiseEqual(ma, mb));
  EXPECT_TRUE(BitwiseEqual(va, vb));
}

TEST(AdamWTest, NearlyScaleInvariant) {
  // Doubling the gradient leaves the AdamW update (almost) unchanged.
  OptimizerConfig c;
  const std::vector<float> g = {0.3f, -1.5f, 0.02f};
  const std::vector<float> g2 = {0.6f, -3.0f, 0.04f};
  std::vector<float> p1(3, 0.0f), m1(3, 0.0f), v1(3, 0.0f);
  std::vector<float> p2(3, 0.0f), m2(3, 0.0f), v2(3, 0.0f);
  for (int64_t step = 1; step <= 2; ++step) {
    ASSERT_TRUE(
        AdamWUpdate(c, step, 1e-3f, false, 1.0f, p1.data(), g.data(), m1.data(), v1.data(), 3)
            .ok());
    ASSERT_TRUE(
        AdamWUpdate(c, step, 1e-3f, false, 1.0f, p2.data(), g2.data(), m2.data(), v2.data(), 3)
            .ok());
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(p1[i], 0.0f);
    EXPECT_NEAR(p2[i], p1[i], 1e-5 * std::fabs(p1[i])) << i;
  }
}

class AdamWLengthTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(AdamWLengthTest, EveryElementMatchesReferenceAndSingleElementCalls) {
  const int64_t n = GetParam();
  OptimizerConfig c;
  c.weight_decay = 0.01f;
  std::vector<float> p = Values(n, 3, 0.5f, 2.0f);  // away from 0: relative checks
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  // The same elements updated one call each: position in the span (vector body
  // or scalar tail) must not change a single bit.
  std::vector<float> p1 = p, m1 = m, v1 = v;
  std::vector<AdamRef> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = {p[i], 0.0, 0.0};
  for (int64_t step = 1; step <= 2; ++step) {
    const std::vector<float> g = Values(n, 100 + static_cast<uint32_t>(step), -0.5f, 0.5f);
    ASSERT_TRUE(
        AdamWUpdate(c, step, 3e-3f, true, 0.25f, p.data(), g.data(), m.data(), v.data(), n).ok());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(AdamWUpdate(c, step, 3e-3f, true, 0.25f, &p1[i], &g[i], &m1[i], &v1[i], 1).ok());
      AdamRefStep(c, step, 3e-3, true, 0.25, g[i], ref[i]);
    }
  }
  EXPECT_TRUE(BitwiseEqual(p, p1));
  EXPECT_TRUE(BitwiseEqual(m, m1));
  EXPECT_TRUE(BitwiseEqual(v, v1));
  for (int64_t i = 0; i < n; ++i) ExpectRelNear(p[i], ref[i].p, 1e-6, "p", i);
}

INSTANTIATE_TEST_SUITE_P(Lengths, AdamWLengthTest, ::testing::Values(0, 1, 7, 1021));

TEST(AdamWTest, AliasedSpansAreUpdatedElementwise) {
  // g == p (overlapping spans take the non-restrict loop): same bits as with a
  // separate copy of the gradient.
  OptimizerConfig c;
  c.weight_decay = 0.1f;
  const int64_t n = 21;
  std::vector<float> p = Values(n, 4, 0.5f, 2.0f), m(n, 0.0f), v(n, 0.0f);
  std::vector<float> q = p, qm = m, qv = v;
  const std::vector<float> g = q;
  ASSERT_TRUE(AdamWUpdate(c, 1, 1e-2f, true, 1.0f, p.data(), p.data(), m.data(), v.data(), n).ok());
  ASSERT_TRUE(
      AdamWUpdate(c, 1, 1e-2f, true, 1.0f, q.data(), g.data(), qm.data(), qv.data(), n).ok());
  EXPECT_TRUE(BitwiseEqual(p, q));
  EXPECT_TRUE(BitwiseEqual(m, qm));
  EXPECT_TRUE(BitwiseEqual(v, qv));
}

TEST(AdamWTest, BetaOneBelowHalfUsesOtherLerpBranch) {
  // 1 - beta1 >= 0.5 takes torch's other lerp form; still the closed form.
  OptimizerConfig c;
  c.beta1 = 0.3f;
  std::vector<float> p = {1.0f, -0.5f}, m(2, 0.0f), v(2, 0.0f);
  std::vector<AdamRef> ref = {{1.0, 0.0, 0.0}, {-0.5, 0.0, 0.0}};
  const std::vector<std::vector<float>> grads = {{0.2f, -0.4f}, {0.6f, -0.1f}, {0.3f, -0.3f}};
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<float>& g = grads[step - 1];
    ASSERT_TRUE(
        AdamWUpdate(c, step, 1e-2f, false, 1.0f, p.data(), g.data(), m.data(), v.data(), 2).ok());
    for (int64_t i = 0; i < 2; ++i) {
      AdamRefStep(c, step, 1e-2f, false, 1.0, g[i], ref[i]);
      ExpectRelNear(p[i], ref[i].p, 1e-6, "p", i);
      ExpectRelNear(m[i], ref[i].m, 1e-6, "m", i);
    }
  }
}

// ----------------------------------------------------------------------------
// SGD

TEST(SgdTest, FirstStepBufferIsGradientThenMomentumAccumulates) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.momentum = 0.9f;
  const float lr = 0.1f;
  std::vector<float> p = {1.0f, -2.0f};
  std::vector<float> buf = {123.0f, -456.0f};  // stale contents: ignored at step 1
  const std::vector<float> g1 = {0.5f, 0.25f};
  const std::vector<float> g2 = {-1.0f, 0.75f};

  ASSERT_TRUE(SgdUpdate(c, 1, lr, false, 1.0f, p.data(), g1.data(), buf.data(), 2).ok());
  EXPECT_EQ(buf[0], g1[0]);
  EXPECT_EQ(buf[1], g1[1]);
  const double p1_0 = 1.0 - 0.1 * 0.5, p1_1 = -2.0 - 0.1 * 0.25;
  ExpectRelNear(p[0], p1_0, 1e-7, "p", 0);
  ExpectRelNear(p[1], p1_1, 1e-7, "p", 1);

  ASSERT_TRUE(SgdUpdate(c, 2, lr, false, 1.0f, p.data(), g2.data(), buf.data(), 2).ok());
  const double b0 = 0.9 * 0.5 + -1.0, b1 = 0.9 * 0.25 + 0.75;
  ExpectRelNear(buf[0], b0, 1e-6, "buf", 0);
  ExpectRelNear(buf[1], b1, 1e-6, "buf", 1);
  ExpectRelNear(p[0], p1_0 - 0.1 * b0, 1e-6, "p", 0);
  ExpectRelNear(p[1], p1_1 - 0.1 * b1, 1e-6, "p", 1);
}

TEST(SgdTest, WeightDecayAddsWdTimesParamToGradient) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.weight_decay = 0.5f;
  const float lr = 0.25f;
  std::vector<float> p = {2.0f, -4.0f}, buf(2, 0.0f);
  const std::vector<float> g = {1.0f, 1.0f};
  ASSERT_TRUE(SgdUpdate(c, 1, lr, /*decay=*/true, 1.0f, p.data(), g.data(), buf.data(), 2).ok());
  // g' = g + 0.5 p = {2, -1}; p -= 0.25 g'. All exact in fp32.
  EXPECT_EQ(buf[0], 2.0f);
  EXPECT_EQ(buf[1], -1.0f);
  EXPECT_EQ(p[0], 1.5f);
  EXPECT_EQ(p[1], -3.75f);

  // decay=false ignores weight_decay.
  std::vector<float> q = {2.0f, -4.0f}, qbuf(2, 0.0f);
  ASSERT_TRUE(SgdUpdate(c, 1, lr, /*decay=*/false, 1.0f, q.data(), g.data(), qbuf.data(), 2).ok());
  EXPECT_EQ(q[0], 1.75f);
  EXPECT_EQ(q[1], -4.25f);
}

TEST(SgdTest, NotScaleInvariant) {
  // Doubling the gradient doubles the SGD update (AdamW: see NearlyScaleInvariant).
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  const std::vector<float> g = {0.3f, -1.5f, 0.02f};
  const std::vector<float> g2 = {0.6f, -3.0f, 0.04f};
  std::vector<float> p1(3, 0.0f), b1(3, 0.0f), p2(3, 0.0f), b2(3, 0.0f);
  for (int64_t step = 1; step <= 2; ++step) {
    ASSERT_TRUE(SgdUpdate(c, step, 0.1f, false, 1.0f, p1.data(), g.data(), b1.data(), 3).ok());
    ASSERT_TRUE(SgdUpdate(c, step, 0.1f, false, 1.0f, p2.data(), g2.data(), b2.data(), 3).ok());
  }
  for (int i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(p2[i], 2.0f * p1[i]) << i;

  // ... while the same experiment on AdamW moves by (almost) the same amount.
  OptimizerConfig a;
  std::vector<float> q1(3, 0.0f), m1(3, 0.0f), v1(3, 0.0f);
  std::vector<float> q2(3, 0.0f), m2(3, 0.0f), v2(3, 0.0f);
  ASSERT_TRUE(
      AdamWUpdate(a, 1, 0.1f, false, 1.0f, q1.data(), g.data(), m1.data(), v1.data(), 3).ok());
  ASSERT_TRUE(
      AdamWUpdate(a, 1, 0.1f, false, 1.0f, q2.data(), g2.data(), m2.data(), v2.data(), 3).ok());
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(q2[i], q1[i], 1e-5 * std::fabs(q1[i])) << i;
}

TEST(SgdTest, GradScaleScalesGradient) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  std::vector<float> p = {1.0f}, buf = {0.0f};
  const std::vector<float> g = {8.0f};
  ASSERT_TRUE(SgdUpdate(c, 1, 0.5f, false, 0.25f, p.data(), g.data(), buf.data(), 1).ok());
  EXPECT_EQ(buf[0], 2.0f);
  EXPECT_EQ(p[0], 0.0f);
}

class SgdLengthTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(SgdLengthTest, EveryElementMatchesReference) {
  const int64_t n = GetParam();
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.momentum = 0.8f;
  c.weight_decay = 0.01f;
  std::vector<float> p = Values(n, 5, 0.5f, 2.0f);  // away from 0: relative checks
  std::vector<float> buf(n, 0.0f);
  std::vector<double> rp(p.begin(), p.end()), rbuf(n, 0.0);
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<float> g = Values(n, 200 + static_cast<uint32_t>(step), -0.5f, 0.5f);
    ASSERT_TRUE(SgdUpdate(c, step, 0.05f, true, 0.5f, p.data(), g.data(), buf.data(), n).ok());
    for (int64_t i = 0; i < n; ++i) {
      const double gg = 0.5 * g[i] + static_cast<double>(c.weight_decay) * rp[i];
      rbuf[i] = step == 1 ? gg : static_cast<double>(c.momentum) * rbuf[i] + gg;
      rp[i] -= static_cast<double>(0.05f) * rbuf[i];
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    // Absolute tolerance for buf, whose value can cancel to ~0.
    EXPECT_NEAR(buf[i], rbuf[i], 1e-6) << i;
    ExpectRelNear(p[i], rp[i], 1e-5, "p", i);
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, SgdLengthTest, ::testing::Values(0, 1, 7, 1021));

TEST(SgdTest, AliasedSpansAreUpdatedElementwise) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.weight_decay = 0.1f;
  const int64_t n = 21;
  std::vector<float> p = Values(n, 6, 0.5f, 2.0f), buf(n, 0.0f);
  std::vector<float> q = p, qbuf = buf;
  const std::vector<float> g = q;
  ASSERT_TRUE(SgdUpdate(c, 1, 0.1f, true, 1.0f, p.data(), p.data(), buf.data(), n).ok());
  ASSERT_TRUE(SgdUpdate(c, 1, 0.1f, true, 1.0f, q.data(), g.data(), qbuf.data(), n).ok());
  EXPECT_TRUE(BitwiseEqual(p, q));
  EXPECT_TRUE(BitwiseEqual(buf, qbuf));
}

TEST(SgdTest, ZeroMomentumIsPlainSgd) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.momentum = 0.0f;
  std::vector<float> p = {1.0f}, buf = {std::numeric_limits<float>::quiet_NaN()};
  const std::vector<float> g = {2.0f};
  ASSERT_TRUE(SgdUpdate(c, 5, 0.25f, false, 1.0f, p.data(), g.data(), buf.data(), 1).ok());
  EXPECT_EQ(p[0], 0.5f);  // no stale buffer is read
  EXPECT_EQ(buf[0], 2.0f);
}

// ----------------------------------------------------------------------------
// OptimizerConfig::Validate

TEST(OptimizerConfigTest, DefaultsAreValid) {
  EXPECT_TRUE(OptimizerConfig().Validate().ok());
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::kSgd;
  EXPECT_TRUE(sgd.Validate().ok());
  EXPECT_EQ(OptimizerConfig().state_per_param(), 2);
  EXPECT_EQ(sgd.state_per_param(), 1);
}

TEST(OptimizerConfigTest, RejectsBadFieldsNamingThem) {
  struct Case {
    void (*mutate)(OptimizerConfig&);
    const char* field;
  };
  const Case cases[] = {
      {[](OptimizerConfig& c) { c.beta1 = 1.0f; }, "beta1 = 1"},
      {[](OptimizerConfig& c) { c.beta1 = -0.1f; }, "beta1 = -0.1"},
      {[](OptimizerConfig& c) { c.beta2 = 1.5f; }, "beta2 = 1.5"},
      {[](OptimizerConfig& c) { c.eps = 0.0f; }, "eps = 0"},
      {[](OptimizerConfig& c) { c.eps = std::nanf(""); }, "eps = nan"},
      {[](OptimizerConfig& c) { c.weight_decay = -0.01f; }, "weight_decay = -0.01"},
      {[](OptimizerConfig& c) { c.momentum = 1.0f; }, "momentum = 1"},
  };
  for (const Case& k : cases) {
    OptimizerConfig c;
    k.mutate(c);
    const absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::string("OptimizerConfig.") + k.field));
  }
}

// ----------------------------------------------------------------------------
// LrSchedule

TEST(LrScheduleTest, Constant) {
  LrSchedule s;
  s.lr = 3e-4f;
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(s.At(1), 3e-4f);
  EXPECT_EQ(s.At(1000000), 3e-4f);
}

TEST(LrScheduleTest, WarmupCosine) {
  LrSchedule s;
  s.kind = LrSchedule::Kind::kWarmupCosine;
  s.lr = 1e-3f;
  s.min_lr = 1e-4f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_FLOAT_EQ(s.At(1), 1e-4f);  // lr * 1 / 10
  EXPECT_FLOAT_EQ(s.At(5), 5e-4f);
  EXPECT_EQ(s.At(10), s.lr);  // end of warmup: the peak
  EXPECT_LT(s.At(11), s.lr);  // decay starts right after
  EXPECT_GT(s.At(11), s.At(12));
  EXPECT_FLOAT_EQ(s.At(60), (s.lr + s.min_lr) / 2);  // cosine midpoint
  const double pi = 3.14159265358979323846;
  EXPECT_FLOAT_EQ(s.At(35), static_cast<float>(1e-4 + 9e-4 * 0.5 * (1 + std::cos(pi * 0.25))));
  EXPECT_EQ(s.At(110), s.min_lr);  // total
  EXPECT_EQ(s.At(111), s.min_lr);  // after total
  EXPECT_EQ(s.At(100000), s.min_lr);
}

TEST(LrScheduleTest, WarmupCosineWithoutWarmupStartsNearPeak) {
  LrSchedule s;
  s.kind = LrSchedule::Kind::kWarmupCosine;
  s.lr = 1.0f;
  s.warmup_steps = 0;
  s.total_steps = 4;
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_FLOAT_EQ(s.At(1), static_cast<float>(0.5 * (1 + std::cos(3.14159265358979323846 / 4))));
  EXPECT_FLOAT_EQ(s.At(2), 0.5f);
  EXPECT_EQ(s.At(4), 0.0f);
}

TEST(LrScheduleTest, WarmupEqualToTotal) {
  LrSchedule s;
  s.kind = LrSchedule::Kind::kWarmupCosine;
  s.lr = 2.0f;
  s.min_lr = 0.5f;
  s.warmup_steps = 4;
  s.total_steps = 4;
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(s.At(2), 1.0f);
  EXPECT_EQ(s.At(4), 2.0f);
  EXPECT_EQ(s.At(5), 0.5f);
}

TEST(LrScheduleTest, ValidateRejectsBadConfigsNamingTheField) {
  struct Case {
    void (*mutate)(LrSchedule&);
    const char* field;
  };
  const Case cases[] = {
      {[](LrSchedule& s) { s.lr = 0.0f; }, "LrSchedule.lr = 0"},
      {[](LrSchedule& s) { s.lr = -1.0f; }, "LrSchedule.lr = -1"},
      {[](LrSchedule& s) { s.min_lr = -1e-5f; }, "LrSchedule.min_lr = -1e-05"},
      {[](LrSchedule& s) { s.min_lr = 1.0f; }, "LrSchedule.min_lr = 1"},  // > lr
      {[](LrSchedule& s) { s.warmup_steps = -1; }, "LrSchedule.warmup_steps = -1"},
      {[](LrSchedule& s) { s.total_steps = 0; }, "LrSchedule.total_steps = 0"},
      {[](LrSchedule& s) { s.warmup_steps = 10, s.total_steps = 9; }, "LrSchedule.total_steps = 9"},
  };
  for (const Case& k : cases) {
    for (LrSchedule::Kind kind : {LrSchedule::Kind::kConstant, LrSchedule::Kind::kWarmupCosine}) {
      LrSchedule s;
      s.kind = kind;
      s.total_steps = 100;
      k.mutate(s);
      const absl::Status st = s.Validate();
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << k.field;
      EXPECT_THAT(std::string(st.message()), HasSubstr(k.field));
    }
  }
}

// ----------------------------------------------------------------------------
// LossScaler

LossScaler::Config ScalerConfig() {
  LossScaler::Config c;
  c.initial_scale = 1024.0f;
  c.growth_factor = 2.0f;
  c.backoff_factor = 0.5f;
  c.growth_interval = 3;
  c.hysteresis = 1;
  c.min_scale = 1.0f;
  return c;
}

TEST(LossScalerTest, OverflowBacksOffAndSkips) {
  LossScaler s(ScalerConfig());
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.state().good_steps, 1);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 512.0f);
  EXPECT_EQ(s.state().good_steps, 0);
  EXPECT_EQ(s.state().hysteresis_left, 1);
}

TEST(LossScalerTest, HysteresisTwoNeedsTwoOverflows) {
  LossScaler::Config c = ScalerConfig();
  c.hysteresis = 2;
  LossScaler s(c);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 1024.0f);  // tolerated, but still skipped
  EXPECT_EQ(s.state().hysteresis_left, 1);
  EXPECT_FALSE(s.Update(false));  // a good step does not restore the budget
  EXPECT_EQ(s.state().hysteresis_left, 1);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 512.0f);
  EXPECT_EQ(s.state().hysteresis_left, 2);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 512.0f);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 256.0f);
}

TEST(LossScalerTest, GrowsAfterGrowthIntervalGoodSteps) {
  LossScaler s(ScalerConfig());
  EXPECT_FALSE(s.Update(false));
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 2048.0f);
  EXPECT_EQ(s.state().good_steps, 0);
  // An overflow resets the count of consecutive good steps.
  EXPECT_FALSE(s.Update(false));
  EXPECT_FALSE(s.Update(false));
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_FALSE(s.Update(false));
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 2048.0f);
}

TEST(LossScalerTest, GrowthRestoresHysteresis) {
  LossScaler::Config c = ScalerConfig();
  c.hysteresis = 2;
  LossScaler s(c);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.state().hysteresis_left, 1);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 2048.0f);
  EXPECT_EQ(s.state().hysteresis_left, 2);
}

TEST(LossScalerTest, MinScaleFloor) {
  LossScaler::Config c = ScalerConfig();
  c.initial_scale = 4.0f;
  c.min_scale = 1.5f;
  LossScaler s(c);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 2.0f);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 1.5f);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 1.5f);
}

TEST(LossScalerTest, NeverGrowsToInfinity) {
  LossScaler::Config c = ScalerConfig();
  c.initial_scale = std::ldexp(1.0f, 127);
  c.growth_interval = 1;
  LossScaler s(c);
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), std::ldexp(1.0f, 127));
}

TEST(LossScalerTest, StateRoundTrip) {
  LossScaler::Config c = ScalerConfig();
  c.hysteresis = 3;
  LossScaler a(c);
  a.Update(false);
  a.Update(true);
  a.Update(false);
  const LossScaler::State st = a.state();
  EXPECT_EQ(st.scale, 1024.0f);
  EXPECT_EQ(st.good_steps, 1);
  EXPECT_EQ(st.hysteresis_left, 2);

  LossScaler b(c);  // a fresh scaler, as after loading a checkpoint
  b.set_state(st);
  EXPECT_EQ(b.state().scale, st.scale);
  EXPECT_EQ(b.state().good_steps, st.good_steps);
  EXPECT_EQ(b.state().hysteresis_left, st.hysteresis_left);
  // From equal states, equal futures.
  const bool outcomes[] = {false, true, true, false, false, false, true, true, true};
  for (bool overflow : outcomes) {
    EXPECT_EQ(a.Update(overflow), b.Update(overflow));
    EXPECT_EQ(a.scale(), b.scale());
    EXPECT_EQ(a.state().good_steps, b.state().good_steps);
    EXPECT_EQ(a.state().hysteresis_left, b.state().hysteresis_left);
  }
}

TEST(LossScalerTest, NonDynamicKeepsScaleButStillSkipsOverflows) {
  LossScaler::Config c = ScalerConfig();
  c.dynamic = false;
  c.initial_scale = 128.0f;
  LossScaler s(c);
  EXPECT_TRUE(s.Update(true));
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 128.0f);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 128.0f);
}

// ----------------------------------------------------------------------------
// ClipCoefficient

TEST(ClipCoefficientTest, Values) {
  EXPECT_EQ(ClipCoefficient(0.5, 1.0f), 1.0f);
  EXPECT_EQ(ClipCoefficient(0.0, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(ClipCoefficient(4.0, 1.0f), static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_FLOAT_EQ(ClipCoefficient(2.5, 0.5f), static_cast<float>(0.5 / (2.5 + 1e-6)));
  EXPECT_LT(ClipCoefficient(1.0, 1.0f), 1.0f);    // equal norm: just below 1, as in torch
  EXPECT_EQ(ClipCoefficient(100.0, 0.0f), 1.0f);  // clipping off
  EXPECT_EQ(ClipCoefficient(100.0, -1.0f), 1.0f);
  EXPECT_EQ(ClipCoefficient(std::numeric_limits<double>::quiet_NaN(), 1.0f), 1.0f);
  EXPECT_EQ(ClipCoefficient(std::numeric_limits<double>::infinity(), 1.0f), 1.0f);
}

// ----------------------------------------------------------------------------
// SumOfSquares, AllFinite

TEST(SumOfSquaresTest, SmallExact) {
  const float x[] = {1.0f, -2.0f, 3.0f};
  EXPECT_EQ(SumOfSquares(x, 3), 14.0);
  EXPECT_EQ(SumOfSquares(nullptr, 0), 0.0);
  // Accumulated in double: a float's square beyond fp32 range is fine.
  const float big[] = {3e30f, 4e30f};
  const double b0 = big[0], b1 = big[1];
  EXPECT_EQ(SumOfSquares(big, 2), b0 * b0 + b1 * b1);
}

TEST(SumOfSquaresTest, MatchesDoubleSumAndSplits) {
  for (int64_t n : {1, 7, 1021}) {
    const std::vector<float> x = Values(n, 7, -3.0f, 3.0f);
    double expected = 0.0;
    for (float f : x) expected += static_cast<double>(f) * f;
    const double total = SumOfSquares(x.data(), n);
    EXPECT_NEAR(total, expected, 1e-12 * expected) << n;
    for (int64_t k : {int64_t{0}, int64_t{1}, n / 2, n - 1, n}) {
      const double split = SumOfSquares(x.data(), k) + SumOfSquares(x.data() + k, n - k);
      EXPECT_NEAR(split, total, 1e-12 * total) << n << " split at " << k;
    }
  }
}

TEST(AllFiniteTest, DetectsInfAndNan) {
  EXPECT_TRUE(AllFinite(nullptr, 0));
  std::vector<float> x = Values(1021, 9, -1.0f, 1.0f);
  x[3] = std::numeric_limits<float>::max();
  x[4] = std::numeric_limits<float>::denorm_min();
  x[5] = -0.0f;
  EXPECT_TRUE(AllFinite(x.data(), 1021));
  for (int64_t pos : {0, 500, 1020}) {
    for (float bad :
         {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
          std::numeric_limits<float>::quiet_NaN()}) {
      std::vector<float> y = x;
      y[pos] = bad;
      EXPECT_FALSE(AllFinite(y.data(), 1021)) << pos << " " << bad;
      EXPECT_TRUE(AllFinite(y.data(), pos)) << "the prefix before it is finite";
    }
  }
}

}  // namespace
// Steps are 1-based: step 0 is an error that stays in optimized builds
// (it was an assert), and nothing is updated.
TEST(Optimizer, StepZeroIsAnErrorAndUpdatesNothing) {
  OptimizerConfig c;
  float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
  const absl::Status a = AdamWUpdate(c, 0, 1e-2f, true, 1.0f, &p, &g, &m, &v, 1);
  EXPECT_EQ(a.code(), absl::StatusCode::kInvalidArgument) << a;
  EXPECT_NE(std::string(a.message()).find("step 0 < 1"), std::string::npos) << a;
  const absl::Status s = SgdUpdate(c, -3, 1e-2f, true, 1.0f, &p, &g, &m, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(p, 1.0f);
  EXPECT_EQ(m, 0.0f);
  EXPECT_FALSE(AdamWScalarsFor(c, 0, 1e-2f, true, 1.0f).ok());
}

}  // namespace trireme
