// libFuzzer target: the checkpoint manifest parser (JSON, structure, file
// names, chunk bounds, coverage) on arbitrary bytes. It must return a status
// -- never crash, hang or allocate without bound.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "runtime/checkpoint/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = trireme::checkpoint::ParseManifest(text);
  if (m.ok()) {
    for (const auto& [name, f] : m->files) {
      if (!trireme::checkpoint::IsRankFileName(name)) __builtin_trap();  // no path escapes
    }
  }
  return 0;
}
