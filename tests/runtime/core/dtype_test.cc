// Tests for runtime/core/half.h and runtime/core/dtype.h.
//
// The 16-bit conversions are checked exhaustively where that is cheap (every
// bf16 / f16 bit pattern) and against independent references otherwise: the
// F16C hardware instruction for f16, and a nearest-candidate search in double
// arithmetic for bf16.
#include "runtime/core/dtype.h"

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/core/half.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool IsBF16NaN(uint16_t b) { return (b & 0x7fffu) > 0x7f80u; }
bool IsF16NaN(uint16_t b) { return (b & 0x7fffu) > 0x7c00u; }

// Collects the failures of a long sweep, keeping only the first few messages so a
// broken conversion does not print millions of lines.
class Mismatches {
 public:
  void Add(const std::string& what) {
    if (count_++ < 10) examples_ += what + "\n";
  }
  int64_t count() const { return count_; }
  const std::string& examples() const { return examples_; }

 private:
  int64_t count_ = 0;
  std::string examples_;
};

// ---------------------------------------------------------------------------
// Exhaustive round trips.

TEST(BF16Test, EveryBitPatternRoundTrips) {
  Mismatches m;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    const float f = BF16ToF32(BF16{bits});
    // Widening is exact: the bf16 bits are the top half of the f32.
    const uint32_t fbits = F32ToBits(f);
    if (fbits != (uint32_t{bits} << 16)) {
      m.Add(absl::StrFormat("BF16ToF32(0x%04x) = 0x%08x", bits, fbits));
    }
    const uint16_t back = F32ToBF16(f).bits;
    if (IsBF16NaN(bits)) {
      if (!std::isnan(f)) m.Add(absl::StrFormat("0x%04x: widened NaN is %a", bits, f));
      if (!IsBF16NaN(back) || (back & 0x0040u) == 0 || (back & 0x8000u) != (bits & 0x8000u)) {
        m.Add(
            absl::StrFormat("NaN 0x%04x came back as 0x%04x (not a quiet NaN of the "
                            "same sign)",
                            bits, back));
      }
    } else if (back != bits) {
      m.Add(absl::StrFormat("0x%04x -> %a -> 0x%04x", bits, f, back));
    }
  }
  EXPECT_EQ(m.count(), 0) << m.examples();
}

TEST(F16Test, EveryBitPatternRoundTrips) {
  Mismatches m;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    const float f = F16ToF32(F16{bits});
    const uint16_t back = F32ToF16(f).bits;
    if (IsF16NaN(bits)) {
      if (!std::isnan(f)) m.Add(absl::StrFormat("0x%04x: widened NaN is %a", bits, f));
      if (!IsF16NaN(back) || (back & 0x0200u) == 0 || (back & 0x8000u) != (bits & 0x8000u)) {
        m.Add(
            absl::StrFormat("NaN 0x%04x came back as 0x%04x (not a quiet NaN of the "
                            "same sign)",
                            bits, back));
      }
    } else if (back != bits) {
      m.Add(absl::StrFormat("0x%04x -> %a -> 0x%04x", bits, f, back));
    }
  }
  EXPECT_EQ(m.count(), 0) << m.examples();
}

// ---------------------------------------------------------------------------
// f16 against the F16C instructions.

__attribute__((target("f16c"))) uint16_t HwF32ToF16(float x) {
  return static_cast<uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

__attribute__((target("f16c"))) float HwF16ToF32(uint16_t h) { return _cvtsh_ss(h); }

class F16HardwareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "CPU has no F16C";
  }

  // Compares F32ToF16(x) with the hardware; for NaN only NaN-ness is compared.
  static void Check(float x, Mismatches* m) {
    const uint16_t got = F32ToF16(x).bits;
    if (std::isnan(x)) {
      if (!IsF16NaN(got)) m->Add(absl::StrFormat("NaN 0x%08x -> 0x%04x", F32ToBits(x), got));
      return;
    }
    const uint16_t want = HwF32ToF16(x);
    if (got != want) {
      m->Add(absl::StrFormat("x = %a (0x%08x): got 0x%04x, F16C says 0x%04x", x, F32ToBits(x), got,
                             want));
    }
  }
};

