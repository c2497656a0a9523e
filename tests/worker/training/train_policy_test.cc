#include "worker/training/train_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace mpt {
namespace {

std::vector<int64_t> StepsWhere(const TrainPolicy& p, bool StepActions::*field) {
  std::vector<int64_t> out;
  for (int64_t done = 1; done <= p.total_steps(); ++done) {
    if (p.After(done).*field) out.push_back(done);
  }
  return out;
}

TEST(TrainPolicy, PeriodicActionsExcludeTheLastStep) {
  TrainPolicy p(/*total_steps=*/10, /*log_every=*/3, /*eval_every=*/5, /*checkpoint_every=*/4);
  EXPECT_EQ(StepsWhere(p, &StepActions::log), (std::vector<int64_t>{3, 6, 9, 10}));
  EXPECT_EQ(StepsWhere(p, &StepActions::evaluate), (std::vector<int64_t>{5}));
  EXPECT_EQ(StepsWhere(p, &StepActions::save), (std::vector<int64_t>{4, 8}));
  EXPECT_TRUE(p.IsLast(10));
  EXPECT_FALSE(p.IsLast(9));
}

TEST(TrainPolicy, ZeroPeriodsMeanNever) {
  TrainPolicy p(6, 0, 0, -1);
  EXPECT_EQ(p.log_every(), 1);
  EXPECT_EQ(StepsWhere(p, &StepActions::log).size(), 6u);
  EXPECT_TRUE(StepsWhere(p, &StepActions::evaluate).empty());
  EXPECT_TRUE(StepsWhere(p, &StepActions::save).empty());
}

TEST(TrainPolicy, FromSpecLogsInWindowsOfAtMostTenSteps) {
  mpt::v1::TrainSpec t;
  t.set_steps(8);
  t.set_eval_every(2);
  t.set_checkpoint_every(3);
  TrainPolicy small = TrainPolicy::FromSpec(t);
  EXPECT_EQ(small.log_every(), 1);
  EXPECT_EQ(StepsWhere(small, &StepActions::evaluate), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(StepsWhere(small, &StepActions::save), (std::vector<int64_t>{3, 6}));
  t.set_steps(120);
  EXPECT_EQ(TrainPolicy::FromSpec(t).log_every(), 3);
  t.set_steps(5000);
  EXPECT_EQ(TrainPolicy::FromSpec(t).log_every(), 10);
}

TEST(TrainPolicy, FromSpecTakesAStatedLoggingWindow) {
  mpt::v1::TrainSpec t;
  t.set_steps(5000);
  EXPECT_EQ(TrainPolicy::FromSpec(t, 1).log_every(), 1);
  EXPECT_EQ(TrainPolicy::FromSpec(t, 7).log_every(), 7);
  EXPECT_EQ(TrainPolicy::FromSpec(t, 0).log_every(), 10);
  EXPECT_EQ(TrainPolicy::FromSpec(t, -3).log_every(), 10);
}

}  // namespace
}  // namespace mpt
