#include "runtime/zero/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cast.h"
#include "kernels/optim.h"
#include "runtime/core/status.h"

namespace trireme {

namespace {

enum class UnitState { kIdle, kForward, kForwardDone, kBackward };

// Elements widened at a time when gradients are 16-bit (a 4 MiB workspace).
constexpr int64_t kWidenChunk = int64_t{1} << 20;

const char* StateName(UnitState s) {
  switch (s) {
    case UnitState::kIdle:
      return "idle";
    case UnitState::kForward:
      return "in forward";
    case UnitState::kForwardDone:
      return "after forward (parameters kept)";
    case UnitState::kBackward:
      return "in backward";
  }
  return "?";
}

char* ElemPtr(const Buffer& b, int64_t elem, DType d) {
  return static_cast<char*>(b.data()) + elem * DTypeSize(d);
}

}  // namespace

// One flat space: a set of parameters laid end to end, padded to a multiple
// of dp, each rank owning one shard.
struct ZeroEngine::Space {
  std::string name;
  bool trainable = true;
  int owner = 0;       // the unit whose PostBackward reduces it
  bool tied = false;   // used by more than one unit: reduced at Step()
  struct Slot {
    std::string name;
    Range range;       // in this space
    bool weight_decay = true;
    bool in_norm = true;          // not a norm_duplicate
    bool replicated_over_tp = true;
  };
  std::vector<Slot> slots;
  int64_t numel = 0;   // unpadded
  int64_t padded = 0;  // multiple of dp
  int64_t shard = 0;   // padded / dp
  Range shard_range;   // space offsets
  Range master_range;  // shard_range, or all of it in stage 0
  int64_t grad_base = 0;  // space offset of grad[0]: 0 (full) or shard_range.begin
  Buffer param;        // compute dtype: full (stages 0-2) or shard (3)
  Buffer gathered;     // stage 3: full compute copy while in use
  int in_use = 0;      // units currently using the gathered copy
  Work gather_work;
  bool gather_pending = false;
  Buffer grad;         // grad dtype: full (0, 1) or shard (2, 3)
  Buffer grad_full;    // stages 2-3: full gradient while in backward
  Buffer rs_tmp;       // stages 2-3: reduce-scatter output (reduce dtype) to add into grad
  Buffer reduce_in;    // the full gradient cast to the reduce dtype (if it differs)
  Work reduce_work;
  Work bucket_work;            // stages 0-1: the space's all-reduce / reduce-scatter
  bool bucket_pending = false;
  bool grad_has_data = false;  // grad shard already holds a reduced micro-batch
  int micro = 0;               // owner PostBackward calls this step
  Buffer master, m, v;
};

struct ZeroEngine::Unit {
  std::string name;
  std::vector<ParamInfo> params;
  std::vector<int> param_space;  // per param: the space holding it
  std::vector<int> spaces;       // every space this unit uses (gathered together)
  int trainable_space = -1;      // this unit's own trainable space, if any
  UnitState state = UnitState::kIdle;
};

absl::Status EngineOptions::Validate() const {
  if (stage < 0 || stage > 3) {
    return absl::InvalidArgumentError(absl::StrCat("ZeRO stage ", stage, " is not 0, 1, 2 or 3"));
  }
  if (grad_reduce_dtype && !IsFloat(*grad_reduce_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grad reduce dtype ", DTypeName(*grad_reduce_dtype), " must be f32, bf16 or f16"));
  }
  if (!IsFloat(compute_dtype) || !IsFloat(grad_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compute dtype (", DTypeName(compute_dtype), ") and grad dtype (", DTypeName(grad_dtype),
        ") must be f32, bf16 or f16"));
  }
  if (grad_accum < 1) {
    return absl::InvalidArgumentError(absl::StrCat("grad_accum ", grad_accum, " must be >= 1"));
  }
  if (kernel_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel_threads ", kernel_threads, " must be >= 1"));
  }
  if (prefetch_depth < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch_depth ", prefetch_depth, " must be >= 0"));
  }
  if (device.kind == DeviceKind::kCuda) {
    return absl::UnimplementedError(absl::StrCat(
        "the ZeRO engine runs on cpu and meta in this version; got device ", device.ToString()));
  }
  RETURN_IF_ERROR(optimizer.Validate());
  return lr.Validate();
}

ZeroEngine::ZeroEngine(Communicator& dp, EngineOptions options, MemoryTracker* tracker)
    : dp_(dp), options_(std::move(options)), tracker_(tracker) {}

ZeroEngine::~ZeroEngine() {
  // No collective may still use engine buffers.
  for (auto& s : spaces_) {
    if (s->gather_pending) s->gather_work.Wait().IgnoreError();
  }
  if (pending_space_ >= 0) spaces_[pending_space_]->reduce_work.Wait().IgnoreError();
  for (auto& s : spaces_) {
    if (s->bucket_pending) s->bucket_work.Wait().IgnoreError();
  }
}

absl::StatusOr<Buffer> ZeroEngine::Alloc(int64_t bytes, MemCategory c) {
  ASSIGN_OR_RETURN(Buffer b, Buffer::Allocate(options_.device, bytes, c, tracker_));
  if (b.data() != nullptr) std::memset(b.data(), 0, bytes);
  return b;
}

absl::StatusOr<std::unique_ptr<ZeroEngine>> ZeroEngine::Create(Communicator& dp,
                                                               std::vector<UnitSpec> units,
                                                               EngineOptions options,
                                                               MemoryTracker* tracker) {
  RETURN_IF_ERROR(options.Validate());
  if (tracker == nullptr) return absl::InvalidArgumentError("a MemoryTracker is required");
  if (units.empty()) return absl::InvalidArgumentError("no units registered");
  std::unique_ptr<ZeroEngine> e(new ZeroEngine(dp, std::move(options), tracker));
  const EngineOptions& o = e->options_;
  const int n = dp.size(), r = dp.rank();

  // Pass 1: every parameter's info; untied ones go to their unit's trainable
  // or frozen space.
  std::vector<std::pair<int, int>> tied;  // (unit, index) of tied parameters
  for (size_t ui = 0; ui < units.size(); ++ui) {
    auto u = std::make_unique<Unit>();
    u->name = units[ui].name;
    if (units[ui].params.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("unit '", u->name, "' has no parameters"));
    }
    int space_of[2] = {-1, -1};  // frozen, trainable
    for (size_t pi = 0; pi < units[ui].params.size(); ++pi) {
      const ParamSpec& spec = units[ui].params[pi];
      ParamInfo info{spec.name, spec.shape, 1, static_cast<int>(ui), static_cast<int>(pi),
                     {}, spec.weight_decay, spec.requires_grad, spec.tied_to};
      if (spec.shape.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("parameter '", spec.name, "' has no shape"));
      }
      for (int64_t d : spec.shape) {
        if (d < 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              "parameter '", spec.name, "' has dimension ", d, " (every dimension must be >= 1)"));
        }
        info.numel *= d;
      }
      if (!e->by_name_.emplace(spec.name, std::make_pair(ui, pi)).second) {
        return absl::InvalidArgumentError(absl::StrCat("parameter name '", spec.name,
                                                       "' is registered twice"));
      }
      int space = -1;
      if (spec.tied_to.empty()) {
        int& si = space_of[spec.requires_grad ? 1 : 0];
        if (si < 0) {
          si = static_cast<int>(e->spaces_.size());
          auto sp = std::make_unique<Space>();
          sp->name = spec.requires_grad ? u->name : u->name + "/frozen";
          sp->trainable = spec.requires_grad;
          sp->owner = static_cast<int>(ui);
          e->spaces_.push_back(std::move(sp));
          u->spaces.push_back(si);
          if (spec.requires_grad) u->trainable_space = si;
        }
        space = si;
        Space& sp = *e->spaces_[si];
        info.unit_range = {sp.numel, sp.numel + info.numel};
        sp.numel += info.numel;
        sp.slots.push_back({spec.name, info.unit_range, spec.weight_decay, !spec.norm_duplicate,
                            spec.replicated_over_tp});
      } else {
        tied.push_back({static_cast<int>(ui), static_cast<int>(pi)});
      }
      u->params.push_back(std::move(info));
      u->param_space.push_back(space);
    }
    e->units_.push_back(std::move(u));
  }
  // Pass 2: tied parameters share their target's storage.
  for (auto [ui, pi] : tied) {
    Unit& u = *e->units_[ui];
    ParamInfo& info = u.params[pi];
    auto it = e->by_name_.find(info.tied_to);
    if (it == e->by_name_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", info.name,
                                                     "' is tied to unknown parameter '",
                                                     info.tied_to, "'"));
    }
    const Unit& tu = *e->units_[it->second.first];
    const ParamInfo& target = tu.params[it->second.second];
    const int space = tu.param_space[it->second.second];
    if (!target.tied_to.empty() || !target.requires_grad) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", info.name, "' is tied to '", target.name,
          "', which must be trainable and not itself tied"));
    }
    if (target.shape != info.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", info.name, "' (", info.numel, " elements) is tied to '", target.name,
          "' (", target.numel, " elements) of a different shape"));
    }
    info.unit_range = target.unit_range;
    info.weight_decay = target.weight_decay;
    info.requires_grad = true;
    u.param_space[pi] = space;
    if (std::find(u.spaces.begin(), u.spaces.end(), space) == u.spaces.end()) {
      u.spaces.push_back(space);
      e->spaces_[space]->tied = true;  // two units contribute: reduce at Step
    }
  }
  // Pass 3: sizes and persistent buffers.
  const int64_t cs = DTypeSize(o.compute_dtype), gs = DTypeSize(o.grad_dtype);
  for (auto& sp : e->spaces_) {
    Space& s = *sp;
    s.padded = (s.numel + n - 1) / n * n;
    s.shard = s.padded / n;
    s.shard_range = {r * s.shard, (r + 1) * s.shard};
    s.master_range = o.stage == 0 ? Range{0, s.padded} : s.shard_range;
    s.grad_base = o.stage <= 1 ? 0 : s.shard_range.begin;
    ASSIGN_OR_RETURN(s.param, e->Alloc((o.stage <= 2 ? s.padded : s.shard) * cs,
                                       MemCategory::kParam));
    if (!s.trainable) continue;
    ASSIGN_OR_RETURN(s.grad, e->Alloc((o.stage <= 1 ? s.padded : s.shard) * gs,
                                      MemCategory::kGrad));
    const int64_t master_n = s.master_range.size();
    ASSIGN_OR_RETURN(s.master, e->Alloc(master_n * 4, MemCategory::kMaster));
    ASSIGN_OR_RETURN(s.m, e->Alloc(master_n * 4, MemCategory::kOptim));
    if (o.optimizer.kind == OptimizerKind::kAdamW) {
      ASSIGN_OR_RETURN(s.v, e->Alloc(master_n * 4, MemCategory::kOptim));
    }
  }
  if (o.loss_scaling) e->scaler_ = std::make_unique<LossScaler>(o.loss_scaler);
  return e;
}

