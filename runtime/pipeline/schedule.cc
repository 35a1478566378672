#include "runtime/pipeline/schedule.h"

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"

namespace trireme {

const char* ScheduleName(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::kGPipe:
      return "gpipe";
    case ScheduleKind::k1F1B:
      return "1f1b";
    case ScheduleKind::kInterleaved1F1B:
      return "interleaved";
  }
  return "?";
}

absl::StatusOr<ScheduleKind> ParseSchedule(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  for (ScheduleKind k :
       {ScheduleKind::kGPipe, ScheduleKind::k1F1B, ScheduleKind::kInterleaved1F1B}) {
    if (n == ScheduleName(k)) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown schedule '", name, "' (expected gpipe, 1f1b or interleaved)"));
}

const char* ActionName(ActionType t) {
  switch (t) {
    case ActionType::kRecvActivation:
      return "RecvAct";
    case ActionType::kForward:
      return "F";
    case ActionType::kSendActivation:
      return "SendAct";
    case ActionType::kRecvGrad:
      return "RecvGrad";
    case ActionType::kBackward:
      return "B";
    case ActionType::kSendGrad:
      return "SendGrad";
  }
  return "?";
}

std::string Action::ToString() const {
  std::string s = absl::StrCat(ActionName(type), "(mb ", micro_batch, ", chunk ", chunk);
  if (type == ActionType::kRecvActivation || type == ActionType::kRecvGrad) {
    absl::StrAppend(&s, ", from ", peer);
  } else if (type == ActionType::kSendActivation || type == ActionType::kSendGrad) {
    absl::StrAppend(&s, ", to ", peer);
  }
  return s + ")";
}

namespace {

// Appends a forward of (mb, chunk) on `rank` with its receive and send.
void AddForward(std::vector<Action>& out, int rank, int pp, int v, int mb, int chunk) {
  const int stage = chunk * pp + rank, last = pp * v - 1;
  if (stage > 0) out.push_back({ActionType::kRecvActivation, mb, chunk, (rank + pp - 1) % pp});
  out.push_back({ActionType::kForward, mb, chunk, -1});
  if (stage < last) out.push_back({ActionType::kSendActivation, mb, chunk, (rank + 1) % pp});
}

void AddBackward(std::vector<Action>& out, int rank, int pp, int v, int mb, int chunk) {
  const int stage = chunk * pp + rank, last = pp * v - 1;
  if (stage < last) out.push_back({ActionType::kRecvGrad, mb, chunk, (rank + 1) % pp});
  out.push_back({ActionType::kBackward, mb, chunk, -1});
  if (stage > 0) out.push_back({ActionType::kSendGrad, mb, chunk, (rank + pp - 1) % pp});
}

}  // namespace

absl::Status ValidateSchedule(ScheduleKind kind, int pp, int m, int v) {
  if (pp < 1 || m < 1 || v < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline: pp (", pp, "), micro_batches (", m,
                                                   ") and virtual_stages (", v, ") must be >= 1"));
  }
  if (kind != ScheduleKind::kInterleaved1F1B && v != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "virtual_stages (", v, ") > 1 needs the interleaved schedule, not ", ScheduleName(kind)));
  }
  if (kind == ScheduleKind::kInterleaved1F1B && m % pp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the interleaved schedule needs micro_batches (",
                                                   m, ") divisible by pp (", pp, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Schedule> BuildSchedule(ScheduleKind kind, int pp, int m, int v) {
  RETURN_IF_ERROR(ValidateSchedule(kind, pp, m, v));
  Schedule s{kind, pp, m, v, std::vector<std::vector<Action>>(pp), std::vector<int>(pp, 0)};
  for (int r = 0; r < pp; ++r) {
    std::vector<Action>& out = s.per_rank[r];
    if (kind == ScheduleKind::kGPipe) {
      for (int mb = 0; mb < m; ++mb) AddForward(out, r, pp, 1, mb, 0);
      for (int mb = 0; mb < m; ++mb) AddBackward(out, r, pp, 1, mb, 0);
      s.warmup[r] = m;
      continue;
    }
    // 1F1B (v = 1) and interleaved 1F1B: the k-th forward of this rank works on
    // chunk (k / pp) % v of micro-batch (k / (pp v)) pp + k % pp; backwards
    // visit the chunks in reverse.
    const int total = m * v;
    auto fwd = [&](int k) { return std::make_pair((k / (pp * v)) * pp + k % pp, (k / pp) % v); };
    auto bwd = [&](int k) {
      return std::make_pair((k / (pp * v)) * pp + k % pp, v - 1 - (k / pp) % v);
    };
    int warmup = v == 1 ? pp - r - 1 : (pp - r - 1) * 2 + (v - 1) * pp;
    warmup = std::min(warmup, total);
    s.warmup[r] = warmup;
    int kf = 0, kb = 0;
    for (; kf < warmup; ++kf) AddForward(out, r, pp, v, fwd(kf).first, fwd(kf).second);
    while (kf < total) {  // steady state: one forward, one backward
      AddForward(out, r, pp, v, fwd(kf).first, fwd(kf).second);
      ++kf;
      AddBackward(out, r, pp, v, bwd(kb).first, bwd(kb).second);
      ++kb;
    }
    for (; kb < total; ++kb) AddBackward(out, r, pp, v, bwd(kb).first, bwd(kb).second);
  }
  return s;
}

P2PPolicy P2PPolicyFor(ScheduleKind kind) {
  P2PPolicy p;
  p.pair_forward_backward = kind == ScheduleKind::kInterleaved1F1B;
  return p;
}

std::vector<ExecStep> PlanFor(const Schedule& s, int r) {
  return PlanFor(s, r, P2PPolicyFor(s.kind));
}

std::vector<ExecStep> PlanFor(const Schedule& s, int r, const P2PPolicy& policy) {
  return PlanSteps(s.per_rank[r], policy, r < static_cast<int>(s.warmup.size()) ? s.warmup[r] : 0);
}

std::vector<ExecStep> PlanSteps(const std::vector<Action>& actions, const P2PPolicy& policy,
                                int warmup) {
  std::vector<ExecStep> steps;
  if (!policy.grouped) {
    for (const Action& a : actions) {
      const bool comm = a.type != ActionType::kForward && a.type != ActionType::kBackward;
      steps.push_back({comm, {a}});
    }
    return steps;
  }
  // Units of computation, each with the receives it needs (listed before it)
  // and the sends of its outputs (listed after it): one compute, or a forward
  // and the backward right after it taken together.
  struct Unit {
    std::vector<Action> computes, recvs, sends;
  };
  std::vector<Unit> units;
  std::vector<Action> recvs;
  bool pairable = false;  // the last unit is a lone steady-state forward
  int forwards = 0;
  for (const Action& a : actions) {
    const bool fw = a.type == ActionType::kForward, bw = a.type == ActionType::kBackward;
    if (fw || bw) {
      if (bw && pairable && policy.pair_forward_backward) {
        Unit& u = units.back();  // the backward's receives move before the forward
        u.computes.push_back(a);
        for (Action& r : recvs) u.recvs.push_back(r);
        pairable = false;
      } else {
        units.push_back({{a}, std::move(recvs), {}});
        pairable = fw && ++forwards > warmup;
      }
      recvs.clear();
    } else if (a.type == ActionType::kRecvActivation || a.type == ActionType::kRecvGrad) {
      recvs.push_back(a);
    } else if (!units.empty()) {
      units.back().sends.push_back(a);  // a paired forward's sends move after the backward
    }
  }
  // Group j: the sends of unit j - 1 and the receives of unit j.
  for (size_t j = 0; j <= units.size(); ++j) {
    ExecStep g{true, {}};
    if (j > 0) g.actions = units[j - 1].sends;
    if (j < units.size()) {
      for (const Action& r : units[j].recvs) g.actions.push_back(r);
    }
    if (!g.actions.empty()) steps.push_back(std::move(g));
    if (j < units.size()) {
      for (const Action& c : units[j].computes) steps.push_back({false, {c}});
    }
  }
  return steps;
}

namespace {

// One direction of one kind of message between two ranks: what was posted on
// each side, in order (the k-th send matches the k-th receive).
struct Channel {
  struct Post {
    int mb = 0, chunk = 0;  // the poster's micro-batch and local chunk
    double t = 0;           // when posted
  };
  std::vector<Post> sends, recvs;
};
using ChannelKey = std::tuple<int, int, bool>;  // (from, to, gradient)

// The part of a group on one rank's communicator of one kind.
struct Part {
  int rank = 0;
  bool grad = false;
  std::vector<Action> ops;
  bool has_recv = false;
  double queued = 0;  // when the rank's program reached it
  bool started = false, done = false;
  double done_t = 0;
  std::vector<size_t> index;  // per op: its position in its channel
};

class Simulator {
 public:
  Simulator(const Schedule& s, const SimulationOptions& o) : s_(s), o_(o), pp_(s.pp) {
    for (int r = 0; r < pp_; ++r) plans_.push_back(PlanFor(s, r, o.policy));
    pc_.assign(pp_, 0);
    clock_.assign(pp_, 0.0);
    busy_.assign(pp_, 0.0);
    waiting_.assign(pp_, {});
    queued_.assign(pp_, false);
    workers_.resize(pp_);
    last_done_.assign(pp_, {0.0, 0.0});
  }

  absl::StatusOr<SimulationResult> Run() {
    for (;;) {
      bool progressed = false;
      for (int r = 0; r < pp_; ++r) {
        for (int k = 0; k < 2; ++k) {
          ASSIGN_OR_RETURN(bool p, AdvanceWorker(r, k));
          progressed = progressed || p;
        }
        ASSIGN_OR_RETURN(bool p, AdvanceProgram(r));
        progressed = progressed || p;
      }
      if (AllDone()) break;
      if (!progressed) return Deadlock();
    }
    for (const auto& [key, ch] : channels_) {
      if (ch.sends.size() != ch.recvs.size()) {
        return absl::FailedPreconditionError(
            absl::StrCat(ch.sends.size() - ch.recvs.size(), " message(s) from pp rank ",
                         std::get<0>(key), " to ", std::get<1>(key), " never received"));
      }
    }
    SimulationResult res;
    res.makespan = *std::max_element(clock_.begin(), clock_.end());
    for (int r = 0; r < pp_; ++r) res.bubble_fraction += (1.0 - busy_[r] / res.makespan) / pp_;
    return res;
  }

 private:
  ChannelKey KeyOf(int r, const Action& a) const {
    return IsSend(a.type) ? ChannelKey{r, a.peer, IsGradKind(a.type)}
                          : ChannelKey{a.peer, r, IsGradKind(a.type)};
  }

  std::string Where(int r) const {
    if (pc_[r] >= plans_[r].size()) return absl::StrCat("pp rank ", r, " at the end");
    const ExecStep& st = plans_[r][pc_[r]];
    std::string what;
    for (const Action& a : st.actions) {
      absl::StrAppend(&what, what.empty() ? "" : " ", a.ToString());
    }
    return absl::StrCat("pp rank ", r, " step ", pc_[r], (st.group ? " group {" : " {"), what, "}");
  }

  // Starts the worker's front part (posting its ops) and completes it once
  // every op is matched.
  absl::StatusOr<bool> AdvanceWorker(int r, int kind) {
    std::deque<size_t>& q = workers_[r][kind];
    if (q.empty()) return false;
    Part& p = parts_[q.front()];
    bool progressed = false;
    if (!p.started) {
      const double t = std::max(p.queued, last_done_[r][kind]);
      for (const Action& a : p.ops) {
        Channel& ch = channels_[KeyOf(r, a)];
        auto& side = IsSend(a.type) ? ch.sends : ch.recvs;
        p.index.push_back(side.size());
        side.push_back({a.micro_batch, a.chunk, t});
      }
      p.started = true;
      p.done_t = t;
      progressed = true;
    }
    for (size_t i = 0; i < p.ops.size(); ++i) {
      const Action& a = p.ops[i];
      const Channel& ch = channels_[KeyOf(r, a)];
      const size_t k = p.index[i];
      if (IsSend(a.type)) {
        // Messages to itself (pp = 1 with chunks) are local: never blocking.
        if (o_.mode == P2PMode::kEager || a.peer == r) continue;
        if (ch.recvs.size() <= k) return progressed;
        p.done_t = std::max(p.done_t, ch.recvs[k].t);
        continue;
      }
      if (ch.sends.size() <= k) return progressed;
      // The sender's chunk: activations come from stage - 1, gradients from
      // stage + 1.
      const Channel::Post& m = ch.sends[k];
      const int stage = a.chunk * pp_ + r;
      const int want_stage = IsGradKind(a.type) ? stage + 1 : stage - 1;
      if (m.mb != a.micro_batch || m.chunk * pp_ + a.peer != want_stage) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pp rank ", r, ": ", a.ToString(), " received mb ", m.mb, " of stage ",
            m.chunk * pp_ + a.peer, " instead of mb ", a.micro_batch, " of stage ", want_stage));
      }
      p.done_t = std::max(p.done_t, m.t);
    }
    p.done = true;
    last_done_[r][kind] = p.done_t;
    q.pop_front();
    return true;
  }

  // Runs the rank's program: computes, queueing group parts, and waiting for
  // the parts the next compute needs (all of them without deferred sends).
  absl::StatusOr<bool> AdvanceProgram(int r) {
    bool progressed = false;
    while (pc_[r] <= plans_[r].size()) {
      if (!waiting_[r].empty()) {
        double t = clock_[r];
        for (size_t i : waiting_[r]) {
          if (!parts_[i].done) return progressed;
          t = std::max(t, parts_[i].done_t);
        }
        clock_[r] = t;
        waiting_[r].clear();
        if (pc_[r] < plans_[r].size()) ++pc_[r];
        progressed = true;
        continue;
      }
      if (pc_[r] == plans_[r].size()) {
        // The end: every queued part must complete.
        if (queued_[r]) return progressed;
        queued_[r] = true;
        for (size_t i = 0; i < parts_.size(); ++i) {
          if (parts_[i].rank == r) waiting_[r].push_back(i);
        }
        progressed = true;
        if (waiting_[r].empty()) return progressed;
        continue;
      }
      const ExecStep& st = plans_[r][pc_[r]];
      if (!st.group) {
        const Action& a = st.actions[0];
        const int stage = a.chunk * pp_ + r;
        const bool fw = a.type == ActionType::kForward;
        if (!fw && !forward_done_.count({stage, a.micro_batch})) {
          return absl::FailedPreconditionError(
              absl::StrCat(Where(r), ": backward before the forward of that micro-batch"));
        }
        if (fw) forward_done_.insert({stage, a.micro_batch});
        const std::vector<double>& per_stage = fw ? o_.stage_forward : o_.stage_backward;
        const double t = per_stage.empty() ? (fw ? o_.t_forward : o_.t_backward) / s_.virtual_stages
                                           : per_stage[stage];
        clock_[r] += t;
        busy_[r] += t;
        ++pc_[r];
        progressed = true;
        continue;
      }
      // A group: one part per kind, queued on that kind's worker.
      for (int kind = 0; kind < 2; ++kind) {
        Part p;
        p.rank = r;
        p.grad = kind == 1;
        p.queued = clock_[r];
        for (const Action& a : st.actions) {
          if (IsGradKind(a.type) != p.grad) continue;
          p.ops.push_back(a);
          p.has_recv = p.has_recv || !IsSend(a.type);
        }
        if (p.ops.empty()) continue;
        const bool wait = p.has_recv || !o_.policy.deferred_sends;
        parts_.push_back(std::move(p));
        workers_[r][kind].push_back(parts_.size() - 1);
        if (wait) waiting_[r].push_back(parts_.size() - 1);
      }
      progressed = true;
      if (waiting_[r].empty()) ++pc_[r];
    }
    return progressed;
  }

  bool AllDone() const {
    for (int r = 0; r < pp_; ++r) {
      if (pc_[r] < plans_[r].size() || !waiting_[r].empty() || !queued_[r]) return false;
      if (!workers_[r][0].empty() || !workers_[r][1].empty()) return false;
    }
    return true;
  }

  absl::Status Deadlock() const {
    std::string blocked;
    for (int r = 0; r < pp_; ++r) {
      if (pc_[r] < plans_[r].size()) absl::StrAppend(&blocked, "; ", Where(r));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("deadlock", o_.mode == P2PMode::kRendezvous ? " (rendezvous sends)" : "",
                     ": no rank and no communication can make progress", blocked));
  }

  const Schedule& s_;
  const SimulationOptions& o_;
  const int pp_;
  std::vector<std::vector<ExecStep>> plans_;
  std::vector<size_t> pc_;
  std::vector<double> clock_, busy_;
  std::vector<std::vector<size_t>> waiting_;  // parts the program waits for
  std::vector<bool> queued_;                  // the final wait is set up
  std::vector<Part> parts_;
  std::vector<std::array<std::deque<size_t>, 2>> workers_;  // [rank][kind]
  std::vector<std::array<double, 2>> last_done_;
  std::map<ChannelKey, Channel> channels_;
  std::set<std::pair<int, int>> forward_done_;  // (global stage, mb)
};

}  // namespace

absl::StatusOr<SimulationResult> Simulate(const Schedule& s, double t_f, double t_b) {
  SimulationOptions o;
  o.t_forward = t_f;
  o.t_backward = t_b;
  return Simulate(s, o);
}

absl::StatusOr<SimulationResult> Simulate(const Schedule& s, const SimulationOptions& o) {
  const size_t stages = static_cast<size_t>(s.pp) * s.virtual_stages;
  for (const std::vector<double>* v : {&o.stage_forward, &o.stage_backward}) {
    if (!v->empty() && v->size() != stages) {
      return absl::InvalidArgumentError(absl::StrCat("per-stage costs: ", v->size(),
                                                     " entries for pp ", s.pp, " x v ",
                                                     s.virtual_stages, " = ", stages, " stages"));
    }
  }
  return Simulator(s, o).Run();
}

}  // namespace trireme
