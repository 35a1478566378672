// The GPT's parameters, in one table: name, global shape, how tensor
// parallelism splits it, weight decay and initial value. The engine units,
// the initialization, the checkpoint layout and the optimizer groups (weight
// decay) are all derived from it; the layers find their tensors through the
// table's member pointers, never by index or by name suffix.
#ifndef TRIREME_MODELS_GPT_PARAMS_H_
#define TRIREME_MODELS_GPT_PARAMS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_config.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/tensor.h"

namespace trireme {

// How a TP rank holds its part of a parameter of global shape `shape`.
enum class TpSplit {
  kReplicated,  // whole on every TP rank (norms, row-parallel biases, positions)
  kColumns,     // the last dimension split (column-parallel MLP-up weight and bias)
  kQkvColumns,  // the last dimension seen as [3, C]: each rank holds its heads' slice of q, k, v
  // The last dimension seen as [2, kv x D] (GQA's k | v): each rank holds its
  // key/value heads' slice of k and v -- kv / tp heads, or (tp > kv) the one
  // head its query heads read, shared with tp / kv - 1 other ranks.
  kKvColumns,
  kRows,       // the first dimension split (row-parallel projection weights)
  kVocabRows,  // rows of the vocabulary, padded to a multiple of tp (embedding, head)
};

enum class InitKind {
  kWeight,  // uniform with GPT-2's std 0.02, from the name and the global index
  kOnes,
  kZeros,
};

// A transformer block's tensors (parameters, or their gradients), as the
// layers use them.
struct BlockTensors {
  // Multi-head attention: fused qkv_w / qkv_b; grouped-query: q_* and kv_*.
  // SwiGLU: fc_* is the up projection, gate_* the gate. Absent parameters
  // (no biases, RMSNorm's shift, ...) are undefined tensors.
  Tensor ln1_g, ln1_b, qkv_w, qkv_b, q_w, q_b, kv_w, kv_b, proj_w, proj_b, ln2_g, ln2_b, fc_w, fc_b,
      gate_w, gate_b, out_w, out_b;
};

// Which unit a parameter belongs to.
enum class ParamScope { kTokenEmbedding, kPositionEmbedding, kBlock, kFinalNorm, kHead };

struct ParamDef {
  const char* name;  // blocks: prefixed with "h<layer>."
  ParamScope scope;
  TpSplit split;
  bool weight_decay;
  InitKind init;
  Tensor BlockTensors::*member;  // blocks only
  // Whether a model of this configuration has it (null: always).
  bool (*present)(const GptConfig&) = nullptr;
};

// Whether configuration `c` has parameter `d`.
inline bool Present(const GptConfig& c, const ParamDef& d) {
  return d.present == nullptr || d.present(c);
}

// Every parameter any configuration has, in forward order; blocks' entries
// once. A model has those that are Present() for its configuration.
const std::vector<ParamDef>& GptParamDefs();

// The global (tp = 1, unpadded) shape and this TP rank's local shape.
Shape GlobalShape(const GptConfig& c, const ParamDef& d);
Shape LocalShape(const GptConfig& c, const ParamDef& d, int tp);
// The first key/value head TP rank `tp_rank` holds (see kKvColumns).
int FirstKvHead(const GptConfig& c, int tp, int tp_rank);

// The definition behind engine parameter `name` ("h3.qkv_w", "head", ...) and
// the global tensor it is a slice of ("head", the tied head, is a slice of
// "wte"; "lm_head" is the untied head).
struct ResolvedParam {
  const ParamDef* def = nullptr;
  std::string global_name;
};
absl::StatusOr<ResolvedParam> ResolveParam(const std::string& name);

// Checkpoint layout of the local part of parameter `name` held at TP rank
// `tp_rank` of `tp` (see GptTensorLayout in gpt.h).
absl::StatusOr<checkpoint::TensorLayout> ParamLayout(const GptConfig& c, int tp, int tp_rank,
                                                     const std::string& name);

// Calls fn(local_index, global_index) for each element of the local part of
// `layout` (row-major in the block); global_index is -1 for local elements
// past the block (vocabulary padding).
void ForEachGlobalIndex(const checkpoint::TensorLayout& layout, int64_t local_numel,
                        const std::function<void(int64_t, int64_t)>& fn);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_PARAMS_H_
