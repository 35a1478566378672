#include "runtime/checkpoint/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/checkpoint/crc32c.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/status.h"

namespace trireme::checkpoint {
namespace {

constexpr char kManifest[] = "manifest.json";
constexpr char kLatest[] = "latest";
constexpr int64_t kMaxManifestBytes = int64_t{256} << 20;

std::string StepDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }
std::string RankFileName(int rank) { return absl::StrFormat("rank-%05d.safetensors", rank); }

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
bool IsStepDirName(absl::string_view s) { return absl::ConsumePrefix(&s, "step-") && AllDigits(s); }

// "host-pid-random": unique to one save of one process.
std::string SaveToken() {
  char host[64] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::random_device rd;
  return absl::StrFormat("%s-%d-%08x", host, static_cast<int>(::getpid()), rd());
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, int64_t limit) {
  absl::StatusOr<std::unique_ptr<ReadableFile>> f = PosixFileSystem().OpenForRead(path);
  if (!f.ok())
    return absl::NotFoundError(absl::StrCat("cannot read '", path, "': ", f.status().message()));
  const int64_t size = (*f)->size();
  if (size > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is ", size, " bytes, above the ", limit, "-byte limit"));
  }
  std::string text(size, '\0');
  size_t got = 0;
  RETURN_IF_ERROR((*f)->ReadAt(0, text.data(), text.size(), &got));
  if (static_cast<int64_t>(got) != size) {
    return absl::DataLossError(
        absl::StrCat("reading '", path, "' failed: ", got, " of ", size, " bytes"));
  }
  return text;
}

absl::StatusOr<ZeroEngine::State> EngineStateFromJson(const Json& e) {
  ZeroEngine::State s;
  const char* where = "manifest engine";
  ASSIGN_OR_RETURN(s.step, e.GetInt("step", where));
  ASSIGN_OR_RETURN(s.optimizer_step, e.GetInt("optimizer_step", where));
  const Json* ls = e.Find("loss_scaling");
  if (ls == nullptr || !ls->is_bool()) {
    return absl::InvalidArgumentError("manifest engine: \"loss_scaling\" is missing or not a bool");
  }
  s.loss_scaling = ls->bool_value();
  ASSIGN_OR_RETURN(double scale, e.GetNumber("loss_scale", where));
  ASSIGN_OR_RETURN(int64_t good, e.GetInt("good_steps", where));
  ASSIGN_OR_RETURN(int64_t hyst, e.GetInt("hysteresis_left", where));
  // (Ranges were checked by ParseManifest.)
  s.loss_scaler = {static_cast<float>(scale), static_cast<int>(good), static_cast<int>(hyst)};
  return s;
}

Json EngineStateToJson(const ZeroEngine::State& s) {
  return Json::Object({{"step", Json(s.step)},
                       {"optimizer_step", Json(s.optimizer_step)},
                       {"loss_scaling", Json(s.loss_scaling)},
                       {"loss_scale", Json(static_cast<double>(s.loss_scaler.scale))},
                       {"good_steps", Json(s.loss_scaler.good_steps)},
                       {"hysteresis_left", Json(s.loss_scaler.hysteresis_left)}});
}

// The chunk's key in its safetensors file.
std::string Key(const std::string& state, const std::string& tensor) {
  return absl::StrCat(state, "/", tensor);
}

// Checks a file's size and CRC32C against the manifest, then its header
// against the chunks the manifest puts in it (keys, counts; nothing else).
absl::StatusOr<SafetensorsHeader> VerifyFile(const std::string& dir, const std::string& name,
                                             const Manifest& m) {
  const std::string path = absl::StrCat(dir, "/", name);
  const FileEntry& want = m.files.at(name);
  absl::StatusOr<std::unique_ptr<ReadableFile>> file = PosixFileSystem().OpenForRead(path);
  if (!file.ok()) {
    return absl::NotFoundError(absl::StrCat("checkpoint file '", path,
                                            "' listed in the manifest: ", file.status().message()));
  }
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  int64_t size = 0;
  while (true) {
    size_t got = 0;
    RETURN_IF_ERROR((*file)->ReadAt(size, buf.data(), buf.size(), &got));
    if (got == 0) break;
    crc = Crc32cExtend(crc, buf.data(), got);
    size += static_cast<int64_t>(got);
  }
  if (size != want.size) {
    return absl::DataLossError(absl::StrCat("checkpoint file '", path, "' is ", size,
                                            " bytes; the manifest says ", want.size,
                                            size < want.size ? " (truncated)" : ""));
  }
  if (crc != want.crc) {
    return absl::DataLossError(absl::StrCat("checkpoint file '", path, "' has CRC32C ",
                                            Crc32cHex(crc), "; the manifest says ",
                                            Crc32cHex(want.crc), " (corrupted)"));
  }
  ASSIGN_OR_RETURN(SafetensorsHeader h, ReadSafetensorsHeader(path));
  size_t referenced = 0;
  for (const auto& [tname, t] : m.tensors) {
    for (const Chunk& c : t.chunks) {
      if (c.file != name) continue;
      for (const std::string& state : m.states) {
        const SafetensorsEntry* e = h.Find(Key(state, tname));
        if (e == nullptr || e->dtype != "F32" || e->end - e->begin != 4 * (c.end - c.begin)) {
          return absl::DataLossError(absl::StrCat(
              "checkpoint file '", path, "': tensor '", Key(state, tname),
              "' is missing or not F32 of ", c.end - c.begin, " elements as the manifest says"));
        }
        ++referenced;
      }
    }
  }
  if (referenced != h.tensors.size()) {
    for (const SafetensorsEntry& e : h.tensors) {
      const std::vector<std::string> parts = absl::StrSplit(e.name, absl::MaxSplits('/', 1));
      if (parts.size() != 2 || m.tensors.find(parts[1]) == m.tensors.end()) {
        return absl::DataLossError(
            absl::StrCat("checkpoint file '", path, "': unexpected tensor '", e.name, "'"));
      }
    }
    return absl::DataLossError(absl::StrCat("checkpoint file '", path, "' holds ", h.tensors.size(),
                                            " tensors; the manifest lists ", referenced));
  }
  return h;
}

// Assembles a global tensor's state from its chunks.
absl::Status Assemble(const std::string& dir, const Manifest& m,
                      const std::map<std::string, SafetensorsHeader>& headers,
                      const std::string& name, const std::string& state, std::vector<float>* out) {
  const TensorEntry& t = m.tensors.at(name);
  int64_t numel = 0;
  Product(t.shape, &numel);
  out->assign(numel, 0.0f);
  std::vector<float> data;
  for (const Chunk& c : t.chunks) {
    const SafetensorsHeader& h = headers.at(c.file);
    const SafetensorsEntry* e = h.Find(Key(state, name));
    data.resize(c.end - c.begin);
    RETURN_IF_ERROR(
        ReadSafetensorsF32(absl::StrCat(dir, "/", c.file), h, *e, data.data(), c.end - c.begin));
    ForEachRun(c.block, c.begin, c.end, [&](int64_t g, int64_t b, int64_t len) {
      std::copy(data.begin() + (b - c.begin), data.begin() + (b - c.begin + len), out->begin() + g);
    });
  }
  return absl::OkStatus();
}

// A contiguous piece shared by a rank's block and a saved chunk.
struct Piece {
  int64_t local = 0;  // offset in the rank's local tensor
  int64_t chunk = 0;  // offset in the chunk's data
  int64_t len = 0;
};
struct Source {
  const Chunk* chunk = nullptr;
  std::vector<Piece> pieces;
};

// The chunks overlapping `want` (a rank's block) and where: both sides' runs
// come in increasing global order, so a merge finds the intersections.
std::vector<Source> Overlaps(const Block& want, const std::vector<Chunk>& chunks) {
  struct Run {
    int64_t global, offset, len;
  };
  std::vector<Run> mine;
  ForEachRun(want, 0, want.numel, [&](int64_t g, int64_t b, int64_t len) {
    mine.push_back({g, b, len});
  });
  std::vector<Source> out;
  for (const Chunk& c : chunks) {
    std::vector<Run> theirs;
    ForEachRun(c.block, c.begin, c.end, [&](int64_t g, int64_t b, int64_t len) {
      theirs.push_back({g, b - c.begin, len});
    });
    Source src{&c, {}};
    size_t i = 0, j = 0;
    while (i < mine.size() && j < theirs.size()) {
      const Run& a = mine[i];
      const Run& b = theirs[j];
      const int64_t lo = std::max(a.global, b.global);
      const int64_t hi = std::min(a.global + a.len, b.global + b.len);
      if (lo < hi)
        src.pieces.push_back({a.offset + lo - a.global, b.offset + lo - b.global, hi - lo});
      if (a.global + a.len <= b.global + b.len) {
        ++i;
      } else {
        ++j;
      }
    }
    if (!src.pieces.empty()) out.push_back(std::move(src));
  }
  return out;
}

struct Opened {
  std::string dir;
  Manifest manifest;
  std::map<std::string, SafetensorsHeader> headers;  // of verified files
};

// What Inspect and ReadSummary return of an opened checkpoint.
ManifestSummary SummaryOf(const Opened& o);

absl::StatusOr<Opened> OpenCheckpoint(const std::string& path) {
  Opened o;
  ASSIGN_OR_RETURN(o.dir, Resolve(path));
  const std::string mpath = absl::StrCat(o.dir, "/", kManifest);
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(mpath, kMaxManifestBytes));
  auto m = ParseManifest(text);
  if (!m.ok()) return Annotate(m.status(), absl::StrCat("checkpoint manifest '", mpath, "'"));
  o.manifest = std::move(*m);
  return o;
}

