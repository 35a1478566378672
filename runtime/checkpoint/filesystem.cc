#include "runtime/checkpoint/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace trireme {
namespace {

// The call's errno as a status naming what was done to which path; EEXIST
// and ENOENT keep their meaning (AlreadyExists, NotFound), ENOSPC is
// ResourceExhausted.
absl::Status Errno(absl::string_view what, const std::string& path, int err = errno) {
  const std::string msg = absl::StrCat(what, " '", path, "': ", std::strerror(err));
  switch (err) {
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

class PosixWritable : public WritableFile {
 public:
  PosixWritable(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixWritable() override { Close().IgnoreError(); }
  absl::Status Append(const void* data, size_t n) override {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return Errno("writing", path_);
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    if (::fsync(fd_) != 0) return Errno("fsync of", path_);
    return absl::OkStatus();
  }
  absl::Status Close() override {
    if (fd_ < 0) return absl::OkStatus();
    const int r = ::close(fd_);
    fd_ = -1;
    if (r != 0) return Errno("closing", path_);
    return absl::OkStatus();
  }

 private:
  int fd_;
  const std::string path_;
};

class PosixReadable : public ReadableFile {
 public:
  PosixReadable(int fd, std::string path, int64_t size)
      : fd_(fd), path_(std::move(path)), size_(size) {}
  ~PosixReadable() override { ::close(fd_); }
  absl::Status ReadAt(int64_t offset, void* out, size_t n, size_t* got) const override {
    *got = 0;
    char* p = static_cast<char*>(out);
    while (*got < n) {
      const ssize_t r = ::pread(fd_, p + *got, n - *got, offset + static_cast<int64_t>(*got));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Errno("reading", path_);
      }
      if (r == 0) break;
      *got += static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }
  int64_t size() const override { return size_; }

 private:
  const int fd_;
  const std::string path_;
  const int64_t size_;
};

class PosixLock : public FileLock {
 public:
  PosixLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixLock() override {
    // A clean release leaves no holder behind: a holder named in the file
    // later means a job that ended without releasing (killed, crashed).
    if (::ftruncate(fd_, 0) == 0) ::fsync(fd_);
    ::close(fd_);  // releases the flock
  }
  absl::Status WriteHolder(const std::string& text) override {
    const std::string line = text + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, line.data(), line.size(), 0) < 0 ||
        ::fsync(fd_) != 0) {
      return Errno("writing the lock", path_);
    }
    return absl::OkStatus();
  }
  std::string ReadHolder() const override { return ReadLine(fd_); }
  static std::string ReadLine(int fd) {
    char buf[512] = {0};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0 || buf[n - 1] != '\n') return "";  // none, or not yet complete
    return std::string(buf, n - 1);
  }

 private:
  const int fd_;
  const std::string path_;
};

class Posix : public FileSystem {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> CreateFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return Errno("creating", path);
    return std::unique_ptr<WritableFile>(new PosixWritable(fd, path));
  }
  absl::StatusOr<std::unique_ptr<ReadableFile>> OpenForRead(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Errno("opening", path);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const absl::Status s = Errno("stat of", path);
      ::close(fd);
      return s;
    }
    return std::unique_ptr<ReadableFile>(new PosixReadable(fd, path, st.st_size));
  }
  absl::Status CreateDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) != 0) return Errno("creating", path);
    return absl::OkStatus();
  }
  absl::Status CreateDirs(const std::string& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return Errno("creating", path, ec.value());
    return absl::OkStatus();
  }
  absl::Status SyncDir(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno("opening for fsync", path);
    const int r = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (r != 0) return Errno("fsync of", path, err);
    return absl::OkStatus();
  }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return Errno("renaming", from);
    return absl::OkStatus();
  }
  absl::Status RenameNoReplace(const std::string& from, const std::string& to) override {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
      return absl::OkStatus();
    }
    if (errno == EEXIST || errno == ENOTEMPTY) return Errno("renaming onto", to, EEXIST);
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return Errno("renaming", from);
    // A filesystem without RENAME_NOREPLACE: an empty directory claims the
    // name (mkdir is atomic), then the rename replaces that empty directory.
    if (::mkdir(to.c_str(), 0755) != 0) return Errno("claiming", to);
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const absl::Status err = Errno("renaming", from);
      ::rmdir(to.c_str());  // the claim must not block every later rename to `to`
      return err;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> List(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return Errno("listing", dir);
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    return names;
  }
  absl::StatusOr<FileInfo> Stat(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return Errno("stat of", path);
    FileInfo f;
    f.is_dir = S_ISDIR(st.st_mode);
    f.size = st.st_size;
    f.inode = st.st_ino;
    f.device = st.st_dev;
    return f;
  }
  absl::Status Remove(const std::string& path) override {
    if (::remove(path.c_str()) != 0) return Errno("removing", path);
    return absl::OkStatus();
  }
  absl::Status RemoveAll(const std::string& path) override {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) return Errno("removing", path, ec.value());
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<FileLock>> TryLock(const std::string& path,
                                                    std::string* holder) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Errno("opening the lock", path);
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      return std::unique_ptr<FileLock>(new PosixLock(fd, path));
    }
    const int err = errno;
    // Not ours: read the holder's line and close, touching nothing. The
    // holder writes its line just after taking the lock: give it a moment.
    std::string line = PosixLock::ReadLine(fd);
    for (int i = 0; err == EWOULDBLOCK && i < 50 && line.empty(); ++i) {
      ::usleep(10000);
      line = PosixLock::ReadLine(fd);
    }
    ::close(fd);
    if (err != EWOULDBLOCK) return Errno("locking", path, err);
    if (holder != nullptr) *holder = line;
    return absl::FailedPreconditionError(absl::StrCat("'", path, "' is locked"));
  }
};

}  // namespace

