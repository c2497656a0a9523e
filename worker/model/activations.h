// The feed-forward activations of transformers' ACT2FN table (see
// T5Activation in t5_config.h) as ATen ops, shared by the T5 and the
// decoder-only models. Each one is computed with the same operations in the
// same order as transformers, so that results agree to rounding.
#ifndef MPT_WORKER_MODEL_ACTIVATIONS_H_
#define MPT_WORKER_MODEL_ACTIVATIONS_H_

#include <ATen/core/Tensor.h>

#include "worker/model/t5_config.h"

namespace mpt {

// Element-wise activation; any floating dtype and device.
at::Tensor ApplyActivation(const at::Tensor& x, T5Activation activation);

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_ACTIVATIONS_H_