absl::Status VerifyFiles(Opened& o, const std::set<std::string>& files) {
  for (const std::string& f : files) {
    ASSIGN_OR_RETURN(SafetensorsHeader h, VerifyFile(o.dir, f, o.manifest));
    o.headers[f] = std::move(h);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TensorLayout> IdentityLayout(const ParamInfo& p) {
  TensorLayout l;
  l.name = p.name;
  l.shape = p.shape;
  return l;
}

absl::StatusOr<std::string> Resolve(const std::string& path) {
  FileSystem& fs = PosixFileSystem();
  if (fs.Exists(absl::StrCat(path, "/", kManifest))) return path;
  const std::string latest = absl::StrCat(path, "/", kLatest);
  if (!fs.Exists(latest)) {
    return absl::NotFoundError(
        absl::StrCat("no checkpoint at '", path, "' (neither ", kManifest, " nor ", kLatest, ")"));
  }
  ASSIGN_OR_RETURN(std::string target, ReadSmallFile(latest, 256));
  const std::string name(absl::StripAsciiWhitespace(target));
  if (!IsStepDirName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", latest, "' names '", name, "', not a step-NNNNNNNN directory"));
  }
  const std::string dir = absl::StrCat(path, "/", name);
  if (!fs.Exists(absl::StrCat(dir, "/", kManifest))) {
    return absl::NotFoundError(
        absl::StrCat("'", latest, "' names '", name, "', which has no ", kManifest));
  }
  return dir;
}

namespace {

// ---- saving, phase by phase --------------------------------------------------------

// What one rank wrote: its file (if it owns anything) and the chunks in it.
struct ChunkRecord {
  std::string tensor;
  std::vector<int64_t> shape, view, block_offset, block_shape;
  int64_t begin = 0, end = 0;
};
struct RankRecord {
  std::string file;  // "" if the rank owns nothing to save
  int64_t size = 0;
  std::string crc32c;
  std::vector<ChunkRecord> chunks;

  Json ToJson() const {
    Json chunks_json = Json::Array();
    for (const ChunkRecord& c : chunks) {
      chunks_json.Push(Json::Object({{"tensor", Json(c.tensor)},
                                     {"shape", Json::IntArray(c.shape)},
                                     {"view", Json::IntArray(c.view)},
                                     {"block_offset", Json::IntArray(c.block_offset)},
                                     {"block_shape", Json::IntArray(c.block_shape)},
                                     {"begin", Json(c.begin)},
                                     {"end", Json(c.end)}}));
    }
    return Json::Object({{"file", Json(file)},
                         {"size", Json(size)},
                         {"crc32c", Json(crc32c)},
                         {"chunks", std::move(chunks_json)}});
  }
  // Every field checked (a rank's record arrives as text).
  static absl::StatusOr<RankRecord> FromJson(const Json& j, int rank) {
    const std::string where = absl::StrCat("rank ", rank, "'s save record");
    RankRecord r;
    ASSIGN_OR_RETURN(r.file, j.GetString("file", where));
    ASSIGN_OR_RETURN(r.size, j.GetInt("size", where));
    ASSIGN_OR_RETURN(r.crc32c, j.GetString("crc32c", where));
    ASSIGN_OR_RETURN(const Json* chunks, j.GetArray("chunks", where));
    for (const Json& c : chunks->items()) {
      ChunkRecord k;
      ASSIGN_OR_RETURN(k.tensor, c.GetString("tensor", where));
      ASSIGN_OR_RETURN(k.shape, c.GetIntArray("shape", where));
      ASSIGN_OR_RETURN(k.view, c.GetIntArray("view", where));
      ASSIGN_OR_RETURN(k.block_offset, c.GetIntArray("block_offset", where));
      ASSIGN_OR_RETURN(k.block_shape, c.GetIntArray("block_shape", where));
      ASSIGN_OR_RETURN(k.begin, c.GetInt("begin", where));
      ASSIGN_OR_RETURN(k.end, c.GetInt("end", where));
      r.chunks.push_back(std::move(k));
    }
    return r;
  }
};

// Phase 1 (leader): an empty temporary directory of this save's own (another
// job's save of the same step uses another name).
absl::StatusOr<std::string> PrepareSave(FileSystem& fs, const std::string& root,
                                        const std::string& final_dir, int64_t step) {
  if (step < 0) return absl::InvalidArgumentError(absl::StrCat("step ", step, " < 0"));
  RETURN_IF_ERROR(fs.CreateDirs(root));
  if (fs.Exists(final_dir)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "checkpoint '", final_dir, "' exists; a committed checkpoint is never overwritten"));
  }
  const std::string tmp_dir = absl::StrCat(root, "/.tmp-", StepDirName(step), ".", SaveToken());
  RETURN_IF_ERROR(fs.CreateDir(tmp_dir));
  return tmp_dir;
}

// Phase 2 (every rank): writes what it owns into tmp_dir; its record and
// the identity of its file (to check before the commit).
absl::StatusOr<RankRecord> WriteShard(Communicator& world, ZeroEngine& engine,
                                      const LayoutFn& layout, FileSystem& fs,
                                      const std::string& tmp_dir, int64_t step,
                                      const SaveOptions& o, FileInfo* written) {
  RankRecord rec;
  std::vector<SafetensorsInput> inputs;
  const bool adam = engine.options().optimizer.kind == OptimizerKind::kAdamW;
  // Host pointers to what this rank owns (the engine synchronizes first).
  ASSIGN_OR_RETURN(std::vector<ZeroEngine::OwnedSlice> owned, engine.OwnedSlices());
  for (const ZeroEngine::OwnedSlice& sl : owned) {
    ASSIGN_OR_RETURN(TensorLayout l, layout(sl.info));
    if (!l.save) continue;
    const std::string where = absl::StrCat("layout of '", sl.info.name, "'");
    ASSIGN_OR_RETURN(Block b, MakeBlock(l.shape, l.view, l.block_offset, l.block_shape, where));
    if (b.numel > sl.info.numel) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": block of ", b.numel, " elements in a parameter of ", sl.info.numel));
    }
    const int64_t begin = sl.range.begin, end = std::min(sl.range.end, b.numel);
    if (end <= begin) continue;  // only padding
    rec.chunks.push_back({l.name, l.shape, b.view, b.offset, b.shape, begin, end});
    inputs.push_back({Key("master", l.name), {end - begin}, sl.master});
    inputs.push_back({Key("m", l.name), {end - begin}, sl.m});
    if (adam) inputs.push_back({Key("v", l.name), {end - begin}, sl.v});
  }
  if (inputs.empty()) return rec;
  rec.file = RankFileName(world.rank());
  std::function<absl::Status()> midway;
  if (o.midway_fault) {
    midway = [&o, &world, step]() { return o.midway_fault(world.rank(), step); };
  }
  const std::string path = absl::StrCat(tmp_dir, "/", rec.file);
  ASSIGN_OR_RETURN(WrittenFile w, WriteSafetensors(path, inputs,
                                                   {{"format", "trireme"},
                                                    {"rank", absl::StrCat(world.rank())},
                                                    {"step", absl::StrCat(step)}},
                                                   midway, fs));
  rec.size = w.size;
  rec.crc32c = Crc32cHex(w.crc32c);
  ASSIGN_OR_RETURN(*written, fs.Stat(path));
  if (written->size != w.size) {
    return absl::DataLossError(
        absl::StrCat("'", path, "' is ", written->size, " bytes just after writing ", w.size));
  }
  return rec;
}

