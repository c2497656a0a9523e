#include "worker/training/prompt_trainer.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/model/denormals.h"
#include "worker/training/checkpoint.h"
#include "worker/training/lr_schedule.h"
#include "worker/training/train_policy.h"
#include "worker/training/update_step.h"

namespace mpt {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// What a run carries from step to step and keeps in its checkpoints.
struct RunState {
  int64_t step = 0;
  double best_score = -INFINITY;
  int64_t best_step = -1;
  NamedValues best_metrics;
  std::map<std::string, at::Tensor> best;  // empty: none kept
};

}  // namespace

PromptTrainer::PromptTrainer(TrainerOptions options, SoftPrompt* prompt,
                             const std::vector<std::vector<TokenizedExample>>* train_sets,
                             int pad_id, Communicator* comm, ProgressSink* sink,
                             std::function<bool()> cancelled)
    : options_(std::move(options)),
      prompt_(prompt),
      train_sets_(train_sets),
      pad_id_(pad_id),
      comm_(comm),
      sink_(sink),
      cancelled_(std::move(cancelled)) {}

double PromptTrainer::LearningRate(const mpt::v1::TrainSpec& train, int64_t step) {
  return LrSchedule::FromSpec(train).At(step);
}

void PromptTrainer::Emit(ProgressKind kind, int64_t step, NamedValues losses,
                         NamedValues metrics, double lr, double tokens_per_second,
                         double elapsed, double eta, std::string message,
                         double flops_per_step, double flops_per_second) const {
  if (sink_ == nullptr || comm_->rank() != 0) return;
  ProgressEvent e;
  e.stage = options_.stage;
  e.task = options_.task;
  e.kind = kind;
  e.step = step;
  e.total_steps = options_.train.steps();
  e.losses = std::move(losses);
  e.metrics = std::move(metrics);
  e.learning_rate = lr;
  e.tokens_per_second = tokens_per_second;
  e.model_flops_per_step = flops_per_step;
  e.model_flops_per_second = flops_per_second;
  e.elapsed_seconds = elapsed;
  e.eta_seconds = eta;
  e.message = std::move(message);
  sink_->OnEvent(e);
}

absl::StatusOr<TrainResult> PromptTrainer::Run(const StepFunction& step, const EvalFunction& eval) {
  FlushDenormalsScope flush_denormals;  // the loop's steps and evaluations
  try {
    auto result = RunImpl(step, eval);
    if (!result.ok() && !absl::IsCancelled(result.status())) {
      Emit(ProgressKind::kFailed, 0, {}, {}, 0, 0, 0, -1, std::string(result.status().message()));
    }
    return result;
  } catch (const c10::Error& e) {
    std::string message = e.what_without_backtrace();
    Emit(ProgressKind::kFailed, 0, {}, {}, 0, 0, 0, -1, message);
    return absl::InternalError(absl::StrCat(options_.stage, ": ", message));
  }
}

