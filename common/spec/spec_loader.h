// Loading, completing and checking a training specification
// (proto/mpt/v1/spec.proto).
//
//   ASSIGN_OR_RETURN(mpt::v1::PipelineSpec spec, LoadPipelineSpec(path));
//
// File formats, chosen by the file name:
// - "*.json" (any case): protobuf's JSON mapping. Field names may be written
//   as in the .proto file ("num_virtual_tokens") or in lowerCamelCase
//   ("numVirtualTokens"), as protobuf's JSON parser accepts both. Unknown
//   fields are errors, so that a misspelt setting is not silently ignored.
// - anything else (".textproto", ".pbtxt", ...): protobuf text format.
//   Unknown fields are errors too.
//
// Relative paths: base_model and every task's train_path and eval_path that
// does not start with '/' is taken relative to the folder of the spec file
// and made absolute (the spec may then be handed to workers that run in
// another directory). "~" is not expanded. Paths are normalised lexically
// ("a/./b/../c" becomes "a/c"); symbolic links are not followed.
//
// Validation never opens the model; checks that need the model's shapes
// (token_dim, the vocabulary) happen where the model is loaded. It reports
// every problem it finds, joined by "; ", each led by the path of the field
// ("source.tasks[2].train_path: file does not exist: /data/x.jsonl").
//
// Thread-safety: the functions keep no state and may run concurrently.
#ifndef MPT_COMMON_SPEC_SPEC_LOADER_H_
#define MPT_COMMON_SPEC_SPEC_LOADER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/mpt/v1/spec.pb.h"

