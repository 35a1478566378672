// //tools:plan: which 3D configurations of a model fit a cluster, and which
// is fastest (models/planner.h). --help lists the flags.
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/gpt_config.h"
#include "models/planner.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

constexpr char kUsage[] =
    "usage: plan --model=NAME --gpus=N --global_batch=B [flags]\n"
    "  --model=NAME         a //:train preset list: llama-70b, llama-7b, gpt2-1.5b, ... or\n"
    "                       'llama,small'; any //:train model flag (--layers, --hidden, --heads,\n"
    "                       --kv_heads, --ffn, --vocab, --seq, --precision, ...) after it wins\n"
    "  --seq=S              sequence length (default: the model's)\n"
    "  --global_batch=B     sequences per step (required)\n"
    "  --gpus=N             GPUs (or, with --hardware=local, ranks: one per core)\n"
    "  --hardware=H         a100-80gb, h100-80gb, h200, local (this host, measured now) or a\n"
    "                       description file (default h100-80gb)\n"
    "  --gpus_per_node=G    overrides the hardware's\n"
    "  --efficiency=E       overrides the hardware's efficiency constant (local: 1, the sgemm\n"
    "                       rate; //bench:plan_check measures this host's)\n"
    "  --top=N              configurations to list (default 5)\n"
    "  --memory_fraction=F  usable share of device memory (default 0.9)\n"
    "  --max_micro_batch=M  largest micro-batch tried (powers of two; default 8)\n"
    "  --json=FILE          every configuration evaluated, as JSON\n"
    "  --svg=FILE           predicted step time against peak memory, with the memory line\n"
    "  --explain=CONFIG     details one configuration (e.g. dp8.tp8.pp1.v1.z1.mb1.rc1.sp1)\n"
    "  --no_prune           estimate every configuration's memory in full (slow: checks the\n"
    "                       lower bound's pruning; the SVG then has every point)\n"
    "  --fewest_gpus        also: the fewest GPUs (a node times a power of two) that train\n"
    "                       the model at this batch, and that hold its weights to serve it\n";

struct Flags {
  Workload w;
  std::string model, hardware = "h100-80gb", json, svg, explain;
  int gpus_per_node = 0;
  double efficiency = 0;
  bool fewest = false;
  SearchOptions search;
};

absl::StatusOr<Flags> Parse(const std::vector<std::string>& args) {
  Flags f;
  f.w.model.precision = "bf16";
  std::vector<std::pair<std::string, std::string>> model_flags;
  bool have_model = false;
  for (const std::string& a : args) {
    if (a == "--fewest_gpus") {
      f.fewest = true;
      continue;
    }
    if (a == "--no_prune") {
      f.search.prune = false;
      f.search.min_memory_evaluated = std::numeric_limits<int>::max();
      continue;
    }
    const size_t eq = a.find('=');
    if (!absl::StartsWith(a, "--") || eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", a, "' is not --name=value (see --help)"));
    }
    const std::string name = a.substr(2, eq - 2), v = a.substr(eq + 1);
    bool ok = true;
    if (name == "model") {
      RETURN_IF_ERROR(f.w.model.ApplyPreset(v, [](const std::string&) { return false; }));
      f.model = v;
      have_model = true;
    } else if (name == "global_batch") {
      ok = absl::SimpleAtoi(v, &f.w.global_batch) && f.w.global_batch > 0;
    } else if (name == "gpus") {
      ok = absl::SimpleAtoi(v, &f.w.gpus) && f.w.gpus > 0;
    } else if (name == "hardware") {
      f.hardware = v;
    } else if (name == "gpus_per_node") {
      ok = absl::SimpleAtoi(v, &f.gpus_per_node) && f.gpus_per_node > 0;
    } else if (name == "efficiency") {
      ok = absl::SimpleAtod(v, &f.efficiency) && f.efficiency > 0 && f.efficiency <= 1;
    } else if (name == "top") {
      ok = absl::SimpleAtoi(v, &f.search.top) && f.search.top > 0;
    } else if (name == "memory_fraction") {
      ok = absl::SimpleAtod(v, &f.search.memory_fraction) && f.search.memory_fraction > 0 &&
           f.search.memory_fraction <= 1;
    } else if (name == "max_micro_batch") {
      ok = absl::SimpleAtoi(v, &f.search.max_micro_batch) && f.search.max_micro_batch > 0;
    } else if (name == "json") {
      f.json = v;
    } else if (name == "svg") {
      f.svg = v;
    } else if (name == "explain") {
      f.explain = v;
    } else {
      model_flags.emplace_back(name, v);  // a //:train model flag
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("--", name, "='", v, "': invalid"));
  }
  static const std::set<std::string> kModelFlags = [] {
    std::set<std::string> s(TrainConfig::ModelOptions().begin(), TrainConfig::ModelOptions().end());
    return s;
  }();
  for (const auto& [k, v] : model_flags) {
    if (!kModelFlags.count(k)) {
      return absl::InvalidArgumentError(absl::StrCat("--", k, ": not a flag of plan (see --help)"));
    }
    RETURN_IF_ERROR(f.w.model.Set(k, v));
  }
  if (!have_model)
    return absl::InvalidArgumentError("--model is required (e.g. --model=llama-70b)");
  if (f.w.global_batch <= 0) return absl::InvalidArgumentError("--global_batch is required");
  return f;
}

