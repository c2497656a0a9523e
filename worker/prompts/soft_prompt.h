// Soft prompts with PEFT's semantics: a plain prompt (PROMPT_TUNING) and the
// multitask prompt of MPT (MULTITASK_PROMPT_TUNING).
//
// With T = num_virtual_tokens * num_transformer_submodules and d = token_dim:
//   plain:     prompt_embeddings [T, d]; every example gets the same prompt.
//   multitask: prompt_embeddings P* [T, d], prefix_task_cols U [K, T, r],
//              prefix_task_rows V [K, r, d]; the prompt of task k is
//              P* * (U[k] @ V[k]) (element-wise product).
// The tensor names are the keys of PEFT's adapter_model.safetensors.
//
// A SoftPrompt owns its parameters (fp32, requires_grad) and is not
// thread-safe; copies share the underlying tensors (torch semantics).
#ifndef MPT_WORKER_PROMPTS_SOFT_PROMPT_H_
#define MPT_WORKER_PROMPTS_SOFT_PROMPT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

enum class PromptKind { kPromptTuning, kMultitask };

// "PROMPT_TUNING" / "MULTITASK_PROMPT_TUNING", as PEFT's peft_type.
absl::string_view PromptKindName(PromptKind kind);
absl::StatusOr<PromptKind> ParsePromptKind(absl::string_view name);

// PEFT's prompt_tuning_init values, plus the two that distillation uses.
enum class PromptInit {
  kRandom,              // P ~ N(0, 1); U, V ~ N(0, 0.02) (PEFT's defaults)
  kText,                // P = word embeddings of the init text, tiled to T
  kSampleVocab,         // P = word embeddings of T random vocabulary ids
  kAverageSourceTasks,  // P* from the source state; U, V = mean over tasks
  kExactSourceTask,     // P* from the source state; U, V of one task
  kOnlySourceShared,    // P* from the source state; U, V as kRandom
  kTeacherMean,         // P* = mean of the teachers; U = V = 1 (identity)
};

absl::string_view PromptInitName(PromptInit init);
// Accepts PEFT's names (RANDOM, TEXT, SAMPLE_VOCAB, AVERAGE_SOURCE_TASKS,
// EXACT_SOURCE_TASK, ONLY_SOURCE_SHARED) and TEACHER_MEAN.
absl::StatusOr<PromptInit> ParsePromptInit(absl::string_view name);

struct SoftPromptConfig {
  PromptKind kind = PromptKind::kPromptTuning;
  int num_virtual_tokens = 20;
  int num_transformer_submodules = 1;
  int token_dim = 0;
  int num_ranks = 1;  // multitask only
  int num_tasks = 1;  // multitask only

  int total_tokens() const { return num_virtual_tokens * num_transformer_submodules; }
};

// INVALID_ARGUMENT naming the field when a size is out of range (for
// example num_ranks larger than T or than d, which would not be low rank).
absl::Status ValidateSoftPromptConfig(const SoftPromptConfig& config);

class SoftPrompt {
 public:
  // Builds a prompt from existing tensors (copied to fp32, requires_grad).
  // INVALID_ARGUMENT naming the tensor when a shape does not match `config`.
  static absl::StatusOr<SoftPrompt> FromTensors(
      const SoftPromptConfig& config, const at::Tensor& prompt_embeddings,
      const at::Tensor& prefix_task_cols = at::Tensor(),
      const at::Tensor& prefix_task_rows = at::Tensor());

  // kRandom with a deterministic generator seeded by `seed`.
  static absl::StatusOr<SoftPrompt> Random(const SoftPromptConfig& config,
                                           uint64_t seed);

  // kText: `text_ids` are the tokenised init text (EOS included, as PEFT's
  // tokenizer call gives), tiled to T and cut to T; `word_embeddings` is the
  // base model's [V, d] table and `embed_scale`, when defined, the scalar
  // its embedding layer multiplies rows by (Gemma's sqrt(d)), as PEFT takes
  // the rows through that layer. U, V (multitask) as kRandom with `seed`.
  static absl::StatusOr<SoftPrompt> FromText(const SoftPromptConfig& config,
                                             const std::vector<int>& text_ids,
                                             const at::Tensor& word_embeddings,
                                             uint64_t seed,
                                             const at::Tensor& embed_scale = at::Tensor());