absl::Status ZeroEngine::Initialize(const InitFn& fn) {
  if (meta()) return absl::OkStatus();  // nothing to fill: buffers are accounted only
  for (auto& sp : spaces_) {
    Space& s = *sp;
    std::vector<float> full(s.padded, 0.0f);
    for (const Space::Slot& slot : s.slots) {
      ASSIGN_OR_RETURN(ParamInfo p, param(slot.name));
      RETURN_IF_ERROR(Annotate(fn(p, full.data() + slot.range.begin),
                               absl::StrCat("initializing '", p.name, "'")));
    }
    if (s.trainable) {
      std::memcpy(s.master.data(), full.data() + s.master_range.begin,
                  s.master_range.size() * 4);
    }
    const Range compute = options_.stage <= 2 ? Range{0, s.padded} : s.shard_range;
    RETURN_IF_ERROR(kernels::CastCpu(full.data() + compute.begin, DType::kF32, s.param.data(),
                                     options_.compute_dtype, compute.size()));
  }
  return absl::OkStatus();
}

ZeroEngine::State ZeroEngine::state() const {
  State s;
  s.step = step_;
  s.optimizer_step = opt_step_;
  s.loss_scaling = scaler_ != nullptr;
  if (scaler_) s.loss_scaler = scaler_->state();
  return s;
}

