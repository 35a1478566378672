#include "runtime/zero/engine.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cast.h"
#include "runtime/core/status.h"

namespace trireme {

namespace {

enum class UnitState { kIdle, kForward, kForwardDone, kBackward };

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

struct ZeroEngine::Unit {
  std::string name;
  std::vector<ParamInfo> params;
  int64_t numel = 0;   // unpadded
  int64_t padded = 0;  // multiple of dp
  int64_t shard = 0;   // padded / dp
  Range shard_range;   // unit_offset space
  Range master_range;  // unit_offset space: shard_range, or all of it in stage 0
  int64_t grad_base = 0;  // unit offset of grad[0]: 0 (full) or shard_range.begin
  Buffer param;        // compute dtype: full (stages 0-2) or shard (3)
  Buffer gathered;     // stage 3: full compute copy while in use
  Work gather_work;
  bool gather_pending = false;
  Buffer grad;         // grad dtype: full (0, 1) or shard (2, 3)
  Buffer grad_full;    // stages 2-3: full gradient while in backward
  Buffer rs_tmp;       // stages 2-3: reduce-scatter output to add into grad
  Work reduce_work;
  bool grad_has_data = false;  // grad shard already holds a reduced micro-batch
  Buffer master, m, v;
  UnitState state = UnitState::kIdle;
  int micro = 0;  // PostBackward calls this step
};

absl::Status EngineOptions::Validate() const {
  if (stage < 0 || stage > 3) {
    return absl::InvalidArgumentError(absl::StrCat("ZeRO stage ", stage, " is not 0, 1, 2 or 3"));
  }
  if (!IsFloat(compute_dtype) || !IsFloat(grad_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compute dtype (", DTypeName(compute_dtype), ") and grad dtype (", DTypeName(grad_dtype),
        ") must be f32, bf16 or f16"));
  }
  if (grad_accum < 1) {
    return absl::InvalidArgumentError(absl::StrCat("grad_accum ", grad_accum, " must be >= 1"));
  }
  if (prefetch_depth < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch_depth ", prefetch_depth, " must be >= 0"));
  }
  if (device.kind != DeviceKind::kCpu) {
    return absl::UnimplementedError(absl::StrCat(
        "the ZeRO engine runs on cpu in this version; got device ", device.ToString()));
  }
  RETURN_IF_ERROR(optimizer.Validate());
  return lr.Validate();
}

ZeroEngine::ZeroEngine(Communicator& dp, EngineOptions options, MemoryTracker* tracker)
    : dp_(dp), options_(std::move(options)), tracker_(tracker) {}

ZeroEngine::~ZeroEngine() {
  // No collective may still use engine buffers.
  for (auto& u : units_) {
    if (u->gather_pending) u->gather_work.Wait().IgnoreError();
  }
  if (pending_unit_ >= 0) units_[pending_unit_]->reduce_work.Wait().IgnoreError();
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
  const int64_t cs = DTypeSize(o.compute_dtype), gs = DTypeSize(o.grad_dtype);
  for (size_t ui = 0; ui < units.size(); ++ui) {
    auto u = std::make_unique<Unit>();
    u->name = units[ui].name;
    if (units[ui].params.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("unit '", u->name, "' has no parameters"));
    }
    for (size_t pi = 0; pi < units[ui].params.size(); ++pi) {
      const ParamSpec& spec = units[ui].params[pi];
      ParamInfo info{spec.name, spec.shape, 1, static_cast<int>(ui), static_cast<int>(pi), {},
                     spec.weight_decay};
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
      info.unit_range = {u->numel, u->numel + info.numel};
      u->numel += info.numel;
      u->params.push_back(std::move(info));
    }
    u->padded = (u->numel + n - 1) / n * n;
    u->shard = u->padded / n;
    u->shard_range = {r * u->shard, (r + 1) * u->shard};
    u->master_range = o.stage == 0 ? Range{0, u->padded} : u->shard_range;
    u->grad_base = o.stage <= 1 ? 0 : u->shard_range.begin;
    const int64_t master_n = u->master_range.size();
    const bool full_params = o.stage <= 2;
    ASSIGN_OR_RETURN(u->param, e->Alloc((full_params ? u->padded : u->shard) * cs,
                                        MemCategory::kParam));
    ASSIGN_OR_RETURN(u->grad, e->Alloc((o.stage <= 1 ? u->padded : u->shard) * gs,
                                       MemCategory::kGrad));
    ASSIGN_OR_RETURN(u->master, e->Alloc(master_n * 4, MemCategory::kMaster));
    ASSIGN_OR_RETURN(u->m, e->Alloc(master_n * 4, MemCategory::kOptim));
    if (o.optimizer.kind == OptimizerKind::kAdamW) {
      ASSIGN_OR_RETURN(u->v, e->Alloc(master_n * 4, MemCategory::kOptim));
    }
    e->units_.push_back(std::move(u));
  }
  if (e->options_.loss_scaling) e->scaler_ = std::make_unique<LossScaler>(o.loss_scaler);
  return e;
}

absl::Status ZeroEngine::Initialize(const InitFn& fn) {
  for (auto& up : units_) {
    Unit& u = *up;
    std::vector<float> full(u.padded, 0.0f);
    for (const ParamInfo& p : u.params) {
      RETURN_IF_ERROR(Annotate(fn(p, full.data() + p.unit_range.begin),
                               absl::StrCat("initializing '", p.name, "'")));
    }
    std::memcpy(u.master.data(), full.data() + u.master_range.begin, u.master_range.size() * 4);
    const Range compute = options_.stage <= 2 ? Range{0, u.padded} : u.shard_range;
    RETURN_IF_ERROR(kernels::CastCpu(full.data() + compute.begin, DType::kF32, u.param.data(),
                                     options_.compute_dtype, compute.size()));
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::CheckUnit(int unit, const char* hook) const {
  if (unit < 0 || unit >= num_units()) {
    return absl::InvalidArgumentError(
        absl::StrCat(hook, ": unit ", unit, " does not exist (", num_units(), " units)"));
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::Gather(Unit& u) {
  if (!u.gathered.data() && !u.gather_pending) {
    const int64_t cs = DTypeSize(options_.compute_dtype);
    ASSIGN_OR_RETURN(u.gathered, Buffer::Allocate(options_.device, u.padded * cs,
                                                  MemCategory::kComm, tracker_));
    u.gather_work = dp_.AllGatherAsync({u.param.data(), u.shard, options_.compute_dtype},
                                       {u.gathered.data(), u.padded, options_.compute_dtype});
    u.gather_pending = true;
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::WaitGather(Unit& u) {
  if (!u.gather_pending) return absl::OkStatus();
  u.gather_pending = false;
  return Annotate(u.gather_work.Wait(), absl::StrCat("gathering unit '", u.name, "'"));
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
    RETURN_IF_ERROR(Gather(*units_[order_[k].second]));
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
    RETURN_IF_ERROR(RecordOrCheckOrder(0, unit));
    RETURN_IF_ERROR(Gather(u));
    RETURN_IF_ERROR(WaitGather(u));
    RETURN_IF_ERROR(Prefetch());
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
  const bool keep = options_.stage == 3 && options_.keep_params_until_backward;
  if (options_.stage == 3 && !keep) u.gathered.Reset();  // release
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
  if (options_.stage == 3) {
    RETURN_IF_ERROR(RecordOrCheckOrder(1, unit));
    RETURN_IF_ERROR(Gather(u));  // no-op if kept from forward or prefetched
    RETURN_IF_ERROR(WaitGather(u));
    RETURN_IF_ERROR(Prefetch());
  }
  if (options_.stage >= 2 && u.grad_full.data() == nullptr) {
    ASSIGN_OR_RETURN(u.grad_full,
                     Alloc(u.padded * DTypeSize(options_.grad_dtype), MemCategory::kComm));
  }
  reduced_ = false;
  u.state = UnitState::kBackward;
  return absl::OkStatus();
}

absl::Status ZeroEngine::FinishPendingReduction() {
  if (pending_unit_ < 0) return absl::OkStatus();
  Unit& u = *units_[pending_unit_];
  pending_unit_ = -1;
  RETURN_IF_ERROR(Annotate(u.reduce_work.Wait(), absl::StrCat("reducing unit '", u.name, "'")));
  if (u.rs_tmp.data() != nullptr) {
    const DType g = options_.grad_dtype;
    for (int64_t i = 0; i < u.shard; ++i) {
      StoreFromF32(u.grad.data(), g, i, LoadAsF32(u.grad.data(), g, i) +
                                            LoadAsF32(u.rs_tmp.data(), g, i));
    }
    u.rs_tmp.Reset();
  }
  u.grad_has_data = true;
  u.grad_full.Reset();
  return absl::OkStatus();
}

absl::Status ZeroEngine::PostBackward(int unit) {
  RETURN_IF_ERROR(CheckUnit(unit, "PostBackward"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kBackward) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostBackward(unit '", u.name, "') while it is ", StateName(u.state)));
  }
  ++u.micro;
  if (options_.stage >= 2 &&
      (options_.accum_policy == GradAccumPolicy::kReduceEveryMicroBatch ||
       u.micro >= options_.grad_accum)) {
    // One reduction in flight at a time: it overlaps the next unit's backward,
    // and at most two full gradients exist at once.
    RETURN_IF_ERROR(FinishPendingReduction());
    const DType g = options_.grad_dtype;
    void* out = u.grad.data();
    if (u.grad_has_data) {
      ASSIGN_OR_RETURN(u.rs_tmp, Alloc(u.shard * DTypeSize(g), MemCategory::kComm));
      out = u.rs_tmp.data();
    }
    u.reduce_work = dp_.ReduceScatterAsync({u.grad_full.data(), u.padded, g}, {out, u.shard, g},
                                           ReduceOp::kAvg);
    pending_unit_ = unit;
  }
  if (options_.stage == 3) u.gathered.Reset();
  u.state = UnitState::kIdle;
  return absl::OkStatus();
}

absl::StatusOr<MutView> ZeroEngine::Param(int unit, int index) {
  RETURN_IF_ERROR(CheckUnit(unit, "Param"));
  Unit& u = *units_[unit];
  if (index < 0 || index >= static_cast<int>(u.params.size())) {
    return absl::InvalidArgumentError(absl::StrCat("unit '", u.name, "' has no parameter ",
                                                   index, " (", u.params.size(), " parameters)"));
  }
  if (u.state == UnitState::kIdle) {
    return absl::FailedPreconditionError(absl::StrCat(
        "parameters of unit '", u.name, "' are used outside PreForward/PostForward or "
        "PreBackward/PostBackward"));
  }
  const Buffer& full = options_.stage == 3 ? u.gathered : u.param;
  const ParamInfo& p = u.params[index];
  return MutView{ElemPtr(full, p.unit_range.begin, options_.compute_dtype), p.numel,
                 options_.compute_dtype};
}

absl::StatusOr<MutView> ZeroEngine::Grad(int unit, int index) {
  RETURN_IF_ERROR(CheckUnit(unit, "Grad"));
  Unit& u = *units_[unit];
  if (u.state != UnitState::kBackward) {
    return absl::FailedPreconditionError(absl::StrCat(
        "gradients of unit '", u.name, "' are used outside PreBackward/PostBackward"));
  }
  if (index < 0 || index >= static_cast<int>(u.params.size())) {
    return absl::InvalidArgumentError(absl::StrCat("unit '", u.name, "' has no parameter ",
                                                   index, " (", u.params.size(), " parameters)"));
  }
  const Buffer& full = options_.stage >= 2 ? u.grad_full : u.grad;
  const ParamInfo& p = u.params[index];
  return MutView{ElemPtr(full, p.unit_range.begin, options_.grad_dtype), p.numel,
                 options_.grad_dtype};
}

absl::Status ZeroEngine::ReduceGradients() {
  if (reduced_) return absl::OkStatus();
  const DType g = options_.grad_dtype;
  if (options_.stage == 0) {
    // Bucketed at the step: one all-reduce per unit.
    std::vector<Work> works;
    for (auto& u : units_) {
      works.push_back(dp_.AllReduceAsync({u->grad.data(), u->padded, g},
                                         {u->grad.data(), u->padded, g}, ReduceOp::kAvg));
    }
    for (Work& w : works) RETURN_IF_ERROR(w.Wait());
  } else if (options_.stage == 1) {
    std::vector<Work> works;
    for (auto& u : units_) {
      works.push_back(dp_.ReduceScatterAsync(
          {u->grad.data(), u->padded, g},
          {ElemPtr(u->grad, u->shard_range.begin, g), u->shard, g}, ReduceOp::kAvg));
    }
    for (Work& w : works) RETURN_IF_ERROR(w.Wait());
  } else {
    RETURN_IF_ERROR(FinishPendingReduction());
    // Full gradients still held (kAccumulateThenReduce before the last
    // micro-batch): reduce them now.
    for (size_t i = 0; i < units_.size(); ++i) {
      Unit& u = *units_[i];
      if (u.grad_full.data() == nullptr) continue;
      void* out = u.grad.data();
      if (u.grad_has_data) {
        ASSIGN_OR_RETURN(u.rs_tmp, Alloc(u.shard * DTypeSize(g), MemCategory::kComm));
        out = u.rs_tmp.data();
      }
      u.reduce_work = dp_.ReduceScatterAsync({u.grad_full.data(), u.padded, g},
                                             {out, u.shard, g}, ReduceOp::kAvg);
      pending_unit_ = static_cast<int>(i);
      RETURN_IF_ERROR(FinishPendingReduction());
    }
  }
  reduced_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ZeroEngine::GradShard(int unit) const {
  RETURN_IF_ERROR(CheckUnit(unit, "GradShard"));
  if (!reduced_) {
    return absl::FailedPreconditionError("GradShard before ReduceGradients in this step");
  }
  const Unit& u = *units_[unit];
  std::vector<float> out(u.master_range.size());
  const int64_t off = u.master_range.begin - u.grad_base;
  for (int64_t i = 0; i < u.master_range.size(); ++i) {
    out[i] = LoadAsF32(u.grad.data(), options_.grad_dtype, off + i) / options_.grad_accum;
  }
  return out;
}

absl::StatusOr<StepStats> ZeroEngine::Step() {
  // Gathers still in flight (a prefetch past the last use) must land first.
  for (auto& u : units_) {
    RETURN_IF_ERROR(WaitGather(*u));
    if (u->state != UnitState::kIdle) {
      return absl::FailedPreconditionError(
          absl::StrCat("Step() while unit '", u->name, "' is ", StateName(u->state)));
    }
    if (options_.stage == 3) u->gathered.Reset();
  }
  if (options_.stage == 3) {
    if (order_recorded_ && order_pos_ != order_.size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "unit order changed: step ", step_ + 1, " made ", order_pos_, " of the ",
          order_.size(), " gathers the first step recorded"));
    }
    order_recorded_ = true;
    order_pos_ = 0;
  }
  RETURN_IF_ERROR(ReduceGradients());
  const DType gd = options_.grad_dtype;

  // Widened gradients of each unit's master range (no copy for f32).
  std::vector<Buffer> widened(units_.size());
  std::vector<const float*> grads(units_.size());
  for (size_t i = 0; i < units_.size(); ++i) {
    Unit& u = *units_[i];
    const int64_t off = u.master_range.begin - u.grad_base;
    if (gd == DType::kF32) {
      grads[i] = u.grad.as<float>() + off;
    } else {
      ASSIGN_OR_RETURN(widened[i], Alloc(u.master_range.size() * 4, MemCategory::kWorkspace));
      RETURN_IF_ERROR(kernels::CastCpu(ElemPtr(u.grad, off, gd), gd, widened[i].data(),
                                       DType::kF32, u.master_range.size()));
      grads[i] = widened[i].as<float>();
    }
  }
  // Global norm and overflow: every element counted once (the shard range).
  double sumsq = 0;
  bool finite = true;
  for (size_t i = 0; i < units_.size(); ++i) {
    Unit& u = *units_[i];
    const float* g = grads[i] + (u.shard_range.begin - u.master_range.begin);
    sumsq += SumOfSquares(g, u.shard);
    finite = finite && AllFinite(g, u.shard);
  }
  float red[2] = {static_cast<float>(sumsq), finite ? 0.0f : 1.0f};
  MutView rv{red, 2, DType::kF32};
  RETURN_IF_ERROR(dp_.AllReduce(rv, rv, ReduceOp::kSum));
  for (Communicator* c : options_.norm_groups) RETURN_IF_ERROR(c->AllReduce(rv, rv, ReduceOp::kSum));
  const bool overflow = red[1] > 0 || !std::isfinite(red[0]);
  const float scale = scaler_ ? scaler_->scale() : 1.0f;
  const double base = 1.0 / (static_cast<double>(options_.grad_accum) * scale);

  StepStats stats;
  stats.grad_norm = std::sqrt(static_cast<double>(red[0])) * base;
  stats.skipped = scaler_ ? scaler_->Update(overflow) : overflow;
  stats.loss_scale = scaler_ ? scaler_->scale() : 1.0f;
  stats.lr = options_.lr.At(opt_step_ + 1);
  stats.clip_coef = ClipCoefficient(stats.grad_norm, options_.clip_norm);
  if (!stats.skipped) {
    ++opt_step_;
    const float grad_scale = static_cast<float>(base * stats.clip_coef);
    for (size_t i = 0; i < units_.size(); ++i) {
      Unit& u = *units_[i];
      for (const ParamInfo& p : u.params) {
        const Range seg = p.unit_range.Intersect(u.master_range);
        if (seg.size() == 0) continue;
        const int64_t o = seg.begin - u.master_range.begin;
        if (options_.optimizer.kind == OptimizerKind::kAdamW) {
          AdamWUpdate(options_.optimizer, opt_step_, stats.lr, p.weight_decay, grad_scale,
                      u.master.as<float>() + o, grads[i] + o, u.m.as<float>() + o,
                      u.v.as<float>() + o, seg.size());
        } else {
          SgdUpdate(options_.optimizer, opt_step_, stats.lr, p.weight_decay, grad_scale,
                    u.master.as<float>() + o, grads[i] + o, u.m.as<float>() + o, seg.size());
        }
      }
      // Refresh the compute copies from the master.
      const DType cd = options_.compute_dtype;
      if (options_.stage == 3) {
        RETURN_IF_ERROR(kernels::CastCpu(u.master.data(), DType::kF32, u.param.data(), cd, u.shard));
      } else {
        RETURN_IF_ERROR(kernels::CastCpu(u.master.data(), DType::kF32,
                                         ElemPtr(u.param, u.master_range.begin, cd), cd,
                                         u.master_range.size()));
      }
    }
    if (options_.stage == 1 || options_.stage == 2) {
      std::vector<Work> works;
      const DType cd = options_.compute_dtype;
      for (auto& u : units_) {
        works.push_back(dp_.AllGatherAsync({ElemPtr(u->param, u->shard_range.begin, cd), u->shard, cd},
                                           {u->param.data(), u->padded, cd}));
      }
      for (Work& w : works) RETURN_IF_ERROR(w.Wait());
    }
  }
  // Zero the gradients for the next step.
  for (auto& u : units_) {
    if (u->grad.data() != nullptr) std::memset(u->grad.data(), 0, u->grad.bytes());
    u->grad_has_data = false;
    u->micro = 0;
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
  Unit& u = *units_[p.unit];
  std::vector<float> out(p.numel);
  if (options_.stage == 0) {
    std::memcpy(out.data(), u.master.as<float>() + p.unit_range.begin, p.numel * 4);
    return out;
  }
  ASSIGN_OR_RETURN(Buffer full, Alloc(u.padded * 4, MemCategory::kWorkspace));
  RETURN_IF_ERROR(dp_.AllGather({u.master.data(), u.shard, DType::kF32},
                                {full.data(), u.padded, DType::kF32}));
  std::memcpy(out.data(), full.as<float>() + p.unit_range.begin, p.numel * 4);
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
int64_t ZeroEngine::unit_numel(int unit) const { return units_[unit]->numel; }
int64_t ZeroEngine::unit_padded_numel(int unit) const { return units_[unit]->padded; }
Range ZeroEngine::master_range(int unit) const { return units_[unit]->master_range; }
const float* ZeroEngine::master_data(int unit) const { return units_[unit]->master.as<float>(); }
const float* ZeroEngine::optim_state(int unit, int which) const {
  const Buffer& b = which == 0 ? units_[unit]->m : units_[unit]->v;
  return b.as<float>();
}
float ZeroEngine::loss_scale() const { return scaler_ ? scaler_->scale() : 1.0f; }

}  // namespace trireme
