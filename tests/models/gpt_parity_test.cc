// 3D parity: the GPT trained on (dp, tp, pp) grids with ZeRO stages 0, 1, 3
// and GPipe / 1F1B matches the (1, 1, 1) run: loss every step within 1e-5
// relative over 10 steps, and the final parameters (replicated ones; and the
// embedding, and the last stage's copy of it, where tp = 1).
//
// Compiled with TRIREME_TEST_CUDA as the GPU test gpt_parity_cuda_test: the
// same matrix with every rank a thread on cuda:0 (one GPU, up to 8 ranks),
// plus the GPU runs against the CPU reference.
#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "models/gpt_trainer.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/models/tiny_gpt.h"
#include "tests/testing/status_macros.h"

#ifdef TRIREME_TEST_CUDA
#include "tests/gpu/gpu_test_util.h"
#endif

namespace trireme {
namespace {

constexpr int kSteps = 10;
constexpr int kMicroBatches = 2;  // per DP rank

// The tiny GPT, or the Llama architecture with 1 key/value head (shared by
// the TP ranks; with a sliding window of 5 of the 8 positions) or 2 (split).
GptConfig Model(int64_t vocab, const std::string& arch = "gpt2") {
  if (arch == "gpt2") return testing::TinyGpt(/*layers=*/2, vocab);
  return arch == "llama_kv1" ? testing::TinyLlama(1, /*window=*/5, 2, vocab)
                             : testing::TinyLlama(2, 0, 2, vocab);
}

struct RunResult {
  std::vector<double> losses;
  std::vector<float> wte, head, ln2_g, lnf_g;  // final values
  int64_t activation_peak = 0;                 // rank 0
};

absl::StatusOr<RunResult> Train(int dp, int tp, int pp, int stage, ScheduleKind schedule,
                                int64_t vocab, int steps = kSteps, bool recompute = false,
                                int virtual_stages = 1, int layers = 2, float lr = 1e-2f,
                                bool keep_for_step = false, bool sequence_parallel = false,
                                DType dtype = DType::kF32, Device device = testing::TestDevice(),
                                const std::string& arch = "gpt2") {
  RunResult run;
  std::mutex mu;
  const int world = dp * tp * pp;
  absl::Status s = RunOnRanks(
      world,
      [&](Communicator& c) -> absl::Status {
        GptTrainOptions o;
        o.model = Model(vocab, arch);
        o.model.layers = layers;
        o.virtual_stages = virtual_stages;
        if (recompute) o.model.recompute = {true, true};
        o.grid = {dp, tp, pp};
        o.engine.stage = stage;
        o.engine.lr.lr = lr;
        o.engine.keep_params_for_step = keep_for_step;
        o.model.sequence_parallel = sequence_parallel;
        o.engine.compute_dtype = dtype;
        o.engine.grad_dtype = dtype;
        o.engine.device = device;
        o.engine.optimizer.weight_decay = 0.01f;
        o.schedule = schedule;
        // The (1, 1, 1) reference takes all dp x micro_batches micro-batches.
        o.micro_batches = kMicroBatches * 2 / dp;
        MemoryTracker mem;
        ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
        std::vector<double> losses;
        for (int step = 1; step <= steps; ++step) {
          ASSIGN_OR_RETURN(GptStepResult r, t->Step(step));
          losses.push_back(r.loss);
        }
        const GridCoord me = t->grid().coord();
        RunResult mine;
        if (me.pp == 0) {
          ASSIGN_OR_RETURN(mine.wte, t->GatherParam("wte"));
        }
        if (me.pp == pp - 1) {
          ASSIGN_OR_RETURN(mine.ln2_g, t->GatherParam(absl::StrCat("h", layers - 1, ".ln2_g")));
          ASSIGN_OR_RETURN(mine.lnf_g, t->GatherParam("lnf_g"));
          if (pp > 1 || !o.model.tied_head) {
            ASSIGN_OR_RETURN(mine.head, t->GatherParam(o.model.tied_head ? "head" : "lm_head"));
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        if (c.rank() == 0) {
          run.losses = losses;
          if (pp == 1) run.head = mine.head;
          run.wte = mine.wte;
          run.activation_peak = mem.peak(MemCategory::kActivation);
          if (mem.current(MemCategory::kActivation) != 0) {
            return absl::InternalError("activations outlived the step");
          }
        }
        if (me.pp == pp - 1 && me.dp == 0 && me.tp == 0) {
          run.head = mine.head;
          run.ln2_g = mine.ln2_g;
          run.lnf_g = mine.lnf_g;
        }
        return absl::OkStatus();
      },
      CommOptionsFromEnv().value());  // TRIREME_DESYNC_CHECK=1 runs the matrix in debug mode
  if (!s.ok()) return s;
  return run;
}

double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    r += double(b[i]) * b[i];
  }
  return std::sqrt(e / r);
}

TEST(Gpt, LearnsThePattern) {
  // 60 steps of the (1, 1, 1) run: the loss falls well below log(vocab).
  auto run = Train(1, 1, 1, 0, ScheduleKind::k1F1B, 256, 60);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_NEAR(run->losses.front(), std::log(256.0), 0.05);
  double last = 0;
  for (int i = 50; i < 60; ++i) last += run->losses[i] / 10;
  EXPECT_LT(last, 0.85 * std::log(256.0));
}

TEST(Gpt, RecomputeGivesTheSameStepsWithLessActivationMemory) {
  for (ScheduleKind k : {ScheduleKind::kGPipe, ScheduleKind::k1F1B}) {
    auto keep = Train(1, 2, 2, 3, k, 97, 4, /*recompute=*/false);
    auto again = Train(1, 2, 2, 3, k, 97, 4, /*recompute=*/true);
    ASSERT_TRUE(keep.ok() && again.ok()) << keep.status() << again.status();
    EXPECT_EQ(keep->losses, again->losses);  // bit for bit: the same arithmetic
    EXPECT_GT(keep->activation_peak, 0);
    EXPECT_LT(again->activation_peak, keep->activation_peak) << ScheduleName(k);
  }
}

TEST(Gpt, InterleavedVirtualStagesMatchSingleRank) {
  // 4 blocks; pp x virtual stages = 4 chunks (with pp = 1 the chunks pass
  // activations to themselves). At 4 blocks, lr 1e-2 makes AdamW amplify the
  // last-bit differences of TP's summation order past 1e-5 by step 9 (with
  // v = 1 too); 3e-3 keeps the comparison about the schedule.
  const float lr = 3e-3f;
  auto ref = Train(1, 1, 1, 0, ScheduleKind::k1F1B, 97, kSteps, false, 1, 4, lr);
  ASSERT_TRUE(ref.ok()) << ref.status();
  struct Case {
    int dp, tp, pp, v, stage;
  };
  for (Case k :
       {Case{1, 1, 1, 2, 0}, Case{1, 1, 2, 2, 0}, Case{2, 1, 2, 2, 3}, Case{1, 2, 2, 2, 1}}) {
    auto got = Train(k.dp, k.tp, k.pp, k.stage, ScheduleKind::kInterleaved1F1B, 97, kSteps, false,
                     k.v, 4, lr);
    ASSERT_TRUE(got.ok()) << got.status();
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(got->losses[s], ref->losses[s], 1e-5 * ref->losses[s])
          << "dp " << k.dp << " tp " << k.tp << " pp " << k.pp << " v " << k.v << " step " << s;
    }
    EXPECT_LT(RelDiff(got->lnf_g, ref->lnf_g), 1e-4);
  }
}

TEST(Gpt, SequenceParallelMatchesSingleRank) {
  const RunResult ref = *Train(1, 1, 1, 0, ScheduleKind::k1F1B, 97);
  struct Case {
    int dp, tp, pp, stage;
  };
  for (Case k : {Case{1, 2, 1, 0}, Case{1, 2, 2, 3}, Case{2, 2, 2, 1}, Case{2, 2, 1, 3}}) {
    auto got = Train(k.dp, k.tp, k.pp, k.stage, ScheduleKind::k1F1B, 97, kSteps, false, 1, 2, 1e-2f,
                     false, /*sequence_parallel=*/true);
    ASSERT_TRUE(got.ok()) << got.status();
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(got->losses[s], ref.losses[s], 1e-5 * ref.losses[s])
          << "dp " << k.dp << " tp " << k.tp << " pp " << k.pp << " step " << s + 1;
    }
    EXPECT_LT(RelDiff(got->ln2_g, ref.ln2_g), 1e-4);
    EXPECT_LT(RelDiff(got->lnf_g, ref.lnf_g), 1e-4);
  }
}

