#include "kernels/nn.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"
#include "kernels/gemm.h"
#include "kernels/nn_body.h"

namespace trireme::kernels {
namespace {

// The least work per thread before ParallelFor splits: below it a thread's
// start costs more than it saves.
constexpr int64_t kMinElements = 1 << 15;
constexpr int64_t kMinRows = 16;
constexpr int64_t kMinColumns = 64;

}  // namespace

// ---- Validation --------------------------------------------------------------

absl::Status CheckEmbeddingIds(const int32_t* ids, int64_t rows, int64_t vocab) {
  for (int64_t r = 0; r < rows; ++r) {
    if (ids[r] < 0 || ids[r] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("embedding: row ", r, " has id ", ids[r],
                                                     ", out of range for a table of ", vocab,
                                                     " rows"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCrossEntropyTargets(const int32_t* targets, int64_t rows, int64_t vocab,
                                      int64_t vocab_valid) {
  if (rows == 0) return absl::OkStatus();
  if (vocab_valid < 1 || vocab_valid > vocab) {
    return absl::InvalidArgumentError(absl::StrCat("cross-entropy: vocab_valid ", vocab_valid,
                                                   " is not in [1, vocab = ", vocab, "]"));
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0 || targets[r] >= vocab_valid) {
      return absl::InvalidArgumentError(absl::StrCat("cross-entropy: row ", r, " has target ",
                                                     targets[r], ", out of range for ", vocab_valid,
                                                     " valid classes"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCachedAttentionShape(const CachedAttentionShape& sh, const char* kernel) {
  if (sh.batch < 0 || sh.heads < 0 || sh.kv_heads < 0 || sh.queries < 0 || sh.head_dim < 0 ||
      sh.first_pos < 0 || sh.capacity < 0 || sh.window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kernel, ": a negative size (batch ", sh.batch, ", heads ", sh.heads, ", kv_heads ",
        sh.kv_heads, ", queries ", sh.queries, ", head_dim ", sh.head_dim, ", first_pos ",
        sh.first_pos, ", capacity ", sh.capacity, ", window ", sh.window, ")"));
  }
  if (sh.kv_heads <= 0 || sh.heads < sh.kv_heads || sh.heads % sh.kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kernel, ": kv_heads ", sh.kv_heads, " does not divide heads ", sh.heads));
  }
  // The call reads positions max(0, first_pos - window + 1) .. first_pos +
  // queries - 1, each in its own slot.
  const bool whole = sh.capacity - sh.queries >= sh.first_pos;
  const bool ring = sh.window > 0 && sh.window <= sh.capacity - sh.queries + 1;
  if (sh.queries > 0 && !whole && !ring) {
    return absl::InvalidArgumentError(absl::StrCat(
        kernel, ": capacity ", sh.capacity, " < first_pos ", sh.first_pos, " + queries ",
        sh.queries, " without a window of at most ", sh.capacity - sh.queries + 1,
        sh.window > 0 ? absl::StrCat(" (window ", sh.window, ")") : ""));
  }
  return absl::OkStatus();
}

// ---- LayerNorm ------------------------------------------------------------

void LayerNormForward(const float* x, const float* gamma, const float* beta, int64_t rows,
                      int64_t dim, float eps, float* y, float* mean, float* rstd, int threads) {
  ParallelFor(
      rows, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const float* xr = x + r * dim;
          double sum = 0.0;
          for (int64_t i = 0; i < dim; ++i) sum += xr[i];
          const double mu = dim > 0 ? sum / static_cast<double>(dim) : 0.0;
          double sq = 0.0;
          for (int64_t i = 0; i < dim; ++i) {
            const double d = xr[i] - mu;
            sq += d * d;
          }
          const double var = dim > 0 ? sq / static_cast<double>(dim) : 0.0;
          const float m = static_cast<float>(mu);
          const float s = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
          mean[r] = m;
          rstd[r] = s;
          float* yr = y + r * dim;
          for (int64_t i = 0; i < dim; ++i)
            yr[i] = LayerNormElement(xr[i], m, s, gamma[i], beta[i]);
        }
      },
      1, kMinRows);
}

void LayerNormBackward(const float* dy, const float* x, const float* gamma, const float* mean,
                       const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                       float* dbeta, int threads) {
  // dgamma += sum over rows of dy * xhat, dbeta += sum of dy: by columns, each
  // in row order (so the result does not depend on the split), and first,
  // before dx (which may be dy) is written.
  ParallelFor(
      dim, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = 0; r < rows; ++r) {
          const float* dyr = dy + r * dim;
          const float* xr = x + r * dim;
          const float m = mean[r], s = rstd[r];
          for (int64_t i = first; i < end; ++i) {
            const float xhat = (xr[i] - m) * s;
            dgamma[i] += dyr[i] * xhat;
            dbeta[i] += dyr[i];
          }
        }
      },
      16, kMinColumns);
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, by rows.
  ParallelFor(
      rows, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const float* dyr = dy + r * dim;
          const float* xr = x + r * dim;
          const float m = mean[r];
          const float s = rstd[r];
          double sum_g = 0.0;
          double sum_g_xhat = 0.0;
          for (int64_t i = 0; i < dim; ++i) {
            const float xhat = (xr[i] - m) * s;
            const float g = dyr[i] * gamma[i];
            sum_g += g;
            sum_g_xhat += static_cast<double>(g) * xhat;
          }
          const float mean_g =
              dim > 0 ? static_cast<float>(sum_g / static_cast<double>(dim)) : 0.0f;
          const float mean_g_xhat =
              dim > 0 ? static_cast<float>(sum_g_xhat / static_cast<double>(dim)) : 0.0f;
          float* dxr = dx + r * dim;
          for (int64_t i = 0; i < dim; ++i) {
            const float xhat = (xr[i] - m) * s;
            dxr[i] = LayerNormGradElement(dyr[i], gamma[i], xhat, mean_g, mean_g_xhat, s);
          }
        }
      },
      1, kMinRows);
}

