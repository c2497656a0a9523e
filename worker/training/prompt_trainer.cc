#include "worker/training/prompt_trainer.h"

#include <ATen/core/grad_mode.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kPromptFile[] = "prompt.safetensors";
constexpr char kBestFile[] = "best.safetensors";
constexpr char kOptimizerFile[] = "optimizer.pt";
constexpr char kStateFile[] = "state.json";

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Copies `values` into the prompt's parameters in place, so that the
// optimiser keeps pointing at the same tensors.
absl::Status AssignPrompt(const SoftPrompt& prompt,
                          const std::map<std::string, at::Tensor>& values,
                          const std::string& source) {
  at::NoGradGuard no_grad;
  for (auto& [name, param] : prompt.StateDict()) {
    auto it = values.find(name);
    if (it == values.end() || it->second.sizes() != param.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": tensor \"", name, "\" is missing or has the wrong shape"));
    }
    param.copy_(it->second);
  }
  return absl::OkStatus();
}

std::map<std::string, at::Tensor> CloneState(const SoftPrompt& prompt) {
  std::map<std::string, at::Tensor> out;
  for (auto& [name, t] : prompt.StateDict()) out[name] = t.detach().clone();
  return out;
}

struct CheckpointState {
  std::string fingerprint;
  int64_t step = 0;
  double best_score = -INFINITY;
  int64_t best_step = -1;
  NamedValues best_metrics;
};

json ToJson(const NamedValues& values) {
  json j = json::array();
  for (const auto& [k, v] : values) j.push_back({k, v});
  return j;
}

NamedValues FromJson(const json& j) {
  NamedValues out;
  if (!j.is_array()) return out;
  for (const auto& kv : j) {
    if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_number()) {
      out.emplace_back(kv[0].get<std::string>(), kv[1].get<double>());
    }
  }
  return out;
}

absl::Status SaveCheckpoint(const std::string& dir, const SoftPrompt& prompt,
                            torch::optim::AdamW& optimizer, const CheckpointState& state,
                            const std::map<std::string, at::Tensor>& best) {
  return ReplaceFolder(dir, [&](const std::string& tmp) -> absl::Status {
    RETURN_IF_ERROR(SaveSafetensors((fs::path(tmp) / kPromptFile).string(), prompt.StateDict()));
    if (!best.empty()) {
      RETURN_IF_ERROR(SaveSafetensors((fs::path(tmp) / kBestFile).string(), best));
    }
    try {
      torch::serialize::OutputArchive archive;
      optimizer.save(archive);
      archive.save_to((fs::path(tmp) / kOptimizerFile).string());
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat(dir, ": saving the optimiser: ", e.what_without_backtrace()));
    }
    json j = {{"fingerprint", state.fingerprint},
              {"step", state.step},
              {"best_step", state.best_step},
              {"best_score", std::isfinite(state.best_score) ? json(state.best_score) : json(nullptr)},
              {"best_metrics", ToJson(state.best_metrics)}};
    return WriteFileAtomically((fs::path(tmp) / kStateFile).string(), j.dump(2));
  });
}

// Loads a checkpoint into the prompt and optimiser. NOT_FOUND when `dir`
// holds none.
absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& dir, const SoftPrompt& prompt,
                                               torch::optim::AdamW& optimizer,
                                               const std::string& fingerprint,
                                               std::map<std::string, at::Tensor>* best) {
  const std::string state_path = (fs::path(dir) / kStateFile).string();
  ASSIGN_OR_RETURN(std::string text, ReadFile(state_path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(state_path, ": not a checkpoint state"));
  }
  CheckpointState state;
  state.fingerprint = j.value("fingerprint", std::string());
  state.step = j["step"].get<int64_t>();
  state.best_step = j.value("best_step", int64_t{-1});
  if (j.contains("best_score") && j["best_score"].is_number()) {
    state.best_score = j["best_score"].get<double>();
  }
  if (j.contains("best_metrics")) state.best_metrics = FromJson(j["best_metrics"]);
  if (state.fingerprint != fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, ": the checkpoint was written by a run with other settings"));
  }
  const std::string prompt_path = (fs::path(dir) / kPromptFile).string();
  ASSIGN_OR_RETURN(auto values, LoadSafetensors(prompt_path));
  RETURN_IF_ERROR(AssignPrompt(prompt, values, prompt_path));
  const std::string best_path = (fs::path(dir) / kBestFile).string();
  if (fs::exists(best_path)) {
    ASSIGN_OR_RETURN(*best, LoadSafetensors(best_path));
  }
  try {
    torch::serialize::InputArchive archive;
    archive.load_from((fs::path(dir) / kOptimizerFile).string());
    optimizer.load(archive);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": the optimiser state does not load: ", e.what_without_backtrace()));
  }
  return state;
}

