#include "models/gpt_params.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace trireme {

namespace {

bool Learned(const GptConfig& c) { return c.position == PositionKind::kLearned; }
bool LayerNormShift(const GptConfig& c) { return c.norm == NormKind::kLayerNorm; }
bool Mha(const GptConfig& c) { return !c.gqa(); }
bool MhaBias(const GptConfig& c) { return !c.gqa() && c.bias; }
bool Gqa(const GptConfig& c) { return c.gqa(); }
bool GqaBias(const GptConfig& c) { return c.gqa() && c.bias; }
bool Bias(const GptConfig& c) { return c.bias; }
bool SwiGlu(const GptConfig& c) { return c.mlp == MlpKind::kSwiGlu; }
bool SwiGluBias(const GptConfig& c) { return c.mlp == MlpKind::kSwiGlu && c.bias; }
bool Tied(const GptConfig& c) { return c.tied_head; }
bool Untied(const GptConfig& c) { return !c.tied_head; }

}  // namespace

const std::vector<ParamDef>& GptParamDefs() {
  using S = ParamScope;
  using T = TpSplit;
  using I = InitKind;
  using B = BlockTensors;
  static const auto* defs = new std::vector<ParamDef>{
      {"wte", S::kTokenEmbedding, T::kVocabRows, true, I::kWeight, nullptr},
      {"wpe", S::kPositionEmbedding, T::kReplicated, true, I::kWeight, nullptr, Learned},
      {"ln1_g", S::kBlock, T::kReplicated, false, I::kOnes, &B::ln1_g},
      {"ln1_b", S::kBlock, T::kReplicated, false, I::kZeros, &B::ln1_b, LayerNormShift},
      {"qkv_w", S::kBlock, T::kQkvColumns, true, I::kWeight, &B::qkv_w, Mha},
      {"qkv_b", S::kBlock, T::kQkvColumns, false, I::kZeros, &B::qkv_b, MhaBias},
      {"q_w", S::kBlock, T::kColumns, true, I::kWeight, &B::q_w, Gqa},
      {"q_b", S::kBlock, T::kColumns, false, I::kZeros, &B::q_b, GqaBias},
      {"kv_w", S::kBlock, T::kKvColumns, true, I::kWeight, &B::kv_w, Gqa},
      {"kv_b", S::kBlock, T::kKvColumns, false, I::kZeros, &B::kv_b, GqaBias},
      {"proj_w", S::kBlock, T::kRows, true, I::kWeight, &B::proj_w},
      {"proj_b", S::kBlock, T::kReplicated, false, I::kZeros, &B::proj_b, Bias},
      {"ln2_g", S::kBlock, T::kReplicated, false, I::kOnes, &B::ln2_g},
      {"ln2_b", S::kBlock, T::kReplicated, false, I::kZeros, &B::ln2_b, LayerNormShift},
      {"fc_w", S::kBlock, T::kColumns, true, I::kWeight, &B::fc_w},
      {"fc_b", S::kBlock, T::kColumns, false, I::kZeros, &B::fc_b, Bias},
      {"gate_w", S::kBlock, T::kColumns, true, I::kWeight, &B::gate_w, SwiGlu},
      {"gate_b", S::kBlock, T::kColumns, false, I::kZeros, &B::gate_b, SwiGluBias},
      {"out_w", S::kBlock, T::kRows, true, I::kWeight, &B::out_w},
      {"out_b", S::kBlock, T::kReplicated, false, I::kZeros, &B::out_b, Bias},
      {"lnf_g", S::kFinalNorm, T::kReplicated, false, I::kOnes, nullptr},
      {"lnf_b", S::kFinalNorm, T::kReplicated, false, I::kZeros, nullptr, LayerNormShift},
      {"head", S::kHead, T::kVocabRows, true, I::kWeight, nullptr, Tied},
      {"lm_head", S::kHead, T::kVocabRows, true, I::kWeight, nullptr, Untied},
  };
  return *defs;
}

Shape GlobalShape(const GptConfig& c, const ParamDef& d) {
  const int64_t C = c.hidden, F = c.ffn_width(), KV2 = 2 * c.kv() * c.head_dim();
  const std::string n = d.name;
  if (n == "wte" || n == "head" || n == "lm_head") return {c.vocab, C};
  if (n == "wpe") return {c.seq, C};
  if (n == "qkv_w") return {C, 3 * C};
  if (n == "qkv_b") return {3 * C};
  if (n == "q_w" || n == "proj_w") return {C, C};
  if (n == "kv_w") return {C, KV2};
  if (n == "kv_b") return {KV2};
  if (n == "fc_w" || n == "gate_w") return {C, F};
  if (n == "fc_b" || n == "gate_b") return {F};
  if (n == "out_w") return {F, C};
  return {C};  // norm gains and shifts, q bias, row-parallel biases
}

int FirstKvHead(const GptConfig& c, int tp, int tp_rank) {
  return c.kv() >= tp ? tp_rank * (c.kv() / tp) : tp_rank / (tp / c.kv());
}

