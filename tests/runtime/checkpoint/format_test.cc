// The checkpoint file formats on their own: CRC32C against the standard check
// values (hardware and table paths), the strict JSON parser, and safetensors
// writing, reading and rejecting every kind of malformed header with a
// specific error and no oversized allocation.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/crc32c.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/json.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

TEST(Crc32cTest, StandardCheckValues) {
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c(s.data(), s.size()), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(Crc32cExtendPortable(0, s.data(), s.size()), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  // Extending in pieces equals one pass, on both paths, at odd lengths.
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + 3);
  const uint32_t whole = Crc32c(data.data(), data.size());
  EXPECT_EQ(Crc32cExtend(Crc32c(data.data(), 333), data.data() + 333, 667), whole);
  EXPECT_EQ(Crc32cExtendPortable(0, data.data(), data.size()), whole);
  EXPECT_EQ(Crc32cHex(0xE3069283u), "e3069283");
}

TEST(JsonTest, RoundTripsAndRejectsMalformedInput) {
  auto v = Json::Parse(R"( {"a": [1, -2, 3.5e2, true, null], "b": {"c": "x\"\u00e9\n"}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->Find("a")->items()[1].int_value(), -2);
  EXPECT_EQ(v->Find("a")->items()[2].number_value(), 350.0);
  EXPECT_EQ(v->Find("b")->Find("c")->string_value(), "x\"\xc3\xa9\n");
  auto again = Json::Parse(v->Dump());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->Dump(), v->Dump());
  // Doubles survive a round trip exactly (loss scales are saved this way).
  auto d = Json::Parse(Json(0.1 + 0.2).Dump());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->number_value(), 0.1 + 0.2);

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"a": 1, "a": 2})", "duplicate key"},
      {R"({"a": 1} x)", "trailing bytes"},
      {R"({"a": 99999999999999999999})", "outside int64"},
      {R"({"a": 01})", "leading zero"},
      {R"({"a": "\ud800"})", "unpaired surrogate"},
      {R"({"a": "abc)", "unterminated"},
      {R"([1, 2,])", "unexpected character"},
      {std::string(100, '[') + std::string(100, ']'), "nesting deeper"},
      {"", "unexpected end"},
  };
  for (const auto& [text, why] : bad) {
    auto r = Json::Parse(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(why)) << text;
  }
}

std::string Tmp(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string p = absl::StrCat(base ? base : "/tmp", "/", name);
  std::filesystem::remove(p);
  return p;
}

TEST(SafetensorsTest, WritesWhatItReads) {
  const std::string path = Tmp("a.safetensors");
  std::vector<float> x = {1, 2, 3, 4, 5, 6}, y = {-1.5f};
  auto w = WriteSafetensors(path, {{"x", {2, 3}, x.data()}, {"y", {1}, y.data()}}, {{"k", "v"}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->size, static_cast<int64_t>(std::filesystem::file_size(path)));
  auto h = ReadSafetensorsHeader(path);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_start % 8, 0);  // data aligned
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->Find("x")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h->metadata, (std::vector<std::pair<std::string, std::string>>{{"k", "v"}}));
  std::vector<float> back(6);
  ASSERT_TRUE(ReadSafetensorsF32(path, *h, *h->Find("x"), back.data(), 6).ok());
  EXPECT_EQ(back, x);
  // Never overwrites.
  EXPECT_FALSE(WriteSafetensors(path, {{"x", {1}, x.data()}}, {}).ok());
}

// A file with header `json` and `data` bytes of data.
std::string File(const std::string& json, int64_t data) {
  std::string f(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>(n >> (8 * i));
  return f + json + std::string(data, '\0');
}

TEST(SafetensorsTest, RejectsMalformedHeaders) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_TRUE(ParseSafetensorsFile(File(ok, 8), 8 + ok.size() + 8).ok());
  struct Case {
    std::string file;
    std::string why;
  };
  std::string absurd(8, '\xff');
  std::string past(8, '\0');
  past[0] = 100;
  const std::vector<Case> cases = {
      {absurd + "{}", "above the"},
      {past + "{}", "runs past the end"},
      {"abc", "too short"},
      {File("not json", 0), "JSON"},
      {File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{}})", 4),
       "duplicate key"},
      {File(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4), "unknown dtype"},
      {File(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "negative dimension"},
      {File(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})", 4),
       "overflows"},
      {File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4), "inverted"},
      {File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
            8),
       "overlaps"},
      {File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            12),
       "gap"},
      {File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "past the end"},
      {File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "shape needs"},
      {File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12), "follow the header"},
      {File(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "data_offsets"},
      {File(R"({"__metadata__":{"k":1}})", 0), "not a string"},
  };
  for (const Case& c : cases) {
    auto r = ParseSafetensorsFile(c.file, static_cast<int64_t>(c.file.size()));
    ASSERT_FALSE(r.ok()) << c.why;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.why));
  }
  // Through the file reader: an absurd length is refused before allocating.
  const std::string path = Tmp("absurd.safetensors");
  std::ofstream(path, std::ios::binary) << absurd << "{}";
  auto r = ReadSafetensorsHeader(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

TEST(SafetensorsTest, InteropDetails) {
  // "__metadata__": null is allowed (the Rust reader's Option); invalid UTF-8 is not.
  const std::string ok =
      R"({"__metadata__":null,"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  EXPECT_TRUE(ParseSafetensorsFile(File(ok, 4), 8 + ok.size() + 4).ok());
  for (const std::string& bad :
       {std::string("{\"a\xff\":{}}"), std::string("{\"\xc0\xaf\":{}}"),
        std::string("{\"\xed\xa0\x80\":{}}"), std::string("{\"\xe2\x82\":{}}")}) {
    auto r = ParseSafetensorsFile(File(bad, 0), 8 + bad.size());
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("UTF-8"));
  }
  const std::string utf8 =
      "{\"caf\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  EXPECT_TRUE(ParseSafetensorsFile(File(utf8, 1), 8 + utf8.size() + 1).ok());
}

