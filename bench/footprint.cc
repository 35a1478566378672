#include "bench/footprint.h"

#include <cmath>
#include <cstdlib>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/gpt.h"
#include "runtime/comm/simulated_comm.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme::bench {

namespace {

GptConfig Shape(int layers, int64_t hidden, int heads, int64_t vocab, int64_t seq) {
  GptConfig c;
  c.layers = layers;
  c.hidden = hidden;
  c.heads = heads;
  c.vocab = vocab;
  c.seq = seq;
  c.micro_batch = 1;
  return c;
}

}  // namespace

absl::StatusOr<ModelShape> ModelByName(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "tiny") return ModelShape{n, Shape(2, 64, 4, 256, 64)};
  if (n == "175b") return ModelShape{n, Shape(96, 12288, 96, 50257, 2048)};  // GPT-3
  for (const NamedShape& s : GptNamedShapes()) {
    if (n == s.name) return ModelShape{n, s.config};
  }
  std::vector<std::string> names = {"tiny"};
  for (const NamedShape& s : GptNamedShapes()) names.push_back(s.name);
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
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model '", name, "': use ", absl::StrJoin(names, ", "),
                   ", 175b, 7.5b or a parameter count such as 3e9, 350m, 1.3b"));
}

std::vector<UnitSpec> UnitsFor(const ModelShape& m) {
  if (m.raw_params == 0) return GptUnits(m.config, GptPlace{});
  std::vector<UnitSpec> units;
  const int k = 32;
  for (int u = 0; u < k; ++u) {
    const int64_t numel = m.raw_params / k + (u < m.raw_params % k ? 1 : 0);
    units.push_back({absl::StrCat("chunk", u), {{absl::StrCat("p", u), {numel}}}});
  }
  return units;
}

int64_t ParamCount(const ModelShape& m) {
  return m.raw_params > 0 ? m.raw_params : GptParameterCount(m.config);
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