absl::StatusOr<TrainResult> PromptTrainer::RunImpl(const StepFunction& step_fn,
                                                   const EvalFunction& eval_fn) {
  const mpt::v1::TrainSpec& train = options_.train;
  if (train.steps() <= 0) return absl::InvalidArgumentError("train.steps: must be positive");
  if (train.batch_size() < comm_->world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.batch_size: ", train.batch_size(), " is smaller than the world size ",
        comm_->world_size()));
  }
  std::vector<int> sizes;
  for (const auto& set : *train_sets_) {
    if (set.empty()) return absl::InvalidArgumentError("train data: a task has no examples");
    sizes.push_back(static_cast<int>(set.size()));
  }
  const LengthBuckets buckets = train.length_bucket_batches() >= 2
                                    ? MakeLengthBuckets(*train_sets_, train.length_bucket_batches())
                                    : LengthBuckets{};
  const std::string& dir = options_.checkpoint_dir;
  const bool writes = comm_->rank() == 0 && !dir.empty();
  UpdateStep update(prompt_->Parameters(), train.optimizer(), comm_,
                    absl::StrCat("stage ", options_.stage,
                                 options_.task.empty() ? "" : absl::StrCat(" (task ", options_.task, ")")));
  const LrSchedule schedule = LrSchedule::FromSpec(train);
  const TrainPolicy policy = TrainPolicy::FromSpec(train, options_.log_every);

  RunState state;
  TrainResult result;
  if (CheckpointExists(dir)) {
    CheckpointExpectations expected;
    expected.fingerprint = options_.fingerprint;
    expected.total_steps = train.steps();
    expected.prompt = prompt_->StateDict();
    expected.parameters = update.params();
    absl::StatusOr<CheckpointContents> loaded = ReadCheckpoint(dir, expected);
    if (absl::IsFailedPrecondition(loaded.status())) {
      MPT_LOG(WARNING) << loaded.status().message() << "; starting over";
    } else if (!loaded.ok()) {
      return loaded.status();
    } else {
      RETURN_IF_ERROR(prompt_->AssignState(loaded->prompt, dir));
      RETURN_IF_ERROR(update.ImportState(loaded->adamw));
      state.step = loaded->step;
      state.best_score = loaded->best_score;
      state.best_step = loaded->best_step;
      state.best_metrics = std::move(loaded->best_metrics);
      state.best = std::move(loaded->best);
      result.resumed_from_step = state.step;
      MPT_LOG(INFO) << options_.stage << " " << options_.task << ": resuming at step "
                    << state.step << " from " << dir;
    }
  }

  const auto start = Clock::now();
  Emit(ProgressKind::kStarted, state.step, {}, {}, 0, 0, 0, -1,
       state.step > 0 ? absl::StrCat("resumed at step ", state.step) : "");
  EtaEstimator eta;
  double window_tokens = 0;
  double window_flops = 0;
  auto window_start = Clock::now();
  NamedValues window_sums;
  int window_steps = 0;

  auto evaluate = [&](int64_t step) -> absl::Status {
    if (!eval_fn || comm_->rank() != 0) return absl::OkStatus();
    ASSIGN_OR_RETURN(NamedValues metrics, eval_fn());
    Emit(ProgressKind::kEval, step, {}, metrics, 0, 0, Seconds(start), -1, "");
    if (!metrics.empty() && metrics[0].second > state.best_score) {
      state.best_score = metrics[0].second;
      state.best_step = step;
      state.best_metrics = metrics;
      if (options_.keep_best) state.best = prompt_->CloneState();
    }
    return absl::OkStatus();
  };
  auto checkpoint = [&](int64_t step) -> absl::Status {
    // Every rank checks (they hold the same prompt): a diverged prompt is
    // neither saved nor, at the end, the stage's result.
    RETURN_IF_ERROR(update.CheckParametersFinite(step));
    if (!writes) return absl::OkStatus();
    state.step = step;
    CheckpointContents contents;
    contents.fingerprint = options_.fingerprint;
    contents.step = step;
    contents.prompt = prompt_->StateDict();
    contents.adamw = update.ExportState();
    contents.best_score = state.best_score;
    contents.best_step = state.best_step;
    contents.best_metrics = state.best_metrics;
    contents.best = state.best;
    RETURN_IF_ERROR(WriteCheckpoint(dir, contents));
    Emit(ProgressKind::kCheckpoint, step, {}, {}, 0, 0, Seconds(start), -1, dir);
    return absl::OkStatus();
  };

  NamedValues initial_metrics;
  if (train.eval_before_training() && eval_fn && comm_->rank() == 0 && state.step == 0) {
    ASSIGN_OR_RETURN(NamedValues metrics, eval_fn());
    for (const auto& [name, value] : metrics) initial_metrics.emplace_back("initial/" + name, value);
    Emit(ProgressKind::kEval, 0, {}, initial_metrics, 0, 0, Seconds(start), -1, "before training");
  }

  for (int64_t step = state.step; step < train.steps(); ++step) {
    // Polled once per step on every rank; the answer travels in the step's
    // first all-reduce so that the whole gang stops before the same step.
    const bool stop_requested = cancelled_ && cancelled_();
    std::vector<ExampleRef> refs = ShardForRank(
        SampleBatch(train.seed(), step, train.batch_size(), sizes, options_.sampling, &buckets),
        comm_->rank(), comm_->world_size());
    std::vector<const TokenizedExample*> examples;
    examples.reserve(refs.size());
    for (const ExampleRef& r : refs) examples.push_back(&(*train_sets_)[r.task][r.index]);
    Batch batch = Collate(examples, pad_id_);

    ASSIGN_OR_RETURN(StepAgreement agreed,
                     update.Agree(batch.target_tokens, batch.input_tokens, stop_requested));
    if (agreed.stop) {
      return absl::CancelledError(absl::StrCat(options_.stage, ": cancelled at step ", step));
    }
    const double lr = schedule.At(step);
    update.Begin(lr);
    ASSIGN_OR_RETURN(StepLoss loss, step_fn(batch, agreed.target_tokens));
    loss.objective.backward();
    std::vector<double> local_parts;
    for (const auto& part : loss.parts) local_parts.push_back(part.second);
    ASSIGN_OR_RETURN(std::vector<double> parts, update.Finish(local_parts, step + 1));

    if (window_sums.empty()) {
      for (const auto& part : loss.parts) window_sums.emplace_back(part.first, 0.0);
    }
    for (size_t i = 0; i < window_sums.size(); ++i) window_sums[i].second += parts[i];
    ++window_steps;
    window_tokens += agreed.target_tokens + agreed.input_tokens;
    window_flops += loss.flops * options_.flops_scale;

    const int64_t done = step + 1;
    const double elapsed = Seconds(start);
    eta.Observe(done, elapsed);
    const StepActions actions = policy.After(done);
    if (actions.log) {
      NamedValues mean = window_sums;
      for (auto& [name, v] : mean) v /= window_steps;
      const double window_seconds = std::max(1e-9, Seconds(window_start));
      const double tps = window_tokens / window_seconds;
      Emit(ProgressKind::kStep, done, mean, {}, lr, tps, elapsed, eta.EtaSeconds(train.steps()), "",
           window_flops / window_steps, window_flops / window_seconds);
      result.final_losses = mean;
      window_sums.clear();
      window_steps = 0;
      window_tokens = 0;
      window_flops = 0;
      window_start = Clock::now();
    }
    if (actions.evaluate) RETURN_IF_ERROR(evaluate(done));
    if (actions.save) RETURN_IF_ERROR(checkpoint(done));
  }
  // The end is evaluated and saved whatever the period, after the best
  // prompt has been put back.
  RETURN_IF_ERROR(evaluate(train.steps()));
  if (options_.keep_best && !state.best.empty() && state.best_step != train.steps()) {
    RETURN_IF_ERROR(prompt_->AssignState(state.best, "best prompt"));
  }
  RETURN_IF_ERROR(checkpoint(train.steps()));

  result.steps = train.steps();
  result.best_step = state.best_step;
  result.metrics = state.best_metrics;
  result.metrics.insert(result.metrics.end(), initial_metrics.begin(), initial_metrics.end());
  result.seconds = Seconds(start);
  Emit(ProgressKind::kFinished, train.steps(), result.final_losses, result.metrics, 0, 0,
       result.seconds, 0, "");
  return result;
}

}  // namespace mpt
