// Sharded checkpoints of a ZeroEngine, independent of the grid that wrote
// them: one format per logical (global) tensor -- name, global shape, f32 --
// never tied to unit padding, bucket layout, dp, tp, pp or ZeRO stage, so a
// checkpoint loads onto any other grid.
//
// Layout on disk (`root` is the checkpoint directory a trainer is given):
//   root/step-00000010/manifest.json          format, grid, engine and trainer
//                                             state, files (size, CRC32C),
//                                             tensors and their chunks
//   root/step-00000010/rank-00003.safetensors what world rank 3 owns: for each
//                                             chunk "master/<tensor>",
//                                             "m/<tensor>", "v/<tensor>" (F32)
//   root/latest                               "step-00000010\n"
//   root/.tmp-step-00000012/                  a save in progress (never loaded)
//
// A rank's chunk of a tensor is a block of it (a hyperrectangle in a
// row-major `view` of the global shape, e.g. [C, 3, C] for a QKV weight whose
// TP rank holds one slice of each of q, k and v) and, inside the block, the
// flat range of elements whose master and optimizer state the rank owns.
//
// Commit protocol (Save): every rank writes and fsyncs its file into the
// temporary directory; all ranks agree that every write succeeded; rank 0
// writes and fsyncs the manifest, renames the directory into place and then
// replaces `latest` by an atomic rename; retention deletes the oldest
// committed checkpoints beyond keep_last, never the target of `latest` or a
// save in progress. A committed checkpoint is never overwritten. A crash at
// any point leaves the previous checkpoint and `latest` intact.
//
// Load validates everything before touching the engine -- manifest structure
// and version, file names (no path may leave the directory), file sizes and
// CRC32C, safetensors headers, chunk bounds, overlap and coverage of every
// tensor, shapes against the model, missing and unexpected tensors -- and
// fails on every rank together with a message naming file, tensor and offset.
#ifndef TRIREME_RUNTIME_CHECKPOINT_CHECKPOINT_H_
#define TRIREME_RUNTIME_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/filesystem.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/json.h"
#include "runtime/zero/engine.h"