TEST_F(F16HardwareTest, WideningMatchesHardware) {
  Mismatches m;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    const float got = F16ToF32(F16{bits});
    const float want = HwF16ToF32(bits);
    if (IsF16NaN(bits)) {
      if (!std::isnan(got)) m.Add(absl::StrFormat("0x%04x -> %a, not NaN", bits, got));
    } else if (F32ToBits(got) != F32ToBits(want)) {
      m.Add(absl::StrFormat("0x%04x -> %a, F16C says %a", bits, got, want));
    }
  }
  EXPECT_EQ(m.count(), 0) << m.examples();
}

// Every exact halfway point between adjacent finite f16 values (both signs, even
// and odd lower neighbours), and the f32 values right next to it.
TEST_F(F16HardwareTest, TiesAndNearTies) {
  Mismatches m;
  Mismatches rule;
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const double lo = HwF16ToF32(static_cast<uint16_t>(h));
    const double hi = HwF16ToF32(static_cast<uint16_t>(h + 1));
    const double mid = (lo + hi) / 2;
    const float tie = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(tie), mid) << "midpoint not exact in f32 at " << h;
    // Ties go to the even mantissa.
    const uint16_t even = static_cast<uint16_t>((h & 1u) ? h + 1 : h);
    for (float sign : {1.0f, -1.0f}) {
      const float x = sign * tie;
      const uint16_t want = static_cast<uint16_t>(even | (sign < 0 ? 0x8000u : 0u));
      if (F32ToF16(x).bits != want) {
        rule.Add(absl::StrFormat("tie %a -> 0x%04x, want 0x%04x", x, F32ToF16(x).bits, want));
      }
      Check(x, &m);
      Check(std::nextafter(x, 0.0f), &m);
      Check(std::nextafter(x, sign * kInf), &m);
      // The f16 values themselves are exact.
      Check(static_cast<float>(sign * lo), &m);
    }
  }
  EXPECT_EQ(rule.count(), 0) << rule.examples();
  EXPECT_EQ(m.count(), 0) << m.examples();
}

