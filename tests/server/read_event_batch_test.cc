// A watch reads events from the store but never past the last event known
// to be durable in memory: a reader sent later ones would next ask for a
// sequence the coordinator does not know yet (INVALID_ARGUMENT).
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/coordinator_requests.h"
#include "server/job_store.h"

namespace mpt {
namespace {

std::unique_ptr<SqliteJobStore> StoreWithEvents(const std::string& name, int events,
                                                mpt::v1::JobState state) {
  auto store = SqliteJobStore::Open(::testing::TempDir() + "/events_" +
                                    std::to_string(::testing::UnitTest::GetInstance()
                                                       ->random_seed()) +
                                    "_" + std::to_string(events) + "_" +
                                    std::to_string(static_cast<int>(state)) + ".db");
  EXPECT_TRUE(store.ok()) << store.status();
  StoreWrite write;
  coordinator::JobRecord job;
  job.mutable_job()->set_name(name);
  job.mutable_job()->set_state(state);
  job.mutable_job()->set_last_event(events);
  job.set_create_seq(1);
  write.jobs.push_back(job);
  for (int i = 1; i <= events; ++i) {
    mpt::v1::JobEvent e;
    e.set_job(name);
    e.set_sequence(i);
    e.set_message("event " + std::to_string(i));
    write.events.push_back(e);
  }
  EXPECT_TRUE((*store)->Commit(write).ok());
  return *std::move(store);
}

TEST(ReadEventBatch, StopsAtTheLimitAndIsNotDoneBeforeTheLastEvent) {
  auto store = StoreWithEvents("jobs/j1", 5, mpt::v1::SUCCEEDED);
  absl::StatusOr<JobEventBatch> batch = ReadEventBatch(*store, "jobs/j1", 1, /*limit=*/3, 100);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->events.size(), 2u);
  EXPECT_EQ(batch->events.back().sequence(), 3);
  EXPECT_FALSE(batch->done);
  // The next read, from where the reader stopped, is valid and finishes.
  batch = ReadEventBatch(*store, "jobs/j1", 3, /*limit=*/5, 100);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->events.size(), 2u);
  EXPECT_TRUE(batch->done);
}

TEST(ReadEventBatch, WithoutALimitEverythingStoredIsRead) {
  auto store = StoreWithEvents("jobs/j2", 4, mpt::v1::SUCCEEDED);
  absl::StatusOr<JobEventBatch> batch = ReadEventBatch(*store, "jobs/j2", 0, -1, 100);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->events.size(), 4u);
  EXPECT_TRUE(batch->done);
}

TEST(ReadEventBatch, PastTheLastStoredEventIsInvalidAndUnknownJobNotFound) {
  auto store = StoreWithEvents("jobs/j3", 2, mpt::v1::RUNNING);
  EXPECT_EQ(ReadEventBatch(*store, "jobs/j3", 3, -1, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadEventBatch(*store, "jobs/none", 0, -1, 100).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mpt
