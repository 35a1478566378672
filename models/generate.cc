#include "models/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "models/gpt.h"
#include "models/layers.h"
#include "models/train_config.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/hash.h"
#include "runtime/core/status.h"

namespace trireme {

struct GptGenerator::Weights {
  Tensor wte, wpe, lnf_g, lnf_b, head;  // head: wte itself when tied
  std::vector<BlockTensors> blocks;
};

// Per layer: keys and values [batch, local kv heads, capacity, head_dim].
struct GptGenerator::Cache {
  int64_t capacity = 0;
  std::vector<Tensor> k, v;
};

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The model a //:train checkpoint records in its manifest (trainer.flags).
absl::StatusOr<GptConfig> RecordedModel(const checkpoint::ManifestSummary& m,
                                        const std::string& dir) {
  const Json* flags = m.trainer.Find("flags");
  if (flags == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", dir, "' records no model (trainer.flags): not written by //:train"));
  }
  TrainConfig c;
  c.dp = c.tp = c.pp = 1;  // the training grid does not matter here
  for (const std::string& k : TrainConfig::ModelOptions()) {
    const Json* v = flags->Find(k);
    if (v != nullptr && v->is_string()) {
      RETURN_IF_ERROR(
          Annotate(c.Set(k, v->string_value()), absl::StrCat("checkpoint '", dir, "'")));
    }
  }
  for (const char* k : {"seed", "micro_batch"}) {
    const Json* v = flags->Find(k);
    if (v != nullptr && v->is_string()) RETURN_IF_ERROR(c.Set(k, v->string_value()));
  }
  ASSIGN_OR_RETURN(GptTrainOptions o, c.ToOptions());
  o.model.recompute.clear();
  o.model.sequence_parallel = false;
  return o.model;
}

}  // namespace

GptGenerator::GptGenerator(Communicator& tp, GptConfig config, Device device,
                           MemoryTracker* tracker)
    : tp_(tp),
      data_(&tp),
      config_(std::move(config)),
      place_{1, 0, tp.size(), tp.rank(), 1},
      device_(device),
      tracker_(tracker),
      w_(std::make_unique<Weights>()) {}

GptGenerator::~GptGenerator() = default;

absl::StatusOr<std::unique_ptr<GptGenerator>> GptGenerator::Load(Communicator& tp,
                                                                 const std::string& checkpoint,
                                                                 Device device,
                                                                 MemoryTracker* tracker) {
  // Every rank resolves the path once (a root's `latest` may move while a
  // run is saving), reads the manifest, and the ranks agree on the outcome
  // and on the directory.
  std::string dir;
  absl::StatusOr<GptConfig> config = [&]() -> absl::StatusOr<GptConfig> {
    ASSIGN_OR_RETURN(dir, checkpoint::Resolve(checkpoint));
    ASSIGN_OR_RETURN(checkpoint::ManifestSummary m, checkpoint::ReadSummary(dir));
    ASSIGN_OR_RETURN(GptConfig c, RecordedModel(m, dir));
    // The checkpoint holds exactly this model's tensors (no more, no fewer).
    std::map<std::string, std::vector<int64_t>> have;
    for (const checkpoint::TensorSpec& t : m.tensors) have[t.name] = t.shape;
    const std::vector<checkpoint::TensorSpec> want = GptCheckpointTensors(c);
    for (const checkpoint::TensorSpec& t : want) {
      auto it = have.find(t.name);
      if (it == have.end() || it->second != t.shape) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint '", dir, "': tensor '", t.name, "' ",
                         it == have.end() ? "is missing" : "has another shape", " (the model ",
                         GptArchitecture(c), " needs ", ShapeString(t.shape), ")"));
      }
    }
    if (have.size() != want.size()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint '", dir, "' holds ", have.size(),
                                                     " tensors; the model it records has ",
                                                     want.size()));
    }
    return c;
  }();
  RETURN_IF_ERROR(AgreeOnStatus(tp, config.status()));
  ASSIGN_OR_RETURN(const std::vector<std::string> dirs, AllGatherStrings(tp, dir));
  for (int r = 1; r < tp.size(); ++r) {
    if (dirs[r] != dirs[0]) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", checkpoint, "' resolved to '", dirs[0], "' on rank 0 but to '", dirs[r],
                       "' on rank ", r, " (a run saving into it?): give the step directory"));
    }
  }
  return Create(
      tp, *config, device,
      [&](const std::string& name) -> absl::StatusOr<std::vector<float>> {
        return checkpoint::ReadTensor(dir, name, "master");
      },
      tracker);
}

