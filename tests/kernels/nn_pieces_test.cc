// The building blocks of kernels/nn.h that the tensor-parallel layers compose:
// the vocabulary-range embedding and cross-entropy pieces and the glue kernels
// (Add, AddBias, AddColumnSums, AddPositions, RowsToHeads / HeadsToRows),
// each against a straightforward loop written here; and the vocabulary-
// parallel composition: a [rows, V] logit matrix split into column ranges, the
// pieces reduced by hand (max, sum, sum) as the ranks' all-reduces would,
// against CrossEntropyForward / CrossEntropyBackward on the whole matrix.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/nn.h"
#include "tests/kernels/test_util.h"

namespace trireme::kernels {
namespace {

using testing::Random;
using testing::SameBits;

// Tolerance of the double-reference and vocabulary-parallel comparisons,
// relative to max(1, |expected|).
constexpr double kTol = 1e-6;

constexpr int64_t kRows = 7;
constexpr int64_t kCols = 13;

void ExpectNear(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, kTol * std::max(1.0, std::fabs(expected))) << what;
}

// ---- embedding ranges -------------------------------------------------------------

// Vocabulary 15, dim 13; this rank holds ids [4, 10).
constexpr int64_t kVocab = 15, kLo = 4, kCount = 6;
const std::vector<int32_t> kIds = {4, 0, 9, 14, 4, 7, 10};  // in range: rows 0, 2, 4, 5

TEST(EmbeddingRangeTest, ForwardCopiesHeldRowsAndZeroesTheRest) {
  const std::vector<float> table = Random(kCount * kCols, 1);
  std::vector<float> out = Random(kRows * kCols, 2);  // every element must be written
  EmbeddingForwardRange(table.data(), kIds.data(), kRows, kLo, kCount, kCols, out.data());
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t id = kIds[r] - kLo;
    for (int64_t j = 0; j < kCols; ++j) {
      const float want = id >= 0 && id < kCount ? table[id * kCols + j] : 0.0f;
      ASSERT_EQ(out[r * kCols + j], want) << "row " << r << " col " << j;
    }
  }
}

TEST(EmbeddingRangeTest, BackwardAddsHeldRowsInRowOrder) {
  const std::vector<int32_t> ids = {5, 5, 3, 9, 10, 5, 4};  // 5 repeats; 3 and 10 not held
  const std::vector<float> dout = Random(kRows * kCols, 3);
  std::vector<float> dtable = Random(kCount * kCols, 4);
  std::vector<float> want = dtable;
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t id = ids[r] - kLo;
    if (id < 0 || id >= kCount) continue;
    for (int64_t j = 0; j < kCols; ++j) want[id * kCols + j] += dout[r * kCols + j];
  }
  EmbeddingBackwardRange(dout.data(), ids.data(), kRows, kLo, kCount, kCols, dtable.data());
  EXPECT_TRUE(SameBits(dtable, want));
}

// Summed over ranks holding [0, 6), [6, 12), [12, 15), every row gets its
// embedding: the whole-table lookup.
TEST(EmbeddingRangeTest, RangesSumToTheWholeLookup) {
  const std::vector<float> table = Random(kVocab * kCols, 5);
  std::vector<float> whole(kRows * kCols);
  ASSERT_TRUE(EmbeddingForward(table.data(), kIds.data(), kRows, kVocab, kCols, whole.data()).ok());
  std::vector<float> sum(kRows * kCols, 0.0f), piece(kRows * kCols);
  for (int64_t lo : {0, 6, 12}) {
    const int64_t count = std::min<int64_t>(6, kVocab - lo);
    EmbeddingForwardRange(table.data() + lo * kCols, kIds.data(), kRows, lo, count, kCols,
                          piece.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += piece[i];
  }
  EXPECT_TRUE(SameBits(sum, whole));
}

// ---- cross-entropy pieces against loops ----------------------------------------------

// This rank: vocabulary [4, 15) in 13 columns, the last two padding (filled
// with large values, which must take no part).
constexpr int64_t kValid = 11;
const std::vector<int32_t> kTargets = {4, 0, 14, 9, 3, 15, 5};  // held: rows 0, 2, 3, 6

std::vector<float> PaddedLogits(uint32_t seed) {
  std::vector<float> x = Random(kRows * kCols, seed, -5.0f, 5.0f);
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t j = kValid; j < kCols; ++j) x[r * kCols + j] = 1000.0f;
  }
  return x;
}

