// The JobService semantics through the core: validation (nothing stored on
// error), cancellation, WatchJob resumption, List paging, artefacts and the
// rendezvous store.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::AllEvents;
using ::mpt::testing::Complete;
using ::mpt::testing::CountJobs;
using ::mpt::testing::Finish;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StoreGetAs;
using ::mpt::testing::StoreSetAs;
using ::mpt::testing::Upload;

class ApiTest : public ::mpt::testing::CoordinatorTest {
 protected:
  void SetUp() override { Open({}); }
  void Open(CoordinatorOptions options) { OpenFresh("api", /*on_disk=*/false, options); }
  // Submits `r` and expects `code` with `field` in the message, and nothing
  // stored.
  void ExpectRejected(const mpt::v1::SubmitJobRequest& r, absl::StatusCode code,
                      const std::string& field) {
    auto job = core_->SubmitJob(r);
    ASSERT_FALSE(job.ok()) << "accepted; expected an error naming " << field;
    EXPECT_EQ(job.status().code(), code) << job.status();
    EXPECT_TRUE(absl::StrContains(job.status().message(), field)) << job.status();
    EXPECT_EQ(CountJobs(core_.get()), 0);
  }
};

// ---- Validation -------------------------------------------------------------

TEST_F(ApiTest, BadRequestsNameTheFieldAndStoreNothing) {
  auto r = PipelineRequest({"a"});
  r.set_kind(static_cast<mpt::v1::JobKind>(42));
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "kind");
  r.set_kind(mpt::v1::JOB_KIND_UNSPECIFIED);
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "kind");

  r = PipelineRequest({});
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "source.tasks");

  r = PipelineRequest({"a"});
  r.mutable_spec()->mutable_prompt()->set_num_virtual_tokens(4);
  r.mutable_spec()->mutable_prompt()->set_num_ranks(8);
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "prompt.num_ranks");

  r = PipelineRequest({"a"}, {"t"}, /*world_size=*/9);
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "distillation.world_size");

  r = PipelineRequest({"a"});
  r.mutable_spec()->clear_base_model();
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "base_model");

  r = SourceRequest("a");
  r.mutable_spec()->mutable_source()->mutable_train()->set_steps(0);
  ExpectRejected(r, absl::StatusCode::kInvalidArgument, "source.train.steps");

  mpt::v1::SubmitJobRequest d;
  d.set_kind(mpt::v1::DISTILLATION);
  d.mutable_spec()->set_base_model("/models/t5");
  *d.mutable_spec()->mutable_distillation()->add_tasks() = ::mpt::testing::Task("a");
  *d.mutable_spec()->mutable_distillation()->add_tasks() = ::mpt::testing::Task("b");
  d.mutable_spec()->mutable_distillation()->mutable_train()->set_steps(5);
  d.mutable_spec()->mutable_distillation()->add_teacher_adapters("jobs/x/artifacts/y");
  ExpectRejected(d, absl::StatusCode::kInvalidArgument, "distillation.teacher_adapters");
  d.mutable_spec()->mutable_distillation()->add_teacher_adapters("not-an-artefact");
  ExpectRejected(d, absl::StatusCode::kInvalidArgument, "distillation.teacher_adapters[1]");
  d.mutable_spec()->mutable_distillation()->set_teacher_adapters(1, "jobs/x/artifacts/z");
  ExpectRejected(d, absl::StatusCode::kNotFound, "distillation.teacher_adapters[0]");

  mpt::v1::SubmitJobRequest t;
  t.set_kind(mpt::v1::TARGET_ADAPTATION);
  t.mutable_spec()->set_base_model("/models/t5");
  *t.mutable_spec()->mutable_target()->add_tasks() = ::mpt::testing::Task("t");
  t.mutable_spec()->mutable_target()->mutable_train()->set_steps(5);
  ExpectRejected(t, absl::StatusCode::kInvalidArgument, "target.source_adapter");
  t.mutable_spec()->mutable_target()->set_source_adapter("jobs/nope/artifacts/none");
  ExpectRejected(t, absl::StatusCode::kNotFound, "target.source_adapter");
}

