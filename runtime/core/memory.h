// Memory accounting and owned buffers.
//
// Every allocation in the runtime goes through Buffer::Allocate and names a
// category; the rank's MemoryTracker keeps current and peak bytes per category.
// This is what the memory benchmark reads: nothing estimates what it can measure.
#ifndef TRIREME_RUNTIME_CORE_MEMORY_H_
#define TRIREME_RUNTIME_CORE_MEMORY_H_

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "runtime/core/device.h"
#include "runtime/core/stream.h"

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
  mutable std::mutex mu_;
  Snapshot s_ ABSL_GUARDED_BY(mu_);
};

// Human-readable byte count: "1.50 GiB", "512 B".
std::string FormatBytes(int64_t bytes);

// An owned, move-only allocation on a device, accounted in a tracker; the
// memory comes from the device's caching allocator (allocator.h).
// CPU memory is 64-byte aligned; meta buffers have data() == nullptr but are
// recorded exactly like real ones. Destruction frees the memory and records the
// free. Not thread-safe (like any owning object); the tracker must outlive it.
//
// Streams: a buffer belongs to the stream it was allocated for (nullptr:
// host-ordered). Its memory may be handed to a later allocation on that
// stream as soon as it is freed, which is safe because that stream runs its
// work in order. A buffer that work on another stream also reads or writes
// must say so with RecordStream, so its memory waits for that work. The
// buffer may outlive its own stream (the allocator then knows the stream's
// work is done), but not be freed while another thread destroys that
// stream: the free records an event on a stream it has just seen alive.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }

  // Allocates `bytes` (>= 0) on `device` for work on `stream` (may be null),
  // recorded under `category` in `tracker` (which may be null: then nothing is
  // recorded). The contents are undefined. Errors: InvalidArgument for
  // negative sizes, ResourceExhausted when the allocation fails, Unavailable
  // for cuda in a build without CUDA or on a machine without a device.
  static absl::StatusOr<Buffer> Allocate(Device device, int64_t bytes, MemCategory category,
                                         MemoryTracker* tracker, Stream* stream = nullptr);

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  int64_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemCategory category() const { return category_; }
  Stream* stream() const { return stream_; }

  // Work on `s` (other than this buffer's own stream) uses this buffer: its
  // memory is not reused until the work enqueued on `s` before the free has
  // run. `s` must outlive the buffer.
  void RecordStream(Stream& s);

  // Frees now (idempotent); the memory itself is reused in stream order.
  void Reset();

 private:
  void* data_ = nullptr;
  int64_t bytes_ = 0;
  Device device_;
  MemCategory category_ = MemCategory::kWorkspace;
  MemoryTracker* tracker_ = nullptr;
  Stream* stream_ = nullptr;
  std::vector<Stream*> uses_;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_MEMORY_H_
