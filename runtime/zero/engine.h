// The ZeRO engine: parameters, gradients and optimizer state partitioned over
// the ranks of a data-parallel group, with gather-on-use and reduce-scatter
// hooks. This header is also the embedding API: another trainer registers its
// parameters in units, calls the hooks around each unit's forward and
// backward, and calls Step().
//
// Vocabulary (DESIGN.md): a *unit* is a group of parameters gathered and
// reduced together; its *flat space* is the parameters laid end to end
// (param ranges in unit_offset space), padded to a multiple of dp; a rank's
// *shard* is the contiguous 1/dp slice of it that the rank owns. A unit has
// up to two flat spaces: trainable parameters, and frozen ones (compute copy
// only). A parameter tied to another unit's parameter makes that unit's
// space part of this unit's gathers too.
//
// Stages are residency policies of this one engine (per rank, P = padded
// unit size, N = dp):
//
// clang-format off
//   stage | compute params                  | grads (grad dtype)                     | fp32 master, state
//   0     | full                            | full, all-reduced per unit after its   | full
//         |                                 |   last micro-batch's backward          |
//   1     | full                            | full, reduce-scattered likewise        | shard
//   2     | full                            | shard; full only while the unit is in  | shard
//         |                                 |   backward, reduce-scattered in        |
//         |                                 |   PostBackward                         |
//   3     | shard; full only while in use   | as stage 2                             | shard
//         |   (gathered, `comm`)            |                                        |
// clang-format on
//
// Transient buffers (category `comm`) are bounded, per rank, by
//   (prefetch_depth + 1) gathered units (stage 3, compute dtype)
//   + 2 full unit gradients + 1 reduce-scatter output (stages 2-3, grad dtype)
//   (+ a full unit and a shard in the reduce dtype when it differs)
// (one reduction in flight while the next unit's backward fills its buffer),
// where "unit" means the largest padded unit; `workspace` holds at most 4 MiB
// (f32 widening of 16-bit gradients, a chunk at a time) during Step().
//
// Devices and streams: the engine runs on cpu, cpu_async, meta and cuda (one
// GPU per engine; compiled and linked, not yet run on a GPU by us: see
// README). Its work is enqueued on three streams of
// the device: the compute stream (EngineOptions::compute_stream, shared with
// the model: parameter and gradient views are read and written by work on
// it), a gather stream (stage-3 all-gathers) and a reduction stream
// (gradient reductions). Cross-stream order comes from events only:
//   - a unit's compute waits for its gather's event (the host does not);
//   - a reduction waits for the event recorded after the unit's backward;
//   - the norm and the optimizer wait for the reductions' event;
//   - the next step's gathers wait for the optimizer's event.
// On cpu every stream is an InlineStream, so each call completes before it
// returns (the bitwise reference); cpu_async and cuda run ahead. The host
// blocks in three places only: Step() reads the norm and overflow flag back
// (one small host value per step), Synchronize(), and the run-ahead limits
// that keep physical memory at the tracked bound (a new stage-3 gather waits
// until the compute stream is past every unit released before it; a new full
// gradient until the reductions finished before it have run), as FSDP's
// limit_all_gathers does.
//
// Communicators: `dp` is the DP group's data communicator (tensors on the
// engine's device); host values (norm, overflow flag) go over the control
// communicators dp_control / tp_control / pp_control.
//
// Threading: an engine belongs to one rank and is used from that rank's
// thread. Every method that communicates is collective over the DP group:
// all ranks call it in the same order.
#ifndef TRIREME_RUNTIME_ZERO_ENGINE_H_
#define TRIREME_RUNTIME_ZERO_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "optimizer/optimizer.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/memory.h"
#include "runtime/core/pinned.h"
#include "runtime/core/stream.h"

namespace trireme {

// A half-open range of element offsets. Which space it lives in is in the
// name of the variable holding it (unit_range, shard_range, ...).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  Range Intersect(Range o) const {
    Range r{begin > o.begin ? begin : o.begin, end < o.end ? end : o.end};
    if (r.end < r.begin) r.end = r.begin;
    return r;
  }
};

