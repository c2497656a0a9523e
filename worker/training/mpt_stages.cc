#include "worker/training/mpt_stages.h"

#include <ATen/core/grad_mode.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/file_digest.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/spec/stages.h"
#include "worker/lm/causal_prompted_model.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/model/compute_threads.h"
#include "worker/model/model_flops.h"
#include "worker/prompts/adapter_io.h"
#include "worker/collectives/thread_group.h"
#include "worker/training/checkpoint.h"
#include "worker/training/lanes.h"
#include "worker/training/losses.h"
#include "worker/training/teacher_cache.h"
#include "worker/data/task_data.h"
#include "worker/eval/evaluator.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

std::string Join(const std::string& a, const std::string& b) {
  return (fs::path(a) / b).string();
}

// The checkpoint folder of one training run; empty without a work folder.
std::string CheckpointDir(const StageEnv& env, const std::string& stage,
                          const std::string& task) {
  if (!env.checkpoint_dir.empty()) return env.checkpoint_dir;
  if (env.work_dir.empty()) return "";
  return Join(Join(env.work_dir, stage), task.empty() ? "all" : task);
}

// The content of a data file as a fingerprint part ("" for no file).
std::string DataDigest(const std::string& path) {
  if (path.empty()) return "";
  absl::StatusOr<std::string> digest = FileDigest(path);
  return digest.ok() ? *digest : std::string(digest.status().message());
}

// What a checkpoint must have been written with to be resumed from: the
// settings, the model's and the data files' contents.
std::string Fingerprint(const StageEnv& env, const std::string& stage,
                        const std::vector<TaskDataSet>& tasks, const mpt::v1::PromptSpec& prompt,
                        const mpt::v1::TrainSpec& train, const std::string& extra = "") {
  std::vector<std::string> parts{stage,  prompt.SerializeAsString(), train.SerializeAsString(),
                                 extra,  env.model_digest};
  for (const TaskDataSet& t : tasks) {
    parts.push_back(t.spec.SerializeAsString());
    parts.push_back(DataDigest(t.spec.train_path()));
    parts.push_back(DataDigest(t.spec.eval_path()));
  }
  return SettingsFingerprint(parts);
}

// A stable 64-bit number for a name (FNV-1a).
uint64_t NameSeed(const std::string& name) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// A short description of a prompt's initial values, so that a run started
// from another initial prompt does not resume this one's checkpoint.
std::string StartingPoint(const SoftPrompt& prompt) {
  std::string out(PromptKindName(prompt.config().kind));
  for (const auto& [name, t] : prompt.StateDict()) {
    at::Tensor d = t.detach().to(at::kDouble);
    absl::StrAppend(&out, ":", name, "=", d.sum().item<double>(), "/",
                    d.abs().sum().item<double>());
  }
  return out;
}

SoftPromptConfig PromptConfig(const mpt::v1::PromptSpec& spec, const PromptedLanguageModel& model,
                              PromptKind kind, int num_tasks) {
  SoftPromptConfig c;
  c.kind = kind;
  c.num_virtual_tokens = spec.num_virtual_tokens();
  c.num_transformer_submodules = spec.num_transformer_submodules();
  c.token_dim = static_cast<int>(model.hidden_size());
  c.num_ranks = spec.num_ranks();
  c.num_tasks = num_tasks;
  return c;
}

AdapterInfo InfoFor(const SoftPromptConfig& config, const PromptedLanguageModel& model,
                    std::vector<std::string> task_names) {
  AdapterInfo info;
  info.prompt = config;
  info.task_type = model.peft_task_type();
  info.base_model_name_or_path = model.folder();
  info.num_layers = model.num_layers();
  info.num_attention_heads = model.num_attention_heads();
  info.task_names = std::move(task_names);
  return info;
}

EvalOptions EvalOptionsFor(const mpt::v1::PromptSpec& prompt, const mpt::v1::TrainSpec& train) {
  EvalOptions o;
  o.num_virtual_tokens = prompt.num_virtual_tokens();
  o.num_transformer_submodules = prompt.num_transformer_submodules();
  o.max_new_tokens = train.max_target_length();
  o.max_examples = train.max_eval_examples();
  return o;
}

// The score that picks the best prompt (mean accuracy over tasks), then
// every metric.
NamedValues ToNamedValues(const MetricsReport& report) {
  NamedValues out;
  out.emplace_back("score", report.Average(kAccuracy).value_or(0.0));
  for (auto& kv : report.Flatten()) out.push_back(kv);
  return out;
}

PromptLayout LayoutFor(const mpt::v1::PromptSpec& spec, PromptKind kind) {
  return PromptLayout::Peft(kind == PromptKind::kMultitask, spec.num_virtual_tokens(),
                            spec.num_transformer_submodules());
}

// The frozen model on a batch with `prompts` [B, T, d] in front, laid out as
// PEFT lays out a prompt of that kind for the model's family.
PromptedOutput ForwardWithPrompt(const PromptedLanguageModel& model, const PromptLayout& layout,
                                 const at::Tensor& prompts, const Batch& batch) {
  return model.Forward(prompts, layout, batch.input_ids, batch.attention_mask, batch.labels);
}

// A lower bound of the memory one training step of `train` keeps for its
// backward pass: per example and layer, the sequence's projections and
// residuals (6 vectors of hidden_size per position) and attention's scores
// and probabilities (2 per head and pair of positions). The real figure is
// several times larger (the feed-forward's activations, the decoder, the
// allocator); a step below the bound can still run out of memory, but one
// above it cannot run.
double StepMemoryLowerBound(const PromptedLanguageModel& model, const mpt::v1::PromptSpec& prompt,
                            const mpt::v1::TrainSpec& train) {
  double sequence = static_cast<double>(prompt.num_virtual_tokens()) + train.max_input_length();
  if (model.peft_task_type() != std::string("SEQ_2_SEQ_LM")) sequence += train.max_target_length();
  const double per_layer = sequence * 6.0 * static_cast<double>(model.hidden_size()) +
                           2.0 * model.num_attention_heads() * sequence * sequence;
  const double element = model.dtype() == at::kFloat ? 4.0 : 2.0;
  return element * train.batch_size() * model.num_layers() * per_layer;
}

// OK when the model takes the spec's prompt layout and one step of `train`
// can fit the host's memory (CPU models; StepMemoryLowerBound). `stage`
// names the TrainSpec in errors ("source", "distillation", "target").
absl::Status CheckPromptSpecFitsModel(const PromptedLanguageModel& model,
                                      const mpt::v1::PromptSpec& spec,
                                      const mpt::v1::TrainSpec& train, absl::string_view stage) {
  absl::Status fits = model.CheckLayout(
      PromptLayout::Peft(false, spec.num_virtual_tokens(), spec.num_transformer_submodules()));
  if (!fits.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt.", fits.message(), " (base model ",
                                                   model.folder(), ", model_type ",
                                                   model.model_type(), ")"));
  }
  const double host = static_cast<double>(HostMemoryBytes());
  const double needs = StepMemoryLowerBound(model, spec, train);
  if (model.device().is_cpu() && host > 0 && needs > host) {
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.train: one step of batch_size %d over prompt.num_virtual_tokens %d + "
        "max_input_length %d positions needs at least %.1f GiB for the %d layers of %s "
        "(hidden size %d, %d attention heads), more than this machine's %.1f GiB; lower "
        "batch_size, max_input_length or num_virtual_tokens",
        stage, train.batch_size(), spec.num_virtual_tokens(), train.max_input_length(),
        needs / kGiB, model.num_layers(), model.folder(), model.hidden_size(),
        model.num_attention_heads(), host / kGiB));
  }
  return absl::OkStatus();
}

absl::Status AdapterFits(const AdapterInfo& info, const PromptedLanguageModel& model) {
  return CheckAdapterFitsModel(info, static_cast<int>(model.hidden_size()),
                               model.peft_task_type());
}

