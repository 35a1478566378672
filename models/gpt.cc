#include "models/gpt.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "runtime/core/hash.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

// The parameter seeds were defined with a basis a digit short of FNV's
// (1469598103934665603); kept, so initial values and checkpoints stay the
// same.
uint64_t NameHash(const std::string& s) { return Fnv1a64(s, 1469598103934665603ull); }

std::string BlockParamName(int layer, const ParamDef& d) {
  return absl::StrCat("h", layer, ".", d.name);
}

ParamSpec SpecOf(const GptConfig& c, const GptPlace& place, const ParamDef& d,
                 const std::string& name) {
  ParamSpec p{name, LocalShape(c, d, place.tp), d.weight_decay};
  // Split parameters are not replicated over TP (each rank's part counts).
  p.replicated_over_tp = d.split == TpSplit::kReplicated;
  // A key/value head shared by tp / kv ranks counts on the first of them.
  if (d.split == TpSplit::kKvColumns && c.kv() < place.tp) {
    p.norm_duplicate = place.tp_rank % (place.tp / c.kv()) != 0;
  }
  return p;
}

}  // namespace

// ---- configuration --------------------------------------------------------------

absl::Status GptConfig::Validate(int pp, int tp, int virtual_stages) const {
  if (layers < 1 || hidden < 1 || heads < 1 || vocab < 2 || seq < 1 || micro_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPT: layers (", layers, "), hidden (", hidden, "), heads (", heads, "), seq (", seq,
        "), micro_batch (", micro_batch, ") must be >= 1 and vocab (", vocab, ") >= 2"));
  }
  if (hidden % heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: heads (", heads, ") must divide hidden (", hidden, ")"));
  }
  if (tp < 1 || heads % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: tp (", tp, ") must divide heads (", heads, ")"));
  }
  if (ffn < 0 || kv_heads < 0 || sliding_window < 0 || !(rope_base > 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: ffn (", ffn, "), kv_heads (", kv_heads, ") and sliding_window (",
                     sliding_window, ") must be >= 0 and rope_base (", rope_base, ") > 1"));
  }
  if (heads % kv() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: kv_heads (", kv(), ") must divide heads (", heads, ")"));
  }
  if (kv() % tp != 0 && tp % kv() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPT: tp (", tp, ") must divide kv_heads (", kv(),
        ") or be a multiple of it (key/value heads are split, or shared by tp / kv_heads ranks)"));
  }
  if (position == PositionKind::kRope && head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPT: rotary positions need an even head size (",
                                                   hidden, " / ", heads, " = ", head_dim(), ")"));
  }
  if (ffn_width() % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: tp (", tp, ") must divide the MLP width (", ffn_width(), ")"));
  }
  if (sequence_parallel && (micro_batch * seq) % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: sequence parallelism needs micro_batch x seq (", micro_batch * seq,
                     ") divisible by tp (", tp, ")"));
  }
  if (pp < 1 || virtual_stages < 1 || pp * virtual_stages > layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: pp (", pp, ") x virtual stages (", virtual_stages,
                     ") must be between 1 and layers (", layers, ")"));
  }
  return absl::OkStatus();
}

std::pair<int, int> BlockRange(const GptConfig& c, int global_stages, int global_stage) {
  const int base = c.layers / global_stages, extra = c.layers % global_stages;
  const int first = global_stage * base + std::min(global_stage, extra);
  return {first, first + base + (global_stage < extra ? 1 : 0)};
}

int64_t VocabPerRank(const GptConfig& c, int tp) { return (c.vocab + tp - 1) / tp; }

void UseLlamaArchitecture(GptConfig* c, int kv_heads) {
  c->norm = NormKind::kRmsNorm;
  c->position = PositionKind::kRope;
  c->mlp = MlpKind::kSwiGlu;
  c->kv_heads = kv_heads;
  c->tied_head = false;
  c->bias = false;
}

namespace {

GptConfig Gpt2Shape(int layers, int64_t hidden, int heads) {
  GptConfig c;
  c.layers = layers;
  c.hidden = hidden;
  c.heads = heads;
  c.vocab = 50257;
  c.seq = 1024;
  c.micro_batch = 1;
  return c;
}

GptConfig LlamaShape(int layers, int64_t hidden, int heads, int kv_heads, int64_t ffn,
                     int64_t seq) {
  GptConfig c = Gpt2Shape(layers, hidden, heads);
  UseLlamaArchitecture(&c, kv_heads);
  c.ffn = ffn;
  c.vocab = 32000;
  c.seq = seq;
  return c;
}

}  // namespace

const std::vector<NamedShape>& GptNamedShapes() {
  static const auto* shapes = new std::vector<NamedShape>{
      {"gpt2-124m", Gpt2Shape(12, 768, 12), 124439808},
      {"gpt2-350m", Gpt2Shape(24, 1024, 16), 354823168},
      {"gpt2-774m", Gpt2Shape(36, 1280, 20), 774030080},
      {"gpt2-1.5b", Gpt2Shape(48, 1600, 25), 1557611200},
      {"llama-7b", LlamaShape(32, 4096, 32, 32, 11008, 2048), 6738415616},
      {"llama-13b", LlamaShape(40, 5120, 40, 40, 13824, 2048), 13015864320},
      {"llama-70b", LlamaShape(80, 8192, 64, 8, 28672, 4096), 68976648192},
  };
  return *shapes;
}