TEST_F(F16HardwareTest, Boundaries) {
  const float k2m14 = std::ldexp(1.0f, -14);  // smallest normal
  const float k2m24 = std::ldexp(1.0f, -24);  // smallest subnormal
  const float k2m25 = std::ldexp(1.0f, -25);  // half of it: a tie with 0
  const float k2m26 = std::ldexp(1.0f, -26);
  const std::vector<float> values = {65504.0f,
                                     std::nextafter(65504.0f, kInf),
                                     std::nextafter(65504.0f, 0.0f),
                                     65519.99f,
                                     std::nextafter(65520.0f, 0.0f),
                                     65520.0f,
                                     std::nextafter(65520.0f, kInf),
                                     65536.0f,
                                     1e10f,
                                     std::numeric_limits<float>::max(),
                                     k2m24,
                                     k2m25,
                                     std::nextafter(k2m25, 1.0f),
                                     std::nextafter(k2m25, 0.0f),
                                     3 * k2m26,
                                     5 * k2m26,
                                     7 * k2m26,
                                     3 * k2m25,
                                     5 * k2m25,
                                     7 * k2m25,
                                     3 * k2m24,
                                     std::numeric_limits<float>::denorm_min(),
                                     std::numeric_limits<float>::min(),
                                     k2m14,
                                     std::nextafter(k2m14, 0.0f),
                                     std::nextafter(k2m14, 1.0f),
                                     k2m14 - k2m24,
                                     k2m14 - k2m25,  // largest subnormal; tie below min normal
                                     0.0f,
                                     kInf,
                                     kNaN,
                                     1.0f,
                                     1.0f + std::ldexp(1.0f, -11),
                                     2048.0f,
                                     2049.0f,
                                     2051.0f};
  Mismatches m;
  for (float v : values) {
    Check(v, &m);
    Check(-v, &m);
  }
  EXPECT_EQ(m.count(), 0) << m.examples();

  // The same edges, spelled out.
  EXPECT_EQ(F32ToF16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(F32ToF16(65519.99f).bits, 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f).bits, 0x7c00);
  EXPECT_EQ(F32ToF16(-65520.0f).bits, 0xfc00);
  EXPECT_EQ(F32ToF16(65536.0f).bits, 0x7c00);
  EXPECT_EQ(F32ToF16(1e10f).bits, 0x7c00);
  EXPECT_EQ(F32ToF16(k2m24).bits, 0x0001);
  EXPECT_EQ(F32ToF16(k2m25).bits, 0x0000);
  EXPECT_EQ(F32ToF16(-k2m25).bits, 0x8000);
  EXPECT_EQ(F32ToF16(std::nextafter(k2m25, 1.0f)).bits, 0x0001);
  // In units of the smallest subnormal 2^-24: 3 * 2^-26 is 0.75 of it.
  EXPECT_EQ(F32ToF16(3 * k2m26).bits, 0x0001);  // 0.75 -> 1
  EXPECT_EQ(F32ToF16(5 * k2m26).bits, 0x0001);  // 1.25 -> 1
  EXPECT_EQ(F32ToF16(7 * k2m26).bits, 0x0002);  // 1.75 -> 2
  EXPECT_EQ(F32ToF16(3 * k2m25).bits, 0x0002);  // 1.5: tie to even 2
  EXPECT_EQ(F32ToF16(5 * k2m25).bits, 0x0002);  // 2.5: tie to even 2
  EXPECT_EQ(F32ToF16(7 * k2m25).bits, 0x0004);  // 3.5: tie to even 4
  EXPECT_EQ(F32ToF16(k2m14).bits, 0x0400);
  EXPECT_EQ(F32ToF16(k2m14 - k2m24).bits, 0x03ff);
  EXPECT_EQ(F32ToF16(k2m14 - k2m25).bits, 0x0400);  // tie, 0x3ff odd: up to min normal
  EXPECT_EQ(F32ToF16(std::nextafter(k2m14, 0.0f)).bits, 0x0400);
  EXPECT_EQ(F32ToF16(0.0f).bits, 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f).bits, 0x8000);
  EXPECT_EQ(F32ToF16(kInf).bits, 0x7c00);
  EXPECT_EQ(F32ToF16(-kInf).bits, 0xfc00);
  EXPECT_TRUE(IsF16NaN(F32ToF16(kNaN).bits));
  EXPECT_TRUE(IsF16NaN(F32ToF16(-kNaN).bits));
  EXPECT_EQ(F32ToF16(-kNaN).bits & 0x8000u, 0x8000u);
}

TEST_F(F16HardwareTest, RandomBitPatterns) {
  std::mt19937 rng(20240611);
  Mismatches m;
  // Uniform over all f32 bit patterns (NaN, Inf, subnormals included).
  for (int i = 0; i < 3000000; ++i) Check(BitsToF32(rng()), &m);
  // Concentrated on the exponents where f16 rounding actually happens.
  std::uniform_int_distribution<uint32_t> exp(100, 144);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t r = rng();
    Check(BitsToF32((r & 0x807fffffu) | (exp(rng) << 23)), &m);
  }
  EXPECT_EQ(m.count(), 0) << m.examples();
}

// ---------------------------------------------------------------------------
// bf16 against a reference that picks the nearer of two candidates in double.

// Value of a non-negative bf16 magnitude (0 .. 0x7f80). 0x7f80 is treated as the
// next binade's first value, 2^128: the value round-to-nearest-even compares
// against at the top of the range (and which then means Inf).
double BF16MagnitudeToDouble(uint32_t b) {
  const int e = static_cast<int>(b >> 7);
  const int m = static_cast<int>(b & 0x7fu);
  if (e == 0) return std::ldexp(static_cast<double>(m), -133);   // m * 2^-126 / 128
  return std::ldexp(static_cast<double>(128 + m), e - 127 - 7);  // 1.m * 2^(e-127)
}