// Scales the gradients so that their global L2 norm is at most `max_norm`.
void ClipGradNorm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm().to(at::kDouble));
  }
  if (norms.empty()) return;
  const double total = at::stack(norms).norm().item<double>();
  const double scale = max_norm / (total + 1e-6);
  if (scale >= 1.0) return;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) p.grad().mul_(scale);
  }
}

void SetLearningRate(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

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
  const double base = train.optimizer().learning_rate();
  const int64_t total = train.steps();
  const int64_t warmup = train.optimizer().warmup_steps();
  if (step < warmup) return base * static_cast<double>(step) / static_cast<double>(warmup);
  const std::string& schedule = train.optimizer().schedule();
  if (schedule == "constant") return base;
  const double progress = static_cast<double>(step - warmup) /
                          static_cast<double>(std::max<int64_t>(1, total - warmup));
  if (schedule == "cosine") return base * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return base * std::max(0.0, 1.0 - progress);  // linear
}

void PromptTrainer::Emit(ProgressKind kind, int64_t step, NamedValues losses,
                         NamedValues metrics, double lr, double tokens_per_second,
                         double elapsed, double eta, std::string message) const {
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
  e.elapsed_seconds = elapsed;
  e.eta_seconds = eta;
  e.message = std::move(message);
  sink_->OnEvent(e);
}