// The matrix-product FLOPs of a prompted forward over `batch`, plus its
// backward to the prompt when `trained` (model_flops.h). T5: the encoder
// takes the prompt's first num_virtual_tokens rows and the input, the
// decoder the decoder prefix and the target; decoder-only: one sequence of
// prompt, input and target. 0 (not counted) for any other model.
double FlopsOf(const PromptedLanguageModel& model, const PromptLayout& layout,
               const Batch& batch, bool trained) {
  StepFlops s;
  if (const auto* t5 = dynamic_cast<const T5PromptedModel*>(&model)) {
    s = CountT5StepFlops(t5->t5().config(), batch.input_ids.size(0),
                         layout.num_virtual_tokens + batch.input_ids.size(1),
                         layout.decoder_prefix_length(), batch.labels.size(1));
  } else if (const auto* causal = dynamic_cast<const CausalPromptedModel*>(&model)) {
    s = CountCausalStepFlops(causal->llama().config(), batch.input_ids.size(0),
                             layout.num_virtual_tokens, batch.input_ids.size(1),
                             batch.labels.size(1));
  } else {
    return 0;
  }
  return trained ? s.forward + s.backward : s.forward;
}

Batch OnDevice(const Batch& batch, c10::Device device) {
  Batch b = batch;
  b.task_ids = batch.task_ids.to(device);
  return b;
}

// Evaluates `prompt` on the tasks' eval sets (empty when no task has one).
// Everything is borrowed and must outlive the function.
EvalFunction MakeEvalFunction(const StageEnv& env, const mpt::v1::PromptSpec& spec,
                              const mpt::v1::TrainSpec& train,
                              const std::vector<TaskDataSet>& tasks,
                              const std::vector<int>& task_ids, const SoftPrompt* prompt,
                              const std::string& stage) {
  bool has_eval = false;
  for (const auto& t : tasks) has_eval |= !t.eval.empty();
  if (!has_eval) return nullptr;
  const EvalOptions options = EvalOptionsFor(spec, train);
  return [&env, &tasks, &task_ids, prompt, options, stage]() -> absl::StatusOr<NamedValues> {
    ASSIGN_OR_RETURN(MetricsReport report, EvaluatePrompt(*env.model, *env.tokenizer, *prompt,
                                                          tasks, task_ids, options, stage, 0));
    return ToNamedValues(report);
  };
}

// How many CPU lanes work of `env` that splits into at most `at_most`
// parts takes (1: none): env.lanes on a CPU outside a gang.
int LanesFor(const StageEnv& env, size_t at_most) {
  if (env.lanes <= 1 || at_most <= 1 || !env.model->device().is_cpu()) return 1;
  if (env.comm != nullptr && env.comm->world_size() > 1) return 1;
  return static_cast<int>(std::min(static_cast<size_t>(env.lanes), at_most));
}

// The first failure in `statuses` (null: none) that is not `collateral`,
// the code a run ends with when another run's failure stopped it; only
// collateral failures: the first of them.
const absl::Status* FirstFailure(const std::vector<absl::Status>& statuses,
                                 absl::StatusCode collateral) {
  const absl::Status* first = nullptr;
  for (const absl::Status& s : statuses) {
    if (s.ok()) continue;
    if (first == nullptr || (first->code() == collateral && s.code() != collateral)) first = &s;
  }
  return first;
}

// A copy of `prompt` with storage of its own (the same values and frozen
// parts), for another rank of a ThreadGroup.
absl::StatusOr<SoftPrompt> Replica(const SoftPrompt& prompt) {
  auto copy = [](const at::Tensor& t) { return t.defined() ? t.detach().clone() : t; };
  ASSIGN_OR_RETURN(SoftPrompt replica,
                   SoftPrompt::FromTensors(prompt.config(), copy(prompt.prompt_embeddings()),
                                           copy(prompt.prefix_task_cols()),
                                           copy(prompt.prefix_task_rows())));
  if (prompt.shared_prompt_frozen()) replica.FreezeSharedPrompt();
  return replica;
}

// One training run with `batch_size` rows a step: `train_rank(env,
// prompt)` as it is, or, on a CPU with lanes (LanesFor: at most one rank a
// row), split into data-parallel ranks that are threads (ThreadGroup), one
// compute thread each. Then train_rank runs once per rank with
// rank_env.comm set to the rank's communicator; rank 0 trains `prompt`
// itself, the others replicas, which stay equal to it through the summed
// gradients. Only rank 0 reports (the trainer's rule for gangs); the
// caller's cancel function is called under a lock. Returns rank 0's result,
// or the first rank's error that is not the group's abort.
absl::StatusOr<TrainResult> TrainInThreadRanks(
    const StageEnv& env, int batch_size, SoftPrompt* prompt, const std::string& label,
    const std::function<absl::StatusOr<TrainResult>(const StageEnv&, SoftPrompt*)>& train_rank) {
  const int ranks = LanesFor(env, static_cast<size_t>(std::max(0, batch_size)));
  if (ranks <= 1) return train_rank(env, prompt);
  MPT_LOG(INFO) << label << ": " << ranks << " thread ranks, one compute thread each";
  ThreadGroup group(ranks);
  std::vector<SoftPrompt> replicas;
  for (int r = 1; r < ranks; ++r) {
    ASSIGN_OR_RETURN(SoftPrompt replica, Replica(*prompt));
    replicas.push_back(std::move(replica));
  }
  absl::Mutex callbacks;
  std::vector<absl::StatusOr<TrainResult>> results(ranks, absl::InternalError("rank not run"));
  std::vector<absl::Status> thrown =
      RunInLanes(ranks, static_cast<size_t>(ranks), env.model->device(), [&](size_t r) {
        // A rank that ends early, by an error or an exception, breaks the
        // group at once, so that no other rank waits for it.
        struct AbortUnlessOk {
          ThreadGroup& group;
          bool ok = false;
          ~AbortUnlessOk() {
            if (!ok) group.Abort();
          }
        } guard{group};
        StageEnv rank_env = env;
        rank_env.comm = group.rank(static_cast<int>(r));
        rank_env.lanes = 1;
        rank_env.thread_ranks = ranks;
        rank_env.cancelled = [&] {
          absl::MutexLock lock(&callbacks);
          return env.cancelled && env.cancelled();
        };
        results[r] = train_rank(rank_env, r == 0 ? prompt : &replicas[r - 1]);
        guard.ok = results[r].ok();
        return absl::OkStatus();
      });
  std::vector<absl::Status> statuses;
  for (int r = 0; r < ranks; ++r) {
    statuses.push_back(thrown[r].ok() ? results[r].status() : thrown[r]);
  }
  if (const absl::Status* error = FirstFailure(statuses, absl::StatusCode::kAborted)) {
    return *error;
  }
  return std::move(results[0]);
}

// Trains `prompt` on `tasks` with L_PLM (stages 1 and 3 and the baseline).
absl::StatusOr<TrainResult> TrainWithPlm(const StageEnv& env, const mpt::v1::PromptSpec& spec,
                                         const mpt::v1::TrainSpec& train,
                                         const std::vector<TaskDataSet>& tasks,
                                         const std::vector<int>& task_ids, SoftPrompt* prompt,
                                         const std::string& stage, const std::string& task) {
  std::vector<std::vector<TokenizedExample>> sets = TrainSets(tasks);
  // Examples carry their position in `tasks`; the prompt wants its own ids.
  for (size_t k = 0; k < sets.size(); ++k) {
    for (auto& e : sets[k]) e.task_id = task_ids[k];
  }
  const PromptLayout layout = LayoutFor(spec, prompt->config().kind);
  auto train_rank = [&](const StageEnv& rank_env, SoftPrompt* p) {
    LocalCommunicator local;
    Communicator* comm = rank_env.comm ? rank_env.comm : &local;
    TrainerOptions options;
    options.train = train;
    options.stage = stage;
    options.task = task;
    options.checkpoint_dir = CheckpointDir(rank_env, stage, task);
    options.fingerprint = Fingerprint(rank_env, stage, tasks, spec, train, StartingPoint(*p));
    options.flops_scale = rank_env.thread_ranks;
    p->MoveTo(rank_env.model->device());
    StepFunction step = MakePlmStep(*rank_env.model, layout, p);
    EvalFunction eval = MakeEvalFunction(rank_env, spec, train, tasks, task_ids, p, stage);
    PromptTrainer trainer(options, p, &sets, rank_env.tokenizer->pad_id(), comm, rank_env.sink,
                          rank_env.cancelled);
    return trainer.Run(step, eval);
  };
  return TrainInThreadRanks(env, train.batch_size(), prompt, absl::StrCat(stage, " ", task),
                            train_rank);
}

