#include "models/gpt.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

// splitmix64 -> [0, 1).
double Uniform(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull + b * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 32;
  return (x >> 11) * (1.0 / (1ull << 53));
}

uint64_t NameHash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : s) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.npos, suffix) == 0;
}

// Adds bias [cols] to every row of x [rows, cols].
void AddBias(float* x, const float* b, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) x[r * cols + j] += b[j];
  }
}

// db [cols] += column sums of dy [rows, cols].
void AddColumnSums(const float* dy, int64_t rows, int64_t cols, float* db) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) db[j] += dy[r * cols + j];
  }
}

float* Floats(const MutView& v) { return static_cast<float*>(v.data); }

}  // namespace

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
  if ((4 * hidden) % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: tp (", tp, ") must divide the MLP width (", 4 * hidden, ")"));
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

std::pair<int, int> BlockRange(const GptConfig& c, int pp, int r) {
  // (pp = stages, r = stage.)
  const int base = c.layers / pp, extra = c.layers % pp;
  const int first = r * base + std::min(r, extra);
  return {first, first + base + (r < extra ? 1 : 0)};
}

int64_t VocabPerRank(const GptConfig& c, int tp) { return (c.vocab + tp - 1) / tp; }

std::vector<UnitSpec> GptUnits(const GptConfig& c, const GptPlace& place) {
  const int64_t C = c.hidden, Cl = C / place.tp, F = 4 * C / place.tp;
  const int64_t Vl = VocabPerRank(c, place.tp);
  const int pp = place.pp, r = place.pp_rank;
  // Split parameters are not replicated over TP (each rank's part counts).
  auto split = [](ParamSpec p) {
    p.replicated_over_tp = false;
    return p;
  };
  std::vector<UnitSpec> units;
  const int v = place.virtual_stages, stages = pp * v;
  for (int chunk = 0; chunk < v; ++chunk) {
    const int s = chunk * pp + r;
    if (s == 0) {
      units.push_back({"wte", {split({"wte", {Vl, C}})}});
      units.push_back({"wpe", {{"wpe", {c.seq, C}}}});
    }
    const auto [first, end] = BlockRange(c, stages, s);
    for (int l = first; l < end; ++l) {
      const std::string b = absl::StrCat("h", l, ".");
      units.push_back({absl::StrCat("block", l),
                       {{b + "ln1_g", {C}, false},
                        {b + "ln1_b", {C}, false},
                        split({b + "qkv_w", {C, 3 * Cl}}),
                        split({b + "qkv_b", {3 * Cl}, false}),
                        split({b + "proj_w", {Cl, C}}),
                        {b + "proj_b", {C}, false},
                        {b + "ln2_g", {C}, false},
                        {b + "ln2_b", {C}, false},
                        split({b + "fc_w", {C, F}}),
                        split({b + "fc_b", {F}, false}),
                        split({b + "out_w", {F, C}}),
                        {b + "out_b", {C}, false}}});
    }
    if (s == stages - 1) {
      units.push_back({"final", {{"lnf_g", {C}, false}, {"lnf_b", {C}, false}}});
      ParamSpec head = split({"head", {Vl, C}});
      if (pp == 1) {
        head.tied_to = "wte";  // the same rank holds the embedding: one storage
      } else {
        head.norm_duplicate = true;  // stage 0 counts wte
      }
      units.push_back({"head", {head}});
    }
  }
  return units;
}

namespace {

// The full (tp = 1) value of parameter `name` at flat index i.
float FullValue(const GptConfig& c, const std::string& name, int64_t i) {
  if (EndsWith(name, "_g")) return 1.0f;
  if (EndsWith(name, "_b")) return 0.0f;
  const uint64_t h = NameHash(name) ^ c.seed;  // a uniform with the std 0.02 of GPT-2
  return static_cast<float>((Uniform(h, i) * 2 - 1) * 0.02 * std::sqrt(3.0));
}

}  // namespace

absl::Status GptInit(const GptConfig& c, const GptPlace& place, const ParamInfo& p, float* v) {
  const std::string name = p.name == "head" ? "wte" : p.name;
  const int t = place.tp_rank;
  const int64_t C = c.hidden, Cl = C / place.tp, F = 4 * C / place.tp;
  const int64_t Vl = VocabPerRank(c, place.tp);
  auto full = [&](int64_t i) { return FullValue(c, name, i); };
  if (name == "wte") {  // rows [t Vl, (t+1) Vl) of [V, C]; padding rows are zero
    for (int64_t row = 0; row < Vl; ++row) {
      const int64_t g = t * Vl + row;
      for (int64_t j = 0; j < C; ++j) v[row * C + j] = g < c.vocab ? full(g * C + j) : 0.0f;
    }
  } else if (EndsWith(name, "qkv_w") || EndsWith(name, "qkv_b")) {
    // Columns of this rank's heads in each of q, k, v: [C, 3C] -> [C, 3 Cl].
    const int64_t rows = EndsWith(name, "_w") ? C : 1;
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t part = 0; part < 3; ++part) {
        for (int64_t j = 0; j < Cl; ++j) {
          v[row * 3 * Cl + part * Cl + j] = full(row * 3 * C + part * C + t * Cl + j);
        }
      }
    }
  } else if (EndsWith(name, "proj_w")) {  // rows [t Cl, (t+1) Cl) of [C, C]
    for (int64_t i = 0; i < Cl * C; ++i) v[i] = full(t * Cl * C + i);
  } else if (EndsWith(name, "fc_w") || EndsWith(name, "fc_b")) {  // columns of [C, 4C]
    const int64_t rows = EndsWith(name, "_w") ? C : 1;
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t j = 0; j < F; ++j) v[row * F + j] = full(row * 4 * C + t * F + j);
    }
  } else if (EndsWith(name, "out_w")) {  // rows [t F, (t+1) F) of [4C, C]
    for (int64_t i = 0; i < F * C; ++i) v[i] = full(t * F * C + i);
  } else {  // replicated
    for (int64_t i = 0; i < p.numel; ++i) v[i] = full(i);
  }
  return absl::OkStatus();
}

