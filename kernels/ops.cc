#include "kernels/ops.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cast.h"
#include "kernels/cast_body.h"
#include "kernels/cpu/parallel.h"
#include "kernels/gemm.h"

#if TRIREME_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <mutex>

#include "kernels/cuda/cast.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/glue.h"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/optim.h"
#include "runtime/core/cuda_status.h"
#include "runtime/core/cuda_stream.h"
#include "runtime/core/pinned.h"
#endif

namespace trireme::kernels {
namespace {

#if TRIREME_WITH_CUDA
// What a CUDA launcher needs: the stream, and the cuBLAS handle bound to it
// (one per stream, created on first use, destroyed with the stream).
struct CudaCtx {
  CudaStream* cs = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  absl::StatusOr<cublasHandle_t> Blas() const {
    std::shared_ptr<void>& slot = cs->library_handle();
    if (slot == nullptr) {
      CudaDeviceScope scope(device);  // the handle belongs to the stream's device
      cublasHandle_t h = nullptr;
      if (!scope.status().ok() || cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        return absl::InternalError(absl::StrCat("cannot create a cuBLAS handle on cuda:", device));
      }
      const int dev = device;
      slot = std::shared_ptr<void>(h, [dev](void* p) {
        CudaDeviceScope s(dev);
        cublasDestroy(static_cast<cublasHandle_t>(p));
      });
      if (cublasSetStream(h, stream) != CUBLAS_STATUS_SUCCESS) {
        slot.reset();
        return absl::InternalError(absl::StrCat("cannot bind a cuBLAS handle to stream '",
                                                cs->name(), "' on cuda:", device));
      }
    }
    return static_cast<cublasHandle_t>(slot.get());
  }
};

// Pinned staging for host-to-device copies of caller memory: a copy from
// pageable memory would make CUDA wait for the stream first (a host
// synchronization inside a layer). The bytes go to a pinned block, the copy
// is enqueued, and a host function on the stream hands the block back once
// the copy has run; blocks are reused (no CUDA call runs in the callback).
class StagingPool {
 public:
  static StagingPool& Get() {
    static StagingPool* pool = new StagingPool();  // lives for the process
    return *pool;
  }
  absl::Status CopyToDevice(void* dst, const void* src, int64_t bytes, cudaStream_t stream) {
    Block* b = Take(bytes);
    std::memcpy(b->data.data(), src, bytes);
    cudaError_t err = cudaMemcpyAsync(dst, b->data.data(), bytes, cudaMemcpyHostToDevice, stream);
    if (err == cudaSuccess) err = cudaLaunchHostFunc(stream, &StagingPool::Release, b);
    if (err != cudaSuccess) {
      // Nothing may still read the block if it was not enqueued; if the copy
      // was, the stream's error will surface; the block is not reused.
      return absl::InternalError(
          absl::StrCat("copying ", bytes, " bytes to the device: ", cudaGetErrorString(err)));
    }
    return absl::OkStatus();
  }

 private:
  struct Block {
    PinnedVector<char> data;
  };
  Block* Take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (static_cast<int64_t>((*it)->data.size()) >= bytes) {
          Block* b = *it;
          free_.erase(it);
          return b;
        }
      }
    }
    // Pinning is slow: outside the lock the release callback takes.
    auto* b = new Block();
    b->data.resize(std::max<int64_t>(bytes, 4096));
    return b;
  }
  static void CUDART_CB Release(void* block) {
    StagingPool& p = Get();
    std::lock_guard<std::mutex> lock(p.mu_);
    p.free_.push_back(static_cast<Block*>(block));
  }
  std::mutex mu_;
  std::vector<Block*> free_;  // blocks no queued copy reads any more
};

#define TRIREME_CUDA(...) [=](const CudaCtx& cu) -> absl::Status { __VA_ARGS__ }
#define TRIREME_CUDA_BLAS(...)                       \
  [=](const CudaCtx& cu) -> absl::Status {           \
    absl::StatusOr<cublasHandle_t> blas = cu.Blas(); \
    if (!blas.ok()) return blas.status();            \
    __VA_ARGS__                                      \
  }
