#include "worker/lm/causal_prompted_model.h"

#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/model/labels.h"

namespace mpt {
namespace {

std::string ShapeOf(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

// Real tokens moved to the right end of each row, in their order (a stable
// sort on the mask), padding (id 0, masked) to the left.
struct LeftAligned {
  at::Tensor ids;   // [B, S] int64
  at::Tensor mask;  // [B, S] int64
};

LeftAligned LeftAlign(const at::Tensor& ids, const at::Tensor& mask) {
  if (!mask.defined()) return {ids, at::ones_like(ids)};
  at::Tensor real = mask.ne(0).to(at::kInt);
  at::Tensor order = std::get<1>(at::sort(real, /*stable=*/true, /*dim=*/1, /*descending=*/false));
  LeftAligned out;
  out.mask = real.gather(1, order).to(at::kLong);
  out.ids = ids.gather(1, order).masked_fill(out.mask.eq(0), 0);
  return out;
}

void CheckIds(const char* function, const char* name, const at::Tensor& ids, int64_t batch,
              int64_t vocab, bool allow_ignore) {
  TORCH_CHECK(ids.defined() && ids.dim() == 2 && (batch < 0 || ids.size(0) == batch), function,
              ": ", name, " must be [batch, length] ids, got ", ShapeOf(ids));
  TORCH_CHECK(at::isIntegralType(ids.scalar_type(), /*includeBool=*/false), function, ": ", name,
              " must hold integer ids, got ", c10::toString(ids.scalar_type()));
  at::Tensor long_ids = ids.to(at::kLong);
  at::Tensor bad = long_ids.lt(0).logical_or(long_ids.ge(vocab));
  if (allow_ignore) bad = bad.logical_and(long_ids.ne(kIgnoreIndex));
  TORCH_CHECK(!bad.any().item<bool>(), function, ": ", name, " hold ids outside [0, ", vocab,
              ")", allow_ignore ? " other than -100" : "");
}

void CheckMask(const char* function, const at::Tensor& mask, const at::Tensor& ids) {
  if (!mask.defined()) return;
  TORCH_CHECK(mask.dim() == 2 && mask.size(0) == ids.size(0) && mask.size(1) == ids.size(1),
              function, ": attention_mask must be ", ShapeOf(ids), ", got ", ShapeOf(mask));
}

// [B, R, d] (R >= rows) -> its first `rows` rows in `dtype` on `device`.
at::Tensor PromptRows(const char* function, const at::Tensor& prompts, int64_t rows,
                      int64_t batch, int64_t d, c10::Device device, c10::ScalarType dtype) {
  TORCH_CHECK(prompts.defined() && prompts.dim() == 3 && prompts.size(0) == batch &&
                  prompts.size(1) >= rows && prompts.size(2) == d,
              function, ": prompts must be [", batch, ", R >= ", rows, ", ", d, "], got ",
              ShapeOf(prompts));
  TORCH_CHECK(at::isFloatingType(prompts.scalar_type()), function,
              ": prompts must be floating point, got ", c10::toString(prompts.scalar_type()));
  return prompts.narrow(1, 0, rows).to(device, dtype);
}

// What every prompted call starts from, checked: the prompt's first nv
// rows and the input with its real tokens moved to the right end.
struct PromptedPrefix {
  at::Tensor prompt;  // [B, nv, d] in the model dtype, on its device
  LeftAligned input;  // [B, S]
  at::Tensor mask;    // [B, nv + S] int64: the prompt's rows, then the input's real tokens
};

// `exact_rows`: the prompts must have exactly nv rows (else at least nv).
PromptedPrefix CheckedPrefix(const char* function, const LlamaModel& m, const at::Tensor& prompts,
                             int64_t nv, const at::Tensor& input_ids,
                             const at::Tensor& attention_mask, bool exact_rows) {
  const c10::Device device = m.device();
  CheckIds(function, "input_ids", input_ids, -1, m.config().vocab_size, /*allow_ignore=*/false);
  CheckMask(function, attention_mask, input_ids);
  const int64_t batch = input_ids.size(0);
  PromptedPrefix out;
  out.prompt = PromptRows(function, prompts, nv, batch, m.config().hidden_size, device, m.dtype());
  TORCH_CHECK(!exact_rows || prompts.size(1) == nv, function, ": prompts must have ", nv,
              " rows, got ", prompts.size(1));
  out.input = LeftAlign(input_ids.to(device, at::kLong),
                        attention_mask.defined() ? attention_mask.to(device) : at::Tensor());
  out.mask = at::cat({at::ones({batch, nv}, out.input.mask.options()), out.input.mask}, 1);
  return out;
}

// CheckedPrefix for a call that scores target ids: first the layout
// (CheckLayout's verdict), then the inputs, then `labels` ([label_rows, L],
// -100 allowed), named `labels_name` in errors.
PromptedPrefix CheckedScoredPrefix(const char* function, const absl::Status& layout_ok,
                                   const LlamaModel& m, const at::Tensor& prompts, int64_t nv,
                                   const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const char* labels_name, const at::Tensor& labels,
                                   int64_t label_rows) {
  TORCH_CHECK(layout_ok.ok(), function, ": ", std::string(layout_ok.message()));
  PromptedPrefix prefix =
      CheckedPrefix(function, m, prompts, nv, input_ids, attention_mask, /*exact_rows=*/true);
  CheckIds(function, labels_name, labels, label_rows, m.config().vocab_size,
           /*allow_ignore=*/true);
  return prefix;
}

}  // namespace

CausalPromptedModel::CausalPromptedModel(std::shared_ptr<const LlamaModel> model,
                                         std::vector<int64_t> eos_ids)
    : model_(std::move(model)), eos_ids_(std::move(eos_ids)) {}

absl::Status CausalPromptedModel::CheckLayout(const PromptLayout& layout) const {
  if (layout.num_virtual_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_virtual_tokens: must be positive, got ", layout.num_virtual_tokens));
  }
  if (layout.num_transformer_submodules != 1 || layout.prompt_decoder) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_transformer_submodules: a decoder-only model takes 1 (PEFT's CAUSAL_LM), got ",
        layout.num_transformer_submodules));
  }
  return absl::OkStatus();
}

