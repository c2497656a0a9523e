#include "worker/training/losses.h"

#include <cmath>

#include <ATen/ATen.h>

#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(PlmLoss, CrossEntropyOverRealTokensOnly) {
  // Two positions; the second is padding. Logits [1, 2, 2].
  at::Tensor logits = at::tensor({0.0f, std::log(3.0f), 5.0f, -5.0f}).view({1, 2, 2});
  at::Tensor labels = at::tensor({int64_t{1}, kIgnoreIndex}).view({1, 2});
  LossSum loss = PlmLoss(logits, labels);
  // p(label 1) = 3 / (1 + 3) at the first position.
  EXPECT_NEAR(loss.sum.item<double>(), -std::log(0.75), 1e-6);
  EXPECT_EQ(loss.count, 1);
  EXPECT_NEAR(loss.Mean().item<double>(), -std::log(0.75), 1e-6);
}

TEST(KlLoss, ZeroForEqualDistributionsAndHandComputedOtherwise) {
  at::Tensor labels = at::tensor({int64_t{0}, kIgnoreIndex}).view({1, 2});
  at::Tensor a = at::tensor({1.0f, 2.0f, 0.5f, 0.5f}).view({1, 2, 2});
  EXPECT_NEAR(KlLoss(a, a, labels, 1.0).sum.item<double>(), 0.0, 1e-7);

  // Teacher p = (0.5, 0.5), student q = (0.25, 0.75) at the real position;
  // the padded position differs wildly but must not count.
  at::Tensor teacher = at::tensor({0.0f, 0.0f, 9.0f, -9.0f}).view({1, 2, 2});
  at::Tensor student = at::tensor({0.0f, std::log(3.0f), -9.0f, 9.0f}).view({1, 2, 2});
  const double kl = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  LossSum loss = KlLoss(student, teacher, labels, 1.0);
  EXPECT_NEAR(loss.sum.item<double>(), kl, 1e-6);
  EXPECT_EQ(loss.count, 1);
}

TEST(KlLoss, TemperatureSoftensAndScalesByTauSquared) {
  at::Tensor labels = at::tensor({int64_t{0}}).view({1, 1});
  at::Tensor teacher = at::tensor({0.0f, 0.0f}).view({1, 1, 2});
  at::Tensor student = at::tensor({0.0f, 2.0f * std::log(3.0f)}).view({1, 1, 2});
  // At tau = 2 the student's softened distribution is (0.25, 0.75).
  const double kl = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  EXPECT_NEAR(KlLoss(student, teacher, labels, 2.0).sum.item<double>(), 4.0 * kl, 1e-5);
}

TEST(HiddenLoss, MeanSquaredErrorAtRealPositions) {
  at::Tensor labels = at::tensor({int64_t{3}, int64_t{4}, kIgnoreIndex}).view({1, 3});
  at::Tensor s = at::zeros({1, 3, 2});
  at::Tensor t = at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 100.0f, 100.0f}).view({1, 3, 2});
  LossSum loss = HiddenLoss(s, t, labels);
  EXPECT_NEAR(loss.sum.item<double>(), 1 + 4 + 9 + 16, 1e-5);
  EXPECT_EQ(loss.count, 4);  // 2 positions x 2 features
  EXPECT_NEAR(loss.Mean().item<double>(), 30.0 / 4, 1e-5);
}

TEST(Losses, GradientsReachTheStudentOnly) {
  at::Tensor labels = at::tensor({int64_t{1}, int64_t{0}}).view({1, 2});
  at::Tensor student = at::randn({1, 2, 3}).set_requires_grad(true);
  at::Tensor teacher = at::randn({1, 2, 3});
  at::Tensor total = PlmLoss(student, labels).sum + KlLoss(student, teacher, labels, 1.0).sum;
  total.backward();
  ASSERT_TRUE(student.grad().defined());
  EXPECT_GT(student.grad().abs().sum().item<double>(), 0);
  EXPECT_FALSE(teacher.grad().defined());
}

}  // namespace
}  // namespace mpt
