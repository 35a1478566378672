// TrainConfig (models/train_config.h): options as text, the precedence of
// the command line over a JSON file over a preset, validation that names
// the numbers, and the trainer's options.
#include "models/train_config.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gpt_config.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(TrainConfig, OptionsReadAndWriteAsText) {
  TrainConfig c;
  EXPECT_EQ(c.Get("lr"), "0.003");  // as a flag prints a double
  ASSERT_TRUE(c.Set("lr", "1e-2").ok());
  EXPECT_EQ(c.Get("lr"), "0.01");
  EXPECT_DOUBLE_EQ(c.lr, 0.01);
  ASSERT_TRUE(c.Set("recompute", "true").ok());
  EXPECT_TRUE(c.recompute);
  ASSERT_TRUE(c.Set("seed", "18446744073709551615").ok());
  EXPECT_EQ(c.Get("seed"), "18446744073709551615");
  EXPECT_THAT(Message(c.Set("layers", "x")), HasSubstr("'layers' = 'x': not an integer"));
  EXPECT_THAT(Message(c.Set("lrr", "1")), HasSubstr("unknown key 'lrr'"));
  EXPECT_EQ(c.Get("lrr"), "");
  // Every option has a help line and reads back what it was set to.
  for (const TrainConfig::Option& o : TrainConfig::Options()) {
    EXPECT_FALSE(o.help.empty()) << o.name;
    TrainConfig d;
    EXPECT_TRUE(d.Set(o.name, d.Get(o.name)).ok()) << o.name;
  }
}

TEST(TrainConfig, CommandLineWinsOverTheFileWhichWinsOverThePreset) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/run.json";
  std::ofstream(path) << R"({"preset": "small", "layers": 3, "lr": 0.02, "tp": 1})";
  std::vector<std::string> given;
  absl::StatusOr<TrainConfig> c =
      TrainConfigFromArgs({"--config=" + path, "--lr=0.5", "--norecompute", "--dp=1"}, &given);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers, 3);       // the file over the preset
  EXPECT_EQ(c->hidden, 128);     // the preset (small)
  EXPECT_DOUBLE_EQ(c->lr, 0.5);  // the command line over the file
  EXPECT_EQ(c->tp, 1);
  EXPECT_EQ(c->dp, 1);
  EXPECT_FALSE(c->recompute);
  EXPECT_THAT(given, ::testing::UnorderedElementsAre("config", "lr", "recompute", "dp"));
  // The command line's preset over the file's.
  c = TrainConfigFromArgs({"--config=" + path, "--preset=tiny"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden, 32);
  EXPECT_EQ(c->layers, 3);
}

TEST(TrainConfig, BadArgumentsAreNamed) {
  EXPECT_THAT(Message(TrainConfigFromArgs({"--lrr=1"}).status()),
              HasSubstr("unknown flag '--lrr'"));
  EXPECT_THAT(Message(TrainConfigFromArgs({"lr=1"}).status()), HasSubstr("'lr=1' is not a flag"));
  EXPECT_THAT(Message(TrainConfigFromArgs({"--layers"}).status()),
              HasSubstr("--layers needs a value"));
  EXPECT_THAT(Message(TrainConfigFromArgs({"--preset=huge"}).status()),
              HasSubstr("--preset: no preset 'huge' (use default, gpt2"));
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/bad.json";
  std::ofstream(path) << R"({"lrr": 1})";
  EXPECT_THAT(Message(TrainConfigFromArgs({"--config=" + path}).status()),
              HasSubstr("unknown key 'lrr'"));
  EXPECT_THAT(Message(TrainConfigFromArgs({"--config=/nonexistent.json"}).status()),
              HasSubstr("cannot open '/nonexistent.json'"));
}

TEST(TrainConfig, ValidateNamesTheNumbers) {
  TrainConfig c;
  c.global_batch = 10;
  EXPECT_THAT(Message(c.Validate()),
              HasSubstr("--global_batch=10 but micro_batch (4) x grad_accum (2) x dp (2) = 16"));
  c = TrainConfig();
  c.lr = -1;
  EXPECT_THAT(Message(c.Validate()), HasSubstr("--lr=-1 must be > 0"));
  c = TrainConfig();
  c.backend = "tcp";
  EXPECT_THAT(Message(c.Validate()), HasSubstr("--backend='tcp'"));
  c = TrainConfig();
  c.resume = "auto";
  EXPECT_THAT(Message(c.Validate()), HasSubstr("--resume=auto needs --checkpoint_dir"));
  c = TrainConfig();
  c.tp = 3;  // heads 4
  EXPECT_THAT(Message(c.ToOptions().status()), HasSubstr("tp (3) must divide heads (4)"));
  EXPECT_TRUE(TrainConfig().Validate().ok());
}