uint16_t ReferenceF32ToBF16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7fc0u);  // NaN
  if (mag == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7f80u);
  const uint32_t lo = mag >> 16;  // truncation toward zero
  const uint32_t hi = lo + 1;     // one ulp further from zero (may be 0x7f80: Inf)
  const double ax = std::fabs(static_cast<double>(x));
  const double below = ax - BF16MagnitudeToDouble(lo);  // both exact in double
  const double above = BF16MagnitudeToDouble(hi) - ax;
  uint32_t pick;
  if (below < above) {
    pick = lo;
  } else if (above < below) {
    pick = hi;
  } else {
    pick = (lo & 1u) ? hi : lo;
  }
  return static_cast<uint16_t>(sign | pick);
}

void CheckBF16(float x, Mismatches* m) {
  const uint16_t got = F32ToBF16(x).bits;
  if (std::isnan(x)) {
    if (!IsBF16NaN(got)) m->Add(absl::StrFormat("NaN 0x%08x -> 0x%04x", F32ToBits(x), got));
    return;
  }
  const uint16_t want = ReferenceF32ToBF16(x);
  if (got != want) {
    m->Add(absl::StrFormat("x = %a (0x%08x): got 0x%04x, reference says 0x%04x", x, F32ToBits(x),
                           got, want));
  }
}

TEST(BF16RoundingTest, ReferenceSanity) {
  // The reference itself, on hand-checked cases.
  EXPECT_EQ(ReferenceF32ToBF16(1.0f), 0x3f80);
  EXPECT_EQ(ReferenceF32ToBF16(BitsToF32(0x3f808000u)), 0x3f80);  // tie, even lo
  EXPECT_EQ(ReferenceF32ToBF16(BitsToF32(0x3f818000u)), 0x3f82);  // tie, odd lo
  EXPECT_EQ(ReferenceF32ToBF16(BitsToF32(0x3f808001u)), 0x3f81);
  EXPECT_EQ(ReferenceF32ToBF16(BitsToF32(0x7f7f8000u)), 0x7f80);  // tie at the top: Inf
  EXPECT_EQ(ReferenceF32ToBF16(BitsToF32(0x7f7f7fffu)), 0x7f7f);
  EXPECT_EQ(ReferenceF32ToBF16(-1.0f), 0xbf80);
}

// Every halfway point between adjacent finite bf16 values, both signs, and the
// f32 values next to it. The last one (above 0x7f7f) is the overflow tie.
TEST(BF16RoundingTest, TiesAndNearTies) {
  Mismatches m;
  Mismatches rule;
  for (uint32_t b = 0; b <= 0x7f7f; ++b) {
    const double mid = (BF16MagnitudeToDouble(b) + BF16MagnitudeToDouble(b + 1)) / 2;
    const float tie = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(tie), mid) << "midpoint not exact in f32 at " << b;
    const uint32_t even = (b & 1u) ? b + 1 : b;
    for (float sign : {1.0f, -1.0f}) {
      const float x = sign * tie;
      const uint16_t want = static_cast<uint16_t>(even | (sign < 0 ? 0x8000u : 0u));
      if (F32ToBF16(x).bits != want) {
        rule.Add(absl::StrFormat("tie %a -> 0x%04x, want 0x%04x", x, F32ToBF16(x).bits, want));
      }
      CheckBF16(x, &m);
      CheckBF16(std::nextafter(x, 0.0f), &m);
      CheckBF16(std::nextafter(x, sign * kInf), &m);
    }
  }
  EXPECT_EQ(rule.count(), 0) << rule.examples();
  EXPECT_EQ(m.count(), 0) << m.examples();
}

TEST(BF16RoundingTest, OverflowEdge) {
  Mismatches m;
  // Every f32 from the largest finite bf16 (0x7f7f0000) up to Inf, both signs.
  for (uint32_t u = 0x7f7f0000u; u <= 0x7f800000u; ++u) {
    CheckBF16(BitsToF32(u), &m);
    CheckBF16(BitsToF32(u | 0x80000000u), &m);
  }
  EXPECT_EQ(m.count(), 0) << m.examples();
  EXPECT_EQ(F32ToBF16(BitsToF32(0x7f7f0000u)).bits, 0x7f7f);
  EXPECT_EQ(F32ToBF16(BitsToF32(0x7f7f7fffu)).bits, 0x7f7f);
  EXPECT_EQ(F32ToBF16(BitsToF32(0x7f7f8000u)).bits, 0x7f80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()).bits, 0x7f80);
  EXPECT_EQ(F32ToBF16(-std::numeric_limits<float>::max()).bits, 0xff80);
}

