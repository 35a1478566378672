#include "runtime/comm/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <array>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "runtime/comm/cuda_reduce.h"
#include "runtime/core/cuda_status.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"

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

// Sums and maxima; averages are sums finished by ConvertCuda (kAvg divides
// by the group size after the sum, as the CPU backends do).
ncclRedOp_t NcclOp(ReduceOp op) { return op == ReduceOp::kMax ? ncclMax : ncclSum; }

// Polls a non-blocking communicator until its pending call has finished
// (OK), failed, or `deadline` passed: then it is aborted (*aborted set) and
// the result is DeadlineExceeded naming `what`.
absl::Status AwaitNccl(ncclComm_t comm, absl::Time deadline, const std::string& what,
                       bool* aborted) {
  StallWatch watch;
  for (int polls = 0;; ++polls) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm, &state);
    if (q != ncclSuccess) return NcclToStatus(q, "ncclCommGetAsyncError", __FILE__, __LINE__);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return absl::InternalError(
          absl::StrCat(what, ": ", ncclGetErrorString(state), " (", ncclGetLastError(comm), ")"));
    }
    watch.Poll();
    if (absl::Now() > deadline) {
      ncclCommAbort(comm);
      *aborted = true;
      return absl::DeadlineExceededError(absl::StrCat(
          what, " did not complete in time; the NCCL communicator was aborted", watch.Note()));
    }
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// Every rank's outcome of a step, over the control communicator: OK when
// all succeeded, else an error on every rank naming each failed rank (a
// rank that never arrives fails the control communicator's own timeout).
absl::Status AgreeOver(Communicator& control, const absl::Status& mine, const std::string& what) {
  ASSIGN_OR_RETURN(std::vector<std::string> all,
                   AllGatherStrings(control, mine.ok() ? "" : mine.ToString()));
  std::vector<std::string> failed;
  for (size_t j = 0; j < all.size(); ++j) {
    if (!all[j].empty()) failed.push_back(absl::StrCat("rank ", j, ": ", all[j]));
  }
  if (failed.empty()) return absl::OkStatus();
  return absl::Status(mine.ok() ? absl::StatusCode::kAborted : mine.code(),
                      absl::StrCat(what, " failed on ", failed.size(), " of ", all.size(),
                                   " ranks: ", absl::StrJoin(failed, "; ")));
}

