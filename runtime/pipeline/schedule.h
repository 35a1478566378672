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
  kSendGrad,        // to the previous global stage
};
const char* ActionName(ActionType t);

struct Action {
  ActionType type;
  int micro_batch = 0;
  int chunk = 0;   // local model chunk (0 .. v-1)
  int peer = -1;   // pp rank sent to / received from (send/recv only)
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
};

// Validates (pp >= 1, micro_batches >= 1, virtual_stages >= 1; v == 1 unless
// interleaved; interleaved needs micro_batches % pp == 0) with the numbers in
// the message, then builds every rank's list.
absl::StatusOr<Schedule> BuildSchedule(ScheduleKind kind, int pp, int micro_batches,
                                       int virtual_stages = 1);

struct SimulationResult {
  double makespan = 0;         // step time
  double bubble_fraction = 0;  // mean over ranks of idle / makespan
};

// Runs every rank's list against the others with forward and backward times
// per micro-batch of a whole rank (`t_forward`, `t_backward`; a chunk takes
// 1/v of them) and free, eager communication on FIFO channels per (from, to,
// activation|gradient). Errors (FailedPrecondition, naming rank, action and
// what was wrong): a backward before its forward, a receive that gets another
// micro-batch or chunk than the one sent, a message never received, a
// deadlock (every unfinished rank blocked on a receive).
absl::StatusOr<SimulationResult> Simulate(const Schedule& s, double t_forward = 1.0,
                                          double t_backward = 2.0);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_PIPELINE_SCHEDULE_H_
