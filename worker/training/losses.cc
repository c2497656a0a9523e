#include "worker/training/losses.h"

namespace mpt {
namespace {

// [B, L] float mask of real target positions.
at::Tensor RealMask(const at::Tensor& labels) {
  return labels.ne(kIgnoreIndex).to(at::kFloat);
}

}  // namespace

LossSum PlmLoss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t vocab = logits.size(-1);
  at::Tensor log_probs = at::log_softmax(logits.reshape({-1, vocab}).to(at::kFloat), -1);
  at::Tensor sum = at::nll_loss(log_probs, labels.reshape({-1}), /*weight=*/{},
                                at::Reduction::Sum, kIgnoreIndex);
  return {sum, RealMask(labels).sum().item<double>()};
}

LossSum KlLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
               const at::Tensor& labels, double temperature) {
  at::Tensor s = at::log_softmax(student_logits.to(at::kFloat) / temperature, -1);
  at::Tensor t = at::log_softmax(teacher_logits.to(at::kFloat) / temperature, -1);
  // KL(teacher || student) per position: sum_v p_t (log p_t - log p_s).
  at::Tensor kl = (t.exp() * (t - s)).sum(-1);
  at::Tensor mask = RealMask(labels);
  return {(kl * mask).sum() * (temperature * temperature), mask.sum().item<double>()};
}

LossSum HiddenLoss(const at::Tensor& student_hidden, const at::Tensor& teacher_hidden,
                   const at::Tensor& labels) {
  at::Tensor mask = RealMask(labels).unsqueeze(-1);
  at::Tensor diff = (student_hidden.to(at::kFloat) - teacher_hidden.to(at::kFloat)) * mask;
  return {diff.pow(2).sum(), mask.sum().item<double>() * student_hidden.size(-1)};
}

}  // namespace mpt