absl::Status ZeroEngine::CheckState(const State& s) const {
  if (s.step < 0 || s.optimizer_step < 0 || s.optimizer_step > s.step) {
    return absl::InvalidArgumentError(absl::StrCat("engine state: step ", s.step,
                                                   " and optimizer_step ", s.optimizer_step,
                                                   " must satisfy 0 <= optimizer_step <= step"));
  }
  if (s.loss_scaling != (scaler_ != nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine state: the saved run had loss scaling ", s.loss_scaling ? "on" : "off",
        ", this engine has it ", scaler_ ? "on" : "off"));
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::set_state(const State& s) {
  RETURN_IF_ERROR(CheckState(s));
  step_ = s.step;
  opt_step_ = s.optimizer_step;
  if (scaler_) scaler_->set_state(s.loss_scaler);
  return absl::OkStatus();
}

std::vector<ZeroEngine::OwnedSlice> ZeroEngine::OwnedSlices() const {
  std::vector<OwnedSlice> out;
  if (meta() || (options_.stage == 0 && dp_.rank() != 0)) return out;
  for (const auto& sp : spaces_) {
    const Space& s = *sp;
    if (!s.trainable) continue;
    for (const Space::Slot& slot : s.slots) {
      const Range own = slot.range.Intersect(s.master_range);
      auto p = param(slot.name);
      if (own.size() == 0 || !p.ok()) continue;
      const int64_t o = own.begin - s.master_range.begin;
      OwnedSlice sl;
      sl.info = *p;
      sl.range = {own.begin - slot.range.begin, own.end - slot.range.begin};
      sl.master = s.master.as<float>() + o;
      sl.m = s.m.as<float>() + o;
      sl.v = s.v.bytes() > 0 ? s.v.as<float>() + o : nullptr;
      out.push_back(std::move(sl));
    }
  }
  return out;
}

absl::Status ZeroEngine::Restore(const RestoreFn& fn) {
  if (meta()) return absl::OkStatus();
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (!s.trainable) continue;  // frozen parameters are the model's constants
    const int states = s.v.bytes() > 0 ? 3 : 2;
    for (int which = states - 1; which >= 0; --which) {  // master last: it feeds the copies
      std::vector<float> full(s.padded, 0.0f);
      for (const Space::Slot& slot : s.slots) {
        ASSIGN_OR_RETURN(ParamInfo p, param(slot.name));
        RETURN_IF_ERROR(Annotate(fn(p, which, full.data() + slot.range.begin),
                                 absl::StrCat("restoring '", p.name, "'")));
      }
      if (which > 0) {
        std::memcpy((which == 1 ? s.m : s.v).as<float>(), full.data() + s.master_range.begin,
                    s.master_range.size() * 4);
        continue;
      }
      std::memcpy(s.master.data(), full.data() + s.master_range.begin, s.master_range.size() * 4);
      const Range compute = options_.stage <= 2 ? Range{0, s.padded} : s.shard_range;
      RETURN_IF_ERROR(kernels::CastCpu(full.data() + compute.begin, DType::kF32, s.param.data(),
                                       options_.compute_dtype, compute.size()));
    }
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::InitializeFrom(
    const absl::flat_hash_map<std::string, std::vector<float>>& values) {
  return Initialize([&values](const ParamInfo& p, float* out) -> absl::Status {
    auto it = values.find(p.name);
    if (it == values.end()) {
      return absl::InvalidArgumentError(absl::StrCat("no value given for '", p.name, "'"));
    }
    if (static_cast<int64_t>(it->second.size()) != p.numel) {
      return absl::InvalidArgumentError(absl::StrCat("'", p.name, "' has ", p.numel,
                                                     " elements but ", it->second.size(),
                                                     " values were given"));
    }
    std::copy(it->second.begin(), it->second.end(), out);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<UnitSpec>> GroupIntoUnits(std::vector<ParamSpec> params,
                                                     int64_t max_unit_numel,
                                                     const std::string& prefix) {
  if (max_unit_numel < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_unit_numel ", max_unit_numel, " must be >= 1"));
  }
  std::vector<UnitSpec> units;
  int64_t in_unit = 0;
  for (ParamSpec& p : params) {
    int64_t numel = 1;
    for (int64_t d : p.shape) numel *= d;
    if (units.empty() || in_unit + numel > max_unit_numel) {
      units.push_back({absl::StrCat(prefix, units.size()), {}});
      in_unit = 0;
    }
    units.back().params.push_back(std::move(p));
    in_unit += numel;
  }
  return units;
}

absl::Status ZeroEngine::CheckUnit(int unit, const char* hook) const {
  if (unit < 0 || unit >= num_units()) {
    return absl::InvalidArgumentError(
        absl::StrCat(hook, ": unit ", unit, " does not exist (", num_units(), " units)"));
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::CheckParam(int unit, int index, const char* what) const {
  RETURN_IF_ERROR(CheckUnit(unit, what));
  const Unit& u = *units_[unit];
  if (index < 0 || index >= static_cast<int>(u.params.size())) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unit '", u.name,
                                                   "' has no parameter ", index, " (",
                                                   u.params.size(), " parameters)"));
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::Gather(Space& s) {
  if (s.gathered.bytes() == 0 && !s.gather_pending) {
    const int64_t cs = DTypeSize(options_.compute_dtype);
    ASSIGN_OR_RETURN(s.gathered, Buffer::Allocate(options_.device, s.padded * cs,
                                                  MemCategory::kComm, tracker_));
    CommScope scope(absl::StrCat("zero: gather '", s.name, "'"));
    s.gather_work = dp_.AllGatherAsync({s.param.data(), s.shard, options_.compute_dtype},
                                       {s.gathered.data(), s.padded, options_.compute_dtype});
    s.gather_pending = true;
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::WaitGather(Space& s) {
  if (!s.gather_pending) return absl::OkStatus();
  s.gather_pending = false;
  return Annotate(s.gather_work.Wait(), absl::StrCat("gathering '", s.name, "'"));
}

// Stage 3: gathers (or finds prefetched) every space the unit uses and marks
// them in use.
absl::Status ZeroEngine::GatherUnit(Unit& u) {
  for (int si : u.spaces) RETURN_IF_ERROR(Gather(*spaces_[si]));
  for (int si : u.spaces) {
    RETURN_IF_ERROR(WaitGather(*spaces_[si]));
    ++spaces_[si]->in_use;
  }
  return absl::OkStatus();
}

// Stage 3: drops the unit's hold on its gathered spaces; a space is released
// when no unit holds it.
void ZeroEngine::Release(Unit& u) {
  for (int si : u.spaces) {
    Space& s = *spaces_[si];
    if (s.in_use > 0 && --s.in_use == 0 && !options_.keep_params_for_step) s.gathered.Reset();
  }
}

absl::Status ZeroEngine::RecordOrCheckOrder(int kind, int unit) {
  const char* kinds[2] = {"PreForward", "PreBackward"};
  if (!order_recorded_) {
    order_.push_back({kind, unit});
    return absl::OkStatus();
  }
  if (order_pos_ >= order_.size() || order_[order_pos_] != std::make_pair(kind, unit)) {
    std::string expected = "nothing more (the recorded step ends here)";
    if (order_pos_ < order_.size()) {
      expected = absl::StrCat(kinds[order_[order_pos_].first], "(unit '",
                              units_[order_[order_pos_].second]->name, "')");
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "unit order changed at call ", order_pos_, " of step ", step_ + 1, ": got ", kinds[kind],
        "(unit '", units_[unit]->name, "'), the first step recorded ", expected,
        "; prefetching depends on a fixed order"));
  }
  ++order_pos_;
  return absl::OkStatus();
}

absl::Status ZeroEngine::Prefetch() {
  if (!order_recorded_) return absl::OkStatus();
  for (size_t k = order_pos_; k < order_.size() && k < order_pos_ + options_.prefetch_depth;
       ++k) {
    for (int si : units_[order_[k].second]->spaces) RETURN_IF_ERROR(Gather(*spaces_[si]));
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::PreForward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PreForward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kIdle) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreForward(unit '", u.name, "') while it is ", StateName(u.state)));
  }
  if (options_.stage == 3) {
    if (!evaluating_) RETURN_IF_ERROR(RecordOrCheckOrder(0, unit));
    RETURN_IF_ERROR(GatherUnit(u));
    if (!evaluating_) RETURN_IF_ERROR(Prefetch());
  }
  u.state = UnitState::kForward;
  return absl::OkStatus();
}

absl::Status ZeroEngine::PostForward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PostForward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kForward) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostForward(unit '", u.name, "') while it is ", StateName(u.state)));
  }
  const bool keep = options_.stage == 3 && options_.keep_params_until_backward && !evaluating_;
  if (options_.stage == 3 && !keep) Release(u);
  u.state = keep ? UnitState::kForwardDone : UnitState::kIdle;
  return absl::OkStatus();
}

absl::Status ZeroEngine::PreBackward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PreBackward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kIdle && u.state != UnitState::kForwardDone) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreBackward(unit '", u.name, "') while it is ", StateName(u.state)));
  }
  if (evaluating_) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreBackward(unit '", u.name, "') while evaluating"));
  }
  if (u.trainable_space >= 0 && spaces_[u.trainable_space]->micro >= options_.grad_accum) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PreBackward(unit '", u.name, "'): its ", options_.grad_accum,
        " micro-batch(es) of this step (grad_accum) are done; call Step() first"));
  }
  if (options_.stage == 3) {
    RETURN_IF_ERROR(RecordOrCheckOrder(1, unit));
    // Kept since forward (keep_params_until_backward): already held.
    if (u.state != UnitState::kForwardDone) RETURN_IF_ERROR(GatherUnit(u));
    RETURN_IF_ERROR(Prefetch());
  }
  if (options_.stage >= 2) {
    for (int si : u.spaces) {
      // The same unit back again while its previous micro-batch's reduction
      // is in flight (a unit alone in its pipeline chunk): that reduction
      // still reads the buffer, so finish it before a new buffer is filled.
      if (pending_space_ == si) RETURN_IF_ERROR(FinishPendingReduction());
      Space& s = *spaces_[si];
      if (s.trainable && s.grad_full.bytes() == 0) {
        ASSIGN_OR_RETURN(s.grad_full,
                         Alloc(s.padded * DTypeSize(options_.grad_dtype), MemCategory::kComm));
      }
    }
  }
  reduced_ = false;
  u.state = UnitState::kBackward;
  return absl::OkStatus();
}

