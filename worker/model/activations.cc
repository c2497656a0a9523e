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
    case T5Activation::kGeluNew:
    case T5Activation::kGeluPythonTanh:
    case T5Activation::kGeluAccurate: {
      // transformers writes these three as the same products (up to
      // commuted operands, which round alike).
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
    case T5Activation::kGeluPython: return (x * 0.5) * (at::erf(x / std::sqrt(2.0)) + 1.0);
    case T5Activation::kGelu10: return at::clamp(at::gelu(x), -10.0, 10.0);
    case T5Activation::kHardswish: return at::hardswish(x);
    case T5Activation::kLaplace: {
      at::Tensor z = (x - 0.707107) / (0.282095 * std::sqrt(2.0));
      return (at::erf(z) + 1.0) * 0.5;
    }
    case T5Activation::kLeakyRelu: return at::leaky_relu(x, 0.01);
    case T5Activation::kLinear: return x;
    case T5Activation::kMish: return at::mish(x);
    case T5Activation::kRelu2: return at::square(at::relu(x));
    case T5Activation::kRelu6: return at::hardtanh(x, 0.0, 6.0);
    case T5Activation::kSqrtSoftplus: return at::sqrt(at::softplus(x));
  }
  return x;
}

}  // namespace mpt