absl::StatusOr<std::unique_ptr<GptGenerator>> GptGenerator::Create(Communicator& tp,
                                                                   const GptConfig& config,
                                                                   Device device,
                                                                   const ValueFn& value,
                                                                   MemoryTracker* tracker) {
  // Generation runs whole sequences on every rank and keeps nothing for a
  // backward: no sequence parallelism, no recomputation.
  GptConfig c = config;
  c.sequence_parallel = false;
  c.recompute.clear();
  std::unique_ptr<GptGenerator> g(new GptGenerator(tp, c, device, tracker));
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(config.Validate(1, tp.size()));
    if (device.kind == DeviceKind::kCuda) {  // collective: before anything a rank may fail alone
      ASSIGN_OR_RETURN(g->data_owned_, tp.Split(0, tp.rank(), "generate_data"));
      g->data_owned_->SetDataDevice(device);
      g->data_ = g->data_owned_.get();
    }
    ASSIGN_OR_RETURN(g->stream_, NewStream(device, "generate"));
    const LayerContext ctx(g->config_, g->place_, *g->data_, *g->stream_, tracker);
    Weights& w = *g->w_;
    w.blocks.resize(config.layers);
    // This TP rank's slice of each global tensor, by the training layout.
    auto local = [&](const ParamDef& d, const std::string& name) -> absl::StatusOr<Tensor> {
      ASSIGN_OR_RETURN(checkpoint::TensorLayout l, ParamLayout(config, tp.size(), tp.rank(), name));
      ASSIGN_OR_RETURN(std::vector<float> global, value(l.name));
      const Shape shape = LocalShape(config, d, tp.size());
      std::vector<float> mine(NumElements(shape));
      ForEachGlobalIndex(l, mine.size(), [&](int64_t i, int64_t gi) {
        mine[i] = gi >= 0 && gi < static_cast<int64_t>(global.size()) ? global[gi] : 0.0f;
      });
      ASSIGN_OR_RETURN(Tensor t, ctx.New(shape, MemCategory::kParam));
      RETURN_IF_ERROR(kernels::CopyFromHost(ctx.stream(), t.data(), mine.data(), t.bytes()));
      return t;
    };
    for (const ParamDef& d : GptParamDefs()) {
      if (!Present(config, d) || std::string(d.name) == "head") continue;
      if (d.scope == ParamScope::kBlock) {
        for (int l = 0; l < config.layers; ++l) {
          ASSIGN_OR_RETURN(w.blocks[l].*d.member, local(d, absl::StrCat("h", l, ".", d.name)));
        }
        continue;
      }
      ASSIGN_OR_RETURN(Tensor t, local(d, d.name));
      const std::string n = d.name;
      if (n == "wte") w.wte = t;
      if (n == "wpe") w.wpe = t;
      if (n == "lnf_g") w.lnf_g = t;
      if (n == "lnf_b") w.lnf_b = t;
      if (n == "lm_head") w.head = t;
    }
    if (config.tied_head) w.head = w.wte;
    return g->stream_->Synchronize();
  }();
  RETURN_IF_ERROR(AgreeOnStatus(tp, s));
  return g;
}

int64_t GptGenerator::CacheCapacity(int64_t length, bool ring) const {
  return ring && config_.sliding_window > 0 ? std::min(length, config_.sliding_window) : length;
}

int64_t GptGenerator::KvCacheBytes(int64_t batch, int64_t length) const {
  return 2 * int64_t{config_.layers} * batch * config_.local_kv(place_.tp) *
         CacheCapacity(length, /*ring=*/true) * config_.head_dim() * 4;
}

