#include "runtime/pipeline/schedule.h"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

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

absl::StatusOr<Schedule> BuildSchedule(ScheduleKind kind, int pp, int m, int v) {
  if (pp < 1 || m < 1 || v < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pipeline: pp (", pp, "), micro_batches (", m, ") and virtual_stages (", v,
        ") must be >= 1"));
  }
  if (kind != ScheduleKind::kInterleaved1F1B && v != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "virtual_stages (", v, ") > 1 needs the interleaved schedule, not ", ScheduleName(kind)));
  }
  if (kind == ScheduleKind::kInterleaved1F1B && m % pp != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the interleaved schedule needs micro_batches (", m, ") divisible by pp (", pp, ")"));
  }
  Schedule s{kind, pp, m, v, std::vector<std::vector<Action>>(pp)};
  for (int r = 0; r < pp; ++r) {
    std::vector<Action>& out = s.per_rank[r];
    if (kind == ScheduleKind::kGPipe) {
      for (int mb = 0; mb < m; ++mb) AddForward(out, r, pp, 1, mb, 0);
      for (int mb = 0; mb < m; ++mb) AddBackward(out, r, pp, 1, mb, 0);
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

absl::StatusOr<SimulationResult> Simulate(const Schedule& s, double t_f, double t_b) {
  const int pp = s.pp, v = s.virtual_stages;
  // channel (from, to, is_grad) -> FIFO of (mb, chunk at the sender, time sent)
  std::map<std::tuple<int, int, bool>, std::deque<std::tuple<int, int, double>>> channels;
  std::vector<size_t> pc(pp, 0);
  std::vector<double> clock(pp, 0.0), busy(pp, 0.0);
  std::set<std::pair<int, int>> forward_done;  // (global stage, mb)
  auto where = [&](int r) {
    return absl::StrCat("pp rank ", r, " action ", pc[r], " ", s.per_rank[r][pc[r]].ToString());
  };
  for (;;) {
    bool progressed = false, all_done = true;
    for (int r = 0; r < pp; ++r) {
      while (pc[r] < s.per_rank[r].size()) {
        all_done = false;
        const Action& a = s.per_rank[r][pc[r]];
        const int stage = a.chunk * pp + r;
        if (a.type == ActionType::kRecvActivation || a.type == ActionType::kRecvGrad) {
          const bool grad = a.type == ActionType::kRecvGrad;
          auto& ch = channels[{a.peer, r, grad}];
          if (ch.empty()) break;  // blocked
          auto [mb, chunk, t] = ch.front();
          // The sender's chunk: activations come from stage - 1, gradients
          // from stage + 1.
          const int want_stage = grad ? stage + 1 : stage - 1;
          if (mb != a.micro_batch || chunk * pp + a.peer != want_stage) {
            return absl::FailedPreconditionError(absl::StrCat(
                where(r), " received mb ", mb, " of stage ", chunk * pp + a.peer,
                " instead of mb ", a.micro_batch, " of stage ", want_stage));
          }
          ch.pop_front();
          clock[r] = std::max(clock[r], t);
        } else if (a.type == ActionType::kSendActivation || a.type == ActionType::kSendGrad) {
          channels[{r, a.peer, a.type == ActionType::kSendGrad}].push_back(
              {a.micro_batch, a.chunk, clock[r]});
        } else {
          const bool fw = a.type == ActionType::kForward;
          if (!fw && !forward_done.count({stage, a.micro_batch})) {
            return absl::FailedPreconditionError(
                absl::StrCat(where(r), ": backward before the forward of that micro-batch"));
          }
          if (fw) forward_done.insert({stage, a.micro_batch});
          const double t = (fw ? t_f : t_b) / v;
          clock[r] += t;
          busy[r] += t;
        }
        ++pc[r];
        progressed = true;
      }
    }
    if (all_done) break;
    if (!progressed) {
      std::string blocked;
      for (int r = 0; r < pp; ++r) {
        if (pc[r] < s.per_rank[r].size()) absl::StrAppend(&blocked, "; ", where(r));
      }
      return absl::FailedPreconditionError(
          absl::StrCat("deadlock: every unfinished rank waits on a receive", blocked));
    }
  }
  for (const auto& [key, ch] : channels) {
    if (!ch.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          ch.size(), " message(s) from pp rank ", std::get<0>(key), " to ", std::get<1>(key),
          " never received"));
    }
  }
  SimulationResult res;
  res.makespan = *std::max_element(clock.begin(), clock.end());
  for (int r = 0; r < pp; ++r) res.bubble_fraction += (1.0 - busy[r] / res.makespan) / pp;
  return res;
}

}  // namespace trireme