// Stages 2-3: reduce-scatter the space's full gradient into its shard
// (directly the first time in a step, else into a temporary that is added).
absl::Status ZeroEngine::StartReduction(int si) {
  RETURN_IF_ERROR(FinishPendingReduction());
  Space& s = *spaces_[si];
  const DType g = options_.grad_dtype, rd = reduce_dtype();
  const void* in = s.grad_full.data();
  if (rd != g) {  // communicate in the reduce dtype
    ASSIGN_OR_RETURN(s.reduce_in, Alloc(s.padded * DTypeSize(rd), MemCategory::kComm));
    if (!meta()) {
      RETURN_IF_ERROR(kernels::CastCpu(s.grad_full.data(), g, s.reduce_in.data(), rd, s.padded,
                                       options_.kernel_threads));
    }
    in = s.reduce_in.data();
  }
  void* out = s.grad.data();
  if (s.grad_has_data || rd != g) {
    ASSIGN_OR_RETURN(s.rs_tmp, Alloc(s.shard * DTypeSize(rd), MemCategory::kComm));
    out = s.rs_tmp.data();
  }
  CommScope scope(absl::StrCat("zero: reduce-scatter '", s.name, "'"));
  s.reduce_work = dp_.ReduceScatterAsync({in, s.padded, rd}, {out, s.shard, rd}, ReduceOp::kAvg);
  pending_space_ = si;
  return absl::OkStatus();
}