TEST(Gpt, Bf16ComputeAndGradientsTrackF32) {
  // bf16 compute copies and gradients (fp32 master) on the full 3D grid: the
  // loss follows the f32 run to bf16 accuracy.
  const RunResult ref = *Train(1, 1, 1, 0, ScheduleKind::k1F1B, 97);
  auto got = Train(2, 2, 2, 3, ScheduleKind::k1F1B, 97, kSteps, false, 1, 2, 1e-2f, false, false,
                   DType::kBF16);
  ASSERT_TRUE(got.ok()) << got.status();
  bool differs = false;
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(got->losses[s], ref.losses[s], 2e-2 * ref.losses[s]) << "step " << s + 1;
    differs = differs || got->losses[s] != ref.losses[s];
  }
  EXPECT_TRUE(differs) << "bf16 changed nothing: not exercised";
}

TEST(Gpt, Stage3UnderPipeliningKeepingGatheredUnitsForTheStep) {
  // The other stage-3 policy under pipelining: units gathered once per step
  // and kept (instead of gathered again for every micro-batch's backward).
  const RunResult ref = *Train(1, 1, 1, 0, ScheduleKind::k1F1B, 97);
  for (ScheduleKind k : {ScheduleKind::kGPipe, ScheduleKind::k1F1B}) {
    auto got = Train(2, 1, 2, 3, k, 97, kSteps, false, 1, 2, 1e-2f, /*keep_for_step=*/true);
    ASSERT_TRUE(got.ok()) << got.status();
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(got->losses[s], ref.losses[s], 1e-5 * ref.losses[s]) << "step " << s + 1;
    }
  }
}

