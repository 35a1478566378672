#include "runtime/zero/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/ops.h"
#include "runtime/core/status.h"
#include "runtime/zero/internal/state.h"

namespace trireme {

// ---- states -----------------------------------------------------------------

StagePolicy StagePolicy::For(int stage) {
  StagePolicy p;
  p.shard_params = stage >= 3;
  p.shard_grads = stage >= 2;
  p.shard_master = stage >= 1;
  p.reduce_in_backward = stage >= 2;
  p.all_reduce = stage == 0;
  p.gather_after_step = stage == 1 || stage == 2;
  return p;
}

const char* UnitStateName(UnitState s) {
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

const char* ResidencyName(Residency r) {
  switch (r) {
    case Residency::kFull:
      return "full";
    case Residency::kSharded:
      return "sharded";
    case Residency::kGathering:
      return "gathering";
    case Residency::kGathered:
      return "gathered";
  }
  return "?";
}

const char* GradStateName(GradState g) {
  switch (g) {
    case GradState::kIdle:
      return "idle";
    case GradState::kAccumulating:
      return "accumulating";
    case GradState::kReducing:
      return "reducing";
  }
  return "?";
}

absl::Status ZeroEngine::Space::SetResidency(Residency to) {
  const Residency from = residency;
  const bool ok = (from == Residency::kSharded && to == Residency::kGathering) ||
                  (from == Residency::kGathering && to == Residency::kGathered) ||
                  (from == Residency::kGathering && to == Residency::kSharded) ||
                  (from == Residency::kGathered && to == Residency::kSharded);
  if (!ok) {
    return absl::InternalError(absl::StrCat("space '", name, "': compute copy cannot go from ",
                                            ResidencyName(from), " to ", ResidencyName(to)));
  }
  residency = to;
  return absl::OkStatus();
}

absl::Status ZeroEngine::Space::SetGradState(GradState to) {
  const GradState from = grad_state;
  const bool ok = (from == GradState::kIdle && to == GradState::kAccumulating) ||
                  (from == GradState::kAccumulating && to == GradState::kReducing) ||
                  (from == GradState::kReducing && to == GradState::kIdle);
  if (!ok) {
    return absl::InternalError(absl::StrCat("space '", name, "': gradient cannot go from ",
                                            GradStateName(from), " to ", GradStateName(to)));
  }
  grad_state = to;
  return absl::OkStatus();
}

// ---- options and creation ------------------------------------------------------

absl::Status EngineOptions::Validate() const {
  if (stage < 0 || stage > 3) {
    return absl::InvalidArgumentError(absl::StrCat("ZeRO stage ", stage, " is not 0, 1, 2 or 3"));
  }
  if (grad_reduce_dtype && !IsFloat(*grad_reduce_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grad reduce dtype ", DTypeName(*grad_reduce_dtype), " must be f32, bf16 or f16"));
  }
  if (!IsFloat(compute_dtype) || !IsFloat(grad_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("compute dtype (", DTypeName(compute_dtype),
                                                   ") and grad dtype (", DTypeName(grad_dtype),
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
  if (device.kind == DeviceKind::kCuda) RETURN_IF_ERROR(CudaDeviceAvailable());
  if (compute_stream != nullptr && compute_stream->device() != device) {
    return absl::InvalidArgumentError(absl::StrCat("the compute stream '", compute_stream->name(),
                                                   "' is on ", compute_stream->device().ToString(),
                                                   ", the engine on ", device.ToString()));
  }
  RETURN_IF_ERROR(optimizer.Validate());
  return lr.Validate();
}

ZeroEngine::ZeroEngine(Communicator& dp, EngineOptions options, MemoryTracker* tracker)
    : dp_(dp),
      options_(std::move(options)),
      policy_(StagePolicy::For(options_.stage)),
      tracker_(tracker) {}

ZeroEngine::~ZeroEngine() {
  // No stream or collective may still use engine buffers when they go.
  Synchronize().IgnoreError();
}

absl::Status ZeroEngine::Synchronize() {
  absl::Status s;
  for (Stream* st : {gather_.get(), reduce_.get(), compute_}) {
    if (st == nullptr) continue;
    absl::Status e = st->Synchronize();
    if (s.ok() && !e.ok()) s = e;
  }
  return s;
}

absl::StatusOr<Buffer> ZeroEngine::Alloc(int64_t bytes, MemCategory c, Stream* stream) {
  return Buffer::Allocate(options_.device, bytes, c, tracker_, stream);
}

absl::StatusOr<Buffer> ZeroEngine::AllocZeroed(int64_t bytes, MemCategory c, Stream& stream) {
  ASSIGN_OR_RETURN(Buffer b, Alloc(bytes, c, &stream));
  RETURN_IF_ERROR(kernels::Memset(stream, b.data(), bytes));
  return b;
}

absl::Status ZeroEngine::ToHost(const void* device, void* host, int64_t bytes) {
  RETURN_IF_ERROR(kernels::Copy(*compute_, host, device, bytes));
  return compute_->Synchronize();
}

absl::Status ZeroEngine::CreateStreams() {
  if (options_.compute_stream != nullptr) {
    compute_ = options_.compute_stream;
  } else {
    ASSIGN_OR_RETURN(own_compute_, NewStream(options_.device, "zero:compute"));
    compute_ = own_compute_.get();
  }
  // The gathers overlap the compute of the previous unit, the reductions the
  // backward of the next one: each has a stream of its own.
  ASSIGN_OR_RETURN(gather_, NewStream(options_.device, "zero:gather"));
  ASSIGN_OR_RETURN(reduce_, NewStream(options_.device, "zero:reduce"));
  return absl::OkStatus();
}

// Each recording gets a fresh event (simplest to reason about; a wait holds
// the recording current at the call either way).
absl::Status ZeroEngine::RecordParamsReady() {
  params_ready_ = compute_->NewEvent();
  if (params_ready_ == nullptr) return absl::InternalError("cannot create an event");
  return compute_->Record(params_ready_.get());
}

absl::StatusOr<std::unique_ptr<ZeroEngine>> ZeroEngine::Create(Communicator& dp,
                                                               std::vector<UnitSpec> units,
                                                               EngineOptions options,
                                                               MemoryTracker* tracker) {
  RETURN_IF_ERROR(options.Validate());
  if (tracker == nullptr) return absl::InvalidArgumentError("a MemoryTracker is required");
  if (units.empty()) return absl::InvalidArgumentError("no units registered");
  std::unique_ptr<ZeroEngine> e(new ZeroEngine(dp, std::move(options), tracker));
  RETURN_IF_ERROR(e->CreateStreams());

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
      ParamInfo info{spec.name,
                     spec.shape,
                     1,
                     static_cast<int>(ui),
                     static_cast<int>(pi),
                     {},
                     spec.weight_decay,
                     spec.requires_grad,
                     spec.tied_to};
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
        return absl::InvalidArgumentError(
            absl::StrCat("parameter name '", spec.name, "' is registered twice"));
      }
      int space = -1;
      if (spec.tied_to.empty()) {
        int& si = space_of[spec.requires_grad ? 1 : 0];
        if (si < 0) {
          si = static_cast<int>(e->spaces_.size());
          auto sp = std::make_unique<Space>();
          sp->name = spec.requires_grad ? u->name : u->name + "/frozen";
          sp->trainable = spec.requires_grad;
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
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", info.name, "' is tied to unknown parameter '", info.tied_to, "'"));
    }
    const Unit& tu = *e->units_[it->second.first];
    const ParamInfo& target = tu.params[it->second.second];
    const int space = tu.param_space[it->second.second];
    if (!target.tied_to.empty() || !target.requires_grad) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", info.name, "' is tied to '", target.name,
                       "', which must be trainable and not itself tied"));
    }
    if (target.shape != info.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", info.name, "' (", info.numel, " elements) is tied to '",
                       target.name, "' (", target.numel, " elements) of a different shape"));
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
  RETURN_IF_ERROR(e->AllocateState());
  if (e->options_.loss_scaling) e->scaler_ = std::make_unique<LossScaler>(e->options_.loss_scaler);
  return e;
}

// Sizes and persistent buffers (zeroed on the compute stream).
absl::Status ZeroEngine::AllocateState() {
  const int n = dp_.size(), r = dp_.rank();
  const int64_t cs = DTypeSize(options_.compute_dtype), gs = DTypeSize(options_.grad_dtype);
  for (auto& sp : spaces_) {
    Space& s = *sp;
    s.padded = (s.numel + n - 1) / n * n;
    s.shard = s.padded / n;
    s.shard_range = {r * s.shard, (r + 1) * s.shard};
    s.master_range = policy_.shard_master ? s.shard_range : Range{0, s.padded};
    s.compute_range = policy_.shard_params ? s.shard_range : Range{0, s.padded};
    s.grad_base = policy_.shard_grads ? s.shard_range.begin : 0;
    s.residency = policy_.shard_params ? Residency::kSharded : Residency::kFull;
    ASSIGN_OR_RETURN(s.param, Alloc(s.compute_range.size() * cs, MemCategory::kParam, nullptr));
    RETURN_IF_ERROR(kernels::Memset(*compute_, s.param.data(), s.param.bytes()));
    if (!s.trainable) continue;
    const int64_t grad_n = policy_.shard_grads ? s.shard : s.padded;
    ASSIGN_OR_RETURN(s.grad, Alloc(grad_n * gs, MemCategory::kGrad, nullptr));
    const int64_t master_n = s.master_range.size();
    ASSIGN_OR_RETURN(s.master, Alloc(master_n * 4, MemCategory::kMaster, nullptr));
    ASSIGN_OR_RETURN(s.m, Alloc(master_n * 4, MemCategory::kOptim, nullptr));
    if (options_.optimizer.kind == OptimizerKind::kAdamW) {
      ASSIGN_OR_RETURN(s.v, Alloc(master_n * 4, MemCategory::kOptim, nullptr));
    }
    for (const Buffer* b : {&s.grad, &s.master, &s.m, &s.v}) {
      RETURN_IF_ERROR(kernels::Memset(*compute_, b->data(), b->bytes()));
    }
  }
  return RecordParamsReady();
}

// ---- values -------------------------------------------------------------------

absl::Status ZeroEngine::Fill(const std::function<absl::Status(const ParamInfo&, int, float*)>& fn,
                              int states) {
  if (meta()) return absl::OkStatus();  // nothing to fill: buffers are accounted only
  RETURN_IF_ERROR(Synchronize());
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (states > 1 && !s.trainable) continue;  // restore: frozen values are the model's
    const int n = s.trainable ? std::min(states, s.v.bytes() > 0 ? 3 : 2) : 1;
    for (int which = n - 1; which >= 0; --which) {  // master last: it feeds the copies
      PinnedVector<float> full(s.padded, 0.0f);     // staging: pinned on GPUs
      for (const Space::Slot& slot : s.slots) {
        ASSIGN_OR_RETURN(ParamInfo p, param_info(slot.name));
        RETURN_IF_ERROR(fn(p, which, full.data() + slot.range.begin));
      }
      if (which > 0 || s.trainable) {
        const Buffer& dst = which == 0 ? s.master : which == 1 ? s.m : s.v;
        RETURN_IF_ERROR(kernels::Copy(*compute_, dst.data(), full.data() + s.master_range.begin,
                                      s.master_range.size() * 4));
      }
      if (which == 0) {
        const float* src = full.data() + s.compute_range.begin;
        Buffer staged;  // a GPU kernel reads device memory, not the host's
        if (!options_.device.host_accessible()) {
          ASSIGN_OR_RETURN(staged,
                           Alloc(s.compute_range.size() * 4, MemCategory::kWorkspace, compute_));
          RETURN_IF_ERROR(kernels::Copy(*compute_, staged.data(), src, s.compute_range.size() * 4));
          src = staged.as<float>();
        }
        RETURN_IF_ERROR(kernels::Cast(*compute_, src, DType::kF32, s.param.data(),
                                      options_.compute_dtype, s.compute_range.size()));
      }
      RETURN_IF_ERROR(compute_->Synchronize());  // `full` dies here
    }
  }
  return RecordParamsReady();
}

absl::Status ZeroEngine::Initialize(const InitFn& fn) {
  return Fill(
      [&fn](const ParamInfo& p, int, float* values) {
        return Annotate(fn(p, values), absl::StrCat("initializing '", p.name, "'"));
      },
      1);
}

absl::Status ZeroEngine::Restore(const RestoreFn& fn) {
  return Fill(
      [&fn](const ParamInfo& p, int which, float* values) {
        return Annotate(fn(p, static_cast<ParamState>(which), values),
                        absl::StrCat("restoring '", p.name, "'"));
      },
      3);
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
    return absl::InvalidArgumentError(
        absl::StrCat("engine state: the saved run had loss scaling ", s.loss_scaling ? "on" : "off",
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

absl::StatusOr<std::vector<ZeroEngine::OwnedSlice>> ZeroEngine::OwnedSlices() {
  std::vector<OwnedSlice> out;
  if (meta() || (!policy_.shard_master && dp_.rank() != 0)) return out;
  RETURN_IF_ERROR(Synchronize());
  staged_.clear();
  for (const auto& sp : spaces_) {
    const Space& s = *sp;
    if (!s.trainable) continue;
    // Host pointers to master, m, v: the buffers themselves on host-
    // accessible devices, else staged host copies.
    const float* host[3] = {s.master.as<float>(), s.m.as<float>(),
                            s.v.bytes() > 0 ? s.v.as<float>() : nullptr};
    if (!options_.device.host_accessible()) {
      for (int i = 0; i < 3; ++i) {
        if (host[i] == nullptr) continue;
        PinnedVector<float>& copy = staged_.emplace_back(s.master_range.size());
        RETURN_IF_ERROR(ToHost(host[i], copy.data(), s.master_range.size() * 4));
        host[i] = copy.data();
      }
    }
    for (const Space::Slot& slot : s.slots) {
      const Range own = slot.range.Intersect(s.master_range);
      auto p = param_info(slot.name);
      if (own.size() == 0 || !p.ok()) continue;
      const int64_t o = own.begin - s.master_range.begin;
      OwnedSlice sl;
      sl.info = *p;
      sl.range = {own.begin - slot.range.begin, own.end - slot.range.begin};
      sl.master = host[0] + o;
      sl.m = host[1] + o;
      sl.v = host[2] != nullptr ? host[2] + o : nullptr;
      out.push_back(std::move(sl));
    }
  }
  return out;
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

// ---- checks -------------------------------------------------------------------

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
    return absl::InvalidArgumentError(absl::StrCat(what, ": unit '", u.name, "' has no parameter ",
                                                   index, " (", u.params.size(), " parameters)"));
  }
  return absl::OkStatus();
}

// ---- stage 3: gathers ------------------------------------------------------------

// Enqueues the all-gather of a sharded space on the gather stream (after the
// last write of its shard), into a buffer of the gather stream.
absl::Status ZeroEngine::StartGather(Space& s) {
  if (s.residency != Residency::kSharded) return absl::OkStatus();  // in flight or held
  // Run-ahead limit: a new gather is allocated only once the compute stream
  // is past every released unit's last use, so the released buffers are
  // reusable and what is physically held is what the tracker counts (the
  // gather still overlaps the compute of the units in use).
  while (!releases_in_flight_.empty()) {
    RETURN_IF_ERROR(releases_in_flight_.front()->Synchronize());
    releases_in_flight_.pop_front();
  }
  const DType cd = options_.compute_dtype;
  ASSIGN_OR_RETURN(s.gathered, Alloc(s.padded * DTypeSize(cd), MemCategory::kComm, gather_.get()));
  // The shard is written by the optimizer on the compute stream.
  RETURN_IF_ERROR(gather_->Wait(*params_ready_));
  CommScope scope(absl::StrCat("zero: gather '", s.name, "'"));
  dp_.AllGatherAsync({s.param.data(), s.shard, cd}, {s.gathered.data(), s.padded, cd},
                     gather_.get());
  s.gather_event = gather_->NewEvent();
  RETURN_IF_ERROR(gather_->Record(s.gather_event.get()));
  return s.SetResidency(Residency::kGathering);
}

// The compute stream waits for the space's gather (the host does not).
absl::Status ZeroEngine::UseGathered(Space& s) {
  if (s.residency == Residency::kGathering) {
    RETURN_IF_ERROR(compute_->Wait(*s.gather_event, dp_blocked_));
    RETURN_IF_ERROR(s.SetResidency(Residency::kGathered));
  }
  if (s.residency != Residency::kGathered) {
    return absl::InternalError(
        absl::StrCat("space '", s.name, "' is ", ResidencyName(s.residency), ", not gathered"));
  }
  ++s.in_use;
  return absl::OkStatus();
}

// Gathers (or finds prefetched) every space the unit uses and marks them in use.
absl::Status ZeroEngine::GatherUnit(Unit& u) {
  for (int si : u.spaces) RETURN_IF_ERROR(StartGather(*spaces_[si]));
  for (int si : u.spaces) RETURN_IF_ERROR(UseGathered(*spaces_[si]));
  return absl::OkStatus();
}

// Drops the unit's hold on its gathered spaces; a space is released when no
// unit holds it: its buffer returns to the gather stream's pool once the
// compute stream is past its last use.
void ZeroEngine::Release(Unit& u) {
  bool released = false;
  for (int si : u.spaces) {
    Space& s = *spaces_[si];
    if (s.in_use > 0 && --s.in_use == 0 && !options_.keep_params_for_step) {
      s.gathered.RecordStream(*compute_);
      s.gathered.Reset();
      s.SetResidency(Residency::kSharded).IgnoreError();  // kGathered -> kSharded
      released = true;
    }
  }
  if (released) {
    std::unique_ptr<Event> e = compute_->NewEvent();
    if (e != nullptr && compute_->Record(e.get()).ok()) releases_in_flight_.push_back(std::move(e));
  }
}

// Step(): gathers still held (keep_params_for_step) or prefetched past the
// last use are dropped.
absl::Status ZeroEngine::DiscardPrefetches() {
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (s.residency != Residency::kGathering && s.residency != Residency::kGathered) continue;
    s.gathered.RecordStream(*compute_);
    s.gathered.Reset();
    s.in_use = 0;
    RETURN_IF_ERROR(s.SetResidency(Residency::kSharded));
  }
  releases_in_flight_.clear();
  return absl::OkStatus();
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
    return absl::FailedPreconditionError(
        absl::StrCat("unit order changed at call ", order_pos_, " of step ", step_ + 1, ": got ",
                     kinds[kind], "(unit '", units_[unit]->name, "'), the first step recorded ",
                     expected, "; prefetching depends on a fixed order"));
  }
  ++order_pos_;
  return absl::OkStatus();
}

absl::Status ZeroEngine::Prefetch() {
  if (!order_recorded_) return absl::OkStatus();
  for (size_t k = order_pos_; k < order_.size() && k < order_pos_ + options_.prefetch_depth; ++k) {
    for (int si : units_[order_[k].second]->spaces) RETURN_IF_ERROR(StartGather(*spaces_[si]));
  }
  return absl::OkStatus();
}

// ---- hooks --------------------------------------------------------------------

absl::Status ZeroEngine::PreForward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PreForward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kIdle) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreForward(unit '", u.name, "') while it is ", UnitStateName(u.state)));
  }
  if (policy_.shard_params) {
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
        absl::StrCat("PostForward(unit '", u.name, "') while it is ", UnitStateName(u.state)));
  }
  const bool keep = policy_.shard_params && options_.keep_params_until_backward && !evaluating_;
  if (policy_.shard_params && !keep) Release(u);
  u.state = keep ? UnitState::kForwardDone : UnitState::kIdle;
  return absl::OkStatus();
}

