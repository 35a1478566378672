// Two jobs writing one checkpoint root. Without a lock (the library's Save
// alone), two saves of the same step at the same moment never mix or empty
// a committed checkpoint: each writes a temporary directory of its own, and
// the commit never replaces anything -- one commits, the other is told it
// lost, and removes what it wrote. With the root lock (RootLock, what
// //:train takes), a second job is refused at once, naming the holder; the
// lock of a job that ended without releasing it is taken over, named, with
// its unfinished saves removed; a root that cannot be written is refused.
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string Root(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string root = std::string(base ? base : "/tmp") + "/" + name;
  fs::remove_all(root);
  return root;
}

// One job: 2 ranks, a small engine whose values depend on `job`, saving
// `step` under `root` once all 4 ranks of both jobs are ready (`ready`
// counts them). Returns Save's outcome.
absl::Status SaveJob(const std::string& root, int job, int64_t step, std::atomic<int>* ready) {
  return RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = 3;
    std::vector<UnitSpec> units = {{"u", {{"w", {257, 3}}, {"b", {3}}}}};
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
    RETURN_IF_ERROR(e->Initialize([job](const ParamInfo& p, float* v) {
      for (int64_t i = 0; i < p.numel; ++i) v[i] = 0.01f * i + job;
      return absl::OkStatus();
    }));
    ready->fetch_add(1);
    while (ready->load() < 4) std::this_thread::yield();  // both jobs' ranks, then Save
    checkpoint::SaveOptions so;
    so.root = root;
    so.trainer = Json::Object({{"job", Json(static_cast<int64_t>(job))}});
    return checkpoint::Save(c, *e, checkpoint::IdentityLayout, step, so).status();
  });
}

TEST(ConcurrentWriters, SameStepAtOnceCommitsOneCompleteCheckpoint) {
  const std::string root = Root("same_step");
  int raced = 0;  // trials decided at the commit itself (both wrote everything)
  for (int trial = 0; trial < 20; ++trial) {
    SCOPED_TRACE(trial);
    std::atomic<int> ready{0};
    absl::Status a, b;
    std::thread ta([&] { a = SaveJob(root, 1, trial, &ready); });
    std::thread tb([&] { b = SaveJob(root, 2, trial, &ready); });
    ta.join();
    tb.join();
    // Exactly one committed; the other lost, saying so.
    ASSERT_NE(a.ok(), b.ok()) << a << " / " << b;
    const absl::Status& lost = a.ok() ? b : a;
    EXPECT_EQ(lost.code(), absl::StatusCode::kAlreadyExists) << lost;
    if (absl::StrContains(lost.message(), "committed by another writer first")) ++raced;
    // The committed one validates completely (every file, size and CRC32C)
    // and is one job's, whole: its values and its trainer record agree.
    const std::string dir = root + "/" + absl::StrFormat("step-%08d", trial);
    auto m = checkpoint::Inspect(dir);
    ASSERT_TRUE(m.ok()) << m.status();
    const int64_t job = m->trainer.Find("job")->int_value();
    auto w = checkpoint::ReadTensor(dir, "w", "master");
    ASSERT_TRUE(w.ok()) << w.status();
    for (size_t i = 0; i < w->size(); ++i) {
      ASSERT_FLOAT_EQ((*w)[i], 0.01f * i + job) << "element " << i << " is not job " << job << "'s";
    }
    // `latest` names a complete checkpoint.
    auto latest = checkpoint::Resolve(root);
    ASSERT_TRUE(latest.ok()) << latest.status();
    ASSERT_TRUE(checkpoint::Inspect(*latest).ok());
  }
  // Both jobs wrote everything and met at the non-replacing commit, at
  // least sometimes (not only at the early "exists" check).
  EXPECT_GT(raced, 0) << "no trial reached the commit race";
  // Nothing half-written is left behind by the losers.
  for (const auto& entry : fs::directory_iterator(root)) {
    EXPECT_FALSE(absl::StartsWith(entry.path().filename().string(), ".tmp-")) << entry.path();
  }
}