// The configurations two devices are compared on: the 3D grid with each
// ZeRO stage, interleaving, sequence parallelism, recomputation and bf16.
struct DeviceCase {
  int dp, tp, pp, stage;
  ScheduleKind schedule;
  int v, layers;
  bool recompute, sp;
  DType dtype;
};
const std::vector<DeviceCase> kDeviceCases = {
    {2, 2, 2, 0, ScheduleKind::k1F1B, 1, 2, false, false, DType::kF32},
    {2, 2, 2, 1, ScheduleKind::kGPipe, 1, 2, false, false, DType::kF32},
    {2, 2, 2, 3, ScheduleKind::k1F1B, 1, 2, false, false, DType::kF32},
    {2, 1, 2, 3, ScheduleKind::kInterleaved1F1B, 2, 4, false, false, DType::kF32},
    {1, 2, 2, 3, ScheduleKind::k1F1B, 1, 2, true, true, DType::kF32},
    {2, 2, 2, 3, ScheduleKind::k1F1B, 1, 2, false, false, DType::kBF16},
};

// Runs every case for 4 steps on the CPU and on `device`, and calls
// compare(case, cpu run, device run).
void CompareDevices(
    const Device& device,
    const std::function<void(const DeviceCase&, const RunResult&, const RunResult&)>& compare) {
  for (const DeviceCase& k : kDeviceCases) {
    SCOPED_TRACE(::testing::Message() << "(" << k.dp << "," << k.tp << "," << k.pp << ") zero "
                                      << k.stage << " " << ScheduleName(k.schedule) << " v " << k.v
                                      << (k.recompute ? " recompute" : "") << (k.sp ? " SP" : "")
                                      << " " << DTypeName(k.dtype) << " on " << device.ToString());
    auto cpu = Train(k.dp, k.tp, k.pp, k.stage, k.schedule, 97, 4, k.recompute, k.v, k.layers,
                     1e-2f, false, k.sp, k.dtype, Device::Cpu());
    auto other = Train(k.dp, k.tp, k.pp, k.stage, k.schedule, 97, 4, k.recompute, k.v, k.layers,
                       1e-2f, false, k.sp, k.dtype, device);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    ASSERT_TRUE(other.ok()) << other.status();
    compare(k, *cpu, *other);
  }
}

