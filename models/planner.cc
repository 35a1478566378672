#include "models/planner.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "kernels/gemm.h"
#include "models/gpt.h"
#include "runtime/core/host_memory.h"
#include "runtime/core/json.h"
#include "runtime/core/status.h"

namespace trireme {

// ---------------------------------------------------------------- hardware

namespace {

struct HardwareKey {
  const char* key;
  double scale;  // to SI units
  double Hardware::*field;
};

const std::vector<HardwareKey>& HardwareKeys() {
  static const auto* k = new std::vector<HardwareKey>{
      {"peak_tflops", 1e12, &Hardware::peak_flops},
      {"memory_gb", 1e9, &Hardware::memory_bytes},
      {"memory_bw_gbs", 1e9, &Hardware::memory_bw},
      {"intra_node_gbs", 1e9, &Hardware::intra_bw},
      {"inter_node_gbs", 1e9, &Hardware::inter_bw},
      {"base_latency_us", 1e-6, &Hardware::base_latency},
      {"intra_latency_us", 1e-6, &Hardware::intra_latency},
      {"inter_latency_us", 1e-6, &Hardware::inter_latency},
      {"efficiency", 1, &Hardware::efficiency},
  };
  return *k;
}

const char* const kHardwareNames[] = {"a100-80gb", "h100-80gb", "h200"};

std::string ReadWhole(const std::string& path, bool* ok) {
  std::ifstream f(path);
  *ok = static_cast<bool>(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string ExecutablePath() {
  char buf[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : "";
}

}  // namespace

absl::StatusOr<Hardware> ParseHardware(const std::string& text, const std::string& origin) {
  Hardware hw;
  hw.name = origin;
  std::map<std::string, bool> seen;
  int line_no = 0;
  bool have_gpn = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": expected key = value, got '", line, "'"));
    }
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (key == "description") {
      hw.description = value;
      continue;
    }
    double v = 0;
    if (!absl::SimpleAtod(value, &v) || !(v > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": ", key, " = '", value,
                                                     "': expected a positive number"));
    }
    if (key == "gpus_per_node") {
      hw.gpus_per_node = static_cast<int>(v);
      have_gpn = v >= 1 && v == std::floor(v);
      if (!have_gpn) {
        return absl::InvalidArgumentError(absl::StrCat(
            origin, ":", line_no, ": gpus_per_node = ", value, ": expected a whole number"));
      }
      continue;
    }
    bool known = false;
    for (const HardwareKey& k : HardwareKeys()) {
      if (key != k.key) continue;
      hw.*k.field = v * k.scale;
      seen[key] = known = true;
    }
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": unknown key '", key, "'"));
    }
  }
  std::vector<std::string> missing;
  for (const HardwareKey& k : HardwareKeys()) {
    if (!seen.count(k.key)) missing.push_back(k.key);
  }
  if (!have_gpn) missing.push_back("gpus_per_node");
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": missing ", absl::StrJoin(missing, ", ")));
  }
  if (hw.efficiency > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": efficiency ", hw.efficiency, " is above 1"));
  }
  return hw;
}

std::vector<std::string> HardwareNames() {
  return std::vector<std::string>(std::begin(kHardwareNames), std::end(kHardwareNames));
}

absl::StatusOr<Hardware> LoadHardware(const std::string& name) {
  std::vector<std::string> tried;
  bool ok = false;
  if (name.find('/') != std::string::npos || name.find('.') != std::string::npos) {
    const std::string text = ReadWhole(name, &ok);
    if (!ok) return absl::NotFoundError(absl::StrCat("hardware file '", name, "': cannot be read"));
    return ParseHardware(text, name);
  }
  const std::string file = absl::StrCat("tools/hardware/", name, ".txt");
  for (const std::string& dir :
       {std::string("."), absl::StrCat(ExecutablePath(), ".runfiles/__main__")}) {
    const std::string path = absl::StrCat(dir, "/", file);
    tried.push_back(path);
    const std::string text = ReadWhole(path, &ok);
    if (!ok) continue;
    ASSIGN_OR_RETURN(Hardware hw, ParseHardware(text, path));
    hw.name = name;
    return hw;
  }
  return absl::NotFoundError(
      absl::StrCat("hardware '", name, "': not one of ", absl::StrJoin(HardwareNames(), ", "),
                   " (nor 'local'), or not found at ", absl::StrJoin(tried, ", ")));
}

