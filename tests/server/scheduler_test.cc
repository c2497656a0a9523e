#include "server/scheduler.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mpt {
namespace {

SchedulerWorker Worker(bool idle, std::vector<std::string> models = {},
                       std::vector<std::string> collectives = {}) {
  SchedulerWorker w;
  w.idle = idle;
  w.models = std::move(models);
  w.collectives = std::move(collectives);
  return w;
}

SchedulerJob Job(std::vector<SchedulerStage> stages, const std::string& model = "m") {
  SchedulerJob j;
  j.base_model = model;
  j.stages = std::move(stages);
  return j;
}

using Kind = ScheduleAction::Kind;

TEST(SchedulerTest, NothingIdleMeansNothingHappens) {
  ClusterView view;
  view.workers = {Worker(false)};
  view.jobs = {Job({{true, 1}})};
  EXPECT_TRUE(Schedule(view).empty());
}

TEST(SchedulerTest, ReadyStagesGoToIdleWorkersInJobAndRegistrationOrder) {
  ClusterView view;
  view.workers = {Worker(false), Worker(true), Worker(true)};
  view.jobs = {Job({{false, 1}, {true, 1}}), Job({{true, 1}, {true, 1}})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].kind, Kind::kStart);
  EXPECT_EQ(actions[0].job, 0);
  EXPECT_EQ(actions[0].stage, 1);
  EXPECT_EQ(actions[0].workers, std::vector<int>{1});
  EXPECT_EQ(actions[0].collective, "");
  EXPECT_EQ(actions[1].job, 1);
  EXPECT_EQ(actions[1].stage, 0);
  EXPECT_EQ(actions[1].workers, std::vector<int>{2});
}

TEST(SchedulerTest, WorkersOnlyTakeModelsTheyList) {
  ClusterView view;
  view.workers = {Worker(true, {"other"}), Worker(true, {"m"})};
  view.jobs = {Job({{true, 1}})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].workers, std::vector<int>{1});
}

// A stage whose last attempt failed on a worker retries on another.
TEST(SchedulerTest, RetryGoesToAnotherWorkerThanTheOneItFailedOn) {
  SchedulerStage failed_on_0{true, 1};
  failed_on_0.avoid = {0};
  ClusterView view;
  view.workers = {Worker(true), Worker(true)};
  view.jobs = {Job({failed_on_0})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].workers, std::vector<int>{1});

  // Only the worker it failed on is idle, another live one can run it: wait.
  view.workers = {Worker(true), Worker(false)};
  EXPECT_TRUE(Schedule(view).empty());
  // ... one that cannot run its model does not count.
  view.workers = {Worker(true), Worker(false, {"other"})};
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].workers, std::vector<int>{0});
  // No other worker at all: the same one again.
  view.workers = {Worker(true)};
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].workers, std::vector<int>{0});
}

// A gang whose last attempt failed takes other idle workers first and
// fills up with the ones it failed on rather than wait.
TEST(SchedulerTest, GangRetryPrefersWorkersItDidNotFailOn) {
  SchedulerStage gang{true, 2};
  gang.avoid = {0, 1};
  ClusterView view;
  view.workers = {Worker(true), Worker(true), Worker(true), Worker(true)};
  view.jobs = {Job({gang})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kStart);
  EXPECT_EQ(actions[0].workers, (std::vector<int>{2, 3}));

  // One other idle worker: it and one of the earlier members.
  view.workers = {Worker(true), Worker(true), Worker(true), Worker(false)};
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].workers, (std::vector<int>{2, 0}));

  // Only the workers it failed on: the same gang again.
  view.workers = {Worker(true), Worker(true)};
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].workers, (std::vector<int>{0, 1}));
}

TEST(SchedulerTest, GangPrefersNcclWhenEveryMemberHasIt) {
  ClusterView view;
  view.workers = {Worker(true, {}, {"gloo"}), Worker(true, {}, {"nccl", "gloo"}),
                  Worker(true, {}, {"nccl"})};
  view.jobs = {Job({{true, 2}})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kStart);
  EXPECT_EQ(actions[0].collective, "nccl");
  EXPECT_EQ(actions[0].workers, (std::vector<int>{1, 2}));
}

TEST(SchedulerTest, GangFallsBackToGloo) {
  ClusterView view;
  view.workers = {Worker(true), Worker(true, {}, {"nccl"}), Worker(true, {}, {"gloo"})};
  view.jobs = {Job({{true, 2}})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].collective, "gloo");
  EXPECT_EQ(actions[0].workers, (std::vector<int>{0, 2}));
}

TEST(SchedulerTest, WaitingGangHoldsIdleWorkersFromLowerRankedWork) {
  ClusterView view;
  // Three eligible workers exist, one busy: the gang of 3 must wait and
  // keeps the two idle ones away from the single-stage job behind it.
  view.workers = {Worker(true), Worker(false), Worker(true)};
  view.jobs = {Job({{true, 3}}), Job({{true, 1}})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kHold);
  EXPECT_EQ(actions[0].workers, (std::vector<int>{0, 2}));
  EXPECT_EQ(actions[0].registered, 3);
}

TEST(SchedulerTest, GangThatCanNeverStartHoldsNothingAndNotesOnce) {
  ClusterView view;
  view.workers = {Worker(true), Worker(true)};
  view.jobs = {Job({{true, 3}}), Job({{true, 1}})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].kind, Kind::kWaitNote);
  EXPECT_EQ(actions[0].world_size, 3);
  EXPECT_EQ(actions[0].registered, 2);
  EXPECT_EQ(actions[1].kind, Kind::kStart);
  EXPECT_EQ(actions[1].job, 1);
  EXPECT_EQ(actions[1].workers, std::vector<int>{0});

  view.jobs[0].gang_note_sent = true;
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kStart);
}