TEST(CrossEntropyPiecesTest, RowMaxIgnoresPadding) {
  const std::vector<float> logits = PaddedLogits(6);
  std::vector<float> row_max(kRows);
  CrossEntropyRowMax(logits.data(), kRows, kCols, kValid, row_max.data());
  for (int64_t r = 0; r < kRows; ++r) {
    float want = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < kValid; ++j) want = std::max(want, logits[r * kCols + j]);
    EXPECT_EQ(row_max[r], want) << "row " << r;
  }
}

TEST(CrossEntropyPiecesTest, RowMaxWithNoValidColumnIsMinusInfinity) {
  const std::vector<float> logits = Random(2 * 3, 7);
  std::vector<float> row_max(2, 0.0f);
  CrossEntropyRowMax(logits.data(), 2, 3, 0, row_max.data());
  EXPECT_EQ(row_max[0], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(row_max[1], -std::numeric_limits<float>::infinity());
}

TEST(CrossEntropyPiecesTest, SumExpAgainstADoubleLoop) {
  const std::vector<float> logits = PaddedLogits(8);
  const std::vector<float> row_max = Random(kRows, 9, 4.0f, 6.0f);  // any shift, e.g. a global max
  std::vector<float> sum_exp(kRows);
  CrossEntropySumExp(logits.data(), row_max.data(), kRows, kCols, kValid, sum_exp.data());
  for (int64_t r = 0; r < kRows; ++r) {
    double want = 0.0;
    for (int64_t j = 0; j < kValid; ++j) {
      want += std::exp(static_cast<double>(logits[r * kCols + j]) - row_max[r]);
    }
    ExpectNear(sum_exp[r], want, absl::StrCat("row ", r));
  }
}

TEST(CrossEntropyPiecesTest, TargetLogitOnlyForHeldTargets) {
  const std::vector<float> logits = PaddedLogits(10);
  std::vector<float> target = Random(kRows, 11);
  CrossEntropyTargetLogit(logits.data(), kTargets.data(), kRows, kCols, kLo, kValid, target.data());
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t t = kTargets[r] - kLo;
    const float want = t >= 0 && t < kValid ? logits[r * kCols + t] : 0.0f;
    EXPECT_EQ(target[r], want) << "row " << r;
  }
}

TEST(CrossEntropyPiecesTest, LossAgainstADoubleLoop) {
  const std::vector<float> row_max = Random(kRows, 12, -2.0f, 2.0f);
  const std::vector<float> sum_exp = Random(kRows, 13, 1.0f, 30.0f);
  const std::vector<float> target = Random(kRows, 14, -2.0f, 2.0f);
  std::vector<float> lse(kRows);
  double loss = -1.0;
  CrossEntropyLoss(row_max.data(), sum_exp.data(), target.data(), kRows, lse.data(), &loss);
  double total = 0.0;
  for (int64_t r = 0; r < kRows; ++r) {
    const double want = static_cast<double>(row_max[r]) + std::log(static_cast<double>(sum_exp[r]));
    ExpectNear(lse[r], want, absl::StrCat("lse row ", r));
    total += want - target[r];
  }
  ExpectNear(loss, total / kRows, "loss");
}

TEST(CrossEntropyPiecesTest, LossOfNoRowsIsZero) {
  double loss = -1.0;
  CrossEntropyLoss(nullptr, nullptr, nullptr, 0, nullptr, &loss);
  EXPECT_EQ(loss, 0.0);
}

