// SqliteJobStore: schema versions and migrations, atomic commits, paging.
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/job_store.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

using coordinator::JobRecord;
using coordinator::StageRecord;

JobRecord MakeJob(int seq, mpt::v1::JobState state = mpt::v1::QUEUED,
                  mpt::v1::JobKind kind = mpt::v1::PIPELINE) {
  JobRecord r;
  r.set_create_seq(seq);
  r.mutable_job()->set_name("jobs/j" + std::to_string(seq));
  r.mutable_job()->set_state(state);
  r.mutable_job()->set_kind(kind);
  return r;
}

void ExecSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

// Overwrites the 4 KiB page `index` (from 0) of the file at `path` with
// garbage, as a failing disk might.
void OverwritePage(const std::string& path, uint64_t index) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(index * 4096));
  const std::string garbage(4096, '\x5a');
  f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  ASSERT_TRUE(f.good()) << path;
}

// Opens the store at `path` with `options` and checks that its load fails
// with DATA_LOSS naming the file; returns the store (null if it did not
// open).
std::unique_ptr<SqliteJobStore> OpenWhoseLoadFails(const std::string& path,
                                                   const SqliteJobStoreOptions& options) {
  auto store = SqliteJobStore::Open(path, options);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return nullptr;
  auto snap = (*store)->LoadActive();
  EXPECT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), absl::StatusCode::kDataLoss) << snap.status();
  EXPECT_TRUE(absl::StrContains(snap.status().message(), path)) << snap.status();
  return *std::move(store);
}

// A stage record's initial progress (AddInitialProgress) is stored, and
// dropped again at load; any other progress is kept.
TEST(SqliteJobStoreTest, InitialProgressIsStoredAndDroppedAtLoad) {
  // The load compares every field of Progress; one added must be added there.
  EXPECT_EQ(mpt::v1::Progress::descriptor()->field_count(), 9);
  const std::string path = testing::FreshTempDir("store_progress") + "/jobs.db";
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  StoreWrite w;
  w.jobs.push_back(MakeJob(1));
  auto stage = [](int index, const std::string& task) {
    StageRecord st;
    st.mutable_stage()->set_id("source/" + task);
    st.mutable_stage()->set_state(mpt::v1::QUEUED);
    st.set_index(index);
    st.set_kind(mpt::v1::SOURCE_TRAINING);
    st.set_task(task);
    return st;
  };
  w.stages.emplace_back("jobs/j1", stage(0, "none"));  // planned: no progress
  StageRecord initial = stage(1, "initial");           // the initial one, as written before
  AddInitialProgress(initial, initial.mutable_stage());
  w.stages.emplace_back("jobs/j1", initial);
  // The initial fields and one more each: kept.
  const std::vector<void (*)(mpt::v1::Progress*)> one_more = {
      [](mpt::v1::Progress* p) { p->set_step(1); },
      [](mpt::v1::Progress* p) { p->set_total_steps(1); },
      [](mpt::v1::Progress* p) { (*p->mutable_losses())["loss"] = 0; },
      [](mpt::v1::Progress* p) { p->set_learning_rate(0.5); },
      [](mpt::v1::Progress* p) { p->set_tokens_per_second(2); },
      [](mpt::v1::Progress* p) { (*p->mutable_metrics())["a/accuracy"] = 0; },
      [](mpt::v1::Progress* p) { p->set_eta_seconds(0); },
  };
  for (size_t field = 0; field < one_more.size(); ++field) {
    StageRecord st = stage(2 + static_cast<int>(field), "more" + std::to_string(field));
    AddInitialProgress(st, st.mutable_stage());
    one_more[field](st.mutable_stage()->mutable_progress());
    w.stages.emplace_back("jobs/j1", st);
  }
  StageRecord other_task = stage(9, "x");  // names another task
  AddInitialProgress(other_task, other_task.mutable_stage());
  other_task.mutable_stage()->mutable_progress()->set_task("y");
  w.stages.emplace_back("jobs/j1", other_task);
  ASSERT_TRUE((*store)->Commit(w).ok());

  // Stored with it: the job read from the store shows it on both.
  auto read = (*store)->ReadJob("jobs/j1");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  const std::optional<mpt::v1::Job>& job = *read;
  ASSERT_EQ(job->stages_size(), 10);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(job->stages(i).progress().stage(), "source") << i;
    EXPECT_EQ(job->stages(i).progress().eta_seconds(), -1) << i;
  }
  EXPECT_EQ(job->stages(0).progress().task(), "none");

  // Loaded without it; every other progress as written.
  auto snap = (*store)->LoadActive();
  ASSERT_TRUE(snap.ok()) << snap.status();
  ASSERT_EQ(snap->stages.size(), 1u);
  const std::vector<StageRecord>& loaded = snap->stages[0];
  ASSERT_EQ(loaded.size(), 10u);
  EXPECT_FALSE(loaded[0].stage().has_progress());
  EXPECT_FALSE(loaded[1].stage().has_progress());
  for (size_t i = 2; i < loaded.size(); ++i) {
    ASSERT_TRUE(loaded[i].stage().has_progress()) << loaded[i].stage().id();
    EXPECT_EQ(loaded[i].stage().progress().SerializeAsString(),
              w.stages[i].second.stage().progress().SerializeAsString())
        << loaded[i].stage().id();
  }
}

