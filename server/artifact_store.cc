#include "server/artifact_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

absl::Status CheckHash(absl::string_view sha256) {
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256: \"", sha256, "\" is not 64 hexadecimal digits"));
  }
  return absl::OkStatus();
}

absl::Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(path, "cannot open to flush");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError(path, "fsync failed");
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(path, "write failed");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ArtifactStore>> ArtifactStore::Open(const std::string& dir,
                                                                   ArtifactStoreOptions options) {
  if (dir.empty()) return absl::InvalidArgumentError("artifact store folder is empty");
  std::error_code ec;
  for (const char* sub : {"sha256", "tmp"}) {
    fs::path p = fs::path(dir) / sub;
    fs::create_directories(p, ec);
    if (ec) return absl::InternalError(absl::StrCat(p.string(), ": cannot create: ", ec.message()));
  }
  // Temporary files are never renamed into place after a restart: whatever
  // is there was left by a crash.
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / "tmp", ec)) {
    std::error_code remove_ec;
    fs::remove_all(entry.path(), remove_ec);
  }
  return std::unique_ptr<ArtifactStore>(new ArtifactStore(dir, options));
}

std::string ArtifactStore::PathFor(absl::string_view sha256) const {
  return absl::StrCat(dir_, "/sha256/", sha256.substr(0, 2), "/", sha256.substr(2));
}

std::string ArtifactStore::TempPath(absl::string_view stem) {
  return absl::StrCat(dir_, "/tmp/", stem, ".", ::getpid(), ".", temp_counter_.fetch_add(1));
}

absl::Status ArtifactStore::Install(const std::string& tmp, const std::string& sha256) {
  const std::string path = PathFor(sha256);
  const std::string shard = absl::StrCat(dir_, "/sha256/", sha256.substr(0, 2));
  std::error_code ec;
  fs::create_directories(shard, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(shard, ": cannot create: ", ec.message()));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status status = ErrnoError(path, "rename failed");
    ::unlink(tmp.c_str());
    return status;
  }
  if (options_.fsync) return FsyncPath(shard);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ArtifactStore::Put(absl::string_view data,
                                               absl::string_view expected_sha256) {
  if (absl::Status s = CheckHash(expected_sha256); !s.ok()) return s;
  const std::string expected = absl::AsciiStrToLower(expected_sha256);
  const std::string actual = Sha256Hex(data);
  if (actual != expected) {
    return absl::DataLossError(absl::StrCat("checksum mismatch: expected sha256 ", expected,
                                            ", the ", data.size(), " bytes received hash to ",
                                            actual, "; nothing was stored"));
  }
  if (Contains(actual)) return actual;

  const std::string tmp = TempPath(actual.substr(0, 16));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(tmp, "cannot create");
  absl::Status status = WriteAll(fd, data, tmp);
  if (status.ok() && options_.fsync && ::fsync(fd) != 0) status = ErrnoError(tmp, "fsync failed");
  if (::close(fd) != 0 && status.ok()) status = ErrnoError(tmp, "close failed");
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  if (absl::Status s = Install(tmp, actual); !s.ok()) return s;
  return actual;
}

absl::StatusOr<std::unique_ptr<ArtifactStore::BlobWriter>> ArtifactStore::NewBlob() {
  const std::string tmp = TempPath("upload");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(tmp, "cannot create");
  return std::unique_ptr<BlobWriter>(new BlobWriter(this, tmp, fd));
}

ArtifactStore::BlobWriter::~BlobWriter() { Discard(); }

void ArtifactStore::BlobWriter::Discard() {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
}

absl::Status ArtifactStore::BlobWriter::Append(absl::string_view data) {
  if (fd_ < 0) return absl::InternalError(absl::StrCat(path_, ": already closed"));
  absl::Status status = WriteAll(fd_, data, path_);
  if (!status.ok()) {
    Discard();
    return status;
  }
  hash_.Update(data);
  size_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ArtifactStore::BlobWriter::Commit(absl::string_view expected_sha256) {
  if (fd_ < 0) return absl::InternalError(absl::StrCat(path_, ": already closed"));
  if (absl::Status s = CheckHash(expected_sha256); !s.ok()) {
    Discard();
    return s;
  }
  const std::string expected = absl::AsciiStrToLower(expected_sha256);
  const std::string actual = hash_.HexDigest();
  if (actual != expected) {
    Discard();
    return absl::DataLossError(absl::StrCat("checksum mismatch: expected sha256 ", expected,
                                            ", the ", size_, " bytes received hash to ", actual,
                                            "; nothing was stored"));
  }
  if (store_->Contains(actual)) {
    Discard();
    return actual;
  }
  absl::Status status = absl::OkStatus();
  if (store_->options_.fsync && ::fsync(fd_) != 0) status = ErrnoError(path_, "fsync failed");
  if (::close(fd_) != 0 && status.ok()) status = ErrnoError(path_, "close failed");
  fd_ = -1;
  if (!status.ok()) {
    ::unlink(path_.c_str());
    return status;
  }
  if (absl::Status s = store_->Install(path_, actual); !s.ok()) return s;
  return actual;
}

absl::StatusOr<std::string> ArtifactStore::Get(absl::string_view sha256) const {
  if (absl::Status s = CheckHash(sha256); !s.ok()) return s;
  const std::string name = absl::AsciiStrToLower(sha256);
  const std::string path = PathFor(name);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no artefact blob ", name));
    return ErrnoError(path, "cannot open");
  }
  std::string data;
  struct stat st;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) data.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError(path, "read failed");
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    data.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  const std::string actual = Sha256Hex(data);
  if (actual != name) {
    return absl::DataLossError(absl::StrCat("artefact blob ", path, " is corrupt: its ",
                                            data.size(), " bytes hash to ", actual));
  }
  return data;
}

bool ArtifactStore::Contains(absl::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st;
  return ::stat(PathFor(absl::AsciiStrToLower(sha256)).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::Status ArtifactStore::Remove(absl::string_view sha256) {
  if (absl::Status s = CheckHash(sha256); !s.ok()) return s;
  const std::string path = PathFor(absl::AsciiStrToLower(sha256));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError(path, "cannot remove");
  return absl::OkStatus();
}

}  // namespace mpt
