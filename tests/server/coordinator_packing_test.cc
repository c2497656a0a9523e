// Packing source stages onto one worker (CoordinatorOptions::max_pack_size,
// Worker.max_pack_size): one poll hands out the pack, and every stage of it
// keeps its own assignment for progress, artefacts, cancellation, a lost
// worker's requeue and completion.
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::Complete;
using ::mpt::testing::CompleteAs;
using ::mpt::testing::Finish;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StageState;

// Registers a worker that trains up to `max_pack` stages in one pass.
std::string RegisterPacker(Coordinator* c, int max_pack) {
  mpt::v1::Worker w;
  w.set_hostname("test-host");
  w.set_device("cpu");
  w.set_max_pack_size(max_pack);
  auto r = c->RegisterWorker(w);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->name() : "";
}

// The ids of `a` and of every member packed with it.
std::vector<std::string> PackIds(const mpt::v1::Assignment& a) {
  std::vector<std::string> ids{a.id()};
  for (const auto& p : a.packed()) ids.push_back(p.id());
  return ids;
}

class PackingTest : public ::mpt::testing::CoordinatorTest {
 protected:
  void SetUp() override { Open({}); }
  void Open(CoordinatorOptions options, bool on_disk = false) {
    OpenFresh("packing", on_disk, options);
  }
};

TEST_F(PackingTest, SourceStagesOfTwoJobsShareOneWorkerAndEndPerStage) {
  // Two jobs queued before any worker: the first worker takes both.
  const std::string j1 = Submit(SourceRequest("a"));
  const std::string j2 = Submit(SourceRequest("b"));
  const std::string w = RegisterPacker(core_.get(), 4);
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->packed_size(), 1);
  EXPECT_EQ(a->job(), j1);
  EXPECT_EQ(a->task(), "a");
  const mpt::v1::Assignment b = a->packed(0);
  EXPECT_EQ(b.job(), j2);
  EXPECT_EQ(b.task(), "b");
  EXPECT_EQ(b.stage_kind(), mpt::v1::SOURCE_TRAINING);
  EXPECT_EQ(b.packed_size(), 0);
  EXPECT_EQ(StageState(core_.get(), j1, "source/a"), mpt::v1::RUNNING);
  EXPECT_EQ(StageState(core_.get(), j2, "source/b"), mpt::v1::RUNNING);
  // The start events say so.
  bool noted = false;
  for (const auto& e : ::mpt::testing::AllEvents(core_.get(), j2)) {
    noted |= e.message().find("in one pass with 1 other stage") != std::string::npos;
  }
  EXPECT_TRUE(noted);

  // A repeated poll (a lost response) returns the same pack.
  auto again = Poll(core_.get(), w);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(PackIds(*again), PackIds(*a));

  // Progress is per stage.
  mpt::v1::ReportProgressRequest p;
  p.set_assignment(b.id());
  p.set_worker(w);
  p.mutable_progress()->set_step(3);
  p.mutable_progress()->set_total_steps(10);
  p.set_message("STEP");
  auto rep = core_->ReportProgress(p);
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_FALSE(rep->cancelled());
  auto job2 = core_->GetJob(j2);
  ASSERT_TRUE(job2.ok());
  EXPECT_EQ(job2->stages(0).progress().step(), 3);
  auto job1 = core_->GetJob(j1);
  ASSERT_TRUE(job1.ok());
  EXPECT_EQ(job1->stages(0).progress().step(), 0);

  // Each member ends on its own; the worker is busy until the last one.
  Finish(core_.get(), b);
  EXPECT_EQ(JobStateOf(core_.get(), j2), mpt::v1::SUCCEEDED);
  EXPECT_EQ(JobStateOf(core_.get(), j1), mpt::v1::RUNNING);
  EXPECT_TRUE(CompleteAs(core_.get(), w, b.id()).ok());  // completing twice is OK
  Finish(core_.get(), *a);
  EXPECT_EQ(JobStateOf(core_.get(), j1), mpt::v1::SUCCEEDED);
  EXPECT_FALSE(Poll(core_.get(), w).has_value());
}

