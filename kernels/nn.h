// CPU math of a GPT-2 style model: LayerNorm, GELU (tanh approximation),
// causal multi-head self-attention, softmax cross-entropy (with a padded
// vocabulary) and embedding lookup, each as a forward and a backward.
//
// Conventions, for every function here:
// - fp32, raw pointers, row-major and contiguous (shapes in the comments, last
//   index fastest). No ownership, no communication. Buffers must not overlap
//   unless a comment allows it.
// - A backward WRITES the gradients of activations (dx, dq, dlogits, ...) and
//   ADDS into the gradients of parameters (dgamma, dbeta, dtable), so
//   micro-batches accumulate; zero those before the first one.
// - Each call blocks the calling thread until its outputs are written. With
//   `threads` > 1 (where a kernel takes it) the work is split over the shared
//   worker pool (kernels/cpu/parallel.h) in a way that leaves every result
//   bit for bit as with one thread; the matrix products of the attention go
//   through Gemm (kernels/gemm.h), which OpenBLAS may split over its own
//   threads (SetGemmThreads(1) keeps everything on the calling thread).
// - Results depend only on the inputs (no randomness, fixed summation order).
// - Indices that come from data (token ids, targets) are validated: an invalid
//   one returns InvalidArgument before any output is written.
#ifndef TRIREME_KERNELS_NN_H_
#define TRIREME_KERNELS_NN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace trireme::kernels {

// ---- LayerNorm over the last dimension ----------------------------------

// y = (x - mean) * rstd * gamma + beta per row, with mean and the (biased,
// population) variance of the row and rstd = 1 / sqrt(var + eps).
//   x, y: [rows, dim]; gamma, beta: [dim]; mean, rstd: [rows] (written, saved
//   for the backward). Row statistics are accumulated in double. y may be x.
void LayerNormForward(const float* x, const float* gamma, const float* beta, int64_t rows,
                      int64_t dim, float eps, float* y, float* mean, float* rstd, int threads = 1);

// dy, x: [rows, dim]; gamma: [dim]; mean, rstd: [rows] from the forward.
// Writes dx: [rows, dim] (dx may be dy); adds into dgamma, dbeta: [dim].
void LayerNormBackward(const float* dy, const float* x, const float* gamma, const float* mean,
                       const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                       float* dbeta, int threads = 1);

// ---- RMSNorm over the last dimension --------------------------------------

// y = x * rstd * gamma per row, rstd = 1 / sqrt(mean(x^2) + eps) (the sum of
// squares accumulated in double). x, y: [rows, dim]; gamma: [dim]; rstd:
// [rows] (written, saved for the backward). y may be x.
void RmsNormForward(const float* x, const float* gamma, int64_t rows, int64_t dim, float eps,
                    float* y, float* rstd, int threads = 1);

// Writes dx = rstd * (g - xhat * mean(g * xhat)), g = dy * gamma, xhat = x *
// rstd: [rows, dim] (dx may be dy); adds into dgamma += sum over rows of dy *
// xhat (by columns, in row order, before dx is written).
void RmsNormBackward(const float* dy, const float* x, const float* gamma, const float* rstd,
                     int64_t rows, int64_t dim, float* dx, float* dgamma, int threads = 1);

// ---- SwiGLU -----------------------------------------------------------------

// y = silu(gate) * up, silu(g) = g / (1 + exp(-g)). gate, up, y: [n]; y may
// be gate or up.
void SwiGluForward(const float* gate, const float* up, int64_t n, float* y, int threads = 1);
// Writes dgate = dy * up * silu'(gate) and dup = dy * silu(gate): [n] (dgate
// may be dy; dup may not alias gate or dy).
void SwiGluBackward(const float* gate, const float* up, const float* dy, int64_t n, float* dgate,
                    float* dup, int threads = 1);

// ---- GELU, tanh approximation (GPT-2) -------------------------------------

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//   x, y: [n] (any shape, element-wise). y may be x.
void GeluForward(const float* x, int64_t n, float* y, int threads = 1);

// x, dy: [n]. Writes dx = dy * gelu'(x): [n] (dx may be dy).
void GeluBackward(const float* x, const float* dy, int64_t n, float* dx, int threads = 1);

// ---- Causal multi-head self-attention core --------------------------------

