#include "models/train_loop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

// Loads `o.resume` (if any) into `t`: the first step to take.
absl::StatusOr<int64_t> Resume(Communicator& c, GptTrainer& t, const TrainLoopOptions& o,
                               TrainSummary* sh, TrainObserver* observer) {
  if (o.resume.empty()) return 1;
  ASSIGN_OR_RETURN(checkpoint::LoadResult r, t.LoadCheckpoint(o.resume));
  const int64_t first = r.step + 1;
  sh->resumed_from = r.path;
  if (c.rank() == 0 && observer != nullptr) {
    std::string note;
    const Json* saved = r.trainer.Find("lr_schedule");
    const std::string now = LrScheduleJson(o.trainer.engine.lr).Dump();
    if (saved != nullptr && saved->Dump() != now) {
      note = absl::StrCat(now, " now, ", saved->Dump(), " then");
    }
    observer->OnResumed(r, first, note);
  }
  return first;
}

absl::Status Save(Communicator& c, GptTrainer& t, const TrainLoopOptions& o, int64_t step,
                  TrainSummary* sh, TrainObserver* observer) {
  checkpoint::SaveOptions so;
  so.root = o.checkpoint_dir;
  so.keep_last = o.keep_checkpoints;
  so.midway_fault = o.save_fault;
  so.trainer = Json::Object({{"step", Json(step)}, {"next_step", Json(step + 1)}});
  for (const auto& [k, v] : o.record.members()) so.trainer.Set(k, v);
  const absl::Time t0 = absl::Now();
  ASSIGN_OR_RETURN(std::string dir, t.SaveCheckpoint(step, so));
  sh->last_checkpoint = dir;
  if (c.rank() == 0 && observer != nullptr) {
    observer->OnCheckpoint(dir, absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  return absl::OkStatus();
}

// One step with its accounting into `mine`: the result and the wall time.
absl::StatusOr<std::pair<GptStepResult, double>> TimedStep(GptTrainer& t, int64_t step,
                                                           RankSummary* mine) {
  const absl::Time t0 = absl::Now();
  const double dp_exposed0 = t.exposed_dp_seconds(), tp_exposed0 = t.exposed_tp_seconds();
  const double dp_busy0 = t.grid().dp_group().stats().busy_seconds;
  const double tp_busy0 = t.grid().tp_group().stats().busy_seconds;
  ASSIGN_OR_RETURN(GptStepResult r, t.Step(step));
  const double dt = absl::ToDoubleSeconds(absl::Now() - t0);
  mine->timing += r.timing;
  mine->dp_exposed_s += t.exposed_dp_seconds() - dp_exposed0;
  mine->comm_s += t.exposed_dp_seconds() - dp_exposed0 + t.exposed_tp_seconds() - tp_exposed0;
  mine->dp_busy_s += t.grid().dp_group().stats().busy_seconds - dp_busy0;
  mine->tp_busy_s += t.grid().tp_group().stats().busy_seconds - tp_busy0;
  return std::make_pair(r, dt);
}

// Every rank's summary, on every rank (host values over the world).
absl::Status Gather(Communicator& c, const RankSummary& mine, TrainSummary* sh) {
  ASSIGN_OR_RETURN(std::vector<std::string> all, AllGatherStrings(c, mine.ToJson().Dump()));
  sh->ranks.clear();
  for (int r = 0; r < c.size(); ++r) {
    ASSIGN_OR_RETURN(Json j, Json::Parse(all[r]));
    ASSIGN_OR_RETURN(RankSummary s, RankSummary::FromJson(j));
    sh->ranks.push_back(std::move(s));
  }
  return absl::OkStatus();
}

}  // namespace

Json LrScheduleJson(const LrSchedule& l) {
  return Json::Object(
      {{"kind", Json(l.kind == LrSchedule::Kind::kConstant ? "constant" : "cosine")},
       {"lr", Json(static_cast<double>(l.lr))},
       {"min_lr", Json(static_cast<double>(l.min_lr))},
       {"warmup_steps", Json(l.warmup_steps)},
       {"total_steps", Json(l.total_steps)}});
}

absl::StatusOr<TrainSummary> RunTraining(Communicator& c, const TrainLoopOptions& o,
                                         MemoryTracker* mem, TrainObserver* observer) {
  TrainSummary sh;
  ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o.trainer, mem));
  ASSIGN_OR_RETURN(const int64_t first, Resume(c, *t, o, &sh, observer));
  sh.first_step = first;
  RankSummary mine;
  const absl::Time start = absl::Now();
  for (int64_t step = first; step <= o.steps; ++step) {
    ASSIGN_OR_RETURN(auto timed, TimedStep(*t, step, &mine));
    const GptStepResult& r = timed.first;
    double val = -1;
    if (o.eval_every > 0 && (step % o.eval_every == 0 || step == o.steps)) {
      ASSIGN_OR_RETURN(val, t->Evaluate(o.eval_batches));
    }
    // The peak over all ranks, for progress, and whether any rank was asked
    // to stop: all ranks stop after the same step.
    const bool asked = o.stop_requested && o.stop_requested();
    float agree[2] = {static_cast<float>(mem->snapshot().total_peak), asked ? 1.0f : 0.0f};
    RETURN_IF_ERROR(c.AllReduce({agree, 2, DType::kF32}, {agree, 2, DType::kF32}, ReduceOp::kMax));
    const bool stop = agree[1] > 0;
    sh.losses.push_back(r.loss);
    if (step == first) sh.first_loss = r.loss;
    if (val >= 0) sh.last_val = val;
    if (c.rank() == 0 && observer != nullptr) {
      observer->OnStep({step, first, r, val, timed.second, static_cast<int64_t>(agree[0])});
    }
    const bool periodic =
        (o.checkpoint_every > 0 && step % o.checkpoint_every == 0) || step == o.steps;
    if (!o.checkpoint_dir.empty() && (periodic || stop)) {
      RETURN_IF_ERROR(Save(c, *t, o, step, &sh, observer));
    }
    if (stop && step < o.steps) {
      if (c.rank() == 0 && observer != nullptr) observer->OnStopped(step, sh.last_checkpoint);
      sh.stopped = true;
      break;
    }
  }
  sh.train_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  mine.memory = mem->snapshot();
  mine.dp_sent = t->grid().dp_group().stats().total_sent();
  mine.tp_sent = t->grid().tp_group().stats().total_sent();
  mine.pp_sent = t->pipeline_stats().total_sent();
  mine.coord = t->grid().coord();
  mine.activation_estimate = t->ActivationPeakEstimate();
  RETURN_IF_ERROR(Gather(c, mine, &sh));
  return sh;
}