Hardware MeasureThisMachine(double efficiency) {
  Hardware hw;
  hw.name = "local";
  // One thread's sgemm at a size the planner's models use; one thread's
  // memcpy past the caches.
  kernels::SetGemmThreads(1);
  hw.peak_flops = kernels::MeasureGemmFlops(512);
  hw.memory_bw = MeasureMemcpyBandwidth(size_t{64} << 20);
  // Ranks as threads move messages by memcpy; between hosts there is none.
  hw.intra_bw = hw.inter_bw = hw.memory_bw / 2;
  // A thread hand-off: the latency of one ring step of the threads backend.
  hw.base_latency = 0;
  hw.intra_latency = hw.inter_latency = 20e-6;
  hw.gpus_per_node = std::max(1u, std::thread::hardware_concurrency());
  // A rank's share of the host's memory.
  hw.memory_bytes =
      static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE) / hw.gpus_per_node;
  hw.efficiency = efficiency;
  hw.description =
      absl::StrFormat("this host, per core: sgemm %.1f GFLOP/s, memcpy %.1f GB/s (measured now)",
                      hw.peak_flops / 1e9, hw.memory_bw / 1e9);
  return hw;
}

// ---------------------------------------------------------------- configs

std::string PlanConfig::Name() const {
  std::string s = absl::StrCat("dp", dp, ".tp", tp, ".pp", pp, ".v", v, ".z", zero, ".mb",
                               micro_batch, ".rc", recompute ? 1 : 0, ".sp", sp ? 1 : 0);
  const ScheduleKind def = v > 1 ? ScheduleKind::kInterleaved1F1B : ScheduleKind::k1F1B;
  if (schedule != def) absl::StrAppend(&s, ".", ScheduleName(schedule));
  return s;
}

absl::StatusOr<PlanConfig> ParsePlanConfig(const std::string& name) {
  PlanConfig c;
  bool schedule_given = false;
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "configuration '", name, "': ", why,
        " (expected e.g. dp8.tp8.pp1.v1.z1.mb1.rc0.sp1, as //tools:plan prints them)"));
  };
  for (absl::string_view part : absl::StrSplit(name, '.')) {
    const std::pair<const char*, int*> ints[] = {{"dp", &c.dp},  {"tp", &c.tp},
                                                 {"pp", &c.pp},  {"v", &c.v},
                                                 {"z", &c.zero}, {"mb", &c.micro_batch}};
    bool matched = false;
    for (const auto& [prefix, field] : ints) {
      if (!absl::StartsWith(part, prefix)) continue;
      int value = 0;
      if (!absl::SimpleAtoi(part.substr(strlen(prefix)), &value) || value < 0) continue;
      *field = value;
      matched = true;
      break;
    }
    if (matched) continue;
    if (part == "rc0" || part == "rc1") {
      c.recompute = part == "rc1";
    } else if (part == "sp0" || part == "sp1") {
      c.sp = part == "sp1";
    } else {
      absl::StatusOr<ScheduleKind> k = ParseSchedule(std::string(part));
      if (!k.ok()) return bad(absl::StrCat("unknown part '", part, "'"));
      c.schedule = *k;
      schedule_given = true;
    }
  }
  if (!schedule_given && c.v > 1) c.schedule = ScheduleKind::kInterleaved1F1B;
  if (c.dp < 1 || c.tp < 1 || c.pp < 1 || c.v < 1 || c.micro_batch < 1 || c.zero > 3) {
    return bad("dp, tp, pp, v and mb must be >= 1 and z 0..3");
  }
  return c;
}

absl::StatusOr<TrainConfig> TrainConfigFor(const Workload& w, const PlanConfig& c) {
  TrainConfig t = w.model;
  const int64_t per_step = int64_t{c.dp} * c.micro_batch;
  if (w.global_batch < 1 || w.global_batch % per_step != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "global batch ", w.global_batch, " does not split into dp ", c.dp, " x micro-batch ",
        c.micro_batch, " = ", per_step, " sequences per accumulation step"));
  }
  if (w.global_batch / per_step > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("global batch: too many micro-batches");
  }
  t.dp = c.dp;
  t.tp = c.tp;
  t.pp = c.pp;
  t.virtual_stages = c.v;
  t.zero = c.zero;
  t.micro_batch = c.micro_batch;
  t.grad_accum = static_cast<int>(w.global_batch / per_step);
  t.global_batch = 0;
  t.recompute = c.recompute;
  t.sequence_parallel = c.sp;
  t.schedule = c.schedule == ScheduleKind::kGPipe  ? "gpipe"
               : c.schedule == ScheduleKind::k1F1B ? "1f1b"
                                                   : "interleaved";
  return t;
}