// Sizes of one attention call. Tensors q, k, v, out (and their gradients) are
// [batch, heads, seq, head_dim]: element (b, h, t, d) at
// ((b * heads + h) * seq + t) * head_dim + d, i.e. each (b, h) is one
// contiguous [seq, head_dim] matrix. A projection producing
// [batch, seq, heads * head_dim] must be permuted into this layout first.
struct AttentionShape {
  int64_t batch = 0;
  int64_t heads = 0;
  int64_t seq = 0;
  int64_t head_dim = 0;
  // Sliding-window attention: position t attends to positions
  // max(0, t - window + 1) .. t (probabilities outside are exact zeros).
  // 0: every earlier position (plain causal).
  int64_t window = 0;
};

// out = softmax(q k^T / sqrt(head_dim) + mask) v per (batch, head), where the
// causal mask lets position t attend to positions 0..t only (with
// shape.window > 0: max(0, t - window + 1)..t).
//   q, k, v, out: [batch, heads, seq, head_dim];
//   probs: [batch, heads, seq, seq] (written, saved for the backward): the
//   softmax probabilities, exactly 0 above the diagonal and outside the window.
// (No `threads`: the per-head products go through OpenBLAS, whose own pool
// serializes concurrent callers; SetGemmThreads splits them instead.)
void CausalAttentionForward(const AttentionShape& shape, const float* q, const float* k,
                            const float* v, float* probs, float* out);

// The number of floats of `workspace` CausalAttentionBackward needs:
// seq * seq (one head's score gradients at a time).
int64_t CausalAttentionWorkspaceSize(const AttentionShape& shape);

// q, k, v, dout: [batch, heads, seq, head_dim]; probs: [batch, heads, seq,
// seq] from the forward; workspace: CausalAttentionWorkspaceSize floats
// (scratch, contents undefined afterwards). Writes dq, dk, dv: [batch, heads,
// seq, head_dim].
void CausalAttentionBackward(const AttentionShape& shape, const float* q, const float* k,
                             const float* v, const float* probs, const float* dout,
                             float* workspace, float* dq, float* dk, float* dv);

// Rotary position embedding (RoFormer, Su et al. 2021) in place on x:
// [batch, heads, seq, head_dim] (head_dim even): each pair (x[2i], x[2i+1])
// of position p = first_pos + t is rotated by the angle p * theta_i, theta_i =
// base^(-2i / head_dim) (angles and their cos / sin in double). `inverse`
// rotates by the negative angle: the backward of the forward rotation.
void Rotary(float* x, const AttentionShape& shape, int64_t first_pos, float base, bool inverse,
            int threads = 1);

// Grouped-query attention: out [batch, shape.heads, seq, head_dim] where query
// head h reads key/value head h / (shape.heads / kv_heads) of kv [batch,
// kv_heads, seq, head_dim] (kv_heads divides shape.heads; otherwise neither
// function writes anything).
void RepeatKvHeads(const float* kv, const AttentionShape& shape, int64_t kv_heads, float* out,
                   int threads = 1);
// Its backward: WRITES out [batch, kv_heads, seq, head_dim] = the sum over
// each group of query heads of grad [batch, shape.heads, seq, head_dim], the
// heads of a group added in order.
void SumKvHeads(const float* grad, const AttentionShape& shape, int64_t kv_heads, float* out,
                int threads = 1);

// ---- Attention against a key/value cache (generation) ----------------------

// Sizes of one cached attention call: `queries` new positions [first_pos,
// first_pos + queries) of each of `batch` sequences, whose keys and values
// are already in the cache. The cache of a sequence holds, per key/value
// head, `capacity` slots of head_dim floats; position j is in slot
// j % capacity. Valid (CheckCachedAttentionShape): capacity >= first_pos +
// queries, or, with a sliding window, capacity >= window + queries - 1 (a
// ring of the last `capacity` positions, enough for the windows of all the
// queries, whose keys are written before the call); kv_heads divides heads.
struct CachedAttentionShape {
  int64_t batch = 0;
  int64_t heads = 0;     // query heads; query head h reads key/value head h / (heads / kv_heads)
  int64_t kv_heads = 0;  // divides heads
  int64_t queries = 0;
  int64_t head_dim = 0;
  int64_t first_pos = 0;
  int64_t capacity = 0;
  int64_t window = 0;  // as AttentionShape::window (0: every earlier position)
};

