// CUDA launchers of the glue kernels (--config=cuda): the element-wise,
// bias, position, head-layout, vocabulary-range embedding and cross-entropy
// pieces, the mixed-dtype accumulate, and the stream-side sum of squares and
// finite check. Each has the contract of the CPU kernel of the same name
// (kernels/nn.h, kernels/optim.h, kernels/ops.h), device pointers, and is
// enqueued on `stream` without blocking the host. Sums that the CPU kernel
// takes in row order (column sums, position and embedding gradients, the
// loss over rows) are taken in row order here too: the same bits.
#ifndef TRIREME_KERNELS_CUDA_GLUE_H_
#define TRIREME_KERNELS_CUDA_GLUE_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/nn.h"
#include "runtime/core/dtype.h"

namespace trireme::kernels {

absl::Status AccumulateCastCuda(const void* in, DType in_dtype, void* out, DType out_dtype,
                                int64_t n, cudaStream_t stream);
absl::Status AddCuda(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream);
absl::Status AddBiasCuda(float* x, const float* bias, int64_t rows, int64_t cols,
                         cudaStream_t stream);
absl::Status AddColumnSumsCuda(const float* x, int64_t rows, int64_t cols, float* sums,
                               cudaStream_t stream);
absl::Status AddPositionsCuda(float* x, const float* table, int64_t rows, int64_t first_row,
                              int64_t seq, int64_t dim, cudaStream_t stream);
absl::Status AddPositionsBackwardCuda(const float* dx, int64_t rows, int64_t first_row, int64_t seq,
                                      int64_t dim, float* dtable, cudaStream_t stream);
absl::Status RowsToHeadsCuda(const float* rows, int64_t ld, int64_t col, const AttentionShape& sh,
                             float* heads, cudaStream_t stream);
absl::Status HeadsToRowsCuda(const float* heads, const AttentionShape& sh, float* rows, int64_t ld,
                             int64_t col, cudaStream_t stream);
absl::Status EmbeddingForwardRangeCuda(const float* table, const int32_t* ids, int64_t rows,
                                       int64_t lo, int64_t count, int64_t dim, float* out,
                                       cudaStream_t stream);
absl::Status EmbeddingBackwardRangeCuda(const float* dout, const int32_t* ids, int64_t rows,
                                        int64_t lo, int64_t count, int64_t dim, float* dtable,
                                        cudaStream_t stream);
absl::Status CrossEntropyRowMaxCuda(const float* logits, int64_t rows, int64_t vocab,
                                    int64_t vocab_valid, float* row_max, cudaStream_t stream);
absl::Status CrossEntropySumExpCuda(const float* logits, const float* row_max, int64_t rows,
                                    int64_t vocab, int64_t vocab_valid, float* sum_exp,
                                    cudaStream_t stream);
absl::Status CrossEntropyTargetLogitCuda(const float* logits, const int32_t* targets, int64_t rows,
                                         int64_t vocab, int64_t lo, int64_t vocab_valid,
                                         float* target, cudaStream_t stream);
absl::Status CrossEntropyLossCuda(const float* row_max, const float* sum_exp, const float* target,
                                  int64_t rows, float* lse, double* loss, cudaStream_t stream);
absl::Status CrossEntropyBackwardRangeCuda(const float* logits, const int32_t* targets,
                                           const float* lse, int64_t rows, int64_t vocab,
                                           int64_t lo, int64_t vocab_valid, float scale,
                                           float* dlogits, cudaStream_t stream);
// *result = sum of x[i]^2 in double, deterministic (fixed blocks, fixed
// trees, partials summed in order); the scratch comes from the stream's
// cudaMallocAsync pool and goes back to it on the stream.
absl::Status SumOfSquaresStreamCuda(const float* x, int64_t n, double* result, cudaStream_t stream);
// *not_finite = 1 if some x[i] is inf or NaN (never cleared here).
absl::Status CheckFiniteCuda(const float* x, int64_t n, float* not_finite, cudaStream_t stream);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_GLUE_H_
