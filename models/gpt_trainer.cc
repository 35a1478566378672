#include "models/gpt_trainer.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "runtime/comm/simulated_comm.h"
#include "runtime/core/status.h"
#include "runtime/pipeline/executor.h"

namespace trireme {

absl::StatusOr<std::unique_ptr<GptTrainer>> GptTrainer::Create(Communicator& world,
                                                               GptTrainOptions o,
                                                               MemoryTracker* tracker) {
  std::unique_ptr<GptTrainer> t(new GptTrainer());
  t->world_ = &world;
  t->tracker_ = tracker;
  const Device device = o.engine.device;
  ASSIGN_OR_RETURN(t->grid_, ParallelGrid::Create(o.grid, world, device, o.data_world));
  RETURN_IF_ERROR(t->CheckOptions(o));
  const GridShape& g = t->grid_->shape();
  const GridCoord me = t->grid_->coord();
  // Activations and gradients on separate channels of the PP group (data).
  ASSIGN_OR_RETURN(t->act_, t->grid_->pp_group().Split(0, me.pp, "pp_act"));
  ASSIGN_OR_RETURN(t->grad_, t->grid_->pp_group().Split(0, me.pp, "pp_grad"));
  // The embedding group: first and last stage at the same (dp, tp); it sums
  // the two copies of the tied embedding's gradient (data).
  const bool ends = me.pp == 0 || me.pp == g.pp() - 1;
  ASSIGN_OR_RETURN(t->embedding_,
                   t->grid_->data_world().Split(g.pp() > 1 && ends ? me.dp * g.tp() + me.tp : -1,
                                                me.pp, "embed"));
  if (t->embedding_ != nullptr) t->embedding_->SetDataDevice(device);
  RETURN_IF_ERROR(t->Build(std::move(o)));
  return t;
}

int GptTrainer::EstimateMicroBatches(const GptTrainOptions& o) {
  // GPipe keeps every micro-batch in flight: nothing repeats.
  if (o.schedule == ScheduleKind::kGPipe) return o.micro_batches;
  const int pp = std::max(1, o.grid.pp);
  const int repeat = 4 * pp;  // a multiple of pp (interleaving needs one)
  return o.micro_batches > repeat + pp ? repeat : o.micro_batches;
}

absl::StatusOr<std::unique_ptr<GptTrainer>> GptTrainer::BuildOnMeta(GptTrainOptions o,
                                                                    int world_size, int rank,
                                                                    MemoryTracker* tracker,
                                                                    bool full_schedule) {
  std::unique_ptr<GptTrainer> t(new GptTrainer());
  t->tracker_ = tracker;
  ASSIGN_OR_RETURN(t->grid_, ParallelGrid::CreateSimulated(o.grid, world_size, rank));
  t->world_ = &t->grid_->world();
  RETURN_IF_ERROR(ValidateSchedule(o.schedule, o.grid.pp, o.micro_batches, o.virtual_stages));
  // What the pipeline holds repeats with its steady state: past 4 pp
  // micro-batches a longer step holds nothing more (MemoryEstimateTest
  // compares the two), except the loss slots, kept for every micro-batch.
  t->loss_slots_ = o.micro_batches;
  if (!full_schedule) o.micro_batches = EstimateMicroBatches(o);
  RETURN_IF_ERROR(t->CheckOptions(o));
  const GridShape& g = t->grid_->shape();
  const GridCoord me = t->grid_->coord();
  t->act_ = CreateSimulatedCommunicator(me.pp, g.pp(), "pp_act");
  t->grad_ = CreateSimulatedCommunicator(me.pp, g.pp(), "pp_grad");
  if (g.pp() > 1 && (me.pp == 0 || me.pp == g.pp() - 1)) {
    t->embedding_ = CreateSimulatedCommunicator(me.pp == 0 ? 0 : 1, 2, "embed");
  }
  // Only the shapes matter: no data is read, nothing is computed.
  o.engine.device = Device::Meta();
  o.data = nullptr;
  o.eval_data = nullptr;
  o.data_world = nullptr;
  RETURN_IF_ERROR(t->Build(std::move(o)));
  return t;
}

absl::StatusOr<MemoryTracker::Snapshot> GptTrainer::EstimateMemory(GptTrainOptions o,
                                                                   int world_size, int rank,
                                                                   bool full_schedule) {
  MemoryTracker tracker("estimate");
  ASSIGN_OR_RETURN(std::unique_ptr<GptTrainer> t,
                   BuildOnMeta(std::move(o), world_size, rank, &tracker, full_schedule));
  for (int64_t step = 1; step <= 2; ++step) RETURN_IF_ERROR(t->Step(step).status());
  return tracker.snapshot();
}

absl::StatusOr<int64_t> GptTrainer::MemoryLowerBound(GptTrainOptions o, int world_size, int rank) {
  MemoryTracker tracker("bound");
  ASSIGN_OR_RETURN(std::unique_ptr<GptTrainer> t,
                   BuildOnMeta(std::move(o), world_size, rank, &tracker, false));
  // The master copy and the optimizer state live from creation to the end;
  // the activation peak happens while they do.
  return tracker.current(MemCategory::kMaster) + tracker.current(MemCategory::kOptim) +
         t->ActivationPeakEstimate();
}

absl::Status GptTrainer::CheckOptions(const GptTrainOptions& o) {
  const GridShape& g = grid_->shape();
  RETURN_IF_ERROR(o.model.Validate(g.pp(), g.tp(), o.virtual_stages));
  if (o.micro_batches < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("micro_batches (", o.micro_batches, ") must be >= 1"));
  }
  if (o.engine.stage == 3 && g.pp() > 1 && o.engine.keep_params_until_backward) {
    return absl::InvalidArgumentError(
        "keep_params_until_backward keeps one micro-batch's gather per unit; with pipelining "
        "several micro-batches are in flight: use false (gather again for backward) or "
        "keep_params_for_step");
  }
  ASSIGN_OR_RETURN(schedule_, BuildSchedule(o.schedule, g.pp(), o.micro_batches, o.virtual_stages));
  pipeline_ = PlanPipeline(schedule_, grid_->coord().pp, P2PPolicyFor(schedule_.kind));
  return absl::OkStatus();
}

