#include "runtime/comm/mpi_comm.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

MPI_Datatype MpiType(DType d) {
  switch (d) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kBF16:
    case DType::kF16:
      return MPI_UINT16_T;  // moved as bits; reduced in f32
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kU8:
      return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

MPI_Op MpiOp(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

// Every MPI call of the backend holds this lock. MPI_THREAD_MULTIPLE makes
// concurrent calls legal, but OpenMPI 4.1's shared-memory transport (vader)
// has crashed here with several threads progressing at once (each
// communicator has its own worker thread); serializing entry costs little
// because no call blocks (operations are non-blocking and polled).
std::mutex& MpiMutex() {
  static std::mutex* mu = new std::mutex();
  return *mu;
}

template <typename F>
int Locked(F f) {
  std::lock_guard<std::mutex> lock(MpiMutex());
  return f();
}

std::string MpiError(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

bool IsHalf(DType d) { return d == DType::kBF16 || d == DType::kF16; }

using Temp = std::shared_ptr<std::vector<float>>;

Temp Widen(const void* data, DType d, int64_t count) {
  auto out = std::make_shared<std::vector<float>>(count);
  for (int64_t i = 0; i < count; ++i) (*out)[i] = LoadAsF32(data, d, i);
  return out;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, int rank, int size, std::string name, CommOptions o)
      : Communicator(rank, size, std::move(name), o), comm_(comm) {}
  ~MpiCommunicator() override {
    DrainWorker();
    // Finish eager sends (their receivers may still be on the way).
    const absl::Time deadline = absl::Now() + options().timeout;
    while (!pending_sends_.empty() && broken_.ok() && absl::Now() < deadline) {
      int done = 0;
      Locked([&] { return MPI_Test(&pending_sends_.front().req, &done, MPI_STATUS_IGNORE); });
      if (done) {
        pending_sends_.erase(pending_sends_.begin());
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
    if (broken_.ok() && pending_sends_.empty()) Locked([&] { return MPI_Comm_free(&comm_); });
  }
  const char* backend() const override { return "mpi"; }

 protected:
  absl::Status DoAllGather(const OpContext& ctx, ConstView send, MutView recv) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    const bool in_place =
        send.data == static_cast<char*>(recv.data) + rank() * send.bytes() && send.count;
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Iallgather(in_place ? MPI_IN_PLACE : send.data,
                                                 static_cast<int>(send.count), MpiType(send.dtype),
                                                 recv.data, static_cast<int>(send.count),
                                                 MpiType(send.dtype), comm_, &req);
                         })));
    return Complete(ctx, &req);
  }

  absl::Status DoReduceScatter(const OpContext& ctx, ConstView send, MutView recv,
                               ReduceOp op) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    if (IsHalf(send.dtype) || op == ReduceOp::kAvg) {
      Temp in = Widen(send.data, send.dtype, send.count);
      Temp out = std::make_shared<std::vector<float>>(recv.count);
      MPI_Request req;
      RETURN_IF_ERROR(Call(ctx, Locked([&] {
                             return MPI_Ireduce_scatter_block(in->data(), out->data(),
                                                              static_cast<int>(recv.count),
                                                              MPI_FLOAT, MPI_SUM, comm_, &req);
                           })));
      RETURN_IF_ERROR(Complete(ctx, &req, MPI_STATUS_IGNORE, {in, out}));
      for (int64_t i = 0; i < recv.count; ++i) {
        StoreFromF32(recv.data, recv.dtype, i,
                     op == ReduceOp::kAvg ? (*out)[i] / static_cast<float>(size()) : (*out)[i]);
      }

      return absl::OkStatus();
    }
    // Copy the input if recv aliases it (MPI forbids overlapping buffers).
    std::shared_ptr<std::vector<char>> copy;
    const void* in = send.data;
    if (send.count > 0 && recv.data >= send.data &&
        static_cast<const char*>(recv.data) < static_cast<const char*>(send.data) + send.bytes()) {
      copy = std::make_shared<std::vector<char>>(
          static_cast<const char*>(send.data), static_cast<const char*>(send.data) + send.bytes());
      in = copy->data();
    }
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Ireduce_scatter_block(
                               in, recv.data, static_cast<int>(recv.count), MpiType(send.dtype),
                               MpiOp(op), comm_, &req);
                         })));
    return Complete(ctx, &req, MPI_STATUS_IGNORE, {copy});
  }

  absl::Status DoAllReduce(const OpContext& ctx, ConstView send, MutView recv,
                           ReduceOp op) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    if (IsHalf(send.dtype) || op == ReduceOp::kAvg) {
      Temp buf = Widen(send.data, send.dtype, send.count);
      MPI_Request req;
      RETURN_IF_ERROR(Call(ctx, Locked([&] {
                             return MPI_Iallreduce(MPI_IN_PLACE, buf->data(),
                                                   static_cast<int>(send.count), MPI_FLOAT,
                                                   MpiOp(op), comm_, &req);
                           })));
      RETURN_IF_ERROR(Complete(ctx, &req, MPI_STATUS_IGNORE, {buf}));
      for (int64_t i = 0; i < send.count; ++i) {
        StoreFromF32(recv.data, recv.dtype, i,
                     op == ReduceOp::kAvg ? (*buf)[i] / static_cast<float>(size()) : (*buf)[i]);
      }
      return absl::OkStatus();
    }
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Iallreduce(send.data == recv.data ? MPI_IN_PLACE : send.data,
                                                 recv.data, static_cast<int>(send.count),
                                                 MpiType(send.dtype), MpiOp(op), comm_, &req);
                         })));
    return Complete(ctx, &req);
  }

  absl::Status DoBroadcast(const OpContext& ctx, MutView buf, int root) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Ibcast(buf.data, static_cast<int>(buf.count),
                                             MpiType(buf.dtype), root, comm_, &req);
                         })));
    return Complete(ctx, &req);
  }

  // Eager, like the threads backend: the message is copied and sent in the
  // background, so a send never blocks the worker (a blocking rendezvous would
  // deadlock two ranks that send to each other before receiving). Pending sends
  // are progressed by every later wait and finished by the destructor.
  absl::Status DoSend(const OpContext& ctx, ConstView buf, int peer) override {
    auto copy = std::make_shared<std::vector<char>>(
        static_cast<const char*>(buf.data), static_cast<const char*>(buf.data) + buf.bytes());
    PendingSend p{MPI_REQUEST_NULL, copy};
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Isend(copy->data(), static_cast<int>(buf.count),
                                            MpiType(buf.dtype), peer, kP2pTag, comm_, &p.req);
                         })));
    pending_sends_.push_back(std::move(p));
    return ProgressSends(ctx);
  }

  absl::Status DoRecv(const OpContext& ctx, MutView buf, int peer) override {
    MPI_Request req;
    RETURN_IF_ERROR(PostRecv(ctx, buf, peer, &req));
    return FinishRecv(ctx, buf, peer, &req);
  }

  // Sends are eager (posted and progressed in the background), so the group
  // posts every receive, then its sends, then completes the receives.
  absl::Status DoP2PGroup(const OpContext& ctx, const std::vector<P2POp>& ops) override {
    std::vector<MPI_Request> reqs(ops.size(), MPI_REQUEST_NULL);
    absl::Status s;
    for (size_t i = 0; i < ops.size() && s.ok(); ++i) {
      if (ops[i].kind == P2POp::Kind::kRecv) s = PostRecv(ctx, ops[i].buf, ops[i].peer, &reqs[i]);
    }
    for (size_t i = 0; i < ops.size() && s.ok(); ++i) {
      if (ops[i].kind == P2POp::Kind::kSend) s = DoSend(ctx, ops[i].buf, ops[i].peer);
    }
    for (size_t i = 0; i < ops.size() && s.ok(); ++i) {
      if (ops[i].kind == P2POp::Kind::kRecv) {
        s = FinishRecv(ctx, ops[i].buf, ops[i].peer, &reqs[i]);
      }
    }
    if (!s.ok()) CancelRecvs(reqs);
    return s;
  }

  absl::Status DoBarrier(const OpContext& ctx) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] { return MPI_Ibarrier(comm_, &req); })));
    return Complete(ctx, &req);
  }

  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext& ctx, int color, int key,
                                                        const std::string& name) override {
    RETURN_IF_ERROR(CheckDesync(ctx));
    // MPI_Comm_split blocks without a timeout: first make sure every rank has
    // arrived, with a timed all-gather, so the split itself cannot hang.
    std::vector<int> all(2 * size());
    int mine[2] = {color, key};
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Iallgather(mine, 2, MPI_INT, all.data(), 2, MPI_INT, comm_,
                                                 &req);
                         })));
    RETURN_IF_ERROR(Complete(ctx, &req));
    MPI_Comm child;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key,
                                                 &child);
                         })));
    if (child == MPI_COMM_NULL) return std::unique_ptr<Communicator>();
    int r = 0, n = 0;
    Locked([&] {
      MPI_Comm_set_errhandler(child, MPI_ERRORS_RETURN);
      MPI_Comm_rank(child, &r);
      return MPI_Comm_size(child, &n);
    });
    return std::unique_ptr<Communicator>(new MpiCommunicator(child, r, n, name, options()));
  }

 private:
  static constexpr int kP2pTag = 7;

  absl::Status PostRecv(const OpContext& ctx, MutView buf, int peer, MPI_Request* req) {
    return Call(ctx, Locked([&] {
                  return MPI_Irecv(buf.data, static_cast<int>(buf.count), MpiType(buf.dtype), peer,
                                   kP2pTag, comm_, req);
                }));
  }

  // After a failure in a P2P group: cancels the receives it posted that are
  // still pending, so none writes into the caller's buffer after the call
  // has returned. One that cannot be cancelled within a second leaves the
  // group unusable.
  void CancelRecvs(std::vector<MPI_Request>& reqs) {
    for (MPI_Request& r : reqs) {
      if (r == MPI_REQUEST_NULL) continue;
      Locked([&] { return MPI_Cancel(&r); });
      const absl::Time until = absl::Now() + absl::Seconds(1);
      int done = 0;
      while (Locked([&] { return MPI_Test(&r, &done, MPI_STATUS_IGNORE); }) == MPI_SUCCESS &&
             !done && absl::Now() < until) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      if (!done && broken_.ok()) {
        broken_ = absl::FailedPreconditionError(
            absl::StrCat("group '", name(),
                         "' is unusable: a receive of a failed P2P group could not be "
                         "cancelled"));
      }
    }
  }

  absl::Status FinishRecv(const OpContext& ctx, MutView buf, int peer, MPI_Request* req) {
    MPI_Status st;
    absl::Status s = Complete(ctx, req, &st, {});
    if (!s.ok()) {
      if (absl::StrContains(s.message(), "truncat")) {
        return absl::InvalidArgumentError(absl::StrCat(ctx.Describe(), ": rank ", peer,
                                                       " sent more than the ", buf.count,
                                                       " elements this rank expects"));
      }
      return s;
    }
    int got = 0;
    Locked([&] { return MPI_Get_count(&st, MpiType(buf.dtype), &got); });
    if (got != buf.count) {
      return absl::InvalidArgumentError(absl::StrCat(
          ctx.Describe(), ": rank ", peer, " sent count ", got, " but this rank expects ",
          buf.count, " elements of ", DTypeName(buf.dtype)));
    }
    return absl::OkStatus();
  }

  absl::Status Call(const OpContext& ctx, int code) {
    if (code == MPI_SUCCESS) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(ctx.Describe(), ": ", MpiError(code)));
  }

  struct PendingSend {
    MPI_Request req;
    std::shared_ptr<std::vector<char>> data;
  };

  absl::Status ProgressSends(const OpContext& ctx) {
    for (auto it = pending_sends_.begin(); it != pending_sends_.end();) {
      int done = 0;
      RETURN_IF_ERROR(
          Call(ctx, Locked([&] { return MPI_Test(&it->req, &done, MPI_STATUS_IGNORE); })));
      it = done ? pending_sends_.erase(it) : it + 1;
    }
    return absl::OkStatus();
  }

  // Polls `req` until done or past the deadline. Backs off from spinning to
  // short sleeps so oversubscribed ranks leave the cores to the others.
  // On timeout the request stays in flight: `keep` (temporaries it uses) is
  // kept alive and the communicator refuses further work.
  absl::Status Complete(const OpContext& ctx, MPI_Request* req,
                        MPI_Status* status = MPI_STATUS_IGNORE,
                        std::vector<std::shared_ptr<void>> keep = {}) {
    if (!broken_.ok()) return broken_;
    StallWatch watch;
    for (int polls = 0;; ++polls) {
      int done = 0;
      RETURN_IF_ERROR(Call(ctx, Locked([&] { return MPI_Test(req, &done, status); })));
      if (done) return ProgressSends(ctx);
      watch.Poll();
      if (absl::Now() > ctx.deadline) {
        for (auto& k : keep) graveyard_.push_back(std::move(k));
        broken_ = absl::FailedPreconditionError(absl::StrCat(
            "group '", name(), "' is unusable after ", ctx.fp.ToString(), " timed out"));
        return absl::DeadlineExceededError(absl::StrCat(
            ctx.Describe(), " timed out after ", absl::FormatDuration(options().timeout),
            " (the mpi backend cannot tell which ranks have not arrived; run with "
            "TRIREME_DESYNC_CHECK=1 to compare calls)",
            watch.Note()));
      }
      if (polls < 2000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 20000 ? 20 : 500));
      }
    }
  }

  // With check_desync: all-gather every rank's fingerprint and compare.
  absl::Status CheckDesync(const OpContext& ctx) {
    if (!options().check_desync) return absl::OkStatus();
    const Fingerprint& f = ctx.fp;
    const std::array<int64_t, kFingerprintWords> mine = FingerprintWords(f);
    std::vector<int64_t> all(kFingerprintWords * size());
    MPI_Request req;
    RETURN_IF_ERROR(Call(ctx, Locked([&] {
                           return MPI_Iallgather(mine.data(), kFingerprintWords, MPI_INT64_T,
                                                 all.data(), kFingerprintWords, MPI_INT64_T, comm_,
                                                 &req);
                         })));
    RETURN_IF_ERROR(Complete(ctx, &req));
    return CompareFingerprintWords(name(), f.seq, all, size());
  }

  MPI_Comm comm_;
  std::vector<PendingSend> pending_sends_;
  absl::Status broken_;
  std::vector<std::shared_ptr<void>> graveyard_;
};

