#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/glue.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/nn_body.h"
#include "runtime/core/status.h"

namespace trireme::kernels {
namespace {

constexpr int kThreads = kThreadsPerBlock;

using Sum = SumOp;
using Max = MaxOp;

__global__ void GeluForwardKernel(const float* x, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    y[i] = GeluElement(x[i]);
  }
}

__global__ void GeluBackwardKernel(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    dx[i] = dy[i] * GeluGradElement(x[i]);
  }
}

// A block per row (striding over the rows): partial sums per thread, a tree
// in shared memory.
__global__ void LayerNormKernel(const float* x, const float* gamma, const float* beta, int64_t rows,
                                int64_t dim, float eps, float* y, float* mean, float* rstd) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    double sum = 0;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) sum += xr[i];
    const double mu = BlockReduce(sum, Sum()) / dim;
    double sq = 0;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) sq += (xr[i] - mu) * (xr[i] - mu);
    const double var = BlockReduce(sq, Sum()) / dim;
    const float m = static_cast<float>(mu);
    const float s = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
    if (threadIdx.x == 0) {
      mean[row] = m;
      rstd[row] = s;
    }
    float* yr = y + row * dim;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      yr[i] = LayerNormElement(xr[i], m, s, gamma[i], beta[i]);
    }
  }
}

// dx of a row per block, striding over the rows (dx may be dy: each element
// is read, then written, by the same thread after the reductions).
__global__ void LayerNormBackwardKernel(const float* dy, const float* x, const float* gamma,
                                        const float* mean, const float* rstd, int64_t rows,
                                        int64_t dim, float* dx) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t off = row * dim;
    const float m = mean[row], s = rstd[row];
    double sum_g = 0, sum_gx = 0;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      const float xhat = (x[off + i] - m) * s;
      const float g = dy[off + i] * gamma[i];
      sum_g += g;
      sum_gx += static_cast<double>(g) * xhat;
    }
    const float mean_g = static_cast<float>(BlockReduce(sum_g, Sum()) / dim);
    const float mean_gx = static_cast<float>(BlockReduce(sum_gx, Sum()) / dim);
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      const float xhat = (x[off + i] - m) * s;
      dx[off + i] = LayerNormGradElement(dy[off + i], gamma[i], xhat, mean_g, mean_gx, s);
    }
  }
}

// dgamma, dbeta: a thread per column (striding over the columns) adds the
// rows in row order, as the CPU kernel does (bitwise equal sums).
__global__ void LayerNormParamGradKernel(const float* dy, const float* x, const float* mean,
                                         const float* rstd, int64_t rows, int64_t dim,
                                         float* dgamma, float* dbeta) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < dim;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    float g = dgamma[i], b = dbeta[i];
    for (int64_t r = 0; r < rows; ++r) {
      const float d = dy[r * dim + i];
      const float xhat = (x[r * dim + i] - mean[r]) * rstd[r];
      g += d * xhat;
      b += d;
    }
    dgamma[i] = g;
    dbeta[i] = b;
  }
}

// Causal softmax of a score row per block (row t of head bh), striding over
// the rows: columns lo..t (lo = AttentionWindowStart(t, window)), max
// subtracted, sum in double; exact zeros outside them.
__global__ void CausalSoftmaxKernel(float* probs, int64_t rows, int64_t seq, int64_t window) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* row = probs + r * seq;
    const int64_t t = r % seq, lo = AttentionWindowStart(t, window);
    float mx = -INFINITY;
    for (int64_t j = lo + threadIdx.x; j <= t; j += kThreads) mx = row[j] > mx ? row[j] : mx;
    mx = BlockReduce(mx, Max());
    double sum = 0;
    for (int64_t j = lo + threadIdx.x; j <= t; j += kThreads) {
      row[j] = expf(row[j] - mx);
      sum += row[j];
    }
    const float inv = static_cast<float>(1.0 / BlockReduce(sum, Sum()));
    for (int64_t j = threadIdx.x; j < seq; j += kThreads) {
      row[j] = j >= lo && j <= t ? row[j] * inv : 0.0f;
    }
  }
}