PromptedOutput CausalPromptedModel::Forward(const at::Tensor& prompts, const PromptLayout& layout,
                                            const at::Tensor& input_ids,
                                            const at::Tensor& attention_mask,
                                            const at::Tensor& labels) const {
  const char* kFunction = "CausalPromptedModel::Forward";
  const LlamaModel& m = *model_;
  const int64_t nv = layout.num_virtual_tokens;
  PromptedPrefix prefix =
      CheckedScoredPrefix(kFunction, CheckLayout(layout), m, prompts, nv, input_ids, attention_mask,
                          "labels", labels, input_ids.size(0));
  const int64_t s = input_ids.size(1);
  const int64_t l = labels.size(1);
  TORCH_CHECK(l > 0, kFunction, ": labels must have at least one column");

  at::Tensor target_labels = labels.to(m.device(), at::kLong);
  at::Tensor target_mask = target_labels.ne(kIgnoreIndex);
  at::Tensor target_ids = target_labels.masked_fill(target_mask.logical_not(), 0);

  at::Tensor embeds =
      at::cat({prefix.prompt, m.Embed(at::cat({prefix.input.ids, target_ids}, 1))}, 1);
  at::Tensor mask = at::cat({prefix.mask, target_mask.to(at::kLong)}, 1);
  PromptedOutput out;
  // Column nv + s - 1 + j predicts target token j.
  out.hidden = m.HiddenAt(embeds, mask, GenerationPositionIds(mask), nv + s - 1, l);
  out.logits = m.LmHead(out.hidden);
  out.labels = target_labels;
  return out;
}

