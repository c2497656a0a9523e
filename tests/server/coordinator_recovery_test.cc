// Restart recovery: a coordinator destroyed and re-created over the same
// SQLite file and artefact folder picks up every unfinished job.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::AllEvents;
using ::mpt::testing::CountJobs;
using ::mpt::testing::Finish;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StageState;
using ::mpt::testing::Upload;

class RecoveryTest : public ::mpt::testing::CoordinatorTest {
 protected:
  void SetUp() override { OpenFresh("recovery", /*on_disk=*/true); }
  void Restart() { Reopen(); }
};

TEST_F(RecoveryTest, RunningStageOfAVanishedWorkerResumesFromItsCheckpoint) {
  const std::string w1 = Register(core_.get());
  const std::string job = Submit(PipelineRequest({"a", "b"}, {"t"}));
  const std::string queued = Submit(SourceRequest("q"));
  auto a = Poll(core_.get(), w1);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->stage(), "source/a");
  auto ckpt = Upload(core_.get(), a->id(), "checkpoint", "weights at step 7", 7);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto before = core_->GetJob(job);
  ASSERT_TRUE(before.ok());
  const size_t events_before = AllEvents(core_.get(), job).size();

  Restart();

  // Everything is as it was.
  auto after = core_->GetJob(job);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->state(), mpt::v1::RUNNING);
  EXPECT_EQ(after->stages_size(), before->stages_size());
  EXPECT_EQ(after->stages(0).state(), mpt::v1::RUNNING);
  EXPECT_EQ(after->stages(1).state(), mpt::v1::QUEUED);
  EXPECT_EQ(after->artifacts_size(), 1);
  EXPECT_EQ(after->last_event(), before->last_event());
  EXPECT_EQ(JobStateOf(core_.get(), queued), mpt::v1::QUEUED);
  EXPECT_EQ(AllEvents(core_.get(), job).size(), events_before);
  EXPECT_EQ(CountJobs(core_.get()), 2);
  // The worker gets a fresh lease to come back...
  ASSERT_EQ(core_->ListWorkers().workers_size(), 1);
  // ...but it does not: after the lease its stage is requeued.
  clock_->Advance(absl::Seconds(11));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(core_->Heartbeat(w1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(StageState(core_.get(), job, "source/a"), mpt::v1::QUEUED);

  const std::string w2 = Register(core_.get());
  auto resumed = Poll(core_.get(), w2);
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(resumed->stage(), "source/a");
  ASSERT_EQ(resumed->inputs_size(), 1);
  EXPECT_EQ(resumed->inputs(0).role(), "checkpoint");
  EXPECT_EQ(resumed->inputs(0).artifact(), ckpt->name());
  auto bytes = core_->ReadArtifact(ckpt->name());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->data, "weights at step 7");
  // Event numbers continue where they stopped.
  auto events = AllEvents(core_.get(), job);
  ASSERT_GT(events.size(), events_before);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].sequence(), int64_t(i + 1));
}

TEST_F(RecoveryTest, WorkerThatKeepsHeartbeatingKeepsItsAssignment) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  Restart();
  clock_->Advance(absl::Seconds(5));
  ASSERT_TRUE(core_->Heartbeat(w).ok());
  clock_->Advance(absl::Seconds(8));
  ASSERT_TRUE(core_->CheckLeases().ok());
  auto again = Poll(core_.get(), w);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id(), a->id());
  Finish(core_.get(), *again);
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::SUCCEEDED);
  Restart();
  auto done = core_->GetJob(job);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), mpt::v1::SUCCEEDED);
  ASSERT_EQ(done->artifacts_size(), 1);
  auto adapter = core_->ReadArtifact(done->artifacts(0).name());
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->data, ::mpt::testing::AdapterBlobFor(*a));
  // A finished job's watch ends with its final event.
  auto batch = core_->WaitForJobEvents(job, 0, absl::Now());
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->done);
  EXPECT_EQ(batch->events.back().state(), mpt::v1::SUCCEEDED);
}

