// GPU test: the CUDA cast kernel against the CPU kernel. Fails, naming the missing
// device or driver, without a GPU (Bazel runs it only where it found one).
#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast.h"
#include "kernels/cuda/cast.h"
#include "tests/gpu/gpu_test_util.h"

namespace trireme::kernels {
namespace {

TEST(CastCuda, MatchesCpuBitForBit) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t n = (1 << 20) + 3;
  std::mt19937 rng(7);
  std::vector<float> x(n);
  for (auto& v : x) {
    uint32_t bits = rng();
    std::memcpy(&v, &bits, 4);
  }
  std::vector<BF16> cpu(n), gpu(n);
  ASSERT_TRUE(CastCpu(x.data(), DType::kF32, cpu.data(), DType::kBF16, n).ok());
  ASSERT_OK_AND_ASSIGN(testing::DeviceArray<float> dx, testing::DeviceArray<float>::From(x));
  ASSERT_OK_AND_ASSIGN(testing::DeviceArray<BF16> dy, testing::DeviceArray<BF16>::Allocate(n));
  ASSERT_OK(CastCuda(dx.get(), DType::kF32, dy.get(), DType::kBF16, n, nullptr));
  ASSERT_OK_AND_ASSIGN(gpu, dy.ToHost());
  EXPECT_EQ(0, std::memcmp(cpu.data(), gpu.data(), n * 2));
}

}  // namespace
}  // namespace trireme::kernels
