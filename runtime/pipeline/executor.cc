#include "runtime/pipeline/executor.h"

#include <algorithm>
#include <deque>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"

namespace trireme {

PipelineTiming PipelineClock(const Stream& compute, const Communicator& activations,
                             const Communicator& grads) {
  const StreamStats st = compute.stats();
  const CommStats a = activations.stats(), g = grads.stats();
  return {st.busy_s, a.blocked_seconds + a.stream_blocked_seconds + g.blocked_seconds +
                         g.stream_blocked_seconds};
}

namespace {

using Key = std::pair<int, int>;  // (mb, chunk)

// The state of one rank's run: tensors by (mb, chunk), messages to itself,
// and sends still in flight.
class Runner {
 public:
  Runner(Communicator& acts, Communicator& grads, Stream& compute, const StageModel& model,
         const P2PPolicy& policy)
      : acts_(acts),
        grads_(grads),
        compute_(compute),
        model_(model),
        policy_(policy),
        me_(acts.rank()) {}

  // `release`: for a step, the steps whose deferred sends are certainly
  // complete once its receives are in (ReleasePoints); null: released when
  // found complete (timing).
  absl::Status Run(const std::vector<ExecStep>& plan, const ReleaseMap* release) {
    for (size_t i = 0; i < plan.size(); ++i) {
      const ExecStep& st = plan[i];
      CommScope scope(absl::StrCat("pipeline ", st.actions[0].ToString()));
      absl::Status s =
          st.group ? Communicate(st.actions, static_cast<int>(i)) : Compute(st.actions[0]);
      if (s.ok() && release == nullptr) s = ReapSends();
      if (s.ok() && release != nullptr) {
        if (auto it = release->find(static_cast<int>(i)); it != release->end()) {
          s = ReleaseSends(it->second);
        }
      }
      RETURN_IF_ERROR(Annotate(
          s, absl::StrCat("pipeline rank ", me_, " step ", i, " ", st.actions[0].ToString())));
    }
    return Annotate(DrainSends(), absl::StrCat("pipeline rank ", me_, " at the end"));
  }

  // On an error return sends may still be in flight: their buffers go back
  // to the allocator only after the stream has waited for them.
  ~Runner() { DrainSends().IgnoreError(); }

 private:
  struct InFlight {
    Work work;
    std::vector<Tensor> buffers;
    int step = 0;  // the plan step that posted it
    int kind = 0;  // 0: activations, 1: gradients
  };

  absl::Status Compute(const Action& a) {
    const Key k{a.micro_batch, a.chunk};
    if (a.type == ActionType::kForward) {
      Tensor in = Take(inputs_, k);
      return model_.forward(a.micro_batch, a.chunk, in, &outputs_[k]);
    }
    Tensor gout = Take(grad_outputs_, k);
    return model_.backward(a.micro_batch, a.chunk, gout, &grad_inputs_[k]);
  }

