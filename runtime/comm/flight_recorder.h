// The flight recorder: every rank keeps a ring of its last N communicator
// operations (all its groups: sequence number, op, dtype, count, peer, state
// and timestamps), dumps it to a per-rank file when an operation times out or
// is aborted (or on request); tools/flight_analysis.h (AnalyzeFlightDumps,
// //tools:flight) reads the dumps of all
// ranks and explains the first divergence: which rank never issued which
// call, or which ranks called different collectives. //tools:flight prints it.
//
// Files: <dir>/flight-rank-NNNNN.txt, one line per operation (tab-separated,
// a '#' header), where <dir> is $TRIREME_FLIGHT_DIR, else
// $TEST_UNDECLARED_OUTPUTS_DIR, else /tmp/trireme-flight. Ring size:
// $TRIREME_FLIGHT_RECORDER (default 512; 0 turns recording off).
#ifndef TRIREME_RUNTIME_COMM_FLIGHT_RECORDER_H_
#define TRIREME_RUNTIME_COMM_FLIGHT_RECORDER_H_

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"

namespace trireme {

struct FlightEntry {
  enum class State { kQueued, kStarted, kDone, kFailed };
  std::string group;  // "world", "world/dp#1" (parent / split name # color)
  int group_rank = 0, group_size = 0;
  Fingerprint fp;
  State state = State::kQueued;
  int64_t issued_us = 0, started_us = 0, ended_us = 0;  // wall clock, microseconds
  std::string error;
  int world_rank = 0;  // filled when read from a dump
  std::string run;     // the dump's job id (read from a dump)
  int64_t dumped_us = 0;
};

const char* FlightStateName(FlightEntry::State s);

class FlightRecorder {
 public:
  FlightRecorder(int world_rank, size_t capacity);
  int world_rank() const { return world_rank_; }
  // Adds an entry (state queued); returns its id.
  uint64_t Add(FlightEntry e);
  void Start(uint64_t id);
  void Finish(uint64_t id, const absl::Status& s);
  std::vector<FlightEntry> Snapshot() const;  // oldest first
  // Writes the ring to `path` (atomically: a temporary file, then rename).
  absl::Status Dump(const std::string& path, const std::string& reason) const;
  // Dumps to FlightDumpPath(world_rank()).
  absl::Status DumpDefault(const std::string& reason) const;

 private:
  const int world_rank_;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::vector<FlightEntry> ring_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> ids_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::mutex dump_mu_;
};

// The job's identity in dump headers: $PMIX_NAMESPACE under mpirun (the same
// on every rank), else "pid-<pid>" (threads: every rank is this process).
std::string FlightRunId();
std::string FlightDumpDir();
std::string FlightDumpPath(int world_rank);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_FLIGHT_RECORDER_H_
