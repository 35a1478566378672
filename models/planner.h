// The 3D planner: for a model, a global batch and a cluster, which
// (dp, tp, pp, virtual stages, ZeRO stage, micro-batch, recompute, sequence
// parallel) configurations fit, and which is fastest.
//
// Memory is not a formula: PlanMemory runs //:train's own options
// (TrainConfig::ToOptions) through GptTrainer::EstimateMemory -- the trainer
// on the meta device over a simulated grid, every buffer recorded by its
// tracker, nothing allocated -- at each distinct pipeline position (first,
// middle, last stage). The same call is //:train's up-front memory check.
//
// Time is a model (PredictStepTime), from:
//   - the FLOPs of every matmul of the block, the head and the recomputation
//     (forward 1x, backward 2x), at the hardware's achievable GEMM rate, and
//     the bytes of the elementwise kernels at its achievable memory bandwidth;
//   - collectives by the ring algorithm's bus-bandwidth formulas (all-reduce
//     2(n-1)/n S / bw, all-gather and reduce-scatter (n-1)/n S / bw) plus
//     NCCL's ring latency model, on the link class the group spans (within a
//     node or between nodes; the grid's rank order puts tp innermost, then
//     dp, then pp);
//   - tensor parallelism exposed (the layers' collectives block the compute
//     stream), data parallelism overlapped as the engine overlaps it (stage 3
//     prefetches the next unit's gather while a unit computes; reductions run
//     on their own stream behind the backward; what does not fit under the
//     compute, plus one unit's, is exposed), pipeline point-to-point on the
//     critical path of each stage;
//   - the bubble from the schedule simulator (Simulate() with per-stage
//     costs: the embedding and the head make the end stages unequal);
//   - the optimizer: the local shard's AdamW traffic at memory bandwidth.
// Every rate is the hardware description's peak times its one efficiency
// constant (hardware/README.md says how each was chosen).
#ifndef TRIREME_MODELS_PLANNER_H_
#define TRIREME_MODELS_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_trainer.h"
#include "models/train_config.h"
#include "runtime/core/memory.h"
#include "runtime/pipeline/schedule.h"

