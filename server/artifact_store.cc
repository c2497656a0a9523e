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

// A write into the store failed (full disk, quota, read-only or
// immutable folder, I/O error): the fault is the coordinator's storage,
// not the uploaded data, and goes away once it is fixed. UNAVAILABLE, so
// that the uploader retries later; names the file and the errno's text.
absl::Status WriteError(const std::string& path, const char* what, int error = errno) {
  return absl::UnavailableError(
      absl::StrCat(path, ": ", what, ": ", std::strerror(error),
                   " (the coordinator's artefact store cannot be written; retry once it can)"));
}

// A stored blob could not be read. DATA_LOSS naming the file, except for a
// shortage of the process's own resources (UNAVAILABLE: retry).
absl::Status ReadError(const std::string& path, const char* what, int error = errno) {
  const std::string message =
      absl::StrCat("artefact blob ", path, ": ", what, ": ", std::strerror(error));
  if (error == EMFILE || error == ENFILE || error == ENOMEM || error == EAGAIN) {
    return absl::UnavailableError(message);
  }
  return absl::DataLossError(message);
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
  if (fd < 0) return WriteError(path, "cannot open to flush");
  int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) return WriteError(path, "fsync failed", error);
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return WriteError(path, "write failed");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Creates and removes a file in `folder`: whether blobs can be written
// there. FAILED_PRECONDITION naming the folder and the errno's text.
absl::Status ProbeWritable(const std::string& folder) {
  const std::string probe = absl::StrCat(folder, "/.write-probe.", ::getpid());
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        folder, ": cannot be written (creating a file there failed: ", std::strerror(errno),
        "); the artefact store must be able to write its folders"));
  }
  ::close(fd);
  if (::unlink(probe.c_str()) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(folder, ": cannot be written (removing the file ", probe,
                     " failed: ", std::strerror(errno), ")"));
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
  // The folders may exist and still refuse writes (read-only file system,
  // immutable folder, permissions): found now rather than by the first
  // upload.
  for (const std::string& folder : {dir, dir + "/tmp", dir + "/sha256"}) {
    if (absl::Status s = ProbeWritable(folder); !s.ok()) return s;
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
    return WriteError(shard, "cannot create", ec.value());
  }
  // Atomic, also over an existing (damaged) blob of the same name.
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status status = WriteError(path, "rename failed");
    ::unlink(tmp.c_str());
    return status;
  }
  if (options_.fsync) return FsyncPath(shard);
  return absl::OkStatus();
}

ArtifactStore::Existing ArtifactStore::CheckExisting(const std::string& sha256, int64_t size,
                                                    std::string* damage) const {
  const std::string path = PathFor(sha256);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Existing::kMissing;
    *damage = absl::StrCat("cannot be opened: ", std::strerror(errno));
    return Existing::kDamaged;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    *damage = "not a regular file";
    return Existing::kDamaged;
  }
  if (st.st_size != size) {
    ::close(fd);
    *damage = absl::StrCat("it has ", st.st_size, " bytes instead of ", size);
    return Existing::kDamaged;
  }
  Sha256 hash;
  char buffer[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      *damage = absl::StrCat("cannot be read: ", std::strerror(errno));
      ::close(fd);
      return Existing::kDamaged;
    }
    if (n == 0) break;
    hash.Update(absl::string_view(buffer, static_cast<size_t>(n)));
  }
  ::close(fd);
  const std::string actual = hash.HexDigest();
  if (actual != sha256) {
    *damage = absl::StrCat("its ", size, " bytes hash to ", actual);
    return Existing::kDamaged;
  }
  return Existing::kIntact;
}

absl::StatusOr<std::string> ArtifactStore::Put(absl::string_view data,
                                               absl::string_view expected_sha256,
                                               std::string* repaired) {
  if (absl::Status s = CheckHash(expected_sha256); !s.ok()) return s;
  const std::string expected = absl::AsciiStrToLower(expected_sha256);
  const std::string actual = Sha256Hex(data);
  if (actual != expected) {
    return absl::DataLossError(absl::StrCat("checksum mismatch: expected sha256 ", expected,
                                            ", the ", data.size(), " bytes received hash to ",
                                            actual, "; nothing was stored"));
  }
  std::string damage;
  const Existing existing = CheckExisting(actual, static_cast<int64_t>(data.size()), &damage);
  if (existing == Existing::kIntact) return actual;

  const std::string tmp = TempPath(actual.substr(0, 16));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return WriteError(tmp, "cannot create");
  absl::Status status = WriteAll(fd, data, tmp);
  if (status.ok() && options_.fsync && ::fsync(fd) != 0) status = WriteError(tmp, "fsync failed");
  if (::close(fd) != 0 && status.ok()) status = WriteError(tmp, "close failed");
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  if (absl::Status s = Install(tmp, actual); !s.ok()) return s;
  if (existing == Existing::kDamaged && repaired != nullptr) {
    *repaired = RepairNote(actual, damage);
  }
  return actual;
}

