// Generation (models/generate.h), checked three ways on models trained here
// on the synthetic Markov corpus and saved by the training loop:
// - greedy decoding with the key/value cache (a ring with a sliding window)
//   gives exactly the tokens of recomputing the whole prefix every step;
// - TP 2 and 4 give the same tokens as TP 1 (greedy, and sampling with a
//   seed), from a checkpoint saved on a (dp 2, tp 2, pp 2) grid;
// - sampled text's log-likelihood per token under the corpus's true
//   transition table is within 0.3 nats of the entropy rate (the sampler
//   draws from what the model learned, not only the math);
// and the generator's forward is the training forward: its log-probabilities
// of a batch give the trainer's loss.
#include "models/generate.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gpt_data.h"
#include "models/train_config.h"
#include "models/train_loop.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

struct Trained {
  std::string checkpoint;  // the committed step directory
  GptConfig model;
  double final_loss = 0;
};

// Trains the architecture `preset` (//:train's presets and flags) on the
// Markov corpus over 32 tokens on a (2, 2, 2) grid and saves the last step.
const Trained& Train(const std::string& arch) {
  static std::mutex mu;
  static auto* runs = new std::map<std::string, Trained>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = runs->find(arch);
  if (it != runs->end()) return it->second;
  Trained t;
  const std::string root =
      absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp", "/gen_", arch);
  std::filesystem::remove_all(root);
  std::vector<std::string> args = {"--preset=" + arch + ",tiny",
                                   "--vocab=32",
                                   "--seq=24",
                                   "--layers=2",
                                   "--lr=1e-2",
                                   "--steps=150",
                                   "--warmup=10",
                                   "--micro_batch=8",
                                   "--grad_accum=1",
                                   "--zero=1"};
  if (arch == "llama") args.push_back("--sliding_window=6");
  absl::StatusOr<TrainConfig> c = TrainConfigFromArgs(args);
  EXPECT_TRUE(c.ok()) << c.status();
  absl::StatusOr<GptTrainOptions> o = c->ToOptions();
  EXPECT_TRUE(o.ok()) << o.status();
  const GptData data = MarkovData(o->model);
  TrainLoopOptions lo;
  lo.trainer = *o;
  lo.trainer.data = data.train;
  lo.trainer.eval_data = data.eval;
  lo.steps = c->steps;
  lo.checkpoint_dir = root;
  lo.record = Json::Object({{"flags", c->RecordJson()}});
  std::vector<double> losses;
  absl::Status s = RunOnRanks(c->world_size(), [&](Communicator& world) -> absl::Status {
    MemoryTracker mem;
    ASSIGN_OR_RETURN(TrainSummary sum, RunTraining(world, lo, &mem, nullptr));
    if (world.rank() == 0) losses = sum.losses;
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  t.checkpoint = checkpoint::StepDir(root, c->steps);
  t.model = o->model;
  for (size_t i = losses.size() - 10; i < losses.size(); ++i) t.final_loss += losses[i] / 10;
  return runs->emplace(arch, t).first->second;
}

// Prompts of different lengths from the corpus (held-out sequence ids).
std::vector<std::vector<int32_t>> Prompts(const GptConfig& model, std::vector<int> lengths) {
  MarkovCorpus corpus(model.vocab, model.seed);
  std::vector<std::vector<int32_t>> p;
  for (size_t i = 0; i < lengths.size(); ++i) {
    p.push_back(corpus.Sequence((uint64_t{1} << 61) + i, lengths[i]));
  }
  return p;
}

// Generation on a TP group of `tp` threads; rank 0's result (every rank's
// tokens are checked equal).
absl::StatusOr<Generation> Generate(const std::string& checkpoint, int tp,
                                    const std::vector<std::vector<int32_t>>& prompts,
                                    const SamplingOptions& o) {
  std::mutex mu;
  std::vector<Generation> got(tp);
  absl::Status s = RunOnRanks(tp, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto g, GptGenerator::Load(c, checkpoint, Device::Cpu(), &mem));
    ASSIGN_OR_RETURN(Generation r, g->Generate(prompts, o));
    std::lock_guard<std::mutex> lock(mu);
    got[c.rank()] = std::move(r);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  for (int r = 1; r < tp; ++r) {
    if (got[r].tokens != got[0].tokens) return absl::InternalError("TP ranks disagree");
  }
  return got[0];
}

TEST(Generate, TheModelsLearnedTheCorpus) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const Trained& t = Train(arch);
    const double entropy = MarkovData(t.model).entropy_rate;
    // Within 0.1 nats of the best loss possible (uniform guessing: 3.47).
    EXPECT_LT(t.final_loss, entropy + 0.1) << arch << " entropy rate " << entropy;
  }
}