TEST(SqliteJobStoreTest, NewDatabaseGetsTheCurrentSchemaInWalMode) {
  const std::string path = testing::FreshTempDir("store_new") + "/jobs.db";
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    StoreWrite w;
    w.jobs.push_back(MakeJob(1));
    ASSERT_TRUE((*store)->Commit(w).ok());
    EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
  }
  auto version = SqliteJobStore::ReadSchemaVersion(path);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, SqliteJobStore::kCurrentSchemaVersion);
}

TEST(SqliteJobStoreTest, MigratesAnOlderSchemaKeepingItsRows) {
  const std::string path = testing::FreshTempDir("store_migrate") + "/jobs.db";
  {
    SqliteJobStoreOptions v1;
    v1.target_schema_version = 1;
    auto store = SqliteJobStore::Open(path, v1);
    ASSERT_TRUE(store.ok()) << store.status();
    StoreWrite w;
    w.jobs.push_back(MakeJob(1));
    ASSERT_TRUE((*store)->Commit(w).ok());
  }
  ASSERT_EQ(*SqliteJobStore::ReadSchemaVersion(path), 1);
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*SqliteJobStore::ReadSchemaVersion(path), SqliteJobStore::kCurrentSchemaVersion);
  auto job = (*store)->ReadJob("jobs/j1");
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(job->has_value());
  // Version 2 added idempotency keys, version 3 their fingerprints.
  StoreWrite w;
  w.request_ids.push_back(RequestIdRecord{"req", "jobs/j1", "f1"});
  ASSERT_TRUE((*store)->Commit(w).ok());
  auto found = (*store)->FindRequestId("req");
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status();
  EXPECT_EQ((*found)->job, "jobs/j1");
  EXPECT_EQ((*found)->fingerprint, "f1");
  EXPECT_FALSE((*store)->FindRequestId("other")->has_value());
  // Version 4 added stage logs.
  StoreWrite logs;
  StageLogAppend append;
  append.job = "jobs/j1";
  append.stage = "source/a";
  append.assignment = "jobs/j1/stages/source/a/attempts/1/ranks/0";
  append.lines.emplace_back().set_sequence(1);
  append.lines.back().set_text("migrated");
  logs.logs.push_back(append);
  ASSERT_TRUE((*store)->Commit(logs).ok());
  auto page = (*store)->ReadStageLog("jobs/j1", "source/a", 0, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->lines.size(), 1u);
  EXPECT_EQ(page->lines[0].text(), "migrated");
}

