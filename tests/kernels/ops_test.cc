// The stream launchers of kernels/ops.h on the host devices: every launcher
// runs on the cpu device's InlineStream and on a cpu_async CpuStream, with its
// buffers allocated on that device and filled and read back by the Copy
// launcher, and its results must be bitwise identical to the plain CPU kernel
// (kernels/nn.h, optim.h, cast.h, gemm.h) called directly on host copies of
// the same inputs -- so the two devices are bitwise identical to each other as
// well. Plus: on the meta device nothing runs; a CpuStream runs behind the
// host; a kernel's error becomes the stream's sticky error.
//
// Shapes are small and uneven (7 x 13; attention 2 x 3 x 5 x 4).
//
// Compiled a second time with TRIREME_OPS_TEST_CUDA as the GPU test
// ops_cuda_test: the same cases on a CUDA stream of cuda:0 against the same
// plain CPU kernels. There the integer and 16-bit arrays must match bytewise,
// f32 and f64 arrays to a relative 1e-5 (GEMMs, attention and the reductions
// sum in another order) -- except where the CUDA kernel promises the CPU's
// bits (column sums in row order, the optimizer's element bodies), which the
// cases say with ExactOnCuda.
#include "kernels/ops.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"
#include "kernels/optim.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "tests/kernels/test_util.h"
#include "tests/runtime/core/gate.h"

#ifdef TRIREME_OPS_TEST_CUDA
#include "kernels/cuda/nn.h"
#include "tests/gpu/gpu_test_util.h"
#endif

namespace trireme::kernels {
namespace {

using ::trireme::testing::Gate;

using testing::Random;

constexpr int64_t kRows = 7;
constexpr int64_t kCols = 13;
constexpr int64_t kN = kRows * kCols;
constexpr AttentionShape kAttn{2, 3, 5, 4};  // batch, heads, seq, head_dim
constexpr int64_t kAttnN = 2 * 3 * 5 * 4;
constexpr int64_t kProbsN = 2 * 3 * 5 * 5;

// One argument array of a kernel, as host bytes.
struct Array {
  std::string name;
  std::vector<char> bytes;
  char kind = 'f';      // 'f' f32, 'd' f64, 'o' other (compared bytewise)
  bool compare = true;  // false for scratch whose contents are undefined
  bool exact = false;   // bitwise on CUDA too (see the file comment)
};

template <typename T>
Array Make(std::string name, const std::vector<T>& v, char kind) {
  Array a{std::move(name), std::vector<char>(v.size() * sizeof(T)), kind};
  std::memcpy(a.bytes.data(), v.data(), a.bytes.size());
  return a;
}
Array F32(std::string name, const std::vector<float>& v) { return Make(std::move(name), v, 'f'); }
Array I32(std::string name, const std::vector<int32_t>& v) { return Make(std::move(name), v, 'o'); }
Array F64(std::string name, const std::vector<double>& v) { return Make(std::move(name), v, 'd'); }
Array ExactOnCuda(Array a) {
  a.exact = true;
  return a;
}
// n elements of a 16-bit dtype: the f32 values `v` rounded to it.
Array Half(std::string name, DType dtype, const std::vector<float>& v) {
  Array a{std::move(name), std::vector<char>(v.size() * 2), 'o'};
  EXPECT_TRUE(CastCpu(v.data(), DType::kF32, a.bytes.data(), dtype, v.size()).ok());
  return a;
}
Array Scratch(std::string name, int64_t floats) {
  Array a = F32(std::move(name), std::vector<float>(floats, 0.0f));
  a.compare = false;
  return a;
}

using Ptrs = std::vector<void*>;
using LaunchFn = std::function<absl::Status(Stream&, const Ptrs&)>;
using KernelFn = std::function<void(const Ptrs&)>;

float* F(void* p) { return static_cast<float*>(p); }
int32_t* I(void* p) { return static_cast<int32_t*>(p); }
double* D(void* p) { return static_cast<double*>(p); }

// Index of the first differing byte, or -1.
int64_t FirstDifference(const std::vector<char>& a, const std::vector<char>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

// Index of the first element of `got` farther than a relative 1e-5 from
// `want` (NaNs must be NaN on both sides), or -1.
template <typename T>
int64_t FirstNotNear(const std::vector<char>& got, const std::vector<char>& want) {
  const size_t n = want.size() / sizeof(T);
  std::vector<T> g(n), w(n);
  std::memcpy(g.data(), got.data(), n * sizeof(T));
  std::memcpy(w.data(), want.data(), n * sizeof(T));
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(w[i]) != std::isnan(g[i])) return static_cast<int64_t>(i);
    if (std::isnan(w[i]) || g[i] == w[i]) continue;
    const double tol = 1e-5 * (1.0 + std::fabs(static_cast<double>(w[i])));
    if (!(std::fabs(static_cast<double>(g[i]) - static_cast<double>(w[i])) <= tol)) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

struct DeviceCase {
  const char* name;
  Device device;
};

class OpsTest : public ::testing::TestWithParam<DeviceCase> {
 protected:
  void SetUp() override {
#ifdef TRIREME_OPS_TEST_CUDA
    TRIREME_REQUIRE_CUDA_DEVICE();
#endif
    absl::StatusOr<std::unique_ptr<Stream>> s = NewStream(GetParam().device, "ops");
    ASSERT_TRUE(s.ok()) << s.status();
    stream_ = std::move(*s);
  }

  // Runs `launch` on the stream with device copies of `arrays`, and `kernel`
  // on host copies; afterwards every array (inputs too: some kernels write in
  // place) must hold the same bytes on both sides.
  void ExpectMatchesKernel(const std::vector<Array>& arrays, const LaunchFn& launch,
                           const KernelFn& kernel) {
    std::vector<Array> expected = arrays;
    Ptrs host;
    for (Array& a : expected) host.push_back(a.bytes.data());
    kernel(host);

    std::vector<Array> actual = arrays;
    std::vector<Buffer> buffers;
    Ptrs dev;
    for (const Array& a : arrays) {
      const int64_t bytes = static_cast<int64_t>(a.bytes.size());
      absl::StatusOr<Buffer> b = Buffer::Allocate(GetParam().device, bytes, MemCategory::kWorkspace,
                                                  &tracker_, stream_.get());
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_TRUE(Copy(*stream_, b->data(), a.bytes.data(), bytes).ok());
      dev.push_back(b->data());
      buffers.push_back(std::move(*b));
    }
    const absl::Status launched = launch(*stream_, dev);
    ASSERT_TRUE(launched.ok()) << launched;
    for (size_t i = 0; i < arrays.size(); ++i) {
      ASSERT_TRUE(Copy(*stream_, actual[i].bytes.data(), dev[i], actual[i].bytes.size()).ok());
    }
    const absl::Status synced = stream_->Synchronize();
    ASSERT_TRUE(synced.ok()) << synced;

    const bool near = GetParam().device.kind == DeviceKind::kCuda;
    for (size_t i = 0; i < arrays.size(); ++i) {
      if (!arrays[i].compare) continue;
      ASSERT_EQ(actual[i].bytes.size(), expected[i].bytes.size());
      if (near && !arrays[i].exact && arrays[i].kind == 'f') {
        EXPECT_EQ(FirstNotNear<float>(actual[i].bytes, expected[i].bytes), -1)
            << arrays[i].name << " is not within 1e-5 of the CPU kernel's at that element";
        continue;
      }
      if (near && !arrays[i].exact && arrays[i].kind == 'd') {
        EXPECT_EQ(FirstNotNear<double>(actual[i].bytes, expected[i].bytes), -1)
            << arrays[i].name << " is not within 1e-5 of the CPU kernel's at that element";
        continue;
      }
      EXPECT_EQ(
          std::memcmp(actual[i].bytes.data(), expected[i].bytes.data(), expected[i].bytes.size()),
          0)
          << arrays[i].name << " differs from the plain kernel's from byte "
          << FirstDifference(actual[i].bytes, expected[i].bytes);
    }
  }

  std::unique_ptr<Stream> stream_;
  MemoryTracker tracker_;
};

// ---- memory ------------------------------------------------------------------

TEST_P(OpsTest, MemsetZeroesOnlyTheGivenBytes) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 1))},
      [](Stream& s, const Ptrs& p) { return Memset(s, p[0], 10 * sizeof(float)); },
      [](const Ptrs& p) { std::memset(p[0], 0, 10 * sizeof(float)); });
}