absl::StatusOr<checkpoint::TensorLayout> GptTensorLayout(const GptConfig& c,
                                                         const GptPlace& place,
                                                         const ParamInfo& p) {
  const int t = place.tp_rank;
  const int64_t C = c.hidden, Cl = C / place.tp, F = 4 * C / place.tp;
  checkpoint::TensorLayout l;
  l.name = p.name == "head" ? "wte" : p.name;
  const std::string& n = l.name;
  if (n == "wte") {
    const int64_t Vl = VocabPerRank(c, place.tp), lo = std::min<int64_t>(t * Vl, c.vocab);
    l.shape = {c.vocab, C};
    l.block_offset = {lo, 0};
    l.block_shape = {std::min<int64_t>(Vl, c.vocab - lo), C};
    l.save = p.name == "wte";  // the head copy of pipelined runs is loaded, not saved
  } else if (EndsWith(n, "qkv_w")) {
    l.shape = {C, 3 * C};
    l.view = {C, 3, C};
    l.block_offset = {0, 0, t * Cl};
    l.block_shape = {C, 3, Cl};
  } else if (EndsWith(n, "qkv_b")) {
    l.shape = {3 * C};
    l.view = {3, C};
    l.block_offset = {0, t * Cl};
    l.block_shape = {3, Cl};
  } else if (EndsWith(n, "proj_w")) {
    l.shape = {C, C};
    l.block_offset = {t * Cl, 0};
    l.block_shape = {Cl, C};
  } else if (EndsWith(n, "fc_w")) {
    l.shape = {C, 4 * C};
    l.block_offset = {0, t * F};
    l.block_shape = {C, F};
  } else if (EndsWith(n, "fc_b")) {
    l.shape = {4 * C};
    l.block_offset = {t * F};
    l.block_shape = {F};
  } else if (EndsWith(n, "out_w")) {
    l.shape = {4 * C, C};
    l.block_offset = {t * F, 0};
    l.block_shape = {F, C};
  } else {  // replicated over TP: TP rank 0 saves it
    l.shape = p.shape;
    l.save = t == 0;
  }
  return l;
}

namespace {

// Floats one block keeps for backward (everything, as without recompute).
int64_t BlockFloats(const GptConfig& c, const GptPlace& place) {
  const int64_t B = c.micro_batch, T = c.seq, N = B * T, C = c.hidden;
  const int64_t H = c.heads / place.tp, Cl = C / place.tp, F = 4 * C / place.tp;
  const int64_t R = c.sequence_parallel && place.tp > 1 ? N / place.tp : N;
  // x_in, x2 [R, C]; ln1, ln2 [N, C]; means and rstds [R] x 4; q, k, v, att
  // [N, Cl]; probs [B, H, T, T]; fc, gelu [N, F].
  return 2 * R * C + 2 * N * C + 4 * R + 4 * N * Cl + B * H * T * T + 2 * N * F;
}

}  // namespace

int64_t GptKeptActivationBytes(const GptConfig& c, const GptPlace& place, int chunk) {
  const int64_t B = c.micro_batch, T = c.seq, N = B * T, C = c.hidden;
  const int64_t R = c.sequence_parallel && place.tp > 1 ? N / place.tp : N;
  const int stages = place.pp * place.virtual_stages, s = chunk * place.pp + place.pp_rank;
  int64_t floats = 2 * N;  // token ids and targets (int32)
  const auto [first, end] = BlockRange(c, stages, s);
  for (int l = first; l < end; ++l) {
    const bool again = l < static_cast<int>(c.recompute.size()) && c.recompute[l];
    floats += again ? R * C : BlockFloats(c, place);
  }
  if (s == stages - 1) {
    // x_final [R, C], lnf [N, C], meanf and rstdf [R], logits [N, V/tp], lse [N].
    floats += R * C + N * C + 2 * R + N * VocabPerRank(c, place.tp) + N;
  }
  return 4 * floats;
}

