#include "bench/footprint.h"

#include <cmath>
#include <cstdlib>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/comm/simulated_comm.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme::bench {

absl::StatusOr<ModelShape> ModelByName(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "tiny") return ModelShape{n, 2, 64, 256, 256, 64};
  if (n == "gpt2-124m") return ModelShape{n, 12, 768, 3072, 50257, 1024};
  if (n == "gpt2-350m") return ModelShape{n, 24, 1024, 4096, 50257, 1024};
  if (n == "gpt2-1.5b") return ModelShape{n, 48, 1600, 6400, 50257, 1024};
  if (n == "175b") return ModelShape{n, 96, 12288, 49152, 50257, 2048};
  if (n == "llama-70b") return ModelShape{n, 80, 8192, 28672, 32000, 0, 1024, true};
  if (n == "7.5b") {  // the ZeRO paper's example: a bare count
    ModelShape m;
    m.name = n;
    m.raw_params = 7'500'000'000;
    return m;
  }
  // A count: 3e9, 350m, 1.3b, 125000000.
  double scale = 1;
  std::string num = n;
  if (!num.empty() && (num.back() == 'b' || num.back() == 'm' || num.back() == 'k')) {
    scale = num.back() == 'b' ? 1e9 : num.back() == 'm' ? 1e6 : 1e3;
    num.pop_back();
  }
  double count = 0;
  if (absl::SimpleAtod(num, &count) && count * scale >= 1) {
    ModelShape m;
    m.name = n;
    m.raw_params = static_cast<int64_t>(std::llround(count * scale));
    return m;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown model '", name,
      "': use tiny, gpt2-124m, gpt2-350m, gpt2-1.5b, 7.5b, llama-70b, 175b or a parameter count "
      "such as 3e9, 350m, 1.3b"));
}

std::vector<UnitSpec> UnitsFor(const ModelShape& m) {
  std::vector<UnitSpec> units;
  if (m.raw_params > 0) {
    const int k = 32;
    for (int u = 0; u < k; ++u) {
      const int64_t numel = m.raw_params / k + (u < m.raw_params % k ? 1 : 0);
      units.push_back({absl::StrCat("chunk", u), {{absl::StrCat("p", u), {numel}}}});
    }
    return units;
  }
  const int64_t h = m.hidden, kv = m.kv_hidden > 0 ? m.kv_hidden : h;
  UnitSpec embed{"embed", {{"wte", {m.vocab, h}}}};
  if (m.seq > 0) embed.params.push_back({"wpe", {m.seq, h}});
  units.push_back(embed);
  for (int l = 0; l < m.layers; ++l) {
    const std::string b = absl::StrCat("h", l, ".");
    UnitSpec u{absl::StrCat("block", l), {}};
    if (m.llama) {
      u.params = {
          {b + "attn_norm", {h}, false}, {b + "wq", {h, h}},       {b + "wk", {h, kv}},
          {b + "wv", {h, kv}},           {b + "wo", {h, h}},       {b + "mlp_norm", {h}, false},
          {b + "w_gate", {h, m.ffn}},    {b + "w_up", {h, m.ffn}}, {b + "w_down", {m.ffn, h}}};
    } else {
      u.params = {
          {b + "ln1_g", {h}, false},     {b + "ln1_b", {h}, false}, {b + "qkv_w", {h, 3 * h}},
          {b + "qkv_b", {3 * h}, false}, {b + "proj_w", {h, h}},    {b + "proj_b", {h}, false},
          {b + "ln2_g", {h}, false},     {b + "ln2_b", {h}, false}, {b + "fc_w", {h, m.ffn}},
          {b + "fc_b", {m.ffn}, false},  {b + "out_w", {m.ffn, h}}, {b + "out_b", {h}, false}};
    }
    units.push_back(u);
  }
  UnitSpec final{"final", {{"norm_g", {h}, false}}};
  if (!m.llama) final.params.push_back({"norm_b", {h}, false});
  if (m.llama) final.params.push_back({"lm_head", {h, m.vocab}});  // untied
  units.push_back(final);
  return units;
}

int64_t ParamCount(const ModelShape& m) {
  int64_t total = 0;
  for (const UnitSpec& u : UnitsFor(m)) {
    for (const ParamSpec& p : u.params) {
      int64_t n = 1;
      for (int64_t d : p.shape) n *= d;
      total += n;
    }
  }
  return total;
}

