// Checkpoints of the 3D GPT: resume is bitwise, a checkpoint loads onto other
// grids and ZeRO stages with every tensor intact, corrupt or missing files
// are clear errors that leave the live state alone, a rank failing mid-save
// leaves the previous checkpoint loadable, retention and no-overwrite hold.
#include "runtime/checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gpt_trainer.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "tests/models/tiny_gpt.h"

namespace trireme {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kGlobalMicroBatches = 4;

// Vocabulary 97: padded to 98 at tp = 2, and the padding must not reach the
// checkpoint.
GptConfig Model() { return testing::TinyGpt(); }

struct Plan {
  int dp = 1, tp = 1, pp = 1, stage = 0;
  std::string load;      // checkpoint (or root) to load first
  int from = 1, to = 0;  // steps to train
  std::string save_root;
  std::vector<int> save_after;  // steps after which to save (from - 1: right after loading)
  checkpoint::SaveOptions save;
  GptConfig model = Model();
};

struct Outcome {
  std::vector<double> losses;  // steps from..to
  absl::Status load = absl::OkStatus(), save = absl::OkStatus();
  std::vector<float> wte_before_load, wte_after_load;  // world rank 0's slice
  int64_t loaded_step = -1;
};

std::string Tmp(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(base ? base : "/tmp", "/ckpt_", name);
  fs::remove_all(dir);
  return dir;
}

absl::StatusOr<Outcome> Train(const Plan& p) {
  Outcome out;
  std::mutex mu;
  absl::Status st = RunOnRanks(p.dp * p.tp * p.pp, [&](Communicator& c) -> absl::Status {
    GptTrainOptions o;
    o.engine.device = testing::TestDevice();
    o.model = p.model;
    o.grid = {p.dp, p.tp, p.pp};
    o.engine.stage = p.stage;
    o.engine.lr.lr = 1e-2f;
    o.engine.optimizer.weight_decay = 0.01f;
    o.micro_batches = kGlobalMicroBatches / p.dp;
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
    const bool has_wte = t->grid().coord().pp == 0;
    std::vector<float> before, after;
    if (has_wte) {
      ASSIGN_OR_RETURN(before, t->GatherParam("wte"));
    }
    absl::Status load = absl::OkStatus(), save = absl::OkStatus();
    int64_t loaded = -1;
    if (!p.load.empty()) {
      auto r = t->LoadCheckpoint(p.load);
      load = r.status();
      if (r.ok()) loaded = r->step;
    }
    if (has_wte) {
      ASSIGN_OR_RETURN(after, t->GatherParam("wte"));
    }
    auto maybe_save = [&](int step) -> absl::Status {
      for (int s : p.save_after) {
        if (s == step && save.ok()) save = t->SaveCheckpoint(step, p.save).status();
      }
      return absl::OkStatus();
    };
    std::vector<double> losses;
    if (load.ok()) {
      RETURN_IF_ERROR(maybe_save(p.from - 1));
      for (int step = p.from; step <= p.to; ++step) {
        ASSIGN_OR_RETURN(GptStepResult r, t->Step(step));
        losses.push_back(r.loss);
        RETURN_IF_ERROR(maybe_save(step));
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    if (c.rank() == 0) {
      out.losses = losses;
      out.load = load;
      out.save = save;
      out.wte_before_load = before;
      out.wte_after_load = after;
      out.loaded_step = loaded;
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

std::string StepDir(const std::string& root, int step) {
  return absl::StrCat(root, "/step-", absl::StrFormat("%08d", step));
}

// Every global tensor and state of two checkpoints, bitwise.
void ExpectSameTensors(const std::string& a, const std::string& b) {
  auto sa = checkpoint::Inspect(a);
  auto sb = checkpoint::Inspect(b);
  ASSERT_TRUE(sa.ok()) << sa.status();
  ASSERT_TRUE(sb.ok()) << sb.status();
  ASSERT_EQ(sa->tensors.size(), sb->tensors.size());
  ASSERT_EQ(sa->states, sb->states);
  EXPECT_EQ(sa->engine.Dump(), sb->engine.Dump());
  for (const auto& t : sa->tensors) {
    for (const std::string& state : sa->states) {
      auto va = checkpoint::ReadTensor(a, t.name, state);
      auto vb = checkpoint::ReadTensor(b, t.name, state);
      ASSERT_TRUE(va.ok()) << va.status();
      ASSERT_TRUE(vb.ok()) << vb.status();
      ASSERT_EQ(*va, *vb) << t.name << " " << state << " differs between " << a << " and " << b;
    }
  }
}

TEST(GptCheckpointTest, ResumeAt5IsBitwiseIdenticalTo10Steps) {
  const std::string full = Tmp("full"), half = Tmp("half"), resumed = Tmp("resumed");
  Plan a{2, 2, 2, 3};
  a.to = 10;
  a.save_root = a.save.root = full;
  a.save_after = {10};
  auto ra = Train(a);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(ra->save.ok()) << ra->save;

  Plan b = a;
  b.to = 5;
  b.save.root = half;
  b.save_after = {5};
  auto rb = Train(b);
  ASSERT_TRUE(rb.ok() && rb->save.ok());

  Plan c = a;
  c.load = half;  // the root: `latest` names step 5
  c.from = 6;
  c.save.root = resumed;
  auto rc = Train(c);
  ASSERT_TRUE(rc.ok()) << rc.status();
  ASSERT_TRUE(rc->load.ok()) << rc->load;
  EXPECT_EQ(rc->loaded_step, 5);
  ASSERT_EQ(rc->losses.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(rc->losses[i], ra->losses[5 + i]) << "step " << 6 + i;
  }
  ExpectSameTensors(StepDir(full, 10), StepDir(resumed, 10));
}

TEST(GptCheckpointTest, LoadsOntoOtherGridsAndStages) {
  const std::string src = Tmp("src");
  Plan w{2, 2, 2, 3};
  w.to = 5;
  w.save.root = src;
  w.save_after = {5};
  auto rw = Train(w);
  ASSERT_TRUE(rw.ok() && rw->save.ok());
  auto sum = checkpoint::Inspect(StepDir(src, 5));
  ASSERT_TRUE(sum.ok()) << sum.status();
  for (const auto& t : sum->tensors) {
    if (t.name == "wte") {
      EXPECT_EQ(t.shape, (std::vector<int64_t>{97, 32}));  // no padding
    }
  }

  // The reference: (1, 1, 1) uninterrupted.
  Plan ref{1, 1, 1, 0};
  ref.to = 8;
  auto rr = Train(ref);
  ASSERT_TRUE(rr.ok());

  struct Target {
    int dp, tp, pp, stage;
  };
  for (Target g : {Target{4, 1, 1, 1}, Target{1, 2, 2, 0}, Target{1, 1, 1, 0}}) {
    SCOPED_TRACE(absl::StrCat("(", g.dp, ",", g.tp, ",", g.pp, ") ZeRO-", g.stage));
    const std::string again = Tmp(absl::StrCat("again", g.dp, g.tp, g.pp));
    Plan p{g.dp, g.tp, g.pp, g.stage};
    p.load = StepDir(src, 5);
    p.from = 6;
    p.to = 8;
    p.save.root = again;
    p.save_after = {5};  // right after loading: the state as loaded
    auto r = Train(p);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->load.ok()) << r->load;
    ASSERT_TRUE(r->save.ok()) << r->save;
    ExpectSameTensors(StepDir(src, 5), StepDir(again, 5));
    ASSERT_EQ(r->losses.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_NEAR(r->losses[i], rr->losses[5 + i], 1e-5 * rr->losses[5 + i]) << "step " << 6 + i;
    }
  }
}

// The Llama architecture's checkpoints reshard too: key/value heads shared
// by TP ranks (kv_heads < tp) on one grid are split (or whole) on another, and
// the losses continue those of the uninterrupted single-rank run.
TEST(GptCheckpointTest, LlamaLoadsOntoGridsThatSplitOrShareKeyValueHeadsDifferently) {
  struct Target {
    int dp, tp, pp, stage;
  };
  for (int kv : {1, 2}) {
    const GptConfig model = testing::TinyLlama(kv, kv == 1 ? 5 : 0);
    const std::string src = Tmp(absl::StrCat("llama_src", kv));
    Plan w{1, 4, 2, 3};  // 4 TP ranks: each key/value head shared by 4 / kv
    w.model = model;
    w.to = 4;
    w.save.root = src;
    w.save_after = {4};
    auto rw = Train(w);
    ASSERT_TRUE(rw.ok() && rw->save.ok()) << kv;
    Plan ref{1, 1, 1, 0};
    ref.model = model;
    ref.to = 6;
    auto rr = Train(ref);
    ASSERT_TRUE(rr.ok());
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(rw->losses[i], rr->losses[i], 1e-5 * rr->losses[i]) << "kv " << kv;
    }
    for (Target g : {Target{2, 2, 1, 1}, Target{1, 1, 1, 0}, Target{2, 1, 2, 3}}) {
      SCOPED_TRACE(absl::StrCat("kv_heads ", kv, " onto (", g.dp, ",", g.tp, ",", g.pp, ")"));
      const std::string again = Tmp(absl::StrCat("llama_again", kv, g.dp, g.tp, g.pp));
      Plan p{g.dp, g.tp, g.pp, g.stage};
      p.model = model;
      p.load = StepDir(src, 4);
      p.from = 5;
      p.to = 6;
      p.save.root = again;
      p.save_after = {4};
      auto r = Train(p);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_TRUE(r->load.ok()) << r->load;
      ExpectSameTensors(StepDir(src, 4), StepDir(again, 4));
      ASSERT_EQ(r->losses.size(), 2u);
      for (int i = 0; i < 2; ++i) {
        EXPECT_NEAR(r->losses[i], rr->losses[4 + i], 1e-5 * rr->losses[4 + i]) << "step " << 5 + i;
      }
    }
  }
}

// Copies a committed checkpoint directory for a mutation.
std::string CopyOf(const std::string& dir, const std::string& name) {
  const std::string to = Tmp(name);
  fs::copy(dir, to, fs::copy_options::recursive);
  return to;
}

TEST(GptCheckpointTest, DamagedCheckpointsAreClearErrorsAndLeaveStateAlone) {
  const std::string src = Tmp("good");
  Plan w{2, 1, 2, 1};
  w.to = 2;
  w.save.root = src;
  w.save_after = {2};
  ASSERT_TRUE(Train(w).ok());
  const std::string good = StepDir(src, 2);
  const std::string file = "rank-00000.safetensors";

  struct Case {
    std::string name;
    std::function<void(const std::string&)> damage;
    std::string message;
  };
  std::vector<Case> cases = {
      {"truncated",
       [&](const std::string& d) {
         fs::resize_file(d + "/" + file, fs::file_size(d + "/" + file) - 7);
       },
       "(truncated)"},
      {"flipped",
       [&](const std::string& d) {
         std::fstream f(d + "/" + file, std::ios::in | std::ios::out | std::ios::binary);
         f.seekg(-5, std::ios::end);
         char c;
         f.get(c);
         f.seekp(-5, std::ios::end);
         f.put(static_cast<char>(c ^ 0x10));
       },
       "CRC32C"},
      {"missing_file", [&](const std::string& d) { fs::remove(d + "/" + file); },
       "listed in the manifest"},
      {"missing_manifest", [&](const std::string& d) { fs::remove(d + "/manifest.json"); },
       "no checkpoint at"},
      {"escaping_path",
       [&](const std::string& d) {
         std::ifstream in(d + "/manifest.json");
         std::string text((std::istreambuf_iterator<char>(in)), {});
         in.close();
         text = absl::StrReplaceAll(
             text, {{"\"rank-00000.safetensors\"", "\"../rank-00000.safetensors\""}});
         std::ofstream(d + "/manifest.json", std::ios::trunc) << text;
       },
       "leave the checkpoint directory"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const std::string d = CopyOf(good, k.name);
    k.damage(d);
    Plan p{2, 1, 2, 1};
    p.load = d;
    auto r = Train(p);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_FALSE(r->load.ok());
    EXPECT_THAT(std::string(r->load.message()), HasSubstr(k.message));
    EXPECT_EQ(r->wte_before_load, r->wte_after_load);  // untouched
  }
}

TEST(GptCheckpointTest, RankFailingMidSaveLeavesThePreviousCheckpoint) {
  const std::string root = Tmp("fault");
  Plan p{2, 1, 1, 1};
  p.to = 4;
  p.save.root = root;
  p.save_after = {2, 4};
  ASSERT_TRUE(Train(p).ok());  // steps 2 and 4 saved
  fs::remove_all(StepDir(root, 4));
  std::ofstream(root + "/latest", std::ios::trunc) << "step-00000002\n";

  Plan f = p;
  f.from = 1;
  f.to = 4;
  f.save_after = {4};
  f.save.midway_fault = [](int rank, int64_t) {
    return rank == 1 ? absl::AbortedError("injected fault halfway through the file")
                     : absl::OkStatus();
  };
  auto r = Train(f);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->save.ok());
  EXPECT_THAT(std::string(r->save.message()), HasSubstr("rank 1"));
  EXPECT_THAT(std::string(r->save.message()), HasSubstr("injected fault"));
  EXPECT_FALSE(fs::exists(StepDir(root, 4)));
  EXPECT_FALSE(fs::exists(root + "/.tmp-step-00000004"));
  auto resolved = checkpoint::Resolve(root);
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(*resolved, StepDir(root, 2));
  Plan l{2, 1, 1, 1};
  l.load = root;
  auto rl = Train(l);
  ASSERT_TRUE(rl.ok() && rl->load.ok()) << rl->load;
  EXPECT_EQ(rl->loaded_step, 2);
}

TEST(GptCheckpointTest, RetentionKeepsTheNewestAndNothingIsOverwritten) {
  const std::string root = Tmp("keep");
  Plan p{1, 1, 1, 0};
  p.to = 3;
  p.save.root = root;
  p.save.keep_last = 2;
  p.save_after = {1, 2, 3};
  auto r = Train(p);
  ASSERT_TRUE(r.ok() && r->save.ok()) << r->save;
  EXPECT_FALSE(fs::exists(StepDir(root, 1)));
  EXPECT_TRUE(fs::exists(StepDir(root, 2)));
  EXPECT_TRUE(fs::exists(StepDir(root, 3)));
  auto resolved = checkpoint::Resolve(root);
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(*resolved, StepDir(root, 3));
  Plan again = p;
  again.to = 3;
  again.save_after = {3};
  auto ra = Train(again);
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(ra->save.code(), absl::StatusCode::kAlreadyExists) << ra->save;
}

}  // namespace
}  // namespace trireme
