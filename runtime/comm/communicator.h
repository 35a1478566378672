// Communicators: collectives and point-to-point transfers among the ranks of a
// group. One interface, three backends: threads (N ranks in one process), mpi
// (processes under mpirun), nccl (GPUs, --config=cuda).
//
// Ordering and threads. Every rank must issue the group's collectives in the
// same order. Calls are issued from one host thread per rank (the rank's
// thread); each call is given the next sequence number and queued on the
// communicator's own worker (a CpuStream), which runs the backend operation.
// So asynchronous operations overlap the caller's compute, several may be in
// flight, and they complete in issue order.
//
// Stream order (NCCL's semantics). Every operation may name a `stream`: it
// then starts only when that stream reaches the call (after all the work
// enqueued on it before), and later work on the stream waits for it to
// finish; the host does not block (on an InlineStream -- the cpu device --
// it does, as every call there completes in order). Without a stream the op
// starts as soon as the worker gets to it. Errors of stream-ordered ops --
// including a call rejected by validation, which queues nothing -- become
// the stream's sticky error as well as the Work's status (host streams; a
// CUDA stream cannot hold a host error: there only the Work reports it).
//
// Buffers. Views carry pointer, element count and dtype; the pointer may be
// null when the count is 0. A buffer passed to an asynchronous call must stay
// alive and untouched until its Work handle's Wait returns (or, stream-
// ordered, until the stream has passed the call). Data and control: a
// communicator marked as a data communicator (SetDataDevice) takes only
// memory of its device's allocator -- tensors -- and rejects anything else
// (host values go through a control communicator over the same ranks). On
// nccl buffers are device memory of the rank's GPU.
//
// Point-to-point. Send and Recv alone may block until the peer posts the
// matching call (rendezvous: NCCL's semantics, and the threads backend's
// CommOptions::p2p_rendezvous). Exchanges that cross (each rank sends to a
// rank that sends to it) must be posted together in one P2PGroup, whose
// sends and receives progress concurrently.
//
// Reductions of bf16/f16 accumulate in f32 and round once at the end (threads,
// mpi). Integer types support sum and max.
//
// Errors. Lengths that do not fit an op's contract are InvalidArgument naming
// the lengths (nothing is queued). Every wait has a timeout (CommOptions); on
// expiry the op returns DeadlineExceeded naming op, group, sequence number,
// timeout and, where the backend can know it, the ranks that did not arrive.
#ifndef TRIREME_RUNTIME_COMM_COMMUNICATOR_H_
#define TRIREME_RUNTIME_COMM_COMMUNICATOR_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/comm/reduce_body.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/stream.h"
#include "runtime/core/view.h"