TEST_F(ApiTest, MissingDataFilesAreRejectedWhenTheCoordinatorCanSeeThem) {
  CoordinatorOptions options;
  options.check_spec_files = true;
  Open(options);
  const std::string dir = ::mpt::testing::FreshTempDir("api_files");
  std::filesystem::create_directories(dir + "/model");
  std::ofstream(dir + "/a.jsonl") << "{\"input\":\"x\",\"target\":\"y\"}\n";
  auto r = SourceRequest("a", 0, dir + "/model");
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_train_path(dir + "/a.jsonl");
  EXPECT_TRUE(core_->SubmitJob(r).ok());
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_train_path(dir + "/missing.jsonl");
  auto bad = core_->SubmitJob(r);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "source.tasks[0].train_path"))
      << bad.status();
  r = SourceRequest("a", 0, dir + "/no-model");
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_train_path(dir + "/a.jsonl");
  bad = core_->SubmitJob(r);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "base_model")) << bad.status();
  EXPECT_EQ(CountJobs(core_.get()), 1);
}

TEST_F(ApiTest, SingleStageJobsUseArtefactsOfEarlierJobs) {
  const std::string w = Register(core_.get());
  const std::string source_job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  auto ckpt = Upload(core_.get(), a->id(), "checkpoint", "ckpt", 3);
  ASSERT_TRUE(ckpt.ok());
  Finish(core_.get(), *a);
  auto done = core_->GetJob(source_job);
  ASSERT_TRUE(done.ok());
  const std::string teacher = done->stages(0).artifact();
  ASSERT_FALSE(teacher.empty());

  mpt::v1::SubmitJobRequest d;
  d.set_kind(mpt::v1::DISTILLATION);
  d.mutable_spec()->set_base_model("/models/t5");
  *d.mutable_spec()->mutable_distillation()->add_tasks() = ::mpt::testing::Task("a");
  d.mutable_spec()->mutable_distillation()->mutable_train()->set_steps(5);
  d.mutable_spec()->mutable_distillation()->add_teacher_adapters(teacher);
  auto job = core_->SubmitJob(d);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->stages_size(), 1);
  EXPECT_EQ(job->stages(0).id(), "distillation");
  auto da = Poll(core_.get(), w);
  ASSERT_TRUE(da.has_value());
  ASSERT_EQ(da->inputs_size(), 1);
  EXPECT_EQ(da->inputs(0).role(), "teacher");
  EXPECT_EQ(da->inputs(0).artifact(), teacher);
  EXPECT_EQ(da->inputs(0).task(), "a");
  Finish(core_.get(), *da);

  auto distilled = core_->GetJob(job->name());
  mpt::v1::SubmitJobRequest t;
  t.set_kind(mpt::v1::TARGET_ADAPTATION);
  t.mutable_spec()->set_base_model("/models/t5");
  *t.mutable_spec()->mutable_target()->add_tasks() = ::mpt::testing::Task("x");
  *t.mutable_spec()->mutable_target()->add_tasks() = ::mpt::testing::Task("y");
  t.mutable_spec()->mutable_target()->mutable_train()->set_steps(5);
  t.mutable_spec()->mutable_target()->set_source_adapter(distilled->stages(0).artifact());
  auto target = core_->SubmitJob(t);
  ASSERT_TRUE(target.ok()) << target.status();
  ASSERT_EQ(target->stages_size(), 2);
  EXPECT_EQ(target->stages(0).id(), "target/x");
  EXPECT_EQ(target->stages(1).id(), "target/y");
}

TEST_F(ApiTest, RequestIdMakesSubmissionIdempotent) {
  auto r = SourceRequest("a");
  r.set_request_id("abc");
  const std::string first = Submit(r);
  auto second = core_->SubmitJob(r);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->name(), first);
  EXPECT_EQ(CountJobs(core_.get()), 1);
}

TEST_F(ApiTest, GetJobNames) {
  EXPECT_EQ(core_->GetJob("job/1").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->GetJob("jobs/").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->GetJob("jobs/nope").status().code(), absl::StatusCode::kNotFound);
}

// ---- Cancellation ---------------------------------------------------------------

