#include "runtime/checkpoint/manifest.h"

#include <algorithm>
#include <limits>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "runtime/core/status.h"

namespace trireme::checkpoint {
namespace {

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

bool IsRankFileName(absl::string_view s) {
  return absl::ConsumePrefix(&s, "rank-") && absl::ConsumeSuffix(&s, ".safetensors") &&
         s.size() >= 5 && AllDigits(s);
}

bool Product(const std::vector<int64_t>& dims, int64_t* out) {
  int64_t p = 1;
  for (int64_t d : dims) {
    if (d < 0 || __builtin_mul_overflow(p, d, &p)) return false;
  }
  *out = p;
  return true;
}

absl::StatusOr<Block> MakeBlock(const std::vector<int64_t>& global_shape,
                                const std::vector<int64_t>& view_in,
                                const std::vector<int64_t>& offset_in,
                                const std::vector<int64_t>& shape_in, absl::string_view where) {
  Block b;
  b.view = view_in.empty() ? global_shape : view_in;
  b.offset = offset_in.empty() ? std::vector<int64_t>(b.view.size(), 0) : offset_in;
  b.shape = shape_in.empty() ? b.view : shape_in;
  int64_t view_numel = 0;
  if (!Product(global_shape, &b.global_numel) || !Product(b.view, &view_numel)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": a shape has a negative dimension or its size overflows int64"));
  }
  if (view_numel != b.global_numel) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": view of ", view_numel,
                                                   " elements for a tensor of ", b.global_numel));
  }
  if (b.offset.size() != b.view.size() || b.shape.size() != b.view.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": view, block_offset and block_shape have ", b.view.size(), ", ",
                     b.offset.size(), " and ", b.shape.size(), " dimensions"));
  }
  for (size_t d = 0; d < b.view.size(); ++d) {
    if (b.offset[d] < 0 || b.shape[d] < 0 || b.offset[d] > b.view[d] - b.shape[d]) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": block dimension ", d, " [",
                                                     b.offset[d], ", +", b.shape[d],
                                                     ") is outside the view's ", b.view[d]));
    }
  }
  Product(b.shape, &b.numel);
  return b;
}

int64_t RunCount(const Block& b, int64_t begin, int64_t end) {
  if (b.view.empty() || end <= begin) return end > begin ? 1 : 0;
  const int64_t w = b.shape.back();
  return (end - 1) / w - begin / w + 1;
}

// Every structural rule of the manifest, coverage included (no file access).
// The engine's record: every counter present and in range.
absl::Status CheckEngineRecord(const Json& engine) {
  for (const char* k : {"step", "optimizer_step", "good_steps", "hysteresis_left"}) {
    RETURN_IF_ERROR(engine.GetInt(k, "manifest engine").status());
  }
  ASSIGN_OR_RETURN(const double scale, engine.GetNumber("loss_scale", "manifest engine"));
  if (!(scale > 0) || !(scale <= std::numeric_limits<float>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest engine: loss_scale ", scale, " is not a positive finite float"));
  }
  for (const char* k : {"good_steps", "hysteresis_left"}) {
    const int64_t v = *engine.GetInt(k, "manifest engine");
    if (v < 0 || v > std::numeric_limits<int>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest engine: ", k, " ", v, " is outside [0, 2^31)"));
    }
  }
  const int64_t st = *engine.GetInt("step", "manifest engine");
  const int64_t ost = *engine.GetInt("optimizer_step", "manifest engine");
  if (st < 0 || ost < 0 || ost > st) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest engine: step ", st, " and optimizer_step ", ost, " are inconsistent"));
  }
  if (const Json* ls = engine.Find("loss_scaling"); ls == nullptr || !ls->is_bool()) {
    return absl::InvalidArgumentError("manifest engine: \"loss_scaling\" is missing or not a bool");
  }
  return absl::OkStatus();
}

// "files": rank-NNNNN.safetensors names (nothing may leave the directory),
// sizes and CRC32Cs.
absl::Status ParseFiles(const Json& root, Manifest* m) {
  const char* where = "manifest";
  ASSIGN_OR_RETURN(const Json* files, root.GetObject("files", where));
  for (const auto& [name, f] : files->members()) {
    if (!IsRankFileName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "manifest: file name '", name,
          "' is not rank-NNNNN.safetensors (no path may leave the checkpoint directory)"));
    }
    const std::string fw = absl::StrCat("manifest file '", name, "'");
    FileEntry e;
    ASSIGN_OR_RETURN(e.size, f.GetInt("size", fw));
    ASSIGN_OR_RETURN(std::string crc, f.GetString("crc32c", fw));
    uint32_t v = 0;
    if (crc.size() != 8 || !absl::SimpleHexAtoi(crc, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(fw, ": crc32c '", crc, "' is not 8 hex digits"));
    }
    if (e.size < 8) {
      return absl::InvalidArgumentError(absl::StrCat(fw, ": size ", e.size, " is too small"));
    }
    e.crc = v;
    m->files[name] = e;
  }
  return absl::OkStatus();
}