std::string GptArchitecture(const GptConfig& c) {
  std::string heads = "MHA";
  if (c.kv() == 1) heads = "MQA";
  if (c.kv() > 1 && c.gqa()) heads = absl::StrCat("GQA ", c.heads, "/", c.kv());
  return absl::StrCat(
      c.norm == NormKind::kRmsNorm ? "rmsnorm" : "layernorm", ", ",
      c.position == PositionKind::kRope ? absl::StrCat("rope (base ", c.rope_base, ")")
                                        : std::string("learned positions"),
      ", ", c.mlp == MlpKind::kSwiGlu ? "swiglu" : "gelu", " (ffn ", c.ffn_width(), "), ", heads,
      c.sliding_window > 0 ? absl::StrCat(", window ", c.sliding_window) : std::string(), ", ",
      c.tied_head ? "tied head" : "untied head", ", ", c.bias ? "biases" : "no biases");
}

int64_t GptParameterCount(const GptConfig& c) {
  int64_t n = 0;
  for (const checkpoint::TensorSpec& t : GptCheckpointTensors(c)) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    n += numel;
  }
  return n;
}

// ---- the parameter table's consequences --------------------------------------------

int GptEmbeddingUnits(const GptConfig& c) { return c.position == PositionKind::kLearned ? 2 : 1; }

std::vector<UnitSpec> GptUnits(const GptConfig& c, const GptPlace& place) {
  std::vector<UnitSpec> units;
  const int v = place.virtual_stages, stages = place.pp * v;
  // The unit of scope `scope`, named `unit`, with the configuration's
  // parameters of that scope.
  auto unit_of = [&](ParamScope scope, const std::string& unit) {
    UnitSpec u{unit, {}};
    for (const ParamDef& d : GptParamDefs()) {
      if (d.scope == scope && Present(c, d)) u.params.push_back(SpecOf(c, place, d, d.name));
    }
    return u;
  };
  for (int chunk = 0; chunk < v; ++chunk) {
    const int s = chunk * place.pp + place.pp_rank;
    if (s == 0) {
      units.push_back(unit_of(ParamScope::kTokenEmbedding, "wte"));
      if (GptEmbeddingUnits(c) == 2)
        units.push_back(unit_of(ParamScope::kPositionEmbedding, "wpe"));
    }
    const auto [first, end] = BlockRange(c, stages, s);
    for (int l = first; l < end; ++l) {
      UnitSpec u{absl::StrCat("block", l), {}};
      for (const ParamDef& d : GptParamDefs()) {
        if (d.scope == ParamScope::kBlock && Present(c, d)) {
          u.params.push_back(SpecOf(c, place, d, BlockParamName(l, d)));
        }
      }
      units.push_back(std::move(u));
    }
    if (s == stages - 1) {
      units.push_back(unit_of(ParamScope::kFinalNorm, "final"));
      UnitSpec head = unit_of(ParamScope::kHead, "head");
      if (c.tied_head && place.pp == 1) {
        head.params[0].tied_to = "wte";  // the same rank holds the embedding: one storage
      } else if (c.tied_head) {
        head.params[0].norm_duplicate = true;  // stage 0 counts wte
      }
      units.push_back(std::move(head));
    }
  }
  return units;
}

absl::StatusOr<checkpoint::TensorLayout> GptTensorLayout(const GptConfig& c, const GptPlace& place,
                                                         const ParamInfo& p) {
  return ParamLayout(c, place.tp, place.tp_rank, p.name);
}

absl::Status GptInit(const GptConfig& c, const GptPlace& place, const ParamInfo& p, float* v) {
  ASSIGN_OR_RETURN(ResolvedParam r, ResolveParam(p.name));
  ASSIGN_OR_RETURN(checkpoint::TensorLayout l, ParamLayout(c, place.tp, place.tp_rank, p.name));
  const uint64_t h = NameHash(r.global_name) ^ c.seed;
  const InitKind kind = r.def->init;
  // This TP rank's elements of the one full tensor; padding rows are zero.
  ForEachGlobalIndex(l, p.numel, [&](int64_t i, int64_t g) {
    if (g < 0 || kind == InitKind::kZeros) {
      v[i] = 0.0f;
    } else if (kind == InitKind::kOnes) {
      v[i] = 1.0f;
    } else {  // a uniform with the std 0.02 of GPT-2
      v[i] = static_cast<float>((PairUniform(h, g) * 2 - 1) * 0.02 * std::sqrt(3.0));
    }
  });
  return absl::OkStatus();
}

std::vector<checkpoint::TensorSpec> GptCheckpointTensors(const GptConfig& c) {
  std::vector<checkpoint::TensorSpec> out;
  for (const UnitSpec& u : GptUnits(c, GptPlace{})) {
    for (const ParamSpec& p : u.params) {
      if (p.name != "head") out.push_back({p.name, p.shape});
    }
  }
  return out;
}

// ---- activation accounting (must match what GptStage allocates) --------------------