TEST_P(OpsTest, CopyOnTheDevice) {
  ExpectMatchesKernel(
      {F32("src", Random(kN, 2)), F32("dst", Random(kN, 3))},
      [](Stream& s, const Ptrs& p) { return Copy(s, p[1], p[0], (kN - 3) * sizeof(float)); },
      [](const Ptrs& p) { std::memcpy(p[1], p[0], (kN - 3) * sizeof(float)); });
}

// ---- element-wise ---------------------------------------------------------------

TEST_P(OpsTest, CastBetweenFloatDTypes) {
  const std::vector<float> values = Random(kN, 4, -100.0f, 100.0f);
  using Pair = std::pair<DType, DType>;
  for (const auto& [from, to] :
       {Pair{DType::kF32, DType::kBF16}, Pair{DType::kF32, DType::kF16},
        Pair{DType::kBF16, DType::kF32}, Pair{DType::kF16, DType::kBF16}}) {
    SCOPED_TRACE(absl::StrCat(DTypeName(from), " -> ", DTypeName(to)));
    Array in = from == DType::kF32 ? F32("in", values) : Half("in", from, values);
    Array out = to == DType::kF32 ? F32("out", Random(kN, 5)) : Half("out", to, Random(kN, 5));
    ExpectMatchesKernel(
        {in, out},
        [from = from, to = to](Stream& s, const Ptrs& p) {
          return Cast(s, p[0], from, p[1], to, kN, /*threads=*/2);
        },
        [from = from, to = to](const Ptrs& p) {
          EXPECT_TRUE(CastCpu(p[0], from, p[1], to, kN).ok());
        });
  }
}

// AccumulateCast has no plain kernel: the reference is the loop of its
// contract, the sum in f32 rounded once.
void AccumulateCastReference(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                             bool add) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = LoadAsF32(in, in_dtype, i);
    const float sum = add ? LoadAsF32(out, out_dtype, i) + v : v;
    StoreFromF32(out, out_dtype, i, sum);
  }
}

TEST_P(OpsTest, AccumulateCast) {
  struct Case {
    DType in, out;
    bool add;
  };
  for (const Case& c :
       {Case{DType::kF32, DType::kBF16, true}, Case{DType::kF32, DType::kBF16, false},
        Case{DType::kBF16, DType::kF32, true}, Case{DType::kF16, DType::kF16, true}}) {
    SCOPED_TRACE(absl::StrCat(DTypeName(c.in), " -> ", DTypeName(c.out), c.add ? " add" : ""));
    Array in = c.in == DType::kF32 ? F32("in", Random(kN, 6)) : Half("in", c.in, Random(kN, 6));
    Array out =
        c.out == DType::kF32 ? F32("out", Random(kN, 7)) : Half("out", c.out, Random(kN, 7));
    ExpectMatchesKernel(
        {in, out},
        [c](Stream& s, const Ptrs& p) {
          return AccumulateCast(s, p[0], c.in, p[1], c.out, kN, c.add);
        },
        [c](const Ptrs& p) { AccumulateCastReference(p[0], c.in, p[1], c.out, kN, c.add); });
  }
}

TEST_P(OpsTest, Add) {
  ExpectMatchesKernel(
      {F32("a", Random(kN, 8)), F32("b", Random(kN, 9)), F32("out", Random(kN, 10))},
      [](Stream& s, const Ptrs& p) { return Add(s, F(p[0]), F(p[1]), kN, F(p[2])); },
      [](const Ptrs& p) { kernels::Add(F(p[0]), F(p[1]), kN, F(p[2])); });
}

TEST_P(OpsTest, AddInPlace) {
  ExpectMatchesKernel(
      {F32("a", Random(kN, 11)), F32("b", Random(kN, 12))},
      [](Stream& s, const Ptrs& p) { return Add(s, F(p[0]), F(p[1]), kN, F(p[0])); },
      [](const Ptrs& p) { kernels::Add(F(p[0]), F(p[1]), kN, F(p[0])); });
}

