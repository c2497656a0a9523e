#include "worker/training/packed_trainer.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <utility>

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

}  // namespace

// What one member carries from step to step: PromptTrainer's RunState plus
// its own update, schedule, policy and logging window.
struct PackedPromptTrainer::MemberState {
  std::unique_ptr<UpdateStep> update;
  LrSchedule schedule;
  TrainPolicy policy;
  int64_t step = 0;  // steps done
  double best_score = -INFINITY;
  int64_t best_step = -1;
  NamedValues best_metrics;
  std::map<std::string, at::Tensor> best;
  NamedValues initial_metrics;
  TrainResult result;
  bool finished = false;
  // Logging window.
  LengthBuckets buckets;  // off unless train.length_bucket_batches >= 2
  NamedValues window_sums;
  int window_steps = 0;
  double window_tokens = 0;
  double window_flops = 0;  // its rows' share of the pack's step FLOPs
  Clock::time_point window_start;
  EtaEstimator eta;
  double lr = 0;
};

PackedPromptTrainer::PackedPromptTrainer(std::string stage, std::vector<PackMember> members,
                                         int pad_id, Communicator* comm, ProgressSink* sink,
                                         std::function<bool()> cancelled)
    : stage_(std::move(stage)),
      members_(std::move(members)),
      pad_id_(pad_id),
      comm_(comm),
      sink_(sink),
      cancelled_(std::move(cancelled)) {}

void PackedPromptTrainer::Emit(const PackMember& member, ProgressKind kind, int64_t step,
                               NamedValues losses, NamedValues metrics, double lr,
                               double tokens_per_second, double elapsed, double eta,
                               std::string message, double flops_per_step,
                               double flops_per_second) const {
  ProgressSink* sink = member.sink != nullptr ? member.sink : sink_;
  if (sink == nullptr || comm_->rank() != 0) return;
  ProgressEvent e;
  e.stage = stage_;
  e.task = member.task;
  e.kind = kind;
  e.step = step;
  e.total_steps = member.train.steps();
  e.losses = std::move(losses);
  e.metrics = std::move(metrics);
  e.learning_rate = lr;
  e.tokens_per_second = tokens_per_second;
  e.model_flops_per_step = flops_per_step;
  e.model_flops_per_second = flops_per_second;
  e.elapsed_seconds = elapsed;
  e.eta_seconds = eta;
  e.message = std::move(message);
  sink->OnEvent(e);
}

absl::StatusOr<std::vector<TrainResult>> PackedPromptTrainer::Run(const PackedStepFunction& step) {
  FlushDenormalsScope flush_denormals;  // the loop's steps and evaluations
  try {
    auto result = RunImpl(step);
    if (!result.ok() && !absl::IsCancelled(result.status())) {
      for (const PackMember& m : members_) {
        Emit(m, ProgressKind::kFailed, 0, {}, {}, 0, 0, 0, -1,
             std::string(result.status().message()));
      }
    }
    return result;
  } catch (const c10::Error& e) {
    std::string message = e.what_without_backtrace();
    for (const PackMember& m : members_) {
      Emit(m, ProgressKind::kFailed, 0, {}, {}, 0, 0, 0, -1, message);
    }
    return absl::InternalError(absl::StrCat(stage_, ": ", message));
  }
}