absl::Status GptTrainer::Build(GptTrainOptions o) {
  const GridShape& g = grid_->shape();
  const GridCoord me = grid_->coord();
  const GptPlace place{g.pp(), me.pp, g.tp(), me.tp, o.virtual_stages};
  // One compute stream for the model and the engine.
  ASSIGN_OR_RETURN(stream_, NewStream(o.engine.device, "gpt:compute"));
  o.engine.grad_accum = o.micro_batches;
  o.engine.compute_stream = stream_.get();
  o.engine.dp_control = &grid_->dp_control();
  o.engine.tp_control = &grid_->tp_control();
  o.engine.pp_control = &grid_->pp_control();
  ASSIGN_OR_RETURN(
      engine_, ZeroEngine::Create(grid_->dp_group(), GptUnits(o.model, place), o.engine, tracker_));
  const GptConfig model = o.model;
  RETURN_IF_ERROR(engine_->Initialize(
      [&](const ParamInfo& p, float* v) { return GptInit(model, place, p, v); }));
  stage_ =
      std::make_unique<GptStage>(o.model, place, *engine_, grid_->tp_group(), *stream_, tracker_);
  options_ = std::move(o);
  return absl::OkStatus();
}

GptTrainer::~GptTrainer() {
  // Nothing may still run on the stream when the stage and engine go.
  if (stream_ != nullptr) stream_->Synchronize().IgnoreError();
}

absl::StatusOr<Tensor> GptTrainer::NewLossSlots(int count) {
  // One 8-byte slot (a double) per micro-batch, zeroed.
  ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(stream_->device(), DType::kI64, {count},
                                           MemCategory::kWorkspace, tracker_, stream_.get()));
  RETURN_IF_ERROR(kernels::Memset(*stream_, t.data(), t.bytes()));
  return t;
}

absl::StatusOr<double> GptTrainer::SumLosses(const Tensor& losses, int count) {
  std::vector<double> host(count, 0.0);
  RETURN_IF_ERROR(kernels::Copy(*stream_, host.data(), losses.data(), count * sizeof(double)));
  RETURN_IF_ERROR(stream_->Synchronize());
  double sum = 0;
  for (double l : host) sum += l;
  return sum;
}

