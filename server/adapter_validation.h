// Checks that an uploaded adapter artefact is the PEFT adapter its stage
// must produce (docs: /work/shared/DESIGN.md section 2), without libtorch.
//
// An adapter artefact is a ustar archive (common/artifact_pack.h) holding
// adapter_config.json and adapter_model.safetensors at its top level. What
// each stage writes (worker/training/mpt_stages.cc):
//   source/<task>   PROMPT_TUNING, prompt_embeddings [T, d]
//   distillation    MULTITASK_PROMPT_TUNING with num_tasks = the
//                   distillation's tasks and num_ranks = prompt.num_ranks
//   target/<task>   MULTITASK_PROMPT_TUNING with num_tasks = 1
//   target/shared   MULTITASK_PROMPT_TUNING with num_tasks = the targets
// with T = num_virtual_tokens x num_transformer_submodules, and for the
// multitask kind also prefix_task_cols [num_tasks, T, r] and
// prefix_task_rows [num_tasks, r, d]. All tensors are F32 and finite.
//
//   ASSIGN_OR_RETURN(ExpectedAdapter want, ExpectedAdapterFor(spec, job_kind, stage_kind));
//   RETURN_IF_ERROR(ValidateAdapterArtifact(blob, want, "artefact of source/sst2"));
//
// Thread-safety: free functions without state.
#ifndef MPT_SERVER_ADAPTER_VALIDATION_H_
#define MPT_SERVER_ADAPTER_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {

// The largest adapter_config.json accepted (1 MiB).
inline constexpr uint64_t kMaxAdapterConfigJsonBytes = uint64_t{1} << 20;

// What an adapter must declare and hold.
struct ExpectedAdapter {
  // true: MULTITASK_PROMPT_TUNING; false: PROMPT_TUNING.
  bool multitask = false;
  int num_virtual_tokens = 0;
  int num_transformer_submodules = 0;
  // Multitask only: the task count, and the rank of the factors (0: any
  // rank, as when a target stage adapts a source adapter the coordinator
  // did not make, whose rank it does not know).
  int num_tasks = 1;
  int num_ranks = 0;
};

// The adapter a stage of kind `stage_kind` (SOURCE_TRAINING, DISTILLATION,
// TARGET_ADAPTATION) of a job of kind `job_kind` must upload, from the
// job's planned spec (defaults filled in). INVALID_ARGUMENT for a stage
// kind that produces no adapter or a spec without the stage's section.
absl::StatusOr<ExpectedAdapter> ExpectedAdapterFor(const mpt::v1::PipelineSpec& spec,
                                                   mpt::v1::JobKind job_kind,
                                                   mpt::v1::JobKind stage_kind);

// OK when `blob` is an adapter archive as `expected` says: the archive
// reads, both files are present, adapter_config.json is a JSON object (at
// most kMaxAdapterConfigJsonBytes) whose peft_type, task_type
// (SEQ_2_SEQ_LM from T5 workers, CAUSAL_LM with one submodule from
// decoder-only workers; the coordinator does not read model folders, so
// either is accepted), num_virtual_tokens,
// num_transformer_submodules, token_dim and (multitask) num_tasks and
// num_ranks agree, and adapter_model.safetensors holds exactly the
// tensors of that kind, F32, of those shapes, with one d > 0 throughout
// and every value finite. Otherwise INVALID_ARGUMENT "<what>: <problem>",
// the problem naming the file and the key or tensor.
absl::Status ValidateAdapterArtifact(absl::string_view blob, const ExpectedAdapter& expected,
                                     absl::string_view what);

}  // namespace mpt

#endif  // MPT_SERVER_ADAPTER_VALIDATION_H_