// ---- RMSNorm --------------------------------------------------------------

void RmsNormForward(const float* x, const float* gamma, int64_t rows, int64_t dim, float eps,
                    float* y, float* rstd, int threads) {
  ParallelFor(
      rows, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const float* xr = x + r * dim;
          double sq = 0.0;
          for (int64_t i = 0; i < dim; ++i) sq += static_cast<double>(xr[i]) * xr[i];
          const double ms = dim > 0 ? sq / static_cast<double>(dim) : 0.0;
          const float s = static_cast<float>(1.0 / std::sqrt(ms + static_cast<double>(eps)));
          rstd[r] = s;
          float* yr = y + r * dim;
          for (int64_t i = 0; i < dim; ++i) yr[i] = RmsNormElement(xr[i], s, gamma[i]);
        }
      },
      1, kMinRows);
}

void RmsNormBackward(const float* dy, const float* x, const float* gamma, const float* rstd,
                     int64_t rows, int64_t dim, float* dx, float* dgamma, int threads) {
  // dgamma += sum over rows of dy * xhat: by columns, in row order, before dx
  // (which may be dy) is written.
  ParallelFor(
      dim, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = 0; r < rows; ++r) {
          const float* dyr = dy + r * dim;
          const float* xr = x + r * dim;
          const float s = rstd[r];
          for (int64_t i = first; i < end; ++i) dgamma[i] += dyr[i] * (xr[i] * s);
        }
      },
      16, kMinColumns);
  // dx = rstd * (g - xhat * mean(g * xhat)), g = dy * gamma, by rows.
  ParallelFor(
      rows, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const float* dyr = dy + r * dim;
          const float* xr = x + r * dim;
          const float s = rstd[r];
          double sum_g_xhat = 0.0;
          for (int64_t i = 0; i < dim; ++i) {
            sum_g_xhat += static_cast<double>(dyr[i] * gamma[i]) * (xr[i] * s);
          }
          const float mean_g_xhat =
              dim > 0 ? static_cast<float>(sum_g_xhat / static_cast<double>(dim)) : 0.0f;
          float* dxr = dx + r * dim;
          for (int64_t i = 0; i < dim; ++i) {
            dxr[i] = RmsNormGradElement(dyr[i], gamma[i], xr[i] * s, mean_g_xhat, s);
          }
        }
      },
      1, kMinRows);
}

