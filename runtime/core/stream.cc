#include "runtime/core/stream.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace trireme {

CpuEvent::CpuEvent() : state_(std::make_shared<State>()) {}

bool CpuEvent::Query() const {
  absl::MutexLock lock(&state_->mu);
  return state_->done;
}

absl::Status CpuEvent::Synchronize(absl::Duration timeout) {
  State& s = *state_;
  absl::MutexLock lock(&s.mu);
  auto done = [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) { return s.done; };
  if (!s.mu.AwaitWithTimeout(absl::Condition(&done), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "event not complete after ", absl::FormatDuration(timeout)));
  }
  return s.status;
}

void CpuEvent::Reset() { ResetForRecord(); }

uint64_t CpuEvent::ResetForRecord() {
  absl::MutexLock lock(&state_->mu);
  state_->done = false;
  state_->status = absl::OkStatus();
  return ++state_->generation;
}

void CpuEvent::CompleteRecording(uint64_t generation, absl::Status status) {
  absl::MutexLock lock(&state_->mu);
  if (state_->generation != generation) return;  // re-recorded (or reset) since
  state_->status = std::move(status);
  state_->done = true;
}

void CpuEvent::Complete(absl::Status status) {
  absl::MutexLock lock(&state_->mu);
  state_->status = std::move(status);
  state_->done = true;
}

CpuStream::CpuStream(std::string name) : name_(std::move(name)) {
  worker_ = std::thread([this] { Loop(); });
}

CpuStream::~CpuStream() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  worker_.join();
}

void CpuStream::Enqueue(Task task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
  ++enqueued_;
}

void CpuStream::Loop() {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stop_ and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    absl::Status s = task();
    absl::MutexLock lock(&mu_);
    if (!s.ok() && error_.ok()) error_ = std::move(s);
    ++finished_;
  }
}

std::unique_ptr<Event> CpuStream::NewEvent() { return std::make_unique<CpuEvent>(); }

absl::Status CpuStream::Record(Event* event) {
  auto* e = dynamic_cast<CpuEvent*>(event);
  if (e == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream '", name_, "' can only record a CpuEvent"));
  }
  // If `e` is recorded again before this marker runs, the later recording
  // decides when it completes: this marker then leaves it alone.
  const uint64_t generation = e->ResetForRecord();
  // The marker copies the event's shared state, so the Event object itself may
  // be destroyed before the marker runs.
  CpuEvent marker = *e;
  Enqueue([this, marker, generation]() mutable {
    absl::Status sticky;
    {
      absl::MutexLock lock(&mu_);
      sticky = error_;
    }
    marker.CompleteRecording(generation, sticky);
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status CpuStream::Wait(const Event& event) {
  // Any event kind can be waited on from a CPU stream: the worker blocks on it.
  // CpuEvent is copyable (shared state); other kinds must outlive the wait.
  if (auto* e = dynamic_cast<const CpuEvent*>(&event)) {
    CpuEvent copy = *e;
    Enqueue([copy]() mutable { return copy.Synchronize(); });
  } else {
    Event* other = const_cast<Event*>(&event);
    Enqueue([other] { return other->Synchronize(); });
  }
  return absl::OkStatus();
}

absl::Status CpuStream::Synchronize() {
  absl::MutexLock lock(&mu_);
  const int64_t target = enqueued_;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finished_ >= target;
  };
  mu_.Await(absl::Condition(&done));
  absl::Status s = std::move(error_);
  error_ = absl::OkStatus();
  return s;
}

}  // namespace trireme