TEST(CrossEntropyPiecesTest, BackwardRangeAgainstADoubleLoop) {
  const std::vector<float> logits = PaddedLogits(15);
  const std::vector<float> lse = Random(kRows, 16, 5.0f, 7.0f);
  constexpr float kScale = 4.0f;
  std::vector<float> dlogits = Random(kRows * kCols, 17);
  CrossEntropyBackwardRange(logits.data(), kTargets.data(), lse.data(), kRows, kCols, kLo, kValid,
                            kScale, dlogits.data());
  const double g = static_cast<double>(kScale) / kRows;
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t j = 0; j < kCols; ++j) {
      double want = 0.0;
      if (j < kValid) {
        want = std::exp(static_cast<double>(logits[r * kCols + j]) - lse[r]) * g;
        if (kTargets[r] - kLo == j) want -= g;
      }
      ExpectNear(dlogits[r * kCols + j], want, absl::StrCat("row ", r, " col ", j));
      if (j >= kValid) {
        EXPECT_EQ(dlogits[r * kCols + j], 0.0f);
      }
    }
  }
}

TEST(CrossEntropyPiecesTest, BackwardRangeMayOverwriteTheLogits) {
  std::vector<float> logits = PaddedLogits(18);
  const std::vector<float> lse = Random(kRows, 19, 5.0f, 7.0f);
  std::vector<float> separate(kRows * kCols);
  CrossEntropyBackwardRange(logits.data(), kTargets.data(), lse.data(), kRows, kCols, kLo, kValid,
                            1.0f, separate.data());
  CrossEntropyBackwardRange(logits.data(), kTargets.data(), lse.data(), kRows, kCols, kLo, kValid,
                            1.0f, logits.data());
  EXPECT_TRUE(SameBits(logits, separate));
}

// ---- the vocabulary-parallel composition ----------------------------------------------

// V = 11 split into `pieces` column ranges of ceil(11 / pieces) columns, the
// last range with padding columns: 2 x 6 (1 padding), 3 x 4 (1 padding) and
// 5 x 3, whose last range is all padding (15 columns for 11 words).
class VocabParallelTest : public ::testing::TestWithParam<int> {
 protected:
  static constexpr int64_t kV = 11;
  struct Piece {
    int64_t lo = 0;
    int64_t valid = 0;
    std::vector<float> logits;  // [kRows, width]
  };

  void SetUp() override {
    logits_ = Random(kRows * kV, 20, -6.0f, 6.0f);
    width_ = (kV + GetParam() - 1) / GetParam();
    for (int p = 0; p < GetParam(); ++p) {
      Piece piece;
      piece.lo = p * width_;
      piece.valid = std::max<int64_t>(0, std::min(width_, kV - piece.lo));
      piece.logits.assign(kRows * width_, 500.0f);  // padding: large, and ignored
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t j = 0; j < piece.valid; ++j) {
          piece.logits[r * width_ + j] = logits_[r * kV + piece.lo + j];
        }
      }
      pieces_.push_back(std::move(piece));
    }
  }

  std::vector<float> logits_;  // [kRows, kV]
  const std::vector<int32_t> targets_ = {0, 10, 5, 3, 6, 7, 4};
  int64_t width_ = 0;
  std::vector<Piece> pieces_;
};