TEST_F(PackingTest, PackedStagesComeOnlyWhenNoIdleWorkerIsLeft) {
  const std::string w1 = RegisterPacker(core_.get(), 8);
  const std::string w2 = RegisterPacker(core_.get(), 8);
  // Five sources, two idle workers: two hosts, three leftovers spread
  // round-robin (2 + 3 stages).
  const std::string job = Submit(PipelineRequest({"a", "b", "c", "d", "e"}, {"x"}));
  auto a1 = Poll(core_.get(), w1);
  auto a2 = Poll(core_.get(), w2);
  ASSERT_TRUE(a1.has_value());
  ASSERT_TRUE(a2.has_value());
  std::set<std::string> tasks;
  for (const auto* a : {&*a1, &*a2}) {
    tasks.insert(a->task());
    for (const auto& p : a->packed()) tasks.insert(p.task());
  }
  EXPECT_EQ(tasks, (std::set<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(a1->packed_size() + a2->packed_size(), 3);
  EXPECT_EQ(a1->packed_size(), 2);
  // Distillation waits; once every source is in, it runs as a gang
  // (never packed).
  for (const auto* a : {&*a1, &*a2}) {
    Finish(core_.get(), *a);
    for (const auto& p : a->packed()) Finish(core_.get(), p);
  }
  auto d1 = Poll(core_.get(), w1);
  ASSERT_TRUE(d1.has_value());
  EXPECT_EQ(d1->stage_kind(), mpt::v1::DISTILLATION);
  EXPECT_EQ(d1->packed_size(), 0);
}

TEST_F(PackingTest, NoPackForWorkersThatDoNotAskOrForDifferentPromptShapes) {
  auto other_shape = SourceRequest("c");
  other_shape.mutable_spec()->mutable_prompt()->set_num_virtual_tokens(7);
  const std::string j1 = Submit(SourceRequest("a"));
  const std::string j2 = Submit(other_shape);
  const std::string j3 = Submit(SourceRequest("b", 0, "/models/other"));
  const std::string j4 = Submit(SourceRequest("d"));
  // A worker that sets no max_pack_size runs one stage.
  const std::string plain = Register(core_.get());
  auto a = Poll(core_.get(), plain);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->packed_size(), 0);
  EXPECT_EQ(a->job(), j1);
  // A packing worker gets j2 (the next in order) and only stages of its key:
  // not j3 (another model), not j4 (other prompt shape than j2's).
  const std::string packer = RegisterPacker(core_.get(), 4);
  auto b = Poll(core_.get(), packer);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->job(), j2);
  EXPECT_EQ(b->packed_size(), 0);
  EXPECT_EQ(StageState(core_.get(), j3, "source/b"), mpt::v1::QUEUED);
  EXPECT_EQ(StageState(core_.get(), j4, "source/d"), mpt::v1::QUEUED);
}

TEST_F(PackingTest, StagesOfDifferentPrecisionsAreNotPacked) {
  auto bf16 = SourceRequest("b");
  bf16.mutable_spec()->set_autocast("bf16");
  auto off = SourceRequest("c");
  off.mutable_spec()->set_autocast("off");
  auto bf16_too = SourceRequest("d");
  bf16_too.mutable_spec()->set_autocast("bf16");
  const std::string j1 = Submit(SourceRequest("a"));  // empty: the worker's own flag
  const std::string j2 = Submit(bf16);
  const std::string j3 = Submit(off);
  const std::string j4 = Submit(bf16_too);
  const std::string packer = RegisterPacker(core_.get(), 4);
  // Empty and "off" are different keys (a worker's flag may say bf16), so
  // the first pack is j1 alone; the second pairs the two bf16 jobs.
  auto a = Poll(core_.get(), packer);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job(), j1);
  EXPECT_EQ(a->packed_size(), 0);
  Finish(core_.get(), *a);
  auto b = Poll(core_.get(), packer);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->job(), j2);
  ASSERT_EQ(b->packed_size(), 1);
  EXPECT_EQ(b->packed(0).job(), j4);
  EXPECT_EQ(b->spec().autocast(), "bf16");
  EXPECT_EQ(StageState(core_.get(), j3, "source/c"), mpt::v1::QUEUED);
}