#else
struct CudaCtx {};
#define TRIREME_CUDA(...) nullptr
#define TRIREME_CUDA_BLAS(...) nullptr
#endif

// Enqueues `host` (a callable returning absl::Status) on a host stream, or
// runs `cuda` (a callable taking CudaCtx, or nullptr if there is no CUDA
// kernel) for a CUDA stream. Nothing runs on the meta device.
template <typename HostFn, typename CudaFn>
absl::Status Launch(Stream& s, const char* name, HostFn host, CudaFn cuda) {
  if (s.device().kind == DeviceKind::kMeta) return absl::OkStatus();
  if (HostStream* h = s.host()) {
    h->Enqueue(std::move(host));
    return absl::OkStatus();
  }
  if constexpr (std::is_same_v<CudaFn, std::nullptr_t>) {
#if TRIREME_WITH_CUDA
    return absl::UnimplementedError(
        absl::StrCat(name, ": no CUDA kernel yet (stream '", s.name(), "')"));
#else
    return absl::UnavailableError(absl::StrCat(name, " on stream '", s.name(),
                                               "': this binary was built without --config=cuda"));
#endif
  } else {
#if TRIREME_WITH_CUDA
    auto* cs = static_cast<CudaStream*>(&s);
    // Kernels launch on the current device: bind the stream's for the call.
    CudaDeviceScope scope(cs->ordinal());
    if (!scope.status().ok()) return scope.status();
    // A stale non-sticky status (an event polled "not ready" on this thread)
    // must not be read as this launch's failure; sticky errors persist.
    cudaGetLastError();
    return cuda(CudaCtx{cs, cs->native(), cs->ordinal()});
#else
    return absl::InternalError(name);  // unreachable: no CUDA streams exist
#endif
  }
}

// A host body that cannot fail.
template <typename F>
auto Ok(F f) {
  return [f = std::move(f)]() -> absl::Status {
    f();
    return absl::OkStatus();
  };
}

}  // namespace

absl::Status Memset(Stream& s, void* dst, int64_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return Launch(s, "Memset", Ok([=] { std::memset(dst, 0, bytes); }),
                TRIREME_CUDA(return cudaMemsetAsync(dst, 0, bytes, cu.stream) == cudaSuccess
                                        ? absl::OkStatus()
                                        : absl::InternalError("cudaMemsetAsync failed");));
}

absl::Status Copy(Stream& s, void* dst, const void* src, int64_t bytes) {
  if (bytes == 0 || dst == src) return absl::OkStatus();
  return Launch(s, "Copy", Ok([=] { std::memcpy(dst, src, bytes); }),
                TRIREME_CUDA(return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
                                                    cu.stream) == cudaSuccess
                                        ? absl::OkStatus()
                                        : absl::InternalError("cudaMemcpyAsync failed");));
}

absl::Status CopyFromHost(Stream& s, void* dst, const void* src, int64_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  // Host streams run the copy later: it reads a private copy of the bytes.
  auto data = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                  static_cast<const char*>(src) + bytes);
  return Launch(s, "CopyFromHost", Ok([=] { std::memcpy(dst, data->data(), bytes); }),
                // Through pinned staging: no wait for the stream.
                TRIREME_CUDA(return StagingPool::Get().CopyToDevice(dst, src, bytes, cu.stream);));
}

absl::Status Cast(Stream& s, const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                  int threads) {
  return Launch(
      s, "Cast", [=] { return CastCpu(in, in_dtype, out, out_dtype, n, threads); },
      TRIREME_CUDA(return CastCuda(in, in_dtype, out, out_dtype, n, cu.stream);));
}

absl::Status AccumulateCast(Stream& s, const void* in, DType in_dtype, void* out, DType out_dtype,
                            int64_t n, bool add, int threads) {
  if (!add) return Cast(s, in, in_dtype, out, out_dtype, n, threads);
  if (in_dtype == DType::kF32 && out_dtype == DType::kF32) {
    float* o = static_cast<float*>(out);
    return Add(s, o, static_cast<const float*>(in), n, o, threads);
  }
  return Launch(
      s, "AccumulateCast", Ok([=] {
        ParallelFor(n, threads, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            AccumulateElement(in, in_dtype, out, out_dtype, i);
          }
        });
      }),
      TRIREME_CUDA(return AccumulateCastCuda(in, in_dtype, out, out_dtype, n, cu.stream);));
}