// ---------------------------------------------------------------- time

namespace {

// The ring on a group of `n` ranks `stride` apart (rank order: tp fastest,
// then dp, then pp).
struct Ring {
  int n = 1;
  int nodes = 1;
  double bw = 0;  // achievable, per rank, one direction
};

Ring RingOf(const Hardware& hw, int n, int stride) {
  Ring r;
  r.n = n;
  const int64_t span = int64_t{n} * stride;
  r.nodes =
      span > hw.gpus_per_node
          ? static_cast<int>(std::min<int64_t>(n, (span + hw.gpus_per_node - 1) / hw.gpus_per_node))
          : 1;
  r.bw = (r.nodes > 1 ? hw.inter_bw : hw.intra_bw) * hw.efficiency;
  return r;
}

// Seconds of a ring collective over `bytes` (the full tensor: the
// all-reduce's buffer, the all-gather's output, the reduce-scatter's input):
// bus bytes (n-1)/n S per pass (two passes for an all-reduce) at the ring's
// bandwidth, and NCCL's ring latency model (a base, and one hop per step
// within or between nodes).
double RingTime(const Hardware& hw, const Ring& r, double bytes, bool all_reduce) {
  if (r.n <= 1 || bytes <= 0) return 0;
  const int passes = all_reduce ? 2 : 1;
  const int steps = passes * (r.n - 1), inter_steps = passes * (r.nodes - 1);
  const double latency =
      hw.base_latency + (steps - inter_steps) * hw.intra_latency + inter_steps * hw.inter_latency;
  return latency + passes * (r.n - 1.0) / r.n * bytes / r.bw;
}

double P2PTime(const Hardware& hw, const Ring& r, double bytes) {
  if (r.n <= 1) return 0;
  return hw.base_latency + (r.nodes > 1 ? hw.inter_latency : hw.intra_latency) + bytes / r.bw;
}

// One micro-batch through one global stage, per TP rank.
struct StageWork {
  double flops_f = 0, flops_b = 0, flops_rc = 0;  // matmuls
  double bytes_f = 0, bytes_b = 0, bytes_rc = 0;  // elementwise kernels
  int tp_f = 0, tp_b = 0, tp_rc = 0;  // collectives of a stage tensor (all-reduce or AG + RS)
  int small_tp = 0;                   // tiny ones (the loss's max and sum)
  double params = 0;                  // this TP rank's parameters of the stage
  int units = 0;
  int layers = 0;
};

// The matmul FLOPs and elementwise bytes of one block's forward for one
// micro-batch on one TP rank.
void BlockForward(const GptConfig& m, int tp, double act_bytes, double* flops, double* bytes) {
  const double b = m.micro_batch, s = m.seq, h = m.hidden, d = m.head_dim();
  const double heads = static_cast<double>(m.heads) / tp;
  const double kv = m.local_kv(tp);
  const double ffn = static_cast<double>(m.ffn_width()) / tp;
  const double window = m.sliding_window > 0 ? std::min<double>(m.sliding_window, s) : s;
  const double mlp_mats = m.mlp == MlpKind::kSwiGlu ? 3 : 2;
  // QKV (or Q and KV), the output projection, the MLP, scores and values.
  *flops = 2 * b * s * h * (heads * d + 2 * kv * d) + 2 * b * s * heads * d * h +
           2 * b * s * h * ffn * mlp_mats + 2 * 2 * b * s * window * heads * d;
  // Per token: two norms and two residual adds over h (replicated, or 1/tp
  // with SP), the activation over the MLP width, softmax over the scores,
  // rotary over q and k.
  const double replicated = 10 * h / (m.sequence_parallel ? tp : 1);
  const double split = (m.mlp == MlpKind::kSwiGlu ? 3 : 2) * ffn + 2 * heads * window +
                       (m.position == PositionKind::kRope ? 4 * (heads + kv) * d : 0);
  *bytes = b * s * (replicated + split) * act_bytes;
}

StageWork WorkOf(const GptConfig& m, int tp, int global_stages, int g, double act_bytes) {
  StageWork w;
  GptPlace place;
  place.pp = global_stages;
  place.pp_rank = g;
  place.tp = tp;
  for (const UnitSpec& u : GptUnits(m, place)) {
    ++w.units;
    for (const ParamSpec& p : u.params) {
      double n = 1;
      for (int64_t d : p.shape) n *= static_cast<double>(d);
      w.params += n;
    }
  }
  const auto [first, end] = BlockRange(m, global_stages, g);
  w.layers = end - first;
  double f = 0, by = 0;
  BlockForward(m, tp, act_bytes, &f, &by);
  for (int l = first; l < end; ++l) {
    const bool rc = l < static_cast<int>(m.recompute.size()) && m.recompute[l];
    w.flops_f += f;
    w.bytes_f += by;
    w.tp_f += 2;
    if (rc) {
      w.flops_rc += f;
      w.bytes_rc += by;
      w.tp_rc += 2;
    }
  }
  const double b = m.micro_batch, s = m.seq, h = m.hidden;
  const double tokens_h = b * s * h / (m.sequence_parallel ? tp : 1);
  if (g == 0) {  // the lookup (a vocabulary-parallel embedding: one all-reduce)
    w.bytes_f += 2 * tokens_h * act_bytes;
    w.tp_f += 1;
  }
  if (g == global_stages - 1) {  // final norm, the head, the loss
    const double vocab = static_cast<double>(VocabPerRank(m, tp));
    w.flops_f += 2 * b * s * h * vocab;
    w.bytes_f += (4 * tokens_h + 4 * b * s * vocab) * act_bytes;
    w.tp_b += 1;  // the head's input gradient
    w.small_tp += 2;
  }
  w.flops_b = 2 * w.flops_f;
  w.bytes_b = 2 * w.bytes_f;
  w.tp_b += w.tp_f;
  return w;
}

// Work for (tp, global stages, stage) is the same across configurations that
// differ elsewhere; GptUnits builds names, so it is worth keeping.
class WorkCache {
 public:
  const StageWork& Get(const GptConfig& m, int tp, int stages, int g, double act_bytes) {
    const auto key = std::make_tuple(tp, stages, g, m.micro_batch, m.sequence_parallel,
                                     !m.recompute.empty(), act_bytes);
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, WorkOf(m, tp, stages, g, act_bytes)).first;
    return it->second;
  }

