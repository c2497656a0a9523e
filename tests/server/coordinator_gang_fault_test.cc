// Gang faults on a fake clock: a rank that reports a peer failure is not
// blamed; the peer that stopped heartbeating is declared lost (at once, or
// as soon as it has been silent for two heartbeat intervals); a real error
// of a peer still counts; lost workers and gang faults never use up the
// stage's max_attempts.
#include <string>

#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::AllEvents;
using ::mpt::testing::Complete;
using ::mpt::testing::Finish;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::StageState;

absl::Status CompletePeerFailure(Coordinator* c, const std::string& assignment,
                                 const std::string& error = "gloo: Connection closed by peer") {
  mpt::v1::CompleteAssignmentRequest r;
  r.set_assignment(assignment);
  r.set_worker(::mpt::testing::HolderOf(c, assignment));
  r.set_ok(false);
  r.set_error(error);
  r.set_peer_failure(true);
  return c->CompleteAssignment(r);
}

class GangFaultTest : public ::mpt::testing::CoordinatorTest {
 protected:
  // Default intervals: heartbeat 2 s, lease 10 s, so a peer silent for
  // more than 4 s is blamed.
  void Open(CoordinatorOptions options = {}) {
    OpenFresh("gang_fault", /*on_disk=*/false, options);
  }
  std::string WorkerState(const std::string& name) {
    const mpt::v1::ListWorkersResponse list = core_->ListWorkers();
    for (const auto& w : list.workers()) {
      if (w.name() == name) return w.state();
    }
    return "(gone)";
  }
  // A two-rank distillation job whose source stage is done; the gang runs
  // on w1 (rank 0) and w2 (rank 1).
  void StartGang() {
    w1_ = Register(core_.get());
    w2_ = Register(core_.get());
    job_ = Submit(PipelineRequest({"a"}, {}, /*world_size=*/2));
    auto s = Poll(core_.get(), w1_);
    ASSERT_TRUE(s.has_value());
    Finish(core_.get(), *s);
    auto r0 = Poll(core_.get(), w1_);
    auto r1 = Poll(core_.get(), w2_);
    ASSERT_TRUE(r0.has_value() && r1.has_value());
    ASSERT_EQ(r0->rank(), 0);
    ASSERT_EQ(r1->rank(), 1);
    r0_ = *r0;
    r1_ = *r1;
  }
  // Advances the fake clock by `d` while `alive` heartbeats every second.
  void Pass(absl::Duration d, const std::vector<std::string>& alive) {
    for (absl::Duration t = absl::ZeroDuration(); t < d; t += absl::Seconds(1)) {
      clock_->Advance(std::min(absl::Seconds(1), d - t));
      for (const std::string& w : alive) ASSERT_TRUE(core_->Heartbeat(w).ok()) << w;
      ASSERT_TRUE(core_->CheckLeases().ok());
    }
  }
  bool EventsMention(const std::string& text) {
    const std::vector<mpt::v1::JobEvent> events = AllEvents(core_.get(), job_);
    for (const auto& e : events) {
      if (e.message().find(text) != std::string::npos) return true;
    }
    return false;
  }

  std::string w1_, w2_, job_;
  mpt::v1::Assignment r0_, r1_;
};

TEST_F(GangFaultTest, APeerAlreadySilentIsDeclaredLostAtOnceAndTheReporterIsNotBlamed) {
  CoordinatorOptions options;
  options.max_attempts = 1;  // one counted failure would fail the job
  Open(options);
  StartGang();
  Pass(absl::Seconds(5), {w1_});  // w2 silent for 5 s, well within its lease
  ASSERT_EQ(WorkerState(w2_), "busy");
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r0_.id()).ok());
  EXPECT_EQ(WorkerState(w2_), "lost");
  EXPECT_EQ(WorkerState(w1_), "idle");
  EXPECT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::QUEUED);
  EXPECT_EQ(JobStateOf(core_.get(), job_), mpt::v1::RUNNING);
  EXPECT_TRUE(EventsMention("reported a collective failure")) << "the event names the cause";
  EXPECT_EQ(core_->Heartbeat(w2_).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(GangFaultTest, AKilledPeerIsBlamedAsSoonAsItMissesTwoHeartbeats) {
  CoordinatorOptions options;
  options.max_attempts = 1;
  Open(options);
  StartGang();
  // w2 dies right after a heartbeat; rank 0's collective fails at once.
  ASSERT_TRUE(core_->Heartbeat(w2_).ok());
  Pass(absl::Seconds(1), {w1_});
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r0_.id()).ok());
  EXPECT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::RUNNING)
      << "w2 was silent for 1 s only: not yet to blame";
  Pass(absl::Seconds(3), {w1_});  // silent 4 s: not more than two intervals
  EXPECT_EQ(WorkerState(w2_), "busy");
  Pass(absl::Seconds(1), {w1_});  // silent 5 s, half its lease
  EXPECT_EQ(WorkerState(w2_), "lost");
  EXPECT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::QUEUED);
  EXPECT_EQ(JobStateOf(core_.get(), job_), mpt::v1::RUNNING);

  // The survivor and a new worker form attempt 2.
  const std::string w3 = Register(core_.get());
  auto n1 = Poll(core_.get(), w1_);
  auto n3 = Poll(core_.get(), w3);
  ASSERT_TRUE(n1.has_value() && n3.has_value());
  EXPECT_NE(n1->group().find("/attempts/2"), std::string::npos) << n1->group();
}

