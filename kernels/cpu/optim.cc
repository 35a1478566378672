#include "kernels/optim.h"

#include <atomic>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace trireme::kernels {
bool UsingAvx2() { return simd::Enabled(); }
void ForceScalar(bool scalar) { simd::SetForceScalar(scalar); }

namespace {

// ---- AdamW ----

void AdamWScalar(const AdamWScalars& s, float* p, const float* g, float* m, float* v, int64_t begin,
                 int64_t end, ComputeOut out) {
  for (int64_t i = begin; i < end; ++i) {
    AdamWElement(s, p[i], g[i], m[i], v[i]);
    if (out.data) StoreFromF32(out.data, out.dtype, i, p[i]);
  }
}

template <bool kSmall>
TRIREME_AVX2 void AdamWAvx2(const AdamWScalars& s, float* p, const float* g, float* m, float* v,
                            int64_t begin, int64_t end, ComputeOut out) {
  const __m256 gs = _mm256_set1_ps(s.grad_scale), df = _mm256_set1_ps(s.decay_factor);
  const __m256 w = _mm256_set1_ps(s.lerp_weight), omw = _mm256_set1_ps(1.0f - s.lerp_weight);
  const __m256 b2 = _mm256_set1_ps(s.beta2), omb2 = _mm256_set1_ps(s.one_minus_beta2);
  const __m256 bc = _mm256_set1_ps(s.bias_correction2_sqrt), eps = _mm256_set1_ps(s.eps);
  const __m256 nss = _mm256_set1_ps(s.neg_step_size);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    // The operations of AdamWElement, in its order, 8 lanes at a time, no FMA.
    const __m256 G = _mm256_mul_ps(_mm256_loadu_ps(g + i), gs);
    __m256 P = _mm256_mul_ps(_mm256_loadu_ps(p + i), df);
    __m256 M = _mm256_loadu_ps(m + i);
    M = kSmall ? _mm256_add_ps(M, _mm256_mul_ps(w, _mm256_sub_ps(G, M)))
               : _mm256_sub_ps(G, _mm256_mul_ps(_mm256_sub_ps(G, M), omw));
    __m256 V = _mm256_mul_ps(_mm256_loadu_ps(v + i), b2);
    V = _mm256_add_ps(V, _mm256_mul_ps(_mm256_mul_ps(omb2, G), G));
    const __m256 D = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(V), bc), eps);
    P = _mm256_add_ps(P, _mm256_div_ps(_mm256_mul_ps(nss, M), D));
    _mm256_storeu_ps(p + i, P);
    _mm256_storeu_ps(m + i, M);
    _mm256_storeu_ps(v + i, V);
    if (out.data) simd::Store8(out.data, out.dtype, i, P);
  }
  AdamWScalar(s, p, g, m, v, i, end, out);
}

// ---- SGD ----

void SgdScalar(const SgdScalars& s, float* p, const float* g, float* buf, int64_t begin,
               int64_t end, ComputeOut out) {
  for (int64_t i = begin; i < end; ++i) {
    SgdElement(s, p[i], g[i], buf[i]);
    if (out.data) StoreFromF32(out.data, out.dtype, i, p[i]);
  }
}

TRIREME_AVX2 void SgdAvx2(const SgdScalars& s, float* p, const float* g, float* buf, int64_t begin,
                          int64_t end, ComputeOut out) {
  const __m256 gs = _mm256_set1_ps(s.grad_scale), wd = _mm256_set1_ps(s.weight_decay);
  const __m256 mom = _mm256_set1_ps(s.momentum), nlr = _mm256_set1_ps(s.neg_lr);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    __m256 G = _mm256_mul_ps(_mm256_loadu_ps(g + i), gs);
    __m256 P = _mm256_loadu_ps(p + i);
    if (s.decay) G = _mm256_add_ps(G, _mm256_mul_ps(wd, P));
    const __m256 B = s.first ? G : _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(buf + i), mom), G);
    P = _mm256_add_ps(P, _mm256_mul_ps(nlr, B));
    _mm256_storeu_ps(buf + i, B);
    _mm256_storeu_ps(p + i, P);
    if (out.data) simd::Store8(out.data, out.dtype, i, P);
  }
  SgdScalar(s, p, g, buf, i, end, out);
}