TEST(SqliteJobStoreTest, MigratesVersionTwoKeysWithAnEmptyFingerprint) {
  const std::string path = testing::FreshTempDir("store_v2") + "/jobs.db";
  {
    SqliteJobStoreOptions v2;
    v2.target_schema_version = 2;
    auto store = SqliteJobStore::Open(path, v2);
    ASSERT_TRUE(store.ok()) << store.status();
    StoreWrite w;
    w.jobs.push_back(MakeJob(1));
    ASSERT_TRUE((*store)->Commit(w).ok());
  }
  // A key as a version-2 coordinator wrote it (no fingerprint column).
  ExecSql(path, "INSERT INTO request_ids(request_id, job) VALUES ('old', 'jobs/j1')");
  ASSERT_EQ(*SqliteJobStore::ReadSchemaVersion(path), 2);
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*SqliteJobStore::ReadSchemaVersion(path), SqliteJobStore::kCurrentSchemaVersion);
  auto found = (*store)->FindRequestId("old");
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status();
  EXPECT_EQ((*found)->job, "jobs/j1");
  EXPECT_EQ((*found)->fingerprint, "");
}

TEST(SqliteJobStoreTest, RefusesASchemaNewerThanItKnows) {
  const std::string path = testing::FreshTempDir("store_newer") + "/jobs.db";
  { ASSERT_TRUE(SqliteJobStore::Open(path).ok()); }
  ExecSql(path, "UPDATE schema_version SET version = 99");
  auto store = SqliteJobStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(store.status().message(), "schema version 99")) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "newer")) << store.status();
}

TEST(SqliteJobStoreTest, RefusesAForeignDatabase) {
  const std::string path = testing::FreshTempDir("store_foreign") + "/other.db";
  ExecSql(path, "CREATE TABLE something(x INTEGER)");
  auto store = SqliteJobStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SqliteJobStoreTest, CommitIsAllOrNothing) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  mpt::v1::JobEvent e;
  e.set_job("jobs/j1");
  e.set_sequence(1);
  StoreWrite first;
  first.jobs.push_back(MakeJob(1));
  first.events.push_back(e);
  ASSERT_TRUE((*store)->Commit(first).ok());

  StoreWrite clash;  // a new job plus an event number that exists already
  clash.jobs.push_back(MakeJob(2));
  clash.events.push_back(e);
  EXPECT_FALSE((*store)->Commit(clash).ok());
  auto job = (*store)->ReadJob("jobs/j2");
  ASSERT_TRUE(job.ok());
  EXPECT_FALSE(job->has_value());
}

TEST(SqliteJobStoreTest, JobsComeBackWithTheirStagesAndPageNewestFirst) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  StoreWrite w;
  for (int i = 1; i <= 5; ++i) {
    w.jobs.push_back(MakeJob(i, i % 2 ? mpt::v1::QUEUED : mpt::v1::SUCCEEDED));
    for (int s = 0; s < 2; ++s) {
      StageRecord st;
      st.set_index(s);
      st.mutable_stage()->set_id(s == 0 ? "source/a" : "distillation");
      w.stages.emplace_back("jobs/j" + std::to_string(i), st);
    }
  }
  ASSERT_TRUE((*store)->Commit(w).ok());
  auto page = (*store)->ListJobs({}, 0, 2);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 2u);
  EXPECT_EQ(page->jobs[0].name(), "jobs/j5");
  EXPECT_EQ(page->jobs[0].stages_size(), 2);
  EXPECT_EQ(page->jobs[0].stages(1).id(), "distillation");
  EXPECT_TRUE(page->more);
  page = (*store)->ListJobs({}, page->last_seq, 10);
  ASSERT_EQ(page->jobs.size(), 3u);
  EXPECT_EQ(page->jobs[0].name(), "jobs/j3");
  EXPECT_FALSE(page->more);
  JobListFilter done;
  done.states.push_back(mpt::v1::SUCCEEDED);
  page = (*store)->ListJobs(done, 0, 10);
  ASSERT_EQ(page->jobs.size(), 2u);

  auto snap = (*store)->LoadActive();
  ASSERT_TRUE(snap.ok());
  ASSERT_EQ(snap->jobs.size(), 3u);  // the QUEUED ones, in create order
  EXPECT_EQ(snap->jobs[0].job().name(), "jobs/j1");
  EXPECT_EQ(snap->jobs[2].job().name(), "jobs/j5");
  ASSERT_EQ(snap->stages.size(), 3u);  // and only their stages, by job
  for (size_t i = 0; i < snap->jobs.size(); ++i) {
    ASSERT_EQ(snap->stages[i].size(), 2u) << snap->jobs[i].job().name();
    EXPECT_EQ(snap->stages[i][0].stage().id(), "source/a");  // stage order, not id order
    EXPECT_EQ(snap->stages[i][1].stage().id(), "distillation");
  }
  EXPECT_EQ(snap->max_create_seq, 5);
  EXPECT_EQ(snap->largest_job_name, "jobs/j5");
}

