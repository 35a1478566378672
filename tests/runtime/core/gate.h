// A latch that stream tasks block on until the test opens it. Opens itself on
// destruction, so a failing assertion never leaves a stream worker stuck
// (which would hang the stream's destructor).
#ifndef TRIREME_TESTS_RUNTIME_CORE_GATE_H_
#define TRIREME_TESTS_RUNTIME_CORE_GATE_H_

#include <atomic>
#include <future>
#include <mutex>

#include "absl/status/status.h"
#include "runtime/core/stream.h"

namespace trireme::testing {

class Gate {
 public:
  Gate() : future_(promise_.get_future().share()) {}
  ~Gate() { Open(); }

  void Open() {
    std::call_once(opened_, [this] { promise_.set_value(); });
  }
  // A task for HostStream::Enqueue that blocks until the gate opens (setting
  // *started, if given, when it begins).
  HostStream::Task BlockingTask(std::atomic<bool>* started = nullptr) {
    std::shared_future<void> f = future_;
    return [f, started] {
      if (started != nullptr) started->store(true);
      f.wait();
      return absl::OkStatus();
    };
  }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_;
  std::once_flag opened_;
};

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_RUNTIME_CORE_GATE_H_
