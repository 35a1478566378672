// The short runner of a pipeline rank's plan (schedule.h: PlanFor): computes
// call the model; receives and sends go to the previous / next pipeline rank
// as groups. Activations and gradients travel on two communicators over the
// same PP group, so each (from, to, kind) channel is FIFO and a receive can
// never take the other kind's message.
//
// Streams: every transfer is ordered on the compute stream (NCCL's
// semantics): a group starts when the stream reaches it -- after the compute
// that produced what it sends -- and the computes that need what it receives
// wait for it on the stream; sends the next compute does not need complete in
// the background (P2PPolicy::deferred_sends), their buffers kept until they
// have. The host does not block on an asynchronous device; on cpu (an
// InlineStream) every wait is a host wait. Rendezvous-safe for every schedule
// with P2PPolicyFor(kind) (schedule_test, executor_test).
#ifndef TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_
#define TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_

#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/stream.h"
#include "runtime/core/tensor.h"
#include "runtime/pipeline/schedule.h"

namespace trireme {

// What the model does at one pipeline rank. Tensors are device memory of the
// compute stream's device; the model's work on them goes on that stream.
struct StageModel {
  // `input` is undefined for the first global stage (the model reads its own
  // batch); `output` stays undefined for the last (the model computes the
  // loss).
  std::function<absl::Status(int mb, int chunk, const Tensor& input, Tensor* output)> forward;
  // Backward gets the gradient of the chunk's output (undefined for the last
  // stage) and fills the gradient of its input (left undefined for the first).
  std::function<absl::Status(int mb, int chunk, const Tensor& grad_output, Tensor* grad_input)>
      backward;
  // Device buffers to receive into: the activation entering (mb, chunk), and
  // the gradient of the activation leaving it.
  std::function<absl::StatusOr<Tensor>(int mb, int chunk)> input_buffer;
  std::function<absl::StatusOr<Tensor>(int mb, int chunk)> grad_output_buffer;
};

// Where one rank's pipeline time went (wall clock, seconds).
struct PipelineTiming {
  double compute_s = 0;  // the compute stream running work (the model's own TP waits excluded)
  double wait_s = 0;     // blocked on receives and sends: the bubble and point-to-point transfers
  double total() const { return compute_s + wait_s; }
  // Measured bubble: the share of the pipeline's time this rank was not computing.
  double bubble() const { return total() > 0 ? wait_s / total() : 0; }
  PipelineTiming& operator+=(const PipelineTiming& o) {
    compute_s += o.compute_s;
    wait_s += o.wait_s;
    return *this;
  }
  PipelineTiming operator-(const PipelineTiming& o) const {
    return {compute_s - o.compute_s, wait_s - o.wait_s};
  }
};

// The cumulative timing so far, from the compute stream's busy time and the
// time it (or, on an InlineStream, the host) spent blocked on the two
// pipeline communicators. Exact once the stream is synchronized: take the
// difference of two readings around a synchronized step.
PipelineTiming PipelineClock(const Stream& compute, const Communicator& activations,
                             const Communicator& grads);

// Runs one rank's plan (PlanFor(schedule, pp_rank)). `activations` and
// `grads` are this rank's communicators over the PP group (rank = pp rank);
// `compute` is the stream the model computes on. Errors name the step.
// Returns once everything is enqueued (on cpu: done); deferred sends are
// ordered before whatever the stream runs next.
// A deferred send's buffer is dropped once the send is found complete
// (when the peer took it: timing).
absl::Status RunPipeline(const std::vector<ExecStep>& plan, Communicator& activations,
                         Communicator& grads, Stream& compute, const StageModel& model,
                         const P2PPolicy& policy = P2PPolicy());
// Rank `pp_rank`'s plan of `schedule` under `policy`, with its release
// points: built once per schedule (it depends on nothing else), run every
// step.
struct PipelinePlan {
  std::vector<ExecStep> steps;
  std::map<int, std::vector<std::pair<int, int>>> release;  // ReleasePoints
  P2PPolicy policy;
};
PipelinePlan PlanPipeline(const Schedule& schedule, int pp_rank, const P2PPolicy& policy);
// Runs `plan`, each deferred send's buffer dropped at a fixed step of the
// plan (ReleasePoints), so that what a rank holds does not depend on timing:
// the memory estimate on the meta device (GptTrainer::EstimateMemory)
// equals the real run's, exactly.
absl::Status RunPipeline(const PipelinePlan& plan, Communicator& activations, Communicator& grads,
                         Stream& compute, const StageModel& model);
// PlanPipeline, then RunPipeline.
absl::Status RunPipeline(const Schedule& schedule, int pp_rank, Communicator& activations,
                         Communicator& grads, Stream& compute, const StageModel& model,
                         const P2PPolicy& policy);

// For rank `me` of the ranks' `plans`: step q -> the parts (step, kind: 0
// activations, 1 gradients) whose deferred sends are certainly complete once
// q's receives are in. A send to peer P is
// complete when P has received it; P's first send to this rank in a later
// step than that receive (P waits for its receives before going on) arrives
// after it, so the send is released where this rank receives that message.
// A send no later message proves complete is released at the plan's end.
using ReleaseMap = std::map<int, std::vector<std::pair<int, int>>>;
ReleaseMap ReleasePoints(const std::vector<std::vector<ExecStep>>& plans, int me,
                         const P2PPolicy& policy);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_