TEST(BF16RoundingTest, SpecialValuesAndSubnormals) {
  Mismatches m;
  // Every f32 subnormal whose low 16 bits are near a bf16 tie, plus a stride
  // through all of them.
  for (uint32_t b = 0; b < 0x80; ++b) {
    for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      CheckBF16(BitsToF32((b << 16) | low), &m);
      CheckBF16(BitsToF32(0x80000000u | (b << 16) | low), &m);
    }
  }
  for (uint32_t u = 0; u < 0x00800000u; u += 97) CheckBF16(BitsToF32(u), &m);
  EXPECT_EQ(m.count(), 0) << m.examples();

  EXPECT_EQ(F32ToBF16(0.0f).bits, 0x0000);
  EXPECT_EQ(F32ToBF16(-0.0f).bits, 0x8000);
  EXPECT_EQ(F32ToBF16(kInf).bits, 0x7f80);
  EXPECT_EQ(F32ToBF16(-kInf).bits, 0xff80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::denorm_min()).bits, 0x0000);
  EXPECT_EQ(F32ToBF16(BitsToF32(0x00008000u)).bits, 0x0000);  // tie with 0: even
  EXPECT_EQ(F32ToBF16(BitsToF32(0x00008001u)).bits, 0x0001);
  EXPECT_EQ(F32ToBF16(BitsToF32(0x007f8000u)).bits, 0x0080);  // up to the min normal
  const uint16_t nan = F32ToBF16(kNaN).bits;
  EXPECT_TRUE(IsBF16NaN(nan));
  EXPECT_NE(nan & 0x0040u, 0u);
  // A signalling NaN whose payload lives only in the low 16 bits must not
  // truncate to Inf.
  const uint16_t snan = F32ToBF16(BitsToF32(0xff800001u)).bits;
  EXPECT_TRUE(IsBF16NaN(snan));
  EXPECT_EQ(snan & 0x8000u, 0x8000u);
}

TEST(BF16RoundingTest, RandomBitPatterns) {
  std::mt19937 rng(7);
  Mismatches m;
  for (int i = 0; i < 4000000; ++i) CheckBF16(BitsToF32(rng()), &m);
  EXPECT_EQ(m.count(), 0) << m.examples();
}

// ---------------------------------------------------------------------------
// DType metadata.

struct DTypeInfo {
  DType dtype;
  int64_t size;
  const char* name;
  bool is_float;
};

constexpr DTypeInfo kAllDTypes[] = {
    {DType::kF32, 4, "f32", true},  {DType::kBF16, 2, "bf16", true}, {DType::kF16, 2, "f16", true},
    {DType::kI32, 4, "i32", false}, {DType::kI64, 8, "i64", false},  {DType::kU8, 1, "u8", false},
};

TEST(DTypeTest, SizeNameAndParse) {
  for (const DTypeInfo& d : kAllDTypes) {
    SCOPED_TRACE(d.name);
    EXPECT_EQ(DTypeSize(d.dtype), d.size);
    EXPECT_STREQ(DTypeName(d.dtype), d.name);
    EXPECT_EQ(IsFloat(d.dtype), d.is_float);
    absl::StatusOr<DType> parsed = ParseDType(d.name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d.dtype);
  }
}

TEST(DTypeTest, SizesMatchStorageTypes) {
  EXPECT_EQ(DTypeSize(DTypeOf<float>::value), static_cast<int64_t>(sizeof(float)));
  EXPECT_EQ(DTypeSize(DTypeOf<BF16>::value), static_cast<int64_t>(sizeof(BF16)));
  EXPECT_EQ(DTypeSize(DTypeOf<F16>::value), static_cast<int64_t>(sizeof(F16)));
  EXPECT_EQ(DTypeSize(DTypeOf<int32_t>::value), static_cast<int64_t>(sizeof(int32_t)));
  EXPECT_EQ(DTypeSize(DTypeOf<int64_t>::value), static_cast<int64_t>(sizeof(int64_t)));
  EXPECT_EQ(DTypeSize(DTypeOf<uint8_t>::value), static_cast<int64_t>(sizeof(uint8_t)));
}