 private:
  std::map<std::tuple<int, int, int, int64_t, bool, bool, double>, StageWork> cache_;
};

absl::StatusOr<StepTime> Predict(const Workload& w, const PlanConfig& c, const Hardware& hw,
                                 WorkCache* cache) {
  if (int64_t{c.dp} * c.tp * c.pp != w.gpus) {
    return absl::InvalidArgumentError(absl::StrCat("dp ", c.dp, " x tp ", c.tp, " x pp ", c.pp,
                                                   " = ", int64_t{c.dp} * c.tp * c.pp,
                                                   " ranks, not the ", w.gpus, " GPUs"));
  }
  ASSIGN_OR_RETURN(const TrainConfig tc, TrainConfigFor(w, c));
  ASSIGN_OR_RETURN(const GptTrainOptions o, tc.ToOptions());
  const GptConfig& m = o.model;
  RETURN_IF_ERROR(ValidateSchedule(c.schedule, c.pp, tc.grad_accum, c.v));
  const int stages = c.pp * c.v;
  const int mbs = tc.grad_accum;
  const double act = static_cast<double>(DTypeSize(o.engine.compute_dtype));
  const double grad = static_cast<double>(DTypeSize(o.engine.grad_dtype));
  const double gemm = hw.peak_flops * hw.efficiency, mem = hw.memory_bw * hw.efficiency;
  const Ring tp_ring = RingOf(hw, c.tp, 1), dp_ring = RingOf(hw, c.dp, c.tp),
             pp_ring = RingOf(hw, c.pp, c.tp * c.dp);
  const double stage_tensor = static_cast<double>(m.micro_batch) * m.seq * m.hidden * act;
  // A stage tensor's collective: an all-reduce, or with SP an all-gather
  // and a reduce-scatter (the same bus bytes, twice the latency).
  const double tp_one = m.sequence_parallel ? 2 * RingTime(hw, tp_ring, stage_tensor, false)
                                            : RingTime(hw, tp_ring, stage_tensor, true);
  const double tp_small = RingTime(hw, tp_ring, m.micro_batch * m.seq * 4.0, true);
  const double p2p = P2PTime(hw, pp_ring, stage_tensor / (m.sequence_parallel ? c.tp : 1));
  const StagePolicy policy = StagePolicy::For(c.zero);

  struct Cost {
    double compute = 0, recompute = 0, tp = 0, dp = 0, p2p = 0;
    double sum() const { return compute + tp + dp + p2p; }
  };
  std::vector<Cost> fwd(stages), bwd(stages);
  std::vector<double> sf(stages), sb(stages);
  std::vector<double> rank_params(c.pp, 0);
  std::vector<int> rank_units(c.pp, 0);
  double model_flops_mb = 0, recompute_flops_mb = 0;  // one micro-batch, the whole model
  for (int g = 0; g < stages; ++g) {
    const StageWork& sw = cache->Get(m, c.tp, stages, g, act);
    const int r = g % c.pp;
    rank_params[r] += sw.params;
    rank_units[r] += sw.units;
    model_flops_mb += (sw.flops_f + sw.flops_b) * c.tp;
    recompute_flops_mb += sw.flops_rc * c.tp;
    Cost& f = fwd[g];
    Cost& b = bwd[g];
    f.compute = sw.flops_f / gemm + sw.bytes_f / mem;
    b.recompute = sw.flops_rc / gemm + sw.bytes_rc / mem;
    b.compute = sw.flops_b / gemm + sw.bytes_b / mem + b.recompute;
    f.tp = sw.tp_f * tp_one + sw.small_tp * tp_small;
    b.tp = (sw.tp_b + sw.tp_rc) * tp_one;
    if (g < stages - 1) f.p2p = p2p;
    if (g > 0) b.p2p = p2p;
    // DP inside the micro-batch (stages 2-3), overlapped unit by unit with
    // the stage's compute: what exceeds it is exposed, plus one unit's worth
    // (the first gather, the last reduction).
    const double params_bytes = sw.params * act, grad_bytes = sw.params * grad;
    const int units = std::max(1, sw.units);
    if (policy.shard_params) {
      const double gather = RingTime(hw, dp_ring, params_bytes, false);
      f.dp = std::max(0.0, gather - f.compute - f.tp) + gather / units;
    }
    if (policy.reduce_in_backward) {
      double comm = RingTime(hw, dp_ring, grad_bytes, false);
      if (policy.shard_params) comm += RingTime(hw, dp_ring, params_bytes, false);
      b.dp = std::max(0.0, comm - b.compute - b.tp) + comm / units;
    }
    sf[g] = f.sum();
    sb[g] = b.sum();
  }
  ASSIGN_OR_RETURN(const double makespan, PipelineMakespan(c.schedule, c.pp, mbs, c.v, sf, sb));
  // The slowest rank: the most busy time; the rest of the makespan is bubble.
  StepTime t;
  int slow = 0;
  double slow_busy = -1;
  for (int r = 0; r < c.pp; ++r) {
    double busy = 0;
    for (int g = r; g < stages; g += c.pp) busy += mbs * (sf[g] + sb[g]);
    if (busy > slow_busy) {
      slow_busy = busy;
      slow = r;
    }
  }
  double last_backward = 0;  // the slow rank's last micro-batch's backward
  for (int g = slow; g < stages; g += c.pp) {
    t.compute += mbs * (fwd[g].compute + bwd[g].compute);
    t.recompute += mbs * bwd[g].recompute;
    t.exposed_tp += mbs * (fwd[g].tp + bwd[g].tp);
    t.exposed_dp += mbs * (fwd[g].dp + bwd[g].dp);
    t.pp_p2p += mbs * (fwd[g].p2p + bwd[g].p2p);
    last_backward += bwd[g].compute + bwd[g].tp;
  }
  t.bubble = std::max(0.0, makespan - slow_busy);
  // DP once per step (stages 0-1): the reduction of each unit after its last
  // micro-batch's backward, under that backward; stages 1-2 gather the
  // updated parameters after the optimizer.
  const double params = rank_params[slow];
  const int units = std::max(1, rank_units[slow]);
  double dp_end = 0;
  if (!policy.reduce_in_backward) {
    const double reduce = RingTime(hw, dp_ring, params * grad, policy.all_reduce);
    dp_end += std::max(0.0, reduce - last_backward) + reduce / units;
  }
  if (policy.gather_after_step) dp_end += RingTime(hw, dp_ring, params * act, false);
  t.exposed_dp += dp_end;
  // AdamW over the local master shard: read the gradient, read and write the
  // f32 master and both moments, write the compute copy.
  const double local = policy.shard_master ? params / c.dp : params;
  t.optimizer = local * (grad + 24 + act) / mem;
  t.total = makespan + dp_end + t.optimizer;
  t.micro_batches = mbs;
  const double micro_batches_total = static_cast<double>(w.global_batch) / m.micro_batch;
  t.model_flops = model_flops_mb * micro_batches_total;
  t.hardware_flops = (model_flops_mb + recompute_flops_mb) * micro_batches_total;
  t.mfu = t.model_flops / (t.total * w.gpus * hw.peak_flops);
  t.tokens_per_s = static_cast<double>(w.global_batch) * m.seq / t.total;
  return t;
}

}  // namespace

