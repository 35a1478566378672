// safetensors files (https://github.com/huggingface/safetensors format): an
// 8-byte little-endian header length N, N bytes of JSON mapping tensor names
// to {dtype, shape, data_offsets} (plus an optional "__metadata__" object of
// strings), then the raw little-endian data. Nothing executable. Any reader of
// the format (Python's `safetensors`, Rust's crate) opens Trireme's files.
//
// The header parser is strict, and every rejection names the problem: a
// header length past the file or above 100 MiB (checked before allocating),
// JSON that does not parse, duplicate keys, unknown dtypes, negative
// dimensions or shapes whose byte size overflows int64, offsets inverted,
// overlapping, leaving gaps, not matching the shape, or past the end of the
// data.
#ifndef TRIREME_RUNTIME_CHECKPOINT_SAFETENSORS_H_
#define TRIREME_RUNTIME_CHECKPOINT_SAFETENSORS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/checkpoint/filesystem.h"

namespace trireme {

inline constexpr int64_t kMaxSafetensorsHeaderBytes = int64_t{100} << 20;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ... (the format's names)
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte offsets into the data section
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  // in header order
  std::vector<std::pair<std::string, std::string>> metadata;
  int64_t data_start = 0;  // file offset of the data section (8 + N)
  const SafetensorsEntry* Find(absl::string_view name) const;
};

// Bytes per element of a safetensors dtype name (0 if unknown).
int SafetensorsDTypeSize(absl::string_view dtype);

// The JSON header alone, against a data section of `data_size` bytes.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json, int64_t data_size);
// The start of a file (`prefix`: its first bytes, at least 8 + N of them
// unless the file is shorter) of `file_size` bytes in total.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsFile(absl::string_view prefix, int64_t file_size);
// Reads and validates the header of the file at `path`; errors name it.
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path,
                                                        FileSystem& fs = PosixFileSystem());

// Reads entry `e` (dtype F32, `count` elements) of the file at `path`.
absl::Status ReadSafetensorsF32(const std::string& path, const SafetensorsHeader& h,
                                const SafetensorsEntry& e, float* out, int64_t count,
                                FileSystem& fs = PosixFileSystem());

struct SafetensorsInput {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // F32, prod(shape) elements
};

struct WrittenFile {
  int64_t size = 0;
  uint32_t crc32c = 0;  // of the whole file
};

// Writes `tensors` (F32) and `metadata` to `path` (created; must not exist),
// fsyncs it and returns its size and CRC32C. `midway`, if set, runs after
// half of the tensors are written (fault injection); its error aborts the
// write and is returned, leaving the partial file.
absl::StatusOr<WrittenFile> WriteSafetensors(
    const std::string& path, const std::vector<SafetensorsInput>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata,
    const std::function<absl::Status()>& midway = nullptr, FileSystem& fs = PosixFileSystem());

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CHECKPOINT_SAFETENSORS_H_
