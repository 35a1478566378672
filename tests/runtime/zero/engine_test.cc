// The engine's contracts beyond parity: memory formulas, communication volume,
// gradient accumulation, clipping, overflow skipping, order checking,
// determinism under injected delays, and input validation.
#include "runtime/zero/engine.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/runtime/comm/delaying_comm.h"
#include "tests/runtime/zero/mlp.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

int64_t SumPadded(const ZeroEngine& e) {
  int64_t s = 0;
  for (int u = 0; u < e.num_units(); ++u) s += e.unit_padded_numel(u);
  return s;
}

// ---- memory: the ZeRO formulas, measured by the tracker, exactly ----

struct MemCase {
  int stage;
  DType grad;
};

class MemoryFormulaTest : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(MemoryFormulaTest, TrackedModelStatesEqualFormula) {
  const auto [stage, grad_dtype] = GetParam();
  for (int dp : {1, 2, 3, 4, 8}) {
    absl::Status s = RunOnRanks(
        dp, [&, stage = stage, grad_dtype = grad_dtype](Communicator& c) -> absl::Status {
          EngineOptions o;
          o.stage = stage;
          o.compute_dtype = DType::kBF16;
          o.grad_dtype = grad_dtype;
          MemoryTracker mem;
          ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
          RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
          RETURN_IF_ERROR(testing::RunHooksOnly(*e));
          RETURN_IF_ERROR(e->Step().status());
          // Psi: parameters including padding (< dp per unit); Psi / N exactly.
          const int64_t psi = SumPadded(*e), psi_n = psi / dp;
          const int64_t g = DTypeSize(grad_dtype);
          // 16 Psi; 4 Psi + 12 Psi/N; 2 Psi + 14 Psi/N; 16 Psi/N (bf16 grads);
          // with 4-byte grads the grad term is 4 instead of 2.
          const int64_t want_param = stage <= 2 ? 2 * psi : 2 * psi_n;
          const int64_t want_grad = stage <= 1 ? g * psi : g * psi_n;
          const int64_t want_master = stage == 0 ? 4 * psi : 4 * psi_n;
          const int64_t want_optim = stage == 0 ? 8 * psi : 8 * psi_n;
          const int64_t got[4] = {mem.current(MemCategory::kParam), mem.current(MemCategory::kGrad),
                                  mem.current(MemCategory::kMaster),
                                  mem.current(MemCategory::kOptim)};
          const int64_t want[4] = {want_param, want_grad, want_master, want_optim};
          for (int i = 0; i < 4; ++i) {
            if (got[i] != want[i]) {
              return absl::InternalError(absl::StrCat("stage ", stage, " dp ", dp, " category ", i,
                                                      ": ", got[i], " bytes, formula ", want[i]));
            }
          }
          // Transients are gone after the step, and their peak is within the
          // documented bound.
          if (mem.current(MemCategory::kComm) != 0 || mem.current(MemCategory::kWorkspace) != 0) {
            return absl::InternalError("transient buffers outlived the step");
          }
          int64_t max_padded = 0;
          for (int u = 0; u < e->num_units(); ++u)
            max_padded = std::max(max_padded, e->unit_padded_numel(u));
          const int64_t bound =
              (o.prefetch_depth + 1) * max_padded * 2 + 2 * max_padded * g + max_padded / dp * g;
          if (mem.peak(MemCategory::kComm) > bound) {
            return absl::InternalError(absl::StrCat("comm peak ", mem.peak(MemCategory::kComm),
                                                    " above the bound ", bound));
          }
          return absl::OkStatus();
        });
    EXPECT_TRUE(s.ok()) << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, MemoryFormulaTest,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3),
                                            ::testing::Values(DType::kBF16, DType::kF32)),
                         [](const auto& info) {
                           return absl::StrCat("stage", std::get<0>(info.param), "_grad_",
                                               DTypeName(std::get<1>(info.param)));
                         });

// ---- communication: 2 Psi (N-1)/N per step (stages 0-2), 3 Psi (N-1)/N (stage 3) ----