Shape LocalShape(const GptConfig& c, const ParamDef& d, int tp) {
  Shape s = GlobalShape(c, d);
  switch (d.split) {
    case TpSplit::kReplicated:
      break;
    case TpSplit::kColumns:
    case TpSplit::kQkvColumns:
      s.back() /= tp;
      break;
    case TpSplit::kKvColumns:
      s.back() = 2 * c.local_kv(tp) * c.head_dim();
      break;
    case TpSplit::kRows:
      s.front() /= tp;
      break;
    case TpSplit::kVocabRows:
      s.front() = VocabPerRank(c, tp);
      break;
  }
  return s;
}

absl::StatusOr<ResolvedParam> ResolveParam(const std::string& name) {
  absl::string_view local = name;
  const size_t dot = name.find('.');
  if (dot != std::string::npos) {
    int layer = 0;
    if (name[0] != 'h' || !absl::SimpleAtoi(name.substr(1, dot - 1), &layer) || layer < 0) {
      return absl::NotFoundError(absl::StrCat("'", name, "' is not a GPT parameter"));
    }
    local = absl::string_view(name).substr(dot + 1);
  }
  for (const ParamDef& d : GptParamDefs()) {
    if ((d.scope == ParamScope::kBlock) != (dot != std::string::npos)) continue;
    if (local == d.name) return ResolvedParam{&d, name == "head" ? "wte" : name};  // tied
  }
  return absl::NotFoundError(absl::StrCat("'", name, "' is not a GPT parameter"));
}

absl::StatusOr<checkpoint::TensorLayout> ParamLayout(const GptConfig& c, int tp, int t,
                                                     const std::string& name) {
  absl::StatusOr<ResolvedParam> r = ResolveParam(name);
  if (!r.ok()) return r.status();
  const ParamDef& d = *r->def;
  const Shape global = GlobalShape(c, d), local = LocalShape(c, d, tp);
  checkpoint::TensorLayout l;
  l.name = r->global_name;
  l.shape = global;
  switch (d.split) {
    case TpSplit::kReplicated:  // every TP rank holds it: TP rank 0 saves it
      l.save = t == 0;
      break;
    case TpSplit::kVocabRows: {  // rows [t Vl, (t+1) Vl), the padding outside the block
      const int64_t Vl = local.front(), lo = std::min<int64_t>(t * Vl, c.vocab);
      l.block_offset = {lo, 0};
      l.block_shape = {std::min<int64_t>(Vl, c.vocab - lo), global.back()};
      // The last stage's copy of the embedding (pp > 1) is loaded, not saved.
      l.save = name != "head";
      break;
    }
    case TpSplit::kQkvColumns: {  // this rank's heads' columns of each of q, k, v
      const int64_t C = c.hidden, Cl = C / tp;
      l.view = global;
      l.view.back() = 3;
      l.view.push_back(C);
      l.block_offset.assign(l.view.size(), 0);
      l.block_offset.back() = t * Cl;
      l.block_shape = l.view;
      l.block_shape.back() = Cl;
      break;
    }
    case TpSplit::kKvColumns: {  // this rank's key/value heads' columns of each of k and v
      const int64_t width = c.kv() * c.head_dim(), local_width = local.back() / 2;
      l.view = global;
      l.view.back() = 2;
      l.view.push_back(width);
      l.block_offset.assign(l.view.size(), 0);
      l.block_offset.back() = FirstKvHead(c, tp, t) * c.head_dim();
      l.block_shape = l.view;
      l.block_shape.back() = local_width;
      // A head shared by tp / kv ranks is saved by the first of them.
      l.save = c.kv() >= tp || t % (tp / c.kv()) == 0;
      break;
    }
    case TpSplit::kColumns:
      l.block_offset.assign(global.size(), 0);
      l.block_offset.back() = t * local.back();
      l.block_shape = global;
      l.block_shape.back() = local.back();
      break;
    case TpSplit::kRows:
      l.block_offset.assign(global.size(), 0);
      l.block_offset.front() = t * local.front();
      l.block_shape = global;
      l.block_shape.front() = local.front();
      break;
  }
  return l;
}

void ForEachGlobalIndex(const checkpoint::TensorLayout& l, int64_t local_numel,
                        const std::function<void(int64_t, int64_t)>& fn) {
  const std::vector<int64_t>& view = l.view.empty() ? l.shape : l.view;
  const size_t k = view.size();
  std::vector<int64_t> offset = l.block_offset, block = l.block_shape;
  if (offset.empty()) offset.assign(k, 0);
  if (block.empty()) block = view;
  std::vector<int64_t> stride(k, 1);
  for (size_t d = k - 1; d > 0; --d) stride[d - 1] = stride[d] * view[d];
  int64_t block_numel = 1;
  for (int64_t b : block) block_numel *= b;
  std::vector<int64_t> idx(k, 0);  // position in the block, row-major
  for (int64_t i = 0; i < local_numel; ++i) {
    if (i >= block_numel) {
      fn(i, -1);
      continue;
    }
    int64_t g = 0;
    for (size_t d = 0; d < k; ++d) g += (offset[d] + idx[d]) * stride[d];
    fn(i, g);
    for (size_t d = k; d-- > 0;) {  // next position
      if (++idx[d] < block[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace trireme
