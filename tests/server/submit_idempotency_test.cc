// SubmitJob with a reused request_id: the same request returns the job it
// created; a different request is ALREADY_EXISTS naming request_id.
#include <sqlite3.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/artifact_store.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "server/job_store.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

std::unique_ptr<Coordinator> NewCoordinator() {
  auto store = SqliteJobStore::Open(":memory:");
  EXPECT_TRUE(store.ok()) << store.status();
  auto blobs = ArtifactStore::Open(std::string(std::getenv("TEST_TMPDIR")) + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  EXPECT_TRUE(blobs.ok()) << blobs.status();
  auto c = Coordinator::Create(CoordinatorOptions(), *std::move(store), *std::move(blobs),
                               std::make_shared<FakeClock>());
  EXPECT_TRUE(c.ok()) << c.status();
  return *std::move(c);
}

mpt::v1::SubmitJobRequest Source(const std::string& task) {
  mpt::v1::SubmitJobRequest r;
  r.set_kind(mpt::v1::SOURCE_TRAINING);
  r.set_request_id("req-1");
  r.set_display_name("first");
  r.mutable_spec()->set_base_model("/models/t5");
  auto* t = r.mutable_spec()->mutable_source()->add_tasks();
  t->set_name(task);
  t->set_train_path("/data/" + task + ".jsonl");
  r.mutable_spec()->mutable_source()->mutable_train()->set_steps(10);
  return r;
}

TEST(SubmitIdempotencyTest, SameRequestReturnsTheSameJob) {
  auto c = NewCoordinator();
  auto first = c->SubmitJob(Source("a"));
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = c->SubmitJob(Source("a"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->name(), first->name());
}

TEST(SubmitIdempotencyTest, DifferentSpecKindOrNameIsAlreadyExists) {
  auto c = NewCoordinator();
  auto first = c->SubmitJob(Source("a"));
  ASSERT_TRUE(first.ok()) << first.status();

  auto other_spec = c->SubmitJob(Source("b"));
  ASSERT_EQ(other_spec.status().code(), absl::StatusCode::kAlreadyExists) << other_spec.status();
  EXPECT_EQ(other_spec.status().message().rfind("request_id:", 0), 0u) << other_spec.status();

  mpt::v1::SubmitJobRequest renamed = Source("a");
  renamed.set_display_name("second");
  EXPECT_EQ(c->SubmitJob(renamed).status().code(), absl::StatusCode::kAlreadyExists);

  // Still so once the job is finished and read from the store.
  ASSERT_TRUE(c->CancelJob(first->name()).ok());
  EXPECT_EQ(c->SubmitJob(Source("b")).status().code(), absl::StatusCode::kAlreadyExists);
  auto same = c->SubmitJob(Source("a"));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->name(), first->name());
}

void ExecSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

// The comparison uses the fingerprint stored with the key, not one made
// again from the stored job; keys from before schema version 3 (empty
// fingerprint) fall back to the stored job.
TEST(SubmitIdempotencyTest, ComparesWithTheStoredFingerprint) {
  const testing::CoordinatorFiles files = testing::FreshFiles("idempotency_fp", /*on_disk=*/true);
  std::string name;
  {
    auto c = testing::OpenCoordinator(files, std::make_shared<FakeClock>());
    ASSERT_TRUE(c.ok()) << c.status();
    auto first = (*c)->SubmitJob(Source("a"));
    ASSERT_TRUE(first.ok()) << first.status();
    name = first->name();
  }
  auto reopen_and_submit = [&](const std::string& sql) {
    if (!sql.empty()) ExecSql(files.db, sql);
    auto c = testing::OpenCoordinator(files, std::make_shared<FakeClock>());
    EXPECT_TRUE(c.ok()) << c.status();
    return (*c)->SubmitJob(Source("a"));
  };
  auto same = reopen_and_submit("");
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->name(), name);
  // A stored fingerprint that is not this request's: ALREADY_EXISTS, though
  // the stored job would plan to the same fingerprint.
  EXPECT_EQ(reopen_and_submit("UPDATE request_ids SET fingerprint = 'another request'")
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  auto legacy = reopen_and_submit("UPDATE request_ids SET fingerprint = ''");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(legacy->name(), name);
}

}  // namespace
}  // namespace mpt
