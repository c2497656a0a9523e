#include "worker/training/lr_schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace mpt {
namespace {

using Decay = LrSchedule::Decay;

TEST(LrSchedule, WarmsUpLinearlyFromZero) {
  LrSchedule s(0.2, 10, 4, Decay::kConstant);
  EXPECT_DOUBLE_EQ(s.At(0), 0.0);
  EXPECT_DOUBLE_EQ(s.At(1), 0.05);
  EXPECT_DOUBLE_EQ(s.At(3), 0.15);
  EXPECT_DOUBLE_EQ(s.At(4), 0.2);
  EXPECT_DOUBLE_EQ(s.At(9), 0.2);
}

TEST(LrSchedule, LinearDecayReachesZeroAtTheEnd) {
  LrSchedule s(0.1, 10, 2, Decay::kLinear);
  EXPECT_DOUBLE_EQ(s.At(2), 0.1);
  EXPECT_DOUBLE_EQ(s.At(6), 0.05);
  EXPECT_DOUBLE_EQ(s.At(10), 0.0);
  EXPECT_DOUBLE_EQ(s.At(20), 0.0) << "never negative past the end";
}

TEST(LrSchedule, CosineDecayIsHalfWayAtTheMiddle) {
  LrSchedule s(1.0, 12, 2, Decay::kCosine);
  EXPECT_DOUBLE_EQ(s.At(2), 1.0);
  EXPECT_NEAR(s.At(7), 0.5, 1e-12);
  EXPECT_NEAR(s.At(12), 0.0, 1e-12);
  EXPECT_NEAR(s.At(30), 0.0, 1e-12) << "progress is capped at 1";
  EXPECT_GT(s.At(4), s.At(5));
}

TEST(LrSchedule, NoWarmupAndNoDecaySpan) {
  LrSchedule none(0.3, 5, 0, Decay::kLinear);
  EXPECT_DOUBLE_EQ(none.At(0), 0.3);
  // warm-up as long as the run: the decay span is treated as one step.
  LrSchedule all(0.3, 4, 4, Decay::kLinear);
  EXPECT_DOUBLE_EQ(all.At(4), 0.3);
  EXPECT_DOUBLE_EQ(all.At(5), 0.0);
}

TEST(LrSchedule, FromSpecReadsTheOptimizerSettings) {
  mpt::v1::TrainSpec t;
  t.set_steps(10);
  t.mutable_optimizer()->set_learning_rate(0.1);
  t.mutable_optimizer()->set_warmup_steps(2);
  t.mutable_optimizer()->set_schedule("constant");
  EXPECT_DOUBLE_EQ(LrSchedule::FromSpec(t).At(9), 0.1);
  t.mutable_optimizer()->set_schedule("cosine");
  EXPECT_NEAR(LrSchedule::FromSpec(t).At(6), 0.05, 1e-12);
  t.mutable_optimizer()->set_schedule("linear");
  EXPECT_DOUBLE_EQ(LrSchedule::FromSpec(t).At(6), 0.05);
  EXPECT_DOUBLE_EQ(LrSchedule::FromSpec(t).At(1), 0.05);
}

}  // namespace
}  // namespace mpt
