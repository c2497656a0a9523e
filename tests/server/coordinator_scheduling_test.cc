// Scheduling: stage expansion, fan-out, gangs, priorities, model filtering,
// retries. The core is driven directly over an in-memory store.
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::Complete;
using ::mpt::testing::CompleteAs;
using ::mpt::testing::FindStage;
using ::mpt::testing::Finish;
using ::mpt::testing::JobStateOf;
using ::mpt::testing::PipelineRequest;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StageState;

class SchedulingTest : public ::mpt::testing::CoordinatorTest {
 protected:
  void SetUp() override { Open({}); }
  void Open(CoordinatorOptions options) { OpenFresh("scheduling", /*on_disk=*/false, options); }
};

TEST_F(SchedulingTest, PipelineExpandsIntoStagesWithDefaults) {
  auto job = core_->SubmitJob(PipelineRequest({"a", "b", "c"}, {"x", "y"}));
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<std::string> ids;
  for (const auto& s : job->stages()) {
    ids.push_back(s.id());
    EXPECT_EQ(s.state(), mpt::v1::QUEUED) << s.id();
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"source/a", "source/b", "source/c", "distillation",
                                           "target/x", "target/y"}));
  EXPECT_EQ(job->state(), mpt::v1::QUEUED);
  EXPECT_EQ(job->spec().prompt().num_virtual_tokens(), 20);  // defaults filled
  EXPECT_EQ(job->spec().distillation().tasks_size(), 3);
  EXPECT_EQ(job->spec().target().init(), "AVERAGE_SOURCE_TASKS");

  auto shared = PipelineRequest({"a"}, {"x", "y"});
  shared.mutable_spec()->mutable_target()->set_shared(true);
  job = core_->SubmitJob(shared);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->stages_size(), 3);
  EXPECT_EQ(job->stages(2).id(), "target/shared");

  job = core_->SubmitJob(PipelineRequest({"a"}, {}));  // no target: stops after distillation
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->stages_size(), 2);
}

TEST_F(SchedulingTest, SourceStagesFanOutAndTheDagRunsToTheEnd) {
  const std::string job = Submit(PipelineRequest({"a", "b", "c"}, {"x", "y"}));
  std::vector<std::string> workers;
  for (int i = 0; i < 4; ++i) workers.push_back(Register(core_.get()));

  std::set<std::string> tasks;
  std::vector<mpt::v1::Assignment> running;
  for (int i = 0; i < 3; ++i) {
    auto a = Poll(core_.get(), workers[i]);
    ASSERT_TRUE(a.has_value()) << i;
    EXPECT_EQ(a->stage_kind(), mpt::v1::SOURCE_TRAINING);
    EXPECT_EQ(a->world_size(), 1);
    EXPECT_EQ(a->stage(), "source/" + a->task());
    tasks.insert(a->task());
    running.push_back(*a);
  }
  EXPECT_EQ(tasks, (std::set<std::string>{"a", "b", "c"}));
  EXPECT_FALSE(Poll(core_.get(), workers[3]).has_value());  // distillation must wait
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::RUNNING);

  // Polling again returns the same assignment (a lost response loses nothing).
  auto again = Poll(core_.get(), workers[0]);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id(), running[0].id());

  Finish(core_.get(), running[0]);
  Finish(core_.get(), running[1]);
  EXPECT_FALSE(Poll(core_.get(), workers[3]).has_value());  // one teacher still missing
  Finish(core_.get(), running[2]);

  // The first idle worker in registration order takes it.
  auto d = Poll(core_.get(), workers[0]);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->stage(), "distillation");
  EXPECT_EQ(d->stage_kind(), mpt::v1::DISTILLATION);
  // One teacher per distillation task, in the spec's order.
  ASSERT_EQ(d->inputs_size(), 3);
  auto j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  for (int i = 0; i < 3; ++i) {
    const std::string task = j->spec().distillation().tasks(i).name();
    EXPECT_EQ(d->inputs(i).role(), "teacher");
    EXPECT_EQ(d->inputs(i).task(), task);
    EXPECT_EQ(d->inputs(i).artifact(), FindStage(*j, "source/" + task)->artifact());
    EXPECT_FALSE(d->inputs(i).artifact().empty());
  }
  Finish(core_.get(), *d);
  j = core_->GetJob(job);
  const std::string distilled = FindStage(*j, "distillation")->artifact();

  auto t1 = Poll(core_.get(), workers[0]);
  auto t2 = Poll(core_.get(), workers[1]);
  EXPECT_FALSE(Poll(core_.get(), workers[2]).has_value());
  ASSERT_TRUE(t1.has_value() && t2.has_value());
  for (const auto* t : {&*t1, &*t2}) {
    EXPECT_EQ(t->stage_kind(), mpt::v1::TARGET_ADAPTATION);
    ASSERT_EQ(t->inputs_size(), 1);
    EXPECT_EQ(t->inputs(0).role(), "source_adapter");
    EXPECT_EQ(t->inputs(0).artifact(), distilled);
  }
  EXPECT_NE(t1->task(), t2->task());
  Finish(core_.get(), *t1);
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::RUNNING);
  Finish(core_.get(), *t2);

  j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state(), mpt::v1::SUCCEEDED);
  EXPECT_TRUE(j->has_end_time());
  for (const auto& s : j->stages()) {
    EXPECT_EQ(s.state(), mpt::v1::SUCCEEDED) << s.id();
    EXPECT_EQ(s.attempts(), 1) << s.id();
  }
  EXPECT_EQ(j->artifacts_size(), 6);  // one adapter per stage
  for (const auto& w : workers) EXPECT_FALSE(Poll(core_.get(), w).has_value());
}