// Phase 3 (every rank, once all have written): its file is still the one it
// wrote (the same inode and size).
absl::Status CheckOwnFile(FileSystem& fs, const std::string& path, const FileInfo& written) {
  ASSIGN_OR_RETURN(const FileInfo now, fs.Stat(path));
  if (now.inode != written.inode || now.device != written.device || now.size != written.size) {
    return absl::DataLossError(
        absl::StrCat("'", path, "' was replaced or changed after this rank wrote it (",
                     written.size, " bytes, inode ", written.inode, "; now ", now.size,
                     " bytes, inode ", now.inode, "): not committed"));
  }
  return absl::OkStatus();
}

// Phase 4 (leader): the manifest from every rank's record; the names of the
// files the save wrote.
absl::StatusOr<std::string> AssembleManifest(const std::vector<RankRecord>& records,
                                             const ZeroEngine& engine, int64_t step,
                                             const SaveOptions& o,
                                             std::set<std::string>* expected) {
  Json files = Json::Object(), tensors = Json::Object();
  expected->insert(kManifest);
  std::map<std::string, Json> by_tensor;
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<std::string> order;
  for (const RankRecord& r : records) {
    if (!r.file.empty()) {
      expected->insert(r.file);
      files.Set(r.file, Json::Object({{"size", Json(r.size)}, {"crc32c", Json(r.crc32c)}}));
    }
    for (const ChunkRecord& c : r.chunks) {
      if (by_tensor.find(c.tensor) == by_tensor.end()) {
        by_tensor[c.tensor] = Json::Array();
        order.push_back(c.tensor);
        shapes[c.tensor] = c.shape;
      }
      by_tensor[c.tensor].Push(Json::Object({{"file", Json(r.file)},
                                             {"view", Json::IntArray(c.view)},
                                             {"block_offset", Json::IntArray(c.block_offset)},
                                             {"block_shape", Json::IntArray(c.block_shape)},
                                             {"begin", Json(c.begin)},
                                             {"end", Json(c.end)}}));
    }
  }
  for (const std::string& t : order) {
    tensors.Set(t, Json::Object({{"shape", Json::IntArray(shapes[t])},
                                 {"dtype", Json("F32")},
                                 {"chunks", std::move(by_tensor[t])}}));
  }
  Json states = Json::Array({Json("master"), Json("m")});
  if (engine.options().optimizer.kind == OptimizerKind::kAdamW) states.Push(Json("v"));
  const std::string text = Json::Object({{"format", Json("trireme-checkpoint")},
                                         {"version", Json(kFormatVersion)},
                                         {"step", Json(step)},
                                         {"states", std::move(states)},
                                         {"grid", o.grid},
                                         {"engine", EngineStateToJson(engine.state())},
                                         {"trainer", o.trainer},
                                         {"files", std::move(files)},
                                         {"tensors", std::move(tensors)}})
                               .Dump();
  // What we wrote must read back (catches a model whose chunks overlap).
  RETURN_IF_ERROR(Annotate(ParseManifest(text).status(), "the manifest being saved"));
  return text;
}

