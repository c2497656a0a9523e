#include "worker/lm/base_model_loader.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_digest.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/lm/causal_prompted_model.h"
#include "worker/lm/causal_task_tokenizer.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/lm/t5_task_tokenizer.h"
#include "worker/model/device_flags.h"
#include "worker/model/hf_tokenizer.h"
#include "worker/model/llama_config.h"
#include "worker/model/llama_model.h"
#include "worker/model/t5_model.h"
#include "worker/model/t5_tokenizer.h"

namespace mpt {
namespace {

absl::StatusOr<BaseModel> LoadT5(const std::string& folder, const BaseModelOptions& options,
                                 ModelKind kind) {
  T5LoadOptions load;
  load.device = options.device;
  ASSIGN_OR_RETURN(load.dtype, ModelDtypeFor(folder, options));
  ASSIGN_OR_RETURN(std::unique_ptr<T5Model> model, T5Model::Load(folder, load));
  ASSIGN_OR_RETURN(std::unique_ptr<T5Tokenizer> tokenizer, T5Tokenizer::Load(folder));
  // Every id the tokenizer can produce needs an embedding row.
  if (tokenizer->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        folder, "/config.json: vocab_size ", model->config().vocab_size,
        " is smaller than the tokenizer's ", tokenizer->vocab_size(),
        " ids (its pieces and sentinel tokens): inputs would hold ids the model has no "
        "embedding for"));
  }
  BaseModel out;
  out.kind = std::move(kind);
  out.model = std::make_shared<T5PromptedModel>(std::shared_ptr<const T5Model>(std::move(model)));
  out.tokenizer = std::make_shared<T5TaskTokenizer>(
      std::shared_ptr<const T5Tokenizer>(std::move(tokenizer)));
  return out;
}

// Appends the ids in the vocabulary that `eos_ids` lacks.
void AddEosIds(const std::vector<int>& ids, int64_t vocab, std::vector<int64_t>& eos_ids) {
  for (int id : ids) {
    if (id < vocab && std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end()) {
      eos_ids.push_back(id);
    }
  }
}

// generation_config.json's EOS ids. transformers loads a model whose file is
// unreadable and generates without it; so does this, with a warning.
std::vector<int> GenerationEosIds(const std::string& folder) {
  absl::StatusOr<std::vector<int>> ids = ReadGenerationEosIds(folder);
  if (ids.ok()) return *ids;
  MPT_LOG(WARNING) << ids.status().message() << "; its stop tokens are not used";
  return {};
}

absl::StatusOr<BaseModel> LoadDecoderOnly(const std::string& folder,
                                          const BaseModelOptions& options, ModelKind kind) {
  LlamaLoadOptions load;
  load.device = options.device;
  ASSIGN_OR_RETURN(load.dtype, ModelDtypeFor(folder, options));
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(folder, load));
  ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> hf, HfTokenizer::Load(folder));
  const int64_t vocab = model->config().vocab_size;
  ASSIGN_OR_RETURN(std::unique_ptr<CausalTaskTokenizer> tokenizer,
                   CausalTaskTokenizer::Create(std::shared_ptr<const HfTokenizer>(std::move(hf)),
                                               vocab));
  // Generation ends at the tokenizer's EOS (the one targets end in) and at
  // every EOS id config.json and generation_config.json list.
  std::vector<int64_t> eos_ids{tokenizer->eos_id()};
  AddEosIds(model->config().eos_token_ids, vocab, eos_ids);
  AddEosIds(GenerationEosIds(folder), vocab, eos_ids);
  BaseModel out;
  out.kind = std::move(kind);
  out.model = std::make_shared<CausalPromptedModel>(
      std::shared_ptr<const LlamaModel>(std::move(model)), std::move(eos_ids));
  out.tokenizer = std::move(tokenizer);
  return out;
}

}  // namespace

