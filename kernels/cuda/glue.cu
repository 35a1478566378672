#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cast_body.h"
#include "kernels/cuda/glue.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/nn_body.h"
#include "kernels/optim_body.h"
#include "runtime/core/status.h"

namespace trireme::kernels {
namespace {

constexpr int kThreads = kThreadsPerBlock;

#define TRIREME_GRID_LOOP(i, n) for (int64_t i = GlobalThread(); i < (n); i += GridThreads())

__global__ void AccumulateCastKernel(const void* in, DType in_dtype, void* out, DType out_dtype,
                                     int64_t n) {
  TRIREME_GRID_LOOP(i, n) AccumulateElement(in, in_dtype, out, out_dtype, i);
}

__global__ void AddKernel(const float* a, const float* b, int64_t n, float* out) {
  TRIREME_GRID_LOOP(i, n) out[i] = a[i] + b[i];
}

__global__ void AddBiasKernel(float* x, const float* bias, int64_t rows, int64_t cols) {
  TRIREME_GRID_LOOP(e, rows * cols) x[e] += bias[e % cols];
}

// A thread per column, rows in order (the CPU kernel's order).
__global__ void AddColumnSumsKernel(const float* x, int64_t rows, int64_t cols, float* sums) {
  TRIREME_GRID_LOOP(j, cols) {
    float s = sums[j];
    for (int64_t r = 0; r < rows; ++r) s += x[r * cols + j];
    sums[j] = s;
  }
}

__global__ void AddPositionsKernel(float* x, const float* table, int64_t rows, int64_t first_row,
                                   int64_t seq, int64_t dim) {
  TRIREME_GRID_LOOP(e, rows * dim) {
    const int64_t r = e / dim, j = e % dim;
    x[e] += table[((first_row + r) % seq) * dim + j];
  }
}

// A thread per (table row p, column j): the rows r with (first_row + r) % seq
// == p, in order -- the CPU kernel adds them in that order too.
__global__ void AddPositionsBackwardKernel(const float* dx, int64_t rows, int64_t first_row,
                                           int64_t seq, int64_t dim, float* dtable) {
  TRIREME_GRID_LOOP(e, seq * dim) {
    const int64_t p = e / dim, j = e % dim;
    const int64_t r0 = ((p - first_row) % seq + seq) % seq;  // the first r landing on p
    if (r0 >= rows) continue;
    float s = dtable[e];
    for (int64_t r = r0; r < rows; r += seq) s += dx[r * dim + j];
    dtable[e] = s;
  }
}

// Element e of [batch x heads, seq, head_dim] and its place in [rows, ld] at
// column `col` (the CPU ForEachHeadRow's offsets).
__device__ inline int64_t RowOffset(int64_t e, int64_t H, int64_t T, int64_t D, int64_t ld,
                                    int64_t col) {
  const int64_t d = e % D, t = (e / D) % T, bh = e / (D * T);
  const int64_t b = bh / H, h = bh % H;
  return (b * T + t) * ld + col + h * D + d;
}

__global__ void RowsToHeadsKernel(const float* rows, int64_t n, int64_t H, int64_t T, int64_t D,
                                  int64_t ld, int64_t col, float* heads) {
  TRIREME_GRID_LOOP(e, n) heads[e] = rows[RowOffset(e, H, T, D, ld, col)];
}

__global__ void HeadsToRowsKernel(const float* heads, int64_t n, int64_t H, int64_t T, int64_t D,
                                  int64_t ld, int64_t col, float* rows) {
  TRIREME_GRID_LOOP(e, n) rows[RowOffset(e, H, T, D, ld, col)] = heads[e];
}

__global__ void EmbeddingForwardRangeKernel(const float* table, const int32_t* ids, int64_t rows,
                                            int64_t lo, int64_t count, int64_t dim, float* out) {
  TRIREME_GRID_LOOP(e, rows * dim) {
    const int64_t id = static_cast<int64_t>(ids[e / dim]) - lo;
    out[e] = id >= 0 && id < count ? table[id * dim + e % dim] : 0.0f;
  }
}

// A thread per column, rows in order (the CPU kernel's order for repeated ids).
__global__ void EmbeddingBackwardRangeKernel(const float* dout, const int32_t* ids, int64_t rows,
                                             int64_t lo, int64_t count, int64_t dim,
                                             float* dtable) {
  TRIREME_GRID_LOOP(j, dim) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t id = static_cast<int64_t>(ids[r]) - lo;
      if (id >= 0 && id < count) dtable[id * dim + j] += dout[r * dim + j];
    }
  }
}

// A block per row, striding over the rows.
__global__ void RowMaxKernel(const float* logits, int64_t rows, int64_t vocab, int64_t valid,
                             float* row_max) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = logits + r * vocab;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < valid; j += kThreads) m = row[j] > m ? row[j] : m;
    m = BlockReduce(m, MaxOp());
    if (threadIdx.x == 0) row_max[r] = m;
  }
}