absl::StatusOr<GptGenerator::Cache> GptGenerator::NewCache(int64_t batch, int64_t length,
                                                           bool ring) {
  Cache c;
  c.capacity = CacheCapacity(length, ring);
  const Shape shape{batch, config_.local_kv(place_.tp), c.capacity, config_.head_dim()};
  for (int l = 0; l < config_.layers; ++l) {
    for (std::vector<Tensor>* side : {&c.k, &c.v}) {
      ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(device_, DType::kF32, shape,
                                               MemCategory::kActivation, tracker_, stream_.get()));
      side->push_back(t);
    }
  }
  return c;
}

absl::Status GptGenerator::CheckTokens(const std::vector<int32_t>& ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config_.vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token ", ids[i], " at position ", i, " is outside the vocabulary of ", config_.vocab));
    }
  }
  return absl::OkStatus();
}

absl::Status GptGenerator::Forward(const std::vector<int32_t>& ids, int64_t B, int64_t Tq,
                                   int64_t first_pos, int64_t keep, Cache* cache,
                                   std::vector<float>* logits) {
  // The layers see a micro-batch of B sequences of Tq positions.
  GptConfig c = config_;
  c.micro_batch = B;
  c.seq = Tq;
  const LayerContext ctx(c, place_, *data_, *stream_, tracker_);
  Stream& s = ctx.stream();
  const MemCategory ws = MemCategory::kWorkspace;
  const int64_t N = B * Tq, C = c.hidden, D = c.head_dim(), H = ctx.local_heads();
  const int64_t KV = ctx.local_kv(), Cl = ctx.local_width(), W = ctx.local_kv_width();
  const int64_t F = ctx.local_mlp();
  const Weights& w = *w_;
  ASSIGN_OR_RETURN(Tensor ids_dev, ctx.New({N}, ws, DType::kI32));
  RETURN_IF_ERROR(kernels::CopyFromHost(s, ids_dev.data(), ids.data(), N * 4));
  Tensor x;
  RETURN_IF_ERROR(VocabParallelEmbedding::Forward(ctx, w.wte, Tensor(), ids_dev, ws, &x));
  if (w.wpe.defined()) {  // learned positions first_pos .. of every sequence
    for (int64_t b = 0; b < B; ++b) {
      RETURN_IF_ERROR(kernels::AddPositions(s, x.as<float>() + b * Tq * C, w.wpe.as<float>(), Tq,
                                            first_pos, config_.seq, C));
    }
  }
  const kernels::AttentionShape qs{B, H, Tq, D}, ks{B, KV, Tq, D};
  const kernels::CachedAttentionShape cs{
      B, H, KV, Tq, D, first_pos, cache->capacity, c.sliding_window};
  auto norm = [&](const Tensor& in, const Tensor& g, const Tensor& b) -> absl::StatusOr<Tensor> {
    ASSIGN_OR_RETURN(Tensor y, ctx.New({N, C}, ws));
    NormSaved stats;
    RETURN_IF_ERROR(Norm::Forward(ctx, in, g, b, ws, y, &stats));
    return y;
  };
  // x + (y summed over TP) + bias, the residual of a row-parallel layer.
  auto residual = [&](const Tensor& in, const Tensor& y,
                      const Tensor& bias) -> absl::StatusOr<Tensor> {
    RETURN_IF_ERROR(ctx.SumOverTp(y));
    ASSIGN_OR_RETURN(Tensor out, ctx.New({N, C}, ws));
    RETURN_IF_ERROR(kernels::Add(s, in.as<float>(), y.as<float>(), N * C, out.as<float>()));
    if (bias.defined())
      RETURN_IF_ERROR(kernels::AddBias(s, out.as<float>(), bias.as<float>(), N, C));
    return out;
  };
  for (int l = 0; l < c.layers; ++l) {
    const BlockTensors& b = w.blocks[l];
    ASSIGN_OR_RETURN(Tensor h, norm(x, b.ln1_g, b.ln1_b));
    Tensor qkv, q, kv;
    if (c.gqa()) {
      ASSIGN_OR_RETURN(q, ctx.New({N, Cl}, ws));
      ASSIGN_OR_RETURN(kv, ctx.New({N, 2 * W}, ws));
      RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx, h, b.q_w, b.q_b, q));
      RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx, h, b.kv_w, b.kv_b, kv));
    } else {
      ASSIGN_OR_RETURN(qkv, ctx.New({N, 3 * Cl}, ws));
      RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx, h, b.qkv_w, b.qkv_b, qkv));
    }
    const QkvColumns cols = QkvColumns::Of(ctx, qkv, q, kv);
    ASSIGN_OR_RETURN(Tensor qh, ctx.New({B, H, Tq, D}, ws));
    ASSIGN_OR_RETURN(Tensor kh, ctx.New({B, KV, Tq, D}, ws));
    ASSIGN_OR_RETURN(Tensor vh, ctx.New({B, KV, Tq, D}, ws));
    RETURN_IF_ERROR(kernels::RowsToHeads(s, cols.q.rows.as<float>(), cols.q.ld, cols.q.col, qs,
                                         qh.as<float>()));
    RETURN_IF_ERROR(kernels::RowsToHeads(s, cols.k.rows.as<float>(), cols.k.ld, cols.k.col, ks,
                                         kh.as<float>()));
    RETURN_IF_ERROR(kernels::RowsToHeads(s, cols.v.rows.as<float>(), cols.v.ld, cols.v.col, ks,
                                         vh.as<float>()));
    if (c.position == PositionKind::kRope) {
      RETURN_IF_ERROR(kernels::Rotary(s, qh.as<float>(), qs, first_pos, c.rope_base, false));
      RETURN_IF_ERROR(kernels::Rotary(s, kh.as<float>(), ks, first_pos, c.rope_base, false));
    }
    RETURN_IF_ERROR(kernels::WriteKvCache(s, cs, kh.as<float>(), cache->k[l].as<float>()));
    RETURN_IF_ERROR(kernels::WriteKvCache(s, cs, vh.as<float>(), cache->v[l].as<float>()));
    ASSIGN_OR_RETURN(Tensor oh, ctx.New({B, H, Tq, D}, ws));
    RETURN_IF_ERROR(kernels::CachedAttention(s, cs, qh.as<float>(), cache->k[l].as<float>(),
                                             cache->v[l].as<float>(), oh.as<float>()));
    ASSIGN_OR_RETURN(Tensor att, ctx.New({N, Cl}, ws));
    RETURN_IF_ERROR(kernels::HeadsToRows(s, oh.as<float>(), qs, att.as<float>(), Cl, 0));
    ASSIGN_OR_RETURN(Tensor y, ctx.New({N, C}, ws));
    RETURN_IF_ERROR(RowParallelLinear::Forward(ctx, att, b.proj_w, y));
    ASSIGN_OR_RETURN(Tensor x2, residual(x, y, b.proj_b));
    ASSIGN_OR_RETURN(h, norm(x2, b.ln2_g, b.ln2_b));
    ASSIGN_OR_RETURN(Tensor up, ctx.New({N, F}, ws));
    RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx, h, b.fc_w, b.fc_b, up));
    ASSIGN_OR_RETURN(Tensor act, ctx.New({N, F}, ws));
    if (c.mlp == MlpKind::kSwiGlu) {
      ASSIGN_OR_RETURN(Tensor gate, ctx.New({N, F}, ws));
      RETURN_IF_ERROR(ColumnParallelLinear::Forward(ctx, h, b.gate_w, b.gate_b, gate));
      RETURN_IF_ERROR(
          kernels::SwiGluForward(s, gate.as<float>(), up.as<float>(), N * F, act.as<float>()));
    } else {
      RETURN_IF_ERROR(kernels::GeluForward(s, up.as<float>(), N * F, act.as<float>()));
    }
    RETURN_IF_ERROR(RowParallelLinear::Forward(ctx, act, b.out_w, y));
    ASSIGN_OR_RETURN(x, residual(x2, y, b.out_b));
  }
  ASSIGN_OR_RETURN(Tensor h, norm(x, w.lnf_g, w.lnf_b));
  // The last `keep` positions of each sequence, then this rank's vocabulary
  // rows of their logits, gathered over TP.
  ASSIGN_OR_RETURN(Tensor last, ctx.New({B * keep, C}, ws));
  for (int64_t b = 0; b < B; ++b) {
    RETURN_IF_ERROR(kernels::Copy(s, last.as<float>() + b * keep * C,
                                  h.as<float>() + (b * Tq + Tq - keep) * C, keep * C * 4));
  }
  const int64_t Vl = w.head.dim(0), M = B * keep;
  ASSIGN_OR_RETURN(Tensor local, ctx.New({M, Vl}, ws));
  RETURN_IF_ERROR(kernels::Gemm(s, false, true, M, Vl, C, 1.0f, last.as<float>(), C,
                                w.head.as<float>(), C, 0.0f, local.as<float>(), Vl));
  ASSIGN_OR_RETURN(Tensor all, ctx.New({place_.tp, M, Vl}, ws));
  if (place_.tp > 1) {
    Work work = data_->AllGatherAsync(local.view(), all.view(), &s);
    if (work.Test()) RETURN_IF_ERROR(work.Wait());
  } else {
    RETURN_IF_ERROR(kernels::Copy(s, all.data(), local.data(), local.bytes()));
  }
  std::vector<float> host(all.numel());
  RETURN_IF_ERROR(kernels::Copy(s, host.data(), all.data(), all.bytes()));
  RETURN_IF_ERROR(s.Synchronize());
  const int64_t V = config_.vocab;
  logits->assign(M * V, 0.0f);
  for (int r = 0; r < place_.tp; ++r) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t j = 0; j < Vl && r * Vl + j < V; ++j) {
        (*logits)[m * V + r * Vl + j] = host[(r * M + m) * Vl + j];
      }
    }
  }
  return absl::OkStatus();
}