// Stages 0-1: all-reduce (stage 0) or reduce-scatter in place into the shard
// (stage 1) of a space's full gradient, asynchronously.
absl::Status ZeroEngine::StartBucket(Space& s) {
  const DType g = options_.grad_dtype, rd = reduce_dtype();
  void* buf = s.grad.data();
  if (rd != g) {  // communicate in the reduce dtype, in place in a cast copy
    ASSIGN_OR_RETURN(s.reduce_in, Alloc(s.padded * DTypeSize(rd), MemCategory::kComm));
    if (!meta()) {
      RETURN_IF_ERROR(kernels::CastCpu(s.grad.data(), g, s.reduce_in.data(), rd, s.padded,
                                       options_.kernel_threads));
    }
    buf = s.reduce_in.data();
  }
  if (options_.stage == 0) {
    CommScope scope(absl::StrCat("zero: all-reduce '", s.name, "'"));
    s.bucket_work = dp_.AllReduceAsync({buf, s.padded, rd}, {buf, s.padded, rd}, ReduceOp::kAvg);
  } else {
    CommScope scope(absl::StrCat("zero: reduce-scatter '", s.name, "'"));
    s.bucket_work = dp_.ReduceScatterAsync(
        {buf, s.padded, rd},
        {static_cast<char*>(buf) + s.shard_range.begin * DTypeSize(rd), s.shard, rd},
        ReduceOp::kAvg);
  }
  s.bucket_pending = true;
  reduced_ = false;
  return absl::OkStatus();
}

// Stages 0-1: waits for the bucket and, with a distinct reduce dtype, casts
// the reduced values back into the gradient (all of it, or the shard).
absl::Status ZeroEngine::FinishBucket(Space& s) {
  if (!s.bucket_pending) return absl::OkStatus();
  s.bucket_pending = false;
  RETURN_IF_ERROR(Annotate(s.bucket_work.Wait(), absl::StrCat("reducing '", s.name, "'")));
  if (s.reduce_in.bytes() == 0) return absl::OkStatus();
  const DType g = options_.grad_dtype, rd = reduce_dtype();
  const Range r = options_.stage == 0 ? Range{0, s.padded} : s.shard_range;
  if (!meta()) {
    RETURN_IF_ERROR(kernels::CastCpu(static_cast<char*>(s.reduce_in.data()) +
                                         r.begin * DTypeSize(rd),
                                     rd, ElemPtr(s.grad, r.begin, g), g, r.size(),
                                     options_.kernel_threads));
  }
  s.reduce_in.Reset();
  return absl::OkStatus();
}

