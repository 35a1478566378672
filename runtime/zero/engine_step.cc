// ZeroEngine::Step as named phases: FinishReductions (ReduceGradients),
// NormAndOverflow, Decide, ApplyOptimizer, RefreshComputeCopies,
// ZeroGradients. Everything runs on the compute stream; the host reads back
// one small value per step (the norm's partial sums and the overflow flags).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"
#include "runtime/zero/internal/state.h"

namespace trireme {
namespace {

// Elements widened at a time when gradients are 16-bit (a 4 MiB workspace).
constexpr int64_t kWidenBlock = int64_t{1} << 20;

}  // namespace

absl::StatusOr<StepStats> ZeroEngine::Step() {
  RETURN_IF_ERROR(CheckIdleForStep());
  RETURN_IF_ERROR(ReduceGradients());
  ASSIGN_OR_RETURN(const Norm norm, NormAndOverflow());
  ASSIGN_OR_RETURN(const Decision d, Decide(norm));
  StepStats stats = d.stats;
  if (!stats.skipped) {
    RETURN_IF_ERROR(ApplyOptimizer(d));
    RETURN_IF_ERROR(RefreshComputeCopies());
  }
  RETURN_IF_ERROR(ZeroGradients());
  ++step_;
  stats.step = step_;
  // Bytes of the operations issued during the step (the last all-gathers may
  // still be in flight on an asynchronous device).
  const CommStats now = dp_.issued_stats();
  stats.bytes_sent = now.total_sent() - last_sent_;
  stats.bytes_received = now.total_received() - last_received_;
  last_sent_ = now.total_sent();
  last_received_ = now.total_received();
  return stats;
}

absl::Status ZeroEngine::CheckIdleForStep() {
  for (auto& u : units_) {
    if (u->state != UnitState::kIdle) {
      return absl::FailedPreconditionError(
          absl::StrCat("Step() while unit '", u->name, "' is ", UnitStateName(u->state)));
    }
  }
  if (!policy_.shard_params) return absl::OkStatus();
  // Gathers held for the step or prefetched past the last use go.
  RETURN_IF_ERROR(DiscardPrefetches());
  if (order_recorded_ && order_pos_ != order_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("unit order changed: step ", step_ + 1, " made ", order_pos_, " of the ",
                     order_.size(), " unit calls the first step recorded"));
  }
  order_recorded_ = true;
  order_pos_ = 0;
  return absl::OkStatus();
}

absl::Status ZeroEngine::ForEachF32Piece(
    Space& s, Range r, const Buffer& work,
    const std::function<absl::Status(const float*, Range)>& fn) {
  const DType gd = options_.grad_dtype;
  if (gd == DType::kF32) {
    return fn(reinterpret_cast<const float*>(ElemPtr(s.grad, r.begin - s.grad_base, gd)), r);
  }
  for (int64_t b = r.begin; b < r.end; b += kWidenBlock) {
    const Range piece{b, std::min(r.end, b + kWidenBlock)};
    RETURN_IF_ERROR(kernels::Cast(*compute_, ElemPtr(s.grad, piece.begin - s.grad_base, gd), gd,
                                  work.data(), DType::kF32, piece.size(), options_.kernel_threads));
    RETURN_IF_ERROR(fn(work.as<float>(), piece));
  }
  return absl::OkStatus();
}