// What a ZeRO stage keeps where -- the one place the stage number is read.
struct StagePolicy {
  bool shard_params = false;        // stage 3: the compute copy is the shard, gathered on use
  bool shard_grads = false;         // stages 2-3: the grad buffer is the shard
  bool shard_master = false;        // stages 1-3: master and optimizer state are the shard
  bool reduce_in_backward = false;  // stages 2-3: reduce-scatter each unit in PostBackward
  bool all_reduce = false;          // stage 0: all-reduce (not reduce-scatter) the gradients
  bool gather_after_step = false;   // stages 1-2: all-gather the updated shards after Step
  static StagePolicy For(int stage);
};

struct ParamSpec {
  std::string name;            // unique across the engine
  std::vector<int64_t> shape;  // logical shape; numel = product (>= 1)
  bool weight_decay = true;    // AdamW decoupled decay / SGD L2 applies
  // Frozen parameters have a compute copy only: no gradient, no master, no
  // optimizer state, no reduction. They live in a flat space of their own.
  bool requires_grad = true;
  // The name of another (trainable, untied) parameter of the same shape whose
  // storage this one shares: one storage, gradients from both uses summed
  // once, counted once in the norm. Flags above are taken from the target.
  std::string tied_to;
  // With EngineOptions::tp_control: true if every TP rank holds the same values
  // (LayerNorm, biases of row-parallel layers); counted once in the grad norm.
  // false for parameters split over TP (each rank holds a different part).
  bool replicated_over_tp = true;
  // A copy of a parameter that another pipeline stage also holds and counts
  // (e.g. the LM head tied to the first stage's embedding): excluded from the
  // grad norm here.
  bool norm_duplicate = false;
};

struct UnitSpec {
  std::string name;
  std::vector<ParamSpec> params;
};

enum class GradAccumPolicy {
  // Stages 2-3: reduce-scatter every micro-batch and add into the grad shard
  // (memory: full grads only while a unit is in backward; communication:
  // one reduce-scatter per micro-batch).
  kReduceEveryMicroBatch,
  // Stages 2-3: keep the unit's full gradient across micro-batches and reduce
  // once at the last one (memory: full grads for the whole step, like
  // stage 1; communication: one reduce-scatter per step).
  kAccumulateThenReduce,
};

struct EngineOptions {
  int stage = 3;                      // ZeRO stage 0..3
  DType compute_dtype = DType::kF32;  // dtype of the parameter copies forward uses
  DType grad_dtype = DType::kF32;     // gradient storage and accumulation
  // The dtype gradients are communicated (reduced) in; empty: grad_dtype.
  // E.g. accumulate in f32 but reduce in bf16 to halve the traffic.
  std::optional<DType> grad_reduce_dtype;
  int grad_accum = 1;  // micro-batches per step
  GradAccumPolicy accum_policy = GradAccumPolicy::kReduceEveryMicroBatch;
  bool keep_params_until_backward = false;  // stage 3: no release in PostForward
  // Stage 3: keep each unit's gathered parameters from its first use until
  // Step() -- one all-gather per unit per step instead of two per micro-batch
  // (with pipelining, micro-batches interleave), at the memory of full
  // compute parameters (like stage 2) during the step.
  bool keep_params_for_step = false;
  int prefetch_depth = 1;  // stage 3: gathers issued ahead (0 = none)
  OptimizerConfig optimizer;
  LrSchedule lr;
  float clip_norm = 0.0f;  // global grad-norm clipping; <= 0: off
  // Loss scaling (f16 compute): gradients are divided by scale(); an overflow
  // on any rank skips the step everywhere. Off when loss_scaling is false.
  bool loss_scaling = false;
  LossScaler::Config loss_scaler;
  // Without loss scaling, what a non-finite gradient (seen by any rank of the
  // DP, TP or PP groups) does: skip the step on every rank (StepStats.skipped
  // and .nonfinite), or abort: Step() returns DataLoss on every rank, with the
  // same message, before anything is updated.
  enum class NonFinite { kSkip, kAbort };
  NonFinite on_nonfinite = NonFinite::kSkip;
  // cpu (synchronous, the reference), cpu_async (streams on worker threads),
  // or meta: every buffer is accounted but nothing is allocated or computed
  // (values are absent), so memory and communication can be measured for
  // clusters this machine cannot hold -- use a communicator that accepts
  // null buffers (CreateSimulatedCommunicator); or cuda:N (every buffer in
  // that GPU's memory, kernels on CUDA streams; a CUDA build and a usable
  // device are checked by Validate).
  Device device = Device::Cpu();
  // The stream the model computes on (of `device`; not owned, must outlive
  // the engine). Null: the engine creates one (compute_stream()).
  Stream* compute_stream = nullptr;
  // Threads the CPU kernels (optimizer, casts, norm) split this rank's shard
  // over. Results do not depend on it. With ranks as threads, keep the total
  // (ranks x kernel_threads) near the core count.
  int kernel_threads = 1;
  // Control communicators (host values) for the grad norm and the overflow
  // flag: over the DP group (null: `dp` itself, which must then take host
  // memory), and over the model-parallel groups they are also reduced over
  // (optional). Not owned; must outlive the engine.
  Communicator* dp_control = nullptr;
  Communicator* tp_control = nullptr;
  Communicator* pp_control = nullptr;

