#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
  return ReplaceFolder(folder, fill, nullptr);
}

absl::Status ReplaceFolder(const std::string& folder,
                           const std::function<absl::Status(const std::string& tmp)>& fill,
                           const std::function<absl::Status()>& may_replace) {
  if (may_replace) {
    absl::Status allowed = may_replace();
    if (!allowed.ok()) return allowed;
  }
  std::error_code ec;
  const fs::path target(folder);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = folder + TempSuffix();
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", ec.message()));
  }
  absl::Status filled = fill(tmp);
  if (filled.ok() && may_replace) filled = may_replace();
  if (!filled.ok()) {
    fs::remove_all(tmp, ec);
    return filled;
  }
  const bool had_old = fs::exists(fs::symlink_status(target, ec));
  if (had_old &&
      ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, folder.c_str(), RENAME_EXCHANGE) == 0) {
    // One step: readers saw the old folder until now and the new one from
    // now on; `tmp` holds the old contents.
    fs::remove_all(tmp, ec);
    return absl::OkStatus();
  }
  // No exchange here (no old folder, or a file system without it): move
  // the old folder aside, the new one in, and only then drop the old one.
  const std::string old = folder + ".old" + TempSuffix();
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

namespace {

absl::Status NotReplaceable(absl::string_view label, const std::string& path,
                            absl::string_view why) {
  return absl::FailedPreconditionError(
      absl::StrCat(label, ": ", path, " ", why, "; give a new or empty folder"));
}

// True when `inner` is `outer` or lies inside it (both absolute, normal).
bool IsWithin(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckFolderReplaceable(const std::string& folder,
                                    const ReplaceableContents& contents,
                                    absl::string_view label) {
  if (folder.empty()) return absl::InvalidArgumentError(absl::StrCat(label, ": empty path"));
  struct stat st;
  if (::lstat(folder.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return absl::OkStatus();  // every folder on the way is one
    if (err == ENOTDIR) {
      // A file on the path: name it.
      fs::path prefix;
      for (const fs::path& part : fs::path(folder).lexically_normal()) {
        prefix /= part;
        struct stat on_path;
        if (::stat(prefix.c_str(), &on_path) == 0 && !S_ISDIR(on_path.st_mode)) {
          return NotReplaceable(label, folder,
                                absl::StrCat("lies under ", prefix.string(),
                                             ", which is a file, not a folder"));
        }
      }
    }
    absl::Status s = FileErrnoStatus(folder, "cannot inspect", err);
    return absl::Status(s.code(), absl::StrCat(label, ": ", s.message()));
  }
  if (S_ISLNK(st.st_mode)) return NotReplaceable(label, folder, "is a symbolic link");
  if (S_ISREG(st.st_mode)) return NotReplaceable(label, folder, "is a file, not a folder");
  if (!S_ISDIR(st.st_mode)) {
    return NotReplaceable(label, folder, "is a FIFO, a socket or a device, not a folder");
  }
  std::error_code ec;
  const fs::path here = fs::current_path(ec);
  const fs::path target = fs::weakly_canonical(fs::absolute(folder, ec), ec);
  if (!here.empty() && !target.empty() && IsWithin(fs::weakly_canonical(here, ec), target)) {
    return NotReplaceable(label, folder, "is or contains the current working folder");
  }
  std::vector<std::string> others;
  fs::directory_iterator it(folder, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    const fs::file_status status = it->symlink_status(type_ec);
    const bool allowed = fs::is_regular_file(status) &&
                         std::find(contents.files.begin(), contents.files.end(), name) !=
                             contents.files.end();
    if (!allowed) others.push_back(fs::is_directory(status) ? name + "/" : name);
  }
  if (ec) {
    absl::Status s = FileErrnoStatus(folder, "cannot list", ec.value());
    return absl::Status(s.code(), absl::StrCat(label, ": ", s.message()));
  }
  if (others.empty()) return absl::OkStatus();
  std::sort(others.begin(), others.end());
  const size_t shown = std::min<size_t>(others.size(), 5);
  std::string list = absl::StrJoin(others.begin(), others.begin() + shown, ", ");
  if (others.size() > shown) absl::StrAppend(&list, " and ", others.size() - shown, " more");
  return NotReplaceable(label, folder,
                        absl::StrCat("is not empty and is not ", contents.kind, " (it holds ",
                                     list, ")"));
}

}  // namespace mpt
