// The short runner of a pipeline rank's action list (schedule.h): receives
// and sends go to the previous / next pipeline rank, forwards and backwards
// call the model. Activations and gradients travel on two communicators over
// the same PP group, so each (from, to, kind) channel is FIFO and a receive
// can never take the other kind's message.
//
// Blocking: runs the whole list on the calling thread; sends are eager.
#ifndef TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_
#define TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"
#include "runtime/pipeline/schedule.h"

namespace trireme {

// What the model does at one pipeline rank. `input` is empty for the first
// global stage (the model reads its own batch); `output` stays empty for the
// last (the model computes the loss). Backward gets the gradient of the
// chunk's output (empty for the last stage) and fills the gradient of its
// input (left empty for the first).
struct StageModel {
  std::function<absl::Status(int mb, int chunk, const std::vector<float>& input,
                             std::vector<float>& output)>
      forward;
  std::function<absl::Status(int mb, int chunk, const std::vector<float>& grad_output,
                             std::vector<float>& grad_input)>
      backward;
  // Elements of the activation entering / leaving this rank's (mb, chunk)
  // (= of the gradient leaving / entering it).
  std::function<int64_t(int mb, int chunk)> input_count;
  std::function<int64_t(int mb, int chunk)> output_count;
};

// Where one rank's pipeline time went (wall clock, seconds).
struct PipelineTiming {
  double compute_s = 0;  // inside forward / backward (the model's own TP collectives included)
  double wait_s = 0;     // receiving and sending: the bubble and point-to-point transfers
  double total() const { return compute_s + wait_s; }
  // Measured bubble: the share of the pipeline's time this rank was not computing.
  double bubble() const { return total() > 0 ? wait_s / total() : 0; }
  PipelineTiming& operator+=(const PipelineTiming& o) {
    compute_s += o.compute_s;
    wait_s += o.wait_s;
    return *this;
  }
};

// Runs `actions` (one rank's list from BuildSchedule). `activations` and
// `grads` are this rank's communicators over the PP group (rank = pp rank).
// Errors name the action. `timing` (optional) accumulates where the time went.
absl::Status RunPipeline(const std::vector<Action>& actions, Communicator& activations,
                         Communicator& grads, const StageModel& model,
                         PipelineTiming* timing = nullptr);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_