namespace {

// Floats one block keeps for backward (everything, as without recompute).
int64_t BlockFloats(const GptConfig& c, const GptPlace& place) {
  const int64_t B = c.micro_batch, T = c.seq, N = B * T, C = c.hidden, D = c.head_dim();
  const int64_t H = c.heads / place.tp, Cl = H * D, W = c.local_kv(place.tp) * D;
  const int64_t F = c.ffn_width() / place.tp;
  const int64_t R = c.sequence_parallel && place.tp > 1 ? N / place.tp : N;
  // x_in, x2 [R, C]; ln1, ln2 [N, C]; two norms' statistics [R] each; q, att
  // [N, Cl]; k, v [N, W]; probs [B, H, T, T]; MLP: fc (up), its activation
  // [N, F], and SwiGLU's gate [N, F].
  const int64_t mlp = c.mlp == MlpKind::kSwiGlu ? 3 : 2;
  return 2 * R * C + 2 * N * C + 2 * Norm::StatsPerRow(c) * R + 2 * N * Cl + 2 * N * W +
         B * H * T * T + mlp * N * F;
}

}  // namespace

int64_t GptKeptActivationBytes(const GptConfig& c, const GptPlace& place, int chunk) {
  const int64_t B = c.micro_batch, T = c.seq, N = B * T, C = c.hidden;
  const int64_t R = c.sequence_parallel && place.tp > 1 ? N / place.tp : N;
  const int stages = place.pp * place.virtual_stages, s = chunk * place.pp + place.pp_rank;
  int64_t floats = 0;
  if (s == 0) floats += N;           // token ids (int32)
  if (s == stages - 1) floats += N;  // targets (int32)
  const auto [first, end] = BlockRange(c, stages, s);
  for (int l = first; l < end; ++l) {
    const bool again = l < static_cast<int>(c.recompute.size()) && c.recompute[l];
    floats += again ? R * C : BlockFloats(c, place);
  }
  if (s == stages - 1) {
    // x_final [R, C], lnf [N, C], its statistics [R], logits [N, V/tp], lse [N].
    floats += R * C + N * C + Norm::StatsPerRow(c) * R + N * VocabPerRank(c, place.tp) + N;
  }
  return 4 * floats;
}

int64_t GptRecomputeTransientBytes(const GptConfig& c, const GptPlace& place, int chunk) {
  const int stages = place.pp * place.virtual_stages, s = chunk * place.pp + place.pp_rank;
  const auto [first, end] = BlockRange(c, stages, s);
  for (int l = first; l < end; ++l) {
    if (l < static_cast<int>(c.recompute.size()) && c.recompute[l]) {
      // The block's saved tensors except its input, which it kept.
      const int64_t R = c.sequence_parallel && place.tp > 1 ? c.micro_batch * c.seq / place.tp
                                                            : c.micro_batch * c.seq;
      return 4 * (BlockFloats(c, place) - R * c.hidden);
    }
  }
  return 0;
}

// ---- the stage -------------------------------------------------------------------------

struct GptStage::BlockSaved {
  Tensor x_in;  // kept; everything else is absent for a recomputed block
  NormSaved ln1s, ln2s;
  Tensor ln1, att, x2, ln2, fc, gate, g;  // gate: SwiGLU's
  AttentionSaved attn;
};

struct GptStage::Saved {
  Tensor ids, targets;  // [N] int32 (first / last stage)
  std::vector<BlockSaved> blocks;
  Tensor x_final, lnf;  // last stage
  NormSaved lnfs;
  CrossEntropySaved ce;
};

GptStage::GptStage(GptConfig c, GptPlace place, ZeroEngine& engine, Communicator& tp_group,
                   Stream& compute, MemoryTracker* tracker)
    : config_(std::move(c)),
      place_(place),
      ctx_(config_, place_, tp_group, compute, tracker, engine.options().kernel_threads),
      engine_(engine) {
  const int v = place.virtual_stages, stages = place.pp * v;
  int unit = 0;
  for (int chunk = 0; chunk < v; ++chunk) {
    Chunk ch;
    const int s = chunk * place.pp + place.pp_rank;
    ch.first = s == 0;
    ch.last = s == stages - 1;
    ch.embedding_units = ch.first ? GptEmbeddingUnits(config_) : 0;
    std::tie(ch.first_block, ch.end_block) = BlockRange(config_, stages, s);
    ch.first_unit = unit;
    unit = ch.end_unit();
    chunks_.push_back(ch);
  }
}

GptStage::~GptStage() = default;

int64_t GptStage::activation_count() const { return ctx_.rows() * config_.hidden; }

absl::StatusOr<Tensor> GptStage::NewStageTensor() const {
  return ctx_.New({ctx_.rows(), config_.hidden}, MemCategory::kComm);
}

bool GptStage::Recompute(int layer) const {
  return layer < static_cast<int>(config_.recompute.size()) && config_.recompute[layer];
}

absl::StatusOr<Tensor> GptStage::P(int unit, int index) {
  ASSIGN_OR_RETURN(MutView v, engine_.Param(unit, index));
  const Shape shape = engine_.unit_params(unit)[index].shape;
  if (v.dtype == DType::kF32) return Tensor::Borrow(v.data, ctx_.device(), DType::kF32, shape);
  // 16-bit compute copy: the model computes in f32 on a widened copy.
  ASSIGN_OR_RETURN(Tensor w, ctx_.New(shape, MemCategory::kWorkspace));
  RETURN_IF_ERROR(kernels::Cast(ctx_.stream(), v.data, v.dtype, w.data(), DType::kF32, v.count));
  scratch_.push_back(w);
  return w;
}

