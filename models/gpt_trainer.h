// Trains the GPT on a DP x TP x PP grid: one ZeRO engine per
// rank over its DP group, the pipeline schedule over its PP group, and the
// tied embedding's gradient summed between the first and last stage.
//
// Per step every DP rank takes `micro_batches` micro-batches of the global
// batch (global micro-batch k * dp + dp_rank for local k), so a run at any
// grid sees the same data as the (1, 1, 1) run with dp * micro_batches
// micro-batches. Collective over `world`; one trainer per rank thread/process.
#ifndef TRIREME_MODELS_GPT_TRAINER_H_
#define TRIREME_MODELS_GPT_TRAINER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt.h"
#include "models/gpt_data.h"
#include "runtime/grid/grid.h"
#include "runtime/pipeline/executor.h"
#include "runtime/pipeline/schedule.h"
#include "runtime/zero/engine.h"

namespace trireme {

struct GptTrainOptions {
  GptConfig model;
  GridDims grid{-1, 1, 1};
  EngineOptions engine;  // grad_accum, compute_stream, dp/tp/pp_control are set here
  ScheduleKind schedule = ScheduleKind::k1F1B;
  int virtual_stages = 1;
  int micro_batches = 2;  // per DP rank per step
  // Tokens [micro_batch, seq + 1] of global micro-batch `global_mb` of
  // `step`; empty: GptBatch (a fixed synthetic pattern).
  std::function<std::vector<int32_t>(int64_t step, int64_t global_mb)> data;
  // Held-out tokens for Evaluate (same shape); empty: GptBatch of negative
  // step numbers (never trained on).
  std::function<std::vector<int32_t>(int64_t batch, int64_t global_mb)> eval_data;
  // The world the data communicators come from when it is not the world
  // itself: NCCL over an mpi world (not owned; must outlive the trainer).
  Communicator* data_world = nullptr;
};

// Where this rank's step time went (wall clock, seconds).
struct GptStepTiming {
  PipelineTiming pipeline;  // the compute stream's work vs its waits on pipeline neighbours
  double optimizer_s = 0;   // host time from the end of the pipeline to the step's end
  double total_s = 0;       // the whole step, loss averaging included
  GptStepTiming& operator+=(const GptStepTiming& o) {
    pipeline += o.pipeline;
    optimizer_s += o.optimizer_s;
    total_s += o.total_s;
    return *this;
  }
};

struct GptStepResult {
  double loss = 0;  // mean over the global batch; the same on every rank
  StepStats stats;
  GptStepTiming timing;
};

// Runs on options.engine.device: the grid's data communicators take that
// device's memory, the engine and the model share one compute stream, and
// the host runs ahead within a step on an asynchronous device; each Step()
// ends synchronized (the loss is read back).
class GptTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<GptTrainer>> Create(Communicator& world,
                                                            GptTrainOptions options,
                                                            MemoryTracker* tracker);
  // What rank `rank` of a run with `options` on a world of `world_size`
  // ranks will hold, from the trainer's own accounting: this trainer built on
  // the meta device over a simulated grid (every buffer is recorded in the
  // tracker exactly as in the real run, none is allocated, nothing is
  // computed) running two steps. The snapshot's peaks cover creation and both
  // steps; `current` is what stays between steps. Needs no peers: each rank
  // (or one process, for all ranks) asks for itself. With 1F1B and
  // interleaved schedules the steps run EstimateMicroBatches() micro-batches
  // (the steady state repeats; the loss slots are still every micro-batch's)
  // unless `full_schedule`: the same figures, faster. Errors: the options'
  // own (an invalid grid or model), as Create would return them.
  static absl::StatusOr<MemoryTracker::Snapshot> EstimateMemory(GptTrainOptions options,
                                                                int world_size, int rank,
                                                                bool full_schedule = false);
  // The micro-batches EstimateMemory runs: options.micro_batches, or 4 pp
  // when it is more than 5 pp (not GPipe, which holds them all).
  static int EstimateMicroBatches(const GptTrainOptions& options);
  // A lower bound of EstimateMemory's total peak, without running a step:
  // the master copy and the optimizer state after creation plus the
  // predicted activation peak (ActivationPeakEstimate). For a search to skip
  // what cannot fit.
  static absl::StatusOr<int64_t> MemoryLowerBound(GptTrainOptions options, int world_size,
                                                  int rank);
  ~GptTrainer();
  absl::StatusOr<GptStepResult> Step(int64_t step);
  // Mean loss over `batches` held-out global batches (eval_data batches 0 ..
  // batches - 1), forward only, no state changes. The same on every rank.
  // Collective over the grid, between steps.
  absl::StatusOr<double> Evaluate(int batches);

