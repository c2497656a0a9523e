// The training loop shared by the three MPT stages.
//
// A stage supplies what differs (how a batch becomes a loss, how the prompt
// is evaluated); the trainer owns what is the same and wires the pieces:
//   batches       deterministic per (seed, step), sharded over ranks
//                 (worker/data/batching.h)
//   update        gradient all-reduce, clipping and AdamW (update_step.h)
//   learning rate warm-up and decay, a function of the step (lr_schedule.h)
//   policy        when to log, evaluate and save (train_policy.h)
//   checkpoints   the folder format, read back with every field checked
//                 (checkpoint.h)
// plus the best prompt kept by evaluation score, cancellation and progress
// events.
//
// Resume: with a checkpoint folder, rank 0 writes the prompt, the optimiser
// state and the step there every `checkpoint_every` steps; a new trainer on
// the same folder continues from that step and ends exactly where an
// uninterrupted run ends (batches depend only on seed and step).
//
// Cancellation: `cancelled` is polled once per step, at its start, on every
// rank, and the answer travels in the step's first all-reduce. When any
// rank's answer is true, every rank of the gang returns CANCELLED before
// the same step, so none is left waiting in a collective.
#ifndef MPT_WORKER_TRAINING_PROMPT_TRAINER_H_
#define MPT_WORKER_TRAINING_PROMPT_TRAINER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/mpt/v1/spec.pb.h"
#include "worker/data/batching.h"
#include "worker/collectives/communicator.h"
#include "common/progress/progress.h"
#include "worker/prompts/soft_prompt.h"

namespace mpt {

using NamedValues = std::vector<std::pair<std::string, double>>;

// The loss of one rank's share of a batch. `objective` must already be
// normalised by the global count (see losses.h), so that summing the
// gradients over ranks gives the gradient of the global mean. `parts` are
// this rank's contributions to each logged term on the same scale; they are
// summed over ranks for reporting.
struct StepLoss {
  at::Tensor objective;
  NamedValues parts;
  // Matrix-product FLOPs of this rank's step (worker/model/model_flops.h);
  // 0: not counted.
  double flops = 0;
};

// Computes a rank's loss. `global_target_tokens` is the number of real
// target tokens of the whole global batch.
using StepFunction =
    std::function<absl::StatusOr<StepLoss>(const Batch& batch, double global_target_tokens)>;

// Evaluates the current prompt; the first value is the score that decides
// the best prompt (higher is better), the rest are reported.
using EvalFunction = std::function<absl::StatusOr<NamedValues>()>;

struct TrainerOptions {
  // The stage's settings, defaults applied (see spec.proto).
  mpt::v1::TrainSpec train;
  TaskSampling sampling = TaskSampling::kProportional;
  // For progress events.
  std::string stage;
  std::string task;
  // Where checkpoints go; empty: none are written or resumed.
  std::string checkpoint_dir;
  // Keep the prompt that scored best at evaluation rather than the last.
  bool keep_best = true;
  // Identifies the run's settings (stage, task, data, prompt shape, train
  // spec), normally SettingsFingerprint (checkpoint.h). A checkpoint written
  // under another fingerprint is not resumed from: the run starts over and
  // replaces it at its first checkpoint.
  std::string fingerprint;
  // The FLOPs reported are this rank's times this factor: the number of
  // ranks when they are threads of this process (ThreadGroup), whose work
  // this process's figures should count; 1 for a gang of processes, each of
  // which reports its own.
  double flops_scale = 1;
  // Steps per progress event (kStep, averaged over the window); < 1: the
  // default window (TrainPolicy::FromSpec). 1 reports every step.
  int64_t log_every = 0;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t resumed_from_step = 0;
  NamedValues final_losses;  // averaged over the last logging window
  NamedValues metrics;       // of the kept prompt (empty without evaluation)
  int64_t best_step = -1;
  double seconds = 0;
  double tokens_per_second = 0;
  // A pack member stopped on its own (PackMember::cancelled) before its last
  // step: `steps` is where it stopped and its prompt is not a result.
  bool cancelled = false;
};

class PromptTrainer {
 public:
  // `prompt`, `train_sets`, `comm` and `sink` must outlive the trainer.
  // `train_sets[k]` holds task k's tokenised training examples.
  // `cancelled` is polled once per step on every rank (see above); may be
  // empty. Not thread-safe; Run() is called from one thread.
  PromptTrainer(TrainerOptions options, SoftPrompt* prompt,
                const std::vector<std::vector<TokenizedExample>>* train_sets, int pad_id,
                Communicator* comm, ProgressSink* sink, std::function<bool()> cancelled);

  PromptTrainer(const PromptTrainer&) = delete;
  PromptTrainer& operator=(const PromptTrainer&) = delete;

  // Trains to options.train.steps(). CANCELLED when `cancelled` fired on
  // any rank (the last checkpoint stays); INVALID_ARGUMENT for unusable
  // settings; DATA_LOSS naming the file and field for a corrupt checkpoint
  // in the folder (one written under other settings or an older format is
  // not an error: the run starts over); the communicator's error
  // (UNAVAILABLE when a peer is gone); otherwise the step or evaluation
  // function's error. libtorch errors are returned as INTERNAL with their
  // message; nothing throws.
  absl::StatusOr<TrainResult> Run(const StepFunction& step, const EvalFunction& eval);

  // The learning rate at `step` (0-based) under the options' schedule
  // (LrSchedule::FromSpec(train).At(step)).
  static double LearningRate(const mpt::v1::TrainSpec& train, int64_t step);

 private:
  absl::StatusOr<TrainResult> RunImpl(const StepFunction& step, const EvalFunction& eval);
  void Emit(ProgressKind kind, int64_t step, NamedValues losses, NamedValues metrics,
            double lr, double tokens_per_second, double elapsed, double eta,
            std::string message, double flops_per_step = 0,
            double flops_per_second = 0) const;

  TrainerOptions options_;
  SoftPrompt* prompt_;
  const std::vector<std::vector<TokenizedExample>>* train_sets_;
  int pad_id_;
  Communicator* comm_;
  ProgressSink* sink_;
  std::function<bool()> cancelled_;
};

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_PROMPT_TRAINER_H_