// The CPU kernel's terms (exp in double of logit - max), summed in a tree.
__global__ void SumExpKernel(const float* logits, const float* row_max, int64_t rows, int64_t vocab,
                             int64_t valid, float* sum_exp) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = logits + r * vocab;
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < valid; j += kThreads) {
      s += exp(static_cast<double>(row[j]) - row_max[r]);
    }
    s = BlockReduce(s, SumOp());
    if (threadIdx.x == 0) sum_exp[r] = static_cast<float>(s);
  }
}

__global__ void TargetLogitKernel(const float* logits, const int32_t* targets, int64_t rows,
                                  int64_t vocab, int64_t lo, int64_t valid, float* target) {
  TRIREME_GRID_LOOP(r, rows) {
    const int64_t t = static_cast<int64_t>(targets[r]) - lo;
    target[r] = t >= 0 && t < valid ? logits[r * vocab + t] : 0.0f;
  }
}

// One thread: the rows in order, as the CPU kernel (the same bits).
__global__ void LossKernel(const float* row_max, const float* sum_exp, const float* target,
                           int64_t rows, float* lse, double* loss) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = row_max[r] + logf(sum_exp[r]);
    total += (static_cast<double>(lse[r]) - target[r]) / static_cast<double>(rows);
  }
  *loss = total;
}

__global__ void CrossEntropyBackwardRangeKernel(const float* logits, const int32_t* targets,
                                                const float* lse, int64_t rows, int64_t vocab,
                                                int64_t lo, int64_t valid, float g,
                                                float* dlogits) {
  TRIREME_GRID_LOOP(e, rows * vocab) {
    const int64_t r = e / vocab, j = e % vocab;
    const int64_t t = static_cast<int64_t>(targets[r]) - lo;
    dlogits[e] =
        j < valid ? CrossEntropyGradElement(logits[e], lse[r], j == t ? 1.0f : 0.0f, g) : 0.0f;
  }
}

__global__ void CheckFiniteKernel(const float* x, int64_t n, float* not_finite) {
  bool bad = false;
  TRIREME_GRID_LOOP(i, n) bad = bad || !IsFiniteBits(x[i]);
  if (bad) *not_finite = 1.0f;  // every writer writes the same value
}

#undef TRIREME_GRID_LOOP

}  // namespace

absl::Status AccumulateCastCuda(const void* in, DType in_dtype, void* out, DType out_dtype,
                                int64_t n, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  AccumulateCastKernel<<<GridFor(n), kThreads, 0, stream>>>(in, in_dtype, out, out_dtype, n);
  return LaunchStatus("AccumulateCastKernel");
}

absl::Status AddCuda(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  AddKernel<<<GridFor(n), kThreads, 0, stream>>>(a, b, n, out);
  return LaunchStatus("AddKernel");
}

absl::Status AddBiasCuda(float* x, const float* bias, int64_t rows, int64_t cols,
                         cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return absl::OkStatus();
  AddBiasKernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(x, bias, rows, cols);
  return LaunchStatus("AddBiasKernel");
}

absl::Status AddColumnSumsCuda(const float* x, int64_t rows, int64_t cols, float* sums,
                               cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return absl::OkStatus();
  AddColumnSumsKernel<<<GridFor(cols), kThreads, 0, stream>>>(x, rows, cols, sums);
  return LaunchStatus("AddColumnSumsKernel");
}

absl::Status AddPositionsCuda(float* x, const float* table, int64_t rows, int64_t first_row,
                              int64_t seq, int64_t dim, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  AddPositionsKernel<<<GridFor(rows * dim), kThreads, 0, stream>>>(x, table, rows, first_row, seq,
                                                                   dim);
  return LaunchStatus("AddPositionsKernel");
}

absl::Status AddPositionsBackwardCuda(const float* dx, int64_t rows, int64_t first_row, int64_t seq,
                                      int64_t dim, float* dtable, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0 || seq <= 0) return absl::OkStatus();
  AddPositionsBackwardKernel<<<GridFor(seq * dim), kThreads, 0, stream>>>(dx, rows, first_row, seq,
                                                                          dim, dtable);
  return LaunchStatus("AddPositionsBackwardKernel");
}

absl::Status RowsToHeadsCuda(const float* rows, int64_t ld, int64_t col, const AttentionShape& sh,
                             float* heads, cudaStream_t stream) {
  const int64_t n = sh.batch * sh.heads * sh.seq * sh.head_dim;
  if (n <= 0) return absl::OkStatus();
  RowsToHeadsKernel<<<GridFor(n), kThreads, 0, stream>>>(rows, n, sh.heads, sh.seq, sh.head_dim, ld,
                                                         col, heads);
  return LaunchStatus("RowsToHeadsKernel");
}

