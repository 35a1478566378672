// The caching allocator of a device: every Buffer's memory comes from here.
//
// Blocks are cached after they are freed and reused by later allocations, so
// a training step allocates nothing from the system once warm (CUDA's
// cudaMalloc/cudaFree per buffer would synchronize the device). Reuse is
// stream-ordered, as in PyTorch's CUDA caching allocator:
// - a block is associated with the stream it was allocated on; once freed it
//   may be reused at once by an allocation on that same stream, whose work is
//   ordered after every earlier use on the stream;
// - a buffer also used on other streams records them (Buffer::RecordStream):
//   at the free an event is recorded on each, and the block is reused only
//   after they complete;
// - blocks allocated with no stream are reused by later no-stream
//   allocations; their owner guarantees no stream still uses them.
// The MemoryTracker counts what the program holds (requested bytes, by
// category, at the host's alloc and free calls); these statistics count what
// the allocator holds from the system, in-use and cached blocks alike.
//
// TRIREME_ALLOCATOR_CACHE=0 turns caching off (every free returns memory to
// the system once no stream uses it), so AddressSanitizer sees use-after-free;
// it is off by default in ASan builds (TRIREME_ALLOCATOR_CACHE=1 turns it on).
// Thread-safe.
#ifndef TRIREME_RUNTIME_CORE_ALLOCATOR_H_
#define TRIREME_RUNTIME_CORE_ALLOCATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "runtime/core/device.h"
#include "runtime/core/stream.h"

namespace trireme {

struct AllocatorStats {
  int64_t allocated = 0;  // bytes of blocks handed out and not yet freed
  int64_t peak_allocated = 0;
  int64_t reserved = 0;  // bytes held from the system: in use, cached or pending
  int64_t peak_reserved = 0;
  int64_t pending = 0;      // freed, but a stream may still use them
  int64_t allocations = 0;  // Allocate calls
  int64_t cache_hits = 0;   // ... served from the cache
  int64_t system_allocations = 0;
};

class DeviceAllocator {
 public:
  // The process-wide allocator of `device` (created on first use); nullptr
  // for meta, which allocates nothing.
  static DeviceAllocator* For(Device device);

  // A block of at least `bytes` (> 0) bytes, 64-byte aligned, for work on
  // `stream` (nullptr: host-ordered). ResourceExhausted naming the size when
  // the system refuses; Unavailable for cuda in a build without CUDA.
  absl::StatusOr<void*> Allocate(int64_t bytes, Stream* stream);
  // Returns a block from Allocate. `uses`: events recorded, at this point, on
  // the other streams that used it; the block is reused only once they are
  // complete.
  void Free(void* p, std::vector<std::unique_ptr<Event>> uses);
  // True if [p, p + bytes) lies inside one block this allocator made (live,
  // cached or pending -- a stale pointer into a freed block passes too): the
  // check data communicators apply to their buffers.
  bool Contains(const void* p, int64_t bytes) const;
  AllocatorStats stats() const;
  // Returns cached blocks to the system: those of no stream, of streams that
  // are gone or synchronous, and all of them on CUDA (cudaFree waits for the
  // device). A live cpu_async stream's cache stays (tasks it has queued may
  // still use those blocks); blocks in use or pending stay. Allocate calls it
  // when the system refuses memory, then tries once more.
  void EmptyCache();

  Device device() const { return device_; }

 private:
  explicit DeviceAllocator(Device device);
  struct Block {
    void* ptr = nullptr;
    int64_t size = 0;  // rounded
    Stream* stream = nullptr;
  };
  struct Pending {
    Block block;
    std::vector<std::unique_ptr<Event>> uses;
  };
  absl::StatusOr<void*> SystemAlloc(int64_t bytes);
  void SystemFree(void* p);
  // Moves pending blocks whose uses are complete into their stream's cache.
  void CollectPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CacheOrReleaseLocked(const Block& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Releasable(Stream* stream) const;

  const Device device_;
  const bool caching_;
  mutable std::mutex mu_;
  std::map<const void*, Block> live_ ABSL_GUARDED_BY(mu_);
  // Cached blocks by stream, then by size.
  std::map<Stream*, std::multimap<int64_t, void*>> cached_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);
  // Every block held from the system (start -> size), for Contains.
  std::map<const char*, int64_t> segments_ ABSL_GUARDED_BY(mu_);
  AllocatorStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_ALLOCATOR_H_
