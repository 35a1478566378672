// Host memory for staging device data: page-locked (cudaHostAlloc) where a
// CUDA device is usable, so device-to-host and host-to-device copies run at
// full bandwidth and asynchronously; ordinary aligned memory elsewhere (the
// host devices, builds without --config=cuda, machines without a GPU).
//
//   PinnedVector<float> staging(n);  // a std::vector over pinned memory
#ifndef TRIREME_RUNTIME_CORE_PINNED_H_
#define TRIREME_RUNTIME_CORE_PINNED_H_

#include <cstddef>
#include <new>
#include <vector>

namespace trireme {

// Page-locked host memory when possible, else 64-byte-aligned host memory;
// null for 0 bytes, never null otherwise (throws std::bad_alloc as operator
// new does).
void* AllocateStagingHost(size_t bytes);
void FreeStagingHost(void* p);

template <typename T>
struct PinnedAllocator {
  using value_type = T;
  PinnedAllocator() = default;
  template <typename U>
  PinnedAllocator(const PinnedAllocator<U>&) {}  // NOLINT: allocator conversion
  T* allocate(size_t n) { return static_cast<T*>(AllocateStagingHost(n * sizeof(T))); }
  void deallocate(T* p, size_t) { FreeStagingHost(p); }
  template <typename U>
  bool operator==(const PinnedAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const PinnedAllocator<U>&) const {
    return false;
  }
};

template <typename T>
using PinnedVector = std::vector<T, PinnedAllocator<T>>;

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_PINNED_H_
