// Content-addressed storage for artefact bytes (adapters and checkpoints).
//
// A blob is named by the SHA-256 of its bytes and lives at
//   <dir>/sha256/<first two hex digits>/<remaining 62 hex digits>
// It is written to <dir>/tmp/ first, flushed to disk and renamed into place,
// and the folder is flushed too, so a crash leaves either the whole blob or
// none (a stray temporary file at worst, removed by the next Open()).
// Identical bytes are stored once; a stored copy that no longer matches its
// name (damaged on disk) is replaced when the same bytes are stored again.
// Which job owns which blob is the job store's business; this class knows
// only hashes.
//
// Errors: a failed write into the store (full disk, read-only or immutable
// folder, I/O error) is UNAVAILABLE naming the file and the errno's text:
// the coordinator's storage is at fault, not the bytes, and the writer may
// retry once it is fixed.
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
  // folders cannot be created; FAILED_PRECONDITION (naming the folder and
  // the errno's text) when `dir`, `dir`/tmp or `dir`/sha256 exists but a
  // file cannot be created and removed there.
  static absl::StatusOr<std::unique_ptr<ArtifactStore>> Open(
      const std::string& dir, ArtifactStoreOptions options = {});

  ArtifactStore(const ArtifactStore&) = delete;
  ArtifactStore& operator=(const ArtifactStore&) = delete;

  // Stores `data` when its SHA-256 equals `expected_sha256` (hex, either
  // case) and returns the hash in lowercase hex; storing bytes that are
  // already there intact (same size, same hash: the stored file is read) is
  // a no-op, and a stored copy that is damaged is replaced atomically, in
  // which case `repaired` (when not null) receives a line saying so.
  // INVALID_ARGUMENT when `expected_sha256` is not 64 hex digits; DATA_LOSS
  // ("checksum mismatch", with both hashes) when the bytes hash to
  // something else, in which case nothing is stored; UNAVAILABLE when the
  // disk write fails.
  absl::StatusOr<std::string> Put(absl::string_view data, absl::string_view expected_sha256,
                                  std::string* repaired = nullptr);

  // A blob written piece by piece (an upload), to a temporary file of the
  // store: nothing is held in memory. Destroying it before Commit()
  // removes the temporary file.
  class BlobWriter {
   public:
    ~BlobWriter();
    BlobWriter(const BlobWriter&) = delete;
    BlobWriter& operator=(const BlobWriter&) = delete;

    // Appends `data` to the file. UNAVAILABLE (naming the file and the
    // errno's text) when the write fails; INTERNAL after Commit() or a
    // failed Append().
    absl::Status Append(absl::string_view data);
    // Bytes appended so far.
    int64_t size() const { return size_; }
    // Moves the bytes into place as Put() does (replacing a damaged stored
    // copy, see repaired()) and returns their hash in lowercase hex, when it
    // equals `expected_sha256` (hex, either case). INVALID_ARGUMENT for a
    // malformed hash; DATA_LOSS ("checksum mismatch", with both hashes)
    // when it differs, in which case nothing is stored; UNAVAILABLE when
    // the disk write fails. The temporary file is gone afterwards in every
    // case; call it once.
    absl::StatusOr<std::string> Commit(absl::string_view expected_sha256);
    // After a Commit() that replaced a damaged stored copy: a line saying
    // which file and what was wrong with it (for the log); empty otherwise.
    const std::string& repaired() const { return repaired_; }

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
    std::string repaired_;
  };

  // Starts a blob in a temporary file. UNAVAILABLE (naming it and the
  // errno's text) when it cannot be created.
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewBlob();

  // A blob read piece by piece (a download): one piece in memory at a
  // time, and the file held open, so a blob removed meanwhile still reads
  // to its end. Pieces read in order from the start are hashed as they
  // go, and the piece that completes the blob is DATA_LOSS instead when
  // the whole no longer matches the name (pieces out of order, as Range
  // requests ask for, are not checked).
  class BlobReader {
   public:
    ~BlobReader();
    BlobReader(const BlobReader&) = delete;
    BlobReader& operator=(const BlobReader&) = delete;

    // The blob's size when it was opened.
    int64_t size() const { return size_; }
    // Up to `max` bytes from `offset` into `out` (replacing its contents);
    // fewer only where the blob ends. DATA_LOSS naming the file when the
    // read fails, the file is shorter than it was, or (see above) the
    // bytes no longer match the name; INVALID_ARGUMENT for an offset
    // outside [0, size()].
    absl::Status Read(int64_t offset, size_t max, std::string* out);
    // The whole blob, read in order from the start (so checked), with
    // Read()'s errors.
    absl::StatusOr<std::string> ReadAll();

   private:
    friend class ArtifactStore;
    BlobReader(std::string path, std::string sha256, int fd, int64_t size)
        : path_(std::move(path)), sha256_(std::move(sha256)), fd_(fd), size_(size) {}

    const std::string path_;
    const std::string sha256_;  // lowercase hex: the name
    const int fd_;
    const int64_t size_;
    Sha256 hash_;
    int64_t hashed_ = 0;  // bytes hashed in order from the start; -1: out of order
  };

  // Opens blob `sha256` for reading. INVALID_ARGUMENT for a malformed hash;
  // NOT_FOUND (naming the file) when there is no such blob; DATA_LOSS
  // naming the file when it cannot be opened (I/O error, permissions);
  // UNAVAILABLE when the process is out of file descriptors or memory.
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenBlob(absl::string_view sha256) const;

  // The bytes of blob `sha256`, checked against their name: OpenBlob() and
  // BlobReader::ReadAll(), with their errors.
  absl::StatusOr<std::string> Get(absl::string_view sha256) const;

  // Whether blob `sha256` exists (its contents are not checked).
  bool Contains(absl::string_view sha256) const;

  // Deletes blob `sha256`; OK when it is already gone. UNAVAILABLE when the
  // file exists but cannot be removed.
  absl::Status Remove(absl::string_view sha256);

  // Where blob `sha256` (lowercase hex) lives.
  std::string PathFor(absl::string_view sha256) const;

  const std::string& dir() const { return dir_; }

 private:
  ArtifactStore(std::string dir, ArtifactStoreOptions options)
      : dir_(std::move(dir)), options_(options) {}

  // What is stored under the name `sha256` (lowercase hex) for bytes of
  // `size` bytes with that hash: nothing, exactly those bytes, or something
  // else (`damage` says what: wrong size, wrong hash, unreadable).
  enum class Existing { kMissing, kIntact, kDamaged };
  Existing CheckExisting(const std::string& sha256, int64_t size, std::string* damage) const;
  // The log line for a damaged blob `sha256` replaced.
  std::string RepairNote(const std::string& sha256, const std::string& damage) const;
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