absl::StatusOr<Tensor> GptStage::G(int unit, int index) {
  ASSIGN_OR_RETURN(MutView v, engine_.Grad(unit, index));
  const Shape shape = engine_.unit_params(unit)[index].shape;
  if (v.dtype == DType::kF32) return Tensor::Borrow(v.data, ctx_.device(), DType::kF32, shape);
  // 16-bit gradient buffer: accumulate this unit's contribution in f32 and
  // add it (rounded) in Flush(), before the engine reduces the buffer.
  ASSIGN_OR_RETURN(Tensor acc, ctx_.Zeros(shape, MemCategory::kWorkspace));
  pending_grads_.push_back({v, acc});
  return acc;
}

absl::StatusOr<BlockTensors> GptStage::BlockParams(int unit) {
  BlockTensors w;
  int i = 0;  // the unit's parameters are the table's present block entries, in order
  for (const ParamDef& d : GptParamDefs()) {
    if (d.scope != ParamScope::kBlock || !Present(config_, d)) continue;
    ASSIGN_OR_RETURN(w.*d.member, P(unit, i++));
  }
  return w;
}

absl::StatusOr<BlockTensors> GptStage::BlockGrads(int unit) {
  BlockTensors g;
  int i = 0;
  for (const ParamDef& d : GptParamDefs()) {
    if (d.scope != ParamScope::kBlock || !Present(config_, d)) continue;
    ASSIGN_OR_RETURN(g.*d.member, G(unit, i++));
  }
  return g;
}

absl::Status GptStage::Flush() {
  for (auto& [view, acc] : pending_grads_) {
    RETURN_IF_ERROR(kernels::AccumulateCast(ctx_.stream(), acc.data(), DType::kF32, view.data,
                                            view.dtype, view.count, /*add=*/true, ctx_.threads()));
  }
  pending_grads_.clear();
  scratch_.clear();
  return absl::OkStatus();
}

// ---- forward ---------------------------------------------------------------------------

absl::Status GptStage::Forward(int mb, int chunk, const std::vector<int32_t>& tokens,
                               const Tensor& in, Tensor* out, double* loss) {
  if (chunk < 0 || chunk >= static_cast<int>(chunks_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("no model chunk ", chunk));
  }
  const Chunk& ch = chunks_[chunk];
  const int64_t B = config_.micro_batch, T = config_.seq, N = B * T;
  auto saved = std::make_unique<Saved>();
  Saved& a = *saved;
  // Token ids (first stage) and targets (last stage) to the device.
  std::vector<int32_t> ids(N), targets(N);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      ids[b * T + t] = tokens[b * (T + 1) + t];
      targets[b * T + t] = tokens[b * (T + 1) + t + 1];
    }
  }
  for (const auto& [host, dev, wanted] :
       {std::make_tuple(&ids, &a.ids, ch.first), std::make_tuple(&targets, &a.targets, ch.last)}) {
    if (!wanted) continue;
    RETURN_IF_ERROR(VocabParallelEmbedding::CheckIds(ctx_, *host));
    ASSIGN_OR_RETURN(*dev, ctx_.New({N}, MemCategory::kActivation, DType::kI32));
    RETURN_IF_ERROR(kernels::CopyFromHost(ctx_.stream(), dev->data(), host->data(), N * 4));
  }
  Tensor x;
  int unit = ch.first_unit;
  if (ch.first) {
    RETURN_IF_ERROR(EmbeddingForward(ch, a, &x));
    unit += ch.embedding_units;
  } else {
    if (!in.defined() || in.numel() != activation_count()) {
      return absl::InvalidArgumentError(
          absl::StrCat("stage ", place_.pp_rank, " got an activation of ",
                       in.defined() ? in.numel() : 0, " elements, expected ", activation_count()));
    }
    // The first block keeps its input: a copy, the received buffer being the
    // pipeline's.
    ASSIGN_OR_RETURN(x, ctx_.Copy(in, MemCategory::kActivation));
  }
  a.blocks.resize(ch.end_block - ch.first_block);
  for (int b = 0; b < static_cast<int>(a.blocks.size()); ++b) {
    // Each block's output is the next one's kept input; the chunk's output
    // goes to the next stage (comm) or stays for the head.
    const bool to_next_stage = b + 1 == static_cast<int>(a.blocks.size()) && !ch.last;
    RETURN_IF_ERROR(BlockForward(unit++, ch.first_block + b,
                                 to_next_stage ? MemCategory::kComm : MemCategory::kActivation, &x,
                                 &a.blocks[b]));
  }
  if (ch.last) {
    RETURN_IF_ERROR(HeadForward(ch, x, &a, loss));
  } else {
    *out = x;
  }
  saved_[{mb, chunk}] = std::move(saved);
  return absl::OkStatus();
}

