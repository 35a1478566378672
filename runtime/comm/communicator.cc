#include "runtime/comm/communicator.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "runtime/comm/flight_recorder.h"
#include "runtime/core/allocator.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"

namespace trireme {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

const char* CommOpName(CommOp op) {
  static const char* kNames[kNumCommOps] = {"AllGather", "ReduceScatter", "AllReduce", "Broadcast",
                                            "Send",      "Recv",          "Barrier",   "Split"};
  return kNames[static_cast<int>(op)];
}

std::string Fingerprint::ToString() const {
  std::string s = absl::StrCat(CommOpName(op), "(", DTypeName(dtype), ", count ", count);
  if (op == CommOp::kAllReduce || op == CommOp::kReduceScatter) {
    absl::StrAppend(&s, ", ", ReduceOpName(reduce));
  }
  if (op == CommOp::kBroadcast) absl::StrAppend(&s, ", root ", root);
  if (op == CommOp::kSend || op == CommOp::kRecv) absl::StrAppend(&s, ", peer ", root);
  absl::StrAppend(&s, ") seq ", seq);
  if (scope[0] != '\0') absl::StrAppend(&s, " [", scope.data(), "]");
  return s;
}

namespace {
thread_local std::string g_scope;
}  // namespace

CommScope::CommScope(const std::string& label) : prev_size_(g_scope.size()) {
  if (!g_scope.empty()) g_scope += " > ";
  g_scope += label;
}
CommScope::~CommScope() { g_scope.resize(prev_size_); }
const std::string& CommScope::Current() { return g_scope; }

namespace {

// A boolean environment knob: 1/true/on or 0/false/off (unset: unchanged).
absl::Status EnvBool(const char* name, bool* value) {
  const char* d = std::getenv(name);
  if (d == nullptr || *d == '\0') return absl::OkStatus();
  const std::string v = absl::AsciiStrToLower(d);
  if (v == "1" || v == "true" || v == "on") {
    *value = true;
  } else if (v == "0" || v == "false" || v == "off") {
    *value = false;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "='", d, "' is not one of 1, true, on, 0, false, off"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CommOptions> CommOptionsFromEnv(CommOptions base) {
  if (const char* t = std::getenv("TRIREME_COMM_TIMEOUT_S"); t && *t) {
    double seconds = 0;
    if (!absl::SimpleAtod(t, &seconds) || !(seconds > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("TRIREME_COMM_TIMEOUT_S='", t, "' is not a positive number of seconds"));
    }
    base.timeout = absl::Seconds(seconds);
  }
  RETURN_IF_ERROR(EnvBool("TRIREME_DESYNC_CHECK", &base.check_desync));
  RETURN_IF_ERROR(EnvBool("TRIREME_P2P_RENDEZVOUS", &base.p2p_rendezvous));
  if (const char* d = std::getenv("TRIREME_COMM_RANDOM_DELAY_US"); d && *d) {
    int64_t us = 0;
    if (!absl::SimpleAtoi(d, &us) || us < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TRIREME_COMM_RANDOM_DELAY_US='", d, "' is not a non-negative number of microseconds"));
    }
    base.random_delay = absl::Microseconds(us);
  }
  if (const char* n = std::getenv("TRIREME_FLIGHT_RECORDER"); n && *n) {
    if (!absl::SimpleAtoi(n, &base.flight_recorder_entries) || base.flight_recorder_entries < 0) {
      return absl::InvalidArgumentError(absl::StrCat("TRIREME_FLIGHT_RECORDER='", n,
                                                     "' is not a non-negative number of entries"));
    }
  }
  return base;
}

int64_t CommStats::total_sent() const {
  int64_t t = 0;
  for (const Op& o : ops) t += o.bytes_sent;
  return t;
}

int64_t CommStats::total_received() const {
  int64_t t = 0;
  for (const Op& o : ops) t += o.bytes_received;
  return t;
}

std::string CommStats::ToTable(const std::string& title) const {
  std::string out =
      absl::StrFormat("%s\n  %-14s %8s %14s %14s\n", title, "op", "calls", "sent", "received");
  for (int i = 0; i < kNumCommOps; ++i) {
    if (ops[i].calls == 0) continue;
    absl::StrAppendFormat(&out, "  %-14s %8d %14s %14s\n", CommOpName(static_cast<CommOp>(i)),
                          ops[i].calls, FormatBytes(ops[i].bytes_sent),
                          FormatBytes(ops[i].bytes_received));
  }
  absl::StrAppendFormat(&out, "  %-14s %8s %14s %14s\n", "total", "", FormatBytes(total_sent()),
                        FormatBytes(total_received()));
  return out;
}

int64_t RingSegment(int64_t count, int n, int i) { return count / n + (i < count % n ? 1 : 0); }

Work::Work() : done_(std::make_shared<CpuEvent>()) {}

absl::Status Work::Wait(absl::Duration timeout) const {
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = done_->Synchronize(timeout);
  if (blocked_ns_ != nullptr) {
    *blocked_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
  }
  if (absl::IsDeadlineExceeded(s) && !done_->Query()) {
    return absl::DeadlineExceededError(
        absl::StrCat(what_, " not finished after Wait(", absl::FormatDuration(timeout), ")"));
  }
  return s;
}

bool Work::Test() const { return done_->Query(); }

absl::Status Work::WaitOn(Stream& stream) const {
  return stream.Wait(*done_, stream.device().asynchronous() ? stream_blocked_ns_ : blocked_ns_);
}

std::string StallWatch::Note() const {
  if (stalled_ == absl::ZeroDuration()) return "";
  return absl::StrCat("; this rank itself was not running for ", absl::FormatDuration(stalled_),
                      " of the wait (its process was stopped -- SIGSTOP, a debugger -- or "
                      "descheduled or swapping): it did not time out on a peer; its peers "
                      "more likely timed out waiting for it");
}

std::string Communicator::OpContext::Describe() const {
  std::string what = fp.ToString();
  if (group.size() > 1) {
    what = absl::StrCat("P2PGroup of ", group.size(), " ops (", what, ", ...)");
  }
  return absl::StrCat(what, " on group '", comm->name(), "' (rank ", comm->rank(), " of ",
                      comm->size(), ", ", comm->backend(), ")");
}

Communicator::Communicator(int rank, int size, std::string name, CommOptions options,
                           bool inline_ops)
    : rank_(rank),
      size_(size),
      name_(std::move(name)),
      options_(options),
      next_send_seq_(size, 0),
      next_recv_seq_(size, 0),
      recorder_(std::make_shared<FlightRecorder>(
          rank, static_cast<size_t>(std::max<int64_t>(0, options.flight_recorder_entries)))),
      group_id_(name_),
      worker_(inline_ops ? std::unique_ptr<HostStreamBase>(
                               std::make_unique<InlineStream>(absl::StrCat("comm:", name_)))
                         : std::make_unique<CpuStream>(absl::StrCat("comm:", name_))) {}

Communicator::~Communicator() { DrainWorker(); }

void Communicator::DrainWorker() {
  if (worker_) worker_->Synchronize().IgnoreError();
}

Work Communicator::Failed(absl::Status status, Stream* stream) {
  Work w;
  w.what_ = "failed call";
  w.done_->Complete(std::move(status));
  if (stream != nullptr) {
    // The error becomes the stream's: the events and Synchronize after the
    // call report it, so what the caller enqueues next (reading what the op
    // never wrote) is not taken as good. The event is complete: nothing blocks.
    stream->Wait(*w.done_).IgnoreError();
  }
  return w;
}

Work Communicator::Issue(Fingerprint fp, int64_t sent, int64_t received, Body body,
                         Stream* stream) {
  return IssueGroup({fp}, {{sent, received}}, std::move(body), stream);
}

Work Communicator::IssueGroup(std::vector<Fingerprint> fps,
                              std::vector<std::pair<int64_t, int64_t>> bytes, Body body,
                              Stream* stream, bool stream_waits) {
  // The point the op waits for on `stream` (before anything else, so a
  // failure here leaves the group's sequence numbers untouched).
  std::shared_ptr<Event> ready;
  if (stream != nullptr) {
    ready = std::shared_ptr<Event>(stream->NewEvent());
    absl::Status rs = ready == nullptr ? absl::InternalError("cannot create an event")
                                       : stream->Record(ready.get());
    if (!rs.ok()) {
      return Failed(Annotate(rs, absl::StrCat("ordering ", CommOpName(fps[0].op), " on group '",
                                              name_, "' after stream '", stream->name(), "'")));
    }
  }
  {  // the innermost part of the caller's scope, if it is long
    const std::string& sc = CommScope::Current();
    for (Fingerprint& fp : fps) {
      if (fp.op == CommOp::kSend) {
        fp.seq = next_send_seq_[fp.root]++;
      } else if (fp.op == CommOp::kRecv) {
        fp.seq = next_recv_seq_[fp.root]++;
      } else {
        fp.seq = next_seq_++;
      }
      const size_t n = std::min(sc.size(), fp.scope.size() - 1);
      std::copy(sc.end() - n, sc.end(), fp.scope.begin());
      fp.scope[n] = '\0';
    }
  }
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    for (size_t i = 0; i < fps.size(); ++i) {
      CommStats::Op& o = issued_.ops[static_cast<int>(fps[i].op)];
      ++o.calls;
      o.bytes_sent += bytes[i].first;
      o.bytes_received += bytes[i].second;
    }
  }
  Work w;
  w.done_->Reset();
  w.blocked_ns_ = blocked_ns_;
  w.stream_blocked_ns_ = stream_blocked_ns_;
  OpContext ctx{fps[0], absl::InfinitePast(), this, {}};
  if (fps.size() > 1 || fps[0].op == CommOp::kSend || fps[0].op == CommOp::kRecv) {
    ctx.group = fps;
  }
  w.what_ = ctx.Describe();
  std::shared_ptr<CpuEvent> done = w.done_;
  std::shared_ptr<FlightRecorder> rec = recorder_;
  std::vector<uint64_t> fids;
  for (const Fingerprint& fp : fps) {
    FlightEntry fe;
    fe.group = group_id_;
    fe.group_rank = rank_;
    fe.group_size = size_;
    fe.fp = fp;
    fids.push_back(rec->Add(std::move(fe)));
  }
  worker_->Enqueue([this, ctx, done, body = std::move(body), fps, bytes, rec, fids, ready,
                    stream_name = stream ? stream->name() : std::string()]() mutable {
    absl::Status s;
    if (ready != nullptr) {
      // Stream order: the op's inputs are ready once the stream reaches it.
      // Its error (if any) stays the stream's; the op runs regardless, as
      // the other ranks are in it too.
      absl::Status rs = ready->Synchronize(options_.timeout);
      if (absl::IsDeadlineExceeded(rs) && !ready->Query()) {
        s = absl::DeadlineExceededError(absl::StrCat(ctx.Describe(), ": stream '", stream_name,
                                                     "' did not reach the call within ",
                                                     absl::FormatDuration(options_.timeout)));
      }
    }
    for (uint64_t fid : fids) rec->Start(fid);
    const auto start = std::chrono::steady_clock::now();
    if (s.ok() && options_.random_delay > absl::ZeroDuration()) {
      thread_local std::mt19937_64 rng(std::random_device{}());
      const int64_t max_ns = absl::ToInt64Nanoseconds(options_.random_delay);
      absl::SleepFor(
          absl::Nanoseconds(static_cast<int64_t>(rng() % static_cast<uint64_t>(max_ns))));
    }
    // The deadline starts when the op starts, not when it was queued.
    ctx.deadline = absl::Now() + options_.timeout;
    if (s.ok()) s = body(ctx);
    busy_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    for (uint64_t fid : fids) rec->Finish(fid, s);
    if (absl::IsDeadlineExceeded(s) || absl::IsAborted(s)) {
      // Leave a record for //tools:flight; a failure to write it must not
      // hide the op's own error.
      rec->DumpDefault(s.ToString()).IgnoreError();
    }
    if (s.ok()) {
      std::lock_guard<std::mutex> lock(stats_mu_);
      for (size_t i = 0; i < fps.size(); ++i) {
        CommStats::Op& o = stats_.ops[static_cast<int>(fps[i].op)];
        ++o.calls;
        o.bytes_sent += bytes[i].first;
        o.bytes_received += bytes[i].second;
      }
    }
    done->Complete(s);
    return s;
  });
  if (stream != nullptr && stream_waits) {
    // Later work on the stream waits for the op. On an InlineStream the host
    // blocks here (blocked_seconds); an asynchronous stream's blocked time is
    // counted apart (stream_blocked_seconds), exposed only if that stream is
    // the compute stream.
    if (absl::Status ws = w.WaitOn(*stream); !ws.ok()) return Failed(ws);
  }
  return w;
}

absl::Status Communicator::CheckDataBuffer(CommOp op, const char* what, const void* data,
                                           int64_t bytes) const {
  if (data_device_ && !moves_memory_of(*data_device_)) {
    return absl::FailedPreconditionError(absl::StrCat(
        CommOpName(op), " on group '", name_, "': the ", backend(), " backend cannot move ",
        data_device_->ToString(), " memory (its data device)"));
  }
  if (!data_device_ || bytes == 0 || accepts_null_buffers()) return absl::OkStatus();
  const DeviceAllocator* a = DeviceAllocator::For(*data_device_);
  if (a != nullptr && a->Contains(data, bytes)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      CommOpName(op), " on group '", name_, "' (a data communicator on ", data_device_->ToString(),
      "): the ", what, " buffer (", bytes, " bytes) is not ", data_device_->ToString(),
      " device memory; host values go through a control communicator"));
}

namespace {

absl::Status CheckView(const char* what, const Communicator& c, CommOp op, const void* data,
                       int64_t count) {
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat(CommOpName(op), " on group '", c.name(),
                                                   "': ", what, " count ", count, " is negative"));
  }
  if (count > 0 && data == nullptr && !c.accepts_null_buffers()) {
    return absl::InvalidArgumentError(absl::StrCat(CommOpName(op), " on group '", c.name(),
                                                   "': ", what, " has ", count,
                                                   " elements but a null pointer"));
  }
  return absl::OkStatus();
}

absl::Status CheckSameDType(const Communicator& c, CommOp op, DType a, DType b) {
  if (a == b) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(CommOpName(op), " on group '", c.name(),
                                                 "': send dtype ", DTypeName(a),
                                                 " differs from recv dtype ", DTypeName(b)));
}