// Global norm and overflow, this rank's part: every element counted once --
// this rank's shard only, TP-replicated parameters on TP rank 0 only,
// pipeline duplicates not at all. One pass: the kernels write the sum of
// squares of every piece of every parameter's shard into a small device
// buffer (in double, where no finite f32 square overflows), which comes back
// to the host in one copy; the host adds the counted pieces in order, and any
// non-finite piece -- counted or not -- is an inf or NaN in the gradients.
absl::StatusOr<ZeroEngine::Norm> ZeroEngine::NormAndOverflow() {
  // On meta the buffers are accounted like real ones and nothing runs.
  Norm norm;
  const bool count_replicated = options_.tp_control == nullptr || options_.tp_control->rank() == 0;
  const auto pieces = [this](Range r) -> int64_t {
    if (options_.grad_dtype == DType::kF32) return 1;
    return (r.size() + kWidenBlock - 1) / kWidenBlock;
  };
  int64_t n_sums = 0, largest = 0;
  for (auto& sp : spaces_) {
    if (!sp->trainable) continue;
    largest = std::max(largest, sp->master_range.size());
    for (const Space::Slot& slot : sp->slots)
      n_sums += pieces(slot.range.Intersect(sp->shard_range));
  }
  // Gradients reach the kernels as f32: directly, or widened a chunk at a
  // time into a bounded workspace.
  Buffer work;
  if (options_.grad_dtype != DType::kF32) {
    ASSIGN_OR_RETURN(work, Alloc(std::min<int64_t>(largest, kWidenBlock) * 4,
                                 MemCategory::kWorkspace, compute_));
  }
  ASSIGN_OR_RETURN(Buffer results, AllocZeroed(n_sums * 8, MemCategory::kWorkspace, *compute_));
  std::vector<bool> counted;  // per piece: part of the norm, or checked for finiteness only
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (!s.trainable) continue;
    for (const Space::Slot& slot : s.slots) {
      const bool in_norm = slot.in_norm && (!slot.replicated_over_tp || count_replicated);
      RETURN_IF_ERROR(ForEachF32Piece(
          s, slot.range.Intersect(s.shard_range), work, [&](const float* g, Range r) {
            double* out = results.as<double>() + counted.size();
            counted.push_back(in_norm);
            return kernels::SumOfSquares(*compute_, g, r.size(), out, options_.kernel_threads);
          }));
    }
  }
  // The step's one read back (and where errors of the work enqueued so far
  // surface).
  std::vector<double> host(n_sums);
  RETURN_IF_ERROR(ToHost(results.data(), host.data(), n_sums * 8));
  for (int64_t i = 0; i < n_sums; ++i) {
    norm.finite = norm.finite && std::isfinite(host[i]);
    if (counted[i]) norm.sumsq += host[i];
  }
  return norm;
}

// Agrees on the norm and overflow over the DP, TP and PP control groups, then
// decides the step: abort, skip, loss scale, learning rate, clip coefficient.
absl::StatusOr<ZeroEngine::Decision> ZeroEngine::Decide(const Norm& local) {
  float red[2] = {static_cast<float>(local.sumsq), local.finite ? 0.0f : 1.0f};
  MutView rv{red, 2, DType::kF32};
  CommScope norm_scope("zero: grad norm and overflow");
  RETURN_IF_ERROR(dp_control().AllReduce(rv, rv, ReduceOp::kSum));
  for (Communicator* c : {options_.tp_control, options_.pp_control}) {
    if (c != nullptr) RETURN_IF_ERROR(c->AllReduce(rv, rv, ReduceOp::kSum));
  }
  const bool overflow = red[1] > 0 || !std::isfinite(red[0]);
  const float scale = scaler_ ? scaler_->scale() : 1.0f;
  const double base = 1.0 / (static_cast<double>(options_.grad_accum) * scale);

  Decision d;
  StepStats& stats = d.stats;
  stats.grad_norm = std::sqrt(static_cast<double>(red[0])) * base;
  stats.nonfinite = overflow;
  stats.nonfinite_ranks = static_cast<int>(red[1]);
  if (overflow && !scaler_ && options_.on_nonfinite == EngineOptions::NonFinite::kAbort) {
    // Every rank holds the same reduced values: the same error everywhere.
    return absl::DataLossError(absl::StrCat(
        "step ", step_ + 1, ": the gradient norm is ", stats.grad_norm, " (",
        stats.nonfinite_ranks > 0 ? absl::StrCat("inf or NaN in the reduced gradients of ",
                                                 stats.nonfinite_ranks, " of the grid's ranks")
                                  : std::string("the sum of squares overflows f32"),
        "); on_nonfinite = abort, nothing updated"));
  }
  stats.skipped = scaler_ ? scaler_->Update(overflow) : overflow;
  stats.loss_scale = scaler_ ? scaler_->scale() : 1.0f;
  stats.lr = options_.lr.At(opt_step_ + 1);
  stats.clip_coef = ClipCoefficient(stats.grad_norm, options_.clip_norm);
  // The gradients hold sums over micro-batches of loss-scaled values.
  d.grad_scale = static_cast<float>(base * stats.clip_coef);
  return d;
}