absl::Status GptStage::EmbeddingForward(const Chunk& ch, const Saved& a, Tensor* x) {
  const int unit = ch.first_unit;
  const bool positions = ch.embedding_units == 2;
  CommScope scope("gpt: embedding forward");
  RETURN_IF_ERROR(engine_.PreForward(unit));
  if (positions) RETURN_IF_ERROR(engine_.PreForward(unit + 1));
  ASSIGN_OR_RETURN(Tensor wte, P(unit, 0));
  Tensor wpe;
  if (positions) {
    ASSIGN_OR_RETURN(wpe, P(unit + 1, 0));
  }
  RETURN_IF_ERROR(
      VocabParallelEmbedding::Forward(ctx_, wte, wpe, a.ids, MemCategory::kActivation, x));
  RETURN_IF_ERROR(Flush());
  if (positions) RETURN_IF_ERROR(engine_.PostForward(unit + 1));
  return engine_.PostForward(unit);
}

absl::Status GptStage::BlockForward(int unit, int layer, MemCategory out_category, Tensor* x,
                                    BlockSaved* a) {
  CommScope scope(absl::StrCat("gpt: layer ", layer, " forward"));
  RETURN_IF_ERROR(engine_.PreForward(unit));
  ASSIGN_OR_RETURN(BlockTensors w, BlockParams(unit));
  // A recomputed block keeps only its input: the rest is transient.
  const MemCategory kept = Recompute(layer) ? MemCategory::kWorkspace : MemCategory::kActivation;
  const Tensor x_in = *x;
  RETURN_IF_ERROR(ComputeBlock(w, x_in, kept, out_category, a, x));
  if (Recompute(layer)) *a = BlockSaved{x_in};
  RETURN_IF_ERROR(Flush());
  return engine_.PostForward(unit);
}

absl::Status GptStage::ComputeBlock(const BlockTensors& w, const Tensor& x_in, MemCategory kept,
                                    MemCategory out_category, BlockSaved* a, Tensor* x_out) {
  const int64_t N = ctx_.tokens(), R = ctx_.rows(), C = config_.hidden;
  const int64_t Cl = ctx_.local_width(), W = ctx_.local_kv_width(), F = ctx_.local_mlp();
  const MemCategory ws = MemCategory::kWorkspace;
  // Without SP the gathered rows are the local ones: kept as they are.
  const MemCategory ln_local = ctx_.seq_parallel() ? ws : kept;
  Stream& s = ctx_.stream();
  const int t = ctx_.threads();
  a->x_in = x_in;
  // Attention: x2 = x + attn(norm1(x)) Wproj + bproj.
  ASSIGN_OR_RETURN(Tensor ln1_local, ctx_.New({R, C}, ln_local));
  RETURN_IF_ERROR(Norm::Forward(ctx_, x_in, w.ln1_g, w.ln1_b, kept, ln1_local, &a->ln1s));
  ASSIGN_OR_RETURN(a->ln1, ctx_.GatherRows(ln1_local, kept));
  Tensor qkv, q, kv;
  if (config_.gqa()) {
    ASSIGN_OR_RETURN(q, ctx_.New({N, Cl}, ws));
    ASSIGN_OR_RETURN(kv, ctx_.New({N, 2 * W}, ws));
    RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx_, a->ln1, w.q_w, w.q_b, q));
    RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx_, a->ln1, w.kv_w, w.kv_b, kv));
  } else {
    ASSIGN_OR_RETURN(qkv, ctx_.New({N, 3 * Cl}, ws));
    RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx_, a->ln1, w.qkv_w, w.qkv_b, qkv));
  }
  ASSIGN_OR_RETURN(a->att, ctx_.New({N, Cl}, kept));
  RETURN_IF_ERROR(
      CausalSelfAttention::Forward(ctx_, QkvColumns::Of(ctx_, qkv, q, kv), kept, &a->attn, a->att));
  ASSIGN_OR_RETURN(Tensor y, ctx_.New({N, C}, ws));
  RETURN_IF_ERROR(RowParallelLinear::Forward(ctx_, a->att, w.proj_w, y));
  ASSIGN_OR_RETURN(Tensor y_local, ctx_.ReduceRows(y, ws));
  ASSIGN_OR_RETURN(a->x2, ctx_.New({R, C}, kept));
  RETURN_IF_ERROR(
      kernels::Add(s, x_in.as<float>(), y_local.as<float>(), R * C, a->x2.as<float>(), t));
  if (w.proj_b.defined()) {
    RETURN_IF_ERROR(kernels::AddBias(s, a->x2.as<float>(), w.proj_b.as<float>(), R, C, t));
  }
  // MLP: x3 = x2 + act(norm2(x2)) Wout + bout, act = gelu(. Wfc + bfc) or
  // silu(. Wgate + bgate) * (. Wfc + bfc).
  ASSIGN_OR_RETURN(Tensor ln2_local, ctx_.New({R, C}, ln_local));
  RETURN_IF_ERROR(Norm::Forward(ctx_, a->x2, w.ln2_g, w.ln2_b, kept, ln2_local, &a->ln2s));
  ASSIGN_OR_RETURN(a->ln2, ctx_.GatherRows(ln2_local, kept));
  ASSIGN_OR_RETURN(a->fc, ctx_.New({N, F}, kept));
  RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx_, a->ln2, w.fc_w, w.fc_b, a->fc));
  ASSIGN_OR_RETURN(a->g, ctx_.New({N, F}, kept));
  if (config_.mlp == MlpKind::kSwiGlu) {
    ASSIGN_OR_RETURN(a->gate, ctx_.New({N, F}, kept));
    RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx_, a->ln2, w.gate_w, w.gate_b, a->gate));
    RETURN_IF_ERROR(kernels::SwiGluForward(s, a->gate.as<float>(), a->fc.as<float>(), N * F,
                                           a->g.as<float>(), t));
  } else {
    RETURN_IF_ERROR(kernels::GeluForward(s, a->fc.as<float>(), N * F, a->g.as<float>(), t));
  }
  ASSIGN_OR_RETURN(Tensor y2, ctx_.New({N, C}, ws));
  RETURN_IF_ERROR(RowParallelLinear::Forward(ctx_, a->g, w.out_w, y2));
  ASSIGN_OR_RETURN(Tensor y2_local, ctx_.ReduceRows(y2, ws));
  ASSIGN_OR_RETURN(*x_out, ctx_.New({R, C}, out_category));
  RETURN_IF_ERROR(
      kernels::Add(s, a->x2.as<float>(), y2_local.as<float>(), R * C, x_out->as<float>(), t));
  if (!w.out_b.defined()) return absl::OkStatus();
  return kernels::AddBias(s, x_out->as<float>(), w.out_b.as<float>(), R, C, t);
}