absl::StatusOr<GptStepResult> GptTrainer::Step(int64_t step) {
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const Clock::time_point start = Clock::now();
  const PipelineTiming clock0 = PipelineClock(*stream_, *act_, *grad_);
  GptStepResult r;
  ASSIGN_OR_RETURN(Tensor losses, NewLossSlots(std::max(options_.micro_batches, loss_slots_)));
  StageModel model = StageModelFor(
      [&](int64_t global_mb) {
        return options_.data ? options_.data(step, global_mb)
                             : GptBatch(options_.model, step, global_mb);
      },
      /*keep_activations=*/true, losses);
  model.backward = [&](int mb, int chunk, const Tensor& dout, Tensor* din) {
    return stage_->Backward(mb, chunk, dout, din);
  };
  RETURN_IF_ERROR(RunPipeline(pipeline_, *act_, *grad_, *stream_, model));
  const Clock::time_point optimizer_start = Clock::now();
  RETURN_IF_ERROR(engine_->ReduceGradients());
  if (embedding_ != nullptr && options_.model.tied_head) {
    RETURN_IF_ERROR(SumTiedEmbeddingGrads(*engine_, *embedding_));  // an untied head has no copy
  }
  ASSIGN_OR_RETURN(r.stats, engine_->Step());
  ASSIGN_OR_RETURN(const double loss_sum,
                   SumLosses(losses, options_.micro_batches));  // the step ends here
  r.timing.optimizer_s = seconds_since(optimizer_start);
  r.timing.pipeline = PipelineClock(*stream_, *act_, *grad_) - clock0;
  ASSIGN_OR_RETURN(r.loss, AverageLoss(loss_sum / options_.micro_batches));
  r.timing.total_s = seconds_since(start);
  return r;
}

absl::StatusOr<double> GptTrainer::Evaluate(int batches) {
  const GridShape& g = grid_->shape();
  const GridCoord me = grid_->coord();
  const int pp = g.pp(), v = options_.virtual_stages, stages = pp * v;
  // Forward only, micro-batch by micro-batch and chunk by chunk: every rank
  // handles (mb, global stage) in increasing order; each receive's producer
  // comes first, so the plan is rendezvous-safe.
  std::vector<Action> actions;
  for (int mb = 0; mb < options_.micro_batches; ++mb) {
    for (int chunk = 0; chunk < v; ++chunk) {
      const int s = chunk * pp + me.pp;
      if (s > 0) actions.push_back({ActionType::kRecvActivation, mb, chunk, (me.pp + pp - 1) % pp});
      actions.push_back({ActionType::kForward, mb, chunk});
      if (s < stages - 1) {
        actions.push_back({ActionType::kSendActivation, mb, chunk, (me.pp + 1) % pp});
      }
    }
  }
  const std::vector<ExecStep> plan = PlanSteps(actions);
  double loss_sum = 0;
  int64_t batch = 0;
  absl::Status s;
  engine_->set_evaluating(true);
  for (batch = 0; batch < batches && s.ok(); ++batch) {
    absl::StatusOr<Tensor> losses = NewLossSlots(options_.micro_batches);
    if (!losses.ok()) {
      s = losses.status();
      break;
    }
    StageModel model = StageModelFor(
        [&](int64_t global_mb) {
          return options_.eval_data ? options_.eval_data(batch, global_mb)
                                    : GptBatch(options_.model, -1 - batch, global_mb);
        },
        /*keep_activations=*/false, *losses);
    model.backward = [](int, int, const Tensor&, Tensor*) {
      return absl::InternalError("no backward in evaluation");
    };
    s = RunPipeline(plan, *act_, *grad_, *stream_, model);
    if (s.ok()) {
      absl::StatusOr<double> sum = SumLosses(*losses, options_.micro_batches);
      if (sum.ok()) loss_sum += *sum;
      s = sum.status();
    }
  }
  engine_->set_evaluating(false);
  RETURN_IF_ERROR(s);
  return AverageLoss(loss_sum / (static_cast<double>(options_.micro_batches) * batches));
}

StageModel GptTrainer::StageModelFor(
    std::function<std::vector<int32_t>(int64_t global_mb)> tokens_of, bool keep_activations,
    const Tensor& losses) {
  const int dp = grid_->shape().dp(), dp_rank = grid_->coord().dp;
  StageModel model;
  model.input_buffer = [this](int, int) { return stage_->NewStageTensor(); };
  model.grad_output_buffer = [this](int, int) { return stage_->NewStageTensor(); };
  model.forward = [this, tokens_of, keep_activations, losses, dp, dp_rank](
                      int mb, int chunk, const Tensor& in, Tensor* out) -> absl::Status {
    const int64_t global_mb = static_cast<int64_t>(mb) * dp + dp_rank;
    const std::vector<int32_t> tokens = tokens_of(global_mb);
    if (static_cast<int64_t>(tokens.size()) !=
        options_.model.micro_batch * (options_.model.seq + 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the data source gave ", tokens.size(), " tokens for micro-batch ",
                       global_mb, "; expected micro_batch x (seq + 1) = ",
                       options_.model.micro_batch * (options_.model.seq + 1)));
    }
    double* slot = losses.data() == nullptr ? nullptr : losses.as<double>() + mb;
    RETURN_IF_ERROR(stage_->Forward(mb, chunk, tokens, in, out, slot));
    if (!keep_activations) stage_->DropActivations(mb, chunk);
    return absl::OkStatus();
  };
  return model;
}

