#include "models/train_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

using Member = std::variant<int TrainConfig::*, uint64_t TrainConfig::*, double TrainConfig::*,
                            bool TrainConfig::*, std::string TrainConfig::*>;

struct Entry {
  const char* name;
  Member member;
  const char* help;
};

const std::vector<Entry>& Entries() {
  using C = TrainConfig;
  static const auto* e = new std::vector<Entry>{
      {"config", &C::config, "a JSON file whose keys mirror these flags (flags override it)"},
      {"preset", &C::preset,
       "comma-separated presets applied in order (explicit flags win): an architecture (gpt2; "
       "llama: rmsnorm, rope, swiglu, kv_heads 2, untied head, no biases), a shape (tiny, "
       "default, small) or a published model (gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1.5b, "
       "llama-7b, llama-13b, llama-70b)"},
      {"layers", &C::layers, "transformer blocks"},
      {"hidden", &C::hidden, "hidden size"},
      {"heads", &C::heads, "attention heads"},
      {"kv_heads", &C::kv_heads,
       "key/value heads (grouped-query attention; 1: multi-query; 0: heads)"},
      {"ffn", &C::ffn, "MLP width (0: 4 x hidden)"},
      {"norm", &C::norm, "layernorm or rmsnorm"},
      {"position", &C::position, "learned (a position table) or rope (rotary q and k)"},
      {"rope_base", &C::rope_base, "RoPE's base (angle of pair i: p x base^(-2i/head_size))"},
      {"mlp", &C::mlp, "gelu or swiglu"},
      {"sliding_window", &C::sliding_window,
       "each position attends to the last N positions, itself included (0: all earlier)"},
      {"tied_head", &C::tied_head, "the LM head is the token embedding (else its own matrix)"},
      {"bias", &C::bias, "biases in the linear layers (QKV, projections, MLP)"},
      {"seq", &C::seq, "sequence length"},
      {"vocab", &C::vocab, "vocabulary size (>= 256 with --data: byte-level tokens)"},
      {"micro_batch", &C::micro_batch, "sequences per micro-batch"},
      {"grad_accum", &C::grad_accum, "micro-batches per DP rank per step"},
      {"global_batch", &C::global_batch,
       "sequences per step; must equal micro_batch x grad_accum x dp (0: that product)"},
      {"dp", &C::dp, "data-parallel degree"},
      {"tp", &C::tp, "tensor-parallel degree"},
      {"pp", &C::pp, "pipeline-parallel degree"},
      {"virtual_stages", &C::virtual_stages, "model chunks per pipeline rank (interleaved 1F1B)"},
      {"zero", &C::zero, "ZeRO stage (0-3)"},
      {"sequence_parallel", &C::sequence_parallel, "sequence parallelism in the TP regions"},
      {"recompute", &C::recompute, "recompute every block in backward (activation checkpointing)"},
      {"schedule", &C::schedule, "gpipe, 1f1b or interleaved"},
      {"precision", &C::precision,
       "compute and gradient dtype: f32, bf16 or f16 (+ loss scaling); masters and optimizer "
       "state are f32"},
      {"optimizer", &C::optimizer, "adamw or sgd (momentum 0.9)"},
      {"lr", &C::lr, "peak learning rate"},
      {"lr_schedule", &C::lr_schedule, "cosine (linear warmup, decay to lr/10) or constant"},
      {"warmup", &C::warmup, "warmup steps"},
      {"weight_decay", &C::weight_decay, "decoupled weight decay (AdamW) / L2 (SGD)"},
      {"clip", &C::clip, "global grad-norm clipping (0: off)"},
      {"on_nonfinite", &C::on_nonfinite,
       "a non-finite gradient on any rank (f32/bf16): skip the step everywhere, or abort"},
      {"seed", &C::seed, "parameter and data seed"},
      {"steps", &C::steps, "optimizer steps (the last step number, when resuming)"},
      {"data", &C::data,
       "a text file (byte-level tokens; the last 10% is validation); empty: the synthetic "
       "corpus"},
      {"eval_every", &C::eval_every, "validation loss every N steps and at the end (0: off)"},
      {"eval_batches", &C::eval_batches, "global batches per validation"},
      {"log_every", &C::log_every, "print a progress line every N steps"},
      {"checkpoint_dir", &C::checkpoint_dir, "where checkpoints go (empty: none)"},
      {"checkpoint_every", &C::checkpoint_every,
       "save every N steps and at the end (0: only at the end)"},
      {"keep_checkpoints", &C::keep_checkpoints, "committed checkpoints kept (0: all)"},
      {"resume", &C::resume,
       "a checkpoint directory, a checkpoint root (its latest), or 'auto' (--checkpoint_dir's "
       "newest committed step, if there is one)"},
      {"save_on_signal", &C::save_on_signal,
       "signals (comma-separated names: TERM, INT, USR1, USR2, HUP) on which every rank "
       "finishes the current step, saves a checkpoint (with --checkpoint_dir) and the job exits "
       "with status 3; a second signal (2 s or more after the first) exits at once. Empty: the "
       "default actions"},
      {"memory_budget", &C::memory_budget,
       "at most this much host memory for the job's ranks on each host, e.g. 16G or 512M "
       "(empty: what the kernel reports available, cgroup limit included); GPUs: their free "
       "memory"},
      {"force", &C::force,
       "start even when the memory check says the run will not fit (a warning instead of the "
       "error)"},
      {"backend", &C::backend,
       "threads, mpi, nccl (under mpirun with --device=cuda: NCCL data communicators, mpi for "
       "host values), or auto (mpi when started by mpirun)"},
      {"device", &C::device,
       "cpu (synchronous: every kernel and collective completes before the next starts), "
       "cpu_async (kernels, copies and collectives on streams; communication overlaps compute), "
       "or cuda (a GPU per rank, ranks spread over the visible GPUs: by rank with threads, by "
       "local rank under mpirun; cuda:N puts every rank of this process on GPU N)"},
  };
  return *e;
}

