#include "runtime/core/stream.h"

#include <chrono>
#include <mutex>
#include <new>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/core/internal/cuda_stream_factory.h"

namespace trireme {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Nanoseconds the current thread has spent in wait tasks: a task runs on one
// thread, so the difference around it is its own waiting (an InlineStream
// runs tasks of several threads at once).
thread_local int64_t tls_blocked_ns = 0;

std::mutex& LiveMutex() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::set<const Stream*>& LiveStreams() {
  static auto* live = new std::set<const Stream*>();
  return *live;
}

}  // namespace

Stream::Stream() {
  std::lock_guard<std::mutex> lock(LiveMutex());
  LiveStreams().insert(this);
}

Stream::~Stream() {
  std::lock_guard<std::mutex> lock(LiveMutex());
  LiveStreams().erase(this);
}

bool Stream::Alive(const Stream* s) {
  std::lock_guard<std::mutex> lock(LiveMutex());
  return LiveStreams().count(s) > 0;
}

CpuEvent::CpuEvent() : state_(std::make_shared<State>()) {}

std::shared_ptr<CpuEvent::Marker> CpuEvent::Current() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->current;
}

bool CpuEvent::Query() const {
  std::shared_ptr<Marker> m = Current();
  std::lock_guard<std::mutex> lock(m->mu);
  return m->done;
}

absl::Status CpuEvent::Synchronize(absl::Duration timeout) {
  std::shared_ptr<Marker> m = Current();
  std::unique_lock<std::mutex> lock(m->mu);
  auto done = [&m]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return m->done; };
  if (timeout == absl::InfiniteDuration()) {
    m->cv.wait(lock, done);
  } else if (!m->cv.wait_for(lock, absl::ToChronoNanoseconds(timeout), done)) {
    return absl::DeadlineExceededError(
        absl::StrCat("event not complete after ", absl::FormatDuration(timeout)));
  }
  return m->status;
}

void CpuEvent::Reset() { ResetForRecord(); }

std::shared_ptr<CpuEvent::Marker> CpuEvent::ResetForRecord() {
  auto m = std::make_shared<Marker>();
  {
    std::lock_guard<std::mutex> lock(m->mu);
    m->done = false;
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->current = m;
  return m;
}

void CpuEvent::Marker::Complete(absl::Status s) {
  {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s);
    done = true;
  }
  cv.notify_all();
}

void CpuEvent::Complete(absl::Status status) { Current()->Complete(std::move(status)); }

CpuEvent CpuEvent::Snapshot() const {
  CpuEvent e;
  std::shared_ptr<Marker> m = Current();
  std::lock_guard<std::mutex> lock(e.state_->mu);
  e.state_->current = std::move(m);
  return e;
}

// ---- HostStreamBase ----------------------------------------------------------

namespace {

// The task that waits for `event` (kept alive by the task), timing it as
// blocked on the stream (`own_blocked`) and in `blocked`, if given.
HostStream::Task WaitTask(const Event& event, WaitCounter blocked,
                          std::shared_ptr<std::atomic<int64_t>> own_blocked) {
  // The task owns a snapshot of a CpuEvent (its latest recording now), so
  // the caller's event may be destroyed or recorded again meanwhile without
  // changing what this wait waits for. Other kinds (CUDA events) must
  // outlive the wait.
  std::function<absl::Status()> sync;
  if (auto* e = dynamic_cast<const CpuEvent*>(&event)) {
    sync = [copy = e->Snapshot()]() mutable { return copy.Synchronize(); };
  } else {
    Event* other = const_cast<Event*>(&event);
    sync = [other] { return other->Synchronize(); };
  }
  return [sync = std::move(sync), blocked = std::move(blocked), own = std::move(own_blocked)]() {
    const int64_t start = NowNs();
    absl::Status s = sync();
    const int64_t dt = NowNs() - start;
    tls_blocked_ns += dt;
    *own += dt;
    if (blocked != nullptr) *blocked += dt;
    return s;
  };
}

}  // namespace