TEST_F(ApiTest, CancelQueuedJobEndsAtOnce) {
  const std::string job = Submit(PipelineRequest({"a", "b"}));
  auto c = core_->CancelJob(job);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state(), mpt::v1::CANCELLED);
  for (const auto& s : c->stages()) EXPECT_EQ(s.state(), mpt::v1::CANCELLED);
  auto again = core_->CancelJob(job);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(core_->CancelJob("jobs/unknown").status().code(), absl::StatusCode::kNotFound);
  auto batch = core_->WaitForJobEvents(job, 0, absl::Now());
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->done);
  EXPECT_EQ(batch->events.back().state(), mpt::v1::CANCELLED);
  // Nothing of it is handed out afterwards.
  const std::string w = Register(core_.get());
  EXPECT_FALSE(Poll(core_.get(), w).has_value());
}

TEST_F(ApiTest, CancelRunningJobWaitsForItsAssignmentsToStop) {
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  const std::string job = Submit(PipelineRequest({"a", "b"}));
  auto a = Poll(core_.get(), w1);
  auto b = Poll(core_.get(), w2);
  ASSERT_TRUE(a.has_value() && b.has_value());
  auto c = core_->CancelJob(job);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state(), mpt::v1::CANCELLING);
  auto same = core_->CancelJob(job);  // cancelling again changes nothing
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->state(), mpt::v1::CANCELLING);

  // Workers learn it through heartbeats and progress reports.
  auto hb = core_->Heartbeat(w1);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->cancelled_assignments_size(), 1);
  EXPECT_EQ(hb->cancelled_assignments(0), a->id());
  mpt::v1::ReportProgressRequest p;
  p.set_assignment(b->id());
  p.set_worker(w2);
  auto rep = core_->ReportProgress(p);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->cancelled());
  EXPECT_EQ(Upload(core_.get(), a->id(), "checkpoint", "late", 1).status().code(),
            absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(Complete(core_.get(), a->id(), false, "cancelled").ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::CANCELLING);
  // The second worker simply polls again: that also releases it.
  EXPECT_FALSE(Poll(core_.get(), w2).has_value());
  auto final_job = core_->GetJob(job);
  ASSERT_TRUE(final_job.ok());
  EXPECT_EQ(final_job->state(), mpt::v1::CANCELLED);
  EXPECT_TRUE(final_job->has_end_time());
  EXPECT_EQ(core_->CancelJob(job).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ApiTest, CancelEndsWhenTheWorkerIsLost) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  ASSERT_TRUE(Poll(core_.get(), w).has_value());
  ASSERT_TRUE(core_->CancelJob(job).ok());
  clock_->Advance(absl::Seconds(11));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::CANCELLED);
}

// ---- WatchJob -----------------------------------------------------------------------

TEST_F(ApiTest, WatchResumesAfterASequenceAndEndsAfterTheFinalEvent) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  auto all = AllEvents(core_.get(), job);
  ASSERT_GE(all.size(), 2u);  // submitted, started
  EXPECT_EQ(all[0].sequence(), 1);
  EXPECT_EQ(all[0].state(), mpt::v1::QUEUED);
  EXPECT_EQ(all[1].stage(), "source/a");
  EXPECT_EQ(all[1].stage_state(), mpt::v1::RUNNING);

  auto tail = core_->WaitForJobEvents(job, 1, absl::Now());
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->events.size(), all.size() - 1);
  EXPECT_EQ(tail->events[0].sequence(), 2);
  EXPECT_FALSE(tail->done);

  // Nothing new: the wait times out with an empty batch.
  auto empty = core_->WaitForJobEvents(job, all.back().sequence(),
                                       absl::Now() + absl::Milliseconds(30));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->events.empty());
  EXPECT_FALSE(empty->done);
  EXPECT_EQ(core_->WaitForJobEvents(job, all.back().sequence() + 5, absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->WaitForJobEvents("jobs/none", 0, absl::Now()).status().code(),
            absl::StatusCode::kNotFound);

  // A blocked watcher wakes up when the job finishes.
  absl::StatusOr<JobEventBatch> woken;
  std::thread watcher([&] {
    woken = core_->WaitForJobEvents(job, all.back().sequence(), absl::Now() + absl::Seconds(30));
  });
  absl::SleepFor(absl::Milliseconds(50));
  Finish(core_.get(), *a);
  watcher.join();
  ASSERT_TRUE(woken.ok()) << woken.status();
  ASSERT_FALSE(woken->events.empty());
  EXPECT_TRUE(woken->done);
  EXPECT_EQ(woken->events.back().state(), mpt::v1::SUCCEEDED);
  EXPECT_EQ(woken->events.front().sequence(), all.back().sequence() + 1);
  // Resuming after the final event is immediately done.
  auto after_end = core_->WaitForJobEvents(job, woken->events.back().sequence(), absl::Now());
  ASSERT_TRUE(after_end.ok());
  EXPECT_TRUE(after_end->events.empty());
  EXPECT_TRUE(after_end->done);
}

