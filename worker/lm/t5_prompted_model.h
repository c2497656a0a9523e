// A T5Model (T5, mT5, UMT5) behind the PromptedLanguageModel seam, with
// PEFT's SEQ_2_SEQ_LM layout (worker/prompts/prompt_inputs.h): the prompt
// before the encoder input; with a two-submodule MULTITASK_PROMPT_TUNING
// prompt also its second half before the decoder input; generation prompts
// the encoder only. Everything is computed exactly as the T5 functions it
// forwards to compute it (BuildPromptedInputs, T5Model's Encode, Decode and
// LmHead, GreedyGenerate, RankClassify); Forward's LM head runs at the
// target positions only, not at a decoder prefix's.
//
// Thread-safety: immutable; const functions may run concurrently.
#ifndef MPT_WORKER_LM_T5_PROMPTED_MODEL_H_
#define MPT_WORKER_LM_T5_PROMPTED_MODEL_H_

#include <memory>
#include <string>

#include "worker/model/t5_model.h"
#include "worker/prompts/prompted_model.h"

namespace mpt {

class T5PromptedModel final : public PromptedLanguageModel {
 public:
  // Borrows `model`, which must outlive this object.
  explicit T5PromptedModel(const T5Model* model) : model_(model) {}
  // Owns `model`.
  explicit T5PromptedModel(std::shared_ptr<const T5Model> model)
      : owned_(std::move(model)), model_(owned_.get()) {}

  const T5Model& t5() const { return *model_; }

  const std::string& model_type() const override { return model_->config().model_type; }
  const char* peft_task_type() const override { return "SEQ_2_SEQ_LM"; }
  const std::string& folder() const override { return model_->folder(); }
  c10::Device device() const override { return model_->device(); }
  c10::ScalarType dtype() const override { return model_->dtype(); }
  int64_t hidden_size() const override { return model_->config().d_model; }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int num_layers() const override { return static_cast<int>(model_->config().num_layers); }
  int num_attention_heads() const override {
    return static_cast<int>(model_->config().num_heads);
  }
  int64_t num_parameters() const override { return model_->num_parameters(); }
  const at::Tensor& word_embeddings() const override { return model_->word_embeddings(); }

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
  std::shared_ptr<const T5Model> owned_;
  const T5Model* model_;
};

}  // namespace mpt

#endif  // MPT_WORKER_LM_T5_PROMPTED_MODEL_H_
