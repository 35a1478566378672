#include "runtime/checkpoint/safetensors.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/checkpoint/crc32c.h"
#include "runtime/core/json.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

// Writes all of `n` bytes and extends the size and CRC.
absl::Status WriteAll(WritableFile& file, const void* data, size_t n, WrittenFile* f) {
  RETURN_IF_ERROR(file.Append(data, n));
  f->crc32c = Crc32cExtend(f->crc32c, data, n);
  f->size += static_cast<int64_t>(n);
  return absl::OkStatus();
}

// The offset of the first byte that breaks UTF-8 (overlong forms, surrogates
// and code points above U+10FFFF included), or -1.
int64_t InvalidUtf8At(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + n >= s.size()) return static_cast<int64_t>(i);  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = s[i + k];
      if ((d & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) {
      return static_cast<int64_t>(i);
    }
    i += n + 1;
  }
  return -1;
}

// Reads `n` bytes at `offset`: how many there were (fewer at the end), or -1.
int64_t ReadUpTo(const ReadableFile& f, void* buf, int64_t n, int64_t offset) {
  size_t got = 0;
  if (!f.ReadAt(offset, buf, static_cast<size_t>(n), &got).ok()) return -1;
  return static_cast<int64_t>(got);
}

}  // namespace

const SafetensorsEntry* SafetensorsHeader::Find(absl::string_view name) const {
  for (const SafetensorsEntry& e : tensors) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

int SafetensorsDTypeSize(absl::string_view d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json,
                                                         int64_t data_size) {
  if (int64_t bad = InvalidUtf8At(json); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("header is not valid UTF-8 (byte ", bad, ")"));
  }
  ASSIGN_OR_RETURN(Json root, Json::Parse(json));
  if (!root.is_object()) return absl::InvalidArgumentError("header is not a JSON object");
  SafetensorsHeader h;
  h.data_start = 8 + static_cast<int64_t>(json.size());
  for (const Json::Member& m : root.members()) {
    const std::string where = absl::StrCat("tensor '", m.first, "'");
    if (m.first == "__metadata__") {
      if (m.second.is_null()) continue;  // allowed by the reference reader
      if (!m.second.is_object()) return absl::InvalidArgumentError("__metadata__ is not an object");
      for (const Json::Member& kv : m.second.members()) {
        if (!kv.second.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("__metadata__ value of '", kv.first, "' is not a string"));
        }
        h.metadata.emplace_back(kv.first, kv.second.string_value());
      }
      continue;
    }
    if (!m.second.is_object()) return absl::InvalidArgumentError(where + " is not an object");
    SafetensorsEntry e;
    e.name = m.first;
    ASSIGN_OR_RETURN(e.dtype, m.second.GetString("dtype", where));
    const int esize = SafetensorsDTypeSize(e.dtype);
    if (esize == 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has unknown dtype '", e.dtype, "'"));
    }
    ASSIGN_OR_RETURN(e.shape, m.second.GetIntArray("shape", where));
    int64_t bytes = esize;
    for (int64_t d : e.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, " has a negative dimension ", d));
      }
      if (__builtin_mul_overflow(bytes, d, &bytes)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": the byte size of its shape overflows int64"));
      }
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> off, m.second.GetIntArray("data_offsets", where));
    if (off.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": data_offsets has ", off.size(), " entries, not 2"));
    }
    e.begin = off[0];
    e.end = off[1];
    if (e.begin < 0 || e.end < e.begin) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": data_offsets [", e.begin, ", ",
                                                     e.end, "] are negative or inverted"));
    }
    if (e.end > data_size) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": data_offsets end ", e.end,
                                                     " is past the end of the data (", data_size,
                                                     " bytes)"));
    }
    if (e.end - e.begin != bytes) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": data_offsets span ", e.end - e.begin,
                                                     " bytes but its shape needs ", bytes));
    }
    h.tensors.push_back(std::move(e));
  }
  // The data section is exactly the tensors, back to back in some order.
  std::vector<const SafetensorsEntry*> order;
  for (const SafetensorsEntry& e : h.tensors) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  int64_t at = 0;
  for (const SafetensorsEntry* e : order) {
    if (e->begin < at) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", e->name, "' at [", e->begin, ", ",
                                                     e->end, ") overlaps the previous tensor"));
    }
    if (e->begin > at) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", e->name, "' at [", e->begin, ", ",
                                                     e->end, ") leaves a gap of ", e->begin - at,
                                                     " bytes before it"));
    }
    at = e->end;
  }
  if (at != data_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tensors cover ", at, " bytes of data but ",
                                                   data_size, " follow the header"));
  }
  return h;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsFile(absl::string_view prefix,
                                                       int64_t file_size) {
  if (file_size < 8 || prefix.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("file of ", file_size, " bytes is too short for a safetensors header"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(prefix[i]);
  if (n > static_cast<uint64_t>(kMaxSafetensorsHeaderBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("header length ", n, " is above the ",
                                                   kMaxSafetensorsHeaderBytes, "-byte limit"));
  }
  if (static_cast<int64_t>(n) > file_size - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("header length ", n, " runs past the end of the ", file_size, "-byte file"));
  }
  if (prefix.size() < 8 + n) {
    return absl::InvalidArgumentError("the header was not read completely");
  }
  return ParseSafetensorsHeader(prefix.substr(8, n), file_size - 8 - static_cast<int64_t>(n));
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path, FileSystem& fs) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, fs.OpenForRead(path));
  const int64_t file_size = f->size();
  std::string buf(8, '\0');
  const int64_t r = ReadUpTo(*f, buf.data(), 8, 0);
  if (r == 8) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(buf[i]);
    // Allocate only a length ParseSafetensorsFile would accept.
    if (n <= static_cast<uint64_t>(kMaxSafetensorsHeaderBytes) &&
        static_cast<int64_t>(n) <= file_size - 8) {
      buf.resize(8 + n);
      if (ReadUpTo(*f, buf.data() + 8, static_cast<int64_t>(n), 8) != static_cast<int64_t>(n)) {
        buf.resize(8);
      }
    }
  } else {
    buf.resize(r > 0 ? r : 0);
  }
  absl::StatusOr<SafetensorsHeader> result = ParseSafetensorsFile(buf, file_size);
  if (!result.ok()) return Annotate(result.status(), absl::StrCat("safetensors file '", path, "'"));
  return result;
}