// ---- GELU -----------------------------------------------------------------

namespace {

// 8-lane mirrors of ExpSmall, TanhElement, GeluElement and GeluGradElement
// (kernels/nn_body.h): the same operations in the same order, no FMA, so the
// results equal the scalar path's bitwise.
TRIREME_AVX2 __m256 ExpSmall8(__m256 x) {
  using namespace nn_const;
  const __m256 n = _mm256_floor_ps(
      _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _mm256_set1_ps(0.5f)));
  const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(kLn2Hi))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(kLn2Lo)));
  __m256 p = _mm256_set1_ps(kC7);
  for (float c : {kC6, kC5, kC4, kC3, kC2, 1.0f, 1.0f}) {
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
  }
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

TRIREME_AVX2 __m256 Tanh8(__m256 u) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  // min(clamp, a) returns a when a is NaN, like the scalar `a > clamp ? clamp : a`.
  const __m256 a = _mm256_min_ps(_mm256_set1_ps(nn_const::kTanhClamp), _mm256_andnot_ps(sign, u));
  const __m256 e = ExpSmall8(_mm256_mul_ps(_mm256_set1_ps(2.0f), a));
  const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
  const __m256 neg = _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 signed_t = _mm256_blendv_ps(t, _mm256_xor_ps(t, sign), neg);
  return _mm256_blendv_ps(signed_t, u, _mm256_cmp_ps(u, u, _CMP_UNORD_Q));
}

// u = c (v + k v^3) and tanh(u), as the scalar bodies evaluate them.
TRIREME_AVX2 __m256 GeluTanh8(__m256 v) {
  const __m256 kv3 =
      _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), v), v);
  return Tanh8(_mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_add_ps(v, kv3)));
}

TRIREME_AVX2 void GeluForwardAvx2(const float* x, int64_t n8, float* y) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 t = GeluTanh8(v);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, t)));
  }
}

TRIREME_AVX2 void GeluBackwardAvx2(const float* x, const float* dy, int64_t n8, float* dx) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256 c = _mm256_set1_ps(0.7978845608028654f);
  const __m256 k3 = _mm256_set1_ps(3.0f * 0.044715f);
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 t = GeluTanh8(v);
    const __m256 du = _mm256_mul_ps(c, _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(k3, v), v)));
    const __m256 left = _mm256_mul_ps(half, _mm256_add_ps(one, t));
    const __m256 right = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_sub_ps(one, _mm256_mul_ps(t, t))), du);
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_add_ps(left, right)));
  }
}

}  // namespace

namespace {

// Elements [0, n) split over `threads`: runs of 8 through `vec(first, count)`
// where AVX2 is on, the rest (and everything otherwise) through `scalar(i)`
// (GELU and SwiGLU).
template <typename Simd, typename Scalar>
void GeluApply(int64_t n, int threads, Simd vec, Scalar scalar) {
  ParallelFor(
      n, threads,
      [&](int64_t first, int64_t end) {
        int64_t i = first;
        if (simd::Enabled()) {
          i = first + (end - first) / 8 * 8;
          vec(first, i - first);
        }
        for (; i < end; ++i) scalar(i);
      },
      8, kMinElements);
}

}  // namespace

void GeluForward(const float* x, int64_t n, float* y, int threads) {
  GeluApply(
      n, threads, [&](int64_t f, int64_t c) { GeluForwardAvx2(x + f, c, y + f); },
      [&](int64_t i) { y[i] = GeluElement(x[i]); });
}

void GeluBackward(const float* x, const float* dy, int64_t n, float* dx, int threads) {
  GeluApply(
      n, threads, [&](int64_t f, int64_t c) { GeluBackwardAvx2(x + f, dy + f, c, dx + f); },
      [&](int64_t i) { dx[i] = dy[i] * GeluGradElement(x[i]); });
}