absl::StatusOr<StepTime> PredictStepTime(const Workload& w, const PlanConfig& c,
                                         const Hardware& hw) {
  WorkCache cache;
  return Predict(w, c, hw, &cache);
}

absl::StatusOr<double> PipelineMakespan(ScheduleKind kind, int pp, int m, int v,
                                        const std::vector<double>& stage_forward,
                                        const std::vector<double>& stage_backward) {
  const auto run = [&](int mbs) -> absl::StatusOr<double> {
    ASSIGN_OR_RETURN(const Schedule s, BuildSchedule(kind, pp, mbs, v));
    SimulationOptions o;
    o.policy = P2PPolicyFor(kind);  // the executor's
    o.stage_forward = stage_forward;
    o.stage_backward = stage_backward;
    ASSIGN_OR_RETURN(const SimulationResult r, Simulate(s, o));
    return r.makespan;
  };
  const int m1 = 2 * pp;
  if (m <= m1 + pp) return run(m);
  ASSIGN_OR_RETURN(const double a, run(m1));
  ASSIGN_OR_RETURN(const double b, run(m1 + pp));
  return a + (b - a) / pp * (m - m1);
}

// ---------------------------------------------------------------- memory

namespace {

// The pipeline positions that differ: (pp rank, label).
std::vector<std::pair<int, const char*>> Positions(const PlanConfig& c) {
  if (c.pp == 1) return {{0, "every stage"}};
  std::vector<std::pair<int, const char*>> where = {{0, "first stage"}};
  if (c.pp > 2) where.push_back({1, "middle stage"});
  where.push_back({c.pp - 1, "last stage"});
  return where;
}

}  // namespace