const Entry* Find(absl::string_view name) {
  for (const Entry& e : Entries()) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

const char* TypeName(const Member& m) {
  switch (m.index()) {
    case 0:
      return "int";
    case 1:
      return "uint64";
    case 2:
      return "double";
    case 3:
      return "bool";
    default:
      return "string";
  }
}

// As absl's flags print a double: 15 significant digits if that reads back
// exactly, else 17.
std::string DoubleText(double v) {
  std::string s = absl::StrFormat("%.*g", std::numeric_limits<double>::digits10, v);
  double back = 0;
  if (std::isfinite(v) && (!absl::SimpleAtod(s, &back) || back != v)) {
    s = absl::StrFormat("%.*g", std::numeric_limits<double>::max_digits10, v);
  }
  return s;
}

bool ParseBool(absl::string_view t, bool* v) {
  const std::string s = absl::AsciiStrToLower(t);
  if (s == "true" || s == "1" || s == "yes" || s == "t" || s == "y") {
    *v = true;
  } else if (s == "false" || s == "0" || s == "no" || s == "f" || s == "n") {
    *v = false;
  } else {
    return false;
  }
  return true;
}

absl::Status Positive(const char* name, double v) {
  if (v > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--", name, "=", v, " must be > 0"));
}
absl::Status NonNegative(const char* name, double v) {
  if (v >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--", name, "=", v, " must be >= 0"));
}

absl::StatusOr<DType> ParsePrecision(const std::string& p) {
  if (p == "f32") return DType::kF32;
  if (p == "bf16") return DType::kBF16;
  if (p == "f16") return DType::kF16;
  return absl::InvalidArgumentError(absl::StrCat("--precision='", p, "': use f32, bf16 or f16"));
}

using Preset = std::map<std::string, std::string>;

Preset ArchitectureOf(const GptConfig& c) {
  return {{"norm", c.norm == NormKind::kRmsNorm ? "rmsnorm" : "layernorm"},
          {"position", c.position == PositionKind::kRope ? "rope" : "learned"},
          {"mlp", c.mlp == MlpKind::kSwiGlu ? "swiglu" : "gelu"},
          {"kv_heads", absl::StrCat(c.kv_heads)},
          {"tied_head", c.tied_head ? "true" : "false"},
          {"bias", c.bias ? "true" : "false"}};
}

const std::map<std::string, Preset>& Presets() {
  static const auto* p = [] {
    auto* m = new std::map<std::string, Preset>{
        {"tiny", {{"layers", "2"}, {"hidden", "32"}, {"heads", "4"}, {"seq", "16"}}},
        {"default", {{"layers", "4"}, {"hidden", "64"}, {"heads", "4"}, {"seq", "32"}}},
        {"small", {{"layers", "6"}, {"hidden", "128"}, {"heads", "8"}, {"seq", "64"}}},
    };
    (*m)["gpt2"] = ArchitectureOf(GptConfig{});
    GptConfig llama;
    UseLlamaArchitecture(&llama);
    (*m)["llama"] = ArchitectureOf(llama);
    for (const NamedShape& n : GptNamedShapes()) {
      const GptConfig& c = n.config;
      Preset q = ArchitectureOf(c);
      q.insert({{"layers", absl::StrCat(c.layers)},
                {"hidden", absl::StrCat(c.hidden)},
                {"heads", absl::StrCat(c.heads)},
                {"ffn", absl::StrCat(c.ffn)},
                {"vocab", absl::StrCat(c.vocab)},
                {"seq", absl::StrCat(c.seq)}});
      (*m)[n.name] = q;
    }
    return m;
  }();
  return *p;
}

// A JSON value as an option's text.
absl::StatusOr<std::string> JsonText(const Json& value, const std::string& key,
                                     const std::string& where) {
  switch (value.kind()) {
    case Json::Kind::kString:
      return value.string_value();
    case Json::Kind::kBool:
      return std::string(value.bool_value() ? "true" : "false");
    case Json::Kind::kInt:
      return absl::StrCat(value.int_value());
    case Json::Kind::kDouble:
      return absl::StrFormat("%.17g", value.number_value());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": '", key, "' must be a string, number or bool"));
  }
}

}  // namespace

