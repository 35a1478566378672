// The filesystem as checkpoint I/O sees it (in the manner of leveldb's Env):
// files created, appended, synced and read at offsets; directories made,
// listed, synced and removed; renames that replace or that never replace.
// PosixFileSystem() is the real one; FaultInjectingFileSystem wraps any other
// and fails the k-th call, writes half a buffer, runs out of space, or
// "crashes" (every call from then on fails and changes nothing), so tests can
// drive every failure point of a save. Implementations are thread-safe (the
// ranks of a threads job share one).
#ifndef TRIREME_RUNTIME_CHECKPOINT_FILESYSTEM_H_
#define TRIREME_RUNTIME_CHECKPOINT_FILESYSTEM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace trireme {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all `n` bytes at the end (short writes retried).
  virtual absl::Status Append(const void* data, size_t n) = 0;
  virtual absl::Status Sync() = 0;
  // Idempotent; the destructor closes too (ignoring errors).
  virtual absl::Status Close() = 0;
};

class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  // Reads up to `n` bytes at `offset` into `out`; *got is what was read (less
  // than n only at the end of the file).
  virtual absl::Status ReadAt(int64_t offset, void* out, size_t n, size_t* got) const = 0;
  virtual int64_t size() const = 0;
};

// An exclusive lock on a file (flock: advisory, released when the process
// ends however it ends), held until destroyed. The file holds one line
// naming the holder; a clean release empties it.
class FileLock {
 public:
  virtual ~FileLock() = default;
  // Replaces the file's contents with `text` + newline, synced.
  virtual absl::Status WriteHolder(const std::string& text) = 0;
  // The complete line in the file ("" if none, or not yet complete).
  virtual std::string ReadHolder() const = 0;
};

struct FileInfo {
  bool is_dir = false;
  int64_t size = 0;
  uint64_t inode = 0, device = 0;  // identity: a replaced file has another
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // A new file (AlreadyExists if `path` exists).
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> CreateFile(const std::string& path) = 0;
  virtual absl::StatusOr<std::unique_ptr<ReadableFile>> OpenForRead(const std::string& path) = 0;
  // One directory (AlreadyExists if present) / with its parents (OK if present).
  virtual absl::Status CreateDir(const std::string& path) = 0;
  virtual absl::Status CreateDirs(const std::string& path) = 0;
  // fsync of a directory: the names in it are durable.
  virtual absl::Status SyncDir(const std::string& path) = 0;
  // Atomic rename; replaces a file at `to`.
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  // Atomic rename that never replaces: AlreadyExists if anything is at `to`.
  virtual absl::Status RenameNoReplace(const std::string& from, const std::string& to) = 0;
  // The names in `dir` (no "." or ".."), in no particular order.
  virtual absl::StatusOr<std::vector<std::string>> List(const std::string& dir) = 0;
  // NotFound if nothing is at `path`.
  virtual absl::StatusOr<FileInfo> Stat(const std::string& path) = 0;
  // A file or an empty directory; NotFound if absent.
  virtual absl::Status Remove(const std::string& path) = 0;
  // A file or a directory tree; OK if absent.
  virtual absl::Status RemoveAll(const std::string& path) = 0;
  // Takes the lock on `path` (created if missing) without waiting:
  // FailedPrecondition if another holder has it, with *holder set to its
  // line (waiting up to half a second for it to be written).
  virtual absl::StatusOr<std::unique_ptr<FileLock>> TryLock(const std::string& path,
                                                            std::string* holder) = 0;

  bool Exists(const std::string& path) { return Stat(path).ok(); }
};

// The process's real filesystem (POSIX calls; renameat2 RENAME_NOREPLACE,
// or mkdir-then-rename where a filesystem lacks it).
FileSystem& PosixFileSystem();

// Wraps `base` and injects faults. Mutating calls (create, append, sync,
// mkdir, rename, remove) are counted from 1 across all threads; reads, lists
// and stats are not counted and never fail.
class FaultInjectingFileSystem : public FileSystem {
 public:
  explicit FaultInjectingFileSystem(FileSystem& base) : base_(base) {}

  // Mutating call number `k` fails (ResourceExhausted "No space left on
  // device" -- ENOSPC -- when `no_space`, else Internal "injected fault").
  void FailCall(int64_t k, bool no_space = false);
  // The Append that is mutating call `k` writes half its bytes, then fails
  // with ENOSPC (a disk that filled up mid-write).
  void ShortWriteAt(int64_t k);
  // After `k` mutating calls the process "dies": every later call, of any
  // kind, fails with Aborted and changes nothing.
  void CrashAfter(int64_t k);
  int64_t mutating_calls() const;
  bool crashed() const;

  absl::StatusOr<std::unique_ptr<WritableFile>> CreateFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<ReadableFile>> OpenForRead(const std::string& path) override;
  absl::Status CreateDir(const std::string& path) override;
  absl::Status CreateDirs(const std::string& path) override;
  absl::Status SyncDir(const std::string& path) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status RenameNoReplace(const std::string& from, const std::string& to) override;
  absl::StatusOr<std::vector<std::string>> List(const std::string& dir) override;
  absl::StatusOr<FileInfo> Stat(const std::string& path) override;
  absl::Status Remove(const std::string& path) override;
  absl::Status RemoveAll(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<FileLock>> TryLock(const std::string& path,
                                                    std::string* holder) override;

 private:
  friend class FaultyFile;
  enum class Verdict { kGo, kFail, kShort, kCrashed };
  // Counts a mutating call and says what happens to it.
  Verdict Next(absl::Status* error);
  // For calls that do not count: fails only after the crash.
  absl::Status Alive() const;

  FileSystem& base_;
  mutable std::mutex mu_;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t fail_at_ ABSL_GUARDED_BY(mu_) = -1;
  bool fail_no_space_ ABSL_GUARDED_BY(mu_) = false;
  int64_t short_at_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t crash_after_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CHECKPOINT_FILESYSTEM_H_
