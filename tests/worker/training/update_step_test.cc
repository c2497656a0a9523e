#include "worker/training/update_step.h"

#include <cmath>
#include <limits>

#include <ATen/core/grad_mode.h>

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

TEST(UpdateStep, RefusesANonFiniteLossAndLeavesTheParameters) {
  LocalCommunicator local;
  at::Tensor p = Param(5);
  const at::Tensor before = p.detach().clone();
  UpdateStep u({p}, Spec(), &local, "stage source (task a)");
  ASSERT_TRUE(u.Agree(4, 6, false).ok());
  u.Begin(0.1);
  at::Tensor loss = (p * p).sum() * 5;
  loss.backward();
  auto parts = u.Finish({std::nan(""), 1.5}, 7);
  ASSERT_FALSE(parts.ok());
  EXPECT_EQ(parts.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parts.status().message().find("loss is not finite at step 7 of stage source (task a)"),
            std::string::npos)
      << parts.status();
  EXPECT_TRUE(at::equal(before, p.detach()));
}

TEST(UpdateStep, RefusesANonFiniteGradient) {
  LocalCommunicator local;
  at::Tensor p = Param(6);
  const at::Tensor before = p.detach().clone();
  UpdateStep u({p}, Spec(), &local, "stage target");
  u.Begin(0.1);
  at::Tensor loss = (p * std::numeric_limits<float>::infinity()).sum();
  loss.backward();
  auto parts = u.Finish({1.0}, 2);
  ASSERT_FALSE(parts.ok());
  EXPECT_NE(parts.status().message().find("gradient norm is inf"), std::string::npos)
      << parts.status();
  EXPECT_TRUE(at::equal(before, p.detach()));
}

TEST(UpdateStep, ChecksThatTheParametersAreFinite) {
  LocalCommunicator local;
  at::Tensor p = Param(7);
  UpdateStep u({p}, Spec(), &local, "stage source");
  EXPECT_TRUE(u.CheckParametersFinite(0).ok());
  {
    at::NoGradGuard no_grad;
    p[0][1] = std::nan("");
  }
  const absl::Status status = u.CheckParametersFinite(3);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("parameters are not finite after step 3 of stage source"),
            std::string::npos)
      << status;
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