// Only the key's hash is stored, and it binds the worker's calls after a
// restart as before.
TEST_F(RecoveryTest, WorkerKeysSurviveARestart) {
  const ::mpt::testing::RegisteredWorker a = ::mpt::testing::RegisterWithKey(core_.get());
  const ::mpt::testing::RegisteredWorker b = ::mpt::testing::RegisterWithKey(core_.get());
  ASSERT_EQ(a.key.size(), 64u);
  EXPECT_NE(a.key, b.key);
  Restart();
  EXPECT_TRUE(core_->CheckWorkerKey(a.name, a.key).ok());
  EXPECT_TRUE(core_->CheckWorkerKey(b.name, b.key).ok());
  EXPECT_EQ(core_->CheckWorkerKey(a.name, b.key).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(core_->CheckWorkerKey(a.name, "").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(core_->CheckAnyWorkerKey(b.key).ok());
  EXPECT_EQ(core_->CheckAnyWorkerKey(a.name).code(), absl::StatusCode::kUnauthenticated);
  const mpt::v1::ListWorkersResponse listed = core_->ListWorkers();
  EXPECT_EQ(listed.workers_size(), 2);
  for (const mpt::v1::Worker& w : listed.workers()) {
    EXPECT_EQ(w.DebugString().find(a.key), std::string::npos);
  }
}

TEST_F(RecoveryTest, CertificateBindingsSurviveARestart) {
  mpt::v1::Worker host;
  host.set_hostname("node7");
  host.set_device("cpu");
  auto bound = core_->RegisterWorker(host, std::string(64, 'c'));
  ASSERT_TRUE(bound.ok()) << bound.status();
  const ::mpt::testing::RegisteredWorker free = ::mpt::testing::RegisterWithKey(core_.get());
  Restart();
  const std::string& key = bound->worker_key();
  EXPECT_TRUE(core_->CheckWorkerKey(bound->name(), key, std::string(64, 'c')).ok());
  EXPECT_TRUE(core_->CheckWorkerKey(bound->name(), key).ok());  // binding not asked for
  EXPECT_EQ(core_->CheckWorkerKey(bound->name(), key, std::string(64, 'd')).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(core_->CheckWorkerKey(bound->name(), key, std::string()).code(),
            absl::StatusCode::kPermissionDenied);
  // The key is checked first: a wrong key stays UNAUTHENTICATED.
  EXPECT_EQ(core_->CheckWorkerKey(bound->name(), free.key, std::string(64, 'c')).code(),
            absl::StatusCode::kUnauthenticated);
  // A worker registered without a certificate keeps its key-only binding.
  EXPECT_TRUE(core_->CheckWorkerKey(free.name, free.key, std::string(64, 'd')).ok());
  EXPECT_TRUE(core_->CheckAnyWorkerKey(key, std::string(64, 'c')).ok());
  EXPECT_EQ(core_->CheckAnyWorkerKey(key, std::string(64, 'd')).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(RecoveryTest, CancellingJobWhoseWorkerIsGoneEndsCancelled) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  ASSERT_TRUE(Poll(core_.get(), w).has_value());
  auto c = core_->CancelJob(job);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state(), mpt::v1::CANCELLING);
  Restart();
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::CANCELLING);
  auto hb = core_->Heartbeat(w);
  ASSERT_TRUE(hb.ok());
  EXPECT_EQ(hb->cancelled_assignments_size(), 1);  // still told to stop
  clock_->Advance(absl::Seconds(11));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::CANCELLED);
}

TEST_F(RecoveryTest, NewJobsAfterARestartListNewestFirst) {
  const std::string first = Submit(SourceRequest("a"));
  Restart();
  const std::string second = Submit(SourceRequest("b"));
  mpt::v1::ListJobsRequest r;
  auto page = core_->ListJobs(r);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs_size(), 2);
  EXPECT_EQ(page->jobs(0).name(), second);
  EXPECT_EQ(page->jobs(1).name(), first);
}

