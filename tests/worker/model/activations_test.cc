// ApplyActivation against transformers' ACT2FN (activations_golden.json,
// written by tests/testdata/make_activation_golden.py): every name the
// config loaders accept computes transformers' values and gradients, every
// parameter-free ACT2FN name is accepted, and the ones with learned
// parameters are refused.
#include "worker/model/activations.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/model/t5_config.h"

namespace mpt {
namespace {

nlohmann::json Golden() {
  return nlohmann::json::parse(
      testing::ReadFile(testing::DataPath("tests/testdata/activations_golden.json")));
}

// Largest difference relative to max(1, |expected|).
double MaxRelativeError(const at::Tensor& got, const std::vector<double>& want) {
  at::Tensor expected = at::tensor(want, at::kDouble);
  at::Tensor scale = at::clamp_min(expected.abs(), 1.0);
  return ((got.to(at::kDouble) - expected).abs() / scale).max().item<double>();
}

TEST(ActivationsTest, MatchTransformersInFloat64) {
  const nlohmann::json golden = Golden();
  const std::vector<double> xs = golden["x"].get<std::vector<double>>();
  ASSERT_FALSE(golden["activations"].empty());
  for (const auto& [name, want] : golden["activations"].items()) {
    SCOPED_TRACE(name);
    std::optional<T5Activation> act = T5ActivationFromName(name);
    ASSERT_TRUE(act.has_value()) << "parameter-free ACT2FN name not accepted";
    EXPECT_EQ(T5ActivationFromName(T5ActivationName(*act)), act);
    at::Tensor x = at::tensor(xs, at::kDouble).requires_grad_(true);
    at::Tensor y = ApplyActivation(x, *act);
    EXPECT_LT(MaxRelativeError(y.detach(), want["y"].get<std::vector<double>>()), 1e-13);
    // The product keeps a graph even for the identity ("linear").
    (y * 1.0).sum().backward();
    EXPECT_LT(MaxRelativeError(x.grad(), want["dy"].get<std::vector<double>>()), 1e-12);
  }
}

TEST(ActivationsTest, Float32StaysCloseToTheFloat64Values) {
  const nlohmann::json golden = Golden();
  const std::vector<double> xs = golden["x"].get<std::vector<double>>();
  for (const auto& [name, want] : golden["activations"].items()) {
    std::optional<T5Activation> act = T5ActivationFromName(name);
    ASSERT_TRUE(act.has_value()) << name;
    at::Tensor y = ApplyActivation(at::tensor(xs, at::kDouble).to(at::kFloat), *act);
    EXPECT_EQ(y.scalar_type(), at::kFloat) << name;
    EXPECT_LT(MaxRelativeError(y, want["y"].get<std::vector<double>>()), 1e-5) << name;
  }
}

TEST(ActivationsTest, EveryAcceptedNameHasAGolden) {
  const nlohmann::json golden = Golden();
  for (absl::string_view name : absl::StrSplit(T5KnownActivations(), ", ")) {
    EXPECT_TRUE(golden["activations"].contains(std::string(name))) << name << " is not an ACT2FN name";
  }
}

TEST(ActivationsTest, NamesWithLearnedParametersAreRefused) {
  const nlohmann::json golden = Golden();
  ASSERT_FALSE(golden["with_parameters"].empty());
  for (const std::string& name : golden["with_parameters"].get<std::vector<std::string>>()) {
    EXPECT_FALSE(T5ActivationFromName(name).has_value()) << name;
  }
}

}  // namespace
}  // namespace mpt