TEST(ZeroEngine, CommunicationVolumePerStepIsExact) {
  for (int stage = 0; stage <= 3; ++stage) {
    for (int dp : {2, 3, 4}) {
      absl::Status s = RunOnRanks(dp, [&](Communicator& c) -> absl::Status {
        EngineOptions o;
        o.stage = stage;
        o.compute_dtype = DType::kBF16;
        o.grad_dtype = DType::kBF16;
        MemoryTracker mem;
        ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
        RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
        for (int step = 0; step < 2; ++step) {
          const CommStats before = c.stats();
          RETURN_IF_ERROR(testing::RunHooksOnly(*e));
          ASSIGN_OR_RETURN(StepStats st, e->Step());
          CommStats cs = c.stats();
          for (int op = 0; op < kNumCommOps; ++op) {
            cs.ops[op].bytes_sent -= before.ops[op].bytes_sent;
            cs.ops[op].bytes_received -= before.ops[op].bytes_received;
          }
          // Elements moved by this rank (ring accounting), 2-byte dtypes.
          const int64_t psi = SumPadded(*e), n = dp;
          const int64_t ag = cs[CommOp::kAllGather].bytes_sent / 2;
          const int64_t rs = cs[CommOp::kReduceScatter].bytes_sent / 2;
          // The all-reduce of [sum of squares, overflow flag] (2 f32) is the
          // only other traffic.
          const int64_t norm_bytes = 2 * (2 - RingSegment(2, dp, c.rank())) * 4;
          const int64_t ar = (cs[CommOp::kAllReduce].bytes_sent - norm_bytes) / 2;
          const int64_t model = ag + rs + ar;
          const int64_t want = (stage == 3 ? 3 : 2) * psi * (n - 1) / n;
          if (model != want || st.bytes_sent != cs.total_sent()) {
            return absl::InternalError(absl::StrCat("stage ", stage, " dp ", dp, ": moved ", model,
                                                    " elements (ag ", ag, ", rs ", rs, ", ar ", ar,
                                                    "), formula ", want, "; StepStats.bytes_sent ",
                                                    st.bytes_sent, " vs ", cs.total_sent()));
          }
        }
        return absl::OkStatus();
      });
      EXPECT_TRUE(s.ok()) << s;
    }
  }
}

// ---- runs that compare against the reference or another run ----

struct RunResult {
  std::vector<std::vector<float>> params;  // full values, by unit flat space
  std::vector<StepStats> stats;
};

absl::StatusOr<RunResult> Train(Communicator& c, EngineOptions o, int steps, int micro_batch) {
  MemoryTracker mem;
  ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
  RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
  RunResult r;
  for (int s = 1; s <= steps; ++s) {
    RETURN_IF_ERROR(testing::RunMicroBatches(*e, c.rank(), c.size(), s, micro_batch).status());
    ASSIGN_OR_RETURN(StepStats st, e->Step());
    r.stats.push_back(st);
  }
  for (const char* name : {"w1", "b1", "w2", "b2", "w3", "b3", "gain"}) {
    ASSIGN_OR_RETURN(std::vector<float> v, e->GatherFull(name));
    r.params.push_back(v);
  }
  return r;
}

double RelError(const std::vector<std::vector<float>>& a,
                const std::vector<std::vector<float>>& b) {
  double e2 = 0, r2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j) {
      e2 += (double(a[i][j]) - b[i][j]) * (double(a[i][j]) - b[i][j]);
      r2 += double(b[i][j]) * b[i][j];
    }
  }
  return std::sqrt(e2 / r2);
}

TEST(ZeroEngine, StagesAgreeBitwise) {
  // With one micro-batch every stage reduces each element in the same order
  // (rank order, then / dp), and the optimizer sees identical inputs.
  std::vector<RunResult> results(4);
  for (int stage = 0; stage <= 3; ++stage) {
    ASSERT_TRUE(RunOnRanks(3, [&](Communicator& c) -> absl::Status {
                  EngineOptions o;
                  o.stage = stage;
                  ASSIGN_OR_RETURN(RunResult r, Train(c, o, 5, 2));
                  if (c.rank() == 0) results[stage] = r;
                  return absl::OkStatus();
                }).ok());
  }
  for (int stage = 1; stage <= 3; ++stage) {
    for (size_t p = 0; p < results[0].params.size(); ++p) {
      EXPECT_EQ(0, std::memcmp(results[0].params[p].data(), results[stage].params[p].data(),
                               results[0].params[p].size() * 4))
          << "stage " << stage << " parameter " << p;
    }
  }
}