  // Every inconsistency as InvalidArgument with the numbers.
  absl::Status Validate() const;
};

// What the engine knows about one parameter (always complete, whatever the
// stage: the logical shape is never [0]).
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  int unit = 0;
  int index = 0;     // within the unit
  Range unit_range;  // where it lies in its flat space (the target's, if tied)
  bool weight_decay = true;
  bool requires_grad = true;
  std::string tied_to;  // empty unless it shares another parameter's storage
};

struct StepStats {
  int64_t step = 0;  // 1-based count of steps taken (skipped ones included)
  float lr = 0;
  double grad_norm = 0;  // global, of the averaged gradient, before clipping
  float clip_coef = 1;
  bool skipped = false;    // overflow: nothing was updated
  bool nonfinite = false;  // some rank's gradient held inf or NaN
  // How many of the DP x TP x PP ranks found inf/NaN in their reduced
  // gradient shard (after the DP reduction a NaN from one rank spreads to
  // every DP rank of its group; 0 with nonfinite: the norm overflowed f32).
  int nonfinite_ranks = 0;
  float loss_scale = 1;
  int64_t bytes_sent = 0;  // this rank, on the DP group, during the step
  int64_t bytes_received = 0;
};

// Unit sizing: groups parameters, in order, into units of at most
// `max_unit_numel` elements each (a parameter larger than that gets a unit of
// its own), named "<prefix>0", "<prefix>1", ... Larger units mean fewer,
// larger collectives; smaller units mean less memory gathered at once in
// stage 3. max_unit_numel must be >= 1 (InvalidArgument otherwise).
absl::StatusOr<std::vector<UnitSpec>> GroupIntoUnits(std::vector<ParamSpec> params,
                                                     int64_t max_unit_numel,
                                                     const std::string& prefix = "unit");

// The fp32 states a trainable parameter has on the rank that owns it, in
// the order a checkpoint stores them ("master", "m", "v").
enum class ParamState : int {
  kMaster = 0,   // the fp32 master value
  kMoment1 = 1,  // AdamW's m, SGD's momentum
  kMoment2 = 2,  // AdamW's v (SGD has none)
};

class ZeroEngine {
 public:
  // Validates options and units (unique names, positive shapes, at least one
  // parameter) and allocates the persistent state, every byte through
  // `tracker` (which must outlive the engine). `dp` must outlive the engine.
  static absl::StatusOr<std::unique_ptr<ZeroEngine>> Create(Communicator& dp,
                                                            std::vector<UnitSpec> units,
                                                            EngineOptions options,
                                                            MemoryTracker* tracker);
  ~ZeroEngine();