absl::StatusOr<std::vector<TrainResult>> PackedPromptTrainer::RunImpl(
    const PackedStepFunction& step_fn) {
  const int k_members = static_cast<int>(members_.size());
  if (k_members == 0) return absl::InvalidArgumentError("a pack needs at least one member");
  for (int m = 0; m < k_members; ++m) {
    const PackMember& member = members_[m];
    const std::string where = absl::StrCat("pack member ", m, " (", member.task, "): ");
    if (member.prompt == nullptr || member.examples == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, "no prompt or no examples"));
    }
    if (member.train.steps() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, "train.steps: must be positive"));
    }
    if (member.train.batch_size() < comm_->world_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "train.batch_size: ", member.train.batch_size(),
                       " is smaller than the world size ", comm_->world_size()));
    }
    if (member.examples->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "train data: no examples"));
    }
    const SoftPromptConfig& c = member.prompt->config();
    const SoftPromptConfig& c0 = members_[0].prompt->config();
    if (c.kind != c0.kind || c.num_virtual_tokens != c0.num_virtual_tokens ||
        c.num_transformer_submodules != c0.num_transformer_submodules ||
        c.token_dim != c0.token_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "its prompt's kind or shape differs from member 0's"));
    }
  }

  std::vector<MemberState> states;
  states.reserve(k_members);
  const bool rank0 = comm_->rank() == 0;
  for (int m = 0; m < k_members; ++m) {
    const PackMember& member = members_[m];
    MemberState s{nullptr, LrSchedule::FromSpec(member.train),
                  TrainPolicy::FromSpec(member.train, member.log_every)};
    if (member.train.length_bucket_batches() >= 2) {
      s.buckets = MakeLengthBuckets(*member.examples, member.train.length_bucket_batches());
    }
    s.update = std::make_unique<UpdateStep>(member.prompt->Parameters(),
                                            member.train.optimizer(), comm_,
                                            absl::StrCat("stage ", stage_, " (task ",
                                                         member.task, ")"));
    if (CheckpointExists(member.checkpoint_dir)) {
      CheckpointExpectations expected;
      expected.fingerprint = member.fingerprint;
      expected.total_steps = member.train.steps();
      expected.prompt = member.prompt->StateDict();
      expected.parameters = s.update->params();
      absl::StatusOr<CheckpointContents> loaded = ReadCheckpoint(member.checkpoint_dir, expected);
      if (absl::IsFailedPrecondition(loaded.status())) {
        MPT_LOG(WARNING) << loaded.status().message() << "; starting over";
      } else if (!loaded.ok()) {
        return loaded.status();
      } else {
        RETURN_IF_ERROR(member.prompt->AssignState(loaded->prompt, member.checkpoint_dir));
        RETURN_IF_ERROR(s.update->ImportState(loaded->adamw));
        s.step = loaded->step;
        s.best_score = loaded->best_score;
        s.best_step = loaded->best_step;
        s.best_metrics = std::move(loaded->best_metrics);
        s.best = std::move(loaded->best);
        s.result.resumed_from_step = s.step;
        MPT_LOG(INFO) << stage_ << " " << member.task << ": resuming at step " << s.step
                      << " from " << member.checkpoint_dir;
      }
    }
    states.push_back(std::move(s));
  }

  const auto start = Clock::now();
  auto evaluate = [&](int m, int64_t step) -> absl::Status {
    const PackMember& member = members_[m];
    MemberState& s = states[m];
    if (!member.eval || !rank0) return absl::OkStatus();
    ASSIGN_OR_RETURN(NamedValues metrics, member.eval());
    Emit(member, ProgressKind::kEval, step, {}, metrics, 0, 0, Seconds(start), -1, "");
    if (!metrics.empty() && metrics[0].second > s.best_score) {
      s.best_score = metrics[0].second;
      s.best_step = step;
      s.best_metrics = metrics;
      if (member.keep_best) s.best = member.prompt->CloneState();
    }
    return absl::OkStatus();
  };
  auto checkpoint = [&](int m, int64_t step) -> absl::Status {
    const PackMember& member = members_[m];
    MemberState& s = states[m];
    // Every rank checks (they hold the same prompts): a diverged prompt is
    // neither saved nor, at the end, the member's result.
    RETURN_IF_ERROR(s.update->CheckParametersFinite(step));
    if (!rank0 || member.checkpoint_dir.empty()) return absl::OkStatus();
    CheckpointContents contents;
    contents.fingerprint = member.fingerprint;
    contents.step = step;
    contents.prompt = member.prompt->StateDict();
    contents.adamw = s.update->ExportState();
    contents.best_score = s.best_score;
    contents.best_step = s.best_step;
    contents.best_metrics = s.best_metrics;
    contents.best = s.best;
    RETURN_IF_ERROR(WriteCheckpoint(member.checkpoint_dir, contents));
    Emit(member, ProgressKind::kCheckpoint, step, {}, {}, 0, 0, Seconds(start), -1,
         member.checkpoint_dir);
    return absl::OkStatus();
  };
  // The end of a member, as PromptTrainer ends a run: evaluated and saved
  // whatever the period, after the best prompt has been put back.
  auto finish = [&](int m) -> absl::Status {
    const PackMember& member = members_[m];
    MemberState& s = states[m];
    const int64_t total = member.train.steps();
    RETURN_IF_ERROR(evaluate(m, total));
    if (member.keep_best && !s.best.empty() && s.best_step != total) {
      RETURN_IF_ERROR(member.prompt->AssignState(s.best, "best prompt"));
    }
    RETURN_IF_ERROR(checkpoint(m, total));
    s.finished = true;
    s.result.steps = total;
    s.result.best_step = s.best_step;
    s.result.metrics = s.best_metrics;
    s.result.metrics.insert(s.result.metrics.end(), s.initial_metrics.begin(),
                            s.initial_metrics.end());
    s.result.seconds = Seconds(start);
    Emit(member, ProgressKind::kFinished, total, s.result.final_losses, s.result.metrics, 0, 0,
         s.result.seconds, 0, "");
    if (member.on_end) member.on_end(s.result);
    return absl::OkStatus();
  };

  int64_t first_step = INT64_MAX, last_step = 0;
  for (int m = 0; m < k_members; ++m) {
    const PackMember& member = members_[m];
    MemberState& s = states[m];
    Emit(member, ProgressKind::kStarted, s.step, {}, {}, 0, 0, 0, -1,
         s.step > 0 ? absl::StrCat("resumed at step ", s.step) : "");
    s.window_start = Clock::now();
    if (member.train.eval_before_training() && member.eval && rank0 && s.step == 0) {
      ASSIGN_OR_RETURN(NamedValues metrics, member.eval());
      for (const auto& [name, value] : metrics) {
        s.initial_metrics.emplace_back("initial/" + name, value);
      }
      Emit(member, ProgressKind::kEval, 0, {}, s.initial_metrics, 0, 0, Seconds(start), -1,
           "before training");
    }
    // A member resumed from its final checkpoint only ends again.
    if (s.step >= member.train.steps()) {
      RETURN_IF_ERROR(finish(m));
      continue;
    }
    first_step = std::min(first_step, s.step);
    last_step = std::max<int64_t>(last_step, member.train.steps());
  }

  std::vector<int> active;
  std::vector<const TokenizedExample*> rows;
  std::vector<int64_t> row_members;
  for (int64_t step = first_step; step < last_step; ++step) {
    const bool stop_requested = cancelled_ && cancelled_();
    active.clear();
    rows.clear();
    row_members.clear();
    // Each active member's rows, as its separate run shards them; then
    // each member's own stop flag; then the pack's.
    std::vector<double> counts(3 * k_members + 1, 0.0);
    for (int m = 0; m < k_members; ++m) {
      const PackMember& member = members_[m];
      if (states[m].finished || states[m].step > step) continue;
      active.push_back(m);
      if (member.cancelled && member.cancelled()) counts[2 * k_members + m] = 1.0;
      const std::vector<int> sizes{static_cast<int>(member.examples->size())};
      for (const ExampleRef& r :
           ShardForRank(SampleBatch(member.train.seed(), step, member.train.batch_size(), sizes,
                                    TaskSampling::kProportional, &states[m].buckets),
                        comm_->rank(), comm_->world_size())) {
        const TokenizedExample& e = (*member.examples)[r.index];
        rows.push_back(&e);
        row_members.push_back(m);
        counts[2 * m] += static_cast<double>(e.target_ids.size());
        counts[2 * m + 1] += static_cast<double>(e.input_ids.size());
      }
    }
    if (active.empty()) break;  // every member left on its own
    counts.back() = stop_requested ? 1.0 : 0.0;
    Batch batch = Collate(rows, pad_id_);
    batch.task_ids = at::tensor(row_members, at::kLong);

    // One all-reduce: every member's global token counts and the stop flag.
    const at::TensorOptions reduce_options =
        at::TensorOptions().dtype(at::kDouble).device(states[0].update->params()[0].device());
    std::vector<at::Tensor> reduce{at::tensor(counts, reduce_options)};
    RETURN_IF_ERROR(comm_->AllReduceSum(reduce));
    const at::Tensor summed = reduce[0].to(at::kCPU).contiguous();
    const double* c = summed.data_ptr<double>();
    if (c[3 * k_members] > 0) {
      return absl::CancelledError(absl::StrCat(stage_, ": cancelled at step ", step));
    }
    std::vector<double> global_targets(k_members, 0.0);
    for (int m : active) global_targets[m] = c[2 * m];
    // Members cancelled on their own leave now: their rows still ride this
    // step's passes (every rank chose them before it knew), but their
    // prompts are not updated.
    for (auto it = active.begin(); it != active.end();) {
      if (c[2 * k_members + *it] > 0) {
        MemberState& s = states[*it];
        s.finished = true;
        s.result.cancelled = true;
        s.result.steps = s.step;
        s.result.seconds = Seconds(start);
        MPT_LOG(INFO) << stage_ << " " << members_[*it].task << ": cancelled at step " << s.step
                      << "; leaves the pack";
        if (members_[*it].on_end) members_[*it].on_end(s.result);
        it = active.erase(it);
      } else {
        ++it;
      }
    }

    for (int m : active) {
      MemberState& s = states[m];
      s.lr = s.schedule.At(step);
      s.update->Begin(s.lr);
    }
    ASSIGN_OR_RETURN(PackedStepLoss loss, step_fn(batch, global_targets));
    if (static_cast<int>(loss.parts.size()) != k_members) {
      return absl::InternalError("the packed step function returned parts for another pack size");
    }
    loss.objective.backward();
    for (int m : active) {
      const PackMember& member = members_[m];
      MemberState& s = states[m];
      std::vector<double> local_parts;
      for (const auto& part : loss.parts[m]) local_parts.push_back(part.second);
      ASSIGN_OR_RETURN(std::vector<double> parts, s.update->Finish(local_parts, step + 1));
      if (s.window_sums.empty()) {
        for (const auto& part : loss.parts[m]) s.window_sums.emplace_back(part.first, 0.0);
      }
      for (size_t i = 0; i < s.window_sums.size() && i < parts.size(); ++i) {
        s.window_sums[i].second += parts[i];
      }
      ++s.window_steps;
      s.window_tokens += c[2 * m] + c[2 * m + 1];
      if (!rows.empty()) {
        const double own = static_cast<double>(
            std::count(row_members.begin(), row_members.end(), static_cast<int64_t>(m)));
        s.window_flops += loss.flops * own / static_cast<double>(rows.size());
      }

      const int64_t done = step + 1;
      s.step = done;
      const double elapsed = Seconds(start);
      s.eta.Observe(done, elapsed);
      const StepActions actions = s.policy.After(done);
      if (actions.log) {
        NamedValues mean = s.window_sums;
        for (auto& [name, v] : mean) v /= s.window_steps;
        const double window_seconds = std::max(1e-9, Seconds(s.window_start));
        const double tps = s.window_tokens / window_seconds;
        Emit(member, ProgressKind::kStep, done, mean, {}, s.lr, tps, elapsed,
             s.eta.EtaSeconds(member.train.steps()), "", s.window_flops / s.window_steps,
             s.window_flops / window_seconds);
        s.result.final_losses = mean;
        s.window_sums.clear();
        s.window_steps = 0;
        s.window_tokens = 0;
        s.window_flops = 0;
        s.window_start = Clock::now();
      }
      if (actions.evaluate) RETURN_IF_ERROR(evaluate(m, done));
      if (actions.save) RETURN_IF_ERROR(checkpoint(m, done));
      if (done == member.train.steps()) RETURN_IF_ERROR(finish(m));
    }
  }

  std::vector<TrainResult> results;
  for (MemberState& s : states) results.push_back(std::move(s.result));
  return results;
}

}  // namespace mpt