int64_t GptRecomputeTransientBytes(const GptConfig& c, const GptPlace& place, int chunk) {
  const int stages = place.pp * place.virtual_stages, s = chunk * place.pp + place.pp_rank;
  const auto [first, end] = BlockRange(c, stages, s);
  for (int l = first; l < end; ++l) {
    if (l < static_cast<int>(c.recompute.size()) && c.recompute[l]) {
      return 4 * BlockFloats(c, place);
    }
  }
  return 0;
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

std::vector<int32_t> GptBatch(const GptConfig& c, int64_t step, int64_t global_mb) {
  // Each sequence counts up by a stride from a random start: predictable
  // after two tokens, so the loss can fall well below log(vocab).
  std::vector<int32_t> tokens(c.micro_batch * (c.seq + 1));
  for (int64_t b = 0; b < c.micro_batch; ++b) {
    const uint64_t id = (static_cast<uint64_t>(step) * 1000003 + global_mb) * 131 + b;
    const int64_t start = static_cast<int64_t>(Uniform(id, 1) * c.vocab);
    const int64_t stride = 1 + static_cast<int64_t>(Uniform(id, 2) * 3);
    for (int64_t t = 0; t <= c.seq; ++t) {
      tokens[b * (c.seq + 1) + t] = static_cast<int32_t>((start + stride * t) % c.vocab);
    }
  }
  return tokens;
}

struct GptStage::BlockActs {
  std::vector<float> x_in, ln1, mean1, rstd1, q, k, v, probs, att, x2, ln2, mean2, rstd2, fc, g;
};

struct GptStage::Acts {
  std::vector<int32_t> inputs, targets;
  std::vector<BlockActs> blocks;
  std::vector<float> x_final, lnf, meanf, rstdf, logits, lse;
  int64_t bytes = 0;  // recorded in the tracker
};

namespace {

int64_t Bytes(const GptStage::BlockActs& a) {
  int64_t n = 0;
  for (const auto* v : {&a.x_in, &a.ln1, &a.mean1, &a.rstd1, &a.q, &a.k, &a.v, &a.probs, &a.att,
                        &a.x2, &a.ln2, &a.mean2, &a.rstd2, &a.fc, &a.g}) {
    n += static_cast<int64_t>(v->size()) * 4;
  }
  return n;
}

int64_t Bytes(const GptStage::Acts& a) {
  int64_t n = static_cast<int64_t>(a.inputs.size() + a.targets.size()) * 4;
  for (const auto& b : a.blocks) n += Bytes(b);
  for (const auto* v : {&a.x_final, &a.lnf, &a.meanf, &a.rstdf, &a.logits, &a.lse}) {
    n += static_cast<int64_t>(v->size()) * 4;
  }
  return n;
}

}  // namespace

GptStage::GptStage(GptConfig c, GptPlace place, ZeroEngine& engine, Communicator& tp_group,
                   MemoryTracker* tracker)
    : c_(c),
      place_(place),
      pp_(place.pp),
      pp_rank_(place.pp_rank),
      e_(engine),
      tp_(tp_group),
      tracker_(tracker) {
  const int v = place.virtual_stages, stages = pp_ * v;
  int unit = 0;
  for (int chunk = 0; chunk < v; ++chunk) {
    Chunk ch;
    const int s = chunk * pp_ + pp_rank_;
    ch.first = s == 0;
    ch.last = s == stages - 1;
    std::tie(ch.first_block, ch.end_block) = BlockRange(c_, stages, s);
    ch.first_unit = unit;
    unit += (ch.first ? 2 : 0) + (ch.end_block - ch.first_block) + (ch.last ? 2 : 0);
    chunks_.push_back(ch);
  }
}

GptStage::~GptStage() = default;

absl::StatusOr<float*> GptStage::P(int unit, int index) {
  ASSIGN_OR_RETURN(MutView v, e_.Param(unit, index));
  if (v.dtype == DType::kF32) return Floats(v);
  // 16-bit compute copy: the model computes in f32 on a widened copy.
  std::vector<float>& w = scratch_.emplace_back(v.count);
  RETURN_IF_ERROR(kernels::CastCpu(v.data, v.dtype, w.data(), DType::kF32, v.count));
  return w.data();
}

absl::StatusOr<float*> GptStage::G(int unit, int index) {
  ASSIGN_OR_RETURN(MutView v, e_.Grad(unit, index));
  if (v.dtype == DType::kF32) return Floats(v);
  // 16-bit gradient buffer: accumulate this unit's contribution in f32 and
  // add it (rounded) in Flush(), before the engine reduces the buffer.
  std::vector<float>& w = scratch_.emplace_back(v.count, 0.0f);
  pending_grads_.push_back({v, w.data()});
  return w.data();
}

void GptStage::Flush() {
  for (auto& [view, f32] : pending_grads_) {
    for (int64_t i = 0; i < view.count; ++i) {
      StoreFromF32(view.data, view.dtype, i, LoadAsF32(view.data, view.dtype, i) + f32[i]);
    }
  }
  pending_grads_.clear();
  scratch_.clear();
}

absl::Status GptStage::TpSum(std::vector<float>& x) {
  if (tp_.size() == 1) return absl::OkStatus();
  return tp_.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
}

int64_t GptStage::activation_count() const { return Rows() * c_.hidden; }

int64_t GptStage::Rows() const {
  const int64_t n = c_.micro_batch * c_.seq;
  return SeqParallel() ? n / place_.tp : n;
}

absl::StatusOr<std::vector<float>> GptStage::SeqGather(const std::vector<float>& local) {
  if (!SeqParallel()) return local;
  std::vector<float> full(local.size() * place_.tp);
  RETURN_IF_ERROR(tp_.AllGather(ViewOf(local), ViewOf(full)));
  return full;
}

absl::Status GptStage::SeqReduce(std::vector<float>& partial_full, std::vector<float>& local) {
  if (!SeqParallel()) {
    RETURN_IF_ERROR(TpSum(partial_full));
    local = partial_full;
    return absl::OkStatus();
  }
  local.resize(partial_full.size() / place_.tp);
  return tp_.ReduceScatter(ViewOf(partial_full), ViewOf(local), ReduceOp::kSum);
}

absl::Status GptStage::AddReplicated(float* grad, std::vector<float>& contribution) {
  if (SeqParallel()) RETURN_IF_ERROR(TpSum(contribution));
  for (size_t i = 0; i < contribution.size(); ++i) grad[i] += contribution[i];
  return absl::OkStatus();
}

bool GptStage::Recompute(int layer) const {
  return layer < static_cast<int>(c_.recompute.size()) && c_.recompute[layer];
}

absl::Status GptStage::BlockForward(int unit, int layer, std::vector<float>& x, BlockActs& a) {
  CommScope scope(absl::StrCat("gpt: layer ", layer, " forward"));
  RETURN_IF_ERROR(e_.PreForward(unit));
  std::vector<float*> p(12);
  for (int i = 0; i < 12; ++i) {
    ASSIGN_OR_RETURN(p[i], P(unit, i));
  }
  RETURN_IF_ERROR(ComputeBlock(p, x, a));
  if (Recompute(layer)) {
    BlockActs kept;  // only the input; backward recomputes the rest
    kept.x_in = std::move(a.x_in);
    a = std::move(kept);
  }
  Flush();
  return e_.PostForward(unit);
}

// The block's arithmetic, no hooks: x (its input) becomes its output; `a`
// receives what backward needs.
absl::Status GptStage::ComputeBlock(const std::vector<float*>& p, std::vector<float>& x,
                                    BlockActs& a) {
  // Local sizes: this TP rank's heads (H), their width (Cl), MLP columns (F).
  const int64_t B = c_.micro_batch, T = c_.seq, N = B * T, C = c_.hidden;
  const int64_t H = c_.heads / place_.tp, D = C / c_.heads, Cl = H * D, F = 4 * C / place_.tp;
  const int64_t R = Rows();  // rows held here (all N without sequence parallelism)
  a.x_in = x;
  std::vector<float> ln_local(R * C);
  a.mean1.resize(R);
  a.rstd1.resize(R);
  kernels::LayerNormForward(x.data(), p[0], p[1], R, C, c_.ln_eps, ln_local.data(), a.mean1.data(),
                            a.rstd1.data());
  ASSIGN_OR_RETURN(a.ln1, SeqGather(ln_local));
  // Column-parallel QKV: this rank's heads only.
  std::vector<float> qkv(N * 3 * Cl);
  kernels::Gemm(false, false, N, 3 * Cl, C, 1.0f, a.ln1.data(), C, p[2], 3 * Cl, 0.0f, qkv.data(),
                3 * Cl);
  AddBias(qkv.data(), p[3], N, 3 * Cl);
  a.q.resize(N * Cl);
  a.k.resize(N * Cl);
  a.v.resize(N * Cl);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const int64_t src = (b * T + t) * 3 * Cl + h * D + d;
          const int64_t dst = ((b * H + h) * T + t) * D + d;
          a.q[dst] = qkv[src];
          a.k[dst] = qkv[src + Cl];
          a.v[dst] = qkv[src + 2 * Cl];
        }
      }
    }
  }
  const kernels::AttentionShape shape{B, H, T, D};
  a.probs.resize(B * H * T * T);
  std::vector<float> att_bhtd(N * Cl);
  kernels::CausalAttentionForward(shape, a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                                  att_bhtd.data());
  a.att.resize(N * Cl);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(&a.att[(b * T + t) * Cl + h * D], &att_bhtd[((b * H + h) * T + t) * D],
                    D * sizeof(float));
      }
    }
  }
  // Row-parallel projection: partial sums, all-reduced over TP.
  std::vector<float> y(N * C);
  kernels::Gemm(false, false, N, C, Cl, 1.0f, a.att.data(), Cl, p[4], C, 0.0f, y.data(), C);
  std::vector<float> y_local;
  RETURN_IF_ERROR(SeqReduce(y, y_local));
  a.x2 = x;
  for (int64_t i = 0; i < R * C; ++i) a.x2[i] += y_local[i];
  AddBias(a.x2.data(), p[5], R, C);
  a.mean2.resize(R);
  a.rstd2.resize(R);
  kernels::LayerNormForward(a.x2.data(), p[6], p[7], R, C, c_.ln_eps, ln_local.data(),
                            a.mean2.data(), a.rstd2.data());
  ASSIGN_OR_RETURN(a.ln2, SeqGather(ln_local));
  a.fc.resize(N * F);
  kernels::Gemm(false, false, N, F, C, 1.0f, a.ln2.data(), C, p[8], F, 0.0f, a.fc.data(), F);
  AddBias(a.fc.data(), p[9], N, F);
  a.g.resize(N * F);
  kernels::GeluForward(a.fc.data(), N * F, a.g.data());
  kernels::Gemm(false, false, N, C, F, 1.0f, a.g.data(), F, p[10], C, 0.0f, y.data(), C);
  RETURN_IF_ERROR(SeqReduce(y, y_local));
  x = a.x2;
  for (int64_t i = 0; i < R * C; ++i) x[i] += y_local[i];
  AddBias(x.data(), p[11], R, C);
  return absl::OkStatus();
}

