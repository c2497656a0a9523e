// The stage logs in the SQLite job store: resent lines stored once, lines
// dropped on the worker noted, each stage kept within its bound, job-wide
// line numbers, paging, and all of it across a reopen.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/job_store.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

mpt::v1::LogLine Line(int64_t sequence, const std::string& text,
                      const std::string& severity = "INFO") {
  mpt::v1::LogLine l;
  l.set_sequence(sequence);
  l.mutable_time()->set_seconds(1700000000 + sequence);
  l.set_severity(severity);
  l.set_text(text);
  return l;
}

StageLogAppend Append(const std::string& stage, const std::string& assignment,
                      std::vector<mpt::v1::LogLine> lines, const std::string& job = "jobs/j1") {
  StageLogAppend a;
  a.job = job;
  a.stage = stage;
  a.assignment = assignment;
  a.lines = std::move(lines);
  return a;
}

absl::Status Write(JobStore& store, StageLogAppend append) {
  StoreWrite w;
  w.logs.push_back(std::move(append));
  return store.Commit(w);
}

std::vector<std::string> Texts(const StageLogPage& page) {
  std::vector<std::string> out;
  for (const auto& l : page.lines) out.push_back(l.text());
  return out;
}

constexpr char kA1[] = "jobs/j1/stages/source/a/attempts/1/ranks/0";
constexpr char kA2[] = "jobs/j1/stages/source/a/attempts/2/ranks/0";
constexpr char kB1[] = "jobs/j1/stages/source/b/attempts/1/ranks/0";

TEST(StageLogStoreTest, ResentLinesAreStoredOnce) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(1, "one"), Line(2, "two")})).ok());
  // The answer was lost: the worker sends 1..2 again with a new line 3.
  ASSERT_TRUE(
      Write(**store, Append("source/a", kA1, {Line(1, "one"), Line(2, "two"), Line(3, "three")}))
          .ok());
  // And the same batch once more.
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(3, "three")})).ok());
  auto page = (*store)->ReadStageLog("jobs/j1", "source/a", 0, 100);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(Texts(*page), (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(page->lines[0].line(), 1);
  EXPECT_EQ(page->lines[2].line(), 3);
  EXPECT_EQ(page->lines[2].assignment(), kA1);
  EXPECT_EQ(page->lines[2].stage(), "source/a");
  EXPECT_EQ(page->lines[2].time().seconds(), 1700000003);
  EXPECT_FALSE(page->more);
  EXPECT_TRUE(page->dropped.empty());
}

TEST(StageLogStoreTest, ANewAttemptNumbersFromOneAgain) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(1, "first try")})).ok());
  ASSERT_TRUE(Write(**store, Append("source/a", kA2, {Line(1, "second try")})).ok());
  auto page = (*store)->ReadStageLog("jobs/j1", "source/a", 0, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Texts(*page), (std::vector<std::string>{"first try", "second try"}));
}

TEST(StageLogStoreTest, AGapInSequenceNumbersIsNoted) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(1, "one")})).ok());
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(5, "five")})).ok());
  auto page = (*store)->ReadStageLog("jobs/j1", "source/a", 0, 100);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->lines.size(), 3u);
  EXPECT_EQ(page->lines[1].severity(), "WARNING");
  EXPECT_NE(page->lines[1].text().find("3 log lines"), std::string::npos) << page->lines[1].text();
  EXPECT_EQ(page->lines[2].text(), "five");
}

TEST(StageLogStoreTest, EachStageKeepsItsNewestLinesWithinTheLineBound) {
  SqliteJobStoreOptions options;
  options.max_log_lines_per_stage = 5;
  auto store = SqliteJobStore::Open(":memory:", options);
  ASSERT_TRUE(store.ok());
  for (int i = 1; i <= 12; ++i) {
    ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(i, absl::StrCat("a", i))})).ok());
  }
  ASSERT_TRUE(Write(**store, Append("source/b", kB1, {Line(1, "b1")})).ok());
  auto a = (*store)->ReadStageLog("jobs/j1", "source/a", 0, 100);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(Texts(*a), (std::vector<std::string>{"a8", "a9", "a10", "a11", "a12"}));
  EXPECT_EQ(a->dropped.at("source/a"), 7);
  // Another stage is not touched by a's bound; line numbers run over the job.
  auto b = (*store)->ReadStageLog("jobs/j1", "source/b", 0, 100);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(Texts(*b), (std::vector<std::string>{"b1"}));
  EXPECT_EQ(b->lines[0].line(), 13);
  EXPECT_TRUE(b->dropped.empty());
  auto all = (*store)->ReadStageLog("jobs/j1", "", 0, 100);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->lines.size(), 6u);
  EXPECT_EQ(all->dropped.size(), 1u);
}

TEST(StageLogStoreTest, EachStageKeepsItsNewestLinesWithinTheByteBound) {
  SqliteJobStoreOptions options;
  options.max_log_bytes_per_stage = 25;
  auto store = SqliteJobStore::Open(":memory:", options);
  ASSERT_TRUE(store.ok());
  std::vector<mpt::v1::LogLine> lines;
  for (int i = 1; i <= 6; ++i) lines.push_back(Line(i, std::string(10, 'a' + i)));
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, lines)).ok());
  auto page = (*store)->ReadStageLog("jobs/j1", "source/a", 0, 100);
  ASSERT_TRUE(page.ok());
  // 10 bytes a line, at most 25: the newest two.
  EXPECT_EQ(Texts(*page), (std::vector<std::string>{std::string(10, 'f'), std::string(10, 'g')}));
  EXPECT_EQ(page->dropped.at("source/a"), 4);
}

TEST(StageLogStoreTest, PagesFollowLineNumbers) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  std::vector<mpt::v1::LogLine> lines;
  for (int i = 1; i <= 7; ++i) lines.push_back(Line(i, absl::StrCat("l", i)));
  ASSERT_TRUE(Write(**store, Append("source/a", kA1, lines)).ok());
  std::vector<std::string> seen;
  int64_t after = 0;
  int pages = 0;
  while (true) {
    auto page = (*store)->ReadStageLog("jobs/j1", "source/a", after, 3);
    ASSERT_TRUE(page.ok());
    ++pages;
    for (const auto& l : page->lines) seen.push_back(l.text());
    if (!page->lines.empty()) after = page->lines.back().line();
    if (!page->more) break;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_EQ(seen.back(), "l7");
  auto none = (*store)->ReadStageLog("jobs/nope", "", 0, 3);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->lines.empty());
}

TEST(StageLogStoreTest, DeduplicationSurvivesAReopen) {
  const std::string path = ::mpt::testing::FreshTempDir("stage_log_store") + "/jobs.db";
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE(Write(**store, Append("source/a", kA1, {Line(1, "one"), Line(2, "two")})).ok());
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  // A worker that never saw the answer sends the batch again to the
  // restarted coordinator.
  ASSERT_TRUE(
      Write(**store, Append("source/a", kA1, {Line(1, "one"), Line(2, "two"), Line(3, "three")}))
          .ok());
  ASSERT_TRUE(Write(**store, Append("source/b", kB1, {Line(1, "b")})).ok());
  auto page = (*store)->ReadStageLog("jobs/j1", "", 0, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Texts(*page), (std::vector<std::string>{"one", "two", "three", "b"}));
  EXPECT_EQ(page->lines.back().line(), 4);
}

TEST(StageLogStoreTest, ABoundBelowOneIsRefused) {
  SqliteJobStoreOptions options;
  options.max_log_lines_per_stage = 0;
  auto store = SqliteJobStore::Open(":memory:", options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mpt
