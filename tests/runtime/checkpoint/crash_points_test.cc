// Every failure point of a save, driven through the fault-injecting
// filesystem: the process "dies" after each of the save's mutating calls in
// turn (every later call fails and changes nothing), a call fails with
// ENOSPC, or a write stops halfway. After each, what is on disk must be
// whole: `latest` names a checkpoint that validates completely and is the
// previous one or the new one, every committed step validates, a failure
// that was not a crash leaves no temporary directory, and the next job (its
// root lock sweeps what a dead job left) saves again.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/filesystem.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"

namespace trireme {
namespace {

namespace fs = std::filesystem;

std::string Dir(const std::string& name) {
  const std::string d = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  fs::remove_all(d);
  return d;
}

// Two ranks save `step` of a small ZeRO-3 engine (values depending on the
// step) into `root` through `fsys` (nullptr: the real filesystem).
absl::Status SaveStep(const std::string& root, int64_t step, FileSystem* fsys) {
  return RunOnRanks(2, [&](Communicator& c) -> absl::Status {
    EngineOptions o;
    o.stage = 3;
    std::vector<UnitSpec> units = {{"a", {{"w", {33, 5}}}}, {"b", {{"v", {7}}}}};
    MemoryTracker mem;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, units, o, &mem));
    RETURN_IF_ERROR(e->Initialize([step](const ParamInfo& p, float* v) {
      for (int64_t i = 0; i < p.numel; ++i) v[i] = 0.25f * i + step;
      return absl::OkStatus();
    }));
    checkpoint::SaveOptions so;
    so.root = root;
    so.fs = fsys;
    return checkpoint::Save(c, *e, checkpoint::IdentityLayout, step, so).status();
  });
}

int64_t LatestStep(const std::string& root) {
  absl::StatusOr<std::string> dir = checkpoint::Resolve(root);
  if (!dir.ok()) return -1;
  absl::StatusOr<checkpoint::ManifestSummary> m = checkpoint::Inspect(*dir);
  return m.ok() ? m->step : -2;
}

// What a failed or crashed save of step 2 over a root holding step 1 may
// leave: `latest` at step 1 or 2, a complete checkpoint either way, and
// every committed step complete.
void ExpectWhole(const std::string& root, const std::string& what) {
  const int64_t latest = LatestStep(root);
  EXPECT_TRUE(latest == 1 || latest == 2) << what << ": latest gives step " << latest;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (absl::StartsWith(n, "step-") && fs::exists(e.path() / "manifest.json")) {
      absl::StatusOr<checkpoint::ManifestSummary> m = checkpoint::Inspect(e.path().string());
      EXPECT_TRUE(m.ok()) << what << ": committed " << n << " does not validate: " << m.status();
    }
  }
}

bool HasTemporaries(const std::string& root) {
  for (const auto& e : fs::directory_iterator(root)) {
    if (absl::StartsWith(e.path().filename().string(), ".tmp-")) return true;
  }
  return false;
}

class CrashPoints : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = Dir("base");
    ASSERT_TRUE(SaveStep(base_, 1, nullptr).ok());
    // How many mutating calls a clean save of step 2 makes.
    const std::string counted = Dir("counted");
    fs::copy(base_, counted, fs::copy_options::recursive);
    FaultInjectingFileSystem counter(PosixFileSystem());
    ASSERT_TRUE(SaveStep(counted, 2, &counter).ok());
    calls_ = counter.mutating_calls();
    ASSERT_GT(calls_, 8);  // directories, two files, a manifest, renames, syncs
    printf("a clean save of step 2 makes %lld mutating filesystem calls\n",
           static_cast<long long>(calls_));
  }
  std::string Fresh(const std::string& name) {
    const std::string root = Dir(name);
    fs::copy(base_, root, fs::copy_options::recursive);
    return root;
  }
  std::string base_;
  int64_t calls_ = 0;
};

TEST_F(CrashPoints, ACrashAfterAnyCallLeavesAWholeCheckpointAndTheNextJobSaves) {
  for (int64_t k = 0; k < calls_; ++k) {
    const std::string root = Fresh(absl::StrCat("crash", k));
    FaultInjectingFileSystem faulty(PosixFileSystem());
    faulty.CrashAfter(k);
    const absl::Status s = SaveStep(root, 2, &faulty);
    EXPECT_FALSE(s.ok()) << "crash after call " << k << " of " << calls_;
    ExpectWhole(root, absl::StrCat("crash after call ", k));
    // The next job: takes the root (sweeping a dead save's directory) and
    // saves the next step.
    std::string note;
    absl::StatusOr<checkpoint::RootLock> lock = checkpoint::RootLock::Acquire(root, &note);
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_FALSE(HasTemporaries(root)) << "crash after call " << k;
    // (`latest` may lag a commit the crash interrupted: the next job resumes
    // from the newest committed step, as //:train --resume=auto does.)
    const std::vector<int64_t> committed = checkpoint::CommittedSteps(root);
    ASSERT_FALSE(committed.empty());
    const int64_t next = committed.back() + 1;
    ASSERT_TRUE(SaveStep(root, next, nullptr).ok()) << "crash after call " << k;
    EXPECT_EQ(LatestStep(root), next);
  }
}

TEST_F(CrashPoints, AFailedCallOrAShortWriteFailsTheSaveNamedAndCleansUp) {
  for (int64_t k = 1; k <= calls_; ++k) {
    for (const bool short_write : {false, true}) {
      const std::string what = absl::StrCat(short_write ? "short write" : "ENOSPC", " at call ", k);
      const std::string root = Fresh("fault");
      FaultInjectingFileSystem faulty(PosixFileSystem());
      if (short_write) {
        faulty.ShortWriteAt(k);
      } else {
        faulty.FailCall(k, /*no_space=*/true);
      }
      const absl::Status s = SaveStep(root, 2, &faulty);
      if (s.ok()) {
        // A short write only bites an append; other calls at k pass.
        EXPECT_TRUE(short_write) << what;
        EXPECT_EQ(LatestStep(root), 2) << what;
        continue;
      }
      EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << what << ": " << s;
      EXPECT_TRUE(absl::StrContains(s.message(), "No space left on device")) << what << ": " << s;
      ExpectWhole(root, what);
      EXPECT_FALSE(HasTemporaries(root)) << what << ": a failed save left its directory";
    }
  }
}

}  // namespace
}  // namespace trireme