// ---- SwiGLU -----------------------------------------------------------------

namespace {

// 8-lane mirror of SigmoidElement (kernels/nn_body.h): the same operations,
// so the AVX2 and scalar SwiGLU agree bitwise.
TRIREME_AVX2 __m256 Sigmoid8(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 a = _mm256_min_ps(_mm256_set1_ps(nn_const::kSigmoidClamp),
                                 _mm256_andnot_ps(_mm256_set1_ps(-0.0f), g));
  const __m256 e = ExpSmall8(a);
  const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(e, one));
  const __m256 neg = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 sig = _mm256_blendv_ps(_mm256_mul_ps(e, inv), inv, neg);
  return _mm256_blendv_ps(sig, g, _mm256_cmp_ps(g, g, _CMP_UNORD_Q));  // NaN stays NaN
}

TRIREME_AVX2 void SwiGluForwardAvx2(const float* gate, const float* up, int64_t n8, float* y) {
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(g, Sigmoid8(g)), u));
  }
}

TRIREME_AVX2 void SwiGluBackwardAvx2(const float* gate, const float* up, const float* dy,
                                     int64_t n8, float* dgate, float* dup) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i);
    const __m256 d = _mm256_loadu_ps(dy + i);
    const __m256 sig = Sigmoid8(g);
    const __m256 silu = _mm256_mul_ps(g, sig);
    const __m256 dsilu = _mm256_add_ps(sig, _mm256_mul_ps(silu, _mm256_sub_ps(one, sig)));
    _mm256_storeu_ps(dgate + i, _mm256_mul_ps(_mm256_mul_ps(d, u), dsilu));
    _mm256_storeu_ps(dup + i, _mm256_mul_ps(d, silu));
  }
}

}  // namespace

void SwiGluForward(const float* gate, const float* up, int64_t n, float* y, int threads) {
  GeluApply(
      n, threads, [&](int64_t f, int64_t c) { SwiGluForwardAvx2(gate + f, up + f, c, y + f); },
      [&](int64_t i) { y[i] = SwiGluElement(gate[i], up[i]); });
}

void SwiGluBackward(const float* gate, const float* up, const float* dy, int64_t n, float* dgate,
                    float* dup, int threads) {
  GeluApply(
      n, threads,
      [&](int64_t f, int64_t c) {
        SwiGluBackwardAvx2(gate + f, up + f, dy + f, c, dgate + f, dup + f);
      },
      [&](int64_t i) { SwiGluGradElement(gate[i], up[i], dy[i], &dgate[i], &dup[i]); });
}

// ---- Causal attention -----------------------------------------------------