// Softmax backward of a row per block, striding over the rows:
// ds = p * (dp - sum_j p_j dp_j) over columns lo..t, 0 outside them.
__global__ void CausalSoftmaxBackwardKernel(const float* probs, float* ds, int64_t rows,
                                            int64_t seq, int64_t window) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* p = probs + r * seq;
    float* row = ds + r * seq;
    const int64_t t = r % seq, lo = AttentionWindowStart(t, window);
    double dot = 0;
    for (int64_t j = lo + threadIdx.x; j <= t; j += kThreads) {
      dot += static_cast<double>(p[j]) * row[j];
    }
    const float dotf = static_cast<float>(BlockReduce(dot, Sum()));
    for (int64_t j = threadIdx.x; j < seq; j += kThreads) {
      row[j] = j >= lo && j <= t ? SoftmaxGradElement(p[j], row[j], dotf) : 0.0f;
    }
  }
}

// RMSNorm of a row per block, striding over the rows (y may be x: each
// element is read, then written, by the same thread after the reduction).
__global__ void RmsNormKernel(const float* x, const float* gamma, int64_t rows, int64_t dim,
                              float eps, float* y, float* rstd) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    double sq = 0;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) sq += static_cast<double>(xr[i]) * xr[i];
    const double ms = BlockReduce(sq, Sum()) / dim;
    const float s = static_cast<float>(1.0 / sqrt(ms + static_cast<double>(eps)));
    if (threadIdx.x == 0) rstd[row] = s;
    float* yr = y + row * dim;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads)
      yr[i] = RmsNormElement(xr[i], s, gamma[i]);
  }
}

// dx of a row per block, striding over the rows (dx may be dy).
__global__ void RmsNormBackwardKernel(const float* dy, const float* x, const float* gamma,
                                      const float* rstd, int64_t rows, int64_t dim, float* dx) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t off = row * dim;
    const float s = rstd[row];
    double sum_gx = 0;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      sum_gx += static_cast<double>(dy[off + i] * gamma[i]) * (x[off + i] * s);
    }
    const float mean_gx = static_cast<float>(BlockReduce(sum_gx, Sum()) / dim);
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      dx[off + i] = RmsNormGradElement(dy[off + i], gamma[i], x[off + i] * s, mean_gx, s);
    }
  }
}

// dgamma: a thread per column (striding over the columns) adds the rows in
// row order, as the CPU kernel does (bitwise equal sums).
__global__ void RmsNormParamGradKernel(const float* dy, const float* x, const float* rstd,
                                       int64_t rows, int64_t dim, float* dgamma) {
  for (int64_t i = GlobalThread(); i < dim; i += GridThreads()) {
    float g = dgamma[i];
    for (int64_t r = 0; r < rows; ++r) g += dy[r * dim + i] * (x[r * dim + i] * rstd[r]);
    dgamma[i] = g;
  }
}

__global__ void SwiGluForwardKernel(const float* gate, const float* up, int64_t n, float* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridThreads()) y[i] = SwiGluElement(gate[i], up[i]);
}

__global__ void SwiGluBackwardKernel(const float* gate, const float* up, const float* dy, int64_t n,
                                     float* dgate, float* dup) {
  for (int64_t i = GlobalThread(); i < n; i += GridThreads()) {
    SwiGluGradElement(gate[i], up[i], dy[i], &dgate[i], &dup[i]);
  }
}