TEST_P(OpsTest, AddBias) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 13)), F32("bias", Random(kCols, 14))},
      [](Stream& s, const Ptrs& p) { return AddBias(s, F(p[0]), F(p[1]), kRows, kCols); },
      [](const Ptrs& p) { kernels::AddBias(F(p[0]), F(p[1]), kRows, kCols); });
}

TEST_P(OpsTest, AddColumnSums) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 15)), ExactOnCuda(F32("sums", Random(kCols, 16)))},
      [](Stream& s, const Ptrs& p) { return AddColumnSums(s, F(p[0]), kRows, kCols, F(p[1])); },
      [](const Ptrs& p) { kernels::AddColumnSums(F(p[0]), kRows, kCols, F(p[1])); });
}

TEST_P(OpsTest, AddPositions) {
  constexpr int64_t kSeq = 3, kFirst = 2;
  ExpectMatchesKernel(
      {F32("x", Random(kN, 17)), F32("table", Random(kSeq * kCols, 18))},
      [](Stream& s, const Ptrs& p) {
        return AddPositions(s, F(p[0]), F(p[1]), kRows, kFirst, kSeq, kCols);
      },
      [](const Ptrs& p) { kernels::AddPositions(F(p[0]), F(p[1]), kRows, kFirst, kSeq, kCols); });
}

TEST_P(OpsTest, AddPositionsBackward) {
  constexpr int64_t kSeq = 3, kFirst = 2;
  ExpectMatchesKernel(
      {F32("dx", Random(kN, 19)), ExactOnCuda(F32("dtable", Random(kSeq * kCols, 20)))},
      [](Stream& s, const Ptrs& p) {
        return AddPositionsBackward(s, F(p[0]), kRows, kFirst, kSeq, kCols, F(p[1]));
      },
      [](const Ptrs& p) {
        kernels::AddPositionsBackward(F(p[0]), kRows, kFirst, kSeq, kCols, F(p[1]));
      });
}

// Rows [batch * seq, ld] with the head group's 12 columns at [5, 17).
constexpr int64_t kLd = 20, kCol = 5;

TEST_P(OpsTest, RowsToHeads) {
  ExpectMatchesKernel(
      {F32("rows", Random(kAttn.batch * kAttn.seq * kLd, 21)), F32("heads", Random(kAttnN, 22))},
      [](Stream& s, const Ptrs& p) { return RowsToHeads(s, F(p[0]), kLd, kCol, kAttn, F(p[1])); },
      [](const Ptrs& p) { kernels::RowsToHeads(F(p[0]), kLd, kCol, kAttn, F(p[1])); });
}

TEST_P(OpsTest, HeadsToRowsLeavesOtherColumns) {
  ExpectMatchesKernel(
      {F32("heads", Random(kAttnN, 23)), F32("rows", Random(kAttn.batch * kAttn.seq * kLd, 24))},
      [](Stream& s, const Ptrs& p) { return HeadsToRows(s, F(p[0]), kAttn, F(p[1]), kLd, kCol); },
      [](const Ptrs& p) { kernels::HeadsToRows(F(p[0]), kAttn, F(p[1]), kLd, kCol); });
}

// ---- layers -----------------------------------------------------------------------

TEST_P(OpsTest, GemmAllTransposes) {
  constexpr int64_t m = 7, n = 13, k = 5;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(absl::StrCat("trans_a ", ta, " trans_b ", tb));
      // Leading dimensions one wider than the matrices.
      const int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 1, ldc = n + 1;
      const int64_t a_rows = ta ? k : m, b_rows = tb ? n : k;
      ExpectMatchesKernel(
          {F32("a", Random(a_rows * lda, 25)), F32("b", Random(b_rows * ldb, 26)),
           F32("c", Random(m * ldc, 27))},
          [=](Stream& s, const Ptrs& p) {
            return Gemm(s, ta, tb, m, n, k, 0.5f, F(p[0]), lda, F(p[1]), ldb, 1.5f, F(p[2]), ldc);
          },
          [=](const Ptrs& p) {
            kernels::Gemm(ta, tb, m, n, k, 0.5f, F(p[0]), lda, F(p[1]), ldb, 1.5f, F(p[2]), ldc);
          });
    }
  }
}

TEST_P(OpsTest, LayerNormForward) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 28, -3.0f, 3.0f)), F32("gamma", Random(kCols, 29)),
       F32("beta", Random(kCols, 30)), F32("y", Random(kN, 31)), F32("mean", Random(kRows, 32)),
       F32("rstd", Random(kRows, 33))},
      [](Stream& s, const Ptrs& p) {
        return LayerNormForward(s, F(p[0]), F(p[1]), F(p[2]), kRows, kCols, 1e-5f, F(p[3]), F(p[4]),
                                F(p[5]));
      },
      [](const Ptrs& p) {
        kernels::LayerNormForward(F(p[0]), F(p[1]), F(p[2]), kRows, kCols, 1e-5f, F(p[3]), F(p[4]),
                                  F(p[5]));
      });
}

TEST_P(OpsTest, LayerNormBackward) {
  const std::vector<float> x = Random(kN, 34, -3.0f, 3.0f), gamma = Random(kCols, 35),
                           beta = Random(kCols, 36);
  std::vector<float> y(kN), mean(kRows), rstd(kRows);
  kernels::LayerNormForward(x.data(), gamma.data(), beta.data(), kRows, kCols, 1e-5f, y.data(),
                            mean.data(), rstd.data());
  ExpectMatchesKernel(
      {F32("dy", Random(kN, 37)), F32("x", x), F32("gamma", gamma), F32("mean", mean),
       F32("rstd", rstd), F32("dx", Random(kN, 38)), F32("dgamma", Random(kCols, 39)),
       F32("dbeta", Random(kCols, 40))},
      [](Stream& s, const Ptrs& p) {
        return LayerNormBackward(s, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]), kRows, kCols,
                                 F(p[5]), F(p[6]), F(p[7]));
      },
      [](const Ptrs& p) {
        kernels::LayerNormBackward(F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]), kRows, kCols,
                                   F(p[5]), F(p[6]), F(p[7]));
      });
}

