#include "worker/lm/base_model_loader.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/lm/t5_task_tokenizer.h"
#include "worker/model/t5_model.h"
#include "worker/model/t5_tokenizer.h"

namespace mpt {
namespace {

absl::StatusOr<BaseModel> LoadT5(const std::string& folder, const BaseModelOptions& options,
                                 ModelKind kind) {
  T5LoadOptions load;
  load.device = options.device;
  load.dtype = options.dtype;
  ASSIGN_OR_RETURN(std::unique_ptr<T5Model> model, T5Model::Load(folder, load));
  ASSIGN_OR_RETURN(std::unique_ptr<T5Tokenizer> tokenizer, T5Tokenizer::Load(folder));
  BaseModel out;
  out.kind = std::move(kind);
  out.model = std::make_shared<T5PromptedModel>(std::shared_ptr<const T5Model>(std::move(model)));
  out.tokenizer = std::make_shared<T5TaskTokenizer>(
      std::shared_ptr<const T5Tokenizer>(std::move(tokenizer)));
  return out;
}

}  // namespace

absl::StatusOr<BaseModel> LoadBaseModel(const std::string& folder,
                                        const BaseModelOptions& options) {
  ASSIGN_OR_RETURN(ModelKind kind, ReadModelKind(folder));
  switch (kind.family) {
    case ModelFamily::kEncoderDecoder:
      return LoadT5(folder, options, std::move(kind));
    case ModelFamily::kDecoderOnly:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat(folder, ": model_type ", kind.model_type, ": decoder-only models need the "
                   "causal-LM family, which this build lacks"));
}

}  // namespace mpt