// ---- reductions: fixed 2048-element blocks, 8 double lanes each ----

constexpr int64_t kBlock = 2048;

// Lanes combine in a fixed tree, the same in both paths.
double CombineLanes(const double a[8]) {
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

double BlockSumSqScalar(const float* x, int64_t n) {
  double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const double d = x[i + k];
      a[k] = a[k] + d * d;
    }
  }
  for (int k = 0; i < n; ++i, ++k) {
    const double d = x[i];
    a[k] = a[k] + d * d;
  }
  return CombineLanes(a);
}

TRIREME_AVX2 double BlockSumSqAvx2(const float* x, int64_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_loadu_ps(x + i);
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
    lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
    hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
  }
  double a[8];
  _mm256_storeu_pd(a, lo);
  _mm256_storeu_pd(a + 4, hi);
  for (int k = 0; i < n; ++i, ++k) {
    const double d = x[i];
    a[k] = a[k] + d * d;
  }
  return CombineLanes(a);
}

bool UnscaleScalar(float* x, int64_t n, float scale) {
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = x[i] * scale;
    finite = finite & IsFiniteBits(x[i]);
  }
  return finite;
}

TRIREME_AVX2 bool UnscaleAvx2(float* x, int64_t n, float scale) {
  const __m256 sc = _mm256_set1_ps(scale);
  const __m256i mask = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), sc);
    _mm256_storeu_ps(x + i, y);
    const __m256i e = _mm256_and_si256(_mm256_castps_si256(y), mask);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, mask));
  }
  return _mm256_testz_si256(bad, bad) && UnscaleScalar(x + i, n - i, scale);
}

}  // namespace

void AdamW(const AdamWScalars& s, float* p, const float* g, float* m, float* v, int64_t n,
           ComputeOut out, int threads) {
  const bool avx2 = simd::Enabled();
  ParallelFor(n, threads, [&](int64_t b, int64_t e) {
    if (!avx2) {
      AdamWScalar(s, p, g, m, v, b, e, out);
    } else if (s.small_weight) {
      AdamWAvx2<true>(s, p, g, m, v, b, e, out);
    } else {
      AdamWAvx2<false>(s, p, g, m, v, b, e, out);
    }
  });
}

void Sgd(const SgdScalars& s, float* p, const float* g, float* buf, int64_t n, ComputeOut out,
         int threads) {
  const bool avx2 = simd::Enabled();
  ParallelFor(n, threads, [&](int64_t b, int64_t e) {
    avx2 ? SgdAvx2(s, p, g, buf, b, e, out) : SgdScalar(s, p, g, buf, b, e, out);
  });
}

double SumOfSquares(const float* x, int64_t n, int threads) {
  if (n <= 0) return 0.0;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks);
  const bool avx2 = simd::Enabled();
  ParallelFor(
      blocks, threads,
      [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          const int64_t len = std::min(kBlock, n - k * kBlock);
          partial[k] =
              avx2 ? BlockSumSqAvx2(x + k * kBlock, len) : BlockSumSqScalar(x + k * kBlock, len);
        }
      },
      1, 8);
  double sum = 0;
  for (double p : partial) sum += p;  // block order, whatever the threads did
  return sum;
}

bool UnscaleAndCheckFinite(float* x, int64_t n, float scale, int threads) {
  std::atomic<bool> finite{true};
  const bool avx2 = simd::Enabled();
  ParallelFor(n, threads, [&](int64_t b, int64_t e) {
    const bool ok = avx2 ? UnscaleAvx2(x + b, e - b, scale) : UnscaleScalar(x + b, e - b, scale);
    if (!ok) finite = false;
  });
  return finite;
}

bool AllFinite(const float* x, int64_t n, int threads) {
  std::atomic<bool> finite{true};
  ParallelFor(n, threads, [&](int64_t b, int64_t e) {
    bool ok = true;
    for (int64_t i = b; i < e; ++i) ok = ok & IsFiniteBits(x[i]);  // vectorizes
    if (!ok) finite = false;
  });
  return finite;
}

}  // namespace trireme::kernels
