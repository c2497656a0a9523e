// Model FLOPs of a prompt-tuning step on a T5 or a decoder-only model, and the matrix-multiply
// peak they are measured against (model FLOPs utilisation, MFU).
//
// FLOPs count the matrix products only (2 m n k each):
//   forward   every product of the encoder (prompt + input positions), the
//             decoder (decoder prefix + target positions) and the LM head
//             (target positions only);
//   backward  what prompt tuning needs: gradients with respect to
//             activations only, never weights: 1x the forward product for
//             each weight product, 2x for each activation x activation
//             product (attention scores and the weighted sum of values);
//             the first decoder block's self-attention, which does not
//             depend on the prompt unless the decoder has a prompt prefix,
//             has no backward then;
//   teacher   (distillation) one more forward with a teacher's prompt, for
//             the rows not served from the teacher cache.
// Element-wise work (softmax, norms, the losses) is not counted.
//
// Torch-free: the worker's metrics and the benchmarks share it.
#ifndef MPT_WORKER_MODEL_MODEL_FLOPS_H_
#define MPT_WORKER_MODEL_MODEL_FLOPS_H_

#include <cstdint>

#include "worker/model/llama_config.h"
#include "worker/model/t5_config.h"

namespace mpt {

struct StepFlops {
  double forward = 0, backward = 0, teacher = 0;
  double total() const { return forward + backward + teacher; }
};

// The FLOPs of one step over `batch` rows of `encoder_length` positions
// (prompt + input) and decoder_prefix_length + target_length decoder
// positions (a prefix of prompt rows, num_transformer_submodules 2, then the
// target), the prompt trained (forward + backward). The LM head runs at the
// target positions only (worker/lm/t5_prompted_model.h). `with_teacher` adds
// one forward of the same count as the teacher's. Positions are those the
// products run over (padding included).
StepFlops CountT5StepFlops(const T5Config& config, int64_t batch, int64_t encoder_length,
                           int64_t decoder_prefix_length, int64_t target_length,
                           bool with_teacher = false);

// The same for a decoder-only model (worker/lm/causal_prompted_model.h):
// `batch` rows of prompt + input + target positions through every layer but
// the last (attention computes all of the T x T scores, as eager attention
// does); the last layer's keys and values at every position, its queries,
// attention, output projection and MLP, and the LM head, at the `target`
// positions that predict a target token only (LlamaModel::HiddenAt).
// Every position follows the prompt, so every product has a backward.
// (With the last layer and the LM head at every position, as transformers
// computes them, this rule gives what torch's FlopCounterMode counts for
// PEFT's step: tools/bench/peft_bench.py --count_flops.)
StepFlops CountCausalStepFlops(const LlamaConfig& config, int64_t batch, int64_t prompt,
                               int64_t input, int64_t target, bool with_teacher = false);

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_MODEL_FLOPS_H_