absl::Status GptStage::BlockBackward(int unit, std::vector<float>& dx, const BlockActs& kept) {
  CommScope scope(absl::StrCat("gpt: '", e_.unit_name(unit), "' backward"));
  const int64_t B = c_.micro_batch, T = c_.seq, N = B * T, C = c_.hidden;
  const int64_t H = c_.heads / place_.tp, D = C / c_.heads, Cl = H * D, F = 4 * C / place_.tp;
  RETURN_IF_ERROR(e_.PreBackward(unit));
  std::vector<float*> p(12), g(12);
  for (int i = 0; i < 12; ++i) {
    ASSIGN_OR_RETURN(p[i], P(unit, i));
    ASSIGN_OR_RETURN(g[i], G(unit, i));
  }
  // A checkpointed block kept only its input: recompute the rest now (the
  // parameters are gathered for backward anyway).
  BlockActs recomputed;
  const bool again = kept.x2.empty();
  if (again) {
    std::vector<float> x = kept.x_in;
    RETURN_IF_ERROR(ComputeBlock(p, x, recomputed));
    if (tracker_) tracker_->RecordAlloc(MemCategory::kActivation, Bytes(recomputed));
  }
  const BlockActs& a = again ? recomputed : kept;
  const int64_t R = Rows();
  std::vector<float> gamma(C), beta(C), bias(C);
  // MLP: x3 = x2 + gelu(ln2(x2) Wfc + bfc) Wout + bout. dx holds this rank's rows.
  ASSIGN_OR_RETURN(std::vector<float> dx_full, SeqGather(dx));
  kernels::Gemm(true, false, F, C, N, 1.0f, a.g.data(), F, dx_full.data(), C, 1.0f, g[10], C);
  std::fill(bias.begin(), bias.end(), 0.0f);
  AddColumnSums(dx.data(), R, C, bias.data());
  RETURN_IF_ERROR(AddReplicated(g[11], bias));
  std::vector<float> dg(N * F);
  kernels::Gemm(false, true, N, F, C, 1.0f, dx_full.data(), C, p[10], C, 0.0f, dg.data(), F);
  kernels::GeluBackward(a.fc.data(), dg.data(), N * F, dg.data());
  kernels::Gemm(true, false, C, F, N, 1.0f, a.ln2.data(), C, dg.data(), F, 1.0f, g[8], F);
  AddColumnSums(dg.data(), N, F, g[9]);
  std::vector<float> dln(N * C), dln_local;
  kernels::Gemm(false, true, N, C, F, 1.0f, dg.data(), F, p[8], F, 0.0f, dln.data(), C);
  RETURN_IF_ERROR(SeqReduce(dln, dln_local));  // the column-parallel layer's input gradient
  std::fill(gamma.begin(), gamma.end(), 0.0f);
  std::fill(beta.begin(), beta.end(), 0.0f);
  kernels::LayerNormBackward(dln_local.data(), a.x2.data(), p[6], a.mean2.data(), a.rstd2.data(), R,
                             C, dln_local.data(), gamma.data(), beta.data());
  RETURN_IF_ERROR(AddReplicated(g[6], gamma));
  RETURN_IF_ERROR(AddReplicated(g[7], beta));
  for (int64_t i = 0; i < R * C; ++i) dx[i] += dln_local[i];  // dx is now d x2
  // Attention: x2 = x + attn(ln1(x)) Wproj + bproj.
  ASSIGN_OR_RETURN(dx_full, SeqGather(dx));
  kernels::Gemm(true, false, Cl, C, N, 1.0f, a.att.data(), Cl, dx_full.data(), C, 1.0f, g[4], C);
  std::fill(bias.begin(), bias.end(), 0.0f);
  AddColumnSums(dx.data(), R, C, bias.data());
  RETURN_IF_ERROR(AddReplicated(g[5], bias));
  std::vector<float> datt(N * Cl), datt_bhtd(N * Cl);
  kernels::Gemm(false, true, N, Cl, C, 1.0f, dx_full.data(), C, p[4], C, 0.0f, datt.data(), Cl);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(&datt_bhtd[((b * H + h) * T + t) * D], &datt[(b * T + t) * Cl + h * D],
                    D * sizeof(float));
      }
    }
  }
  const kernels::AttentionShape shape{B, H, T, D};
  std::vector<float> work(kernels::CausalAttentionWorkspaceSize(shape)), dq(N * Cl), dk(N * Cl),
      dv(N * Cl);
  kernels::CausalAttentionBackward(shape, a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                                   datt_bhtd.data(), work.data(), dq.data(), dk.data(), dv.data());
  std::vector<float> dqkv(N * 3 * Cl);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const int64_t dst = (b * T + t) * 3 * Cl + h * D + d;
          const int64_t src = ((b * H + h) * T + t) * D + d;
          dqkv[dst] = dq[src];
          dqkv[dst + Cl] = dk[src];
          dqkv[dst + 2 * Cl] = dv[src];
        }
      }
    }
  }
  kernels::Gemm(true, false, C, 3 * Cl, N, 1.0f, a.ln1.data(), C, dqkv.data(), 3 * Cl, 1.0f, g[2],
                3 * Cl);
  AddColumnSums(dqkv.data(), N, 3 * Cl, g[3]);
  kernels::Gemm(false, true, N, C, 3 * Cl, 1.0f, dqkv.data(), 3 * Cl, p[2], 3 * Cl, 0.0f,
                dln.data(), C);
  RETURN_IF_ERROR(SeqReduce(dln, dln_local));
  std::fill(gamma.begin(), gamma.end(), 0.0f);
  std::fill(beta.begin(), beta.end(), 0.0f);
  kernels::LayerNormBackward(dln_local.data(), a.x_in.data(), p[0], a.mean1.data(), a.rstd1.data(),
                             R, C, dln_local.data(), gamma.data(), beta.data());
  RETURN_IF_ERROR(AddReplicated(g[0], gamma));
  RETURN_IF_ERROR(AddReplicated(g[1], beta));
  for (int64_t i = 0; i < R * C; ++i) dx[i] += dln_local[i];  // d x_in
  if (again && tracker_) tracker_->RecordFree(MemCategory::kActivation, Bytes(recomputed));
  Flush();
  return e_.PostBackward(unit);
}

