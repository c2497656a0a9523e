#include "worker/model/activations.h"

#include <cmath>

#include <ATen/ATen.h>

namespace mpt {
namespace {

constexpr double kPi = 3.14159265358979323846;

}  // namespace

at::Tensor ApplyActivation(const at::Tensor& x, T5Activation activation) {
  switch (activation) {
    case T5Activation::kRelu: return at::relu(x);
    case T5Activation::kGelu: return at::gelu(x);
    case T5Activation::kGeluNew: {
      // Same operation order as transformers' NewGELUActivation.
      at::Tensor inner = (x + at::pow(x, 3.0) * 0.044715) * std::sqrt(2.0 / kPi);
      return (x * 0.5) * (at::tanh(inner) + 1.0);
    }
    case T5Activation::kGeluFast: {
      at::Tensor inner = (x * 0.7978845608) * ((x * 0.044715) * x + 1.0);
      return (x * 0.5) * (at::tanh(inner) + 1.0);
    }
    case T5Activation::kGeluPytorchTanh: return at::gelu(x, "tanh");
    case T5Activation::kQuickGelu: return x * at::sigmoid(x * 1.702);
    case T5Activation::kSilu: return at::silu(x);
    case T5Activation::kTanh: return at::tanh(x);
    case T5Activation::kSigmoid: return at::sigmoid(x);
  }
  return x;
}

}  // namespace mpt
