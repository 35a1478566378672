// The GPT's tensor-parallel layers over device tensors, each a forward and a
// backward on the stage's compute stream (Megatron's placement):
//   Norm                    LayerNorm or RMSNorm of the rows held here ([R, C];
//                           R = N, or N / tp with SP)
//   ColumnParallelLinear    y[N, out/tp] = x[N, in] W + b  (this rank's columns)
//   RowParallelLinear       y[N, out] partial = x[N, in/tp] W  (summed over TP)
//   CausalSelfAttention     this rank's heads (grouped-query: its key/value
//                           heads), rotary positions, a sliding window
//   VocabParallelEmbedding  rows of the vocabulary this rank holds
//   VocabParallelCrossEntropy  the head's logits of those rows, and the loss
// and the TP/SP mappings between the regions, in one place:
//   GatherRows   entering a TP region: all-gather rows (SP), else identity;
//                its backward is ReduceRows
//   ReduceRows   leaving a TP region: reduce-scatter rows (SP), else
//                all-reduce; its backward is GatherRows
// Shapes: N = micro_batch x seq tokens, C = hidden, f32 throughout (16-bit
// engine copies are widened by the stage). A backward WRITES activation
// gradients and ADDS parameter gradients, as kernels/nn.h does.
#ifndef TRIREME_MODELS_LAYERS_H_
#define TRIREME_MODELS_LAYERS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_config.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "runtime/core/tensor.h"

namespace trireme {

// What every layer of one pipeline stage needs: sizes, the compute stream,
// the TP data communicator and the tracker its tensors are recorded in.
class LayerContext {
 public:
  // `threads`: how many threads the CPU kernels split their work over (the
  // engine's kernel_threads; results do not depend on it).
  LayerContext(const GptConfig& c, const GptPlace& place, Communicator& tp, Stream& stream,
               MemoryTracker* tracker, int threads = 1);

  const GptConfig& config() const { return config_; }
  const GptPlace& place() const { return place_; }
  Stream& stream() const { return stream_; }
  Communicator& tp() const { return tp_; }
  Device device() const { return stream_.device(); }
  int threads() const { return threads_; }
  bool seq_parallel() const { return config_.sequence_parallel && place_.tp > 1; }
  int64_t tokens() const { return config_.micro_batch * config_.seq; }               // N
  int64_t rows() const { return seq_parallel() ? tokens() / place_.tp : tokens(); }  // R
  int64_t first_row() const { return seq_parallel() ? place_.tp_rank * rows() : 0; }
  int64_t hidden() const { return config_.hidden; }                      // C
  int64_t local_heads() const { return config_.heads / place_.tp; }      // H
  int64_t head_dim() const { return config_.head_dim(); }                // D
  int64_t local_width() const { return local_heads() * head_dim(); }     // Cl
  int64_t local_kv() const { return config_.local_kv(place_.tp); }       // KVl
  int64_t local_kv_width() const { return local_kv() * head_dim(); }     // Wkv
  int64_t local_mlp() const { return config_.ffn_width() / place_.tp; }  // F

  // Uninitialized / zeroed f32 tensors on the stage's device and stream.
  absl::StatusOr<Tensor> New(Shape shape, MemCategory category, DType dtype = DType::kF32) const;
  absl::StatusOr<Tensor> Zeros(Shape shape, MemCategory category) const;
  // A new tensor holding a copy of `t`.
  absl::StatusOr<Tensor> Copy(const Tensor& t, MemCategory category) const;

  // The TP/SP mappings (see the file comment). `category` is the new
  // tensor's, when there is one.
  absl::StatusOr<Tensor> GatherRows(const Tensor& local, MemCategory category) const;
  absl::StatusOr<Tensor> ReduceRows(const Tensor& partial, MemCategory category) const;
  // Sums `t` over the TP group in place (tp > 1).
  absl::Status SumOverTp(const Tensor& t) const;
  // Adds a replicated parameter's gradient contribution: with SP each TP rank
  // saw only its rows, so the contributions are summed over TP first.
  absl::Status AddReplicatedGrad(const Tensor& grad, const Tensor& contribution) const;
  // Sums `t` (a contribution to a key/value head's parameter gradient) over
  // the TP ranks that share the head (tp > kv_heads), in place.
  absl::Status SumOverKvSharers(const Tensor& t) const;

