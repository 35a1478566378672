// Stream launchers of every kernel: the one entry point the orchestration
// code (engine, model, pipeline) calls, on any device.
//
// Each launcher enqueues its kernel on `s` and returns at once:
// - host streams (cpu, cpu_async): the CPU kernel (kernels/nn.h, optim.h,
//   cast.h, gemm.h) runs as a task on the stream -- inline on the cpu
//   device's InlineStream, on the worker thread of a cpu_async CpuStream;
// - CUDA streams (--config=cuda): the CUDA launcher of kernels/cuda/ on the
//   stream's cudaStream_t (GEMMs through a cuBLAS handle bound to the
//   stream; the glue kernels' launchers in kernels/cuda/glue.h);
// - the meta device: nothing runs (there is no memory).
// Pointers are memory of the stream's device (Copy also takes host memory);
// shapes, layouts, accumulation and overlap rules are those of the CPU
// kernels, whose headers document them. The returned status covers the
// enqueueing; errors of the kernel itself become the stream's sticky error.
// Arguments are captured by value: the caller's scalars may go out of scope,
// the buffers must stay alive until the stream has run the kernel. `threads`
// splits a CPU kernel over the shared worker pool without changing any
// result bit (kernels/nn.h); CUDA ignores it.
#ifndef TRIREME_KERNELS_OPS_H_
#define TRIREME_KERNELS_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/nn.h"
#include "kernels/optim.h"
#include "runtime/core/dtype.h"
#include "runtime/core/stream.h"