absl::Status ZeroEngine::FinishPendingReduction() {
  if (pending_space_ < 0) return absl::OkStatus();
  Space& s = *spaces_[pending_space_];
  pending_space_ = -1;
  RETURN_IF_ERROR(Annotate(s.reduce_work.Wait(), absl::StrCat("reducing '", s.name, "'")));
  if (s.rs_tmp.bytes() != 0) {  // add (or, first in the step, assign) into the shard
    const DType g = options_.grad_dtype, rd = reduce_dtype();
    for (int64_t i = 0; i < s.shard && !meta(); ++i) {
      const float add = LoadAsF32(s.rs_tmp.data(), rd, i);
      StoreFromF32(s.grad.data(), g, i,
                   s.grad_has_data ? LoadAsF32(s.grad.data(), g, i) + add : add);
    }
    s.rs_tmp.Reset();
  }
  s.reduce_in.Reset();
  s.grad_has_data = true;
  s.grad_full.Reset();
  return absl::OkStatus();
}

absl::Status ZeroEngine::PostBackward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PostBackward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kBackward) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostBackward(unit '", u.name, "') while it is ", StateName(u.state)));
  }
  if (options_.stage <= 1 && u.trainable_space >= 0) {
    // The unit is the bucket: after the last micro-batch its gradients are
    // complete, so their reduction starts now and overlaps the rest of
    // backward; Step() waits for it.
    Space& s = *spaces_[u.trainable_space];
    if (++s.micro >= options_.grad_accum && !s.tied) RETURN_IF_ERROR(StartBucket(s));
  }
  if (options_.stage >= 2 && u.trainable_space >= 0) {
    Space& s = *spaces_[u.trainable_space];
    ++s.micro;
    // One reduction in flight at a time: it overlaps the next unit's backward,
    // and at most two full gradients exist at once. Tied spaces collect
    // gradients from several units and are reduced in Step().
    if (!s.tied && (options_.accum_policy == GradAccumPolicy::kReduceEveryMicroBatch ||
                    s.micro >= options_.grad_accum)) {
      RETURN_IF_ERROR(StartReduction(u.trainable_space));
    }
  }
  if (options_.stage == 3) Release(u);
  u.state = UnitState::kIdle;
  return absl::OkStatus();
}

absl::StatusOr<MutView> ZeroEngine::Param(int unit, int index) {
  RETURN_IF_ERROR(CheckParam(unit, index, "Param"));
  Unit& u = *units_[unit];
  if (u.state == UnitState::kIdle) {
    return absl::FailedPreconditionError(absl::StrCat(
        "parameters of unit '", u.name, "' are used outside PreForward/PostForward or "
        "PreBackward/PostBackward"));
  }
  const Space& s = *spaces_[u.param_space[index]];
  const Buffer& full = options_.stage == 3 ? s.gathered : s.param;
  const ParamInfo& p = u.params[index];
  return MutView{ElemPtr(full, p.unit_range.begin, options_.compute_dtype), p.numel,
                 options_.compute_dtype};
}

absl::StatusOr<MutView> ZeroEngine::Grad(int unit, int index) {
  RETURN_IF_ERROR(CheckParam(unit, index, "Grad"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kBackward) {
    return absl::FailedPreconditionError(absl::StrCat(
        "gradients of unit '", u.name, "' are used outside PreBackward/PostBackward"));
  }
  const ParamInfo& p = u.params[index];
  if (!p.requires_grad) {
    return absl::FailedPreconditionError(
        absl::StrCat("parameter '", p.name, "' is frozen (requires_grad = false): no gradient"));
  }
  const Space& s = *spaces_[u.param_space[index]];
  const Buffer& full = options_.stage >= 2 ? s.grad_full : s.grad;
  return MutView{ElemPtr(full, p.unit_range.begin, options_.grad_dtype), p.numel,
                 options_.grad_dtype};
}

absl::Status ZeroEngine::ReduceGradients() {
  if (reduced_) return absl::OkStatus();
  if (options_.stage <= 1) {
    // Buckets not started in backward (tied spaces, units without backward
    // this step) start now; then all finish.
    for (auto& sp : spaces_) {
      if (sp->trainable && !sp->bucket_pending) RETURN_IF_ERROR(StartBucket(*sp));
    }
    for (auto& sp : spaces_) RETURN_IF_ERROR(FinishBucket(*sp));
  } else {
    RETURN_IF_ERROR(FinishPendingReduction());
    // Full gradients still held (tied spaces; kAccumulateThenReduce before
    // the last micro-batch): reduce them now.
    for (size_t i = 0; i < spaces_.size(); ++i) {
      if (spaces_[i]->grad_full.bytes() == 0) continue;
      RETURN_IF_ERROR(StartReduction(static_cast<int>(i)));
      RETURN_IF_ERROR(FinishPendingReduction());
    }
  }
  reduced_ = true;
  return absl::OkStatus();
}

const ZeroEngine::Space* ZeroEngine::TrainableSpace(int unit) const {
  const int si = units_[unit]->trainable_space;
  return si < 0 ? nullptr : spaces_[si].get();
}

absl::StatusOr<std::vector<float>> ZeroEngine::GradShard(int unit) const {
  RETURN_IF_ERROR(CheckUnit(unit, "GradShard"));
  if (!reduced_) {
    return absl::FailedPreconditionError("GradShard before ReduceGradients in this step");
  }
  const Space* s = TrainableSpace(unit);
  if (s == nullptr) return std::vector<float>();
  std::vector<float> out(s->master_range.size());
  const int64_t off = s->master_range.begin - s->grad_base;
  for (int64_t i = 0; i < s->master_range.size(); ++i) {
    out[i] = LoadAsF32(s->grad.data(), options_.grad_dtype, off + i) / options_.grad_accum;
  }
  return out;
}

absl::StatusOr<MutView> ZeroEngine::ReducedGrad(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "ReducedGrad"));
  if (!reduced_) {
    return absl::FailedPreconditionError("ReducedGrad before ReduceGradients in this step");
  }
  const int si = units_[unit]->trainable_space;
  if (si < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("unit '", units_[unit]->name, "' has no trainable parameters"));
  }
  Space& s = *spaces_[si];
  return MutView{ElemPtr(s.grad, s.master_range.begin - s.grad_base, options_.grad_dtype),
                 s.master_range.size(), options_.grad_dtype};
}

