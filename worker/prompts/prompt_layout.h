// Where a soft prompt's rows go in front of a model's inputs: the part of
// PEFT's layout that does not depend on the model family (see
// prompt_inputs.h for T5 and worker/lm/causal_prompted_model.h for
// decoder-only models). Torch-free.
#ifndef MPT_WORKER_PROMPTS_PROMPT_LAYOUT_H_
#define MPT_WORKER_PROMPTS_PROMPT_LAYOUT_H_

#include <cstdint>

namespace mpt {

struct PromptLayout {
  int num_virtual_tokens = 0;          // nv > 0
  int num_transformer_submodules = 1;  // 1 or 2; the prompt has nv * this rows
  // Whether rows [nv, 2nv) go in front of the decoder input. PEFT does this
  // for MULTITASK_PROMPT_TUNING with two submodules, never for
  // PROMPT_TUNING. Requires num_transformer_submodules == 2 (so an
  // encoder-decoder model).
  bool prompt_decoder = false;

  // PEFT's layout: `multitask` is peft_type == MULTITASK_PROMPT_TUNING.
  static PromptLayout Peft(bool multitask, int num_virtual_tokens,
                           int num_transformer_submodules) {
    return PromptLayout{num_virtual_tokens, num_transformer_submodules,
                        multitask && num_transformer_submodules == 2};
  }

  // Positions the prompt adds in front of the decoder input, the labels and
  // the logits: nv when prompt_decoder, else 0.
  int64_t decoder_prefix_length() const { return prompt_decoder ? num_virtual_tokens : 0; }
};

}  // namespace mpt

#endif  // MPT_WORKER_PROMPTS_PROMPT_LAYOUT_H_