absl::Status Add(Stream& s, const float* a, const float* b, int64_t n, float* out, int threads) {
  return Launch(s, "Add", Ok([=] { kernels::Add(a, b, n, out, threads); }),
                TRIREME_CUDA(return AddCuda(a, b, n, out, cu.stream);));
}

absl::Status AddBias(Stream& s, float* x, const float* bias, int64_t rows, int64_t cols,
                     int threads) {
  return Launch(s, "AddBias", Ok([=] { kernels::AddBias(x, bias, rows, cols, threads); }),
                TRIREME_CUDA(return AddBiasCuda(x, bias, rows, cols, cu.stream);));
}

absl::Status AddColumnSums(Stream& s, const float* x, int64_t rows, int64_t cols, float* sums,
                           int threads) {
  return Launch(s, "AddColumnSums",
                Ok([=] { kernels::AddColumnSums(x, rows, cols, sums, threads); }),
                TRIREME_CUDA(return AddColumnSumsCuda(x, rows, cols, sums, cu.stream);));
}

absl::Status AddPositions(Stream& s, float* x, const float* table, int64_t rows, int64_t first_row,
                          int64_t seq, int64_t dim) {
  return Launch(
      s, "AddPositions", Ok([=] { kernels::AddPositions(x, table, rows, first_row, seq, dim); }),
      TRIREME_CUDA(return AddPositionsCuda(x, table, rows, first_row, seq, dim, cu.stream);));
}

absl::Status AddPositionsBackward(Stream& s, const float* dx, int64_t rows, int64_t first_row,
                                  int64_t seq, int64_t dim, float* dtable) {
  return Launch(s, "AddPositionsBackward",
                Ok([=] { kernels::AddPositionsBackward(dx, rows, first_row, seq, dim, dtable); }),
                TRIREME_CUDA(return AddPositionsBackwardCuda(dx, rows, first_row, seq, dim, dtable,
                                                             cu.stream);));
}

absl::Status RowsToHeads(Stream& s, const float* rows, int64_t ld, int64_t col,
                         const AttentionShape& shape, float* heads, int threads) {
  return Launch(s, "RowsToHeads",
                Ok([=] { kernels::RowsToHeads(rows, ld, col, shape, heads, threads); }),
                TRIREME_CUDA(return RowsToHeadsCuda(rows, ld, col, shape, heads, cu.stream);));
}

absl::Status HeadsToRows(Stream& s, const float* heads, const AttentionShape& shape, float* rows,
                         int64_t ld, int64_t col, int threads) {
  return Launch(s, "HeadsToRows",
                Ok([=] { kernels::HeadsToRows(heads, shape, rows, ld, col, threads); }),
                TRIREME_CUDA(return HeadsToRowsCuda(heads, shape, rows, ld, col, cu.stream);));
}

absl::Status Gemm(Stream& s, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                  float* c, int64_t ldc) {
  return Launch(s, "Gemm", Ok([=] {
                  kernels::Gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                }),
                TRIREME_CUDA_BLAS(return GemmCuda(*blas, trans_a, trans_b, m, n, k, alpha, a, lda,
                                                  b, ldb, DType::kF32, beta, c, ldc);));
}

absl::Status LayerNormForward(Stream& s, const float* x, const float* gamma, const float* beta,
                              int64_t rows, int64_t dim, float eps, float* y, float* mean,
                              float* rstd, int threads) {
  return Launch(s, "LayerNormForward", Ok([=] {
                  kernels::LayerNormForward(x, gamma, beta, rows, dim, eps, y, mean, rstd, threads);
                }),
                TRIREME_CUDA(return LayerNormForwardCuda(x, gamma, beta, rows, dim, eps, y, mean,
                                                         rstd, cu.stream);));
}

