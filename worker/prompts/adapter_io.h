// PEFT adapter folders: adapter_config.json + adapter_model.safetensors.
//
// WriteAdapter produces a folder that PEFT's PeftModel.from_pretrained loads
// (PROMPT_TUNING or MULTITASK_PROMPT_TUNING); ReadAdapter loads adapters
// that PEFT or this project wrote. The order of task names of a multitask
// adapter (task id i is task_names[i]) travels in the safetensors header's
// __metadata__ under "mpt.task_names" (a JSON list); PEFT ignores it.
#ifndef MPT_WORKER_PROMPTS_ADAPTER_IO_H_
#define MPT_WORKER_PROMPTS_ADAPTER_IO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/prompts/adapter_config.h"  // IWYU pragma: export (the kMaxAdapter* bounds)
#include "worker/prompts/soft_prompt.h"

namespace mpt {

inline constexpr char kAdapterConfigFile[] = "adapter_config.json";
inline constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";

struct AdapterInfo {
  SoftPromptConfig prompt;
  std::string task_type = "SEQ_2_SEQ_LM";
  std::string base_model_name_or_path;
  // PEFT records the base model's depth and heads; informational for prompt
  // tuning.
  int num_layers = 0;
  int num_attention_heads = 0;
  // Multitask adapters: one name per task id. May be empty.
  std::vector<std::string> task_names;
};

struct Adapter {
  AdapterInfo info;
  SoftPrompt prompt;
};

// Writes `folder` (created if needed) so that a reader sees either the old
// adapter or the new one, never a mix: the files go to a sibling temporary
// folder that then replaces `folder`. INVALID_ARGUMENT when `info` and the
// prompt disagree; INTERNAL for I/O failures (the old folder is kept).
absl::Status WriteAdapter(const std::string& folder, const SoftPrompt& prompt,
                          const AdapterInfo& info);

// Reads and validates an adapter folder. NOT_FOUND when a file is missing;
// INVALID_ARGUMENT naming the file and the key or tensor when the config is
// malformed, the peft_type is not a prompt kind, or a tensor is missing or
// has the wrong shape.
absl::StatusOr<Adapter> ReadAdapter(const std::string& folder);

// INVALID_ARGUMENT naming the field when an adapter does not fit a base
// model of hidden size `d_model`.
absl::Status CheckAdapterFitsModel(const AdapterInfo& info, int d_model);

// The same, and the adapter's task_type must be `task_type` (the PEFT task
// type of the base model's family: "SEQ_2_SEQ_LM" or "CAUSAL_LM").
absl::Status CheckAdapterFitsModel(const AdapterInfo& info, int d_model,
                                   const std::string& task_type);

}  // namespace mpt

#endif  // MPT_WORKER_PROMPTS_ADAPTER_IO_H_
