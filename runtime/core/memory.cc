#include "runtime/core/memory.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/core/allocator.h"
#include "runtime/core/json.h"

namespace trireme {

const char* MemCategoryName(MemCategory c) {
  static const char* kNames[kNumMemCategories] = {"param",      "grad", "master",   "optim",
                                                  "activation", "comm", "workspace"};
  return kNames[static_cast<int>(c)];
}

void MemoryTracker::RecordAlloc(MemCategory c, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const int i = static_cast<int>(c);
  s_.current[i] += bytes;
  s_.peak[i] = std::max(s_.peak[i], s_.current[i]);
  s_.total_current += bytes;
  s_.total_peak = std::max(s_.total_peak, s_.total_current);
}

void MemoryTracker::RecordFree(MemCategory c, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  s_.current[static_cast<int>(c)] -= bytes;
  s_.total_current -= bytes;
}

int64_t MemoryTracker::current(MemCategory c) const {
  std::lock_guard<std::mutex> lock(mu_);
  return s_.current[static_cast<int>(c)];
}

int64_t MemoryTracker::peak(MemCategory c) const {
  std::lock_guard<std::mutex> lock(mu_);
  return s_.peak[static_cast<int>(c)];
}

MemoryTracker::Snapshot MemoryTracker::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return s_;
}

void MemoryTracker::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  s_.peak = s_.current;
  s_.total_peak = s_.total_current;
}

std::string FormatBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  const double a = b < 0 ? -b : b;
  if (a >= (1LL << 30)) return absl::StrFormat("%.2f GiB", b / (1LL << 30));
  if (a >= (1LL << 20)) return absl::StrFormat("%.2f MiB", b / (1LL << 20));
  if (a >= (1LL << 10)) return absl::StrFormat("%.2f KiB", b / (1LL << 10));
  return absl::StrCat(bytes, " B");
}

std::string MemoryTracker::ToTable() const {
  const Snapshot s = snapshot();
  std::string out =
      absl::StrFormat("memory of %s\n  %-11s %14s %14s\n", name_, "category", "current", "peak");
  for (int i = 0; i < kNumMemCategories; ++i) {
    absl::StrAppendFormat(&out, "  %-11s %14s %14s\n", MemCategoryName(static_cast<MemCategory>(i)),
                          FormatBytes(s.current[i]), FormatBytes(s.peak[i]));
  }
  absl::StrAppendFormat(&out, "  %-11s %14s %14s\n", "total", FormatBytes(s.total_current),
                        FormatBytes(s.total_peak));
  return out;
}

std::string MemoryTracker::ToJson() const {
  const Snapshot s = snapshot();
  auto pair = [](int64_t current, int64_t peak) {
    return Json::Object({{"current", Json(current)}, {"peak", Json(peak)}});
  };
  Json categories = Json::Object();
  for (int i = 0; i < kNumMemCategories; ++i) {
    categories.Set(MemCategoryName(static_cast<MemCategory>(i)), pair(s.current[i], s.peak[i]));
  }
  return Json::Object({{"name", Json(name_)},
                       {"categories", std::move(categories)},
                       {"total", pair(s.total_current, s.total_peak)}})
      .Dump();
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = o.data_;
    bytes_ = o.bytes_;
    device_ = o.device_;
    category_ = o.category_;
    tracker_ = o.tracker_;
    stream_ = o.stream_;
    uses_ = std::move(o.uses_);
    o.data_ = nullptr;
    o.bytes_ = 0;
    o.tracker_ = nullptr;
    o.stream_ = nullptr;
    o.uses_.clear();
  }
  return *this;
}

absl::StatusOr<Buffer> Buffer::Allocate(Device device, int64_t bytes, MemCategory category,
                                        MemoryTracker* tracker, Stream* stream) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot allocate a negative size (", bytes,
                                                   " bytes) for ", MemCategoryName(category),
                                                   " on ", device.ToString()));
  }
  Buffer b;
  b.device_ = device;
  b.category_ = category;
  b.stream_ = stream;
  DeviceAllocator* allocator = DeviceAllocator::For(device);
  if (bytes > 0 && allocator != nullptr) {  // meta: nothing to allocate
    absl::StatusOr<void*> p = allocator->Allocate(bytes, stream);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrCat(p.status().message(), " (", FormatBytes(bytes), " for ",
                                       MemCategoryName(category), ")"));
    }
    b.data_ = *p;
  }
  b.bytes_ = bytes;
  b.tracker_ = tracker;
  if (tracker != nullptr) tracker->RecordAlloc(category, bytes);
  return b;
}

void Buffer::RecordStream(Stream& s) {
  if (&s == stream_) return;
  for (Stream* u : uses_) {
    if (u == &s) return;
  }
  uses_.push_back(&s);
}

void Buffer::Reset() {
  if (tracker_ != nullptr) tracker_->RecordFree(category_, bytes_);
  if (data_ != nullptr) {
    std::vector<std::unique_ptr<Event>> events;
    for (Stream* s : uses_) {
      std::unique_ptr<Event> e = s->NewEvent();
      if (e != nullptr && s->Record(e.get()).ok()) events.push_back(std::move(e));
    }
    DeviceAllocator::For(device_)->Free(data_, std::move(events));
  }
  data_ = nullptr;
  bytes_ = 0;
  tracker_ = nullptr;
  stream_ = nullptr;
  uses_.clear();
}

}  // namespace trireme