absl::Status CheckReduce(const Communicator& c, CommOp op, DType dtype, ReduceOp r) {
  if (dtype == DType::kU8) {
    return absl::InvalidArgumentError(
        absl::StrCat(CommOpName(op), " on group '", c.name(), "': u8 cannot be reduced"));
  }
  if (!IsFloat(dtype) && r == ReduceOp::kAvg) {
    return absl::InvalidArgumentError(absl::StrCat(CommOpName(op), " on group '", c.name(),
                                                   "': avg needs a float dtype, got ",
                                                   DTypeName(dtype)));
  }
  return absl::OkStatus();
}

absl::Status CheckPeer(const Communicator& c, CommOp op, int peer, const char* what) {
  if (peer < 0 || peer >= c.size()) {
    return absl::InvalidArgumentError(absl::StrCat(CommOpName(op), " on group '", c.name(),
                                                   "': ", what, " ", peer,
                                                   " is not a rank of a group of size ", c.size()));
  }
  return absl::OkStatus();
}

}  // namespace

Work Communicator::AllGatherAsync(ConstView send, MutView recv, Stream* stream) {
  const CommOp op = CommOp::kAllGather;
  absl::Status s = CheckView("send", *this, op, send.data, send.count);
  if (s.ok()) s = CheckView("recv", *this, op, recv.data, recv.count);
  if (s.ok()) s = CheckSameDType(*this, op, send.dtype, recv.dtype);
  if (s.ok() && recv.count != send.count * size_) {
    s = absl::InvalidArgumentError(
        absl::StrCat("AllGather on group '", name_, "': recv count ", recv.count, " must be size (",
                     size_, ") x send count (", send.count, ") = ", send.count * size_));
  }
  if (s.ok()) s = CheckDataBuffer(op, "send", send.data, send.bytes());
  if (s.ok()) s = CheckDataBuffer(op, "recv", recv.data, recv.bytes());
  if (!s.ok()) return Failed(s, stream);
  const int64_t moved = (size_ - 1) * send.bytes();
  return Issue(
      {op, send.dtype, ReduceOp::kSum, send.count, -1, 0}, moved, moved,
      [this, send, recv](const OpContext& ctx) { return DoAllGather(ctx, send, recv); }, stream);
}