// Trains the source tasks `pack` (positions in `tasks`) together, prompt i
// being (*prompts)[i], each as TrainWithPlm would train it alone: the same
// data, batches, fingerprint and checkpoint folder (see RunSourceTraining
// for a pack's folders under env.checkpoint_dir). Returns their outcomes
// without adapters.
absl::StatusOr<std::vector<TaskOutcome>> TrainSourcePack(const StageEnv& env,
                                                         const mpt::v1::PromptSpec& spec,
                                                         const mpt::v1::TrainSpec& train,
                                                         const std::vector<TaskDataSet>& tasks,
                                                         const std::vector<size_t>& pack,
                                                         std::vector<SoftPrompt>* prompts) {
  LocalCommunicator local;
  Communicator* comm = env.comm ? env.comm : &local;
  const std::string stage(kSourceStage);
  // Per member: its one task (task id 0, as a separate run numbers it).
  std::vector<std::vector<TaskDataSet>> ones;
  std::vector<std::vector<TokenizedExample>> examples;
  ones.reserve(pack.size());
  examples.reserve(pack.size());
  for (size_t k : pack) {
    ones.push_back({tasks[k]});
    examples.push_back(tasks[k].train);
    for (auto& e : examples.back()) e.task_id = 0;
  }
  static const std::vector<int> kTaskZero{0};
  std::vector<PackMember> members;
  std::vector<const SoftPrompt*> prompt_ptrs;
  for (size_t i = 0; i < pack.size(); ++i) {
    SoftPrompt* prompt = &(*prompts)[i];
    const std::string& name = tasks[pack[i]].spec.name();
    PackMember m;
    m.train = train;
    m.task = name;
    m.checkpoint_dir = !env.checkpoint_dir.empty() && pack.size() > 1
                           ? Join(env.checkpoint_dir, name)
                           : CheckpointDir(env, stage, name);
    m.fingerprint = Fingerprint(env, stage, ones[i], spec, train, StartingPoint(*prompt));
    prompt->MoveTo(env.model->device());
    m.prompt = prompt;
    m.examples = &examples[i];
    m.eval = MakeEvalFunction(env, spec, train, ones[i], kTaskZero, prompt, stage);
    members.push_back(std::move(m));
    prompt_ptrs.push_back(prompt);
  }
  const PromptLayout layout = LayoutFor(spec, PromptKind::kPromptTuning);
  PackedStepFunction step = MakePackedPlmStep(*env.model, layout, prompt_ptrs);
  PackedPromptTrainer trainer(stage, std::move(members), env.tokenizer->pad_id(), comm, env.sink,
                              env.cancelled);
  ASSIGN_OR_RETURN(std::vector<TrainResult> results, trainer.Run(step));
  std::vector<TaskOutcome> outcomes;
  for (size_t i = 0; i < pack.size(); ++i) {
    TaskOutcome outcome;
    outcome.task = tasks[pack[i]].spec.name();
    outcome.train = std::move(results[i]);
    outcome.metrics = outcome.train.metrics;
    outcomes.push_back(std::move(outcome));
  }
  return outcomes;
}

absl::StatusOr<SoftPrompt> InitialPrompt(const StageEnv& env, const SoftPromptConfig& config,
                                         const std::string& init_name,
                                         const std::string& init_text, uint64_t seed) {
  ASSIGN_OR_RETURN(PromptInit init, ParsePromptInit(init_name.empty() ? "RANDOM" : init_name));
  switch (init) {
    case PromptInit::kRandom:
      return SoftPrompt::Random(config, seed);
    case PromptInit::kText:
      return SoftPrompt::FromText(config, env.tokenizer->Encode(init_text),
                                  env.model->word_embeddings(), seed,
                                  env.model->word_embedding_scale());
    case PromptInit::kSampleVocab:
      return SoftPrompt::SampleVocab(config, env.model->word_embeddings(), seed,
                                     env.model->word_embedding_scale());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("init: ", init_name, " needs a source adapter"));
  }
}

// The [T, d] prompts of PROMPT_TUNING adapter folders, checked against
// `config` (its total_tokens and token_dim); `field` names the spec field.
absl::StatusOr<std::vector<at::Tensor>> ReadPlainPrompts(const PromptedLanguageModel& model,
                                                         const std::vector<std::string>& folders,
                                                         const SoftPromptConfig& config,
                                                         const std::string& field) {
  std::vector<at::Tensor> prompts;
  for (size_t k = 0; k < folders.size(); ++k) {
    ASSIGN_OR_RETURN(Adapter a, ReadAdapter(folders[k]));
    const std::string where = absl::StrCat(field, "[", k, "] (", folders[k], "): ");
    absl::Status fits = AdapterFits(a.info, model);
    if (!fits.ok()) return absl::InvalidArgumentError(absl::StrCat(where, fits.message()));
    if (a.info.prompt.kind != PromptKind::kPromptTuning) {
      return absl::InvalidArgumentError(absl::StrCat(where, "peft_type: expected PROMPT_TUNING"));
    }
    if (a.prompt.config().total_tokens() != config.total_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "num_virtual_tokens: the adapter has ", a.prompt.config().total_tokens(),
          " prompt rows but the spec asks for ", config.total_tokens()));
    }
    prompts.push_back(a.prompt.TaskPrompt(0).detach().to(at::kFloat).cpu());
  }
  return prompts;
}

// The initial prompt of the source task at position `k` of `spec`.
absl::StatusOr<SoftPrompt> SourceInitialPrompt(const StageEnv& env, const SoftPromptConfig& config,
                                               const mpt::v1::SourceTrainingSpec& spec, size_t k) {
  if (spec.init() == "ADAPTERS") {
    // SPoT-style transfer: start from a source prompt (or the mean of several).
    ASSIGN_OR_RETURN(std::vector<at::Tensor> prompts,
                     ReadPlainPrompts(*env.model,
                                      {spec.init_adapters().begin(), spec.init_adapters().end()},
                                      config, "source.init_adapters"));
    return SoftPrompt::FromTensors(config, at::stack(prompts).mean(0));
  }
  return InitialPrompt(env, config, spec.init(), spec.init_text(), spec.train().seed() + k);
}

std::vector<std::string> TaskNames(const std::vector<TaskDataSet>& tasks) {
  std::vector<std::string> names;
  for (const auto& t : tasks) names.push_back(t.spec.name());
  return names;
}

bool AdapterComplete(const std::string& folder) {
  std::error_code ec;
  return fs::is_regular_file(Join(folder, kAdapterConfigFile), ec) &&
         fs::is_regular_file(Join(folder, kAdapterWeightsFile), ec);
}

// An adapter folder's content as a fingerprint part.
std::string AdapterDigest(const std::string& folder) {
  return DataDigest(Join(folder, kAdapterConfigFile)) + DataDigest(Join(folder, kAdapterWeightsFile));
}

// The distillation's settings and its teachers' contents (in order) as a
// fingerprint part: the same teachers fetched into other folders (another
// worker resuming the checkpoint) give the same part.
std::string TeachersPart(const mpt::v1::DistillationSpec& spec,
                         const std::vector<std::string>& teachers) {
  mpt::v1::DistillationSpec settings = spec;
  settings.clear_teacher_adapters();
  std::string out = settings.SerializeAsString();
  for (const std::string& t : teachers) absl::StrAppend(&out, ",", AdapterDigest(t));
  return out;
}

// RunPipeline's record of a finished adapter: the settings, model and data
// it was trained from, kept in the work folder beside the stage's
// checkpoint folder (<work_dir>/<stage>/<task>.finished), so that a rerun
// into the same output reuses the adapter only when nothing changed.
struct FinishedRecord {
  std::string what;    // "source task max", "distillation"
  std::string folder;  // the adapter
  std::string path;    // the record file
  std::string settings;
};

