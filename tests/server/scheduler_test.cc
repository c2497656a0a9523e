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

}  // namespace
}  // namespace mpt
