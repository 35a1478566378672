#include "runtime/core/allocator.h"

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/core/internal/cuda_alloc.h"

namespace trireme {
namespace {

// Sizes are rounded so that blocks of nearby sizes are interchangeable:
// 512 B steps below 1 MiB, 128 KiB steps above.
int64_t RoundSize(int64_t bytes) {
  const int64_t step = bytes < (int64_t{1} << 20) ? 512 : (int64_t{1} << 17);
  return (bytes + step - 1) / step * step;
}

// On unless TRIREME_ALLOCATOR_CACHE=0; in AddressSanitizer builds off unless
// TRIREME_ALLOCATOR_CACHE=1, so ASan sees every use after free.
bool CachingFromEnv() {
#if defined(__SANITIZE_ADDRESS__)
  constexpr bool kDefault = false;
#else
  constexpr bool kDefault = true;
#endif
  const char* v = std::getenv("TRIREME_ALLOCATOR_CACHE");
  if (v == nullptr || *v == '\0') return kDefault;
  return std::strcmp(v, "0") != 0;
}

}  // namespace

DeviceAllocator* DeviceAllocator::For(Device device) {
  if (device.kind == DeviceKind::kMeta) return nullptr;
  // The host devices, asked on every allocation and free: no lock.
  if (device == Device::Cpu()) {
    static DeviceAllocator* const cpu = new DeviceAllocator(Device::Cpu());  // never freed
    return cpu;
  }
  if (device == Device::CpuAsync()) {
    static DeviceAllocator* const cpu_async = new DeviceAllocator(Device::CpuAsync());
    return cpu_async;
  }
  static std::mutex mu;
  static auto* all = new std::map<std::pair<int, int>, DeviceAllocator*>();  // never freed
  std::lock_guard<std::mutex> lock(mu);
  DeviceAllocator*& a = (*all)[{static_cast<int>(device.kind), device.index}];
  if (a == nullptr) a = new DeviceAllocator(device);
  return a;
}

DeviceAllocator::DeviceAllocator(Device device) : device_(device), caching_(CachingFromEnv()) {}

absl::StatusOr<void*> DeviceAllocator::SystemAlloc(int64_t bytes) {
  if (device_.kind == DeviceKind::kCuda) return internal::CudaAllocate(device_.index, bytes);
  void* p = std::aligned_alloc(64, static_cast<size_t>((bytes + 63) / 64 * 64));
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("allocation of ", bytes, " bytes on ", device_.ToString(), " failed"));
  }
  return p;
}

void DeviceAllocator::SystemFree(void* p) {
  if (device_.kind == DeviceKind::kCuda) {
    internal::CudaFree(device_.index, p);
  } else {
    std::free(p);
  }
}

absl::StatusOr<void*> DeviceAllocator::Allocate(int64_t bytes, Stream* stream) {
  const int64_t size = RoundSize(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.allocations;
    CollectPendingLocked();
    auto pool = cached_.find(stream);
    if (pool != cached_.end()) {
      // The smallest cached block that fits, if it wastes at most a quarter.
      auto it = pool->second.lower_bound(size);
      if (it != pool->second.end() && it->first <= size + size / 4) {
        Block b{it->second, it->first, stream};
        pool->second.erase(it);
        live_[b.ptr] = b;
        ++stats_.cache_hits;
        stats_.allocated += b.size;
        stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
        return b.ptr;
      }
    }
  }
  absl::StatusOr<void*> p = SystemAlloc(size);
  if (!p.ok()) {
    // Return the cache to the system and try once more.
    EmptyCache();
    p = SystemAlloc(size);
    if (!p.ok()) return p.status();
  }
  std::lock_guard<std::mutex> lock(mu_);
  live_[*p] = Block{*p, size, stream};
  segments_[static_cast<const char*>(*p)] = size;
  ++stats_.system_allocations;
  stats_.allocated += size;
  stats_.reserved += size;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  return *p;
}

void DeviceAllocator::Free(void* p, std::vector<std::unique_ptr<Event>> uses) {
  if (p == nullptr) return;
  Stream* stream = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: a programming error upstream
    stream = it->second.stream;
  }
  // Without the cache, memory leaves the process: first let the block's own
  // stream pass this point too (its queued work may still use it). A stream
  // that is gone has finished its work.
  if (!caching_ && stream != nullptr && Stream::Alive(stream) && stream->device().asynchronous()) {
    std::unique_ptr<Event> e = stream->NewEvent();
    if (e != nullptr && stream->Record(e.get()).ok()) uses.push_back(std::move(e));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  if (it == live_.end()) return;
  const Block b = it->second;
  live_.erase(it);
  stats_.allocated -= b.size;
  if (uses.empty()) {
    CacheOrReleaseLocked(b);
  } else {
    stats_.pending += b.size;
    pending_.push_back(Pending{b, std::move(uses)});
  }
  CollectPendingLocked();
}

void DeviceAllocator::CacheOrReleaseLocked(const Block& b) {
  if (caching_) {
    cached_[b.stream].emplace(b.size, b.ptr);
    return;
  }
  segments_.erase(static_cast<const char*>(b.ptr));
  stats_.reserved -= b.size;
  SystemFree(b.ptr);
}

void DeviceAllocator::CollectPendingLocked() {
  for (size_t i = 0; i < pending_.size();) {
    bool done = true;
    for (const auto& e : pending_[i].uses) done = done && e->Query();
    if (!done) {
      ++i;
      continue;
    }
    stats_.pending -= pending_[i].block.size;
    CacheOrReleaseLocked(pending_[i].block);
    pending_[i] = std::move(pending_.back());
    pending_.pop_back();
  }
}

bool DeviceAllocator::Contains(const void* p, int64_t bytes) const {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = segments_.upper_bound(c);
  if (it == segments_.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

AllocatorStats DeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

// A cached block of `stream` may go back to the system only if nothing queued
// can still touch it: no stream (host-ordered), a stream that is gone (its
// work finished), a synchronous one, or a CUDA device (cudaFree waits for
// the device). A live cpu_async stream may still have queued tasks using a
// block it freed: its cache stays.
bool DeviceAllocator::Releasable(Stream* stream) const {
  if (stream == nullptr || device_.kind == DeviceKind::kCuda) return true;
  return !Stream::Alive(stream) || !stream->device().asynchronous();
}

void DeviceAllocator::EmptyCache() {
  std::lock_guard<std::mutex> lock(mu_);
  CollectPendingLocked();
  for (auto it = cached_.begin(); it != cached_.end();) {
    if (!Releasable(it->first)) {
      ++it;
      continue;
    }
    for (auto& [size, ptr] : it->second) {
      segments_.erase(static_cast<const char*>(ptr));
      stats_.reserved -= size;
      SystemFree(ptr);
    }
    it = cached_.erase(it);
  }
}

}  // namespace trireme
