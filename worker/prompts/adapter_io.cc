#include "worker/prompts/adapter_io.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "worker/prompts/adapter_config.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kTaskNamesKey[] = "mpt.task_names";

json ConfigJson(const AdapterInfo& info) {
  const SoftPromptConfig& p = info.prompt;
  json j = {
      {"peft_type", std::string(PromptKindName(p.kind))},
      {"task_type", info.task_type},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", info.base_model_name_or_path},
      {"revision", nullptr},
      {"inference_mode", true},
      {"num_virtual_tokens", p.num_virtual_tokens},
      {"token_dim", p.token_dim},
      {"num_transformer_submodules", p.num_transformer_submodules},
      {"num_attention_heads", info.num_attention_heads},
      {"num_layers", info.num_layers},
      {"modules_to_save", nullptr},
      // The weights are in the file; PEFT must not initialise anything from
      // a path or a text when it loads the adapter.
      {"prompt_tuning_init", "RANDOM"},
      {"prompt_tuning_init_text", nullptr},
      {"tokenizer_name_or_path", nullptr},
      {"tokenizer_kwargs", nullptr},
  };
  if (p.kind == PromptKind::kMultitask) {
    j["prompt_tuning_init_state_dict_path"] = nullptr;
    j["prompt_tuning_init_task"] = 0;
    j["num_ranks"] = p.num_ranks;
    j["num_tasks"] = p.num_tasks;
  }
  return j;
}

// The prompt tensors must be floating point and finite.
absl::Status CheckPromptTensor(const std::string& file, const char* name, const at::Tensor& t) {
  if (!t.defined()) return absl::OkStatus();
  if (!at::isFloatingType(t.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", name, "\" has dtype ",
                                                   c10::toString(t.scalar_type()),
                                                   "; a prompt tensor must be floating point"));
  }
  if (t.numel() > 0 && !at::isfinite(t).all().item<bool>()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor \"", name, "\" holds NaN or infinite values"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteAdapter(const std::string& folder, const SoftPrompt& prompt,
                          const AdapterInfo& info) {
  const SoftPromptConfig& a = info.prompt;
  const SoftPromptConfig& b = prompt.config();
  if (a.kind != b.kind || a.total_tokens() != b.total_tokens() ||
      a.num_virtual_tokens != b.num_virtual_tokens || a.token_dim != b.token_dim ||
      (a.kind == PromptKind::kMultitask &&
       (a.num_tasks != b.num_tasks || a.num_ranks != b.num_ranks))) {
    return absl::InvalidArgumentError(
        absl::StrCat(folder, ": the adapter description does not match its prompt"));
  }
  if (a.kind == PromptKind::kMultitask && !info.task_names.empty() &&
      static_cast<int>(info.task_names.size()) != a.num_tasks) {
    return absl::InvalidArgumentError(absl::StrCat(
        folder, ": ", info.task_names.size(), " task names for ", a.num_tasks, " tasks"));
  }
  std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (!info.task_names.empty()) metadata[kTaskNamesKey] = json(info.task_names).dump();
  return ReplaceFolder(folder, [&](const std::string& tmp) -> absl::Status {
    RETURN_IF_ERROR(SaveSafetensors((fs::path(tmp) / kAdapterWeightsFile).string(),
                                    prompt.StateDict(), metadata));
    return WriteFileAtomically((fs::path(tmp) / kAdapterConfigFile).string(),
                               ConfigJson(info).dump(2) + "\n");
  });
}

absl::StatusOr<Adapter> ReadAdapter(const std::string& folder) {
  const std::string config_path = (fs::path(folder) / kAdapterConfigFile).string();
  const std::string weights_path = (fs::path(folder) / kAdapterWeightsFile).string();
  ASSIGN_OR_RETURN(std::string text, ReadFile(config_path, kMaxAdapterConfigBytes));
  ASSIGN_OR_RETURN(AdapterConfigFields fields, ParseAdapterConfig(text, config_path));
  Adapter out;
  AdapterInfo& info = out.info;
  auto kind = ParsePromptKind(fields.peft_type);
  if (!kind.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", kind.status().message()));
  }
  info.prompt.kind = *kind;
  info.task_type = fields.task_type;
  info.base_model_name_or_path = fields.base_model_name_or_path;
  info.prompt.num_virtual_tokens = fields.num_virtual_tokens;
  info.prompt.num_transformer_submodules = fields.num_transformer_submodules;
  info.prompt.token_dim = fields.token_dim;
  info.prompt.num_ranks = fields.num_ranks;
  info.prompt.num_tasks = fields.num_tasks;
  info.num_layers = fields.num_layers;
  info.num_attention_heads = fields.num_attention_heads;

  ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(weights_path));
  const std::map<std::string, std::string>& metadata = reader->metadata();
  std::map<std::string, at::Tensor> tensors;
  for (const TensorInfo& t : reader->tensors()) {
    ASSIGN_OR_RETURN(tensors[t.name], ReadTensor(*reader, t));
  }
  auto embeddings = tensors.find("prompt_embeddings");
  if (embeddings == tensors.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(weights_path, ": tensor \"prompt_embeddings\" is missing"));
  }
  // PEFT leaves token_dim null until it sees the model; take it from the data.
  if (info.prompt.token_dim == 0 && embeddings->second.dim() == 2) {
    info.prompt.token_dim = static_cast<int>(embeddings->second.size(1));
  }
  if (auto names = metadata.find(kTaskNamesKey); names != metadata.end()) {
    absl::StatusOr<json> n = ParseJson(names->second, weights_path);
    if (n.ok() && n->is_array()) {
      for (const auto& name : *n) {
        if (name.is_string()) info.task_names.push_back(name.get<std::string>());
      }
    }
  }
  auto get = [&](const char* name) {
    auto it = tensors.find(name);
    return it == tensors.end() ? at::Tensor() : it->second;
  };
  for (const char* name : {"prompt_embeddings", "prefix_task_cols", "prefix_task_rows"}) {
    RETURN_IF_ERROR(CheckPromptTensor(weights_path, name, get(name)));
  }
  auto prompt = SoftPrompt::FromTensors(info.prompt, embeddings->second,
                                        get("prefix_task_cols"), get("prefix_task_rows"));
  if (!prompt.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(folder, ": ", prompt.status().message()));
  }
  out.prompt = *std::move(prompt);
  return out;
}

absl::Status CheckAdapterFitsModel(const AdapterInfo& info, int d_model) {
  if (info.prompt.token_dim != d_model) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token_dim: the adapter's prompt has ", info.prompt.token_dim,
        " features but the base model's d_model is ", d_model));
  }
  return absl::OkStatus();
}

absl::Status CheckAdapterFitsModel(const AdapterInfo& info, int d_model,
                                   const std::string& task_type) {
  RETURN_IF_ERROR(CheckAdapterFitsModel(info, d_model));
  if (info.task_type != task_type) {
    return absl::InvalidArgumentError(absl::StrCat("task_type: the adapter is for ",
                                                   info.task_type, " but the base model takes ",
                                                   task_type, " adapters"));
  }
  return absl::OkStatus();
}

}  // namespace mpt
