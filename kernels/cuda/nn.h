// CUDA launchers of the model's layers (--config=cuda), on the element math of
// kernels/nn_body.h shared with the CPU kernels (kernels/nn.h gives the
// contracts, shapes and layouts; these follow them). Device pointers; enqueued
// on `stream` (or the cuBLAS handle's stream) and do not block the host, except
// where a comment says the call synchronizes to validate data-derived indices
// or to return the loss.
#ifndef TRIREME_KERNELS_CUDA_NN_H_
#define TRIREME_KERNELS_CUDA_NN_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/nn.h"

namespace trireme::kernels {

// y = gelu(x), n elements.
absl::Status GeluForwardCuda(const float* x, int64_t n, float* y, cudaStream_t stream);
// dx = dy * gelu'(x).
absl::Status GeluBackwardCuda(const float* x, const float* dy, int64_t n, float* dx,
                              cudaStream_t stream);
// LayerNorm over the last dim: x, y [rows, dim]; gamma, beta [dim]; writes
// mean and rstd [rows] (statistics in double, as the CPU kernel).
absl::Status LayerNormForwardCuda(const float* x, const float* gamma, const float* beta,
                                  int64_t rows, int64_t dim, float eps, float* y, float* mean,
                                  float* rstd, cudaStream_t stream);
// Writes dx [rows, dim]; adds into dgamma, dbeta [dim] summing rows in row
// order (deterministic, as the CPU kernel).
absl::Status LayerNormBackwardCuda(const float* dy, const float* x, const float* gamma,
                                   const float* mean, const float* rstd, int64_t rows, int64_t dim,
                                   float* dx, float* dgamma, float* dbeta, cudaStream_t stream);
// RMSNorm over the last dim: x, y [rows, dim]; gamma [dim]; writes rstd
// [rows] (the sum of squares in double, as the CPU kernel).
absl::Status RmsNormForwardCuda(const float* x, const float* gamma, int64_t rows, int64_t dim,
                                float eps, float* y, float* rstd, cudaStream_t stream);
// Writes dx [rows, dim]; adds into dgamma [dim] summing rows in row order
// (the CPU kernel's bits).
absl::Status RmsNormBackwardCuda(const float* dy, const float* x, const float* gamma,
                                 const float* rstd, int64_t rows, int64_t dim, float* dx,
                                 float* dgamma, cudaStream_t stream);
// y = silu(gate) * up; dgate, dup as SwiGluBackward. n elements.
absl::Status SwiGluForwardCuda(const float* gate, const float* up, int64_t n, float* y,
                               cudaStream_t stream);
absl::Status SwiGluBackwardCuda(const float* gate, const float* up, const float* dy, int64_t n,
                                float* dgate, float* dup, cudaStream_t stream);
// Rotary embedding in place, as Rotary (cosines and sines in double).
absl::Status RotaryCuda(float* x, const AttentionShape& shape, int64_t first_pos, float base,
                        bool inverse, cudaStream_t stream);
// Grouped-query heads as RepeatKvHeads / SumKvHeads (the group's heads added
// in order: the CPU kernel's bits). InvalidArgument, with nothing enqueued,
// if kv_heads does not divide shape.heads.
absl::Status RepeatKvHeadsCuda(const float* kv, const AttentionShape& shape, int64_t kv_heads,
                               float* out, cudaStream_t stream);
absl::Status SumKvHeadsCuda(const float* grad, const AttentionShape& shape, int64_t kv_heads,
                            float* out, cudaStream_t stream);
// Attention against a key/value cache as CachedAttention: a block per query
// row, the CPU kernel's arithmetic per row (the same float dot products,
// exponentials with expf, their sum in double in another order).
// InvalidArgument, with nothing enqueued, for a shape CheckCachedAttentionShape
// rejects (as WriteKvCacheCuda).
absl::Status CachedAttentionCuda(const CachedAttentionShape& shape, const float* q,
                                 const float* k_cache, const float* v_cache, float* out,
                                 cudaStream_t stream);
absl::Status WriteKvCacheCuda(const CachedAttentionShape& shape, const float* src, float* cache,
                              cudaStream_t stream);

// Causal attention as CausalAttentionForward: scores and products with
// strided-batched cuBLAS SGEMM on `handle` (and its stream), the causal
// (sliding-window) softmax in a row kernel.
absl::Status CausalAttentionForwardCuda(cublasHandle_t handle, const AttentionShape& shape,
                                        const float* q, const float* k, const float* v,
                                        float* probs, float* out);
// As CausalAttentionBackward; `workspace` holds batch * heads * seq * seq
// floats (all heads at once, unlike the CPU kernel's one).
int64_t CausalAttentionWorkspaceSizeCuda(const AttentionShape& shape);
absl::Status CausalAttentionBackwardCuda(cublasHandle_t handle, const AttentionShape& shape,
                                         const float* q, const float* k, const float* v,
                                         const float* probs, const float* dout, float* workspace,
                                         float* dq, float* dk, float* dv);

// The whole cross-entropy and embedding of kernels/nn.h, on the pieces the
// model uses (kernels/cuda/glue.h). These two forwards synchronize `stream`:
// they copy the targets (ids) to the host and validate them first (nothing
// is written on error), and the cross-entropy returns the mean loss. The
// model validates ids on the host before copying them and calls the pieces,
// so no layer synchronizes; these are for callers holding ids on the device.
absl::StatusOr<float> CrossEntropyForwardCuda(const float* logits, const int32_t* targets,
                                              int64_t rows, int64_t vocab, int64_t vocab_valid,
                                              float* lse, cudaStream_t stream);
// As CrossEntropyBackward; targets are trusted (the forward validated them).
absl::Status CrossEntropyBackwardCuda(const float* logits, const int32_t* targets, const float* lse,
                                      int64_t rows, int64_t vocab, int64_t vocab_valid, float scale,
                                      float* dlogits, cudaStream_t stream);
absl::Status EmbeddingForwardCuda(const float* table, const int32_t* ids, int64_t rows,
                                  int64_t vocab, int64_t dim, float* out, cudaStream_t stream);
// As EmbeddingBackward: a thread per column adds the rows in row order, so
// repeated ids accumulate in the CPU kernel's order (bitwise equal). Ids are
// trusted (the forward validated them).
absl::Status EmbeddingBackwardCuda(const float* dout, const int32_t* ids, int64_t rows,
                                   int64_t vocab, int64_t dim, float* dtable, cudaStream_t stream);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_NN_H_