std::string Gb(double bytes) { return absl::StrFormat("%.1f GB", bytes / 1e9); }

void PrintTime(const StepTime& t, const Hardware& hw) {
  const auto pct = [&](double s) { return 100 * s / t.total; };
  printf(
      "  step %.3f s: compute %.3f (%.0f%%, recompute %.3f), exposed TP %.3f (%.0f%%), "
      "exposed DP %.3f (%.0f%%), PP p2p %.3f (%.0f%%), bubble %.3f (%.0f%%), optimizer %.3f "
      "(%.0f%%)\n",
      t.total, t.compute, pct(t.compute), t.recompute, t.exposed_tp, pct(t.exposed_tp),
      t.exposed_dp, pct(t.exposed_dp), t.pp_p2p, pct(t.pp_p2p), t.bubble, pct(t.bubble),
      t.optimizer, pct(t.optimizer));
  printf(
      "  communication exposed: %.0f%% of the step; MFU %.1f%% (%.0f TFLOP/s per GPU of %.0f "
      "peak); %.0f tokens/s; %d micro-batches per DP rank\n",
      pct(t.exposed_tp + t.exposed_dp + t.pp_p2p), 100 * t.mfu, t.mfu * hw.peak_flops / 1e12,
      hw.peak_flops / 1e12, t.tokens_per_s, t.micro_batches);
}

void PrintMemory(const MemoryPlan& m, double limit) {
  for (const PositionMemory& p : m.positions) {
    const auto cat = [&](MemCategory c) { return Gb(p.memory.peak[static_cast<int>(c)]); };
    printf(
        "  %-13s (pp rank %d): peak %s = param %s, grad %s, master %s, optim %s, "
        "activation %s, comm %s, workspace %s (peaks per category)\n",
        p.where.c_str(), p.pp_rank, Gb(p.memory.total_peak).c_str(),
        cat(MemCategory::kParam).c_str(), cat(MemCategory::kGrad).c_str(),
        cat(MemCategory::kMaster).c_str(), cat(MemCategory::kOptim).c_str(),
        cat(MemCategory::kActivation).c_str(), cat(MemCategory::kComm).c_str(),
        cat(MemCategory::kWorkspace).c_str());
  }
  if (limit > 0) {
    printf("  verdict: %s (peak %s, usable %s)\n", m.peak <= limit ? "fits" : "does NOT fit",
           Gb(m.peak).c_str(), Gb(limit).c_str());
  }
}

