// No stranger completes a stage: uploaded adapters must be the adapter the
// stage produces, and only the worker holding an assignment of the current
// attempt may report progress on it, upload for it or complete it.
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "tests/server/coordinator_test_util.h"
#include "tests/server/test_adapters.h"

namespace mpt {
namespace {

using ::mpt::testing::AdapterBlobFor;
using ::mpt::testing::CompleteAs;
using ::mpt::testing::FindStage;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::PackAdapter;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StageState;
using ::mpt::testing::UploadAs;
using ::mpt::testing::ValidAdapterFiles;

class WorkerTrustTest : public ::mpt::testing::CoordinatorTest {
 protected:
  void SetUp() override { OpenFresh("trust", /*on_disk=*/false); }

  absl::StatusOr<mpt::v1::ReportProgressResponse> Report(const std::string& worker,
                                                         const std::string& assignment,
                                                         int64_t step) {
    mpt::v1::ReportProgressRequest p;
    p.set_assignment(assignment);
    p.set_worker(worker);
    p.mutable_progress()->set_step(step);
    p.mutable_progress()->set_total_steps(100);
    p.set_message("stepping");
    return core_->ReportProgress(p);
  }

  const mpt::v1::Stage Stage(const std::string& job, const std::string& id) {
    auto j = core_->GetJob(job);
    EXPECT_TRUE(j.ok()) << j.status();
    const mpt::v1::Stage* s = j.ok() ? FindStage(*j, id) : nullptr;
    EXPECT_NE(s, nullptr);
    return s == nullptr ? mpt::v1::Stage() : *s;
  }
};

// ---- Adapter validation ---------------------------------------------------------------

TEST_F(WorkerTrustTest, NonAdapterUploadFailsTheAttemptAndDoesNotCompleteTheStage) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());

  auto bad = UploadAs(core_.get(), w, a->id(), "adapter", "adapter of " + a->id());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "adapter artefact")) << bad.status();
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "source/a")) << bad.status();
  EXPECT_EQ(core_->GetJob(job)->artifacts_size(), 0);

  // The attempt failed: the stage waits for a new one with the error.
  mpt::v1::Stage s = Stage(job, "source/a");
  EXPECT_EQ(s.state(), mpt::v1::QUEUED);
  EXPECT_TRUE(absl::StrContains(s.error(), "source/a")) << s.error();
  // The worker's completion of the dead attempt changes nothing.
  ASSERT_TRUE(CompleteAs(core_.get(), w, a->id(), /*ok=*/true).ok());
  EXPECT_NE(StageState(core_.get(), job, "source/a"), mpt::v1::SUCCEEDED);

  // A real adapter on the next attempt succeeds.
  auto again = Poll(core_.get(), w);
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->id(), a->id());
  ASSERT_TRUE(UploadAs(core_.get(), w, again->id(), "adapter", AdapterBlobFor(*again)).ok());
  ASSERT_TRUE(CompleteAs(core_.get(), w, again->id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::SUCCEEDED);
  EXPECT_EQ(Stage(job, "source/a").attempts(), 2);
}

TEST_F(WorkerTrustTest, BadAdaptersCountAsFailedAttempts) {
  CoordinatorOptions options;
  options.max_attempts = 2;
  OpenFresh("trust_attempts", /*on_disk=*/false, options);
  const std::string w = Register(core_.get());
  const std::string job = Submit(PipelineRequest({"a", "b"}, {}));
  // Sources first (valid), then the distillation, which must be multitask
  // with num_tasks = 2: a source-kind adapter and one of 3 tasks are not it.
  for (int i = 0; i < 2; ++i) {
    auto a = Poll(core_.get(), w);
    ASSERT_TRUE(a.has_value());
    ASSERT_TRUE(UploadAs(core_.get(), w, a->id(), "adapter", AdapterBlobFor(*a)).ok());
    ASSERT_TRUE(CompleteAs(core_.get(), w, a->id()).ok());
  }
  auto d = Poll(core_.get(), w);
  ASSERT_TRUE(d.has_value());
  ASSERT_EQ(d->stage(), "distillation");
  auto want = ExpectedAdapterFor(d->spec(), mpt::v1::PIPELINE, mpt::v1::DISTILLATION);
  ASSERT_TRUE(want.ok());
  ExpectedAdapter source_kind = *want;
  source_kind.multitask = false;
  auto bad = UploadAs(core_.get(), w, d->id(), "adapter",
                      PackAdapter(ValidAdapterFiles(source_kind)));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "peft_type")) << bad.status();
  // The worker's permanent failure of the dead attempt does not fail the job.
  ASSERT_TRUE(CompleteAs(core_.get(), w, d->id(), false, "upload refused", true).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::RUNNING);

  auto d2 = Poll(core_.get(), w);
  ASSERT_TRUE(d2.has_value());
  EXPECT_NE(d2->id(), d->id());
  ExpectedAdapter three_tasks = *want;
  three_tasks.num_tasks = 3;
  bad = UploadAs(core_.get(), w, d2->id(), "adapter", PackAdapter(ValidAdapterFiles(three_tasks)));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "num_tasks is 3")) << bad.status();
  // Out of attempts: the job fails with the reason.
  auto j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state(), mpt::v1::FAILED);
  EXPECT_TRUE(absl::StrContains(j->error(), "num_tasks")) << j->error();
}

