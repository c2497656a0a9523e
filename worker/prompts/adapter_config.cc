#include "worker/prompts/adapter_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

using nlohmann::json;

// An optional integer key in [min, max]; `fallback` when absent or null.
absl::StatusOr<int> IntField(const json& j, const char* key, int fallback, int min, int max,
                             absl::string_view path) {
  ASSIGN_OR_RETURN(int64_t v, GetInt(j, key, path, min, max, fallback));
  return static_cast<int>(v);
}

}  // namespace

absl::StatusOr<AdapterConfigFields> ParseAdapterConfig(absl::string_view text,
                                                       absl::string_view path) {
  ASSIGN_OR_RETURN(json j, ParseJson(text, path));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  AdapterConfigFields c;
  auto type = j.find("peft_type");
  if (type == j.end() || !type->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"peft_type\" is missing"));
  }
  c.peft_type = type->get<std::string>();
  if (auto t = j.find("task_type"); t != j.end() && t->is_string()) {
    c.task_type = t->get<std::string>();
  }
  if (auto b = j.find("base_model_name_or_path"); b != j.end() && b->is_string()) {
    c.base_model_name_or_path = b->get<std::string>();
  }
  const int default_submodules = c.task_type == "SEQ_2_SEQ_LM" ? 2 : 1;
  ASSIGN_OR_RETURN(c.num_virtual_tokens,
                   IntField(j, "num_virtual_tokens", 0, 0, kMaxAdapterTokens, path));
  ASSIGN_OR_RETURN(c.num_transformer_submodules,
                   IntField(j, "num_transformer_submodules", default_submodules, 1, 2, path));
  ASSIGN_OR_RETURN(c.token_dim, IntField(j, "token_dim", 0, 0, kMaxAdapterDim, path));
  ASSIGN_OR_RETURN(c.num_ranks, IntField(j, "num_ranks", 1, 1, kMaxAdapterRanks, path));
  ASSIGN_OR_RETURN(c.num_tasks, IntField(j, "num_tasks", 1, 1, kMaxAdapterTasks, path));
  ASSIGN_OR_RETURN(c.num_layers, IntField(j, "num_layers", 0, 0, kMaxAdapterLayers, path));
  ASSIGN_OR_RETURN(c.num_attention_heads,
                   IntField(j, "num_attention_heads", 0, 0, kMaxAdapterLayers, path));
  return c;
}

}  // namespace mpt
