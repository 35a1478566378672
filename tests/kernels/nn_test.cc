// The GPT-2 kernels of kernels/nn.h: each forward against a plain double
// reference written here, each backward against central finite differences of
// the float forward (objective accumulated in double), plus the properties
// that matter to a model: causality, padded vocabularies, accumulation into
// parameter gradients, and invalid ids/targets reported, not crashed on.
#include "kernels/nn.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/nn_body.h"
#include "kernels/optim.h"
#include "tests/kernels/test_util.h"

namespace trireme::kernels {
namespace {

using testing::Random;

using ::testing::HasSubstr;

// Tolerances in one place. Forward: against a double reference, relative to
// max(1, |expected|). Backward: central differences with step kFdEps, the
// analytic gradient within kFdTol of the numeric one, relative to
// max(1, |numeric|).
constexpr double kForwardTol = 1e-5;
constexpr float kFdEps = 1e-3f;
constexpr double kFdTol = 2e-3;

void ExpectClose(const std::vector<float>& actual, const std::vector<double>& expected, double tol,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], tol * std::max(1.0, std::fabs(expected[i])))
        << what << "[" << i << "]";
  }
}

// sum_i w[i] * y[i] in double: the scalar objective whose gradient is w.
double Dot(const std::vector<float>& w, const std::vector<float>& y) {
  double s = 0.0;
  for (size_t i = 0; i < w.size(); ++i) s += static_cast<double>(w[i]) * y[i];
  return s;
}

// Central differences of `objective` with respect to every element of *x.
// The denominator is the exact distance between the two float points.
std::vector<double> NumericGrad(std::vector<float>* x, const std::function<double()>& objective) {
  std::vector<double> g(x->size());
  for (size_t i = 0; i < x->size(); ++i) {
    const float saved = (*x)[i];
    const float hi = saved + kFdEps;
    const float lo = saved - kFdEps;
    (*x)[i] = hi;
    const double f_hi = objective();
    (*x)[i] = lo;
    const double f_lo = objective();
    (*x)[i] = saved;
    g[i] = (f_hi - f_lo) / (static_cast<double>(hi) - static_cast<double>(lo));
  }
  return g;
}

// b - a, element-wise (what a backward added into a parameter gradient).
std::vector<float> Added(const std::vector<float>& before, const std::vector<float>& after) {
  std::vector<float> d(after.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
  return d;
}

// ---- LayerNorm --------------------------------------------------------------

TEST(LayerNormTest, ForwardMatchesReference) {
  const int64_t rows = 4, dim = 7;
  const float eps = 1e-5f;
  std::vector<float> x = Random(rows * dim, 1, -2.0f, 3.0f);
  const std::vector<float> gamma = Random(dim, 2, 0.5f, 1.5f);
  const std::vector<float> beta = Random(dim, 3);
  std::vector<float> y(rows * dim), mean(rows), rstd(rows);
  LayerNormForward(x.data(), gamma.data(), beta.data(), rows, dim, eps, y.data(), mean.data(),
                   rstd.data());
  std::vector<double> y_ref(rows * dim), mean_ref(rows), rstd_ref(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0.0, var = 0.0;
    for (int64_t i = 0; i < dim; ++i) mu += x[r * dim + i];
    mu /= dim;
    for (int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mu) * (x[r * dim + i] - mu);
    var /= dim;
    mean_ref[r] = mu;
    rstd_ref[r] = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i) {
      y_ref[r * dim + i] = (x[r * dim + i] - mu) * rstd_ref[r] * gamma[i] + beta[i];
    }
  }
  ExpectClose(y, y_ref, kForwardTol, "y");
  ExpectClose(mean, mean_ref, kForwardTol, "mean");
  ExpectClose(rstd, rstd_ref, kForwardTol, "rstd");

  // In place (y == x) gives the same result.
  std::vector<float> m2(rows), r2(rows);
  LayerNormForward(x.data(), gamma.data(), beta.data(), rows, dim, eps, x.data(), m2.data(),
                   r2.data());
  EXPECT_EQ(x, y);
}

TEST(LayerNormTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, dim = 6;
  const float eps = 1e-5f;
  std::vector<float> x = Random(rows * dim, 4, -2.0f, 2.0f);
  std::vector<float> gamma = Random(dim, 5, 0.5f, 1.5f);
  std::vector<float> beta = Random(dim, 6);
  const std::vector<float> w = Random(rows * dim, 7);  // dy
  std::vector<float> y(rows * dim), mean(rows), rstd(rows);
  auto objective = [&] {
    LayerNormForward(x.data(), gamma.data(), beta.data(), rows, dim, eps, y.data(), mean.data(),
                     rstd.data());
    return Dot(w, y);
  };
  objective();
  const std::vector<float> dgamma0 = Random(dim, 8), dbeta0 = Random(dim, 9);
  std::vector<float> dx(rows * dim), dgamma = dgamma0, dbeta = dbeta0;
  LayerNormBackward(w.data(), x.data(), gamma.data(), mean.data(), rstd.data(), rows, dim,
                    dx.data(), dgamma.data(), dbeta.data());
  ExpectClose(dx, NumericGrad(&x, objective), kFdTol, "dx");
  ExpectClose(Added(dgamma0, dgamma), NumericGrad(&gamma, objective), kFdTol, "dgamma");
  ExpectClose(Added(dbeta0, dbeta), NumericGrad(&beta, objective), kFdTol, "dbeta");

  // dx may be dy.
  std::vector<float> inplace = w, g2(dim, 0.0f), b2(dim, 0.0f);
  objective();
  LayerNormBackward(inplace.data(), x.data(), gamma.data(), mean.data(), rstd.data(), rows, dim,
                    inplace.data(), g2.data(), b2.data());
  EXPECT_EQ(inplace, dx);
}

// ---- RMSNorm ----------------------------------------------------------------

TEST(RmsNormTest, ForwardMatchesReference) {
  const int64_t rows = 4, dim = 7;
  const float eps = 1e-5f;
  std::vector<float> x = Random(rows * dim, 100, -2.0f, 3.0f);
  const std::vector<float> gamma = Random(dim, 101, 0.5f, 1.5f);
  std::vector<float> y(rows * dim), rstd(rows);
  RmsNormForward(x.data(), gamma.data(), rows, dim, eps, y.data(), rstd.data());
  std::vector<double> y_ref(rows * dim), rstd_ref(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sq += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    rstd_ref[r] = 1.0 / std::sqrt(sq / dim + eps);
    for (int64_t i = 0; i < dim; ++i) y_ref[r * dim + i] = x[r * dim + i] * rstd_ref[r] * gamma[i];
  }
  ExpectClose(y, y_ref, kForwardTol, "y");
  ExpectClose(rstd, rstd_ref, kForwardTol, "rstd");

  // In place (y == x) gives the same result.
  std::vector<float> r2(rows);
  RmsNormForward(x.data(), gamma.data(), rows, dim, eps, x.data(), r2.data());
  EXPECT_EQ(x, y);
  EXPECT_EQ(r2, rstd);
}

