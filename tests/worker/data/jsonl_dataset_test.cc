#include "worker/data/jsonl_dataset.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Writes `content` to a fresh file under TEST_TMPDIR and returns its path.
std::string WriteFile(const std::string& name, const std::string& content) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  return path;
}

// The error of reading `content` with `options`; fails the test on success.
absl::Status ReadError(const std::string& name, const std::string& content,
                       const JsonlOptions& options = {}) {
  std::string path = WriteFile(name, content);
  absl::StatusOr<std::vector<Example>> result = ReadJsonl(path, options);
  EXPECT_FALSE(result.ok()) << name << " was accepted";
  if (result.ok()) return absl::OkStatus();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr(path));
  return result.status();
}

TEST(JsonlDataset, ReadsExamplesInOrderWithLineNumbers) {
  std::string path = WriteFile(
      "basic.jsonl",
      "{\"input\": \"a\", \"target\": \"b\"}\n"
      "\n"
      "   \t\n"
      "{\"input\": \"c\", \"target\": \"d\", \"task\": \"other\", \"id\": 7}\n"
      "{\"target\": \"f\", \"input\": \"e \\u00e9\"}");  // no final newline
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(path, "sst2");
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 3u);
  EXPECT_EQ((*examples)[0].input, "a");
  EXPECT_EQ((*examples)[0].target, "b");
  EXPECT_EQ((*examples)[0].task, "sst2");
  EXPECT_EQ((*examples)[0].line, 1);
  EXPECT_EQ((*examples)[1].input, "c");
  EXPECT_EQ((*examples)[1].task, "other");
  EXPECT_EQ((*examples)[1].line, 4);  // blank lines still count
  EXPECT_EQ((*examples)[2].input, "e \xC3\xA9");
  EXPECT_EQ((*examples)[2].target, "f");
  EXPECT_EQ((*examples)[2].line, 5);
}

TEST(JsonlDataset, AcceptsCrLfAndByteOrderMarkAndEmptyStrings) {
  std::string path = WriteFile(
      "crlf.jsonl",
      "\xEF\xBB\xBF{\"input\": \"\", \"target\": \"x\"}\r\n"
      "{\"input\": \"y\", \"target\": \"\"}\r\n");
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(path, "t");
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 2u);
  EXPECT_EQ((*examples)[0].input, "");
  EXPECT_EQ((*examples)[0].target, "x");
  EXPECT_EQ((*examples)[1].input, "y");
  EXPECT_EQ((*examples)[1].target, "");
  EXPECT_EQ((*examples)[1].line, 2);
}

TEST(JsonlDataset, ReadsLinesLongerThanTheReadBuffer) {
  // 200 KB of input: the line spans several 64 KiB reads.
  std::string input(200 * 1000, 'x');
  std::string path = WriteFile(
      "long.jsonl",
      absl::StrCat("{\"input\": \"short\", \"target\": \"1\"}\n",
                   "{\"input\": \"", input, "\", \"target\": \"2\"}\n",
                   "{\"input\": \"short\", \"target\": \"3\"}\n"));
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(path, "t");
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 3u);
  EXPECT_EQ((*examples)[1].input, input);
  EXPECT_EQ((*examples)[2].target, "3");
  EXPECT_EQ((*examples)[2].line, 3);
}

TEST(JsonlDataset, MissingFileIsNotFound) {
  std::string path = WriteFile("exists.jsonl", "") + ".missing";
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(path, "t");
  EXPECT_EQ(examples.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(examples.status().message()), HasSubstr(path));
}

TEST(JsonlDataset, DirectoryIsFailedPrecondition) {
  std::string dir = WriteFile("dir_parent.jsonl", "");
  dir += ".d";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(dir, "t");
  EXPECT_EQ(examples.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(examples.status().message()),
              HasSubstr("is a folder"));
}

TEST(JsonlDataset, MalformedJsonNamesFileAndLine) {
  absl::Status status = ReadError(
      "malformed.jsonl",
      "{\"input\": \"a\", \"target\": \"b\"}\n{\"input\": \"a\", \"target\": }\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("malformed.jsonl:2: malformed JSON at column"));
}

TEST(JsonlDataset, MalformedJsonErrorsCarryNoBytesOfTheFile) {
  absl::Status status = ReadError("secret.jsonl", "{\"password\":\"hunter2 and more\n");
  EXPECT_THAT(std::string(status.message()), HasSubstr("secret.jsonl:1: malformed JSON at column"));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("hunter2")));
  status = ReadError("shadow.jsonl", "toor:$6$abc:19000:0:99999:7:::\n");
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("toor")));
}

TEST(JsonlDataset, InvalidUtf8IsMalformed) {
  absl::Status status = ReadError("utf8.jsonl",
                                  "{\"input\": \"\xFF\", \"target\": \"b\"}\n");
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("utf8.jsonl:1: malformed JSON"));
}

TEST(JsonlDataset, NonObjectLine) {
  absl::Status status = ReadError(
      "array.jsonl", "{\"input\": \"a\", \"target\": \"b\"}\n[1, 2]\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("array.jsonl:2: expected a JSON object, got array"));
  status = ReadError("string.jsonl", "\"just text\"\n");
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("string.jsonl:1: expected a JSON object, got string"));
}

