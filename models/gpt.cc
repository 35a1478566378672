#include "models/gpt.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
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

float* F(const MutView& v) { return static_cast<float*>(v.data); }

}  // namespace

absl::Status GptConfig::Validate(int pp) const {
  if (layers < 1 || hidden < 1 || heads < 1 || vocab < 2 || seq < 1 || micro_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPT: layers (", layers, "), hidden (", hidden, "), heads (", heads, "), seq (", seq,
        "), micro_batch (", micro_batch, ") must be >= 1 and vocab (", vocab, ") >= 2"));
  }
  if (hidden % heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: heads (", heads, ") must divide hidden (", hidden, ")"));
  }
  if (pp < 1 || pp > layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT: pp (", pp, ") must be between 1 and layers (", layers, ")"));
  }
  return absl::OkStatus();
}

std::pair<int, int> BlockRange(const GptConfig& c, int pp, int r) {
  const int base = c.layers / pp, extra = c.layers % pp;
  const int first = r * base + std::min(r, extra);
  return {first, first + base + (r < extra ? 1 : 0)};
}

std::vector<UnitSpec> GptUnits(const GptConfig& c, int pp, int r) {
  const int64_t C = c.hidden;
  std::vector<UnitSpec> units;
  if (r == 0) {
    units.push_back({"wte", {{"wte", {c.vocab, C}}}});
    units.push_back({"wpe", {{"wpe", {c.seq, C}}}});
  }
  const auto [first, end] = BlockRange(c, pp, r);
  for (int l = first; l < end; ++l) {
    const std::string b = absl::StrCat("h", l, ".");
    units.push_back({absl::StrCat("block", l),
                     {{b + "ln1_g", {C}, false},      {b + "ln1_b", {C}, false},
                      {b + "qkv_w", {C, 3 * C}},      {b + "qkv_b", {3 * C}, false},
                      {b + "proj_w", {C, C}},         {b + "proj_b", {C}, false},
                      {b + "ln2_g", {C}, false},      {b + "ln2_b", {C}, false},
                      {b + "fc_w", {C, 4 * C}},       {b + "fc_b", {4 * C}, false},
                      {b + "out_w", {4 * C, C}},      {b + "out_b", {C}, false}}});
  }
  if (r == pp - 1) {
    units.push_back({"final", {{"lnf_g", {C}, false}, {"lnf_b", {C}, false}}});
    ParamSpec head{"head", {c.vocab, C}};
    if (pp == 1) {
      head.tied_to = "wte";  // one storage
    } else {
      head.norm_duplicate = true;  // stage 0 counts wte
    }
    units.push_back({"head", {head}});
  }
  return units;
}

absl::Status GptInit(const GptConfig& c, const ParamInfo& p, float* v) {
  const std::string name = p.name == "head" ? "wte" : p.name;
  const bool gain = EndsWith(name, "_g");
  const bool bias = EndsWith(name, "_b");
  const uint64_t h = NameHash(name) ^ c.seed;
  for (int64_t i = 0; i < p.numel; ++i) {
    if (gain || bias) {
      v[i] = gain ? 1.0f : 0.0f;
    } else {  // a uniform with the standard deviation 0.02 of GPT-2
      v[i] = static_cast<float>((Uniform(h, i) * 2 - 1) * 0.02 * std::sqrt(3.0));
    }
  }
  return absl::OkStatus();
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
};

GptStage::GptStage(GptConfig c, int pp, int pp_rank, ZeroEngine& engine)
    : c_(c), pp_(pp), pp_rank_(pp_rank), e_(engine) {
  std::tie(first_block_, end_block_) = BlockRange(c_, pp_, pp_rank_);
}

GptStage::~GptStage() = default;

int64_t GptStage::activation_count() const { return c_.micro_batch * c_.seq * c_.hidden; }

