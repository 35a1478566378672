#include "runtime/comm/flight_recorder.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace trireme {
namespace {

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

std::string Clean(std::string s) {
  std::replace(s.begin(), s.end(), '\t', ' ');
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

const char* FlightStateName(FlightEntry::State s) {
  switch (s) {
    case FlightEntry::State::kQueued:
      return "queued";
    case FlightEntry::State::kStarted:
      return "started";
    case FlightEntry::State::kDone:
      return "done";
    case FlightEntry::State::kFailed:
      return "failed";
  }
  return "?";
}

FlightRecorder::FlightRecorder(int world_rank, size_t capacity)
    : world_rank_(world_rank), capacity_(capacity) {}

uint64_t FlightRecorder::Add(FlightEntry e) {
  e.issued_us = NowMicros();
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = next_++;
  if (capacity_ == 0) return id;
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(e));
    ids_.push_back(id);
  } else {
    ring_[id % capacity_] = std::move(e);
    ids_[id % capacity_] = id;
  }
  return id;
}

void FlightRecorder::Start(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (capacity_ == 0 || ids_.size() <= id % capacity_ || ids_[id % capacity_] != id) return;
  FlightEntry& e = ring_[id % capacity_];
  e.state = FlightEntry::State::kStarted;
  e.started_us = NowMicros();
}

void FlightRecorder::Finish(uint64_t id, const absl::Status& s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (capacity_ == 0 || ids_.size() <= id % capacity_ || ids_[id % capacity_] != id) return;
  FlightEntry& e = ring_[id % capacity_];
  e.state = s.ok() ? FlightEntry::State::kDone : FlightEntry::State::kFailed;
  e.ended_us = NowMicros();
  if (!s.ok()) e.error = s.ToString();
}

std::vector<FlightEntry> FlightRecorder::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, const FlightEntry*>> order;
  for (size_t i = 0; i < ring_.size(); ++i) order.emplace_back(ids_[i], &ring_[i]);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<FlightEntry> out;
  for (const auto& [id, e] : order) {
    out.push_back(*e);
    out.back().world_rank = world_rank_;
  }
  return out;
}

absl::Status FlightRecorder::Dump(const std::string& path, const std::string& reason) const {
  std::lock_guard<std::mutex> lock(dump_mu_);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::InternalError(absl::StrCat("cannot write '", tmp, "'"));
    out << "# trireme flight recorder v1\tworld_rank " << world_rank_ << "\trun " << FlightRunId()
        << "\tdumped_us " << NowMicros() << "\tpid " << getpid() << "\treason " << Clean(reason)
        << "\n";
    out << "# group\tgroup_rank\tgroup_size\top\tdtype\tcount\treduce\tpeer\tseq\tstate\t"
           "issued_us\tstarted_us\tended_us\tscope\terror\n";
    for (const FlightEntry& e : Snapshot()) {
      out << e.group << '\t' << e.group_rank << '\t' << e.group_size << '\t' << CommOpName(e.fp.op)
          << '\t' << DTypeName(e.fp.dtype) << '\t' << e.fp.count << '\t'
          << ReduceOpName(e.fp.reduce) << '\t' << e.fp.root << '\t' << e.fp.seq << '\t'
          << FlightStateName(e.state) << '\t' << e.issued_us << '\t' << e.started_us << '\t'
          << e.ended_us << '\t' << Clean(e.fp.scope.data()) << '\t' << Clean(e.error) << '\n';
    }
    if (!out) return absl::InternalError(absl::StrCat("writing '", tmp, "' failed"));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming to '", path, "': ", ec.message()));
  return absl::OkStatus();
}

absl::Status FlightRecorder::DumpDefault(const std::string& reason) const {
  return Dump(FlightDumpPath(world_rank_), reason);
}

std::string FlightRunId() {
  // The same on every rank of one job: mpirun's namespace, else this process.
  for (const char* var : {"PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid"}) {
    if (const char* v = std::getenv(var); v && *v) return v;
  }
  return absl::StrCat("pid-", getpid());
}

std::string FlightDumpDir() {
  for (const char* var : {"TRIREME_FLIGHT_DIR", "TEST_UNDECLARED_OUTPUTS_DIR"}) {
    if (const char* v = std::getenv(var); v && *v) return v;
  }
  return "/tmp/trireme-flight";
}

std::string FlightDumpPath(int world_rank) {
  return absl::StrFormat("%s/flight-rank-%05d.txt", FlightDumpDir(), world_rank);
}

}  // namespace trireme