// A rank's file replaced in the temporary directory after it was written
// (same name, same contents, another inode: what a second writer that
// learned the directory's name would do): that rank notices before the
// commit, the save fails on every rank naming the file, nothing is
// committed and the temporary directory is removed.
TEST(ConcurrentWriters, AFileReplacedBeforeTheCommitIsNotCommitted) {
  const std::string root = Root("replaced");
  absl::Status s = RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = 3;
    std::vector<UnitSpec> units = {{"u", {{"w", {257, 3}}}}};
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
    RETURN_IF_ERROR(e->Initialize([](const ParamInfo& p, float* v) {
      for (int64_t i = 0; i < p.numel; ++i) v[i] = 0.5f * i;
      return absl::OkStatus();
    }));
    checkpoint::SaveOptions so;
    so.root = root;
    so.after_write = [&c](int rank, const std::string& tmp) -> absl::Status {
      if (rank == 0) {
        const fs::path victim = fs::path(tmp) / "rank-00001.safetensors";
        std::error_code ec;
        fs::copy_file(victim, victim.string() + ".copy", ec);
        if (!ec) fs::rename(victim.string() + ".copy", victim, ec);
        if (ec) {
          return absl::InternalError(
              absl::StrCat("replacing ", victim.string(), ": ", ec.message()));
        }
      }
      return c.Barrier();  // rank 1 checks only after the replacement
    };
    return checkpoint::Save(c, *e, checkpoint::IdentityLayout, 1, so).status();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(HasSubstr("rank-00001.safetensors"),
                               HasSubstr("was replaced or changed after this rank wrote it"),
                               HasSubstr("not committed")));
  EXPECT_FALSE(fs::exists(root + "/step-00000001"));
  for (const auto& entry : fs::directory_iterator(root)) {
    EXPECT_FALSE(absl::StartsWith(entry.path().filename().string(), ".tmp-")) << entry.path();
  }
}

TEST(RootLock, ASecondJobIsRefusedNamingTheHolder) {
  const std::string root = Root("locked");
  std::string note;
  auto first = checkpoint::RootLock::Acquire(root, &note);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(note, "");
  // Another open file description: flock treats it as another holder.
  auto second = checkpoint::RootLock::Acquire(root);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(absl::StrCat("pid ", ::getpid())));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("in use by another job"));
  // The refused job left the holder's name alone: a third still reads it.
  auto again = checkpoint::RootLock::Acquire(root);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(std::string(again.status().message()), HasSubstr(absl::StrCat("pid ", ::getpid())));
  // Released cleanly: the next job takes it without a takeover note.
  *first = checkpoint::RootLock();
  auto third = checkpoint::RootLock::Acquire(root, &note);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(note, "");
}

TEST(RootLock, ALockLeftByAGoneJobIsTakenOverAndItsUnfinishedSavesRemoved) {
  const std::string root = Root("stale");
  fs::create_directories(root + "/.tmp-step-00000007.otherhost-99-deadbeef");
  {
    // What a killed job leaves: its holder text, no flock (the kernel dropped it).
    FILE* f = std::fopen((root + "/.lock").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("host gone pid 4242 job - started 2026-01-01T00:00:00Z\n", f);
    std::fclose(f);
  }
  std::string note;
  auto lock = checkpoint::RootLock::Acquire(root, &note);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_THAT(note, HasSubstr("pid 4242"));
  EXPECT_THAT(note, HasSubstr("removed 1 unfinished save"));
  EXPECT_FALSE(fs::exists(root + "/.tmp-step-00000007.otherhost-99-deadbeef"));
}

TEST(RootLock, AnUnwritableRootIsRefusedNamed) {
  auto lock = checkpoint::RootLock::Acquire("/proc/forbidden/ck");
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr("/proc/forbidden/ck"));
}

}  // namespace
}  // namespace trireme