namespace trireme {

// ReduceOp (kSum, kAvg, kMax) is in reduce_body.h with its arithmetic.
const char* ReduceOpName(ReduceOp op);

enum class CommOp : uint8_t {
  kAllGather = 0,
  kReduceScatter,
  kAllReduce,
  kBroadcast,
  kSend,
  kRecv,
  kBarrier,
  kSplit,
};
inline constexpr int kNumCommOps = 8;
const char* CommOpName(CommOp op);

// One operation of a point-to-point group: a send of `buf` to `peer` or a
// receive into `buf` from `peer` (a rank of the group, not this one).
struct P2POp {
  enum class Kind : uint8_t { kSend, kRecv };
  Kind kind = Kind::kSend;
  MutView buf;  // read only, for a send
  int peer = -1;
  static P2POp Send(ConstView b, int peer) {
    return {Kind::kSend, {const_cast<void*>(b.data), b.count, b.dtype}, peer};
  }
  static P2POp Recv(MutView b, int peer) { return {Kind::kRecv, b, peer}; }
};

struct CommOptions {
  // Limit on every wait inside an operation. Generous by default: a real job
  // may sit in a collective while a slow rank computes.
  absl::Duration timeout = absl::Seconds(600);
  // Compare (op, dtype, count, root/peer, reduce op, sequence) across ranks
  // before moving data; a mismatch is an error on every rank listing each
  // rank's call and its CommScope (the unit or layer). The threads backend
  // always compares the call (it costs nothing there); mpi does when this is
  // set (one extra small all-gather per op). This debug mode also compares
  // the CommScope labels, so ranks gathering different units of equal size,
  // or running different layers, are caught too.
  bool check_desync = false;
  // Testing determinism: every op first sleeps a random time in [0, this)
  // on the communicator's worker (zero: off).
  absl::Duration random_delay = absl::ZeroDuration();
  // Threads backend: point-to-point sends complete only when the receiver
  // has taken the message (NCCL's rendezvous semantics) instead of eagerly.
  // A schedule that is not rendezvous-safe then deadlocks -- and times out.
  bool p2p_rendezvous = false;
  // Entries in each rank's flight-recorder ring (its last operations over
  // all its groups; 0: none kept).
  int64_t flight_recorder_entries = 512;
};

// Defaults overridden by the environment: TRIREME_COMM_TIMEOUT_S (seconds,
// may be fractional), TRIREME_DESYNC_CHECK (1/true/0/false),
// TRIREME_COMM_RANDOM_DELAY_US (microseconds), TRIREME_P2P_RENDEZVOUS
// (1/true/0/false) and TRIREME_FLIGHT_RECORDER (entries). The one place the
// communicators' knobs are read; an invalid value is an
// InvalidArgument naming the variable and its text.
absl::StatusOr<CommOptions> CommOptionsFromEnv(CommOptions base = {});

// What one call looks like on one rank; compared across ranks for desyncs.
struct Fingerprint {
  CommOp op = CommOp::kBarrier;
  DType dtype = DType::kF32;
  ReduceOp reduce = ReduceOp::kSum;
  int64_t count = 0;  // elements sent by this rank (recv count for kRecv)
  int64_t root = -1;  // root (broadcast) or peer (send/recv); -1 otherwise
  uint64_t seq = 0;
  // What the caller was doing (CommScope at issue time, innermost last),
  // NUL-terminated; not compared -- it names the unit or layer in reports.
  std::array<char, 96> scope{};
  bool operator==(const Fingerprint& o) const {
    return op == o.op && dtype == o.dtype && reduce == o.reduce && count == o.count &&
           root == o.root && seq == o.seq;
  }
  // "AllReduce(f32, count 8, sum) seq 3 [zero: gather unit 'block2']"
  std::string ToString() const;
};

// The desync check's view of a call as int64 words (op, dtype, reduce, count,
// root, seq, then the scope's bytes), for backends that all-gather them.
inline constexpr int kFingerprintWords = 6 + sizeof(Fingerprint::scope) / sizeof(int64_t);
std::array<int64_t, kFingerprintWords> FingerprintWords(const Fingerprint& f);
// OK if every rank's words in `all` (`size` x kFingerprintWords, rank order)
// are the same, scopes included (the debug mode); else FailedPrecondition
// on group `group` at `seq`, listing every rank's call.
absl::Status CompareFingerprintWords(const std::string& group, uint64_t seq,
                                     const std::vector<int64_t>& all, int size);

// Labels the communicator calls this thread issues while it lives (nested
// scopes join with " > "): desync reports, timeouts and flight-recorder
// dumps then name the unit or layer involved.
//   CommScope scope(absl::StrCat("zero: gather unit '", name, "'"));
class CommScope {
 public:
  explicit CommScope(const std::string& label);
  ~CommScope();
  CommScope(const CommScope&) = delete;
  CommScope& operator=(const CommScope&) = delete;
  // The current label of this thread ("" outside any scope).
  static const std::string& Current();

