// The offline side of the flight recorder (runtime/comm/flight_recorder.h):
// reading the dumps every rank wrote and naming the first divergence. Used by
// //tools:flight; nothing in the runtime needs it.
#ifndef TRIREME_TOOLS_FLIGHT_ANALYSIS_H_
#define TRIREME_TOOLS_FLIGHT_ANALYSIS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/comm/flight_recorder.h"

namespace trireme {

// Reads one dump; every line's world_rank is set from the file.
absl::StatusOr<std::vector<FlightEntry>> ReadFlightDump(const std::string& path);
// Reads every flight-rank-*.txt under `dir` (those of the newest run only)
// and describes, per group, the first divergence (the earliest first): a call issued by some
// members and never by others (naming what those last did), members calling different collectives,
// or a receive whose message was never sent.
absl::StatusOr<std::string> AnalyzeFlightDumps(const std::string& dir);

}  // namespace trireme

#endif  // TRIREME_TOOLS_FLIGHT_ANALYSIS_H_
