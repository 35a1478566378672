// GPU test: the CUDA optimizer kernels against the CPU kernels, bit for bit
// (same element bodies; nvcc --fmad=false). SKIPPED without a device.
#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/optim.h"
#include "kernels/optim.h"
#include "runtime/core/device.h"

namespace trireme::kernels {
namespace {

TEST(OptimCuda, AdamWAndSumOfSquaresMatchCpu) {
  auto devices = CudaDeviceCount();
  ASSERT_TRUE(devices.ok()) << devices.status();
  if (*devices == 0) GTEST_SKIP() << "no CUDA device";
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
  float *dp, *dg, *dm, *dv;
  double *scratch, *sum;
  for (float** b : {&dp, &dg, &dm, &dv}) ASSERT_EQ(cudaMalloc(b, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&scratch, SumOfSquaresScratch(n) * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&sum, 8), cudaSuccess);
  cudaMemcpy(dp, p.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dg, g.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dm, m.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dv, v.data(), n * 4, cudaMemcpyHostToDevice);
  ASSERT_TRUE(AdamWCuda(s, dp, dg, dm, dv, n, nullptr, DType::kF32, nullptr).ok());
  ASSERT_TRUE(SumOfSquaresCuda(dg, n, scratch, sum, nullptr).ok());
  std::vector<float> gp(n);
  double gsum = 0;
  cudaMemcpy(gp.data(), dp, n * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(&gsum, sum, 8, cudaMemcpyDeviceToHost);
  EXPECT_EQ(0, std::memcmp(gp.data(), cp.data(), n * 4));
  const double csum = SumOfSquares(g.data(), n);
  EXPECT_NEAR(gsum, csum, 1e-12 * csum);
  for (void* b : {static_cast<void*>(dp), static_cast<void*>(dg), static_cast<void*>(dm),
                  static_cast<void*>(dv), static_cast<void*>(scratch), static_cast<void*>(sum)}) {
    cudaFree(b);
  }
}

}  // namespace
}  // namespace trireme::kernels