FinishedRecord SourceRecord(const StageEnv& env, const std::string& out_dir,
                            const mpt::v1::PipelineSpec& spec, const mpt::v1::TaskData& task) {
  // The task's own settings: adding or removing another source task, or
  // packing them differently, keeps this one's adapter.
  mpt::v1::SourceTrainingSpec source = spec.source();
  source.clear_tasks();
  source.clear_tasks_per_pass();
  std::vector<std::string> parts{std::string(kSourceStage), env.model_digest, spec.autocast(),
                                 spec.prompt().SerializeAsString(), source.SerializeAsString(),
                                 task.SerializeAsString(), DataDigest(task.train_path()),
                                 DataDigest(task.eval_path())};
  for (const std::string& a : spec.source().init_adapters()) parts.push_back(AdapterDigest(a));
  const std::string stage(kSourceStage);
  return {absl::StrCat("source task ", task.name()), Join(Join(out_dir, stage), task.name()),
          Join(Join(env.work_dir, stage), task.name() + ".finished"), SettingsFingerprint(parts)};
}

FinishedRecord DistillationRecord(const StageEnv& env, const std::string& out_dir,
                                  const mpt::v1::PipelineSpec& spec,
                                  const std::vector<std::string>& teachers) {
  std::vector<std::string> parts{std::string(kDistillationStage), env.model_digest,
                                 spec.autocast(), spec.prompt().SerializeAsString(),
                                 spec.distillation().SerializeAsString()};
  for (const auto& task : spec.distillation().tasks()) {
    parts.push_back(DataDigest(task.train_path()));
    parts.push_back(DataDigest(task.eval_path()));
  }
  for (const std::string& t : teachers) parts.push_back(AdapterDigest(t));
  const std::string stage(kDistillationStage);
  return {"distillation", Join(out_dir, stage), Join(Join(env.work_dir, stage), "all.finished"),
          SettingsFingerprint(parts)};
}

// Whether RunPipeline may reuse the finished adapter `r.folder`: yes when
// its record holds the same settings; no (train it again) when there is no
// adapter or it was trained with other settings. An adapter with no record
// at all was not written by a run with this work folder: FAILED_PRECONDITION
// rather than replacing what may be someone's only copy.
absl::StatusOr<bool> ReuseFinished(const FinishedRecord& r) {
  if (!AdapterComplete(r.folder)) return false;
  std::error_code ec;
  if (!fs::exists(r.path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        r.what, ": ", r.folder, " already holds an adapter, but the work folder has no record ",
        "of the settings it was trained with (", r.path, " is missing), so it can be neither ",
        "reused nor replaced safely; move it away or choose another --out (or the --work_dir "
        "of the run that wrote it)"));
  }
  ASSIGN_OR_RETURN(std::string stored, ReadFile(r.path, 4096));
  if (absl::StripAsciiWhitespace(stored) == r.settings) {
    MPT_LOG(INFO) << r.what << ": adapter already in " << r.folder
                  << ", trained with these settings, model and data";
    return true;
  }
  MPT_LOG(WARNING) << r.what << ": the adapter in " << r.folder
                   << " was trained with other settings, another model or other data; "
                      "training it again";
  // Until the new adapter and its record are written, the folder has no
  // record: a run stopped in between refuses the folder rather than taking
  // the old record for the new adapter.
  fs::remove(r.path, ec);
  if (ec) return absl::InternalError(absl::StrCat(r.path, ": cannot remove: ", ec.message()));
  return false;
}

absl::Status WriteFinished(const FinishedRecord& r) {
  std::error_code ec;
  fs::create_directories(fs::path(r.path).parent_path(), ec);
  return WriteFileAtomically(r.path, r.settings + "\n");
}

}  // namespace

StepFunction MakePlmStep(const PromptedLanguageModel& model, const PromptLayout& layout,
                         const SoftPrompt* prompt) {
  return [&model, layout, prompt](const Batch& batch,
                                  double global_tokens) -> absl::StatusOr<StepLoss> {
    Batch b = OnDevice(batch, model.device());
    PromptedOutput f =
        ForwardWithPrompt(model, layout, prompt->Forward(b.task_ids, b.size()), batch);
    LossSum plm = PlmLoss(f.logits, f.labels);
    StepLoss loss;
    loss.objective = plm.sum / global_tokens;
    loss.parts = {{"loss", loss.objective.item<double>()}};
    loss.flops = FlopsOf(model, layout, batch, /*trained=*/true);
    return loss;
  };
}

PackedStepFunction MakePackedPlmStep(const PromptedLanguageModel& model, const PromptLayout& layout,
                                     std::vector<const SoftPrompt*> prompts) {
  return [&model, layout, prompts = std::move(prompts)](
             const Batch& batch,
             const std::vector<double>& global_tokens) -> absl::StatusOr<PackedStepLoss> {
    const int64_t k = static_cast<int64_t>(prompts.size());
    if (static_cast<int64_t>(global_tokens.size()) != k) {
      return absl::InvalidArgumentError(absl::StrCat(
          "packed step: ", global_tokens.size(), " token counts for ", k, " prompts"));
    }
    const c10::Device device = model.device();
    const at::Tensor members = batch.task_ids.to(device);
    // Each row's prompt, gathered from the members' prompts: [B, T, d].
    std::vector<at::Tensor> table;
    table.reserve(k);
    for (const SoftPrompt* p : prompts) table.push_back(p->TaskPrompt(0));
    at::Tensor rows = at::stack(table).index_select(0, members);
    PromptedOutput f = ForwardWithPrompt(model, layout, rows, batch);
    // Per-row summed token losses, then per member.
    const int64_t vocab = f.logits.size(-1);
    at::Tensor log_probs = at::log_softmax(f.logits.reshape({-1, vocab}).to(at::kFloat), -1);
    at::Tensor token_losses = at::nll_loss(log_probs, f.labels.reshape({-1}), /*weight=*/{},
                                           at::Reduction::None, kIgnoreIndex);
    at::Tensor row_sums = token_losses.reshape({f.labels.size(0), -1}).sum(1);
    at::Tensor member_sums = at::zeros({k}, row_sums.options()).index_add(0, members, row_sums);
    // A member that sits the step out has no rows: 0 / 1.
    std::vector<double> counts(k, 1.0);
    for (int64_t m = 0; m < k; ++m) {
      if (global_tokens[m] > 0) counts[m] = global_tokens[m];
    }
    at::Tensor scaled =
        member_sums / at::tensor(counts, at::TensorOptions().dtype(at::kDouble))
                          .to(device, row_sums.scalar_type());
    PackedStepLoss loss;
    loss.objective = scaled.sum();
    loss.flops = FlopsOf(model, layout, batch, /*trained=*/true);
    const at::Tensor values = scaled.detach().to(at::kCPU, at::kDouble).contiguous();
    for (int64_t m = 0; m < k; ++m) loss.parts.push_back({{"loss", values[m].item<double>()}});
    return loss;
  };
}

StepFunction MakeDistillationStep(const PromptedLanguageModel& model, const mpt::v1::PromptSpec& prompt_spec,
                                  const SoftPrompt* student, const at::Tensor& teacher_table,
                                  const DistillationLoss& options) {
  // Teachers are PROMPT_TUNING prompts and the student a multitask one: with
  // two submodules PEFT puts the student's second half before the T5
  // decoder and the teachers' nowhere. Both are compared at the positions
  // that predict the target tokens, the only ones a PromptedOutput holds
  // (the decoder's after any prefix for T5; for a decoder-only model, the
  // positions from the last input token to the one before the last target
  // token).
  const PromptLayout student_layout = LayoutFor(prompt_spec, PromptKind::kMultitask);
  const PromptLayout teacher_layout = LayoutFor(prompt_spec, PromptKind::kPromptTuning);
  const double d = static_cast<double>(model.hidden_size());
  // Teacher outputs, per example, computed once (teacher_cache.h).
  std::shared_ptr<TeacherCache> cache =
      options.teacher_cache ? options.teacher_cache
                            : std::make_shared<TeacherCache>(options.teacher_cache_bytes);
  return [&model, student, teacher_table, options, student_layout, teacher_layout, d, cache](const Batch& batch, double g) -> absl::StatusOr<StepLoss> {
    Batch b = OnDevice(batch, model.device());
    PromptedOutput student_out =
        ForwardWithPrompt(model, student_layout, student->Forward(b.task_ids, b.size()), batch);
    LossSum plm = PlmLoss(student_out.logits, student_out.labels);
    at::Tensor objective = plm.sum / g;
    double kl_value = 0, hidden_value = 0;
    double flops = FlopsOf(model, student_layout, batch, /*trained=*/true);
    if (options.lambda > 0) {
      TeacherOutputs teacher_out = cache->Get(
          batch,
          [&](const Batch& rows) {
            at::NoGradGuard no_grad;
            PromptedOutput f = ForwardWithPrompt(
                model, teacher_layout,
                teacher_table.index_select(0, rows.task_ids.to(model.device())), rows);
            flops += FlopsOf(model, teacher_layout, rows, /*trained=*/false);
            return TeacherOutputs{f.logits, f.hidden};
          },
          [&model, &flops](const at::Tensor& hidden) {
            at::NoGradGuard no_grad;
            // [N, L, d] x [d, V]
            flops +=
                2.0 * static_cast<double>(hidden.numel()) * static_cast<double>(model.vocab_size());
            return model.LmHead(hidden);
          });
      const at::Tensor& labels = student_out.labels;
      const at::Tensor& student_logits = student_out.logits;
      const at::Tensor& student_hidden = student_out.hidden;
      at::Tensor distill = at::zeros({}, objective.options());
      if (options.use_kl) {
        LossSum kl = KlLoss(student_logits, teacher_out.logits, labels, options.temperature);
        at::Tensor kl_term = kl.sum / g;
        distill = distill + kl_term;
        kl_value = kl_term.item<double>();
      }
      if (options.use_hidden) {
        LossSum hidden = HiddenLoss(student_hidden, teacher_out.hidden, labels);
        at::Tensor hidden_term = hidden.sum / (g * d);
        distill = distill + hidden_term;
        hidden_value = hidden_term.item<double>();
      }
      objective = objective + options.lambda * distill;
    }
    StepLoss loss;
    loss.objective = objective;
    loss.parts = {{"loss", objective.item<double>()},
                  {"plm", (plm.sum / g).item<double>()},
                  {"kl", kl_value},
                  {"hidden", hidden_value}};
    loss.flops = flops;
    return loss;
  };
}


