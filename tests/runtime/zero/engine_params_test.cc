// Per-parameter policies: frozen parameters, tied parameters, TP-replicated
// parameters in the grad norm, and keeping gathered parameters until backward.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/grid/grid.h"
#include "runtime/zero/engine.h"
#include "tests/runtime/zero/mlp.h"
#include "tests/runtime/zero/parity.h"

namespace trireme {
namespace {

const char* kAllParams[] = {"w1", "b1", "w2", "b2", "w3", "b3", "gain"};

int64_t SumPadded(const ZeroEngine& e) {
  int64_t s = 0;
  for (int u = 0; u < e.num_units(); ++u) s += e.unit_padded_numel(u);
  return s;
}

std::vector<UnitSpec> FrozenUnits() {
  std::vector<UnitSpec> u = testing::MlpUnits();
  u[0].params[1].requires_grad = false;  // b1
  u[1].params[0].requires_grad = false;  // w2: a whole matrix frozen
  return u;
}

TEST(FrozenParams, NoGradientNoStateNoUpdateAndParityWithTheRest) {
  for (int stage = 0; stage <= 3; ++stage) {
    EngineOptions o;
    o.stage = stage;
    o.optimizer.weight_decay = 0.01f;
    o.lr.lr = 1e-2f;
    testing::Reference ref(o, 3, FrozenUnits());
    std::vector<std::vector<std::vector<float>>> want;  // [step][param]
    for (int s = 1; s <= 6; ++s) {
      ref.Step(s, 2);
      want.emplace_back();
      for (const char* n : kAllParams) want.back().push_back(ref.param(n));
    }
    absl::Status st = RunOnRanks(3, [&](Communicator& c) -> absl::Status {
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, FrozenUnits(), o, &mem));
      RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
      ASSIGN_OR_RETURN(ParamInfo b1, e->param_info("b1"));
      if (b1.requires_grad) return absl::InternalError("b1 should be frozen");
      for (int s = 1; s <= 6; ++s) {
        RETURN_IF_ERROR(testing::RunMicroBatches(*e, c.rank(), 3, s, 2).status());
        RETURN_IF_ERROR(e->Step().status());
        for (size_t i = 0; i < std::size(kAllParams); ++i) {
          ASSIGN_OR_RETURN(std::vector<float> v, e->GatherFull(kAllParams[i]));
          RETURN_IF_ERROR(
              testing::Compare(absl::StrCat("stage ", stage, " step ", s, " ", kAllParams[i]),
                               v.data(), want[s - 1][i].data(), v.size(), 1e-6));
        }
      }
      // Frozen values never moved.
      std::vector<float> init(testing::kH1);
      RETURN_IF_ERROR(testing::MlpInit(b1, init.data()));
      ASSIGN_OR_RETURN(std::vector<float> now, e->GatherFull("b1"));
      if (now != init) return absl::InternalError("a frozen parameter changed");
      // Memory: compute copies for everything, the rest for trainable only.
      const int64_t n = 3, frozen = testing::kH1 + testing::kH1 * testing::kH2;
      const int64_t trainable_padded = SumPadded(*e);
      const int64_t frozen_padded = (frozen + n - 1) / n * n;
      const int64_t per = stage == 0 ? 1 : n;  // master/optim divisor
      const int64_t want_param = (stage <= 2 ? 1 : 0) * 4 * (trainable_padded + frozen_padded) +
                                 (stage == 3 ? 4 * (trainable_padded + frozen_padded) / n : 0);
      if (mem.current(MemCategory::kParam) != want_param ||
          mem.current(MemCategory::kMaster) != 4 * trainable_padded / per ||
          mem.current(MemCategory::kOptim) != 8 * trainable_padded / per) {
        return absl::InternalError(
            absl::StrCat("stage ", stage, ": param ", mem.current(MemCategory::kParam), " (want ",
                         want_param, "), master ", mem.current(MemCategory::kMaster), ", optim ",
                         mem.current(MemCategory::kOptim)));
      }
      return absl::OkStatus();
    });
    EXPECT_TRUE(st.ok()) << st;
  }
}

// y = x . a (unit "embed") + z . b (unit "head", b tied to a);
// a single-parameter model y = (x + z) . a is the reference.
constexpr int kTied = 5;