TEST_F(PackingTest, CoordinatorCapOfOneTurnsPackingOff) {
  CoordinatorOptions options;
  options.max_pack_size = 1;
  Open(options);
  Submit(SourceRequest("a"));
  Submit(SourceRequest("b"));
  const std::string w = RegisterPacker(core_.get(), 8);
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->packed_size(), 0);
  options.max_pack_size = 0;
  EXPECT_EQ(::mpt::testing::OpenCoordinator(::mpt::testing::FreshFiles("packing-bad", false),
                                            clock_, options)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PackingTest, CancellingOneJobOfAPackLeavesTheOtherRunning) {
  const std::string j1 = Submit(SourceRequest("a"));
  const std::string j2 = Submit(SourceRequest("b"));
  const std::string w = RegisterPacker(core_.get(), 4);
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->packed_size(), 1);
  const mpt::v1::Assignment b = a->packed(0);

  auto cancelled = core_->CancelJob(j1);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), mpt::v1::CANCELLING);
  auto hb = core_->Heartbeat(w);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->cancelled_assignments_size(), 1);
  EXPECT_EQ(hb->cancelled_assignments(0), a->id());
  // The worker stops that member alone and says so.
  ASSERT_TRUE(Complete(core_.get(), a->id(), false, "cancelled").ok());
  EXPECT_EQ(JobStateOf(core_.get(), j1), mpt::v1::CANCELLED);
  EXPECT_EQ(StageState(core_.get(), j2, "source/b"), mpt::v1::RUNNING);
  // A poll now (a worker that lost its pack's answer) returns the rest.
  auto rest = Poll(core_.get(), w);
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->id(), b.id());
  EXPECT_EQ(rest->packed_size(), 0);
  Finish(core_.get(), b);
  EXPECT_EQ(JobStateOf(core_.get(), j2), mpt::v1::SUCCEEDED);
}

TEST_F(PackingTest, ALostWorkerRequeuesEveryStageOfItsPack) {
  const std::string j1 = Submit(SourceRequest("a"));
  const std::string j2 = Submit(SourceRequest("b"));
  const std::string w = RegisterPacker(core_.get(), 4);
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->packed_size(), 1);
  clock_->Advance(core_->options().lease + absl::Seconds(1));
  ASSERT_TRUE(core_->CheckLeases().ok());
  EXPECT_EQ(StageState(core_.get(), j1, "source/a"), mpt::v1::QUEUED);
  EXPECT_EQ(StageState(core_.get(), j2, "source/b"), mpt::v1::QUEUED);
  // A late completion of the old pack changes nothing; a new worker gets
  // both again as their second attempts.
  EXPECT_TRUE(CompleteAs(core_.get(), w, a->packed(0).id()).ok());
  EXPECT_EQ(StageState(core_.get(), j2, "source/b"), mpt::v1::QUEUED);
  const std::string w2 = RegisterPacker(core_.get(), 4);
  auto again = Poll(core_.get(), w2);
  ASSERT_TRUE(again.has_value());
  ASSERT_EQ(again->packed_size(), 1);
  EXPECT_NE(again->id(), a->id());
  EXPECT_NE(again->id().find("/attempts/2/"), std::string::npos) << again->id();
  Finish(core_.get(), *again);
  Finish(core_.get(), again->packed(0));
  EXPECT_EQ(JobStateOf(core_.get(), j1), mpt::v1::SUCCEEDED);
  EXPECT_EQ(JobStateOf(core_.get(), j2), mpt::v1::SUCCEEDED);
}

TEST_F(PackingTest, AFailedMemberRetriesAloneAndAPackSurvivesARestart) {
  Open({}, /*on_disk=*/true);
  const std::string j1 = Submit(SourceRequest("a"));
  const std::string j2 = Submit(SourceRequest("b"));
  const std::string w = RegisterPacker(core_.get(), 4);
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->packed_size(), 1);
  // The coordinator restarts: the pack is handed out again as it was.
  Reopen({});
  auto after = Poll(core_.get(), w);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(PackIds(*after), PackIds(*a));
  // One member fails: only its stage is retried; the other is untouched.
  ASSERT_TRUE(Complete(core_.get(), a->id(), false, "boom").ok());
  EXPECT_EQ(StageState(core_.get(), j1, "source/a"), mpt::v1::QUEUED);
  EXPECT_EQ(StageState(core_.get(), j2, "source/b"), mpt::v1::RUNNING);
  Finish(core_.get(), a->packed(0));
  EXPECT_EQ(JobStateOf(core_.get(), j2), mpt::v1::SUCCEEDED);
  auto retry = Poll(core_.get(), w);
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->job(), j1);
  Finish(core_.get(), *retry);
  EXPECT_EQ(JobStateOf(core_.get(), j1), mpt::v1::SUCCEEDED);
}

}  // namespace
}  // namespace mpt