// Job ids grow with time; a restarted coordinator whose clock reads the
// same time (here a frozen fake clock, as after the clock went back) still
// finds free ids, and every job keeps its own.
TEST_F(RecoveryTest, JobIdsStayUniqueWhenTheClockDoesNotMoveAcrossARestart) {
  std::set<std::string> names;
  std::string previous;
  for (int i = 0; i < 300; ++i) {
    const std::string name = Submit(SourceRequest(absl::StrCat("a", i)));
    EXPECT_GT(name, previous);  // made by one process: growing
    previous = name;
    names.insert(name);
  }
  Restart();
  for (int i = 0; i < 300; ++i) names.insert(Submit(SourceRequest(absl::StrCat("b", i))));
  EXPECT_EQ(names.size(), 600u);
  EXPECT_EQ(CountJobs(core_.get()), 600);
}

// A stage before its first report shows its kind and task with the end
// unknown, whichever way the job is read, before and after a restart (the
// coordinator keeps no such progress in memory; the store keeps it).
TEST_F(RecoveryTest, QueuedStagesShowTheirInitialProgressEveryWayTheyAreRead) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(PipelineRequest({"a", "b"}, {"t"}));
  auto running = Poll(core_.get(), w);
  ASSERT_TRUE(running.has_value());
  ASSERT_EQ(running->stage(), "source/a");
  mpt::v1::ReportProgressRequest report;
  report.set_assignment(running->id());
  report.set_worker(w);
  report.mutable_progress()->set_step(3);
  report.mutable_progress()->set_total_steps(10);
  ASSERT_TRUE(core_->ReportProgress(report).ok());

  auto check = [&](const mpt::v1::Job& j, const std::string& how) {
    ASSERT_EQ(j.stages_size(), 4) << how;
    // The reported one.
    EXPECT_EQ(j.stages(0).progress().step(), 3) << how;
    EXPECT_EQ(j.stages(0).progress().stage(), "source") << how;
    EXPECT_EQ(j.stages(0).progress().task(), "a") << how;
    // The others, as planned.
    const std::vector<std::pair<std::string, std::string>> want = {
        {"source", "b"}, {"distillation", ""}, {"target", "t"}};
    for (int i = 1; i < 4; ++i) {
      const mpt::v1::Stage& stage = j.stages(i);
      ASSERT_TRUE(stage.has_progress()) << how << " " << stage.id();
      EXPECT_EQ(stage.progress().stage(), want[i - 1].first) << how << " " << stage.id();
      EXPECT_EQ(stage.progress().task(), want[i - 1].second) << how << " " << stage.id();
      EXPECT_EQ(stage.progress().eta_seconds(), -1) << how << " " << stage.id();
      EXPECT_EQ(stage.progress().step(), 0) << how << " " << stage.id();
    }
  };
  auto check_all_ways = [&](const std::string& when) {
    auto got = core_->GetJob(job);
    ASSERT_TRUE(got.ok()) << got.status();
    check(*got, "GetJob " + when);
    auto bytes = core_->GetJobSerialized(job);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    mpt::v1::Job parsed;
    ASSERT_TRUE(parsed.ParseFromString(**bytes));
    check(parsed, "GetJobSerialized " + when);
    mpt::v1::ListJobsRequest list;
    auto page = core_->ListJobs(list);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_EQ(page->jobs_size(), 1);
    check(page->jobs(0), "ListJobs " + when);
    auto page_bytes = core_->ListJobsSerialized(list);
    ASSERT_TRUE(page_bytes.ok()) << page_bytes.status();
    mpt::v1::ListJobsResponse parsed_page;
    ASSERT_TRUE(parsed_page.ParseFromString(*page_bytes));
    ASSERT_EQ(parsed_page.jobs_size(), 1);
    check(parsed_page.jobs(0), "ListJobsSerialized " + when);
  };
  check_all_ways("before the restart");
  Restart();
  check_all_ways("after the restart");
  // Written again after the restart (the lost worker's stage is requeued).
  clock_->Advance(absl::Seconds(11));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(StageState(core_.get(), job, "source/a"), mpt::v1::QUEUED);
  check_all_ways("after the requeue");
  Restart();
  check_all_ways("after a second restart");
}

TEST_F(RecoveryTest, IdempotencyKeysSurviveARestart) {
  auto r = SourceRequest("a");
  r.set_request_id("submit-42");
  const std::string job = Submit(r);
  Restart();
  auto again = core_->SubmitJob(r);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->name(), job);
  EXPECT_EQ(CountJobs(core_.get()), 1);
}

}  // namespace
}  // namespace mpt
