#include "worker/prompts/prompt_inputs.h"

#include <string>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/model/labels.h"

namespace mpt {
namespace {

std::string ShapeOf(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

// The tensor API reports misuse the libtorch way.
void ThrowIfError(const absl::Status& status, const char* function) {
  TORCH_CHECK(status.ok(), function, ": ", std::string(status.message()));
}

absl::Status CheckLayout(const PromptLayout& layout) {
  if (layout.num_virtual_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_virtual_tokens must be positive, got ", layout.num_virtual_tokens));
  }
  if (layout.num_transformer_submodules != 1 && layout.num_transformer_submodules != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_transformer_submodules must be 1 or 2, got ", layout.num_transformer_submodules));
  }
  if (layout.prompt_decoder && layout.num_transformer_submodules != 2) {
    return absl::InvalidArgumentError("a decoder prompt needs num_transformer_submodules == 2");
  }
  return absl::OkStatus();
}

absl::Status CheckDevice(const T5Model& model, const char* name, const at::Tensor& t) {
  if (t.defined() && t.device() != model.device()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is on ", t.device().str(),
                                                   ", the model on ", model.device().str()));
  }
  return absl::OkStatus();
}

// [R, d] or [B, R, d] -> [B, R, d] in the model dtype. `rows` < 0: any R >=
// `min_rows`.
absl::StatusOr<at::Tensor> BatchedPrompt(const T5Model& model, const at::Tensor& prompt,
                                         int64_t rows, int64_t min_rows, int64_t batch) {
  if (!prompt.defined()) return absl::InvalidArgumentError("prompt is undefined");
  RETURN_IF_ERROR(CheckDevice(model, "prompt", prompt));
  const int64_t d = model.config().d_model;
  const bool shared = prompt.dim() == 2;
  const bool ok_rank = shared || prompt.dim() == 3;
  const bool ok_rows = ok_rank && (rows >= 0 ? prompt.size(-2) == rows : prompt.size(-2) >= min_rows);
  if (!ok_rank || !ok_rows || prompt.size(-1) != d || (!shared && prompt.size(0) != batch)) {
    const std::string r = rows >= 0 ? std::to_string(rows) : absl::StrCat("R >= ", min_rows);
    return absl::InvalidArgumentError(absl::StrCat("prompt must be [", r, ", ", d, "] or [",
                                                   batch, ", ", r, ", ", d, "], got ",
                                                   ShapeOf(prompt)));
  }
  if (!at::isFloatingType(prompt.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt must be floating point, got ", c10::toString(prompt.scalar_type())));
  }
  at::Tensor batched = shared ? prompt.unsqueeze(0).expand({batch, prompt.size(0), d}) : prompt;
  return batched.to(model.dtype());
}

absl::Status CheckIds(const T5Model& model, const char* name, const at::Tensor& ids,
                      int64_t batch /* -1: any */, bool allow_ignore) {
  if (!ids.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  RETURN_IF_ERROR(CheckDevice(model, name, ids));
  if (ids.dim() != 2 || (batch >= 0 && ids.size(0) != batch) || ids.size(1) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be [batch, length > 0] ids, got ", ShapeOf(ids)));
  }
  if (!at::isIntegralType(ids.scalar_type(), /*includeBool=*/false)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must hold integer ids, got ",
                                                   c10::toString(ids.scalar_type())));
  }
  at::Tensor long_ids = ids.to(at::kLong);
  at::Tensor bad = (long_ids < 0).logical_or(long_ids >= model.config().vocab_size);
  if (allow_ignore) bad = bad.logical_and(long_ids != kIgnoreIndex);
  if (bad.any().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " hold ids outside [0, ",
                                                   model.config().vocab_size, ")",
                                                   allow_ignore ? " other than -100" : ""));
  }
  return absl::OkStatus();
}

absl::Status CheckMask(const T5Model& model, const char* name, const at::Tensor& mask,
                       int64_t batch, int64_t length) {
  if (!mask.defined()) return absl::OkStatus();
  RETURN_IF_ERROR(CheckDevice(model, name, mask));
  if (mask.dim() != 2 || mask.size(0) != batch || mask.size(1) != length) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be [", batch, ", ", length, "], got ", ShapeOf(mask)));
  }
  return absl::OkStatus();
}

// [ones(B, n); mask] in the mask's dtype.
at::Tensor PrefixOnes(const at::Tensor& mask, int64_t n) {
  return at::cat({at::ones({mask.size(0), n}, mask.options()), mask}, 1);
}

EncoderInputs EncoderHalf(const T5Model& model, const at::Tensor& batched_prompt, int64_t nv,
                          const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  EncoderInputs out;
  out.inputs_embeds = at::cat({batched_prompt.narrow(1, 0, nv), model.Embed(input_ids)}, 1);
  if (attention_mask.defined()) out.attention_mask = PrefixOnes(attention_mask, nv);
  return out;
}