// The largest stored job name counts finished jobs, which the snapshot
// leaves out; an empty store has none.
TEST(SqliteJobStoreTest, LoadActiveNamesTheLargestStoredJobFinishedOrNot) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto empty = (*store)->LoadActive();
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->largest_job_name, "");
  StoreWrite w;
  w.jobs.push_back(MakeJob(3, mpt::v1::QUEUED));
  w.jobs.push_back(MakeJob(7, mpt::v1::SUCCEEDED));
  ASSERT_TRUE((*store)->Commit(w).ok());
  auto snap = (*store)->LoadActive();
  ASSERT_TRUE(snap.ok());
  ASSERT_EQ(snap->jobs.size(), 1u);
  EXPECT_EQ(snap->jobs[0].job().name(), "jobs/j3");
  EXPECT_EQ(snap->largest_job_name, "jobs/j7");
}

TEST(SqliteJobStoreTest, RestartReadsJobsInCreateOrderAndRefusesAnUnreadableRecord) {
  const std::string path = testing::FreshTempDir("store_restart") + "/jobs.db";
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    // Committed out of create order and in two states (the store reads
    // them by state), 6,000 jobs so that the stage records (18,000) come in
    // several chunks and are parsed on several threads.
    for (int round = 0; round < 2; ++round) {
      StoreWrite w;
      for (int i = 6000 - round; i >= 1; i -= 2) {
        w.jobs.push_back(MakeJob(i, i % 3 == 0 ? mpt::v1::RUNNING : mpt::v1::QUEUED));
        for (int s = 2; s >= 0; --s) {
          StageRecord st;
          st.set_index(s);
          st.mutable_stage()->set_id("stage" + std::to_string(s) + "/" + std::to_string(i));
          w.stages.emplace_back("jobs/j" + std::to_string(i), st);
        }
      }
      ASSERT_TRUE((*store)->Commit(w).ok());
    }
    auto snap = (*store)->LoadActive();
    ASSERT_TRUE(snap.ok()) << snap.status();
    ASSERT_EQ(snap->jobs.size(), 6000u);
    for (int i = 0; i < 6000; ++i) {
      ASSERT_EQ(snap->jobs[i].create_seq(), i + 1);
      ASSERT_EQ(snap->jobs[i].job().name(), "jobs/j" + std::to_string(i + 1));
    }
    // Each job's own stages beside it, in stage order.
    ASSERT_EQ(snap->stages.size(), 6000u);
    for (int i = 0; i < 6000; ++i) {
      ASSERT_EQ(snap->stages[i].size(), 3u);
      for (int s = 0; s < 3; ++s) {
        ASSERT_EQ(snap->stages[i][s].index(), s);
        ASSERT_EQ(snap->stages[i][s].stage().id(),
                  "stage" + std::to_string(s) + "/" + std::to_string(i + 1));
      }
    }
  }
  // A record that no longer parses is DATA_LOSS naming what it was, in the
  // last chunk of stages as in the first.
  for (const char* job : {"jobs/j5990", "jobs/j7"}) {
    ExecSql(path, absl::StrCat("UPDATE stages SET record = x'0aff' WHERE job = '", job, "'"));
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto snap = (*store)->LoadActive();
    ASSERT_FALSE(snap.ok()) << job;
    EXPECT_EQ(snap.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_TRUE(absl::StrContains(snap.status().message(), "StageRecord")) << snap.status();
  }
  ExecSql(path, "UPDATE jobs SET record = x'0aff' WHERE name = 'jobs/j4000'");
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto snap = (*store)->LoadActive();
    ASSERT_FALSE(snap.ok());
    EXPECT_EQ(snap.status().code(), absl::StatusCode::kDataLoss);
  }
  // The page holding the stages of the largest job names overwritten, the
  // page check skipped: the read fails after stage chunks were handed to
  // the parsers, with one job's rows read and not yet placed, and the
  // error names the file.
  int64_t page = 0;
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT pageno FROM dbstat WHERE name = 'stages' AND pagetype = "
                                 "'leaf' ORDER BY path DESC LIMIT 1",
                                 -1, &st, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    page = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  ASSERT_GT(page, 1);
  OverwritePage(path, page - 1);  // SQLite numbers pages from 1
  SqliteJobStoreOptions unchecked;
  unchecked.check_on_open = false;
  OpenWhoseLoadFails(path, unchecked);
}