  // Fills every parameter: fn(info, values) writes info.numel fp32 values
  // (the full logical tensor, row-major). Every rank calls fn for every
  // parameter and keeps what it owns, so the result equals a single-rank run
  // with the same fn. Not collective.
  using InitFn = std::function<absl::Status(const ParamInfo& info, float* values)>;
  absl::Status Initialize(const InitFn& fn);
  // Initialize from given full values by name; every parameter must be
  // present with exactly numel values (InvalidArgument naming it otherwise).
  absl::Status InitializeFrom(const absl::flat_hash_map<std::string, std::vector<float>>& values);

  // --- hooks, per unit, per micro-batch (collective in stages 2-3) ---
  absl::Status PreForward(int unit);
  absl::Status PostForward(int unit);
  absl::Status PreBackward(int unit);
  absl::Status PostBackward(int unit);

  // The unit's parameter `index`, full, in the compute dtype: valid between
  // PreForward and PostForward, and between PreBackward and PostBackward
  // (FailedPrecondition otherwise). Device memory, owned by the engine; read
  // it with work on compute_stream() enqueued in that window; do not write.
  absl::StatusOr<MutView> Param(int unit, int index);
  // The gradient buffer (grad dtype, full shape) of parameter `index`, valid
  // between PreBackward and PostBackward: device memory the trainer ADDS its
  // gradient of the micro-batch's mean loss into, with work on
  // compute_stream() enqueued in that window (buffers are zeroed by the
  // engine).
  absl::StatusOr<MutView> Grad(int unit, int index);

  // Finishes every gradient reduction (idempotent within a step). After it,
  // GradShard() shows what the optimizer will use. Collective.
  absl::Status ReduceGradients();
  // The reduced gradient of this rank's master range of `unit`, averaged
  // over ranks and micro-batches (before clipping), widened to f32, on the
  // host (synchronizes the compute stream). REQUIRES: ReduceGradients() in
  // this step.
  absl::StatusOr<std::vector<float>> GradShard(int unit);

  // The reduced gradient (grad dtype) of this rank's master range of the
  // unit's trainable space, writable: for a trainer that must combine it with
  // a copy held elsewhere (a parameter tied across pipeline stages) between
  // ReduceGradients() and Step(). Values are sums over micro-batches, averaged
  // over ranks. Device memory, for work on compute_stream() (which
  // ReduceGradients ordered after the reductions). REQUIRES:
  // ReduceGradients() in this step.
  absl::StatusOr<MutView> ReducedGrad(int unit);

  // Clip, optimizer update of the master range, cast to the compute copies
  // (and all-gather them in stages 1-2), zero the gradients. Collective.
  // Phases: FinishReductions, NormAndOverflow (the one host read back of the
  // step), Decide (loss scale, skip, lr, clip), ApplyOptimizer,
  // RefreshComputeCopies, ZeroGradients. Returns once the update is enqueued
  // (on cpu: done); errors of work enqueued earlier surface here.
  absl::StatusOr<StepStats> Step();

  // Blocks until all the engine's streams have run what was enqueued;
  // returns their first error. Host reads of engine memory (checkpoints,
  // inspection) come after it.
  absl::Status Synchronize();

  // The full fp32 (master) value of parameter `name`. Collective (gathers
  // the unit's shards in stages 1-3).
  absl::StatusOr<std::vector<float>> GatherFull(const std::string& name);

  // Evaluation (forward only, between steps): while on, stage 3 gathers each
  // unit for PreForward outside the recorded unit order, without prefetching,
  // and releases it at PostForward; no gradients may be produced.
  void set_evaluating(bool on) { evaluating_ = on; }

  // --- checkpoint support (runtime/checkpoint) ---
  // Counters and loss-scaler state: what, besides the tensors, a resumed run
  // needs to continue bitwise.
  struct State {
    int64_t step = 0;            // Step() calls
    int64_t optimizer_step = 0;  // updates taken (skipped steps excluded)
    bool loss_scaling = false;
    LossScaler::State loss_scaler{1.0f, 0, 0};
  };
  State state() const;
  // InvalidArgument if `s` disagrees with the options (loss scaling on/off)
  // or has inconsistent counters; set_state applies it after that check.
  absl::Status CheckState(const State& s) const;
  absl::Status set_state(const State& s);

