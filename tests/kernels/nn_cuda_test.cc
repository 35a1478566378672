// GPU test: the model's CUDA kernels (cuBLAS GEMM, GELU, LayerNorm, RMSNorm,
// SwiGLU, causal and sliding-window attention, rotary embedding, grouped-query
// heads, attention against a key/value cache, cross-entropy, embedding)
// against the CPU kernels, on small shapes and on shapes past the old launch
// limits (more than 65535 blocks of columns, more than 2^20 rows, more than
// 2^31 elements). Fails, naming the missing device or driver, where there is
// no GPU (Bazel runs it only where it found one).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/nn.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"
#include "tests/gpu/gpu_test_util.h"

namespace trireme::kernels {
namespace {

using testing::DeviceArray;
using F = DeviceArray<float>;
using I = DeviceArray<int32_t>;

std::vector<float> Wave(size_t n, float f, float amp = 1.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = amp * std::sin(f * static_cast<float>(i % 100003) + 0.3f);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double tol,
                const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " at " << i;
  }
}

class Cublas {
 public:
  Cublas() { ok_ = cublasCreate(&h_) == CUBLAS_STATUS_SUCCESS; }
  ~Cublas() {
    if (ok_) cublasDestroy(h_);
  }
  bool ok() const { return ok_; }
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
  bool ok_ = false;
};

TEST(NnCuda, MatchesCpuKernels) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t m = 33, n = 17, k = 65;
  std::vector<float> a(m * k), b(k * n), c(m * n, 0.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.1f * i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::cos(0.2f * i);
  Gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  Cublas h;
  ASSERT_TRUE(h.ok());
  ASSERT_OK_AND_ASSIGN(F da, F::From(a));
  ASSERT_OK_AND_ASSIGN(F db, F::From(b));
  ASSERT_OK_AND_ASSIGN(F dc, F::From(std::vector<float>(m * n, 0.0f)));
  ASSERT_OK(GemmCuda(h.get(), false, false, m, n, k, 1.0f, da.get(), k, db.get(), n, DType::kF32,
                     0.0f, dc.get(), n));
  ASSERT_OK_AND_ASSIGN(std::vector<float> gc, dc.ToHost());
  ExpectNear(gc, c, 1e-4, "gemm");
  // GELU and LayerNorm on the product.
  std::vector<float> y(m * n);
  GeluForward(c.data(), m * n, y.data());
  ASSERT_OK_AND_ASSIGN(F dy, F::Allocate(m * n));
  ASSERT_OK(GeluForwardCuda(dc.get(), m * n, dy.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> gy, dy.ToHost());
  ExpectNear(gy, y, 1e-5, "gelu");
  std::vector<float> gamma(n, 1.5f), beta(n, -0.25f), ln(m * n), mean(m), rstd(m);
  LayerNormForward(c.data(), gamma.data(), beta.data(), m, n, 1e-5f, ln.data(), mean.data(),
                   rstd.data());
  ASSERT_OK_AND_ASSIGN(F dg, F::From(gamma));
  ASSERT_OK_AND_ASSIGN(F dbt, F::From(beta));
  ASSERT_OK_AND_ASSIGN(F dm, F::Allocate(m));
  ASSERT_OK_AND_ASSIGN(F dr, F::Allocate(m));
  ASSERT_OK(LayerNormForwardCuda(dc.get(), dg.get(), dbt.get(), m, n, 1e-5f, dy.get(), dm.get(),
                                 dr.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(gy, dy.ToHost());
  ExpectNear(gy, ln, 1e-5, "layernorm");
}

// LayerNorm backward of [rows, dim] on the GPU (dx in place of dy) against
// the CPU: dx to 1e-5, the parameter gradients bit for bit (columns summed
// in row order on both).
void ExpectLayerNormBackwardMatchesCpu(int64_t rows, int64_t dim) {
  const auto x = Wave(rows * dim, 0.37f, 2.0f), dy = Wave(rows * dim, 0.11f),
             gamma = Wave(dim, 0.05f);
  std::vector<float> beta(dim, 0.1f), y(rows * dim), mean(rows), rstd(rows), dx(rows * dim),
      dg(dim, 0.5f), db(dim, -0.5f);
  LayerNormForward(x.data(), gamma.data(), beta.data(), rows, dim, 1e-5f, y.data(), mean.data(),
                   rstd.data());
  LayerNormBackward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), rows, dim,
                    dx.data(), dg.data(), db.data());
  ASSERT_OK_AND_ASSIGN(F gx, F::From(x));
  ASSERT_OK_AND_ASSIGN(F gdy, F::From(dy));
  ASSERT_OK_AND_ASSIGN(F gg, F::From(gamma));
  ASSERT_OK_AND_ASSIGN(F gm, F::From(mean));
  ASSERT_OK_AND_ASSIGN(F gr, F::From(rstd));
  ASSERT_OK_AND_ASSIGN(F gdg, F::From(std::vector<float>(dim, 0.5f)));
  ASSERT_OK_AND_ASSIGN(F gdb, F::From(std::vector<float>(dim, -0.5f)));
  ASSERT_OK(LayerNormBackwardCuda(gdy.get(), gx.get(), gg.get(), gm.get(), gr.get(), rows, dim,
                                  gdy.get(), gdg.get(), gdb.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, gdy.ToHost());
  ExpectNear(got, dx, 1e-5, "dx (in place)");
  ASSERT_OK_AND_ASSIGN(got, gdg.ToHost());
  EXPECT_TRUE(got == dg) << "dgamma differs from the CPU's bits (last column " << got.back()
                         << " vs " << dg.back() << ")";
  ASSERT_OK_AND_ASSIGN(got, gdb.ToHost());
  EXPECT_TRUE(got == db) << "dbeta differs from the CPU's bits";
}

TEST(NnCuda, LayerNormBackwardMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  ExpectLayerNormBackwardMatchesCpu(7, 300);
}

TEST(NnCuda, CausalAttentionMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const AttentionShape s{2, 3, 37, 16};
  const int64_t n = s.batch * s.heads * s.seq * s.head_dim;
  const int64_t np = s.batch * s.heads * s.seq * s.seq;
  const auto q = Wave(n, 0.013f), k = Wave(n, 0.029f), v = Wave(n, 0.041f), dout = Wave(n, 0.007f);
  std::vector<float> probs(np), out(n), ws(CausalAttentionWorkspaceSize(s)), dq(n), dk(n), dv(n);
  CausalAttentionForward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
  CausalAttentionBackward(s, q.data(), k.data(), v.data(), probs.data(), dout.data(), ws.data(),
                          dq.data(), dk.data(), dv.data());
  Cublas h;
  ASSERT_TRUE(h.ok());
  ASSERT_OK_AND_ASSIGN(F gq, F::From(q));
  ASSERT_OK_AND_ASSIGN(F gk, F::From(k));
  ASSERT_OK_AND_ASSIGN(F gv, F::From(v));
  ASSERT_OK_AND_ASSIGN(F gdo, F::From(dout));
  ASSERT_OK_AND_ASSIGN(F gp, F::Allocate(np));
  ASSERT_OK_AND_ASSIGN(F go, F::Allocate(n));
  ASSERT_OK_AND_ASSIGN(F gws, F::Allocate(CausalAttentionWorkspaceSizeCuda(s)));
  ASSERT_OK_AND_ASSIGN(F gdq, F::Allocate(n));
  ASSERT_OK_AND_ASSIGN(F gdk, F::Allocate(n));
  ASSERT_OK_AND_ASSIGN(F gdv, F::Allocate(n));
  ASSERT_OK(
      CausalAttentionForwardCuda(h.get(), s, gq.get(), gk.get(), gv.get(), gp.get(), go.get()));
  ASSERT_OK(CausalAttentionBackwardCuda(h.get(), s, gq.get(), gk.get(), gv.get(), gp.get(),
                                        gdo.get(), gws.get(), gdq.get(), gdk.get(), gdv.get()));
  ASSERT_OK_AND_ASSIGN(std::vector<float> gprobs, gp.ToHost());
  ExpectNear(gprobs, probs, 1e-5, "probs");
  for (int64_t r = 0; r < s.batch * s.heads * s.seq; ++r) {  // exact zeros above the diagonal
    for (int64_t j = r % s.seq + 1; j < s.seq; ++j) ASSERT_EQ(gprobs[r * s.seq + j], 0.0f);
  }
  std::vector<float> got;
  ASSERT_OK_AND_ASSIGN(got, go.ToHost());
  ExpectNear(got, out, 1e-5, "out");
  ASSERT_OK_AND_ASSIGN(got, gdq.ToHost());
  ExpectNear(got, dq, 1e-4, "dq");
  ASSERT_OK_AND_ASSIGN(got, gdk.ToHost());
  ExpectNear(got, dk, 1e-4, "dk");
  ASSERT_OK_AND_ASSIGN(got, gdv.ToHost());
  ExpectNear(got, dv, 1e-5, "dv");
}

TEST(NnCuda, SlidingWindowAttentionMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  for (int64_t window : {1, 5, 36, 37, 100}) {
    SCOPED_TRACE(window);
    const AttentionShape s{2, 3, 37, 16, window};
    const int64_t n = s.batch * s.heads * s.seq * s.head_dim;
    const int64_t np = s.batch * s.heads * s.seq * s.seq;
    const auto q = Wave(n, 0.013f), k = Wave(n, 0.029f), v = Wave(n, 0.041f),
               dout = Wave(n, 0.007f);
    std::vector<float> probs(np), out(n), ws(CausalAttentionWorkspaceSize(s)), dq(n), dk(n), dv(n);
    CausalAttentionForward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
    CausalAttentionBackward(s, q.data(), k.data(), v.data(), probs.data(), dout.data(), ws.data(),
                            dq.data(), dk.data(), dv.data());
    Cublas h;
    ASSERT_TRUE(h.ok());
    ASSERT_OK_AND_ASSIGN(F gq, F::From(q));
    ASSERT_OK_AND_ASSIGN(F gk, F::From(k));
    ASSERT_OK_AND_ASSIGN(F gv, F::From(v));
    ASSERT_OK_AND_ASSIGN(F gdo, F::From(dout));
    ASSERT_OK_AND_ASSIGN(F gp, F::Allocate(np));
    ASSERT_OK(gp.Memset(0xff));  // NaN wherever the kernel does not write
    ASSERT_OK_AND_ASSIGN(F go, F::Allocate(n));
    ASSERT_OK_AND_ASSIGN(F gws, F::Allocate(CausalAttentionWorkspaceSizeCuda(s)));
    ASSERT_OK_AND_ASSIGN(F gdq, F::Allocate(n));
    ASSERT_OK_AND_ASSIGN(F gdk, F::Allocate(n));
    ASSERT_OK_AND_ASSIGN(F gdv, F::Allocate(n));
    ASSERT_OK(
        CausalAttentionForwardCuda(h.get(), s, gq.get(), gk.get(), gv.get(), gp.get(), go.get()));
    ASSERT_OK(CausalAttentionBackwardCuda(h.get(), s, gq.get(), gk.get(), gv.get(), gp.get(),
                                          gdo.get(), gws.get(), gdq.get(), gdk.get(), gdv.get()));
    ASSERT_OK_AND_ASSIGN(std::vector<float> gprobs, gp.ToHost());
    ExpectNear(gprobs, probs, 1e-5, "probs");
    for (int64_t r = 0; r < s.batch * s.heads * s.seq; ++r) {  // exact zeros outside the window
      const int64_t t = r % s.seq;
      for (int64_t j = 0; j < s.seq; ++j) {
        if (j > t || j <= t - window) {
          ASSERT_EQ(gprobs[r * s.seq + j], 0.0f) << t << ", " << j;
        }
      }
    }
    std::vector<float> got;
    ASSERT_OK_AND_ASSIGN(got, go.ToHost());
    ExpectNear(got, out, 1e-5, "out");
    ASSERT_OK_AND_ASSIGN(got, gdq.ToHost());
    ExpectNear(got, dq, 1e-4, "dq");
    ASSERT_OK_AND_ASSIGN(got, gdk.ToHost());
    ExpectNear(got, dk, 1e-4, "dk");
    ASSERT_OK_AND_ASSIGN(got, gdv.ToHost());
    ExpectNear(got, dv, 1e-5, "dv");
  }
}

// RMSNorm forward (y in place of x) and backward (dx in place of dy) against
// the CPU: y, rstd, dx to 1e-5, dgamma bit for bit (columns in row order).
TEST(NnCuda, RmsNormMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t rows = 29, dim = 700;
  const auto x = Wave(rows * dim, 0.37f, 2.0f), dy = Wave(rows * dim, 0.11f),
             gamma = Wave(dim, 0.05f);
  std::vector<float> y(rows * dim), rstd(rows), dx(rows * dim), dg(dim, 0.5f);
  RmsNormForward(x.data(), gamma.data(), rows, dim, 1e-5f, y.data(), rstd.data());
  RmsNormBackward(dy.data(), x.data(), gamma.data(), rstd.data(), rows, dim, dx.data(), dg.data());
  ASSERT_OK_AND_ASSIGN(F gx, F::From(x));
  ASSERT_OK_AND_ASSIGN(F gy, F::From(x));
  ASSERT_OK_AND_ASSIGN(F gdy, F::From(dy));
  ASSERT_OK_AND_ASSIGN(F gg, F::From(gamma));
  ASSERT_OK_AND_ASSIGN(F gr, F::Allocate(rows));
  ASSERT_OK_AND_ASSIGN(F gdg, F::From(std::vector<float>(dim, 0.5f)));
  ASSERT_OK(RmsNormForwardCuda(gy.get(), gg.get(), rows, dim, 1e-5f, gy.get(), gr.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, gy.ToHost());
  ExpectNear(got, y, 1e-5, "y (in place)");
  ASSERT_OK_AND_ASSIGN(got, gr.ToHost());
  ExpectNear(got, rstd, 1e-6, "rstd");
  // The backward from the CPU's rstd, so dgamma's terms are the same floats.
  ASSERT_OK_AND_ASSIGN(F gr_cpu, F::From(rstd));
  ASSERT_OK(RmsNormBackwardCuda(gdy.get(), gx.get(), gg.get(), gr_cpu.get(), rows, dim, gdy.get(),
                                gdg.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(got, gdy.ToHost());
  ExpectNear(got, dx, 1e-5, "dx (in place)");
  ASSERT_OK_AND_ASSIGN(got, gdg.ToHost());
  EXPECT_TRUE(got == dg) << "dgamma differs from the CPU's bits";
}

TEST(NnCuda, SwiGluMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t n = 100003;
  const auto gate = Wave(n, 0.013f, 9.0f), up = Wave(n, 0.071f, 2.0f), dy = Wave(n, 0.029f);
  std::vector<float> y(n), dgate(n), dup(n);
  SwiGluForward(gate.data(), up.data(), n, y.data());
  SwiGluBackward(gate.data(), up.data(), dy.data(), n, dgate.data(), dup.data());
  ASSERT_OK_AND_ASSIGN(F gg, F::From(gate));
  ASSERT_OK_AND_ASSIGN(F gu, F::From(up));
  ASSERT_OK_AND_ASSIGN(F gdy, F::From(dy));
  ASSERT_OK_AND_ASSIGN(F gy, F::Allocate(n));
  ASSERT_OK_AND_ASSIGN(F gdu, F::Allocate(n));
  ASSERT_OK(SwiGluForwardCuda(gg.get(), gu.get(), n, gy.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, gy.ToHost());
  ExpectNear(got, y, 1e-5, "y");
  // dgate in place of dy.
  ASSERT_OK(SwiGluBackwardCuda(gg.get(), gu.get(), gdy.get(), n, gdy.get(), gdu.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(got, gdy.ToHost());
  ExpectNear(got, dgate, 1e-5, "dgate (in place)");
  ASSERT_OK_AND_ASSIGN(got, gdu.ToHost());
  ExpectNear(got, dup, 1e-5, "dup");
}

TEST(NnCuda, RotaryMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const AttentionShape s{2, 5, 129, 64};
  const int64_t n = s.batch * s.heads * s.seq * s.head_dim;
  const auto x = Wave(n, 0.017f, 3.0f);
  for (bool inverse : {false, true}) {
    SCOPED_TRACE(inverse ? "inverse" : "forward");
    std::vector<float> want = x;
    Rotary(want.data(), s, 4000, 10000.0f, inverse);
    ASSERT_OK_AND_ASSIGN(F gx, F::From(x));
    ASSERT_OK(RotaryCuda(gx.get(), s, 4000, 10000.0f, inverse, nullptr));
    ASSERT_OK_AND_ASSIGN(std::vector<float> got, gx.ToHost());
    ExpectNear(got, want, 1e-6, "rotary");
  }
}

// Both bit for bit: copies, and the group's heads added in the CPU's order.
TEST(NnCuda, KvHeadsMatchCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const AttentionShape s{3, 8, 33, 16};
  const int64_t n = s.batch * s.heads * s.seq * s.head_dim;
  for (int64_t kv_heads : {1, 2, 8}) {
    SCOPED_TRACE(kv_heads);
    const int64_t kv_n = n / s.heads * kv_heads;
    const auto kv = Wave(kv_n, 0.031f), grad = Wave(n, 0.0173f);
    std::vector<float> rep(n), sum(kv_n);
    RepeatKvHeads(kv.data(), s, kv_heads, rep.data());
    SumKvHeads(grad.data(), s, kv_heads, sum.data());
    ASSERT_OK_AND_ASSIGN(F gkv, F::From(kv));
    ASSERT_OK_AND_ASSIGN(F ggrad, F::From(grad));
    ASSERT_OK_AND_ASSIGN(F grep, F::Allocate(n));
    ASSERT_OK_AND_ASSIGN(F gsum, F::Allocate(kv_n));
    ASSERT_OK(RepeatKvHeadsCuda(gkv.get(), s, kv_heads, grep.get(), nullptr));
    ASSERT_OK(SumKvHeadsCuda(ggrad.get(), s, kv_heads, gsum.get(), nullptr));
    ASSERT_OK_AND_ASSIGN(std::vector<float> got, grep.ToHost());
    EXPECT_TRUE(got == rep) << "RepeatKvHeads differs from the CPU";
    ASSERT_OK_AND_ASSIGN(got, gsum.ToHost());
    EXPECT_TRUE(got == sum) << "SumKvHeads differs from the CPU's bits";
  }
  ASSERT_OK_AND_ASSIGN(F g, F::Allocate(n));
  EXPECT_EQ(RepeatKvHeadsCuda(g.get(), s, 3, g.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SumKvHeadsCuda(g.get(), s, 0, g.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Cached attention against the CPU on rows longer than a block (tiles of
// positions) and head_dim past a block's threads, with and without a ring;
// the cache writes bit for bit.
TEST(NnCuda, CachedAttentionMatchesCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const CachedAttentionShape shapes[] = {
      // batch, heads, kv_heads, queries, head_dim, first_pos, capacity, window
      {2, 8, 2, 7, 64, 500, 600, 0},     // a whole cache
      {1, 4, 4, 1, 300, 999, 1000, 0},   // one position, head_dim > 256
      {2, 6, 3, 5, 32, 1000, 304, 300},  // a ring: slots reused
      {3, 2, 1, 1, 16, 7, 1, 1},         // window 1
  };
  for (const CachedAttentionShape& c : shapes) {
    SCOPED_TRACE(absl::StrCat("capacity ", c.capacity, ", window ", c.window));
    const int64_t q_n = c.batch * c.heads * c.queries * c.head_dim;
    const int64_t src_n = c.batch * c.kv_heads * c.queries * c.head_dim;
    const int64_t cache_n = c.batch * c.kv_heads * c.capacity * c.head_dim;
    const auto q = Wave(q_n, 0.013f, 1.5f), k_src = Wave(src_n, 0.029f, 1.5f),
               v_src = Wave(src_n, 0.041f);
    std::vector<float> k = Wave(cache_n, 0.0071f, 1.5f), v = Wave(cache_n, 0.017f), out(q_n);
    ASSERT_OK_AND_ASSIGN(F gk, F::From(k));
    ASSERT_OK_AND_ASSIGN(F gv, F::From(v));
    WriteKvCache(c, k_src.data(), k.data());
    WriteKvCache(c, v_src.data(), v.data());
    CachedAttention(c, q.data(), k.data(), v.data(), out.data());
    ASSERT_OK_AND_ASSIGN(F gks, F::From(k_src));
    ASSERT_OK_AND_ASSIGN(F gvs, F::From(v_src));
    ASSERT_OK_AND_ASSIGN(F gq, F::From(q));
    ASSERT_OK_AND_ASSIGN(F go, F::Allocate(q_n));
    ASSERT_OK(WriteKvCacheCuda(c, gks.get(), gk.get(), nullptr));
    ASSERT_OK(WriteKvCacheCuda(c, gvs.get(), gv.get(), nullptr));
    ASSERT_OK(CachedAttentionCuda(c, gq.get(), gk.get(), gv.get(), go.get(), nullptr));
    ASSERT_OK_AND_ASSIGN(std::vector<float> got, gk.ToHost());
    EXPECT_TRUE(got == k) << "the key cache differs from the CPU's";
    ASSERT_OK_AND_ASSIGN(got, gv.ToHost());
    EXPECT_TRUE(got == v) << "the value cache differs from the CPU's";
    ASSERT_OK_AND_ASSIGN(got, go.ToHost());
    ExpectNear(got, out, 1e-5, "out");
  }
  CachedAttentionShape bad = shapes[0];
  bad.capacity = 506;  // < first_pos 500 + queries 7, no window
  ASSERT_OK_AND_ASSIGN(F g, F::Allocate(1));
  EXPECT_EQ(CachedAttentionCuda(bad, g.get(), g.get(), g.get(), g.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteKvCacheCuda(bad, g.get(), g.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NnCuda, CrossEntropyAndEmbeddingMatchCpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t rows = 19, vocab = 260, valid = 257, dim = 24;
  const auto logits = Wave(rows * vocab, 0.17f, 4.0f);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 37) % valid);
  std::vector<float> lse(rows), dl(rows * vocab);
  auto loss = CrossEntropyForward(logits.data(), targets.data(), rows, vocab, valid, lse.data());
  ASSERT_TRUE(loss.ok());
  ASSERT_OK(CrossEntropyBackward(logits.data(), targets.data(), lse.data(), rows, vocab, valid,
                                 2.0f, dl.data()));
  ASSERT_OK_AND_ASSIGN(F gl, F::From(logits));
  ASSERT_OK_AND_ASSIGN(F glse, F::Allocate(rows));
  ASSERT_OK_AND_ASSIGN(F gdl, F::From(std::vector<float>(rows * vocab, 7.0f)));
  ASSERT_OK_AND_ASSIGN(I gt, I::From(targets));
  auto gloss = CrossEntropyForwardCuda(gl.get(), gt.get(), rows, vocab, valid, glse.get(), nullptr);
  ASSERT_TRUE(gloss.ok()) << gloss.status();
  EXPECT_NEAR(*gloss, *loss, 1e-5 * *loss);
  std::vector<float> got;
  ASSERT_OK_AND_ASSIGN(got, glse.ToHost());
  ExpectNear(got, lse, 1e-6, "lse");
  ASSERT_OK(CrossEntropyBackwardCuda(gl.get(), gt.get(), glse.get(), rows, vocab, valid, 2.0f,
                                     gdl.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(got, gdl.ToHost());
  ExpectNear(got, dl, 1e-5, "dlogits (padding zeroed)");
  // A bad target is named before anything is written.
  std::vector<int32_t> bad = targets;
  bad[5] = static_cast<int32_t>(valid);
  ASSERT_OK_AND_ASSIGN(I gbad, I::From(bad));
  auto err = CrossEntropyForwardCuda(gl.get(), gbad.get(), rows, vocab, valid, glse.get(), nullptr);
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.status().message().find("row 5"), std::string::npos) << err.status();

  // Embedding: repeated ids accumulate in row order (bitwise the CPU sums).
  const auto table = Wave(valid * dim, 0.03f), dout = Wave(rows * dim, 0.21f);
  std::vector<int32_t> ids(rows);
  for (int64_t r = 0; r < rows; ++r) ids[r] = static_cast<int32_t>((r * 5) % 7);
  std::vector<float> out(rows * dim), dtable(valid * dim, 0.25f);
  ASSERT_OK(EmbeddingForward(table.data(), ids.data(), rows, valid, dim, out.data()));
  ASSERT_OK(EmbeddingBackward(dout.data(), ids.data(), rows, valid, dim, dtable.data()));
  ASSERT_OK_AND_ASSIGN(F gtab, F::From(table));
  ASSERT_OK_AND_ASSIGN(F gout, F::Allocate(rows * dim));
  ASSERT_OK_AND_ASSIGN(F gdo, F::From(dout));
  ASSERT_OK_AND_ASSIGN(F gdt, F::From(std::vector<float>(valid * dim, 0.25f)));
  ASSERT_OK_AND_ASSIGN(I gids, I::From(ids));
  ASSERT_OK(EmbeddingForwardCuda(gtab.get(), gids.get(), rows, valid, dim, gout.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(got, gout.ToHost());
  EXPECT_EQ(got, out);
  ASSERT_OK(EmbeddingBackwardCuda(gdo.get(), gids.get(), rows, valid, dim, gdt.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(got, gdt.ToHost());
  EXPECT_EQ(got, dtable);
  EXPECT_FALSE(
      EmbeddingForwardCuda(gtab.get(), gbad.get(), rows, 3, dim, gout.get(), nullptr).ok());
}

// Columns past 65535 blocks of 256 threads: the LayerNorm parameter gradient
// and the embedding backward used to skip them (no stride loop).
TEST(NnCudaLarge, ColumnsPastTheOldGridLimit) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t dim = 65535LL * 256 + 1001;
  ExpectLayerNormBackwardMatchesCpu(2, dim);
  // Embedding backward over the same width: 3 ids into a 2-row table.
  const std::vector<int32_t> ids = {1, 0, 1};
  const auto dout = Wave(3 * dim, 0.21f);
  std::vector<float> dtable(2 * dim, 0.25f);
  ASSERT_OK(EmbeddingBackward(dout.data(), ids.data(), 3, 2, dim, dtable.data()));
  ASSERT_OK_AND_ASSIGN(F gdo, F::From(dout));
  ASSERT_OK_AND_ASSIGN(F gdt, F::From(std::vector<float>(2 * dim, 0.25f)));
  ASSERT_OK_AND_ASSIGN(I gids, I::From(ids));
  ASSERT_OK(EmbeddingBackwardCuda(gdo.get(), gids.get(), 3, 2, dim, gdt.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, gdt.ToHost());
  EXPECT_TRUE(got == dtable) << "embedding gradient differs from the CPU";
}

// More rows than the row kernels' block cap (2^20), so each block strides.
TEST(NnCudaLarge, RowsPastTheBlockCap) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t rows = (1 << 20) + 77, dim = 5;
  const auto x = Wave(rows * dim, 0.37f, 2.0f), gamma = Wave(dim, 0.05f);
  std::vector<float> beta(dim, 0.1f), y(rows * dim), mean(rows), rstd(rows);
  LayerNormForward(x.data(), gamma.data(), beta.data(), rows, dim, 1e-5f, y.data(), mean.data(),
                   rstd.data());
  ASSERT_OK_AND_ASSIGN(F gx, F::From(x));
  ASSERT_OK_AND_ASSIGN(F gg, F::From(gamma));
  ASSERT_OK_AND_ASSIGN(F gb, F::From(beta));
  ASSERT_OK_AND_ASSIGN(F gy, F::Allocate(rows * dim));
  ASSERT_OK(gy.Memset(0xff));
  ASSERT_OK_AND_ASSIGN(F gm, F::Allocate(rows));
  ASSERT_OK_AND_ASSIGN(F gr, F::Allocate(rows));
  ASSERT_OK(LayerNormForwardCuda(gx.get(), gg.get(), gb.get(), rows, dim, 1e-5f, gy.get(), gm.get(),
                                 gr.get(), nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, gy.ToHost());
  ExpectNear(got, y, 1e-5, "layernorm rows past 2^20");
}

// More than 2^31 elements: a GEMM whose product has 2^31 + 2^16 + ... floats
// (sizes past int in the 64-bit cuBLAS call), and cross-entropy over a
// [rows, vocab] block of more than 2^31 logits. Checked on the rows at the
// end, where the index exceeds 2^31.
TEST(NnCudaLarge, MoreThanTwoToThe31Elements) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t big = (int64_t{1} << 31) + 4099;
  {
    const int64_t m = 65537, k = 2, n = big / m + 1;  // m * n > 2^31
    std::vector<float> a(m * k), b(k * n);
    for (int64_t i = 0; i < m * k; ++i) a[i] = static_cast<float>(i % 7) - 3.0f;
    for (int64_t i = 0; i < k * n; ++i) b[i] = static_cast<float>(i % 5) - 2.0f;
    Cublas h;
    ASSERT_TRUE(h.ok());
    ASSERT_OK_AND_ASSIGN(F da, F::From(a));
    ASSERT_OK_AND_ASSIGN(F db, F::From(b));
    ASSERT_OK_AND_ASSIGN(F dc, F::Allocate(m * n));
    ASSERT_OK(dc.Memset(0xff));
    ASSERT_OK(GemmCuda(h.get(), false, false, m, n, k, 1.0f, da.get(), k, db.get(), n, DType::kF32,
                       0.0f, dc.get(), n));
    for (int64_t row : {int64_t{0}, m / 2, m - 1}) {
      ASSERT_OK_AND_ASSIGN(std::vector<float> got, dc.SliceToHost(row * n, n));
      for (int64_t j = 0; j < n; ++j) {
        const float want = a[row * k] * b[j] + a[row * k + 1] * b[n + j];  // small integers
        ASSERT_EQ(got[j], want) << "C[" << row << ", " << j << "]";
      }
    }
  }
  {
    const int64_t vocab = 262147, rows = big / vocab + 2, valid = vocab - 3;
    std::vector<float> logits(rows * vocab);
    for (int64_t i = 0; i < rows * vocab; ++i) {
      logits[i] = 0.001f * static_cast<float>((i * 2654435761LL) % 2001 - 1000);
    }
    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 7919) % valid);
    ASSERT_OK_AND_ASSIGN(F gl, F::From(logits));
    ASSERT_OK_AND_ASSIGN(I gt, I::From(targets));
    ASSERT_OK_AND_ASSIGN(F glse, F::Allocate(rows));
    ASSERT_OK_AND_ASSIGN(F gdl, F::Allocate(rows * vocab));
    ASSERT_OK(gdl.Memset(0xff));  // NaN wherever the kernel does not write
    auto loss =
        CrossEntropyForwardCuda(gl.get(), gt.get(), rows, vocab, valid, glse.get(), nullptr);
    ASSERT_TRUE(loss.ok()) << loss.status();
    ASSERT_OK(CrossEntropyBackwardCuda(gl.get(), gt.get(), glse.get(), rows, vocab, valid, 1.0f,
                                       gdl.get(), nullptr));
    ASSERT_OK_AND_ASSIGN(std::vector<float> lse, glse.ToHost());
    // The last two rows, one at a time on the CPU (the gradient's 1/rows scale
    // is the full batch's: the CPU kernel gets scale rows_cpu / rows).
    for (int64_t r : {rows - 2, rows - 1}) {
      const float* row = logits.data() + r * vocab;
      float want_lse = 0;
      std::vector<float> want_dl(vocab);
      ASSERT_TRUE(CrossEntropyForward(row, &targets[r], 1, vocab, valid, &want_lse).ok());
      ASSERT_OK(CrossEntropyBackward(row, &targets[r], &want_lse, 1, vocab, valid,
                                     1.0f / static_cast<float>(rows), want_dl.data()));
      EXPECT_NEAR(lse[r], want_lse, 1e-5 * (1 + std::fabs(want_lse))) << "lse of row " << r;
      ASSERT_OK_AND_ASSIGN(std::vector<float> got, gdl.SliceToHost(r * vocab, vocab));
      for (int64_t j = 0; j < vocab; ++j) {  // relative: the values are about 1 / (rows vocab)
        ASSERT_NEAR(got[j], want_dl[j], 1e-4 * std::fabs(want_dl[j]))
            << "dlogits[" << r << ", " << j << "], past element 2^31";
      }
    }
  }
}

}  // namespace
}  // namespace trireme::kernels
