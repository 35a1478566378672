// GPU test: the CUDA optimizer kernels against the CPU kernels, bit for bit
// (same element bodies; nvcc --fmad=false). Fails, naming the missing device
// or driver, without a GPU (Bazel runs it only where it found one).
#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/optim.h"
#include "kernels/optim.h"
#include "tests/gpu/gpu_test_util.h"

namespace trireme::kernels {
namespace {

TEST(OptimCuda, AdamWAndSumOfSquaresMatchCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t n = (1 << 20) + 3;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> p(n), g(n), m(n, 0.0f), v(n, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = u(rng);
    g[i] = 0.1f * u(rng);
  }
  AdamWScalars s{1.0f, 0.99999f, 0.1f, 0.999f, 0.001f, 0.0447f, 1e-8f, -0.01f, true};
  std::vector<float> cp = p, cm = m, cv = v;
  AdamW(s, cp.data(), g.data(), cm.data(), cv.data(), n);
  using F = testing::DeviceArray<float>;
  using D = testing::DeviceArray<double>;
  ASSERT_OK_AND_ASSIGN(F dp, F::From(p));
  ASSERT_OK_AND_ASSIGN(F dg, F::From(g));
  ASSERT_OK_AND_ASSIGN(F dm, F::From(m));
  ASSERT_OK_AND_ASSIGN(F dv, F::From(v));
  ASSERT_OK_AND_ASSIGN(D scratch, D::Allocate(SumOfSquaresScratch(n)));
  ASSERT_OK_AND_ASSIGN(D sum, D::Allocate(1));
  ASSERT_OK(AdamWCuda(s, dp.get(), dg.get(), dm.get(), dv.get(), n, nullptr, DType::kF32, nullptr));
  ASSERT_OK(SumOfSquaresCuda(dg.get(), n, scratch.get(), sum.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> gp, dp.ToHost());
  ASSERT_OK_AND_ASSIGN(std::vector<double> gsum, sum.ToHost());
  EXPECT_EQ(0, std::memcmp(gp.data(), cp.data(), n * 4));
  const double csum = SumOfSquares(g.data(), n);
  EXPECT_NEAR(gsum[0], csum, 1e-12 * csum);
}

// More than 2^20 blocks of 2048 elements (over 2^31 elements): the block
// kernel strides over the blocks instead of launching one CUDA block each.
TEST(OptimCudaLarge, SumOfSquaresPastTwoToThe31) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t n = (int64_t{1} << 31) + 3 * 2048 + 5;
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i) g[i] = 0.001f * static_cast<float>(i % 1999 - 999);
  g[n - 1] = 1000.0f;  // the last block's contribution dominates: skipping it shows
  using F = testing::DeviceArray<float>;
  using D = testing::DeviceArray<double>;
  ASSERT_OK_AND_ASSIGN(F dg, F::From(g));
  ASSERT_OK_AND_ASSIGN(D scratch, D::Allocate(SumOfSquaresScratch(n)));
  ASSERT_OK_AND_ASSIGN(D sum, D::Allocate(1));
  ASSERT_OK(SumOfSquaresCuda(dg.get(), n, scratch.get(), sum.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<double> gsum, sum.ToHost());
  const double csum = SumOfSquares(g.data(), n);
  EXPECT_NEAR(gsum[0], csum, 1e-10 * csum);
}

}  // namespace
}  // namespace trireme::kernels
