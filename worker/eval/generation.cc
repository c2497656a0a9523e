#include "worker/eval/generation.h"

#include <string>
#include <vector>

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

// Checks the encoder inputs; returns the batch size.
int64_t CheckEncoderInputs(const char* function, const T5Model& model, const at::Tensor& embeds,
                           const at::Tensor& mask) {
  const int64_t d = model.config().d_model;
  TORCH_CHECK(embeds.defined() && embeds.dim() == 3 && embeds.size(2) == d && embeds.size(1) > 0,
              function, ": inputs_embeds must be [batch, length > 0, ", d, "], got ",
              ShapeOf(embeds));
  TORCH_CHECK(embeds.device() == model.device(), function, ": inputs_embeds is on ",
              embeds.device().str(), ", the model on ", model.device().str());
  if (mask.defined()) {
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == embeds.size(0) &&
                    mask.size(1) == embeds.size(1),
                function, ": attention_mask must be [", embeds.size(0), ", ", embeds.size(1),
                "], got ", ShapeOf(mask));
    TORCH_CHECK(mask.device() == model.device(), function, ": attention_mask is on ",
                mask.device().str(), ", the model on ", model.device().str());
  }
  return embeds.size(0);
}

}  // namespace

at::Tensor GreedyGenerate(const T5Model& model, const at::Tensor& inputs_embeds,
                          const at::Tensor& attention_mask, int max_new_tokens) {
  TORCH_CHECK(max_new_tokens >= 0, "GreedyGenerate: max_new_tokens must not be negative, got ",
              max_new_tokens);
  const int64_t batch = CheckEncoderInputs("GreedyGenerate", model, inputs_embeds, attention_mask);
  at::NoGradGuard no_grad;
  const T5Config& config = model.config();
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(model.device());
  const std::vector<int64_t> eos(config.eos_token_ids.begin(), config.eos_token_ids.end());
  at::Tensor eos_ids = at::tensor(eos, at::TensorOptions().dtype(at::kLong)).to(model.device());

  at::Tensor encoder_hidden = model.Encode(inputs_embeds.to(model.dtype()), attention_mask);
  T5DecoderState state = model.StartDecoding(encoder_hidden, attention_mask);

  at::Tensor next = at::full({batch, 1}, config.decoder_start_token_id, long_options);
  std::vector<at::Tensor> columns = {next};
  at::Tensor unfinished = at::ones({batch}, long_options.dtype(at::kBool));
  for (int step = 0; step < max_new_tokens; ++step) {
    at::Tensor hidden = model.DecodeStep(model.Embed(next), at::Tensor(), &state);
    at::Tensor logits = model.LmHead(hidden).select(1, -1).to(at::kFloat);  // [B, V]
    at::Tensor tokens = logits.argmax(-1);
    tokens = at::where(unfinished, tokens, at::full_like(tokens, config.pad_token_id));
    columns.push_back(tokens.unsqueeze(1));
    // A sequence is finished once it has produced any EOS id.
    at::Tensor is_eos = (tokens.unsqueeze(1) == eos_ids.unsqueeze(0)).any(1);
    unfinished = unfinished.logical_and(is_eos.logical_not());
    if (!unfinished.any().item<bool>()) break;
    next = tokens.unsqueeze(1);
  }
  return at::cat(columns, 1);
}

at::Tensor GreedyGenerateWithPrompt(const T5Model& model, const at::Tensor& prompt,
                                    int num_virtual_tokens, const at::Tensor& input_ids,
                                    const at::Tensor& attention_mask, int max_new_tokens) {
  EncoderInputs encoder;
  {
    at::NoGradGuard no_grad;
    encoder = BuildPromptedEncoderInputs(model, prompt, num_virtual_tokens, input_ids,
                                         attention_mask);
  }
  return GreedyGenerate(model, encoder.inputs_embeds, encoder.attention_mask, max_new_tokens);
}

RankResult RankClassify(const T5Model& model, const at::Tensor& inputs_embeds,
                        const at::Tensor& attention_mask, const at::Tensor& candidates,
                        const at::Tensor& decoder_prefix) {
  const int64_t batch = CheckEncoderInputs("RankClassify", model, inputs_embeds, attention_mask);
  TORCH_CHECK(candidates.defined() && candidates.dim() == 3 && candidates.size(0) == batch &&
                  candidates.size(1) > 0 && candidates.size(2) > 0,
              "RankClassify: candidates must be [", batch, ", K > 0, length > 0] ids, got ",
              ShapeOf(candidates));
  TORCH_CHECK(at::isIntegralType(candidates.scalar_type(), /*includeBool=*/false),
              "RankClassify: candidates must be integer ids, got ",
              c10::toString(candidates.scalar_type()));
  TORCH_CHECK(candidates.device() == model.device(), "RankClassify: candidates are on ",
              candidates.device().str(), ", the model on ", model.device().str());
  const int64_t k = candidates.size(1);
  const int64_t length = candidates.size(2);
  const int64_t d = model.config().d_model;
  at::NoGradGuard no_grad;

  at::Tensor labels = candidates.to(at::kLong).reshape({batch * k, length});
  at::Tensor valid = labels != kIgnoreIndex;
  TORCH_CHECK(!valid.logical_and((labels < 0).logical_or(labels >= model.config().vocab_size))
                   .any()
                   .item<bool>(),
              "RankClassify: candidates hold ids outside [0, ", model.config().vocab_size,
              ") other than -100");

  int64_t prefix_length = 0;
  at::Tensor prefix;
  if (decoder_prefix.defined()) {
    const bool shared = decoder_prefix.dim() == 2;
    TORCH_CHECK((shared || decoder_prefix.dim() == 3) && decoder_prefix.size(-1) == d &&
                    (shared || decoder_prefix.size(0) == batch),
                "RankClassify: decoder_prefix must be [P, ", d, "] or [", batch, ", P, ", d,
                "], got ", ShapeOf(decoder_prefix));
    TORCH_CHECK(decoder_prefix.device() == model.device(), "RankClassify: decoder_prefix is on ",
                decoder_prefix.device().str(), ", the model on ", model.device().str());
    prefix_length = decoder_prefix.size(-2);
    prefix = shared ? decoder_prefix.unsqueeze(0).expand({batch, prefix_length, d})
                    : decoder_prefix;
    prefix = prefix.to(model.dtype());
  }

  // Each example's encoder output, cross-attention keys and values and
  // decoder prefix are computed once and serve its K candidates, which then
  // continue from the decoder's cache.
  at::Tensor encoder_hidden = model.Encode(inputs_embeds.to(model.dtype()), attention_mask);
  T5DecoderState state = model.StartDecoding(encoder_hidden, attention_mask);
  // Only the prefix's keys and values are wanted: its last block runs
  // after them at one position.
  if (prefix_length > 0) model.DecodeStep(prefix, at::Tensor(), &state, prefix_length - 1);
  RepeatRows(k, &state);
  at::Tensor hidden = model.DecodeStep(model.Embed(model.ShiftRight(labels)), at::Tensor(), &state);
  at::Tensor log_probs = at::log_softmax(model.LmHead(hidden).to(at::kFloat), -1);
  at::Tensor picked = log_probs.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1);
  picked = picked.masked_fill(valid.logical_not(), 0.0);  // [B*K, C]

  RankResult result;
  result.scores = picked.sum(-1).view({batch, k});
  result.best = result.scores.argmax(-1);
  return result;
}

}  // namespace mpt