// A thread per pair (x[2i], x[2i + 1]) of [rows = batch x heads x seq, D].
__global__ void RotaryKernel(float* x, int64_t n_pairs, int64_t seq, int64_t D, int64_t first_pos,
                             float base, bool inverse) {
  const int64_t pairs = D / 2;
  for (int64_t e = GlobalThread(); e < n_pairs; e += GridThreads()) {
    const int64_t i = e % pairs, row = e / pairs;
    double c, s;
    RotaryCosSin(first_pos + row % seq, i, D, base, inverse, &c, &s);
    float* p = x + row * D + 2 * i;
    RotatePair(p, p + 1, c, s);
  }
}

// out element e of [batch, H, block] from kv [batch, kv_heads, block].
__global__ void RepeatKvHeadsKernel(const float* kv, int64_t n, int64_t H, int64_t kv_heads,
                                    int64_t block, float* out) {
  const int64_t group = H / kv_heads;
  for (int64_t e = GlobalThread(); e < n; e += GridThreads()) {
    const int64_t bh = e / block, b = bh / H, h = bh % H;
    out[e] = kv[(b * kv_heads + h / group) * block + e % block];
  }
}

// out element e of [batch, kv_heads, block]: its group's heads added in
// order, as the CPU kernel (the same bits).
__global__ void SumKvHeadsKernel(const float* grad, int64_t n, int64_t H, int64_t kv_heads,
                                 int64_t block, float* out) {
  const int64_t group = H / kv_heads;
  for (int64_t e = GlobalThread(); e < n; e += GridThreads()) {
    const int64_t bg = e / block, b = bg / kv_heads, g = bg % kv_heads;
    const float* src = grad + (b * H + g * group) * block + e % block;
    float acc = src[0];
    for (int64_t j = 1; j < group; ++j) acc += src[j * block];
    out[e] = acc;
  }
}

// The scaled score of query row qr against the key of position j (slot
// j % capacity), the dot product in the CPU kernel's order.
__device__ float CachedScore(const float* qr, const float* kh, int64_t j, int64_t capacity,
                             int64_t D, float scale) {
  const float* kr = kh + (j % capacity) * D;
  float dot = 0.0f;
  for (int64_t e = 0; e < D; ++e) dot += qr[e] * kr[e];
  return dot * scale;
}

// A block per query row (b, h, t), striding over the rows: the row max, then
// the sum of exponentials (in double), then, a tile of kThreads positions at
// a time, the probabilities into shared memory and out[d] accumulated over
// them in position order by the thread of column d. Scores are recomputed in
// each pass (no scratch beyond the tile).
__global__ void CachedAttentionKernel(CachedAttentionShape sh, const float* q, const float* k_cache,
                                      const float* v_cache, float* out, float scale) {
  __shared__ float tile[kThreads];
  const int64_t H = sh.heads, Q = sh.queries, D = sh.head_dim, C = sh.capacity;
  const int64_t group = H / sh.kv_heads, rows = sh.batch * H * Q;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t bh = r / Q, b = bh / H, h = bh % H;
    const int64_t pos = sh.first_pos + r % Q, lo = AttentionWindowStart(pos, sh.window);
    const int64_t cache_off = (b * sh.kv_heads + h / group) * C * D;
    const float* kh = k_cache + cache_off;
    const float* vh = v_cache + cache_off;
    const float* qr = q + r * D;
    float mx = -INFINITY;
    for (int64_t j = lo + threadIdx.x; j <= pos; j += kThreads) {
      const float s = CachedScore(qr, kh, j, C, D, scale);
      mx = s > mx ? s : mx;
    }
    mx = BlockReduce(mx, Max());
    double sum = 0;
    for (int64_t j = lo + threadIdx.x; j <= pos; j += kThreads) {
      sum += expf(CachedScore(qr, kh, j, C, D, scale) - mx);
    }
    const float inv = static_cast<float>(1.0 / BlockReduce(sum, Sum()));
    for (int64_t d0 = 0; d0 < D; d0 += kThreads) {
      const int64_t d = d0 + threadIdx.x;
      float acc = 0.0f;
      for (int64_t j0 = lo; j0 <= pos; j0 += kThreads) {
        const int64_t j = j0 + threadIdx.x;
        if (j <= pos) tile[threadIdx.x] = expf(CachedScore(qr, kh, j, C, D, scale) - mx) * inv;
        __syncthreads();
        const int64_t n = pos - j0 + 1 < kThreads ? pos - j0 + 1 : kThreads;
        if (d < D) {
          for (int64_t i = 0; i < n; ++i) acc += tile[i] * vh[((j0 + i) % C) * D + d];
        }
        __syncthreads();
      }
      if (d < D) out[r * D + d] = acc;
    }
  }
}