TEST(ZeroEngine, GradientAccumulationEqualsOneLargerBatch) {
  for (int stage = 0; stage <= 3; ++stage) {
    for (GradAccumPolicy policy :
         {GradAccumPolicy::kReduceEveryMicroBatch, GradAccumPolicy::kAccumulateThenReduce}) {
      RunResult accum, big;
      ASSERT_TRUE(RunOnRanks(2, [&](Communicator& c) -> absl::Status {
                    EngineOptions o;
                    o.stage = stage;
                    o.grad_accum = 4;
                    o.accum_policy = policy;
                    ASSIGN_OR_RETURN(RunResult r, Train(c, o, 5, 2));
                    if (c.rank() == 0) accum = r;
                    o.grad_accum = 1;
                    ASSIGN_OR_RETURN(r, Train(c, o, 5, 8));
                    if (c.rank() == 0) big = r;
                    return absl::OkStatus();
                  }).ok());
      // Same global batch, different summation order: agree to rounding.
      EXPECT_LT(RelError(accum.params, big.params), 1e-6) << "stage " << stage;
      // ... and training moved the parameters at all.
      std::vector<float> w1(testing::kIn * testing::kH1);
      ASSERT_TRUE(testing::MlpInit(
                      {"w1", {testing::kIn, testing::kH1}, testing::kIn * testing::kH1}, w1.data())
                      .ok());
      EXPECT_GT(RelError({accum.params[0]}, {w1}), 1e-3);
    }
  }
}

