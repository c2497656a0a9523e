#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// A name no other writer in this or another process picks at the same time.
std::string TempSuffix() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(".tmp-", getpid(), "-", counter.fetch_add(1));
}

absl::Status ErrnoError(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const std::string tmp = path + TempSuffix();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(tmp, "cannot create");
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError(tmp, "write failed");
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    absl::Status s = ErrnoError(tmp, "flush failed");
    ::unlink(tmp.c_str());
    return s;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError(path, "rename failed");
    ::unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

absl::Status FileErrnoStatus(const std::string& path, absl::string_view what, int err) {
  const std::string message = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ENAMETOOLONG:
    case ELOOP:
      return absl::InvalidArgumentError(message);
    case EISDIR:
    case ENXIO:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<int> OpenRegularFile(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty file name");
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return FileErrnoStatus(path, "cannot open", errno);
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISDIR(st.st_mode)    ? "a folder"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "a device or other special file";
    return absl::FailedPreconditionError(absl::StrCat(path, ": is ", kind, ", not a regular file"));
  }
  // O_NONBLOCK: should the path be swapped for a FIFO after the check, the
  // open still returns at once (and the fstat below refuses it).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return FileErrnoStatus(path, "cannot open", errno);
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": is not a regular file"));
  }
  // Back to blocking reads for a regular file (O_NONBLOCK has no effect on
  // them, but keep the descriptor ordinary for callers).
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) {
  absl::StatusOr<int> fd = OpenRegularFile(path);
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (::fstat(*fd, &st) != 0) {
    absl::Status s = FileErrnoStatus(path, "cannot stat", errno);
    ::close(*fd);
    return s;
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(*fd);
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": is ", st.st_size, " bytes, larger than the limit of ", max_bytes, " bytes"));
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(*fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = FileErrnoStatus(path, "read failed", errno);
      ::close(*fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      ::close(*fd);
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": larger than the limit of ", max_bytes, " bytes"));
    }
  }
  ::close(*fd);
  return out;
}

absl::Status ReplaceFolder(const std::string& folder,
                           const std::function<absl::Status(const std::string& tmp)>& fill) {
  std::error_code ec;
  const fs::path target(folder);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = folder + TempSuffix();
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", ec.message()));
  }
  absl::Status filled = fill(tmp);
  if (!filled.ok()) {
    fs::remove_all(tmp, ec);
    return filled;
  }
  const std::string old = folder + ".old" + TempSuffix();
  const bool had_old = fs::exists(target, ec);
  if (had_old) {
    fs::rename(target, old, ec);
    if (ec) {
      std::error_code ignored;
      fs::remove_all(tmp, ignored);
      return absl::InternalError(absl::StrCat(folder, ": cannot move aside: ", ec.message()));
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::error_code ignored;
    if (had_old) fs::rename(old, target, ignored);
    fs::remove_all(tmp, ignored);
    return absl::InternalError(absl::StrCat(folder, ": cannot rename: ", ec.message()));
  }
  if (had_old) fs::remove_all(old, ec);
  return absl::OkStatus();
}

}  // namespace mpt
