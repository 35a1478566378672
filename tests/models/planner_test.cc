// The planner (models/planner.h):
//   - its time model against published runs: Megatron-LM (Narayanan et al.
//     2021) Table 1 and Table 2's ZeRO-3 and PTD-P rows for 175B, on the
//     shipped A100 description with its one efficiency constant; at most one
//     row may be off by more than 15%;
//   - the pipeline makespan it extends linearly equals the full simulation;
//   - its memory is the trainer's: PlanMemory's positions are exactly what
//     //:train's memory check computes (EstimateMemory of the same options)
//     for every rank, and what a real run's tracker records;
//   - the search: valid configurations only, the top fit, sorted by time.
#include "models/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

// Megatron-LM's GPT: vocabulary 51,200, sequence 2,048, mixed precision.
TrainConfig MegatronGpt(int layers, int hidden, int heads) {
  TrainConfig t;
  t.layers = layers;
  t.hidden = hidden;
  t.heads = heads;
  t.vocab = 51200;
  t.seq = 2048;
  t.precision = "bf16";
  return t;
}

// Their Eq. 3 (counts the recomputation).
double MegatronFlops(double B, double s, double l, double h, double V) {
  return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
}

struct Row {
  std::string what;
  int layers, hidden, heads;
  int t, p, n, B, b;  // b: micro-batch
  int zero;
  double published;  // TFLOP/s per GPU
  bool held = true;  // counted against the +-15% limit (the rows the planner's issue names)
};

// The interleaved schedule with the fewest chunks above one that cut the
// rank's layers evenly (the paper does not give v).
int ChunksFor(int layers, int p) {
  if (p == 1) return 1;
  for (int v = 2; v <= layers / p; ++v) {
    if ((layers / p) % v == 0) return v;
  }
  return 1;
}