Work Communicator::ReduceScatterAsync(ConstView send, MutView recv, ReduceOp rop, Stream* stream) {
  const CommOp op = CommOp::kReduceScatter;
  absl::Status s = CheckView("send", *this, op, send.data, send.count);
  if (s.ok()) s = CheckView("recv", *this, op, recv.data, recv.count);
  if (s.ok()) s = CheckSameDType(*this, op, send.dtype, recv.dtype);
  if (s.ok()) s = CheckReduce(*this, op, send.dtype, rop);
  if (s.ok() && rop == ReduceOp::kMax) {
    s = absl::InvalidArgumentError(
        absl::StrCat("ReduceScatter on group '", name_, "': op must be sum or avg, got max"));
  }
  if (s.ok() && send.count != recv.count * size_) {
    s = absl::InvalidArgumentError(absl::StrCat(
        "ReduceScatter on group '", name_, "': send count ", send.count, " must be size (", size_,
        ") x recv count (", recv.count, ") = ", recv.count * size_));
  }
  if (s.ok()) s = CheckDataBuffer(op, "send", send.data, send.bytes());
  if (s.ok()) s = CheckDataBuffer(op, "recv", recv.data, recv.bytes());
  if (!s.ok()) return Failed(s, stream);
  const int64_t moved = (size_ - 1) * recv.bytes();
  return Issue(
      {op, send.dtype, rop, send.count, -1, 0}, moved, moved,
      [this, send, recv, rop](const OpContext& ctx) {
        return DoReduceScatter(ctx, send, recv, rop);
      },
      stream);
}