TEST_P(OpsTest, RmsNormForward) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 100, -3.0f, 3.0f)), F32("gamma", Random(kCols, 101)),
       F32("y", Random(kN, 102)), F32("rstd", Random(kRows, 103))},
      [](Stream& s, const Ptrs& p) {
        return RmsNormForward(s, F(p[0]), F(p[1]), kRows, kCols, 1e-5f, F(p[2]), F(p[3]), 2);
      },
      [](const Ptrs& p) {
        kernels::RmsNormForward(F(p[0]), F(p[1]), kRows, kCols, 1e-5f, F(p[2]), F(p[3]));
      });
}

TEST_P(OpsTest, RmsNormBackward) {
  const std::vector<float> x = Random(kN, 104, -3.0f, 3.0f), gamma = Random(kCols, 105);
  std::vector<float> y(kN), rstd(kRows);
  kernels::RmsNormForward(x.data(), gamma.data(), kRows, kCols, 1e-5f, y.data(), rstd.data());
  ExpectMatchesKernel(
      {F32("dy", Random(kN, 106)), F32("x", x), F32("gamma", gamma), F32("rstd", rstd),
       F32("dx", Random(kN, 107)), ExactOnCuda(F32("dgamma", Random(kCols, 108)))},
      [](Stream& s, const Ptrs& p) {
        return RmsNormBackward(s, F(p[0]), F(p[1]), F(p[2]), F(p[3]), kRows, kCols, F(p[4]),
                               F(p[5]), 2);
      },
      [](const Ptrs& p) {
        kernels::RmsNormBackward(F(p[0]), F(p[1]), F(p[2]), F(p[3]), kRows, kCols, F(p[4]),
                                 F(p[5]));
      });
}

TEST_P(OpsTest, SwiGluForward) {
  ExpectMatchesKernel(
      {F32("gate", Random(kN, 109, -6.0f, 6.0f)), F32("up", Random(kN, 110)),
       F32("y", Random(kN, 111))},
      [](Stream& s, const Ptrs& p) { return SwiGluForward(s, F(p[0]), F(p[1]), kN, F(p[2])); },
      [](const Ptrs& p) { kernels::SwiGluForward(F(p[0]), F(p[1]), kN, F(p[2])); });
}

TEST_P(OpsTest, SwiGluBackward) {
  ExpectMatchesKernel(
      {F32("gate", Random(kN, 112, -6.0f, 6.0f)), F32("up", Random(kN, 113)),
       F32("dy", Random(kN, 114)), F32("dgate", Random(kN, 115)), F32("dup", Random(kN, 116))},
      [](Stream& s, const Ptrs& p) {
        return SwiGluBackward(s, F(p[0]), F(p[1]), F(p[2]), kN, F(p[3]), F(p[4]));
      },
      [](const Ptrs& p) {
        kernels::SwiGluBackward(F(p[0]), F(p[1]), F(p[2]), kN, F(p[3]), F(p[4]));
      });
}

TEST_P(OpsTest, Rotary) {
  for (bool inverse : {false, true}) {
    SCOPED_TRACE(inverse ? "inverse" : "forward");
    ExpectMatchesKernel(
        {F32("x", Random(kAttnN, 117, -2.0f, 2.0f))},
        [=](Stream& s, const Ptrs& p) {
          return Rotary(s, F(p[0]), kAttn, 11, 10000.0f, inverse, 2);
        },
        [=](const Ptrs& p) { kernels::Rotary(F(p[0]), kAttn, 11, 10000.0f, inverse); });
  }
}

// kAttn's 3 query heads over 1 kv head, and over 3 (a copy).
TEST_P(OpsTest, RepeatKvHeads) {
  for (int64_t kv_heads : {1, 3}) {
    SCOPED_TRACE(absl::StrCat("kv_heads ", kv_heads));
    const int64_t kv_n = kAttnN / kAttn.heads * kv_heads;
    ExpectMatchesKernel(
        {F32("kv", Random(kv_n, 118)), ExactOnCuda(F32("out", Random(kAttnN, 119)))},
        [=](Stream& s, const Ptrs& p) {
          return RepeatKvHeads(s, F(p[0]), kAttn, kv_heads, F(p[1]));
        },
        [=](const Ptrs& p) { kernels::RepeatKvHeads(F(p[0]), kAttn, kv_heads, F(p[1])); });
  }
}

TEST_P(OpsTest, SumKvHeads) {
  for (int64_t kv_heads : {1, 3}) {
    SCOPED_TRACE(absl::StrCat("kv_heads ", kv_heads));
    const int64_t kv_n = kAttnN / kAttn.heads * kv_heads;
    ExpectMatchesKernel(
        {F32("grad", Random(kAttnN, 120)), ExactOnCuda(F32("out", Random(kv_n, 121)))},
        [=](Stream& s, const Ptrs& p) {
          return SumKvHeads(s, F(p[0]), kAttn, kv_heads, F(p[1]), 2);
        },
        [=](const Ptrs& p) { kernels::SumKvHeads(F(p[0]), kAttn, kv_heads, F(p[1])); });
  }
}

// Cached attention: a ring of 4 slots holding positions 3..6 with a window
// of 3 and 1 key/value head (positions 5, 6 written to slots 1, 2); and a
// whole cache of 6 slots, no window, 3 key/value heads.
constexpr CachedAttentionShape kRing{/*batch=*/2,    /*heads=*/3,     /*kv_heads=*/1,
                                     /*queries=*/2,
                                     /*head_dim=*/4, /*first_pos=*/5, /*capacity=*/4,
                                     /*window=*/3};
constexpr CachedAttentionShape kWhole{2, 3, 3, 3, 4, /*first_pos=*/2, /*capacity=*/6};

