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

// Runs `actions` (one rank's list from BuildSchedule). `activations` and
// `grads` are this rank's communicators over the PP group (rank = pp rank).
// Errors name the action.
absl::Status RunPipeline(const std::vector<Action>& actions, Communicator& activations,
                         Communicator& grads, const StageModel& model);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_PIPELINE_EXECUTOR_H_