TEST(PlannerTest, PublishedRunsWithinFifteenPercent) {
  // Table 1 (b not given: 1), Table 2 (ZeRO-3 without model parallelism,
  // and PTD-P with t = 8, p = 12), all with activation recomputation. The
  // 530B ZeRO-3 rows are printed too but not held: the issue names the 175B
  // ones (the compute-bound ZeRO-3 rows, b = 4, come out 17-23% fast: the
  // model overlaps the gathers as this engine's prefetch does).
  const std::vector<Row> rows = {
      {"T1 1.7B", 24, 2304, 24, 1, 1, 32, 512, 1, 0, 137},
      {"T1 3.6B", 30, 3072, 32, 2, 1, 64, 512, 1, 0, 138},
      {"T1 7.5B", 36, 4096, 32, 4, 1, 128, 512, 1, 0, 142},
      {"T1 18.4B", 40, 6144, 48, 8, 1, 256, 1024, 1, 0, 135},
      {"T1 39.1B", 48, 8192, 64, 8, 2, 512, 1536, 1, 0, 138},
      {"T1 76.1B", 60, 10240, 80, 8, 4, 1024, 1792, 1, 0, 140},
      {"T1 145.6B", 80, 12288, 96, 8, 8, 1536, 2304, 1, 0, 148},
      {"T1 310.1B", 96, 16384, 128, 8, 16, 1920, 2160, 1, 0, 155},
      {"T1 529.6B", 105, 20480, 128, 8, 35, 2520, 2520, 1, 0, 163},
      {"T1 1008B", 128, 25600, 160, 8, 64, 3072, 3072, 1, 0, 163},
      {"T2 ZeRO-3 175B n=384", 96, 12288, 96, 1, 1, 384, 1536, 4, 3, 144},
      {"T2 ZeRO-3 175B n=768", 96, 12288, 96, 2, 1, 768, 1536, 2, 3, 88},
      {"T2 ZeRO-3 175B n=1536", 96, 12288, 96, 1, 1, 1536, 1536, 1, 3, 44},
      {"T2 ZeRO-3 530B n=640", 105, 20480, 128, 1, 1, 640, 2560, 4, 3, 138, false},
      {"T2 ZeRO-3 530B n=1120", 105, 20480, 128, 2, 1, 1120, 2240, 2, 3, 98, false},
      {"T2 ZeRO-3 530B n=2240", 105, 20480, 128, 1, 1, 2240, 2240, 1, 3, 48, false},
      {"T2 PTD-P 175B n=384", 96, 12288, 96, 8, 12, 384, 1536, 1, 0, 153},
      {"T2 PTD-P 175B n=768", 96, 12288, 96, 8, 12, 768, 1536, 1, 0, 149},
      {"T2 PTD-P 175B n=1536", 96, 12288, 96, 8, 12, 1536, 1536, 1, 0, 141},
  };
  absl::StatusOr<Hardware> hw = LoadHardware("a100-80gb");
  ASSERT_TRUE(hw.ok()) << hw.status();
  int beyond = 0;
  printf("\n%-24s %4s %4s %3s %6s %3s %3s %10s %10s %7s  %s\n", "row", "t", "p", "v", "dp", "mb",
         "z", "published", "predicted", "error", "breakdown (s)");
  for (const Row& r : rows) {
    Workload w;
    w.model = MegatronGpt(r.layers, r.hidden, r.heads);
    w.global_batch = r.B;
    w.gpus = r.n;
    PlanConfig c;
    c.tp = r.t;
    c.pp = r.p;
    c.dp = r.n / (r.t * r.p);
    c.v = ChunksFor(r.layers, r.p);
    c.schedule = c.v > 1 ? ScheduleKind::kInterleaved1F1B : ScheduleKind::k1F1B;
    c.zero = r.zero;
    c.micro_batch = r.b;
    c.recompute = true;
    // Their scatter/gather optimization sends 1/t of each activation between
    // stages (each TP rank its slice, gathered over NVLink after); here that
    // is sequence parallelism's stage tensor.
    c.sp = r.t > 1;
    absl::StatusOr<StepTime> t = PredictStepTime(w, c, *hw);
    ASSERT_TRUE(t.ok()) << r.what << ": " << t.status();
    const double flops = MegatronFlops(r.B, 2048, r.layers, r.hidden, 51200);
    const double predicted = flops / (r.n * t->total) / 1e12;
    const double error = predicted / r.published - 1;
    if (r.held && std::abs(error) > 0.15) ++beyond;
    printf(
        "%-24s %4d %4d %3d %6d %3d %3d %10.0f %10.1f %+6.1f%%%s compute %.2f tp %.2f dp %.2f "
        "p2p %.2f bubble %.2f opt %.2f = %.2f\n",
        r.what.c_str(), c.tp, c.pp, c.v, c.dp, c.micro_batch, c.zero, r.published, predicted,
        100 * error, r.held ? " " : "*", t->compute, t->exposed_tp, t->exposed_dp, t->pp_p2p,
        t->bubble, t->optimizer, t->total);
    // The components sum to the total.
    EXPECT_NEAR(t->compute + t->exposed_tp + t->exposed_dp + t->pp_p2p + t->bubble + t->optimizer,
                t->total, 1e-9 * t->total)
        << r.what;
  }
  printf("held rows beyond +-15%%: %d of %d (efficiency %.2f; * not held)\n", beyond,
         static_cast<int>(
             std::count_if(rows.begin(), rows.end(), [](const Row& r) { return r.held; })),
         hw->efficiency);
  EXPECT_LE(beyond, 1);
}

TEST(PlannerTest, ExtendedMakespanEqualsTheFullSimulation) {
  struct Case {
    ScheduleKind kind;
    int pp, m, v;
  };
  for (const Case& k :
       {Case{ScheduleKind::k1F1B, 4, 64, 1}, Case{ScheduleKind::k1F1B, 3, 50, 1},
        Case{ScheduleKind::kGPipe, 4, 40, 1}, Case{ScheduleKind::kInterleaved1F1B, 4, 48, 2},
        Case{ScheduleKind::kInterleaved1F1B, 2, 30, 3},
        Case{ScheduleKind::kInterleaved1F1B, 3, 36, 4}}) {
    SCOPED_TRACE(::testing::Message()
                 << ScheduleName(k.kind) << " pp " << k.pp << " m " << k.m << " v " << k.v);
    // Unequal stages: the first and last carry the embedding and the head.
    std::vector<double> f(k.pp * k.v, 1.0), b(k.pp * k.v, 2.1);
    f.front() = 1.3;
    f.back() = 1.9;
    b.back() = 3.4;
    absl::StatusOr<double> extended = PipelineMakespan(k.kind, k.pp, k.m, k.v, f, b);
    ASSERT_TRUE(extended.ok()) << extended.status();
    absl::StatusOr<Schedule> s = BuildSchedule(k.kind, k.pp, k.m, k.v);
    ASSERT_TRUE(s.ok());
    SimulationOptions o;
    o.policy = P2PPolicyFor(k.kind);  // as the executor runs it
    o.stage_forward = f;
    o.stage_backward = b;
    absl::StatusOr<SimulationResult> full = Simulate(*s, o);
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_NEAR(*extended, full->makespan, 1e-9 * full->makespan);
  }
}