ncclConfig_t NonBlocking() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, cudaEvent_t event, int device,
                   Communicator* control, std::unique_ptr<Communicator> owned_control, int rank,
                   int size, std::string name, CommOptions o)
      : Communicator(rank, size, std::move(name), o),
        comm_(comm),
        stream_(stream),
        event_(event),
        device_(device),
        control_(control),
        owned_control_(std::move(owned_control)) {}
  ~NcclCommunicator() override {
    DrainWorker();
    CudaDeviceScope scope(device_);
    scratch_ = Buffer();
    cudaEventDestroy(event_);
    cudaStreamDestroy(stream_);
    if (aborted_) return;
    // Finalize (non-blocking: polled, bounded), then free; abort if stuck.
    bool aborted = false;
    const ncclResult_t f = ncclCommFinalize(comm_);  // in progress on a non-blocking one
    if ((f == ncclSuccess || f == ncclInProgress) &&
        AwaitNccl(comm_, absl::Now() + options().timeout, "ncclCommFinalize", &aborted).ok()) {
      ncclCommDestroy(comm_);
    } else if (!aborted) {
      ncclCommAbort(comm_);
    }
  }
  const char* backend() const override { return "nccl"; }
  bool moves_memory_of(const Device& device) const override {
    return device == Device::Cuda(device_);
  }

  // Builds one from a communicator `comm` whose init or split was started.
  static absl::StatusOr<std::unique_ptr<Communicator>> Finish(
      ncclComm_t comm, int device, Communicator* control,
      std::unique_ptr<Communicator> owned_control, std::string name, CommOptions options) {
    int r = 0, n = 0;
    NCCL_RETURN_IF_ERROR(ncclCommUserRank(comm, &r));
    NCCL_RETURN_IF_ERROR(ncclCommCount(comm, &n));
    CudaDeviceScope scope(device);
    RETURN_IF_ERROR(scope.status());
    cudaStream_t s;
    cudaEvent_t e;
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return std::unique_ptr<Communicator>(new NcclCommunicator(
        comm, s, e, device, control, std::move(owned_control), r, n, std::move(name), options));
  }

 protected:
  absl::Status DoAllGather(const OpContext& ctx, ConstView send, MutView recv) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    return Run(
        ctx, ncclAllGather(send.data, recv.data, send.count, NcclType(send.dtype), comm_, stream_));
  }

  absl::Status DoReduceScatter(const OpContext& ctx, ConstView send, MutView recv,
                               ReduceOp op) override {
    return Reduction(ctx, send, recv, op, [&](const void* in, void* out, ncclDataType_t t) {
      return ncclReduceScatter(in, out, recv.count, t, NcclOp(op), comm_, stream_);
    });
  }

  absl::Status DoAllReduce(const OpContext& ctx, ConstView send, MutView recv,
                           ReduceOp op) override {
    return Reduction(ctx, send, recv, op, [&](const void* in, void* out, ncclDataType_t t) {
      return ncclAllReduce(in, out, send.count, t, NcclOp(op), comm_, stream_);
    });
  }

  absl::Status DoBroadcast(const OpContext& ctx, MutView buf, int root) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    return Run(ctx, ncclBroadcast(buf.data, buf.data, buf.count, NcclType(buf.dtype), root, comm_,
                                  stream_));
  }
  absl::Status DoSend(const OpContext& ctx, ConstView buf, int peer) override {
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    return Run(ctx, ncclSend(buf.data, buf.count, NcclType(buf.dtype), peer, comm_, stream_));
  }
  absl::Status DoRecv(const OpContext& ctx, MutView buf, int peer) override {
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    return Run(ctx, ncclRecv(buf.data, buf.count, NcclType(buf.dtype), peer, comm_, stream_));
  }
  // One NCCL group: the sends and receives progress together.
  absl::Status DoP2PGroup(const OpContext& ctx, const std::vector<P2POp>& ops) override {
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    ncclResult_t r = ncclGroupStart();
    for (size_t i = 0; i < ops.size() && (r == ncclSuccess || r == ncclInProgress); ++i) {
      const P2POp& p = ops[i];
      r = p.kind == P2POp::Kind::kSend
              ? ncclSend(p.buf.data, p.buf.count, NcclType(p.buf.dtype), p.peer, comm_, stream_)
              : ncclRecv(p.buf.data, p.buf.count, NcclType(p.buf.dtype), p.peer, comm_, stream_);
    }
    const ncclResult_t end = ncclGroupEnd();
    return Run(ctx, r != ncclSuccess && r != ncclInProgress ? r : end);
  }
  absl::Status DoBarrier(const OpContext& ctx) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    if (scratch_.data() == nullptr) {
      ASSIGN_OR_RETURN(scratch_, Scratch(1));
    }
    return Run(ctx, ncclAllReduce(scratch_.data(), scratch_.data(), 1, ncclFloat32, ncclSum, comm_,
                                  stream_));
  }

  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext& ctx, int color, int key,
                                                        const std::string& name) override {
    // The control communicator splits alongside: the child's desync checks
    // and agreements run over the same ranks.
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> child_control,
                     control_->Split(color, key, absl::StrCat(name, "_ctl")));
    ncclComm_t child = nullptr;
    absl::Status local;
    {
      CudaDeviceScope scope(device_);
      local = scope.status();
      ncclConfig_t config = NonBlocking();
      if (local.ok()) {
        const ncclResult_t r =
            ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, &config);
        local = NcclToStatus(r, "ncclCommSplit", __FILE__, __LINE__);
      }
      if (local.ok()) local = AwaitNccl(comm_, ctx.deadline, ctx.Describe(), &aborted_);
      bool child_aborted = false;
      if (local.ok() && child != nullptr) {
        local = AwaitNccl(child, ctx.deadline, ctx.Describe(), &child_aborted);
        if (child_aborted) child = nullptr;
      }
    }
    absl::Status agreed =
        AgreeOver(*control_, local, absl::StrCat("splitting group '", this->name(), "'"));
    if (!agreed.ok()) {
      if (child != nullptr) ncclCommAbort(child);
      return agreed;
    }
    if (child == nullptr) return std::unique_ptr<Communicator>();
    Communicator* cc = child_control.get();
    return Finish(child, device_, cc, std::move(child_control), name, options());
  }

 private:
  // A reduction `nccl(in, out, type)` of `send` into `recv`, in f32: 16-bit
  // floats are widened into f32 scratch first and rounded once at the end;
  // averages are sums divided by the group size. Integers go as they are
  // (their average is refused by validation).
  template <typename Nccl>
  absl::Status Reduction(const OpContext& ctx, ConstView send, MutView recv, ReduceOp op,
                         Nccl nccl) {
    RETURN_IF_ERROR(CheckDesync(ctx));
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    if (!IsFloat(send.dtype)) return Run(ctx, nccl(send.data, recv.data, NcclType(send.dtype)));
    const bool wide = send.dtype != DType::kF32;
    Buffer wide_in, wide_out;
    const void* in = send.data;
    void* out = recv.data;
    if (wide) {
      ASSIGN_OR_RETURN(wide_in, Scratch(send.count));
      ASSIGN_OR_RETURN(wide_out, Scratch(recv.count));
      in = wide_in.data();
      out = wide_out.data();
    }
    absl::Status s;
    if (wide) {
      s = ConvertCuda(send.data, send.dtype, wide_in.data(), DType::kF32, send.count,
                      ReduceOp::kSum, 1, stream_);
    }
    if (s.ok()) s = Enqueue(ctx, nccl(in, out, ncclFloat32));
    if (s.ok() && (wide || op == ReduceOp::kAvg)) {
      s = ConvertCuda(out, DType::kF32, recv.data, recv.dtype, recv.count, op, size(), stream_);
    }
    if (s.ok()) return Complete(ctx);  // it waits: the scratch dies after the stream is done
    // Something may be queued that reads the scratch: let it finish first
    // (an aborted communicator's kernels were torn down by the abort).
    if (!aborted_) cudaStreamSynchronize(stream_);
    return s;
  }

  absl::StatusOr<Buffer> Scratch(int64_t floats) const {
    return Buffer::Allocate(Device::Cuda(device_), floats * 4, MemCategory::kComm, nullptr);
  }

  // With check_desync: every rank's fingerprint over the control
  // communicator, compared (scopes included).
  absl::Status CheckDesync(const OpContext& ctx) {
    if (!options().check_desync || control_ == nullptr) return absl::OkStatus();
    const std::array<int64_t, kFingerprintWords> mine = FingerprintWords(ctx.fp);
    std::vector<int64_t> all(kFingerprintWords * size());
    RETURN_IF_ERROR(
        control_->AllGather(ConstView{mine.data(), kFingerprintWords, DType::kI64},
                            MutView{all.data(), static_cast<int64_t>(all.size()), DType::kI64}));
    return CompareFingerprintWords(name(), ctx.fp.seq, all, size());
  }

  // The enqueue's result; a non-blocking communicator's enqueue still in
  // progress is polled to completion (against the op's deadline).
  absl::Status Enqueue(const OpContext& ctx, ncclResult_t enqueued) {
    if (aborted_) {
      return absl::FailedPreconditionError(
          absl::StrCat("group '", name(), "' was aborted after an earlier failure"));
    }
    if (enqueued == ncclInProgress) {
      return Annotate(AwaitNccl(comm_, ctx.deadline, "the enqueue", &aborted_), ctx.Describe());
    }
    return Annotate(NcclToStatus(enqueued, "nccl enqueue", __FILE__, __LINE__), ctx.Describe());
  }

  // Records an event after everything enqueued and polls it (and NCCL's
  // asynchronous errors) against the deadline; aborts on expiry.
  absl::Status Complete(const OpContext& ctx) {
    CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, stream_));
    StallWatch watch;
    for (int polls = 0;; ++polls) {
      const cudaError_t q = cudaEventQuery(event_);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        return Annotate(CudaToStatus(q, "cudaEventQuery", __FILE__, __LINE__), ctx.Describe());
      }
      ncclResult_t async_err = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async_err);
      if (async_err != ncclSuccess && async_err != ncclInProgress) {
        // A failed communicator may leave kernels waiting on peers: abort it.
        ncclCommAbort(comm_);
        aborted_ = true;
        return Annotate(NcclToStatus(async_err, "nccl async", __FILE__, __LINE__),
                        absl::StrCat(ctx.Describe(), " (the NCCL communicator was aborted)"));
      }
      cudaGetLastError();  // "not ready" is not an error: clear it for later launch checks
      watch.Poll();
      if (absl::Now() > ctx.deadline) {
        ncclCommAbort(comm_);
        aborted_ = true;
        return absl::DeadlineExceededError(absl::StrCat(
            ctx.Describe(), " timed out after ", absl::FormatDuration(options().timeout),
            "; the NCCL communicator was aborted", watch.Note()));
      }
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  absl::Status Run(const OpContext& ctx, ncclResult_t enqueued) {
    RETURN_IF_ERROR(Enqueue(ctx, enqueued));
    return Complete(ctx);
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  cudaEvent_t event_;
  const int device_;
  Communicator* control_;  // this group's ranks, host values
  std::unique_ptr<Communicator> owned_control_;
  Buffer scratch_;  // the barrier's float
  bool aborted_ = false;
};