const std::vector<TrainConfig::Option>& TrainConfig::Options() {
  static const auto* o = [] {
    auto* v = new std::vector<Option>;
    for (const Entry& e : Entries()) v->push_back({e.name, TypeName(e.member), e.help});
    return v;
  }();
  return *o;
}

absl::Status TrainConfig::Set(absl::string_view name, absl::string_view text) {
  const Entry* e = Find(name);
  if (e == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown key '", name, "'"));
  const auto bad = [&](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' = '", text, "': not ", what));
  };
  switch (e->member.index()) {
    case 0: {
      int v = 0;
      if (!absl::SimpleAtoi(text, &v)) return bad("an integer");
      this->*std::get<0>(e->member) = v;
      break;
    }
    case 1: {
      uint64_t v = 0;
      if (!absl::SimpleAtoi(text, &v)) return bad("a non-negative integer");
      this->*std::get<1>(e->member) = v;
      break;
    }
    case 2: {
      double v = 0;
      if (!absl::SimpleAtod(text, &v)) return bad("a number");
      this->*std::get<2>(e->member) = v;
      break;
    }
    case 3: {
      bool v = false;
      if (!ParseBool(text, &v)) return bad("a bool (true or false)");
      this->*std::get<3>(e->member) = v;
      break;
    }
    default:
      this->*std::get<4>(e->member) = std::string(text);
  }
  return absl::OkStatus();
}

std::string TrainConfig::Get(absl::string_view name) const {
  const Entry* e = Find(name);
  if (e == nullptr) return "";
  switch (e->member.index()) {
    case 0:
      return absl::StrCat(this->*std::get<0>(e->member));
    case 1:
      return absl::StrCat(this->*std::get<1>(e->member));
    case 2:
      return DoubleText(this->*std::get<2>(e->member));
    case 3:
      return this->*std::get<3>(e->member) ? "true" : "false";
    default:
      return this->*std::get<4>(e->member);
  }
}

absl::Status TrainConfig::ApplyPreset(const std::string& name,
                                      const std::function<bool(const std::string&)>& keep) {
  for (absl::string_view one : absl::StrSplit(name, ',')) {
    auto it = Presets().find(std::string(one));
    if (it == Presets().end()) {
      std::vector<std::string> names;
      for (const auto& [n, unused] : Presets()) names.push_back(n);
      return absl::InvalidArgumentError(
          absl::StrCat("--preset: no preset '", one, "' (use ", absl::StrJoin(names, ", "), ")"));
    }
    for (const auto& [k, v] : it->second) {
      if (!keep(k)) RETURN_IF_ERROR(Set(k, v));
    }
  }
  return absl::OkStatus();
}

absl::Status TrainConfig::Validate() const {
  RETURN_IF_ERROR(Positive("steps", steps));
  RETURN_IF_ERROR(Positive("grad_accum", grad_accum));
  RETURN_IF_ERROR(Positive("micro_batch", micro_batch));
  RETURN_IF_ERROR(Positive("lr", lr));
  RETURN_IF_ERROR(Positive("vocab", vocab));
  RETURN_IF_ERROR(NonNegative("warmup", warmup));
  RETURN_IF_ERROR(NonNegative("clip", clip));
  RETURN_IF_ERROR(NonNegative("eval_every", eval_every));
  RETURN_IF_ERROR(Positive("eval_batches", eval_batches));
  RETURN_IF_ERROR(NonNegative("checkpoint_every", checkpoint_every));
  RETURN_IF_ERROR(NonNegative("keep_checkpoints", keep_checkpoints));
  if (dp < 1 || tp < 1 || pp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dp (", dp, "), tp (", tp, ") and pp (", pp, ") must be >= 1"));
  }
  if (global_batch != 0 && global_batch != global_batch_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--global_batch=", global_batch, " but micro_batch (", micro_batch,
                     ") x grad_accum (", grad_accum, ") x dp (", dp, ") = ", global_batch_size()));
  }
  if (backend != "auto" && backend != "threads" && backend != "mpi" && backend != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend='", backend, "': use threads, mpi, nccl or auto"));
  }
  ASSIGN_OR_RETURN(const Device d, ParseDevice(device));
  if (d.kind == DeviceKind::kMeta) {
    return absl::InvalidArgumentError(
        "--device=meta: //:train computes; the meta device only accounts (see //bench:footprint)");
  }
  if (backend == "nccl" && d.kind != DeviceKind::kCuda) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend=nccl moves GPU memory: use it with --device=cuda (not --device=", d.ToString(),
        ")"));
  }
  RETURN_IF_ERROR(ParsePrecision(precision).status());
  if (optimizer != "adamw" && optimizer != "sgd") {
    return absl::InvalidArgumentError(
        absl::StrCat("--optimizer='", optimizer, "': use adamw or sgd"));
  }
  if (lr_schedule != "cosine" && lr_schedule != "constant") {
    return absl::InvalidArgumentError(
        absl::StrCat("--lr_schedule='", lr_schedule, "': use cosine or constant"));
  }
  if (on_nonfinite != "skip" && on_nonfinite != "abort") {
    return absl::InvalidArgumentError(
        absl::StrCat("--on_nonfinite='", on_nonfinite, "': use skip or abort"));
  }
  RETURN_IF_ERROR(ParseSchedule(schedule).status());
  for (const auto& [flag, value, a, b] : {std::make_tuple("norm", &norm, "layernorm", "rmsnorm"),
                                          std::make_tuple("position", &position, "learned", "rope"),
                                          std::make_tuple("mlp", &mlp, "gelu", "swiglu")}) {
    if (*value != a && *value != b) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "='", *value, "': use ", a, " or ", b));
    }
  }
  if (resume == "auto" && checkpoint_dir.empty()) {
    return absl::InvalidArgumentError("--resume=auto needs --checkpoint_dir");
  }
  return absl::OkStatus();
}

