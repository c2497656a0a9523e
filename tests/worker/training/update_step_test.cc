#include "worker/training/update_step.h"

#include <cmath>

#include "gtest/gtest.h"

namespace mpt {
namespace {

mpt::v1::OptimizerSpec Spec() {
  mpt::v1::OptimizerSpec o;
  o.set_learning_rate(0.1);
  o.set_weight_decay(0.01);
  o.set_max_grad_norm(1.0);
  return o;
}

at::Tensor Param(int64_t seed) {
  at::manual_seed(seed);
  return at::randn({3, 2}).set_requires_grad(true);
}

// One update of `p` towards 0 with a loss that has a large gradient.
std::vector<double> Step(UpdateStep& u, const at::Tensor& p, double lr) {
  auto agreed = u.Agree(4, 6, false);
  EXPECT_TRUE(agreed.ok());
  u.Begin(lr);
  at::Tensor loss = (p * p).sum() * 5;
  loss.backward();
  auto parts = u.Finish({loss.item<double>(), 1.5});
  EXPECT_TRUE(parts.ok());
  return *parts;
}

TEST(UpdateStep, AgreeSumsCountsAndCarriesTheStopFlag) {
  LocalCommunicator local;
  UpdateStep u({Param(1)}, Spec(), &local);
  auto go = u.Agree(5, 7, false);
  ASSERT_TRUE(go.ok());
  EXPECT_EQ(go->target_tokens, 5);
  EXPECT_EQ(go->input_tokens, 7);
  EXPECT_FALSE(go->stop);
  auto stop = u.Agree(5, 7, true);
  ASSERT_TRUE(stop.ok());
  EXPECT_TRUE(stop->stop);
}

TEST(UpdateStep, FinishReturnsThePartsAndMovesTheParameters) {
  LocalCommunicator local;
  at::Tensor p = Param(2);
  const at::Tensor before = p.detach().clone();
  UpdateStep u({p}, Spec(), &local);
  std::vector<double> parts = Step(u, p, 0.1);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[1], 1.5);
  EXPECT_FALSE(at::equal(before, p.detach()));
}

TEST(UpdateStep, ClippingBoundsTheGlobalGradientNorm) {
  at::Tensor a = at::zeros({2}).set_requires_grad(true);
  at::Tensor b = at::zeros({2}).set_requires_grad(true);
  a.mutable_grad() = at::full({2}, 3.0);
  b.mutable_grad() = at::full({2}, 4.0);
  ClipGradNorm({a, b}, 1.0);
  const double norm = std::sqrt(a.grad().pow(2).sum().item<double>() + b.grad().pow(2).sum().item<double>());
  EXPECT_NEAR(norm, 1.0, 1e-5);
  ClipGradNorm({a, b}, 10.0);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 / (std::sqrt(50.0) + 1e-6), 1e-6) << "no change below max";
}

// A run continued from exported AdamW state takes the very same step as the
// run it was exported from; a fresh optimiser does not.
TEST(UpdateStep, ExportedStateContinuesBitForBit) {
  LocalCommunicator local;
  at::Tensor p = Param(3);
  UpdateStep u({p}, Spec(), &local);
  for (int i = 0; i < 3; ++i) Step(u, p, 0.1);
  const std::vector<AdamWSlot> saved = u.ExportState();
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].step, 3);

  at::Tensor q = p.detach().clone().set_requires_grad(true);
  UpdateStep resumed({q}, Spec(), &local);
  ASSERT_TRUE(resumed.ImportState(saved).ok());
  at::Tensor r = p.detach().clone().set_requires_grad(true);
  UpdateStep fresh({r}, Spec(), &local);

  Step(u, p, 0.05);
  Step(resumed, q, 0.05);
  Step(fresh, r, 0.05);
  EXPECT_TRUE(at::equal(p.detach(), q.detach()));
  EXPECT_FALSE(at::equal(p.detach(), r.detach()));
  EXPECT_EQ(resumed.ExportState()[0].step, 4);
}

TEST(UpdateStep, ImportRejectsStateThatDoesNotFit) {
  LocalCommunicator local;
  UpdateStep u({Param(4)}, Spec(), &local);
  EXPECT_TRUE(absl::IsInvalidArgument(u.ImportState({})));
  AdamWSlot wrong{2, at::zeros({2, 3}), at::zeros({2, 3})};
  EXPECT_TRUE(absl::IsInvalidArgument(u.ImportState({wrong})));
}

}  // namespace
}  // namespace mpt