absl::StatusOr<StepStats> ZeroEngine::Step() {
  for (auto& u : units_) {
    if (u->state != UnitState::kIdle) {
      return absl::FailedPreconditionError(
          absl::StrCat("Step() while unit '", u->name, "' is ", StateName(u->state)));
    }
  }
  // Gathers still in flight (a prefetch past the last use) must land first.
  for (auto& s : spaces_) {
    RETURN_IF_ERROR(WaitGather(*s));
    s->gathered.Reset();
    s->in_use = 0;
  }
  if (options_.stage == 3) {
    if (order_recorded_ && order_pos_ != order_.size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "unit order changed: step ", step_ + 1, " made ", order_pos_, " of the ",
          order_.size(), " unit calls the first step recorded"));
    }
    order_recorded_ = true;
    order_pos_ = 0;
  }
  RETURN_IF_ERROR(ReduceGradients());
  const DType gd = options_.grad_dtype;

  // Gradients reach the norm and the optimizer as f32: directly for f32
  // gradients, else widened a chunk at a time into a bounded workspace.
  Buffer work;
  if (gd != DType::kF32) {
    int64_t largest = 0;
    for (auto& sp : spaces_) largest = std::max(largest, sp->master_range.size());
    ASSIGN_OR_RETURN(work, Alloc(std::min<int64_t>(largest, kWidenChunk) * 4,
                                 MemCategory::kWorkspace));
  }
  auto widened = [&](Space& s, Range r,
                     const std::function<void(const float*, Range)>& fn) -> absl::Status {
    if (meta()) return absl::OkStatus();
    if (gd == DType::kF32) {
      fn(s.grad.as<float>() + (r.begin - s.grad_base), r);
      return absl::OkStatus();
    }
    for (int64_t b = r.begin; b < r.end; b += kWidenChunk) {
      const Range piece{b, std::min(r.end, b + kWidenChunk)};
      RETURN_IF_ERROR(kernels::CastCpu(ElemPtr(s.grad, piece.begin - s.grad_base, gd), gd,
                                       work.data(), DType::kF32, piece.size(),
                                       options_.kernel_threads));
      fn(work.as<float>(), piece);
    }
    return absl::OkStatus();
  };
  // Global norm and overflow: every element counted once -- this rank's
  // shard only, TP-replicated parameters on TP rank 0 only, pipeline
  // duplicates not at all.
  const bool count_replicated = options_.tp_group == nullptr || options_.tp_group->rank() == 0;
  double sumsq = 0;
  bool finite = true;
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (!s.trainable) continue;
    RETURN_IF_ERROR(widened(s, s.shard_range, [&](const float* g, Range r) {
      finite = finite && kernels::AllFinite(g, r.size(), options_.kernel_threads);
    }));
    for (const Space::Slot& slot : s.slots) {
      if (!slot.in_norm || (slot.replicated_over_tp && !count_replicated)) continue;
      RETURN_IF_ERROR(widened(s, slot.range.Intersect(s.shard_range), [&](const float* g, Range r) {
        sumsq += kernels::SumOfSquares(g, r.size(), options_.kernel_threads);
      }));
    }
  }
  float red[2] = {static_cast<float>(sumsq), finite ? 0.0f : 1.0f};
  MutView rv{red, 2, DType::kF32};
  CommScope norm_scope("zero: grad norm and overflow");
  RETURN_IF_ERROR(dp_.AllReduce(rv, rv, ReduceOp::kSum));
  for (Communicator* c : {options_.tp_group, options_.pp_group}) {
    if (c != nullptr) RETURN_IF_ERROR(c->AllReduce(rv, rv, ReduceOp::kSum));
  }
  const bool overflow = red[1] > 0 || !std::isfinite(red[0]);
  const float scale = scaler_ ? scaler_->scale() : 1.0f;
  const double base = 1.0 / (static_cast<double>(options_.grad_accum) * scale);

  StepStats stats;
  stats.grad_norm = std::sqrt(static_cast<double>(red[0])) * base;
  stats.nonfinite = overflow;
  stats.nonfinite_ranks = static_cast<int>(red[1]);
  if (overflow && !scaler_ && options_.on_nonfinite == EngineOptions::NonFinite::kAbort) {
    // Every rank holds the same reduced values: the same error everywhere.
    return absl::DataLossError(absl::StrCat(
        "step ", step_ + 1, ": the gradient norm is ", stats.grad_norm, " (",
        stats.nonfinite_ranks > 0
            ? absl::StrCat("inf or NaN in the reduced gradients of ", stats.nonfinite_ranks,
                           " of the grid's ranks")
            : std::string("the sum of squares overflows f32"),
        "); on_nonfinite = abort, nothing updated"));
  }
  stats.skipped = scaler_ ? scaler_->Update(overflow) : overflow;
  stats.loss_scale = scaler_ ? scaler_->scale() : 1.0f;
  stats.lr = options_.lr.At(opt_step_ + 1);
  stats.clip_coef = ClipCoefficient(stats.grad_norm, options_.clip_norm);
  if (!stats.skipped) {
    ++opt_step_;
    const float grad_scale = static_cast<float>(base * stats.clip_coef);
    const DType cd = options_.compute_dtype;
    std::vector<Work> gathers;
    for (auto& sp : spaces_) {
      Space& s = *sp;
      if (!s.trainable) continue;
      // The compute copy of each updated element is written in the same pass.
      for (const Space::Slot& slot : s.slots) {
        RETURN_IF_ERROR(widened(s, slot.range.Intersect(s.master_range), [&](const float* g,
                                                                              Range r) {
          const int64_t o = r.begin - s.master_range.begin;
          const kernels::ComputeOut out{
              options_.stage == 3 ? ElemPtr(s.param, o, cd) : ElemPtr(s.param, r.begin, cd), cd};
          if (options_.optimizer.kind == OptimizerKind::kAdamW) {
            AdamWUpdate(options_.optimizer, opt_step_, stats.lr, slot.weight_decay, grad_scale,
                        s.master.as<float>() + o, g, s.m.as<float>() + o, s.v.as<float>() + o,
                        r.size(), out, options_.kernel_threads);
          } else {
            SgdUpdate(options_.optimizer, opt_step_, stats.lr, slot.weight_decay, grad_scale,
                      s.master.as<float>() + o, g, s.m.as<float>() + o, r.size(), out,
                      options_.kernel_threads);
          }
        }));
      }
      // Stages 1-2 then gather the updated shards into every rank's full copy.
      if (options_.stage == 1 || options_.stage == 2) {
        CommScope scope(absl::StrCat("zero: all-gather updated '", s.name, "'"));
        gathers.push_back(dp_.AllGatherAsync({ElemPtr(s.param, s.shard_range.begin, cd), s.shard, cd},
                                             {s.param.data(), s.padded, cd}));
      }
    }
    for (Work& w : gathers) RETURN_IF_ERROR(w.Wait());
  }
  // Zero the gradients for the next step.
  for (auto& s : spaces_) {
    if (s->grad.data() != nullptr) std::memset(s->grad.data(), 0, s->grad.bytes());
    s->grad_has_data = false;
    s->micro = 0;
  }
  reduced_ = false;
  ++step_;
  stats.step = step_;
  const CommStats now = dp_.stats();
  stats.bytes_sent = now.total_sent() - last_sent_;
  stats.bytes_received = now.total_received() - last_received_;
  last_sent_ = now.total_sent();
  last_received_ = now.total_received();
  return stats;
}