TEST(PlannerTest, SimulateRefusesPerStageCostsOfTheWrongLength) {
  absl::StatusOr<Schedule> s = BuildSchedule(ScheduleKind::k1F1B, 2, 4);
  ASSERT_TRUE(s.ok());
  SimulationOptions o;
  o.stage_forward = {1, 1, 1};
  absl::StatusOr<SimulationResult> r = Simulate(*s, o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("3 entries"), std::string::npos) << r.status();
}

// A small Llama that //:train can run here.
Workload SmallWorkload(int gpus) {
  Workload w;
  w.model.layers = 4;
  w.model.hidden = 32;
  w.model.heads = 4;
  w.model.vocab = 97;
  w.model.seq = 8;
  absl::Status s = w.model.ApplyPreset("llama", [](const std::string&) { return false; });
  EXPECT_TRUE(s.ok()) << s;
  w.model.ffn = 48;
  w.global_batch = 16;
  w.gpus = gpus;
  return w;
}

// What //:train's memory check estimates (EstimateRankMemory:
// GptTrainer::EstimateMemory of the options TrainConfig::ToOptions makes) for
// each rank of `c`.
absl::StatusOr<std::vector<int64_t>> TrainCheckPeaks(const Workload& w, const PlanConfig& c) {
  ASSIGN_OR_RETURN(const TrainConfig tc, TrainConfigFor(w, c));
  ASSIGN_OR_RETURN(const GptTrainOptions o, tc.ToOptions());
  std::vector<int64_t> peaks;
  for (int r = 0; r < w.gpus; ++r) {
    ASSIGN_OR_RETURN(const MemoryTracker::Snapshot e, GptTrainer::EstimateMemory(o, w.gpus, r));
    peaks.push_back(e.total_peak);
  }
  return peaks;
}

