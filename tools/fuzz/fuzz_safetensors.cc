// libFuzzer target: the safetensors file parser (header length, JSON header,
// offsets) on arbitrary bytes taken as a whole file. It must return a status
// -- never crash, hang or allocate more than the header-length limit.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "runtime/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto h = trireme::ParseSafetensorsFile(bytes, static_cast<int64_t>(size));
  if (h.ok()) {
    // Accepted headers describe data inside the file.
    for (const auto& t : h->tensors) {
      if (t.begin < 0 || t.end < t.begin || h->data_start + t.end > static_cast<int64_t>(size)) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