absl::Status GptStage::HeadForward(const Chunk& ch, const Tensor& x, Saved* a, double* loss) {
  const int unit = ch.end_unit() - 2;
  const int64_t R = ctx_.rows(), C = config_.hidden;
  const MemCategory act = MemCategory::kActivation;
  CommScope scope("gpt: head forward");
  a->x_final = x;
  RETURN_IF_ERROR(engine_.PreForward(unit));
  ASSIGN_OR_RETURN(Tensor gf, P(unit, 0));
  Tensor bf;  // LayerNorm's shift
  if (config_.norm == NormKind::kLayerNorm) {
    ASSIGN_OR_RETURN(bf, P(unit, 1));
  }
  ASSIGN_OR_RETURN(Tensor lnf_local,
                   ctx_.New({R, C}, ctx_.seq_parallel() ? MemCategory::kWorkspace : act));
  RETURN_IF_ERROR(Norm::Forward(ctx_, x, gf, bf, act, lnf_local, &a->lnfs));
  ASSIGN_OR_RETURN(a->lnf, ctx_.GatherRows(lnf_local, act));
  RETURN_IF_ERROR(Flush());
  RETURN_IF_ERROR(engine_.PostForward(unit));
  RETURN_IF_ERROR(engine_.PreForward(unit + 1));
  ASSIGN_OR_RETURN(Tensor head, P(unit + 1, 0));
  RETURN_IF_ERROR(VocabParallelCrossEntropy::Forward(ctx_, a->lnf, head, a->targets, &a->ce, loss));
  RETURN_IF_ERROR(Flush());
  return engine_.PostForward(unit + 1);
}

void GptStage::DropActivations(int mb, int chunk) { saved_.erase({mb, chunk}); }

// ---- backward ----------------------------------------------------------------------------

absl::Status GptStage::Backward(int mb, int chunk, const Tensor& dout, Tensor* din) {
  auto it = saved_.find({mb, chunk});
  if (it == saved_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("backward of micro-batch ", mb, " (chunk ", chunk, ") before its forward"));
  }
  const Chunk& ch = chunks_[chunk];
  const Saved& a = *it->second;
  Tensor dx;
  if (ch.last) {
    RETURN_IF_ERROR(HeadBackward(ch, a, &dx));
  } else {
    if (!dout.defined() || dout.numel() != activation_count()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stage ", place_.pp_rank, " got a gradient of ", dout.defined() ? dout.numel() : 0,
          " elements, expected ", activation_count()));
    }
    dx = dout;  // the received buffer is ours now: the blocks update it in place
  }
  int unit = ch.end_unit() - (ch.last ? 2 : 0) - 1;
  for (int b = static_cast<int>(a.blocks.size()) - 1; b >= 0; --b) {
    RETURN_IF_ERROR(BlockBackward(unit--, ch.first_block + b, a.blocks[b], &dx));
  }
  if (ch.first) {
    RETURN_IF_ERROR(EmbeddingBackward(ch, a, dx));
  } else {
    *din = dx;
  }
  saved_.erase(it);  // the micro-batch's activations go
  return absl::OkStatus();
}

absl::Status GptStage::HeadBackward(const Chunk& ch, const Saved& a, Tensor* dx) {
  const int unit = ch.end_unit() - 1;  // the head; the final norm before it
  CommScope scope("gpt: head backward");
  RETURN_IF_ERROR(engine_.PreBackward(unit));
  ASSIGN_OR_RETURN(Tensor head, P(unit, 0));
  ASSIGN_OR_RETURN(Tensor dhead, G(unit, 0));
  ASSIGN_OR_RETURN(Tensor dlnf, ctx_.New({ctx_.tokens(), config_.hidden}, MemCategory::kWorkspace));
  RETURN_IF_ERROR(VocabParallelCrossEntropy::Backward(ctx_, a.lnf, head, a.targets, a.ce,
                                                      engine_.loss_scale(), dhead, dlnf));
  ASSIGN_OR_RETURN(*dx, ctx_.ReduceRows(dlnf, MemCategory::kWorkspace));  // this rank's rows
  RETURN_IF_ERROR(Flush());
  RETURN_IF_ERROR(engine_.PostBackward(unit));
  RETURN_IF_ERROR(engine_.PreBackward(unit - 1));
  ASSIGN_OR_RETURN(Tensor gf, P(unit - 1, 0));
  ASSIGN_OR_RETURN(Tensor dgf, G(unit - 1, 0));
  Tensor dbf;
  if (config_.norm == NormKind::kLayerNorm) {
    ASSIGN_OR_RETURN(dbf, G(unit - 1, 1));
  }
  RETURN_IF_ERROR(Norm::Backward(ctx_, *dx, a.x_final, gf, a.lnfs, dgf, dbf, *dx));
  RETURN_IF_ERROR(Flush());
  return engine_.PostBackward(unit - 1);
}