TEST(SqliteJobStoreTest, OneFileIsOpenInOneStoreAtATime) {
  const std::string path = testing::FreshTempDir("store_lock") + "/jobs.db";
  auto first = SqliteJobStore::Open(path);
  ASSERT_TRUE(first.ok()) << first.status();
  StoreWrite w;
  w.jobs.push_back(MakeJob(1));
  ASSERT_TRUE((*first)->Commit(w).ok());

  // A second store in this process, and one in another process, are refused
  // while the first is open, naming the file.
  auto second = SqliteJobStore::Open(path);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(second.status().message(), path)) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "another coordinator"))
      << second.status();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto other = SqliteJobStore::Open(path);
    _exit(!other.ok() && other.status().code() == absl::StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;

  // The refusals left the first store's data alone, and its close frees
  // the file.
  auto job = (*first)->ReadJob("jobs/j1");
  ASSERT_TRUE(job.ok() && job->has_value()) << job.status();
  first->reset();
  auto again = SqliteJobStore::Open(path);
  ASSERT_TRUE(again.ok()) << again.status();
  job = (*again)->ReadJob("jobs/j1");
  ASSERT_TRUE(job.ok() && job->has_value()) << job.status();
}

TEST(SqliteJobStoreTest, RefusesADamagedFileAtOpenNamingIt) {
  const std::string path = testing::FreshTempDir("store_damaged") + "/jobs.db";
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    StoreWrite w;
    for (int i = 1; i <= 400; ++i) {
      w.jobs.push_back(MakeJob(i));
      w.jobs.back().mutable_job()->set_display_name(std::string(200, 'x'));
    }
    ASSERT_TRUE((*store)->Commit(w).ok());
  }
  // Closing the last connection folded the log into the file; now one page
  // in the middle of it is overwritten, as a failing disk might.
  const auto size = std::filesystem::file_size(path);
  ASSERT_GT(size, 16u * 4096u);
  OverwritePage(path, size / 4096 / 2);
  auto store = SqliteJobStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), path)) << store.status();
  // Checked in the background, the store opens; its first load and every
  // commit then fail with the check's error, and nothing is written.
  {
    SqliteJobStoreOptions background;
    background.check_in_background = true;
    std::unique_ptr<SqliteJobStore> opened = OpenWhoseLoadFails(path, background);
    ASSERT_NE(opened, nullptr);
    auto again = opened->LoadActive();  // the check's own error, not the read's
    EXPECT_TRUE(absl::StrContains(again.status().message(), "is damaged")) << again.status();
    StoreWrite more;
    more.jobs.push_back(MakeJob(1000));
    absl::Status commit = opened->Commit(more);
    EXPECT_EQ(commit.code(), absl::StatusCode::kDataLoss) << commit;
  }
  EXPECT_EQ(std::filesystem::file_size(path), size);
  // The refusal released the file: the check can be skipped to read what
  // is left.
  SqliteJobStoreOptions unchecked;
  unchecked.check_on_open = false;
  EXPECT_TRUE(SqliteJobStore::Open(path, unchecked).ok());
}

}  // namespace
}  // namespace mpt
