// A GPT-2-style decoder on the ZeRO engine, split over pipeline stages:
// token and position embeddings, N blocks of (LayerNorm -> causal multi-head
// attention -> residual; LayerNorm -> MLP with GELU -> residual), final
// LayerNorm, LM head tied to the token embedding. Forward and backward are
// written explicitly on kernels/ (f32 compute); each block is one engine unit.
//
// Pipeline: stage 0 holds the embeddings, the last stage the final norm and
// the head, blocks are split evenly (earlier stages take the remainder).
// With pp == 1 the head *is* the embedding (a tied parameter, one storage).
// With pp > 1 the last stage holds a copy ("head", norm_duplicate) and the
// trainer sums the two gradients over the embedding group
// (SumTiedEmbeddingGrads) before Step(), so both stay identical.
//
// Tensor parallelism (Megatron placement, tp ranks of the grid's TP group):
// QKV and MLP-up column-parallel (heads split across TP ranks), attention-out
// and MLP-down row-parallel (an all-reduce after each), vocabulary-parallel
// embedding and head with a vocabulary-parallel cross-entropy (no rank holds
// the full logits). A vocabulary that tp does not divide is padded; padded
// rows are zero, never selected and excluded from the softmax. LayerNorms,
// biases after row-parallel layers and the position embedding are replicated.
//
// Activations kept for backward are recorded in the tracker's `activation`
// category; blocks can be recomputed in backward instead (GptConfig::recompute).
//
// Compute copies and gradients may be bf16/f16 (the engine's dtypes): the
// layers widen them and compute in f32.
#ifndef TRIREME_MODELS_GPT_H_
#define TRIREME_MODELS_GPT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/zero/engine.h"

namespace trireme {

struct GptConfig {
  int layers = 2;
  int64_t hidden = 32;
  int heads = 4;
  int64_t vocab = 256;
  int64_t seq = 8;
  int64_t micro_batch = 2;  // sequences per micro-batch
  float ln_eps = 1e-5f;
  uint64_t seed = 1234;  // parameter initialization
  // Activation checkpointing per block: recompute[l] keeps only block l's
  // input and recomputes the block in backward. Empty: keep everything.
  std::vector<bool> recompute;
  // Sequence parallelism (with tp > 1): LayerNorms, residuals and the
  // activations between stages hold 1/tp of the rows (micro_batch * seq must
  // divide by tp); all-gather before and reduce-scatter after each
  // tensor-parallel region replace the all-reduces.
  bool sequence_parallel = false;
  // Every inconsistency with the numbers (heads dividing hidden, tp dividing
  // heads and the MLP width, pp <= layers).
  absl::Status Validate(int pp, int tp = 1, int virtual_stages = 1) const;
};

// Where a model slice sits on the grid.
struct GptPlace {
  int pp = 1, pp_rank = 0;
  int tp = 1, tp_rank = 0;
  // Model chunks per pipeline rank (interleaved 1F1B): chunk c of rank r is
  // global stage c * pp + r of pp * virtual_stages.
  int virtual_stages = 1;
};

// Blocks [first, end) held by global stage `stage` of `stages`.
std::pair<int, int> BlockRange(const GptConfig& c, int stages, int stage);

// Vocabulary rows per TP rank (the vocabulary padded to a multiple of tp).
int64_t VocabPerRank(const GptConfig& c, int tp);

// The engine units of one (pipeline stage, TP rank), in forward order.
std::vector<UnitSpec> GptUnits(const GptConfig& c, const GptPlace& place);

// Deterministic initial values by parameter name (the head copy = wte): a
// uniform with std 0.02 for matrices, ones for LayerNorm gains, zeros for
// biases -- this TP rank's slice of the same full tensor at any tp.
absl::Status GptInit(const GptConfig& c, const GptPlace& place, const ParamInfo& p, float* values);

// Checkpoint layout of this (stage, TP rank)'s parameter `p`: the global
// (tp = 1, unpadded) tensor it is a slice of -- "head" is a slice of "wte" --
// and where. Column-parallel weights are blocks of a refined view ([C, 3, C]
// for QKV: each TP rank holds a slice of q, k and v); the vocabulary padding
// is outside the block. TP-replicated parameters and the pipeline copy of the
// head are saved by one rank only.
absl::StatusOr<checkpoint::TensorLayout> GptTensorLayout(const GptConfig& c,
                                                         const GptPlace& place,
                                                         const ParamInfo& p);
// Every global tensor of the model with its shape.
std::vector<checkpoint::TensorSpec> GptCheckpointTensors(const GptConfig& c);

// Activation memory, from the shapes alone (no run): the bytes GptStage keeps
// from Forward(mb, chunk) to Backward(mb, chunk) at this place -- token ids,
// per block its LayerNorm inputs/outputs and statistics, q, k, v, attention
// probabilities and output, MLP pre- and post-activation (only the input for
// a recomputed block), and on the last stage the final norm, logits and
// log-sum-exp -- and the transient of one recomputed block in backward.
int64_t GptKeptActivationBytes(const GptConfig& c, const GptPlace& place, int chunk);
int64_t GptRecomputeTransientBytes(const GptConfig& c, const GptPlace& place, int chunk);

// Tokens of micro-batch `global_mb` of `step`: [micro_batch, seq + 1]
// (inputs are [:, :seq], targets [:, 1:]). A fixed, learnable pattern.
std::vector<int32_t> GptBatch(const GptConfig& c, int64_t step, int64_t global_mb);

// One pipeline stage of the model over its engine. Not thread-safe.
class GptStage {
 public:
  // `tp_group`: the grid's TP group (size place.tp), used for the all-reduces
  // of row-parallel layers and the vocabulary-parallel embedding and loss.
  // `tracker` (may be null) records the activations kept between forward and
  // backward, under `activation`.
  GptStage(GptConfig c, GptPlace place, ZeroEngine& engine, Communicator& tp_group,
           MemoryTracker* tracker = nullptr);
  ~GptStage();