std::string ArtifactStore::RepairNote(const std::string& sha256, const std::string& damage) const {
  return absl::StrCat("artefact blob ", PathFor(sha256), " was damaged (", damage,
                      "); replaced it with the newly uploaded bytes, which hash to its name");
}

absl::StatusOr<std::unique_ptr<ArtifactStore::BlobWriter>> ArtifactStore::NewBlob() {
  const std::string tmp = TempPath("upload");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return WriteError(tmp, "cannot create");
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
  // The same bytes may be stored already; a damaged or vanished copy is
  // replaced by these, which were just verified.
  std::string damage;
  const Existing existing = store_->CheckExisting(actual, size_, &damage);
  if (existing == Existing::kIntact) {
    Discard();
    return actual;
  }
  absl::Status status = absl::OkStatus();
  if (store_->options_.fsync && ::fsync(fd_) != 0) status = WriteError(path_, "fsync failed");
  if (::close(fd_) != 0 && status.ok()) status = WriteError(path_, "close failed");
  fd_ = -1;
  if (!status.ok()) {
    ::unlink(path_.c_str());
    return status;
  }
  if (absl::Status s = store_->Install(path_, actual); !s.ok()) return s;
  if (existing == Existing::kDamaged) repaired_ = store_->RepairNote(actual, damage);
  return actual;
}

ArtifactStore::BlobReader::~BlobReader() { ::close(fd_); }

absl::Status ArtifactStore::BlobReader::Read(int64_t offset, size_t max, std::string* out) {
  out->clear();
  if (offset < 0 || offset > size_) {
    return absl::InvalidArgumentError(absl::StrCat("artefact blob ", path_, ": offset ", offset,
                                                   " outside its ", size_, " bytes"));
  }
  const size_t want = static_cast<size_t>(std::min<int64_t>(size_ - offset, static_cast<int64_t>(max)));
  out->resize(want);
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd_, out->data() + got, want - got, offset + static_cast<int64_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      out->clear();
      return ReadError(path_, "read failed");
    }
    if (n == 0) {
      out->clear();
      return absl::DataLossError(absl::StrCat("artefact blob ", path_, " is corrupt: it ends at ",
                                              offset + static_cast<int64_t>(got), " of its ",
                                              size_, " bytes"));
    }
    got += static_cast<size_t>(n);
  }
  if (hashed_ != offset) {
    hashed_ = -1;  // out of order: not checked
    return absl::OkStatus();
  }
  hash_.Update(*out);
  hashed_ += static_cast<int64_t>(want);
  if (hashed_ == size_) {
    hashed_ = -1;  // checked once
    const std::string actual = hash_.HexDigest();
    if (actual != sha256_) {
      out->clear();
      return absl::DataLossError(absl::StrCat("artefact blob ", path_, " is corrupt: its ", size_,
                                              " bytes hash to ", actual));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ArtifactStore::BlobReader>> ArtifactStore::OpenBlob(
    absl::string_view sha256) const {
  if (absl::Status s = CheckHash(sha256); !s.ok()) return s;
  const std::string name = absl::AsciiStrToLower(sha256);
  const std::string path = PathFor(name);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("artefact blob ", path, " does not exist"));
    }
    return ReadError(path, "cannot open");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = ReadError(path, "cannot stat");
    ::close(fd);
    return s;
  }
  return std::unique_ptr<BlobReader>(new BlobReader(path, name, fd, st.st_size));
}

absl::StatusOr<std::string> ArtifactStore::BlobReader::ReadAll() {
  std::string data;
  data.reserve(static_cast<size_t>(size_));
  std::string piece;
  do {
    absl::Status s = Read(static_cast<int64_t>(data.size()), size_t{1} << 20, &piece);
    if (!s.ok()) return s;
    data += piece;
  } while (static_cast<int64_t>(data.size()) < size_);
  return data;
}

absl::StatusOr<std::string> ArtifactStore::Get(absl::string_view sha256) const {
  absl::StatusOr<std::unique_ptr<BlobReader>> reader = OpenBlob(sha256);
  if (!reader.ok()) return reader.status();
  return (*reader)->ReadAll();
}

bool ArtifactStore::Contains(absl::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st;
  return ::stat(PathFor(absl::AsciiStrToLower(sha256)).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::Status ArtifactStore::Remove(absl::string_view sha256) {
  if (absl::Status s = CheckHash(sha256); !s.ok()) return s;
  const std::string path = PathFor(absl::AsciiStrToLower(sha256));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return WriteError(path, "cannot remove");
  return absl::OkStatus();
}

}  // namespace mpt