// Element e of src [batch x kv_heads, queries, D] into its cache slot.
__global__ void WriteKvCacheKernel(const float* src, int64_t n, int64_t Q, int64_t D,
                                   int64_t first_pos, int64_t capacity, float* cache) {
  for (int64_t e = GlobalThread(); e < n; e += GridThreads()) {
    const int64_t row = e / D, bg = row / Q, t = row % Q;
    cache[(bg * capacity + (first_pos + t) % capacity) * D + e % D] = src[e];
  }
}

absl::Status CheckKvHeads(const AttentionShape& shape, int64_t kv_heads) {
  if (kv_heads > 0 && shape.heads >= kv_heads && shape.heads % kv_heads == 0) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("kv_heads ", kv_heads, " does not divide heads ", shape.heads));
}

// Row-major strided-batched SGEMM: C_b = alpha op(A_b) op(B_b) + beta C_b,
// through the column-major operand swap of GemmCuda.
absl::Status BatchedGemm(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, int64_t sa, const float* b,
                         int64_t ldb, int64_t sb, float beta, float* c, int64_t ldc, int64_t sc,
                         int64_t batch) {
  // The 64-bit API: no size is truncated to int.
  const cublasStatus_t s = cublasSgemmStridedBatched_64(
      h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb,
      sb, a, lda, sa, &beta, c, ldc, sc, batch);
  if (s != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrCat("cublasSgemmStridedBatched_64 failed with status ", s,
                                            " (m ", m, ", n ", n, ", k ", k, ", batch ", batch,
                                            ")"));
  }
  return absl::OkStatus();
}

// The stream a cuBLAS handle enqueues on (our kernels go on the same one).
absl::Status StreamOf(cublasHandle_t handle, cudaStream_t* stream) {
  if (cublasGetStream(handle, stream) != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("cublasGetStream failed");
  }
  return absl::OkStatus();
}

absl::Status CudaOk(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

// Copies n int32 from the device to the host (synchronizing `stream`).
absl::Status IdsToHost(const int32_t* d, int64_t n, cudaStream_t stream, std::vector<int32_t>* h) {
  h->resize(n);
  if (n == 0) return absl::OkStatus();
  RETURN_IF_ERROR(
      CudaOk(cudaMemcpyAsync(h->data(), d, n * sizeof(int32_t), cudaMemcpyDeviceToHost, stream),
             "copying indices to the host"));
  return CudaOk(cudaStreamSynchronize(stream), "synchronizing the stream");
}

}  // namespace

absl::Status GeluForwardCuda(const float* x, int64_t n, float* y, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  GeluForwardKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, y);
  return LaunchStatus("GeluForwardKernel");
}

absl::Status GeluBackwardCuda(const float* x, const float* dy, int64_t n, float* dx,
                              cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  GeluBackwardKernel<<<GridFor(n), kThreads, 0, stream>>>(x, dy, n, dx);
  return LaunchStatus("GeluBackwardKernel");
}

absl::Status LayerNormForwardCuda(const float* x, const float* gamma, const float* beta,
                                  int64_t rows, int64_t dim, float eps, float* y, float* mean,
                                  float* rstd, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  LayerNormKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(x, gamma, beta, rows, dim, eps, y, mean,
                                                            rstd);
  return LaunchStatus("LayerNormKernel");
}