TEST_P(VocabParallelTest, PiecesReducedByHandEqualTheWholeMatrix) {
  EXPECT_LT(pieces_.back().valid, width_) << "the last range should have padding";

  // 1. row max, reduced with max.
  std::vector<float> row_max(kRows, -std::numeric_limits<float>::infinity()), part(kRows);
  for (const Piece& p : pieces_) {
    CrossEntropyRowMax(p.logits.data(), kRows, width_, p.valid, part.data());
    for (int64_t r = 0; r < kRows; ++r) row_max[r] = std::max(row_max[r], part[r]);
  }
  // 2. sum of exponentials against the global max, reduced with sum;
  // 3. target logit, reduced with sum.
  std::vector<float> sum_exp(kRows, 0.0f), target(kRows, 0.0f);
  for (const Piece& p : pieces_) {
    CrossEntropySumExp(p.logits.data(), row_max.data(), kRows, width_, p.valid, part.data());
    for (int64_t r = 0; r < kRows; ++r) sum_exp[r] += part[r];
    CrossEntropyTargetLogit(p.logits.data(), targets_.data(), kRows, width_, p.lo, p.valid,
                            part.data());
    for (int64_t r = 0; r < kRows; ++r) target[r] += part[r];
  }
  // 4. the loss.
  std::vector<float> lse(kRows);
  double loss = 0.0;
  CrossEntropyLoss(row_max.data(), sum_exp.data(), target.data(), kRows, lse.data(), &loss);

  std::vector<float> whole_lse(kRows);
  absl::StatusOr<float> whole_loss =
      CrossEntropyForward(logits_.data(), targets_.data(), kRows, kV, kV, whole_lse.data());
  ASSERT_TRUE(whole_loss.ok()) << whole_loss.status();
  for (int64_t r = 0; r < kRows; ++r) ExpectNear(lse[r], whole_lse[r], absl::StrCat("lse ", r));
  ExpectNear(loss, *whole_loss, "loss");

  // The backward: each piece's columns, concatenated, against the whole.
  constexpr float kScale = 3.0f;
  std::vector<float> whole_d(kRows * kV);
  ASSERT_TRUE(CrossEntropyBackward(logits_.data(), targets_.data(), whole_lse.data(), kRows, kV, kV,
                                   kScale, whole_d.data())
                  .ok());
  std::vector<float> d(kRows * width_);
  for (const Piece& p : pieces_) {
    CrossEntropyBackwardRange(p.logits.data(), targets_.data(), lse.data(), kRows, width_, p.lo,
                              p.valid, kScale, d.data());
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t j = 0; j < width_; ++j) {
        const float got = d[r * width_ + j];
        if (j >= p.valid) {
          EXPECT_EQ(got, 0.0f) << "padding row " << r << " col " << j;
          continue;
        }
        ExpectNear(got, whole_d[r * kV + p.lo + j],
                   absl::StrCat("dlogits row ", r, " vocab ", p.lo + j));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, VocabParallelTest, ::testing::Values(2, 3, 5),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat(info.param, "pieces");
                         });

// ---- glue -------------------------------------------------------------------------

TEST(GlueTest, AddElementwiseAndInPlace) {
  const std::vector<float> a = Random(kRows * kCols, 21), b = Random(kRows * kCols, 22);
  std::vector<float> out(a.size()), want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];
  Add(a.data(), b.data(), kRows * kCols, out.data());
  EXPECT_TRUE(SameBits(out, want));
  std::vector<float> in_place = a;
  Add(in_place.data(), b.data(), kRows * kCols, in_place.data());
  EXPECT_TRUE(SameBits(in_place, want));
  std::vector<float> into_b = b;
  Add(a.data(), into_b.data(), kRows * kCols, into_b.data());
  EXPECT_TRUE(SameBits(into_b, want));
}

TEST(GlueTest, AddBiasToEveryRow) {
  std::vector<float> x = Random(kRows * kCols, 23);
  const std::vector<float> bias = Random(kCols, 24);
  std::vector<float> want = x;
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t j = 0; j < kCols; ++j) want[r * kCols + j] += bias[j];
  }
  AddBias(x.data(), bias.data(), kRows, kCols);
  EXPECT_TRUE(SameBits(x, want));
}

TEST(GlueTest, AddColumnSumsAccumulatesInRowOrder) {
  const std::vector<float> x = Random(kRows * kCols, 25, -100.0f, 100.0f);
  std::vector<float> sums = Random(kCols, 26);
  std::vector<float> want = sums;
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t j = 0; j < kCols; ++j) want[j] += x[r * kCols + j];
  }
  AddColumnSums(x.data(), kRows, kCols, sums.data());
  EXPECT_TRUE(SameBits(sums, want));
}