  // One group: its receives into fresh buffers, its sends of what the
  // computes produced; one P2P group per communicator.
  absl::Status Communicate(const std::vector<Action>& actions, int step) {
    std::vector<P2POp> ops[2];  // activations, gradients
    std::vector<Tensor> sent[2];
    bool receives[2] = {false, false};
    for (const Action& a : actions) {
      const Key k{a.micro_batch, a.chunk};
      const bool grad = IsGradKind(a.type);
      if (IsRecv(a.type)) {
        std::map<Key, Tensor>& into = grad ? grad_outputs_ : inputs_;
        if (a.peer == me_) {  // pp = 1 with chunks: from this rank's own FIFO
          std::deque<Tensor>& q = self_[grad];
          if (q.empty()) {
            return absl::FailedPreconditionError(
                absl::StrCat(a.ToString(), ": nothing was sent to this rank by itself"));
          }
          into[k] = std::move(q.front());
          q.pop_front();
          continue;
        }
        ASSIGN_OR_RETURN(Tensor buf, grad ? model_.grad_output_buffer(a.micro_batch, a.chunk)
                                          : model_.input_buffer(a.micro_batch, a.chunk));
        ops[grad].push_back(P2POp::Recv(buf.view(), a.peer));
        receives[grad] = true;
        into[k] = std::move(buf);
        continue;
      }
      Tensor t = Take(grad ? grad_inputs_ : outputs_, k);
      if (a.peer == me_) {
        self_[grad].push_back(std::move(t));
        continue;
      }
      ops[grad].push_back(P2POp::Send(t.view(), a.peer));
      sent[grad].push_back(std::move(t));
    }
    // Both parts are posted before the stream waits for either (what the
    // plan was simulated with: under rendezvous the peers may complete them
    // in either order). The next compute needs the receives; a part that
    // only sends may complete in the background.
    Work works[2];
    bool issued[2] = {false, false};
    for (int kind = 0; kind < 2; ++kind) {
      if (ops[kind].empty()) continue;
      Communicator& c = kind == 1 ? grads_ : acts_;
      works[kind] = c.P2PGroupAsync(std::move(ops[kind]), &compute_, /*stream_waits=*/false);
      issued[kind] = true;
    }
    absl::Status first;
    for (int kind = 0; kind < 2; ++kind) {
      if (!issued[kind]) continue;
      // The sent buffers live until the stream has waited for the part.
      InFlight f{works[kind], std::move(sent[kind]), step, kind};
      if (receives[kind] || !policy_.deferred_sends) {
        first.Update(Finish(f));
      } else {
        in_flight_.push_back(std::move(f));
      }
    }
    return first;
  }

  // The stream waits for the part (counted as the communicator's blocked
  // time). Its error becomes the stream's; on the cpu device (an
  // InlineStream) the op is done already and its error is reported here,
  // naming the step.
  absl::Status Finish(const InFlight& f) {
    RETURN_IF_ERROR(f.work.WaitOn(compute_));
    if (compute_.device().asynchronous()) return absl::OkStatus();
    return f.work.Wait();
  }

  // Drops the buffers of sends that have completed; a failed one is an error.
  absl::Status ReapSends() {
    while (!in_flight_.empty() && in_flight_.front().work.Test()) {
      absl::Status s = in_flight_.front().work.Wait();
      in_flight_.pop_front();
      RETURN_IF_ERROR(Annotate(s, "a deferred send"));
    }
    return absl::OkStatus();
  }

  // Drops the buffers of the deferred sends posted at `parts` (step, kind):
  // complete, as the receives just finished prove (waiting on them again
  // costs nothing).
  // A fixed point of the plan, not when the peer happened to take them, so
  // the memory a run holds is the same on every run and on the meta device
  // (GptTrainer::EstimateMemory). A failed one is an error.
  absl::Status ReleaseSends(const std::vector<std::pair<int, int>>& parts) {
    absl::Status first;
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      if (std::find(parts.begin(), parts.end(), std::make_pair(it->step, it->kind)) ==
          parts.end()) {
        ++it;
        continue;
      }
      first.Update(Annotate(Finish(*it), "a deferred send"));
      it = in_flight_.erase(it);
    }
    return first;
  }

  // The stream waits for every send still in flight, and their buffers are
  // reused only after.
  absl::Status DrainSends() {
    absl::Status first;
    for (const InFlight& f : in_flight_) first.Update(Finish(f));
    in_flight_.clear();
    return first;
  }

  static Tensor Take(std::map<Key, Tensor>& m, Key k) {
    auto it = m.find(k);
    if (it == m.end()) return Tensor();
    Tensor t = std::move(it->second);
    m.erase(it);
    return t;
  }

  Communicator& acts_;
  Communicator& grads_;
  Stream& compute_;
  const StageModel& model_;
  const P2PPolicy policy_;
  const int me_;
  std::map<Key, Tensor> inputs_, outputs_, grad_outputs_, grad_inputs_;
  std::deque<Tensor> self_[2];
  std::deque<InFlight> in_flight_;
};

}  // namespace