TEST_F(GangFaultTest, ThreeKilledPeersInARowDoNotFailTheJob) {
  Open();  // max_attempts 3
  StartGang();
  std::string survivor = w1_;
  std::string survivor_id = r0_.id();
  for (int crash = 1; crash <= 3; ++crash) {
    SCOPED_TRACE(crash);
    // The other rank's worker dies; the survivor reports the peer failure.
    Pass(absl::Seconds(6), {survivor});
    ASSERT_TRUE(CompletePeerFailure(core_.get(), survivor_id).ok());
    ASSERT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::QUEUED);
    ASSERT_EQ(JobStateOf(core_.get(), job_), mpt::v1::RUNNING);
    const std::string fresh = Register(core_.get());
    auto a = Poll(core_.get(), survivor);
    auto b = Poll(core_.get(), fresh);
    ASSERT_TRUE(a.has_value() && b.has_value());
    EXPECT_NE(a->group().find(absl::StrCat("/attempts/", crash + 1)), std::string::npos);
    survivor_id = a->id();
    // Rank order follows registration: the survivor stays rank 0.
    ASSERT_EQ(a->rank(), 0);
    r1_ = *b;
  }
  // The fourth attempt finishes: rank 0 uploads the adapter.
  auto r0 = Poll(core_.get(), survivor);
  ASSERT_TRUE(r0.has_value());
  Finish(core_.get(), *r0);
  ASSERT_TRUE(Complete(core_.get(), r1_.id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job_), mpt::v1::SUCCEEDED);
}

TEST_F(GangFaultTest, ARealErrorOfThePeerCountsEvenAfterAPeerFailureReport) {
  CoordinatorOptions options;
  options.max_attempts = 1;
  Open(options);
  StartGang();
  // Rank 1 hits a training error and closes its connections before it
  // reports; rank 0's report of the broken collective arrives first.
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r0_.id()).ok());
  EXPECT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::RUNNING);
  ASSERT_TRUE(Complete(core_.get(), r1_.id(), /*ok=*/false, "loss is NaN at step 3").ok());
  auto j = core_->GetJob(job_);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state(), mpt::v1::FAILED);
  EXPECT_NE(j->error().find("rank 1: loss is NaN at step 3"), std::string::npos) << j->error();
  EXPECT_NE(WorkerState(w2_), "lost");
}

TEST_F(GangFaultTest, ABrokenGangWhoseWorkersAllHeartbeatIsRequeuedUncountedAfterALease) {
  CoordinatorOptions options;
  options.max_attempts = 1;
  Open(options);
  StartGang();
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r0_.id()).ok());
  Pass(absl::Seconds(9), {w1_, w2_});
  EXPECT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::RUNNING);
  Pass(absl::Seconds(1), {w1_, w2_});  // the lease has passed since the report
  EXPECT_EQ(StageState(core_.get(), job_, "distillation"), mpt::v1::QUEUED);
  EXPECT_EQ(JobStateOf(core_.get(), job_), mpt::v1::RUNNING);
  EXPECT_NE(WorkerState(w1_), "lost");
  EXPECT_NE(WorkerState(w2_), "lost");
  EXPECT_TRUE(EventsMention("kept heartbeating"));
  // The rank still in its collective is told to stop.
  auto hb = core_->Heartbeat(w2_);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->cancelled_assignments_size(), 1);
  EXPECT_EQ(hb->cancelled_assignments(0), r1_.id());
}

TEST_F(GangFaultTest, WhenEveryRankReportsAPeerFailureTheGangIsRequeuedAtOnce) {
  CoordinatorOptions options;
  options.max_attempts = 1;
  Open(options);
  StartGang();
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r0_.id()).ok());
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r1_.id()).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job_), mpt::v1::RUNNING);
  // Both workers are idle again, so attempt 2 starts on them right away.
  auto a = Poll(core_.get(), w1_);
  ASSERT_TRUE(a.has_value());
  EXPECT_NE(a->group().find("/attempts/2"), std::string::npos) << a->group();
}

TEST_F(GangFaultTest, AnErrorWithoutPeerFailureStillCountsAgainstMaxAttempts) {
  CoordinatorOptions options;
  options.max_attempts = 1;
  Open(options);
  StartGang();
  Pass(absl::Seconds(6), {w1_});  // even with a silent peer
  ASSERT_TRUE(Complete(core_.get(), r0_.id(), /*ok=*/false, "out of memory").ok());
  EXPECT_EQ(JobStateOf(core_.get(), job_), mpt::v1::FAILED);
  EXPECT_EQ(WorkerState(w2_), "busy") << "a real error blames nobody else";
}

TEST_F(GangFaultTest, LostWorkersAndGangFaultsAreBoundedByMaxWorkerLosses) {
  CoordinatorOptions options;
  options.max_worker_losses = 1;
  Open(options);
  StartGang();
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r0_.id()).ok());
  ASSERT_TRUE(CompletePeerFailure(core_.get(), r1_.id()).ok());
  ASSERT_EQ(JobStateOf(core_.get(), job_), mpt::v1::RUNNING);
  auto a = Poll(core_.get(), w1_);
  auto b = Poll(core_.get(), w2_);
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_TRUE(CompletePeerFailure(core_.get(), a->id()).ok());
  ASSERT_TRUE(CompletePeerFailure(core_.get(), b->id()).ok());
  auto j = core_->GetJob(job_);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state(), mpt::v1::FAILED);
  EXPECT_NE(j->error().find("2 times"), std::string::npos) << j->error();
}

}  // namespace
}  // namespace mpt