absl::StatusOr<TrainResult> PromptTrainer::Run(const StepFunction& step, const EvalFunction& eval) {
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
  const bool writes = comm_->rank() == 0 && !options_.checkpoint_dir.empty();
  std::vector<at::Tensor> params = prompt_->Parameters();
  torch::optim::AdamW optimizer(
      params, torch::optim::AdamWOptions(train.optimizer().learning_rate())
                  .weight_decay(train.optimizer().weight_decay()));

  CheckpointState state;
  state.fingerprint = options_.fingerprint;
  std::map<std::string, at::Tensor> best;
  TrainResult result;
  if (!options_.checkpoint_dir.empty() &&
      fs::exists(fs::path(options_.checkpoint_dir) / kStateFile)) {
    auto loaded =
        LoadCheckpoint(options_.checkpoint_dir, *prompt_, optimizer, options_.fingerprint, &best);
    if (absl::IsFailedPrecondition(loaded.status())) {
      MPT_LOG(WARNING) << loaded.status().message() << "; starting over";
      best.clear();
    } else if (!loaded.ok()) {
      return loaded.status();
    } else {
      state = *loaded;
      result.resumed_from_step = state.step;
      MPT_LOG(INFO) << options_.stage << " " << options_.task << ": resuming at step "
                    << state.step << " from " << options_.checkpoint_dir;
    }
  }

  const auto start = Clock::now();
  Emit(ProgressKind::kStarted, state.step, {}, {}, 0, 0, 0, -1,
       state.step > 0 ? absl::StrCat("resumed at step ", state.step) : "");
  EtaEstimator eta;
  double window_tokens = 0;
  auto window_start = Clock::now();
  NamedValues window_sums;
  int window_steps = 0;
  const int64_t log_every = std::max<int64_t>(1, std::min<int64_t>(10, train.steps() / 50 + 1));

  auto evaluate = [&](int64_t step) -> absl::Status {
    if (!eval_fn || comm_->rank() != 0) return absl::OkStatus();
    ASSIGN_OR_RETURN(NamedValues metrics, eval_fn());
    Emit(ProgressKind::kEval, step, {}, metrics, 0, 0, Seconds(start), -1, "");
    if (!metrics.empty() && metrics[0].second > state.best_score) {
      state.best_score = metrics[0].second;
      state.best_step = step;
      state.best_metrics = metrics;
      if (options_.keep_best) best = CloneState(*prompt_);
    }
    return absl::OkStatus();
  };
  auto checkpoint = [&](int64_t step) -> absl::Status {
    if (!writes) return absl::OkStatus();
    state.step = step;
    RETURN_IF_ERROR(SaveCheckpoint(options_.checkpoint_dir, *prompt_, optimizer, state, best));
    Emit(ProgressKind::kCheckpoint, step, {}, {}, 0, 0, Seconds(start), -1,
         options_.checkpoint_dir);
    return absl::OkStatus();
  };

  NamedValues initial_metrics;
  if (train.eval_before_training() && eval_fn && comm_->rank() == 0 && state.step == 0) {
    ASSIGN_OR_RETURN(NamedValues metrics, eval_fn());
    for (const auto& [name, value] : metrics) initial_metrics.emplace_back("initial/" + name, value);
    Emit(ProgressKind::kEval, 0, {}, initial_metrics, 0, 0, Seconds(start), -1, "before training");
  }

  for (int64_t step = state.step; step < train.steps(); ++step) {
    if (cancelled_ && cancelled_()) return absl::CancelledError(absl::StrCat(options_.stage, ": cancelled at step ", step));
    std::vector<ExampleRef> refs = ShardForRank(
        SampleBatch(train.seed(), step, train.batch_size(), sizes, options_.sampling),
        comm_->rank(), comm_->world_size());
    std::vector<const TokenizedExample*> examples;
    examples.reserve(refs.size());
    for (const ExampleRef& r : refs) examples.push_back(&(*train_sets_)[r.task][r.index]);
    Batch batch = Collate(examples, pad_id_);

    std::vector<at::Tensor> counts{at::tensor(
        {static_cast<double>(batch.target_tokens), static_cast<double>(batch.input_tokens)},
        at::kDouble)};
    RETURN_IF_ERROR(comm_->AllReduceSum(counts));
    const double global_targets = counts[0][0].item<double>();
    const double global_inputs = counts[0][1].item<double>();

    const double lr = LearningRate(train, step);
    SetLearningRate(optimizer, lr);
    optimizer.zero_grad();
    ASSIGN_OR_RETURN(StepLoss loss, step_fn(batch, global_targets));
    loss.objective.backward();

    // Average gradients: each rank's objective is its share of the global
    // mean, so the sum over ranks is the gradient of the global mean. The
    // logged parts travel in the same call.
    std::vector<at::Tensor> reduce;
    for (const at::Tensor& p : params) {
      reduce.push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
    }
    std::vector<double> part_values;
    for (const auto& part : loss.parts) part_values.push_back(part.second);
    reduce.push_back(at::tensor(part_values, at::kDouble));
    RETURN_IF_ERROR(comm_->AllReduceSum(reduce));
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad().defined()) params[i].mutable_grad() = reduce[i];
    }
    const double max_norm = train.optimizer().max_grad_norm();
    if (max_norm > 0) ClipGradNorm(params, max_norm);
    optimizer.step();

    const at::Tensor& parts = reduce.back();
    if (window_sums.empty()) {
      for (const auto& part : loss.parts) window_sums.emplace_back(part.first, 0.0);
    }
    for (size_t i = 0; i < window_sums.size(); ++i) window_sums[i].second += parts[i].item<double>();
    ++window_steps;
    window_tokens += global_targets + global_inputs;

    const int64_t done = step + 1;
    const double elapsed = Seconds(start);
    eta.Observe(done, elapsed);
    if (done % log_every == 0 || done == train.steps()) {
      NamedValues mean = window_sums;
      for (auto& [name, v] : mean) v /= window_steps;
      const double tps = window_tokens / std::max(1e-9, Seconds(window_start));
      Emit(ProgressKind::kStep, done, mean, {}, lr, tps, elapsed, eta.EtaSeconds(train.steps()), "");
      result.final_losses = mean;
      window_sums.clear();
      window_steps = 0;
      window_tokens = 0;
      window_start = Clock::now();
    }
    if (train.eval_every() > 0 && done % train.eval_every() == 0 && done != train.steps()) {
      RETURN_IF_ERROR(evaluate(done));
    }
    if (train.checkpoint_every() > 0 && done % train.checkpoint_every() == 0 &&
        done != train.steps()) {
      RETURN_IF_ERROR(checkpoint(done));
    }
  }
  RETURN_IF_ERROR(evaluate(train.steps()));
  if (options_.keep_best && !best.empty() && state.best_step != train.steps()) {
    RETURN_IF_ERROR(AssignPrompt(*prompt_, best, "best prompt"));
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