// Runs run(0, e), ..., run(n - 1, e): the independent training runs of one
// call, one after another on this thread with e = env, or side by side in
// lanes (LanesFor; not with a shared env.checkpoint_dir). With L lanes the
// runs go in rounds of L, one compute thread each; when n is not a multiple
// of L, the last r runs share the L lanes instead, each split into L / r
// thread ranks (TrainInThreadRanks), so that no lane idles through the last
// round. In lanes, e's sink and cancel function are env's behind one lock,
// and a failed run stops the others at their next step. Returns the
// results in order, or the first error in order, a cancel caused by
// another run's failure excepted.
template <typename T>
absl::StatusOr<std::vector<T>> RunIndependent(
    const StageEnv& env, size_t n,
    const std::function<absl::StatusOr<T>(size_t, const StageEnv&)>& run) {
  std::vector<T> results;
  const int lanes = env.checkpoint_dir.empty() ? LanesFor(env, n) : 1;
  if (lanes <= 1) {
    for (size_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(T result, run(i, env));
      results.push_back(std::move(result));
    }
    return results;
  }
  absl::Mutex callbacks;
  std::optional<SerialProgressSink> sink;
  StageEnv lane_env = env;
  if (env.sink != nullptr) lane_env.sink = &sink.emplace(env.sink, &callbacks);
  std::atomic<bool> failed{false};
  lane_env.cancelled = [&] {
    if (failed.load()) return true;
    absl::MutexLock lock(&callbacks);
    return env.cancelled && env.cancelled();
  };
  std::vector<std::optional<T>> done(n);
  std::vector<absl::Status> statuses(n);
  // Runs [first, first + count) in `count_lanes` lanes, each with
  // `ranks` thread ranks.
  auto run_range = [&](size_t first, size_t count, int count_lanes, int ranks) {
    StageEnv e = lane_env;
    e.lanes = ranks;
    std::vector<absl::Status> s =
        RunInLanes(count_lanes, count, env.model->device(), [&](size_t j) -> absl::Status {
          absl::StatusOr<T> result = run(first + j, e);
          if (!result.ok()) {
            failed.store(true);
            return result.status();
          }
          done[first + j] = *std::move(result);
          return absl::OkStatus();
        });
    for (size_t j = 0; j < count; ++j) statuses[first + j] = s[j];
  };
  const size_t rest = n % static_cast<size_t>(lanes);
  const size_t rounds = n - rest;
  run_range(0, rounds, lanes, 1);
  if (rest > 0 && !failed.load()) {
    const int ranks = lanes / static_cast<int>(rest);
    if (rest == 1) {
      MPT_LOG(INFO) << "the last of " << n << " runs takes all " << lanes << " lanes: " << ranks
                    << " thread ranks";
    } else {
      MPT_LOG(INFO) << "the last " << rest << " of " << n << " runs share the " << lanes
                    << " lanes: " << ranks << " thread ranks each";
    }
    run_range(rounds, rest, static_cast<int>(rest), ranks);
  }
  if (const absl::Status* error = FirstFailure(statuses, absl::StatusCode::kCancelled)) {
    return *error;
  }
  for (std::optional<T>& result : done) {
    if (!result.has_value()) return absl::CancelledError("stopped by another run's failure");
    results.push_back(*std::move(result));
  }
  return results;
}

absl::StatusOr<std::vector<TaskOutcome>> RunSourceTraining(
    const StageEnv& env, const mpt::v1::PromptSpec& prompt_spec,
    const mpt::v1::SourceTrainingSpec& spec, const std::string& out_dir,
    const std::vector<std::string>& only_tasks) {
  RETURN_IF_ERROR(CheckPromptSpecFitsModel(*env.model, prompt_spec, spec.train(), "source"));
  ASSIGN_OR_RETURN(std::vector<TaskDataSet> tasks,
                   LoadTaskData(spec.tasks(), spec.train(), *env.tokenizer));
  const SoftPromptConfig config =
      PromptConfig(prompt_spec, *env.model, PromptKind::kPromptTuning, 1);
  // Task k's initial prompt (seeded by its position in the spec).
  auto initial = [&](size_t k) { return SourceInitialPrompt(env, config, spec, k); };
  std::vector<size_t> selected;
  for (size_t k = 0; k < tasks.size(); ++k) {
    const std::string& name = tasks[k].spec.name();
    if (only_tasks.empty() ||
        std::find(only_tasks.begin(), only_tasks.end(), name) != only_tasks.end()) {
      selected.push_back(k);
    }
  }
  // Task k alone (a pack of one takes this path too: the same numbers as
  // without packing).
  auto train_alone = [&](size_t k, const StageEnv& run_env) -> absl::StatusOr<TaskOutcome> {
    const std::string& name = tasks[k].spec.name();
    ASSIGN_OR_RETURN(SoftPrompt prompt, initial(k));
    std::vector<TaskDataSet> one{tasks[k]};
    TaskOutcome outcome;
    outcome.task = name;
    ASSIGN_OR_RETURN(outcome.train, TrainWithPlm(run_env, prompt_spec, spec.train(), one, {0},
                                                 &prompt, std::string(kSourceStage), name));
    outcome.metrics = outcome.train.metrics;
    outcome.adapter = Join(out_dir, name);
    RETURN_IF_ERROR(WriteAdapter(outcome.adapter, prompt, InfoFor(config, *env.model, {name})));
    if (env.source_adapter_written) RETURN_IF_ERROR(env.source_adapter_written(name));
    return outcome;
  };
  std::vector<TaskOutcome> outcomes;
  if (spec.tasks_per_pass() > 1) {
    const size_t per_pass = static_cast<size_t>(spec.tasks_per_pass());
    for (size_t first = 0; first < selected.size(); first += per_pass) {
      std::vector<size_t> pack(selected.begin() + first,
                               selected.begin() + std::min(selected.size(), first + per_pass));
      if (pack.size() == 1) {
        ASSIGN_OR_RETURN(TaskOutcome outcome, train_alone(pack[0], env));
        outcomes.push_back(std::move(outcome));
        continue;
      }
      std::vector<SoftPrompt> prompts;
      for (size_t k : pack) {
        ASSIGN_OR_RETURN(SoftPrompt p, initial(k));
        prompts.push_back(std::move(p));
      }
      ASSIGN_OR_RETURN(std::vector<TaskOutcome> trained,
                       TrainSourcePack(env, prompt_spec, spec.train(), tasks, pack, &prompts));
      for (size_t i = 0; i < pack.size(); ++i) {
        TaskOutcome& outcome = trained[i];
        outcome.adapter = Join(out_dir, outcome.task);
        RETURN_IF_ERROR(WriteAdapter(outcome.adapter, prompts[i],
                                     InfoFor(config, *env.model, {outcome.task})));
        if (env.source_adapter_written) {
          RETURN_IF_ERROR(env.source_adapter_written(outcome.task));
        }
        outcomes.push_back(std::move(outcome));
      }
    }
    return outcomes;
  }
  return RunIndependent<TaskOutcome>(
      env, selected.size(),
      [&](size_t i, const StageEnv& run_env) { return train_alone(selected[i], run_env); });
}