TEST(Generate, CacheGivesTheTokensOfRecomputingThePrefix) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const Trained& t = Train(arch);
    // The llama model has a window of 6: its cache is a ring the 20
    // positions wrap around three times; the second batch's prompts are all
    // longer than the window.
    for (const std::vector<int>& lengths : {std::vector<int>{5, 3, 8}, std::vector<int>{8, 7}}) {
      const auto prompts = Prompts(t.model, lengths);
      SamplingOptions o;
      o.temperature = 0;
      o.max_new_tokens = 12;
      auto cached = Generate(t.checkpoint, 1, prompts, o);
      o.use_cache = false;
      auto recomputed = Generate(t.checkpoint, 1, prompts, o);
      ASSERT_TRUE(cached.ok() && recomputed.ok()) << cached.status() << recomputed.status();
      EXPECT_EQ(cached->tokens, recomputed->tokens) << arch;
      for (size_t b = 0; b < prompts.size(); ++b) {
        ASSERT_EQ(cached->tokens[b].size(), prompts[b].size() + 12);
        // The prompt is kept as given.
        EXPECT_EQ(std::vector<int32_t>(cached->tokens[b].begin(),
                                       cached->tokens[b].begin() + prompts[b].size()),
                  prompts[b]);
      }
      EXPECT_GT(cached->kv_cache_bytes, 0);
      EXPECT_EQ(recomputed->kv_cache_bytes, 0);
      EXPECT_GT(cached->decode_tokens, 0);
    }
  }
}

TEST(Generate, TensorParallelGroupsGiveTheTokensOfOneRank) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const Trained& t = Train(arch);
    const auto prompts = Prompts(t.model, {4, 6});
    for (float temperature : {0.0f, 0.8f}) {
      SamplingOptions o;
      o.temperature = temperature;
      o.top_k = 8;
      o.top_p = 0.95f;
      o.max_new_tokens = 10;
      o.seed = 7;
      auto one = Generate(t.checkpoint, 1, prompts, o);
      ASSERT_TRUE(one.ok()) << one.status();
      for (int tp : {2, 4}) {
        auto got = Generate(t.checkpoint, tp, prompts, o);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->tokens, one->tokens) << arch << " tp " << tp << " T " << temperature;
        // Each rank holds its share of the cache: 1 / tp of the key/value heads,
        // or one shared head (llama: 2 KV heads).
        const int local_kv = t.model.local_kv(tp), kv = t.model.kv();
        EXPECT_EQ(got->kv_cache_bytes * kv, one->kv_cache_bytes * local_kv) << arch << " tp " << tp;
      }
    }
  }
}

TEST(Generate, SampledTextHasTheCorpusLikelihood) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const Trained& t = Train(arch);
    MarkovCorpus corpus(t.model.vocab, t.model.seed);
    const double entropy = corpus.EntropyRate();
    // Temperature 1 with nucleus sampling: the model's last few percent of
    // probability, spread over the 29 tokens the corpus never follows a token
    // with (log-likelihood -inf under the true table), is cut off.
    SamplingOptions o;
    o.temperature = 1.0f;
    o.top_p = 0.9f;
    o.max_new_tokens = 20;
    o.seed = 11;
    const auto prompts = Prompts(t.model, std::vector<int>(16, 3));
    auto got = Generate(t.checkpoint, 2, prompts, o);
    ASSERT_TRUE(got.ok()) << got.status();
    double nll = 0;
    int n = 0, impossible = 0;
    for (const auto& seq : got->tokens) {
      for (size_t i = 3; i < seq.size(); ++i) {
        const double p = corpus.Probability(seq[i - 1], seq[i]);
        impossible += p == 0;
        nll += p > 0 ? -std::log(p) : 0.0;
        ++n;
      }
    }
    nll /= n;
    EXPECT_EQ(impossible, 0) << arch << ": transitions the corpus never makes";
    EXPECT_NEAR(nll, entropy, 0.3) << arch << ": " << n << " tokens";
    printf(
        "%s: sampled text's log-likelihood per token under the true table %.3f nats; entropy "
        "rate %.3f\n",
        arch.c_str(), -nll, entropy);
    // Greedy is not sampling: at temperature 1 the draws differ from it.
    o.temperature = 0;
    auto greedy = Generate(t.checkpoint, 1, prompts, o);
    ASSERT_TRUE(greedy.ok());
    EXPECT_NE(greedy->tokens, got->tokens);
  }
}

