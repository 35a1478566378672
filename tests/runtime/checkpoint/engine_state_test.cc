// The engine state a checkpoint carries besides tensors: step counters and
// the loss scaler (scale, good steps, hysteresis) survive a save and a load
// onto another ZeRO stage exactly, with an awkward non-power-of-two scale.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"

namespace trireme {
namespace {

TEST(EngineStateCheckpointTest, LossScalerAndCountersRoundTripExactly) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string root = std::string(base ? base : "/tmp") + "/engine_state";
  std::filesystem::remove_all(root);
  ZeroEngine::State want;
  want.step = 41;
  want.optimizer_step = 37;
  want.loss_scaling = true;
  want.loss_scaler = {1234.5677490234375f * 3.0f, 17, 1};
  absl::Status s = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = 2;
    o.loss_scaling = true;
    std::vector<UnitSpec> units = {{"u", {{"w", {5, 3}}, {"b", {3}, false}}}};
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
    RETURN_IF_ERROR(e->Initialize([](const ParamInfo& p, float* v) {
      for (int64_t i = 0; i < p.numel; ++i) v[i] = 0.1f * i - 0.3f;
      return absl::OkStatus();
    }));
    RETURN_IF_ERROR(e->set_state(want));
    checkpoint::SaveOptions so;
    so.root = root;
    RETURN_IF_ERROR(checkpoint::Save(c, *e, checkpoint::IdentityLayout, 41, so).status());
    o.stage = 3;
    MemoryTracker mem2;
    ASSIGN_OR_RETURN(auto f, ZeroEngine::Create(c, units, o, &mem2));
    RETURN_IF_ERROR(checkpoint::Load(c, *f, checkpoint::IdentityLayout, root).status());
    const ZeroEngine::State got = f->state();
    EXPECT_EQ(got.step, want.step);
    EXPECT_EQ(got.optimizer_step, want.optimizer_step);
    EXPECT_TRUE(got.loss_scaling);
    EXPECT_EQ(got.loss_scaler.scale, want.loss_scaler.scale);  // bitwise: exact float
    EXPECT_EQ(got.loss_scaler.good_steps, 17);
    EXPECT_EQ(got.loss_scaler.hysteresis_left, 1);
    ASSIGN_OR_RETURN(std::vector<float> w0, e->GatherFull("w"));
    ASSIGN_OR_RETURN(std::vector<float> w1, f->GatherFull("w"));
    EXPECT_EQ(w0, w1);
    // A run without loss scaling refuses this checkpoint, saying why.
    o.loss_scaling = false;
    MemoryTracker mem3;
    ASSIGN_OR_RETURN(auto g, ZeroEngine::Create(c, units, o, &mem3));
    ASSIGN_OR_RETURN(std::vector<float> before, g->GatherFull("w"));
    auto r = checkpoint::Load(c, *g, checkpoint::IdentityLayout, root);
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("loss scaling on"), std::string::npos) << r.status();
    ASSIGN_OR_RETURN(std::vector<float> after, g->GatherFull("w"));
    EXPECT_EQ(before, after);  // refused before anything changed
    EXPECT_EQ(g->state().step, 0);
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace trireme