absl::Status LayerNormBackwardCuda(const float* dy, const float* x, const float* gamma,
                                   const float* mean, const float* rstd, int64_t rows, int64_t dim,
                                   float* dx, float* dgamma, float* dbeta, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  // Parameter gradients first: dx may overwrite dy.
  LayerNormParamGradKernel<<<GridFor(dim), kThreads, 0, stream>>>(dy, x, mean, rstd, rows, dim,
                                                                  dgamma, dbeta);
  RETURN_IF_ERROR(LaunchStatus("LayerNormParamGradKernel"));
  LayerNormBackwardKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(dy, x, gamma, mean, rstd, rows,
                                                                    dim, dx);
  return LaunchStatus("LayerNormBackwardKernel");
}

absl::Status RmsNormForwardCuda(const float* x, const float* gamma, int64_t rows, int64_t dim,
                                float eps, float* y, float* rstd, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  RmsNormKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(x, gamma, rows, dim, eps, y, rstd);
  return LaunchStatus("RmsNormKernel");
}

absl::Status RmsNormBackwardCuda(const float* dy, const float* x, const float* gamma,
                                 const float* rstd, int64_t rows, int64_t dim, float* dx,
                                 float* dgamma, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  // The parameter gradient first: dx may overwrite dy.
  RmsNormParamGradKernel<<<GridFor(dim), kThreads, 0, stream>>>(dy, x, rstd, rows, dim, dgamma);
  RETURN_IF_ERROR(LaunchStatus("RmsNormParamGradKernel"));
  RmsNormBackwardKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(dy, x, gamma, rstd, rows, dim,
                                                                  dx);
  return LaunchStatus("RmsNormBackwardKernel");
}

absl::Status SwiGluForwardCuda(const float* gate, const float* up, int64_t n, float* y,
                               cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  SwiGluForwardKernel<<<GridFor(n), kThreads, 0, stream>>>(gate, up, n, y);
  return LaunchStatus("SwiGluForwardKernel");
}

absl::Status SwiGluBackwardCuda(const float* gate, const float* up, const float* dy, int64_t n,
                                float* dgate, float* dup, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  SwiGluBackwardKernel<<<GridFor(n), kThreads, 0, stream>>>(gate, up, dy, n, dgate, dup);
  return LaunchStatus("SwiGluBackwardKernel");
}

absl::Status RotaryCuda(float* x, const AttentionShape& shape, int64_t first_pos, float base,
                        bool inverse, cudaStream_t stream) {
  const int64_t n_pairs = shape.batch * shape.heads * shape.seq * (shape.head_dim / 2);
  if (n_pairs <= 0) return absl::OkStatus();
  RotaryKernel<<<GridFor(n_pairs), kThreads, 0, stream>>>(x, n_pairs, shape.seq, shape.head_dim,
                                                          first_pos, base, inverse);
  return LaunchStatus("RotaryKernel");
}

absl::Status RepeatKvHeadsCuda(const float* kv, const AttentionShape& shape, int64_t kv_heads,
                               float* out, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckKvHeads(shape, kv_heads));
  const int64_t block = shape.seq * shape.head_dim, n = shape.batch * shape.heads * block;
  if (n <= 0) return absl::OkStatus();
  RepeatKvHeadsKernel<<<GridFor(n), kThreads, 0, stream>>>(kv, n, shape.heads, kv_heads, block,
                                                           out);
  return LaunchStatus("RepeatKvHeadsKernel");
}

absl::Status SumKvHeadsCuda(const float* grad, const AttentionShape& shape, int64_t kv_heads,
                            float* out, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckKvHeads(shape, kv_heads));
  const int64_t block = shape.seq * shape.head_dim, n = shape.batch * kv_heads * block;
  if (n <= 0) return absl::OkStatus();
  SumKvHeadsKernel<<<GridFor(n), kThreads, 0, stream>>>(grad, n, shape.heads, kv_heads, block, out);
  return LaunchStatus("SumKvHeadsKernel");
}