absl::Status GptStage::Forward(int mb, int chunk, const std::vector<int32_t>& tokens,
                               const std::vector<float>& in, std::vector<float>& out,
                               double* loss) {
  if (chunk < 0 || chunk >= static_cast<int>(chunks_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("no model chunk ", chunk));
  }
  const Chunk& ch = chunks_[chunk];
  const int64_t B = c_.micro_batch, T = c_.seq, C = c_.hidden, N = B * T;
  auto acts = std::make_unique<Acts>();
  Acts& a = *acts;
  a.inputs.resize(N);
  a.targets.resize(N);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      a.inputs[b * T + t] = tokens[b * (T + 1) + t];
      a.targets[b * T + t] = tokens[b * (T + 1) + t + 1];
    }
  }
  std::vector<float> x;
  int unit = ch.first_unit;
  if (ch.first) {
    x.resize(N * C);
    RETURN_IF_ERROR(e_.PreForward(unit));
    ASSIGN_OR_RETURN(float* wte, P(unit, 0));
    // Vocabulary-parallel lookup: rows this rank holds, zero elsewhere, summed.
    const int64_t Vl = VocabPerRank(c_, place_.tp), lo = place_.tp_rank * Vl;
    for (int64_t r = 0; r < N; ++r) {
      const int64_t id = a.inputs[r];
      if (id < 0 || id >= c_.vocab) {
        return absl::InvalidArgumentError(absl::StrCat("token ", id, " at position ", r,
                                                       " is outside the vocabulary of ", c_.vocab));
      }
      if (id >= lo && id < lo + Vl) std::memcpy(&x[r * C], wte + (id - lo) * C, C * 4);
    }
    std::vector<float> local;
    RETURN_IF_ERROR(SeqReduce(x, local));  // this rank's rows (all without SP)
    x = std::move(local);
    Flush();
    RETURN_IF_ERROR(e_.PostForward(unit));
    RETURN_IF_ERROR(e_.PreForward(unit + 1));
    ASSIGN_OR_RETURN(float* wpe, P(unit + 1, 0));
    const int64_t R = Rows(), row0 = SeqParallel() ? place_.tp_rank * R : 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t pos = (row0 + r) % T;
      for (int64_t j = 0; j < C; ++j) x[r * C + j] += wpe[pos * C + j];
    }
    Flush();
    RETURN_IF_ERROR(e_.PostForward(unit + 1));
    unit += 2;
  } else {
    if (static_cast<int64_t>(in.size()) != Rows() * C) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", pp_rank_, " got an activation of ",
                                                     in.size(), " elements, expected ",
                                                     Rows() * C));
    }
    x = in;
  }
  a.blocks.resize(ch.end_block - ch.first_block);
  for (int b = 0; b < static_cast<int>(a.blocks.size()); ++b) {
    RETURN_IF_ERROR(BlockForward(unit++, ch.first_block + b, x, a.blocks[b]));
  }
  if (ch.last) {
    a.x_final = x;
    const int64_t R = Rows();
    std::vector<float> lnf_local(R * C);
    a.meanf.resize(R);
    a.rstdf.resize(R);
    RETURN_IF_ERROR(e_.PreForward(unit));
    ASSIGN_OR_RETURN(float* gf, P(unit, 0));
    ASSIGN_OR_RETURN(float* bf, P(unit, 1));
    kernels::LayerNormForward(x.data(), gf, bf, R, C, c_.ln_eps, lnf_local.data(), a.meanf.data(),
                              a.rstdf.data());
    ASSIGN_OR_RETURN(a.lnf, SeqGather(lnf_local));
    Flush();
    RETURN_IF_ERROR(e_.PostForward(unit));
    RETURN_IF_ERROR(e_.PreForward(unit + 1));
    ASSIGN_OR_RETURN(float* head, P(unit + 1, 0));
    // Vocabulary-parallel logits and cross-entropy: this rank's columns only;
    // the row max, the sum of exponentials and the target logit are reduced
    // over TP. Padding columns (beyond the vocabulary) are excluded.
    const int64_t Vl = VocabPerRank(c_, place_.tp), lo = place_.tp_rank * Vl;
    const int64_t valid = std::max<int64_t>(0, std::min(Vl, c_.vocab - lo));
    a.logits.resize(N * Vl);
    a.lse.resize(N);
    kernels::Gemm(false, true, N, Vl, C, 1.0f, a.lnf.data(), C, head, C, 0.0f, a.logits.data(), Vl);
    std::vector<float> row_max(N, -INFINITY), sum_exp(N, 0.0f), target(N, 0.0f);
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t j = 0; j < valid; ++j) row_max[r] = std::max(row_max[r], a.logits[r * Vl + j]);
    }
    if (tp_.size() > 1) {
      RETURN_IF_ERROR(tp_.AllReduce(ViewOf(row_max), ViewOf(row_max), ReduceOp::kMax));
    }
    for (int64_t r = 0; r < N; ++r) {
      double se = 0;
      for (int64_t j = 0; j < valid; ++j) se += std::exp(double(a.logits[r * Vl + j]) - row_max[r]);
      sum_exp[r] = static_cast<float>(se);
      const int64_t t = a.targets[r] - lo;
      if (t >= 0 && t < valid) target[r] = a.logits[r * Vl + t];
    }
    RETURN_IF_ERROR(TpSum(sum_exp));
    RETURN_IF_ERROR(TpSum(target));
    double l = 0;
    for (int64_t r = 0; r < N; ++r) {
      a.lse[r] = row_max[r] + std::log(sum_exp[r]);
      l += (double(a.lse[r]) - target[r]) / N;
    }
    if (loss != nullptr) *loss = l;
    Flush();
    RETURN_IF_ERROR(e_.PostForward(unit + 1));
  } else {
    out = std::move(x);
  }
  a.bytes = Bytes(a);
  if (tracker_) tracker_->RecordAlloc(MemCategory::kActivation, a.bytes);
  acts_[{mb, chunk}] = std::move(acts);
  return absl::OkStatus();
}