// What rank 0 broadcasts: its status and, if it could make one, the id.
struct IdPacket {
  int32_t ok = 0;
  char message[252] = {0};
  ncclUniqueId id;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Communicator& control,
                                                                     int device,
                                                                     CommOptions options) {
  // A rank that cannot use its GPU still joins the broadcast and the
  // agreement, so the others learn why instead of waiting.
  absl::StatusOr<int> devices = CudaDeviceCount();
  absl::Status local = devices.status();
  if (local.ok() && (device < 0 || device >= *devices)) {
    local = absl::UnavailableError(
        absl::StrCat("no CUDA device ", device, " (", *devices, " visible) for the nccl backend"));
  }
  IdPacket p;
  if (control.rank() == 0) {
    absl::Status s = local;
    if (s.ok()) s = NcclToStatus(ncclGetUniqueId(&p.id), "ncclGetUniqueId", __FILE__, __LINE__);
    p.ok = s.ok() ? 1 : 0;
    if (!s.ok()) std::snprintf(p.message, sizeof(p.message), "%s", s.ToString().c_str());
  }
  RETURN_IF_ERROR(control.Broadcast(MutView{&p, static_cast<int64_t>(sizeof(p)), DType::kU8}, 0));
  if (p.ok == 0) {
    p.message[sizeof(p.message) - 1] = '\0';
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL initialization of group '", control.name(),
                     "': rank 0 could not create the unique id: ", p.message));
  }
  // Every rank's GPU first: a rank that cannot take part is named before
  // the others start an initialization that would wait for it.
  RETURN_IF_ERROR(AgreeOver(
      control, local, absl::StrCat("NCCL setup of group '", control.name(), "' on its GPUs")));
  ncclComm_t comm = nullptr;
  bool aborted = false;
  {
    CudaDeviceScope scope(device);
    local = scope.status();
    if (local.ok()) {
      ncclConfig_t config = NonBlocking();
      local =
          NcclToStatus(ncclCommInitRankConfig(&comm, control.size(), p.id, control.rank(), &config),
                       "ncclCommInitRankConfig", __FILE__, __LINE__);
    }
    if (local.ok()) {
      local = AwaitNccl(comm, absl::Now() + options.timeout,
                        absl::StrCat("ncclCommInitRankConfig on cuda:", device), &aborted);
    }
  }
  absl::Status agreed = AgreeOver(
      control, local, absl::StrCat("NCCL initialization of group '", control.name(), "'"));
  if (!agreed.ok()) {
    if (comm != nullptr && !aborted) ncclCommAbort(comm);
    return agreed;
  }
  return NcclCommunicator::Finish(comm, device, &control, nullptr, control.name(), options);
}

}  // namespace trireme