absl::StatusOr<MemoryPlan> PlanMemory(const Workload& w, const PlanConfig& c) {
  ASSIGN_OR_RETURN(const TrainConfig tc, TrainConfigFor(w, c));
  ASSIGN_OR_RETURN(GptTrainOptions o, tc.ToOptions());
  MemoryPlan plan;
  for (const auto& [pp_rank, label] : Positions(c)) {
    ASSIGN_OR_RETURN(MemoryTracker::Snapshot s,
                     GptTrainer::EstimateMemory(o, c.dp * c.tp * c.pp, pp_rank * c.dp * c.tp));
    plan.positions.push_back({label, pp_rank, s});
    plan.peak = std::max(plan.peak, s.total_peak);
  }
  return plan;
}

absl::StatusOr<int64_t> PlanMemoryLowerBound(const Workload& w, const PlanConfig& c) {
  ASSIGN_OR_RETURN(const TrainConfig tc, TrainConfigFor(w, c));
  ASSIGN_OR_RETURN(GptTrainOptions o, tc.ToOptions());
  int64_t bound = 0;
  for (const auto& [pp_rank, label] : Positions(c)) {
    ASSIGN_OR_RETURN(const int64_t b,
                     GptTrainer::MemoryLowerBound(o, c.dp * c.tp * c.pp, pp_rank * c.dp * c.tp));
    bound = std::max(bound, b);
  }
  return bound;
}

// ---------------------------------------------------------------- search

std::vector<PlanConfig> EnumeratePlans(const Workload& w, const SearchOptions& o) {
  std::vector<PlanConfig> out;
  absl::StatusOr<GptTrainOptions> base = w.model.ToOptions();
  if (!base.ok()) return out;
  const GptConfig& m = base->model;
  for (int tp = 1; tp <= w.gpus; ++tp) {
    if (w.gpus % tp != 0 || (o.max_tp > 0 && o.max_tp % tp != 0)) continue;
    for (int pp = 1; pp <= w.gpus / tp; ++pp) {
      if ((w.gpus / tp) % pp != 0) continue;
      const int dp = w.gpus / tp / pp;
      for (int v = 1; v <= (pp > 1 ? o.max_virtual_stages : 1); ++v) {
        if (!m.Validate(pp, tp, v).ok()) continue;
        for (int mb = 1; mb <= o.max_micro_batch; mb *= 2) {
          if (w.global_batch % (int64_t{dp} * mb) != 0) continue;
          const int64_t mbs = w.global_batch / (int64_t{dp} * mb);
          if (v > 1 && mbs % pp != 0) continue;
          for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp) {
            if (sp && (int64_t{mb} * m.seq) % tp != 0) continue;
            for (int zero = 0; zero <= 3; ++zero) {
              if (dp == 1 && zero > 0) continue;  // nothing to shard over
              for (int rc = 0; rc <= 1; ++rc) {
                PlanConfig c;
                c.dp = dp;
                c.tp = tp;
                c.pp = pp;
                c.v = v;
                c.zero = zero;
                c.micro_batch = mb;
                c.recompute = rc == 1;
                c.sp = sp == 1;
                c.schedule = v > 1 ? ScheduleKind::kInterleaved1F1B : ScheduleKind::k1F1B;
                out.push_back(c);
              }
            }
          }
        }
      }
    }
  }
  return out;
}