absl::Status LayerNormBackward(Stream& s, const float* dy, const float* x, const float* gamma,
                               const float* mean, const float* rstd, int64_t rows, int64_t dim,
                               float* dx, float* dgamma, float* dbeta, int threads) {
  return Launch(
      s, "LayerNormBackward", Ok([=] {
        kernels::LayerNormBackward(dy, x, gamma, mean, rstd, rows, dim, dx, dgamma, dbeta, threads);
      }),
      TRIREME_CUDA(return LayerNormBackwardCuda(dy, x, gamma, mean, rstd, rows, dim, dx, dgamma,
                                                dbeta, cu.stream);));
}

absl::Status RmsNormForward(Stream& s, const float* x, const float* gamma, int64_t rows,
                            int64_t dim, float eps, float* y, float* rstd, int threads) {
  return Launch(
      s, "RmsNormForward",
      Ok([=] { kernels::RmsNormForward(x, gamma, rows, dim, eps, y, rstd, threads); }),
      TRIREME_CUDA(return RmsNormForwardCuda(x, gamma, rows, dim, eps, y, rstd, cu.stream);));
}

absl::Status RmsNormBackward(Stream& s, const float* dy, const float* x, const float* gamma,
                             const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                             int threads) {
  return Launch(
      s, "RmsNormBackward",
      Ok([=] { kernels::RmsNormBackward(dy, x, gamma, rstd, rows, dim, dx, dgamma, threads); }),
      TRIREME_CUDA(
          return RmsNormBackwardCuda(dy, x, gamma, rstd, rows, dim, dx, dgamma, cu.stream);));
}

absl::Status SwiGluForward(Stream& s, const float* gate, const float* up, int64_t n, float* y,
                           int threads) {
  return Launch(s, "SwiGluForward", Ok([=] { kernels::SwiGluForward(gate, up, n, y, threads); }),
                TRIREME_CUDA(return SwiGluForwardCuda(gate, up, n, y, cu.stream);));
}

absl::Status SwiGluBackward(Stream& s, const float* gate, const float* up, const float* dy,
                            int64_t n, float* dgate, float* dup, int threads) {
  return Launch(s, "SwiGluBackward",
                Ok([=] { kernels::SwiGluBackward(gate, up, dy, n, dgate, dup, threads); }),
                TRIREME_CUDA(return SwiGluBackwardCuda(gate, up, dy, n, dgate, dup, cu.stream);));
}

absl::Status Rotary(Stream& s, float* x, const AttentionShape& shape, int64_t first_pos, float base,
                    bool inverse, int threads) {
  return Launch(s, "Rotary",
                Ok([=] { kernels::Rotary(x, shape, first_pos, base, inverse, threads); }),
                TRIREME_CUDA(return RotaryCuda(x, shape, first_pos, base, inverse, cu.stream);));
}

absl::Status RepeatKvHeads(Stream& s, const float* kv, const AttentionShape& shape,
                           int64_t kv_heads, float* out, int threads) {
  return Launch(s, "RepeatKvHeads",
                Ok([=] { kernels::RepeatKvHeads(kv, shape, kv_heads, out, threads); }),
                TRIREME_CUDA(return RepeatKvHeadsCuda(kv, shape, kv_heads, out, cu.stream);));
}

absl::Status SumKvHeads(Stream& s, const float* grad, const AttentionShape& shape, int64_t kv_heads,
                        float* out, int threads) {
  return Launch(s, "SumKvHeads",
                Ok([=] { kernels::SumKvHeads(grad, shape, kv_heads, out, threads); }),
                TRIREME_CUDA(return SumKvHeadsCuda(grad, shape, kv_heads, out, cu.stream);));
}

// Both validate the shape on every device before enqueueing (the CPU kernels
// would skip an invalid one silently).
absl::Status CachedAttention(Stream& s, const CachedAttentionShape& shape, const float* q,
                             const float* k_cache, const float* v_cache, float* out) {
  if (absl::Status st = CheckCachedAttentionShape(shape, "CachedAttention"); !st.ok()) return st;
  return Launch(
      s, "CachedAttention", Ok([=] { kernels::CachedAttention(shape, q, k_cache, v_cache, out); }),
      TRIREME_CUDA(return CachedAttentionCuda(shape, q, k_cache, v_cache, out, cu.stream);));
}