TEST_P(OpsTest, CachedAttention) {
  for (const CachedAttentionShape& c : {kRing, kWhole}) {
    SCOPED_TRACE(absl::StrCat("capacity ", c.capacity));
    const int64_t q_n = c.batch * c.heads * c.queries * c.head_dim;
    const int64_t cache_n = c.batch * c.kv_heads * c.capacity * c.head_dim;
    ExpectMatchesKernel(
        {F32("q", Random(q_n, 134)), F32("k_cache", Random(cache_n, 135)),
         F32("v_cache", Random(cache_n, 136)), F32("out", Random(q_n, 137))},
        [=](Stream& s, const Ptrs& p) {
          return CachedAttention(s, c, F(p[0]), F(p[1]), F(p[2]), F(p[3]));
        },
        [=](const Ptrs& p) { kernels::CachedAttention(c, F(p[0]), F(p[1]), F(p[2]), F(p[3])); });
  }
}

TEST_P(OpsTest, WriteKvCache) {
  for (const CachedAttentionShape& c : {kRing, kWhole}) {
    SCOPED_TRACE(absl::StrCat("capacity ", c.capacity));
    const int64_t src_n = c.batch * c.kv_heads * c.queries * c.head_dim;
    const int64_t cache_n = c.batch * c.kv_heads * c.capacity * c.head_dim;
    ExpectMatchesKernel(
        {F32("src", Random(src_n, 138)), ExactOnCuda(F32("cache", Random(cache_n, 139)))},
        [=](Stream& s, const Ptrs& p) { return WriteKvCache(s, c, F(p[0]), F(p[1])); },
        [=](const Ptrs& p) { kernels::WriteKvCache(c, F(p[0]), F(p[1])); });
  }
}

// An invalid shape is the launcher's InvalidArgument, before anything is
// enqueued (null buffers: running a kernel would crash).
TEST_P(OpsTest, CachedAttentionRejectsAnInvalidShape) {
  CachedAttentionShape c = kRing;
  c.first_pos = 3;
  c.window = 0;
  float* f = nullptr;
  absl::Status st = CachedAttention(*stream_, c, f, f, f, f);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(st.message(),
            "CachedAttention: capacity 4 < first_pos 3 + queries 2 without a window of at most 3");
  st = WriteKvCache(*stream_, c, f, f);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(st.message(),
            "WriteKvCache: capacity 4 < first_pos 3 + queries 2 without a window of at most 3");
  c = kRing;
  c.kv_heads = 2;
  st = CachedAttention(*stream_, c, f, f, f, f);
  EXPECT_EQ(st.message(), "CachedAttention: kv_heads 2 does not divide heads 3");
  EXPECT_TRUE(stream_->Synchronize().ok());
}

TEST_P(OpsTest, GeluForward) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 41, -4.0f, 4.0f)), F32("y", Random(kN, 42))},
      [](Stream& s, const Ptrs& p) { return GeluForward(s, F(p[0]), kN, F(p[1])); },
      [](const Ptrs& p) { kernels::GeluForward(F(p[0]), kN, F(p[1])); });
}

TEST_P(OpsTest, GeluBackward) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 43, -4.0f, 4.0f)), F32("dy", Random(kN, 44)), F32("dx", Random(kN, 45))},
      [](Stream& s, const Ptrs& p) { return GeluBackward(s, F(p[0]), F(p[1]), kN, F(p[2])); },
      [](const Ptrs& p) { kernels::GeluBackward(F(p[0]), F(p[1]), kN, F(p[2])); });
}

TEST_P(OpsTest, AttentionWorkspaceIsTheDevicesKernels) {
#ifdef TRIREME_OPS_TEST_CUDA
  EXPECT_EQ(AttentionWorkspaceFloats(*stream_, kAttn), CausalAttentionWorkspaceSizeCuda(kAttn));
#else
  EXPECT_EQ(AttentionWorkspaceFloats(*stream_, kAttn), CausalAttentionWorkspaceSize(kAttn));
#endif
}

TEST_P(OpsTest, CausalAttentionForward) {
  ExpectMatchesKernel(
      {F32("q", Random(kAttnN, 46)), F32("k", Random(kAttnN, 47)), F32("v", Random(kAttnN, 48)),
       F32("probs", Random(kProbsN, 49)), F32("out", Random(kAttnN, 50))},
      [](Stream& s, const Ptrs& p) {
        return CausalAttentionForward(s, kAttn, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]));
      },
      [](const Ptrs& p) {
        kernels::CausalAttentionForward(kAttn, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]));
      });
}

TEST_P(OpsTest, CausalAttentionBackward) {
  const std::vector<float> q = Random(kAttnN, 51), k = Random(kAttnN, 52), v = Random(kAttnN, 53);
  std::vector<float> probs(kProbsN), out(kAttnN);
  kernels::CausalAttentionForward(kAttn, q.data(), k.data(), v.data(), probs.data(), out.data());
  const int64_t workspace = AttentionWorkspaceFloats(*stream_, kAttn);
  ExpectMatchesKernel(
      {F32("q", q), F32("k", k), F32("v", v), F32("probs", probs), F32("dout", Random(kAttnN, 54)),
       Scratch("workspace", workspace), F32("dq", Random(kAttnN, 55)),
       F32("dk", Random(kAttnN, 56)), F32("dv", Random(kAttnN, 57))},
      [](Stream& s, const Ptrs& p) {
        return CausalAttentionBackward(s, kAttn, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]),
                                       F(p[5]), F(p[6]), F(p[7]), F(p[8]));
      },
      [](const Ptrs& p) {
        kernels::CausalAttentionBackward(kAttn, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]),
                                         F(p[5]), F(p[6]), F(p[7]), F(p[8]));
      });
}

// Sliding-window attention: kAttn with a window of 2 positions.
constexpr AttentionShape kWindowed{2, 3, 5, 4, /*window=*/2};

TEST_P(OpsTest, SlidingWindowAttentionForward) {
  ExpectMatchesKernel(
      {F32("q", Random(kAttnN, 122)), F32("k", Random(kAttnN, 123)), F32("v", Random(kAttnN, 124)),
       F32("probs", Random(kProbsN, 125)), F32("out", Random(kAttnN, 126))},
      [](Stream& s, const Ptrs& p) {
        return CausalAttentionForward(s, kWindowed, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]));
      },
      [](const Ptrs& p) {
        kernels::CausalAttentionForward(kWindowed, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]));
      });
}