namespace trireme::kernels {

// ---- memory -----------------------------------------------------------------
// dst[0, bytes) = 0.
absl::Status Memset(Stream& s, void* dst, int64_t bytes);
// dst[0, bytes) = src[0, bytes): device to device, host to device and device
// to host (on CUDA host memory should be pinned for the copy to be async).
absl::Status Copy(Stream& s, void* dst, const void* src, int64_t bytes);
// dst[0, bytes) = the host bytes at `src`, which are read (or copied) before
// the call returns: the caller may reuse them at once.
absl::Status CopyFromHost(Stream& s, void* dst, const void* src, int64_t bytes);

// ---- element-wise -------------------------------------------------------------
absl::Status Cast(Stream& s, const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                  int threads = 1);
// out[i] = round(add ? out[i] + in[i] : in[i]) in out_dtype, the sum in f32
// (accumulating a 16-bit gradient, or a reduced shard into its buffer); Cast
// when !add, Add when both are f32.
absl::Status AccumulateCast(Stream& s, const void* in, DType in_dtype, void* out, DType out_dtype,
                            int64_t n, bool add, int threads = 1);
absl::Status Add(Stream& s, const float* a, const float* b, int64_t n, float* out, int threads = 1);
absl::Status AddBias(Stream& s, float* x, const float* bias, int64_t rows, int64_t cols,
                     int threads = 1);
absl::Status AddColumnSums(Stream& s, const float* x, int64_t rows, int64_t cols, float* sums,
                           int threads = 1);
absl::Status AddPositions(Stream& s, float* x, const float* table, int64_t rows, int64_t first_row,
                          int64_t seq, int64_t dim);
absl::Status AddPositionsBackward(Stream& s, const float* dx, int64_t rows, int64_t first_row,
                                  int64_t seq, int64_t dim, float* dtable);
absl::Status RowsToHeads(Stream& s, const float* rows, int64_t ld, int64_t col,
                         const AttentionShape& shape, float* heads, int threads = 1);
absl::Status HeadsToRows(Stream& s, const float* heads, const AttentionShape& shape, float* rows,
                         int64_t ld, int64_t col, int threads = 1);

// ---- layers ---------------------------------------------------------------------
absl::Status Gemm(Stream& s, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                  float* c, int64_t ldc);
absl::Status LayerNormForward(Stream& s, const float* x, const float* gamma, const float* beta,
                              int64_t rows, int64_t dim, float eps, float* y, float* mean,
                              float* rstd, int threads = 1);
absl::Status LayerNormBackward(Stream& s, const float* dy, const float* x, const float* gamma,
                               const float* mean, const float* rstd, int64_t rows, int64_t dim,
                               float* dx, float* dgamma, float* dbeta, int threads = 1);
absl::Status RmsNormForward(Stream& s, const float* x, const float* gamma, int64_t rows,
                            int64_t dim, float eps, float* y, float* rstd, int threads = 1);
absl::Status RmsNormBackward(Stream& s, const float* dy, const float* x, const float* gamma,
                             const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                             int threads = 1);
absl::Status SwiGluForward(Stream& s, const float* gate, const float* up, int64_t n, float* y,
                           int threads = 1);
absl::Status SwiGluBackward(Stream& s, const float* gate, const float* up, const float* dy,
                            int64_t n, float* dgate, float* dup, int threads = 1);
absl::Status Rotary(Stream& s, float* x, const AttentionShape& shape, int64_t first_pos, float base,
                    bool inverse, int threads = 1);
absl::Status RepeatKvHeads(Stream& s, const float* kv, const AttentionShape& shape,
                           int64_t kv_heads, float* out, int threads = 1);
absl::Status SumKvHeads(Stream& s, const float* grad, const AttentionShape& shape, int64_t kv_heads,
                        float* out, int threads = 1);
// InvalidArgument, with nothing enqueued (on any device, meta too), for a
// shape CheckCachedAttentionShape rejects.
absl::Status CachedAttention(Stream& s, const CachedAttentionShape& shape, const float* q,
                             const float* k_cache, const float* v_cache, float* out);
absl::Status WriteKvCache(Stream& s, const CachedAttentionShape& shape, const float* src,
                          float* cache);
absl::Status GeluForward(Stream& s, const float* x, int64_t n, float* y, int threads = 1);
absl::Status GeluBackward(Stream& s, const float* x, const float* dy, int64_t n, float* dx,
                          int threads = 1);
// `workspace`: CausalAttentionWorkspaceSize(shape) floats (the CPU kernel's;
// the CUDA kernel needs CausalAttentionWorkspaceSizeCuda).
int64_t AttentionWorkspaceFloats(const Stream& s, const AttentionShape& shape);
absl::Status CausalAttentionForward(Stream& s, const AttentionShape& shape, const float* q,
                                    const float* k, const float* v, float* probs, float* out);
absl::Status CausalAttentionBackward(Stream& s, const AttentionShape& shape, const float* q,
                                     const float* k, const float* v, const float* probs,
                                     const float* dout, float* workspace, float* dq, float* dk,
                                     float* dv);
absl::Status EmbeddingForwardRange(Stream& s, const float* table, const int32_t* ids, int64_t rows,
                                   int64_t lo, int64_t count, int64_t dim, float* out);
absl::Status EmbeddingBackwardRange(Stream& s, const float* dout, const int32_t* ids, int64_t rows,
                                    int64_t lo, int64_t count, int64_t dim, float* dtable);
absl::Status CrossEntropyRowMax(Stream& s, const float* logits, int64_t rows, int64_t vocab,
                                int64_t vocab_valid, float* row_max);
absl::Status CrossEntropySumExp(Stream& s, const float* logits, const float* row_max, int64_t rows,
                                int64_t vocab, int64_t vocab_valid, float* sum_exp);
absl::Status CrossEntropyTargetLogit(Stream& s, const float* logits, const int32_t* targets,
                                     int64_t rows, int64_t vocab, int64_t lo, int64_t vocab_valid,
                                     float* target);
absl::Status CrossEntropyLoss(Stream& s, const float* row_max, const float* sum_exp,
                              const float* target, int64_t rows, float* lse, double* loss);
absl::Status CrossEntropyBackwardRange(Stream& s, const float* logits, const int32_t* targets,
                                       const float* lse, int64_t rows, int64_t vocab, int64_t lo,
                                       int64_t vocab_valid, float scale, float* dlogits);

// ---- optimizer ---------------------------------------------------------------------
absl::Status AdamW(Stream& s, const AdamWScalars& sc, float* p, const float* g, float* m, float* v,
                   int64_t n, ComputeOut out, int threads = 1);
absl::Status Sgd(Stream& s, const SgdScalars& sc, float* p, const float* g, float* buf, int64_t n,
                 ComputeOut out, int threads = 1);
// *result = SumOfSquares(x, n) (a double in device memory).
absl::Status SumOfSquares(Stream& s, const float* x, int64_t n, double* result, int threads = 1);
// *not_finite = 1 if some x[i] is inf or NaN (never cleared here).
absl::Status CheckFinite(Stream& s, const float* x, int64_t n, float* not_finite, int threads = 1);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_OPS_H_