FileSystem& PosixFileSystem() {
  static Posix* fs = new Posix();  // never destroyed
  return *fs;
}

// ---- fault injection -------------------------------------------------------------

void FaultInjectingFileSystem::FailCall(int64_t k, bool no_space) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_at_ = k;
  fail_no_space_ = no_space;
}
void FaultInjectingFileSystem::ShortWriteAt(int64_t k) {
  std::lock_guard<std::mutex> lock(mu_);
  short_at_ = k;
}
void FaultInjectingFileSystem::CrashAfter(int64_t k) {
  std::lock_guard<std::mutex> lock(mu_);
  crash_after_ = k;
}
int64_t FaultInjectingFileSystem::mutating_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}
bool FaultInjectingFileSystem::crashed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return crash_after_ >= 0 && calls_ >= crash_after_;
}

FaultInjectingFileSystem::Verdict FaultInjectingFileSystem::Next(absl::Status* error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (crash_after_ >= 0 && calls_ >= crash_after_) {
    *error = absl::AbortedError(absl::StrCat("injected crash after mutating call ", crash_after_));
    return Verdict::kCrashed;
  }
  const int64_t k = ++calls_;
  if (k == short_at_) {
    *error = absl::ResourceExhaustedError(
        absl::StrCat("injected short write (mutating call ", k, "): No space left on device"));
    return Verdict::kShort;
  }
  if (k == fail_at_) {
    *error = fail_no_space_
                 ? absl::ResourceExhaustedError(absl::StrCat("injected fault (mutating call ", k,
                                                             "): No space left on device"))
                 : absl::InternalError(absl::StrCat("injected fault (mutating call ", k, ")"));
    return Verdict::kFail;
  }
  return Verdict::kGo;
}

absl::Status FaultInjectingFileSystem::Alive() const {
  if (crashed()) return absl::AbortedError("injected crash: the process is gone");
  return absl::OkStatus();
}

class FaultyFile : public WritableFile {
 public:
  FaultyFile(FaultInjectingFileSystem& fs, std::unique_ptr<WritableFile> base)
      : fs_(fs), base_(std::move(base)) {}
  absl::Status Append(const void* data, size_t n) override {
    absl::Status error;
    switch (fs_.Next(&error)) {
      case FaultInjectingFileSystem::Verdict::kGo:
        return base_->Append(data, n);
      case FaultInjectingFileSystem::Verdict::kShort:
        base_->Append(data, n / 2).IgnoreError();
        return error;
      default:
        return error;
    }
  }
  absl::Status Sync() override {
    absl::Status error;
    if (fs_.Next(&error) != FaultInjectingFileSystem::Verdict::kGo) return error;
    return base_->Sync();
  }
  absl::Status Close() override { return base_->Close(); }

 private:
  FaultInjectingFileSystem& fs_;
  std::unique_ptr<WritableFile> base_;
};

#define TRIREME_FAULT_POINT()                         \
  do {                                                \
    absl::Status fault_;                              \
    if (Next(&fault_) != Verdict::kGo) return fault_; \
  } while (0)

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::CreateFile(
    const std::string& path) {
  TRIREME_FAULT_POINT();
  absl::StatusOr<std::unique_ptr<WritableFile>> f = base_.CreateFile(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<WritableFile>(new FaultyFile(*this, *std::move(f)));
}
absl::StatusOr<std::unique_ptr<ReadableFile>> FaultInjectingFileSystem::OpenForRead(
    const std::string& path) {
  if (absl::Status s = Alive(); !s.ok()) return s;
  return base_.OpenForRead(path);
}
absl::Status FaultInjectingFileSystem::CreateDir(const std::string& path) {
  TRIREME_FAULT_POINT();
  return base_.CreateDir(path);
}
absl::Status FaultInjectingFileSystem::CreateDirs(const std::string& path) {
  TRIREME_FAULT_POINT();
  return base_.CreateDirs(path);
}
absl::Status FaultInjectingFileSystem::SyncDir(const std::string& path) {
  TRIREME_FAULT_POINT();
  return base_.SyncDir(path);
}
absl::Status FaultInjectingFileSystem::Rename(const std::string& from, const std::string& to) {
  TRIREME_FAULT_POINT();
  return base_.Rename(from, to);
}
absl::Status FaultInjectingFileSystem::RenameNoReplace(const std::string& from,
                                                       const std::string& to) {
  TRIREME_FAULT_POINT();
  return base_.RenameNoReplace(from, to);
}
absl::StatusOr<std::vector<std::string>> FaultInjectingFileSystem::List(const std::string& dir) {
  if (absl::Status s = Alive(); !s.ok()) return s;
  return base_.List(dir);
}
absl::StatusOr<FileInfo> FaultInjectingFileSystem::Stat(const std::string& path) {
  if (absl::Status s = Alive(); !s.ok()) return s;
  return base_.Stat(path);
}
absl::Status FaultInjectingFileSystem::Remove(const std::string& path) {
  TRIREME_FAULT_POINT();
  return base_.Remove(path);
}
absl::Status FaultInjectingFileSystem::RemoveAll(const std::string& path) {
  TRIREME_FAULT_POINT();
  return base_.RemoveAll(path);
}
absl::StatusOr<std::unique_ptr<FileLock>> FaultInjectingFileSystem::TryLock(const std::string& path,
                                                                            std::string* holder) {
  TRIREME_FAULT_POINT();
  return base_.TryLock(path, holder);
}

#undef TRIREME_FAULT_POINT

}  // namespace trireme