TEST(RmsNormTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, dim = 6;
  const float eps = 1e-5f;
  std::vector<float> x = Random(rows * dim, 102, -2.0f, 2.0f);
  std::vector<float> gamma = Random(dim, 103, 0.5f, 1.5f);
  const std::vector<float> w = Random(rows * dim, 104);  // dy
  std::vector<float> y(rows * dim), rstd(rows);
  auto objective = [&] {
    RmsNormForward(x.data(), gamma.data(), rows, dim, eps, y.data(), rstd.data());
    return Dot(w, y);
  };
  objective();
  const std::vector<float> dgamma0 = Random(dim, 105);
  std::vector<float> dx(rows * dim), dgamma = dgamma0;
  RmsNormBackward(w.data(), x.data(), gamma.data(), rstd.data(), rows, dim, dx.data(),
                  dgamma.data());
  ExpectClose(dx, NumericGrad(&x, objective), kFdTol, "dx");
  ExpectClose(Added(dgamma0, dgamma), NumericGrad(&gamma, objective), kFdTol, "dgamma");

  // dx may be dy.
  std::vector<float> inplace = w, g2 = dgamma0;
  objective();
  RmsNormBackward(inplace.data(), x.data(), gamma.data(), rstd.data(), rows, dim, inplace.data(),
                  g2.data());
  EXPECT_EQ(inplace, dx);
  EXPECT_EQ(g2, dgamma);
}

// Large enough that ParallelFor splits rows and columns over 3 threads.
TEST(RmsNormTest, ThreadCountDoesNotChangeBits) {
  const int64_t rows = 67, dim = 300;
  const std::vector<float> x = Random(rows * dim, 106, -3.0f, 3.0f), gamma = Random(dim, 107),
                           dy = Random(rows * dim, 108), dgamma0 = Random(dim, 109);
  std::vector<float> y[2], rstd[2], dx[2], dgamma[2];
  const int threads[2] = {1, 3};
  for (int k = 0; k < 2; ++k) {
    y[k].resize(rows * dim);
    rstd[k].resize(rows);
    dx[k].resize(rows * dim);
    dgamma[k] = dgamma0;
    RmsNormForward(x.data(), gamma.data(), rows, dim, 1e-5f, y[k].data(), rstd[k].data(),
                   threads[k]);
    RmsNormBackward(dy.data(), x.data(), gamma.data(), rstd[k].data(), rows, dim, dx[k].data(),
                    dgamma[k].data(), threads[k]);
  }
  EXPECT_TRUE(testing::SameBits(y[0], y[1]));
  EXPECT_TRUE(testing::SameBits(rstd[0], rstd[1]));
  EXPECT_TRUE(testing::SameBits(dx[0], dx[1]));
  EXPECT_TRUE(testing::SameBits(dgamma[0], dgamma[1]));
}

// ---- SwiGLU -----------------------------------------------------------------

double SiluRef(double g) { return g / (1.0 + std::exp(-g)); }

TEST(SwiGluTest, ForwardMatchesReference) {
  std::vector<float> gate = Random(64, 110, -8.0f, 8.0f);
  gate.insert(gate.end(), {0.0f, 1.0f, -1.0f, 30.0f, -30.0f, 100.0f, -100.0f});
  const int64_t n = static_cast<int64_t>(gate.size());
  std::vector<float> up = Random(n, 111, -2.0f, 2.0f);
  std::vector<float> y(n);
  SwiGluForward(gate.data(), up.data(), n, y.data());
  std::vector<double> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = SiluRef(gate[i]) * up[i];
  ExpectClose(y, ref, kForwardTol, "swiglu");

  // y may be gate or up.
  std::vector<float> g2 = gate, u2 = up;
  SwiGluForward(g2.data(), up.data(), n, g2.data());
  SwiGluForward(gate.data(), u2.data(), n, u2.data());
  EXPECT_EQ(g2, y);
  EXPECT_EQ(u2, y);
}

TEST(SwiGluTest, BackwardMatchesFiniteDifferences) {
  std::vector<float> gate = Random(40, 112, -5.0f, 5.0f);
  gate.insert(gate.end(), {0.0f, 0.5f, -0.5f, 2.0f, -2.0f});
  const int64_t n = static_cast<int64_t>(gate.size());
  std::vector<float> up = Random(n, 113, -2.0f, 2.0f);
  const std::vector<float> w = Random(n, 114);  // dy
  std::vector<float> y(n), dgate(n), dup(n);
  auto objective = [&] {
    SwiGluForward(gate.data(), up.data(), n, y.data());
    return Dot(w, y);
  };
  SwiGluBackward(gate.data(), up.data(), w.data(), n, dgate.data(), dup.data());
  ExpectClose(dgate, NumericGrad(&gate, objective), kFdTol, "dgate");
  ExpectClose(dup, NumericGrad(&up, objective), kFdTol, "dup");
  // And against the closed form in double.
  std::vector<double> dgate_ref(n), dup_ref(n);
  for (int64_t i = 0; i < n; ++i) {
    const double sig = 1.0 / (1.0 + std::exp(-static_cast<double>(gate[i])));
    dgate_ref[i] = w[i] * up[i] * sig * (1.0 + gate[i] * (1.0 - sig));
    dup_ref[i] = w[i] * SiluRef(gate[i]);
  }
  ExpectClose(dgate, dgate_ref, kForwardTol, "dgate (closed form)");
  ExpectClose(dup, dup_ref, kForwardTol, "dup (closed form)");

  // dgate may be dy; dup may be up.
  std::vector<float> dy2 = w, up2 = up;
  SwiGluBackward(gate.data(), up2.data(), dy2.data(), n, dy2.data(), up2.data());
  EXPECT_EQ(dy2, dgate);
  EXPECT_EQ(up2, dup);
}

// Past 3 x 2^15 elements, so ParallelFor uses all 3 threads.
TEST(SwiGluTest, ThreadCountDoesNotChangeBits) {
  const int64_t n = 3 * (1 << 15) + 1001;
  const std::vector<float> gate = Random(n, 115, -6.0f, 6.0f), up = Random(n, 116),
                           dy = Random(n, 117);
  std::vector<float> y1(n), y3(n), dg1(n), dg3(n), du1(n), du3(n);
  SwiGluForward(gate.data(), up.data(), n, y1.data(), 1);
  SwiGluForward(gate.data(), up.data(), n, y3.data(), 3);
  SwiGluBackward(gate.data(), up.data(), dy.data(), n, dg1.data(), du1.data(), 1);
  SwiGluBackward(gate.data(), up.data(), dy.data(), n, dg3.data(), du3.data(), 3);
  EXPECT_TRUE(testing::SameBits(y1, y3));
  EXPECT_TRUE(testing::SameBits(dg1, dg3));
  EXPECT_TRUE(testing::SameBits(du1, du3));
}

// ---- GELU -------------------------------------------------------------------

