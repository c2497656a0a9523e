// Content-addressed storage for artefact bytes (adapters and checkpoints).
//
// A blob is named by the SHA-256 of its bytes and lives at
//   <dir>/sha256/<first two hex digits>/<remaining 62 hex digits>
// It is written to <dir>/tmp/ first, flushed to disk and renamed into place,
// and the folder is flushed too, so a crash leaves either the whole blob or
// none (a stray temporary file at worst, removed by the next Open()).
// Identical bytes are stored once. Which job owns which blob is the job
// store's business; this class knows only hashes.
//
// Thread-safety: every method may be called from several threads (and
// processes) at once.
#ifndef MPT_SERVER_ARTIFACT_STORE_H_
#define MPT_SERVER_ARTIFACT_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"

namespace mpt {

struct ArtifactStoreOptions {
  // fsync blobs and folders before a Put() returns. Default true; tests and
  // benchmarks that do not care about power loss may turn it off.
  bool fsync = true;
};

class ArtifactStore {
 public:
  // Opens (creating when needed) the store under `dir` and removes temporary
  // files left by an earlier crash. INTERNAL (naming the path) when the
  // folders cannot be created.
  static absl::StatusOr<std::unique_ptr<ArtifactStore>> Open(
      const std::string& dir, ArtifactStoreOptions options = {});

  ArtifactStore(const ArtifactStore&) = delete;
  ArtifactStore& operator=(const ArtifactStore&) = delete;

  // Stores `data` when its SHA-256 equals `expected_sha256` (hex, either
  // case) and returns the hash in lowercase hex; storing bytes that are
  // already there is a no-op. INVALID_ARGUMENT when `expected_sha256` is not
  // 64 hex digits; DATA_LOSS ("checksum mismatch", with both hashes) when
  // the bytes hash to something else, in which case nothing is stored;
  // INTERNAL when the disk write fails.
  absl::StatusOr<std::string> Put(absl::string_view data, absl::string_view expected_sha256);

  // A blob written piece by piece (an upload), to a temporary file of the
  // store: nothing is held in memory. Destroying it before Commit()
  // removes the temporary file.
  class BlobWriter {
   public:
    ~BlobWriter();
    BlobWriter(const BlobWriter&) = delete;
    BlobWriter& operator=(const BlobWriter&) = delete;

    // Appends `data` to the file. INTERNAL (naming the file) when the
    // write fails, or after Commit().
    absl::Status Append(absl::string_view data);
    // Bytes appended so far.
    int64_t size() const { return size_; }
    // Moves the bytes into place as Put() does and returns their hash in
    // lowercase hex, when it equals `expected_sha256` (hex, either case).
    // INVALID_ARGUMENT for a malformed hash; DATA_LOSS ("checksum
    // mismatch", with both hashes) when it differs, in which case nothing
    // is stored; INTERNAL when the disk write fails. The temporary file is
    // gone afterwards in every case; call it once.
    absl::StatusOr<std::string> Commit(absl::string_view expected_sha256);

   private:
    friend class ArtifactStore;
    BlobWriter(ArtifactStore* store, std::string path, int fd)
        : store_(store), path_(std::move(path)), fd_(fd) {}
    void Discard();

    ArtifactStore* const store_;
    const std::string path_;
    int fd_;  // -1 once closed
    Sha256 hash_;
    int64_t size_ = 0;
  };

  // Starts a blob in a temporary file. INTERNAL when it cannot be created.
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewBlob();

  // The bytes of blob `sha256`, checked against their name. INVALID_ARGUMENT
  // for a malformed hash; NOT_FOUND when there is no such blob; DATA_LOSS
  // when the bytes on disk no longer match the name (corruption); INTERNAL
  // when the file cannot be read.
  absl::StatusOr<std::string> Get(absl::string_view sha256) const;

  // Whether blob `sha256` exists (its contents are not checked).
  bool Contains(absl::string_view sha256) const;

  // Deletes blob `sha256`; OK when it is already gone. INTERNAL when the
  // file exists but cannot be removed.
  absl::Status Remove(absl::string_view sha256);

  // Where blob `sha256` (lowercase hex) lives.
  std::string PathFor(absl::string_view sha256) const;

  const std::string& dir() const { return dir_; }

 private:
  ArtifactStore(std::string dir, ArtifactStoreOptions options)
      : dir_(std::move(dir)), options_(options) {}

  // A fresh temporary file name under <dir>/tmp/.
  std::string TempPath(absl::string_view stem);
  // Renames the written, closed temporary file `tmp` to blob `sha256`'s
  // place (creating its folder; flushing it when options_.fsync); removes
  // `tmp` on failure.
  absl::Status Install(const std::string& tmp, const std::string& sha256);

  const std::string dir_;
  const ArtifactStoreOptions options_;
  std::atomic<uint64_t> temp_counter_{0};
};

}  // namespace mpt

#endif  // MPT_SERVER_ARTIFACT_STORE_H_