absl::Status CachedAttentionCuda(const CachedAttentionShape& shape, const float* q,
                                 const float* k_cache, const float* v_cache, float* out,
                                 cudaStream_t stream) {
  RETURN_IF_ERROR(CheckCachedAttentionShape(shape, "CachedAttention"));
  const int64_t rows = shape.batch * shape.heads * shape.queries;
  if (rows <= 0 || shape.head_dim <= 0) return absl::OkStatus();
  const float scale = 1.0f / sqrtf(static_cast<float>(shape.head_dim));
  CachedAttentionKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(shape, q, k_cache, v_cache, out,
                                                                  scale);
  return LaunchStatus("CachedAttentionKernel");
}

absl::Status WriteKvCacheCuda(const CachedAttentionShape& shape, const float* src, float* cache,
                              cudaStream_t stream) {
  RETURN_IF_ERROR(CheckCachedAttentionShape(shape, "WriteKvCache"));
  const int64_t n = shape.batch * shape.kv_heads * shape.queries * shape.head_dim;
  if (n <= 0) return absl::OkStatus();
  WriteKvCacheKernel<<<GridFor(n), kThreads, 0, stream>>>(src, n, shape.queries, shape.head_dim,
                                                          shape.first_pos, shape.capacity, cache);
  return LaunchStatus("WriteKvCacheKernel");
}

absl::Status CausalAttentionForwardCuda(cublasHandle_t handle, const AttentionShape& shape,
                                        const float* q, const float* k, const float* v,
                                        float* probs, float* out) {
  const int64_t t = shape.seq, d = shape.head_dim, bh = shape.batch * shape.heads;
  if (t <= 0 || d <= 0 || bh <= 0) return absl::OkStatus();
  cudaStream_t stream;
  RETURN_IF_ERROR(StreamOf(handle, &stream));
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  RETURN_IF_ERROR(BatchedGemm(handle, false, true, t, t, d, scale, q, d, t * d, k, d, t * d, 0.0f,
                              probs, t, t * t, bh));
  CausalSoftmaxKernel<<<RowBlocks(bh * t), kThreads, 0, stream>>>(probs, bh * t, t, shape.window);
  RETURN_IF_ERROR(LaunchStatus("CausalSoftmaxKernel"));
  return BatchedGemm(handle, false, false, t, d, t, 1.0f, probs, t, t * t, v, d, t * d, 0.0f, out,
                     d, t * d, bh);
}

int64_t CausalAttentionWorkspaceSizeCuda(const AttentionShape& shape) {
  return shape.batch * shape.heads * shape.seq * shape.seq;
}

absl::Status CausalAttentionBackwardCuda(cublasHandle_t handle, const AttentionShape& shape,
                                         const float* q, const float* k, const float* v,
                                         const float* probs, const float* dout, float* workspace,
                                         float* dq, float* dk, float* dv) {
  const int64_t t = shape.seq, d = shape.head_dim, bh = shape.batch * shape.heads;
  if (t <= 0 || d <= 0 || bh <= 0) return absl::OkStatus();
  cudaStream_t stream;
  RETURN_IF_ERROR(StreamOf(handle, &stream));
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int64_t hs = t * d, ps = t * t;
  float* ds = workspace;
  RETURN_IF_ERROR(BatchedGemm(handle, true, false, t, d, t, 1.0f, probs, t, ps, dout, d, hs, 0.0f,
                              dv, d, hs, bh));
  RETURN_IF_ERROR(
      BatchedGemm(handle, false, true, t, t, d, 1.0f, dout, d, hs, v, d, hs, 0.0f, ds, t, ps, bh));
  CausalSoftmaxBackwardKernel<<<RowBlocks(bh * t), kThreads, 0, stream>>>(probs, ds, bh * t, t,
                                                                          shape.window);
  RETURN_IF_ERROR(LaunchStatus("CausalSoftmaxBackwardKernel"));
  RETURN_IF_ERROR(
      BatchedGemm(handle, false, false, t, d, t, scale, ds, t, ps, k, d, hs, 0.0f, dq, d, hs, bh));
  return BatchedGemm(handle, true, false, t, d, t, scale, ds, t, ps, q, d, hs, 0.0f, dk, d, hs, bh);
}