TEST_F(ApiTest, ShutdownWakesBlockedCalls) {
  const std::string w = Register(core_.get(), {"/models/t5"});
  const std::string job = Submit(SourceRequest("a", 0, "/models/other"));  // not for w
  // A running attempt whose rank waits in the rendezvous store.
  const std::string w2 = Register(core_.get(), {"/models/b"});
  Submit(SourceRequest("b", 0, "/models/b"));
  const std::optional<mpt::v1::Assignment> b = Poll(core_.get(), w2);
  ASSERT_TRUE(b.has_value());
  absl::Status poll_status, watch_status, get_status;
  std::thread poller([&] {
    poll_status = core_->PollAssignment(w, absl::Now() + absl::Seconds(30)).status();
  });
  std::thread watcher([&] {
    watch_status = core_->WaitForJobEvents(job, 1, absl::Now() + absl::Seconds(30)).status();
  });
  std::thread getter([&] {
    get_status = StoreGetAs(core_.get(), *b, {"k"}, absl::Now() + absl::Seconds(30), w2).status();
  });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time start = absl::Now();
  core_->Shutdown();
  poller.join();
  watcher.join();
  getter.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(poll_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(watch_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(get_status.code(), absl::StatusCode::kUnavailable);
}

// ---- ListJobs -----------------------------------------------------------------------

TEST_F(ApiTest, ListPagesNewestFirstAndStaysStableUnderInserts) {
  std::vector<std::string> jobs;
  for (int i = 0; i < 7; ++i) jobs.push_back(Submit(SourceRequest("t" + std::to_string(i))));
  mpt::v1::ListJobsRequest r;
  r.set_page_size(3);
  auto p1 = core_->ListJobs(r);
  ASSERT_TRUE(p1.ok()) << p1.status();
  ASSERT_EQ(p1->jobs_size(), 3);
  EXPECT_EQ(p1->jobs(0).name(), jobs[6]);
  EXPECT_EQ(p1->jobs(2).name(), jobs[4]);
  ASSERT_FALSE(p1->next_page_token().empty());

  Submit(SourceRequest("late"));  // a new job does not shift later pages
  r.set_page_token(p1->next_page_token());
  auto p2 = core_->ListJobs(r);
  ASSERT_TRUE(p2.ok()) << p2.status();
  ASSERT_EQ(p2->jobs_size(), 3);
  EXPECT_EQ(p2->jobs(0).name(), jobs[3]);
  r.set_page_token(p2->next_page_token());
  auto p3 = core_->ListJobs(r);
  ASSERT_TRUE(p3.ok());
  ASSERT_EQ(p3->jobs_size(), 1);
  EXPECT_EQ(p3->jobs(0).name(), jobs[0]);
  EXPECT_TRUE(p3->next_page_token().empty());

  // The token belongs to its filters.
  mpt::v1::ListJobsRequest other;
  other.set_page_size(3);
  other.add_states(mpt::v1::QUEUED);
  other.set_page_token(p1->next_page_token());
  EXPECT_EQ(core_->ListJobs(other).status().code(), absl::StatusCode::kInvalidArgument);
  other.set_page_token("garbage!");
  EXPECT_EQ(core_->ListJobs(other).status().code(), absl::StatusCode::kInvalidArgument);
  other.clear_page_token();
  other.set_page_size(-1);
  EXPECT_EQ(core_->ListJobs(other).status().code(), absl::StatusCode::kInvalidArgument);
  other.set_page_size(0);
  other.add_states(static_cast<mpt::v1::JobState>(77));
  EXPECT_EQ(core_->ListJobs(other).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ApiTest, ListFiltersByStateAndKind) {
  const std::string pipeline = Submit(PipelineRequest({"a"}));
  const std::string source = Submit(SourceRequest("b"));
  const std::string cancelled = Submit(SourceRequest("c"));
  ASSERT_TRUE(core_->CancelJob(cancelled).ok());
  mpt::v1::ListJobsRequest r;
  r.add_states(mpt::v1::CANCELLED);
  auto page = core_->ListJobs(r);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).name(), cancelled);
  r.clear_states();
  r.add_kinds(mpt::v1::PIPELINE);
  page = core_->ListJobs(r);
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).name(), pipeline);
  EXPECT_EQ(page->jobs(0).stages_size(), 3);
  r.add_states(mpt::v1::QUEUED);
  r.add_kinds(mpt::v1::SOURCE_TRAINING);
  page = core_->ListJobs(r);
  ASSERT_EQ(page->jobs_size(), 2);
  EXPECT_EQ(page->jobs(0).name(), source);
}