absl::Status TiedStep(ZeroEngine& e, int step, int rank, double* loss) {
  float x[kTied], z[kTied];
  for (int k = 0; k < kTied; ++k) {
    x[k] = std::sin(0.3f * (step * 7 + rank * 3 + k));
    z[k] = std::cos(0.2f * (step * 5 + rank * 11 + k));
  }
  const float t = 0.5f;
  float y = 0;
  RETURN_IF_ERROR(e.PreForward(0));
  ASSIGN_OR_RETURN(MutView a, e.Param(0, 0));
  for (int k = 0; k < kTied; ++k) y += x[k] * static_cast<float*>(a.data)[k];
  RETURN_IF_ERROR(e.PostForward(0));
  RETURN_IF_ERROR(e.PreForward(1));
  ASSIGN_OR_RETURN(MutView b, e.Param(1, 0));
  for (int k = 0; k < kTied; ++k) y += z[k] * static_cast<float*>(b.data)[k];
  RETURN_IF_ERROR(e.PostForward(1));
  *loss = 0.5 * (y - t) * (y - t);
  const float dy = y - t;
  RETURN_IF_ERROR(e.PreBackward(1));
  ASSIGN_OR_RETURN(MutView gb, e.Grad(1, 0));
  for (int k = 0; k < kTied; ++k) static_cast<float*>(gb.data)[k] += z[k] * dy;
  RETURN_IF_ERROR(e.PostBackward(1));
  RETURN_IF_ERROR(e.PreBackward(0));
  ASSIGN_OR_RETURN(MutView ga, e.Grad(0, 0));
  for (int k = 0; k < kTied; ++k) static_cast<float*>(ga.data)[k] += x[k] * dy;
  return e.PostBackward(0);
}

TEST(TiedParams, OneStorageGradientsSummedOnce) {
  // The reference: 2 ranks' gradients of y = (x + z) . a, averaged; SGD.
  std::vector<float> a(kTied);
  for (int k = 0; k < kTied; ++k) a[k] = 0.1f * (k + 1);
  const std::vector<float> a0 = a;
  const float lr = 0.1f;
  for (int step = 1; step <= 4; ++step) {
    std::vector<float> g(kTied, 0.0f);
    for (int r = 0; r < 2; ++r) {
      float x[kTied], z[kTied], y = 0;
      for (int k = 0; k < kTied; ++k) {
        x[k] = std::sin(0.3f * (step * 7 + r * 3 + k));
        z[k] = std::cos(0.2f * (step * 5 + r * 11 + k));
        y += (x[k] + z[k]) * a[k];
      }
      for (int k = 0; k < kTied; ++k) g[k] += (x[k] + z[k]) * (y - 0.5f) / 2;
    }
    for (int k = 0; k < kTied; ++k) a[k] -= lr * g[k];
  }
  for (int stage = 0; stage <= 3; ++stage) {
    absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
      EngineOptions o;
      o.stage = stage;
      o.optimizer.kind = OptimizerKind::kSgd;
      o.optimizer.momentum = 0.0f;
      o.lr.lr = lr;
      std::vector<UnitSpec> units = {{"embed", {{"a", {kTied}}}},
                                     {"head", {{"b", {kTied}, true, true, "a"}}}};
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
      RETURN_IF_ERROR(e->Initialize([&](const ParamInfo& p, float* v) {
        std::copy(a0.begin(), a0.end(), v);
        return absl::OkStatus();
      }));
      for (int step = 1; step <= 4; ++step) {
        double loss;
        RETURN_IF_ERROR(TiedStep(*e, step, c.rank(), &loss));
        RETURN_IF_ERROR(e->Step().status());
      }
      ASSIGN_OR_RETURN(std::vector<float> got, e->GatherFull("a"));
      ASSIGN_OR_RETURN(std::vector<float> via_b, e->GatherFull("b"));
      if (got != via_b) return absl::InternalError("tied parameters diverged");
      RETURN_IF_ERROR(testing::Compare(absl::StrCat("stage ", stage, " tied a"), got.data(),
                                       a.data(), kTied, 1e-6));
      // One storage: master holds 5 elements (padded to 6), not 10.
      const int64_t want_master = (stage == 0 ? 6 : 3) * 4;
      if (mem.current(MemCategory::kMaster) != want_master) {
        return absl::InternalError(absl::StrCat("master ", mem.current(MemCategory::kMaster),
                                                " bytes, want ", want_master));
      }
      return absl::OkStatus();
    });
    EXPECT_TRUE(st.ok()) << st;
  }
}