absl::Status HeadsToRowsCuda(const float* heads, const AttentionShape& sh, float* rows, int64_t ld,
                             int64_t col, cudaStream_t stream) {
  const int64_t n = sh.batch * sh.heads * sh.seq * sh.head_dim;
  if (n <= 0) return absl::OkStatus();
  HeadsToRowsKernel<<<GridFor(n), kThreads, 0, stream>>>(heads, n, sh.heads, sh.seq, sh.head_dim,
                                                         ld, col, rows);
  return LaunchStatus("HeadsToRowsKernel");
}

absl::Status EmbeddingForwardRangeCuda(const float* table, const int32_t* ids, int64_t rows,
                                       int64_t lo, int64_t count, int64_t dim, float* out,
                                       cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  EmbeddingForwardRangeKernel<<<GridFor(rows * dim), kThreads, 0, stream>>>(table, ids, rows, lo,
                                                                            count, dim, out);
  return LaunchStatus("EmbeddingForwardRangeKernel");
}

absl::Status EmbeddingBackwardRangeCuda(const float* dout, const int32_t* ids, int64_t rows,
                                        int64_t lo, int64_t count, int64_t dim, float* dtable,
                                        cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  EmbeddingBackwardRangeKernel<<<GridFor(dim), kThreads, 0, stream>>>(dout, ids, rows, lo, count,
                                                                      dim, dtable);
  return LaunchStatus("EmbeddingBackwardRangeKernel");
}

absl::Status CrossEntropyRowMaxCuda(const float* logits, int64_t rows, int64_t vocab,
                                    int64_t vocab_valid, float* row_max, cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  RowMaxKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(logits, rows, vocab, vocab_valid, row_max);
  return LaunchStatus("CrossEntropyRowMaxKernel");
}

absl::Status CrossEntropySumExpCuda(const float* logits, const float* row_max, int64_t rows,
                                    int64_t vocab, int64_t vocab_valid, float* sum_exp,
                                    cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  SumExpKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(logits, row_max, rows, vocab, vocab_valid,
                                                         sum_exp);
  return LaunchStatus("CrossEntropySumExpKernel");
}

absl::Status CrossEntropyTargetLogitCuda(const float* logits, const int32_t* targets, int64_t rows,
                                         int64_t vocab, int64_t lo, int64_t vocab_valid,
                                         float* target, cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  TargetLogitKernel<<<GridFor(rows), kThreads, 0, stream>>>(logits, targets, rows, vocab, lo,
                                                            vocab_valid, target);
  return LaunchStatus("CrossEntropyTargetLogitKernel");
}

absl::Status CrossEntropyLossCuda(const float* row_max, const float* sum_exp, const float* target,
                                  int64_t rows, float* lse, double* loss, cudaStream_t stream) {
  LossKernel<<<1, 1, 0, stream>>>(row_max, sum_exp, target, rows, lse, loss);
  return LaunchStatus("CrossEntropyLossKernel");
}

absl::Status CrossEntropyBackwardRangeCuda(const float* logits, const int32_t* targets,
                                           const float* lse, int64_t rows, int64_t vocab,
                                           int64_t lo, int64_t vocab_valid, float scale,
                                           float* dlogits, cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return absl::OkStatus();
  const float g = scale / static_cast<float>(rows);
  CrossEntropyBackwardRangeKernel<<<GridFor(rows * vocab), kThreads, 0, stream>>>(
      logits, targets, lse, rows, vocab, lo, vocab_valid, g, dlogits);
  return LaunchStatus("CrossEntropyBackwardRangeKernel");
}

absl::Status SumOfSquaresStreamCuda(const float* x, int64_t n, double* result,
                                    cudaStream_t stream) {
  const int64_t bytes = std::max<int64_t>(SumOfSquaresScratch(n), 1) * sizeof(double);
  void* scratch = nullptr;
  const cudaError_t err = cudaMallocAsync(&scratch, bytes, stream);
  if (err != cudaSuccess) {
    return absl::ResourceExhaustedError(
        absl::StrCat("SumOfSquares: cudaMallocAsync of ", bytes,
                     " bytes of scratch: ", cudaGetErrorString(err)));
  }
  absl::Status s = SumOfSquaresCuda(x, n, static_cast<double*>(scratch), result, stream);
  cudaFreeAsync(scratch, stream);
  return s;
}

absl::Status CheckFiniteCuda(const float* x, int64_t n, float* not_finite, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  CheckFiniteKernel<<<GridFor(n, 4096), kThreads, 0, stream>>>(x, n, not_finite);
  return LaunchStatus("CheckFiniteKernel");
}

}  // namespace trireme::kernels
