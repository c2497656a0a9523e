// Small filesystem helpers that keep what is already stored intact when a
// write fails half-way.
#ifndef MPT_COMMON_FILE_UTIL_H_
#define MPT_COMMON_FILE_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// Writes `contents` to a temporary file beside `path`, flushes it to disk
// and renames it over `path`. INTERNAL (naming the path) on failure, with
// any existing file untouched.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// The largest file ReadFile reads unless told otherwise: 256 MiB.
inline constexpr uint64_t kMaxReadFileBytes = uint64_t{256} << 20;

// Opens `path` for reading, for every reader of this project (one error
// contract). The file must be a regular file (after following symbolic
// links): a FIFO, a socket, a device or a folder is refused before it is
// opened, so that nothing blocks, and the open itself does not block.
// Returns a file descriptor the caller owns (close it), or:
// - NOT_FOUND: the path, or a folder on it, does not exist;
// - PERMISSION_DENIED: it, or a folder on the way, cannot be read or searched;
// - INVALID_ARGUMENT: the name is unusable (too long, a symbolic-link loop);
// - FAILED_PRECONDITION: it exists but is not a regular file;
// - INTERNAL: any other system error.
// Every message starts with the path.
absl::StatusOr<int> OpenRegularFile(const std::string& path);

// The whole file, opened by OpenRegularFile (same errors), or
// FAILED_PRECONDITION when it is larger than `max_bytes`, INTERNAL when a
// read fails.
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     uint64_t max_bytes = kMaxReadFileBytes);

// The status for a failed system call on `path`, errno mapped as
// OpenRegularFile documents: "<path>: <what>: <strerror>".
absl::Status FileErrnoStatus(const std::string& path, absl::string_view what, int err);

// Builds a folder's new contents and swaps them in: `fill` writes into an
// empty sibling temporary folder; when it succeeds that folder replaces
// `folder` in one step where the file system can exchange two names
// (renameat2 RENAME_EXCHANGE; otherwise the old one is moved aside first),
// and the old one is removed only after the new one is in place.
// When `fill` fails its status is returned and `folder` is left as it was.
absl::Status ReplaceFolder(const std::string& folder,
                           const std::function<absl::Status(const std::string& tmp)>& fill);

// As above, with `may_replace` asked first, before anything is created, and
// again just before the swap (the folder may have changed while `fill`
// ran): when it fails, its status is returned and `folder` is left as it
// was. For writes a user asked for, with CheckFolderReplaceable().
absl::Status ReplaceFolder(const std::string& folder,
                           const std::function<absl::Status(const std::string& tmp)>& fill,
                           const std::function<absl::Status()>& may_replace);

// What a folder may hold and still be replaced wholesale by a write a user
// asked for (a download): what an earlier write of the same kind left.
struct ReplaceableContents {
  // Names of regular files at the folder's top level, e.g.
  // {"adapter_config.json", "adapter_model.safetensors"}.
  std::vector<std::string> files;
  // What a folder of them is called in messages: "an adapter folder".
  std::string kind;
};

// Whether ReplaceFolder(folder, ...) may replace `folder` without deleting
// anything the user did not ask to replace. OK when `folder` does not exist
// (and nothing on its path is a file), is an empty folder, or holds nothing
// but regular files named in `contents.files`. Otherwise
// FAILED_PRECONDITION "<label>: <folder> <why>; give a new or empty folder",
// where <why> is one of
//   "is a file, not a folder" (also for a file on its path, then named)
//   "is a symbolic link" / "is a FIFO, a socket or a device, not a folder"
//   "is or contains the current working folder"
//   "is not empty and is not <kind> (it holds old_run/, README.txt)"
// (at most 5 of the other entries named, folders ending in "/"). A folder
// that cannot be read: FileErrnoStatus's code, led by `label`.
absl::Status CheckFolderReplaceable(const std::string& folder,
                                    const ReplaceableContents& contents,
                                    absl::string_view label);

}  // namespace mpt

#endif  // MPT_COMMON_FILE_UTIL_H_