TEST_P(OpsTest, SlidingWindowAttentionBackward) {
  const std::vector<float> q = Random(kAttnN, 127), k = Random(kAttnN, 128),
                           v = Random(kAttnN, 129);
  std::vector<float> probs(kProbsN), out(kAttnN);
  kernels::CausalAttentionForward(kWindowed, q.data(), k.data(), v.data(), probs.data(),
                                  out.data());
  const int64_t workspace = AttentionWorkspaceFloats(*stream_, kWindowed);
  ExpectMatchesKernel(
      {F32("q", q), F32("k", k), F32("v", v), F32("probs", probs), F32("dout", Random(kAttnN, 130)),
       Scratch("workspace", workspace), F32("dq", Random(kAttnN, 131)),
       F32("dk", Random(kAttnN, 132)), F32("dv", Random(kAttnN, 133))},
      [](Stream& s, const Ptrs& p) {
        return CausalAttentionBackward(s, kWindowed, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]),
                                       F(p[5]), F(p[6]), F(p[7]), F(p[8]));
      },
      [](const Ptrs& p) {
        kernels::CausalAttentionBackward(kWindowed, F(p[0]), F(p[1]), F(p[2]), F(p[3]), F(p[4]),
                                         F(p[5]), F(p[6]), F(p[7]), F(p[8]));
      });
}

// A vocabulary range [4, 10) of a vocabulary of 15: some ids in it, some not.
constexpr int64_t kLo = 4, kCount = 6;
const std::vector<int32_t> kIds = {4, 0, 9, 14, 4, 7, 10};

TEST_P(OpsTest, EmbeddingForwardRange) {
  ExpectMatchesKernel(
      {F32("table", Random(kCount * kCols, 58)), I32("ids", kIds), F32("out", Random(kN, 59))},
      [](Stream& s, const Ptrs& p) {
        return EmbeddingForwardRange(s, F(p[0]), I(p[1]), kRows, kLo, kCount, kCols, F(p[2]));
      },
      [](const Ptrs& p) {
        kernels::EmbeddingForwardRange(F(p[0]), I(p[1]), kRows, kLo, kCount, kCols, F(p[2]));
      });
}

TEST_P(OpsTest, EmbeddingBackwardRange) {
  ExpectMatchesKernel(
      {F32("dout", Random(kN, 60)), I32("ids", kIds),
       ExactOnCuda(F32("dtable", Random(kCount * kCols, 61)))},
      [](Stream& s, const Ptrs& p) {
        return EmbeddingBackwardRange(s, F(p[0]), I(p[1]), kRows, kLo, kCount, kCols, F(p[2]));
      },
      [](const Ptrs& p) {
        kernels::EmbeddingBackwardRange(F(p[0]), I(p[1]), kRows, kLo, kCount, kCols, F(p[2]));
      });
}

// Cross-entropy pieces on a rank holding vocabulary [4, 15) in 13 columns, the
// last two padding.
constexpr int64_t kValid = 11;
const std::vector<int32_t> kTargets = {4, 0, 14, 9, 3, 15, 5};

TEST_P(OpsTest, CrossEntropyRowMax) {
  ExpectMatchesKernel(
      {F32("logits", Random(kN, 62, -5.0f, 5.0f)), F32("row_max", Random(kRows, 63))},
      [](Stream& s, const Ptrs& p) {
        return CrossEntropyRowMax(s, F(p[0]), kRows, kCols, kValid, F(p[1]));
      },
      [](const Ptrs& p) { kernels::CrossEntropyRowMax(F(p[0]), kRows, kCols, kValid, F(p[1])); });
}

TEST_P(OpsTest, CrossEntropySumExp) {
  const std::vector<float> logits = Random(kN, 64, -5.0f, 5.0f);
  std::vector<float> row_max(kRows);
  kernels::CrossEntropyRowMax(logits.data(), kRows, kCols, kValid, row_max.data());
  ExpectMatchesKernel(
      {F32("logits", logits), F32("row_max", row_max), F32("sum_exp", Random(kRows, 65))},
      [](Stream& s, const Ptrs& p) {
        return CrossEntropySumExp(s, F(p[0]), F(p[1]), kRows, kCols, kValid, F(p[2]));
      },
      [](const Ptrs& p) {
        kernels::CrossEntropySumExp(F(p[0]), F(p[1]), kRows, kCols, kValid, F(p[2]));
      });
}

TEST_P(OpsTest, CrossEntropyTargetLogit) {
  ExpectMatchesKernel(
      {F32("logits", Random(kN, 66)), I32("targets", kTargets), F32("target", Random(kRows, 67))},
      [](Stream& s, const Ptrs& p) {
        return CrossEntropyTargetLogit(s, F(p[0]), I(p[1]), kRows, kCols, kLo, kValid, F(p[2]));
      },
      [](const Ptrs& p) {
        kernels::CrossEntropyTargetLogit(F(p[0]), I(p[1]), kRows, kCols, kLo, kValid, F(p[2]));
      });
}

TEST_P(OpsTest, CrossEntropyLoss) {
  ExpectMatchesKernel(
      {F32("row_max", Random(kRows, 68)), F32("sum_exp", Random(kRows, 69, 1.0f, 20.0f)),
       F32("target", Random(kRows, 70)), F32("lse", Random(kRows, 71)), F64("loss", {-1.0})},
      [](Stream& s, const Ptrs& p) {
        return CrossEntropyLoss(s, F(p[0]), F(p[1]), F(p[2]), kRows, F(p[3]), D(p[4]));
      },
      [](const Ptrs& p) {
        kernels::CrossEntropyLoss(F(p[0]), F(p[1]), F(p[2]), kRows, F(p[3]), D(p[4]));
      });
}