absl::Status WriteKvCache(Stream& s, const CachedAttentionShape& shape, const float* src,
                          float* cache) {
  if (absl::Status st = CheckCachedAttentionShape(shape, "WriteKvCache"); !st.ok()) return st;
  return Launch(s, "WriteKvCache", Ok([=] { kernels::WriteKvCache(shape, src, cache); }),
                TRIREME_CUDA(return WriteKvCacheCuda(shape, src, cache, cu.stream);));
}

absl::Status GeluForward(Stream& s, const float* x, int64_t n, float* y, int threads) {
  return Launch(s, "GeluForward", Ok([=] { kernels::GeluForward(x, n, y, threads); }),
                TRIREME_CUDA(return GeluForwardCuda(x, n, y, cu.stream);));
}

absl::Status GeluBackward(Stream& s, const float* x, const float* dy, int64_t n, float* dx,
                          int threads) {
  return Launch(s, "GeluBackward", Ok([=] { kernels::GeluBackward(x, dy, n, dx, threads); }),
                TRIREME_CUDA(return GeluBackwardCuda(x, dy, n, dx, cu.stream);));
}

int64_t AttentionWorkspaceFloats(const Stream& s, const AttentionShape& shape) {
#if TRIREME_WITH_CUDA
  if (s.device().kind == DeviceKind::kCuda) return CausalAttentionWorkspaceSizeCuda(shape);
#endif
  (void)s;
  return CausalAttentionWorkspaceSize(shape);
}

absl::Status CausalAttentionForward(Stream& s, const AttentionShape& shape, const float* q,
                                    const float* k, const float* v, float* probs, float* out) {
  return Launch(
      s, "CausalAttentionForward",
      Ok([=] { kernels::CausalAttentionForward(shape, q, k, v, probs, out); }),
      TRIREME_CUDA_BLAS(return CausalAttentionForwardCuda(*blas, shape, q, k, v, probs, out);));
}

absl::Status CausalAttentionBackward(Stream& s, const AttentionShape& shape, const float* q,
                                     const float* k, const float* v, const float* probs,
                                     const float* dout, float* workspace, float* dq, float* dk,
                                     float* dv) {
  return Launch(
      s, "CausalAttentionBackward", Ok([=] {
        kernels::CausalAttentionBackward(shape, q, k, v, probs, dout, workspace, dq, dk, dv);
      }),
      TRIREME_CUDA_BLAS(return CausalAttentionBackwardCuda(*blas, shape, q, k, v, probs, dout,
                                                           workspace, dq, dk, dv);));
}

absl::Status EmbeddingForwardRange(Stream& s, const float* table, const int32_t* ids, int64_t rows,
                                   int64_t lo, int64_t count, int64_t dim, float* out) {
  return Launch(s, "EmbeddingForwardRange",
                Ok([=] { kernels::EmbeddingForwardRange(table, ids, rows, lo, count, dim, out); }),
                TRIREME_CUDA(return EmbeddingForwardRangeCuda(table, ids, rows, lo, count, dim, out,
                                                              cu.stream);));
}

absl::Status EmbeddingBackwardRange(Stream& s, const float* dout, const int32_t* ids, int64_t rows,
                                    int64_t lo, int64_t count, int64_t dim, float* dtable) {
  return Launch(
      s, "EmbeddingBackwardRange",
      Ok([=] { kernels::EmbeddingBackwardRange(dout, ids, rows, lo, count, dim, dtable); }),
      TRIREME_CUDA(
          return EmbeddingBackwardRangeCuda(dout, ids, rows, lo, count, dim, dtable, cu.stream);));
}

absl::Status CrossEntropyRowMax(Stream& s, const float* logits, int64_t rows, int64_t vocab,
                                int64_t vocab_valid, float* row_max) {
  return Launch(s, "CrossEntropyRowMax",
                Ok([=] { kernels::CrossEntropyRowMax(logits, rows, vocab, vocab_valid, row_max); }),
                TRIREME_CUDA(return CrossEntropyRowMaxCuda(logits, rows, vocab, vocab_valid,
                                                           row_max, cu.stream);));
}