double GeluRef(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

TEST(GeluTest, ForwardMatchesReference) {
  std::vector<float> x = Random(64, 10, -6.0f, 6.0f);
  x.insert(x.end(), {0.0f, -0.0f, 1.0f, -1.0f, 20.0f, -20.0f});
  std::vector<float> y(x.size());
  GeluForward(x.data(), static_cast<int64_t>(x.size()), y.data());
  std::vector<double> ref(x.size());
  for (size_t i = 0; i < x.size(); ++i) ref[i] = GeluRef(x[i]);
  ExpectClose(y, ref, kForwardTol, "gelu");
  EXPECT_FLOAT_EQ(y[y.size() - 2], 20.0f);
  EXPECT_EQ(y.back(), -0.0f);
}

TEST(GeluTest, BackwardMatchesFiniteDifferences) {
  std::vector<float> x = Random(40, 11, -4.0f, 4.0f);
  x.insert(x.end(), {0.0f, 0.5f, -0.5f, 2.0f, -2.0f});
  const std::vector<float> w = Random(x.size(), 12);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(n), dx(n);
  auto objective = [&] {
    GeluForward(x.data(), n, y.data());
    return Dot(w, y);
  };
  GeluBackward(x.data(), w.data(), n, dx.data());
  ExpectClose(dx, NumericGrad(&x, objective), kFdTol, "dx");
}

// The shared tanh (polynomial exp; what the CUDA kernel runs too) against
// libm over a dense sweep, and the AVX2 GELU against the scalar bodies
// bitwise, specials included.
std::vector<float> GeluSweep() {
  std::vector<float> x;
  for (int i = -200000; i <= 200000; ++i) x.push_back(i * 6e-5f);  // [-12, 12]
  for (float v :
       {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-8f, 88.0f, -88.0f, 1e30f, -1e30f,
        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
        std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()}) {
    x.push_back(v);
  }
  while (x.size() % 8 != 3) x.push_back(0.25f);  // a scalar tail too
  return x;
}

TEST(GeluTest, SharedTanhIsAccurate) {
  double worst = 0;
  for (float u : GeluSweep()) {
    if (std::isnan(u)) {
      EXPECT_TRUE(std::isnan(TanhElement(u)));
      continue;
    }
    const double err = std::fabs(TanhElement(u) - std::tanh(static_cast<double>(u)));
    worst = std::max(worst, err);
  }
  EXPECT_LT(worst, 2e-7);
  EXPECT_EQ(TanhElement(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_EQ(TanhElement(0.0f), 0.0f);
}

TEST(GeluTest, Avx2EqualsScalarBitwise) {
  if (!UsingAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  const std::vector<float> x = GeluSweep();
  const std::vector<float> dy = Random(x.size(), 13);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(n), dx(n);
  GeluForward(x.data(), n, y.data());
  GeluBackward(x.data(), dy.data(), n, dx.data());
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float ys = GeluElement(x[i]), dxs = dy[i] * GeluGradElement(x[i]);
    const bool same = (std::isnan(ys) ? std::isnan(y[i]) : std::memcmp(&ys, &y[i], 4) == 0) &&
                      (std::isnan(dxs) ? std::isnan(dx[i]) : std::memcmp(&dxs, &dx[i], 4) == 0);
    if (!same && ++mismatches <= 5) {
      ADD_FAILURE() << "x = " << x[i] << ": avx2 " << y[i] << " / " << dx[i] << ", scalar " << ys
                    << " / " << dxs;
    }
  }
  EXPECT_EQ(mismatches, 0);
  // And accurate against the double reference (tolerance on |gelu| + 1).
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(x[i]) && std::fabs(x[i]) < 1e20f) {
      ASSERT_NEAR(y[i], GeluRef(x[i]), 1e-6 * (1 + std::fabs(GeluRef(x[i])))) << "x = " << x[i];
    }
  }
}

TEST(SwiGluTest, Avx2EqualsScalarBitwiseAndSigmoidIsAccurate) {
  const std::vector<float> gate = GeluSweep();
  const int64_t n = static_cast<int64_t>(gate.size());
  const std::vector<float> up = Random(n, 17), dy = Random(n, 19);
  std::vector<float> y(n), dgate(n), dup(n);
  SwiGluForward(gate.data(), up.data(), n, y.data());
  SwiGluBackward(gate.data(), up.data(), dy.data(), n, dgate.data(), dup.data());
  auto same = [](float a, float b) {
    return std::isnan(a) ? std::isnan(b) : std::memcmp(&a, &b, 4) == 0;
  };
  int64_t mismatches = 0;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    float dg = 0, du = 0;
    SwiGluGradElement(gate[i], up[i], dy[i], &dg, &du);
    if (!(same(SwiGluElement(gate[i], up[i]), y[i]) && same(dg, dgate[i]) && same(du, dup[i])) &&
        ++mismatches <= 5) {
      ADD_FAILURE() << "gate = " << gate[i] << ": " << y[i] << " / " << dgate[i] << " / " << dup[i];
    }
    if (std::fabs(gate[i]) <= 80) {  // the clamp: sigmoid(-80) = 1.8e-35
      const double ref = 1.0 / (1.0 + std::exp(-static_cast<double>(gate[i])));
      worst = std::max(worst, std::fabs(SigmoidElement(gate[i]) - ref) / ref);
    }
  }
  if (UsingAvx2()) EXPECT_EQ(mismatches, 0);
  EXPECT_LT(worst, 1e-6);  // relative, down to sigmoid(-80)
  EXPECT_TRUE(std::isnan(SigmoidElement(std::numeric_limits<float>::quiet_NaN())));
}

// ---- Causal attention -------------------------------------------------------

const AttentionShape kAttn{/*batch=*/2, /*heads=*/2, /*seq=*/5, /*head_dim=*/3};

int64_t Numel(const AttentionShape& s) { return s.batch * s.heads * s.seq * s.head_dim; }

struct AttentionData {
  std::vector<float> q, k, v;
};

AttentionData RandomAttention(const AttentionShape& s, uint32_t seed) {
  return {Random(Numel(s), seed, -1.5f, 1.5f), Random(Numel(s), seed + 1, -1.5f, 1.5f),
          Random(Numel(s), seed + 2)};
}

TEST(CausalAttentionTest, ForwardMatchesReference) {
  const AttentionShape& s = kAttn;
  const AttentionData in = RandomAttention(s, 20);
  std::vector<float> probs(s.batch * s.heads * s.seq * s.seq), out(Numel(s));
  CausalAttentionForward(s, in.q.data(), in.k.data(), in.v.data(), probs.data(), out.data());

  const int64_t t_len = s.seq, d = s.head_dim;
  std::vector<double> probs_ref(probs.size()), out_ref(out.size());
  for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
    const float* q = in.q.data() + bh * t_len * d;
    const float* k = in.k.data() + bh * t_len * d;
    const float* v = in.v.data() + bh * t_len * d;
    for (int64_t t = 0; t < t_len; ++t) {
      std::vector<double> p(t_len, 0.0);
      double mx = -1e300, sum = 0.0;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0.0;
        for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(q[t * d + e]) * k[j * d + e];
        p[j] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, p[j]);
      }
      for (int64_t j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t j = 0; j <= t; ++j) p[j] /= sum;
      for (int64_t j = 0; j < t_len; ++j) probs_ref[(bh * t_len + t) * t_len + j] = p[j];
      for (int64_t e = 0; e < d; ++e) {
        double o = 0.0;
        for (int64_t j = 0; j <= t; ++j) o += p[j] * v[j * d + e];
        out_ref[(bh * t_len + t) * d + e] = o;
      }
    }
  }
  ExpectClose(probs, probs_ref, kForwardTol, "probs");
  ExpectClose(out, out_ref, kForwardTol, "out");
  // Above the diagonal the probabilities are exact zeros.
  for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
    for (int64_t t = 0; t < t_len; ++t) {
      for (int64_t j = t + 1; j < t_len; ++j) {
        EXPECT_EQ(probs[(bh * t_len + t) * t_len + j], 0.0f);
      }
    }
  }
}

TEST(CausalAttentionTest, BackwardMatchesFiniteDifferences) {
  const AttentionShape& s = kAttn;
  AttentionData in = RandomAttention(s, 30);
  const std::vector<float> w = Random(Numel(s), 33);  // dout
  std::vector<float> probs(s.batch * s.heads * s.seq * s.seq), out(Numel(s));
  auto objective = [&] {
    CausalAttentionForward(s, in.q.data(), in.k.data(), in.v.data(), probs.data(), out.data());
    return Dot(w, out);
  };
  objective();
  std::vector<float> workspace(CausalAttentionWorkspaceSize(s));
  std::vector<float> dq(Numel(s)), dk(Numel(s)), dv(Numel(s));
  CausalAttentionBackward(s, in.q.data(), in.k.data(), in.v.data(), probs.data(), w.data(),
                          workspace.data(), dq.data(), dk.data(), dv.data());
  ExpectClose(dq, NumericGrad(&in.q, objective), kFdTol, "dq");
  ExpectClose(dk, NumericGrad(&in.k, objective), kFdTol, "dk");
  ExpectClose(dv, NumericGrad(&in.v, objective), kFdTol, "dv");
}

