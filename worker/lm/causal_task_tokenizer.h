// A decoder-only model's tokenizer.json (HfTokenizer) behind the
// TaskTokenizer seam, joining input and target as PEFT's causal-LM
// prompt-tuning recipe does:
//   input   tokenizer(input).input_ids: with the special tokens the folder's
//           tokenizer adds (Llama's BOS; Qwen2 adds none), cut to
//           max_input_length by dropping its end
//   target  tokenizer(target, add_special_tokens=False).input_ids + [EOS],
//           cut to max_target_length with EOS kept last
// The model sees input + target (worker/lm/causal_prompted_model.h).
// DecodeAnswer keeps the ids before the first EOS and decodes them with
// special tokens skipped. pad_id is the tokenizer's pad token, or EOS when
// it has none (padding is always masked).
//
// Thread-safety: immutable.
#ifndef MPT_WORKER_LM_CAUSAL_TASK_TOKENIZER_H_
#define MPT_WORKER_LM_CAUSAL_TASK_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/hf_tokenizer.h"
#include "worker/model/task_tokenizer.h"

namespace mpt {

class CausalTaskTokenizer final : public TaskTokenizer {
 public:
  // INVALID_ARGUMENT naming the folder when the tokenizer has no EOS token
  // (targets end in it), any id of the tokenizer (tokenizer.json's
  // vocabulary and added tokens) beyond `model_vocab_size` (the model's
  // embedding rows, config.json vocab_size), or an EOS or pad id beyond it.
  static absl::StatusOr<std::unique_ptr<CausalTaskTokenizer>> Create(
      std::shared_ptr<const HfTokenizer> tokenizer, int64_t model_vocab_size);

  const HfTokenizer& hf() const { return *tokenizer_; }

  std::vector<int> Encode(absl::string_view text) const override;
  std::vector<int> EncodeInput(absl::string_view text, int max_length) const override;
  std::vector<int> EncodeTarget(absl::string_view text, int max_length) const override;
  std::string DecodeAnswer(absl::Span<const int> ids) const override;
  int pad_id() const override { return pad_id_; }
  int eos_id() const override { return eos_id_; }

 private:
  CausalTaskTokenizer(std::shared_ptr<const HfTokenizer> tokenizer, int eos_id, int pad_id)
      : tokenizer_(std::move(tokenizer)), eos_id_(eos_id), pad_id_(pad_id) {}

  std::shared_ptr<const HfTokenizer> tokenizer_;
  int eos_id_;
  int pad_id_;
};

}  // namespace mpt

#endif  // MPT_WORKER_LM_CAUSAL_TASK_TOKENIZER_H_