at::Tensor CausalPromptedModel::Generate(const at::Tensor& prompts, int num_virtual_tokens,
                                         const at::Tensor& input_ids,
                                         const at::Tensor& attention_mask,
                                         int max_new_tokens) const {
  const char* kFunction = "CausalPromptedModel::Generate";
  TORCH_CHECK(max_new_tokens >= 0, kFunction, ": max_new_tokens must not be negative, got ",
              max_new_tokens);
  TORCH_CHECK(num_virtual_tokens > 0, kFunction, ": num_virtual_tokens must be positive, got ",
              num_virtual_tokens);
  TORCH_CHECK(!eos_ids_.empty(), kFunction, ": the model has no EOS id");
  const LlamaModel& m = *model_;
  const c10::Device device = m.device();
  const int64_t batch = input_ids.size(0);
  const int64_t nv = num_virtual_tokens;
  const int64_t s = input_ids.size(1);
  at::NoGradGuard no_grad;
  PromptedPrefix prefix = CheckedPrefix(kFunction, m, prompts, nv, input_ids, attention_mask,
                                        /*exact_rows=*/false);
  const LeftAligned& in = prefix.input;
  const at::Tensor& mask = prefix.mask;
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor positions = GenerationPositionIds(mask);
  at::Tensor embeds = at::cat({prefix.prompt, m.Embed(in.ids)}, 1);

  LlamaDecoderState state = m.StartDecoding();
  at::Tensor hidden = m.DecodeStep(embeds, mask, positions, &state);  // [B, nv + s, d]
  // The last real position of each row: the input's end, or the prompt's
  // when the input is empty (inputs are right-aligned).
  at::Tensor real_count = mask.sum(1);  // [B]
  at::Tensor has_input = in.mask.sum(1).gt(0);
  at::Tensor last = at::where(has_input, at::full_like(real_count, nv + s - 1),
                              at::full_like(real_count, nv - 1));
  at::Tensor last_hidden = hidden.gather(
      1, last.view({batch, 1, 1}).expand({batch, 1, hidden.size(2)}));  // [B, 1, d]
  at::Tensor logits = m.LmHead(last_hidden).select(1, 0).to(at::kFloat);  // [B, V]

  at::Tensor eos = at::tensor(eos_ids_, at::TensorOptions().dtype(at::kLong)).to(device);
  at::Tensor next_position = real_count.unsqueeze(1);  // [B, 1]
  at::Tensor unfinished = at::ones({batch}, long_options.dtype(at::kBool));
  std::vector<at::Tensor> columns;
  for (int step = 0; step < max_new_tokens; ++step) {
    at::Tensor tokens = logits.argmax(-1);
    tokens = at::where(unfinished, tokens, at::full_like(tokens, eos_ids_.front()));
    columns.push_back(tokens.unsqueeze(1));
    at::Tensor is_eos = tokens.unsqueeze(1).eq(eos.unsqueeze(0)).any(1);
    unfinished = unfinished.logical_and(is_eos.logical_not());
    if (!unfinished.any().item<bool>() || step + 1 == max_new_tokens) break;
    at::Tensor step_hidden = m.DecodeStep(m.Embed(tokens.unsqueeze(1)),
                                          at::ones({batch, 1}, long_options), next_position,
                                          &state);
    next_position = next_position + 1;
    logits = m.LmHead(step_hidden).select(1, -1).to(at::kFloat);
  }
  if (columns.empty()) return at::zeros({batch, 0}, long_options);
  return at::cat(columns, 1);
}

