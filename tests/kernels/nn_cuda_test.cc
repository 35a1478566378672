// GPU test: the model's CUDA kernels (cuBLAS GEMM, GELU, LayerNorm) against
// the CPU kernels. SKIPPED without a device.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/nn.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"
#include "runtime/core/device.h"

namespace trireme::kernels {
namespace {

float* ToDevice(const std::vector<float>& v) {
  float* d = nullptr;
  cudaMalloc(&d, v.size() * 4);
  cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice);
  return d;
}

std::vector<float> ToHost(const float* d, size_t n) {
  std::vector<float> v(n);
  cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost);
  return v;
}

TEST(NnCuda, MatchesCpuKernels) {
  auto devices = CudaDeviceCount();
  ASSERT_TRUE(devices.ok()) << devices.status();
  if (*devices == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t m = 33, n = 17, k = 65;
  std::vector<float> a(m * k), b(k * n), c(m * n, 0.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.1f * i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::cos(0.2f * i);
  Gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  float *da = ToDevice(a), *db = ToDevice(b), *dc = ToDevice(std::vector<float>(m * n, 0.0f));
  ASSERT_TRUE(GemmCuda(h, false, false, m, n, k, 1.0f, da, k, db, n, DType::kF32, 0.0f, dc, n).ok());
  const std::vector<float> gc = ToHost(dc, m * n);
  for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(gc[i], c[i], 1e-4 * (1 + std::fabs(c[i])));
  // GELU and LayerNorm on the product.
  std::vector<float> y(m * n), gy(m * n);
  GeluForward(c.data(), m * n, y.data());
  float* dy = ToDevice(std::vector<float>(m * n));
  ASSERT_TRUE(GeluForwardCuda(dc, m * n, dy, nullptr).ok());
  gy = ToHost(dy, m * n);
  for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(gy[i], y[i], 1e-5 * (1 + std::fabs(y[i])));
  std::vector<float> gamma(n, 1.5f), beta(n, -0.25f), ln(m * n), mean(m), rstd(m);
  LayerNormForward(c.data(), gamma.data(), beta.data(), m, n, 1e-5f, ln.data(), mean.data(),
                   rstd.data());
  float *dg = ToDevice(gamma), *dbt = ToDevice(beta), *dm = ToDevice(mean), *dr = ToDevice(rstd);
  ASSERT_TRUE(LayerNormForwardCuda(dc, dg, dbt, m, n, 1e-5f, dy, dm, dr, nullptr).ok());
  gy = ToHost(dy, m * n);
  for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(gy[i], ln[i], 1e-5 * (1 + std::fabs(ln[i])));
  for (float* p : {da, db, dc, dy, dg, dbt, dm, dr}) cudaFree(p);
  cublasDestroy(h);
}

}  // namespace
}  // namespace trireme::kernels
