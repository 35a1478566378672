// What the host can still give this job, and what this process holds, as the
// kernel reports them: /proc/meminfo's MemAvailable, the memory cgroup's limit
// (v2 or v1, every level up to the root), and /proc/self/status.
#ifndef TRIREME_RUNTIME_CORE_HOST_MEMORY_H_
#define TRIREME_RUNTIME_CORE_HOST_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace trireme {

struct HostMemory {
  int64_t mem_available = 0;  // MemAvailable: free plus reclaimable, machine-wide
  // The tightest memory-cgroup level: its limit and what its processes use
  // now (page cache that can be dropped not counted). limit -1: no limit.
  int64_t cgroup_limit = -1;
  int64_t cgroup_used = 0;
  std::string cgroup;  // that level's directory; empty without a limit

  // What more this job can take: MemAvailable, or the cgroup's headroom if
  // that is smaller.
  int64_t available() const;
  // "19.8 GiB (MemAvailable 22.9 GiB; cgroup /sys/fs/cgroup/... limit 20 GiB,
  // 200 MiB used)" or "... no cgroup limit".
  std::string ToString() const;
};

// Reads the kernel's figures. Errors: Unavailable when /proc/meminfo cannot
// be read (not Linux).
absl::StatusOr<HostMemory> ReadHostMemory();

// This process's resident bytes now (VmRSS) and at most so far (VmHWM); -1
// if the kernel does not say.
int64_t ResidentBytes();
int64_t PeakResidentBytes();
// Bytes read + written per second by one thread's memcpy of `bytes` (past
// the caches), measured now: the best of 5.
double MeasureMemcpyBandwidth(size_t bytes);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_HOST_MEMORY_H_
