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
  // When set, `dtype` is not used: a decoder-only model keeps the precision
  // its config.json states ("torch_dtype", or "dtype") where the device
  // computes in it: bfloat16 on any device, float16 on CUDA only; anything
  // else, and every T5-family model (whose activations overflow in
  // float16), loads in float32. What --dtype=auto (the default of the
  // worker, mpt_train and stage_bench) asks for.
  bool auto_dtype = false;
};

struct BaseModel {
  ModelKind kind;
  std::shared_ptr<const PromptedLanguageModel> model;
  std::shared_ptr<const TaskTokenizer> tokenizer;
  // ModelFolderDigest of the folder (common/file_digest.h): what checkpoints
  // and finished adapters record as the model they were trained on.
  std::string digest;
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

// Sets options->dtype / auto_dtype from a --dtype flag's value: "auto" or
// one of ParseModelDtype's names. INVALID_ARGUMENT naming `flag` otherwise,
// and for a dtype options->device (set it first) cannot compute in
// (CheckDtypeOnDevice: float16 on the CPU with libtorch 1.13).
absl::Status ApplyModelDtypeFlag(const std::string& name, BaseModelOptions* options,
                                 const std::string& flag = "--dtype");

// The dtype LoadBaseModel loads `folder` in under `options` (see
// auto_dtype). Errors: ReadModelKind's, and LlamaConfig's for a bad
// decoder-only config.json.
absl::StatusOr<c10::ScalarType> ModelDtypeFor(const std::string& folder,
                                              const BaseModelOptions& options);

// The model alone, without its tokenizer (for benchmarks on folders that
// have none): a decoder-only model's generation then ends at config.json's
// EOS ids only. Errors as LoadBaseModel's for the model.
absl::StatusOr<std::shared_ptr<const PromptedLanguageModel>> LoadPromptedModel(
    const std::string& folder, const BaseModelOptions& options = {});

}  // namespace mpt

#endif  // MPT_WORKER_LM_BASE_MODEL_LOADER_H_
