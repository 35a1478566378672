// The ZeRO engine's gradient reductions: per unit in backward (stages 2-3,
// reduce-scatter into the shard) and per bucket after the last micro-batch
// (stages 0-1, all-reduce or reduce-scatter in place). All of it runs on the
// reduction stream, ordered after the compute stream's backward by events.
#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"
#include "runtime/zero/internal/state.h"

namespace trireme {
namespace {

// `waiter` waits for everything enqueued on `producer` so far.
absl::Status Order(Stream& producer, Stream& waiter, const WaitCounter& blocked = nullptr) {
  std::unique_ptr<Event> e = producer.NewEvent();
  RETURN_IF_ERROR(producer.Record(e.get()));
  return waiter.Wait(*e, blocked);
}

}  // namespace

// Run-ahead limit: the host allocates a new full gradient only once the
// reductions it finished earlier have run, so full gradients in memory stay
// within the two the tracker counts (one filling, one being reduced).
absl::Status ZeroEngine::LimitReductionsInFlight() {
  while (!reductions_in_flight_.empty()) {
    RETURN_IF_ERROR(reductions_in_flight_.front()->Synchronize());
    reductions_in_flight_.pop_front();
  }
  return absl::OkStatus();
}

// Stages 2-3: reduce-scatter the space's full gradient into its shard
// (directly the first time in a step, else into a buffer that is added).
absl::Status ZeroEngine::StartReduction(int si) {
  RETURN_IF_ERROR(FinishPendingReduction());
  Space& s = *spaces_[si];
  RETURN_IF_ERROR(s.SetGradState(GradState::kReducing));
  // The backward that filled the gradient ran on the compute stream.
  RETURN_IF_ERROR(Order(*compute_, *reduce_));
  const DType g = options_.grad_dtype, rd = reduce_dtype();
  const void* in = s.grad_full.data();
  if (rd != g) {  // communicate in the reduce dtype
    ASSIGN_OR_RETURN(s.reduce_in,
                     Alloc(s.padded * DTypeSize(rd), MemCategory::kComm, reduce_.get()));
    RETURN_IF_ERROR(kernels::Cast(*reduce_, s.grad_full.data(), g, s.reduce_in.data(), rd, s.padded,
                                  options_.kernel_threads));
    in = s.reduce_in.data();
  }
  void* out = s.grad.data();
  if (s.shard_has_data || rd != g) {
    ASSIGN_OR_RETURN(s.reduce_out,
                     Alloc(s.shard * DTypeSize(rd), MemCategory::kComm, reduce_.get()));
    out = s.reduce_out.data();
  }
  CommScope scope(absl::StrCat("zero: reduce-scatter '", s.name, "'"));
  dp_.ReduceScatterAsync({in, s.padded, rd}, {out, s.shard, rd}, ReduceOp::kAvg, reduce_.get());
  pending_space_ = si;
  return absl::OkStatus();
}

// Enqueues what completes the pending reduction (adding its output into the
// shard) and frees its buffers in stream order; the host does not wait.
absl::Status ZeroEngine::FinishPendingReduction() {
  if (pending_space_ < 0) return absl::OkStatus();
  Space& s = *spaces_[pending_space_];
  pending_space_ = -1;
  if (s.reduce_out.bytes() != 0) {  // add (or, first in the step, assign) into the shard
    RETURN_IF_ERROR(kernels::AccumulateCast(*reduce_, s.reduce_out.data(), reduce_dtype(),
                                            s.grad.data(), options_.grad_dtype, s.shard,
                                            s.shard_has_data, options_.kernel_threads));
  }
  s.grad_full.RecordStream(*reduce_);  // read by the reduction
  s.grad_full.Reset();
  s.reduce_in.Reset();
  s.reduce_out.Reset();
  s.shard_has_data = true;
  std::unique_ptr<Event> done = reduce_->NewEvent();
  RETURN_IF_ERROR(reduce_->Record(done.get()));
  reductions_in_flight_.push_back(std::move(done));
  return s.SetGradState(GradState::kIdle);
}

// Stages 0-1: all-reduce (stage 0) or reduce-scatter in place into the shard
// (stage 1) of a space's full gradient.
absl::Status ZeroEngine::StartBucket(Space& s) {
  if (s.grad_state == GradState::kIdle) {  // no backward this step: its zeros are reduced
    RETURN_IF_ERROR(s.SetGradState(GradState::kAccumulating));
  }
  RETURN_IF_ERROR(s.SetGradState(GradState::kReducing));
  RETURN_IF_ERROR(Order(*compute_, *reduce_));
  const DType g = options_.grad_dtype, rd = reduce_dtype();
  void* buf = s.grad.data();
  if (rd != g) {  // communicate in the reduce dtype, in place in a cast copy
    ASSIGN_OR_RETURN(s.reduce_in,
                     Alloc(s.padded * DTypeSize(rd), MemCategory::kComm, reduce_.get()));
    RETURN_IF_ERROR(kernels::Cast(*reduce_, s.grad.data(), g, s.reduce_in.data(), rd, s.padded,
                                  options_.kernel_threads));
    buf = s.reduce_in.data();
  }
  if (policy_.all_reduce) {
    CommScope scope(absl::StrCat("zero: all-reduce '", s.name, "'"));
    dp_.AllReduceAsync({buf, s.padded, rd}, {buf, s.padded, rd}, ReduceOp::kAvg, reduce_.get());
  } else {
    CommScope scope(absl::StrCat("zero: reduce-scatter '", s.name, "'"));
    dp_.ReduceScatterAsync(
        {buf, s.padded, rd},
        {static_cast<char*>(buf) + s.shard_range.begin * DTypeSize(rd), s.shard, rd},
        ReduceOp::kAvg, reduce_.get());
  }
  reduced_ = false;
  return absl::OkStatus();
}

// Stages 0-1: with a distinct reduce dtype, casts the reduced values back into
// the gradient (all of it, or the shard).
absl::Status ZeroEngine::FinishBucket(Space& s) {
  if (s.grad_state != GradState::kReducing) return absl::OkStatus();
  if (s.reduce_in.bytes() != 0) {
    const DType g = options_.grad_dtype, rd = reduce_dtype();
    const Range r = policy_.all_reduce ? Range{0, s.padded} : s.shard_range;
    RETURN_IF_ERROR(kernels::Cast(*reduce_, ElemPtr(s.reduce_in, r.begin, rd), rd,
                                  ElemPtr(s.grad, r.begin, g), g, r.size(),
                                  options_.kernel_threads));
    s.reduce_in.Reset();
  }
  return s.SetGradState(GradState::kIdle);
}

absl::Status ZeroEngine::ReduceGradients() {
  if (reduced_) return absl::OkStatus();
  if (!policy_.reduce_in_backward) {
    // Buckets not started in backward (tied spaces, units without backward
    // this step) start now; then all finish.
    for (auto& sp : spaces_) {
      if (sp->trainable && sp->grad_state != GradState::kReducing) {
        RETURN_IF_ERROR(StartBucket(*sp));
      }
    }
    for (auto& sp : spaces_) RETURN_IF_ERROR(FinishBucket(*sp));
  } else {
    RETURN_IF_ERROR(FinishPendingReduction());
    // Full gradients still held (tied spaces; kAccumulateThenReduce before
    // the last micro-batch): reduce them now.
    for (size_t i = 0; i < spaces_.size(); ++i) {
      if (spaces_[i]->grad_state != GradState::kAccumulating) continue;
      RETURN_IF_ERROR(StartReduction(static_cast<int>(i)));
      RETURN_IF_ERROR(FinishPendingReduction());
    }
  }
  // Whatever reads the gradients next (the norm, the optimizer, a trainer
  // summing tied copies) runs on the compute stream.
  RETURN_IF_ERROR(Order(*reduce_, *compute_, dp_blocked_));
  reduced_ = true;
  return absl::OkStatus();
}

}  // namespace trireme
