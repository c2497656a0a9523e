#include "server/adapter_validation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/artifact_pack.h"
#include "common/json_util.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

constexpr char kConfigFile[] = "adapter_config.json";
constexpr char kWeightsFile[] = "adapter_model.safetensors";
constexpr char kEmbeddings[] = "prompt_embeddings";
constexpr char kCols[] = "prefix_task_cols";
constexpr char kRows[] = "prefix_task_rows";

// Bounds on what a config may declare (as the worker's adapter reader has
// them); anything beyond is an error, never wrapped into range.
constexpr int64_t kMaxTokens = 100000;
constexpr int64_t kMaxDim = 65536;
constexpr int64_t kMaxRanks = 4096;
constexpr int64_t kMaxTasks = 100000;

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The tensor `name` exists, is F32, has `shape` and only finite values.
absl::Status CheckTensor(const SafetensorsReader& reader, const char* name,
                         const std::vector<int64_t>& shape) {
  const TensorInfo* t = reader.Find(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWeightsFile, ": tensor \"", name, "\" is missing"));
  }
  if (t->dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(kWeightsFile, ": tensor \"", name,
                                                   "\" has dtype ", DTypeName(t->dtype),
                                                   "; adapters hold F32"));
  }
  if (t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(kWeightsFile, ": tensor \"", name,
                                                   "\" has shape ", ShapeText(t->shape),
                                                   ", expected ", ShapeText(shape)));
  }
  absl::Span<const uint8_t> data = reader.Data(*t);
  for (size_t i = 0; i + sizeof(float) <= data.size(); i += sizeof(float)) {
    float v;
    std::memcpy(&v, data.data() + i, sizeof(v));  // little-endian hosts only
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kWeightsFile, ": tensor \"", name, "\" holds NaN or infinite values",
                       " (element ", i / sizeof(float), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckEquals(const char* key, int64_t got, int64_t want) {
  if (got == want) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(kConfigFile, ": ", key, " is ", got, ", the stage's spec asks for ", want));
}

