// A decoder-only LlamaModel (Llama, Qwen2, Mistral) behind the
// PromptedLanguageModel seam, with PEFT's CAUSAL_LM layout
// (peft/peft_model.py, PeftModelForCausalLM.forward and generate, PEFT
// 0.21): num_transformer_submodules is 1; the prompt's nv rows go in front
// of the input embeddings, the attention mask gets nv ones in front and the
// labels nv times -100.
//
// An example is its input ids followed by its target ids (which end in
// EOS; worker/lm/causal_task_tokenizer.h), the labels -100 over the input
// and the target ids over the target: the join of PEFT's documented
// prompt-tuning recipe for causal LMs ("Prompt tuning for causal language
// modeling": input_ids = input + target + [eos], labels = [-100] * len(input)
// + target + [eos]). The loss is the token cross-entropy of the target
// tokens alone, each predicted from the position before it (transformers'
// shifted causal-LM loss).
//
// A batch row is laid out as
//   [prompt (nv) | padding, input (S, left-padded) | target, padding (L)]
// so that column nv + S - 1 + j predicts target token j in every row.
// Rotary positions are counted over real tokens only (cumsum of the mask
// minus one, transformers' generate rule), so a row computes what it
// computes alone, unpadded, which is what PEFT computes for one example
// (for a model with a sliding window the window still counts padding
// columns of the left-padded input, as transformers' masks do).
//
// Forward returns the logits, final hidden states and labels at the L
// target-predicting columns: distillation compares
// teacher and student there (KL of the output distributions, squared error
// of the final hidden states).
//
// Generate: greedy decoding with the KV cache, as PEFT's generate with
// do_sample=False: [prompt; input] (input without target), then the argmax
// token each step; a row is finished once it emits an EOS id of config.json
// (or the tokenizer's EOS) and gets EOS after that. Returns the generated
// ids only, [B, n].
//
// RankScores: each candidate is scored as a target of the example (its ids
// end in EOS), the sum of its tokens' log-probabilities. [prompt; input] is
// decoded once per example and its K candidates continue from that KV cache
// (RepeatRows), which gives what Forward gives each whole sequence; with a
// dynamic rope or longrope past its unscaled range, where the rotation
// depends on the whole sequence's length, each sequence runs whole.
//
// Thread-safety: immutable; const functions may run concurrently.
#ifndef MPT_WORKER_LM_CAUSAL_PROMPTED_MODEL_H_
#define MPT_WORKER_LM_CAUSAL_PROMPTED_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "worker/model/llama_model.h"
#include "worker/prompts/prompted_model.h"

namespace mpt {

class CausalPromptedModel final : public PromptedLanguageModel {
 public:
  // `eos_ids`: the ids that end a generated answer (the tokenizer's EOS,
  // then config.json's and generation_config.json's eos_token_id lists);
  // at least one.
  CausalPromptedModel(std::shared_ptr<const LlamaModel> model, std::vector<int64_t> eos_ids);

  const LlamaModel& llama() const { return *model_; }

  const std::string& model_type() const override { return model_->config().model_type; }
  const char* peft_task_type() const override { return "CAUSAL_LM"; }
  const std::string& folder() const override { return model_->folder(); }
  c10::Device device() const override { return model_->device(); }
  c10::ScalarType dtype() const override { return model_->dtype(); }
  int64_t hidden_size() const override { return model_->config().hidden_size; }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int num_layers() const override { return model_->config().num_hidden_layers; }
  int num_attention_heads() const override { return model_->config().num_attention_heads; }
  int64_t num_parameters() const override { return model_->num_parameters(); }
  const at::Tensor& word_embeddings() const override { return model_->word_embeddings(); }
  at::Tensor word_embedding_scale() const override { return model_->embedding_scale(); }

  absl::Status CheckLayout(const PromptLayout& layout) const override;
  at::Tensor LmHead(const at::Tensor& hidden) const override { return model_->LmHead(hidden); }
  PromptedOutput Forward(const at::Tensor& prompts, const PromptLayout& layout,
                         const at::Tensor& input_ids, const at::Tensor& attention_mask,
                         const at::Tensor& labels) const override;
  at::Tensor Generate(const at::Tensor& prompts, int num_virtual_tokens,
                      const at::Tensor& input_ids, const at::Tensor& attention_mask,
                      int max_new_tokens) const override;
  at::Tensor RankScores(const at::Tensor& prompts, const PromptLayout& layout,
                        const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const at::Tensor& candidates) const override;

 private:
  // RankScores' logits [B * K, C, vocab] at the positions predicting each
  // candidate's tokens, with [prompt; input] decoded once per example and
  // its KV cache shared by the example's K candidates; undefined where that
  // would not equal Forward over each whole sequence (dynamic rope or
  // longrope past their unscaled range). `labels`: the candidates,
  // [B * K, C].
  at::Tensor SharedPrefixLogits(const at::Tensor& prompts, const PromptLayout& layout,
                                const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                const at::Tensor& labels, int64_t k) const;

  std::shared_ptr<const LlamaModel> model_;
  std::vector<int64_t> eos_ids_;
};

}  // namespace mpt

#endif  // MPT_WORKER_LM_CAUSAL_PROMPTED_MODEL_H_