// A valid manifest text, with `edit` applied to its JSON.
std::string Manifest(const std::function<void(Json&)>& edit = nullptr) {
  auto chunk = [](const char* file, int64_t off) {
    return Json::Object({{"file", Json(file)},
                         {"view", Json::IntArray({4, 3, 4})},
                         {"block_offset", Json::IntArray({0, 0, off})},
                         {"block_shape", Json::IntArray({4, 3, 2})},
                         {"begin", Json(int64_t{0})},
                         {"end", Json(int64_t{24})}});
  };
  Json m = Json::Object(
      {{"format", Json("trireme-checkpoint")},
       {"version", Json(1)},
       {"step", Json(3)},
       {"states", Json::Array({Json("master"), Json("m"), Json("v")})},
       {"grid", Json::Object()},
       {"engine", Json::Object({{"step", Json(3)},
                                {"optimizer_step", Json(3)},
                                {"loss_scaling", Json(false)},
                                {"loss_scale", Json(1.0)},
                                {"good_steps", Json(0)},
                                {"hysteresis_left", Json(1)}})},
       {"trainer", Json::Object()},
       {"files",
        Json::Object({{"rank-00000.safetensors",
                       Json::Object({{"size", Json(100)}, {"crc32c", Json("0a0b0c0d")}})},
                      {"rank-00001.safetensors",
                       Json::Object({{"size", Json(100)}, {"crc32c", Json("0a0b0c0e")}})}})},
       {"tensors",
        Json::Object(
            {{"qkv",
              Json::Object({{"shape", Json::IntArray({4, 12})},
                            {"dtype", Json("F32")},
                            {"chunks", Json::Array({chunk("rank-00000.safetensors", 0),
                                                    chunk("rank-00001.safetensors", 2)})}})}})}});
  if (edit) edit(m);
  return m.Dump();
}

TEST(ManifestTest, AcceptsTheValidAndNamesEachViolation) {
  ASSERT_TRUE(checkpoint::ParseManifest(Manifest()).ok())
      << checkpoint::ParseManifest(Manifest()).status();
  struct Case {
    std::string text;
    std::string why;
  };
  auto replace = [](std::string s, const std::string& from, const std::string& to) {
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  const std::string m = Manifest();
  const std::vector<Case> cases = {
      {replace(m, "\"rank-00001.safetensors\":{", "\"../rank-00001.safetensors\":{"),
       "leave the checkpoint directory"},
      {replace(m, "\"block_offset\":[0,0,2]", "\"block_offset\":[0,0,1]"), "covered twice"},
      {replace(m, "\"block_offset\":[0,0,2]", "\"block_offset\":[0,0,3]"), "outside the view"},
      {replace(m, "\"end\":24}]", "\"end\":20}]"), "are in no chunk"},
      {replace(m, "\"file\":\"rank-00001.safetensors\"", "\"file\":\"rank-00000.safetensors\""),
       "a second chunk in file"},
      {replace(m, "\"loss_scale\":1", "\"loss_scale\":0"), "loss_scale 0"},
      {replace(m, "\"good_steps\":0", "\"good_steps\":-5"), "good_steps -5"},
      {replace(m, "\"optimizer_step\":3", "\"optimizer_step\":4"), "inconsistent"},
      {replace(m, "\"version\":1", "\"version\":2"), "version 2"},
      {replace(m, "\"crc32c\":\"0a0b0c0d\"", "\"crc32c\":\"xyz\""), "8 hex digits"},
      {replace(m, "\"shape\":[4,12]", "\"shape\":[4611686018427387904,4]"), "overflows"},
  };
  for (const Case& c : cases) {
    auto r = checkpoint::ParseManifest(c.text);
    ASSERT_FALSE(r.ok()) << c.why;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.why));
  }
}

}  // namespace
}  // namespace trireme