 private:
  const GptConfig& config_;
  const GptPlace place_;
  Communicator& tp_;
  Stream& stream_;
  MemoryTracker* tracker_;
  const int threads_;
};

// ---- layers ----------------------------------------------------------------------

struct NormSaved {
  Tensor mean, rstd;  // [rows]; RMSNorm has no mean
};

// The configuration's normalisation: LayerNorm (gamma, beta) or RMSNorm
// (gamma; beta undefined).
struct Norm {
  // y[rows, C] = norm(x); saves the row statistics (category `saved`).
  static absl::Status Forward(const LayerContext& ctx, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, MemCategory saved, const Tensor& y,
                              NormSaved* stats);
  // dx[rows, C] from dy (dx may be dy); adds into dgamma, dbeta (replicated:
  // summed over TP with SP).
  static absl::Status Backward(const LayerContext& ctx, const Tensor& dy, const Tensor& x,
                               const Tensor& gamma, const NormSaved& stats, const Tensor& dgamma,
                               const Tensor& dbeta, const Tensor& dx);
  // Floats of the statistics per row (2 for LayerNorm, 1 for RMSNorm).
  static int64_t StatsPerRow(const GptConfig& c);
};

struct ColumnParallelLinear {
  // y[N, out_l] = x[N, in] w[in, out_l] + b[out_l] (no bias: b undefined).
  static absl::Status Forward(const LayerContext& ctx, const Tensor& x, const Tensor& w,
                              const Tensor& b, const Tensor& y);
  // dw += x^T dy; db += column sums of dy; dx_partial[N, in] = dy w^T (this
  // rank's columns' share: reduce it with ReduceRows), or += with
  // `accumulate` (a second projection of the same input).
  static absl::Status Backward(const LayerContext& ctx, const Tensor& x, const Tensor& w,
                               const Tensor& dy, const Tensor& dw, const Tensor& db,
                               const Tensor& dx_partial, bool accumulate = false);
};

struct RowParallelLinear {
  // y_partial[N, out] = x[N, in_l] w[in_l, out] (reduce with ReduceRows, then
  // add the replicated bias).
  static absl::Status Forward(const LayerContext& ctx, const Tensor& x, const Tensor& w,
                              const Tensor& y_partial);
  // dw += x^T dy; dx[N, in_l] = dy w^T (dy: the full [N, out] gradient).
  static absl::Status Backward(const LayerContext& ctx, const Tensor& x, const Tensor& w,
                               const Tensor& dy, const Tensor& dw, const Tensor& dx);
};

struct AttentionSaved {
  Tensor q;      // [B, H, T, D] of this rank's query heads (rotated with RoPE)
  Tensor k, v;   // [B, KVl, T, D] of its key/value heads (k rotated with RoPE)
  Tensor probs;  // [B, H, T, T]
};

// Where q, k and v sit in the projections' outputs (rows [N, ld], the heads'
// columns from `col`): the fused QKV output, or GQA's q and kv outputs.
struct HeadColumns {
  Tensor rows;
  int64_t ld = 0, col = 0;
};
struct QkvColumns {
  HeadColumns q, k, v;
  // For the projections' outputs: MHA `qkv` [N, 3 Cl]; GQA `q` [N, Cl] and
  // `kv` [N, 2 Wkv] (`qkv` undefined).
  static QkvColumns Of(const LayerContext& ctx, const Tensor& qkv, const Tensor& q,
                       const Tensor& kv);
};

struct CausalSelfAttention {
  // att[N, Cl] from this rank's heads' q, k, v columns.
  static absl::Status Forward(const LayerContext& ctx, const QkvColumns& in, MemCategory saved,
                              AttentionSaved* s, const Tensor& att);
  // The gradients of q, k and v into the columns of `out` from datt[N, Cl].
  static absl::Status Backward(const LayerContext& ctx, const AttentionSaved& s, const Tensor& datt,
                               const QkvColumns& out);
};

struct VocabParallelEmbedding {
  // x[R, C]: the rows of the token and position embeddings this rank sums
  // (tokens of other ranks' vocabulary rows are zero here, summed by
  // ReduceRows). ids: [N] int32 on the device. wpe undefined: no learned
  // positions (RoPE).
  static absl::Status Forward(const LayerContext& ctx, const Tensor& wte, const Tensor& wpe,
                              const Tensor& ids, MemCategory out_category, Tensor* x);
  // Host check of the token ids before they reach the device: InvalidArgument
  // naming the position and the vocabulary.
  static absl::Status CheckIds(const LayerContext& ctx, const std::vector<int32_t>& ids);
  // From dx[R, C]: adds into dwpe (if defined) every row's gradient and into
  // dwte the rows of this rank's vocabulary.
  static absl::Status Backward(const LayerContext& ctx, const Tensor& ids, const Tensor& dx,
                               const Tensor& dwte, const Tensor& dwpe);
};

struct CrossEntropySaved {
  Tensor logits;  // [N, Vl]
  Tensor lse;     // [N]
};

struct VocabParallelCrossEntropy {
  // Logits of this rank's vocabulary rows from h[N, C] and head[Vl, C], and
  // the mean cross-entropy of the micro-batch into *loss (a double in device
  // memory); the row max, sum of exponentials and target logit are reduced
  // over TP.
  static absl::Status Forward(const LayerContext& ctx, const Tensor& h, const Tensor& head,
                              const Tensor& targets, CrossEntropySaved* s, double* loss);
  // dh_partial[N, C] (reduce with ReduceRows) and dhead += dlogits^T h, for the
  // gradient `scale` of the mean loss (1, or the loss scale).
  static absl::Status Backward(const LayerContext& ctx, const Tensor& h, const Tensor& head,
                               const Tensor& targets, const CrossEntropySaved& s, float scale,
                               const Tensor& dhead, const Tensor& dh_partial);
};

}  // namespace trireme

#endif  // TRIREME_MODELS_LAYERS_H_