// out = softmax(q k^T / sqrt(head_dim)) v of each query position p over the
// positions max(0, p - window + 1) .. p (or 0 .. p), with the sum of
// exponentials in double: the same arithmetic per row as
// CausalAttentionForward's on the whole prefix, up to the order of the
// products' sums. q, out: [batch, heads, queries, head_dim]; k_cache,
// v_cache: [batch, kv_heads, capacity, head_dim]. Writes nothing for an
// invalid shape (the stream launchers return its InvalidArgument).
void CachedAttention(const CachedAttentionShape& shape, const float* q, const float* k_cache,
                     const float* v_cache, float* out);

// Writes the new positions' keys or values into the cache: src [batch,
// kv_heads, queries, head_dim] -> cache [batch, kv_heads, capacity, head_dim],
// position first_pos + t into slot (first_pos + t) % capacity. Writes
// nothing for an invalid shape, as CachedAttention.
void WriteKvCache(const CachedAttentionShape& shape, const float* src, float* cache);

// ---- Softmax cross-entropy ------------------------------------------------

// Mean over rows of -log softmax(logits[r, 0:vocab_valid])[targets[r]].
//   logits: [rows, vocab], of which columns >= vocab_valid are padding (a
//   vocabulary padded, e.g., to a multiple of the tensor-parallel size): they
//   take no part in the softmax, whatever their values.
//   targets: [rows], each in [0, vocab_valid).
//   lse: [rows] (written, saved for the backward): log-sum-exp of each row's
//   valid logits, computed stably (row max subtracted first, sum in double).
// rows == 0 returns 0. InvalidArgument if vocab_valid is not in [1, vocab]
// (with rows > 0) or a target is out of range (naming the row and target).
// The composition of the vocabulary-parallel pieces below with one rank.
absl::StatusOr<float> CrossEntropyForward(const float* logits, const int32_t* targets, int64_t rows,
                                          int64_t vocab, int64_t vocab_valid, float* lse);

// logits, targets, lse as in (and from) the forward. Writes dlogits: [rows,
// vocab] = (softmax - onehot(target)) * g on the valid columns, with g =
// scale / rows (in f32), and 0 on the padding columns; `scale` is the
// gradient of the mean loss (1, or a loss scale). dlogits may be logits. Same
// validation as the forward.
absl::Status CrossEntropyBackward(const float* logits, const int32_t* targets, const float* lse,
                                  int64_t rows, int64_t vocab, int64_t vocab_valid, float scale,
                                  float* dlogits);

// Vocabulary-parallel cross-entropy: each tensor-parallel rank holds the
// logits of vocabulary rows [lo, lo + vocab_valid) (its `vocab` columns, the
// rest padding); the row max, the sum of exponentials and the target logit
// are reduced over the ranks between the steps (max, sum, sum):
//   1. row_max[r] = max over the valid columns (-inf with none);
//   2. sum_exp[r] = sum over the valid columns of exp(logit - row_max), in
//      double, stored as f32;
//   3. target[r] = the logit of targets[r] if this rank holds it, else 0;
//   4. lse[r] = row_max + log(sum_exp) (in f32), and *loss = the sum over
//      rows of (lse - target) / rows (in double).
// The backward takes its rank's columns: CrossEntropyBackwardRange.
void CrossEntropyRowMax(const float* logits, int64_t rows, int64_t vocab, int64_t vocab_valid,
                        float* row_max);
void CrossEntropySumExp(const float* logits, const float* row_max, int64_t rows, int64_t vocab,
                        int64_t vocab_valid, float* sum_exp);
void CrossEntropyTargetLogit(const float* logits, const int32_t* targets, int64_t rows,
                             int64_t vocab, int64_t lo, int64_t vocab_valid, float* target);
void CrossEntropyLoss(const float* row_max, const float* sum_exp, const float* target, int64_t rows,
                      float* lse, double* loss);