// A failed attempt is retried on another worker while one is live: a full
// disk or a broken device stays with its worker.
TEST_F(SchedulingTest, AFailedAttemptIsRetriedOnAnotherWorker) {
  Submit(PipelineRequest({"a"}, {}));
  const std::string w1 = Register(core_.get());
  auto first = Poll(core_.get(), w1);
  ASSERT_TRUE(first.has_value());
  const std::string w2 = Register(core_.get());
  ASSERT_TRUE(Complete(core_.get(), first->id(), /*ok=*/false, "disk full").ok());
  // w1 is idle again and asks first, but the retry waits for w2.
  EXPECT_FALSE(Poll(core_.get(), w1).has_value());
  auto second = Poll(core_.get(), w2);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->stage(), first->stage());
  // Failed there too, and w2 is the only other worker: back to w1.
  ASSERT_TRUE(Complete(core_.get(), second->id(), /*ok=*/false, "disk full").ok());
  EXPECT_FALSE(Poll(core_.get(), w2).has_value());
  auto third = Poll(core_.get(), w1);
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->stage(), first->stage());
}

TEST_F(SchedulingTest, GangStartsOnlyWhenWorldSizeWorkersAreFreeAndHoldsThem) {
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  const std::string gang_job = Submit(PipelineRequest({"a"}, {}, /*world_size=*/2, 5));
  const std::string other = Submit(SourceRequest("b", /*priority=*/1));

  auto source = Poll(core_.get(), w1);
  ASSERT_TRUE(source.has_value());
  EXPECT_EQ(source->job(), gang_job);
  // The distillation is not ready yet, so the other job may use w2.
  auto b = Poll(core_.get(), w2);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->job(), other);

  const std::string later = Submit(SourceRequest("c", /*priority=*/0));
  Finish(core_.get(), *source);
  // The gang needs two workers; only w1 is free. It holds w1, so the
  // lower-priority job submitted meanwhile does not get it.
  EXPECT_FALSE(Poll(core_.get(), w1).has_value());
  EXPECT_EQ(StageState(core_.get(), gang_job, "distillation"), mpt::v1::QUEUED);

  Finish(core_.get(), *b);
  auto r0 = Poll(core_.get(), w1);
  auto r1 = Poll(core_.get(), w2);
  ASSERT_TRUE(r0.has_value() && r1.has_value());
  EXPECT_EQ(r0->stage(), "distillation");
  EXPECT_EQ(r1->stage(), "distillation");
  EXPECT_EQ(r0->world_size(), 2);
  EXPECT_EQ(r1->world_size(), 2);
  EXPECT_EQ(std::set<int>({r0->rank(), r1->rank()}), (std::set<int>{0, 1}));
  EXPECT_EQ(r0->group(), r1->group());
  EXPECT_FALSE(r0->group().empty());
  EXPECT_EQ(r0->collective(), "gloo");  // workers listing no collective use Gloo

  // Every rank must complete; rank 0 uploads the adapter.
  const auto& rank0 = r0->rank() == 0 ? *r0 : *r1;
  const auto& rank1 = r0->rank() == 0 ? *r1 : *r0;
  ASSERT_TRUE(Complete(core_.get(), rank1.id()).ok());
  EXPECT_EQ(StageState(core_.get(), gang_job, "distillation"), mpt::v1::RUNNING);
  Finish(core_.get(), rank0);
  EXPECT_EQ(JobStateOf(core_.get(), gang_job), mpt::v1::SUCCEEDED);

  // The job that waited runs on the first worker the gang let go.
  auto c = Poll(core_.get(), r0->rank() == 1 ? w1 : w2);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->job(), later);
}