absl::Status GptStage::BlockForward(int unit, std::vector<float>& x, BlockActs& a) {
  const int64_t N = c_.micro_batch * c_.seq, C = c_.hidden, H = c_.heads, D = C / H;
  const int64_t B = c_.micro_batch, T = c_.seq;
  RETURN_IF_ERROR(e_.PreForward(unit));
  std::vector<float*> p(12);
  for (int i = 0; i < 12; ++i) {
    ASSIGN_OR_RETURN(MutView v, e_.Param(unit, i));
    p[i] = F(v);
  }
  a.x_in = x;
  a.ln1.resize(N * C);
  a.mean1.resize(N);
  a.rstd1.resize(N);
  kernels::LayerNormForward(x.data(), p[0], p[1], N, C, c_.ln_eps, a.ln1.data(), a.mean1.data(),
                            a.rstd1.data());
  std::vector<float> qkv(N * 3 * C);
  kernels::Gemm(false, false, N, 3 * C, C, 1.0f, a.ln1.data(), C, p[2], 3 * C, 0.0f, qkv.data(),
                3 * C);
  AddBias(qkv.data(), p[3], N, 3 * C);
  a.q.resize(N * C);
  a.k.resize(N * C);
  a.v.resize(N * C);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const int64_t src = (b * T + t) * 3 * C + h * D + d, dst = ((b * H + h) * T + t) * D + d;
          a.q[dst] = qkv[src];
          a.k[dst] = qkv[src + C];
          a.v[dst] = qkv[src + 2 * C];
        }
      }
    }
  }
  const kernels::AttentionShape shape{B, H, T, D};
  a.probs.resize(B * H * T * T);
  std::vector<float> att_bhtd(N * C);
  kernels::CausalAttentionForward(shape, a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                                  att_bhtd.data());
  a.att.resize(N * C);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(&a.att[(b * T + t) * C + h * D], &att_bhtd[((b * H + h) * T + t) * D],
                    D * sizeof(float));
      }
    }
  }
  a.x2 = x;
  kernels::Gemm(false, false, N, C, C, 1.0f, a.att.data(), C, p[4], C, 1.0f, a.x2.data(), C);
  AddBias(a.x2.data(), p[5], N, C);
  a.ln2.resize(N * C);
  a.mean2.resize(N);
  a.rstd2.resize(N);
  kernels::LayerNormForward(a.x2.data(), p[6], p[7], N, C, c_.ln_eps, a.ln2.data(),
                            a.mean2.data(), a.rstd2.data());
  a.fc.resize(N * 4 * C);
  kernels::Gemm(false, false, N, 4 * C, C, 1.0f, a.ln2.data(), C, p[8], 4 * C, 0.0f, a.fc.data(),
                4 * C);
  AddBias(a.fc.data(), p[9], N, 4 * C);
  a.g.resize(N * 4 * C);
  kernels::GeluForward(a.fc.data(), N * 4 * C, a.g.data());
  x = a.x2;
  kernels::Gemm(false, false, N, C, 4 * C, 1.0f, a.g.data(), 4 * C, p[10], C, 1.0f, x.data(), C);
  AddBias(x.data(), p[11], N, C);
  return e_.PostForward(unit);
}

