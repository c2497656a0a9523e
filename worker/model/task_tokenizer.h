// The tokenizer as MPT's data, initialisation and evaluation use it,
// whatever the model family: how an example's input and target text become
// ids, and how generated ids become an answer. Torch-free.
//
// Implementations: worker/lm/t5_task_tokenizer.h (T5's SentencePiece
// tokenizer; input and target both end in EOS) and
// worker/lm/causal_task_tokenizer.h (a decoder-only model's tokenizer.json;
// the input as the tokenizer's own call gives it, the target without
// special tokens plus EOS, as PEFT's causal-LM prompt-tuning recipe joins
// them).
//
// Thread-safety: implementations are immutable; any number of threads may
// call them at once.
#ifndef MPT_WORKER_MODEL_TASK_TOKENIZER_H_
#define MPT_WORKER_MODEL_TASK_TOKENIZER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace mpt {

class TaskTokenizer {
 public:
  virtual ~TaskTokenizer() = default;

  // Hugging Face's tokenizer(text).input_ids: special tokens as the folder's
  // tokenizer adds them. PEFT's TEXT prompt initialisation tokenises its
  // text this way.
  virtual std::vector<int> Encode(absl::string_view text) const = 0;

  // An example's input, cut to at most `max_length` ids (0: no limit).
  virtual std::vector<int> EncodeInput(absl::string_view text, int max_length) const = 0;

  // An example's target (or a rank-classification candidate) as the model
  // is trained to produce it, ending in EOS, cut to at most `max_length` ids
  // (0: no limit) with EOS kept last.
  virtual std::vector<int> EncodeTarget(absl::string_view text, int max_length) const = 0;

  // The answer text of one row of generated ids (as the model's prompted
  // generation returns them): special tokens dropped, nothing after the
  // first EOS.
  virtual std::string DecodeAnswer(absl::Span<const int> ids) const = 0;

  // The id that pads batches (padding is always masked, so any id in the
  // vocabulary serves; a tokenizer without a pad token pads with EOS).
  virtual int pad_id() const = 0;
  virtual int eos_id() const = 0;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_TASK_TOKENIZER_H_