namespace trireme::checkpoint {

// Where a rank's local parameter sits in a global tensor. The local tensor's
// first prod(block_shape) elements are the block, row-major; any elements
// after them are padding (a vocabulary padded for TP), neither saved nor
// loaded.
struct TensorLayout {
  std::string name;                   // the global tensor
  std::vector<int64_t> shape;         // its global shape
  std::vector<int64_t> view;          // a row-major refinement of shape; empty: shape
  std::vector<int64_t> block_offset;  // in view; empty: zeros
  std::vector<int64_t> block_shape;   // in view; empty: the whole view
  // false: another rank saves these elements (a TP-replicated parameter off
  // TP rank 0, a pipeline-duplicated tied head); still loaded.
  bool save = true;
};
// The layout of every parameter the engine holds, by its ParamInfo.
using LayoutFn = std::function<absl::StatusOr<TensorLayout>(const ParamInfo&)>;
// Local = global, saved by its owner: for models without TP.
absl::StatusOr<TensorLayout> IdentityLayout(const ParamInfo& p);

// A global tensor the model expects (for missing / unexpected checks).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

struct SaveOptions {
  std::string root;               // created if missing
  int keep_last = 0;              // retention: committed checkpoints kept (0: all)
  Json grid = Json::Object();     // how the writer was laid out (informational)
  Json trainer = Json::Object();  // the caller's state: data position, config, ...
  // Fault injection (tests; //:train's TRIREME_FAULT_SAVE): called on every
  // rank halfway through writing its file. An error aborts that rank's write,
  // and the save then fails on every rank, naming it.
  std::function<absl::Status(int world_rank, int64_t step)> midway_fault;
  // Tests: called on every rank once every rank has written its file (the
  // save's temporary directory), before each rank checks its own file and
  // the leader commits -- e.g. to tamper with what was written.
  std::function<absl::Status(int world_rank, const std::string& tmp_dir)> after_write;
  // Where the files go: nullptr is the real filesystem (PosixFileSystem());
  // tests pass a FaultInjectingFileSystem. Shared by the ranks of a process.
  FileSystem* fs = nullptr;
};

// Saves `engine` as checkpoint `step` under options.root. Collective over
// `world` (every rank of every engine); returns the committed directory on
// every rank, or the same error on every rank (naming the rank that failed).
//
// The files go to a temporary directory unique to this save
// (.tmp-step-N.<host>-<pid>-<random>), so no other job writing into the
// same root can touch them; before the commit every rank checks that its
// file is still the one it wrote (inode and size), the leader that the
// directory holds exactly this save's files, and the commit renames it to
// step-N/ without replacing anything (renameat2 RENAME_NOREPLACE): if
// another writer committed step N first, this save fails (AlreadyExists)
// and removes its own temporary directory, as every failed save does
// wherever it can. `latest` is replaced atomically, so it always names a
// complete checkpoint.
absl::StatusOr<std::string> Save(Communicator& world, ZeroEngine& engine, const LayoutFn& layout,
                                 int64_t step, const SaveOptions& options);

// One job's exclusive hold on a checkpoint root, for as long as it lives:
// an flock(2) on ROOT/.lock, whose text names the holder (host, pid, mpirun
// or Slurm job id, start time). The kernel drops the lock when the holding
// process ends, however it ends, so the lock of a job that died is free and
// is taken over (with a note naming it). On one machine, and on a shared
// filesystem whose locks are coherent across clients (NFSv4, Lustre with
// flock, GPFS), a second job is refused; where a filesystem ignores flock
// (some FUSE mounts, NFS mounted with `nolock`) two jobs can each hold it --
// the unique temporary directories and the non-replacing commit then still
// keep every committed checkpoint complete and unmixed.
class RootLock {
 public:
  // Creates `root` if missing, proves it writable (a probe file written,
  // synced and removed), and takes the lock; FailedPrecondition naming the
  // holder if another job has it. Also removes temporary directories left
  // by saves of jobs that are gone (none can be in progress: this job holds
  // the root). `note` (optional) gets what was taken over or removed.
  // `fs`: nullptr is the real filesystem.
  static absl::StatusOr<RootLock> Acquire(const std::string& root, std::string* note = nullptr,
                                          FileSystem* fs = nullptr);
  RootLock() = default;
  RootLock(RootLock&& o) noexcept = default;
  RootLock& operator=(RootLock&& o) noexcept = default;
  ~RootLock() = default;  // releases the lock (and empties its holder line)
  bool held() const { return lock_ != nullptr; }

 private:
  std::unique_ptr<FileLock> lock_;
};

struct LoadResult {
  std::string path;  // the checkpoint directory loaded
  int64_t step = 0;
  Json grid, trainer;
};

// A checkpoint directory (one holding manifest.json), or a root whose
// `latest` names one. NotFound if neither.
absl::StatusOr<std::string> Resolve(const std::string& path);

// Validates, then restores `engine` (tensors and engine state). Collective over
// `world`; on any error no engine is modified and every rank gets the error.
// `expected` (optional): the model's global tensors; the checkpoint must hold
// exactly these, with these shapes.
absl::StatusOr<LoadResult> Load(Communicator& world, ZeroEngine& engine, const LayoutFn& layout,
                                const std::string& path,
                                const std::vector<TensorSpec>* expected = nullptr);

// --- offline inspection (tools, tests); not collective ---
struct ManifestSummary {
  int64_t step = 0;
  std::vector<TensorSpec> tensors;
  std::vector<std::string> states;  // "master", "m"[, "v"]
  Json grid, trainer, engine;
};
// Reads and fully validates the checkpoint at `dir` (every file's size and
// CRC32C included).
absl::StatusOr<ManifestSummary> Inspect(const std::string& dir);
// The manifest alone, parsed and validated (no file is read): cheap, for
// checks before a load, which then verifies every file.
absl::StatusOr<ManifestSummary> ReadSummary(const std::string& dir);
// The steps of the committed checkpoints under `root` (step-N directories
// holding a manifest), ascending; whatever `latest` says.
std::vector<int64_t> CommittedSteps(const std::string& root);
// ROOT/step-NNNNNNNN.
std::string StepDir(const std::string& root, int64_t step);
// The full global tensor `name`, state "master", "m" or "v".
absl::StatusOr<std::vector<float>> ReadTensor(const std::string& dir, const std::string& name,
                                              const std::string& state);

}  // namespace trireme::checkpoint

#endif  // TRIREME_RUNTIME_CHECKPOINT_CHECKPOINT_H_