void CausalAttentionForward(const AttentionShape& shape, const float* q, const float* k,
                            const float* v, float* probs, float* out) {
  const int64_t t_len = shape.seq;
  const int64_t d = shape.head_dim;
  if (t_len <= 0) return;
  const float scale = d > 0 ? 1.0f / std::sqrt(static_cast<float>(d)) : 1.0f;
  const int64_t heads = shape.batch * shape.heads;
  for (int64_t bh = 0; bh < heads; ++bh) {
    const float* qh = q + bh * t_len * d;
    const float* kh = k + bh * t_len * d;
    const float* vh = v + bh * t_len * d;
    float* p = probs + bh * t_len * t_len;
    float* oh = out + bh * t_len * d;
    // Scores, then a stable softmax over columns lo..t of row t (lo = 0
    // without a window); the columns outside become exact zeros.
    Gemm(false, true, t_len, t_len, d, scale, qh, d, kh, d, 0.0f, p, t_len);
    for (int64_t t = 0; t < t_len; ++t) {
      float* row = p + t * t_len;
      const int64_t lo = AttentionWindowStart(t, shape.window);
      const float row_max = *std::max_element(row + lo, row + t + 1);
      double sum = 0.0;
      for (int64_t j = lo; j <= t; ++j) {
        row[j] = std::exp(row[j] - row_max);
        sum += row[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = lo; j <= t; ++j) row[j] *= inv;
      std::fill(row, row + lo, 0.0f);
      std::fill(row + t + 1, row + t_len, 0.0f);
    }
    Gemm(false, false, t_len, d, t_len, 1.0f, p, t_len, vh, d, 0.0f, oh, d);
  }
}

int64_t CausalAttentionWorkspaceSize(const AttentionShape& shape) { return shape.seq * shape.seq; }

void CausalAttentionBackward(const AttentionShape& shape, const float* q, const float* k,
                             const float* v, const float* probs, const float* dout,
                             float* workspace, float* dq, float* dk, float* dv) {
  const int64_t t_len = shape.seq;
  const int64_t d = shape.head_dim;
  if (t_len <= 0 || d <= 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t heads = shape.batch * shape.heads;
  float* ds = workspace;
  for (int64_t bh = 0; bh < heads; ++bh) {
    const int64_t off = bh * t_len * d;
    const float* p = probs + bh * t_len * t_len;
    // dv = P^T dout; dP = dout v^T (into ds).
    Gemm(true, false, t_len, d, t_len, 1.0f, p, t_len, dout + off, d, 0.0f, dv + off, d);
    Gemm(false, true, t_len, t_len, d, 1.0f, dout + off, d, v + off, d, 0.0f, ds, t_len);
    // Softmax backward per row: dS = P * (dP - sum_j P dP) over columns
    // lo..t; 0 outside them, where P is 0.
    for (int64_t t = 0; t < t_len; ++t) {
      const float* pr = p + t * t_len;
      float* row = ds + t * t_len;
      const int64_t lo = AttentionWindowStart(t, shape.window);
      double dot = 0.0;
      for (int64_t j = lo; j <= t; ++j) dot += static_cast<double>(pr[j]) * row[j];
      const float dotf = static_cast<float>(dot);
      for (int64_t j = lo; j <= t; ++j) row[j] = SoftmaxGradElement(pr[j], row[j], dotf);
      std::fill(row, row + lo, 0.0f);
      std::fill(row + t + 1, row + t_len, 0.0f);
    }
    // S = scale q k^T: dq = scale dS k, dk = scale dS^T q.
    Gemm(false, false, t_len, d, t_len, scale, ds, t_len, k + off, d, 0.0f, dq + off, d);
    Gemm(true, false, t_len, d, t_len, scale, ds, t_len, q + off, d, 0.0f, dk + off, d);
  }
}

void Rotary(float* x, const AttentionShape& shape, int64_t first_pos, float base, bool inverse,
            int threads) {
  const int64_t bh_count = shape.batch * shape.heads, t_len = shape.seq, d = shape.head_dim;
  const int64_t pairs = d / 2;
  if (bh_count <= 0 || t_len <= 0 || pairs <= 0) return;
  // By positions: the cosines and sines of a position once, applied to each
  // (batch, head) row at that position.
  ParallelFor(
      t_len, threads,
      [&](int64_t first, int64_t end) {
        std::vector<double> cs(2 * pairs);
        for (int64_t t = first; t < end; ++t) {
          for (int64_t i = 0; i < pairs; ++i) {
            RotaryCosSin(first_pos + t, i, d, base, inverse, &cs[2 * i], &cs[2 * i + 1]);
          }
          for (int64_t bh = 0; bh < bh_count; ++bh) {
            float* row = x + (bh * t_len + t) * d;
            for (int64_t i = 0; i < pairs; ++i) {
              RotatePair(&row[2 * i], &row[2 * i + 1], cs[2 * i], cs[2 * i + 1]);
            }
          }
        }
      },
      1, 1);
}

void RepeatKvHeads(const float* kv, const AttentionShape& shape, int64_t kv_heads, float* out,
                   int threads) {
  if (kv_heads <= 0 || shape.heads < kv_heads || shape.heads % kv_heads != 0) return;
  const int64_t H = shape.heads, group = H / kv_heads, block = shape.seq * shape.head_dim;
  ParallelFor(
      shape.batch * H, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t bh = first; bh < end; ++bh) {
          const int64_t b = bh / H, h = bh % H;
          const float* src = kv + (b * kv_heads + h / group) * block;
          std::copy_n(src, block, out + bh * block);
        }
      },
      1, 1);
}