absl::StatusOr<GptTrainOptions> TrainConfig::ToOptions() const {
  RETURN_IF_ERROR(Validate());
  GptTrainOptions o;
  o.model.layers = layers;
  o.model.hidden = hidden;
  o.model.heads = heads;
  o.model.kv_heads = kv_heads;
  o.model.ffn = ffn;
  o.model.sliding_window = sliding_window;
  o.model.rope_base = static_cast<float>(rope_base);
  o.model.tied_head = tied_head;
  o.model.bias = bias;
  o.model.norm = norm == "rmsnorm" ? NormKind::kRmsNorm : NormKind::kLayerNorm;
  o.model.position = position == "rope" ? PositionKind::kRope : PositionKind::kLearned;
  o.model.mlp = mlp == "swiglu" ? MlpKind::kSwiGlu : MlpKind::kGelu;
  o.model.vocab = vocab;
  o.model.seq = seq;
  o.model.micro_batch = micro_batch;
  o.model.seed = seed;
  o.model.sequence_parallel = sequence_parallel;
  if (recompute) o.model.recompute.assign(layers, true);
  o.grid = {dp, tp, pp};
  o.virtual_stages = virtual_stages;
  o.micro_batches = grad_accum;
  o.engine.stage = zero;
  ASSIGN_OR_RETURN(o.engine.device, ParseDevice(device));
  if (o.engine.device.kind == DeviceKind::kCuda) {
    RETURN_IF_ERROR(Annotate(CudaDeviceAvailable(), absl::StrCat("--device=", device)));
  }
  ASSIGN_OR_RETURN(o.engine.compute_dtype, ParsePrecision(precision));
  o.engine.grad_dtype = o.engine.compute_dtype;
  o.engine.loss_scaling = o.engine.compute_dtype == DType::kF16;
  o.engine.optimizer.kind = optimizer == "sgd" ? OptimizerKind::kSgd : OptimizerKind::kAdamW;
  o.engine.optimizer.weight_decay = static_cast<float>(weight_decay);
  o.engine.lr.kind =
      lr_schedule == "cosine" ? LrSchedule::Kind::kWarmupCosine : LrSchedule::Kind::kConstant;
  o.engine.lr.lr = static_cast<float>(lr);
  o.engine.lr.min_lr = o.engine.lr.lr / 10;
  o.engine.lr.warmup_steps = std::min(warmup, steps);
  o.engine.lr.total_steps = steps;
  RETURN_IF_ERROR(Annotate(o.engine.lr.Validate(), absl::StrCat("--lr=", DoubleText(lr))));
  o.engine.clip_norm = static_cast<float>(clip);
  o.engine.on_nonfinite =
      on_nonfinite == "abort" ? EngineOptions::NonFinite::kAbort : EngineOptions::NonFinite::kSkip;
  RETURN_IF_ERROR(o.engine.optimizer.Validate());
  ASSIGN_OR_RETURN(o.schedule, ParseSchedule(schedule));
  RETURN_IF_ERROR(o.model.Validate(o.grid.pp, o.grid.tp, o.virtual_stages));
  return o;
}