absl::StatusOr<SearchResult> SearchPlans(const Workload& w, const Hardware& hw,
                                         const SearchOptions& o) {
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(w.model.ToOptions().status());
  SearchResult r;
  WorkCache cache;
  SearchOptions within = o;
  if (within.max_tp <= 0) within.max_tp = hw.gpus_per_node;
  for (const PlanConfig& c : EnumeratePlans(w, within)) {
    absl::StatusOr<StepTime> t = Predict(w, c, hw, &cache);
    if (!t.ok()) continue;  // e.g. a model the grid does not cut (named in --explain)
    Candidate k;
    k.config = c;
    k.time = *t;
    r.evaluated.push_back(k);
  }
  r.enumerated = static_cast<int>(r.evaluated.size());
  std::stable_sort(
      r.evaluated.begin(), r.evaluated.end(),
      [](const Candidate& a, const Candidate& b) { return a.time.total < b.time.total; });
  const double limit = hw.memory_bytes * o.memory_fraction;
  int evaluated = 0;
  for (Candidate& k : r.evaluated) {
    if (static_cast<int>(r.best.size()) >= o.top && evaluated >= o.min_memory_evaluated) break;
    const std::string where = absl::StrCat("configuration ", k.config.Name());
    if (limit > 0 && o.prune) {
      absl::StatusOr<int64_t> bound = PlanMemoryLowerBound(w, k.config);
      RETURN_IF_ERROR(Annotate(bound.status(), where));
      k.lower_bound = *bound;
      if (static_cast<double>(k.lower_bound) > limit) {
        k.pruned = true;
        ++r.pruned;
        continue;
      }
    }
    absl::StatusOr<MemoryPlan> memory = PlanMemory(w, k.config);
    RETURN_IF_ERROR(Annotate(memory.status(), where));
    k.memory = *std::move(memory);
    k.memory_known = true;
    k.fits = limit <= 0 || static_cast<double>(k.memory.peak) <= limit;
    ++evaluated;
    if (k.fits && static_cast<int>(r.best.size()) < o.top) r.best.push_back(k);
  }
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return r;
}

// ---------------------------------------------------------------- output

namespace {

Json TimeJson(const StepTime& t) {
  Json j = Json::Object();
  j.Set("total_s", Json(t.total));
  j.Set("compute_s", Json(t.compute));
  j.Set("recompute_s", Json(t.recompute));
  j.Set("exposed_tp_s", Json(t.exposed_tp));
  j.Set("exposed_dp_s", Json(t.exposed_dp));
  j.Set("pp_p2p_s", Json(t.pp_p2p));
  j.Set("bubble_s", Json(t.bubble));
  j.Set("optimizer_s", Json(t.optimizer));
  j.Set("mfu", Json(t.mfu));
  j.Set("tokens_per_s", Json(t.tokens_per_s));
  j.Set("micro_batches", Json(t.micro_batches));
  return j;
}

Json MemoryJson(const MemoryPlan& m) {
  Json positions = Json::Array();
  for (const PositionMemory& p : m.positions) {
    Json j = Json::Object();
    j.Set("where", Json(p.where));
    j.Set("pp_rank", Json(p.pp_rank));
    j.Set("peak_bytes", Json(p.memory.total_peak));
    Json cats = Json::Object();
    for (int c = 0; c < kNumMemCategories; ++c) {
      cats.Set(MemCategoryName(static_cast<MemCategory>(c)), Json(p.memory.peak[c]));
    }
    j.Set("peak_by_category", std::move(cats));
    positions.Push(std::move(j));
  }
  Json j = Json::Object();
  j.Set("peak_bytes", Json(m.peak));
  j.Set("positions", std::move(positions));
  return j;
}

}  // namespace

