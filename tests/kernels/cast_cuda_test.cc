// GPU test: the CUDA cast kernel against the CPU kernel. SKIPPED without a device.
#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast.h"
#include "kernels/cuda/cast.h"
#include "runtime/core/device.h"

namespace trireme::kernels {
namespace {

TEST(CastCuda, MatchesCpuBitForBit) {
  auto devices = CudaDeviceCount();
  ASSERT_TRUE(devices.ok()) << devices.status();
  if (*devices == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t n = (1 << 20) + 3;
  std::mt19937 rng(7);
  std::vector<float> x(n);
  for (auto& v : x) {
    uint32_t bits = rng();
    std::memcpy(&v, &bits, 4);
  }
  std::vector<BF16> cpu(n), gpu(n);
  ASSERT_TRUE(CastCpu(x.data(), DType::kF32, cpu.data(), DType::kBF16, n).ok());
  void *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, n * 2), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE(CastCuda(dx, DType::kF32, dy, DType::kBF16, n, nullptr).ok());
  ASSERT_EQ(cudaMemcpy(gpu.data(), dy, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(0, std::memcmp(cpu.data(), gpu.data(), n * 2));
  cudaFree(dx);
  cudaFree(dy);
}

}  // namespace
}  // namespace trireme::kernels