  // kSampleVocab: T ids drawn uniformly from the vocabulary with `seed`;
  // `embed_scale` as for FromText.
  static absl::StatusOr<SoftPrompt> SampleVocab(const SoftPromptConfig& config,
                                                const at::Tensor& word_embeddings,
                                                uint64_t seed,
                                                const at::Tensor& embed_scale = at::Tensor());

  // kAverageSourceTasks, kExactSourceTask, kOnlySourceShared: `source` is a
  // multitask state (prompt_embeddings, prefix_task_cols, prefix_task_rows)
  // as a distillation writes it. The new prompt has config.num_tasks tasks;
  // PEFT's modes give one task, more are copies of it. INVALID_ARGUMENT when
  // a tensor is missing or its shape does not fit `config`, or `init_task`
  // is out of range.
  static absl::StatusOr<SoftPrompt> FromSourceState(
      const SoftPromptConfig& config,
      const std::map<std::string, at::Tensor>& source, PromptInit init,
      int init_task, uint64_t seed);

  // kTeacherMean: P* = mean of `teachers` (each [T, d]); U = 1, V = 1 so
  // that every task starts exactly at P*. config.num_tasks must equal the
  // number of teachers.
  static absl::StatusOr<SoftPrompt> FromTeachers(
      const SoftPromptConfig& config, const std::vector<at::Tensor>& teachers);

  SoftPrompt() = default;

  const SoftPromptConfig& config() const { return config_; }

  // The prompts of a batch: [B, T, d]. `task_ids` is [B] int64 (multitask)
  // and ignored for a plain prompt, which is expanded to `batch_size`.
  // Differentiable with respect to the parameters.
  at::Tensor Forward(const at::Tensor& task_ids, int64_t batch_size) const;

  // The prompt of one task, [T, d] (task ignored for a plain prompt).
  at::Tensor TaskPrompt(int task) const;

  // Moves the parameters to `device` (fresh leaf tensors there). Call it
  // before handing Parameters() to an optimiser.
  void MoveTo(c10::Device device);

  // Trainable parameters: {P} or {P*, U, V}; {U, V} once the shared
  // prompt is frozen.
  std::vector<at::Tensor> Parameters() const;

  // Multitask prompts: keeps P* as it is (no gradient, left out of
  // Parameters()), so that training moves only the task factors U, V. No
  // effect on a plain prompt.
  void FreezeSharedPrompt();
  bool shared_prompt_frozen() const { return shared_frozen_; }

  // PEFT's state dict: prompt_embeddings (+ prefix_task_cols/rows).
  std::map<std::string, at::Tensor> StateDict() const;

  // A detached copy of StateDict(), e.g. the best prompt seen so far.
  std::map<std::string, at::Tensor> CloneState() const;

  // Copies `values` into the parameters in place, so that an optimiser keeps
  // pointing at the same tensors. Every tensor of StateDict() must be there
  // with its shape; `source` names where the values came from in the error.
  absl::Status AssignState(const std::map<std::string, at::Tensor>& values,
                           const std::string& source) const;

  const at::Tensor& prompt_embeddings() const { return prompt_embeddings_; }
  const at::Tensor& prefix_task_cols() const { return prefix_task_cols_; }
  const at::Tensor& prefix_task_rows() const { return prefix_task_rows_; }

 private:
  SoftPromptConfig config_;
  at::Tensor prompt_embeddings_;
  at::Tensor prefix_task_cols_;
  at::Tensor prefix_task_rows_;
  bool shared_frozen_ = false;
};

}  // namespace mpt

#endif  // MPT_WORKER_PROMPTS_SOFT_PROMPT_H_