at::Tensor CausalPromptedModel::SharedPrefixLogits(const at::Tensor& prompts,
                                                   const PromptLayout& layout,
                                                   const at::Tensor& input_ids,
                                                   const at::Tensor& attention_mask,
                                                   const at::Tensor& labels, int64_t k) const {
  const LlamaModel& m = *model_;
  const int64_t nv = layout.num_virtual_tokens;
  PromptedPrefix prefix =
      CheckedScoredPrefix("CausalPromptedModel::RankScores", CheckLayout(layout), m, prompts, nv,
                          input_ids, attention_mask, "candidates", labels, input_ids.size(0) * k);
  const int64_t s = input_ids.size(1);
  const int64_t l = labels.size(1);

  // The masks and positions Forward gives the K sequences [prompt; input;
  // candidate] of each example.
  const at::Tensor& prefix_mask = prefix.mask;
  at::Tensor target_mask = labels.ne(kIgnoreIndex);
  at::Tensor positions = GenerationPositionIds(
      at::cat({prefix_mask.repeat_interleave(k, 0), target_mask.to(at::kLong)}, 1));
  // Dynamic rope and longrope rotate every position by a rule read from the
  // whole call's largest position: decoding the prefix alone first gives
  // the same keys only while the whole sequence stays within the unscaled
  // range.
  const RopeScaling& rope = m.config().rope_scaling;
  if (rope.type == RopeType::kDynamic || rope.type == RopeType::kLongrope) {
    const int64_t limit = rope.type == RopeType::kDynamic ? m.config().max_position_embeddings
                                                          : rope.original_max_position_embeddings;
    if (positions.max().item<int64_t>() + 1 > limit) return at::Tensor();
  }
  LlamaDecoderState state = m.StartDecoding();
  // Column nv + s - 1 predicts every candidate's first token, column
  // nv + s - 1 + j (the candidate's token j - 1) its token j; of the
  // prefix, only that column's output is wanted (its last layer runs
  // there only).
  at::Tensor hidden =
      m.DecodeStepAt(at::cat({prefix.prompt, m.Embed(prefix.input.ids)}, 1), prefix_mask,
                     GenerationPositionIds(prefix_mask), nv + s - 1, 1, &state)
          .repeat_interleave(k, 0);
  if (l > 1) {
    RepeatRows(k, &state);
    at::Tensor ids = labels.masked_fill(target_mask.logical_not(), 0).narrow(1, 0, l - 1);
    at::Tensor rest = m.DecodeStep(m.Embed(ids), target_mask.narrow(1, 0, l - 1).to(at::kLong),
                                   positions.narrow(1, nv + s, l - 1), &state);
    hidden = at::cat({hidden, rest}, 1);
  }
  return m.LmHead(hidden);
}

at::Tensor CausalPromptedModel::RankScores(const at::Tensor& prompts, const PromptLayout& layout,
                                           const at::Tensor& input_ids,
                                           const at::Tensor& attention_mask,
                                           const at::Tensor& candidates) const {
  const char* kFunction = "CausalPromptedModel::RankScores";
  TORCH_CHECK(input_ids.defined() && input_ids.dim() == 2, kFunction,
              ": input_ids must be [batch, length] ids, got ", ShapeOf(input_ids));
  const int64_t batch = input_ids.size(0);
  TORCH_CHECK(candidates.defined() && candidates.dim() == 3 && candidates.size(0) == batch &&
                  candidates.size(1) > 0 && candidates.size(2) > 0,
              kFunction, ": candidates must be [", batch, ", K > 0, length > 0] ids, got ",
              ShapeOf(candidates));
  TORCH_CHECK(prompts.defined() && prompts.dim() == 3 && prompts.size(0) == batch, kFunction,
              ": prompts must be [", batch, ", T, d], got ", ShapeOf(prompts));
  const int64_t k = candidates.size(1);
  const int64_t length = candidates.size(2);
  at::NoGradGuard no_grad;
  const c10::Device device = model_->device();
  at::Tensor labels = candidates.to(device, at::kLong).reshape({batch * k, length});
  at::Tensor logits = SharedPrefixLogits(prompts, layout, input_ids, attention_mask, labels, k);
  if (!logits.defined()) {
    PromptedOutput out = Forward(
        prompts.to(device).repeat_interleave(k, 0), layout,
        input_ids.to(device).repeat_interleave(k, 0),
        attention_mask.defined() ? attention_mask.to(device).repeat_interleave(k, 0) : at::Tensor(),
        labels);
    logits = out.logits;
  }
  at::Tensor log_probs = at::log_softmax(logits.to(at::kFloat), -1);
  at::Tensor picked = log_probs.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1);
  picked = picked.masked_fill(labels.eq(kIgnoreIndex), 0.0);  // [B*K, C]
  return picked.sum(-1).view({batch, k});
}

}  // namespace mpt