namespace trireme {

// A machine: per GPU (or, for this host, per core: one rank per core).
struct Hardware {
  std::string name;
  std::string description;
  double peak_flops = 0;                        // dense, in the training precision (FLOP/s)
  double memory_bytes = 0;                      // device memory per GPU
  double memory_bw = 0;                         // device memory bandwidth (B/s)
  double intra_bw = 0;                          // per GPU, one direction, to GPUs of its node (B/s)
  double inter_bw = 0;                          // per GPU, one direction, to other nodes (B/s)
  double base_latency = 0;                      // per collective (s)
  double intra_latency = 0, inter_latency = 0;  // per ring step within / between nodes (s)
  int gpus_per_node = 8;
  // The one efficiency constant: the fraction of every peak rate above
  // (GEMM, memory and links) that the step achieves.
  double efficiency = 1;
};

// "key = value" lines (# comments): peak_tflops, memory_gb, memory_bw_gbs,
// intra_node_gbs, inter_node_gbs, base_latency_us, intra_latency_us,
// inter_latency_us, gpus_per_node, efficiency, description. Every key is
// required except description; InvalidArgument names the origin, the line and
// the key.
absl::StatusOr<Hardware> ParseHardware(const std::string& text, const std::string& origin);
// A shipped description by name (a100-80gb, h100-80gb, h200; searched in
// tools/hardware/ under the working directory and the binary's runfiles) or
// a file path.
absl::StatusOr<Hardware> LoadHardware(const std::string& name_or_path);
// The names LoadHardware knows.
std::vector<std::string> HardwareNames();
// This host, measured now: one rank per core, the peak a single thread's
// sgemm, memory and link bandwidth a single thread's memcpy (a step of the
// threads backend's ring: 20 us), memory a core's share of the host's;
// `efficiency` as given (//bench:plan_check measures this host's).
Hardware MeasureThisMachine(double efficiency);

// One candidate configuration.
struct PlanConfig {
  int dp = 1, tp = 1, pp = 1, v = 1;
  int zero = 1;
  int micro_batch = 1;
  bool recompute = false;  // every block
  bool sp = false;         // sequence parallelism
  ScheduleKind schedule = ScheduleKind::k1F1B;
  // "dp8.tp8.pp1.v1.z1.mb1.rc0.sp1" (ParsePlanConfig reads it back; a
  // schedule other than the default for v (1f1b; interleaved when v > 1)
  // is appended: ".gpipe").
  std::string Name() const;
};
absl::StatusOr<PlanConfig> ParsePlanConfig(const std::string& name);

// What is trained: the model (//:train's model flags: preset, layers, ...,
// seq, precision), the global batch in sequences, the GPUs.
struct Workload {
  TrainConfig model;
  int64_t global_batch = 0;
  int gpus = 1;
};

// //:train's configuration for `c` (the grid, ZeRO stage, micro-batch,
// grad_accum = global_batch / (dp * micro_batch), schedule, recompute, SP)
// and the trainer options it makes (TrainConfig::ToOptions). InvalidArgument
// with the numbers when the batch does not split or the model does not cut.
absl::StatusOr<TrainConfig> TrainConfigFor(const Workload& w, const PlanConfig& c);

// Seconds of one step, on the slowest rank, by component; they sum to total.
struct StepTime {
  double compute = 0;     // matmuls and elementwise kernels, recomputation included
  double recompute = 0;   // of which recomputation
  double exposed_tp = 0;  // tensor-parallel collectives (on the compute stream)
  double exposed_dp = 0;  // data-parallel gathers and reductions not hidden
  double pp_p2p = 0;      // pipeline sends and receives on the critical path
  double bubble = 0;      // idle in the pipeline schedule
  double optimizer = 0;   // AdamW over the local shard
  double total = 0;
  double model_flops = 0;     // per step, the whole job, without recomputation
  double hardware_flops = 0;  // with recomputation
  double mfu = 0;             // model_flops / (total * gpus * peak_flops)
  double tokens_per_s = 0;
  int micro_batches = 0;  // per DP rank per step
};
absl::StatusOr<StepTime> PredictStepTime(const Workload& w, const PlanConfig& c,
                                         const Hardware& hw);

// One pipeline position's memory (dp rank 0, tp rank 0 of that stage).
struct PositionMemory {
  std::string where;  // "first stage", "middle stage", "last stage", "every rank"
  int pp_rank = 0;
  MemoryTracker::Snapshot memory;
};
struct MemoryPlan {
  std::vector<PositionMemory> positions;
  int64_t peak = 0;  // the largest total peak over the positions
};
absl::StatusOr<MemoryPlan> PlanMemory(const Workload& w, const PlanConfig& c);
// The largest GptTrainer::MemoryLowerBound over PlanMemory's positions.
absl::StatusOr<int64_t> PlanMemoryLowerBound(const Workload& w, const PlanConfig& c);

struct SearchOptions {
  int top = 5;
  // A configuration fits when its peak is at most this fraction of the
  // device memory (allocator fragmentation, the CUDA context, NCCL buffers).
  double memory_fraction = 0.9;
  int max_micro_batch = 8;
  int max_virtual_stages = 4;
  // Tensor parallelism within a node: tp divides this (0: the hardware's
  // GPUs per node), so no TP group spans two nodes.
  int max_tp = 0;
  // Memory is evaluated in order of predicted time until `top` fit and at
  // least this many were evaluated (the SVG's points), or every candidate.
  int min_memory_evaluated = 24;
  // false: no lower-bound pruning, every configuration estimated in full
  // (slow; to check the pruning).
  bool prune = true;
};

struct Candidate {
  PlanConfig config;
  StepTime time;
  // Skipped without a full estimate: its lower bound (the master copy,
  // optimizer state and predicted activation peak of its busiest position,
  // GptTrainer::MemoryLowerBound) already exceeds the memory.
  bool pruned = false;
  int64_t lower_bound = 0;
  bool memory_known = false;
  MemoryPlan memory;
  bool fits = false;
};

struct SearchResult {
  int enumerated = 0;                // valid configurations
  int pruned = 0;                    // rejected by their memory lower bound
  std::vector<Candidate> evaluated;  // by predicted step time; memory_known on a prefix
  std::vector<Candidate> best;       // the top fitting ones
  double seconds = 0;
};
// Every valid configuration (the model cuts, the batch splits, SP divides),
// its predicted time, and, fastest first until `top` fit, its memory: a
// configuration whose lower bound exceeds the memory is pruned, the others
// estimated in full (PlanMemory).
absl::StatusOr<SearchResult> SearchPlans(const Workload& w, const Hardware& hw,
                                         const SearchOptions& o);
std::vector<PlanConfig> EnumeratePlans(const Workload& w, const SearchOptions& o);

// The makespan of `s` with per-stage costs: simulated in full for up to
// 3 pp micro-batches; beyond, at m1 and m1 + pp (m1 = 2 pp, a multiple of
// pp) and extended linearly in the steady state (PlannerTest holds it equal
// to the full simulation).
absl::StatusOr<double> PipelineMakespan(ScheduleKind kind, int pp, int m, int v,
                                        const std::vector<double>& stage_forward,
                                        const std::vector<double>& stage_backward);

// The JSON and SVG of a search.
std::string SearchJson(const Workload& w, const Hardware& hw, const SearchResult& r);
std::string SearchSvg(const Workload& w, const Hardware& hw, const SearchResult& r,
                      double memory_fraction);

}  // namespace trireme

#endif  // TRIREME_MODELS_PLANNER_H_