// ---- Artefacts --------------------------------------------------------------------

TEST_F(ApiTest, UploadWithAWrongChecksumStoresNothing) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  mpt::v1::UploadArtifactRequest::Header h;
  h.set_assignment(a->id());
  h.set_worker(w);
  h.set_kind("adapter");
  const std::string data = "the adapter bytes";
  auto bad = core_->UploadArtifact(h, data, Sha256Hex("other bytes"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_EQ(core_->GetJob(job)->artifacts_size(), 0);
  EXPECT_FALSE(std::filesystem::exists(files_.artifacts + "/sha256/" +
                                       Sha256Hex(data).substr(0, 2)));
  EXPECT_EQ(core_->UploadArtifact(h, data, "xyz").status().code(),
            absl::StatusCode::kInvalidArgument);
  h.set_kind("weights");
  EXPECT_EQ(core_->UploadArtifact(h, data, Sha256Hex(data)).status().code(),
            absl::StatusCode::kInvalidArgument);
  h.set_kind("adapter");
  h.set_assignment("jobs/x/stages/y/attempts/1/ranks/0");
  EXPECT_EQ(core_->UploadArtifact(h, data, Sha256Hex(data)).status().code(),
            absl::StatusCode::kNotFound);
  // A completion without an adapter is not a success.
  ASSERT_TRUE(Complete(core_.get(), a->id()).ok());
  EXPECT_NE(core_->GetJob(job)->state(), mpt::v1::SUCCEEDED);
}

TEST_F(ApiTest, CorruptedBlobIsDataLossOnRead) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  // A checkpoint: any bytes will do.
  auto art = Upload(core_.get(), a->id(), "checkpoint", "precious bytes");
  ASSERT_TRUE(art.ok()) << art.status();
  EXPECT_EQ(art->size_bytes(), 14);
  EXPECT_EQ(art->sha256(), Sha256Hex("precious bytes"));
  EXPECT_EQ(art->stage(), "source/a");
  auto read = core_->ReadArtifact(art->name());
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->data, "precious bytes");
  const std::string path =
      files_.artifacts + "/sha256/" + art->sha256().substr(0, 2) + "/" + art->sha256().substr(2);
  std::filesystem::permissions(path, std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  std::ofstream(path, std::ios::trunc) << "tampered bytes";
  EXPECT_EQ(core_->ReadArtifact(art->name()).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(core_->ReadArtifact("jobs/x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->ReadArtifact(job + "/artifacts/none").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- Rendezvous store --------------------------------------------------------------

TEST_F(ApiTest, StoreGetWaitsForEveryKey) {
  // Groups are those of running attempts.
  const std::string w = Register(core_.get());
  Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(StoreSetAs(core_.get(), *a, "a", "1", w).ok());
  auto missing = StoreGetAs(core_.get(), *a, {"a", "b"}, absl::Now() + absl::Milliseconds(20), w);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "b")) << missing.status();
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(30));
    ASSERT_TRUE(StoreSetAs(core_.get(), *a, "b", std::string("\0\1", 2), w).ok());
  });
  auto values = StoreGetAs(core_.get(), *a, {"b", "a"}, absl::Now() + absl::Seconds(10), w);
  setter.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<std::string>{std::string("\0\1", 2), "1"}));
  // Keys are scoped to their group.
  mpt::v1::Assignment other = *a;
  other.set_group("other");
  EXPECT_FALSE(StoreGetAs(core_.get(), other, {"a"}, absl::Now(), w).ok());
  EXPECT_EQ(StoreSetAs(core_.get(), *a, "", "1", w).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StoreGetAs(core_.get(), *a, {}, absl::Now(), w).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mpt
