// Gemm against a triple-loop reference in double: all four transpose
// combinations, odd and degenerate shapes, alpha/beta, leading dimensions
// larger than the matrices (padding neither read nor written), zero sizes,
// the int32-overflow fallback and concurrent callers.
#include "kernels/gemm.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace trireme::kernels {
namespace {

// Tolerance in one place: error relative to the magnitude of the terms,
// |alpha| * sum_p |a_ip b_pj| + |beta c_ij|.
constexpr double kRelTol = 1e-5;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = 12345.0f;

struct Shape {
  int64_t m, n, k;
};
const Shape kShapes[] = {{7, 15, 3}, {1, 1, 1}, {33, 17, 65}, {2, 9, 1}, {64, 64, 64}};

// A matrix of `rows` x `cols` stored with leading dimension cols + pad; the
// padding holds `pad_value`.
struct Matrix {
  int64_t rows, cols, ld;
  std::vector<float> data;
  float at(int64_t i, int64_t j) const { return data[i * ld + j]; }
};

Matrix MakeMatrix(int64_t rows, int64_t cols, int64_t pad, float pad_value, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Matrix x{rows, cols, cols + pad, {}};
  x.data.assign(rows * x.ld, pad_value);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) x.data[i * x.ld + j] = u(rng);
  }
  return x;
}

// Runs Gemm and checks every element against the reference and the padding of
// C for untouched sentinels. A and B padding is NaN: reading it would show.
void CheckCase(bool ta, bool tb, const Shape& s, float alpha, float beta, int64_t pad,
               uint32_t seed) {
  SCOPED_TRACE(absl::StrCat("trans_a=", ta, " trans_b=", tb, " m=", s.m, " n=", s.n, " k=", s.k,
                            " alpha=", alpha, " beta=", beta, " pad=", pad));
  std::mt19937 rng(seed);
  const Matrix a = ta ? MakeMatrix(s.k, s.m, pad, kNaN, rng) : MakeMatrix(s.m, s.k, pad, kNaN, rng);
  const Matrix b = tb ? MakeMatrix(s.n, s.k, pad, kNaN, rng) : MakeMatrix(s.k, s.n, pad, kNaN, rng);
  const Matrix c0 = MakeMatrix(s.m, s.n, pad, kSentinel, rng);
  Matrix c = c0;
  Gemm(ta, tb, s.m, s.n, s.k, alpha, a.data.data(), a.ld, b.data.data(), b.ld, beta, c.data.data(),
       c.ld);
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t j = 0; j < s.n; ++j) {
      double sum = 0.0, mag = 0.0;
      for (int64_t p = 0; p < s.k; ++p) {
        const double av = ta ? a.at(p, i) : a.at(i, p);
        const double bv = tb ? b.at(j, p) : b.at(p, j);
        sum += av * bv;
        mag += std::fabs(av * bv);
      }
      const double ref = alpha * sum + beta * static_cast<double>(c0.at(i, j));
      const double scale = std::fabs(alpha) * mag + std::fabs(beta * c0.at(i, j));
      ASSERT_NEAR(c.at(i, j), ref, kRelTol * scale + 1e-30) << "at (" << i << ", " << j << ")";
    }
    for (int64_t j = s.n; j < c.ld; ++j) ASSERT_EQ(c.at(i, j), kSentinel) << "padding written";
  }
}

TEST(GemmTest, AllTransposesShapesAndScalars) {
  uint32_t seed = 1;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (const Shape& s : kShapes) {
        CheckCase(ta, tb, s, 1.0f, 0.0f, 0, seed++);
        CheckCase(ta, tb, s, 0.75f, 1.0f, 0, seed++);
        CheckCase(ta, tb, s, -1.5f, 0.25f, 0, seed++);
      }
    }
  }
}

TEST(GemmTest, LeadingDimensionsLargerThanTheMatrix) {
  uint32_t seed = 100;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (const Shape& s : kShapes) {
        CheckCase(ta, tb, s, 1.0f, 0.0f, 3, seed++);
        CheckCase(ta, tb, s, 2.0f, -0.5f, 5, seed++);
      }
    }
  }
}

