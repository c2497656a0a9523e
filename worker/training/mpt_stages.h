// The three stages of Multitask Prompt Tuning, as library calls.
//
//   RunSourceTraining   one PROMPT_TUNING adapter (teacher) per source task
//   RunDistillation     the teachers distilled into one MULTITASK adapter:
//                       shared prompt P* and factors (U_k, V_k) per task,
//                       loss L_PLM + lambda * (L_KL + L_hidden)
//   RunTargetAdaptation target tasks adapted from a multitask adapter
//
// Each stage writes PEFT adapter folders under its output folder, keeps
// resumable checkpoints under its work folder, and reports progress through
// the environment's sink. The model stays frozen; only prompts train.
#ifndef MPT_WORKER_TRAINING_MPT_STAGES_H_
#define MPT_WORKER_TRAINING_MPT_STAGES_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/mpt/v1/spec.pb.h"
#include "worker/collectives/communicator.h"
#include "common/progress/progress.h"
#include "worker/model/task_tokenizer.h"
#include "worker/prompts/prompt_layout.h"
#include "worker/prompts/prompted_model.h"
#include "worker/training/packed_trainer.h"
#include "worker/training/prompt_trainer.h"
#include "worker/prompts/soft_prompt.h"

namespace mpt {

class TeacherCache;  // teacher_cache.h

// What every stage runs with. Pointers are borrowed and must outlive the
// call; `comm` may be null (single process), `sink` may be null. The model
// and tokenizer are of any family (worker/lm/base_model_loader.h loads
// them).
struct StageEnv {
  const PromptedLanguageModel* model = nullptr;
  const TaskTokenizer* tokenizer = nullptr;
  Communicator* comm = nullptr;
  ProgressSink* sink = nullptr;
  std::function<bool()> cancelled;
  // Checkpoints go under this folder (one sub-folder per stage and task);
  // empty: no checkpoints, no resume.
  std::string work_dir;
  // Where the call's training run keeps and resumes its checkpoint, chosen
  // by the caller (the worker daemon puts a fetched checkpoint here); it
  // overrides `work_dir` for checkpoints. Meant for calls that train once
  // (one source task, the distillation, one target task or the shared
  // group): runs of one call would take turns in the folder, each starting
  // over when it finds another's checkpoint.
  std::string checkpoint_dir;
  // With one run, the run itself is split into up to this many
  // data-parallel ranks that are threads (ThreadGroup), one compute thread
  // each, under the same conditions and when a step has at least 2 rows;
  // it then ends where a gang of that many ranks ends (the single-rank run's
  // result up to fp32 summation order).
  // Independent runs of one call (the source tasks of RunSourceTraining
  // without tasks_per_pass, the tasks of RunSourcePack, the target tasks of
  // RunTargetAdaptation without spec.shared, the baselines of
  // RunTargetBaselines) train on up to this many CPU threads at once, one
  // compute thread each (lanes.h), when the model is on the CPU, `comm` has
  // one rank and `checkpoint_dir` is empty (RunSourcePack: each task names
  // its own). Each run computes what it computes alone with one
  // compute thread. 1 (default): one after another (a pack as one mixed
  // batch).
  int lanes = 1;
  // Set by the runner of thread ranks (a run split over threads of this
  // process, `comm` being one of them): their number, so that rank 0
  // reports the FLOPs of all of them. 1 otherwise.
  int thread_ranks = 1;
  // The model's content digest (BaseModel::digest): checkpoints and
  // finished adapters record it, so that a run on another model neither
  // resumes nor reuses them. Empty: not recorded.
  std::string model_digest;
  // Called after RunSourceTraining writes a task's adapter (the task's
  // name), before the next task ends; its error fails the call. RunPipeline
  // records the settings of each finished adapter with it, so that a run
  // stopped in a later task leaves the earlier ones reusable. Unset: none.
  std::function<absl::Status(const std::string& task)> source_adapter_written;
};

struct TaskOutcome {
  std::string task;
  std::string adapter;   // folder written
  NamedValues metrics;   // of the kept prompt; empty without eval data
  TrainResult train;
};

// The per-batch losses of the stages, for PromptTrainer (also used by the
// benchmarks). The model and prompts are borrowed and must outlive the
// function.
//
// L_PLM with `prompt` laid out as PEFT lays out a prompt of its kind.
StepFunction MakePlmStep(const PromptedLanguageModel& model, const PromptLayout& layout,
                         const SoftPrompt* prompt);

// L_PLM of a pack (packed_trainer.h): row i of a batch carries the prompt
// of member batch.task_ids[i]; `prompts[m]` is member m's prompt (all of one
// kind and shape; a multitask prompt contributes its task 0). Each member's
// summed token loss is divided by its own global target tokens; the parts
// of member m are {"loss", that quotient}.
PackedStepFunction MakePackedPlmStep(const PromptedLanguageModel& model, const PromptLayout& layout,
                                     std::vector<const SoftPrompt*> prompts);

struct DistillationLoss {
  double lambda = 0.9;       // weight of L_KL + L_hidden; 0: L_PLM alone
  double temperature = 1.0;  // tau of L_KL
  bool use_kl = true;        // false: drop L_KL (the "hidden" ablation)
  bool use_hidden = true;    // false: drop L_hidden (the "kl" ablation)
  // Bytes of teacher outputs kept across steps (teacher_cache.h); 0: the
  // teachers run at every step. Default 1 GiB.
  int64_t teacher_cache_bytes = int64_t{1} << 30;
  // Optional: the cache to use instead of a new one of teacher_cache_bytes
  // (to share it or read its counters).
  std::shared_ptr<TeacherCache> teacher_cache;
};

// L_PLM(student) + lambda * (L_KL + L_hidden) against the frozen teachers
// (either distillation term may be switched off):
// `teacher_table` [K, T, d] holds teacher k's prompt, on the model's device.
// Logs "loss", "plm", "kl" and "hidden".
StepFunction MakeDistillationStep(const PromptedLanguageModel& model, const mpt::v1::PromptSpec& prompt_spec,
                                  const SoftPrompt* student, const at::Tensor& teacher_table,
                                  const DistillationLoss& options);

// Stage 1. For each source task: a plain prompt (RANDOM, TEXT, SAMPLE_VOCAB
// or ADAPTERS init: the mean of spec.init_adapters' prompts),
// trained with L_PLM, written to `<out_dir>/<task>`. Only tasks in
// `only_tasks` run when it is non-empty (a worker given one task). With
// spec.tasks_per_pass > 1 the tasks train in packs of up to that many
// (PackedPromptTrainer); each ends as its separate run would, up to fp32
// summation order. A pack of one task (a worker given one source task) runs
// as without packing. A pack keeps each task's checkpoint in
// `<env.checkpoint_dir>/<task>` when env.checkpoint_dir is set and the pack
// has more than one task, else where a separate run keeps it. Without
// tasks_per_pass and with env.lanes > 1 (and env.checkpoint_dir empty) the
// tasks train side by side in lanes; the first task's error (in spec order)
// stops the others and is returned.
absl::StatusOr<std::vector<TaskOutcome>> RunSourceTraining(
    const StageEnv& env, const mpt::v1::PromptSpec& prompt,
    const mpt::v1::SourceTrainingSpec& spec, const std::string& out_dir,
    const std::vector<std::string>& only_tasks = {});

// One source task of a pack that may mix jobs: the worker daemon's pack of
// source-stage assignments (Assignment.packed). Pointers are borrowed.
struct SourcePackTask {
  // The task's job's settings, defaults applied. Every task of a pack must
  // have the same prompt shape (num_virtual_tokens,
  // num_transformer_submodules); train settings may differ.
  mpt::v1::PromptSpec prompt;
  mpt::v1::SourceTrainingSpec source;
  // The task, one of source.tasks by name.
  std::string task;
  // The adapter goes to `<out_dir>/<task>`.
  std::string out_dir;
  // Where its checkpoint is kept and resumed from; empty: none.
  std::string checkpoint_dir;
  // Its progress; null: none.
  ProgressSink* sink = nullptr;
  // True stops this task alone; may be empty.
  std::function<bool()> cancelled;
  // Called once with the task's result as soon as it is known (the adapter
  // written), while other tasks of the pack may still train; the result is
  // also returned by RunSourcePack. May be empty.
  std::function<void(const absl::StatusOr<TaskOutcome>&)> on_end;
};

// Stage 1 for source tasks of one or several jobs in one pass over
// env.model (PackedPromptTrainer), or, with env.lanes > 1 on a CPU, side by
// side in lanes, each task alone on one thread. Each task trains exactly as
// RunSourceTraining trains it alone with only_tasks = {task}: the same data,
// initial prompt (seeded by its position in its spec), batches, fingerprint
// and checkpoint format, so a checkpoint of a separate run resumes in a pack
// and back; the result equals the separate run's up to fp32 summation order
// (a pack that ends up with one task trains it exactly as alone). Returns
// one result per task, in order, never failing as a whole:
// - a task whose data cannot be loaded, that its spec does not have, or
//   whose prompt shape differs from the first trainable task's fails alone
//   with that error (INVALID_ARGUMENT, NOT_FOUND, ...) before training;
// - a task cancelled on its own is CANCELLED (its checkpoint stays);
// - an error of the pass itself (or env.cancelled) is every trained task's.
// env.checkpoint_dir is not used (each task names its own). Each task's
// on_end sees its result the moment it is known. In lanes the tasks' sinks
// and cancel functions and env.cancelled are called under one lock, and
// on_end calls under another, so none of them needs to be thread-safe.
std::vector<absl::StatusOr<TaskOutcome>> RunSourcePack(const StageEnv& env,
                                                       const std::vector<SourcePackTask>& tasks);

// Stage 2. `teachers[k]` is the adapter folder of spec.tasks(k). Writes a
// MULTITASK_PROMPT_TUNING adapter with num_tasks = K and the task names to
// `out_dir`. INVALID_ARGUMENT when a teacher does not fit the prompt spec or
// the model.
absl::StatusOr<TaskOutcome> RunDistillation(const StageEnv& env,
                                            const mpt::v1::PromptSpec& prompt,
                                            const mpt::v1::DistillationSpec& spec,
                                            const std::vector<std::string>& teachers,
                                            const std::string& out_dir);

// Stage 3. Starts from the multitask adapter in `source_adapter` with the
// spec's init mode (with init TEACHER_MEAN: from the mean of
// spec.teacher_adapters, U = V = 1; `source_adapter` is not read). With spec.shared, one adapter (num_tasks = number of
// targets) at `<out_dir>/shared`; otherwise one per task at
// `<out_dir>/<task>`.
absl::StatusOr<std::vector<TaskOutcome>> RunTargetAdaptation(
    const StageEnv& env, const mpt::v1::PromptSpec& prompt,
    const mpt::v1::TargetAdaptationSpec& spec, const std::string& source_adapter,
    const std::string& out_dir);

// The baselines a newcomer compares MPT with, per target task: the metrics
// of an untrained random prompt and of plain prompt tuning from a random
// init at the same step budget as the target stage. Writes the plain
// adapters to `<out_dir>/<task>`.
struct BaselineOutcome {
  std::string task;
  NamedValues random_prompt;
  TaskOutcome prompt_tuning;
};
absl::StatusOr<std::vector<BaselineOutcome>> RunTargetBaselines(
    const StageEnv& env, const mpt::v1::PromptSpec& prompt,
    const mpt::v1::TargetAdaptationSpec& spec, const std::string& out_dir);

// The whole pipeline in one process: source, distillation, target, under
// `out_dir/{source,distillation,target}`. A stage whose adapters are already
// complete in `out_dir` is not run again, so a pipeline killed and started
// again with the same folders goes on where it stopped.
struct PipelineOutcome {
  std::vector<TaskOutcome> source;
  TaskOutcome distillation;
  std::vector<TaskOutcome> target;
};
absl::StatusOr<PipelineOutcome> RunPipeline(const StageEnv& env,
                                            const mpt::v1::PipelineSpec& spec,
                                            const std::string& out_dir);

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_MPT_STAGES_H_