absl::Status Explain(const Flags& f, const Hardware& hw) {
  ASSIGN_OR_RETURN(const PlanConfig c, ParsePlanConfig(f.explain));
  ASSIGN_OR_RETURN(const TrainConfig tc, TrainConfigFor(f.w, c));
  ASSIGN_OR_RETURN(const StepTime t, PredictStepTime(f.w, c, hw));
  printf(
      "\n%s on %d x %s: //:train --dp=%d --tp=%d --pp=%d --virtual_stages=%d --zero=%d "
      "--micro_batch=%d --grad_accum=%d --schedule=%s%s%s\n",
      c.Name().c_str(), f.w.gpus, hw.name.c_str(), tc.dp, tc.tp, tc.pp, tc.virtual_stages, tc.zero,
      tc.micro_batch, tc.grad_accum, tc.schedule.c_str(), tc.recompute ? " --recompute" : "",
      tc.sequence_parallel ? " --sequence_parallel" : "");
  PrintTime(t, hw);
  ASSIGN_OR_RETURN(const MemoryPlan m, PlanMemory(f.w, c));
  PrintMemory(m, hw.memory_bytes * f.search.memory_fraction);
  return absl::OkStatus();
}

// The fewest GPUs (multiples of a node) with a fitting configuration; and
// the fewest that hold the weights (compute precision) for serving, with a
// 10% margin for activations and the KV cache of a few sequences.
absl::Status Fewest(const Flags& f, const Hardware& hw) {
  ASSIGN_OR_RETURN(const GptTrainOptions o, f.w.model.ToOptions());
  const double params = static_cast<double>(GptParameterCount(o.model));
  const double weights = params * DTypeSize(o.engine.compute_dtype);
  const double usable = hw.memory_bytes * f.search.memory_fraction;
  if (!(usable > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--fewest_gpus: the hardware '", hw.name, "' gives no device memory"));
  }
  int serve = 1;
  while (weights * 1.1 / serve > usable) serve *= 2;
  printf(
      "\nServing: the weights are %s (%.1fB parameters in %s); %d x %s GPUs hold them with "
      "10%% to spare for activations and the KV cache (tensor parallel %d)\n",
      Gb(weights).c_str(), params / 1e9, f.w.model.precision.c_str(), serve,
      Gb(hw.memory_bytes).c_str(), serve);
  for (int gpus = hw.gpus_per_node; gpus <= 1024 * hw.gpus_per_node; gpus *= 2) {
    Workload w = f.w;
    w.gpus = gpus;
    SearchOptions o2 = f.search;
    o2.top = 1;
    o2.min_memory_evaluated = 0;
    ASSIGN_OR_RETURN(const SearchResult r, SearchPlans(w, hw, o2));
    if (r.best.empty()) {
      printf("Training: %4d GPUs: nothing fits (%d configurations)\n", gpus, r.enumerated);
      continue;
    }
    printf(
        "Training: %4d GPUs is the fewest (powers of two times a node) at global batch %lld: "
        "%s, peak %s per GPU, step %.2f s\n",
        gpus, static_cast<long long>(w.global_batch), r.best[0].config.Name().c_str(),
        Gb(r.best[0].memory.peak).c_str(), r.best[0].time.total);
    return absl::OkStatus();
  }
  printf("Training: no configuration fits up to %d GPUs\n", 1024 * hw.gpus_per_node);
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

absl::Status Run(const std::vector<std::string>& args) {
  ASSIGN_OR_RETURN(const Flags f, Parse(args));
  Hardware hw;
  if (f.hardware == "local") {
    hw = MeasureThisMachine(1.0);
  } else {
    ASSIGN_OR_RETURN(hw, LoadHardware(f.hardware));
  }
  if (f.gpus_per_node > 0) hw.gpus_per_node = f.gpus_per_node;
  if (f.efficiency > 0) hw.efficiency = f.efficiency;
  ASSIGN_OR_RETURN(const GptTrainOptions base, f.w.model.ToOptions());
  printf("plan: %s (%s), %.2fB parameters, seq %d, global batch %lld, %s\n", f.model.c_str(),
         GptArchitecture(base.model).c_str(), GptParameterCount(base.model) / 1e9, f.w.model.seq,
         static_cast<long long>(f.w.global_batch), f.w.model.precision.c_str());
  printf(
      "hardware: %s: %s; %.0f TFLOP/s, %s, %d per node, links %.0f / %.0f GB/s within / "
      "between nodes; efficiency %.2f\n",
      hw.name.c_str(), hw.description.c_str(), hw.peak_flops / 1e12, Gb(hw.memory_bytes).c_str(),
      hw.gpus_per_node, hw.intra_bw / 1e9, hw.inter_bw / 1e9, hw.efficiency);
  if (!f.explain.empty()) return Explain(f, hw);
  ASSIGN_OR_RETURN(const SearchResult r, SearchPlans(f.w, hw, f.search));
  int evaluated = 0, fitting = 0;
  for (const Candidate& k : r.evaluated) {
    evaluated += k.memory_known;
    fitting += k.memory_known && k.fits;
  }
  printf(
      "%d GPUs: %d valid configurations, time predicted for all. Memory, fastest first: %d "
      "ruled out by their lower bound (master + optimizer state + predicted activations), %d "
      "estimated in full (the trainer's own accounting on the meta device), %d of which fit in "
      "%s x %.2f. %.2f s\n",
      f.w.gpus, r.enumerated, r.pruned, evaluated, fitting, Gb(hw.memory_bytes).c_str(),
      f.search.memory_fraction, r.seconds);
  if (r.best.empty()) {
    printf(
        "nothing fits among the %d fastest: more GPUs, a smaller --global_batch or "
        "--max_micro_batch, or see --fewest_gpus\n",
        evaluated);
  } else {
    printf("\n%-4s %-34s %9s %8s %6s %6s %6s %6s %7s %6s %10s\n", "#", "configuration", "step (s)",
           "MFU", "TP", "DP", "p2p", "bubble", "optim", "comm", "peak/GPU");
    for (size_t i = 0; i < r.best.size(); ++i) {
      const Candidate& k = r.best[i];
      const StepTime& t = k.time;
      const auto pct = [&](double s) { return absl::StrFormat("%.0f%%", 100 * s / t.total); };
      printf("%-4zu %-34s %9.3f %7.1f%% %6s %6s %6s %6s %7s %6s %10s\n", i + 1,
             k.config.Name().c_str(), t.total, 100 * t.mfu, pct(t.exposed_tp).c_str(),
             pct(t.exposed_dp).c_str(), pct(t.pp_p2p).c_str(), pct(t.bubble).c_str(),
             pct(t.optimizer).c_str(), pct(t.exposed_tp + t.exposed_dp + t.pp_p2p).c_str(),
             Gb(k.memory.peak).c_str());
    }
    printf("\nthe top configuration, explained:\n");
    PrintTime(r.best[0].time, hw);
    PrintMemory(r.best[0].memory, hw.memory_bytes * f.search.memory_fraction);
  }
  if (!f.json.empty()) {
    RETURN_IF_ERROR(WriteFile(f.json, SearchJson(f.w, hw, r)));
    printf("wrote %s\n", f.json.c_str());
  }
  if (!f.svg.empty()) {
    RETURN_IF_ERROR(WriteFile(f.svg, SearchSvg(f.w, hw, r, f.search.memory_fraction)));
    printf("wrote %s\n", f.svg.c_str());
  }
  if (f.fewest) RETURN_IF_ERROR(Fewest(f, hw));
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      printf("%s", trireme::kUsage);
      return 0;
    }
  }
  absl::Status s = trireme::Run(args);
  if (!s.ok()) {
    fprintf(stderr, "plan: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
