// A decoder on the ZeRO engine, split over pipeline stages: token (and
// learned position) embeddings, N blocks of (norm -> causal self-attention ->
// residual; norm -> MLP -> residual), final norm, LM head. GPT-2 by default;
// GptConfig selects the Llama-style choices (RMSNorm, rotary positions,
// SwiGLU, grouped-query attention, a sliding window, an untied head, no
// biases). Each block is one engine
// unit; the parameters come from one table (gpt_params.h) and the layers are
// the tensor-parallel modules of layers.h, on device tensors, enqueued on the
// stage's compute stream -- the same code on cpu, cpu_async (and cuda).
//
// Pipeline: stage 0 holds the embeddings, the last stage the final norm and
// the head, blocks are split evenly (earlier stages take the remainder).
// A tied head with pp == 1 *is* the embedding (a tied parameter, one
// storage); with pp > 1 the last stage holds a copy ("head", norm_duplicate)
// and the trainer sums the two gradients over the embedding group
// (SumTiedEmbeddingGrads) before Step(), so both stay identical. An untied
// head is its own parameter, "lm_head".
//
// Tensor parallelism (Megatron placement, tp ranks of the grid's TP group):
// QKV (or q and kv) and MLP-up (and gate) column-parallel (heads split across
// TP ranks; key/value heads split too, or each shared by tp / kv_heads ranks
// that sum its gradient), attention-out and MLP-down row-parallel (an
// all-reduce after each), vocabulary-parallel
// embedding and head with a vocabulary-parallel cross-entropy (no rank holds
// the full logits). A vocabulary that tp does not divide is padded; padded
// rows are zero, never selected and excluded from the softmax. Norms,
// biases after row-parallel layers and the position embedding are replicated.
//
// Activations kept for backward are tensors in the tracker's `activation`
// category; blocks can be recomputed in backward instead (GptConfig::recompute).
// Temporaries are `workspace`; the tensors passed between stages `comm`.
//
// Compute copies and gradients may be bf16/f16 (the engine's dtypes): the
// stage widens them to f32 for the layers, which compute in f32.
#ifndef TRIREME_MODELS_GPT_H_
#define TRIREME_MODELS_GPT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_config.h"
#include "models/gpt_params.h"
#include "models/layers.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/stream.h"
#include "runtime/core/tensor.h"
#include "runtime/zero/engine.h"

namespace trireme {

// The embedding's engine units on the first stage: wte, and wpe with learned
// positions.
int GptEmbeddingUnits(const GptConfig& c);

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
absl::StatusOr<checkpoint::TensorLayout> GptTensorLayout(const GptConfig& c, const GptPlace& place,
                                                         const ParamInfo& p);
// Every global tensor of the model with its shape.
std::vector<checkpoint::TensorSpec> GptCheckpointTensors(const GptConfig& c);

// Activation memory, from the shapes alone (no run): the bytes GptStage keeps
// from Forward(mb, chunk) to Backward(mb, chunk) at this place -- the token
// ids (first stage) and targets (last stage), per block its input, the two
// norms' outputs and statistics (mean and rstd; RMSNorm rstd only), q and the
// attention output at query width, k and v at key/value width, the attention
// probabilities, the residual between attention and MLP, the MLP's up
// projection and activation (and SwiGLU's gate) -- only the input for a
// recomputed block -- and on the last stage the final norm's input, output
// and statistics, the logits and log-sum-exp; and the transient of one
// recomputed block in backward.
int64_t GptKeptActivationBytes(const GptConfig& c, const GptPlace& place, int chunk);
int64_t GptRecomputeTransientBytes(const GptConfig& c, const GptPlace& place, int chunk);

// One pipeline rank's model chunks over its engine. Not thread-safe.
class GptStage {
 public:
  // `tp_group`: the grid's TP data communicator (size place.tp), for the
  // collectives of the tensor-parallel layers; `compute`: the stream the
  // layers run on (the engine's compute stream). `tracker` (may be null)
  // records activations, workspace and stage-boundary tensors.
  GptStage(GptConfig c, GptPlace place, ZeroEngine& engine, Communicator& tp_group, Stream& compute,
           MemoryTracker* tracker = nullptr);
  ~GptStage();

