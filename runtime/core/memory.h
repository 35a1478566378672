// Memory accounting and owned buffers.
//
// Every allocation in the runtime goes through Buffer::Allocate and names a
// category; the rank's MemoryTracker keeps current and peak bytes per category.
// This is what the memory benchmark reads: nothing estimates what it can measure.
#ifndef TRIREME_RUNTIME_CORE_MEMORY_H_
#define TRIREME_RUNTIME_CORE_MEMORY_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/core/device.h"

namespace trireme {

enum class MemCategory : int {
  kParam = 0,   // compute-dtype copy of the parameters
  kGrad,        // gradients
  kMaster,      // fp32 master parameters
  kOptim,       // optimizer state (Adam m, v; momentum)
  kActivation,  // activations kept for backward
  kComm,        // gather / reduce buffers
  kWorkspace,   // scratch
};
inline constexpr int kNumMemCategories = 7;

// "param", "grad", "master", "optim", "activation", "comm", "workspace".
const char* MemCategoryName(MemCategory c);

// Current and peak bytes per category for one rank. Thread-safe: any thread
// may record; readers see a consistent snapshot.
class MemoryTracker {
 public:
  struct Snapshot {
    std::array<int64_t, kNumMemCategories> current{};
    std::array<int64_t, kNumMemCategories> peak{};
    int64_t total_current = 0;
    int64_t total_peak = 0;  // peak of the sum (not the sum of peaks)
  };

  explicit MemoryTracker(std::string name = "rank") : name_(std::move(name)) {}
  MemoryTracker(const MemoryTracker&) = delete;
  MemoryTracker& operator=(const MemoryTracker&) = delete;

  void RecordAlloc(MemCategory c, int64_t bytes);
  void RecordFree(MemCategory c, int64_t bytes);

  int64_t current(MemCategory c) const;
  int64_t peak(MemCategory c) const;
  Snapshot snapshot() const;

  // Sets every peak to the current value (e.g. at the start of a step).
  void ResetPeak();

  const std::string& name() const { return name_; }

  // A fixed-width table: one row per category, current and peak, then a total.
  std::string ToTable() const;
  // {"name":..., "categories":{"param":{"current":N,"peak":N},...},
  //  "total":{"current":N,"peak":N}}
  std::string ToJson() const;

 private:
  const std::string name_;
  mutable absl::Mutex mu_;
  Snapshot s_ ABSL_GUARDED_BY(mu_);
};

// Human-readable byte count: "1.50 GiB", "512 B".
std::string FormatBytes(int64_t bytes);

// An owned, move-only allocation on a device, accounted in a tracker.
// CPU memory is 64-byte aligned; meta buffers have data() == nullptr but are
// recorded exactly like real ones. Destruction frees the memory and records the
// free. Not thread-safe (like any owning object); the tracker must outlive it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }

  // Allocates `bytes` (>= 0) on `device`, recorded under `category` in `tracker`
  // (which may be null: then nothing is recorded). Errors: InvalidArgument for
  // negative sizes, ResourceExhausted when the allocation fails, Unavailable for
  // cuda in a build without CUDA or on a machine without a device.
  static absl::StatusOr<Buffer> Allocate(Device device, int64_t bytes,
                                         MemCategory category,
                                         MemoryTracker* tracker);

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  int64_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemCategory category() const { return category_; }

  // Frees now (idempotent).
  void Reset();

 private:
  void* data_ = nullptr;
  int64_t bytes_ = 0;
  Device device_;
  MemCategory category_ = MemCategory::kWorkspace;
  MemoryTracker* tracker_ = nullptr;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_MEMORY_H_