namespace {

// log softmax(logits)[token] in double.
double LogProb(const float* logits, int64_t V, int32_t token) {
  const double mx = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(logits[j] - mx);
  return logits[token] - mx - std::log(sum);
}

}  // namespace

int32_t SampleToken(const std::vector<float>& logits, const SamplingOptions& o, double u) {
  const int64_t V = logits.size();
  if (o.temperature <= 0.0f) {  // greedy
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t kept = o.top_k > 0 ? std::min<int64_t>(o.top_k, V) : V;
  std::vector<double> p(kept);
  const double mx = logits[order[0]];
  double sum = 0;
  for (int64_t i = 0; i < kept; ++i) {
    p[i] = std::exp((logits[order[i]] - mx) / o.temperature);
    sum += p[i];
  }
  if (o.top_p < 1.0f) {  // the smallest most-likely prefix reaching top_p
    double cumulative = 0;
    for (int64_t i = 0; i < kept; ++i) {
      cumulative += p[i] / sum;
      if (cumulative >= o.top_p) {
        kept = i + 1;
        break;
      }
    }
    sum = std::accumulate(p.begin(), p.begin() + kept, 0.0);
  }
  double target = u * sum, cumulative = 0;
  for (int64_t i = 0; i < kept; ++i) {
    cumulative += p[i];
    if (target < cumulative) return order[i];
  }
  return order[kept - 1];
}

absl::StatusOr<Generation> GptGenerator::Generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const SamplingOptions& o) {
  const int64_t B = prompts.size(), V = config_.vocab;
  if (B == 0 || o.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("generate: ", B, " prompts and max_new_tokens ",
                                                   o.max_new_tokens, " (need >= 1 and >= 0)"));
  }
  int64_t shortest = prompts[0].size(), longest = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("generate: prompt ", b, " is empty"));
    }
    RETURN_IF_ERROR(Annotate(CheckTokens(prompts[b]), absl::StrCat("prompt ", b)));
    shortest = std::min<int64_t>(shortest, prompts[b].size());
    longest = std::max<int64_t>(longest, prompts[b].size());
  }
  const int64_t length = longest + o.max_new_tokens;  // positions of the longest sequence
  if (config_.position == PositionKind::kLearned && length > config_.seq) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generate: ", length, " positions (longest prompt ", longest, " + ", o.max_new_tokens,
        " new tokens) but the model's learned positions stop at seq ", config_.seq));
  }
  Generation g;
  g.tokens = prompts;
  g.logprobs.resize(B);
  // The cache; without it (the reference), one for the first prefix only.
  absl::StatusOr<Cache> made = NewCache(B, o.use_cache ? length : shortest, /*ring=*/o.use_cache);
  RETURN_IF_ERROR(AgreeOnStatus(tp_, made.status()));  // a rank out of memory fails everywhere
  Cache cache = *std::move(made);
  g.kv_cache_bytes = o.use_cache ? KvCacheBytes(B, length) : 0;
  // Prefill: the positions every prompt has (a ring cache takes at most its
  // capacity at once).
  const int64_t prefill = o.use_cache ? std::min(shortest, cache.capacity) : shortest;
  std::vector<int32_t> ids;
  for (const auto& p : prompts) ids.insert(ids.end(), p.begin(), p.begin() + prefill);
  std::vector<float> logits;
  Clock::time_point start = Clock::now();
  RETURN_IF_ERROR(Forward(ids, B, prefill, 0, 1, &cache, &logits));
  g.prefill_seconds = Seconds(start);
  g.prefill_tokens = B * prefill;
  start = Clock::now();
  const uint64_t seed = MixFull(o.seed);
  std::vector<int32_t> step(B);
  for (int64_t pos = prefill;; ++pos) {
    // The token at `pos` of each sequence: its prompt's, or a sample.
    bool done = true;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t end = prompts[b].size() + o.max_new_tokens;
      std::vector<int32_t>& seq = g.tokens[b];
      if (pos >= static_cast<int64_t>(prompts[b].size()) && pos < end) {
        const std::vector<float> row(logits.begin() + b * V, logits.begin() + (b + 1) * V);
        const int32_t t = SampleToken(row, o, PairUniform(seed + b, pos));
        seq.push_back(t);
        g.logprobs[b].push_back(LogProb(row.data(), V, t));
      }
      step[b] = seq[std::min<int64_t>(pos, seq.size() - 1)];
      done = done && pos + 1 >= end;
    }
    if (done) break;
    if (o.use_cache) {
      RETURN_IF_ERROR(Forward(step, B, 1, pos, 1, &cache, &logits));
      g.decode_tokens += B;
    } else {  // the whole prefix again, into a fresh cache
      const int64_t n = pos + 1;
      std::vector<int32_t> prefix;
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < n; ++i) {
          prefix.push_back(g.tokens[b][std::min<int64_t>(i, g.tokens[b].size() - 1)]);
        }
      }
      ASSIGN_OR_RETURN(Cache fresh, NewCache(B, n, /*ring=*/false));  // the whole prefix at once
      RETURN_IF_ERROR(Forward(prefix, B, n, 0, 1, &fresh, &logits));
      g.decode_tokens += B * n;
    }
  }
  g.decode_seconds = Seconds(start);
  return g;
}