Work Communicator::AllReduceAsync(ConstView send, MutView recv, ReduceOp rop, Stream* stream) {
  const CommOp op = CommOp::kAllReduce;
  absl::Status s = CheckView("send", *this, op, send.data, send.count);
  if (s.ok()) s = CheckView("recv", *this, op, recv.data, recv.count);
  if (s.ok()) s = CheckSameDType(*this, op, send.dtype, recv.dtype);
  if (s.ok()) s = CheckReduce(*this, op, send.dtype, rop);
  if (s.ok() && send.count != recv.count) {
    s = absl::InvalidArgumentError(absl::StrCat("AllReduce on group '", name_, "': send count ",
                                                send.count, " differs from recv count ",
                                                recv.count));
  }
  if (s.ok()) s = CheckDataBuffer(op, "send", send.data, send.bytes());
  if (s.ok()) s = CheckDataBuffer(op, "recv", recv.data, recv.bytes());
  if (!s.ok()) return Failed(s, stream);
  const int64_t moved =
      2 * (send.count - RingSegment(send.count, size_, rank_)) * DTypeSize(send.dtype);
  return Issue(
      {op, send.dtype, rop, send.count, -1, 0}, moved, moved,
      [this, send, recv, rop](const OpContext& ctx) { return DoAllReduce(ctx, send, recv, rop); },
      stream);
}