TEST(GlueTest, AddPositionsWrapsAroundTheSequence) {
  constexpr int64_t kSeq = 3, kFirst = 5;  // rows 0.. are positions 2, 0, 1, 2, 0, 1, 2
  std::vector<float> x = Random(kRows * kCols, 27);
  const std::vector<float> table = Random(kSeq * kCols, 28);
  std::vector<float> want = x;
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t pos = (kFirst + r) % kSeq;
    for (int64_t j = 0; j < kCols; ++j) want[r * kCols + j] += table[pos * kCols + j];
  }
  AddPositions(x.data(), table.data(), kRows, kFirst, kSeq, kCols);
  EXPECT_TRUE(SameBits(x, want));
}

TEST(GlueTest, AddPositionsBackwardAccumulatesInRowOrder) {
  constexpr int64_t kSeq = 3, kFirst = 5;
  const std::vector<float> dx = Random(kRows * kCols, 29, -10.0f, 10.0f);
  std::vector<float> dtable = Random(kSeq * kCols, 30);
  std::vector<float> want = dtable;
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t pos = (kFirst + r) % kSeq;
    for (int64_t j = 0; j < kCols; ++j) want[pos * kCols + j] += dx[r * kCols + j];
  }
  AddPositionsBackward(dx.data(), kRows, kFirst, kSeq, kCols, dtable.data());
  EXPECT_TRUE(SameBits(dtable, want));
}

// Rows [batch * seq, ld] with a head group's heads * head_dim columns at col.
constexpr AttentionShape kAttn{2, 3, 5, 4};
constexpr int64_t kLd = 20, kCol = 5;

int64_t HeadIndex(int64_t b, int64_t h, int64_t t, int64_t d) {
  return ((b * kAttn.heads + h) * kAttn.seq + t) * kAttn.head_dim + d;
}
int64_t RowIndex(int64_t b, int64_t h, int64_t t, int64_t d) {
  return (b * kAttn.seq + t) * kLd + kCol + h * kAttn.head_dim + d;
}

template <typename F>
void ForEachElement(F f) {
  for (int64_t b = 0; b < kAttn.batch; ++b) {
    for (int64_t h = 0; h < kAttn.heads; ++h) {
      for (int64_t t = 0; t < kAttn.seq; ++t) {
        for (int64_t d = 0; d < kAttn.head_dim; ++d) f(b, h, t, d);
      }
    }
  }
}

TEST(GlueTest, RowsToHeadsPermutes) {
  const std::vector<float> rows = Random(kAttn.batch * kAttn.seq * kLd, 31);
  std::vector<float> heads(kAttn.batch * kAttn.heads * kAttn.seq * kAttn.head_dim, 0.0f);
  RowsToHeads(rows.data(), kLd, kCol, kAttn, heads.data());
  ForEachElement([&](int64_t b, int64_t h, int64_t t, int64_t d) {
    ASSERT_EQ(heads[HeadIndex(b, h, t, d)], rows[RowIndex(b, h, t, d)])
        << "b " << b << " h " << h << " t " << t << " d " << d;
  });
}

TEST(GlueTest, HeadsToRowsPermutesBackAndLeavesOtherColumns) {
  const std::vector<float> heads =
      Random(kAttn.batch * kAttn.heads * kAttn.seq * kAttn.head_dim, 32);
  const std::vector<float> before = Random(kAttn.batch * kAttn.seq * kLd, 33);
  std::vector<float> rows = before;
  HeadsToRows(heads.data(), kAttn, rows.data(), kLd, kCol);
  std::vector<bool> written(rows.size(), false);
  ForEachElement([&](int64_t b, int64_t h, int64_t t, int64_t d) {
    written[RowIndex(b, h, t, d)] = true;
    ASSERT_EQ(rows[RowIndex(b, h, t, d)], heads[HeadIndex(b, h, t, d)]);
  });
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!written[i]) {
      EXPECT_EQ(rows[i], before[i]) << "column outside the group changed at " << i;
    }
  }
  // And the round trip.
  std::vector<float> again(heads.size());
  RowsToHeads(rows.data(), kLd, kCol, kAttn, again.data());
  EXPECT_TRUE(SameBits(again, heads));
}

// ---- threads ------------------------------------------------------------------------