// Changing q, k, v at positions > t leaves the output (and probabilities) at
// positions <= t bitwise unchanged: masked probabilities are exact zeros.
TEST(CausalAttentionTest, FuturePositionsDoNotAffectThePast) {
  const AttentionShape& s = kAttn;
  const int64_t t_len = s.seq, d = s.head_dim;
  const AttentionData base = RandomAttention(s, 40);
  std::vector<float> probs0(s.batch * s.heads * t_len * t_len), out0(Numel(s));
  CausalAttentionForward(s, base.q.data(), base.k.data(), base.v.data(), probs0.data(),
                         out0.data());
  for (int64_t t = 0; t + 1 < t_len; ++t) {
    AttentionData changed = base;
    const std::vector<float> noise = Random(3 * Numel(s), 50 + t, -100.0f, 100.0f);
    for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
      for (int64_t pos = t + 1; pos < t_len; ++pos) {
        for (int64_t e = 0; e < d; ++e) {
          const int64_t i = (bh * t_len + pos) * d + e;
          changed.q[i] = noise[i];
          changed.k[i] = noise[Numel(s) + i];
          changed.v[i] = noise[2 * Numel(s) + i];
        }
      }
    }
    std::vector<float> probs(probs0.size()), out(out0.size());
    CausalAttentionForward(s, changed.q.data(), changed.k.data(), changed.v.data(), probs.data(),
                           out.data());
    bool future_changed = false;
    for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
      for (int64_t pos = 0; pos < t_len; ++pos) {
        for (int64_t e = 0; e < d; ++e) {
          const int64_t i = (bh * t_len + pos) * d + e;
          if (pos <= t) {
            ASSERT_EQ(out[i], out0[i]) << "t=" << t << " bh=" << bh << " pos=" << pos;
          } else if (out[i] != out0[i]) {
            future_changed = true;
          }
        }
        if (pos <= t) {
          for (int64_t j = 0; j < t_len; ++j) {
            const int64_t i = (bh * t_len + pos) * t_len + j;
            ASSERT_EQ(probs[i], probs0[i]) << "t=" << t << " bh=" << bh << " pos=" << pos;
          }
        }
      }
    }
    EXPECT_TRUE(future_changed) << "the change at positions > " << t << " had no effect";
  }
}

// ---- Sliding-window attention --------------------------------------------------

// Attention in double with the window mask (row t sees columns
// max(0, t - window + 1)..t; all of 0..t for window 0): probs and out, and,
// for the objective sum(w * out), dq, dk and dv by the chain rule.
struct AttentionRef {
  std::vector<double> probs, out, dq, dk, dv;
};

AttentionRef ReferenceAttention(const AttentionShape& s, const AttentionData& in,
                                const std::vector<float>& w) {
  const int64_t T = s.seq, D = s.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  AttentionRef ref;
  ref.probs.assign(s.batch * s.heads * T * T, 0.0);
  ref.out.assign(Numel(s), 0.0);
  ref.dq.assign(Numel(s), 0.0);
  ref.dk.assign(Numel(s), 0.0);
  ref.dv.assign(Numel(s), 0.0);
  for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
    const int64_t o = bh * T * D;
    auto q = [&](int64_t t, int64_t e) { return static_cast<double>(in.q[o + t * D + e]); };
    auto k = [&](int64_t t, int64_t e) { return static_cast<double>(in.k[o + t * D + e]); };
    auto v = [&](int64_t t, int64_t e) { return static_cast<double>(in.v[o + t * D + e]); };
    for (int64_t t = 0; t < T; ++t) {
      const int64_t lo = s.window > 0 ? std::max<int64_t>(0, t - s.window + 1) : 0;
      double* p = &ref.probs[(bh * T + t) * T];
      double mx = -1e300, sum = 0.0;
      for (int64_t j = lo; j <= t; ++j) {
        double dot = 0.0;
        for (int64_t e = 0; e < D; ++e) dot += q(t, e) * k(j, e);
        p[j] = dot * scale;
        mx = std::max(mx, p[j]);
      }
      for (int64_t j = lo; j <= t; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t j = lo; j <= t; ++j) p[j] /= sum;
      // out[t] = sum_j p_j v_j; dp_j = w[t] . v_j; ds_j = p_j (dp_j - sum_i p_i dp_i).
      std::vector<double> dp(T, 0.0);
      double pdp = 0.0;
      for (int64_t j = lo; j <= t; ++j) {
        for (int64_t e = 0; e < D; ++e) {
          ref.out[o + t * D + e] += p[j] * v(j, e);
          dp[j] += w[o + t * D + e] * v(j, e);
          ref.dv[o + j * D + e] += p[j] * w[o + t * D + e];
        }
        pdp += p[j] * dp[j];
      }
      for (int64_t j = lo; j <= t; ++j) {
        const double ds = p[j] * (dp[j] - pdp) * scale;
        for (int64_t e = 0; e < D; ++e) {
          ref.dq[o + t * D + e] += ds * k(j, e);
          ref.dk[o + j * D + e] += ds * q(t, e);
        }
      }
    }
  }
  return ref;
}

struct AttentionResult {
  std::vector<float> probs, out, dq, dk, dv;
};

AttentionResult RunAttention(const AttentionShape& s, const AttentionData& in,
                             const std::vector<float>& dout) {
  AttentionResult r{std::vector<float>(s.batch * s.heads * s.seq * s.seq),
                    std::vector<float>(Numel(s)), std::vector<float>(Numel(s)),
                    std::vector<float>(Numel(s)), std::vector<float>(Numel(s))};
  std::vector<float> workspace(CausalAttentionWorkspaceSize(s));
  CausalAttentionForward(s, in.q.data(), in.k.data(), in.v.data(), r.probs.data(), r.out.data());
  CausalAttentionBackward(s, in.q.data(), in.k.data(), in.v.data(), r.probs.data(), dout.data(),
                          workspace.data(), r.dq.data(), r.dk.data(), r.dv.data());
  return r;
}

TEST(SlidingWindowAttentionTest, MatchesMaskedReference) {
  for (int64_t window : {0, 1, 2, 3, 4}) {
    SCOPED_TRACE(absl::StrCat("window ", window));
    AttentionShape s{/*batch=*/2, /*heads=*/2, /*seq=*/7, /*head_dim=*/3, window};
    const AttentionData in = RandomAttention(s, 200 + window);
    const std::vector<float> w = Random(Numel(s), 210 + window);
    const AttentionResult got = RunAttention(s, in, w);
    const AttentionRef ref = ReferenceAttention(s, in, w);
    ExpectClose(got.probs, ref.probs, kForwardTol, "probs");
    ExpectClose(got.out, ref.out, kForwardTol, "out");
    ExpectClose(got.dq, ref.dq, kForwardTol, "dq");
    ExpectClose(got.dk, ref.dk, kForwardTol, "dk");
    ExpectClose(got.dv, ref.dv, kForwardTol, "dv");
    // Outside the window and above the diagonal the probabilities are exact zeros.
    for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
      for (int64_t t = 0; t < s.seq; ++t) {
        for (int64_t j = 0; j < s.seq; ++j) {
          const bool inside = j <= t && (window == 0 || j > t - window);
          if (!inside) {
            ASSERT_EQ(got.probs[(bh * s.seq + t) * s.seq + j], 0.0f) << t << ", " << j;
          }
        }
      }
    }
  }
}