TEST_F(SchedulingTest, GangPrefersNcclWhenEveryRankHasIt) {
  CoordinatorOptions options;
  Open(options);
  const std::string w1 = Register(core_.get(), {}, {"nccl", "gloo"});
  const std::string w2 = Register(core_.get(), {}, {"gloo"});
  const std::string w3 = Register(core_.get(), {}, {"nccl"});
  const std::string job = Submit(PipelineRequest({"a"}, {}, 2));
  auto s = Poll(core_.get(), w1);
  ASSERT_TRUE(s.has_value());
  Finish(core_.get(), *s);
  auto a1 = Poll(core_.get(), w1);
  auto a3 = Poll(core_.get(), w3);
  ASSERT_TRUE(a1.has_value() && a3.has_value());
  EXPECT_EQ(a1->collective(), "nccl");
  EXPECT_EQ(a1->group(), a3->group());
  EXPECT_FALSE(Poll(core_.get(), w2).has_value());
}

TEST_F(SchedulingTest, GangThatCannotEverStartDoesNotBlockTheQueue) {
  CoordinatorOptions options;
  options.max_world_size = 4;
  Open(options);
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  const std::string gang_job = Submit(PipelineRequest({"a"}, {}, /*world_size=*/3, 9));
  auto s = Poll(core_.get(), w1);
  ASSERT_TRUE(s.has_value());
  Finish(core_.get(), *s);
  // Three workers are needed but only two exist: nothing is held.
  const std::string small = Submit(SourceRequest("b"));
  auto b = Poll(core_.get(), w1);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->job(), small);
  bool noted = false;
  for (const auto& e : ::mpt::testing::AllEvents(core_.get(), gang_job)) {
    if (e.message().find("waiting for 3 workers") != std::string::npos) noted = true;
  }
  EXPECT_TRUE(noted);
  // A third worker arrives and the two idle ones plus it start the gang once
  // w1 is done.
  const std::string w3 = Register(core_.get());
  Finish(core_.get(), *b);
  int ranks = 0;
  for (const auto& w : {w1, w2, w3}) {
    auto a = Poll(core_.get(), w);
    ASSERT_TRUE(a.has_value()) << w;
    EXPECT_EQ(a->job(), gang_job);
    EXPECT_EQ(a->world_size(), 3);
    ++ranks;
  }
  EXPECT_EQ(ranks, 3);
}

TEST_F(SchedulingTest, HigherPriorityFirstThenSubmissionOrder) {
  const std::string low1 = Submit(SourceRequest("a", 0));
  const std::string high = Submit(SourceRequest("b", 5));
  const std::string low2 = Submit(SourceRequest("c", 0));
  const std::string mid = Submit(SourceRequest("d", 3));
  const std::string w = Register(core_.get());
  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) {
    auto a = Poll(core_.get(), w);
    ASSERT_TRUE(a.has_value());
    order.push_back(a->job());
    Finish(core_.get(), *a);
  }
  EXPECT_EQ(order, (std::vector<std::string>{high, mid, low1, low2}));
}

