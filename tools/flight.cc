// Reads the flight-recorder dumps of every rank (flight-rank-*.txt, written
// when a communicator operation times out or is aborted, or on request) and
// prints the first divergence: who never issued which call, or who called a
// different collective.
//
//   ./bazelw run //tools:flight -- /tmp/trireme-flight
#include <cstdio>
#include <string>

#include "tools/flight_analysis.h"

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : trireme::FlightDumpDir();
  auto report = trireme::AnalyzeFlightDumps(dir);
  if (!report.ok()) {
    fprintf(stderr, "flight: %s\n", report.status().ToString().c_str());
    return 1;
  }
  printf("%s", report->c_str());
  return 0;
}