// Writes `text` to a new file at `path` and syncs it.
absl::Status WriteNewFile(FileSystem& fs, const std::string& path, const std::string& text) {
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, fs.CreateFile(path));
  absl::Status s = f->Append(text.data(), text.size());
  if (s.ok()) s = f->Sync();
  if (absl::Status c = f->Close(); s.ok()) s = c;
  return s;
}

// Phase 5 (leader): the manifest written, the directory checked to hold
// exactly this save's files, synced, and renamed to step-N without replacing
// anything. *committed says whether the rename happened.
absl::Status Commit(FileSystem& fs, const std::string& root, const std::string& tmp_dir,
                    const std::string& final_dir, const std::string& manifest,
                    const std::set<std::string>& expected, bool* committed) {
  RETURN_IF_ERROR(WriteNewFile(fs, absl::StrCat(tmp_dir, "/", kManifest), manifest));
  // Nobody else knows the directory's name, but check.
  ASSIGN_OR_RETURN(std::vector<std::string> listed, fs.List(tmp_dir));
  const std::set<std::string> found(listed.begin(), listed.end());
  if (found != expected) {
    return absl::DataLossError(absl::StrCat("'", tmp_dir, "' holds [", absl::StrJoin(found, ", "),
                                            "], not this save's [", absl::StrJoin(expected, ", "),
                                            "]: not committed"));
  }
  RETURN_IF_ERROR(fs.SyncDir(tmp_dir));
  absl::Status renamed = fs.RenameNoReplace(tmp_dir, final_dir);
  if (absl::IsAlreadyExists(renamed)) {
    return absl::AlreadyExistsError(
        absl::StrCat("checkpoint '", final_dir,
                     "' was committed by another writer first; this save is dropped"));
  }
  RETURN_IF_ERROR(renamed);
  *committed = true;
  return fs.SyncDir(root);
}

