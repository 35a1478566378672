// The GPT's configuration and where a model slice sits on the grid.
#ifndef TRIREME_MODELS_GPT_CONFIG_H_
#define TRIREME_MODELS_GPT_CONFIG_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"

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

// Blocks [first, end) held by global stage `global_stage` of
// `global_stages` = pp x virtual_stages (chunk c of pipeline rank r is
// global stage c * pp + r; blocks split evenly, earlier stages taking the
// remainder).
std::pair<int, int> BlockRange(const GptConfig& c, int global_stages, int global_stage);

// Vocabulary rows per TP rank (the vocabulary padded to a multiple of tp).
int64_t VocabPerRank(const GptConfig& c, int tp);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_CONFIG_H_