Json TrainConfig::RecordJson() const {
  Json j = Json::Object();
  for (const char* k :
       {"layers",     "hidden",    "heads",     "seq", "vocab",          "micro_batch",
        "grad_accum", "dp",        "tp",        "pp",  "virtual_stages", "zero",
        "schedule",   "precision", "optimizer", "lr",  "lr_schedule",    "warmup",
        "seed",       "steps",     "data"}) {
    j.Set(k, Json(Get(k)));
  }
  // The architecture (//:generate rebuilds the model from it).
  for (const std::string& k : ModelOptions()) {
    if (j.Find(k) == nullptr) j.Set(k, Json(Get(k)));
  }
  return j;
}

const std::vector<std::string>& TrainConfig::ModelOptions() {
  static const auto* m = new std::vector<std::string>{
      "layers",         "hidden",   "heads",     "vocab", "seq",       "precision",
      "optimizer",      "norm",     "position",  "mlp",   "rope_base", "ffn",
      "sliding_window", "kv_heads", "tied_head", "bias"};
  return *m;
}

absl::StatusOr<TrainConfig> TrainConfigFromArgs(const std::vector<std::string>& args,
                                                std::vector<std::string>* given) {
  // The command line: --name=value, --name (a bool), --noname.
  std::vector<std::pair<std::string, std::string>> flags;
  std::set<std::string> on_command_line;
  for (const std::string& arg : args) {
    absl::string_view a(arg);
    if (!absl::ConsumePrefix(&a, "--") && !absl::ConsumePrefix(&a, "-")) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", arg, "' is not a flag: use --name=value (--help lists them)"));
    }
    std::string name(a.substr(0, a.find('=')));
    std::string value;
    if (a.find('=') != absl::string_view::npos) {
      value = std::string(a.substr(a.find('=') + 1));
    } else {
      const Entry* e = Find(name);
      if (e == nullptr && name.rfind("no", 0) == 0 && Find(name.substr(2)) != nullptr &&
          Find(name.substr(2))->member.index() == 3) {
        name = name.substr(2);
        value = "false";
      } else if (e != nullptr && e->member.index() == 3) {
        value = "true";
      } else if (e != nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value: --", name, "=..."));
      }
    }
    if (Find(name) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '--", name, "' (--help lists them)"));
    }
    flags.emplace_back(name, value);
    on_command_line.insert(name);
  }
  TrainConfig c;
  for (const auto& [k, v] : flags) {
    if (k == "config" || k == "preset") RETURN_IF_ERROR(c.Set(k, v));
  }
  // The file's keys (not those on the command line).
  Json file = Json::Object();
  const std::string where = absl::StrCat("--config '", c.config, "'");
  if (!c.config.empty()) {
    std::ifstream in(c.config, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--config: cannot open '", c.config, "'"));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<Json> parsed = Json::Parse(text);
    if (!parsed.ok()) return Annotate(parsed.status(), where);
    if (!parsed->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is not a JSON object"));
    }
    file = *std::move(parsed);
    for (const auto& [key, value] : file.members()) {
      if (key == "config" || Find(key) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", key, "'"));
      }
    }
  }
  const auto set_by = [&](const std::string& k) {
    return on_command_line.count(k) > 0 || file.Find(k) != nullptr;
  };
  if (const Json* p = file.Find("preset"); p != nullptr && on_command_line.count("preset") == 0) {
    ASSIGN_OR_RETURN(std::string text, JsonText(*p, "preset", where));
    c.preset = text;
  }
  if (!c.preset.empty()) RETURN_IF_ERROR(c.ApplyPreset(c.preset, set_by));
  for (const auto& [key, value] : file.members()) {
    if (on_command_line.count(key) > 0 || key == "preset") continue;
    ASSIGN_OR_RETURN(std::string text, JsonText(value, key, where));
    RETURN_IF_ERROR(Annotate(c.Set(key, text), where));
  }
  for (const auto& [k, v] : flags) RETURN_IF_ERROR(c.Set(k, v));
  if (given != nullptr) given->assign(on_command_line.begin(), on_command_line.end());
  return c;
}

std::string TrainConfigUsage() {
  std::string out = absl::StrCat(
      "Flags (--name=value; a bool also --name / --noname). --config=FILE.json takes the same "
      "names as keys; command-line flags win over the file, the file over --preset.\n\n");
  TrainConfig defaults;
  for (const TrainConfig::Option& o : TrainConfig::Options()) {
    absl::StrAppend(&out, "  --", o.name, " (", o.type, ", default '", defaults.Get(o.name),
                    "')\n      ", o.help, "\n");
  }
  return out;
}

}  // namespace trireme