absl::StatusOr<float> CrossEntropyForwardCuda(const float* logits, const int32_t* targets,
                                              int64_t rows, int64_t vocab, int64_t vocab_valid,
                                              float* lse, cudaStream_t stream) {
  std::vector<int32_t> host_targets;
  RETURN_IF_ERROR(IdsToHost(targets, rows, stream, &host_targets));
  RETURN_IF_ERROR(CheckCrossEntropyTargets(host_targets.data(), rows, vocab, vocab_valid));
  if (rows == 0) return 0.0f;
  // The model's pieces (kernels/cuda/glue.h), on scratch from the stream's
  // pool: row max (into lse, which the loss overwrites in place), sum of
  // exponentials, target logit, then the loss over the rows in order.
  void* scratch = nullptr;
  const int64_t bytes = rows * 2 * sizeof(float) + sizeof(double);
  RETURN_IF_ERROR(CudaOk(cudaMallocAsync(&scratch, bytes, stream), "cross-entropy scratch"));
  auto* loss = static_cast<double*>(scratch);
  float* sum_exp = reinterpret_cast<float*>(loss + 1);
  float* target = sum_exp + rows;
  absl::Status s = CrossEntropyRowMaxCuda(logits, rows, vocab, vocab_valid, lse, stream);
  if (s.ok()) s = CrossEntropySumExpCuda(logits, lse, rows, vocab, vocab_valid, sum_exp, stream);
  if (s.ok()) {
    s = CrossEntropyTargetLogitCuda(logits, targets, rows, vocab, 0, vocab_valid, target, stream);
  }
  if (s.ok()) s = CrossEntropyLossCuda(lse, sum_exp, target, rows, lse, loss, stream);
  double host = 0;
  if (s.ok()) {
    s = CudaOk(cudaMemcpyAsync(&host, loss, sizeof(double), cudaMemcpyDeviceToHost, stream),
               "copying the loss");
  }
  cudaFreeAsync(scratch, stream);
  if (s.ok()) s = CudaOk(cudaStreamSynchronize(stream), "synchronizing the stream");
  if (!s.ok()) return s;
  return static_cast<float>(host);
}

absl::Status CrossEntropyBackwardCuda(const float* logits, const int32_t* targets, const float* lse,
                                      int64_t rows, int64_t vocab, int64_t vocab_valid, float scale,
                                      float* dlogits, cudaStream_t stream) {
  return CrossEntropyBackwardRangeCuda(logits, targets, lse, rows, vocab, 0, vocab_valid, scale,
                                       dlogits, stream);
}

absl::Status EmbeddingForwardCuda(const float* table, const int32_t* ids, int64_t rows,
                                  int64_t vocab, int64_t dim, float* out, cudaStream_t stream) {
  std::vector<int32_t> host_ids;
  RETURN_IF_ERROR(IdsToHost(ids, rows, stream, &host_ids));
  RETURN_IF_ERROR(CheckEmbeddingIds(host_ids.data(), rows, vocab));
  return EmbeddingForwardRangeCuda(table, ids, rows, 0, vocab, dim, out, stream);
}

absl::Status EmbeddingBackwardCuda(const float* dout, const int32_t* ids, int64_t rows,
                                   int64_t vocab, int64_t dim, float* dtable, cudaStream_t stream) {
  return EmbeddingBackwardRangeCuda(dout, ids, rows, 0, vocab, dim, dtable, stream);
}

}  // namespace trireme::kernels