absl::Status GptStage::BlockBackward(int unit, int layer, const BlockSaved& kept, Tensor* dxp) {
  CommScope scope(absl::StrCat("gpt: '", engine_.unit_name(unit), "' backward"));
  RETURN_IF_ERROR(engine_.PreBackward(unit));
  ASSIGN_OR_RETURN(BlockTensors w, BlockParams(unit));
  ASSIGN_OR_RETURN(BlockTensors gw, BlockGrads(unit));
  // A checkpointed block kept only its input: recompute the rest now (the
  // parameters are gathered for backward anyway), as activations while it is
  // used.
  BlockSaved recomputed;
  const bool again = !kept.x2.defined();
  if (again) {
    Tensor unused;
    RETURN_IF_ERROR(ComputeBlock(w, kept.x_in, MemCategory::kActivation, MemCategory::kWorkspace,
                                 &recomputed, &unused));
  }
  const BlockSaved& a = again ? recomputed : kept;
  const int64_t R = ctx_.rows(), N = ctx_.tokens(), C = config_.hidden;
  const int64_t Cl = ctx_.local_width(), W = ctx_.local_kv_width(), F = ctx_.local_mlp();
  const MemCategory ws = MemCategory::kWorkspace;
  Stream& s = ctx_.stream();
  const int t = ctx_.threads();
  Tensor& dx = *dxp;  // this rank's rows
  // A row-parallel layer's bias: its gradient is the column sums of dx.
  auto bias_grad = [&](const Tensor& grad) -> absl::Status {
    if (!grad.defined()) return absl::OkStatus();
    ASSIGN_OR_RETURN(Tensor bias, ctx_.Zeros({C}, ws));
    RETURN_IF_ERROR(kernels::AddColumnSums(s, dx.as<float>(), R, C, bias.as<float>(), t));
    return ctx_.AddReplicatedGrad(grad, bias);
  };
  // MLP (see ComputeBlock).
  ASSIGN_OR_RETURN(Tensor dx_full, ctx_.GatherRows(dx, ws));
  ASSIGN_OR_RETURN(Tensor dg, ctx_.New({N, F}, ws));
  RETURN_IF_ERROR(RowParallelLinear::Backward(ctx_, a.g, w.out_w, dx_full, gw.out_w, dg));
  RETURN_IF_ERROR(bias_grad(gw.out_b));
  ASSIGN_OR_RETURN(Tensor dln, ctx_.New({N, C}, ws));
  if (config_.mlp == MlpKind::kSwiGlu) {
    ASSIGN_OR_RETURN(Tensor dup, ctx_.New({N, F}, ws));
    RETURN_IF_ERROR(kernels::SwiGluBackward(s, a.gate.as<float>(), a.fc.as<float>(), dg.as<float>(),
                                            N * F, dg.as<float>(), dup.as<float>(), t));
    RETURN_IF_ERROR(
        ColumnParallelLinear::Backward(ctx_, a.ln2, w.gate_w, dg, gw.gate_w, gw.gate_b, dln));
    RETURN_IF_ERROR(ColumnParallelLinear::Backward(ctx_, a.ln2, w.fc_w, dup, gw.fc_w, gw.fc_b, dln,
                                                   /*accumulate=*/true));
  } else {
    RETURN_IF_ERROR(
        kernels::GeluBackward(s, a.fc.as<float>(), dg.as<float>(), N * F, dg.as<float>(), t));
    RETURN_IF_ERROR(ColumnParallelLinear::Backward(ctx_, a.ln2, w.fc_w, dg, gw.fc_w, gw.fc_b, dln));
  }
  ASSIGN_OR_RETURN(Tensor dln_local, ctx_.ReduceRows(dln, ws));
  RETURN_IF_ERROR(
      Norm::Backward(ctx_, dln_local, a.x2, w.ln2_g, a.ln2s, gw.ln2_g, gw.ln2_b, dln_local));
  RETURN_IF_ERROR(kernels::Add(s, dx.as<float>(), dln_local.as<float>(), R * C, dx.as<float>(), t));
  // Attention; dx is now d x2.
  ASSIGN_OR_RETURN(dx_full, ctx_.GatherRows(dx, ws));
  ASSIGN_OR_RETURN(Tensor datt, ctx_.New({N, Cl}, ws));
  RETURN_IF_ERROR(RowParallelLinear::Backward(ctx_, a.att, w.proj_w, dx_full, gw.proj_w, datt));
  RETURN_IF_ERROR(bias_grad(gw.proj_b));
  if (config_.gqa()) {
    ASSIGN_OR_RETURN(Tensor dq, ctx_.New({N, Cl}, ws));
    ASSIGN_OR_RETURN(Tensor dkv, ctx_.New({N, 2 * W}, ws));
    RETURN_IF_ERROR(
        CausalSelfAttention::Backward(ctx_, a.attn, datt, QkvColumns::Of(ctx_, Tensor(), dq, dkv)));
    RETURN_IF_ERROR(ColumnParallelLinear::Backward(ctx_, a.ln1, w.q_w, dq, gw.q_w, gw.q_b, dln));
    // A shared key/value head: this rank's contribution to its parameters'
    // gradients is summed over the sharers; to dln it is this rank's own
    // (ReduceRows sums the ranks).
    ASSIGN_OR_RETURN(Tensor dkv_w, ctx_.Zeros(gw.kv_w.shape(), ws));
    Tensor dkv_b;
    if (gw.kv_b.defined()) {
      ASSIGN_OR_RETURN(dkv_b, ctx_.Zeros(gw.kv_b.shape(), ws));
    }
    RETURN_IF_ERROR(ColumnParallelLinear::Backward(ctx_, a.ln1, w.kv_w, dkv, dkv_w, dkv_b, dln,
                                                   /*accumulate=*/true));
    for (const auto& [grad, part] :
         {std::make_pair(gw.kv_w, dkv_w), std::make_pair(gw.kv_b, dkv_b)}) {
      if (!grad.defined()) continue;
      RETURN_IF_ERROR(ctx_.SumOverKvSharers(part));
      RETURN_IF_ERROR(
          kernels::Add(s, grad.as<float>(), part.as<float>(), grad.numel(), grad.as<float>(), t));
    }
  } else {
    ASSIGN_OR_RETURN(Tensor dqkv, ctx_.New({N, 3 * Cl}, ws));
    RETURN_IF_ERROR(CausalSelfAttention::Backward(ctx_, a.attn, datt,
                                                  QkvColumns::Of(ctx_, dqkv, Tensor(), Tensor())));
    RETURN_IF_ERROR(
        ColumnParallelLinear::Backward(ctx_, a.ln1, w.qkv_w, dqkv, gw.qkv_w, gw.qkv_b, dln));
  }
  ASSIGN_OR_RETURN(dln_local, ctx_.ReduceRows(dln, ws));
  RETURN_IF_ERROR(
      Norm::Backward(ctx_, dln_local, a.x_in, w.ln1_g, a.ln1s, gw.ln1_g, gw.ln1_b, dln_local));
  RETURN_IF_ERROR(kernels::Add(s, dx.as<float>(), dln_local.as<float>(), R * C, dx.as<float>(), t));
  recomputed = BlockSaved();  // the transient goes before the next block's
  RETURN_IF_ERROR(Flush());
  return engine_.PostBackward(unit);
}