void SumKvHeads(const float* grad, const AttentionShape& shape, int64_t kv_heads, float* out,
                int threads) {
  if (kv_heads <= 0 || shape.heads < kv_heads || shape.heads % kv_heads != 0) return;
  const int64_t H = shape.heads, group = H / kv_heads, block = shape.seq * shape.head_dim;
  ParallelFor(
      shape.batch * kv_heads, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t bg = first; bg < end; ++bg) {
          const int64_t b = bg / kv_heads, g = bg % kv_heads;
          const float* src = grad + (b * H + g * group) * block;
          float* dst = out + bg * block;
          std::copy_n(src, block, dst);
          for (int64_t j = 1; j < group; ++j) {
            const float* next = src + j * block;
            for (int64_t e = 0; e < block; ++e) dst[e] += next[e];
          }
        }
      },
      1, 1);
}

void CachedAttention(const CachedAttentionShape& shape, const float* q, const float* k_cache,
                     const float* v_cache, float* out) {
  if (!CheckCachedAttentionShape(shape, "CachedAttention").ok()) return;
  const int64_t H = shape.heads, Q = shape.queries, D = shape.head_dim, C = shape.capacity;
  if (shape.batch <= 0 || H <= 0 || Q <= 0 || D <= 0) return;
  const int64_t group = H / shape.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // One row's scores, then its exponentials: at most as many as positions.
  const int64_t last = shape.first_pos + Q - 1;
  std::vector<float> row(std::min(last + 1, shape.window > 0 ? shape.window : last + 1));
  for (int64_t bh = 0; bh < shape.batch * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const int64_t cache_off = (b * shape.kv_heads + h / group) * C * D;
    const float* kh = k_cache + cache_off;
    const float* vh = v_cache + cache_off;
    for (int64_t t = 0; t < Q; ++t) {
      const int64_t pos = shape.first_pos + t, lo = AttentionWindowStart(pos, shape.window);
      const float* qr = q + (bh * Q + t) * D;
      float* o = out + (bh * Q + t) * D;
      // As CausalAttentionForward's row: scaled dot products, the row max
      // subtracted, exponentials in float summed in double, times the inverse.
      for (int64_t j = lo; j <= pos; ++j) {
        const float* kr = kh + (j % C) * D;
        float dot = 0.0f;
        for (int64_t e = 0; e < D; ++e) dot += qr[e] * kr[e];
        row[j - lo] = dot * scale;
      }
      const int64_t n = pos - lo + 1;
      const float row_max = *std::max_element(row.begin(), row.begin() + n);
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        row[i] = std::exp(row[i] - row_max);
        sum += row[i];
      }
      const float inv = static_cast<float>(1.0 / sum);
      std::fill(o, o + D, 0.0f);
      for (int64_t j = lo; j <= pos; ++j) {
        const float p = row[j - lo] * inv;
        const float* vr = vh + (j % C) * D;
        for (int64_t e = 0; e < D; ++e) o[e] += p * vr[e];
      }
    }
  }
}

void WriteKvCache(const CachedAttentionShape& shape, const float* src, float* cache) {
  if (!CheckCachedAttentionShape(shape, "WriteKvCache").ok()) return;
  const int64_t Q = shape.queries, D = shape.head_dim, C = shape.capacity;
  for (int64_t bg = 0; bg < shape.batch * shape.kv_heads; ++bg) {
    for (int64_t t = 0; t < Q; ++t) {
      std::copy_n(src + (bg * Q + t) * D, D, cache + (bg * C + (shape.first_pos + t) % C) * D);
    }
  }
}

// ---- Cross-entropy ----------------------------------------------------------

void CrossEntropyRowMax(const float* logits, int64_t rows, int64_t vocab, int64_t vocab_valid,
                        float* row_max) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    float m = -INFINITY;
    for (int64_t j = 0; j < vocab_valid; ++j) m = std::max(m, row[j]);
    row_max[r] = m;
  }
}