absl::StatusOr<BaseModel> LoadBaseModel(const std::string& folder,
                                        const BaseModelOptions& options) {
  ASSIGN_OR_RETURN(ModelKind kind, ReadModelKind(folder));
  absl::StatusOr<BaseModel> base = absl::InternalError("unknown model family");
  switch (kind.family) {
    case ModelFamily::kEncoderDecoder:
      base = LoadT5(folder, options, std::move(kind));
      break;
    case ModelFamily::kDecoderOnly:
      base = LoadDecoderOnly(folder, options, std::move(kind));
      break;
  }
  if (!base.ok()) return base;
  ASSIGN_OR_RETURN(base->digest, ModelFolderDigest(folder));
  return base;
}

absl::StatusOr<c10::ScalarType> ParseModelDtype(const std::string& name,
                                                const std::string& flag) {
  if (name == "float32") return c10::ScalarType::Float;
  if (name == "bfloat16") return c10::ScalarType::BFloat16;
  if (name == "float16") return c10::ScalarType::Half;
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": \"", name.substr(0, 40), "\" is not one of float32, bfloat16, float16"));
}

absl::Status ApplyModelDtypeFlag(const std::string& name, BaseModelOptions* options,
                                 const std::string& flag) {
  if (name == "auto") {
    options->auto_dtype = true;
    return absl::OkStatus();
  }
  absl::StatusOr<c10::ScalarType> dtype = ParseModelDtype(name, flag);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": \"", name.substr(0, 40), "\" is not one of auto, float32, bfloat16, float16"));
  }
  RETURN_IF_ERROR(CheckDtypeOnDevice(*dtype, options->device, flag));
  options->dtype = *dtype;
  options->auto_dtype = false;
  return absl::OkStatus();
}

absl::StatusOr<c10::ScalarType> ModelDtypeFor(const std::string& folder,
                                              const BaseModelOptions& options) {
  if (!options.auto_dtype) return options.dtype;
  ASSIGN_OR_RETURN(ModelKind kind, ReadModelKind(folder));
  if (kind.family != ModelFamily::kDecoderOnly) return c10::ScalarType::Float;
  ASSIGN_OR_RETURN(LlamaConfig config, LlamaConfig::FromJsonFile(folder + "/config.json"));
  if (config.torch_dtype == "bfloat16") return c10::ScalarType::BFloat16;
  if (config.torch_dtype == "float16" && options.device.is_cuda()) return c10::ScalarType::Half;
  return c10::ScalarType::Float;
}

absl::StatusOr<std::shared_ptr<const PromptedLanguageModel>> LoadPromptedModel(
    const std::string& folder, const BaseModelOptions& options) {
  ASSIGN_OR_RETURN(ModelKind kind, ReadModelKind(folder));
  if (kind.family == ModelFamily::kEncoderDecoder) {
    T5LoadOptions load;
    load.device = options.device;
    ASSIGN_OR_RETURN(load.dtype, ModelDtypeFor(folder, options));
    ASSIGN_OR_RETURN(std::unique_ptr<T5Model> model, T5Model::Load(folder, load));
    return std::shared_ptr<const PromptedLanguageModel>(std::make_shared<T5PromptedModel>(
        std::shared_ptr<const T5Model>(std::move(model))));
  }
  LlamaLoadOptions load;
  load.device = options.device;
  ASSIGN_OR_RETURN(load.dtype, ModelDtypeFor(folder, options));
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(folder, load));
  std::vector<int64_t> eos_ids;
  const int64_t vocab = model->config().vocab_size;
  AddEosIds(model->config().eos_token_ids, vocab, eos_ids);
  AddEosIds(GenerationEosIds(folder), vocab, eos_ids);
  return std::shared_ptr<const PromptedLanguageModel>(std::make_shared<CausalPromptedModel>(
      std::shared_ptr<const LlamaModel>(std::move(model)), std::move(eos_ids)));
}

}  // namespace mpt