// Phase 6 (leader): `latest` names step-N (a new file renamed over it).
absl::Status PointLatest(FileSystem& fs, const std::string& root, int64_t step) {
  const std::string latest_tmp = absl::StrCat(root, "/.latest.tmp.", SaveToken());
  RETURN_IF_ERROR(WriteNewFile(fs, latest_tmp, StepDirName(step) + "\n"));
  RETURN_IF_ERROR(fs.Rename(latest_tmp, absl::StrCat(root, "/", kLatest)));
  return fs.SyncDir(root);
}

// Phase 7 (leader): the oldest committed checkpoints beyond `keep` removed;
// never step-N (just written, what `latest` names) nor anything in progress.
absl::Status Retain(FileSystem& fs, const std::string& root, int keep, int64_t step) {
  if (keep <= 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs.List(root));
  std::vector<std::pair<int64_t, std::string>> kept;
  for (const std::string& n : names) {
    int64_t st = 0;
    if (IsStepDirName(n) && absl::SimpleAtoi(n.substr(5), &st) &&
        fs.Exists(absl::StrCat(root, "/", n, "/", kManifest))) {
      kept.emplace_back(st, n);
    }
  }
  std::sort(kept.begin(), kept.end());  // oldest first
  int excess = static_cast<int>(kept.size()) - keep;
  for (size_t i = 0; i < kept.size() && excess > 0; ++i) {
    if (kept[i].second == StepDirName(step)) continue;
    RETURN_IF_ERROR(fs.RemoveAll(absl::StrCat(root, "/", kept[i].second)));
    --excess;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Save(Communicator& world, ZeroEngine& engine, const LayoutFn& layout,
                                 int64_t step, const SaveOptions& o) {
  FileSystem& fs = o.fs != nullptr ? *o.fs : PosixFileSystem();
  const std::string final_dir = absl::StrCat(o.root, "/", StepDirName(step));
  const bool lead = world.rank() == 0;
  // 1. Prepare: the leader's temporary directory; every rank learns its name.
  absl::StatusOr<std::string> prepared =
      lead ? PrepareSave(fs, o.root, final_dir, step) : absl::StatusOr<std::string>("");
  RETURN_IF_ERROR(AgreeOnStatus(world, prepared.status()));
  ASSIGN_OR_RETURN(std::vector<std::string> names, AllGatherStrings(world, *prepared));
  const std::string tmp_dir = names[0];
  // A save that fails before its commit removes what it wrote (the leader).
  const auto fail = [&](const absl::Status& agreed) {
    if (lead) fs.RemoveAll(tmp_dir).IgnoreError();
    return agreed;
  };
  // 2. Write: every rank its own file.
  FileInfo written;
  absl::StatusOr<RankRecord> mine =
      WriteShard(world, engine, layout, fs, tmp_dir, step, o, &written);
  if (absl::Status a = AgreeOnStatus(world, mine.status()); !a.ok()) return fail(a);
  // 3. Agree: each rank's file is still its own.
  absl::Status own = o.after_write ? o.after_write(world.rank(), tmp_dir) : absl::OkStatus();
  if (own.ok() && !mine->file.empty()) {
    own = CheckOwnFile(fs, absl::StrCat(tmp_dir, "/", mine->file), written);
  }
  if (absl::Status a = AgreeOnStatus(world, own); !a.ok()) return fail(a);
  // 4-7. The leader assembles the manifest from the typed records, commits,
  // points `latest` and applies retention.
  ASSIGN_OR_RETURN(std::vector<std::string> parts, AllGatherStrings(world, mine->ToJson().Dump()));
  absl::Status s;
  if (lead) {
    bool committed = false;
    s = [&]() -> absl::Status {
      std::vector<RankRecord> records;
      for (int r = 0; r < world.size(); ++r) {
        ASSIGN_OR_RETURN(Json j, Json::Parse(parts[r]));
        ASSIGN_OR_RETURN(RankRecord rec, RankRecord::FromJson(j, r));
        records.push_back(std::move(rec));
      }
      std::set<std::string> expected;
      ASSIGN_OR_RETURN(std::string manifest, AssembleManifest(records, engine, step, o, &expected));
      RETURN_IF_ERROR(Commit(fs, o.root, tmp_dir, final_dir, manifest, expected, &committed));
      RETURN_IF_ERROR(PointLatest(fs, o.root, step));
      return Retain(fs, o.root, o.keep_last, step);
    }();
    if (!s.ok() && !committed) fs.RemoveAll(tmp_dir).IgnoreError();
  }
  RETURN_IF_ERROR(AgreeOnStatus(world, s));
  return final_dir;
}

absl::StatusOr<LoadResult> Load(Communicator& world, ZeroEngine& engine, const LayoutFn& layout,
                                const std::string& path, const std::vector<TensorSpec>* expected) {
  Opened o;
  LoadResult result;
  ZeroEngine::State state;
  // Per (parameter, which): the local values, staged before the engine changes.
  std::map<std::pair<std::string, int>, std::vector<float>> staged;
  absl::Status s = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(o, OpenCheckpoint(path));
    const Manifest& m = o.manifest;
    const std::string mpath = absl::StrCat(o.dir, "/", kManifest);
    const bool adam = engine.options().optimizer.kind == OptimizerKind::kAdamW;
    if ((m.states.size() == 3) != adam) {
      return absl::InvalidArgumentError(absl::StrCat("'", mpath, "' holds optimizer states for ",
                                                     m.states.size() == 3 ? "AdamW" : "SGD",
                                                     "; this run uses ", adam ? "AdamW" : "SGD"));
    }
    if (expected != nullptr) {
      std::map<std::string, std::vector<int64_t>> want;
      for (const TensorSpec& t : *expected) want[t.name] = t.shape;
      for (const auto& [name, shape] : want) {
        if (m.tensors.find(name) == m.tensors.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", mpath, "' has no tensor '", name, "' (the model needs it)"));
        }
      }
      for (const auto& [name, t] : m.tensors) {
        if (want.find(name) == want.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", mpath, "' has unexpected tensor '", name, "' (not in the model)"));
        }
      }
    }
    ASSIGN_OR_RETURN(state, EngineStateFromJson(m.engine));
    RETURN_IF_ERROR(Annotate(engine.CheckState(state), mpath));
    // What this rank needs.
    struct Need {
      ParamInfo info;
      TensorLayout layout;
      Block block;
      std::vector<Source> sources;  // the chunks overlapping this rank's block
    };
    std::vector<Need> needs;
    std::set<std::string> files;
    for (int u = 0; u < engine.num_units(); ++u) {
      for (const ParamInfo& p : engine.unit_params(u)) {
        if (!p.tied_to.empty() || !p.requires_grad) continue;
        ASSIGN_OR_RETURN(TensorLayout l, layout(p));
        auto it = m.tensors.find(l.name);
        if (it == m.tensors.end()) {
          return absl::InvalidArgumentError(absl::StrCat("'", mpath, "' has no tensor '", l.name,
                                                         "' (needed by parameter '", p.name, "')"));
        }
        if (it->second.shape != l.shape) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", mpath, "': tensor '", l.name, "' has shape [",
                           absl::StrJoin(it->second.shape, ", "), "]; the model's is [",
                           absl::StrJoin(l.shape, ", "), "]"));
        }
        ASSIGN_OR_RETURN(Block b, MakeBlock(l.shape, l.view, l.block_offset, l.block_shape,
                                            absl::StrCat("layout of '", p.name, "'")));
        if (b.numel > p.numel) {
          return absl::InvalidArgumentError(absl::StrCat("layout of '", p.name, "': block of ",
                                                         b.numel, " elements in a parameter of ",
                                                         p.numel));
        }
        Need n{p, std::move(l), std::move(b), {}};
        n.sources = Overlaps(n.block, it->second.chunks);
        for (const Source& src : n.sources) files.insert(src.chunk->file);
        needs.push_back(std::move(n));
      }
    }
    RETURN_IF_ERROR(VerifyFiles(o, files));
    // Stage the local values: from each overlapping chunk, only its pieces.
    std::vector<float> data;
    for (const Need& n : needs) {
      for (int which = 0; which < static_cast<int>(m.states.size()); ++which) {
        std::vector<float>& local = staged[{n.info.name, which}];
        local.assign(n.info.numel, 0.0f);
        for (const Source& src : n.sources) {
          const Chunk& c = *src.chunk;
          const SafetensorsHeader& h = o.headers.at(c.file);
          data.resize(c.end - c.begin);
          RETURN_IF_ERROR(ReadSafetensorsF32(absl::StrCat(o.dir, "/", c.file), h,
                                             *h.Find(Key(m.states[which], n.layout.name)),
                                             data.data(), c.end - c.begin));
          for (const Piece& piece : src.pieces) {
            std::copy(data.begin() + piece.chunk, data.begin() + piece.chunk + piece.len,
                      local.begin() + piece.local);
          }
        }
      }
    }
    return absl::OkStatus();
  }();
  RETURN_IF_ERROR(AgreeOnStatus(world, s));
  // Validated and staged everywhere: now change the engine.
  s = engine.Restore([&](const ParamInfo& p, ParamState state, float* values) -> absl::Status {
    const int which = static_cast<int>(state);
    auto it = staged.find({p.name, which});
    if (it == staged.end()) {
      return absl::InternalError(absl::StrCat("nothing staged for '", p.name, "' state ", which));
    }
    std::copy(it->second.begin(), it->second.end(), values);
    return absl::OkStatus();
  });
  if (s.ok()) s = engine.set_state(state);
  RETURN_IF_ERROR(AgreeOnStatus(world, s));
  result.path = o.dir;
  result.step = o.manifest.step;
  result.grid = o.manifest.grid;
  result.trainer = o.manifest.trainer;
  return result;
}