absl::Status ZeroEngine::PreBackward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PreBackward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kIdle && u.state != UnitState::kForwardDone) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreBackward(unit '", u.name, "') while it is ", UnitStateName(u.state)));
  }
  if (evaluating_) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreBackward(unit '", u.name, "') while evaluating"));
  }
  if (u.trainable_space >= 0 && spaces_[u.trainable_space]->micro >= options_.grad_accum) {
    return absl::FailedPreconditionError(
        absl::StrCat("PreBackward(unit '", u.name, "'): its ", options_.grad_accum,
                     " micro-batch(es) of this step (grad_accum) are done; call Step() first"));
  }
  if (policy_.shard_params) {
    RETURN_IF_ERROR(RecordOrCheckOrder(1, unit));
    // Kept since forward (keep_params_until_backward): already held.
    if (u.state != UnitState::kForwardDone) RETURN_IF_ERROR(GatherUnit(u));
    RETURN_IF_ERROR(Prefetch());
  }
  for (int si : u.spaces) {
    Space& s = *spaces_[si];
    if (!s.trainable || s.grad_state == GradState::kAccumulating) continue;
    if (policy_.shard_grads) {
      // A new full gradient (zeroed on the compute stream, which fills it);
      // a reduction of this space still in flight has its own buffer.
      if (s.grad_state == GradState::kReducing) RETURN_IF_ERROR(FinishPendingReduction());
      RETURN_IF_ERROR(LimitReductionsInFlight());
      ASSIGN_OR_RETURN(s.grad_full, AllocZeroed(s.padded * DTypeSize(options_.grad_dtype),
                                                MemCategory::kComm, *compute_));
    } else if (s.grad_state == GradState::kReducing) {
      RETURN_IF_ERROR(FinishBucket(s));
    }
    RETURN_IF_ERROR(s.SetGradState(GradState::kAccumulating));
  }
  reduced_ = false;
  u.state = UnitState::kBackward;
  return absl::OkStatus();
}

