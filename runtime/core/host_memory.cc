#include "runtime/core/host_memory.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "runtime/core/memory.h"

namespace trireme {
namespace {

// The value of `key` in a "key value [kB]" file (meminfo, status,
// memory.stat), in bytes when the line says kB; -1 if absent.
int64_t KeyedValue(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t:"), absl::SkipEmpty());
    if (f.size() < 2 || f[0] != key) continue;
    int64_t v = 0;
    if (!absl::SimpleAtoi(f[1], &v)) return -1;
    return f.size() >= 3 && f[2] == "kB" ? v * 1024 : v;
  }
  return -1;
}

// A file holding one number ("max" or a value near 2^63: no limit, -1).
int64_t NumberFile(const std::string& path, bool* present) {
  std::ifstream in(path);
  std::string s;
  *present = static_cast<bool>(in >> s);
  int64_t v = 0;
  if (!*present || s == "max" || !absl::SimpleAtoi(s, &v) || v >= (int64_t{1} << 60)) return -1;
  return v;
}

struct Level {
  std::string dir;
  int64_t limit, used;
};

// Every level from the process's cgroup up to the mount's root, for the
// memory controller (v2 unified or v1 "memory").
std::vector<Level> CgroupLevels() {
  std::ifstream in("/proc/self/cgroup");
  std::string line, v2_path, v1_path;
  bool v1 = false;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) v2_path = f[2];
    for (absl::string_view c : absl::StrSplit(f[1], ',')) {
      if (c == "memory") {
        v1 = true;
        v1_path = f[2];
      }
    }
  }
  const std::string root = v1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup";
  std::string path = v1 ? v1_path : v2_path;
  const char* limit_file = v1 ? "/memory.limit_in_bytes" : "/memory.max";
  const char* usage_file = v1 ? "/memory.usage_in_bytes" : "/memory.current";
  // In a container the path named may be the host's: the namespace's root is
  // then the mount itself.
  bool present = false;
  NumberFile(root + path + limit_file, &present);
  if (!present) path = "/";
  std::vector<Level> levels;
  while (true) {
    const std::string dir = path == "/" ? root : root + path;
    bool has_limit = false, has_usage = false;
    const int64_t limit = NumberFile(dir + limit_file, &has_limit);
    const int64_t usage = NumberFile(dir + usage_file, &has_usage);
    if (has_limit && limit >= 0 && has_usage) {
      int64_t cache =
          KeyedValue(dir + "/memory.stat", v1 ? "total_inactive_file" : "inactive_file");
      levels.push_back({dir, limit, std::max<int64_t>(0, usage - std::max<int64_t>(0, cache))});
    }
    if (path == "/" || path.empty()) break;
    const size_t slash = path.rfind('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
  return levels;
}

}  // namespace

int64_t HostMemory::available() const {
  int64_t a = mem_available;
  if (cgroup_limit >= 0) a = std::min(a, std::max<int64_t>(0, cgroup_limit - cgroup_used));
  return a;
}

std::string HostMemory::ToString() const {
  std::string s =
      absl::StrCat(FormatBytes(available()), " (MemAvailable ", FormatBytes(mem_available), "; ");
  if (cgroup_limit < 0) return absl::StrCat(s, "no cgroup memory limit)");
  return absl::StrCat(s, "cgroup ", cgroup, " limit ", FormatBytes(cgroup_limit), ", ",
                      FormatBytes(cgroup_used), " in use)");
}

absl::StatusOr<HostMemory> ReadHostMemory() {
  HostMemory m;
  m.mem_available = KeyedValue("/proc/meminfo", "MemAvailable");
  if (m.mem_available < 0) {
    return absl::UnavailableError("cannot read MemAvailable from /proc/meminfo");
  }
  for (const Level& l : CgroupLevels()) {
    const int64_t headroom = l.limit - l.used;
    if (m.cgroup_limit < 0 || headroom < m.cgroup_limit - m.cgroup_used) {
      m.cgroup_limit = l.limit;
      m.cgroup_used = l.used;
      m.cgroup = l.dir;
    }
  }
  return m;
}

int64_t ResidentBytes() { return KeyedValue("/proc/self/status", "VmRSS"); }
int64_t PeakResidentBytes() { return KeyedValue("/proc/self/status", "VmHWM"); }

double MeasureMemcpyBandwidth(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(bytes) / s);
    a[i] = b[bytes - 1 - i];  // keep the copies observable
  }
  return best;
}

}  // namespace trireme
