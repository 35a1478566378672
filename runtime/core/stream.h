// Streams and events: ordered queues of device work, and markers in them.
//
// On CUDA a stream is a cudaStream_t and an event a cudaEvent_t (cuda_stream.h,
// --config=cuda). On CPU a stream is a worker thread running a FIFO of tasks, so
// communication overlaps compute on CPU too, with the same event semantics:
//   Record(e)  e completes when everything enqueued before it has run;
//   Wait(e)    work enqueued after this call starts only after e completes;
//   Query()    true once complete (never blocks);
//   Synchronize() blocks the calling host thread until complete.
#ifndef TRIREME_RUNTIME_CORE_STREAM_H_
#define TRIREME_RUNTIME_CORE_STREAM_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

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

class Stream {
 public:
  virtual ~Stream() = default;
  virtual std::unique_ptr<Event> NewEvent() = 0;
  // Non-blocking. `event` must come from this stream kind's NewEvent().
  virtual absl::Status Record(Event* event) = 0;
  // Non-blocking: later work on this stream waits for `event`.
  virtual absl::Status Wait(const Event& event) = 0;
  // Blocks the host until all enqueued work has run; returns the stream's first
  // error since the last Synchronize.
  virtual absl::Status Synchronize() = 0;
};

// A stream backed by one worker thread. Tasks run in FIFO order, one at a time.
// Thread-safe: any thread may enqueue. The destructor finishes queued work.
class CpuStream final : public Stream {
 public:
  using Task = std::function<absl::Status()>;

  explicit CpuStream(std::string name);
  ~CpuStream() override;

  // Non-blocking. A task's error becomes the stream's sticky error (reported by
  // Synchronize and by events recorded after it); later tasks still run.
  void Enqueue(Task task);

  std::unique_ptr<Event> NewEvent() override;
  absl::Status Record(Event* event) override;
  absl::Status Wait(const Event& event) override;
  absl::Status Synchronize() override;

  const std::string& name() const { return name_; }

 private:
  void Loop();

  const std::string name_;
  absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread worker_;
};

// A host-side completion flag with a status: CpuStream's event, and the state
// behind asynchronous communication handles. Thread-safe.
class CpuEvent final : public Event {
 public:
  CpuEvent();
  bool Query() const override;
  absl::Status Synchronize(absl::Duration timeout) override;
  using Event::Synchronize;

  // Marks pending (called when recorded) / complete with `status`.
  void Reset();
  void Complete(absl::Status status);

 private:
  friend class CpuStream;

  // Reset() for CpuStream::Record: returns the recording's generation, so that
  // only the marker of the latest recording completes the event.
  uint64_t ResetForRecord();
  // Complete(status) if no later Reset() happened since recording `generation`.
  void CompleteRecording(uint64_t generation, absl::Status status);

  struct State {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = true;
    absl::Status status ABSL_GUARDED_BY(mu);
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;  // bumped by every Reset()
  };
  std::shared_ptr<State> state_;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_STREAM_H_