int64_t Footprint::model_states() const {
  return memory.current[static_cast<int>(MemCategory::kParam)] +
         memory.current[static_cast<int>(MemCategory::kGrad)] +
         memory.current[static_cast<int>(MemCategory::kMaster)] +
         memory.current[static_cast<int>(MemCategory::kOptim)];
}

double ZeroFormulaBytes(int stage, double psi, int dp, int grad_bytes) {
  const double g = grad_bytes, n = dp;
  switch (stage) {
    case 0:
      return (2 + g + 12) * psi;
    case 1:
      return (2 + g) * psi + 12 * psi / n;
    case 2:
      return 2 * psi + (g + 12) * psi / n;
    default:
      return (2 + g + 12) * psi / n;
  }
}

namespace {

// One warm-up step, then one measured step (peaks reset before it).
absl::Status RunSteps(ZeroEngine& e, MemoryTracker& mem, Communicator& dp, Footprint* out) {
  for (int step = 0; step < 2; ++step) {
    mem.ResetPeak();
    const int64_t before = dp.stats().total_sent();
    for (int u = 0; u < e.num_units(); ++u) {
      RETURN_IF_ERROR(e.PreForward(u));
      RETURN_IF_ERROR(e.PostForward(u));
    }
    for (int u = e.num_units() - 1; u >= 0; --u) {
      RETURN_IF_ERROR(e.PreBackward(u));
      RETURN_IF_ERROR(e.PostBackward(u));
    }
    RETURN_IF_ERROR(e.Step().status());
    if (out != nullptr) {
      out->memory = mem.snapshot();
      out->sent_per_step = dp.stats().total_sent() - before;
    }
  }
  return absl::OkStatus();
}

EngineOptions OptionsFor(const FootprintConfig& c) {
  EngineOptions o;
  o.stage = c.stage;
  o.compute_dtype = c.compute;
  o.grad_dtype = c.grad;
  o.device = c.simulated ? Device::Meta() : Device::Cpu();
  return o;
}

}  // namespace

absl::StatusOr<Footprint> Measure(const ModelShape& m, const FootprintConfig& c) {
  if (c.dp < 1) return absl::InvalidArgumentError(absl::StrCat("dp ", c.dp, " must be >= 1"));
  const std::vector<UnitSpec> units = UnitsFor(m);
  Footprint f;
  f.psi_unpadded = ParamCount(m);
  f.formula = ZeroFormulaBytes(c.stage, static_cast<double>(f.psi_unpadded), c.dp,
                               static_cast<int>(DTypeSize(c.grad)));
  auto psi_of = [](const ZeroEngine& e) {
    int64_t s = 0;
    for (int u = 0; u < e.num_units(); ++u) s += e.unit_padded_numel(u);
    return s;
  };
  if (c.simulated) {
    std::unique_ptr<Communicator> dp = CreateSimulatedCommunicator(0, c.dp, "dp");
    MemoryTracker mem("rank 0 (simulated)");
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(*dp, units, OptionsFor(c), &mem));
    f.psi = psi_of(*e);
    RETURN_IF_ERROR(RunSteps(*e, mem, *dp, &f));
    return f;
  }
  std::mutex mu;
  std::vector<MemoryTracker::Snapshot> per_rank(c.dp);
  absl::Status s = RunOnRanks(c.dp, [&](Communicator& dp) -> absl::Status {
    MemoryTracker mem("rank");
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(dp, units, OptionsFor(c), &mem));
    RETURN_IF_ERROR(e->Initialize([](const ParamInfo&, float*) { return absl::OkStatus(); }));
    Footprint mine;
    RETURN_IF_ERROR(RunSteps(*e, mem, dp, &mine));
    std::lock_guard<std::mutex> lock(mu);
    per_rank[dp.rank()] = mine.memory;
    if (dp.rank() == 0) {
      f.psi = psi_of(*e);
      f.memory = mine.memory;
      f.sent_per_step = mine.sent_per_step;
    }
    return absl::OkStatus();
  });
  RETURN_IF_ERROR(s);
  for (int r = 1; r < c.dp; ++r) {
    if (per_rank[r].current != per_rank[0].current) {
      return absl::InternalError(absl::StrCat("rank ", r, " holds different bytes than rank 0"));
    }
  }
  return f;
}

}  // namespace trireme::bench