absl::Status GptStage::BlockBackward(int unit, std::vector<float>& dx, const BlockActs& a) {
  const int64_t N = c_.micro_batch * c_.seq, C = c_.hidden, H = c_.heads, D = C / H;
  const int64_t B = c_.micro_batch, T = c_.seq;
  RETURN_IF_ERROR(e_.PreBackward(unit));
  std::vector<float*> p(12), g(12);
  for (int i = 0; i < 12; ++i) {
    ASSIGN_OR_RETURN(MutView v, e_.Param(unit, i));
    ASSIGN_OR_RETURN(MutView gv, e_.Grad(unit, i));
    p[i] = F(v);
    g[i] = F(gv);
  }
  // MLP: x3 = x2 + gelu(ln2(x2) Wfc + bfc) Wout + bout.
  kernels::Gemm(true, false, 4 * C, C, N, 1.0f, a.g.data(), 4 * C, dx.data(), C, 1.0f, g[10], C);
  AddColumnSums(dx.data(), N, C, g[11]);
  std::vector<float> dg(N * 4 * C);
  kernels::Gemm(false, true, N, 4 * C, C, 1.0f, dx.data(), C, p[10], C, 0.0f, dg.data(), 4 * C);
  kernels::GeluBackward(a.fc.data(), dg.data(), N * 4 * C, dg.data());
  kernels::Gemm(true, false, C, 4 * C, N, 1.0f, a.ln2.data(), C, dg.data(), 4 * C, 1.0f, g[8],
                4 * C);
  AddColumnSums(dg.data(), N, 4 * C, g[9]);
  std::vector<float> dln(N * C);
  kernels::Gemm(false, true, N, C, 4 * C, 1.0f, dg.data(), 4 * C, p[8], 4 * C, 0.0f, dln.data(),
                C);
  kernels::LayerNormBackward(dln.data(), a.x2.data(), p[6], a.mean2.data(), a.rstd2.data(), N, C,
                             dln.data(), g[6], g[7]);
  for (int64_t i = 0; i < N * C; ++i) dx[i] += dln[i];  // dx is now d x2
  // Attention: x2 = x + attn(ln1(x)) Wproj + bproj.
  kernels::Gemm(true, false, C, C, N, 1.0f, a.att.data(), C, dx.data(), C, 1.0f, g[4], C);
  AddColumnSums(dx.data(), N, C, g[5]);
  std::vector<float> datt(N * C), datt_bhtd(N * C);
  kernels::Gemm(false, true, N, C, C, 1.0f, dx.data(), C, p[4], C, 0.0f, datt.data(), C);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(&datt_bhtd[((b * H + h) * T + t) * D], &datt[(b * T + t) * C + h * D],
                    D * sizeof(float));
      }
    }
  }
  const kernels::AttentionShape shape{B, H, T, D};
  std::vector<float> work(kernels::CausalAttentionWorkspaceSize(shape)), dq(N * C), dk(N * C),
      dv(N * C);
  kernels::CausalAttentionBackward(shape, a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                                   datt_bhtd.data(), work.data(), dq.data(), dk.data(), dv.data());
  std::vector<float> dqkv(N * 3 * C);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const int64_t dst = (b * T + t) * 3 * C + h * D + d, src = ((b * H + h) * T + t) * D + d;
          dqkv[dst] = dq[src];
          dqkv[dst + C] = dk[src];
          dqkv[dst + 2 * C] = dv[src];
        }
      }
    }
  }
  kernels::Gemm(true, false, C, 3 * C, N, 1.0f, a.ln1.data(), C, dqkv.data(), 3 * C, 1.0f, g[2],
                3 * C);
  AddColumnSums(dqkv.data(), N, 3 * C, g[3]);
  kernels::Gemm(false, true, N, C, 3 * C, 1.0f, dqkv.data(), 3 * C, p[2], 3 * C, 0.0f, dln.data(),
                C);
  kernels::LayerNormBackward(dln.data(), a.x_in.data(), p[0], a.mean1.data(), a.rstd1.data(), N,
                             C, dln.data(), g[0], g[1]);
  for (int64_t i = 0; i < N * C; ++i) dx[i] += dln[i];  // d x_in
  return e_.PostBackward(unit);
}

absl::Status GptStage::Forward(int mb, const std::vector<int32_t>& tokens,
                               const std::vector<float>& in, std::vector<float>& out,
                               double* loss) {
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
  int unit = 0;
  if (pp_rank_ == 0) {
    x.resize(N * C);
    RETURN_IF_ERROR(e_.PreForward(0));
    ASSIGN_OR_RETURN(MutView wte, e_.Param(0, 0));
    RETURN_IF_ERROR(kernels::EmbeddingForward(F(wte), a.inputs.data(), N, c_.vocab, C, x.data()));
    RETURN_IF_ERROR(e_.PostForward(0));
    RETURN_IF_ERROR(e_.PreForward(1));
    ASSIGN_OR_RETURN(MutView wpe, e_.Param(1, 0));
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t j = 0; j < C; ++j) x[r * C + j] += F(wpe)[(r % T) * C + j];
    }
    RETURN_IF_ERROR(e_.PostForward(1));
    unit = 2;
  } else {
    if (static_cast<int64_t>(in.size()) != N * C) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", pp_rank_, " got an activation of ",
                                                     in.size(), " elements, expected ", N * C));
    }
    x = in;
  }
  a.blocks.resize(end_block_ - first_block_);
  for (auto& blk : a.blocks) RETURN_IF_ERROR(BlockForward(unit++, x, blk));
  if (pp_rank_ == pp_ - 1) {
    a.x_final = x;
    a.lnf.resize(N * C);
    a.meanf.resize(N);
    a.rstdf.resize(N);
    RETURN_IF_ERROR(e_.PreForward(unit));
    ASSIGN_OR_RETURN(MutView gf, e_.Param(unit, 0));
    ASSIGN_OR_RETURN(MutView bf, e_.Param(unit, 1));
    kernels::LayerNormForward(x.data(), F(gf), F(bf), N, C, c_.ln_eps, a.lnf.data(),
                              a.meanf.data(), a.rstdf.data());
    RETURN_IF_ERROR(e_.PostForward(unit));
    RETURN_IF_ERROR(e_.PreForward(unit + 1));
    ASSIGN_OR_RETURN(MutView head, e_.Param(unit + 1, 0));
    a.logits.resize(N * c_.vocab);
    a.lse.resize(N);
    kernels::Gemm(false, true, N, c_.vocab, C, 1.0f, a.lnf.data(), C, F(head), C, 0.0f,
                  a.logits.data(), c_.vocab);
    ASSIGN_OR_RETURN(float l, kernels::CrossEntropyForward(a.logits.data(), a.targets.data(), N,
                                                           c_.vocab, c_.vocab, a.lse.data()));
    if (loss != nullptr) *loss = l;
    RETURN_IF_ERROR(e_.PostForward(unit + 1));
  } else {
    out = std::move(x);
  }
  acts_[mb] = std::move(acts);
  return absl::OkStatus();
}