#ifndef TRIREME_TEST_CUDA
// The asynchronous device runs the same orchestration with every kernel,
// copy and collective on streams (the host runs ahead, the engine's gathers
// and reductions on their own streams): its results must be the synchronous
// reference's bit for bit.
TEST(Gpt, AsyncDeviceIsBitwiseEqualToCpu) {
  CompareDevices(Device::CpuAsync(),
                 [](const DeviceCase&, const RunResult& cpu, const RunResult& async) {
                   EXPECT_EQ(cpu.losses, async.losses);
                   EXPECT_EQ(cpu.wte, async.wte);
                   EXPECT_EQ(cpu.lnf_g, async.lnf_g);
                   EXPECT_EQ(cpu.ln2_g, async.ln2_g);
                   EXPECT_EQ(cpu.head, async.head);
                   EXPECT_EQ(cpu.activation_peak, async.activation_peak);
                 });
}
#else
// The GPU against the CPU reference: the same runs with every rank a thread
// on cuda:0 and on cpu. cuBLAS and the CUDA reductions sum in other orders
// than the CPU kernels, so the comparison is to tolerance: losses within
// 1e-4 relative every step (2e-2 in bf16), final parameters within 1e-3.
// The activation peak is the same accounting on both devices: equal.
TEST(GptCuda, EveryGridOnOneGpuTracksTheCpuReference) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  CompareDevices(
      Device::Cuda(0), [](const DeviceCase& k, const RunResult& cpu, const RunResult& gpu) {
        const double tol = k.dtype == DType::kF32 ? 1e-4 : 2e-2;
        ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
        for (size_t s = 0; s < cpu.losses.size(); ++s) {
          EXPECT_NEAR(gpu.losses[s], cpu.losses[s], tol * cpu.losses[s]) << "step " << s + 1;
        }
        if (k.dtype == DType::kF32) {
          EXPECT_LT(RelDiff(gpu.lnf_g, cpu.lnf_g), 1e-3);
          EXPECT_LT(RelDiff(gpu.ln2_g, cpu.ln2_g), 1e-3);
          if (k.tp == 1) EXPECT_LT(RelDiff(gpu.wte, cpu.wte), 1e-3);
        }
        EXPECT_EQ(gpu.activation_peak, cpu.activation_peak);
      });
}
#endif