absl::Status Validate(absl::string_view blob, const ExpectedAdapter& expected) {
  PackLimits limits;
  limits.max_entries = 16;
  ASSIGN_OR_RETURN(std::vector<PackedEntry> entries, ReadPackedEntries(blob, limits));
  const PackedEntry* config_entry = nullptr;
  const PackedEntry* weights_entry = nullptr;
  for (const PackedEntry& e : entries) {
    if (e.is_folder) continue;
    if (e.path == kConfigFile) config_entry = &e;
    if (e.path == kWeightsFile) weights_entry = &e;
  }
  if (config_entry == nullptr || weights_entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a PEFT adapter: the archive lacks ",
        config_entry == nullptr ? kConfigFile : kWeightsFile, " at its top level"));
  }

  // adapter_config.json
  if (config_entry->contents.size() > kMaxAdapterConfigJsonBytes) {
    return absl::InvalidArgumentError(absl::StrCat(kConfigFile, ": ",
                                                   config_entry->contents.size(),
                                                   " bytes is more than the ",
                                                   kMaxAdapterConfigJsonBytes, " accepted"));
  }
  ASSIGN_OR_RETURN(nlohmann::json config, ParseJson(config_entry->contents, kConfigFile));
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(kConfigFile, ": not a JSON object"));
  }
  ASSIGN_OR_RETURN(std::string peft_type, GetString(config, "peft_type", kConfigFile));
  const char* want_type = expected.multitask ? "MULTITASK_PROMPT_TUNING" : "PROMPT_TUNING";
  if (peft_type != want_type) {
    return absl::InvalidArgumentError(absl::StrCat(kConfigFile, ": peft_type is ",
                                                   DescribeJson(config["peft_type"]),
                                                   ", this stage produces ", want_type));
  }
  ASSIGN_OR_RETURN(std::string task_type, GetString(config, "task_type", kConfigFile));
  if (task_type != "SEQ_2_SEQ_LM" && task_type != "CAUSAL_LM") {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": task_type is ", DescribeJson(config["task_type"]),
        ", expected \"SEQ_2_SEQ_LM\" (T5 workers) or \"CAUSAL_LM\" (decoder-only workers)"));
  }
  ASSIGN_OR_RETURN(int64_t tokens,
                   GetInt(config, "num_virtual_tokens", kConfigFile, 1, kMaxTokens));
  RETURN_IF_ERROR(CheckEquals("num_virtual_tokens", tokens, expected.num_virtual_tokens));
  // PEFT's default is 2 for seq2seq models and 1 otherwise; a causal LM
  // takes one submodule only.
  const bool causal = task_type == "CAUSAL_LM";
  ASSIGN_OR_RETURN(int64_t submodules, GetInt(config, "num_transformer_submodules", kConfigFile,
                                              1, 2, causal ? 1 : 2));
  if (causal && submodules != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(kConfigFile, ": num_transformer_submodules is ", submodules,
                     ", a CAUSAL_LM adapter has 1"));
  }
  RETURN_IF_ERROR(CheckEquals("num_transformer_submodules", submodules,
                              expected.num_transformer_submodules));
  // PEFT leaves token_dim null until it sees the model: 0 = take it from
  // the tensors.
  ASSIGN_OR_RETURN(int64_t token_dim, GetInt(config, "token_dim", kConfigFile, 1, kMaxDim, 0));
  int64_t tasks = 1;
  int64_t ranks = 0;
  if (expected.multitask) {
    ASSIGN_OR_RETURN(tasks, GetInt(config, "num_tasks", kConfigFile, 1, kMaxTasks, 1));
    RETURN_IF_ERROR(CheckEquals("num_tasks", tasks, expected.num_tasks));
    ASSIGN_OR_RETURN(ranks, GetInt(config, "num_ranks", kConfigFile, 1, kMaxRanks, 1));
    if (expected.num_ranks > 0) {
      RETURN_IF_ERROR(CheckEquals("num_ranks", ranks, expected.num_ranks));
    }
  }

  // adapter_model.safetensors
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> reader,
                   SafetensorsReader::FromBytes(weights_entry->contents, kWeightsFile));
  const int64_t rows = tokens * submodules;
  const TensorInfo* embeddings = reader->Find(kEmbeddings);
  if (embeddings == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWeightsFile, ": tensor \"", kEmbeddings, "\" is missing"));
  }
  int64_t d = token_dim;
  if (d == 0) {
    if (embeddings->shape.size() != 2 || embeddings->shape[1] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(kWeightsFile, ": tensor \"", kEmbeddings,
                                                     "\" has shape ",
                                                     ShapeText(embeddings->shape),
                                                     ", expected [", rows, ", d] with d > 0"));
    }
    d = embeddings->shape[1];
  }
  RETURN_IF_ERROR(CheckTensor(*reader, kEmbeddings, {rows, d}));
  std::vector<std::string> wanted = {kEmbeddings};
  if (expected.multitask) {
    RETURN_IF_ERROR(CheckTensor(*reader, kCols, {tasks, rows, ranks}));
    RETURN_IF_ERROR(CheckTensor(*reader, kRows, {tasks, ranks, d}));
    wanted = {kEmbeddings, kCols, kRows};
  }
  for (const TensorInfo& t : reader->tensors()) {
    if (std::find(wanted.begin(), wanted.end(), t.name) == wanted.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          kWeightsFile, ": unexpected tensor \"", t.name.substr(0, 64), "\" (a ",
          expected.multitask ? "MULTITASK_PROMPT_TUNING" : "PROMPT_TUNING", " adapter holds ",
          absl::StrJoin(wanted, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExpectedAdapter> ExpectedAdapterFor(const mpt::v1::PipelineSpec& spec,
                                                   mpt::v1::JobKind job_kind,
                                                   mpt::v1::JobKind stage_kind) {
  ExpectedAdapter e;
  e.num_virtual_tokens = spec.prompt().num_virtual_tokens();
  e.num_transformer_submodules = spec.prompt().num_transformer_submodules();
  switch (stage_kind) {
    case mpt::v1::SOURCE_TRAINING:
      e.multitask = false;
      break;
    case mpt::v1::DISTILLATION:
      if (!spec.has_distillation() || spec.distillation().tasks_size() == 0) {
        return absl::InvalidArgumentError("the job's spec has no distillation tasks");
      }
      e.multitask = true;
      e.num_tasks = spec.distillation().tasks_size();
      e.num_ranks = spec.prompt().num_ranks();
      break;
    case mpt::v1::TARGET_ADAPTATION:
      if (!spec.has_target() || spec.target().tasks_size() == 0) {
        return absl::InvalidArgumentError("the job's spec has no target tasks");
      }
      e.multitask = true;
      e.num_tasks = spec.target().shared() ? spec.target().tasks_size() : 1;
      // A pipeline adapts its own distillation result, of prompt.num_ranks;
      // a target job adapts an artefact whose rank the worker takes over.
      e.num_ranks = job_kind == mpt::v1::PIPELINE ? spec.prompt().num_ranks() : 0;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "stage kind ", mpt::v1::JobKind_Name(stage_kind), " produces no adapter"));
  }
  return e;
}

absl::Status ValidateAdapterArtifact(absl::string_view blob, const ExpectedAdapter& expected,
                                     absl::string_view what) {
  absl::Status s = Validate(blob, expected);
  if (s.ok()) return s;
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
}

}  // namespace mpt