absl::StatusOr<T5ForwardInputs> Build(const T5Model& model, const at::Tensor& prompt,
                                      const PromptLayout& layout, const at::Tensor& input_ids,
                                      const at::Tensor& attention_mask, const at::Tensor& labels,
                                      const at::Tensor& decoder_attention_mask) {
  RETURN_IF_ERROR(CheckLayout(layout));
  RETURN_IF_ERROR(CheckIds(model, "input_ids", input_ids, -1, /*allow_ignore=*/false));
  const int64_t batch = input_ids.size(0);
  RETURN_IF_ERROR(CheckMask(model, "attention_mask", attention_mask, batch, input_ids.size(1)));
  RETURN_IF_ERROR(CheckIds(model, "labels", labels, batch, /*allow_ignore=*/true));
  RETURN_IF_ERROR(
      CheckMask(model, "decoder_attention_mask", decoder_attention_mask, batch, labels.size(1)));
  const int64_t nv = layout.num_virtual_tokens;
  ASSIGN_OR_RETURN(at::Tensor batched,
                   BatchedPrompt(model, prompt, nv * layout.num_transformer_submodules, nv, batch));

  T5ForwardInputs out;
  EncoderInputs encoder = EncoderHalf(model, batched, nv, input_ids, attention_mask);
  out.inputs_embeds = std::move(encoder.inputs_embeds);
  out.attention_mask = std::move(encoder.attention_mask);

  at::Tensor long_labels = labels.to(at::kLong);
  at::Tensor decoder_embeds = model.Embed(model.ShiftRight(long_labels));
  if (layout.prompt_decoder) {
    out.decoder_inputs_embeds = at::cat({batched.narrow(1, nv, nv), decoder_embeds}, 1);
    out.labels =
        at::cat({at::full({batch, nv}, kIgnoreIndex, long_labels.options()), long_labels}, 1);
    if (decoder_attention_mask.defined()) {
      out.decoder_attention_mask = PrefixOnes(decoder_attention_mask, nv);
    }
  } else {
    out.decoder_inputs_embeds = std::move(decoder_embeds);
    out.labels = std::move(long_labels);
    out.decoder_attention_mask = decoder_attention_mask;
  }
  return out;
}

}  // namespace

T5ForwardInputs BuildPromptedInputs(const T5Model& model, const at::Tensor& prompt,
                                    const PromptLayout& layout, const at::Tensor& input_ids,
                                    const at::Tensor& attention_mask, const at::Tensor& labels,
                                    const at::Tensor& decoder_attention_mask) {
  absl::StatusOr<T5ForwardInputs> out =
      Build(model, prompt, layout, input_ids, attention_mask, labels, decoder_attention_mask);
  ThrowIfError(out.status(), "BuildPromptedInputs");
  return *std::move(out);
}

T5ForwardInputs BuildPromptedInputs(const T5Model& model, const at::Tensor& prompt,
                                    int num_virtual_tokens, int num_transformer_submodules,
                                    const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                    const at::Tensor& labels) {
  return BuildPromptedInputs(
      model, prompt,
      PromptLayout::Peft(/*multitask=*/true, num_virtual_tokens, num_transformer_submodules),
      input_ids, attention_mask, labels);
}

EncoderInputs BuildPromptedEncoderInputs(const T5Model& model, const at::Tensor& prompt,
                                         int num_virtual_tokens, const at::Tensor& input_ids,
                                         const at::Tensor& attention_mask) {
  ThrowIfError(CheckLayout(PromptLayout{num_virtual_tokens, 1, false}),
               "BuildPromptedEncoderInputs");
  ThrowIfError(CheckIds(model, "input_ids", input_ids, -1, /*allow_ignore=*/false),
               "BuildPromptedEncoderInputs");
  const int64_t batch = input_ids.size(0);
  ThrowIfError(CheckMask(model, "attention_mask", attention_mask, batch, input_ids.size(1)),
               "BuildPromptedEncoderInputs");
  absl::StatusOr<at::Tensor> batched =
      BatchedPrompt(model, prompt, /*rows=*/-1, num_virtual_tokens, batch);
  ThrowIfError(batched.status(), "BuildPromptedEncoderInputs");
  return EncoderHalf(model, *batched, num_virtual_tokens, input_ids, attention_mask);
}

at::Tensor DecoderPromptRows(const T5Model& model, const at::Tensor& prompt,
                             const PromptLayout& layout, int64_t batch_size) {
  ThrowIfError(CheckLayout(layout), "DecoderPromptRows");
  const int64_t nv = layout.num_virtual_tokens;
  absl::StatusOr<at::Tensor> batched =
      BatchedPrompt(model, prompt, nv * layout.num_transformer_submodules, nv, batch_size);
  ThrowIfError(batched.status(), "DecoderPromptRows");
  if (!layout.prompt_decoder) return at::Tensor();
  return batched->narrow(1, nv, nv);
}

}  // namespace mpt