void GptStage::DropActivations(int mb, int chunk) {
  auto it = acts_.find({mb, chunk});
  if (it == acts_.end()) return;
  if (tracker_) tracker_->RecordFree(MemCategory::kActivation, it->second->bytes);
  acts_.erase(it);
}

absl::Status GptStage::Backward(int mb, int chunk, const std::vector<float>& dout,
                                std::vector<float>& din) {
  auto it = acts_.find({mb, chunk});
  if (it == acts_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("backward of micro-batch ", mb, " (chunk ", chunk, ") before its forward"));
  }
  const Chunk& ch = chunks_[chunk];
  const Acts& a = *it->second;
  const int64_t T = c_.seq, C = c_.hidden, N = c_.micro_batch * T;
  int unit =
      ch.first_unit + (ch.first ? 2 : 0) + (ch.end_block - ch.first_block) + (ch.last ? 2 : 0) - 1;
  std::vector<float> dx;
  if (ch.last) {
    RETURN_IF_ERROR(e_.PreBackward(unit));
    ASSIGN_OR_RETURN(float* head, P(unit, 0));
    ASSIGN_OR_RETURN(float* dhead, G(unit, 0));
    const int64_t Vl = VocabPerRank(c_, place_.tp), lo = place_.tp_rank * Vl;
    const int64_t valid = std::max<int64_t>(0, std::min(Vl, c_.vocab - lo));
    const float scale = e_.loss_scale() / static_cast<float>(N);
    std::vector<float> dlogits(N * Vl, 0.0f);
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t j = 0; j < valid; ++j) {
        const float prob = std::exp(a.logits[r * Vl + j] - a.lse[r]);
        dlogits[r * Vl + j] = (prob - (a.targets[r] - lo == j ? 1.0f : 0.0f)) * scale;
      }
    }
    kernels::Gemm(true, false, Vl, C, N, 1.0f, dlogits.data(), Vl, a.lnf.data(), C, 1.0f, dhead, C);
    dx.resize(N * C);
    kernels::Gemm(false, false, N, C, Vl, 1.0f, dlogits.data(), Vl, head, C, 0.0f, dx.data(), C);
    std::vector<float> local;
    RETURN_IF_ERROR(SeqReduce(dx, local));  // this rank's rows of d lnf
    dx = std::move(local);
    Flush();
    RETURN_IF_ERROR(e_.PostBackward(unit--));
    RETURN_IF_ERROR(e_.PreBackward(unit));
    ASSIGN_OR_RETURN(float* gf, P(unit, 0));
    ASSIGN_OR_RETURN(float* dgf, G(unit, 0));
    ASSIGN_OR_RETURN(float* dbf, G(unit, 1));
    std::vector<float> gamma(C, 0.0f), beta(C, 0.0f);
    kernels::LayerNormBackward(dx.data(), a.x_final.data(), gf, a.meanf.data(), a.rstdf.data(),
                               Rows(), C, dx.data(), gamma.data(), beta.data());
    RETURN_IF_ERROR(AddReplicated(dgf, gamma));
    RETURN_IF_ERROR(AddReplicated(dbf, beta));
    Flush();
    RETURN_IF_ERROR(e_.PostBackward(unit--));
  } else {
    if (static_cast<int64_t>(dout.size()) != Rows() * C) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", pp_rank_, " got a gradient of ",
                                                     dout.size(), " elements, expected ",
                                                     Rows() * C));
    }
    dx = dout;
  }
  for (int blk = static_cast<int>(a.blocks.size()) - 1; blk >= 0; --blk) {
    RETURN_IF_ERROR(BlockBackward(unit--, dx, a.blocks[blk]));
  }
  if (ch.first) {
    // Both embeddings need every row's gradient (the same on all TP ranks).
    ASSIGN_OR_RETURN(dx, SeqGather(dx));
    RETURN_IF_ERROR(e_.PreBackward(ch.first_unit + 1));
    ASSIGN_OR_RETURN(float* dwpe, G(ch.first_unit + 1, 0));
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t j = 0; j < C; ++j) dwpe[(r % T) * C + j] += dx[r * C + j];
    }
    Flush();
    RETURN_IF_ERROR(e_.PostBackward(ch.first_unit + 1));
    RETURN_IF_ERROR(e_.PreBackward(ch.first_unit));
    ASSIGN_OR_RETURN(float* dwte, G(ch.first_unit, 0));
    const int64_t Vl = VocabPerRank(c_, place_.tp), lo = place_.tp_rank * Vl;
    for (int64_t r = 0; r < N; ++r) {  // rows this rank holds, in row order
      const int64_t id = a.inputs[r] - lo;
      if (id < 0 || id >= Vl) continue;
      for (int64_t j = 0; j < C; ++j) dwte[id * C + j] += dx[r * C + j];
    }
    Flush();
    RETURN_IF_ERROR(e_.PostBackward(ch.first_unit));
  } else {
    din = std::move(dx);
  }
  if (tracker_) tracker_->RecordFree(MemCategory::kActivation, a.bytes);
  acts_.erase(it);
  return absl::OkStatus();
}

absl::Status SumTiedEmbeddingGrads(ZeroEngine& e, Communicator& group) {
  // "wte" is unit 0 on the first stage, "head" the last unit on the last.
  const int unit = e.unit_name(0) == "wte" ? 0 : e.num_units() - 1;
  ASSIGN_OR_RETURN(MutView g, e.ReducedGrad(unit));
  return group.AllReduce(g, g, ReduceOp::kSum);
}

}  // namespace trireme