TEST_F(WorkerTrustTest, CheckpointsAreNotAdapters) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  auto ckpt = UploadAs(core_.get(), w, a->id(), "checkpoint", "optimizer state", 5);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  // A checkpoint alone does not complete the stage.
  ASSERT_TRUE(CompleteAs(core_.get(), w, a->id()).ok());
  EXPECT_NE(StageState(core_.get(), job, "source/a"), mpt::v1::SUCCEEDED);
}

// ---- Only the holder of the current attempt ----------------------------------------

TEST_F(WorkerTrustTest, StrangerCannotReportUploadOrComplete) {
  const std::string holder = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), holder);
  ASSERT_TRUE(a.has_value());
  const std::string stranger = Register(core_.get());
  const std::string adapter = AdapterBlobFor(*a);

  auto rep = Report(stranger, a->id(), 42);
  EXPECT_EQ(rep.status().code(), absl::StatusCode::kFailedPrecondition) << rep.status();
  EXPECT_TRUE(absl::StrContains(rep.status().message(), stranger)) << rep.status();
  EXPECT_EQ(UploadAs(core_.get(), stranger, a->id(), "adapter", adapter).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(UploadAs(core_.get(), stranger, a->id(), "checkpoint", "x", 3).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CompleteAs(core_.get(), stranger, a->id()).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CompleteAs(core_.get(), stranger, a->id(), false, "sabotage", true).code(),
            absl::StatusCode::kFailedPrecondition);
  // A name nobody registered is no better.
  EXPECT_EQ(CompleteAs(core_.get(), "workers/000000000000", a->id()).code(),
            absl::StatusCode::kFailedPrecondition);
  // Not naming a worker is a bad request.
  EXPECT_EQ(CompleteAs(core_.get(), "", a->id()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UploadAs(core_.get(), "", a->id(), "adapter", adapter).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("", a->id(), 1).status().code(), absl::StatusCode::kInvalidArgument);
  // An unknown assignment is NOT_FOUND.
  const std::string unknown = "jobs/x/stages/source/a/attempts/1/ranks/0";
  EXPECT_EQ(Report(holder, unknown, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(UploadAs(core_.get(), holder, unknown, "adapter", adapter).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(CompleteAs(core_.get(), holder, unknown).code(), absl::StatusCode::kNotFound);

  // Nothing moved.
  mpt::v1::Stage s = Stage(job, "source/a");
  EXPECT_EQ(s.state(), mpt::v1::RUNNING);
  EXPECT_EQ(s.attempts(), 1);
  EXPECT_NE(s.progress().step(), 42);
  EXPECT_EQ(core_->GetJob(job)->artifacts_size(), 0);

  // The holder still can.
  auto mine = Report(holder, a->id(), 7);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_FALSE(mine->cancelled());
  ASSERT_TRUE(UploadAs(core_.get(), holder, a->id(), "adapter", adapter).ok());
  ASSERT_TRUE(CompleteAs(core_.get(), holder, a->id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::SUCCEEDED);
}

TEST_F(WorkerTrustTest, StaleAttemptCannotReportUploadOrComplete) {
  const std::string first = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto old = Poll(core_.get(), first);
  ASSERT_TRUE(old.has_value());
  const std::string second = Register(core_.get());

  // A bad adapter ends attempt 1 while its worker still holds it; attempt 2
  // goes to the idle worker.
  ASSERT_EQ(UploadAs(core_.get(), first, old->id(), "adapter", "garbage").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto current = Poll(core_.get(), second);
  ASSERT_TRUE(current.has_value());
  ASSERT_NE(current->id(), old->id());
  ASSERT_NE(current->id().find("/attempts/2/"), std::string::npos) << current->id();

  // Held but stale: told to stop, its uploads refused, nothing recorded.
  auto rep = Report(first, old->id(), 99);
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_TRUE(rep->cancelled());
  EXPECT_EQ(UploadAs(core_.get(), first, old->id(), "adapter", AdapterBlobFor(*old))
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  // The old attempt's worker is a stranger to the new attempt.
  EXPECT_EQ(Report(first, current->id(), 98).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CompleteAs(core_.get(), first, current->id()).code(),
            absl::StatusCode::kFailedPrecondition);
  // Its completion releases the old assignment and nothing else.
  ASSERT_TRUE(CompleteAs(core_.get(), first, old->id()).ok());
  mpt::v1::Stage s = Stage(job, "source/a");
  EXPECT_EQ(s.state(), mpt::v1::RUNNING);
  EXPECT_EQ(s.attempts(), 2);
  EXPECT_NE(s.progress().step(), 99);

  // Released: progress and uploads on it are NOT_FOUND; a repeated
  // completion is answered ok (its first answer may have been lost) and
  // still changes nothing.
  EXPECT_EQ(Report(first, old->id(), 97).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(UploadAs(core_.get(), first, old->id(), "adapter", AdapterBlobFor(*old))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(CompleteAs(core_.get(), first, old->id()).ok());
  EXPECT_EQ(StageState(core_.get(), job, "source/a"), mpt::v1::RUNNING);
  EXPECT_EQ(core_->GetJob(job)->artifacts_size(), 0);

  // The current attempt's worker finishes the stage.
  ASSERT_TRUE(UploadAs(core_.get(), second, current->id(), "adapter", AdapterBlobFor(*current))
                  .ok());
  ASSERT_TRUE(CompleteAs(core_.get(), second, current->id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::SUCCEEDED);
}

}  // namespace
}  // namespace mpt
