// The simulated backend: one rank of a group that exists only on paper. Every
// operation succeeds at once without moving data, and is accounted exactly as
// the real backends account it (CommStats), so the engine can run on the
// `meta` device "as if" on a cluster far larger than this machine. Buffers may
// be null. Receives leave their buffer untouched.
#ifndef TRIREME_RUNTIME_COMM_SIMULATED_COMM_H_
#define TRIREME_RUNTIME_COMM_SIMULATED_COMM_H_

#include <memory>
#include <string>

#include "runtime/comm/communicator.h"

namespace trireme {

// Rank `rank` of a simulated group of `size` ranks named `name`.
// REQUIRES: 0 <= rank < size. Split is Unimplemented (there are no peers to
// agree with): create each simulated group directly.
std::unique_ptr<Communicator> CreateSimulatedCommunicator(int rank, int size,
                                                          const std::string& name);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_SIMULATED_COMM_H_
