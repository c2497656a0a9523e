#include "worker/lm/t5_prompted_model.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "worker/eval/generation.h"
#include "worker/prompts/prompt_inputs.h"

namespace mpt {

absl::Status T5PromptedModel::CheckLayout(const PromptLayout& layout) const {
  if (layout.num_virtual_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_virtual_tokens: must be positive, got ", layout.num_virtual_tokens));
  }
  if (layout.num_transformer_submodules != 1 && layout.num_transformer_submodules != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_transformer_submodules: an encoder-decoder model takes 1 or 2, got ",
                     layout.num_transformer_submodules));
  }
  return absl::OkStatus();
}

PromptedOutput T5PromptedModel::Forward(const at::Tensor& prompts, const PromptLayout& layout,
                                        const at::Tensor& input_ids,
                                        const at::Tensor& attention_mask,
                                        const at::Tensor& labels) const {
  const T5Model& model = *model_;
  const c10::Device device = model.device();
  T5ForwardInputs in = BuildPromptedInputs(model, prompts.to(device, model.dtype()), layout,
                                           input_ids.to(device), attention_mask.to(device),
                                           labels.to(device));
  // As T5Model::Forward, but the LM head (and the last decoder block after
  // its keys and values) runs at the target positions only:
  // a decoder prefix's positions carry label -100 and feed the targets
  // through self-attention, never through their own logits (with PEFT's
  // vocabulary of 32k and a 100-row prefix after 16 targets, those logits
  // would be most of the LM head's work and memory).
  const int64_t prefix = layout.decoder_prefix_length();
  const int64_t targets = in.decoder_inputs_embeds.size(1) - prefix;
  at::Tensor encoder_hidden = model.Encode(in.inputs_embeds, in.attention_mask);
  PromptedOutput out;
  out.hidden = model.Decode(in.decoder_inputs_embeds, in.decoder_attention_mask, encoder_hidden,
                            in.attention_mask, prefix);
  out.labels = prefix > 0 ? in.labels.narrow(1, prefix, targets) : in.labels;
  out.logits = model.LmHead(out.hidden);
  return out;
}

at::Tensor T5PromptedModel::Generate(const at::Tensor& prompts, int num_virtual_tokens,
                                     const at::Tensor& input_ids,
                                     const at::Tensor& attention_mask,
                                     int max_new_tokens) const {
  const c10::Device device = model_->device();
  EncoderInputs in = BuildPromptedEncoderInputs(*model_, prompts.to(device), num_virtual_tokens,
                                                input_ids.to(device), attention_mask.to(device));
  return GreedyGenerate(*model_, in.inputs_embeds, in.attention_mask, max_new_tokens);
}

at::Tensor T5PromptedModel::RankScores(const at::Tensor& prompts, const PromptLayout& layout,
                                       const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask,
                                       const at::Tensor& candidates) const {
  const c10::Device device = model_->device();
  const at::Tensor on_device = prompts.to(device);
  EncoderInputs in = BuildPromptedEncoderInputs(*model_, on_device, layout.num_virtual_tokens,
                                                input_ids.to(device), attention_mask.to(device));
  RankResult ranked =
      RankClassify(*model_, in.inputs_embeds, in.attention_mask, candidates.to(device),
                   DecoderPromptRows(*model_, on_device, layout, input_ids.size(0)));
  return ranked.scores;
}

}  // namespace mpt
