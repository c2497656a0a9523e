#include "worker/lm/model_family.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "worker/model/llama_config.h"

namespace mpt {

absl::StatusOr<ModelFamily> FamilyOfModelType(const std::string& model_type,
                                              const std::string& where) {
  if (model_type == "t5" || model_type == "mt5" || model_type == "umt5") {
    return ModelFamily::kEncoderDecoder;
  }
  if (IsLlamaFamilyModelType(model_type)) return ModelFamily::kDecoderOnly;
  return absl::InvalidArgumentError(absl::StrCat(where, ": model_type \"",
                                                 model_type.substr(0, 64),
                                                 "\" is not supported (supported: t5, mt5, umt5, ",
                                                 LlamaFamilyModelTypes(), ")"));
}

absl::StatusOr<ModelKind> ReadModelKind(const std::string& folder) {
  const std::string path = (std::filesystem::path(folder) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  ASSIGN_OR_RETURN(nlohmann::json config, ParseJson(text, path));
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  auto it = config.find("model_type");
  if (it == config.end() || !it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": model_type is missing or not a string"));
  }
  ModelKind kind;
  kind.model_type = it->get<std::string>();
  ASSIGN_OR_RETURN(kind.family, FamilyOfModelType(kind.model_type, path));
  return kind;
}

}  // namespace mpt