TEST(SchedulerTest, StartingAStageReArmsTheGangNote) {
  ClusterView view;
  view.workers = {Worker(true), Worker(true, {"x"})};
  SchedulerJob job = Job({{true, 1}, {true, 4}});
  job.gang_note_sent = true;
  view.jobs = {job};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].kind, Kind::kStart);
  EXPECT_EQ(actions[1].kind, Kind::kWaitNote);
  EXPECT_EQ(actions[1].registered, 1);
}

// Packing: source stages with the same key that find no idle worker ride
// on the starts of the same pass, round-robin, up to max_pack_size a worker.
// A worker that trains up to `max_pack` stages in one pass.
SchedulerWorker Packer(bool idle, int max_pack = 8) {
  SchedulerWorker w = Worker(idle);
  w.max_pack = max_pack;
  return w;
}

SchedulerStage Packable(const std::string& key, bool ready = true) {
  SchedulerStage s;
  s.ready = ready;
  s.world_size = 1;
  s.pack_key = key;
  return s;
}

TEST(SchedulerPackingTest, OffByDefault) {
  ClusterView view;
  view.workers = {Packer(true)};
  view.jobs = {Job({Packable("k"), Packable("k"), Packable("k")})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_TRUE(actions[0].packed.empty());
}

TEST(SchedulerPackingTest, LeftoverStagesOfOneOrSeveralJobsShareWorkersRoundRobin) {
  ClusterView view;
  view.max_pack_size = 3;
  view.workers = {Packer(true), Packer(false), Packer(true)};
  // Job 0: five ready source stages and one that waits; job 1 (same key):
  // two more; job 2: another model's key.
  view.jobs = {Job({Packable("m|T=20"), Packable("m|T=20"), Packable("m|T=20"),
                    Packable("m|T=20"), Packable("m|T=20"), Packable("m|T=20", false)}),
               Job({Packable("m|T=20"), Packable("m|T=20")}),
               Job({Packable("x|T=20")}, "x")};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 2u);
  // Stages 0 and 1 of job 0 got the idle workers 0 and 2; stages 2..4 of
  // job 0 and 0..1 of job 1 are leftovers: alternately on each, two each
  // at most (max_pack_size 3 counts the host's own stage), in order.
  EXPECT_EQ(actions[0].workers, std::vector<int>{0});
  EXPECT_EQ(actions[0].stage, 0);
  EXPECT_EQ(actions[0].packed, (std::vector<std::pair<int, int>>{{0, 2}, {0, 4}}));
  EXPECT_EQ(actions[1].workers, std::vector<int>{2});
  EXPECT_EQ(actions[1].stage, 1);
  EXPECT_EQ(actions[1].packed, (std::vector<std::pair<int, int>>{{0, 3}, {1, 0}}));
  // Job 1's stage 1 and job 2 (another key, no host) wait for the next pass.
}

TEST(SchedulerPackingTest, IdleWorkersComeFirstAndKeysMustMatch) {
  ClusterView view;
  view.max_pack_size = 4;
  view.workers = {Packer(true), Packer(true), Packer(true)};
  view.jobs = {Job({Packable("a"), Packable("b"), Packable("a")})};
  // Three stages, three idle workers: no packing at all.
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 3u);
  for (const ScheduleAction& a : actions) EXPECT_TRUE(a.packed.empty());

  // One idle worker: the host is stage 0 (key "a"); stage 2 shares its key
  // and joins; stage 1 (key "b") does not.
  view.workers = {Packer(true)};
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].stage, 0);
  EXPECT_EQ(actions[0].packed, (std::vector<std::pair<int, int>>{{0, 2}}));
}

TEST(SchedulerPackingTest, EachWorkerCapsItsOwnPack) {
  ClusterView view;
  view.max_pack_size = 8;
  // Worker 0 takes one stage at a time (it does not pack, like a worker
  // that does not set Worker.max_pack_size); worker 1 takes three.
  view.workers = {Worker(true), Packer(true, 3)};
  view.jobs = {Job({Packable("a"), Packable("a"), Packable("a"), Packable("a"),
                    Packable("a"), Packable("a")})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].workers, std::vector<int>{0});
  EXPECT_TRUE(actions[0].packed.empty());
  EXPECT_EQ(actions[1].workers, std::vector<int>{1});
  EXPECT_EQ(actions[1].packed, (std::vector<std::pair<int, int>>{{0, 2}, {0, 3}}));

  // The coordinator's cap wins when it is the smaller.
  view.max_pack_size = 2;
  actions = Schedule(view);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[1].packed, (std::vector<std::pair<int, int>>{{0, 2}}));
}

TEST(SchedulerPackingTest, GangsAndUnkeyedStagesAreNeverPacked) {
  ClusterView view;
  view.max_pack_size = 4;
  view.workers = {Packer(true)};
  SchedulerStage gang = Packable("a");
  gang.world_size = 2;
  SchedulerStage plain;
  plain.ready = true;
  view.jobs = {Job({Packable("a"), gang, plain})};
  std::vector<ScheduleAction> actions = Schedule(view);
  ASSERT_GE(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kStart);
  EXPECT_TRUE(actions[0].packed.empty());
}

}  // namespace
}  // namespace mpt