absl::Status ZeroEngine::PostBackward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PostBackward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kBackward) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostBackward(unit '", u.name, "') while it is ", UnitStateName(u.state)));
  }
  if (u.trainable_space >= 0) {
    Space& s = *spaces_[u.trainable_space];
    ++s.micro;
    // Tied spaces collect gradients from several units: reduced in Step().
    if (!s.tied) {
      if (policy_.reduce_in_backward) {
        // One reduction per micro-batch (or once at the last one), enqueued
        // now: it overlaps the next unit's backward.
        if (options_.accum_policy == GradAccumPolicy::kReduceEveryMicroBatch ||
            s.micro >= options_.grad_accum) {
          RETURN_IF_ERROR(StartReduction(u.trainable_space));
        }
      } else if (s.micro >= options_.grad_accum) {
        // The unit is the bucket: after its last micro-batch its gradients
        // are complete.
        RETURN_IF_ERROR(StartBucket(s));
      }
    }
  }
  if (policy_.shard_params) Release(u);
  u.state = UnitState::kIdle;
  return absl::OkStatus();
}

absl::StatusOr<MutView> ZeroEngine::Param(int unit, int index) {
  RETURN_IF_ERROR(CheckParam(unit, index, "Param"));
  Unit& u = *units_[unit];
  if (u.state == UnitState::kIdle) {
    return absl::FailedPreconditionError(
        absl::StrCat("parameters of unit '", u.name,
                     "' are used outside PreForward/PostForward or "
                     "PreBackward/PostBackward"));
  }
  const Space& s = *spaces_[u.param_space[index]];
  const Buffer& full = policy_.shard_params ? s.gathered : s.param;
  const ParamInfo& p = u.params[index];
  return MutView{ElemPtr(full, p.unit_range.begin, options_.compute_dtype), p.numel,
                 options_.compute_dtype};
}