void CrossEntropySumExp(const float* logits, const float* row_max, int64_t rows, int64_t vocab,
                        int64_t vocab_valid, float* sum_exp) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    double sum = 0.0;
    for (int64_t j = 0; j < vocab_valid; ++j) {
      sum += std::exp(static_cast<double>(row[j]) - row_max[r]);
    }
    sum_exp[r] = static_cast<float>(sum);
  }
}

void CrossEntropyTargetLogit(const float* logits, const int32_t* targets, int64_t rows,
                             int64_t vocab, int64_t lo, int64_t vocab_valid, float* target) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = static_cast<int64_t>(targets[r]) - lo;
    target[r] = t >= 0 && t < vocab_valid ? logits[r * vocab + t] : 0.0f;
  }
}

void CrossEntropyLoss(const float* row_max, const float* sum_exp, const float* target, int64_t rows,
                      float* lse, double* loss) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = row_max[r] + std::log(sum_exp[r]);
    total += (static_cast<double>(lse[r]) - target[r]) / static_cast<double>(rows);
  }
  *loss = total;
}

void CrossEntropyBackwardRange(const float* logits, const int32_t* targets, const float* lse,
                               int64_t rows, int64_t vocab, int64_t lo, int64_t vocab_valid,
                               float scale, float* dlogits) {
  if (rows == 0) return;
  const float g = scale / static_cast<float>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    float* drow = dlogits + r * vocab;
    const float l = lse[r];
    const int64_t t = static_cast<int64_t>(targets[r]) - lo;
    for (int64_t j = 0; j < vocab_valid; ++j) {
      drow[j] = CrossEntropyGradElement(row[j], l, j == t ? 1.0f : 0.0f, g);
    }
    std::fill(drow + std::max<int64_t>(vocab_valid, 0), drow + vocab, 0.0f);
  }
}

absl::StatusOr<float> CrossEntropyForward(const float* logits, const int32_t* targets, int64_t rows,
                                          int64_t vocab, int64_t vocab_valid, float* lse) {
  if (absl::Status s = CheckCrossEntropyTargets(targets, rows, vocab, vocab_valid); !s.ok())
    return s;
  if (rows == 0) return 0.0f;
  std::vector<float> row_max(rows), sum_exp(rows), target(rows);
  CrossEntropyRowMax(logits, rows, vocab, vocab_valid, row_max.data());
  CrossEntropySumExp(logits, row_max.data(), rows, vocab, vocab_valid, sum_exp.data());
  CrossEntropyTargetLogit(logits, targets, rows, vocab, 0, vocab_valid, target.data());
  double loss = 0;
  CrossEntropyLoss(row_max.data(), sum_exp.data(), target.data(), rows, lse, &loss);
  return static_cast<float>(loss);
}

absl::Status CrossEntropyBackward(const float* logits, const int32_t* targets, const float* lse,
                                  int64_t rows, int64_t vocab, int64_t vocab_valid, float scale,
                                  float* dlogits) {
  if (absl::Status s = CheckCrossEntropyTargets(targets, rows, vocab, vocab_valid); !s.ok())
    return s;
  CrossEntropyBackwardRange(logits, targets, lse, rows, vocab, 0, vocab_valid, scale, dlogits);
  return absl::OkStatus();
}

// ---- Embedding --------------------------------------------------------------

void EmbeddingForwardRange(const float* table, const int32_t* ids, int64_t rows, int64_t lo,
                           int64_t count, int64_t dim, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t id = static_cast<int64_t>(ids[r]) - lo;
    float* dst = out + r * dim;
    if (id >= 0 && id < count) {
      std::copy(table + id * dim, table + (id + 1) * dim, dst);
    } else {
      std::fill(dst, dst + dim, 0.0f);
    }
  }
}

