// Parsing a PEFT adapter_config.json, without libtorch (so that it can be
// fuzzed and used where no model is loaded). ReadAdapter (adapter_io.h)
// reads the file and the weights; this is the part that interprets the JSON.
#ifndef MPT_WORKER_PROMPTS_ADAPTER_CONFIG_H_
#define MPT_WORKER_PROMPTS_ADAPTER_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// Bounds on what an adapter_config.json may declare; a value outside them is
// an error naming the file and key (never wrapped into range).
inline constexpr uint64_t kMaxAdapterConfigBytes = uint64_t{1} << 20;
inline constexpr int kMaxAdapterTokens = 100000;   // num_virtual_tokens
inline constexpr int kMaxAdapterDim = 65536;       // token_dim
inline constexpr int kMaxAdapterRanks = 4096;      // num_ranks
inline constexpr int kMaxAdapterTasks = 100000;    // num_tasks
inline constexpr int kMaxAdapterLayers = 4096;     // num_layers, num_attention_heads

// The fields of adapter_config.json that this project reads. Optional
// integer keys that are absent or null take the defaults below.
struct AdapterConfigFields {
  std::string peft_type;  // required; ReadAdapter accepts the prompt kinds only
  std::string task_type = "SEQ_2_SEQ_LM";
  std::string base_model_name_or_path;
  int num_virtual_tokens = 0;          // [0, kMaxAdapterTokens]
  int num_transformer_submodules = 0;  // [1, 2]; default 2 for SEQ_2_SEQ_LM, else 1
  int token_dim = 0;                   // [0, kMaxAdapterDim]; 0: take it from the weights
  int num_ranks = 1;                   // [1, kMaxAdapterRanks]
  int num_tasks = 1;                   // [1, kMaxAdapterTasks]
  int num_layers = 0;                  // [0, kMaxAdapterLayers]
  int num_attention_heads = 0;         // [0, kMaxAdapterLayers]
};

// Parses the text of an adapter_config.json; `path` leads every message.
// INVALID_ARGUMENT for text that is not JSON (common/json_util's ParseJson
// rules: depth, NUL bytes, numbers beyond a double), a top level that is not
// an object, a missing or non-string "peft_type", or an integer key of the
// wrong type or outside its range. Never throws.
absl::StatusOr<AdapterConfigFields> ParseAdapterConfig(absl::string_view text,
                                                       absl::string_view path);

}  // namespace mpt

#endif  // MPT_WORKER_PROMPTS_ADAPTER_CONFIG_H_