std::vector<absl::StatusOr<TaskOutcome>> RunSourcePack(const StageEnv& env,
                                                       const std::vector<SourcePackTask>& tasks) {
  const std::string stage(kSourceStage);
  std::vector<absl::StatusOr<TaskOutcome>> results(
      tasks.size(), absl::InternalError("source pack: not trained"));
  // Per task: its data (its one task, numbered 0 as a separate run numbers
  // it), its prompt and config; tasks that fail here are out of the pass.
  struct Prepared {
    size_t index;
    std::vector<TaskDataSet> one;
    std::vector<TokenizedExample> examples;
    SoftPromptConfig config;
    std::optional<SoftPrompt> prompt;
  };
  std::vector<Prepared> ready;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const SourcePackTask& t = tasks[i];
    int position = -1;
    for (int k = 0; k < t.source.tasks_size(); ++k) {
      if (t.source.tasks(k).name() == t.task) position = k;
    }
    if (position < 0) {
      results[i] = absl::InvalidArgumentError(
          absl::StrCat("task \"", t.task, "\" is not a source task of its spec"));
      continue;
    }
    if (absl::Status fits =
            CheckPromptSpecFitsModel(*env.model, t.prompt, t.source.train(), "source");
        !fits.ok()) {
      results[i] = fits;
      continue;
    }
    google::protobuf::RepeatedPtrField<mpt::v1::TaskData> only;
    *only.Add() = t.source.tasks(position);
    absl::StatusOr<std::vector<TaskDataSet>> data =
        LoadTaskData(only, t.source.train(), *env.tokenizer);
    if (!data.ok()) {
      results[i] = data.status();
      continue;
    }
    Prepared p{i, *std::move(data), {}, PromptConfig(t.prompt, *env.model,
                                                     PromptKind::kPromptTuning, 1), std::nullopt};
    if (!ready.empty()) {
      const SoftPromptConfig& c0 = ready.front().config;
      if (p.config.num_virtual_tokens != c0.num_virtual_tokens ||
          p.config.num_transformer_submodules != c0.num_transformer_submodules) {
        results[i] = absl::InvalidArgumentError(absl::StrCat(
            "prompt: task \"", t.task, "\" has another prompt shape than task \"",
            tasks[ready.front().index].task, "\" of its pack"));
        continue;
      }
    }
    absl::StatusOr<SoftPrompt> prompt = SourceInitialPrompt(env, p.config, t.source, position);
    if (!prompt.ok()) {
      results[i] = prompt.status();
      continue;
    }
    p.prompt.emplace(*std::move(prompt));
    p.examples = p.one[0].train;
    for (auto& e : p.examples) e.task_id = 0;
    ready.push_back(std::move(p));
  }
  // Tasks that failed before training end now.
  std::vector<bool> ended(tasks.size(), false);
  auto end = [&](size_t i, absl::StatusOr<TaskOutcome> result) {
    results[i] = std::move(result);
    if (ended[i]) return;
    ended[i] = true;
    if (tasks[i].on_end) tasks[i].on_end(results[i]);
  };
  {
    std::vector<bool> trains(tasks.size(), false);
    for (const Prepared& p : ready) trains[p.index] = true;
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (!trains[i]) end(i, results[i]);
    }
  }
  if (ready.empty()) return results;

  auto write = [&](Prepared& p, TrainResult train) -> absl::StatusOr<TaskOutcome> {
    const SourcePackTask& t = tasks[p.index];
    if (train.cancelled) {
      return absl::CancelledError(
          absl::StrCat(stage, " ", t.task, ": cancelled at step ", train.steps));
    }
    TaskOutcome outcome;
    outcome.task = t.task;
    outcome.train = std::move(train);
    outcome.metrics = outcome.train.metrics;
    outcome.adapter = Join(t.out_dir, t.task);
    RETURN_IF_ERROR(
        WriteAdapter(outcome.adapter, *p.prompt, InfoFor(p.config, *env.model, {t.task})));
    return outcome;
  };

  // A task alone: exactly its separate run, with `sink` and `cancelled`
  // standing for the task's and the pack's own.
  auto train_alone = [&](Prepared& p, ProgressSink* sink, std::function<bool()> cancelled,
                         int lanes) -> absl::StatusOr<TaskOutcome> {
    const SourcePackTask& t = tasks[p.index];
    StageEnv alone = env;
    alone.lanes = lanes;
    alone.sink = sink;
    alone.checkpoint_dir = t.checkpoint_dir;
    alone.work_dir.clear();
    alone.cancelled = std::move(cancelled);
    absl::StatusOr<TrainResult> trained =
        TrainWithPlm(alone, t.prompt, t.source.train(), p.one, {0}, &*p.prompt, stage, t.task);
    return trained.ok() ? write(p, *std::move(trained))
                        : absl::StatusOr<TaskOutcome>(trained.status());
  };
  auto both = [](std::function<bool()> pack, std::function<bool()> own) {
    return [pack = std::move(pack), own = std::move(own)] {
      return (pack && pack()) || (own && own());
    };
  };
  if (ready.size() == 1) {
    Prepared& p = ready.front();
    end(p.index, train_alone(p, tasks[p.index].sink, both(env.cancelled, tasks[p.index].cancelled),
                             env.lanes));
    return results;
  }
  if (const int lanes = LanesFor(env, ready.size()); lanes > 1) {
    // Side by side, each task alone. The caller's sinks and cancel
    // functions are called under one lock, the on_end calls under another
    // (an upload there does not hold up the other lanes' progress).
    absl::Mutex callbacks;
    absl::Mutex ends;
    std::vector<std::optional<SerialProgressSink>> sinks(ready.size());
    std::vector<absl::Status> thrown =
        RunInLanes(lanes, ready.size(), env.model->device(), [&](size_t r) -> absl::Status {
      Prepared& p = ready[r];
      const SourcePackTask& t = tasks[p.index];
      ProgressSink* sink = t.sink != nullptr ? &sinks[r].emplace(t.sink, &callbacks) : nullptr;
      auto cancelled = [&callbacks, check = both(env.cancelled, t.cancelled)] {
        absl::MutexLock lock(&callbacks);
        return check();
      };
      absl::StatusOr<TaskOutcome> outcome = train_alone(p, sink, cancelled, /*lanes=*/1);
      absl::MutexLock lock(&ends);
      end(p.index, std::move(outcome));
      return absl::OkStatus();
    });
    // A task whose lane threw ends with what it threw.
    for (size_t r = 0; r < ready.size(); ++r) {
      if (ended[ready[r].index]) continue;
      end(ready[r].index, thrown[r].ok() ? absl::InternalError("source pack: not trained")
                                         : thrown[r]);
    }
    return results;
  }

  static const std::vector<int> kTaskZero{0};
  std::vector<PackMember> members;
  std::vector<const SoftPrompt*> prompt_ptrs;
  for (Prepared& p : ready) {
    const SourcePackTask& t = tasks[p.index];
    SoftPrompt* prompt = &*p.prompt;
    PackMember m;
    m.train = t.source.train();
    m.task = t.task;
    m.checkpoint_dir = t.checkpoint_dir;
    m.fingerprint =
        Fingerprint(env, stage, p.one, t.prompt, t.source.train(), StartingPoint(*prompt));
    prompt->MoveTo(env.model->device());
    m.prompt = prompt;
    m.examples = &p.examples;
    m.eval = MakeEvalFunction(env, t.prompt, t.source.train(), p.one, kTaskZero, prompt, stage);
    m.sink = t.sink;
    m.cancelled = t.cancelled;
    // The adapter is written, and the task reported, the moment it ends.
    Prepared* prepared = &p;
    m.on_end = [&end, &write, prepared](const TrainResult& train) {
      end(prepared->index, write(*prepared, train));
    };
    members.push_back(std::move(m));
    prompt_ptrs.push_back(prompt);
  }
  LocalCommunicator local;
  Communicator* comm = env.comm ? env.comm : &local;
  const PromptLayout layout = LayoutFor(tasks[ready.front().index].prompt, PromptKind::kPromptTuning);
  PackedStepFunction step = MakePackedPlmStep(*env.model, layout, prompt_ptrs);
  PackedPromptTrainer trainer(stage, std::move(members), env.tokenizer->pad_id(), comm,
                              /*sink=*/nullptr, env.cancelled);
  absl::StatusOr<std::vector<TrainResult>> trained = trainer.Run(step);
  for (size_t r = 0; r < ready.size(); ++r) {
    Prepared& p = ready[r];
    if (ended[p.index]) continue;  // written and reported when it ended
    end(p.index, trained.ok() ? write(p, std::move((*trained)[r]))
                              : absl::StatusOr<TaskOutcome>(trained.status()));
  }
  return results;
}

