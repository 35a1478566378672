// The data sources of models/gpt_data.h: shapes, ranges, determinism, the
// train / held-out split of a text file, and the errors that name the file
// and the numbers.
#include "models/gpt_data.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

GptConfig Small(int64_t vocab) {
  GptConfig c;
  c.vocab = vocab;
  c.seq = 16;
  c.micro_batch = 3;
  c.seed = 7;
  return c;
}

TEST(GptData, MarkovIsDeterministicInRangeAndHoldsOutItsEvalSequences) {
  const GptConfig c = Small(97);
  const GptData a = MarkovData(c), b = MarkovData(c);
  EXPECT_EQ(a.name, "markov");
  EXPECT_GT(a.entropy_rate, 0);
  EXPECT_LT(a.entropy_rate, std::log(3.0) + 1e-9);  // at most 3 successors
  EXPECT_THAT(a.description, HasSubstr("entropy rate"));
  for (int64_t step : {0, 1, 5}) {
    const std::vector<int32_t> t = a.train(step, 2);
    ASSERT_EQ(t.size(), static_cast<size_t>(c.micro_batch * (c.seq + 1)));
    EXPECT_EQ(t, b.train(step, 2));  // the same on every rank and run
    for (int32_t x : t) ASSERT_TRUE(x >= 0 && x < c.vocab) << x;
    EXPECT_NE(t, a.eval(step, 2));
  }
  EXPECT_NE(a.train(1, 0), a.train(1, 1));
}

TEST(GptData, TextFileWindowsComeFromTheirPart) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/text.txt";
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>(i < 900 ? 'a' + i % 20 : 'A' + i % 20);
  std::ofstream(path, std::ios::binary) << text;
  const GptConfig c = Small(256);
  absl::StatusOr<GptData> d = TextFileData(path, c);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name, path);
  EXPECT_THAT(d->description, HasSubstr("1000 bytes"));
  for (int64_t step = 0; step < 20; ++step) {
    for (int32_t x : d->train(step, 1)) ASSERT_TRUE(x >= 'a' && x < 'a' + 20) << x;  // first 90%
    for (int32_t x : d->eval(step, 1)) ASSERT_TRUE(x >= 'A' && x < 'A' + 20) << x;   // last 10%
  }
}

TEST(GptData, TextFileErrorsNameTheFileAndTheNumbers) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  EXPECT_THAT(std::string(TextFileData(dir + "/missing.txt", Small(256)).status().message()),
              HasSubstr("cannot open '" + dir + "/missing.txt'"));
  std::ofstream(dir + "/short.txt") << std::string(100, 'x');
  EXPECT_THAT(
      std::string(TextFileData(dir + "/short.txt", Small(256)).status().message()),
      HasSubstr("has 100 bytes; its last 10% (validation) must hold at least seq + 2 = 18"));
  EXPECT_THAT(std::string(TextFileData(dir + "/short.txt", Small(97)).status().message()),
              HasSubstr("--vocab=97 is below 256"));
}

TEST(GptData, GptBatchIsALearnablePatternInRange) {
  GptConfig c = Small(50);
  const std::vector<int32_t> t = GptBatch(c, 3, 1);
  ASSERT_EQ(t.size(), static_cast<size_t>(c.micro_batch * (c.seq + 1)));
  for (int64_t b = 0; b < c.micro_batch; ++b) {
    const int32_t* s = t.data() + b * (c.seq + 1);
    const int32_t stride = (s[1] - s[0] + 50) % 50;
    EXPECT_TRUE(stride >= 1 && stride <= 3) << stride;
    for (int64_t i = 2; i <= c.seq; ++i) EXPECT_EQ((s[i] - s[i - 1] + 50) % 50, stride);
  }
}

}  // namespace
}  // namespace trireme