HostStreamBase::HostStreamBase(std::string name, Device device)
    : name_(std::move(name)), device_(device) {}

StreamStats HostStreamBase::stats() const {
  StreamStats s;
  s.tasks = tasks_.load();
  s.busy_s = static_cast<double>(busy_ns_.load()) * 1e-9;
  s.blocked_s = static_cast<double>(blocked_ns_->load()) * 1e-9;
  return s;
}

void HostStreamBase::RunTask(const Task& task) {
  const int64_t start = NowNs();
  const int64_t blocked_before = tls_blocked_ns;
  // A task that throws (out of memory on this worker) is the stream's error,
  // not the end of the process.
  absl::Status s;
  try {
    s = task();
  } catch (const std::bad_alloc&) {
    s = absl::ResourceExhaustedError(absl::StrCat("stream '", name_, "': out of memory"));
  } catch (const std::exception& e) {
    s = absl::InternalError(absl::StrCat("stream '", name_, "': exception: ", e.what()));
  } catch (...) {
    s = absl::InternalError(absl::StrCat("stream '", name_, "': an unknown exception"));
  }
  // A wait task counts its own blocked time; the rest is busy.
  const int64_t blocked = tls_blocked_ns - blocked_before;
  busy_ns_ += NowNs() - start - blocked;
  ++tasks_;
  if (s.ok()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (error_.ok()) error_ = std::move(s);
}

absl::Status HostStreamBase::TakeError() {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = std::move(error_);
  error_ = absl::OkStatus();
  return s;
}

std::unique_ptr<Event> HostStreamBase::NewEvent() { return std::make_unique<CpuEvent>(); }

absl::Status HostStreamBase::Record(Event* event) {
  auto* e = dynamic_cast<CpuEvent*>(event);
  if (e == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream '", name_, "' can only record a CpuEvent"));
  }
  // A marker task completes the recording with the stream's sticky error once
  // everything before it has run (at once on an InlineStream). It holds this
  // recording's marker, so the Event object may be destroyed or recorded
  // again before it runs.
  std::shared_ptr<CpuEvent::Marker> marker = e->ResetForRecord();
  Enqueue([this, marker]() {
    absl::Status sticky;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sticky = error_;
    }
    marker->Complete(sticky);
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status HostStreamBase::Wait(const Event& event, WaitCounter blocked) {
  Enqueue(WaitTask(event, std::move(blocked), blocked_ns_));
  return absl::OkStatus();
}

// ---- CpuStream ---------------------------------------------------------------

CpuStream::CpuStream(std::string name, Device device) : HostStreamBase(std::move(name), device) {
  worker_ = std::thread([this] { Loop(); });
}

CpuStream::~CpuStream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void CpuStream::Enqueue(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
    ++enqueued_;
  }
  cv_.notify_all();
}

void CpuStream::Loop() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    RunTask(task);
    task = nullptr;  // release what the task holds before it counts as finished
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++finished_;
    }
    cv_.notify_all();
  }
}

absl::Status CpuStream::Synchronize() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t target = enqueued_;
    cv_.wait(lock, [this, target]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return finished_ >= target; });
  }
  return TakeError();
}

// ---- InlineStream -------------------------------------------------------------

InlineStream::InlineStream(std::string name, Device device)
    : HostStreamBase(std::move(name), device) {}

absl::StatusOr<std::unique_ptr<Stream>> NewStream(Device device, std::string name) {
  switch (device.kind) {
    case DeviceKind::kCpu:
    case DeviceKind::kMeta:
      return std::unique_ptr<Stream>(new InlineStream(std::move(name), device));
    case DeviceKind::kCpuAsync:
      return std::unique_ptr<Stream>(new CpuStream(std::move(name), device));
    case DeviceKind::kCuda:
      break;
  }
  return internal::NewCudaStream(device.index, std::move(name));
}

}  // namespace trireme