absl::StatusOr<std::vector<float>> ZeroEngine::GatherFull(const std::string& name) {
  ASSIGN_OR_RETURN(ParamInfo p, param(name));
  if (meta()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", name, "' lives on the meta device: there are no values to gather"));
  }
  const Space& s = *spaces_[units_[p.unit]->param_space[p.index]];
  std::vector<float> out(p.numel);
  if (s.trainable) {
    // The fp32 master.
    if (options_.stage == 0) {
      std::memcpy(out.data(), s.master.as<float>() + p.unit_range.begin, p.numel * 4);
      return out;
    }
    ASSIGN_OR_RETURN(Buffer full, Alloc(s.padded * 4, MemCategory::kWorkspace));
    RETURN_IF_ERROR(dp_.AllGather({s.master.data(), s.shard, DType::kF32},
                                  {full.data(), s.padded, DType::kF32}));
    std::memcpy(out.data(), full.as<float>() + p.unit_range.begin, p.numel * 4);
    return out;
  }
  // Frozen: the compute copy, widened.
  const DType cd = options_.compute_dtype;
  const void* src = s.param.data();
  Buffer full;
  if (options_.stage == 3) {
    ASSIGN_OR_RETURN(full, Alloc(s.padded * DTypeSize(cd), MemCategory::kWorkspace));
    RETURN_IF_ERROR(dp_.AllGather({s.param.data(), s.shard, cd}, {full.data(), s.padded, cd}));
    src = full.data();
  }
  RETURN_IF_ERROR(kernels::CastCpu(static_cast<const char*>(src) + p.unit_range.begin * DTypeSize(cd),
                                   cd, out.data(), DType::kF32, p.numel));
  return out;
}

const std::string& ZeroEngine::unit_name(int unit) const { return units_[unit]->name; }

absl::StatusOr<ParamInfo> ZeroEngine::param(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("no parameter named '", name, "'"));
  }
  return units_[it->second.first]->params[it->second.second];
}

const std::vector<ParamInfo>& ZeroEngine::unit_params(int unit) const {
  return units_[unit]->params;
}

int64_t ZeroEngine::unit_numel(int unit) const {
  const Space* s = TrainableSpace(unit);
  return s ? s->numel : 0;
}
int64_t ZeroEngine::unit_padded_numel(int unit) const {
  const Space* s = TrainableSpace(unit);
  return s ? s->padded : 0;
}
Range ZeroEngine::master_range(int unit) const {
  const Space* s = TrainableSpace(unit);
  return s ? s->master_range : Range{};
}
const float* ZeroEngine::master_data(int unit) const {
  const Space* s = TrainableSpace(unit);
  return s ? s->master.as<float>() : nullptr;
}
const float* ZeroEngine::optim_state(int unit, int which) const {
  const Space* s = TrainableSpace(unit);
  if (s == nullptr) return nullptr;
  return (which == 0 ? s->m : s->v).as<float>();
}
float ZeroEngine::loss_scale() const { return scaler_ ? scaler_->scale() : 1.0f; }

}  // namespace trireme