absl::StatusOr<TaskOutcome> RunDistillation(const StageEnv& env,
                                            const mpt::v1::PromptSpec& prompt_spec,
                                            const mpt::v1::DistillationSpec& spec,
                                            const std::vector<std::string>& teachers,
                                            const std::string& out_dir) {
  const PromptedLanguageModel& model = *env.model;
  RETURN_IF_ERROR(CheckPromptSpecFitsModel(model, prompt_spec, spec.train(), "distillation"));
  ASSIGN_OR_RETURN(std::vector<TaskDataSet> tasks,
                   LoadTaskData(spec.tasks(), spec.train(), *env.tokenizer));
  if (teachers.size() != tasks.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distillation.teacher_adapters: ", teachers.size(), " teachers for ", tasks.size(),
        " tasks"));
  }
  const int k_tasks = static_cast<int>(tasks.size());
  const SoftPromptConfig config =
      PromptConfig(prompt_spec, model, PromptKind::kMultitask, k_tasks);
  std::vector<at::Tensor> teacher_prompts;
  for (size_t k = 0; k < teachers.size(); ++k) {
    ASSIGN_OR_RETURN(Adapter teacher, ReadAdapter(teachers[k]));
    const std::string where = absl::StrCat("distillation.teacher_adapters[", k, "] (",
                                           teachers[k], "): ");
    absl::Status fits = AdapterFits(teacher.info, model);
    if (!fits.ok()) return absl::InvalidArgumentError(absl::StrCat(where, fits.message()));
    if (teacher.prompt.config().total_tokens() != config.total_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "num_virtual_tokens: the teacher has ", teacher.prompt.config().total_tokens(),
          " prompt rows but the spec asks for ", config.total_tokens()));
    }
    teacher_prompts.push_back(teacher.prompt.TaskPrompt(0).detach());
  }
  ASSIGN_OR_RETURN(SoftPrompt student, SoftPrompt::FromTeachers(config, teacher_prompts));
  const at::Tensor teacher_table = at::stack(teacher_prompts).to(model.device());  // [K, T, d]

  std::vector<std::vector<TokenizedExample>> sets = TrainSets(tasks);
  DistillationLoss loss_options;
  loss_options.lambda = spec.no_distillation_loss() ? 0.0 : spec.lambda();
  loss_options.temperature = spec.temperature();
  loss_options.use_kl = spec.losses() != "hidden";
  loss_options.use_hidden = spec.losses() != "kl";
  std::vector<int> task_ids;
  for (int k = 0; k < k_tasks; ++k) task_ids.push_back(k);
  // One cache of teacher outputs for every rank: thread ranks share it (an
  // example's outputs serve whichever rank draws it next), within one bound.
  // It keeps the teachers' logits too (nothing recomputed) when every
  // training example's fit in it, else hidden states only (teacher_cache.h).
  double target_tokens = 0;
  for (const auto& set : sets) {
    for (const TokenizedExample& e : set) target_tokens += static_cast<double>(e.target_ids.size());
  }
  loss_options.teacher_cache =
      TeacherCache::ForExamples(loss_options.teacher_cache_bytes, target_tokens, model.vocab_size(),
                                model.hidden_size(), c10::elementSize(model.dtype()));
  // One rank's training (the only one without thread ranks).
  auto train_rank = [&](const StageEnv& rank_env,
                        SoftPrompt* rank_student) -> absl::StatusOr<TrainResult> {
    LocalCommunicator local;
    Communicator* comm = rank_env.comm ? rank_env.comm : &local;
    TrainerOptions options;
    options.train = spec.train();
    options.sampling =
        spec.sampling() == "uniform" ? TaskSampling::kUniform : TaskSampling::kProportional;
    options.stage = std::string(kDistillationStage);
    options.checkpoint_dir = CheckpointDir(rank_env, std::string(kDistillationStage), "");
    options.fingerprint =
        Fingerprint(rank_env, std::string(kDistillationStage), tasks, prompt_spec, spec.train(),
                    TeachersPart(spec, teachers));
    options.flops_scale = rank_env.thread_ranks;
    rank_student->MoveTo(model.device());
    StepFunction step =
        MakeDistillationStep(model, prompt_spec, rank_student, teacher_table, loss_options);
    EvalFunction eval = MakeEvalFunction(rank_env, prompt_spec, spec.train(), tasks, task_ids,
                                         rank_student, std::string(kDistillationStage));
    PromptTrainer trainer(options, rank_student, &sets, env.tokenizer->pad_id(), comm,
                          rank_env.sink, rank_env.cancelled);
    return trainer.Run(step, eval);
  };
  TaskOutcome outcome;
  outcome.task = "all";
  ASSIGN_OR_RETURN(outcome.train,
                   TrainInThreadRanks(env, spec.train().batch_size(), &student,
                                      std::string(kDistillationStage), train_rank));
  outcome.metrics = outcome.train.metrics;
  outcome.adapter = out_dir;
  if (env.comm == nullptr || env.comm->rank() == 0) {
    RETURN_IF_ERROR(WriteAdapter(out_dir, student, InfoFor(config, model, TaskNames(tasks))));
  }
  return outcome;
}