TEST(SlidingWindowAttentionTest, BackwardMatchesFiniteDifferences) {
  AttentionShape s = kAttn;
  s.window = 2;
  AttentionData in = RandomAttention(s, 220);
  const std::vector<float> w = Random(Numel(s), 223);
  std::vector<float> probs(s.batch * s.heads * s.seq * s.seq), out(Numel(s));
  auto objective = [&] {
    CausalAttentionForward(s, in.q.data(), in.k.data(), in.v.data(), probs.data(), out.data());
    return Dot(w, out);
  };
  objective();
  const AttentionResult got = RunAttention(s, in, w);
  ExpectClose(got.dq, NumericGrad(&in.q, objective), kFdTol, "dq");
  ExpectClose(got.dk, NumericGrad(&in.k, objective), kFdTol, "dk");
  ExpectClose(got.dv, NumericGrad(&in.v, objective), kFdTol, "dv");
}

// A window covering the whole sequence is plain causal attention, bit for bit.
TEST(SlidingWindowAttentionTest, WindowOfTheSequenceOrMoreIsPlainCausal) {
  AttentionShape s{2, 3, 6, 4};
  const AttentionData in = RandomAttention(s, 230);
  const std::vector<float> w = Random(Numel(s), 233);
  const AttentionResult plain = RunAttention(s, in, w);
  for (int64_t window : {s.seq, s.seq + 1, int64_t{1000}}) {
    SCOPED_TRACE(absl::StrCat("window ", window));
    s.window = window;
    const AttentionResult got = RunAttention(s, in, w);
    EXPECT_TRUE(testing::SameBits(got.probs, plain.probs));
    EXPECT_TRUE(testing::SameBits(got.out, plain.out));
    EXPECT_TRUE(testing::SameBits(got.dq, plain.dq));
    EXPECT_TRUE(testing::SameBits(got.dk, plain.dk));
    EXPECT_TRUE(testing::SameBits(got.dv, plain.dv));
  }
}

// Window 1: each position attends to itself only, so out is v exactly.
TEST(SlidingWindowAttentionTest, WindowOneCopiesValues) {
  const AttentionShape s{2, 2, 5, 3, /*window=*/1};
  const AttentionData in = RandomAttention(s, 240);
  const AttentionResult got = RunAttention(s, in, Random(Numel(s), 243));
  EXPECT_EQ(got.out, in.v);
}

// Keys and values before a row's window leave that row bitwise unchanged.
TEST(SlidingWindowAttentionTest, PositionsBeforeTheWindowDoNotAffectARow) {
  const AttentionShape s{1, 2, 6, 3, /*window=*/3};
  const int64_t T = s.seq, D = s.head_dim;
  const AttentionData base = RandomAttention(s, 250);
  const std::vector<float> w = Random(Numel(s), 253);
  const AttentionResult before = RunAttention(s, base, w);
  AttentionData changed = base;
  for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
    for (int64_t e = 0; e < D; ++e) {  // position 0: outside the windows of rows >= 3
      changed.k[bh * T * D + e] = 50.0f;
      changed.v[bh * T * D + e] = -70.0f;
    }
  }
  const AttentionResult after = RunAttention(s, changed, w);
  bool earlier_changed = false;
  for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t e = 0; e < D; ++e) {
        const int64_t i = (bh * T + t) * D + e;
        if (t >= s.window) {
          ASSERT_EQ(after.out[i], before.out[i]) << "bh=" << bh << " t=" << t;
          ASSERT_EQ(after.dq[i], before.dq[i]) << "bh=" << bh << " t=" << t;
        } else if (after.out[i] != before.out[i]) {
          earlier_changed = true;
        }
      }
    }
  }
  EXPECT_TRUE(earlier_changed) << "the change at position 0 had no effect inside its windows";
}

// ---- Rotary position embedding ----------------------------------------------

TEST(RotaryTest, MatchesTheFormula) {
  const AttentionShape s{2, 3, 9, 8};
  const int64_t T = s.seq, D = s.head_dim, first_pos = 5;
  const float base = 10000.0f;
  const std::vector<float> x0 = Random(Numel(s), 300, -2.0f, 2.0f);
  std::vector<float> x = x0;
  Rotary(x.data(), s, first_pos, base, /*inverse=*/false);
  std::vector<double> ref(Numel(s));
  for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < D / 2; ++i) {
        const double angle = (first_pos + t) * std::pow(10000.0, -2.0 * i / D);
        const int64_t e = (bh * T + t) * D + 2 * i;
        ref[e] = x0[e] * std::cos(angle) - x0[e + 1] * std::sin(angle);
        ref[e + 1] = x0[e] * std::sin(angle) + x0[e + 1] * std::cos(angle);
      }
    }
  }
  ExpectClose(x, ref, 1e-6, "rotary");
  // Position 0 (first_pos 0, t 0) is the identity; pair 0 turns by one radian
  // per position.
  std::vector<float> y = x0;
  Rotary(y.data(), s, 0, base, false);
  for (int64_t e = 0; e < D; ++e) EXPECT_EQ(y[e], x0[e]);
  const double c = std::cos(3.0), sn = std::sin(3.0);  // t = 3, pair 0
  EXPECT_NEAR(y[3 * D], x0[3 * D] * c - x0[3 * D + 1] * sn, 1e-6);
  EXPECT_NEAR(y[3 * D + 1], x0[3 * D] * sn + x0[3 * D + 1] * c, 1e-6);
}

TEST(RotaryTest, InverseUndoesAndNormsArePreserved) {
  const AttentionShape s{2, 2, 33, 16};
  const std::vector<float> x0 = Random(Numel(s), 301, -3.0f, 3.0f);
  std::vector<float> x = x0;
  Rotary(x.data(), s, 1000, 10000.0f, false);
  for (int64_t e = 0; e < Numel(s); e += 2) {
    const double before = std::hypot(static_cast<double>(x0[e]), x0[e + 1]);
    const double after = std::hypot(static_cast<double>(x[e]), x[e + 1]);
    ASSERT_NEAR(after, before, 1e-6 * std::max(1.0, before)) << "pair at " << e;
  }
  EXPECT_NE(x, x0);
  Rotary(x.data(), s, 1000, 10000.0f, /*inverse=*/true);
  std::vector<double> want(x0.begin(), x0.end());
  ExpectClose(x, want, 1e-6, "inverse(forward(x))");
}

// The inverse is the backward: <R x, w> = <x, R^T w> with R^T the inverse.
TEST(RotaryTest, InverseIsTheAdjoint) {
  const AttentionShape s{1, 3, 10, 6};
  std::vector<float> x = Random(Numel(s), 302), w = Random(Numel(s), 303);
  const std::vector<float> x0 = x, w0 = w;
  Rotary(x.data(), s, 7, 500.0f, false);
  Rotary(w.data(), s, 7, 500.0f, true);
  EXPECT_NEAR(Dot(w0, x), Dot(w, x0), 1e-5);
}

// Rotating positions [first_pos, first_pos + seq) equals rotating the whole
// sequence and taking that slice, bit for bit.
TEST(RotaryTest, FirstPosIsASliceOfALongerSequence) {
  const AttentionShape whole{2, 2, 12, 8};
  const int64_t D = whole.head_dim, first = 4;
  AttentionShape part = whole;
  part.seq = 5;
  const std::vector<float> x = Random(Numel(whole), 304);
  std::vector<float> rotated = x;
  Rotary(rotated.data(), whole, 0, 10000.0f, false);
  std::vector<float> slice(Numel(part)), want(Numel(part));
  for (int64_t bh = 0; bh < whole.batch * whole.heads; ++bh) {
    const int64_t from = (bh * whole.seq + first) * D, to = bh * part.seq * D;
    std::copy_n(x.begin() + from, part.seq * D, slice.begin() + to);
    std::copy_n(rotated.begin() + from, part.seq * D, want.begin() + to);
  }
  Rotary(slice.data(), part, first, 10000.0f, false);
  EXPECT_TRUE(testing::SameBits(slice, want));
}

