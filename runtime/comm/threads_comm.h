// The threads backend: N ranks in one process, exchanging data through shared
// memory. The test workhorse and the single-process training backend.
//
// Reductions run in rank order (0, 1, ..., n-1) for every element, whatever the
// thread timing, so results are bitwise reproducible. Every rank's call is
// compared with the others' before data moves (desync check, always on here).
// Point-to-point sends are eager by default: Send copies the message and
// returns; Recv waits for it. With CommOptions::p2p_rendezvous a send
// completes only once the receiver has taken its message (NCCL's semantics),
// so a schedule that relies on eager sends deadlocks -- and its ops time out
// naming the rank that never posted the matching receive. A P2PGroup posts
// its sends before taking its receives, so crossing exchanges complete.
//
// A rank that fails (see ThreadsWorld::Abort / RunOnRanks) aborts the world:
// every blocked call of every group returns Aborted naming that rank within
// about 50 ms.
#ifndef TRIREME_RUNTIME_COMM_THREADS_COMM_H_
#define TRIREME_RUNTIME_COMM_THREADS_COMM_H_

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"

namespace trireme {

namespace internal {
struct ThreadsGroup;
}

// The shared state of one in-process world. Thread-safe.
class ThreadsWorld {
 public:
  // REQUIRES: size >= 1.
  static std::shared_ptr<ThreadsWorld> Create(int size, CommOptions options = {});

  // The world communicator of `rank` (0 <= rank < size), named "world". Call
  // once per rank; the communicator must be used from that rank's thread.
  std::unique_ptr<Communicator> Connect(int rank);

  // Marks the world failed because of `rank`. Every blocked and future call
  // returns Aborted naming the rank and `reason`. The first abort wins.
  void Abort(int rank, const absl::Status& reason);

  // The first abort's reason annotated with its rank; OK if none.
  absl::Status abort_reason() const;

  int size() const { return size_; }

 private:
  ThreadsWorld(int size, CommOptions options);
  const int size_;
  const CommOptions options_;
  std::shared_ptr<internal::ThreadsGroup> world_;
};

// Runs fn(world communicator) on `world_size` threads, one per rank, and
// returns when all have finished. A rank whose fn returns an error (or throws)
// aborts the world, so ranks blocked in a collective return promptly; the
// result is then the first failing rank's error, prefixed with its rank.
// Blocks the calling thread.
absl::Status RunOnRanks(int world_size, const std::function<absl::Status(Communicator&)>& fn,
                        CommOptions options = {});

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_THREADS_COMM_H_