Work Communicator::BroadcastAsync(MutView buf, int root, Stream* stream) {
  const CommOp op = CommOp::kBroadcast;
  absl::Status s = CheckView("buffer", *this, op, buf.data, buf.count);
  if (s.ok()) s = CheckPeer(*this, op, root, "root");
  if (s.ok()) s = CheckDataBuffer(op, "broadcast", buf.data, buf.bytes());
  if (!s.ok()) return Failed(s, stream);
  // Chain root -> root+1 -> ... : every rank but the last forwards the buffer.
  const bool last = (rank_ - root + size_) % size_ == size_ - 1;
  const int64_t sent = (size_ > 1 && !last) ? buf.bytes() : 0;
  const int64_t received = rank_ != root ? buf.bytes() : 0;
  return Issue(
      {op, buf.dtype, ReduceOp::kSum, buf.count, root, 0}, sent, received,
      [this, buf, root](const OpContext& ctx) { return DoBroadcast(ctx, buf, root); }, stream);
}

absl::Status Communicator::CheckP2P(const P2POp& p) const {
  const CommOp op = p.kind == P2POp::Kind::kSend ? CommOp::kSend : CommOp::kRecv;
  absl::Status s = CheckView("buffer", *this, op, p.buf.data, p.buf.count);
  if (s.ok()) s = CheckPeer(*this, op, p.peer, "peer");
  if (s.ok() && p.peer == rank_) {
    s = absl::InvalidArgumentError(
        absl::StrCat(CommOpName(op), " on group '", name_, "': rank ", rank_, " cannot ",
                     op == CommOp::kSend ? "send to" : "receive from", " itself"));
  }
  if (s.ok()) s = CheckDataBuffer(op, "message", p.buf.data, p.buf.bytes());
  return s;
}