 private:
  size_t prev_size_;
};

// Per-operation accounting of one communicator on one rank. Bytes are what
// this rank sends and receives under the ring algorithms that define
// bus bandwidth (nccl-tests): all-gather and reduce-scatter move (n-1) chunks
// each way; all-reduce moves 2 x (count - own ring chunk); broadcast is a
// chain (every rank but the last sends the buffer, every non-root receives it);
// send/recv move their buffer.
struct CommStats {
  struct Op {
    int64_t calls = 0;
    int64_t bytes_sent = 0;
    int64_t bytes_received = 0;
  };
  std::array<Op, kNumCommOps> ops{};
  // Wall time the host spent blocked on this communicator's ops: in
  // Work::Wait (synchronous calls included) and in stream-ordered ops on an
  // InlineStream (the cpu device): communication the caller could not hide.
  double blocked_seconds = 0;
  // Wall time asynchronous streams (cpu_async workers) spent blocked on this
  // communicator's stream-ordered ops: exposed communication when the
  // stream is the compute stream, hidden when it is a side stream.
  double stream_blocked_seconds = 0;
  // Wall time the communicator's worker spent inside operations (from the
  // start of an op -- its inputs ready -- to its end, waiting for peers
  // included): communication in flight, hidden or not.
  double busy_seconds = 0;
  const Op& operator[](CommOp op) const { return ops[static_cast<int>(op)]; }
  int64_t total_sent() const;
  int64_t total_received() const;
  std::string ToTable(const std::string& title) const;
};

class FlightRecorder;  // flight_recorder.h

// Handle of an asynchronous operation. Copyable; all copies share the state.
// Thread-safe.
class Work {
 public:
  Work();
  // Blocks the host until the op finishes (its status) or `timeout` passes
  // (DeadlineExceeded naming the op; the op itself keeps its own timeout).
  absl::Status Wait(absl::Duration timeout = absl::InfiniteDuration()) const;
  // Non-blocking: true once finished.
  bool Test() const;
  // Later work on `stream` waits for the op (its error becomes the stream's),
  // the time blocked counted as the communicator's: blocked_seconds on an
  // InlineStream (the host waits), stream_blocked_seconds on an
  // asynchronous stream. What a stream-ordered call does itself; for ops
  // issued with stream_waits = false.
  absl::Status WaitOn(Stream& stream) const;

 private:
  friend class Communicator;
  std::shared_ptr<CpuEvent> done_;
  std::string what_;
  // The communicator's counters (null for a call that failed validation).
  WaitCounter blocked_ns_, stream_blocked_ns_;
};

// A waiting loop's record of how long its process was not running: a gap
// between two of its polls far longer than it ever sleeps means the process
// was stopped (SIGSTOP, a debugger), descheduled or swapping. A timeout after
// such a gap was most likely this rank's own absence, not its peers': the
// backends add Note() to their DeadlineExceeded errors, so the rank's flight
// dump says so instead of blaming a peer.
class StallWatch {
 public:
  explicit StallWatch(absl::Duration tolerance = absl::Seconds(1))
      : tolerance_(tolerance), last_(absl::Now()) {}
  // At every poll of the loop.
  void Poll() {
    const absl::Time now = absl::Now();
    if (now - last_ > tolerance_) stalled_ += now - last_;
    last_ = now;
  }
  absl::Duration stalled() const { return stalled_; }
  // "" if the loop kept running; else "; this rank itself was not running
  // for 3.2s of the wait (...)".
  std::string Note() const;

 private:
  const absl::Duration tolerance_;
  absl::Time last_;
  absl::Duration stalled_;
};

class Communicator {
 public:
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // The group's name ("world", "dp", "tp", ...), used in every message.
  const std::string& name() const { return name_; }
  const CommOptions& options() const { return options_; }
  virtual const char* backend() const = 0;
  // True for backends whose buffers may be null (meta-device simulation).
  virtual bool accepts_null_buffers() const { return false; }
  // Whether this backend can move tensors in `device`'s memory (a data
  // communicator on it): host memory everywhere; GPU memory in the threads
  // backend (one process) and nccl; not in mpi, which is not CUDA-aware here.
  virtual bool moves_memory_of(const Device& device) const {
    return device.kind != DeviceKind::kCuda;
  }