  // Elements of the activation between stages: rows held here x hidden.
  int64_t activation_count() const;
  // A buffer for an activation (or its gradient) between stages.
  absl::StatusOr<Tensor> NewStageTensor() const;

  // Forward of micro-batch `mb` through this rank's model chunk `chunk`
  // (tokens, e.g. from GptBatch in gpt_data.h; host memory): global stage 0 reads the tokens,
  // later stages `in`; all but the last set *out; the last writes the mean
  // cross-entropy of the micro-batch to *loss, a double in device memory.
  absl::Status Forward(int mb, int chunk, const std::vector<int32_t>& tokens, const Tensor& in,
                       Tensor* out, double* loss);
  // Backward of (`mb`, `chunk`): `dout` (undefined on the last stage) to
  // *din (left undefined on global stage 0); adds parameter gradients via
  // the engine.
  absl::Status Backward(int mb, int chunk, const Tensor& dout, Tensor* din);
  // Forgets what Forward(mb, chunk) kept for backward (evaluation).
  void DropActivations(int mb, int chunk);

  // A whole single-stage model (pp = 1, one chunk) on one micro-batch:
  // forward and backward, returning the loss (synchronizes the stream).
  absl::StatusOr<double> ForwardBackward(int mb, const std::vector<int32_t>& tokens);

  struct BlockSaved;
  struct Saved;

 private:
  struct Chunk {
    int first_unit = 0;  // engine unit of the chunk's first unit
    int first_block = 0, end_block = 0;
    bool first = false, last = false;  // global first / last stage
    int embedding_units = 0;           // on the first stage: wte (and wpe)
    int end_unit() const {
      return first_unit + embedding_units + (end_block - first_block) + (last ? 2 : 0);
    }
  };

  // Parameter / gradient `index` of `unit` as f32 while the unit is in use:
  // the engine's own buffer for f32, else a widened copy (parameters) or an
  // f32 accumulator added into the 16-bit buffer by Flush() (gradients).
  absl::StatusOr<Tensor> P(int unit, int index);
  absl::StatusOr<Tensor> G(int unit, int index);
  absl::StatusOr<BlockTensors> BlockParams(int unit);
  absl::StatusOr<BlockTensors> BlockGrads(int unit);
  absl::Status Flush();  // before a unit's Post* hook

  absl::Status EmbeddingForward(const Chunk& ch, const Saved& a, Tensor* x);
  absl::Status BlockForward(int unit, int layer, MemCategory out_category, Tensor* x,
                            BlockSaved* a);
  // The block's arithmetic, no hooks: x_in to *x_out; `saved` receives what
  // backward needs, in category `kept`.
  absl::Status ComputeBlock(const BlockTensors& w, const Tensor& x_in, MemCategory kept,
                            MemCategory out_category, BlockSaved* saved, Tensor* x_out);
  absl::Status HeadForward(const Chunk& ch, const Tensor& x, Saved* a, double* loss);
  absl::Status HeadBackward(const Chunk& ch, const Saved& a, Tensor* dx);
  absl::Status BlockBackward(int unit, int layer, const BlockSaved& kept, Tensor* dx);
  absl::Status EmbeddingBackward(const Chunk& ch, const Saved& a, const Tensor& dx);
  bool Recompute(int layer) const;

  const GptConfig config_;
  const GptPlace place_;
  LayerContext ctx_;
  std::vector<Chunk> chunks_;
  ZeroEngine& engine_;
  std::vector<Tensor> scratch_;  // widened parameter copies of the units in use
  std::vector<std::pair<MutView, Tensor>> pending_grads_;        // 16-bit grad, f32 accumulator
  std::map<std::pair<int, int>, std::unique_ptr<Saved>> saved_;  // by (micro-batch, chunk)
};

// pp > 1: sums the reduced gradient of "wte" (stage 0) and "head" (last
// stage) over `embedding_group` (a data communicator of those two ranks, same
// dp coordinate), on the engine's compute stream. Call between
// ReduceGradients() and Step(). Collective over the group.
absl::Status SumTiedEmbeddingGrads(ZeroEngine& e, Communicator& embedding_group);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_H_