TEST(RotaryTest, ThreadCountDoesNotChangeBits) {
  const AttentionShape s{2, 3, 17, 12};
  std::vector<float> a = Random(Numel(s), 305), b = a;
  Rotary(a.data(), s, 3, 10000.0f, false, 1);
  Rotary(b.data(), s, 3, 10000.0f, false, 3);
  EXPECT_TRUE(testing::SameBits(a, b));
  Rotary(a.data(), s, 3, 10000.0f, true, 1);
  Rotary(b.data(), s, 3, 10000.0f, true, 3);
  EXPECT_TRUE(testing::SameBits(a, b));
}

// ---- Grouped-query heads ----------------------------------------------------

TEST(KvHeadsTest, ExactValuesOnATinyCase) {
  // batch 2, 4 query heads, 2 kv heads (groups of 2), seq 1, head_dim 2.
  const AttentionShape s{2, 4, 1, 2};
  const std::vector<float> kv = {1, 2, 3, 4, 5, 6, 7, 8};  // [2, 2, 1, 2]
  std::vector<float> out(16, -1.0f);
  RepeatKvHeads(kv.data(), s, 2, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 2, 1, 2, 3, 4, 3, 4, 5, 6, 5, 6, 7, 8, 7, 8}));
  std::vector<float> grad(16);
  for (int i = 0; i < 16; ++i) grad[i] = static_cast<float>(i);
  std::vector<float> sum(8, -1.0f);
  SumKvHeads(grad.data(), s, 2, sum.data());
  // Heads (0, 1) -> kv head 0, (2, 3) -> kv head 1, per batch.
  EXPECT_EQ(sum,
            (std::vector<float>{0 + 2, 1 + 3, 4 + 6, 5 + 7, 8 + 10, 9 + 11, 12 + 14, 13 + 15}));
  // One kv head (kv [2, 1, 1, 2] = the first 4 values): every query head
  // reads it; the sum is over all heads.
  RepeatKvHeads(kv.data(), s, 1, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 2, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4}));
  std::vector<float> sum1(4);
  SumKvHeads(grad.data(), s, 1, sum1.data());
  EXPECT_EQ(sum1,
            (std::vector<float>{0 + 2 + 4 + 6, 1 + 3 + 5 + 7, 8 + 10 + 12 + 14, 9 + 11 + 13 + 15}));
  // As many kv heads as query heads: copies.
  std::vector<float> copy(16);
  RepeatKvHeads(grad.data(), s, 4, copy.data());
  EXPECT_EQ(copy, grad);
  SumKvHeads(grad.data(), s, 4, copy.data());
  EXPECT_EQ(copy, grad);
}

// <Repeat(a), b> == <a, Sum(b)>: SumKvHeads is the adjoint (the backward) of
// RepeatKvHeads.
TEST(KvHeadsTest, SumIsTheAdjointOfRepeat) {
  AttentionShape s{3, 6, 5, 4};
  for (int64_t kv_heads : {1, 2, 3, 6}) {
    SCOPED_TRACE(absl::StrCat("kv_heads ", kv_heads));
    const int64_t kv_n = s.batch * kv_heads * s.seq * s.head_dim;
    const std::vector<float> a = Random(kv_n, 310 + kv_heads), b = Random(Numel(s), 320 + kv_heads);
    std::vector<float> ra(Numel(s)), sb(kv_n);
    RepeatKvHeads(a.data(), s, kv_heads, ra.data());
    SumKvHeads(b.data(), s, kv_heads, sb.data());
    EXPECT_NEAR(Dot(ra, b), Dot(a, sb), 1e-5);
    // Sum of each group in order, against a loop.
    const int64_t group = s.heads / kv_heads, block = s.seq * s.head_dim;
    for (int64_t bb = 0; bb < s.batch; ++bb) {
      for (int64_t g = 0; g < kv_heads; ++g) {
        for (int64_t e = 0; e < block; ++e) {
          float want = b[(bb * s.heads + g * group) * block + e];
          for (int64_t j = 1; j < group; ++j) want += b[(bb * s.heads + g * group + j) * block + e];
          ASSERT_EQ(sb[(bb * kv_heads + g) * block + e], want);
        }
      }
    }
  }
}

TEST(KvHeadsTest, ThreadCountDoesNotChangeBits) {
  const AttentionShape s{2, 8, 9, 5};
  const int64_t kv_heads = 2, kv_n = s.batch * kv_heads * s.seq * s.head_dim;
  const std::vector<float> kv = Random(kv_n, 330), grad = Random(Numel(s), 331);
  std::vector<float> r1(Numel(s)), r3(Numel(s)), s1(kv_n), s3(kv_n);
  RepeatKvHeads(kv.data(), s, kv_heads, r1.data(), 1);
  RepeatKvHeads(kv.data(), s, kv_heads, r3.data(), 3);
  SumKvHeads(grad.data(), s, kv_heads, s1.data(), 1);
  SumKvHeads(grad.data(), s, kv_heads, s3.data(), 3);
  EXPECT_TRUE(testing::SameBits(r1, r3));
  EXPECT_TRUE(testing::SameBits(s1, s3));
}

// ---- Attention against a key/value cache -----------------------------------

// Rows [first, first + count) of the positions of x [outer, seq, D], as
// [outer, count, D].
std::vector<float> Positions(const std::vector<float>& x, int64_t outer, int64_t seq, int64_t D,
                             int64_t first, int64_t count) {
  std::vector<float> r(outer * count * D);
  for (int64_t o = 0; o < outer; ++o) {
    std::copy_n(x.begin() + (o * seq + first) * D, count * D, r.begin() + o * count * D);
  }
  return r;
}

// Writes part [outer, count, D] into positions [first, first + count) of x
// [outer, seq, D].
void SetPositions(const std::vector<float>& part, int64_t outer, int64_t seq, int64_t D,
                  int64_t first, int64_t count, std::vector<float>* x) {
  for (int64_t o = 0; o < outer; ++o) {
    std::copy_n(part.begin() + o * count * D, count * D, x->begin() + (o * seq + first) * D);
  }
}

// q [batch, heads, seq, D] and keys and values [batch, kv_heads, seq, D], and
// CausalAttentionForward's output on the keys and values repeated per query
// head (the reference of every cached call).
struct CachedCase {
  AttentionShape attn;
  int64_t kv_heads;
  std::vector<float> q, k, v, want;
};

CachedCase MakeCachedCase(const AttentionShape& attn, int64_t kv_heads, uint32_t seed) {
  CachedCase c{attn, kv_heads};
  const int64_t kv_n = attn.batch * kv_heads * attn.seq * attn.head_dim;
  c.q = Random(Numel(attn), seed, -1.5f, 1.5f);
  c.k = Random(kv_n, seed + 1, -1.5f, 1.5f);
  c.v = Random(kv_n, seed + 2);
  std::vector<float> k_rep(Numel(attn)), v_rep(Numel(attn)),
      probs(attn.batch * attn.heads * attn.seq * attn.seq);
  RepeatKvHeads(c.k.data(), attn, kv_heads, k_rep.data());
  RepeatKvHeads(c.v.data(), attn, kv_heads, v_rep.data());
  c.want.resize(Numel(attn));
  CausalAttentionForward(attn, c.q.data(), k_rep.data(), v_rep.data(), probs.data(), c.want.data());
  return c;
}

