#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
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

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat(path, ": cannot open"));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read failed"));
  return out.str();
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