absl::StatusOr<MutView> ZeroEngine::Grad(int unit, int index) {
  RETURN_IF_ERROR(CheckParam(unit, index, "Grad"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kBackward) {
    return absl::FailedPreconditionError(
        absl::StrCat("gradients of unit '", u.name, "' are used outside PreBackward/PostBackward"));
  }
  const ParamInfo& p = u.params[index];
  if (!p.requires_grad) {
    return absl::FailedPreconditionError(
        absl::StrCat("parameter '", p.name, "' is frozen (requires_grad = false): no gradient"));
  }
  const Space& s = *spaces_[u.param_space[index]];
  const Buffer& full = policy_.shard_grads ? s.grad_full : s.grad;
  return MutView{ElemPtr(full, p.unit_range.begin, options_.grad_dtype), p.numel,
                 options_.grad_dtype};
}

// ---- inspection ------------------------------------------------------------------

const ZeroEngine::Space* ZeroEngine::TrainableSpace(int unit) const {
  const int si = units_[unit]->trainable_space;
  return si < 0 ? nullptr : spaces_[si].get();
}

absl::StatusOr<std::vector<float>> ZeroEngine::GradShard(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "GradShard"));
  if (!reduced_) {
    return absl::FailedPreconditionError("GradShard before ReduceGradients in this step");
  }
  const Space* s = TrainableSpace(unit);
  if (s == nullptr || meta()) return std::vector<float>();
  const DType g = options_.grad_dtype;
  std::vector<char> raw(s->master_range.size() * DTypeSize(g));
  RETURN_IF_ERROR(ToHost(ElemPtr(s->grad, s->master_range.begin - s->grad_base, g), raw.data(),
                         static_cast<int64_t>(raw.size())));
  std::vector<float> out(s->master_range.size());
  for (int64_t i = 0; i < s->master_range.size(); ++i) {
    out[i] = LoadAsF32(raw.data(), g, i) / options_.grad_accum;
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

absl::StatusOr<std::vector<float>> ZeroEngine::GatherFull(const std::string& name) {
  ASSIGN_OR_RETURN(ParamInfo p, param_info(name));
  if (meta()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", name, "' lives on the meta device: there are no values to gather"));
  }
  const Space& s = *spaces_[units_[p.unit]->param_space[p.index]];
  // The fp32 master of trainable parameters; the compute copy of frozen ones.
  const DType d = s.trainable ? DType::kF32 : options_.compute_dtype;
  const Buffer& mine = s.trainable ? s.master : s.param;
  const bool sharded = s.trainable ? policy_.shard_master : policy_.shard_params;
  const void* src = mine.data();
  Buffer full;
  if (sharded) {
    ASSIGN_OR_RETURN(full, Alloc(s.padded * DTypeSize(d), MemCategory::kWorkspace, compute_));
    RETURN_IF_ERROR(
        dp_.AllGatherAsync({mine.data(), s.shard, d}, {full.data(), s.padded, d}, compute_).Wait());
    src = full.data();
  }
  // Widened on the device, then brought to the host.
  const char* at = static_cast<const char*>(src) + p.unit_range.begin * DTypeSize(d);
  Buffer widened;
  if (d != DType::kF32) {
    ASSIGN_OR_RETURN(widened, Alloc(p.numel * 4, MemCategory::kWorkspace, compute_));
    RETURN_IF_ERROR(kernels::Cast(*compute_, at, d, widened.data(), DType::kF32, p.numel));
    at = static_cast<const char*>(widened.data());
  }
  std::vector<float> out(p.numel);
  RETURN_IF_ERROR(ToHost(at, out.data(), p.numel * 4));
  return out;
}

const std::string& ZeroEngine::unit_name(int unit) const { return units_[unit]->name; }

absl::StatusOr<ParamInfo> ZeroEngine::param_info(const std::string& name) const {
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
const float* ZeroEngine::optim_state(int unit, ParamState state) const {
  const Space* s = TrainableSpace(unit);
  if (s == nullptr) return nullptr;
  switch (state) {
    case ParamState::kMaster:
      return master_data(unit);
    case ParamState::kMoment1:
      return s->m.as<float>();
    case ParamState::kMoment2:
      return s->v.as<float>();
  }
  return nullptr;
}
float ZeroEngine::loss_scale() const { return scaler_ ? scaler_->scale() : 1.0f; }

}  // namespace trireme
