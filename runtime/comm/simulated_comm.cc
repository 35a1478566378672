#include "runtime/comm/simulated_comm.h"

#include "absl/strings/str_cat.h"

namespace trireme {
namespace {

class SimulatedCommunicator final : public Communicator {
 public:
  SimulatedCommunicator(int rank, int size, std::string name)
      : Communicator(rank, size, std::move(name), CommOptions(), /*inline_ops=*/true) {}
  ~SimulatedCommunicator() override { DrainWorker(); }
  const char* backend() const override { return "simulated"; }
  bool accepts_null_buffers() const override { return true; }

 protected:
  absl::Status DoAllGather(const OpContext&, ConstView, MutView) override {
    return absl::OkStatus();
  }
  absl::Status DoReduceScatter(const OpContext&, ConstView, MutView, ReduceOp) override {
    return absl::OkStatus();
  }
  absl::Status DoAllReduce(const OpContext&, ConstView, MutView, ReduceOp) override {
    return absl::OkStatus();
  }
  absl::Status DoBroadcast(const OpContext&, MutView, int) override { return absl::OkStatus(); }
  absl::Status DoSend(const OpContext&, ConstView, int) override { return absl::OkStatus(); }
  absl::Status DoRecv(const OpContext&, MutView, int) override { return absl::OkStatus(); }
  absl::Status DoP2PGroup(const OpContext&, const std::vector<P2POp>&) override {
    return absl::OkStatus();
  }
  absl::Status DoBarrier(const OpContext&) override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext& ctx, int, int,
                                                        const std::string&) override {
    return absl::UnimplementedError(
        absl::StrCat(ctx.Describe(),
                     ": a simulated group has no peers to split with; create each "
                     "simulated group with CreateSimulatedCommunicator"));
  }
};

}  // namespace

std::unique_ptr<Communicator> CreateSimulatedCommunicator(int rank, int size,
                                                          const std::string& name) {
  return std::make_unique<SimulatedCommunicator>(rank, size, name);
}

}  // namespace trireme