TEST(TrainConfig, ToOptionsMapsEverySetting) {
  TrainConfig c;
  c.precision = "f16";
  c.optimizer = "sgd";
  c.lr_schedule = "constant";
  c.recompute = true;
  c.warmup = 500;  // capped at steps
  absl::StatusOr<GptTrainOptions> o = c.ToOptions();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->model.layers, 4);
  EXPECT_EQ(o->grid.dp, 2);
  EXPECT_EQ(o->micro_batches, 2);
  EXPECT_EQ(o->engine.stage, 3);
  EXPECT_EQ(o->engine.compute_dtype, DType::kF16);
  EXPECT_TRUE(o->engine.loss_scaling);
  EXPECT_EQ(o->engine.optimizer.kind, OptimizerKind::kSgd);
  EXPECT_EQ(o->engine.lr.kind, LrSchedule::Kind::kConstant);
  EXPECT_EQ(o->engine.lr.warmup_steps, 150);
  EXPECT_EQ(o->model.recompute, std::vector<bool>(4, true));
  EXPECT_EQ(c.RecordJson().Find("lr")->string_value(), "0.003");
}

TEST(TrainConfig, ArchitecturePresetsCombineWithShapes) {
  absl::StatusOr<TrainConfig> c = TrainConfigFromArgs({"--preset=llama,small", "--kv_heads=4"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden, 128);
  EXPECT_EQ(c->kv_heads, 4);  // the flag wins over the preset's 2
  absl::StatusOr<GptTrainOptions> o = c->ToOptions();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->model.norm, NormKind::kRmsNorm);
  EXPECT_EQ(o->model.position, PositionKind::kRope);
  EXPECT_EQ(o->model.mlp, MlpKind::kSwiGlu);
  EXPECT_FALSE(o->model.tied_head);
  EXPECT_FALSE(o->model.bias);
  EXPECT_EQ(o->model.kv_heads, 4);
  EXPECT_THAT(Message(TrainConfigFromArgs({"--norm=batchnorm"})->Validate()),
              HasSubstr("--norm='batchnorm': use layernorm or rmsnorm"));
  // A named model sets its whole architecture.
  c = TrainConfigFromArgs({"--preset=llama-70b"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers, 80);
  EXPECT_EQ(c->hidden, 8192);
  EXPECT_EQ(c->heads, 64);
  EXPECT_EQ(c->kv_heads, 8);
  EXPECT_EQ(c->ffn, 28672);
  EXPECT_EQ(c->vocab, 32000);
}

// Every named shape has exactly the parameter count its authors publish.
TEST(NamedShapes, ParameterCountsAreThePublishedOnes) {
  ASSERT_GE(GptNamedShapes().size(), 7u);
  for (const NamedShape& n : GptNamedShapes()) {
    EXPECT_TRUE(n.config.Validate(1).ok()) << n.name;
    EXPECT_EQ(GptParameterCount(n.config), n.published_params) << n.name;
  }
}

// GQA: the model's own errors name the numbers.
TEST(GptConfig, GroupedQueryAttentionNamesItsNumbers) {
  GptConfig c;
  c.hidden = 48;
  c.heads = 12;
  c.kv_heads = 4;
  EXPECT_TRUE(c.Validate(1, 2).ok());   // 2 ranks of 2 KV heads
  EXPECT_TRUE(c.Validate(1, 12).ok());  // each KV head shared by 3 ranks
  EXPECT_THAT(c.Validate(1, 6).message(), HasSubstr("tp (6) must divide kv_heads (4)"));
  c.kv_heads = 5;
  EXPECT_THAT(c.Validate(1).message(), HasSubstr("kv_heads (5) must divide heads (12)"));
  c.kv_heads = 4;
  c.hidden = 36;  // head size 3
  c.position = PositionKind::kRope;
  EXPECT_THAT(c.Validate(1).message(), HasSubstr("even head size (36 / 12 = 3)"));
}

}  // namespace
}  // namespace trireme