// Runs the sequence of c through a cache of `capacity` slots in calls of
// `chunk` positions: WriteKvCache of the chunk's keys and values, then
// CachedAttention of its queries. Returns the outputs [batch, heads, seq, D].
std::vector<float> RunCached(const CachedCase& c, int64_t capacity, int64_t chunk) {
  const AttentionShape& a = c.attn;
  const int64_t T = a.seq, D = a.head_dim;
  std::vector<float> k_cache(a.batch * c.kv_heads * capacity * D, NAN), v_cache = k_cache;
  std::vector<float> out(Numel(a), NAN);
  for (int64_t first = 0; first < T; first += chunk) {
    const int64_t n = std::min(chunk, T - first);
    const CachedAttentionShape cs{a.batch, a.heads, c.kv_heads, n, D, first, capacity, a.window};
    EXPECT_TRUE(CheckCachedAttentionShape(cs, "test").ok());
    const int64_t kv_outer = a.batch * c.kv_heads, q_outer = a.batch * a.heads;
    WriteKvCache(cs, Positions(c.k, kv_outer, T, D, first, n).data(), k_cache.data());
    WriteKvCache(cs, Positions(c.v, kv_outer, T, D, first, n).data(), v_cache.data());
    const std::vector<float> q = Positions(c.q, q_outer, T, D, first, n);
    std::vector<float> o(q.size(), NAN);
    CachedAttention(cs, q.data(), k_cache.data(), v_cache.data(), o.data());
    SetPositions(o, q_outer, T, D, first, n, &out);
  }
  return out;
}

std::vector<double> ToDouble(const std::vector<float>& x) { return {x.begin(), x.end()}; }

// The whole prefix in one call (first_pos 0, queries = capacity = seq) is
// CausalAttentionForward on the keys and values repeated per query head.
TEST(CachedAttentionTest, WholePrefixMatchesCausalAttention) {
  for (int64_t kv_heads : {1, 2, 4}) {
    for (int64_t window : {0, 3}) {
      SCOPED_TRACE(absl::StrCat("kv_heads ", kv_heads, ", window ", window));
      const CachedCase c = MakeCachedCase({2, 4, 7, 5, window}, kv_heads, 400 + kv_heads);
      ExpectClose(RunCached(c, c.attn.seq, c.attn.seq), ToDouble(c.want), 1e-6, "out");
    }
  }
}

// Decoding one position at a time, or in chunks, gives the rows of the whole
// prefix; a larger cache than needed changes nothing.
TEST(CachedAttentionTest, DecodingMatchesTheWholePrefix) {
  const CachedCase c = MakeCachedCase({2, 6, 9, 4}, 2, 410);
  const std::vector<double> whole = ToDouble(RunCached(c, 9, 9));
  ExpectClose(RunCached(c, 9, 1), whole, 1e-6, "one at a time");
  ExpectClose(RunCached(c, 9, 4), whole, 1e-6, "chunks of 4");
  ExpectClose(RunCached(c, 13, 1), whole, 1e-6, "one at a time, capacity 13");
}

// A sliding window over a ring of window + queries - 1 slots (fewer than the
// sequence, so slots are reused) is CausalAttentionForward with that window.
TEST(CachedAttentionTest, SlidingWindowOverARingCache) {
  for (int64_t window : {1, 2, 3, 5}) {
    SCOPED_TRACE(absl::StrCat("window ", window));
    const CachedCase c = MakeCachedCase({2, 4, 11, 3, window}, 2, 420 + window);
    ExpectClose(RunCached(c, window, 1), ToDouble(c.want), 1e-6, "one at a time");
    ExpectClose(RunCached(c, window + 2, 3), ToDouble(c.want), 1e-6, "chunks of 3");
  }
}

// batch 1, kv_heads 2, capacity 3, head_dim 2: positions 2 and 3 go to
// slots 2 and 0 (wrapping); slot 1 keeps what it had.
TEST(CachedAttentionTest, WriteKvCachePlacesPositionsInTheirSlots) {
  const CachedAttentionShape s{
      /*batch=*/1,    /*heads=*/2,     /*kv_heads=*/2, /*queries=*/2,
      /*head_dim=*/2, /*first_pos=*/2, /*capacity=*/3, /*window=*/2};
  const std::vector<float> src = {1, 2, 3, 4,   // kv head 0: positions 2, 3
                                  5, 6, 7, 8};  // kv head 1
  std::vector<float> cache(12, -1.0f);
  WriteKvCache(s, src.data(), cache.data());
  EXPECT_EQ(cache, (std::vector<float>{3, 4, -1, -1, 1, 2, 7, 8, -1, -1, 5, 6}));
  // Batch 2, one position at 7 -> slot 1.
  const CachedAttentionShape one{2, 2, 1, 1, 2, 7, 3, 2};
  std::vector<float> cache2(12, 0.0f);
  WriteKvCache(one, src.data(), cache2.data());
  EXPECT_EQ(cache2, (std::vector<float>{0, 0, 1, 2, 0, 0, 0, 0, 3, 4, 0, 0}));
}

TEST(CachedAttentionTest, InvalidShapesAreNamedAndWriteNothing) {
  // Positions 0..4 in 4 slots: only with a window of at most 4 - 2 + 1.
  CachedAttentionShape s{1, 2, 1, /*queries=*/2, 2, /*first_pos=*/3, /*capacity=*/4};
  absl::Status st = CheckCachedAttentionShape(s, "CachedAttention");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "CachedAttention: capacity 4 < first_pos 3 + queries 2 without a window of at most 3");
  s.window = 4;
  EXPECT_EQ(CheckCachedAttentionShape(s, "WriteKvCache").message(),
            "WriteKvCache: capacity 4 < first_pos 3 + queries 2 without a window of at most 3 "
            "(window 4)");
  const std::vector<float> in = Random(8, 430);
  std::vector<float> out(8, 7.0f), cache(8, 7.0f);
  CachedAttention(s, in.data(), in.data(), in.data(), out.data());
  WriteKvCache(s, in.data(), cache.data());
  EXPECT_EQ(out, std::vector<float>(8, 7.0f));
  EXPECT_EQ(cache, std::vector<float>(8, 7.0f));
  s.window = 3;
  EXPECT_TRUE(CheckCachedAttentionShape(s, "CachedAttention").ok());
  s.window = 0;
  s.capacity = 5;
  EXPECT_TRUE(CheckCachedAttentionShape(s, "CachedAttention").ok());
  // Key/value heads that do not divide the query heads; a negative size.
  s.kv_heads = 3;
  EXPECT_THAT(std::string(CheckCachedAttentionShape(s, "CachedAttention").message()),
              HasSubstr("kv_heads 3 does not divide heads 2"));
  CachedAttention(s, in.data(), in.data(), in.data(), out.data());
  EXPECT_EQ(out, std::vector<float>(8, 7.0f));
  s.kv_heads = 1;
  s.first_pos = -1;
  EXPECT_THAT(std::string(CheckCachedAttentionShape(s, "CachedAttention").message()),
              HasSubstr("negative size"));
}

// ---- Cross-entropy ----------------------------------------------------------

constexpr int64_t kRows = 4, kVocab = 7, kVocabValid = 5;
const std::vector<int32_t> kTargets = {0, 4, 2, 4};

// Random valid logits; the padding columns hold large values, which would
// dominate the softmax if they took part in it.
std::vector<float> CeLogits(uint32_t seed) {
  std::vector<float> logits = Random(kRows * kVocab, seed, -3.0f, 3.0f);
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t j = kVocabValid; j < kVocab; ++j) logits[r * kVocab + j] = 40.0f + j;
  }
  return logits;
}