  // One trainable, untied parameter's elements whose master and optimizer
  // state this rank saves: [range.begin, range.end) of the parameter's flat
  // tensor, with the matching values (m: AdamW first moment or SGD momentum;
  // v: AdamW second moment, nullptr for SGD). In stage 0 every DP rank holds
  // everything, and only DP rank 0 reports it, so across the DP group each
  // element is reported exactly once.
  struct OwnedSlice {
    ParamInfo info;
    Range range;
    const float* master = nullptr;
    const float* m = nullptr;
    const float* v = nullptr;
  };
  // Host pointers (device memory on host-accessible devices, else a staged
  // host copy), valid until the engine next runs. Synchronizes first.
  absl::StatusOr<std::vector<OwnedSlice>> OwnedSlices();

  // Replaces master, optimizer state and compute copies: fn(info, state,
  // values) writes the full logical tensor (info.numel values) of `state`
  // (kMaster, kMoment1, kMoment2 -- never asked for SGD) for every trainable
  // untied parameter (frozen ones keep their values: they are not
  // checkpointed). Every rank keeps what it owns, as Initialize does. Not
  // collective; synchronizes the engine's streams.
  using RestoreFn =
      std::function<absl::Status(const ParamInfo& info, ParamState state, float* values)>;
  absl::Status Restore(const RestoreFn& fn);

  // --- inspection ---
  int num_units() const { return static_cast<int>(units_.size()); }
  const std::string& unit_name(int unit) const;
  // The description of the parameter named `name` (NotFound otherwise); not
  // its values (Param(unit, i) is the gathered tensor between the hooks).
  absl::StatusOr<ParamInfo> param_info(const std::string& name) const;
  const std::vector<ParamInfo>& unit_params(int unit) const;
  int64_t unit_numel(int unit) const;         // trainable elements, unpadded
  int64_t unit_padded_numel(int unit) const;  // trainable elements, multiple of dp
  // The range of the unit's flat space whose fp32 master (and optimizer
  // state) this rank holds: the shard in stages 1-3, everything in stage 0.
  Range master_range(int unit) const;
  // (Inspection below refers to the unit's trainable flat space.)
  // This rank's fp32 master values for master_range(unit) (device memory:
  // read after Synchronize()).
  const float* master_data(int unit) const;
  // This rank's `state` for master_range(unit): the master, kMoment1 (AdamW
  // m, SGD momentum) or kMoment2 (AdamW v; nullptr for SGD). Device memory.
  const float* optim_state(int unit, ParamState state) const;
  // The stream the model's work on parameter and gradient views goes on.
  Stream& compute_stream() const { return *compute_; }
  // Seconds the compute stream spent blocked on the engine's gathers and
  // reductions so far (asynchronous devices; on cpu the host blocks in the
  // DP communicator instead: its CommStats.blocked_seconds).
  double exposed_dp_seconds() const { return static_cast<double>(dp_blocked_->load()) * 1e-9; }
  // Loss scale to multiply the loss by (1 without loss scaling).
  float loss_scale() const;
  const EngineOptions& options() const { return options_; }
  bool meta() const { return options_.device.kind == DeviceKind::kMeta; }
  DType reduce_dtype() const { return options_.grad_reduce_dtype.value_or(options_.grad_dtype); }
  int64_t step() const { return step_; }