// dlogits [rows, vocab] of this rank's columns: (softmax - onehot) * g on the
// valid ones (g = scale / rows in f32; the onehot's 1 where targets[r] - lo
// is a column of this rank), 0 on padding. Targets outside this rank's range
// are legitimate (another rank holds them). dlogits may be logits.
void CrossEntropyBackwardRange(const float* logits, const int32_t* targets, const float* lse,
                               int64_t rows, int64_t vocab, int64_t lo, int64_t vocab_valid,
                               float scale, float* dlogits);

// ---- Embedding lookup -------------------------------------------------------

// out[r] = table[ids[r]].
//   table: [vocab, dim]; ids: [rows]; out: [rows, dim].
// InvalidArgument naming the row, the id and the table size if an id is not in
// [0, vocab); `out` is then untouched.
absl::Status EmbeddingForward(const float* table, const int32_t* ids, int64_t rows, int64_t vocab,
                              int64_t dim, float* out);

// dout: [rows, dim]; ids: [rows]. Adds dout[r] into dtable[ids[r]] (dtable:
// [vocab, dim]) in row order, so repeated ids accumulate deterministically.
// Same validation as the forward; on error dtable is untouched.
absl::Status EmbeddingBackward(const float* dout, const int32_t* ids, int64_t rows, int64_t vocab,
                               int64_t dim, float* dtable);

// Vocabulary-parallel forms: `table` / `dtable` hold rows [lo, lo + count) of
// the vocabulary. out[r] = table[ids[r] - lo] for ids this rank holds, zero
// otherwise (summed over the ranks, every row gets its embedding); the
// backward adds the rows this rank holds, in row order. Ids are trusted
// (validate them first with CheckEmbeddingIds).
void EmbeddingForwardRange(const float* table, const int32_t* ids, int64_t rows, int64_t lo,
                           int64_t count, int64_t dim, float* out);
void EmbeddingBackwardRange(const float* dout, const int32_t* ids, int64_t rows, int64_t lo,
                            int64_t count, int64_t dim, float* dtable);

// ---- Glue of the layers ---------------------------------------------------------

// out[i] = a[i] + b[i]; out may be a or b.
void Add(const float* a, const float* b, int64_t n, float* out, int threads = 1);
// x[r, j] += bias[j]; x: [rows, cols].
void AddBias(float* x, const float* bias, int64_t rows, int64_t cols, int threads = 1);
// sums[j] += x[r, j] over rows in row order; x: [rows, cols].
void AddColumnSums(const float* x, int64_t rows, int64_t cols, float* sums, int threads = 1);
// Positions: x[r, :] += table[(first_row + r) % seq, :] (x: [rows, dim] of
// tokens laid out as sequences of `seq`), and the backward adding dx[r, :]
// into dtable[(first_row + r) % seq, :] in row order.
void AddPositions(float* x, const float* table, int64_t rows, int64_t first_row, int64_t seq,
                  int64_t dim);
void AddPositionsBackward(const float* dx, int64_t rows, int64_t first_row, int64_t seq,
                          int64_t dim, float* dtable);
// Attention layouts: rows [batch * seq, ld] with this head group's columns at
// [col, col + heads * head_dim) <-> heads [batch, heads, seq, head_dim].
void RowsToHeads(const float* rows, int64_t ld, int64_t col, const AttentionShape& shape,
                 float* heads, int threads = 1);
void HeadsToRows(const float* heads, const AttentionShape& shape, float* rows, int64_t ld,
                 int64_t col, int threads = 1);

// ---- Validation of indices and shapes (shared with the CUDA launchers) ----

// OK iff rows == 0, or vocab_valid is in [1, vocab] and every target is in
// [0, vocab_valid); otherwise InvalidArgument naming the first bad row.
absl::Status CheckCrossEntropyTargets(const int32_t* targets, int64_t rows, int64_t vocab,
                                      int64_t vocab_valid);
// OK iff every id is in [0, vocab); otherwise InvalidArgument naming the first
// bad row, its id and the table size.
absl::Status CheckEmbeddingIds(const int32_t* ids, int64_t rows, int64_t vocab);
// OK iff no size is negative, kv_heads divides heads and the capacity holds
// the positions the call reads (CachedAttentionShape); otherwise
// InvalidArgument naming `kernel` and the numbers.
absl::Status CheckCachedAttentionShape(const CachedAttentionShape& shape, const char* kernel);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_NN_H_
