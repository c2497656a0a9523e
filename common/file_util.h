// Small filesystem helpers that keep what is already stored intact when a
// write fails half-way.
#ifndef MPT_COMMON_FILE_UTIL_H_
#define MPT_COMMON_FILE_UTIL_H_

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

// The whole file. NOT_FOUND when it does not exist, INTERNAL when it cannot
// be read.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Builds a folder's new contents and swaps them in: `fill` writes into an
// empty sibling temporary folder; when it succeeds that folder replaces
// `folder` (the old one is removed only after the new one is in place).
// When `fill` fails its status is returned and `folder` is left as it was.
absl::Status ReplaceFolder(const std::string& folder,
                           const std::function<absl::Status(const std::string& tmp)>& fill);

}  // namespace mpt

#endif  // MPT_COMMON_FILE_UTIL_H_
