// Parity harness shared by the threads and mpi parity tests: a single-rank
// reference run, and a rank's training loop that compares loss, gradient
// shard, grad norm and parameter shard with it after every step.
#ifndef TRIREME_TESTS_RUNTIME_ZERO_PARITY_H_
#define TRIREME_TESTS_RUNTIME_ZERO_PARITY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/zero/engine.h"

namespace trireme::testing {

inline constexpr int kSteps = 20;
inline constexpr int kMicroBatch = 2;

// Normwise: ||got - want|| <= rtol ||want||, naming the worst element.
absl::Status Compare(const std::string& what, const float* got, const float* want, int64_t n,
                     double rtol);

struct Expected {
  std::vector<double> loss, norm;
  std::vector<std::vector<std::vector<float>>> grads, params;  // [step][unit]
};

Expected RunReference(const EngineOptions& o, int dp);

// kSteps steps on this rank of `c` (the DP group), compared every step with
// relative tolerance `rtol` (1e-6 for the threads backend, whose reduction
// order the reference mirrors).
absl::Status TrainAndCompare(Communicator& c, const EngineOptions& o, const Expected& want,
                             double rtol = 1e-6);

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_RUNTIME_ZERO_PARITY_H_