namespace mpt {

// The largest spec file accepted: 4 MiB (a spec is a few kilobytes).
inline constexpr size_t kMaxSpecFileBytes = size_t{4} << 20;

struct SpecValidationOptions {
  // Also require base_model to be an existing folder and every train_path
  // and eval_path an existing regular file. Turn off where the paths are
  // meant for another machine (the coordinator checks specs whose files only
  // the workers can see). Default true.
  bool check_files = true;
};

enum class SpecFormat { kJson, kText };

// kJson for a name ending in ".json" (any case), kText otherwise.
SpecFormat SpecFormatForPath(absl::string_view path);

// Reads and parses `path` without resolving, defaulting or validating.
// NOT_FOUND when the file does not exist; INVALID_ARGUMENT (the message
// starts with "<path>:<line>:<column>: " when the parser knows where) for a
// syntax error, an unknown field, a value of the wrong type, or a file larger
// than kMaxSpecFileBytes; PERMISSION_DENIED or INTERNAL when it cannot be
// read.
absl::StatusOr<mpt::v1::PipelineSpec> ReadPipelineSpec(const std::string& path);

// Parses spec text held in memory; `source_name` stands for the file name in
// error messages. Errors as for ReadPipelineSpec().
absl::StatusOr<mpt::v1::PipelineSpec> ParsePipelineSpec(
    absl::string_view content, SpecFormat format,
    absl::string_view source_name);

// Everything a trainer needs: ReadPipelineSpec(), then ResolveSpecPaths()
// against the file's folder, ApplyDefaults() and ValidatePipelineSpec().
// The result is complete: every defaulted field holds its value.
absl::StatusOr<mpt::v1::PipelineSpec> LoadPipelineSpec(
    const std::string& path, const SpecValidationOptions& options = {});

// `path` made absolute against `base_dir` (itself made absolute against the
// current directory when relative) and normalised lexically. An empty path
// stays empty; an absolute path is only normalised.
std::string ResolvePath(absl::string_view path, absl::string_view base_dir);

// Applies ResolvePath(., base_dir) to base_model and to every task's
// train_path and eval_path, in every stage.
void ResolveSpecPaths(absl::string_view base_dir, mpt::v1::PipelineSpec* spec);

// Fills every field left at zero or empty with the default documented in
// spec.proto:
//   prompt: num_virtual_tokens 20, num_transformer_submodules 1,
//     num_ranks 1;
//   every task: eval_mode "generate";
//   every train: batch_size 16, max_input_length 128, max_target_length 32;
//     optimizer learning_rate 0.3, weight_decay 1e-5, schedule "linear",
//     max_grad_norm 1.0 (a negative value, meaning "no clipping", is kept);
//   source: init "RANDOM";
//   distillation: tasks = source.tasks (when it lists none), lambda 0.9,
//     temperature 1, world_size 1, sampling "proportional";
//   target (only when the spec has a target stage): init
//     "AVERAGE_SOURCE_TASKS".
// Required fields (base_model, tasks, train_path, steps) are left alone for
// the validator to report. Applying it twice changes nothing more.
void ApplyDefaults(mpt::v1::PipelineSpec* spec);

// The per-message parts of ApplyDefaults(), for stages submitted alone.
void ApplyDefaults(mpt::v1::PromptSpec* prompt);
void ApplyDefaults(mpt::v1::TrainSpec* train);
void ApplyDefaults(mpt::v1::SourceTrainingSpec* source);
// Does not fill the tasks (they come from the pipeline's source stage).
void ApplyDefaults(mpt::v1::DistillationSpec* distillation);
void ApplyDefaults(mpt::v1::TargetAdaptationSpec* target);

// Upper bounds every validator below enforces (documented per field in
// proto/mpt/v1/spec.proto), shared by the trainer CLI, mptctl and the
// coordinator so that they accept the same specs.
inline constexpr int64_t kMaxSteps = 10'000'000;  // steps, eval_every, checkpoint_every
inline constexpr int64_t kMaxBatchSize = 65'536;
inline constexpr int64_t kMaxSequenceLength = 8192;  // max_input/target_length
inline constexpr int64_t kMaxEvalExamples = 10'000'000;
inline constexpr int64_t kMaxVirtualTokens = 10'000;
inline constexpr int64_t kMaxRanks = 1024;  // prompt.num_ranks
inline constexpr int64_t kMaxWorldSize = 1024;
inline constexpr int kMaxTasks = 1000;  // tasks per stage
inline constexpr int kMaxCandidates = 10'000;  // candidates per task
inline constexpr int kMaxTasksPerPass = 64;  // source.tasks_per_pass
inline constexpr int kMaxLengthBucketBatches = 10'000;  // train.length_bucket_batches

// The accepted range of a floating-point setting: [min, max], or (min, max]
// when `min_exclusive`. The bounds keep every value well inside float (the
// trainers compute in fp32) and far beyond what a sensible run uses, so that
// an absurd value is refused at submission rather than diverging on a worker.
struct SpecRange {
  double min;
  double max;
  bool min_exclusive = false;
};
inline constexpr SpecRange kLearningRateRange{0, 1e3, /*min_exclusive=*/true};
inline constexpr SpecRange kWeightDecayRange{0, 1e3};
inline constexpr SpecRange kLambdaRange{0, 1e4};         // distillation.lambda
inline constexpr SpecRange kTemperatureRange{1e-3, 1e3};  // distillation.temperature
// optimizer.max_grad_norm: at most this; any negative value means no clipping.
inline constexpr double kMaxGradNormLimit = 1e6;

// Checks a spec after ApplyDefaults(). OK, or INVALID_ARGUMENT listing
// every problem, each as "<field path>: <problem>":
// - any value above its bound (kMax* above): "<field>: must be <= N";
// - base_model empty (or, with check_files, not a folder);
// - prompt: num_virtual_tokens < 1, num_transformer_submodules not 1 or 2,
//   num_ranks < 1 or larger than the prompt (T = num_virtual_tokens *
//   num_transformer_submodules);
// - each stage's train: steps <= 0, batch_size < 1, negative eval_every,
//   checkpoint_every or max_eval_examples, lengths < 1, learning_rate
//   outside kLearningRateRange, weight_decay outside kWeightDecayRange,
//   max_grad_norm above kMaxGradNormLimit, negative warmup_steps or more
//   than steps, unknown schedule, a value that is NaN or infinite
//   ("<field>: must be in (0, 1000], got 1e+300");
// - each task: empty or badly formed name (letters, digits, '_', '-', '.';
//   at most 128 characters; not "." or ".."), a name used twice in a stage,
//   empty train_path, unknown eval_mode, "rank" without candidates, empty or
//   repeated candidates, and with check_files missing files;
// - source: no task, unknown init, "TEXT" without init_text, "ADAPTERS"
//   without init_adapters, init_adapters with another init;
// - distillation: no task, a task that is not a source task (it would have
//   no teacher), lambda outside kLambdaRange, temperature outside
//   kTemperatureRange, world_size < 1, batch_size smaller than world_size,
//   unknown sampling;
// - target (optional: a pipeline without one stops after distillation):
//   no task, unknown init, init_task outside [0, number of distillation
//   tasks) for "EXACT_SOURCE_TASK", "TEXT" without init_text.
absl::Status ValidatePipelineSpec(const mpt::v1::PipelineSpec& spec,
                                  const SpecValidationOptions& options = {});

// The spec's `autocast`: empty, "off" or "bf16"; anything else is
// INVALID_ARGUMENT "autocast: ..." naming the value. Part of
// ValidatePipelineSpec; a stage submitted or run alone checks it with this.
absl::Status ValidateAutocast(absl::string_view autocast);

// Validators for the prompt and for stages submitted alone, after
// ApplyDefaults(). Field paths start with the stage
// name ("source.", "distillation.", "target."). The distillation validator
// cannot check its tasks against the source tasks, and the target validator
// checks init_task only for being >= 0.
absl::Status ValidatePromptSpec(const mpt::v1::PromptSpec& prompt);
absl::Status ValidateSourceTrainingSpec(
    const mpt::v1::SourceTrainingSpec& source,
    const SpecValidationOptions& options = {});
absl::Status ValidateDistillationSpec(
    const mpt::v1::DistillationSpec& distillation,
    const SpecValidationOptions& options = {});
absl::Status ValidateTargetAdaptationSpec(
    const mpt::v1::TargetAdaptationSpec& target,
    const SpecValidationOptions& options = {});

}  // namespace mpt

#endif  // MPT_COMMON_SPEC_SPEC_LOADER_H_
