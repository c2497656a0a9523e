// Worker leases on a fake clock: a silent worker is lost, its assignment is
// requeued and resumes from the last checkpoint; losing one rank requeues
// the whole gang; progress events are rate-limited.
#include <string>

#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::AllEvents;
using ::mpt::testing::Finish;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StageState;
using ::mpt::testing::StoreGetAs;
using ::mpt::testing::StoreSetAs;
using ::mpt::testing::Upload;

class LeaseTest : public ::mpt::testing::CoordinatorTest {
 protected:
  void SetUp() override { Open({}); }
  void Open(CoordinatorOptions options) { OpenFresh("lease", /*on_disk=*/false, options); }
  std::string WorkerState(const std::string& name) {
    const mpt::v1::ListWorkersResponse list = core_->ListWorkers();
    for (const auto& w : list.workers()) {
      if (w.name() == name) return w.state();
    }
    return "(gone)";
  }
};

TEST_F(LeaseTest, RegistrationTellsTheIntervals) {
  mpt::v1::Worker w;
  auto r = core_->RegisterWorker(w);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->heartbeat_seconds(), 2);
  EXPECT_EQ(r->lease_seconds(), 10);
  EXPECT_EQ(r->name().rfind("workers/", 0), 0u);
  w.add_collectives("mpi");
  EXPECT_EQ(core_->RegisterWorker(w).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LeaseTest, HeartbeatsAndProgressKeepTheLease) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  for (int i = 0; i < 5; ++i) {
    clock_->Advance(absl::Seconds(8));
    if (i % 2 == 0) {
      ASSERT_TRUE(core_->Heartbeat(w).ok());
    } else {
      mpt::v1::ReportProgressRequest p;
      p.set_assignment(a->id());
      p.set_worker(w);
      p.mutable_progress()->set_step(i);
      ASSERT_TRUE(core_->ReportProgress(p).ok());
    }
    ASSERT_TRUE(core_->CheckLeases().ok());
    EXPECT_EQ(WorkerState(w), "busy");
  }
  EXPECT_EQ(StageState(core_.get(), job, "source/a"), mpt::v1::RUNNING);
}

TEST_F(LeaseTest, LostWorkerIsRequeuedFromItsLastCheckpoint) {
  const std::string w1 = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w1);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(Upload(core_.get(), a->id(), "checkpoint", "step 20 state", 20).ok());
  auto ckpt = Upload(core_.get(), a->id(), "checkpoint", "step 40 state", 40);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  // Only the newest checkpoint is kept.
  auto j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  ASSERT_EQ(j->artifacts_size(), 1);
  EXPECT_EQ(j->artifacts(0).name(), ckpt->name());

  clock_->Advance(absl::Seconds(10));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(WorkerState(w1), "busy");  // exactly at the lease: still alive
  clock_->Advance(absl::Seconds(1));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(WorkerState(w1), "lost");
  EXPECT_EQ(core_->Heartbeat(w1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_->PollAssignment(w1, absl::Now()).status().code(),
            absl::StatusCode::kNotFound);
  mpt::v1::ReportProgressRequest p;
  p.set_assignment(a->id());
  p.set_worker(w1);
  EXPECT_EQ(core_->ReportProgress(p).status().code(), absl::StatusCode::kNotFound);

  j = core_->GetJob(job);
  EXPECT_EQ(j->stages(0).state(), mpt::v1::QUEUED);
  EXPECT_EQ(j->state(), mpt::v1::RUNNING);
  bool requeue_event = false;
  for (const auto& e : AllEvents(core_.get(), job)) {
    if (e.message().find("resumes from its checkpoint at step 40") != std::string::npos) {
      requeue_event = true;
    }
  }
  EXPECT_TRUE(requeue_event);

  const std::string w2 = Register(core_.get());
  auto b = Poll(core_.get(), w2);
  ASSERT_TRUE(b.has_value());
  EXPECT_NE(b->id().find("/attempts/2/"), std::string::npos) << b->id();
  ASSERT_EQ(b->inputs_size(), 1);
  EXPECT_EQ(b->inputs(0).role(), "checkpoint");
  EXPECT_EQ(b->inputs(0).artifact(), ckpt->name());
  auto bytes = core_->ReadArtifact(ckpt->name());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->data, "step 40 state");

  Finish(core_.get(), *b);
  j = core_->GetJob(job);
  EXPECT_EQ(j->state(), mpt::v1::SUCCEEDED);
  EXPECT_EQ(j->stages(0).attempts(), 2);
  // The finished stage's checkpoint is dropped; the adapter stays.
  ASSERT_EQ(j->artifacts_size(), 1);
  EXPECT_EQ(j->artifacts(0).kind(), "adapter");
  EXPECT_EQ(core_->ReadArtifact(ckpt->name()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LeaseTest, LosingOneRankRequeuesTheWholeGang) {
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  const std::string job = Submit(PipelineRequest({"a"}, {}, /*world_size=*/2));
  auto s = Poll(core_.get(), w1);
  ASSERT_TRUE(s.has_value());
  Finish(core_.get(), *s);
  auto r1 = Poll(core_.get(), w1);
  auto r2 = Poll(core_.get(), w2);
  ASSERT_TRUE(r1.has_value() && r2.has_value());
  ASSERT_TRUE(StoreSetAs(core_.get(), *r1, "rank0/addr", "10.0.0.1:1234", w1).ok());

  clock_->Advance(absl::Seconds(6));
  ASSERT_TRUE(core_->Heartbeat(w1).ok());
  clock_->Advance(absl::Seconds(6));  // w2 silent for 12 s, w1 for 6 s
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(WorkerState(w2), "lost");
  EXPECT_EQ(StageState(core_.get(), job, "distillation"), mpt::v1::QUEUED);
  // The surviving rank is told to stop.
  auto hb = core_->Heartbeat(w1);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->cancelled_assignments_size(), 1);
  EXPECT_EQ(hb->cancelled_assignments(0), r1->id());
  // The old group is gone, and its keys with it.
  EXPECT_EQ(StoreGetAs(core_.get(), *r1, {"rank0/addr"}, absl::Now(), w1).status().code(),
            absl::StatusCode::kNotFound);

  // A new worker joins; the survivor polls (so it stopped the old rank) and
  // the gang restarts on both, attempt 2, new group.
  const std::string w3 = Register(core_.get());
  auto n1 = Poll(core_.get(), w1);
  auto n3 = Poll(core_.get(), w3);
  ASSERT_TRUE(n1.has_value() && n3.has_value());
  EXPECT_EQ(n1->group(), n3->group());
  EXPECT_NE(n1->group(), r1->group());
  EXPECT_NE(n1->group().find("/attempts/2"), std::string::npos);
  EXPECT_EQ(StageState(core_.get(), job, "distillation"), mpt::v1::RUNNING);
}