absl::Status ReadSafetensorsF32(const std::string& path, const SafetensorsHeader& h,
                                const SafetensorsEntry& e, float* out, int64_t count,
                                FileSystem& fs) {
  if (e.dtype != "F32" || e.end - e.begin != count * 4) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': tensor '", e.name, "' is ",
                                                   e.dtype, " of ", e.end - e.begin,
                                                   " bytes; expected F32 of ", count * 4));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, fs.OpenForRead(path));
  const int64_t at = h.data_start + e.begin;
  size_t got = 0;
  RETURN_IF_ERROR(f->ReadAt(at, out, static_cast<size_t>(count) * 4, &got));
  if (static_cast<int64_t>(got) != count * 4) {
    return absl::DataLossError(absl::StrCat("'", path, "': tensor '", e.name, "' ends at byte ",
                                            at + count * 4, ", past the end of the file"));
  }
  return absl::OkStatus();
}

absl::StatusOr<WrittenFile> WriteSafetensors(
    const std::string& path, const std::vector<SafetensorsInput>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata,
    const std::function<absl::Status()>& midway, FileSystem& fs) {
  Json header = Json::Object();
  if (!metadata.empty()) {
    Json md = Json::Object();
    for (const auto& [k, v] : metadata) md.Set(k, Json(v));
    header.Set("__metadata__", std::move(md));
  }
  int64_t at = 0;
  for (const SafetensorsInput& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    header.Set(t.name, Json::Object({{"dtype", Json("F32")},
                                     {"shape", Json::IntArray(t.shape)},
                                     {"data_offsets", Json::IntArray({at, at + 4 * n})}}));
    at += 4 * n;
  }
  std::string json = header.Dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data 8-byte aligned, as the format suggests
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(json.size() >> (8 * i));

  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, fs.CreateFile(path));
  WrittenFile f;
  absl::Status s = WriteAll(*file, len, 8, &f);
  if (s.ok()) s = WriteAll(*file, json.data(), json.size(), &f);
  for (size_t i = 0; s.ok() && i < tensors.size(); ++i) {
    if (midway && i == tensors.size() / 2) s = midway();
    if (!s.ok()) break;
    int64_t n = 1;
    for (int64_t d : tensors[i].shape) n *= d;
    s = WriteAll(*file, tensors[i].data, static_cast<size_t>(n) * 4, &f);
  }
  if (s.ok()) s = file->Sync();
  if (absl::Status c = file->Close(); s.ok()) s = c;
  if (!s.ok()) return s;
  return f;
}

}  // namespace trireme