absl::StatusOr<ManifestSummary> Inspect(const std::string& dir) {
  ASSIGN_OR_RETURN(Opened o, OpenCheckpoint(dir));
  std::set<std::string> files;
  for (const auto& [name, f] : o.manifest.files) files.insert(name);
  RETURN_IF_ERROR(VerifyFiles(o, files));
  return SummaryOf(o);
}

absl::StatusOr<ManifestSummary> ReadSummary(const std::string& dir) {
  ASSIGN_OR_RETURN(Opened o, OpenCheckpoint(dir));
  return SummaryOf(o);
}

std::vector<int64_t> CommittedSteps(const std::string& root) {
  std::vector<int64_t> steps;
  FileSystem& fs = PosixFileSystem();
  absl::StatusOr<std::vector<std::string>> names = fs.List(root);
  if (!names.ok()) return steps;  // no root: no steps
  for (const std::string& n : *names) {
    int64_t st = 0;
    if (IsStepDirName(n) && absl::SimpleAtoi(n.substr(5), &st) &&
        fs.Exists(absl::StrCat(root, "/", n, "/", kManifest))) {
      steps.push_back(st);
    }
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::string StepDir(const std::string& root, int64_t step) {
  return absl::StrCat(root, "/", StepDirName(step));
}

namespace {
ManifestSummary SummaryOf(const Opened& o) {
  ManifestSummary sum;
  sum.step = o.manifest.step;
  sum.states = o.manifest.states;
  sum.grid = o.manifest.grid;
  sum.trainer = o.manifest.trainer;
  sum.engine = o.manifest.engine;
  for (const auto& [name, t] : o.manifest.tensors) sum.tensors.push_back({name, t.shape});
  return sum;
}
}  // namespace

absl::StatusOr<std::vector<float>> ReadTensor(const std::string& dir, const std::string& name,
                                              const std::string& state) {
  ASSIGN_OR_RETURN(Opened o, OpenCheckpoint(dir));
  auto it = o.manifest.tensors.find(name);
  if (it == o.manifest.tensors.end()) {
    return absl::NotFoundError(absl::StrCat("no tensor '", name, "' in '", o.dir, "'"));
  }
  if (std::find(o.manifest.states.begin(), o.manifest.states.end(), state) ==
      o.manifest.states.end()) {
    return absl::NotFoundError(absl::StrCat("no state '", state, "' in '", o.dir, "'"));
  }
  std::set<std::string> files;
  for (const Chunk& c : it->second.chunks) files.insert(c.file);
  RETURN_IF_ERROR(VerifyFiles(o, files));
  std::vector<float> out;
  RETURN_IF_ERROR(Assemble(o.dir, o.manifest, o.headers, name, state, &out));
  return out;
}

}  // namespace trireme::checkpoint

namespace trireme::checkpoint {
namespace {

constexpr char kLockFile[] = ".lock";

// "host H pid P job J started T" of this process.
std::string HolderText() {
  char host[64] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::string job = "-";
  for (const char* var : {"SLURM_JOB_ID", "OMPI_MCA_orte_ess_jobid", "PMIX_NAMESPACE"}) {
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') {
      job = absl::StrCat(var, "=", v);
      break;
    }
  }
  return absl::StrFormat("host %s pid %d job %s started %s", host, static_cast<int>(::getpid()),
                         job,
                         absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()));
}

}  // namespace

