#include "worker/training/update_step.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

// The key under which torch's optimisers keep a parameter's state: the
// address of its TensorImpl, as text in libtorch 1.x and as a pointer in
// later versions.
template <typename StateMap>
typename StateMap::key_type StateKey(const StateMap&, const at::Tensor& param) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;
    out << param.unsafeGetTensorImpl();
    return out.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

constexpr absl::string_view kDivergedHint =
    "; the run diverged and nothing of this step was saved (lower optimizer.learning_rate or "
    "weight_decay; for distillation also lambda or temperature)";

}  // namespace

double ClipGradNorm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm().to(at::kDouble));
  }
  if (norms.empty()) return 0;
  const double total = at::stack(norms).norm().item<double>();
  if (!std::isfinite(total)) return total;
  const double scale = max_norm / (total + 1e-6);
  if (scale >= 1.0) return total;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) p.grad().mul_(scale);
  }
  return total;
}

UpdateStep::UpdateStep(std::vector<at::Tensor> params, const mpt::v1::OptimizerSpec& spec,
                       Communicator* comm, std::string label)
    : params_(std::move(params)),
      label_(label.empty() ? "the run" : std::move(label)),
      max_grad_norm_(spec.max_grad_norm()),
      comm_(comm),
      reduce_options_(at::TensorOptions().dtype(at::kDouble).device(
          params_.empty() ? at::Device(at::kCPU) : params_[0].device())),
      optimizer_(std::make_unique<torch::optim::AdamW>(
          params_, torch::optim::AdamWOptions(spec.learning_rate())
                       .weight_decay(spec.weight_decay()))) {}

absl::StatusOr<StepAgreement> UpdateStep::Agree(int64_t target_tokens, int64_t input_tokens,
                                                bool stop_requested) {
  std::vector<at::Tensor> counts{at::tensor(
      {static_cast<double>(target_tokens), static_cast<double>(input_tokens),
       stop_requested ? 1.0 : 0.0},
      reduce_options_)};
  RETURN_IF_ERROR(comm_->AllReduceSum(counts));
  const at::Tensor summed = counts[0].to(at::kCPU);
  StepAgreement out;
  out.target_tokens = summed[0].item<double>();
  out.input_tokens = summed[1].item<double>();
  out.stop = summed[2].item<double>() > 0;
  return out;
}

void UpdateStep::Begin(double learning_rate) {
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(learning_rate);
  }
  optimizer_->zero_grad();
}

absl::StatusOr<std::vector<double>> UpdateStep::Finish(const std::vector<double>& local_parts,
                                                       int64_t step) {
  // Each rank's objective is its share of the global mean, so the sum over
  // ranks is the gradient of the global mean.
  std::vector<at::Tensor> reduce;
  for (const at::Tensor& p : params_) {
    reduce.push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
  }
  reduce.push_back(at::tensor(local_parts, reduce_options_));
  RETURN_IF_ERROR(comm_->AllReduceSum(reduce));
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) params_[i].mutable_grad() = reduce[i];
  }
  // The summed parts are read back for logging anyway; reading them before
  // the update lets a diverged run stop with its parameters untouched.
  const at::Tensor parts = reduce.back().to(at::kCPU);
  std::vector<double> out(local_parts.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = parts[i].item<double>();
  for (double v : out) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss is not finite at step ", step, " of ", label_, ": loss terms [",
                       absl::StrJoin(out, ", "), "]", kDivergedHint));
    }
  }
  if (max_grad_norm_ > 0) {
    const double norm = ClipGradNorm(params_, max_grad_norm_);
    if (!std::isfinite(norm)) {
      return absl::InvalidArgumentError(absl::StrCat("loss is not finite at step ", step, " of ",
                                                     label_, ": the gradient norm is ", norm,
                                                     kDivergedHint));
    }
  }
  optimizer_->step();
  return out;
}

absl::Status UpdateStep::CheckParametersFinite(int64_t step) const {
  if (params_.empty()) return absl::OkStatus();
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> finite;
  for (const at::Tensor& p : params_) finite.push_back(at::isfinite(p).all());
  if (at::stack(finite).all().item<bool>()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("parameters are not finite after step ", step,
                                                 " of ", label_, kDivergedHint));
}

std::vector<AdamWSlot> UpdateStep::ExportState() const {
  std::vector<AdamWSlot> out(params_.size());
  const auto& state = optimizer_->state();
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = state.find(StateKey(state, params_[i]));
    if (it == state.end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    out[i].step = s.step();
    out[i].exp_avg = s.exp_avg().detach().clone();
    out[i].exp_avg_sq = s.exp_avg_sq().detach().clone();
  }
  return out;
}

absl::Status UpdateStep::ImportState(const std::vector<AdamWSlot>& slots) {
  if (slots.size() != params_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("AdamW state for ", slots.size(),
                                                   " parameters; the prompt has ", params_.size()));
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].step == 0) continue;
    if (!slots[i].exp_avg.defined() || !slots[i].exp_avg_sq.defined() ||
        slots[i].exp_avg.sizes() != params_[i].sizes() ||
        slots[i].exp_avg_sq.sizes() != params_[i].sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("AdamW state of parameter ", i, " does not fit its shape"));
    }
  }
  auto& state = optimizer_->state();
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto key = StateKey(state, params_[i]);
    state.erase(key);
    if (slots[i].step == 0) continue;
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(slots[i].step);
    s->exp_avg(slots[i].exp_avg.detach().to(params_[i].options()).clone());
    s->exp_avg_sq(slots[i].exp_avg_sq.detach().to(params_[i].options()).clone());
    state[key] = std::move(s);
  }
  return absl::OkStatus();
}

}  // namespace mpt