ReleaseMap ReleasePoints(const std::vector<std::vector<ExecStep>>& plans, int me,
                         const P2PPolicy& policy) {
  // Per rank, per (peer, kind): the steps of its sends and of its receives,
  // in channel order (each (from, to, kind) channel is FIFO).
  using Channel = std::pair<int, int>;
  const int n = static_cast<int>(plans.size());
  std::vector<std::map<Channel, std::vector<int>>> sends(n), recvs(n);
  for (int r = 0; r < n; ++r) {
    for (int i = 0; i < static_cast<int>(plans[r].size()); ++i) {
      if (!plans[r][i].group) continue;
      for (const Action& a : plans[r][i].actions) {
        if (a.peer == r) continue;  // to itself: no message
        (IsSend(a.type) ? sends : recvs)[r][{a.peer, IsGradKind(a.type)}].push_back(i);
      }
    }
  }
  // The step of `r`'s first send to `to` after its step `after`, and the
  // receiving step of `to`; -1 if none.
  const auto next_message = [&](int r, int to, int after) {
    int best = -1, at = -1;
    for (int kind = 0; kind < 2; ++kind) {
      const std::vector<int>& s = sends[r][{to, kind}];
      const auto it = std::upper_bound(s.begin(), s.end(), after);
      if (it == s.end() || (best >= 0 && *it >= best)) continue;
      best = *it;
      at = recvs[to][{r, kind}][it - s.begin()];
    }
    return at;
  };
  ReleaseMap release;
  std::map<Channel, int> sent;  // this rank's sends so far per channel
  for (int i = 0; i < static_cast<int>(plans[me].size()); ++i) {
    const ExecStep& st = plans[me][i];
    if (!st.group) continue;
    for (int kind = 0; kind < 2; ++kind) {
      bool has_recv = false, has_send = false;
      for (const Action& a : st.actions) {
        if (a.peer == me || IsGradKind(a.type) != (kind == 1)) continue;
        (IsSend(a.type) ? has_send : has_recv) = true;
      }
      if (!has_send) continue;
      // The part's sends are released together: at the latest of their points.
      int at = 0;
      for (const Action& a : st.actions) {
        if (a.peer == me || !IsSend(a.type) || IsGradKind(a.type) != (kind == 1)) continue;
        const int index = sent[{a.peer, kind}]++;
        const int received = recvs[a.peer][{me, kind}].at(index);  // the peer takes it here
        const int q = at < 0 ? -1 : next_message(a.peer, me, received);
        at = q < 0 ? -1 : std::max(at, q);
      }
      if (!has_recv && policy.deferred_sends && at >= i) release[at].push_back({i, kind});
    }
  }
  return release;
}

absl::Status RunPipeline(const std::vector<ExecStep>& plan, Communicator& activations,
                         Communicator& grads, Stream& compute, const StageModel& model,
                         const P2PPolicy& policy) {
  return Runner(activations, grads, compute, model, policy).Run(plan, nullptr);
}

PipelinePlan PlanPipeline(const Schedule& schedule, int pp_rank, const P2PPolicy& policy) {
  std::vector<std::vector<ExecStep>> plans;
  for (int r = 0; r < schedule.pp; ++r) plans.push_back(PlanFor(schedule, r, policy));
  PipelinePlan p;
  p.release = ReleasePoints(plans, pp_rank, policy);
  p.steps = std::move(plans[pp_rank]);
  p.policy = policy;
  return p;
}

absl::Status RunPipeline(const PipelinePlan& plan, Communicator& activations, Communicator& grads,
                         Stream& compute, const StageModel& model) {
  return Runner(activations, grads, compute, model, plan.policy).Run(plan.steps, &plan.release);
}

absl::Status RunPipeline(const Schedule& schedule, int pp_rank, Communicator& activations,
                         Communicator& grads, Stream& compute, const StageModel& model,
                         const P2PPolicy& policy) {
  return RunPipeline(PlanPipeline(schedule, pp_rank, policy), activations, grads, compute, model);
}

}  // namespace trireme