  // The full value of a parameter this rank's stage holds (NotFound
  // otherwise). Collective over the DP group.
  absl::StatusOr<std::vector<float>> GatherParam(const std::string& name);

  // Saves a checkpoint of the whole model (every rank writes what it owns;
  // see runtime/checkpoint). `options.grid` is filled in here. Collective
  // over `world`.
  absl::StatusOr<std::string> SaveCheckpoint(int64_t step, checkpoint::SaveOptions options);
  // Loads a checkpoint written at any grid and ZeRO stage (`path`: the
  // directory, or a root with `latest`). Collective over `world`.
  absl::StatusOr<checkpoint::LoadResult> LoadCheckpoint(const std::string& path);

  // This rank's activation peak predicted from the shapes and its schedule
  // (the kept bytes of every micro-batch in flight, walking its action list,
  // plus a recomputed block's transient during backward); the tracker's
  // measured `activation` peak after a step equals it.
  int64_t ActivationPeakEstimate() const;

  const ParallelGrid& grid() const { return *grid_; }
  // Traffic of the pipeline (activations and their gradients) so far.
  CommStats pipeline_stats() const;
  ZeroEngine& engine() { return *engine_; }
  Stream& compute_stream() const { return *stream_; }
  // Seconds the compute stream (or, on cpu, the host) spent blocked on DP
  // communication (the engine's gathers and reductions) and on TP
  // communication (the layers' collectives), so far: communication not
  // hidden behind compute.
  double exposed_dp_seconds() const;
  double exposed_tp_seconds() const;

 private:
  GptTrainer() = default;
  // The trainer on the meta device over a simulated grid (EstimateMemory).
  static absl::StatusOr<std::unique_ptr<GptTrainer>> BuildOnMeta(GptTrainOptions o, int world_size,
                                                                 int rank, MemoryTracker* tracker,
                                                                 bool full_schedule);
  // Validates `o` against the grid (set) and builds the schedule.
  absl::Status CheckOptions(const GptTrainOptions& o);
  // With the grid and the pipeline channels set: the stream, the engine
  // (initialized) and the stage.
  absl::Status Build(GptTrainOptions o);
  // The pipeline's view of this rank's stage: forward takes the tokens of its
  // global micro-batch from `tokens_of` and writes its loss into slot mb of
  // `losses` (last stage).
  StageModel StageModelFor(std::function<std::vector<int32_t>(int64_t global_mb)> tokens_of,
                           bool keep_activations, const Tensor& losses);
  // The sum of the micro-batch losses the last stage wrote into `losses`
  // (in micro-batch order; 0 elsewhere). Synchronizes the compute stream.
  absl::StatusOr<double> SumLosses(const Tensor& losses, int count);
  // The mean loss of the last stage, averaged over DP and shared over PP.
  absl::StatusOr<double> AverageLoss(double local_mean);
  absl::StatusOr<Tensor> NewLossSlots(int count);
  GptTrainOptions options_;
  Communicator* world_ = nullptr;
  MemoryTracker* tracker_ = nullptr;
  std::unique_ptr<ParallelGrid> grid_;
  std::unique_ptr<Communicator> act_, grad_, embedding_;
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<ZeroEngine> engine_;
  std::unique_ptr<GptStage> stage_;
  Schedule schedule_;
  PipelinePlan pipeline_;  // this rank's plan of schedule_ (CheckOptions)
  int loss_slots_ = 0;     // loss slots per step when more than micro_batches (BuildOnMeta)
};

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_TRAINER_H_