Work Communicator::SendAsync(ConstView buf, int peer, Stream* stream) {
  const P2POp p = P2POp::Send(buf, peer);
  if (absl::Status s = CheckP2P(p); !s.ok()) return Failed(s, stream);
  return Issue(
      {CommOp::kSend, buf.dtype, ReduceOp::kSum, buf.count, peer, 0}, buf.bytes(), 0,
      [this, buf, peer](const OpContext& ctx) { return DoSend(ctx, buf, peer); }, stream);
}

Work Communicator::RecvAsync(MutView buf, int peer, Stream* stream) {
  const P2POp p = P2POp::Recv(buf, peer);
  if (absl::Status s = CheckP2P(p); !s.ok()) return Failed(s, stream);
  return Issue(
      {CommOp::kRecv, buf.dtype, ReduceOp::kSum, buf.count, peer, 0}, 0, buf.bytes(),
      [this, buf, peer](const OpContext& ctx) { return DoRecv(ctx, buf, peer); }, stream);
}

Work Communicator::P2PGroupAsync(std::vector<P2POp> ops, Stream* stream, bool stream_waits) {
  if (ops.empty()) {
    Work w;
    w.what_ = "empty P2P group";
    return w;  // never reset: complete
  }
  std::vector<Fingerprint> fps;
  std::vector<std::pair<int64_t, int64_t>> bytes;
  for (const P2POp& p : ops) {
    if (absl::Status s = CheckP2P(p); !s.ok()) return Failed(s, stream);
    const bool send = p.kind == P2POp::Kind::kSend;
    fps.push_back({send ? CommOp::kSend : CommOp::kRecv, p.buf.dtype, ReduceOp::kSum, p.buf.count,
                   p.peer, 0});
    bytes.push_back({send ? p.buf.bytes() : 0, send ? 0 : p.buf.bytes()});
  }
  return IssueGroup(
      std::move(fps), std::move(bytes),
      [this, ops = std::move(ops)](const OpContext& ctx) { return DoP2PGroup(ctx, ops); }, stream,
      stream_waits);
}

Work Communicator::BarrierAsync() {
  return Issue(
      {CommOp::kBarrier, DType::kU8, ReduceOp::kSum, 0, -1, 0}, 0, 0,
      [this](const OpContext& ctx) { return DoBarrier(ctx); }, nullptr);
}

absl::Status Communicator::AllGather(ConstView send, MutView recv) {
  return AllGatherAsync(send, recv).Wait();
}
absl::Status Communicator::ReduceScatter(ConstView send, MutView recv, ReduceOp op) {
  return ReduceScatterAsync(send, recv, op).Wait();
}
absl::Status Communicator::AllReduce(ConstView send, MutView recv, ReduceOp op) {
  return AllReduceAsync(send, recv, op).Wait();
}
absl::Status Communicator::Broadcast(MutView buf, int root) {
  return BroadcastAsync(buf, root).Wait();
}
absl::Status Communicator::Send(ConstView buf, int peer) { return SendAsync(buf, peer).Wait(); }
absl::Status Communicator::Recv(MutView buf, int peer) { return RecvAsync(buf, peer).Wait(); }
absl::Status Communicator::P2PGroup(std::vector<P2POp> ops) {
  return P2PGroupAsync(std::move(ops)).Wait();
}
absl::Status Communicator::Barrier() { return BarrierAsync().Wait(); }

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(int color, int key,
                                                                  const std::string& name) {
  auto result = std::make_shared<std::unique_ptr<Communicator>>();
  Work w = Issue(
      {CommOp::kSplit, DType::kI32, ReduceOp::kSum, 2, -1, 0}, 0, 0,
      [this, color, key, name, result](const OpContext& ctx) {
        auto c = DoSplit(ctx, color, key, name);
        if (!c.ok()) return c.status();
        if (*c != nullptr) {  // one recorder per rank, for every group
          (*c)->recorder_ = recorder_;
          (*c)->group_id_ = absl::StrCat(group_id_, "/", name, "#", color);
          (*c)->data_device_ = data_device_;
        }
        *result = std::move(*c);
        return absl::OkStatus();
      },
      nullptr);
  absl::Status s = w.Wait();
  if (!s.ok()) return s;
  return std::move(*result);
}