TEST(PlannerTest, MemoryIsWhatTrainChecksAndWhatARealRunHolds) {
  const Workload w = SmallWorkload(8);
  for (const char* name : {"dp2.tp2.pp2.v1.z3.mb2.rc0.sp1", "dp1.tp2.pp4.v1.z0.mb1.rc1.sp0",
                           "dp2.tp1.pp4.v1.z2.mb2.rc0.sp0", "dp1.tp4.pp2.v2.z0.mb2.rc1.sp1",
                           "dp2.tp2.pp2.v1.z1.mb1.rc1.sp0.gpipe"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<PlanConfig> c = ParsePlanConfig(name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->Name(), name);
    absl::StatusOr<MemoryPlan> plan = PlanMemory(w, *c);
    ASSERT_TRUE(plan.ok()) << plan.status();
    // //:train's check estimates every rank; the planner's positions are
    // those ranks' figures, and its peak their max.
    absl::StatusOr<std::vector<int64_t>> check = TrainCheckPeaks(w, *c);
    ASSERT_TRUE(check.ok()) << check.status();
    for (const PositionMemory& p : plan->positions) {
      EXPECT_EQ(p.memory.total_peak, (*check)[p.pp_rank * c->dp * c->tp]) << p.where;
    }
    EXPECT_EQ(plan->peak, *std::max_element(check->begin(), check->end()));
    absl::StatusOr<TrainConfig> tc = TrainConfigFor(w, *c);
    ASSERT_TRUE(tc.ok()) << tc.status();
    absl::StatusOr<GptTrainOptions> o = tc->ToOptions();
    ASSERT_TRUE(o.ok()) << o.status();
    // And a real run of those options holds exactly that at each position.
    std::mutex mu;
    std::vector<int64_t> real(8);
    absl::Status s = RunOnRanks(8, [&](Communicator& comm) -> absl::Status {
      MemoryTracker mem;
      {
        ASSIGN_OR_RETURN(auto t, GptTrainer::Create(comm, *o, &mem));
        for (int step = 1; step <= 2; ++step) RETURN_IF_ERROR(t->Step(step).status());
      }
      std::lock_guard<std::mutex> lock(mu);
      real[comm.rank()] = mem.snapshot().total_peak;
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    for (const PositionMemory& p : plan->positions) {
      EXPECT_EQ(p.memory.total_peak, real[p.pp_rank * c->dp * c->tp]) << p.where;
    }
  }
}

TEST(PlannerTest, SearchReturnsTheFastestThatFit) {
  Workload w = SmallWorkload(8);
  Hardware hw;
  hw.name = "test";
  hw.peak_flops = 1e10;
  hw.memory_bw = hw.intra_bw = hw.inter_bw = 1e10;
  hw.intra_latency = hw.inter_latency = 1e-6;
  hw.gpus_per_node = 4;
  hw.efficiency = 1;
  // A limit between the smallest and the largest peaks.
  SearchOptions o;
  o.top = 3;
  o.min_memory_evaluated = 1000;  // every candidate
  hw.memory_bytes = 1e12;
  absl::StatusOr<SearchResult> all = SearchPlans(w, hw, o);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_GT(all->enumerated, 20);
  int64_t lo = INT64_MAX, hi = 0;
  for (const Candidate& k : all->evaluated) {
    ASSERT_TRUE(k.memory_known);
    // Every configuration's peak is the largest of what //:train's memory
    // check estimates for its ranks.
    absl::StatusOr<std::vector<int64_t>> check = TrainCheckPeaks(w, k.config);
    ASSERT_TRUE(check.ok()) << check.status();
    const int64_t every_rank = *std::max_element(check->begin(), check->end());
    EXPECT_EQ(k.memory.peak, every_rank) << k.config.Name();
    // The bound that prunes the search is one.
    EXPECT_GT(k.lower_bound, 0) << k.config.Name();
    EXPECT_LE(k.lower_bound, k.memory.peak) << k.config.Name();
    lo = std::min(lo, k.memory.peak);
    hi = std::max(hi, k.memory.peak);
    EXPECT_EQ(k.config.dp * k.config.tp * k.config.pp, 8) << k.config.Name();
    EXPECT_EQ(w.global_batch % (k.config.dp * k.config.micro_batch), 0) << k.config.Name();
  }
  ASSERT_LT(lo, hi);
  hw.memory_bytes = (lo + hi) / 2.0 / o.memory_fraction;
  absl::StatusOr<SearchResult> r = SearchPlans(w, hw, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->best.size(), 3u);
  for (size_t i = 0; i < r->best.size(); ++i) {
    EXPECT_LE(r->best[i].memory.peak, (lo + hi) / 2.0 + 1) << r->best[i].config.Name();
    if (i > 0) {
      EXPECT_LE(r->best[i - 1].time.total, r->best[i].time.total);
    }
  }
  // Nothing faster that fits was passed over, pruned or not: the fitting set
  // comes from the first search, where every peak was estimated in full.
  const double limit = hw.memory_bytes * o.memory_fraction;
  for (const Candidate& k : all->evaluated) {
    if (k.time.total >= r->best.back().time.total || k.memory.peak > limit) continue;
    bool listed = false;
    for (const Candidate& b : r->best) listed = listed || b.config.Name() == k.config.Name();
    EXPECT_TRUE(listed) << k.config.Name() << " fits and is faster, but is not listed";
  }
  EXPECT_GT(r->pruned, 0);  // the limit is low enough for the bound to act
}

TEST(PlannerTest, BadInputIsNamed) {
  const Workload w = SmallWorkload(8);
  PlanConfig c;
  c.dp = 3;
  c.tp = 1;
  c.pp = 1;
  absl::StatusOr<StepTime> t = PredictStepTime(w, c, Hardware{});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("not the 8 GPUs"), std::string::npos) << t.status();
  EXPECT_FALSE(ParsePlanConfig("dp2.tq3").ok());
  absl::StatusOr<Hardware> hw = ParseHardware("peak_tflops = 1\nmemory_gb = x\n", "bad.txt");
  EXPECT_EQ(hw.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(hw.status().message().find("bad.txt:2: memory_gb"), std::string::npos) << hw.status();
  hw = ParseHardware("peak_tflops = 1\n", "short.txt");
  EXPECT_NE(hw.status().message().find("missing memory_gb"), std::string::npos) << hw.status();
  EXPECT_EQ(LoadHardware("tpu-v9").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace trireme
