// A communicator decorator for fault tests (STYLE.md point 12): forwards every
// operation to the wrapped communicator after a random delay (seeded per rank),
// so thread timing changes but nothing else may.
#ifndef TRIREME_TESTS_RUNTIME_COMM_DELAYING_COMM_H_
#define TRIREME_TESTS_RUNTIME_COMM_DELAYING_COMM_H_

#include <chrono>
#include <memory>
#include <random>
#include <thread>

#include "runtime/comm/communicator.h"

namespace trireme::testing {

class DelayingCommunicator final : public Communicator {
 public:
  // Wraps `inner` (not owned unless `owned` holds it); delays are uniform in
  // [0, max_delay_us] microseconds.
  DelayingCommunicator(Communicator& inner, int max_delay_us, uint32_t seed,
                       std::unique_ptr<Communicator> owned = nullptr)
      : Communicator(inner.rank(), inner.size(), inner.name(), inner.options()),
        inner_(inner),
        owned_(std::move(owned)),
        max_(max_delay_us),
        rng_(seed) {}
  ~DelayingCommunicator() override { DrainWorker(); }
  const char* backend() const override { return "delaying"; }

 protected:
  absl::Status DoAllGather(const OpContext&, ConstView s, MutView r) override {
    Delay();
    return inner_.AllGather(s, r);
  }
  absl::Status DoReduceScatter(const OpContext&, ConstView s, MutView r, ReduceOp op) override {
    Delay();
    return inner_.ReduceScatter(s, r, op);
  }
  absl::Status DoAllReduce(const OpContext&, ConstView s, MutView r, ReduceOp op) override {
    Delay();
    return inner_.AllReduce(s, r, op);
  }
  absl::Status DoBroadcast(const OpContext&, MutView b, int root) override {
    Delay();
    return inner_.Broadcast(b, root);
  }
  absl::Status DoSend(const OpContext&, ConstView b, int peer) override {
    Delay();
    return inner_.Send(b, peer);
  }
  absl::Status DoRecv(const OpContext&, MutView b, int peer) override {
    Delay();
    return inner_.Recv(b, peer);
  }
  absl::Status DoP2PGroup(const OpContext&, const std::vector<P2POp>& ops) override {
    Delay();
    return inner_.P2PGroup(ops);
  }
  absl::Status DoBarrier(const OpContext&) override {
    Delay();
    return inner_.Barrier();
  }
  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext&, int color, int key,
                                                        const std::string& name) override {
    Delay();
    auto child = inner_.Split(color, key, name);
    if (!child.ok() || *child == nullptr) return child;
    Communicator& c = **child;
    return std::unique_ptr<Communicator>(
        new DelayingCommunicator(c, max_, rng_(), std::move(*child)));
  }

 private:
  void Delay() {
    std::uniform_int_distribution<int> d(0, max_);
    std::this_thread::sleep_for(std::chrono::microseconds(d(rng_)));
  }
  Communicator& inner_;
  std::unique_ptr<Communicator> owned_;
  const int max_;
  std::mt19937 rng_;
};

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_RUNTIME_COMM_DELAYING_COMM_H_