 private:
  struct Space;
  struct Unit;
  ZeroEngine(Communicator& dp, EngineOptions options, MemoryTracker* tracker);
  absl::Status CreateStreams();
  absl::Status AllocateState();
  absl::Status CheckUnit(int unit, const char* hook) const;
  absl::Status CheckParam(int unit, int index, const char* what) const;
  // Fills every trainable space's master (and optimizer state) and compute
  // copies from full host values.
  absl::Status Fill(const std::function<absl::Status(const ParamInfo&, int, float*)>& fn,
                    int states);
  // Stage 3 gathers.
  absl::Status GatherUnit(Unit& u);
  absl::Status StartGather(Space& s);
  absl::Status UseGathered(Space& s);
  void Release(Unit& u);
  absl::Status DiscardPrefetches();
  absl::Status RecordOrCheckOrder(int kind, int unit);
  absl::Status Prefetch();
  // Reductions (engine_reduce.cc).
  absl::Status StartReduction(int space);
  absl::Status StartBucket(Space& s);
  absl::Status FinishBucket(Space& s);
  absl::Status FinishPendingReduction();
  absl::Status LimitReductionsInFlight();
  // Step phases (engine_step.cc).
  absl::Status CheckIdleForStep();
  struct Norm {
    double sumsq = 0;
    bool finite = true;
  };
  absl::StatusOr<Norm> NormAndOverflow();
  struct Decision {
    StepStats stats;
    float grad_scale = 1;  // 1 / (micro-batches x loss scale) x clip coefficient
  };
  absl::StatusOr<Decision> Decide(const Norm& local);
  absl::Status ApplyOptimizer(const Decision& d);
  absl::Status RefreshComputeCopies();
  absl::Status ZeroGradients();
  // Calls fn(g, r) for each piece of `r` (space offsets of the trainable
  // space) of the reduced gradient as f32 device memory: the grad buffer
  // itself for f32 gradients, else widened a chunk at a time into `work`.
  absl::Status ForEachF32Piece(Space& s, Range r, const Buffer& work,
                               const std::function<absl::Status(const float*, Range)>& fn);
  // A fresh params_ready_ event at this point of the compute stream.
  absl::Status RecordParamsReady();
  absl::StatusOr<Buffer> Alloc(int64_t bytes, MemCategory c, Stream* stream);
  absl::StatusOr<Buffer> AllocZeroed(int64_t bytes, MemCategory c, Stream& stream);
  // Device -> host copy of `bytes` (synchronizes the compute stream).
  absl::Status ToHost(const void* device, void* host, int64_t bytes);
  const Space* TrainableSpace(int unit) const;
  Communicator& dp_control() const { return options_.dp_control ? *options_.dp_control : dp_; }

  Communicator& dp_;
  const EngineOptions options_;
  const StagePolicy policy_;
  MemoryTracker* tracker_;
  std::unique_ptr<Stream> own_compute_, gather_, reduce_;
  Stream* compute_ = nullptr;
  // Time the compute stream spent blocked on DP communication (gathers and
  // reductions). Disjoint from dp's CommStats: waits of the engine's other
  // streams count there (stream_blocked_seconds), the compute stream's here.
  WaitCounter dp_blocked_ = std::make_shared<std::atomic<int64_t>>(0);
  std::vector<std::unique_ptr<Space>> spaces_;
  std::vector<std::unique_ptr<Unit>> units_;
  absl::flat_hash_map<std::string, std::pair<int, int>> by_name_;
  int64_t step_ = 0;      // Step() calls
  int64_t opt_step_ = 0;  // optimizer updates (skipped steps excluded)
  int64_t last_sent_ = 0, last_received_ = 0;
  bool reduced_ = false;
  int pending_space_ = -1;  // space whose reduction is enqueued, not yet finished
  // Run-ahead limits: events recorded on the compute stream at each stage-3
  // release, and on the reduction stream at each finished reduction.
  std::deque<std::unique_ptr<Event>> releases_in_flight_, reductions_in_flight_;
  // Recorded on the compute stream after the last write of the compute copies
  // (the optimizer, Initialize, Restore): the next gathers wait for it.
  std::unique_ptr<Event> params_ready_;
  // Stage 3 gather order, recorded in the first step and checked after.
  std::vector<std::pair<int, int>> order_;  // (0 forward / 1 backward, unit)
  bool order_recorded_ = false;
  bool evaluating_ = false;
  size_t order_pos_ = 0;
  std::unique_ptr<LossScaler> scaler_;
  std::vector<PinnedVector<float>> staged_;  // OwnedSlices of non-host devices
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_ZERO_ENGINE_H_