// The optimizer on this rank's master range, writing the compute copy of each
// updated element in the same pass.
absl::Status ZeroEngine::ApplyOptimizer(const Decision& d) {
  ++opt_step_;
  const StepStats& stats = d.stats;
  const float grad_scale = d.grad_scale;
  const DType cd = options_.compute_dtype;
  Buffer work;
  if (options_.grad_dtype != DType::kF32) {
    int64_t largest = 0;
    for (auto& sp : spaces_) largest = std::max(largest, sp->master_range.size());
    ASSIGN_OR_RETURN(work, Alloc(std::min<int64_t>(largest, kWidenBlock) * 4,
                                 MemCategory::kWorkspace, compute_));
  }
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (!s.trainable) continue;
    for (const Space::Slot& slot : s.slots) {
      RETURN_IF_ERROR(ForEachF32Piece(
          s, slot.range.Intersect(s.master_range), work, [&](const float* g, Range r) {
            const int64_t o = r.begin - s.master_range.begin;
            const kernels::ComputeOut out{ElemPtr(s.param, r.begin - s.compute_range.begin, cd),
                                          cd};
            float* p = s.master.as<float>() + o;
            float* m = s.m.as<float>() + o;
            if (options_.optimizer.kind == OptimizerKind::kAdamW) {
              ASSIGN_OR_RETURN(const kernels::AdamWScalars a,
                               AdamWScalarsFor(options_.optimizer, opt_step_, stats.lr,
                                               slot.weight_decay, grad_scale));
              return kernels::AdamW(*compute_, a, p, g, m, s.v.as<float>() + o, r.size(), out,
                                    options_.kernel_threads);
            }
            ASSIGN_OR_RETURN(const kernels::SgdScalars sg,
                             SgdScalarsFor(options_.optimizer, opt_step_, stats.lr,
                                           slot.weight_decay, grad_scale));
            return kernels::Sgd(*compute_, sg, p, g, m, r.size(), out, options_.kernel_threads);
          }));
    }
  }
  return absl::OkStatus();
}

// Stages 1-2: every rank's full compute copy gets the other ranks' updated
// shards (in place, on the compute stream).
absl::Status ZeroEngine::RefreshComputeCopies() {
  if (!policy_.gather_after_step) return absl::OkStatus();
  const DType cd = options_.compute_dtype;
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (!s.trainable) continue;
    CommScope scope(absl::StrCat("zero: all-gather updated '", s.name, "'"));
    dp_.AllGatherAsync({ElemPtr(s.param, s.shard_range.begin, cd), s.shard, cd},
                       {s.param.data(), s.padded, cd}, compute_);
  }
  return absl::OkStatus();
}

absl::Status ZeroEngine::ZeroGradients() {
  for (auto& sp : spaces_) {
    Space& s = *sp;
    if (s.grad_state != GradState::kIdle) {
      return absl::InternalError(absl::StrCat("space '", s.name, "': gradient ",
                                              GradStateName(s.grad_state), " at the step's end"));
    }
    RETURN_IF_ERROR(kernels::Memset(*compute_, s.grad.data(), s.grad.bytes()));
    s.shard_has_data = false;
    s.micro = 0;
  }
  reduced_ = false;
  // The next step's gathers read the updated shards.
  return RecordParamsReady();
}

}  // namespace trireme
