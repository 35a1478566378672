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
// Not yet (issue #6): tensor parallelism, sequence parallelism, activation
// recompute, bf16 compute.
#ifndef TRIREME_MODELS_GPT_H_
#define TRIREME_MODELS_GPT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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
  uint64_t seed = 1234;     // parameter initialization
  // Every inconsistency with the numbers (heads dividing hidden, pp <= layers).
  absl::Status Validate(int pp) const;
};

// Blocks [first, end) held by pipeline rank `pp_rank` of `pp`.
std::pair<int, int> BlockRange(const GptConfig& c, int pp, int pp_rank);

// The engine units of one pipeline stage, in forward order.
std::vector<UnitSpec> GptUnits(const GptConfig& c, int pp, int pp_rank);

// Deterministic initial values by parameter name (the head copy = wte): N(0,
// 0.02)-like for matrices, ones for LayerNorm gains, zeros for biases.
absl::Status GptInit(const GptConfig& c, const ParamInfo& p, float* values);

// Tokens of micro-batch `global_mb` of `step`: [micro_batch, seq + 1]
// (inputs are [:, :seq], targets [:, 1:]). A fixed, learnable pattern.
std::vector<int32_t> GptBatch(const GptConfig& c, int64_t step, int64_t global_mb);

// One pipeline stage of the model over its engine. Not thread-safe.
class GptStage {
 public:
  GptStage(GptConfig c, int pp, int pp_rank, ZeroEngine& engine);
  ~GptStage();

  // Elements of the activation between stages: micro_batch * seq * hidden.
  int64_t activation_count() const;

  // Forward of micro-batch `mb` (tokens from GptBatch): stage 0 reads the
  // tokens, later stages `in`; all but the last write `out`; the last sets
  // *loss (mean cross-entropy of the micro-batch).
  absl::Status Forward(int mb, const std::vector<int32_t>& tokens, const std::vector<float>& in,
                       std::vector<float>& out, double* loss);
  // Backward of `mb`: `dout` (empty on the last stage) to `din` (left empty
  // on stage 0); adds parameter gradients through the engine.
  absl::Status Backward(int mb, const std::vector<float>& dout, std::vector<float>& din);

 private:
  struct BlockActs;
  struct Acts;
  absl::Status BlockForward(int unit, std::vector<float>& x, BlockActs& a);
  absl::Status BlockBackward(int unit, std::vector<float>& dx, const BlockActs& a);

  GptConfig c_;
  int pp_, pp_rank_;
  ZeroEngine& e_;
  int first_block_, end_block_;
  std::map<int, std::unique_ptr<Acts>> acts_;  // by micro-batch
};

// pp > 1: sums the reduced gradient of "wte" (stage 0) and "head" (last
// stage) over `embedding_group` (those two ranks, same dp coordinate). Call
// between ReduceGradients() and Step(). Collective over the group.
absl::Status SumTiedEmbeddingGrads(ZeroEngine& e, Communicator& embedding_group);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_H_