  // Every ...Async call takes an optional `stream` (see "Stream order").
  // send: count elements; recv: size() * count, rank r's block at r * count.
  // In place is allowed (send == recv + rank() * count).
  Work AllGatherAsync(ConstView send, MutView recv, Stream* stream = nullptr);
  // send: size() * count; recv: count, the reduction of every rank's block
  // rank(). op: sum or avg. In place: recv == send + rank() * count.
  Work ReduceScatterAsync(ConstView send, MutView recv, ReduceOp op, Stream* stream = nullptr);
  // send and recv: the same count; recv may equal send.
  Work AllReduceAsync(ConstView send, MutView recv, ReduceOp op, Stream* stream = nullptr);
  // buf: count elements, sent from `root` and received by every other rank.
  Work BroadcastAsync(MutView buf, int root, Stream* stream = nullptr);
  // Point-to-point to/from `peer` (a rank of this group, not rank()). Messages
  // between a pair are matched in order; counts and dtypes must agree. May
  // block until the peer posts the matching call (see "Point-to-point").
  Work SendAsync(ConstView buf, int peer, Stream* stream = nullptr);
  Work RecvAsync(MutView buf, int peer, Stream* stream = nullptr);
  // Sends and receives posted together (ncclGroupStart/End, Megatron's
  // batch_isend_irecv): they progress concurrently and the Work completes
  // when all have; each is matched with its peer's calls in order as if
  // issued alone, in the order listed. Empty: completes at once. With a
  // stream and stream_waits = false the group still starts only when the
  // stream reaches the call, but the stream does not wait for it (a send
  // completing in the background; keep its buffer alive until the Work is
  // done).
  Work P2PGroupAsync(std::vector<P2POp> ops, Stream* stream = nullptr, bool stream_waits = true);
  Work BarrierAsync();

  // Blocking forms: the async call followed by Wait().
  absl::Status AllGather(ConstView send, MutView recv);
  absl::Status ReduceScatter(ConstView send, MutView recv, ReduceOp op);
  absl::Status AllReduce(ConstView send, MutView recv, ReduceOp op);
  absl::Status Broadcast(MutView buf, int root);
  absl::Status Send(ConstView buf, int peer);
  absl::Status Recv(MutView buf, int peer);
  absl::Status P2PGroup(std::vector<P2POp> ops);
  absl::Status Barrier();

  // Marks this as a data communicator on `device`: every later op's buffers
  // must be memory of that device's allocator (DeviceAllocator::Contains),
  // else InvalidArgument naming the buffer and the device (nothing queued).
  // Groups split from it inherit the mark. Call before any op.
  void SetDataDevice(Device device) { data_device_ = device; }
  const std::optional<Device>& data_device() const { return data_device_; }

  // Collective over this group: ranks with the same `color` form a new group,
  // ordered by (key, rank). A negative color joins no group and gets nullptr.
  // The new communicator is named `name`; it inherits the options. Blocking.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key, const std::string& name);

  // A copy of the accounting so far (completed operations).
  CommStats stats() const;
  // Calls and bytes of every operation issued so far, complete or not (an op
  // that later fails counts too); times are not filled.
  CommStats issued_stats() const;
  void ResetStats();

  // This group's identity in flight-recorder dumps: "world" for a root
  // communicator, "<parent>/<name>#<color>" for one made by Split (the same
  // string on every member, distinct between sibling groups).
  const std::string& group_id() const { return group_id_; }
  // Writes this rank's flight recorder (shared by every group it belongs to)
  // to FlightDumpPath(world rank); also done automatically when an operation
  // times out or is aborted. See flight_recorder.h.
  absl::Status DumpFlightRecord(const std::string& reason = "on request") const;

 protected:
  // `inline_ops`: each op runs on the issuing thread when issued (a backend
  // whose ops take no time and need no peer: the simulated one); otherwise
  // on the communicator's worker thread, in order.
  Communicator(int rank, int size, std::string name, CommOptions options, bool inline_ops = false);

  // What a backend operation knows about itself.
  struct OpContext {
    Fingerprint fp;  // the op's (a P2P group's first op)
    absl::Time deadline;
    const Communicator* comm;
    std::vector<Fingerprint> group;  // a P2P group: every op's, in order
    // "AllReduce (seq 3) on group 'dp' [threads]"
    std::string Describe() const;
  };