TEST(GemmTest, BetaZeroDoesNotReadC) {
  const float a[] = {1, 2, 3, 4};  // [2, 2]
  const float b[] = {5, 6, 7, 8};  // [2, 2]
  float c[] = {kNaN, kNaN, kNaN, kNaN};
  Gemm(false, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  EXPECT_FLOAT_EQ(c[0], 19.0f);
  EXPECT_FLOAT_EQ(c[1], 22.0f);
  EXPECT_FLOAT_EQ(c[2], 43.0f);
  EXPECT_FLOAT_EQ(c[3], 50.0f);
}

TEST(GemmTest, ZeroSizes) {
  // m == 0 or n == 0: nothing is read or written; null pointers are fine.
  Gemm(false, false, 0, 5, 3, 1.0f, nullptr, 3, nullptr, 5, 0.0f, nullptr, 5);
  Gemm(true, true, 4, 0, 3, 1.0f, nullptr, 4, nullptr, 3, 0.0f, nullptr, 1);
  std::vector<float> c(6, kSentinel);
  Gemm(false, false, 0, 3, 2, 1.0f, nullptr, 2, nullptr, 3, 0.0f, c.data(), 3);
  Gemm(false, false, 2, 0, 2, 1.0f, nullptr, 2, nullptr, 1, 0.0f, c.data(), 3);
  for (float v : c) EXPECT_EQ(v, kSentinel);
  Gemm(false, false, 0, 0, 0, 1.0f, nullptr, 1, nullptr, 1, 0.0f, nullptr, 1);

  // k == 0: the empty product, C = beta * C, a and b unread.
  std::vector<float> d = {1, 2, 3, 4, 5, 6};  // [2, 3]
  Gemm(false, true, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 1, 1.0f, d.data(), 3);
  EXPECT_EQ(d, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  Gemm(false, true, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 1, 0.5f, d.data(), 3);
  EXPECT_EQ(d, (std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3}));
  std::vector<float> e(6, kNaN);
  Gemm(true, false, 2, 3, 0, 1.0f, nullptr, 2, nullptr, 3, 0.0f, e.data(), 3);
  EXPECT_EQ(e, std::vector<float>(6, 0.0f));
}

// Leading dimensions beyond int32 take the plain-loop path. With one row of A
// and C and a transposed B of one row, only row 0 of each is addressed, so a
// huge leading dimension needs no memory.
TEST(GemmTest, LeadingDimensionBeyondInt32UsesTheFallback) {
  const int64_t huge = int64_t{1} << 33;
  const float a[] = {1, -2, 3, 0.5f, 4, -1, 2, 7, 0.25f};
  const float b[] = {2, 1, -1, 4, 0.5f, 3, -2, 1, 8};
  double dot = 0.0;
  for (int i = 0; i < 9; ++i) dot += static_cast<double>(a[i]) * b[i];
  float c = 3.0f;
  Gemm(false, true, 1, 1, 9, 0.5f, a, huge, b, huge, 2.0f, &c, huge);
  EXPECT_FLOAT_EQ(c, static_cast<float>(0.5 * dot + 6.0));
}

// Several threads calling Gemm at once get the single-caller result, with
// OpenBLAS on one and on two threads.
TEST(GemmTest, ConcurrentCallersAgreeWithASingleCaller) {
  for (int blas_threads : {1, 2}) {
    SetGemmThreads(blas_threads);
    std::mt19937 rng(7);
    const int64_t m = 65, n = 47, k = 129;
    const Matrix a = MakeMatrix(m, k, 0, 0.0f, rng);
    const Matrix b = MakeMatrix(k, n, 0, 0.0f, rng);
    std::vector<float> expected(m * n);
    Gemm(false, false, m, n, k, 1.0f, a.data.data(), k, b.data.data(), n, 0.0f, expected.data(), n);
    constexpr int kCallers = 4;
    std::vector<std::vector<float>> results(kCallers, std::vector<float>(m * n));
    std::vector<std::thread> callers;
    for (int t = 0; t < kCallers; ++t) {
      callers.emplace_back([&, t] {
        for (int rep = 0; rep < 20; ++rep) {
          Gemm(false, false, m, n, k, 1.0f, a.data.data(), k, b.data.data(), n, 0.0f,
               results[t].data(), n);
        }
      });
    }
    for (auto& th : callers) th.join();
    for (int t = 0; t < kCallers; ++t) {
      for (int64_t i = 0; i < m * n; ++i) {
        ASSERT_NEAR(results[t][i], expected[i], kRelTol * (1.0 + std::fabs(expected[i])))
            << "blas threads " << blas_threads << ", caller " << t << ", element " << i;
      }
    }
  }
  SetGemmThreads(1);
}

}  // namespace
}  // namespace trireme::kernels