// Final values of `names` after `steps` steps on `device` at (dp, tp, pp),
// the run saved under `save_root` at its last step or, with `load`, started
// from that checkpoint (zero steps: the loaded values).
absl::StatusOr<std::vector<std::vector<float>>> RunAndSave(Device device, int dp, int tp, int pp,
                                                           int steps, const std::string& save_root,
                                                           const std::string& load,
                                                           const std::vector<std::string>& names) {
  std::vector<std::vector<float>> values(names.size());
  std::mutex mu;
  absl::Status s = RunOnRanks(dp * tp * pp, [&](Communicator& c) -> absl::Status {
    GptTrainOptions o;
    o.model = Model(97);
    o.grid = {dp, tp, pp};
    o.engine.stage = 3;
    o.engine.device = device;
    o.micro_batches = kMicroBatches * 2 / dp;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
    if (!load.empty()) RETURN_IF_ERROR(t->LoadCheckpoint(load).status());
    for (int step = 1; step <= steps; ++step) RETURN_IF_ERROR(t->Step(step).status());
    if (!save_root.empty()) {
      checkpoint::SaveOptions so;
      so.root = save_root;
      RETURN_IF_ERROR(t->SaveCheckpoint(steps, so).status());
    }
    for (size_t i = 0; i < names.size(); ++i) {
      absl::StatusOr<std::vector<float>> v = t->GatherParam(names[i]);
      if (!v.ok()) continue;  // not on this rank's stage
      std::lock_guard<std::mutex> lock(mu);
      if (values[i].empty()) values[i] = *v;
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return values;
}

// A checkpoint saved on device `a` loads on device `b`, and one saved on `b`
// loads on `a`, bit for bit (the fp32 masters travel through host memory
// unchanged), across DP and PP grids too (tp = 1: GatherParam returns a
// TP rank's shard).
void ExpectCheckpointsMoveBitForBit(const Device& a, const Device& b, const std::string& dir) {
  const std::vector<std::string> names = {"wte", "h0.ln1_g", "h1.fc_w", "lnf_g"};
  ASSERT_OK_AND_ASSIGN(auto on_a, RunAndSave(a, 2, 1, 2, 2, dir + "/a", "", names));
  ASSERT_OK_AND_ASSIGN(auto on_b, RunAndSave(b, 1, 1, 1, 0, "", dir + "/a", names));
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_FALSE(on_a[i].empty()) << names[i];
    EXPECT_EQ(on_b[i], on_a[i]) << names[i] << ": saved on " << a.ToString() << ", loaded on "
                                << b.ToString();
  }
  ASSERT_OK_AND_ASSIGN(auto b_saved, RunAndSave(b, 2, 1, 1, 2, dir + "/b", "", names));
  ASSERT_OK_AND_ASSIGN(auto a_loaded, RunAndSave(a, 1, 1, 2, 0, "", dir + "/b", names));
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_FALSE(b_saved[i].empty()) << names[i];
    EXPECT_EQ(a_loaded[i], b_saved[i])
        << names[i] << ": saved on " << b.ToString() << ", loaded on " << a.ToString();
  }
}
#ifdef TRIREME_TEST_CUDA
TEST(GptCuda, CheckpointsMoveBetweenGpuAndCpuBitForBit) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  ExpectCheckpointsMoveBitForBit(Device::Cuda(0), Device::Cpu(), ::testing::TempDir() + "/gpu_cpu");
}
#else
TEST(Gpt, CheckpointsMoveBetweenCpuAsyncAndCpuBitForBit) {
  ExpectCheckpointsMoveBitForBit(Device::CpuAsync(), Device::Cpu(),
                                 ::testing::TempDir() + "/async_cpu");
}
#endif

struct Grid {
  int dp, tp, pp;
};
// grid, stage, schedule, vocab, architecture
using Param = std::tuple<Grid, int, ScheduleKind, int64_t, std::string>;
class GptParityTest : public ::testing::TestWithParam<Param> {};

// The (1, 1, 1) run on `arch`; sequence_parallel only changes the grids.
absl::StatusOr<RunResult> TrainArch(const std::string& arch, Grid g, int stage, int64_t vocab,
                                    bool sequence_parallel = false) {
  return Train(g.dp, g.tp, g.pp, stage, ScheduleKind::k1F1B, vocab, kSteps, false, 1, 2, 1e-2f,
               false, sequence_parallel, DType::kF32, testing::TestDevice(), arch);
}

const RunResult& Reference(int64_t vocab, const std::string& arch) {
  static std::mutex mu;
  static auto* runs = new std::map<std::pair<int64_t, std::string>, RunResult>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = runs->find({vocab, arch});
  if (it == runs->end()) {
    auto r = TrainArch(arch, Grid{1, 1, 1}, 0, vocab);
    EXPECT_TRUE(r.ok()) << r.status();
    it = runs->emplace(std::make_pair(vocab, arch), r.ok() ? *r : RunResult()).first;
  }
  return it->second;
}