TEST_P(OpsTest, CrossEntropyBackwardRange) {
  ExpectMatchesKernel(
      {F32("logits", Random(kN, 72, -5.0f, 5.0f)), I32("targets", kTargets),
       F32("lse", Random(kRows, 73, 2.0f, 6.0f)), F32("dlogits", Random(kN, 74))},
      [](Stream& s, const Ptrs& p) {
        return CrossEntropyBackwardRange(s, F(p[0]), I(p[1]), F(p[2]), kRows, kCols, kLo, kValid,
                                         2.0f, F(p[3]));
      },
      [](const Ptrs& p) {
        kernels::CrossEntropyBackwardRange(F(p[0]), I(p[1]), F(p[2]), kRows, kCols, kLo, kValid,
                                           2.0f, F(p[3]));
      });
}

// ---- optimizer ------------------------------------------------------------------

AdamWScalars TestAdamW() {
  AdamWScalars s;
  s.grad_scale = 0.5f;
  s.decay_factor = 1.0f - 1e-3f * 0.01f;
  s.lerp_weight = 0.1f;
  s.beta2 = 0.999f;
  s.one_minus_beta2 = 1.0f - 0.999f;
  s.bias_correction2_sqrt = 0.0447f;
  s.eps = 1e-8f;
  s.neg_step_size = -1e-3f / 0.19f;
  s.small_weight = true;
  return s;
}

TEST_P(OpsTest, AdamWWritingABf16Copy) {
  const AdamWScalars sc = TestAdamW();
  for (int threads : {1, 2}) {
    SCOPED_TRACE(absl::StrCat("threads ", threads));
    ExpectMatchesKernel(
        {F32("p", Random(kN, 75)), F32("g", Random(kN, 76)), F32("m", Random(kN, 77)),
         F32("v", Random(kN, 78, 0.0f, 1.0f)), Half("out", DType::kBF16, Random(kN, 79))},
        [=](Stream& s, const Ptrs& p) {
          return AdamW(s, sc, F(p[0]), F(p[1]), F(p[2]), F(p[3]), kN, {p[4], DType::kBF16},
                       threads);
        },
        [=](const Ptrs& p) {
          kernels::AdamW(sc, F(p[0]), F(p[1]), F(p[2]), F(p[3]), kN, {p[4], DType::kBF16}, 1);
        });
  }
}

TEST_P(OpsTest, SgdWritingAnF16Copy) {
  SgdScalars sc{0.5f, 0.01f, 0.9f, -0.1f, /*decay=*/true, /*first=*/false};
  ExpectMatchesKernel(
      {F32("p", Random(kN, 80)), F32("g", Random(kN, 81)), F32("buf", Random(kN, 82)),
       Half("out", DType::kF16, Random(kN, 83))},
      [=](Stream& s, const Ptrs& p) {
        return Sgd(s, sc, F(p[0]), F(p[1]), F(p[2]), kN, {p[3], DType::kF16});
      },
      [=](const Ptrs& p) {
        kernels::Sgd(sc, F(p[0]), F(p[1]), F(p[2]), kN, {p[3], DType::kF16});
      });
}

TEST_P(OpsTest, SumOfSquares) {
  ExpectMatchesKernel(
      {F32("x", Random(kN, 84)), F64("result", {-1.0})},
      [](Stream& s, const Ptrs& p) { return SumOfSquares(s, F(p[0]), kN, D(p[1]), 2); },
      [](const Ptrs& p) { *D(p[1]) = kernels::SumOfSquares(F(p[0]), kN); });
}

TEST_P(OpsTest, CheckFiniteSetsTheFlagOnlyForNonFinite) {
  std::vector<float> bad = Random(kN, 85);
  bad[kN - 2] = std::numeric_limits<float>::infinity();
  for (const std::vector<float>& x : {Random(kN, 86), bad}) {
    SCOPED_TRACE(std::isinf(x[kN - 2]) ? "with inf" : "finite");
    ExpectMatchesKernel(
        {F32("x", x), F32("not_finite", {0.0f})},
        [](Stream& s, const Ptrs& p) { return CheckFinite(s, F(p[0]), kN, F(p[1])); },
        [](const Ptrs& p) {
          if (!AllFinite(F(p[0]), kN)) *F(p[1]) = 1.0f;
        });
  }
}

// The reference side of the flag, by itself: it does flag the infinity.
TEST(CheckFiniteReference, FlagsInfinity) {
  std::vector<float> x(5, 1.0f);
  x[3] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(AllFinite(x.data(), 5));
}

// ---- errors -----------------------------------------------------------------------

// A kernel's error is not the launcher's: it becomes the stream's sticky error.
TEST_P(OpsTest, KernelErrorBecomesTheStreamsError) {
  std::vector<int32_t> in(4, 1);
  std::vector<float> out(4, 0.0f);
  absl::StatusOr<Buffer> b =
      Buffer::Allocate(GetParam().device, 16, MemCategory::kWorkspace, &tracker_, stream_.get());
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(Copy(*stream_, b->data(), in.data(), 16).ok());
  const absl::Status launched = Cast(*stream_, b->data(), DType::kI32, b->data(), DType::kF32, 4);
  if (GetParam().device.kind == DeviceKind::kCuda) {
    // The CUDA launcher checks its dtypes before enqueueing anything.
    EXPECT_EQ(launched.code(), absl::StatusCode::kInvalidArgument) << launched;
    EXPECT_TRUE(stream_->Synchronize().ok());
    return;
  }
  EXPECT_TRUE(launched.ok()) << launched;
  const absl::Status s = stream_->Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(stream_->Synchronize().ok());  // consumed
}

#ifdef TRIREME_OPS_TEST_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, OpsTest, ::testing::Values(DeviceCase{"cuda", Device::Cuda(0)}),
#else
INSTANTIATE_TEST_SUITE_P(HostDevices, OpsTest,
                         ::testing::Values(DeviceCase{"cpu", Device::Cpu()},
                                           DeviceCase{"cpu_async", Device::CpuAsync()}),
#endif
                         [](const ::testing::TestParamInfo<DeviceCase>& info) {
                           return std::string(info.param.name);
                         });

// ---- meta: nothing runs -------------------------------------------------------------

