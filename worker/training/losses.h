// The loss terms of MPT, each returned as a (sum, count) pair so that a
// data-parallel step can normalise by the global count: with W ranks the
// gradient of sum / global_count equals the single-rank gradient.
//
// Masks: a position is "real" where labels != -100 (padding and any prompt
// positions in front of the decoder carry -100).
#ifndef MPT_WORKER_TRAINING_LOSSES_H_
#define MPT_WORKER_TRAINING_LOSSES_H_

#include <ATen/ATen.h>
#include "worker/model/labels.h"

namespace mpt {

struct LossSum {
  at::Tensor sum;  // scalar, differentiable
  double count = 0;  // number of terms summed (tokens, or tokens x features)

  at::Tensor Mean() const { return count > 0 ? sum / count : sum * 0; }
};

// L_PLM: token cross-entropy of `logits` [B, L, V] against `labels` [B, L].
LossSum PlmLoss(const at::Tensor& logits, const at::Tensor& labels);

// L_KL: tau^2 * KL(teacher || student) of the softened output distributions,
// summed over the vocabulary, one term per real target token.
LossSum KlLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
               const at::Tensor& labels, double temperature);

// L_hidden: squared error between final decoder hidden states [B, L, d] at
// real target positions; one term per (token, feature), so Mean() is the MSE.
LossSum HiddenLoss(const at::Tensor& student_hidden, const at::Tensor& teacher_hidden,
                   const at::Tensor& labels);

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_LOSSES_H_