TEST(DTypeTest, ParseRejectsUnknownNames) {
  absl::StatusOr<DType> f64 = ParseDType("f64");
  ASSERT_FALSE(f64.ok());
  EXPECT_EQ(f64.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f64.status().message()), HasSubstr("'f64'"));
  for (const char* bad : {"", "F32", "f32 ", "float", "bfloat16"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<DType> r = ParseDType(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------
// LoadAsF32 / StoreFromF32.

TEST(DTypeTest, LoadStoreF32IsExact) {
  const std::vector<float> values = {0.0f, -0.0f, 1.5f, -2.25f, 3.14159265f, 1e-40f, 1e30f, kInf};
  std::vector<float> buf(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    StoreFromF32(buf.data(), DType::kF32, static_cast<int64_t>(i), values[i]);
  }
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(F32ToBits(LoadAsF32(buf.data(), DType::kF32, static_cast<int64_t>(i))),
              F32ToBits(values[i]));
  }
}

TEST(DTypeTest, LoadStoreBF16) {
  // Exactly representable values come back unchanged; others come back rounded.
  const std::vector<float> exact = {0.0f, 1.0f, -1.5f, 256.0f, 0.0078125f, -std::ldexp(1.0f, 100)};
  std::vector<BF16> buf(exact.size() + 2, BF16{0xabcd});
  for (size_t i = 0; i < exact.size(); ++i) {
    StoreFromF32(buf.data(), DType::kBF16, static_cast<int64_t>(i + 1), exact[i]);
  }
  EXPECT_EQ(buf.front().bits, 0xabcd);  // neighbours untouched: 2-byte elements
  EXPECT_EQ(buf.back().bits, 0xabcd);
  for (size_t i = 0; i < exact.size(); ++i) {
    EXPECT_EQ(LoadAsF32(buf.data(), DType::kBF16, static_cast<int64_t>(i + 1)), exact[i]);
  }
  StoreFromF32(buf.data(), DType::kBF16, 0, 3.14159265f);
  EXPECT_EQ(buf[0].bits, 0x4049);
  EXPECT_EQ(LoadAsF32(buf.data(), DType::kBF16, 0), 3.140625f);
  StoreFromF32(buf.data(), DType::kBF16, 0, 1.0f + std::ldexp(1.0f, -8));  // tie -> 1
  EXPECT_EQ(LoadAsF32(buf.data(), DType::kBF16, 0), 1.0f);
}

TEST(DTypeTest, LoadStoreF16) {
  const std::vector<float> exact = {0.0f, 1.0f, -1.5f, 65504.0f, std::ldexp(1.0f, -24), -2048.0f};
  std::vector<F16> buf(exact.size() + 2, F16{0xabcd});
  for (size_t i = 0; i < exact.size(); ++i) {
    StoreFromF32(buf.data(), DType::kF16, static_cast<int64_t>(i + 1), exact[i]);
  }
  EXPECT_EQ(buf.front().bits, 0xabcd);
  EXPECT_EQ(buf.back().bits, 0xabcd);
  for (size_t i = 0; i < exact.size(); ++i) {
    EXPECT_EQ(LoadAsF32(buf.data(), DType::kF16, static_cast<int64_t>(i + 1)), exact[i]);
  }
  StoreFromF32(buf.data(), DType::kF16, 0, 3.14159265f);
  EXPECT_EQ(buf[0].bits, 0x4248);
  EXPECT_EQ(LoadAsF32(buf.data(), DType::kF16, 0), 3.140625f);
  StoreFromF32(buf.data(), DType::kF16, 0, 1e5f);  // past the range: Inf
  EXPECT_EQ(LoadAsF32(buf.data(), DType::kF16, 0), kInf);
}

}  // namespace
}  // namespace trireme