// The kernels that take `threads` split their work over the shared pool in a
// way that keeps every result bit for bit: 1, 2 and 3 threads agree, on sizes
// large enough to be split (and uneven, so chunks differ in size).
class ThreadsTest : public ::testing::TestWithParam<int> {};

TEST_P(ThreadsTest, ElementwiseAndRowKernelsAreBitwiseIndependentOfThreads) {
  const int threads = GetParam();
  constexpr int64_t kR = 67, kC = 1031, kN = kR * kC;
  const std::vector<float> x = Random(kN, 41, -4.0f, 4.0f), dy = Random(kN, 42);
  const std::vector<float> gamma = Random(kC, 43, 0.5f, 1.5f), beta = Random(kC, 44);
  struct Out {
    std::vector<float> gelu, dgelu, ln, mean, rstd, dln, dgamma, dbeta, add, bias, colsums;
  };
  auto run = [&](int t) {
    Out o{std::vector<float>(kN), std::vector<float>(kN),
          std::vector<float>(kN), std::vector<float>(kR),
          std::vector<float>(kR), dy,
          Random(kC, 45),         Random(kC, 46),
          std::vector<float>(kN), x,
          Random(kC, 47)};
    GeluForward(x.data(), kN, o.gelu.data(), t);
    GeluBackward(x.data(), dy.data(), kN, o.dgelu.data(), t);
    LayerNormForward(x.data(), gamma.data(), beta.data(), kR, kC, 1e-5f, o.ln.data(), o.mean.data(),
                     o.rstd.data(), t);
    // In place (dx = dy), adding into existing dgamma / dbeta.
    LayerNormBackward(o.dln.data(), x.data(), gamma.data(), o.mean.data(), o.rstd.data(), kR, kC,
                      o.dln.data(), o.dgamma.data(), o.dbeta.data(), t);
    Add(x.data(), dy.data(), kN, o.add.data(), t);
    AddBias(o.bias.data(), beta.data(), kR, kC, t);
    AddColumnSums(dy.data(), kR, kC, o.colsums.data(), t);
    return o;
  };
  const Out one = run(1), many = run(threads);
  EXPECT_TRUE(SameBits(one.gelu, many.gelu));
  EXPECT_TRUE(SameBits(one.dgelu, many.dgelu));
  EXPECT_TRUE(SameBits(one.ln, many.ln));
  EXPECT_TRUE(SameBits(one.mean, many.mean));
  EXPECT_TRUE(SameBits(one.rstd, many.rstd));
  EXPECT_TRUE(SameBits(one.dln, many.dln));
  EXPECT_TRUE(SameBits(one.dgamma, many.dgamma));
  EXPECT_TRUE(SameBits(one.dbeta, many.dbeta));
  EXPECT_TRUE(SameBits(one.add, many.add));
  EXPECT_TRUE(SameBits(one.bias, many.bias));
  EXPECT_TRUE(SameBits(one.colsums, many.colsums));
  // And the permutes, over many heads.
  const AttentionShape sh{4, 12, 33, 16};
  const int64_t ld = 3 * sh.heads * sh.head_dim,
                n_heads = sh.batch * sh.heads * sh.seq * sh.head_dim;
  const std::vector<float> rows = Random(sh.batch * sh.seq * ld, 48);
  std::vector<float> h1(n_heads), ht(n_heads), r1(rows.size(), 0.0f), rt(rows.size(), 0.0f);
  RowsToHeads(rows.data(), ld, sh.heads * sh.head_dim, sh, h1.data(), 1);
  RowsToHeads(rows.data(), ld, sh.heads * sh.head_dim, sh, ht.data(), threads);
  HeadsToRows(h1.data(), sh, r1.data(), ld, 0, 1);
  HeadsToRows(h1.data(), sh, rt.data(), ld, 0, threads);
  EXPECT_TRUE(SameBits(h1, ht));
  EXPECT_TRUE(SameBits(r1, rt));
}

INSTANTIATE_TEST_SUITE_P(Threads, ThreadsTest, ::testing::Values(2, 3),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return absl::StrCat(i.param, "_threads");
                         });

}  // namespace
}  // namespace trireme::kernels
