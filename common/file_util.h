// Small filesystem helpers that keep what is already stored intact when a
// write fails half-way.
#ifndef MPT_COMMON_FILE_UTIL_H_
#define MPT_COMMON_FILE_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>

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
// `folder` (the old one is removed only after the new one is in place).
// When `fill` fails its status is returned and `folder` is left as it was.
absl::Status ReplaceFolder(const std::string& folder,
                           const std::function<absl::Status(const std::string& tmp)>& fill);

}  // namespace mpt

#endif  // MPT_COMMON_FILE_UTIL_H_
