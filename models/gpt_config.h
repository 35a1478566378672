// The GPT's configuration and where a model slice sits on the grid.
#ifndef TRIREME_MODELS_GPT_CONFIG_H_
#define TRIREME_MODELS_GPT_CONFIG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace trireme {

enum class NormKind { kLayerNorm, kRmsNorm };
enum class PositionKind { kLearned, kRope };
enum class MlpKind { kGelu, kSwiGlu };

// The decoder: GPT-2 by default; every architectural choice of a Llama-style
// model is a field (the "llama" preset of //:train sets them together).
struct GptConfig {
  int layers = 2;
  int64_t hidden = 32;
  int heads = 4;
  int64_t vocab = 256;
  int64_t seq = 8;
  int64_t micro_batch = 2;  // sequences per micro-batch
  float ln_eps = 1e-5f;     // LayerNorm / RMSNorm epsilon
  // Normalisation: LayerNorm (gain and shift) or RMSNorm (gain only).
  NormKind norm = NormKind::kLayerNorm;
  // Positions: a learned table added to the embedding, or rotary embedding
  // of q and k (RoFormer's adjacent pairs, angle p * rope_base^(-2i/D)).
  PositionKind position = PositionKind::kLearned;
  float rope_base = 10000.0f;
  // MLP: GELU (tanh) of one projection, or SwiGLU (silu(x Wgate) * x Wup).
  MlpKind mlp = MlpKind::kGelu;
  int64_t ffn = 0;  // the MLP's width; 0: 4 x hidden
  // Key/value heads (grouped-query attention): 0 or `heads` is multi-head,
  // 1 multi-query; must divide heads.
  int kv_heads = 0;
  // Sliding-window attention: each position sees the last `sliding_window`
  // positions (itself included); 0: all earlier positions.
  int64_t sliding_window = 0;
  // The LM head: the token embedding itself (tied) or its own matrix; both
  // vocabulary-parallel.
  bool tied_head = true;
  // Biases of the linear layers (QKV, projections, MLP). LayerNorm keeps its
  // shift either way; RMSNorm has none.
  bool bias = true;
  uint64_t seed = 1234;  // parameter initialization
  // Activation checkpointing per block: recompute[l] keeps only block l's
  // input and recomputes the block in backward. Empty: keep everything.
  std::vector<bool> recompute;
  // Sequence parallelism (with tp > 1): LayerNorms, residuals and the
  // activations between stages hold 1/tp of the rows (micro_batch * seq must
  // divide by tp); all-gather before and reduce-scatter after each
  // tensor-parallel region replace the all-reduces.
  bool sequence_parallel = false;
  int kv() const { return kv_heads > 0 ? kv_heads : heads; }
  int64_t ffn_width() const { return ffn > 0 ? ffn : 4 * hidden; }
  int64_t head_dim() const { return hidden / heads; }
  bool gqa() const { return kv() != heads; }  // separate q and kv projections
  // Key/value heads a TP rank holds: kv / tp when tp divides kv, else 1 (a
  // head shared by tp / kv ranks).
  int local_kv(int tp) const { return kv() >= tp ? kv() / tp : 1; }
  // Every inconsistency with the numbers (heads dividing hidden, kv_heads
  // dividing heads, tp dividing heads and the MLP width and dividing or being
  // a multiple of kv_heads, an even head size for RoPE, pp <= layers).
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

// The Llama architecture on `c`'s shape: RMSNorm, rotary positions, SwiGLU,
// `kv_heads` key/value heads, an untied head, no biases (the "llama" preset).
void UseLlamaArchitecture(GptConfig* c, int kv_heads = 2);

// Blocks [first, end) held by global stage `global_stage` of
// `global_stages` = pp x virtual_stages (chunk c of pipeline rank r is
// global stage c * pp + r; blocks split evenly, earlier stages taking the
// remainder).
std::pair<int, int> BlockRange(const GptConfig& c, int global_stages, int global_stage);

// Vocabulary rows per TP rank (the vocabulary padded to a multiple of tp).
int64_t VocabPerRank(const GptConfig& c, int tp);

// The published architectures by name, for planning and memory benchmarks:
// gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1.5b (Radford et al. 2019; vocab
// 50257, seq 1024) and llama-7b, llama-13b (Touvron et al. 2023; seq 2048),
// llama-70b (Llama 2: 80 layers, hidden 8192, 64 heads, 8 KV heads, FFN
// 28672, vocab 32000, seq 4096). micro_batch is 1.
struct NamedShape {
  const char* name;
  GptConfig config;
  int64_t published_params;  // the parameter count the model's authors give
};
const std::vector<NamedShape>& GptNamedShapes();
// The architecture in words: "layernorm, learned positions, gelu (ffn 256),
// MHA, tied head, biases" (heads as MHA, MQA or GQA n/kv; a window if any).
std::string GptArchitecture(const GptConfig& c);
// Parameters of the whole model (a tied head counted once).
int64_t GptParameterCount(const GptConfig& c);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_CONFIG_H_