TEST(JsonlDataset, RepeatedKeysAreRefused) {
  absl::Status status = ReadError(
      "twice.jsonl", "{\"input\": \"a\", \"target\": \"b\"}\n"
                     "{\"input\": \"a\", \"input\": \"c\", \"target\": \"b\"}\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("twice.jsonl:2: key \"input\" appears more than once"));
  // In a nested object too; the same key in two sibling objects is fine.
  status = ReadError("nested.jsonl",
                     "{\"input\": \"a\", \"target\": \"b\", \"meta\": {\"x\": 1, \"x\": 2}}\n");
  EXPECT_THAT(std::string(status.message()), HasSubstr("nested.jsonl:1: key \"x\""));
  absl::StatusOr<std::vector<Example>> ok = ParseJsonl(
      "{\"input\": \"a\", \"target\": \"b\", \"m\": [{\"x\": 1}, {\"x\": 2}]}\n", "siblings",
      JsonlOptions());
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(JsonlDataset, MissingFields) {
  absl::Status status =
      ReadError("no_input.jsonl", "{\"target\": \"b\"}\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("no_input.jsonl:1: missing required field \"input\""));
  status = ReadError("no_target.jsonl",
                     "\n\n{\"input\": \"a\", \"label\": \"b\"}\n");
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("no_target.jsonl:3: missing required field \"target\""));
}

TEST(JsonlDataset, WrongTypes) {
  absl::Status status =
      ReadError("number.jsonl", "{\"input\": \"a\", \"target\": 1}\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("number.jsonl:1: field \"target\" must be a string, "
                        "got number"));
  status = ReadError("list.jsonl", "{\"input\": [\"a\"], \"target\": \"b\"}\n");
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("field \"input\" must be a string, got array"));
  status = ReadError("null_task.jsonl",
                     "{\"input\": \"a\", \"target\": \"b\", \"task\": null}\n");
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("null_task.jsonl:1: field \"task\" must be a string, "
                        "got null"));
}

TEST(JsonlDataset, EmptyTaskField) {
  absl::Status status = ReadError(
      "empty_task.jsonl", "{\"input\": \"a\", \"target\": \"b\", \"task\": \"\"}\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("empty_task.jsonl:1: field \"task\" is empty"));
}

TEST(JsonlDataset, EmptyFileHasNoExamples) {
  absl::Status status = ReadError("empty.jsonl", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("no examples"));
  status = ReadError("blank.jsonl", "\n  \n\r\n\t\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("blank.jsonl: no examples"));
}

TEST(JsonlDataset, AllowedTasks) {
  JsonlOptions options;
  options.default_task = "sst2";
  options.allowed_tasks = {"sst2", "qnli"};
  std::string path = WriteFile(
      "allowed.jsonl",
      "{\"input\": \"a\", \"target\": \"b\"}\n"
      "{\"input\": \"a\", \"target\": \"b\", \"task\": \"qnli\"}\n");
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(path, options);
  ASSERT_TRUE(examples.ok()) << examples.status();
  EXPECT_EQ((*examples)[0].task, "sst2");
  EXPECT_EQ((*examples)[1].task, "qnli");

  absl::Status status = ReadError(
      "unknown_task.jsonl",
      "{\"input\": \"a\", \"target\": \"b\"}\n"
      "{\"input\": \"a\", \"target\": \"b\", \"task\": \"mnli\"}\n",
      options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("unknown_task.jsonl:2: unknown task \"mnli\"; expected "
                        "one of: \"qnli\", \"sst2\""));

  // A default task outside the set is reported on the first line using it.
  options.default_task = "rte";
  status = ReadError("default_not_allowed.jsonl",
                     "{\"input\": \"a\", \"target\": \"b\", \"task\": \"qnli\"}\n"
                     "{\"input\": \"a\", \"target\": \"b\"}\n",
                     options);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("default_not_allowed.jsonl:2: unknown task \"rte\""));

  options.default_task = "";
  status = ReadError("no_task.jsonl", "{\"input\": \"a\", \"target\": \"b\"}\n",
                     options);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("no_task.jsonl:1: no \"task\" field and no default task"));
}

TEST(JsonlDataset, LineLengthLimit) {
  JsonlOptions options;
  options.default_task = "t";
  std::string line = "{\"input\": \"aaaa\", \"target\": \"b\"}";  // 32 bytes
  ASSERT_EQ(line.size(), 32u);
  options.max_line_bytes = 32;
  std::string path =
      WriteFile("at_limit.jsonl", absl::StrCat(line, "\r\n", line, "\n"));
  absl::StatusOr<std::vector<Example>> examples = ReadJsonl(path, options);
  ASSERT_TRUE(examples.ok()) << examples.status();
  EXPECT_EQ(examples->size(), 2u);

  options.max_line_bytes = 31;
  absl::Status status =
      ReadError("over_limit.jsonl", absl::StrCat("\n", line, "\n"), options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("over_limit.jsonl:2: line is longer than the limit of "
                        "31 bytes"));
}

TEST(JsonlDataset, DefaultLimitIsOneMebibyte) {
  EXPECT_EQ(kMaxJsonlLineBytes, 1024u * 1024u);
  std::string huge(kMaxJsonlLineBytes, 'x');
  absl::Status status = ReadError(
      "huge.jsonl", absl::StrCat("{\"input\": \"", huge, "\", \"target\": \"b\"}\n"),
      JsonlOptions{"t", {}, kMaxJsonlLineBytes});
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("huge.jsonl:1: line is longer than the limit of 1048576"));
}

TEST(JsonlDataset, ParsesContentInMemory) {
  JsonlOptions options;
  options.default_task = "t";
  absl::StatusOr<std::vector<Example>> examples = ParseJsonl(
      "{\"input\": \"a\", \"target\": \"b\"}\n\n{\"input\": \"c\", \"target\": \"d\"}",
      "request", options);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 2u);
  EXPECT_EQ((*examples)[1].line, 3);
  absl::StatusOr<std::vector<Example>> bad =
      ParseJsonl("{\"input\": 1}", "request", options);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("request:1: field \"input\" must be a string"));
}

}  // namespace
}  // namespace mpt
