#include "runtime/comm/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/core/cuda_status.h"
#include "runtime/core/device.h"

namespace trireme {
namespace {

ncclDataType_t NcclType(DType d) {
  switch (d) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, cudaEvent_t event, int device, int rank,
                   int size, std::string name, CommOptions o)
      : Communicator(rank, size, std::move(name), o),
        comm_(comm),
        stream_(stream),
        event_(event),
        device_(device) {}
  ~NcclCommunicator() override {
    DrainWorker();
    cudaSetDevice(device_);
    if (scratch_) cudaFree(scratch_);
    cudaEventDestroy(event_);
    cudaStreamDestroy(stream_);
    if (!aborted_) ncclCommDestroy(comm_);
  }
  const char* backend() const override { return "nccl"; }
  bool moves_memory_of(const Device& device) const override {
    return device == Device::Cuda(device_);
  }

 protected:
  absl::Status DoAllGather(const OpContext& ctx, ConstView send, MutView recv) override {
    return Run(
        ctx, ncclAllGather(send.data, recv.data, send.count, NcclType(send.dtype), comm_, stream_));
  }
  absl::Status DoReduceScatter(const OpContext& ctx, ConstView send, MutView recv,
                               ReduceOp op) override {
    return Run(ctx, ncclReduceScatter(send.data, recv.data, recv.count, NcclType(send.dtype),
                                      NcclOp(op), comm_, stream_));
  }
  absl::Status DoAllReduce(const OpContext& ctx, ConstView send, MutView recv,
                           ReduceOp op) override {
    return Run(ctx, ncclAllReduce(send.data, recv.data, send.count, NcclType(send.dtype),
                                  NcclOp(op), comm_, stream_));
  }
  absl::Status DoBroadcast(const OpContext& ctx, MutView buf, int root) override {
    return Run(ctx, ncclBroadcast(buf.data, buf.data, buf.count, NcclType(buf.dtype), root, comm_,
                                  stream_));
  }
  absl::Status DoSend(const OpContext& ctx, ConstView buf, int peer) override {
    return Run(ctx, ncclSend(buf.data, buf.count, NcclType(buf.dtype), peer, comm_, stream_));
  }
  absl::Status DoRecv(const OpContext& ctx, MutView buf, int peer) override {
    return Run(ctx, ncclRecv(buf.data, buf.count, NcclType(buf.dtype), peer, comm_, stream_));
  }
  // One NCCL group: the sends and receives progress together.
  absl::Status DoP2PGroup(const OpContext& ctx, const std::vector<P2POp>& ops) override {
    ncclResult_t r = ncclGroupStart();
    for (size_t i = 0; i < ops.size() && r == ncclSuccess; ++i) {
      const P2POp& p = ops[i];
      r = p.kind == P2POp::Kind::kSend
              ? ncclSend(p.buf.data, p.buf.count, NcclType(p.buf.dtype), p.peer, comm_, stream_)
              : ncclRecv(p.buf.data, p.buf.count, NcclType(p.buf.dtype), p.peer, comm_, stream_);
    }
    const ncclResult_t end = ncclGroupEnd();
    return Run(ctx, r != ncclSuccess ? r : end);
  }
  absl::Status DoBarrier(const OpContext& ctx) override {
    if (scratch_ == nullptr) {
      CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
      CUDA_RETURN_IF_ERROR(cudaMalloc(&scratch_, sizeof(float)));
    }
    return Run(ctx, ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_));
  }
  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext& ctx, int color, int key,
                                                        const std::string& name) override {
    ncclComm_t child = nullptr;
    RETURN_IF_ERROR(Run(
        ctx, ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr)));
    if (child == nullptr) return std::unique_ptr<Communicator>();
    int r = 0, n = 0;
    NCCL_RETURN_IF_ERROR(ncclCommUserRank(child, &r));
    NCCL_RETURN_IF_ERROR(ncclCommCount(child, &n));
    cudaStream_t s;
    cudaEvent_t e;
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return std::unique_ptr<Communicator>(
        new NcclCommunicator(child, s, e, device_, r, n, name, options()));
  }

 private:
  // Checks the enqueue result, then polls the stream's completion against the
  // deadline; NCCL's asynchronous errors are checked on every poll.
  absl::Status Run(const OpContext& ctx, ncclResult_t enqueued) {
    if (aborted_) {
      return absl::FailedPreconditionError(
          absl::StrCat("group '", name(), "' was aborted after an earlier timeout"));
    }
    RETURN_IF_ERROR(
        Annotate(NcclToStatus(enqueued, "nccl enqueue", __FILE__, __LINE__), ctx.Describe()));
    CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, stream_));
    for (;;) {
      const cudaError_t q = cudaEventQuery(event_);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        return Annotate(CudaToStatus(q, "cudaEventQuery", __FILE__, __LINE__), ctx.Describe());
      }
      ncclResult_t async_err = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async_err);
      if (async_err != ncclSuccess && async_err != ncclInProgress) {
        return Annotate(NcclToStatus(async_err, "nccl async", __FILE__, __LINE__), ctx.Describe());
      }
      if (absl::Now() > ctx.deadline) {
        ncclCommAbort(comm_);
        aborted_ = true;
        return absl::DeadlineExceededError(absl::StrCat(ctx.Describe(), " timed out after ",
                                                        absl::FormatDuration(options().timeout),
                                                        "; the NCCL communicator was aborted"));
      }
      std::this_thread::yield();
    }
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  cudaEvent_t event_;
  int device_;
  void* scratch_ = nullptr;
  bool aborted_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Communicator& bootstrap,
                                                                     int device,
                                                                     CommOptions options) {
  ASSIGN_OR_RETURN(int devices, CudaDeviceCount());
  if (device < 0 || device >= devices) {
    return absl::UnavailableError(
        absl::StrCat("no CUDA device ", device, " (", devices, " visible) for the nccl backend"));
  }
  ncclUniqueId id;
  if (bootstrap.rank() == 0) NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
  RETURN_IF_ERROR(
      bootstrap.Broadcast(MutView{&id, static_cast<int64_t>(sizeof(id)), DType::kU8}, 0));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  ncclComm_t comm;
  NCCL_RETURN_IF_ERROR(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()));
  cudaStream_t s;
  cudaEvent_t e;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return std::unique_ptr<Communicator>(new NcclCommunicator(
      comm, s, e, device, bootstrap.rank(), bootstrap.size(), bootstrap.name(), options));
}

}  // namespace trireme
