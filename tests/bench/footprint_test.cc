// The memory benchmark's numbers: simulation must agree exactly with real
// runs, and reproduce the ZeRO paper's Table 1 from tracked bytes.
#include "bench/footprint.h"

#include <cmath>
#include <string>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace trireme::bench {
namespace {

// For each stage and dp in {1, 2, 3, 4, 8}, a small model's real run (ranks as
// threads, real buffers and collectives) holds exactly the bytes, per
// category, current and peak, that the simulated run (meta device) accounts.
TEST(Footprint, SimulationEqualsRealRunsExactly) {
  auto m = ModelByName("tiny");
  ASSERT_TRUE(m.ok()) << m.status();
  for (DType grad : {DType::kBF16, DType::kF32}) {
    for (int stage = 0; stage <= 3; ++stage) {
      for (int dp : {1, 2, 3, 4, 8}) {
        FootprintConfig c{stage, dp, DType::kBF16, grad, /*simulated=*/false};
        auto real = Measure(*m, c);
        ASSERT_TRUE(real.ok()) << real.status();
        c.simulated = true;
        auto sim = Measure(*m, c);
        ASSERT_TRUE(sim.ok()) << sim.status();
        for (int k = 0; k < kNumMemCategories; ++k) {
          EXPECT_EQ(real->memory.current[k], sim->memory.current[k])
              << "stage " << stage << " dp " << dp << " " << MemCategoryName(MemCategory(k));
          EXPECT_EQ(real->memory.peak[k], sim->memory.peak[k])
              << "stage " << stage << " dp " << dp << " peak " << MemCategoryName(MemCategory(k));
        }
        EXPECT_EQ(real->memory.total_peak, sim->memory.total_peak);
        EXPECT_EQ(real->sent_per_step, sim->sent_per_step) << "stage " << stage << " dp " << dp;
        EXPECT_GT(real->model_states(), 0);
      }
    }
  }
}

// ZeRO (Rajbhandari et al. 2020), Table 1: Psi = 7.5B, N = 64, K = 12:
// 120 GB, 31.4 GB, 16.6 GB, 1.88 GB per device for stages 0-3, printed to
// three significant digits. Here from tracked bytes, not the formula.
TEST(Footprint, ReproducesZeroPaperTable1) {
  auto m = ModelByName("7.5b");
  ASSERT_TRUE(m.ok());
  const char* paper[] = {"120", "31.4", "16.6", "1.88"};
  for (int stage = 0; stage <= 3; ++stage) {
    auto f = Measure(*m, {stage, 64, DType::kBF16, DType::kBF16, true});
    ASSERT_TRUE(f.ok()) << f.status();
    const std::string gb = absl::StrFormat("%.3g", f->model_states() / 1e9);
    EXPECT_EQ(gb, paper[stage]) << "stage " << stage << ": " << f->model_states() << " bytes";
  }
}

TEST(Footprint, LargeSimulationsAndBadNames) {
  auto m = ModelByName("175b");
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(ParamCount(*m) / 1e9, 175.0, 1.0);
  auto f = Measure(*m, {3, 1024, DType::kBF16, DType::kBF16, true});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_NEAR(f->model_states() / f->formula, 1.0, 1e-4);  // padding only
  auto llama = ModelByName("llama-70b");
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(ParamCount(*llama), 68976648192);  // the architecture of models/gpt_config.h
  auto bad = ModelByName("gpt5");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'gpt5'"), std::string::npos);
  auto count = ModelByName("3e9");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(ParamCount(*count), 3000000000);
}

}  // namespace
}  // namespace trireme::bench