TEST_F(LeaseTest, StageThatKeepsLosingItsWorkerFailsTheJob) {
  CoordinatorOptions options;
  options.max_worker_losses = 1;
  Open(options);
  const std::string job = Submit(SourceRequest("a"));
  for (int i = 0; i < 2; ++i) {
    const std::string w = Register(core_.get());
    ASSERT_TRUE(Poll(core_.get(), w).has_value());
    clock_->Advance(absl::Seconds(11));
    ASSERT_TRUE(core_->CheckLeases().ok());
  }
  auto j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state(), mpt::v1::FAILED);
  EXPECT_NE(j->error().find("lost its worker 2 times"), std::string::npos) << j->error();
}

TEST_F(LeaseTest, ProgressEventsAreRateLimitedPerStage) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  const size_t before = AllEvents(core_.get(), job).size();
  for (int step = 1; step <= 100; ++step) {
    mpt::v1::ReportProgressRequest p;
    p.set_assignment(a->id());
    p.set_worker(w);
    p.mutable_progress()->set_step(step);
    p.mutable_progress()->set_total_steps(1000);
    (*p.mutable_progress()->mutable_losses())["loss"] = 1.0 / step;
    ASSERT_TRUE(core_->ReportProgress(p).ok());
    clock_->Advance(absl::Milliseconds(50));  // 20 reports a second for 5 s
  }
  auto events = AllEvents(core_.get(), job);
  const size_t progress_events = events.size() - before;
  EXPECT_GE(progress_events, 4u);
  EXPECT_LE(progress_events, 6u);
  // The job shows the latest progress even between events.
  auto j = core_->GetJob(job);
  EXPECT_EQ(j->progress().step(), 100);
  EXPECT_EQ(j->stages(0).progress().step(), 100);
  EXPECT_EQ(j->progress().stage(), "source");
  EXPECT_EQ(j->progress().task(), "a");
  EXPECT_EQ(events.back().stage(), "source/a");
  EXPECT_TRUE(events.back().has_progress());
}

TEST_F(LeaseTest, TheLastStepIsKeptHoweverSoonItComes) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  auto report = [&](int step) {
    mpt::v1::ReportProgressRequest p;
    p.set_assignment(a->id());
    p.set_worker(w);
    p.mutable_progress()->set_step(step);
    p.mutable_progress()->set_total_steps(60);
    (*p.mutable_progress()->mutable_losses())["loss"] = 1.0 / step;
    return core_->ReportProgress(p);
  };
  const size_t before = AllEvents(core_.get(), job).size();
  ASSERT_TRUE(report(1).ok());  // the stage's first report: kept
  clock_->Advance(absl::Milliseconds(5));
  ASSERT_TRUE(report(30).ok());  // within the interval: not kept
  clock_->Advance(absl::Milliseconds(5));
  ASSERT_TRUE(report(60).ok());  // the last step, 10 ms after the first: kept
  clock_->Advance(absl::Milliseconds(5));
  ASSERT_TRUE(report(60).ok());  // the last step again: rate-limited
  auto events = AllEvents(core_.get(), job);
  ASSERT_EQ(events.size() - before, 2u);
  EXPECT_EQ(events[before].progress().step(), 1);
  EXPECT_EQ(events.back().progress().step(), 60);
  EXPECT_DOUBLE_EQ(events.back().progress().losses().at("loss"), 1.0 / 60);
}

TEST_F(LeaseTest, LostWorkersAreForgottenAfterTheRetention) {
  const std::string w = Register(core_.get());
  clock_->Advance(absl::Seconds(11));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(WorkerState(w), "lost");
  clock_->Advance(absl::Hours(2));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(WorkerState(w), "(gone)");
}

}  // namespace
}  // namespace mpt