absl::StatusOr<RootLock> RootLock::Acquire(const std::string& root, std::string* note,
                                           FileSystem* filesystem) {
  FileSystem& fs = filesystem != nullptr ? *filesystem : PosixFileSystem();
  if (absl::Status made = fs.CreateDirs(root); !made.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint root '", root, "' cannot be created: ", made.message()));
  }
  // Writable: a probe file, written, synced and removed.
  const std::string probe = absl::StrCat(root, "/.probe.", SaveToken());
  if (absl::Status w = WriteNewFile(fs, probe, "probe\n"); !w.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint root '", root, "' is not writable: ", w.message()));
  }
  fs.Remove(probe).IgnoreError();
  const std::string path = absl::StrCat(root, "/", kLockFile);
  std::string holder;
  absl::StatusOr<std::unique_ptr<FileLock>> taken = fs.TryLock(path, &holder);
  if (absl::IsFailedPrecondition(taken.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint root '", root, "' is in use by another job (",
        holder.empty() ? "holder unknown" : holder,
        "); one job writes a root at a time: wait for it, or use another --checkpoint_dir"));
  }
  RETURN_IF_ERROR(taken.status());
  RootLock lock;
  lock.lock_ = *std::move(taken);  // held from here: its destructor clears the holder
  const std::string previous = lock.lock_->ReadHolder();
  RETURN_IF_ERROR(lock.lock_->WriteHolder(HolderText()));
  std::vector<std::string> notes;
  if (!previous.empty()) {
    notes.push_back(absl::StrCat("took over the lock of a job that ended without releasing it (",
                                 previous, ")"));
  }
  // Temporary directories of saves that never committed: their jobs are
  // gone (this job holds the root now). Each is first renamed away -- an
  // atomic step that either wins against a commit still racing on a
  // filesystem whose locks are not coherent, or finds it gone -- and only
  // then deleted, so a commit never loses files to the sweep.
  int removed = 0;
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs.List(root));
  for (const std::string& n : names) {
    const bool save = absl::StartsWith(n, ".tmp-");
    if (!save && !absl::StartsWith(n, ".latest.tmp") && !absl::StartsWith(n, ".probe.")) continue;
    const std::string trash = absl::StrCat(root, "/.trash-", SaveToken());
    if (!fs.Rename(absl::StrCat(root, "/", n), trash).ok()) continue;  // committed or gone
    fs.RemoveAll(trash).IgnoreError();
    if (save) ++removed;
  }
  if (removed > 0) {
    notes.push_back(absl::StrCat("removed ", removed, " unfinished save", removed == 1 ? "" : "s",
                                 " of a job that is gone"));
  }
  if (note != nullptr) *note = absl::StrJoin(notes, "; ");
  return lock;
}

}  // namespace trireme::checkpoint
