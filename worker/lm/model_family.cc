#include "worker/lm/model_family.h"

#include <cstdint>
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

absl::StatusOr<std::vector<int>> ReadGenerationEosIds(const std::string& folder) {
  const std::filesystem::path path = std::filesystem::path(folder) / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::vector<int>();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path.string()));
  ASSIGN_OR_RETURN(nlohmann::json config, ParseJson(text, path.string()));
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a JSON object"));
  }
  std::vector<int> ids;
  auto it = config.find("eos_token_id");
  if (it == config.end() || it->is_null()) return ids;
  auto add = [&](const nlohmann::json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          path.string(), ": eos_token_id must be a token id or a list of them, got ",
          v.dump().substr(0, 64)));
    }
    ids.push_back(v.get<int>());
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const nlohmann::json& v : *it) RETURN_IF_ERROR(add(v));
  } else {
    RETURN_IF_ERROR(add(*it));
  }
  return ids;
}

}  // namespace mpt