absl::Status CrossEntropySumExp(Stream& s, const float* logits, const float* row_max, int64_t rows,
                                int64_t vocab, int64_t vocab_valid, float* sum_exp) {
  return Launch(s, "CrossEntropySumExp", Ok([=] {
                  kernels::CrossEntropySumExp(logits, row_max, rows, vocab, vocab_valid, sum_exp);
                }),
                TRIREME_CUDA(return CrossEntropySumExpCuda(logits, row_max, rows, vocab,
                                                           vocab_valid, sum_exp, cu.stream);));
}

absl::Status CrossEntropyTargetLogit(Stream& s, const float* logits, const int32_t* targets,
                                     int64_t rows, int64_t vocab, int64_t lo, int64_t vocab_valid,
                                     float* target) {
  return Launch(
      s, "CrossEntropyTargetLogit", Ok([=] {
        kernels::CrossEntropyTargetLogit(logits, targets, rows, vocab, lo, vocab_valid, target);
      }),
      TRIREME_CUDA(return CrossEntropyTargetLogitCuda(logits, targets, rows, vocab, lo, vocab_valid,
                                                      target, cu.stream);));
}

absl::Status CrossEntropyLoss(Stream& s, const float* row_max, const float* sum_exp,
                              const float* target, int64_t rows, float* lse, double* loss) {
  return Launch(s, "CrossEntropyLoss",
                Ok([=] { kernels::CrossEntropyLoss(row_max, sum_exp, target, rows, lse, loss); }),
                TRIREME_CUDA(return CrossEntropyLossCuda(row_max, sum_exp, target, rows, lse, loss,
                                                         cu.stream);));
}

absl::Status CrossEntropyBackwardRange(Stream& s, const float* logits, const int32_t* targets,
                                       const float* lse, int64_t rows, int64_t vocab, int64_t lo,
                                       int64_t vocab_valid, float scale, float* dlogits) {
  return Launch(
      s, "CrossEntropyBackwardRange", Ok([=] {
        kernels::CrossEntropyBackwardRange(logits, targets, lse, rows, vocab, lo, vocab_valid,
                                           scale, dlogits);
      }),
      TRIREME_CUDA(return CrossEntropyBackwardRangeCuda(logits, targets, lse, rows, vocab, lo,
                                                        vocab_valid, scale, dlogits, cu.stream);));
}

absl::Status AdamW(Stream& s, const AdamWScalars& sc, float* p, const float* g, float* m, float* v,
                   int64_t n, ComputeOut out, int threads) {
  return Launch(s, "AdamW", Ok([=] { kernels::AdamW(sc, p, g, m, v, n, out, threads); }),
                TRIREME_CUDA(return AdamWCuda(sc, p, g, m, v, n, out.data, out.dtype, cu.stream);));
}

absl::Status Sgd(Stream& s, const SgdScalars& sc, float* p, const float* g, float* buf, int64_t n,
                 ComputeOut out, int threads) {
  return Launch(s, "Sgd", Ok([=] { kernels::Sgd(sc, p, g, buf, n, out, threads); }),
                TRIREME_CUDA(return SgdCuda(sc, p, g, buf, n, out.data, out.dtype, cu.stream);));
}

absl::Status SumOfSquares(Stream& s, const float* x, int64_t n, double* result, int threads) {
  return Launch(s, "SumOfSquares", Ok([=] { *result = kernels::SumOfSquares(x, n, threads); }),
                TRIREME_CUDA(return SumOfSquaresStreamCuda(x, n, result, cu.stream);));
}

absl::Status CheckFinite(Stream& s, const float* x, int64_t n, float* not_finite, int threads) {
  return Launch(s, "CheckFinite", Ok([=] {
                  if (!kernels::AllFinite(x, n, threads)) *not_finite = 1.0f;
                }),
                TRIREME_CUDA(return CheckFiniteCuda(x, n, not_finite, cu.stream);));
}

}  // namespace trireme::kernels