  // Elements of the activation between stages: micro_batch * seq * hidden.
  int64_t activation_count() const;

  // Forward of micro-batch `mb` through this rank's model chunk `chunk`
  // (tokens from GptBatch): global stage 0 reads the tokens, later stages
  // `in`; all but the last write `out`; the last sets *loss (mean
  // cross-entropy of the micro-batch).
  absl::Status Forward(int mb, int chunk, const std::vector<int32_t>& tokens,
                       const std::vector<float>& in, std::vector<float>& out, double* loss);
  absl::Status Forward(int mb, const std::vector<int32_t>& tokens, const std::vector<float>& in,
                       std::vector<float>& out, double* loss) {
    return Forward(mb, 0, tokens, in, out, loss);
  }
  // Backward of (`mb`, `chunk`): `dout` (empty on the last stage) to `din`
  // (left empty on global stage 0); adds parameter gradients via the engine.
  absl::Status Backward(int mb, int chunk, const std::vector<float>& dout, std::vector<float>& din);
  absl::Status Backward(int mb, const std::vector<float>& dout, std::vector<float>& din) {
    return Backward(mb, 0, dout, din);
  }
  // Forgets what Forward(mb, chunk) kept for backward (evaluation).
  void DropActivations(int mb, int chunk);

 public:
  struct BlockActs;
  struct Acts;

 private:
  absl::Status BlockForward(int unit, int layer, std::vector<float>& x, BlockActs& a);
  absl::Status ComputeBlock(const std::vector<float*>& p, std::vector<float>& x, BlockActs& a);
  bool Recompute(int layer) const;
  absl::Status BlockBackward(int unit, std::vector<float>& dx, const BlockActs& a);
  absl::Status TpSum(std::vector<float>& x);  // all-reduce over the TP group
  // Parameter / gradient `index` of `unit` as f32 while the unit is in use:
  // the engine's own buffer for f32, else a widened copy (parameters) or an
  // f32 accumulator added into the 16-bit buffer by Flush() (gradients).
  absl::StatusOr<float*> P(int unit, int index);
  absl::StatusOr<float*> G(int unit, int index);
  void Flush();  // before a unit's Post* hook
  // Sequence parallelism: rows held here, and the moves between the local
  // rows and the full [N, C] activations of the tensor-parallel regions.
  bool SeqParallel() const { return c_.sequence_parallel && place_.tp > 1; }
  int64_t Rows() const;
  absl::StatusOr<std::vector<float>> SeqGather(const std::vector<float>& local);
  absl::Status SeqReduce(std::vector<float>& partial_full, std::vector<float>& local);
  // Adds a replicated parameter's gradient contribution; with sequence
  // parallelism each TP rank saw only its rows, so contributions are summed.
  absl::Status AddReplicated(float* grad, std::vector<float>& contribution);

  GptConfig c_;
  GptPlace place_;
  int pp_, pp_rank_;
  struct Chunk {
    int first_unit = 0;  // engine unit of the chunk's first unit
    int first_block = 0, end_block = 0;
    bool first = false, last = false;  // global first / last stage
  };
  std::vector<Chunk> chunks_;
  ZeroEngine& e_;
  Communicator& tp_;
  MemoryTracker* tracker_;
  std::deque<std::vector<float>> scratch_;  // widened copies (stable addresses)
  std::vector<std::pair<MutView, float*>> pending_grads_;
  std::map<std::pair<int, int>, std::unique_ptr<Acts>> acts_;  // by (micro-batch, chunk)
};

// pp > 1: sums the reduced gradient of "wte" (stage 0) and "head" (last
// stage) over `embedding_group` (those two ranks, same dp coordinate). Call
// between ReduceGradients() and Step(). Collective over the group.
absl::Status SumTiedEmbeddingGrads(ZeroEngine& e, Communicator& embedding_group);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_H_