TEST(ZeroEngine, ClippingMatchesReferenceAndIsActive) {
  EngineOptions o;
  o.stage = 3;
  o.optimizer.kind = OptimizerKind::kSgd;
  o.lr.lr = 0.3f;
  o.clip_norm = 0.02f;  // below the typical gradient norm of this model
  testing::Reference ref(o, 4);
  for (int s = 1; s <= 5; ++s) ref.Step(s, 2);
  int clipped = 0;
  absl::Status st = RunOnRanks(4, [&](Communicator& c) -> absl::Status {
    ASSIGN_OR_RETURN(RunResult r, Train(c, o, 5, 2));
    if (c.rank() == 0) {
      for (const StepStats& x : r.stats) clipped += x.clip_coef < 1.0f;
      std::vector<std::vector<float>> want;
      const auto units = testing::MlpUnits();
      for (int u = 0; u < 3; ++u) {
        int64_t off = 0;
        for (const ParamSpec& p : units[u].params) {
          int64_t n = 1;
          for (int64_t d : p.shape) n *= d;
          want.emplace_back(ref.params(u).begin() + off, ref.params(u).begin() + off + n);
          off += n;
        }
      }
      const double err = RelError(r.params, want);
      if (err > 1e-6) return absl::InternalError(absl::StrCat("relative error ", err));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_GT(clipped, 0) << "clipping was never active; the test proves nothing";
}

TEST(ZeroEngine, OverflowOnOneRankSkipsTheStepEverywhere) {
  absl::Status st = RunOnRanks(3, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = 2;
    o.loss_scaling = true;
    o.loss_scaler.initial_scale = 1024.0f;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
    RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
    RETURN_IF_ERROR(testing::RunMicroBatches(*e, c.rank(), 3, 1, 2).status());
    RETURN_IF_ERROR(e->Step().status());  // one real step so m, v are non-zero
    std::vector<std::vector<float>> before;
    for (int u = 0; u < e->num_units(); ++u) {
      const int64_t n = e->master_range(u).size();
      for (const float* p : {e->master_data(u), e->optim_state(u, ParamState::kMoment1),
                             e->optim_state(u, ParamState::kMoment2)}) {
        before.emplace_back(p, p + n);
      }
    }
    // Step 2: rank 1 sees an inf in one gradient element.
    for (int u = 0; u < e->num_units(); ++u) {
      RETURN_IF_ERROR(e->PreForward(u));
      RETURN_IF_ERROR(e->PostForward(u));
    }
    for (int u = e->num_units() - 1; u >= 0; --u) {
      RETURN_IF_ERROR(e->PreBackward(u));
      if (u == 0 && c.rank() == 1) {
        ASSIGN_OR_RETURN(MutView g, e->Grad(0, 0));
        static_cast<float*>(g.data)[3] = INFINITY;
      }
      RETURN_IF_ERROR(e->PostBackward(u));
    }
    ASSIGN_OR_RETURN(StepStats st, e->Step());
    if (!st.skipped || st.loss_scale != 512.0f) {
      return absl::InternalError(absl::StrCat("rank ", c.rank(), ": skipped ", st.skipped,
                                              ", loss scale ", st.loss_scale));
    }
    size_t k = 0;
    for (int u = 0; u < e->num_units(); ++u) {
      const int64_t n = e->master_range(u).size();
      for (const float* p : {e->master_data(u), e->optim_state(u, ParamState::kMoment1),
                             e->optim_state(u, ParamState::kMoment2)}) {
        if (std::memcmp(before[k++].data(), p, n * 4) != 0) {
          return absl::InternalError(
              absl::StrCat("rank ", c.rank(), " unit ", u, ": state changed in a skipped step"));
        }
      }
    }
    // The next step is clean and updates again.
    RETURN_IF_ERROR(testing::RunMicroBatches(*e, c.rank(), 3, 3, 2).status());
    ASSIGN_OR_RETURN(st, e->Step());
    return st.skipped ? absl::InternalError("clean step skipped") : absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

TEST(ZeroEngine, ChangedUnitOrderIsAnErrorNamingTheUnits) {
  absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = 3;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
    RETURN_IF_ERROR(e->Initialize(testing::MlpInit));
    RETURN_IF_ERROR(testing::RunHooksOnly(*e));
    RETURN_IF_ERROR(e->Step().status());
    // Step 2 starts with unit 1 instead of unit 0.
    absl::Status s = e->PreForward(1);
    if (!absl::IsFailedPrecondition(s) ||
        !absl::StrContains(s.message(), "PreForward(unit 'layer2')") ||
        !absl::StrContains(s.message(), "PreForward(unit 'layer1')")) {
      return absl::InternalError(absl::StrCat("unexpected: ", s.ToString()));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

TEST(ZeroEngine, RandomCommunicationDelaysChangeNothing) {
  std::vector<RunResult> runs(2);
  for (int trial = 0; trial < 2; ++trial) {
    ASSERT_TRUE(RunOnRanks(4, [&](Communicator& world) -> absl::Status {
                  EngineOptions o;
                  o.stage = 3;
                  o.prefetch_depth = 2;
                  if (trial == 0) {
                    ASSIGN_OR_RETURN(RunResult r, Train(world, o, 4, 2));
                    if (world.rank() == 0) runs[0] = r;
                  } else {
                    testing::DelayingCommunicator slow(world, 2000, 17 + world.rank());
                    ASSIGN_OR_RETURN(RunResult r, Train(slow, o, 4, 2));
                    if (world.rank() == 0) runs[1] = r;
                  }
                  return absl::OkStatus();
                }).ok());
  }
  for (size_t p = 0; p < runs[0].params.size(); ++p) {
    EXPECT_EQ(0, std::memcmp(runs[0].params[p].data(), runs[1].params[p].data(),
                             runs[0].params[p].size() * 4));
  }
}

TEST(ZeroEngine, InvalidConfigurationAndMisuseAreClearErrors) {
  absl::Status st = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem;
    EngineOptions o;
    o.stage = 5;
    auto e = ZeroEngine::Create(c, testing::MlpUnits(), o, &mem);
    if (!absl::StrContains(e.status().message(), "ZeRO stage 5")) return e.status();
    o.stage = 3;
    o.grad_accum = 0;
    e = ZeroEngine::Create(c, testing::MlpUnits(), o, &mem);
    if (!absl::StrContains(e.status().message(), "grad_accum 0")) return e.status();
    o.grad_accum = 1;
    auto units = testing::MlpUnits();
    units[1].params[0].name = "w1";
    e = ZeroEngine::Create(c, units, o, &mem);
    if (!absl::StrContains(e.status().message(), "'w1' is registered twice")) return e.status();
    units = testing::MlpUnits();
    units[0].params[0].shape = {7, 0};
    e = ZeroEngine::Create(c, units, o, &mem);
    if (!absl::StrContains(e.status().message(), "dimension 0")) return e.status();
    ASSIGN_OR_RETURN(auto good, ZeroEngine::Create(c, testing::MlpUnits(), o, &mem));
    absl::Status s = good->Param(0, 0).status();
    if (!absl::IsFailedPrecondition(s)) return absl::InternalError(s.ToString());
    s = good->PostForward(0);
    if (!absl::StrContains(s.message(), "PostForward(unit 'layer1') while it is idle")) return s;
    s = good->PreForward(7);
    if (!absl::StrContains(s.message(), "unit 7 does not exist (3 units)")) return s;
    // One micro-batch per step (grad_accum 1): a second backward is refused.
    RETURN_IF_ERROR(good->Initialize(testing::MlpInit));
    RETURN_IF_ERROR(testing::RunHooksOnly(*good));
    s = good->PreBackward(2);
    if (!absl::StrContains(s.message(), "call Step() first")) {
      return absl::InternalError(absl::StrCat("unexpected: ", s.ToString()));
    }
    RETURN_IF_ERROR(good->Step().status());
    ASSIGN_OR_RETURN(ParamInfo info, good->param_info("gain"));  // shape is always known
    if (info.shape != std::vector<int64_t>{testing::kZ}) return absl::InternalError("shape");
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// A non-finite gradient seen by one rank of a DP x TP x PP grid of 8 (world
// rank `bad`: one TP rank of one pipeline stage of one DP group) is agreed on
// by every rank: with the skip policy every rank skips and keeps its
// parameters; with abort every rank returns the same error naming the step.
// World rank = pp * 4 + dp * 2 + tp.
absl::StatusOr<StepStats> NanOnOneRank(Communicator& world, EngineOptions::NonFinite policy,
                                       int bad, std::vector<float>* param_after) {
  const int r = world.rank(), tp_rank = r % 2, dp_rank = (r / 2) % 2, pp_rank = r / 4;
  ASSIGN_OR_RETURN(auto dp, world.Split(pp_rank * 2 + tp_rank, r, "dp"));
  ASSIGN_OR_RETURN(auto tp, world.Split(pp_rank * 2 + dp_rank, r, "tp"));
  ASSIGN_OR_RETURN(auto pp, world.Split(dp_rank * 2 + tp_rank, r, "pp"));
  EngineOptions o;
  o.stage = 1;
  o.tp_control = tp.get();
  o.pp_control = pp.get();
  o.on_nonfinite = policy;
  ParamSpec w{"w", {8}};
  w.replicated_over_tp = false;
  MemoryTracker mem;
  ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(*dp, {{"u", {w}}}, o, &mem));
  RETURN_IF_ERROR(e->Initialize([](const ParamInfo&, float* v) {
    for (int i = 0; i < 8; ++i) v[i] = 0.5f + i;
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(e->PreForward(0));
  RETURN_IF_ERROR(e->PostForward(0));
  RETURN_IF_ERROR(e->PreBackward(0));
  ASSIGN_OR_RETURN(MutView g, e->Grad(0, 0));
  float* gw = static_cast<float*>(g.data);
  for (int i = 0; i < 8; ++i) gw[i] = 0.25f;
  if (world.rank() == bad) gw[5] = std::nanf("");
  RETURN_IF_ERROR(e->PostBackward(0));
  absl::StatusOr<StepStats> st = e->Step();
  if (st.ok()) {
    ASSIGN_OR_RETURN(*param_after, e->GatherFull("w"));
  }
  return st;
}

TEST(NonFiniteTest, OneRanksNanIsAgreedEverywhere) {
  for (auto policy : {EngineOptions::NonFinite::kSkip, EngineOptions::NonFinite::kAbort}) {
    for (int bad : {3, 6}) {  // a TP rank on stage 0; a rank on stage 1
      SCOPED_TRACE(::testing::Message() << "NaN on world rank " << bad);
      std::vector<absl::StatusOr<StepStats>> got(8, absl::UnknownError("not run"));
      std::vector<std::vector<float>> params(8);
      absl::Status s = RunOnRanks(8, [&](Communicator& c) -> absl::Status {
        got[c.rank()] = NanOnOneRank(c, policy, bad, &params[c.rank()]);
        return absl::OkStatus();
      });
      ASSERT_TRUE(s.ok()) << s;
      for (int r = 0; r < 8; ++r) {
        if (policy == EngineOptions::NonFinite::kSkip) {
          ASSERT_TRUE(got[r].ok()) << got[r].status();
          EXPECT_TRUE(got[r]->skipped) << "rank " << r;
          EXPECT_TRUE(got[r]->nonfinite) << "rank " << r;
          EXPECT_EQ(got[r]->nonfinite_ranks, 1) << "rank " << r;
          for (int i = 0; i < 8; ++i) EXPECT_EQ(params[r][i], 0.5f + i) << "rank " << r;
        } else {
          ASSERT_FALSE(got[r].ok()) << "rank " << r;
          EXPECT_EQ(got[r].status().code(), absl::StatusCode::kDataLoss);
          EXPECT_THAT(std::string(got[r].status().message()),
                      HasSubstr("step 1: the gradient norm"));
          EXPECT_EQ(got[r].status(), got[0].status());  // the same everywhere
        }
      }
    }
  }
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// Desync across the runtime names the unit: a DP rank that gathers units in a
// different order is reported on every rank before any data moves -- by the
// element counts when the units differ in size, and in the debug mode
// (check_desync, TRIREME_DESYNC_CHECK=1) by the units' labels even when they
// are the same size.
std::vector<absl::Status> SwappedOrder(int64_t size0, int64_t size1, bool debug) {
  std::vector<absl::Status> got(2);
  CommOptions co;
  co.check_desync = debug;
  co.timeout = absl::Seconds(5);
  absl::Status s = RunOnRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        EngineOptions o;
        o.stage = 3;
        o.prefetch_depth = 0;
        MemoryTracker mem;
        ASSIGN_OR_RETURN(
            auto e,
            ZeroEngine::Create(c, {{"u0", {{"a", {size0}}}}, {"u1", {{"b", {size1}}}}}, o, &mem));
        RETURN_IF_ERROR(e->Initialize([](const ParamInfo& p, float* v) {
          std::fill(v, v + p.numel, 1.0f);
          return absl::OkStatus();
        }));
        const int first = c.rank() == 1 ? 1 : 0;  // rank 1 starts with the other unit
        // The gather is enqueued; its error surfaces on the engine's streams.
        absl::Status st = e->PreForward(first);
        got[c.rank()] = st.ok() ? e->Synchronize() : st;
        return absl::OkStatus();
      },
      co);
  EXPECT_TRUE(s.ok()) << s;
  return got;
}

TEST(DesyncTest, SwappedUnitsAreNamedOnEveryRank) {
  for (bool equal_sizes : {false, true}) {
    SCOPED_TRACE(equal_sizes ? "equal sizes, debug mode" : "different sizes");
    const std::vector<absl::Status> got =
        SwappedOrder(8, equal_sizes ? 8 : 12, /*debug=*/equal_sizes);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(got[r].code(), absl::StatusCode::kFailedPrecondition) << got[r];
      EXPECT_THAT(std::string(got[r].message()), HasSubstr("[zero: gather 'u0']")) << got[r];
      EXPECT_THAT(std::string(got[r].message()), HasSubstr("[zero: gather 'u1']")) << got[r];
    }
  }
}

}  // namespace
}  // namespace trireme