void EmbeddingBackwardRange(const float* dout, const int32_t* ids, int64_t rows, int64_t lo,
                            int64_t count, int64_t dim, float* dtable) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t id = static_cast<int64_t>(ids[r]) - lo;
    if (id < 0 || id >= count) continue;
    float* dst = dtable + id * dim;
    const float* src = dout + r * dim;
    for (int64_t i = 0; i < dim; ++i) dst[i] += src[i];
  }
}

absl::Status EmbeddingForward(const float* table, const int32_t* ids, int64_t rows, int64_t vocab,
                              int64_t dim, float* out) {
  if (absl::Status s = CheckEmbeddingIds(ids, rows, vocab); !s.ok()) return s;
  EmbeddingForwardRange(table, ids, rows, 0, vocab, dim, out);
  return absl::OkStatus();
}

absl::Status EmbeddingBackward(const float* dout, const int32_t* ids, int64_t rows, int64_t vocab,
                               int64_t dim, float* dtable) {
  if (absl::Status s = CheckEmbeddingIds(ids, rows, vocab); !s.ok()) return s;
  EmbeddingBackwardRange(dout, ids, rows, 0, vocab, dim, dtable);
  return absl::OkStatus();
}

// ---- Glue ---------------------------------------------------------------------

void Add(const float* a, const float* b, int64_t n, float* out, int threads) {
  ParallelFor(
      n, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t i = first; i < end; ++i) out[i] = a[i] + b[i];
      },
      16, kMinElements);
}

void AddBias(float* x, const float* bias, int64_t rows, int64_t cols, int threads) {
  ParallelFor(
      rows, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          for (int64_t j = 0; j < cols; ++j) x[r * cols + j] += bias[j];
        }
      },
      1, kMinRows);
}

void AddColumnSums(const float* x, int64_t rows, int64_t cols, float* sums, int threads) {
  // By columns, each summed in row order: the same bits for any split.
  ParallelFor(
      cols, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = first; j < end; ++j) sums[j] += x[r * cols + j];
        }
      },
      16, kMinColumns);
}

void AddPositions(float* x, const float* table, int64_t rows, int64_t first_row, int64_t seq,
                  int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* pos = table + ((first_row + r) % seq) * dim;
    for (int64_t j = 0; j < dim; ++j) x[r * dim + j] += pos[j];
  }
}

void AddPositionsBackward(const float* dx, int64_t rows, int64_t first_row, int64_t seq,
                          int64_t dim, float* dtable) {
  for (int64_t r = 0; r < rows; ++r) {
    float* pos = dtable + ((first_row + r) % seq) * dim;
    for (int64_t j = 0; j < dim; ++j) pos[j] += dx[r * dim + j];
  }
}

namespace {

// Calls f(row_offset, head_offset) for every (batch, head, position): the
// offsets of the head_dim floats of one head in [rows, ld] at column `col`
// and in [batch x heads, seq, head_dim]. Split over (batch, head).
template <typename F>
void ForEachHeadRow(const AttentionShape& sh, int64_t ld, int64_t col, int threads, F f) {
  const int64_t H = sh.heads, T = sh.seq, D = sh.head_dim;
  ParallelFor(
      sh.batch * H, threads,
      [&](int64_t first, int64_t end) {
        for (int64_t bh = first; bh < end; ++bh) {
          const int64_t b = bh / H, h = bh % H;
          for (int64_t t = 0; t < T; ++t) f((b * T + t) * ld + col + h * D, (bh * T + t) * D);
        }
      },
      1, 1);
}

}  // namespace

void RowsToHeads(const float* rows, int64_t ld, int64_t col, const AttentionShape& sh, float* heads,
                 int threads) {
  ForEachHeadRow(sh, ld, col, threads,
                 [&](int64_t r, int64_t h) { std::copy_n(rows + r, sh.head_dim, heads + h); });
}

void HeadsToRows(const float* heads, const AttentionShape& sh, float* rows, int64_t ld, int64_t col,
                 int threads) {
  ForEachHeadRow(sh, ld, col, threads,
                 [&](int64_t r, int64_t h) { std::copy_n(heads + h, sh.head_dim, rows + r); });
}

}  // namespace trireme::kernels