bool g_initialized_here = false;

}  // namespace

bool MpiRuntime::LaunchedByMpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr;
}

absl::Status MpiRuntime::Init(int* argc, char*** argv) {
  int initialized = 0, finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    return absl::FailedPreconditionError(
        "MPI was finalized in this process and cannot be initialized again");
  }
  MPI_Initialized(&initialized);
  int provided = 0;
  if (initialized) {
    // Initialized by the host program: it must have asked for the level the
    // communicators need (their worker threads call MPI).
    MPI_Query_thread(&provided);
  } else {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
      return absl::UnavailableError("MPI_Init_thread failed");
    }
    g_initialized_here = true;
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    return absl::FailedPreconditionError(absl::StrCat(
        "MPI provides thread level ", provided, " but Trireme needs MPI_THREAD_MULTIPLE (",
        MPI_THREAD_MULTIPLE, ")", initialized ? ": call MPI_Init_thread with it" : ""));
  }
  // Our own world: errors come back as codes. A host's MPI_COMM_WORLD keeps
  // the host's handler (our communicators are duplicates with their own).
  if (g_initialized_here) MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> MpiRuntime::Wrap(MPI_Comm comm,
                                                               const std::string& name,
                                                               CommOptions options) {
  MPI_Comm dup;
  int r = 0, n = 0;
  const int code = Locked([&] {
    const int c = MPI_Comm_dup(comm, &dup);
    if (c != MPI_SUCCESS) return c;
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    MPI_Comm_rank(dup, &r);
    return MPI_Comm_size(dup, &n);
  });
  if (code != MPI_SUCCESS) {
    return absl::InternalError(absl::StrCat("MPI_Comm_dup for group '", name, "' failed"));
  }
  return std::unique_ptr<Communicator>(new MpiCommunicator(dup, r, n, name, options));
}

absl::StatusOr<std::unique_ptr<Communicator>> MpiRuntime::World(CommOptions options) {
  return Wrap(MPI_COMM_WORLD, "world", options);
}

void MpiRuntime::Finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (g_initialized_here && !finalized) MPI_Finalize();
}

void MpiRuntime::AbortJob(int exit_code) { MPI_Abort(MPI_COMM_WORLD, exit_code); }

}  // namespace trireme