Json RankSummary::ToJson() const {
  Json peaks = Json::Array(), current = Json::Array();
  for (int k = 0; k < kNumMemCategories; ++k) {
    peaks.Push(Json(memory.peak[k]));
    current.Push(Json(memory.current[k]));
  }
  return Json::Object({{"peak", std::move(peaks)},
                       {"current", std::move(current)},
                       {"total_peak", Json(memory.total_peak)},
                       {"total_current", Json(memory.total_current)},
                       {"sent", Json::IntArray({dp_sent, tp_sent, pp_sent})},
                       {"coord", Json::IntArray({coord.dp, coord.tp, coord.pp})},
                       {"compute_s", Json(timing.pipeline.compute_s)},
                       {"wait_s", Json(timing.pipeline.wait_s)},
                       {"optimizer_s", Json(timing.optimizer_s)},
                       {"total_s", Json(timing.total_s)},
                       {"comm_s", Json(comm_s)},
                       {"dp_exposed_s", Json(dp_exposed_s)},
                       {"dp_busy_s", Json(dp_busy_s)},
                       {"tp_busy_s", Json(tp_busy_s)},
                       {"activation_estimate", Json(activation_estimate)}});
}

absl::StatusOr<RankSummary> RankSummary::FromJson(const Json& j) {
  const char* where = "rank summary";
  RankSummary s;
  ASSIGN_OR_RETURN(std::vector<int64_t> peak, j.GetIntArray("peak", where));
  ASSIGN_OR_RETURN(std::vector<int64_t> current, j.GetIntArray("current", where));
  if (peak.size() != kNumMemCategories || current.size() != kNumMemCategories) {
    return absl::InvalidArgumentError("rank summary: not one entry per memory category");
  }
  std::copy(peak.begin(), peak.end(), s.memory.peak.begin());
  std::copy(current.begin(), current.end(), s.memory.current.begin());
  ASSIGN_OR_RETURN(s.memory.total_peak, j.GetInt("total_peak", where));
  ASSIGN_OR_RETURN(s.memory.total_current, j.GetInt("total_current", where));
  ASSIGN_OR_RETURN(std::vector<int64_t> sent, j.GetIntArray("sent", where));
  ASSIGN_OR_RETURN(std::vector<int64_t> coord, j.GetIntArray("coord", where));
  if (sent.size() != 3 || coord.size() != 3) {
    return absl::InvalidArgumentError("rank summary: 'sent' and 'coord' need 3 entries");
  }
  s.dp_sent = sent[0];
  s.tp_sent = sent[1];
  s.pp_sent = sent[2];
  s.coord = {static_cast<int>(coord[0]), static_cast<int>(coord[1]), static_cast<int>(coord[2])};
  ASSIGN_OR_RETURN(s.timing.pipeline.compute_s, j.GetNumber("compute_s", where));
  ASSIGN_OR_RETURN(s.timing.pipeline.wait_s, j.GetNumber("wait_s", where));
  ASSIGN_OR_RETURN(s.timing.optimizer_s, j.GetNumber("optimizer_s", where));
  ASSIGN_OR_RETURN(s.timing.total_s, j.GetNumber("total_s", where));
  ASSIGN_OR_RETURN(s.comm_s, j.GetNumber("comm_s", where));
  ASSIGN_OR_RETURN(s.dp_exposed_s, j.GetNumber("dp_exposed_s", where));
  ASSIGN_OR_RETURN(s.dp_busy_s, j.GetNumber("dp_busy_s", where));
  ASSIGN_OR_RETURN(s.tp_busy_s, j.GetNumber("tp_busy_s", where));
  ASSIGN_OR_RETURN(s.activation_estimate, j.GetInt("activation_estimate", where));
  return s;
}

}  // namespace trireme
