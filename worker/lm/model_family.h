// Which family a Hugging Face model folder belongs to, from its
// config.json's model_type, without loading anything else (torch-free, so
// that preflight checks and tools can ask cheaply).
//
//   "t5", "mt5", "umt5"           kEncoderDecoder (worker/model/t5_model.h)
//   "llama", "qwen2", "qwen3",
//   "mistral", "ministral", "phi3",
//   "gemma", "gemma2",
//   "gemma3_text"                 kDecoderOnly (worker/model/llama_model.h)
#ifndef MPT_WORKER_LM_MODEL_FAMILY_H_
#define MPT_WORKER_LM_MODEL_FAMILY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mpt {

enum class ModelFamily {
  kEncoderDecoder,  // T5 and its variants: PEFT task_type SEQ_2_SEQ_LM
  kDecoderOnly,     // the Llama family: PEFT task_type CAUSAL_LM
};

struct ModelKind {
  std::string model_type;  // config.json's "model_type"
  ModelFamily family = ModelFamily::kEncoderDecoder;
};

// Reads `<folder>/config.json`. NOT_FOUND naming the path when it is
// missing (file_util's errors for an unreadable one); INVALID_ARGUMENT
// "<path>: model_type ..." when the file is not a JSON object, has no
// string "model_type", or names a model_type of no supported family (the
// message lists the supported ones).
absl::StatusOr<ModelKind> ReadModelKind(const std::string& folder);

// The family of a model_type, or INVALID_ARGUMENT as above (`where` leads
// the message).
absl::StatusOr<ModelFamily> FamilyOfModelType(const std::string& model_type,
                                              const std::string& where);

// The eos_token_id of `<folder>/generation_config.json` (an id, a list of
// ids, or null), where transformers' generate() takes its stop tokens from:
// instruct models list their end-of-turn tokens there (Llama 3's <|eot_id|>,
// Qwen's <|im_end|> and <|endoftext|>, Phi-3's <|end|>). Empty when the file
// or the field is absent. INVALID_ARGUMENT naming the path and the field for
// a file that is not a JSON object or an id that is not a non-negative
// integer.
absl::StatusOr<std::vector<int>> ReadGenerationEosIds(const std::string& folder);

}  // namespace mpt

#endif  // MPT_WORKER_LM_MODEL_FAMILY_H_