absl::StatusOr<std::vector<TaskOutcome>> RunTargetAdaptation(
    const StageEnv& env, const mpt::v1::PromptSpec& prompt_spec,
    const mpt::v1::TargetAdaptationSpec& spec, const std::string& source_adapter,
    const std::string& out_dir) {
  const PromptedLanguageModel& model = *env.model;
  RETURN_IF_ERROR(CheckPromptSpecFitsModel(model, prompt_spec, spec.train(), "target"));
  ASSIGN_OR_RETURN(std::vector<TaskDataSet> tasks,
                   LoadTaskData(spec.tasks(), spec.train(), *env.tokenizer));
  ASSIGN_OR_RETURN(PromptInit init, ParsePromptInit(spec.init().empty() ? "AVERAGE_SOURCE_TASKS"
                                                                         : spec.init()));
  Adapter source;
  if (init == PromptInit::kTeacherMean) {
    // The no-distillation ablation: P* is the teachers' mean, U = V = 1.
    const SoftPromptConfig plain =
        PromptConfig(prompt_spec, model, PromptKind::kPromptTuning, 1);
    ASSIGN_OR_RETURN(std::vector<at::Tensor> teachers,
                     ReadPlainPrompts(model, {spec.teacher_adapters().begin(),
                                       spec.teacher_adapters().end()},
                                      plain, "target.teacher_adapters"));
    SoftPromptConfig multi = PromptConfig(prompt_spec, model, PromptKind::kMultitask,
                                          static_cast<int>(teachers.size()));
    ASSIGN_OR_RETURN(SoftPrompt mean, SoftPrompt::FromTeachers(multi, teachers));
    source.prompt = mean;
    source.info.prompt = multi;
    init = PromptInit::kAverageSourceTasks;  // every task's U = V = 1: the mean is the same
  } else {
    ASSIGN_OR_RETURN(source, ReadAdapter(source_adapter));
    const std::string where = absl::StrCat("target.source_adapter (", source_adapter, "): ");
    if (source.info.prompt.kind != PromptKind::kMultitask) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "peft_type: expected MULTITASK_PROMPT_TUNING"));
    }
    absl::Status fits =
        AdapterFits(source.info, model);
    if (!fits.ok()) return absl::InvalidArgumentError(absl::StrCat(where, fits.message()));
  }
  const std::string where = absl::StrCat("target.source_adapter (", source_adapter, "): ");

  const int groups = spec.shared() ? 1 : static_cast<int>(tasks.size());
  const int tasks_per_prompt = spec.shared() ? static_cast<int>(tasks.size()) : 1;
  if (init == PromptInit::kExactSourceTask &&
      (spec.init_task() < 0 || spec.init_task() >= source.info.prompt.num_tasks)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target.init_task: ", spec.init_task(), " is not a task of ", where, "it holds ",
        source.info.prompt.num_tasks, " source task(s), numbered from 0"));
  }
  mpt::v1::PromptSpec adapted = prompt_spec;
  if (prompt_spec.num_ranks() != source.info.prompt.num_ranks) {
    // The factors' rank comes with the source's factors.
    MPT_LOG(WARNING) << where << "its rank is " << source.info.prompt.num_ranks
                     << "; the target prompt keeps it (prompt.num_ranks "
                     << prompt_spec.num_ranks() << " applies to the distillation)";
  }
  adapted.set_num_ranks(source.info.prompt.num_ranks);
  const SoftPromptConfig config =
      PromptConfig(adapted, model, PromptKind::kMultitask, tasks_per_prompt);
  if (source.info.prompt.total_tokens() != config.total_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "num_virtual_tokens: the adapter has ", source.info.prompt.total_tokens(),
        " prompt rows but the spec asks for ", config.total_tokens()));
  }
  // Each group (one task, or every task with spec.shared) trains on its own.
  auto train_group = [&](size_t g, const StageEnv& run_env) -> absl::StatusOr<TaskOutcome> {
    std::vector<TaskDataSet> group;
    std::vector<int> ids;
    std::vector<std::string> names;
    for (int i = 0; i < tasks_per_prompt; ++i) {
      group.push_back(tasks[g * tasks_per_prompt + i]);
      ids.push_back(i);
      names.push_back(group.back().spec.name());
    }
    const std::string label = spec.shared() ? "shared" : names[0];
    std::optional<SoftPrompt> prompt;
    // Seeded by the name, not the position, so that a target task run on
    // its own (one task per service stage) starts where it starts here.
    const uint64_t seed = spec.train().seed() + NameSeed(label);
    if (init == PromptInit::kAverageSourceTasks || init == PromptInit::kExactSourceTask ||
        init == PromptInit::kOnlySourceShared) {
      ASSIGN_OR_RETURN(prompt, SoftPrompt::FromSourceState(config, source.prompt.StateDict(),
                                                            init, spec.init_task(), seed));
    } else {
      ASSIGN_OR_RETURN(prompt, InitialPrompt(env, config, spec.init(), spec.init_text(), seed));
    }
    if (spec.trainable() == "factors") prompt->FreezeSharedPrompt();
    TaskOutcome outcome;
    outcome.task = label;
    ASSIGN_OR_RETURN(outcome.train, TrainWithPlm(run_env, adapted, spec.train(), group, ids,
                                                 &*prompt, std::string(kTargetStage), label));
    outcome.metrics = outcome.train.metrics;
    outcome.adapter = Join(out_dir, label);
    RETURN_IF_ERROR(WriteAdapter(outcome.adapter, *prompt, InfoFor(config, model, names)));
    return outcome;
  };
  return RunIndependent<TaskOutcome>(env, static_cast<size_t>(groups), train_group);
}

absl::StatusOr<std::vector<BaselineOutcome>> RunTargetBaselines(
    const StageEnv& env, const mpt::v1::PromptSpec& prompt_spec,
    const mpt::v1::TargetAdaptationSpec& spec, const std::string& out_dir) {
  const PromptedLanguageModel& model = *env.model;
  RETURN_IF_ERROR(CheckPromptSpecFitsModel(model, prompt_spec, spec.train(), "target"));
  ASSIGN_OR_RETURN(std::vector<TaskDataSet> tasks,
                   LoadTaskData(spec.tasks(), spec.train(), *env.tokenizer));
  const SoftPromptConfig config = PromptConfig(prompt_spec, model, PromptKind::kPromptTuning, 1);
  const EvalOptions eval_options = EvalOptionsFor(prompt_spec, spec.train());
  auto train_one = [&](size_t k, const StageEnv& run_env) -> absl::StatusOr<BaselineOutcome> {
    BaselineOutcome outcome;
    outcome.task = tasks[k].spec.name();
    std::vector<TaskDataSet> one{tasks[k]};
    ASSIGN_OR_RETURN(SoftPrompt prompt, SoftPrompt::Random(config, spec.train().seed() + k));
    ASSIGN_OR_RETURN(MetricsReport before,
                     EvaluatePrompt(model, *env.tokenizer, prompt, one, {0}, eval_options,
                                    "baseline", 0));
    outcome.random_prompt = ToNamedValues(before);
    outcome.prompt_tuning.task = outcome.task;
    ASSIGN_OR_RETURN(outcome.prompt_tuning.train,
                     TrainWithPlm(run_env, prompt_spec, spec.train(), one, {0}, &prompt,
                                  "baseline", outcome.task));
    outcome.prompt_tuning.metrics = outcome.prompt_tuning.train.metrics;
    outcome.prompt_tuning.adapter = Join(out_dir, outcome.task);
    RETURN_IF_ERROR(WriteAdapter(outcome.prompt_tuning.adapter, prompt,
                                 InfoFor(config, model, {outcome.task})));
    return outcome;
  };
  return RunIndependent<BaselineOutcome>(env, tasks.size(), train_one);
}

absl::StatusOr<PipelineOutcome> RunPipeline(const StageEnv& env,
                                            const mpt::v1::PipelineSpec& spec,
                                            const std::string& out_dir) {
  if (env.work_dir.empty()) {
    return absl::InvalidArgumentError("RunPipeline: a work folder is required");
  }
  PipelineOutcome outcome;
  const std::string source_dir = Join(out_dir, std::string(kSourceStage));
  const std::string distill_dir = Join(out_dir, std::string(kDistillationStage));
  std::vector<std::string> pending;
  std::vector<FinishedRecord> pending_records;
  for (const auto& task : spec.source().tasks()) {
    FinishedRecord record = SourceRecord(env, out_dir, spec, task);
    ASSIGN_OR_RETURN(const bool reuse, ReuseFinished(record));
    if (reuse) {
      outcome.source.push_back({task.name(), record.folder, {}, {}});
    } else {
      pending.push_back(task.name());
      pending_records.push_back(std::move(record));
    }
  }
  if (!pending.empty()) {
    // Each task's record is written as soon as its adapter is (tasks may
    // train side by side in lanes).
    StageEnv source_env = env;
    source_env.source_adapter_written = [&](const std::string& task) {
      for (const FinishedRecord& r : pending_records) {
        if (r.folder == Join(source_dir, task)) return WriteFinished(r);
      }
      return absl::InternalError(absl::StrCat("no record for source task ", task));
    };
    ASSIGN_OR_RETURN(auto trained, RunSourceTraining(source_env, spec.prompt(), spec.source(),
                                                     source_dir, pending));
    for (auto& t : trained) outcome.source.push_back(std::move(t));
  }
  // The distillation's task order is the teachers' order.
  std::vector<std::string> ordered;
  for (const auto& task : spec.distillation().tasks()) {
    ordered.push_back(Join(source_dir, task.name()));
  }
  const FinishedRecord distill_record = DistillationRecord(env, out_dir, spec, ordered);
  ASSIGN_OR_RETURN(const bool reuse_distillation, ReuseFinished(distill_record));
  if (reuse_distillation) {
    outcome.distillation = {"all", distill_dir, {}, {}};
  } else {
    ASSIGN_OR_RETURN(outcome.distillation, RunDistillation(env, spec.prompt(), spec.distillation(),
                                                           ordered, distill_dir));
    RETURN_IF_ERROR(WriteFinished(distill_record));
  }
  if (spec.target().tasks_size() > 0) {
    ASSIGN_OR_RETURN(outcome.target,
                     RunTargetAdaptation(env, spec.prompt(), spec.target(), distill_dir,
                                         Join(out_dir, std::string(kTargetStage))));
  }
  return outcome;
}

}  // namespace mpt
