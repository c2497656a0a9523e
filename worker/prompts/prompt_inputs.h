// Model inputs with a soft prompt, laid out exactly as PEFT's
// PeftModelForSeq2SeqLM lays them out (peft/peft_model.py, forward and
// generate), so that prompts trained here and there are interchangeable.
//
// The prompt has T = num_virtual_tokens (nv) * num_transformer_submodules
// rows. What PEFT does with them:
//   - Encoder, always: inputs_embeds = [prompt[:nv]; Embed(input_ids)],
//     attention_mask = [ones(nv); attention_mask].
//   - Decoder inputs come from the labels: Embed(ShiftRight(labels)).
//   - PROMPT_TUNING (and P_TUNING): that is all, whatever
//     num_transformer_submodules says; rows [nv, 2nv) of a two-submodule
//     prompt are never used by PEFT's forward.
//   - MULTITASK_PROMPT_TUNING with num_transformer_submodules == 2: the
//     decoder also gets prompt[nv:2nv] in front: decoder_inputs_embeds =
//     [prompt[nv:]; Embed(ShiftRight(labels))], labels = [-100 x nv; labels]
//     (so the prompt positions carry no loss and the logits have nv extra
//     positions in front), decoder_attention_mask (when given) =
//     [ones(nv); decoder_attention_mask].
//   - generate() (both kinds): the prompt goes in front of the encoder input
//     only; the decoder starts from decoder_start_token_id as usual.
//
// Differentiable with respect to `prompt`: gradients flow to it and to
// nothing of the frozen model.
#ifndef MPT_WORKER_PROMPTS_PROMPT_INPUTS_H_
#define MPT_WORKER_PROMPTS_PROMPT_INPUTS_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "worker/model/t5_model.h"
#include "worker/prompts/prompt_layout.h"  // IWYU pragma: export

namespace mpt {

// Errors: like the T5Model tensor functions (and libtorch), these throw
// c10::Error with a message that names the problem when the layout is
// invalid (nv <= 0, submodules not 1 or 2, a decoder prompt with one
// submodule) or a tensor has the wrong rank, batch, length, width, dtype or
// device, or ids fall outside the vocabulary. They throw nothing else.

// The training/evaluation forward inputs for a batch.
//   prompt:         [T, d] (the same prompt for every example) or [B, T, d]
//                   (one per example, e.g. multitask prompts of mixed tasks);
//                   converted to the model dtype.
//   input_ids:      [B, S] integer ids.
//   attention_mask: [B, S] (may be undefined: then the encoder mask is
//                   undefined too, as PEFT passes None on).
//   labels:         [B, L] integer ids, -100 = ignored (required: the
//                   decoder inputs are made from them).
//   decoder_attention_mask: [B, L], may be undefined (the default: causal
//                   mask only, as transformers).
// The returned labels are int64 and include the -100 prefix when the decoder
// is prompted, so that Forward(...).loss is PEFT's loss.
T5ForwardInputs BuildPromptedInputs(const T5Model& model, const at::Tensor& prompt,
                                    const PromptLayout& layout, const at::Tensor& input_ids,
                                    const at::Tensor& attention_mask, const at::Tensor& labels,
                                    const at::Tensor& decoder_attention_mask = at::Tensor());

// The same with PEFT's MULTITASK_PROMPT_TUNING layout:
// PromptLayout::Peft(/*multitask=*/true, nv, nsub), i.e. with two submodules
// the decoder is prompted too.
T5ForwardInputs BuildPromptedInputs(const T5Model& model, const at::Tensor& prompt,
                                    int num_virtual_tokens, int num_transformer_submodules,
                                    const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                    const at::Tensor& labels);

struct EncoderInputs {
  at::Tensor inputs_embeds;   // [B, nv + S, d]
  at::Tensor attention_mask;  // [B, nv + S], or undefined when none was given
};

// The encoder half only ([prompt[:nv]; Embed(input_ids)] and the extended
// mask): what PEFT's generate() feeds the model. `prompt` is [R, d] or
// [B, R, d] with R >= nv rows; only the first nv are used.
EncoderInputs BuildPromptedEncoderInputs(const T5Model& model, const at::Tensor& prompt,
                                         int num_virtual_tokens, const at::Tensor& input_ids,
                                         const at::Tensor& attention_mask);

// The decoder prompt rows prompt[nv:2nv] as [B, nv, d] in the model dtype
// (undefined when the layout does not prompt the decoder), e.g. for
// RankClassify's decoder_prefix.
at::Tensor DecoderPromptRows(const T5Model& model, const at::Tensor& prompt,
                             const PromptLayout& layout, int64_t batch_size);

}  // namespace mpt

#endif  // MPT_WORKER_PROMPTS_PROMPT_INPUTS_H_