// One tensor's entry: its shape, dtype and chunks, which must cover every
// element exactly once, in files listed under "files".
absl::StatusOr<TensorEntry> ParseTensor(const std::string& name, const Json& t, const Manifest& m) {
  const std::string tw = absl::StrCat("manifest tensor '", name, "'");
  if (name.empty() || absl::StrContains(name, "/")) {
    return absl::InvalidArgumentError(absl::StrCat(tw, ": names may not be empty or contain '/'"));
  }
  if (!t.is_object()) return absl::InvalidArgumentError(tw + " is not an object");
  TensorEntry te;
  ASSIGN_OR_RETURN(te.shape, t.GetIntArray("shape", tw));
  ASSIGN_OR_RETURN(std::string dtype, t.GetString("dtype", tw));
  if (dtype != "F32") {
    return absl::InvalidArgumentError(
        absl::StrCat(tw, ": dtype '", dtype, "' (only F32 is written or read)"));
  }
  ASSIGN_OR_RETURN(const Json* chunks, t.GetArray("chunks", tw));
  int64_t runs = 0;
  std::vector<std::tuple<int64_t, int64_t, size_t>> spans;  // (global begin, end, chunk)
  for (const Json& c : chunks->items()) {
    const std::string cw = absl::StrCat(tw, " chunk ", te.chunks.size());
    if (!c.is_object()) return absl::InvalidArgumentError(cw + " is not an object");
    Chunk ch;
    ASSIGN_OR_RETURN(ch.file, c.GetString("file", cw));
    for (const Chunk& prev : te.chunks) {
      if (prev.file == ch.file) {  // one entry per (state, tensor) in a file
        return absl::InvalidArgumentError(absl::StrCat(cw, ": a second chunk in file '", ch.file,
                                                       "' (a file holds one chunk per tensor)"));
      }
    }
    if (m.files.find(ch.file) == m.files.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(cw, ": file '", ch.file, "' is not listed under \"files\""));
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> view, c.GetIntArray("view", cw));
    ASSIGN_OR_RETURN(std::vector<int64_t> off, c.GetIntArray("block_offset", cw));
    ASSIGN_OR_RETURN(std::vector<int64_t> bs, c.GetIntArray("block_shape", cw));
    ASSIGN_OR_RETURN(ch.block, MakeBlock(te.shape, view, off, bs, cw));
    ASSIGN_OR_RETURN(ch.begin, c.GetInt("begin", cw));
    ASSIGN_OR_RETURN(ch.end, c.GetInt("end", cw));
    if (ch.begin < 0 || ch.end <= ch.begin || ch.end > ch.block.numel) {
      return absl::InvalidArgumentError(absl::StrCat(cw, ": element range [", ch.begin, ", ",
                                                     ch.end,
                                                     ") is empty, inverted or outside "
                                                     "its block of ",
                                                     ch.block.numel));
    }
    runs += RunCount(ch.block, ch.begin, ch.end);
    if (runs > kMaxRuns) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": more than ", kMaxRuns, " contiguous runs (too fragmented)"));
    }
    const size_t ci = te.chunks.size();
    ForEachRun(ch.block, ch.begin, ch.end,
               [&](int64_t g, int64_t, int64_t len) { spans.emplace_back(g, g + len, ci); });
    te.chunks.push_back(std::move(ch));
  }
  // Coverage: every element exactly once.
  int64_t numel = 0;
  Product(te.shape, &numel);
  std::sort(spans.begin(), spans.end());
  int64_t at = 0;
  for (const auto& [b, e, ci] : spans) {
    if (b < at) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": element ", b,
                                                     " is covered twice (again by chunk ", ci,
                                                     " in ", te.chunks[ci].file, ")"));
    }
    if (b > at) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": elements [", at, ", ", b, ") are in no chunk"));
    }
    at = e;
  }
  if (at != numel) {
    return absl::InvalidArgumentError(
        absl::StrCat(tw, ": elements [", at, ", ", numel, ") are in no chunk"));
  }
  return te;
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view text) {
  ASSIGN_OR_RETURN(Json root, Json::Parse(text));
  if (!root.is_object()) return absl::InvalidArgumentError("manifest is not a JSON object");
  const char* where = "manifest";
  ASSIGN_OR_RETURN(std::string format, root.GetString("format", where));
  if (format != "trireme-checkpoint") {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest format '", format, "' is not trireme-checkpoint"));
  }
  ASSIGN_OR_RETURN(int64_t version, root.GetInt("version", where));
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest version ", version, " is not supported (this build reads ", kFormatVersion, ")"));
  }
  Manifest m;
  ASSIGN_OR_RETURN(m.step, root.GetInt("step", where));
  ASSIGN_OR_RETURN(const Json* states, root.GetArray("states", where));
  for (const Json& s : states->items()) {
    if (!s.is_string()) return absl::InvalidArgumentError("manifest: a state is not a string");
    m.states.push_back(s.string_value());
  }
  if (m.states != std::vector<std::string>{"master", "m", "v"} &&
      m.states != std::vector<std::string>{"master", "m"}) {
    return absl::InvalidArgumentError(
        "manifest: states must be [\"master\", \"m\", \"v\"] (AdamW) or [\"master\", \"m\"] (SGD)");
  }
  ASSIGN_OR_RETURN(const Json* grid, root.GetObject("grid", where));
  ASSIGN_OR_RETURN(const Json* trainer, root.GetObject("trainer", where));
  ASSIGN_OR_RETURN(const Json* engine, root.GetObject("engine", where));
  m.grid = *grid;
  m.trainer = *trainer;
  m.engine = *engine;
  RETURN_IF_ERROR(CheckEngineRecord(m.engine));
  RETURN_IF_ERROR(ParseFiles(root, &m));
  ASSIGN_OR_RETURN(const Json* tensors, root.GetObject("tensors", where));
  for (const auto& [name, t] : tensors->members()) {
    ASSIGN_OR_RETURN(m.tensors[name], ParseTensor(name, t, m));
  }
  return m;
}

}  // namespace trireme::checkpoint
