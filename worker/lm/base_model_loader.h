// Loads the frozen base model and its tokenizer from a Hugging Face folder,
// of whichever supported family its config.json names (model_family.h),
// behind the seams the stages use.
//
// Thread-safety: a free function; the loaded objects are immutable.
#ifndef MPT_WORKER_LM_BASE_MODEL_LOADER_H_
#define MPT_WORKER_LM_BASE_MODEL_LOADER_H_

#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "worker/lm/model_family.h"
#include "worker/model/task_tokenizer.h"
#include "worker/prompts/prompted_model.h"

namespace mpt {

struct BaseModelOptions {
  // Where the weights live and the computation runs. Default: the CPU.
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  // The dtype of the frozen weights and activations. Default fp32.
  c10::ScalarType dtype = c10::ScalarType::Float;
};

struct BaseModel {
  ModelKind kind;
  std::shared_ptr<const PromptedLanguageModel> model;
  std::shared_ptr<const TaskTokenizer> tokenizer;
};

// The model and tokenizer of `folder`: T5Model and spiece.model for the T5
// family, LlamaModel and tokenizer.json for the Llama family. Errors: those
// of ReadModelKind and of the family's model and tokenizer loaders (each
// names the file and field).
absl::StatusOr<BaseModel> LoadBaseModel(const std::string& folder,
                                        const BaseModelOptions& options = {});

// "float32" (Float), "bfloat16" (BFloat16) or "float16" (Half): the frozen
// weights' dtype as the --dtype flags of mpt_train, the worker and
// stage_bench name it. INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<c10::ScalarType> ParseModelDtype(const std::string& name,
                                                const std::string& flag = "--dtype");

// The model alone, without its tokenizer (for benchmarks on folders that
// have none): a decoder-only model's generation then ends at config.json's
// EOS ids only. Errors as LoadBaseModel's for the model.
absl::StatusOr<std::shared_ptr<const PromptedLanguageModel>> LoadPromptedModel(
    const std::string& folder, const BaseModelOptions& options = {});

}  // namespace mpt

#endif  // MPT_WORKER_LM_BASE_MODEL_LOADER_H_