absl::StatusOr<std::vector<std::vector<std::vector<float>>>> GptGenerator::LogProbs(
    const std::vector<std::vector<int32_t>>& sequences) {
  const int64_t B = sequences.size(), V = config_.vocab;
  const int64_t T = B > 0 ? sequences[0].size() : 0;
  std::vector<int32_t> ids;
  for (const auto& s : sequences) {
    if (static_cast<int64_t>(s.size()) != T || T == 0) {
      return absl::InvalidArgumentError("LogProbs: sequences of one non-zero length");
    }
    RETURN_IF_ERROR(CheckTokens(s));
    ids.insert(ids.end(), s.begin(), s.end());
  }
  if (config_.position == PositionKind::kLearned && T > config_.seq) {
    return absl::InvalidArgumentError(absl::StrCat("LogProbs: ", T,
                                                   " positions but the model's learned positions "
                                                   "stop at seq ",
                                                   config_.seq));
  }
  ASSIGN_OR_RETURN(Cache cache, NewCache(B, T, /*ring=*/false));
  std::vector<float> logits;
  RETURN_IF_ERROR(Forward(ids, B, T, 0, T, &cache, &logits));
  std::vector<std::vector<std::vector<float>>> out(B, std::vector<std::vector<float>>(T));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const float* row = logits.data() + (b * T + t) * V;
      const double lse = row[0] - LogProb(row, V, 0);
      out[b][t].resize(V);
      for (int64_t j = 0; j < V; ++j) out[b][t][j] = static_cast<float>(row[j] - lse);
    }
  }
  return out;
}

}  // namespace trireme
