#include "runtime/comm/config_check.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "runtime/core/hash.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

std::string Serialize(const ConfigEntries& config) {
  std::string s;
  for (const auto& [k, v] : config) absl::StrAppend(&s, k, "=", v, "\n");
  return s;
}

ConfigEntries Parse(const std::string& s) {
  ConfigEntries out;
  for (absl::string_view line : absl::StrSplit(s, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    out.emplace_back(std::string(line.substr(0, eq)),
                     eq == absl::string_view::npos ? "" : std::string(line.substr(eq + 1)));
  }
  return out;
}

}  // namespace

uint64_t ConfigHash(const ConfigEntries& config) { return Fnv1a64(Serialize(config)); }

absl::Status CheckSameConfig(Communicator& world, const ConfigEntries& config) {
  const int n = world.size();
  std::vector<int64_t> mine{static_cast<int64_t>(ConfigHash(config))}, all(n);
  RETURN_IF_ERROR(world.AllGather(ViewOf(mine), ViewOf(all)));
  if (std::all_of(all.begin(), all.end(), [&](int64_t h) { return h == all[0]; })) {
    return absl::OkStatus();
  }
  // Someone differs: gather the texts and name the first difference from rank 0.
  ASSIGN_OR_RETURN(std::vector<std::string> texts, AllGatherStrings(world, Serialize(config)));
  auto text_of = [&](int r) { return texts[r]; };
  const ConfigEntries base = Parse(text_of(0));
  std::map<std::string, std::string> base_map(base.begin(), base.end());
  for (int r = 1; r < n; ++r) {
    if (all[r] == all[0]) continue;
    const ConfigEntries other = Parse(text_of(r));
    std::map<std::string, std::string> other_map(other.begin(), other.end());
    for (const auto& [k, v] : other) {
      auto it = base_map.find(k);
      if (it == base_map.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("configuration differs across ranks: rank ", r, " has ", k, " = ", v,
                         " which rank 0 does not have"));
      }
      if (it->second != v) {
        return absl::FailedPreconditionError(
            absl::StrCat("configuration differs across ranks: rank ", r, " has ", k, " = ", v,
                         " where rank 0 has ", k, " = ", it->second));
      }
    }
    for (const auto& [k, v] : base) {
      if (other_map.find(k) == other_map.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("configuration differs across ranks: rank 0 has ", k, " = ", v,
                         " which rank ", r, " does not have"));
      }
    }
    return absl::FailedPreconditionError(absl::StrCat("configuration differs across ranks: rank ",
                                                      r,
                                                      " lists the same settings as rank 0 in "
                                                      "another order"));
  }
  return absl::OkStatus();
}

}  // namespace trireme