TEST(Generate, TheForwardIsTheTrainingForward) {
  // The mean next-token loss of a batch from the generator's log-probabilities
  // equals the trainer's evaluation loss on the same batch.
  for (const std::string arch : {"gpt2", "llama"}) {
    const Trained& t = Train(arch);
    GptConfig m = t.model;
    const GptData data = MarkovData(m);
    const std::vector<int32_t> batch = data.eval(0, 0);  // [micro_batch, seq + 1]
    std::vector<std::vector<int32_t>> seqs;
    const int64_t T = m.seq;
    for (int64_t b = 0; b < m.micro_batch; ++b) {
      seqs.emplace_back(batch.begin() + b * (T + 1), batch.begin() + b * (T + 1) + T);
    }
    double ours = 0;
    absl::Status s = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
      ASSIGN_OR_RETURN(auto g, GptGenerator::Load(c, t.checkpoint, Device::Cpu()));
      ASSIGN_OR_RETURN(auto lp, g->LogProbs(seqs));
      double sum = 0;
      for (int64_t b = 0; b < m.micro_batch; ++b) {
        for (int64_t i = 0; i < T; ++i) sum -= lp[b][i][batch[b * (T + 1) + i + 1]];
      }
      if (c.rank() == 0) ours = sum / (m.micro_batch * T);
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    double trainer = 0;
    s = RunOnRanks(1, [&](Communicator& c) -> absl::Status {
      GptTrainOptions o;
      o.model = m;
      o.grid = {1, 1, 1};
      o.micro_batches = 1;
      o.eval_data = [&](int64_t, int64_t) { return batch; };
      MemoryTracker mem;
      ASSIGN_OR_RETURN(auto tr, GptTrainer::Create(c, o, &mem));
      RETURN_IF_ERROR(tr->LoadCheckpoint(t.checkpoint).status());
      ASSIGN_OR_RETURN(trainer, tr->Evaluate(1));
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_NEAR(ours, trainer, 1e-5 * trainer) << arch;
  }
}

TEST(Generate, BadInputIsNamed) {
  const Trained& t = Train("gpt2");
  SamplingOptions o;
  o.max_new_tokens = 4;
  EXPECT_THAT(Generate(t.checkpoint, 1, {{1, 2}, {}}, o).status().message(),
              HasSubstr("prompt 1 is empty"));
  EXPECT_THAT(Generate(t.checkpoint, 1, {{1, 40}}, o).status().message(),
              HasSubstr("token 40 at position 1 is outside the vocabulary of 32"));
  o.max_new_tokens = 30;  // learned positions stop at 24
  EXPECT_THAT(Generate(t.checkpoint, 1, {{1, 2}}, o).status().message(),
              HasSubstr("32 positions (longest prompt 2 + 30 new tokens) but the model's learned "
                        "positions stop at seq 24"));
  o.max_new_tokens = 4;
  EXPECT_THAT(Generate(t.checkpoint, 3, {{1, 2}}, o).status().message(),
              HasSubstr("tp (3) must divide heads (4)"));
  EXPECT_THAT(Generate("/nonexistent", 1, {{1, 2}}, o).status().message(),
              HasSubstr("/nonexistent"));
}

}  // namespace
}  // namespace trireme