TEST(TiedParams, BadTiesAreRejected) {
  absl::Status st = RunOnRanks(1, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem;
    std::vector<UnitSpec> units = {{"u", {{"a", {5}}, {"b", {6}, true, true, "a"}}}};
    auto e = ZeroEngine::Create(c, units, EngineOptions(), &mem);
    if (!absl::StrContains(e.status().message(), "of a different shape")) return e.status();
    units = {{"u", {{"a", {5}}, {"b", {5}, true, true, "nope"}}}};
    e = ZeroEngine::Create(c, units, EngineOptions(), &mem);
    if (!absl::StrContains(e.status().message(), "unknown parameter 'nope'")) return e.status();
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

// dp=2 x tp=2: each TP rank holds the same (replicated) MLP and sees the same
// data; the norm over DP x TP must count replicated parameters once.
TEST(GradNorm, ReplicatedOverTpCountedOnce) {
  EngineOptions base;
  base.stage = 3;
  testing::Reference ref(base, 2);
  ref.Step(1, 2);
  for (bool replicated : {true, false}) {
    std::vector<double> norms(4);
    absl::Status st = RunOnRanks(4, [&](Communicator& world) -> absl::Status {
      ASSIGN_OR_RETURN(auto grid, ParallelGrid::Create({2, 2, 1}, world));
      EngineOptions o = base;
      o.tp_control = &grid->tp_group();
      auto units = testing::MlpUnits();
      for (auto& u : units) {
        for (auto& p : u.params) p.replicated_over_tp = replicated;
      }
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(grid->dp_group(), units, o, &mem));
      RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
      RETURN_IF_ERROR(testing::RunMicroBatches(*e, grid->coord().dp, 2, 1, 2).status());
      ASSIGN_OR_RETURN(StepStats s, e->Step());
      norms[world.rank()] = s.grad_norm;
      return absl::OkStatus();
    });
    ASSERT_TRUE(st.ok()) << st;
    // Replicated: counted once = the reference norm. Not replicated (each TP
    // rank's copy counted): sqrt(2) x.
    const double want = ref.grad_norm() * (replicated ? 1.0 : std::sqrt(2.0));
    for (double n : norms) EXPECT_NEAR(n, want, 1e-6 * want) << "replicated " << replicated;
  }
}

TEST(Stage3, KeepParamsUntilBackwardGathersOncePerMicroBatch) {
  EngineOptions o;
  o.stage = 3;
  o.keep_params_until_backward = true;
  const testing::Expected want = testing::RunReference(o, 4);
  absl::Status st = RunOnRanks(4, [&](Communicator& c) -> absl::Status {
    RETURN_IF_ERROR(testing::TrainAndCompare(c, o, want));
    // Communication: AG in forward only + RS = 2 Psi (N-1)/N per step.
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
    RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
    const CommStats before = c.stats();
    RETURN_IF_ERROR(testing::RunHooksOnly(*e));
    RETURN_IF_ERROR(e->Step().status());
    const CommStats after = c.stats();
    const int64_t ag = after[CommOp::kAllGather].bytes_sent - before[CommOp::kAllGather].bytes_sent;
    const int64_t rs =
        after[CommOp::kReduceScatter].bytes_sent - before[CommOp::kReduceScatter].bytes_sent;
    const int64_t psi = SumPadded(*e);
    if (ag / 4 != psi * 3 / 4 || rs / 4 != psi * 3 / 4) {
      return absl::InternalError(absl::StrCat("ag ", ag, " rs ", rs, " bytes, psi ", psi));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// Mixed precision end to end: 16-bit compute copies (and gradients), fp32
// master; training follows the f32 run to 16-bit accuracy. f16 uses dynamic
// loss scaling: a scale far too large overflows at first, those steps are
// skipped on every rank and the scale backs off until steps go through.
TEST(MixedPrecision, SixteenBitComputeTracksF32) {
  struct Case {
    DType compute, grad;
    bool scaling;
  };
  for (Case k : {Case{DType::kBF16, DType::kF32, false}, Case{DType::kBF16, DType::kBF16, false},
                 Case{DType::kF16, DType::kF16, true}}) {
    std::vector<double> f32_loss, mixed_loss;
    int skipped = 0;
    for (bool mixed : {false, true}) {
      absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
        EngineOptions o;
        o.stage = 3;
        o.lr.lr = 1e-2f;
        if (mixed) {
          o.compute_dtype = k.compute;
          o.grad_dtype = k.grad;
          o.loss_scaling = k.scaling;
          // 2^24: scaled f16 gradients overflow until the scale backs off.
          o.loss_scaler.initial_scale = 16777216.0f;
        }
        MemoryTracker mem;
        ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
        RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
        for (int s = 1; s <= 20; ++s) {
          ASSIGN_OR_RETURN(double l, testing::RunMicroBatches(*e, c.rank(), 2, s, 4));
          ASSIGN_OR_RETURN(StepStats st, e->Step());
          if (c.rank() == 0) {
            (mixed ? mixed_loss : f32_loss).push_back(l);
            if (mixed) skipped += st.skipped;
          }
        }
        return absl::OkStatus();
      });
      ASSERT_TRUE(st.ok()) << st;
    }
    const std::string what =
        absl::StrCat(DTypeName(k.compute), " compute, ", DTypeName(k.grad), " grads");
    // Single-step losses are noisy (4 samples per rank): compare means of the
    // first and last five steps.
    auto mean = [](const std::vector<double>& v, size_t from) {
      double m = 0;
      for (size_t i = from; i < from + 5; ++i) m += v[i] / 5;
      return m;
    };
    const double f32_last = mean(f32_loss, 15), mixed_last = mean(mixed_loss, 15);
    EXPECT_LT(mixed_last, 0.7 * mean(mixed_loss, 0)) << what;  // it learns
    if (k.scaling) {
      // 2^24 backs off by halves to 2^17 or so: several skipped steps, on
      // every rank alike (the flag is reduced), and then training proceeds.
      EXPECT_GT(skipped, 0) << what << ": the loss scale never overflowed; nothing was tested";
      EXPECT_LE(skipped, 10) << what;
    } else {
      // bf16 rounding of weights and activations: the same loss level.
      EXPECT_NEAR(mixed_last, f32_last, 0.1 * f32_last) << what;
    }
  }
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

TEST(UnitSizing, GroupsInOrderUnderTheLimit) {
  std::vector<ParamSpec> ps = {{"a", {10}}, {"b", {5, 2}}, {"c", {3}}, {"d", {40}}, {"e", {1}}};
  auto units = GroupIntoUnits(ps, 20, "block");
  ASSERT_TRUE(units.ok()) << units.status();
  // {a, b} = 20 elements; {c}; {d} alone (larger than the limit); {e}.
  ASSERT_EQ(units->size(), 4u);
  EXPECT_EQ((*units)[0].name, "block0");
  EXPECT_EQ((*units)[0].params.size(), 2u);
  EXPECT_EQ((*units)[1].params[0].name, "c");
  EXPECT_EQ((*units)[2].params.size(), 1u);
  EXPECT_EQ((*units)[2].params[0].name, "d");
  EXPECT_EQ((*units)[3].params[0].name, "e");
  EXPECT_FALSE(GroupIntoUnits(ps, 0).ok());
}

TEST(Initialize, FromGivenValuesAndMissingOnes) {
  absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem;
    EngineOptions o;
    o.stage = 3;
    std::vector<UnitSpec> units = {{"u", {{"a", {3}}, {"b", {2}}}}};
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
    absl::Status bad = e->InitializeFrom({{"a", {1, 2, 3}}});
    if (!absl::StrContains(bad.message(), "no value given for 'b'")) return bad;
    bad = e->InitializeFrom({{"a", {1, 2}}, {"b", {4, 5}}});
    if (!absl::StrContains(bad.message(), "'a' has 3 elements but 2 values")) return bad;
    RETURN_IF_ERROR(e->InitializeFrom({{"a", {1, 2, 3}}, {"b", {4, 5}}}));
    ASSIGN_OR_RETURN(std::vector<float> b, e->GatherFull("b"));
    return b == std::vector<float>{4, 5} ? absl::OkStatus() : absl::InternalError("wrong b");
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// Gradients accumulated in f32 but communicated in bf16: half the bytes, and
// training within bf16 rounding of the f32 run.
TEST(ReduceDtype, Bf16ReductionOfF32GradientsHalvesTrafficAndTracksF32) {
  for (int stage = 0; stage <= 3; ++stage) {
    std::vector<std::vector<float>> params(2);
    std::vector<int64_t> reduce_bytes(2);
    for (int variant = 0; variant < 2; ++variant) {
      absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
        EngineOptions o;
        o.stage = stage;
        o.lr.lr = 1e-2f;
        if (variant == 1) o.grad_reduce_dtype = DType::kBF16;
        MemoryTracker mem;
        ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
        RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
        const CommStats before = c.stats();
        for (int s = 1; s <= 5; ++s) {
          RETURN_IF_ERROR(testing::RunMicroBatches(*e, c.rank(), 2, s, 4).status());
          RETURN_IF_ERROR(e->Step().status());
        }
        const CommStats after = c.stats();
        ASSIGN_OR_RETURN(std::vector<float> w, e->GatherFull("gain"));
        if (c.rank() == 0) {
          params[variant] = w;
          const CommOp op = stage == 0 ? CommOp::kAllReduce : CommOp::kReduceScatter;
          reduce_bytes[variant] = after[op].bytes_sent - before[op].bytes_sent;
        }
        if (mem.current(MemCategory::kComm) != 0) return absl::InternalError("comm leaked");
        return absl::OkStatus();
      });
      ASSERT_TRUE(st.ok()) << "stage " << stage << ": " << st;
    }
    // Stage 0's all-reduce count also includes the norm reduction (2 f32 per
    // step: 8 bytes on rank 0 of 2); compare the gradient part.
    const int64_t norm = stage == 0 ? 5 * 8 : 0;
    EXPECT_EQ(reduce_bytes[1] - norm, (reduce_bytes[0] - norm) / 2) << "stage " << stage;
    EXPECT_TRUE(
        testing::Compare("gain", params[1].data(), params[0].data(), params[0].size(), 1e-2).ok())
        << "stage " << stage;
    EXPECT_NE(params[0], params[1]) << "bf16 reduction changed nothing: not exercised";
  }
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// A unit whose backward runs twice in a row (one unit per pipeline chunk,
// two micro-batches): the first reduction must finish before the second
// micro-batch's gradient is written. Two micro-batches of the same data
// must give the same step as one.
TEST(ZeroEngine, SameUnitBackToBackAcrossMicroBatches) {
  absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    std::vector<float> result[2];
    for (int accum : {1, 2}) {
      EngineOptions o;
      o.stage = 3;
      o.grad_accum = accum;
      o.optimizer.kind = OptimizerKind::kSgd;
      o.lr.lr = 0.1f;
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, {{"only", {{"w", {5}}}}}, o, &mem));
      RETURN_IF_ERROR(e->InitializeFrom({{"w", {1, 2, 3, 4, 5}}}));
      for (int k = 0; k < accum; ++k) {
        RETURN_IF_ERROR(e->PreForward(0));
        RETURN_IF_ERROR(e->PostForward(0));
        RETURN_IF_ERROR(e->PreBackward(0));
        ASSIGN_OR_RETURN(MutView g, e->Grad(0, 0));
        for (int i = 0; i < 5; ++i) static_cast<float*>(g.data)[i] += 1.0f + i + c.rank();
        RETURN_IF_ERROR(e->PostBackward(0));
      }
      RETURN_IF_ERROR(e->Step().status());
      ASSIGN_OR_RETURN(result[accum - 1], e->GatherFull("w"));
    }
    if (result[0] != result[1]) return absl::InternalError("accumulation changed the step");
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// Stage 3 with gathered units kept for the whole step: with 3 micro-batches,
// one all-gather per unit per step (instead of 2 per micro-batch), the same
// results, and full compute parameters held during the step (released at Step).
TEST(Stage3, KeepParamsForStepGathersOncePerStep) {
  absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    std::vector<float> params[2];
    int64_t ag_bytes[2], comm_peak[2];
    for (int keep = 0; keep < 2; ++keep) {
      EngineOptions o;
      o.stage = 3;
      o.grad_accum = 3;
      o.keep_params_for_step = keep == 1;
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
      RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
      const CommStats before = c.stats();
      RETURN_IF_ERROR(testing::RunMicroBatches(*e, c.rank(), 2, 1, 2).status());
      RETURN_IF_ERROR(e->Step().status());
      ag_bytes[keep] =
          c.stats()[CommOp::kAllGather].bytes_sent - before[CommOp::kAllGather].bytes_sent;
      comm_peak[keep] = mem.peak(MemCategory::kComm);
      if (mem.current(MemCategory::kComm) != 0) return absl::InternalError("kept past Step");
      ASSIGN_OR_RETURN(params[keep], e->GatherFull("gain"));
    }
    if (params[0] != params[1]) return absl::InternalError("keeping changed the result");
    if (ag_bytes[0] != 6 * ag_bytes[1]) {  // 3 micro-batches x (forward + backward)
      return absl::InternalError(
          absl::StrCat("all-gather bytes ", ag_bytes[0], " vs ", ag_bytes[1]));
    }
    if (comm_peak[1] <= comm_peak[0]) return absl::InternalError("no extra memory held?");
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme
