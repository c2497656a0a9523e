// Checks, before the first training step, that a run of mpt_train can read
// every input and write every output, so that a bad line in the last
// stage's data fails the run in seconds rather than after hours of source
// training.
//
// Thread-safety: free functions without state.
#ifndef MPT_WORKER_TRAINING_PREFLIGHT_H_
#define MPT_WORKER_TRAINING_PREFLIGHT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proto/mpt/v1/spec.pb.h"

namespace mpt {

struct PreflightOptions {
  // Which stages will run: "all", "source", "distillation" or "target"
  // (mpt_train's --stage). Only their inputs are checked.
  std::string stage = "all";
  // Folders the run writes into (--out, the checkpoint folder). Each is
  // created when missing, then a probe file is created in it and removed.
  std::vector<std::string> output_dirs;
};

// Checks a completed, validated spec (LoadPipelineSpec or the per-stage
// validators) against the file system:
// - every train_path and eval_path of the stages that will run is read and
//   parsed in full, as the stage would (ReadJsonl with the task's name as
//   the only allowed task);
// - the base model folder's config.json names a supported model_type and
//   parses (T5Config, or LlamaConfig for a decoder-only model) and its
//   tokenizer loads (spiece.model by T5Tokenizer, or tokenizer.json by
//   HfTokenizer); a decoder-only model needs
//   prompt.num_transformer_submodules 1; the weights are left to the model
//   loader;
// - the adapters the spec names for the stages that will run
//   (distillation.teacher_adapters, target.source_adapter) read back
//   (ReadAdapter);
// - every output folder is writable.
// OK, or the first status's code with every problem found, joined by "; ",
// each led by the spec field or flag it comes from
// ("target.tasks[0].train_path: /d/t.jsonl:7: not valid JSON ...").
// Each check reads through common/file_util, so a FIFO fails at once.
absl::Status PreflightCheck(const mpt::v1::PipelineSpec& spec, const PreflightOptions& options);

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_PREFLIGHT_H_
