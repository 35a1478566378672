// Whole-model finite differences: for sampled elements of every parameter of
// a tiny GPT at (1, 1, 1), the gradient the model computes matches the
// central difference of its loss (in f32, so the tolerance is loose; the
// PyTorch cross-check pins the gradients to 1e-5).
#include <cmath>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "models/gpt.h"
#include "models/gpt_data.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

TEST(GptFiniteDifferences, WholeModelGradientMatchesCentralDifferences) {
  GptConfig c;
  c.layers = 2;
  c.hidden = 8;
  c.heads = 2;
  c.vocab = 11;
  c.seq = 5;
  c.micro_batch = 2;
  const GptPlace place;
  const std::vector<int32_t> tokens = GptBatch(c, 3, 0);
  absl::Status st = RunOnRanks(1, [&](Communicator& world) -> absl::Status {
    EngineOptions o;
    o.stage = 0;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(world, GptUnits(c, place), o, &mem));
    RETURN_IF_ERROR(
        e->Initialize([&](const ParamInfo& p, float* v) { return GptInit(c, place, p, v); }));
    // Perturb the initial weights so LayerNorm gains and biases are generic.
    absl::flat_hash_map<std::string, std::vector<float>> values;
    for (int u = 0; u < e->num_units(); ++u) {
      for (const ParamInfo& p : e->unit_params(u)) {
        if (!p.tied_to.empty()) continue;
        ASSIGN_OR_RETURN(std::vector<float> v, e->GatherFull(p.name));
        for (size_t i = 0; i < v.size(); ++i) v[i] += 0.1f * std::sin(1.7f * i + p.numel);
        values[p.name] = v;
      }
    }
    // Forward and backward at `vals` (backward also when only the loss is
    // wanted: the engine's step needs every micro-batch's hooks).
    auto loss_at = [&](const absl::flat_hash_map<std::string, std::vector<float>>& vals)
        -> absl::StatusOr<double> {
      RETURN_IF_ERROR(e->InitializeFrom(vals));
      GptStage stage(c, place, *e, world, e->compute_stream());
      ASSIGN_OR_RETURN(const double loss, stage.ForwardBackward(0, tokens));
      RETURN_IF_ERROR(e->ReduceGradients());
      return loss;
    };
    RETURN_IF_ERROR(loss_at(values).status());
    absl::flat_hash_map<std::string, std::vector<float>> grads;
    for (int u = 0; u < e->num_units(); ++u) {
      ASSIGN_OR_RETURN(std::vector<float> g, e->GradShard(u));
      for (const ParamInfo& p : e->unit_params(u)) {
        if (!p.tied_to.empty()) continue;
        grads[p.name] =
            std::vector<float>(g.begin() + p.unit_range.begin, g.begin() + p.unit_range.end);
      }
    }
    RETURN_IF_ERROR(e->Step().status());  // ends the step (zeroes gradients)
    int checked = 0;
    for (const auto& [name, g] : grads) {
      for (size_t i = 0; i < g.size(); i += std::max<size_t>(1, g.size() / 3)) {
        const float h = 1e-2f;
        auto plus = values, minus = values;
        plus[name][i] += h;
        minus[name][i] -= h;
        ASSIGN_OR_RETURN(double lp, loss_at(plus));
        RETURN_IF_ERROR(e->Step().status());
        ASSIGN_OR_RETURN(double lm, loss_at(minus));
        RETURN_IF_ERROR(e->Step().status());
        const double fd = (lp - lm) / (2 * h);
        if (std::abs(fd - g[i]) > 2e-2 * std::abs(fd) + 2e-3) {
          return absl::InternalError(
              absl::StrCat(name, "[", i, "]: model ", g[i], ", central difference ", fd));
        }
        ++checked;
      }
    }
    if (checked < 50) return absl::InternalError(absl::StrCat("only ", checked, " checked"));
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme
