// Faults of the coordinator's own storage: a folder or file it cannot
// write, a blob damaged or lost on disk. A write fault during an upload is
// UNAVAILABLE (the worker retries; the stage is not charged), logged once
// per interval; stores that cannot be written are refused at open; a
// damaged blob is replaced by the same bytes uploaded again; every error
// names the file.
//
// "Unwritable" is made with the immutable attribute when the test runs as
// root (root ignores permission bits), else by taking the write bits away;
// a test that can do neither is skipped.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "server/artifact_store.h"
#include "server/coordinator.h"
#include "server/job_store.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::AdapterBlobFor;
using ::mpt::testing::Complete;
using ::mpt::testing::FindStage;
using ::mpt::testing::FreshTempDir;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::Upload;

// Makes `path` (a file or a folder) unwritable until destroyed.
class Unwritable {
 public:
  explicit Unwritable(std::string path) : path_(std::move(path)) {
    if (::geteuid() != 0) {
      struct stat st;
      if (::stat(path_.c_str(), &st) != 0) return;
      mode_ = st.st_mode & 07777;
      ok_ = ::chmod(path_.c_str(), mode_ & ~0222) == 0;
      by_mode_ = ok_;
      return;
    }
    ok_ = SetImmutable(true);
  }
  ~Unwritable() { Restore(); }
  Unwritable(const Unwritable&) = delete;
  Unwritable& operator=(const Unwritable&) = delete;

  bool ok() const { return ok_; }
  void Restore() {
    if (!ok_) return;
    if (by_mode_) {
      ::chmod(path_.c_str(), mode_);
    } else {
      SetImmutable(false);
    }
    ok_ = false;
  }

 private:
  bool SetImmutable(bool on) {
    int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    int flags = 0;
    bool done = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    if (done) {
      flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
      done = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    }
    ::close(fd);
    return done;
  }

  const std::string path_;
  bool ok_ = false;
  bool by_mode_ = false;
  mode_t mode_ = 0;
};

#define MAKE_UNWRITABLE(var, path)                                                  \
  Unwritable var(path);                                                             \
  if (!var.ok()) GTEST_SKIP() << "cannot make " << (path) << " unwritable here"

// The lines logged at WARNING or above while it lives.
class LogCapture : public LogListener {
 public:
  LogCapture() { AddLogListener(this); }
  ~LogCapture() override { RemoveLogListener(this); }
  void OnLogLine(const LogRecord& record) override {
    if (record.severity < logging_internal::Severity::kWarning) return;
    absl::MutexLock lock(&mu_);
    lines_.push_back(record.text);
  }
  std::vector<std::string> Containing(const std::string& text) {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const std::string& line : lines_) {
      if (absl::StrContains(line, text)) out.push_back(line);
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

void Flip(const std::string& path, std::streamoff at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  const char c = static_cast<char>(f.get());
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x55));
}

// ---------------------------------------------------------------------------
// The artefact store

TEST(ArtifactStoreFaults, OpenRefusesAFolderItCannotWrite) {
  const std::string dir = FreshTempDir("blobs_unwritable");
  ASSERT_TRUE(ArtifactStore::Open(dir).ok());
  for (const std::string& folder : {dir + "/tmp", dir + "/sha256", dir}) {
    MAKE_UNWRITABLE(guard, folder);
    auto store = ArtifactStore::Open(dir);
    ASSERT_FALSE(store.ok()) << folder;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
    EXPECT_TRUE(absl::StartsWith(store.status().message(), folder + ":")) << store.status();
    EXPECT_TRUE(absl::StrContains(store.status().message(), "cannot be written"))
        << store.status();
  }
  EXPECT_TRUE(ArtifactStore::Open(dir).ok());  // writable again
}

TEST(ArtifactStoreFaults, AFailedWriteIsUnavailableNamingTheFileAndTheError) {
  const std::string dir = FreshTempDir("blobs_write_fault");
  ArtifactStoreOptions options;
  options.fsync = false;
  auto store = ArtifactStore::Open(dir, options);
  ASSERT_TRUE(store.ok()) << store.status();
  {
    MAKE_UNWRITABLE(guard, dir + "/tmp");
    const std::string reason = std::strerror(::geteuid() == 0 ? EPERM : EACCES);
    auto blob = (*store)->NewBlob();
    ASSERT_FALSE(blob.ok());
    EXPECT_EQ(blob.status().code(), absl::StatusCode::kUnavailable) << blob.status();
    EXPECT_TRUE(absl::StartsWith(blob.status().message(), dir + "/tmp/upload."))
        << blob.status();
    EXPECT_TRUE(absl::StrContains(blob.status().message(), reason)) << blob.status();
    auto put = (*store)->Put("bytes", Sha256Hex("bytes"));
    EXPECT_EQ(put.status().code(), absl::StatusCode::kUnavailable) << put.status();
  }
  // A blob's folder that cannot take the rename.
  auto blob = (*store)->NewBlob();
  ASSERT_TRUE(blob.ok()) << blob.status();
  ASSERT_TRUE((*blob)->Append("bytes").ok());
  const std::string sha = Sha256Hex("bytes");
  const std::string shard = dir + "/sha256/" + sha.substr(0, 2);
  std::filesystem::create_directories(shard);
  MAKE_UNWRITABLE(guard, shard);
  auto committed = (*blob)->Commit(sha);
  ASSERT_FALSE(committed.ok());
  EXPECT_EQ(committed.status().code(), absl::StatusCode::kUnavailable) << committed.status();
  EXPECT_TRUE(absl::StrContains(committed.status().message(), (*store)->PathFor(sha)))
      << committed.status();
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));  // nothing left behind
}

TEST(ArtifactStoreFaults, TheSameBytesReplaceADamagedBlob) {
  const std::string dir = FreshTempDir("blobs_repair");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string data(20000, 'a');
  const std::string sha = Sha256Hex(data);
  const std::string path = (*store)->PathFor(sha);
  ASSERT_TRUE((*store)->Put(data, sha).ok());

  // Intact: kept as it is (the same file), nothing said.
  const auto inode = [&] {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  const auto before = inode();
  std::string repaired;
  ASSERT_TRUE((*store)->Put(data, sha, &repaired).ok());
  EXPECT_EQ(repaired, "");
  EXPECT_EQ(inode(), before);

  // One byte flipped: Put() replaces it.
  Flip(path, 1234);
  ASSERT_EQ((*store)->Get(sha).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE((*store)->Put(data, sha, &repaired).ok());
  EXPECT_TRUE(absl::StrContains(repaired, path)) << repaired;
  EXPECT_TRUE(absl::StrContains(repaired, "hash to")) << repaired;
  auto got = (*store)->Get(sha);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, data);

  // Cut short: an upload (BlobWriter) replaces it.
  std::filesystem::resize_file(path, 100);
  auto blob = (*store)->NewBlob();
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE((*blob)->Append(data).ok());
  ASSERT_TRUE((*blob)->Commit(sha).ok());
  EXPECT_TRUE(absl::StrContains((*blob)->repaired(), "100 bytes instead of 20000"))
      << (*blob)->repaired();
  got = (*store)->Get(sha);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, data);
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));
}

TEST(ArtifactStoreFaults, AMissingOrUnreadableBlobNamesItsFile) {
  const std::string dir = FreshTempDir("blobs_missing");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string sha = Sha256Hex("gone");
  auto got = (*store)->Get(sha);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), (*store)->PathFor(sha)))
      << got.status();
  // A folder where the blob should be: cannot be read, which is data loss.
  std::filesystem::create_directories((*store)->PathFor(sha));
  got = (*store)->Get(sha);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), (*store)->PathFor(sha)))
      << got.status();
}

// ---------------------------------------------------------------------------
// The coordinator

class CoordinatorStorageFaultTest : public ::mpt::testing::CoordinatorTest {};

TEST_F(CoordinatorStorageFaultTest, AnUnwritableStoreDelaysTheUploadWithoutFailingTheStage) {
  OpenFresh("storage_fault_upload", /*on_disk=*/true);
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  const std::string blob = AdapterBlobFor(*a);
  LogCapture log;
  {
    MAKE_UNWRITABLE(guard, files_.artifacts + "/tmp");
    for (int i = 0; i < 5; ++i) {
      auto up = Upload(core_.get(), a->id(), "adapter", blob);
      ASSERT_FALSE(up.ok());
      EXPECT_EQ(up.status().code(), absl::StatusCode::kUnavailable) << up.status();
      EXPECT_TRUE(absl::StrContains(up.status().message(), files_.artifacts + "/tmp/"))
          << up.status();
    }
    // Logged once for the five failures.
    EXPECT_EQ(log.Containing("artefact store:").size(), 1u);
    clock_->Advance(Coordinator::kStorageFaultLogInterval);
    EXPECT_FALSE(Upload(core_.get(), a->id(), "adapter", blob).ok());
    const std::vector<std::string> lines = log.Containing("artefact store:");
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_TRUE(absl::StrContains(lines[1], "4 more")) << lines[1];
    // The stage still runs its first attempt: the fault was not its own.
    auto j = core_->GetJob(job);
    ASSERT_TRUE(j.ok());
    EXPECT_EQ(j->state(), mpt::v1::RUNNING);
    EXPECT_EQ(j->stages(0).state(), mpt::v1::RUNNING);
    EXPECT_EQ(j->stages(0).attempts(), 1);
    EXPECT_EQ(j->artifacts_size(), 0);
  }
  // Writable again: the worker's next try goes through and the job ends.
  auto up = Upload(core_.get(), a->id(), "adapter", blob);
  ASSERT_TRUE(up.ok()) << up.status();
  ASSERT_TRUE(Complete(core_.get(), a->id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::SUCCEEDED);
  EXPECT_TRUE(std::filesystem::is_empty(files_.artifacts + "/tmp"));
}

TEST_F(CoordinatorStorageFaultTest, ADamagedBlobIsRepairedByTheNextUploadOfItsBytes) {
  OpenFresh("storage_fault_repair", /*on_disk=*/true);
  const std::string w = Register(core_.get());
  const std::string first = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  const std::string blob = AdapterBlobFor(*a);
  auto art = Upload(core_.get(), a->id(), "adapter", blob);
  ASSERT_TRUE(art.ok()) << art.status();
  ASSERT_TRUE(Complete(core_.get(), a->id()).ok());
  ASSERT_EQ(JobStateOf(core_.get(), first), mpt::v1::SUCCEEDED);

  const std::string path = files_.artifacts + "/sha256/" + art->sha256().substr(0, 2) + "/" +
                           art->sha256().substr(2);
  Flip(path, static_cast<std::streamoff>(blob.size() / 2));
  ASSERT_EQ(core_->ReadArtifact(art->name()).status().code(), absl::StatusCode::kDataLoss);

  // The same job again makes the same bytes: they replace the damaged copy.
  LogCapture log;
  const std::string second = Submit(SourceRequest("a"));
  auto b = Poll(core_.get(), w);
  ASSERT_TRUE(b.has_value());
  auto again = Upload(core_.get(), b->id(), "adapter", blob);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->sha256(), art->sha256());
  ASSERT_TRUE(Complete(core_.get(), b->id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), second), mpt::v1::SUCCEEDED);
  const std::vector<std::string> lines = log.Containing("was damaged");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], path)) << lines[0];
  // Both jobs' adapters read back whole.
  auto read = core_->ReadArtifact(art->name());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->data, blob);
  read = core_->ReadArtifact(again->name());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->data, blob);
}

TEST_F(CoordinatorStorageFaultTest, ARecordedArtefactWhoseFileIsGoneIsDataLossNamingIt) {
  OpenFresh("storage_fault_missing", /*on_disk=*/true);
  const std::string w = Register(core_.get());
  Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  auto art = Upload(core_.get(), a->id(), "checkpoint", "step 10 state", 10);
  ASSERT_TRUE(art.ok()) << art.status();
  const std::string path = files_.artifacts + "/sha256/" + art->sha256().substr(0, 2) + "/" +
                           art->sha256().substr(2);
  ASSERT_TRUE(std::filesystem::remove(path));
  auto read = core_->ReadArtifact(art->name());
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_TRUE(absl::StrContains(read.status().message(), path)) << read.status();
  EXPECT_TRUE(absl::StrContains(read.status().message(), art->name())) << read.status();
  // An artefact that was never recorded is still NOT_FOUND.
  EXPECT_EQ(core_->ReadArtifact(a->job() + "/artifacts/none").status().code(),
            absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------
// The job store

TEST(JobStoreFaults, OpenRefusesADatabaseItCannotWrite) {
  const std::string path = FreshTempDir("store_readonly") + "/jobs.db";
  { ASSERT_TRUE(SqliteJobStore::Open(path).ok()); }
  MAKE_UNWRITABLE(guard, path);
  auto store = SqliteJobStore::Open(path);
  ASSERT_FALSE(store.ok()) << "opened a database it cannot write";
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), path)) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "cannot be written")) << store.status();
  guard.Restore();
  EXPECT_TRUE(SqliteJobStore::Open(path).ok());  // the refusal released the file
}

TEST(JobStoreFaults, SqliteErrorsNameTheDatabaseFile) {
  // The file can be written but its folder cannot: SQLite cannot create
  // the write-ahead log beside it.
  const std::string dir = FreshTempDir("store_folder_readonly");
  const std::string path = dir + "/jobs.db";
  { ASSERT_TRUE(SqliteJobStore::Open(path).ok()); }
  ASSERT_FALSE(std::filesystem::exists(path + "-wal"));
  MAKE_UNWRITABLE(guard, dir);
  auto store = SqliteJobStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::StrContains(store.status().message(), "job store " + path + ":"))
      << store.status();
}

}  // namespace
}  // namespace mpt
