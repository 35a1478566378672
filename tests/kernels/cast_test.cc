#include "kernels/cast.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace trireme::kernels {
namespace {

// Every f32 -> 16-bit cast equals the scalar conversion of half.h, and the
// 16-bit -> f32 casts are exact, for lengths that exercise tails.
class CastTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(CastTest, MatchesScalarConversions) {
  const int64_t n = GetParam();
  std::mt19937 rng(42);
  std::vector<float> x(n);
  for (auto& v : x) {
    uint32_t bits = rng();
    std::memcpy(&v, &bits, 4);
  }
  std::vector<BF16> b(n);
  std::vector<F16> h(n);
  std::vector<float> back(n);
  ASSERT_TRUE(CastCpu(x.data(), DType::kF32, b.data(), DType::kBF16, n).ok());
  ASSERT_TRUE(CastCpu(x.data(), DType::kF32, h.data(), DType::kF16, n).ok());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(b[i].bits, F32ToBF16(x[i]).bits) << i;
    ASSERT_EQ(h[i].bits, F32ToF16(x[i]).bits) << i;
  }
  ASSERT_TRUE(CastCpu(h.data(), DType::kF16, back.data(), DType::kF32, n).ok());
  for (int64_t i = 0; i < n; ++i) {
    const float want = F16ToF32(h[i]);
    ASSERT_TRUE(back[i] == want || (std::isnan(back[i]) && std::isnan(want))) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, CastTest, ::testing::Values(0, 1, 7, 8, 9, 1021, (1 << 16) + 3));

TEST(Cast, RejectsIntegerDTypes) {
  int32_t a[2] = {1, 2};
  float b[2];
  absl::Status s = CastCpu(a, DType::kI32, b, DType::kF32, 2);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("i32"), absl::string_view::npos);
}

}  // namespace
}  // namespace trireme::kernels
