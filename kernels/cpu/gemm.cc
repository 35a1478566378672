#include "kernels/gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <vector>

// The two OpenBLAS entry points used, declared here rather than through
// <cblas.h>: Debian installs OpenBLAS's header under
// /usr/include/x86_64-linux-gnu/openblas-pthread/, and Bazel refuses include
// paths outside the execution root. The enum parameters (CBLAS_ORDER,
// CBLAS_TRANSPOSE) are passed as int, which is the ABI of a C enum; blasint is
// int (the library is built without OPENBLAS_USE64BITINT). The library comes
// from //third_party:openblas (-lopenblas).
extern "C" {
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
void openblas_set_num_threads(int num_threads);
}

namespace trireme::kernels {
namespace {

// OpenBLAS's values of CBLAS_ORDER / CBLAS_TRANSPOSE.
constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;

bool FitsInt(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// C = beta * C on the [m, n] block (beta == 0 writes zeros without reading).
void ScaleC(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) {
      std::fill(row, row + n, 0.0f);
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

// The same product with plain loops, for sizes OpenBLAS's int32 cannot take.
void GemmLoops(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float av = trans_a ? a[p * lda + i] : a[i * lda + p];
        const float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
        sum += static_cast<double>(av) * bv;
      }
      float& cij = c[i * ldc + j];
      const float scaled = beta == 0.0f ? 0.0f : beta * cij;
      cij = alpha * static_cast<float>(sum) + scaled;
    }
  }
}

}  // namespace

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    ScaleC(m, n, beta, c, ldc);
    return;
  }
  if (!FitsInt(m) || !FitsInt(n) || !FitsInt(k) || !FitsInt(lda) || !FitsInt(ldb) ||
      !FitsInt(ldc)) {
    GemmLoops(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  cblas_sgemm(kCblasRowMajor, trans_a ? kCblasTrans : kCblasNoTrans,
              trans_b ? kCblasTrans : kCblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

void SetGemmThreads(int threads) { openblas_set_num_threads(std::max(threads, 1)); }

double MeasureGemmFlops(int64_t n) {
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  Gemm(false, false, n, n, n, 1, a.data(), n, b.data(), n, 0, c.data(), n);  // warm-up
  int reps = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double seconds = 0;
  while (reps < 3 || seconds < 0.2) {
    Gemm(false, false, n, n, n, 1, a.data(), n, b.data(), n, 0, c.data(), n);
    ++reps;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return reps * 2.0 * n * n * n / seconds;
}

}  // namespace trireme::kernels
