// Reading a task's examples from a JSON Lines file.
//
// Each non-blank line is one JSON object:
//
//   {"input": "sst2 sentence: a gripping film", "target": "positive"}
//   {"input": "...", "target": "...", "task": "sst2"}
//
// - "input" and "target" are required strings (empty strings are allowed).
// - "task" is an optional, non-empty string; lines without it take the
//   caller's default task.
// - Any other field is ignored, so files may carry ids or raw labels.
// - Lines that are empty or hold only whitespace are skipped (they still
//   count for line numbers). Lines may end in "\n" or "\r\n"; the last line
//   needs no newline; a UTF-8 byte-order mark at the start is skipped.
// - A line may hold at most JsonlOptions::max_line_bytes bytes (1 MiB by
//   default, kMaxJsonlLineBytes), the line ending not counted. The file is
//   read as a stream, so a file much larger than memory is read only as far
//   as the examples it yields.
//
// Errors (the message always names the file, and the 1-based line number
// when the problem is on a line: "data/train.jsonl:7: ..."):
// - NOT_FOUND: the file does not exist.
// - PERMISSION_DENIED: the file cannot be opened for reading.
// - INVALID_ARGUMENT: the path is a directory; a line is not valid JSON, is
//   not an object, lacks "input" or "target", has a field of the wrong type,
//   has an empty "task", is longer than the limit, or names a task outside
//   the allowed set; the file holds no example at all.
// - INTERNAL: reading failed part-way (an I/O error).
//
// Thread-safety: the functions keep no state and may run concurrently.
#ifndef MPT_WORKER_DATA_JSONL_DATASET_H_
#define MPT_WORKER_DATA_JSONL_DATASET_H_

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// Default upper bound on the bytes of one line: 1 MiB.
inline constexpr size_t kMaxJsonlLineBytes = size_t{1} << 20;

struct Example {
  std::string input;
  std::string target;
  // The line's "task" field, or the default task when the line has none.
  std::string task;
  // 1-based line number in the file, for error messages downstream.
  int line = 0;
};

struct JsonlOptions {
  // Task of the lines that have no "task" field. May be empty, in which case
  // such lines get an empty task (and fail when allowed_tasks is set).
  std::string default_task;
  // When non-empty, every example's task (after the default is applied)
  // must be one of these; a line naming another task is INVALID_ARGUMENT
  // with the unknown task in the message. Empty: any task is accepted.
  std::set<std::string> allowed_tasks;
  // Longest accepted line in bytes, line ending not counted.
  size_t max_line_bytes = kMaxJsonlLineBytes;
};

// Reads every example of `path`, in file order, with the default task
// `default_task` and no restriction on task names.
absl::StatusOr<std::vector<Example>> ReadJsonl(const std::string& path,
                                               absl::string_view default_task);

// As above with all options. On success the vector is non-empty.
absl::StatusOr<std::vector<Example>> ReadJsonl(const std::string& path,
                                               const JsonlOptions& options);

// Parses JSON Lines held in memory with the same rules; `source_name` takes
// the place of the file name in error messages.
absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view content,
                                                absl::string_view source_name,
                                                const JsonlOptions& options);

}  // namespace mpt

#endif  // MPT_WORKER_DATA_JSONL_DATASET_H_
