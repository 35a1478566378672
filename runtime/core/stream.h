// Streams and events: ordered queues of device work, and markers in them.
//
// The orchestration code (engine, model, pipeline) is written once against
// this interface and runs on every device:
//   cpu        InlineStream: a task runs on the calling thread when enqueued,
//              so the host never runs ahead (the bitwise reference).
//   cpu_async  CpuStream: a worker thread running a FIFO of tasks; the host
//              runs ahead exactly as with CUDA.
//   cuda       CudaStream over cudaStream_t / cudaEvent_t (cuda_stream.h,
//              --config=cuda).
//   meta       InlineStream (kernels skip their work: nothing is allocated).
// Semantics (CUDA's):
//   Record(e)  e completes when everything enqueued before it has run;
//   Wait(e)    work enqueued after this call starts only after e completes
//              (on an InlineStream: the host blocks until it does);
//   Query()    true once complete (never blocks);
//   Synchronize() blocks the calling host thread until complete.
// Errors: a task's error becomes the stream's sticky error, reported by
// Synchronize() (which clears it) and by events recorded after it.
#ifndef TRIREME_RUNTIME_CORE_STREAM_H_
#define TRIREME_RUNTIME_CORE_STREAM_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/core/device.h"

namespace trireme {

class Event {
 public:
  virtual ~Event() = default;
  // True once the work before the recording point has run. Never blocks.
  // An event that was never recorded counts as complete.
  virtual bool Query() const = 0;
  // Blocks the host until complete or `timeout` passes (DeadlineExceeded).
  // Returns the first error of the work before the recording point, if any.
  virtual absl::Status Synchronize(absl::Duration timeout) = 0;
  absl::Status Synchronize() { return Synchronize(absl::InfiniteDuration()); }
};

// Nanoseconds a stream spent blocked in Wait() on a family of events (e.g.
// the DP communicator's), shared by whoever reads it. Thread-safe.
using WaitCounter = std::shared_ptr<std::atomic<int64_t>>;

// What a host stream's tasks took (CUDA streams report zeros).
struct StreamStats {
  int64_t tasks = 0;
  double busy_s = 0;     // running tasks, waits excluded
  double blocked_s = 0;  // blocked in Wait() on events not yet complete
};

class HostStream;

class Stream {
 public:
  Stream();
  virtual ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  // True while a stream object lives at `s` (the allocator asks before it
  // orders a free after a buffer's stream, which may have gone first).
  static bool Alive(const Stream* s);
  virtual Device device() const = 0;
  virtual const std::string& name() const = 0;
  virtual std::unique_ptr<Event> NewEvent() = 0;
  // Non-blocking. `event` must come from this stream kind's NewEvent().
  virtual absl::Status Record(Event* event) = 0;
  // Non-blocking on asynchronous streams: later work on this stream waits for
  // `event` (of any kind the stream can wait on). The time the stream spends
  // blocked on it is added to `blocked`, if given (host streams only).
  virtual absl::Status Wait(const Event& event, WaitCounter blocked = nullptr) = 0;
  // Blocks the host until all enqueued work has run; returns the stream's first
  // error since the last Synchronize.
  virtual absl::Status Synchronize() = 0;
  // The task interface of host-executed streams (cpu, cpu_async, meta);
  // nullptr for CUDA streams.
  virtual HostStream* host() { return nullptr; }
  virtual StreamStats stats() const { return {}; }
};

// A stream whose work is host tasks. Thread-safe: any thread may enqueue.
class HostStream : public Stream {
 public:
  using Task = std::function<absl::Status()>;
  // Runs `task` after everything enqueued before it. Non-blocking on a
  // CpuStream; runs it at once on an InlineStream.
  virtual void Enqueue(Task task) = 0;
  HostStream* host() override { return this; }
};

// A host-side completion flag with a status: the event of host streams, and
// the state behind asynchronous communication handles. Copies share the
// state. Thread-safe. As with CUDA events, each recording is a marker of its
// own: Query/Synchronize and a stream's Wait refer to the recording that was
// the latest when they were called, and a later recording changes nothing
// for them.
class CpuEvent final : public Event {
 public:
  CpuEvent();
  bool Query() const override;
  absl::Status Synchronize(absl::Duration timeout) override;
  using Event::Synchronize;

  // Marks pending (a new recording) / the latest recording complete with
  // `status`.
  void Reset();
  void Complete(absl::Status status);
  // An event fixed to the latest recording (what a stream's Wait holds on
  // to): recordings of this event after the call do not affect it.
  CpuEvent Snapshot() const;

 private:
  friend class HostStreamBase;

  struct Marker {
    mutable std::mutex mu;
    std::condition_variable cv;
    bool done ABSL_GUARDED_BY(mu) = true;
    absl::Status status ABSL_GUARDED_BY(mu);
    void Complete(absl::Status s);
  };
  struct State {
    mutable std::mutex mu;
    std::shared_ptr<Marker> current ABSL_GUARDED_BY(mu) = std::make_shared<Marker>();
  };
  std::shared_ptr<Marker> Current() const;
  // Reset() for a recording: the new pending marker, which the stream
  // completes when its work before the recording point has run.
  std::shared_ptr<Marker> ResetForRecord();

  std::shared_ptr<State> state_;
};

// What the host streams share: name and device, CpuEvents recorded by a
// marker task and waited for by a wait task, the sticky error, and task
// accounting. The two kinds differ only in when a task runs (Enqueue) and in
// Synchronize.
class HostStreamBase : public HostStream {
 public:
  Device device() const override { return device_; }
  const std::string& name() const override { return name_; }
  std::unique_ptr<Event> NewEvent() override;
  absl::Status Record(Event* event) override;
  absl::Status Wait(const Event& event, WaitCounter blocked = nullptr) override;
  StreamStats stats() const override;

 protected:
  HostStreamBase(std::string name, Device device);
  // Runs `task`, timing it as busy, and keeps its error as the sticky one.
  void RunTask(const Task& task);
  // Returns the sticky error and clears it.
  absl::Status TakeError();

  const std::string name_;
  const Device device_;
  std::mutex mu_;

 private:
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> tasks_{0}, busy_ns_{0};
  std::shared_ptr<std::atomic<int64_t>> blocked_ns_ = std::make_shared<std::atomic<int64_t>>(0);
};

// A stream backed by one worker thread (the cpu_async device). Tasks run in
// FIFO order, one at a time. The destructor finishes queued work.
class CpuStream final : public HostStreamBase {
 public:
  explicit CpuStream(std::string name, Device device = Device::CpuAsync());
  ~CpuStream() override;

  void Enqueue(Task task) override;
  absl::Status Synchronize() override;

 private:
  void Loop();

  std::condition_variable cv_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread worker_;
};

// A stream that runs each task on the calling thread when it is enqueued (the
// cpu and meta devices): Wait() blocks the host until the event completes,
// and every event is complete as soon as it is recorded.
class InlineStream final : public HostStreamBase {
 public:
  explicit InlineStream(std::string name, Device device = Device::Cpu());

  void Enqueue(Task task) override { RunTask(task); }
  absl::Status Synchronize() override { return TakeError(); }
};

// A new stream on `device`: InlineStream for cpu and meta, CpuStream for
// cpu_async, CudaStream for cuda (Unavailable in a build without CUDA).
absl::StatusOr<std::unique_ptr<Stream>> NewStream(Device device, std::string name);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_STREAM_H_
