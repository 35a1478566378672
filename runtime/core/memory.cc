#include "runtime/core/memory.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/core/internal/cuda_alloc.h"

namespace trireme {

const char* MemCategoryName(MemCategory c) {
  static const char* kNames[kNumMemCategories] = {
      "param", "grad", "master", "optim", "activation", "comm", "workspace"};
  return kNames[static_cast<int>(c)];
}

void MemoryTracker::RecordAlloc(MemCategory c, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  const int i = static_cast<int>(c);
  s_.current[i] += bytes;
  s_.peak[i] = std::max(s_.peak[i], s_.current[i]);
  s_.total_current += bytes;
  s_.total_peak = std::max(s_.total_peak, s_.total_current);
}

void MemoryTracker::RecordFree(MemCategory c, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  s_.current[static_cast<int>(c)] -= bytes;
  s_.total_current -= bytes;
}

int64_t MemoryTracker::current(MemCategory c) const {
  absl::MutexLock lock(&mu_);
  return s_.current[static_cast<int>(c)];
}

int64_t MemoryTracker::peak(MemCategory c) const {
  absl::MutexLock lock(&mu_);
  return s_.peak[static_cast<int>(c)];
}

MemoryTracker::Snapshot MemoryTracker::snapshot() const {
  absl::MutexLock lock(&mu_);
  return s_;
}

void MemoryTracker::ResetPeak() {
  absl::MutexLock lock(&mu_);
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
  std::string out = absl::StrFormat("memory of %s\n  %-11s %14s %14s\n", name_,
                                    "category", "current", "peak");
  for (int i = 0; i < kNumMemCategories; ++i) {
    absl::StrAppendFormat(&out, "  %-11s %14s %14s\n",
                          MemCategoryName(static_cast<MemCategory>(i)),
                          FormatBytes(s.current[i]), FormatBytes(s.peak[i]));
  }
  absl::StrAppendFormat(&out, "  %-11s %14s %14s\n", "total",
                        FormatBytes(s.total_current), FormatBytes(s.total_peak));
  return out;
}

std::string MemoryTracker::ToJson() const {
  const Snapshot s = snapshot();
  std::string out = absl::StrFormat("{\"name\":\"%s\",\"categories\":{", name_);
  for (int i = 0; i < kNumMemCategories; ++i) {
    absl::StrAppendFormat(&out, "%s\"%s\":{\"current\":%d,\"peak\":%d}",
                          i ? "," : "", MemCategoryName(static_cast<MemCategory>(i)),
                          s.current[i], s.peak[i]);
  }
  absl::StrAppendFormat(&out, "},\"total\":{\"current\":%d,\"peak\":%d}}",
                        s.total_current, s.total_peak);
  return out;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = o.data_;
    bytes_ = o.bytes_;
    device_ = o.device_;
    category_ = o.category_;
    tracker_ = o.tracker_;
    o.data_ = nullptr;
    o.bytes_ = 0;
    o.tracker_ = nullptr;
  }
  return *this;
}

absl::StatusOr<Buffer> Buffer::Allocate(Device device, int64_t bytes,
                                        MemCategory category,
                                        MemoryTracker* tracker) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot allocate a negative size (", bytes, " bytes) for ",
        MemCategoryName(category), " on ", device.ToString()));
  }
  Buffer b;
  b.device_ = device;
  b.category_ = category;
  if (bytes > 0) {
    switch (device.kind) {
      case DeviceKind::kCpu: {
        const int64_t rounded = (bytes + 63) / 64 * 64;
        b.data_ = std::aligned_alloc(64, static_cast<size_t>(rounded));
        if (b.data_ == nullptr) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "allocation of ", bytes, " bytes (", FormatBytes(bytes), ") for ",
              MemCategoryName(category), " on cpu failed"));
        }
        break;
      }
      case DeviceKind::kCuda: {
        auto p = internal::CudaAllocate(device.index, bytes);
        if (!p.ok()) return p.status();
        b.data_ = *p;
        break;
      }
      case DeviceKind::kMeta:
        break;  // nothing to allocate; accounted below like any other
    }
  }
  b.bytes_ = bytes;
  b.tracker_ = tracker;
  if (tracker != nullptr) tracker->RecordAlloc(category, bytes);
  return b;
}

void Buffer::Reset() {
  if (tracker_ != nullptr) tracker_->RecordFree(category_, bytes_);
  if (data_ != nullptr) {
    if (device_.kind == DeviceKind::kCpu) std::free(data_);
    if (device_.kind == DeviceKind::kCuda) internal::CudaFree(device_.index, data_);
  }
  data_ = nullptr;
  bytes_ = 0;
  tracker_ = nullptr;
}

}  // namespace trireme