TEST(CrossEntropyTest, ForwardMatchesReference) {
  const std::vector<float> logits = CeLogits(60);
  std::vector<float> lse(kRows);
  absl::StatusOr<float> loss =
      CrossEntropyForward(logits.data(), kTargets.data(), kRows, kVocab, kVocabValid, lse.data());
  ASSERT_TRUE(loss.ok()) << loss.status();
  double total = 0.0;
  std::vector<double> lse_ref(kRows);
  for (int64_t r = 0; r < kRows; ++r) {
    double sum = 0.0;
    for (int64_t j = 0; j < kVocabValid; ++j) sum += std::exp(logits[r * kVocab + j]);
    lse_ref[r] = std::log(sum);
    total += lse_ref[r] - logits[r * kVocab + kTargets[r]];
  }
  ExpectClose(lse, lse_ref, kForwardTol, "lse");
  ExpectClose({*loss}, {total / kRows}, kForwardTol, "loss");
}

TEST(CrossEntropyTest, UniformLogitsGiveLogVocabValid) {
  std::vector<float> logits(kRows * kVocab, 3.7f);
  for (int64_t r = 0; r < kRows; ++r) logits[r * kVocab + kVocab - 1] = 1e4f;  // padding
  std::vector<float> lse(kRows);
  absl::StatusOr<float> loss =
      CrossEntropyForward(logits.data(), kTargets.data(), kRows, kVocab, kVocabValid, lse.data());
  ASSERT_TRUE(loss.ok()) << loss.status();
  ExpectClose({*loss}, {std::log(static_cast<double>(kVocabValid))}, kForwardTol, "loss");
}

TEST(CrossEntropyTest, LargeLogitsStayFinite) {
  std::vector<float> logits = CeLogits(61);
  for (float& v : logits) v += 1e4f;
  std::vector<float> lse(kRows), dlogits(logits.size());
  absl::StatusOr<float> loss =
      CrossEntropyForward(logits.data(), kTargets.data(), kRows, kVocab, kVocabValid, lse.data());
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isfinite(*loss));
  EXPECT_GE(*loss, 0.0f);
  ASSERT_TRUE(CrossEntropyBackward(logits.data(), kTargets.data(), lse.data(), kRows, kVocab,
                                   kVocabValid, 1.0f, dlogits.data())
                  .ok());
  for (float g : dlogits) EXPECT_TRUE(std::isfinite(g));
}

TEST(CrossEntropyTest, BackwardMatchesFiniteDifferences) {
  std::vector<float> logits = CeLogits(62);
  const float scale = 1.5f;
  std::vector<float> lse(kRows);
  auto objective = [&] {
    absl::StatusOr<float> loss =
        CrossEntropyForward(logits.data(), kTargets.data(), kRows, kVocab, kVocabValid, lse.data());
    EXPECT_TRUE(loss.ok());
    return static_cast<double>(scale) * loss.value_or(0.0f);
  };
  objective();
  std::vector<float> dlogits(logits.size(), 99.0f);
  ASSERT_TRUE(CrossEntropyBackward(logits.data(), kTargets.data(), lse.data(), kRows, kVocab,
                                   kVocabValid, scale, dlogits.data())
                  .ok());
  ExpectClose(dlogits, NumericGrad(&logits, objective), kFdTol, "dlogits");
  for (int64_t r = 0; r < kRows; ++r) {
    double row_sum = 0.0;
    for (int64_t j = 0; j < kVocab; ++j) row_sum += dlogits[r * kVocab + j];
    EXPECT_NEAR(row_sum, 0.0, kForwardTol) << "row " << r;
    for (int64_t j = kVocabValid; j < kVocab; ++j) {
      EXPECT_EQ(dlogits[r * kVocab + j], 0.0f) << "padding column " << j << " of row " << r;
    }
  }
}

TEST(CrossEntropyTest, InvalidTargetsAndSizes) {
  const std::vector<float> logits = CeLogits(63);
  std::vector<float> lse(kRows), dlogits(logits.size());
  const std::vector<int32_t> padding_target = {0, 1, 5, 2};  // column 5 is padding
  absl::StatusOr<float> loss = CrossEntropyForward(logits.data(), padding_target.data(), kRows,
                                                   kVocab, kVocabValid, lse.data());
  ASSERT_EQ(loss.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loss.status().message()), HasSubstr("row 2 has target 5"));
  EXPECT_EQ(CrossEntropyBackward(logits.data(), padding_target.data(), lse.data(), kRows, kVocab,
                                 kVocabValid, 1.0f, dlogits.data())
                .code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> negative = {-1, 0, 0, 0};
  EXPECT_EQ(
      CrossEntropyForward(logits.data(), negative.data(), kRows, kVocab, kVocabValid, lse.data())
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      CrossEntropyForward(logits.data(), kTargets.data(), kRows, kVocab, kVocab + 1, lse.data())
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  absl::StatusOr<float> empty =
      CrossEntropyForward(nullptr, nullptr, 0, kVocab, kVocabValid, nullptr);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, 0.0f);
}

// ---- Embedding --------------------------------------------------------------

constexpr int64_t kTable = 6, kDim = 4;
const std::vector<int32_t> kIds = {3, 0, 5, 3, 1};  // id 3 repeats

TEST(EmbeddingTest, ForwardCopiesRows) {
  const std::vector<float> table = Random(kTable * kDim, 70);
  const int64_t rows = static_cast<int64_t>(kIds.size());
  std::vector<float> out(rows * kDim);
  ASSERT_TRUE(EmbeddingForward(table.data(), kIds.data(), rows, kTable, kDim, out.data()).ok());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < kDim; ++i) EXPECT_EQ(out[r * kDim + i], table[kIds[r] * kDim + i]);
  }
}

TEST(EmbeddingTest, BackwardAddsIntoTableRows) {
  std::vector<float> table = Random(kTable * kDim, 71);
  const int64_t rows = static_cast<int64_t>(kIds.size());
  const std::vector<float> w = Random(rows * kDim, 72);  // dout
  std::vector<float> out(rows * kDim);
  auto objective = [&] {
    EXPECT_TRUE(EmbeddingForward(table.data(), kIds.data(), rows, kTable, kDim, out.data()).ok());
    return Dot(w, out);
  };
  const std::vector<float> dtable0 = Random(kTable * kDim, 73);
  std::vector<float> dtable = dtable0;
  ASSERT_TRUE(EmbeddingBackward(w.data(), kIds.data(), rows, kTable, kDim, dtable.data()).ok());
  // Exactly the row-order sum.
  std::vector<float> expected = dtable0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < kDim; ++i) expected[kIds[r] * kDim + i] += w[r * kDim + i];
  }
  EXPECT_EQ(dtable, expected);
  ExpectClose(Added(dtable0, dtable), NumericGrad(&table, objective), kFdTol, "dtable");
}

TEST(EmbeddingTest, OutOfRangeIdIsInvalidArgument) {
  const std::vector<float> table = Random(kTable * kDim, 74);
  for (int32_t bad : {9, 6, -2}) {
    SCOPED_TRACE(absl::StrCat("id ", bad));
    const std::vector<int32_t> ids = {1, 2, bad, 0};
    std::vector<float> out(ids.size() * kDim, 7.0f);
    const absl::Status s =
        EmbeddingForward(table.data(), ids.data(), ids.size(), kTable, kDim, out.data());
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    const std::string msg(s.message());
    EXPECT_THAT(msg, HasSubstr(absl::StrCat("row 2 has id ", bad)));
    EXPECT_THAT(msg, HasSubstr(absl::StrCat("table of ", kTable, " rows")));
    EXPECT_EQ(out, std::vector<float>(out.size(), 7.0f)) << "out written on error";

    std::vector<float> dtable(kTable * kDim, 1.0f);
    const std::vector<float> dout(ids.size() * kDim, 1.0f);
    EXPECT_EQ(
        EmbeddingBackward(dout.data(), ids.data(), ids.size(), kTable, kDim, dtable.data()).code(),
        absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(dtable, std::vector<float>(dtable.size(), 1.0f)) << "dtable written on error";
  }
}

}  // namespace
}  // namespace trireme::kernels