absl::Status GptStage::EmbeddingBackward(const Chunk& ch, const Saved& a, const Tensor& dx) {
  CommScope scope("gpt: embedding backward");
  const bool positions = ch.embedding_units == 2;
  if (positions) RETURN_IF_ERROR(engine_.PreBackward(ch.first_unit + 1));
  RETURN_IF_ERROR(engine_.PreBackward(ch.first_unit));
  Tensor dwpe;
  if (positions) {
    ASSIGN_OR_RETURN(dwpe, G(ch.first_unit + 1, 0));
  }
  ASSIGN_OR_RETURN(Tensor dwte, G(ch.first_unit, 0));
  RETURN_IF_ERROR(VocabParallelEmbedding::Backward(ctx_, a.ids, dx, dwte, dwpe));
  RETURN_IF_ERROR(Flush());
  if (positions) RETURN_IF_ERROR(engine_.PostBackward(ch.first_unit + 1));
  return engine_.PostBackward(ch.first_unit);
}

absl::StatusOr<double> GptStage::ForwardBackward(int mb, const std::vector<int32_t>& tokens) {
  if (chunks_.size() != 1 || !chunks_[0].first || !chunks_[0].last) {
    return absl::FailedPreconditionError("ForwardBackward needs a single-stage model (pp = 1)");
  }
  // An 8-byte slot for the double the loss kernel writes.
  ASSIGN_OR_RETURN(Tensor loss, ctx_.New({1}, MemCategory::kWorkspace, DType::kI64));
  Tensor none, out, din;
  RETURN_IF_ERROR(Forward(mb, 0, tokens, none, &out, loss.as<double>()));
  RETURN_IF_ERROR(Backward(mb, 0, none, &din));
  double host = 0;
  RETURN_IF_ERROR(kernels::Copy(ctx_.stream(), &host, loss.data(), sizeof(double)));
  RETURN_IF_ERROR(ctx_.stream().Synchronize());
  return host;
}

absl::Status SumTiedEmbeddingGrads(ZeroEngine& e, Communicator& group) {
  // "wte" is unit 0 on the first stage, "head" the last unit on the last.
  const int unit = e.unit_name(0) == "wte" ? 0 : e.num_units() - 1;
  ASSIGN_OR_RETURN(MutView g, e.ReducedGrad(unit));
  Work w = group.AllReduceAsync(g, g, ReduceOp::kSum, &e.compute_stream());
  return w.Test() ? w.Wait() : absl::OkStatus();
}

}  // namespace trireme
