// GPU test: the model's CUDA kernels (cuBLAS GEMM, GELU, LayerNorm, causal
// attention, cross-entropy, embedding) against the CPU kernels. SKIPPED
// without a device.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
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

int32_t* IdsToDevice(const std::vector<int32_t>& v) {
  int32_t* d = nullptr;
  cudaMalloc(&d, v.size() * 4);
  cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice);
  return d;
}

std::vector<float> ToHost(const float* d, size_t n) {
  std::vector<float> v(n);
  cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost);
  return v;
}

std::vector<float> Wave(size_t n, float f, float amp = 1.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = amp * std::sin(f * static_cast<float>(i) + 0.3f);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double tol,
                const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " at " << i;
  }
}

bool HaveDevice() {
  auto devices = CudaDeviceCount();
  return devices.ok() && *devices > 0;
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

TEST(NnCuda, LayerNormBackwardMatchesCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t rows = 7, dim = 300;
  const auto x = Wave(rows * dim, 0.37f, 2.0f), dy = Wave(rows * dim, 0.11f),
             gamma = Wave(dim, 0.05f);
  std::vector<float> beta(dim, 0.1f), y(rows * dim), mean(rows), rstd(rows), dx(rows * dim),
      dg(dim, 0.5f), db(dim, -0.5f);
  LayerNormForward(x.data(), gamma.data(), beta.data(), rows, dim, 1e-5f, y.data(), mean.data(),
                   rstd.data());
  LayerNormBackward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), rows, dim,
                    dx.data(), dg.data(), db.data());
  float *gx = ToDevice(x), *gdy = ToDevice(dy), *gg = ToDevice(gamma), *gm = ToDevice(mean),
        *gr = ToDevice(rstd), *gdg = ToDevice(std::vector<float>(dim, 0.5f)),
        *gdb = ToDevice(std::vector<float>(dim, -0.5f));
  ASSERT_TRUE(LayerNormBackwardCuda(gdy, gx, gg, gm, gr, rows, dim, gdy, gdg, gdb, nullptr).ok());
  ExpectNear(ToHost(gdy, rows * dim), dx, 1e-5, "dx (in place)");
  // Column sums in row order: the CPU kernel's bits.
  EXPECT_EQ(ToHost(gdg, dim), dg);
  EXPECT_EQ(ToHost(gdb, dim), db);
  for (float* p : {gx, gdy, gg, gm, gr, gdg, gdb}) cudaFree(p);
}

TEST(NnCuda, CausalAttentionMatchesCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const AttentionShape s{2, 3, 37, 16};
  const int64_t n = s.batch * s.heads * s.seq * s.head_dim;
  const int64_t np = s.batch * s.heads * s.seq * s.seq;
  const auto q = Wave(n, 0.013f), k = Wave(n, 0.029f), v = Wave(n, 0.041f),
             dout = Wave(n, 0.007f);
  std::vector<float> probs(np), out(n), ws(CausalAttentionWorkspaceSize(s)), dq(n), dk(n), dv(n);
  CausalAttentionForward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
  CausalAttentionBackward(s, q.data(), k.data(), v.data(), probs.data(), dout.data(), ws.data(),
                          dq.data(), dk.data(), dv.data());
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  float *gq = ToDevice(q), *gk = ToDevice(k), *gv = ToDevice(v), *gdo = ToDevice(dout),
        *gp = ToDevice(std::vector<float>(np)), *go = ToDevice(std::vector<float>(n)),
        *gws = ToDevice(std::vector<float>(CausalAttentionWorkspaceSizeCuda(s))),
        *gdq = ToDevice(std::vector<float>(n)), *gdk = ToDevice(std::vector<float>(n)),
        *gdv = ToDevice(std::vector<float>(n));
  ASSERT_TRUE(CausalAttentionForwardCuda(h, s, gq, gk, gv, gp, go).ok());
  ASSERT_TRUE(CausalAttentionBackwardCuda(h, s, gq, gk, gv, gp, gdo, gws, gdq, gdk, gdv).ok());
  const std::vector<float> gprobs = ToHost(gp, np);
  ExpectNear(gprobs, probs, 1e-5, "probs");
  for (int64_t r = 0; r < s.batch * s.heads * s.seq; ++r) {  // exact zeros above the diagonal
    for (int64_t j = r % s.seq + 1; j < s.seq; ++j) ASSERT_EQ(gprobs[r * s.seq + j], 0.0f);
  }
  ExpectNear(ToHost(go, n), out, 1e-5, "out");
  ExpectNear(ToHost(gdq, n), dq, 1e-4, "dq");
  ExpectNear(ToHost(gdk, n), dk, 1e-4, "dk");
  ExpectNear(ToHost(gdv, n), dv, 1e-5, "dv");
  for (float* p : {gq, gk, gv, gdo, gp, go, gws, gdq, gdk, gdv}) cudaFree(p);
  cublasDestroy(h);
}

