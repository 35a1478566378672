// The training loop of the GPT as a library: the steps, evaluation,
// periodic and final checkpoints, resuming, a stop on request (preemption)
// after the same step on every rank, progress through an observer, and a
// typed summary of every rank gathered over the world. //:train is this loop
// plus a command line; an embedder with its own world and data calls
// RunTraining directly.
#ifndef TRIREME_MODELS_TRAIN_LOOP_H_
#define TRIREME_MODELS_TRAIN_LOOP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_trainer.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/json.h"

namespace trireme {

struct TrainLoopOptions {
  GptTrainOptions trainer;  // with its data sources; engine.device is this rank's
  int steps = 1;            // the last step (the LR schedule's length)
  int eval_every = 0;       // validation every N steps and at the end (0: off)
  int eval_batches = 1;
  std::string resume;          // a checkpoint directory to continue from ("": a fresh run)
  std::string checkpoint_dir;  // "": no checkpoints
  int checkpoint_every = 0;    // and at the end (0: only at the end)
  int keep_checkpoints = 0;    // retention (0: all)
  // Saved in every checkpoint after {"step", "next_step"}: what the run was
  // (data, seed, its options). Its "lr_schedule", if any, is compared on
  // resume (a note when it differs).
  Json record = Json::Object();
  // Fault injection for the commit protocol's tests (SaveOptions::midway_fault).
  std::function<absl::Status(int world_rank, int64_t step)> save_fault;
  // Polled on every rank after every step; if any rank's says stop, every
  // rank saves (with a checkpoint_dir) and returns after that same step.
  std::function<bool()> stop_requested;
};

// One rank's figures over the run.
struct RankSummary {
  MemoryTracker::Snapshot memory;                 // peaks (and current at the end)
  int64_t dp_sent = 0, tp_sent = 0, pp_sent = 0;  // bytes over the run
  GridCoord coord;
  GptStepTiming timing;     // summed over the steps of this run
  double comm_s = 0;        // DP and TP communication not hidden behind compute (exposed)
  double dp_exposed_s = 0;  // ... of which DP (the engine's gathers and reductions)
  double dp_busy_s = 0, tp_busy_s = 0;  // communication in flight, hidden or not
  int64_t activation_estimate = 0;      // predicted activation peak (GptTrainer)
  Json ToJson() const;
  static absl::StatusOr<RankSummary> FromJson(const Json& j);
};

struct TrainSummary {
  std::vector<RankSummary> ranks;  // every rank's, in world-rank order
  std::vector<double> losses;      // per step run (the same on every rank)
  double first_loss = 0, last_val = -1, train_seconds = 0;
  int64_t first_step = 1;  // the first step this run took (after a resume: the next)
  std::string resumed_from, last_checkpoint;
  bool stopped = false;  // stop_requested: ended early after losses.size() steps
};

struct StepReport {
  int64_t step = 0, first_step = 1;
  GptStepResult result;
  double val = -1;         // the validation loss, if evaluated after this step
  double seconds = 0;      // the step's wall time
  int64_t peak_bytes = 0;  // the tracker's peak total, the largest over the ranks
};

// Progress of a run, on world rank 0 only (printing, logging, metrics).
class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  // Resumed from `r`; `lr_note` is non-empty when the LR schedule differs
  // from the checkpoint's (both, as JSON).
  virtual void OnResumed(const checkpoint::LoadResult& r, int64_t first_step,
                         const std::string& lr_note) {}
  virtual void OnStep(const StepReport& s) {}
  virtual void OnCheckpoint(const std::string& dir, double milliseconds) {}
  // Stopped on request after `step` (a checkpoint of it committed, if any).
  virtual void OnStopped(int64_t step, const std::string& checkpoint) {}
};

// Trains this rank (collective over `world`: every rank calls it, with its
// own tracker and device). Returns the same summary on every rank: the
// per-rank figures are gathered over `world` (host values).
absl::StatusOr<TrainSummary> RunTraining(Communicator& world, const TrainLoopOptions& options,
                                         MemoryTracker* tracker, TrainObserver* observer);

// The LR schedule as a checkpoint records it.
Json LrScheduleJson(const LrSchedule& l);

}  // namespace trireme

#endif  // TRIREME_MODELS_TRAIN_LOOP_H_