absl::StatusOr<double> GptTrainer::AverageLoss(double local_mean) {
  // The loss lives on the last stage: average over DP, then share over PP
  // (host values: control communicators).
  float loss = static_cast<float>(local_mean);
  MutView lv{&loss, 1, DType::kF32};
  RETURN_IF_ERROR(grid_->dp_control().AllReduce(lv, lv, ReduceOp::kAvg));
  RETURN_IF_ERROR(grid_->pp_control().Broadcast(lv, grid_->shape().pp() - 1));
  return loss;
}

int64_t GptTrainer::ActivationPeakEstimate() const {
  const GridShape& g = grid_->shape();
  const GptPlace place{g.pp(), grid_->coord().pp, g.tp(), grid_->coord().tp,
                       options_.virtual_stages};
  int64_t now = 0, peak = 0;
  for (const Action& a : schedule_.per_rank[grid_->coord().pp]) {
    const int64_t kept = GptKeptActivationBytes(options_.model, place, a.chunk);
    if (a.type == ActionType::kForward) {
      now += kept;
      peak = std::max(peak, now);
    } else if (a.type == ActionType::kBackward) {
      peak = std::max(peak, now + GptRecomputeTransientBytes(options_.model, place, a.chunk));
      now -= kept;
    }
  }
  return peak;
}

absl::StatusOr<std::string> GptTrainer::SaveCheckpoint(int64_t step,
                                                       checkpoint::SaveOptions options) {
  const GridShape& g = grid_->shape();
  options.grid = Json::Object({{"dp", Json(g.dp())},
                               {"tp", Json(g.tp())},
                               {"pp", Json(g.pp())},
                               {"virtual_stages", Json(options_.virtual_stages)},
                               {"zero_stage", Json(options_.engine.stage)}});
  const GptPlace place{g.pp(), grid_->coord().pp, g.tp(), grid_->coord().tp,
                       options_.virtual_stages};
  const GptConfig model = options_.model;
  return checkpoint::Save(
      *world_, *engine_,
      [model, place](const ParamInfo& p) { return GptTensorLayout(model, place, p); }, step,
      options);
}

absl::StatusOr<checkpoint::LoadResult> GptTrainer::LoadCheckpoint(const std::string& path) {
  const GridShape& g = grid_->shape();
  const GptPlace place{g.pp(), grid_->coord().pp, g.tp(), grid_->coord().tp,
                       options_.virtual_stages};
  const GptConfig model = options_.model;
  const std::vector<checkpoint::TensorSpec> expected = GptCheckpointTensors(model);
  return checkpoint::Load(
      *world_, *engine_,
      [model, place](const ParamInfo& p) { return GptTensorLayout(model, place, p); }, path,
      &expected);
}

CommStats GptTrainer::pipeline_stats() const {
  CommStats s = act_->stats();
  const CommStats g = grad_->stats();
  for (int i = 0; i < kNumCommOps; ++i) {
    s.ops[i].calls += g.ops[i].calls;
    s.ops[i].bytes_sent += g.ops[i].bytes_sent;
    s.ops[i].bytes_received += g.ops[i].bytes_received;
  }
  s.blocked_seconds += g.blocked_seconds;
  s.stream_blocked_seconds += g.stream_blocked_seconds;
  s.busy_seconds += g.busy_seconds;
  return s;
}

double GptTrainer::exposed_dp_seconds() const {
  return grid_->dp_group().stats().blocked_seconds + engine_->exposed_dp_seconds();
}

double GptTrainer::exposed_tp_seconds() const {
  const CommStats t = grid_->tp_group().stats();
  return t.blocked_seconds + t.stream_blocked_seconds;
}

absl::StatusOr<std::vector<float>> GptTrainer::GatherParam(const std::string& name) {
  return engine_->GatherFull(name);
}

}  // namespace trireme
