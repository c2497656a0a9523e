// The frozen base model as the MPT stages use it, whatever its family: the
// seam between the trainers, evaluators and stages and a concrete model.
//
// Implementations (worker/lm/):
//   T5PromptedModel      an encoder-decoder (T5, mT5, UMT5): PEFT's
//                        SEQ_2_SEQ_LM layout (prompt_inputs.h)
//   CausalPromptedModel  a decoder-only model (Llama, Qwen2/3, Mistral, Phi-3):
//                        PEFT's CAUSAL_LM layout
// and worker/lm/base_model_loader.h loads the one a folder's config.json
// names.
//
// Only prompts are trained: every function is differentiable with respect
// to the prompt tensors it is given, and to nothing of the model.
//
// Tensors: a batch is the trainer's Batch (worker/data/batching.h): input
// ids [B, S] right-padded with their mask [B, S], labels [B, L] (the target
// ids, -100 after each row's end). Prompts are [B, T, d] (one per row; the
// model converts them to its dtype and device), T = nv *
// num_transformer_submodules.
//
// Errors: like libtorch, the tensor functions throw c10::Error naming the
// problem (a layout the family does not take, a tensor of the wrong rank,
// shape or device, ids outside the vocabulary); nothing else is thrown.
// Callers at a module boundary catch it (PromptTrainer::Run does).
//
// Thread-safety: implementations are immutable after loading; const
// functions may run concurrently.
#ifndef MPT_WORKER_PROMPTS_PROMPTED_MODEL_H_
#define MPT_WORKER_PROMPTS_PROMPTED_MODEL_H_

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "worker/prompts/prompt_layout.h"

namespace mpt {

// The outputs of a prompted forward pass at the L positions that predict
// the batch's target tokens, and only there (not at the prompt's or the
// input's positions, nor at the decoder prompt of a two-submodule multitask
// T5 prompt): column j predicts labels[:, j], the batch's label column j.
struct PromptedOutput {
  at::Tensor logits;  // [B, L, vocab] in the model dtype
  at::Tensor hidden;  // [B, L, d]: the final hidden states giving those logits
  at::Tensor labels;  // [B, L] int64; -100 where nothing is scored (padding)
};

class PromptedLanguageModel {
 public:
  virtual ~PromptedLanguageModel() = default;

  // config.json's model_type ("t5", "llama", "qwen2", ...).
  virtual const std::string& model_type() const = 0;
  // The PEFT task_type of this family's adapters: "SEQ_2_SEQ_LM" or
  // "CAUSAL_LM".
  virtual const char* peft_task_type() const = 0;
  // The folder the model was loaded from (an adapter's
  // base_model_name_or_path).
  virtual const std::string& folder() const = 0;
  virtual c10::Device device() const = 0;
  virtual c10::ScalarType dtype() const = 0;
  // The width of a prompt row (the model's hidden size).
  virtual int64_t hidden_size() const = 0;
  virtual int64_t vocab_size() const = 0;
  // What PEFT records in adapter_config.json (num_layers,
  // num_attention_heads).
  virtual int num_layers() const = 0;
  virtual int num_attention_heads() const = 0;
  virtual int64_t num_parameters() const = 0;
  // The frozen word-embedding table [vocab, d] (TEXT and SAMPLE_VOCAB init).
  virtual const at::Tensor& word_embeddings() const = 0;
  // The scalar the embedding layer multiplies rows by (Gemma's sqrt(d));
  // undefined when it takes them as they are.
  virtual at::Tensor word_embedding_scale() const { return at::Tensor(); }

  // OK when the family takes prompts laid out as `layout`; INVALID_ARGUMENT
  // naming num_transformer_submodules otherwise (a decoder-only model takes
  // one submodule only).
  virtual absl::Status CheckLayout(const PromptLayout& layout) const = 0;

  // The LM head on final hidden states [..., d] -> logits [..., vocab] in
  // the model dtype: what Forward computes its logits from (PromptedOutput's
  // hidden to its logits).
  virtual at::Tensor LmHead(const at::Tensor& hidden) const = 0;

  // Teacher forcing: the model on the batch with `prompts` in front as PEFT
  // lays out a prompt of `layout` for this family. The loss of PEFT's
  // forward is the mean over real labels of the token cross-entropy of
  // (logits, labels).
  virtual PromptedOutput Forward(const at::Tensor& prompts, const PromptLayout& layout,
                                 const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                 const at::Tensor& labels) const = 0;

  // Greedy generation as PEFT's generate() with do_sample=False,
  // num_beams=1: the first nv rows of each prompt [B, R >= nv, d] in front
  // of the input, at most `max_new_tokens` tokens, a row finished at EOS.
  // Returns [B, n] ids (on the CPU or the model's device) that
  // TaskTokenizer::DecodeAnswer turns into the answer text.
  virtual at::Tensor Generate(const at::Tensor& prompts, int num_virtual_tokens,
                              const at::Tensor& input_ids, const at::Tensor& attention_mask,
                              int max_new_tokens) const = 0;

  // Rank classification: [B, K] fp32 scores, score[b, c] = the sum over the
  // ids of candidates[b, c] ([B, K, C], -100 padded) of log p(id), the
  // model prompted as Forward prompts it. Runs without autograd.
  virtual at::Tensor RankScores(const at::Tensor& prompts, const PromptLayout& layout,
                                const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                const at::Tensor& candidates) const = 0;
};

}  // namespace mpt

#endif  // MPT_WORKER_PROMPTS_PROMPTED_MODEL_H_