TEST_P(GptParityTest, MatchesSingleRank) {
  const auto [grid, stage, schedule, vocab, arch] = GetParam();
  const RunResult& ref = Reference(vocab, arch);
  ASSERT_EQ(ref.losses.size(), static_cast<size_t>(kSteps));
  // Parameters moved: the comparison below is not of untouched values.
  ASSERT_NE(ref.losses.front(), ref.losses.back());
  auto got = Train(grid.dp, grid.tp, grid.pp, stage, schedule, vocab, kSteps, false, 1, 2, 1e-2f,
                   false, false, DType::kF32, testing::TestDevice(), arch);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(got->losses[s], ref.losses[s], 1e-5 * ref.losses[s]) << "step " << s + 1;
  }
  EXPECT_LT(RelDiff(got->ln2_g, ref.ln2_g), 1e-4);
  EXPECT_LT(RelDiff(got->lnf_g, ref.lnf_g), 1e-4);
  if (grid.tp == 1) {
    EXPECT_LT(RelDiff(got->wte, ref.wte), 1e-4);
    // The last stage's head copy tracks the first stage's embedding (the
    // embedding group sums their gradients); an untied head its own.
    if (grid.pp > 1 || arch != "gpt2") {
      ASSERT_FALSE(got->head.empty());
      EXPECT_LT(RelDiff(got->head, arch == "gpt2" ? ref.wte : ref.head), 1e-4);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grids, GptParityTest,
    ::testing::Combine(::testing::Values(Grid{2, 1, 1}, Grid{1, 2, 1}, Grid{1, 1, 2}, Grid{2, 2, 1},
                                         Grid{2, 1, 2}, Grid{1, 2, 2}, Grid{2, 2, 2}),
                       ::testing::Values(0, 1, 3),
                       ::testing::Values(ScheduleKind::kGPipe, ScheduleKind::k1F1B),
                       ::testing::Values(int64_t{256}, int64_t{97}),
                       ::testing::Values(std::string("gpt2"))),
    [](const ::testing::TestParamInfo<Param>& info) {
      const Grid g = std::get<0>(info.param);
      return absl::StrCat("dp", g.dp, "_tp", g.tp, "_pp", g.pp, "_zero", std::get<1>(info.param),
                          "_", ScheduleName(std::get<2>(info.param)), "_vocab",
                          std::get<3>(info.param), "_", std::get<4>(info.param));
    });

// The Llama architecture over the same grids with 1F1B: key/value heads
// shared by the two TP ranks (kv_heads 1 < tp, with a sliding window) and
// split between them (kv_heads 2 = tp).
INSTANTIATE_TEST_SUITE_P(
    Llama, GptParityTest,
    ::testing::Combine(::testing::Values(Grid{2, 1, 1}, Grid{1, 2, 1}, Grid{1, 1, 2}, Grid{2, 2, 1},
                                         Grid{2, 1, 2}, Grid{1, 2, 2}, Grid{2, 2, 2}),
                       ::testing::Values(0, 1, 3), ::testing::Values(ScheduleKind::k1F1B),
                       ::testing::Values(int64_t{97}),
                       ::testing::Values(std::string("llama_kv1"), std::string("llama_kv2"))),
    [](const ::testing::TestParamInfo<Param>& info) {
      const Grid g = std::get<0>(info.param);
      return absl::StrCat("dp", g.dp, "_tp", g.tp, "_pp", g.pp, "_zero", std::get<1>(info.param),
                          "_", std::get<4>(info.param));
    });

TEST(Gpt, LlamaWithSequenceParallelismMatchesSingleRank) {
  for (const std::string arch : {"llama_kv1", "llama_kv2"}) {
    const RunResult& ref = Reference(97, arch);
    for (Grid g : {Grid{1, 2, 1}, Grid{2, 2, 2}}) {
      auto got = TrainArch(arch, g, 3, 97, /*sequence_parallel=*/true);
      ASSERT_TRUE(got.ok()) << got.status();
      for (int s = 0; s < kSteps; ++s) {
        EXPECT_NEAR(got->losses[s], ref.losses[s], 1e-5 * ref.losses[s])
            << arch << " dp " << g.dp << " tp " << g.tp << " pp " << g.pp << " step " << s + 1;
      }
      EXPECT_LT(RelDiff(got->ln2_g, ref.ln2_g), 1e-4) << arch;
      EXPECT_LT(RelDiff(got->lnf_g, ref.lnf_g), 1e-4) << arch;
    }
  }
}

}  // namespace
}  // namespace trireme