TEST(NnCuda, CrossEntropyAndEmbeddingMatchCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t rows = 19, vocab = 260, valid = 257, dim = 24;
  const auto logits = Wave(rows * vocab, 0.17f, 4.0f);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 37) % valid);
  std::vector<float> lse(rows), dl(rows * vocab);
  auto loss = CrossEntropyForward(logits.data(), targets.data(), rows, vocab, valid, lse.data());
  ASSERT_TRUE(loss.ok());
  ASSERT_TRUE(CrossEntropyBackward(logits.data(), targets.data(), lse.data(), rows, vocab, valid,
                                   2.0f, dl.data())
                  .ok());
  float *gl = ToDevice(logits), *glse = ToDevice(std::vector<float>(rows)),
        *gdl = ToDevice(std::vector<float>(rows * vocab, 7.0f));
  int32_t* gt = IdsToDevice(targets);
  double* row_loss = nullptr;
  cudaMalloc(&row_loss, rows * sizeof(double));
  auto gloss = CrossEntropyForwardCuda(gl, gt, rows, vocab, valid, glse, row_loss, nullptr);
  ASSERT_TRUE(gloss.ok()) << gloss.status();
  EXPECT_NEAR(*gloss, *loss, 1e-5 * *loss);
  ExpectNear(ToHost(glse, rows), lse, 1e-6, "lse");
  ASSERT_TRUE(CrossEntropyBackwardCuda(gl, gt, glse, rows, vocab, valid, 2.0f, gdl, nullptr).ok());
  ExpectNear(ToHost(gdl, rows * vocab), dl, 1e-5, "dlogits (padding zeroed)");
  // A bad target is named before anything is written.
  std::vector<int32_t> bad = targets;
  bad[5] = static_cast<int32_t>(valid);
  int32_t* gbad = IdsToDevice(bad);
  auto err = CrossEntropyForwardCuda(gl, gbad, rows, vocab, valid, glse, row_loss, nullptr);
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.status().message().find("row 5"), std::string::npos) << err.status();

  // Embedding: repeated ids accumulate in row order (bitwise the CPU sums).
  const auto table = Wave(valid * dim, 0.03f), dout = Wave(rows * dim, 0.21f);
  std::vector<int32_t> ids(rows);
  for (int64_t r = 0; r < rows; ++r) ids[r] = static_cast<int32_t>((r * 5) % 7);
  std::vector<float> out(rows * dim), dtable(valid * dim, 0.25f);
  ASSERT_TRUE(EmbeddingForward(table.data(), ids.data(), rows, valid, dim, out.data()).ok());
  ASSERT_TRUE(EmbeddingBackward(dout.data(), ids.data(), rows, valid, dim, dtable.data()).ok());
  float *gtab = ToDevice(table), *gout = ToDevice(std::vector<float>(rows * dim)),
        *gdo = ToDevice(dout), *gdt = ToDevice(std::vector<float>(valid * dim, 0.25f));
  int32_t* gids = IdsToDevice(ids);
  ASSERT_TRUE(EmbeddingForwardCuda(gtab, gids, rows, valid, dim, gout, nullptr).ok());
  EXPECT_EQ(ToHost(gout, rows * dim), out);
  ASSERT_TRUE(EmbeddingBackwardCuda(gdo, gids, rows, valid, dim, gdt, nullptr).ok());
  EXPECT_EQ(ToHost(gdt, valid * dim), dtable);
  EXPECT_FALSE(EmbeddingForwardCuda(gtab, gbad, rows, 3, dim, gout, nullptr).ok());
  for (float* p : {gl, glse, gdl, gtab, gout, gdo, gdt}) cudaFree(p);
  for (int32_t* p : {gt, gbad, gids}) cudaFree(p);
  cudaFree(row_loss);
}

}  // namespace
}  // namespace trireme::kernels
