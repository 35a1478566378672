// Pipeline schedules as data (STYLE.md point 9): BuildSchedule returns, for
// every pipeline rank, the list of actions it performs in one step; a short
// executor (executor.h) runs a list, and Simulate() runs all lists against
// each other to check them and measure the bubble.
//
// Virtual stages (interleaved 1F1B): the model is cut into pp x v chunks;
// global stage s = chunk * pp + pp_rank, so rank r holds chunks r, r + pp, ...
// (Megatron's interleaving). With v = 1 this is the plain pipeline.
//
// Bubble fractions (fraction of a rank's step time spent idle), with forward
// and backward times t_f and t_b per micro-batch on the whole rank and
// communication free: GPipe and 1F1B: (pp - 1) / (m + pp - 1); interleaved
// 1F1B with v chunks: (pp - 1) / (v m + pp - 1).
#ifndef TRIREME_RUNTIME_PIPELINE_SCHEDULE_H_
#define TRIREME_RUNTIME_PIPELINE_SCHEDULE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace trireme {

enum class ScheduleKind { kGPipe, k1F1B, kInterleaved1F1B };
const char* ScheduleName(ScheduleKind k);
absl::StatusOr<ScheduleKind> ParseSchedule(const std::string& name);  // gpipe, 1f1b, interleaved

enum class ActionType {
  kRecvActivation,  // from the previous global stage
  kForward,
  kSendActivation,  // to the next global stage
  kRecvGrad,        // from the next global stage
  kBackward,
  kSendGrad,  // to the previous global stage
};
const char* ActionName(ActionType t);
inline bool IsSend(ActionType t) {
  return t == ActionType::kSendActivation || t == ActionType::kSendGrad;
}
inline bool IsRecv(ActionType t) {
  return t == ActionType::kRecvActivation || t == ActionType::kRecvGrad;
}
// A message of the gradient kind (vs activations).
inline bool IsGradKind(ActionType t) {
  return t == ActionType::kRecvGrad || t == ActionType::kSendGrad;
}

struct Action {
  ActionType type;
  int micro_batch = 0;
  int chunk = 0;  // local model chunk (0 .. v-1)
  int peer = -1;  // pp rank sent to / received from (send/recv only)
  // "F(mb 3, chunk 1)", "RecvGrad(mb 0, chunk 0, from 2)"
  std::string ToString() const;
  bool operator==(const Action& o) const {
    return type == o.type && micro_batch == o.micro_batch && chunk == o.chunk && peer == o.peer;
  }
};

struct Schedule {
  ScheduleKind kind;
  int pp = 1;
  int micro_batches = 1;
  int virtual_stages = 1;
  std::vector<std::vector<Action>> per_rank;  // [pp_rank] -> actions in order
  // [pp_rank] -> forwards before the steady state (1F1B and interleaved;
  // every forward for GPipe): the steady state's forward / backward pairs
  // follow them.
  std::vector<int> warmup;
};

// Validates (pp >= 1, micro_batches >= 1, virtual_stages >= 1; v == 1 unless
// interleaved; interleaved needs micro_batches % pp == 0) with the numbers in
// the message, then builds every rank's list.
absl::StatusOr<Schedule> BuildSchedule(ScheduleKind kind, int pp, int micro_batches,
                                       int virtual_stages = 1);
// BuildSchedule's checks alone.
absl::Status ValidateSchedule(ScheduleKind kind, int pp, int micro_batches, int virtual_stages = 1);

// How a point-to-point send completes.
enum class P2PMode {
  kEager,       // at once (the message is buffered); a receive waits for it
  kRendezvous,  // only when the matching receive is posted (NCCL's semantics)
};

// One step of a rank's execution: a compute action, or communication posted
// together as one group (ncclGroupStart/End; Megatron's batch_isend_irecv).
struct ExecStep {
  bool group = false;           // communication
  std::vector<Action> actions;  // one compute action, or the group's sends and receives
};

// How the executor runs a plan's communication. Activations and gradients
// travel on two communicators, each running its operations in order (its
// worker, or its NCCL stream); a group is split between them.
struct P2PPolicy {
  // Each run of consecutive sends and receives between two computes is one
  // group: in 1F1B's steady state the send of a forward's output and the
  // receive of the next backward's gradient go together, so two neighbours
  // that send to each other at once both complete under rendezvous. false:
  // one step per action, in list order.
  bool grouped = true;
  // In the steady state a forward and the backward right after it are one
  // unit: the backward's receives are posted with the forward's, and the
  // forward's sends go with the backward's -- one group per (forward,
  // backward) pair, as Megatron's interleaved schedule communicates. Needed
  // for interleaved 1F1B to be rendezvous-safe.
  bool pair_forward_backward = false;
  // The compute waits only for the receives it needs; a group part that
  // only sends completes in the background (its communicator still runs it
  // in order), and the step's end waits for it. false: the compute waits for
  // every send too -- the eager-only executor, which deadlocks under
  // rendezvous.
  bool deferred_sends = true;
};

// The policy that makes `kind` rendezvous-safe (tested for pp 1-4, every m).
P2PPolicy P2PPolicyFor(ScheduleKind kind);

// The executor's plan of one rank's list under `policy`: computes one at a
// time, and the communication between them as groups. `warmup`: the
// forwards before the steady state (Schedule::warmup; pairs are formed only
// after them).
std::vector<ExecStep> PlanSteps(const std::vector<Action>& actions,
                                const P2PPolicy& policy = P2PPolicy(), int warmup = 0);
// PlanSteps of pp rank `r` of `s` with P2PPolicyFor(s.kind), or `policy`.
std::vector<ExecStep> PlanFor(const Schedule& s, int r);
std::vector<ExecStep> PlanFor(const Schedule& s, int r, const P2PPolicy& policy);

struct SimulationOptions {
  double t_forward = 1.0;  // per micro-batch on a whole rank (a chunk takes 1/v)
  double t_backward = 2.0;
  // Per global stage (chunk * pp + rank; pp * v entries): one micro-batch's
  // forward / backward of that chunk, replacing t_forward / v and
  // t_backward / v (stages of unequal cost: the embedding, the head).
  std::vector<double> stage_forward, stage_backward;
  P2PMode mode = P2PMode::kEager;
  P2PPolicy policy;
};

struct SimulationResult {
  double makespan = 0;         // step time
  double bubble_fraction = 0;  // mean over ranks of idle / makespan
};

// Runs every rank's plan against the others, as the executor does: computes
// take the given forward and backward times; each rank has one FIFO
// communication worker per kind (activations, gradients) whose group parts
// post their operations when they start and complete when every receive has
// its message and (rendezvous) every send has been matched by the peer's
// posted receive. Messages are matched in order per (from, to, kind).
// Errors (FailedPrecondition, naming rank, step and what was wrong): a
// backward before its forward, a receive that gets another micro-batch or
// chunk than the one sent, a message never received, a deadlock (no rank and
// no communication can make progress).
absl::StatusOr<SimulationResult> Simulate(const Schedule& s, const SimulationOptions& o);
// Eager, grouped, with these costs.
absl::StatusOr<SimulationResult> Simulate(const Schedule& s, double t_forward = 1.0,
                                          double t_backward = 2.0);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_PIPELINE_SCHEDULE_H_