  // Backend primitives. Called on the worker thread, one at a time, in issue
  // order, with arguments already validated. Each must honour ctx.deadline.
  virtual absl::Status DoAllGather(const OpContext& ctx, ConstView send, MutView recv) = 0;
  virtual absl::Status DoReduceScatter(const OpContext& ctx, ConstView send, MutView recv,
                                       ReduceOp op) = 0;
  virtual absl::Status DoAllReduce(const OpContext& ctx, ConstView send, MutView recv,
                                   ReduceOp op) = 0;
  virtual absl::Status DoBroadcast(const OpContext& ctx, MutView buf, int root) = 0;
  virtual absl::Status DoSend(const OpContext& ctx, ConstView buf, int peer) = 0;
  virtual absl::Status DoRecv(const OpContext& ctx, MutView buf, int peer) = 0;
  // `ops`; ctx.group[i] is ops[i]'s fingerprint, with its per-peer sequence
  // number.
  virtual absl::Status DoP2PGroup(const OpContext& ctx, const std::vector<P2POp>& ops) = 0;
  virtual absl::Status DoBarrier(const OpContext& ctx) = 0;
  virtual absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext& ctx, int color,
                                                                int key,
                                                                const std::string& name) = 0;

  // Backends call this from their destructor so no queued op outlives them.
  void DrainWorker();

 private:
  using Body = std::function<absl::Status(const OpContext&)>;
  // Validates nothing; assigns the sequence number (p2p ops have per-peer
  // numbers), queues `body` (after `stream` reaches the call, if given; the
  // stream then waits for it) and accounts `sent`/`received` on success.
  Work Issue(Fingerprint fp, int64_t sent, int64_t received, Body body, Stream* stream);
  // Issue for several ops run by one body (a P2P group): bytes[i] = (sent,
  // received) of fps[i].
  Work IssueGroup(std::vector<Fingerprint> fps, std::vector<std::pair<int64_t, int64_t>> bytes,
                  Body body, Stream* stream, bool stream_waits = true);
  // A Work already failed with `status` (validation errors: nothing is
  // queued and no sequence number is used). If `stream` is given it waits on
  // it, so the error is also the stream's sticky error.
  Work Failed(absl::Status status, Stream* stream = nullptr);
  // Validation of one point-to-point op (peer, buffer, data device).
  absl::Status CheckP2P(const P2POp& p) const;
  // The data-device check of every buffer of an op (OK if not a data comm).
  absl::Status CheckDataBuffer(CommOp op, const char* what, const void* data, int64_t bytes) const;

  const int rank_;
  const int size_;
  const std::string name_;
  const CommOptions options_;
  uint64_t next_seq_ = 0;  // touched only by the issuing thread
  std::vector<uint64_t> next_send_seq_, next_recv_seq_;
  std::optional<Device> data_device_;
  mutable std::mutex stats_mu_;
  CommStats stats_ ABSL_GUARDED_BY(stats_mu_);
  CommStats issued_ ABSL_GUARDED_BY(stats_mu_);
  std::shared_ptr<std::atomic<int64_t>> blocked_ns_ = std::make_shared<std::atomic<int64_t>>(0);
  std::shared_ptr<std::atomic<int64_t>> stream_blocked_ns_ =
      std::make_shared<std::atomic<int64_t>>(0);
  std::atomic<int64_t> busy_ns_{0};
  std::shared_ptr<FlightRecorder> recorder_;
  std::string group_id_;
  std::unique_ptr<HostStreamBase> worker_;
};

// Every rank's `mine`, in rank order (lengths may differ): two all-gathers,
// of the lengths and of the texts padded to the longest, as host values (a
// control communicator). Collective.
absl::StatusOr<std::vector<std::string>> AllGatherStrings(Communicator& c, const std::string& mine);

// All ranks learn whether every rank's `local` is OK; if not, every rank
// returns the first failing rank's error (its own, or the code and the
// first 1021 bytes of the message prefixed with "rank R: "). One all-gather
// of host values (a control communicator). Collective.
absl::Status AgreeOnStatus(Communicator& world, const absl::Status& local);

// The balanced partition used for ring all-reduce accounting: segment i of
// a count split into n segments (the first count % n are one larger).
int64_t RingSegment(int64_t count, int n, int i);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_COMM_COMMUNICATOR_H_