absl::Status GptStage::Backward(int mb, const std::vector<float>& dout, std::vector<float>& din) {
  auto it = acts_.find(mb);
  if (it == acts_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("backward of micro-batch ", mb, " before its forward"));
  }
  const Acts& a = *it->second;
  const int64_t T = c_.seq, C = c_.hidden, N = c_.micro_batch * T;
  int unit = e_.num_units() - 1;
  std::vector<float> dx;
  if (pp_rank_ == pp_ - 1) {
    RETURN_IF_ERROR(e_.PreBackward(unit));
    ASSIGN_OR_RETURN(MutView head, e_.Param(unit, 0));
    ASSIGN_OR_RETURN(MutView dhead, e_.Grad(unit, 0));
    std::vector<float> dlogits(N * c_.vocab);
    RETURN_IF_ERROR(kernels::CrossEntropyBackward(a.logits.data(), a.targets.data(), a.lse.data(),
                                                  N, c_.vocab, c_.vocab, e_.loss_scale(),
                                                  dlogits.data()));
    kernels::Gemm(true, false, c_.vocab, C, N, 1.0f, dlogits.data(), c_.vocab, a.lnf.data(), C,
                  1.0f, F(dhead), C);
    dx.resize(N * C);
    kernels::Gemm(false, false, N, C, c_.vocab, 1.0f, dlogits.data(), c_.vocab, F(head), C, 0.0f,
                  dx.data(), C);
    RETURN_IF_ERROR(e_.PostBackward(unit--));
    RETURN_IF_ERROR(e_.PreBackward(unit));
    ASSIGN_OR_RETURN(MutView gf, e_.Param(unit, 0));
    ASSIGN_OR_RETURN(MutView dgf, e_.Grad(unit, 0));
    ASSIGN_OR_RETURN(MutView dbf, e_.Grad(unit, 1));
    kernels::LayerNormBackward(dx.data(), a.x_final.data(), F(gf), a.meanf.data(), a.rstdf.data(),
                               N, C, dx.data(), F(dgf), F(dbf));
    RETURN_IF_ERROR(e_.PostBackward(unit--));
  } else {
    if (static_cast<int64_t>(dout.size()) != N * C) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", pp_rank_, " got a gradient of ",
                                                     dout.size(), " elements, expected ", N * C));
    }
    dx = dout;
  }
  for (int blk = static_cast<int>(a.blocks.size()) - 1; blk >= 0; --blk) {
    RETURN_IF_ERROR(BlockBackward(unit--, dx, a.blocks[blk]));
  }
  if (pp_rank_ == 0) {
    RETURN_IF_ERROR(e_.PreBackward(1));
    ASSIGN_OR_RETURN(MutView dwpe, e_.Grad(1, 0));
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t j = 0; j < C; ++j) F(dwpe)[(r % T) * C + j] += dx[r * C + j];
    }
    RETURN_IF_ERROR(e_.PostBackward(1));
    RETURN_IF_ERROR(e_.PreBackward(0));
    ASSIGN_OR_RETURN(MutView dwte, e_.Grad(0, 0));
    RETURN_IF_ERROR(
        kernels::EmbeddingBackward(dx.data(), a.inputs.data(), N, c_.vocab, C, F(dwte)));
    RETURN_IF_ERROR(e_.PostBackward(0));
  } else {
    din = std::move(dx);
  }
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
