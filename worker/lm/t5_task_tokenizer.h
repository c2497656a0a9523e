// T5's tokenizer behind the TaskTokenizer seam: inputs and targets are both
// tokenizer(text) (ending in </s>), cut keeping </s> last; a generated row
// decodes with special tokens skipped.
//
// Thread-safety: immutable.
#ifndef MPT_WORKER_LM_T5_TASK_TOKENIZER_H_
#define MPT_WORKER_LM_T5_TASK_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "worker/model/t5_tokenizer.h"
#include "worker/model/task_tokenizer.h"

namespace mpt {

class T5TaskTokenizer final : public TaskTokenizer {
 public:
  // Borrows `tokenizer`, which must outlive this object.
  explicit T5TaskTokenizer(const T5Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  // Owns `tokenizer`.
  explicit T5TaskTokenizer(std::shared_ptr<const T5Tokenizer> tokenizer)
      : owned_(std::move(tokenizer)), tokenizer_(owned_.get()) {}

  const T5Tokenizer& t5() const { return *tokenizer_; }

  std::vector<int> Encode(absl::string_view text) const override;
  std::vector<int> EncodeInput(absl::string_view text, int max_length) const override;
  std::vector<int> EncodeTarget(absl::string_view text, int max_length) const override;
  std::string DecodeAnswer(absl::Span<const int> ids) const override;
  int pad_id() const override { return tokenizer_->pad_id(); }
  int eos_id() const override { return tokenizer_->eos_id(); }

 private:
  std::shared_ptr<const T5Tokenizer> owned_;
  const T5Tokenizer* tokenizer_;
};

}  // namespace mpt

#endif  // MPT_WORKER_LM_T5_TASK_TOKENIZER_H_
