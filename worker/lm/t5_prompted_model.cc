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
  PromptedOutput out;
  out.labels = in.labels;
  in.labels = at::Tensor();  // the stages compute their own losses
  T5Output t5 = model.Forward(in);
  out.logits = std::move(t5.logits);
  out.hidden = std::move(t5.decoder_hidden);
  out.target_offset = layout.decoder_prefix_length();
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
