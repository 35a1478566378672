#include "runtime/pipeline/executor.h"

#include <chrono>
#include <deque>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"

namespace trireme {

absl::Status RunPipeline(const std::vector<Action>& actions, Communicator& activations,
                         Communicator& grads, const StageModel& model,
                         PipelineTiming* timing) {
  using Key = std::pair<int, int>;  // (mb, chunk)
  std::map<Key, std::vector<float>> inputs, outputs, grad_outputs, grad_inputs;
  const std::vector<float> none;
  // With one pipeline rank (pp = 1) and several chunks, a chunk's neighbour
  // is on this rank: messages to itself go through local FIFOs.
  std::deque<std::vector<float>> self_acts, self_grads;
  const int me = activations.rank();
  for (const Action& a : actions) {
    const Key k{a.micro_batch, a.chunk};
    const auto start = std::chrono::steady_clock::now();
    CommScope scope(absl::StrCat("pipeline ", a.ToString()));
    absl::Status s;
    switch (a.type) {
      case ActionType::kRecvActivation: {
        std::vector<float>& in = inputs[k];
        if (a.peer == me) {
          if (self_acts.empty()) {
            s = absl::FailedPreconditionError("no activation was sent to this rank by itself");
            break;
          }
          in = std::move(self_acts.front());
          self_acts.pop_front();
          break;
        }
        in.resize(model.input_count(a.micro_batch, a.chunk));
        s = activations.Recv(ViewOf(in), a.peer);
        break;
      }
      case ActionType::kForward: {
        auto it = inputs.find(k);
        s = model.forward(a.micro_batch, a.chunk, it == inputs.end() ? none : it->second,
                          outputs[k]);
        if (it != inputs.end()) inputs.erase(it);  // the model keeps what backward needs
        break;
      }
      case ActionType::kSendActivation:
        if (a.peer == me) {
          self_acts.push_back(std::move(outputs[k]));
        } else {
          s = activations.Send(ViewOf(outputs[k]), a.peer);
        }
        outputs.erase(k);
        break;
      case ActionType::kRecvGrad: {
        std::vector<float>& g = grad_outputs[k];
        if (a.peer == me) {
          if (self_grads.empty()) {
            s = absl::FailedPreconditionError("no gradient was sent to this rank by itself");
            break;
          }
          g = std::move(self_grads.front());
          self_grads.pop_front();
          break;
        }
        g.resize(model.output_count(a.micro_batch, a.chunk));
        s = grads.Recv(ViewOf(g), a.peer);
        break;
      }
      case ActionType::kBackward: {
        auto it = grad_outputs.find(k);
        s = model.backward(a.micro_batch, a.chunk, it == grad_outputs.end() ? none : it->second,
                           grad_inputs[k]);
        if (it != grad_outputs.end()) grad_outputs.erase(it);
        break;
      }
      case ActionType::kSendGrad:
        if (a.peer == me) {
          self_grads.push_back(std::move(grad_inputs[k]));
        } else {
          s = grads.Send(ViewOf(grad_inputs[k]), a.peer);
        }
        grad_inputs.erase(k);
        break;
    }
    if (timing != nullptr) {
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const bool compute = a.type == ActionType::kForward || a.type == ActionType::kBackward;
      (compute ? timing->compute_s : timing->wait_s) += dt;
    }
    RETURN_IF_ERROR(Annotate(s, absl::StrCat("pipeline rank ", activations.rank(), " ",
                                             a.ToString())));
  }
  return absl::OkStatus();
}

}  // namespace trireme