std::string SearchJson(const Workload& w, const Hardware& hw, const SearchResult& r) {
  Json j = Json::Object();
  j.Set("hardware", Json(hw.name));
  j.Set("gpus", Json(w.gpus));
  j.Set("global_batch", Json(w.global_batch));
  j.Set("seq", Json(w.model.seq));
  j.Set("device_memory_bytes", Json(hw.memory_bytes));
  j.Set("enumerated", Json(r.enumerated));
  j.Set("pruned_by_lower_bound", Json(r.pruned));
  Json all = Json::Array();
  for (const Candidate& k : r.evaluated) {
    Json c = Json::Object();
    c.Set("config", Json(k.config.Name()));
    c.Set("time", TimeJson(k.time));
    if (k.memory_known) {
      c.Set("memory", MemoryJson(k.memory));
      c.Set("fits", Json(k.fits));
    } else if (k.pruned) {
      c.Set("memory_lower_bound_bytes", Json(k.lower_bound));
      c.Set("fits", Json(false));
    }
    all.Push(std::move(c));
  }
  j.Set("configurations", std::move(all));
  Json best = Json::Array();
  for (const Candidate& k : r.best) best.Push(Json(k.config.Name()));
  j.Set("best", std::move(best));
  return j.Dump();
}

namespace {

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

std::string SearchSvg(const Workload& w, const Hardware& hw, const SearchResult& r,
                      double memory_fraction) {
  const double W = 760, H = 480, left = 70, right = 20, top = 40, bottom = 50;
  double max_mem = hw.memory_bytes, max_t = 0, min_t = 1e300;
  for (const Candidate& k : r.evaluated) {
    if (!k.memory_known) continue;
    max_mem = std::max(max_mem, static_cast<double>(k.memory.peak));
    max_t = std::max(max_t, k.time.total);
    min_t = std::min(min_t, k.time.total);
  }
  if (max_t <= 0) max_t = min_t = 1;
  max_mem *= 1.05;
  const double t_lo = min_t * 0.95, t_hi = max_t * 1.05;
  const auto x = [&](double bytes) { return left + (W - left - right) * bytes / max_mem; };
  const auto y = [&](double s) {
    return H - bottom - (H - top - bottom) * (s - t_lo) / std::max(1e-12, t_hi - t_lo);
  };
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
      "fill=\"white\"/>\n<text x=\"%.0f\" y=\"20\" font-size=\"14\">%d GPUs (%s), global batch "
      "%lld, seq %d: predicted step time against peak memory per rank</text>\n",
      W, H, left, w.gpus, XmlEscape(hw.name), static_cast<long long>(w.global_batch), w.model.seq);
  absl::StrAppendFormat(
      &svg,
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
      left, H - bottom, W - right, H - bottom, left, top, left, H - bottom);
  for (int i = 0; i <= 4; ++i) {
    const double b = max_mem * i / 4, s = t_lo + (t_hi - t_lo) * i / 4;
    absl::StrAppendFormat(&svg,
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f GB</text>\n"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g s</text>\n",
                          x(b), H - bottom + 16, b / 1e9, left - 4, y(s) + 4, s);
  }
  if (hw.memory_bytes > 0) {
    for (const auto& [bytes, label, dash] :
         {std::make_tuple(hw.memory_bytes, "device memory", ""),
          std::make_tuple(hw.memory_bytes * memory_fraction, "usable",
                          " stroke-dasharray=\"4 3\"")}) {
      absl::StrAppendFormat(
          &svg,
          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"red\"%s/>"
          "<text x=\"%.1f\" y=\"%.1f\" fill=\"red\">%s</text>\n",
          x(bytes), top, x(bytes), H - bottom, dash, x(bytes) + 3, top + 12, label);
    }
  }
  for (const Candidate& k : r.evaluated) {
    if (!k.memory_known) continue;
    bool best = false;
    for (const Candidate& b : r.best) best = best || b.config.Name() == k.config.Name();
    absl::StrAppendFormat(&svg,
                          "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\" opacity=\"0.8\">"
                          "<title>%s: %.3g s, %.1f GB</title></circle>\n",
                          x(static_cast<double>(k.memory.peak)), y(k.time.total), best ? 5 : 3,
                          best ? "green" : (k.fits ? "steelblue" : "gray"), k.config.Name(),
                          k.time.total, k.memory.peak / 1e9);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">peak memory per rank "
                        "(green: the top; blue: fits; gray: does not)</text>\n</svg>\n",
                        (W + left) / 2, H - 12);
  return svg;
}

}  // namespace trireme