// Every launcher on the meta device, with null pointers: all OK, and nothing
// was enqueued (running any kernel would dereference null).
TEST(OpsMetaTest, LaunchersDoNothing) {
  InlineStream s("meta", Device::Meta());
  float* f = nullptr;
  int32_t* ids = nullptr;
  double* d = nullptr;
  const AdamWScalars adam = TestAdamW();
  const SgdScalars sgd{1.0f, 0.0f, 0.9f, -0.1f, false, true};
  const absl::Status results[] = {
      Memset(s, f, 64),
      Copy(s, f, ids, 64),
      Cast(s, f, DType::kF32, f, DType::kBF16, kN),
      AccumulateCast(s, f, DType::kF32, f, DType::kBF16, kN, true),
      Add(s, f, f, kN, f),
      AddBias(s, f, f, kRows, kCols),
      AddColumnSums(s, f, kRows, kCols, f),
      AddPositions(s, f, f, kRows, 0, 3, kCols),
      AddPositionsBackward(s, f, kRows, 0, 3, kCols, f),
      RowsToHeads(s, f, kLd, kCol, kAttn, f),
      HeadsToRows(s, f, kAttn, f, kLd, kCol),
      Gemm(s, false, true, 7, 13, 5, 1.0f, f, 5, f, 5, 0.0f, f, 13),
      LayerNormForward(s, f, f, f, kRows, kCols, 1e-5f, f, f, f),
      LayerNormBackward(s, f, f, f, f, f, kRows, kCols, f, f, f),
      RmsNormForward(s, f, f, kRows, kCols, 1e-5f, f, f),
      RmsNormBackward(s, f, f, f, f, kRows, kCols, f, f),
      SwiGluForward(s, f, f, kN, f),
      SwiGluBackward(s, f, f, f, kN, f, f),
      Rotary(s, f, kAttn, 0, 10000.0f, false),
      RepeatKvHeads(s, f, kAttn, 1, f),
      SumKvHeads(s, f, kAttn, 1, f),
      CachedAttention(s, kRing, f, f, f, f),
      WriteKvCache(s, kRing, f, f),
      GeluForward(s, f, kN, f),
      GeluBackward(s, f, f, kN, f),
      CausalAttentionForward(s, kAttn, f, f, f, f, f),
      CausalAttentionBackward(s, kAttn, f, f, f, f, f, f, f, f, f),
      EmbeddingForwardRange(s, f, ids, kRows, 0, kCount, kCols, f),
      EmbeddingBackwardRange(s, f, ids, kRows, 0, kCount, kCols, f),
      CrossEntropyRowMax(s, f, kRows, kCols, kValid, f),
      CrossEntropySumExp(s, f, f, kRows, kCols, kValid, f),
      CrossEntropyTargetLogit(s, f, ids, kRows, kCols, 0, kValid, f),
      CrossEntropyLoss(s, f, f, f, kRows, f, d),
      CrossEntropyBackwardRange(s, f, ids, f, kRows, kCols, 0, kValid, 1.0f, f),
      AdamW(s, adam, f, f, f, f, kN, {f, DType::kBF16}),
      Sgd(s, sgd, f, f, f, kN, {}),
      SumOfSquares(s, f, kN, d),
      CheckFinite(s, f, kN, f),
  };
  for (size_t i = 0; i < std::size(results); ++i) {
    EXPECT_TRUE(results[i].ok()) << "launcher #" << i << ": " << results[i];
  }
  EXPECT_EQ(s.stats().tasks, 0);
  EXPECT_TRUE(s.Synchronize().ok());
  EXPECT_EQ(AttentionWorkspaceFloats(s, kAttn), CausalAttentionWorkspaceSize(kAttn));
  // Shapes are still validated there.
  CachedAttentionShape bad = kRing;
  bad.capacity = 1;
  EXPECT_EQ(CachedAttention(s, bad, f, f, f, f).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteKvCache(s, bad, f, f).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.stats().tasks, 0);
}

// ---- cpu_async runs behind the host ------------------------------------------------

TEST(OpsAsyncTest, LauncherReturnsBeforeTheKernelRuns) {
  CpuStream stream("async");
  MemoryTracker tracker;
  auto alloc = [&](int64_t floats) {
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::CpuAsync(), floats * 4,
                                                MemCategory::kWorkspace, &tracker, &stream);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : Buffer();
  };
  Buffer a = alloc(kN), b = alloc(kN), out = alloc(kN);
  ASSERT_NE(out.data(), nullptr);
  // Nothing is queued on the stream yet, so the host may fill the buffers.
  for (int64_t i = 0; i < kN; ++i) {
    a.as<float>()[i] = static_cast<float>(i);
    b.as<float>()[i] = 0.5f;
    out.as<float>()[i] = -1.0f;
  }

  Gate gate;
  std::atomic<bool> gate_reached{false};
  stream.Enqueue(gate.BlockingTask(&gate_reached));
  ASSERT_TRUE(Add(stream, a.as<float>(), b.as<float>(), kN, out.as<float>()).ok());
  // The worker is held at the gate (or has not reached it): Add has not run.
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(out.as<float>()[0], -1.0f);
  EXPECT_EQ(out.as<float>()[kN - 1], -1.0f);

  gate.Open();
  ASSERT_TRUE(stream.Synchronize().ok());
  EXPECT_TRUE(gate_reached.load());
  for (int64_t i = 0; i < kN; ++i) {
    ASSERT_EQ(out.as<float>()[i], static_cast<float>(i) + 0.5f) << i;
  }
}

// Scalars are captured by value: the caller's may go out of scope at once.
TEST(OpsAsyncTest, ScalarArgumentsAreCapturedByValue) {
  CpuStream stream("async");
  std::vector<float> x(kN, 1.0f), bias(kCols, 2.0f);
  Gate gate;
  stream.Enqueue(gate.BlockingTask());
  {
    int64_t rows = kRows, cols = kCols;
    ASSERT_TRUE(AddBias(stream, x.data(), bias.data(), rows, cols).ok());
    rows = 0;  // changed (and then gone) before the kernel runs
    cols = 0;
  }
  gate.Open();
  ASSERT_TRUE(stream.Synchronize().ok());
  EXPECT_EQ(x[0], 3.0f);
  EXPECT_EQ(x[kN - 1], 3.0f);
}

}  // namespace
}  // namespace trireme::kernels
