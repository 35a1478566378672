// Catches a rank started with different settings: every rank hashes its
// configuration (key = value pairs), the hashes are compared, and on a
// mismatch every rank gets the same error naming a differing key and both
// values -- before any training step could silently diverge.
#ifndef TRIREME_RUNTIME_COMM_CONFIG_CHECK_H_
#define TRIREME_RUNTIME_COMM_CONFIG_CHECK_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"

namespace trireme {

using ConfigEntries = std::vector<std::pair<std::string, std::string>>;

// Collective over `world`. OK if every rank passed the same entries (same
// keys, order and values); otherwise FailedPrecondition on every rank:
// "configuration differs across ranks: rank 3 has lr = 0.02 where rank 0 has
// lr = 0.01".
absl::Status CheckSameConfig(Communicator& world, const ConfigEntries& config);

// The 64-bit FNV-1a hash of the entries (stable across processes and runs).
uint64_t ConfigHash(const ConfigEntries& config);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_CONFIG_CHECK_H_