std::array<int64_t, kFingerprintWords> FingerprintWords(const Fingerprint& f) {
  std::array<int64_t, kFingerprintWords> w{static_cast<int64_t>(f.op),
                                           static_cast<int64_t>(f.dtype),
                                           static_cast<int64_t>(f.reduce),
                                           f.count,
                                           f.root,
                                           static_cast<int64_t>(f.seq)};
  std::memcpy(&w[6], f.scope.data(), sizeof(f.scope));
  return w;
}

absl::Status CompareFingerprintWords(const std::string& group, uint64_t seq,
                                     const std::vector<int64_t>& all, int size) {
  constexpr int kWords = kFingerprintWords;
  bool same = true;
  for (int j = 1; j < size; ++j) {
    same = same && std::memcmp(&all[0], &all[kWords * j], kWords * sizeof(int64_t)) == 0;
  }
  if (same) return absl::OkStatus();
  std::vector<std::string> calls;
  for (int j = 0; j < size; ++j) {
    Fingerprint g;
    g.op = static_cast<CommOp>(all[kWords * j]);
    g.dtype = static_cast<DType>(all[kWords * j + 1]);
    g.reduce = static_cast<ReduceOp>(all[kWords * j + 2]);
    g.count = all[kWords * j + 3];
    g.root = all[kWords * j + 4];
    g.seq = static_cast<uint64_t>(all[kWords * j + 5]);
    std::memcpy(g.scope.data(), &all[kWords * j + 6], sizeof(g.scope));
    g.scope.back() = '\0';
    calls.push_back(absl::StrCat("rank ", j, ": ", g.ToString()));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("desync on group '", group, "' at seq ", seq,
                   " (ranks called different collectives): ", absl::StrJoin(calls, "; ")));
}

absl::StatusOr<std::vector<std::string>> AllGatherStrings(Communicator& c,
                                                          const std::string& mine) {
  const int n = c.size();
  std::vector<int64_t> len{static_cast<int64_t>(mine.size())}, lens(n);
  absl::Status s = c.AllGather(ViewOf(len), ViewOf(lens));
  if (!s.ok()) return s;
  const int64_t width = *std::max_element(lens.begin(), lens.end());
  std::vector<uint8_t> send(width, 0), recv(width * n);
  std::copy(mine.begin(), mine.end(), send.begin());
  s = c.AllGather(ViewOf(send), ViewOf(recv));
  if (!s.ok()) return s;
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r) {
    out[r].assign(reinterpret_cast<const char*>(recv.data()) + r * width, lens[r]);
  }
  return out;
}

absl::Status AgreeOnStatus(Communicator& world, const absl::Status& local) {
  constexpr int kAgreedStatusBytes = 1024;
  std::vector<uint8_t> mine(kAgreedStatusBytes, 0),
      all(static_cast<size_t>(kAgreedStatusBytes) * world.size());
  if (!local.ok()) {
    mine[0] = 1;
    mine[1] = static_cast<uint8_t>(local.code());
    const std::string msg(local.message().substr(0, kAgreedStatusBytes - 3));
    std::copy(msg.begin(), msg.end(), mine.begin() + 2);
  }
  RETURN_IF_ERROR(world.AllGather(ViewOf(mine), ViewOf(all)));
  for (int r = 0; r < world.size(); ++r) {
    const uint8_t* p = all.data() + static_cast<size_t>(r) * kAgreedStatusBytes;
    if (p[0] == 0) continue;
    if (r == world.rank()) return local;
    return absl::Status(static_cast<absl::StatusCode>(p[1]),
                        absl::StrCat("rank ", r, ": ", reinterpret_cast<const char*>(p + 2)));
  }
  return absl::OkStatus();
}

absl::Status Communicator::DumpFlightRecord(const std::string& reason) const {
  return recorder_->DumpDefault(reason);
}

CommStats Communicator::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  CommStats s = stats_;
  s.blocked_seconds = static_cast<double>(blocked_ns_->load()) * 1e-9;
  s.busy_seconds = static_cast<double>(busy_ns_.load()) * 1e-9;
  s.stream_blocked_seconds = static_cast<double>(stream_blocked_ns_->load()) * 1e-9;
  return s;
}

CommStats Communicator::issued_stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return issued_;
}

void Communicator::ResetStats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_ = CommStats();
  *blocked_ns_ = 0;
  *stream_blocked_ns_ = 0;
  busy_ns_ = 0;
  issued_ = CommStats();
}

}  // namespace trireme
