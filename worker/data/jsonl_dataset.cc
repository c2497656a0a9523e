#include "worker/data/jsonl_dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

constexpr absl::string_view kByteOrderMark = "\xEF\xBB\xBF";
constexpr size_t kReadChunkBytes = 64 * 1024;

// Turns one line at a time into examples; shared by the file and the
// in-memory readers so that both apply exactly the same rules.
class LineParser {
 public:
  LineParser(absl::string_view source_name, const JsonlOptions& options)
      : source_name_(source_name), options_(options) {}

  absl::Status LineError(int64_t line, absl::string_view problem) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name_, ":", line, ": ", problem));
  }

  absl::Status TooLong(int64_t line) const {
    return LineError(line, absl::StrCat("line is longer than the limit of ",
                                        options_.max_line_bytes, " bytes"));
  }

  // `text` is the line without its line ending.
  absl::Status AddLine(int64_t line, absl::string_view text) {
    if (line == 1 && absl::StartsWith(text, kByteOrderMark)) {
      text.remove_prefix(kByteOrderMark.size());
    }
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.size() > options_.max_line_bytes) return TooLong(line);
    if (absl::StripAsciiWhitespace(text).empty()) return absl::OkStatus();

    RETURN_IF_ERROR(CheckJsonText(text, absl::StrCat(source_name_, ":", line)));
    nlohmann::json value;
    // JSON leaves a repeated key's meaning open (nlohmann keeps the last);
    // a line that says "input" twice is refused rather than guessed at.
    std::vector<std::set<std::string>> keys;  // per open object
    std::string repeated;
    auto track_keys = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                          nlohmann::json& parsed) {
      using Event = nlohmann::json::parse_event_t;
      if (event == Event::object_start) {
        keys.emplace_back();
      } else if (event == Event::object_end && !keys.empty()) {
        keys.pop_back();
      } else if (event == Event::key && !keys.empty() && repeated.empty() &&
                 !keys.back().insert(parsed.get<std::string>()).second) {
        repeated = parsed.get<std::string>();
      }
      return true;
    };
    try {
      value = nlohmann::json::parse(text.begin(), text.end(), track_keys);
    } catch (const nlohmann::json::exception& e) {
      // e.what() reads "[json.exception.parse_error.101] parse error at
      // line 1, column 8: <reason>"; the line is always 1 here, so keep the
      // column and the reason.
      std::string what = e.what();
      size_t column = what.find("column ");
      if (column != std::string::npos) what = what.substr(column);
      // nlohmann quotes the text it last read ("...; last read: '<bytes>'"):
      // the file's own bytes, which an error must not carry back to whoever
      // named the file (a worker reads paths a job names).
      if (size_t quoted = what.find("; last read: "); quoted != std::string::npos) {
        what.erase(quoted);
      }
      return LineError(line, absl::StrCat("malformed JSON at ", what));
    }
    if (!value.is_object()) {
      return LineError(line, absl::StrCat("expected a JSON object, got ",
                                          value.type_name()));
    }
    if (!repeated.empty()) {
      return LineError(line, absl::StrCat("key ", QuoteForError(repeated),
                                          " appears more than once in an object"));
    }

    Example example;
    example.line = static_cast<int>(line);
    RETURN_IF_ERROR(GetString(value, line, "input", /*required=*/true,
                              &example.input));
    RETURN_IF_ERROR(GetString(value, line, "target", /*required=*/true,
                              &example.target));
    bool has_task = false;
    RETURN_IF_ERROR(GetString(value, line, "task", /*required=*/false,
                              &example.task, &has_task));
    if (has_task && example.task.empty()) {
      return LineError(line, "field \"task\" is empty");
    }
    if (!has_task) example.task = options_.default_task;
    if (!options_.allowed_tasks.empty() &&
        options_.allowed_tasks.count(example.task) == 0) {
      if (!has_task && example.task.empty()) {
        return LineError(line,
                         "no \"task\" field and no default task; expected one "
                         "of: " + AllowedTasks());
      }
      return LineError(line, absl::StrCat("unknown task ", QuoteForError(example.task),
                                          "; expected one of: ", AllowedTasks()));
    }
    examples_.push_back(std::move(example));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Example>> Finish() && {
    if (examples_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source_name_,
          ": no examples (the file is empty or holds only blank lines)"));
    }
    return std::move(examples_);
  }

 private:
  absl::Status GetString(const nlohmann::json& object, int64_t line,
                         const char* key, bool required, std::string* out,
                         bool* present = nullptr) const {
    auto it = object.find(key);
    if (it == object.end()) {
      if (required) {
        return LineError(line,
                         absl::StrCat("missing required field \"", key, "\""));
      }
      return absl::OkStatus();
    }
    if (!it->is_string()) {
      return LineError(line, absl::StrCat("field \"", key,
                                          "\" must be a string, got ",
                                          it->type_name()));
    }
    *out = it->get<std::string>();
    if (present != nullptr) *present = true;
    return absl::OkStatus();
  }

  std::string AllowedTasks() const {
    return absl::StrJoin(options_.allowed_tasks, ", ",
                         [](std::string* out, const std::string& task) {
                           absl::StrAppend(out, "\"", task, "\"");
                         });
  }

  std::string source_name_;
  const JsonlOptions& options_;
  std::vector<Example> examples_;
};

// Closes a file descriptor when it goes out of scope.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::vector<Example>> ReadJsonl(const std::string& path,
                                               absl::string_view default_task) {
  JsonlOptions options;
  options.default_task = std::string(default_task);
  return ReadJsonl(path, options);
}

absl::StatusOr<std::vector<Example>> ReadJsonl(const std::string& path,
                                               const JsonlOptions& options) {
  ASSIGN_OR_RETURN(int fd, OpenRegularFile(path));
  FdCloser closer(fd);

  LineParser parser(path, options);
  std::string pending;  // The current line so far, without its ending.
  int64_t line = 1;
  std::vector<char> buffer(kReadChunkBytes);
  while (true) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat(path, ":", line, ": read failed: ", std::strerror(errno)));
    }
    if (n == 0) break;
    absl::string_view chunk(buffer.data(), static_cast<size_t>(n));
    while (!chunk.empty()) {
      size_t newline = chunk.find('\n');
      absl::string_view piece = chunk.substr(0, newline);
      // Slack for a '\r' before the '\n' and a byte-order mark; AddLine()
      // checks the exact length.
      if (pending.size() + piece.size() >
          options.max_line_bytes + 1 + kByteOrderMark.size()) {
        return parser.TooLong(line);
      }
      pending.append(piece.data(), piece.size());
      if (newline == absl::string_view::npos) break;
      RETURN_IF_ERROR(parser.AddLine(line, pending));
      pending.clear();
      ++line;
      chunk.remove_prefix(newline + 1);
    }
  }
  if (!pending.empty()) RETURN_IF_ERROR(parser.AddLine(line, pending));
  return std::move(parser).Finish();
}

absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view content,
                                                absl::string_view source_name,
                                                const JsonlOptions& options) {
  LineParser parser(source_name, options);
  int64_t line = 1;
  while (!content.empty()) {
    size_t newline = content.find('\n');
    RETURN_IF_ERROR(parser.AddLine(line, content.substr(0, newline)));
    if (newline == absl::string_view::npos) break;
    content.remove_prefix(newline + 1);
    ++line;
  }
  return std::move(parser).Finish();
}

}  // namespace mpt
