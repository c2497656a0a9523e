// Several prompts trained in one pass over a shared frozen model: a "pack".
//
// The base model is frozen, so prompts of different tasks can share its
// forward and backward passes. Each step the pack draws every member's own
// batch (exactly the batch a separate PromptTrainer run of that member would
// draw at that step: SampleBatch over the member's examples with the
// member's seed), concatenates them into one batch whose rows each carry
// their member's prompt, and runs the model once. The loss is the sum over
// members of each member's own normalised loss; since the prompts are
// disjoint, the gradient each prompt receives is the gradient of its own
// member's loss alone.
//
// Everything else stays per member, as K separate runs would have it:
//   update        its own UpdateStep: gradient all-reduce, clipping by the
//                 L2 norm of that member's prompt gradient alone
//                 (max_grad_norm of its TrainSpec), its own AdamW state and
//                 learning-rate schedule
//   policy        its own logging window, evaluation and checkpoint steps
//   evaluation    its own EvalFunction and best-prompt tracking
//   checkpoints   its own folder in PromptTrainer's format, under its own
//                 fingerprint: a member's checkpoint written by a separate
//                 run resumes in a pack and the other way round
//   progress      events carry the member's task and its own step counts
// Members may be at different steps (resumed from different checkpoints) or
// have different step counts: a member takes part in the steps it still
// has to run and leaves the pack when it is done.
//
// Results: a pack of K members ends with the prompts of K separate runs on
// the same batches, up to fp32 summation order (the model's products run
// over more rows, padding is to the longest row of the whole pack, and the
// prompt gradient is gathered from the rows by index rather than summed
// over a broadcast); tests/worker/training/packed_trainer_test.cc bounds the
// difference.
//
// Data parallel: with a communicator of W ranks every member's batch is
// sharded as PromptTrainer shards it, and the step's token counts of all
// members plus the stop flags travel in one all-reduce. Cancellation is
// polled once per step: the trainer's `cancelled` stops every member (their
// last checkpoints stay); a member's own PackMember::cancelled stops that
// member alone (its step is not applied, its TrainResult says `cancelled`)
// while the others go on.
//
// Progress goes to the member's own sink when it has one (members of
// different jobs report to different places), else to the trainer's.
//
// Not thread-safe; Run() is called from one thread.
#ifndef MPT_WORKER_TRAINING_PACKED_TRAINER_H_
#define MPT_WORKER_TRAINING_PACKED_TRAINER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/progress/progress.h"
#include "proto/mpt/v1/spec.pb.h"
#include "worker/collectives/communicator.h"
#include "worker/data/batching.h"
#include "worker/prompts/soft_prompt.h"
#include "worker/training/prompt_trainer.h"

namespace mpt {

// One task of a pack. Pointers are borrowed and must outlive the trainer.
struct PackMember {
  // The member's settings, defaults applied: steps, batch_size, seed,
  // optimizer, eval_every, checkpoint_every. Members of one pack may differ
  // in any of them.
  mpt::v1::TrainSpec train;
  // For progress events.
  std::string task;
  // The member's prompt; its parameters are trained.
  SoftPrompt* prompt = nullptr;
  // The member's tokenised training examples (one task; their task_id is
  // ignored: the trainer sets each row's pack index).
  const std::vector<TokenizedExample>* examples = nullptr;
  // Evaluates `prompt`; may be empty (then no metrics and no best prompt).
  EvalFunction eval;
  // As TrainerOptions: checkpoint folder (empty: none) and the fingerprint
  // a checkpoint must carry to be resumed from.
  std::string checkpoint_dir;
  std::string fingerprint;
  bool keep_best = true;
  // As TrainerOptions::log_every.
  int64_t log_every = 0;
  // Where this member's progress goes; null: the trainer's sink. Borrowed.
  ProgressSink* sink = nullptr;
  // Polled once per step; true stops this member alone. May be empty.
  std::function<bool()> cancelled;
  // Called once, on every rank, as soon as the member is done (its last
  // step evaluated, its best prompt back in `prompt` and checkpointed) or
  // left on its own cancel (TrainResult::cancelled), while the others may
  // still train; its result is also in Run()'s. May be empty.
  std::function<void(const TrainResult&)> on_end;
};

// The loss of one rank's share of a packed batch. `objective` is the sum
// over members m of (m's summed loss over its rows) / global_target_tokens[m];
// `parts[m]` are member m's logged terms on the same scale (summed over
// ranks for reporting).
struct PackedStepLoss {
  at::Tensor objective;
  std::vector<NamedValues> parts;
  // Matrix-product FLOPs of this rank's whole packed step; 0: not counted.
  double flops = 0;
};

// `batch.task_ids[i]` is the pack index of row i's member;
// `global_target_tokens[m]` the real target tokens of member m's whole
// global batch (0 for a member that sits the step out).
using PackedStepFunction = std::function<absl::StatusOr<PackedStepLoss>(
    const Batch& batch, const std::vector<double>& global_target_tokens)>;

class PackedPromptTrainer {
 public:
  // `comm` and `sink` must outlive the trainer; `sink` may be null.
  // `cancelled` is polled once per step (may be empty).
  PackedPromptTrainer(std::string stage, std::vector<PackMember> members, int pad_id,
                      Communicator* comm, ProgressSink* sink, std::function<bool()> cancelled);

  PackedPromptTrainer(const PackedPromptTrainer&) = delete;
  PackedPromptTrainer& operator=(const PackedPromptTrainer&) = delete;

  // Trains every member to its train.steps() (or until its own cancel).
  // Returns one TrainResult per member, in order. INVALID_ARGUMENT for no members, a member without
  // examples, steps <= 0, batch_size smaller than the world size, or prompts
  // of different shapes; DATA_LOSS for a corrupt checkpoint (naming the
  // file); CANCELLED when `cancelled` fired on any rank; the communicator's
  // or the step or evaluation function's error otherwise. libtorch errors
  // are returned as INTERNAL; nothing throws.
  absl::StatusOr<std::vector<TrainResult>> Run(const PackedStepFunction& step);

 private:
  struct MemberState;
  absl::StatusOr<std::vector<TrainResult>> RunImpl(const PackedStepFunction& step);
  void Emit(const PackMember& member, ProgressKind kind, int64_t step, NamedValues losses,
            NamedValues metrics, double lr, double tokens_per_second, double elapsed, double eta,
            std::string message, double flops_per_step = 0,
            double flops_per_second = 0) const;

  std::string stage_;
  std::vector<PackMember> members_;
  int pad_id_;
  Communicator* comm_;
  ProgressSink* sink_;
  std::function<bool()> cancelled_;
};

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_PACKED_TRAINER_H_