TEST_F(SchedulingTest, OnlyWorkersListingTheModelGetTheJob) {
  const std::string only_b = Register(core_.get(), {"/models/b"});
  const std::string job = Submit(SourceRequest("a", 0, "/models/a"));
  EXPECT_FALSE(Poll(core_.get(), only_b).has_value());
  const std::string both = Register(core_.get(), {"/models/b", "/models/a"});
  auto a = Poll(core_.get(), both);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job(), job);
  const std::string job_b = Submit(SourceRequest("x", 0, "/models/b"));
  auto b = Poll(core_.get(), only_b);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->job(), job_b);
  const std::string job_c = Submit(SourceRequest("y", 0, "/models/c"));
  const std::string any = Register(core_.get());  // lists no model: runs anything
  auto c = Poll(core_.get(), any);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->job(), job_c);
}

TEST_F(SchedulingTest, FailedAttemptsAreRetriedThenFailTheJob) {
  CoordinatorOptions options;
  options.max_attempts = 2;
  Open(options);
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(Complete(core_.get(), a->id(), false, "out of memory").ok());
  // Requeued and, the worker being idle, started again at once.
  EXPECT_EQ(StageState(core_.get(), job, "source/a"), mpt::v1::RUNNING);
  auto b = Poll(core_.get(), w);
  ASSERT_TRUE(b.has_value());
  EXPECT_NE(b->id(), a->id());
  EXPECT_NE(b->id().find("/attempts/2/"), std::string::npos) << b->id();
  ASSERT_TRUE(Complete(core_.get(), b->id(), false, "out of memory again").ok());
  auto j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state(), mpt::v1::FAILED);
  EXPECT_NE(j->error().find("out of memory again"), std::string::npos) << j->error();
  EXPECT_EQ(j->stages(0).state(), mpt::v1::FAILED);
  EXPECT_EQ(j->stages(0).attempts(), 2);
  // A repeated completion by its worker is harmless.
  EXPECT_TRUE(CompleteAs(core_.get(), w, b->id(), false, "again").ok());
  EXPECT_EQ(Complete(core_.get(), "jobs/x/stages/y/attempts/1/ranks/0").code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SchedulingTest, PermanentFailureAndMissingAdapterEndTheAttempt) {
  const std::string w = Register(core_.get());
  const std::string job = Submit(SourceRequest("a"));
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  // Completing ok without an adapter is a failed attempt.
  ASSERT_TRUE(Complete(core_.get(), a->id()).ok());
  auto j = core_->GetJob(job);
  EXPECT_EQ(j->stages(0).attempts(), 2);
  EXPECT_NE(j->stages(0).error().find("without uploading an adapter"), std::string::npos);
  auto b = Poll(core_.get(), w);
  ASSERT_TRUE(b.has_value());
  ASSERT_TRUE(Complete(core_.get(), b->id(), false, "train_path unreadable", true).ok());
  EXPECT_EQ(JobStateOf(core_.get(), job), mpt::v1::FAILED);
}

TEST_F(SchedulingTest, FailedGangRankCancelsTheOthers) {
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  const std::string job = Submit(PipelineRequest({"a"}, {}, 2));
  auto s = Poll(core_.get(), w1);
  ASSERT_TRUE(s.has_value());
  Finish(core_.get(), *s);
  auto r0 = Poll(core_.get(), w1);
  auto r1 = Poll(core_.get(), w2);
  ASSERT_TRUE(r0.has_value() && r1.has_value());
  ASSERT_TRUE(Complete(core_.get(), r1->id(), false, "NCCL error").ok());
  auto hb = core_->Heartbeat(w1);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->cancelled_assignments_size(), 1);
  EXPECT_EQ(hb->cancelled_assignments(0), r0->id());
  mpt::v1::ReportProgressRequest p;
  p.set_assignment(r0->id());
  p.set_worker(w1);
  auto rep = core_->ReportProgress(p);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->cancelled());
  // The surviving rank polls again: the gang restarts with both workers.
  auto n0 = Poll(core_.get(), w1);
  auto n1 = Poll(core_.get(), w2);
  ASSERT_TRUE(n0.has_value() && n1.has_value());
  EXPECT_EQ(n0->group(), n1->group());
  EXPECT_NE(n0->group(), r0->group());
  EXPECT_EQ(StageState(core_.get(), job, "distillation"), mpt::v1::RUNNING);
}

}  // namespace
}  // namespace mpt
