#include "worker/daemon/assignment_runner.h"

#include <exception>
#include <optional>
#include <filesystem>
#include <system_error>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/spec/spec_paths.h"
#include "common/status_macros.h"
#include "worker/model/device_flags.h"
#include "worker/training/mpt_stages.h"
#include "common/spec/spec_loader.h"
#include "common/spec/stages.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// The folder, under the assignment's work folder, where its one training
// run keeps (and resumes from) its checkpoint; passed to the stage as
// StageEnv::checkpoint_dir.
constexpr char kCheckpointFolder[] = "checkpoint";

void AddOutcome(const TaskOutcome& outcome, mpt::v1::Progress* progress) {
  progress->set_step(std::max<int64_t>(progress->step(), outcome.train.steps));
  progress->set_total_steps(progress->step());
  progress->set_tokens_per_second(outcome.train.tokens_per_second);
  for (const auto& [name, value] : outcome.train.final_losses) {
    (*progress->mutable_losses())[name] = value;
  }
  for (const auto& [name, value] : outcome.metrics) (*progress->mutable_metrics())[name] = value;
  progress->set_eta_seconds(0);
}

// A source task's outcome as the daemon reports it.
absl::StatusOr<AssignmentOutput> ToAssignmentOutput(const absl::StatusOr<TaskOutcome>& outcome,
                                                    const std::string& task) {
  if (!outcome.ok()) return outcome.status();
  AssignmentOutput output;
  output.adapters.push_back(outcome->adapter);
  AddOutcome(*outcome, &output.final_progress);
  output.final_progress.set_stage(std::string(kSourceStage));
  output.final_progress.set_task(task);
  return output;
}

// Passes every event on, stamped with the dtype the stage's matrix products
// run in (for the worker's MFU against the peak in that dtype).
class ProductDtypeSink final : public ProgressSink {
 public:
  ProductDtypeSink(ProgressSink* next, std::string dtype)
      : next_(next), dtype_(std::move(dtype)) {}
  void OnEvent(const ProgressEvent& event) override {
    ProgressEvent stamped = event;
    stamped.product_dtype = dtype_;
    next_->OnEvent(stamped);
  }

 private:
  ProgressSink* const next_;
  const std::string dtype_;
};

// Moves a fetched checkpoint (if any) to the folder the stage keeps its
// checkpoint in, under the assignment's work folder; returns that folder.
absl::StatusOr<std::string> PlaceCheckpoint(const AssignmentContext& context) {
  const std::string dir = (fs::path(context.work_dir) / kCheckpointFolder).string();
  if (context.checkpoint.empty()) return dir;
  std::error_code ec;
  fs::create_directories(fs::path(dir).parent_path(), ec);
  fs::remove_all(dir, ec);
  fs::rename(context.checkpoint, dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot put the checkpoint in place at ", dir, ": ", ec.message()));
  }
  MPT_LOG(INFO) << context.assignment->id() << ": resuming from the fetched checkpoint";
  return dir;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AssignmentRunner>> AssignmentRunner::Create(
    const AssignmentRunnerOptions& options) {
  if (options.max_cached_models < 1) {
    return absl::InvalidArgumentError("max_cached_models: must be at least 1");
  }
  if (options.collective != "auto" && options.collective != "gloo" &&
      options.collective != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--collective: \"", options.collective, "\" is not one of auto, gloo, nccl"));
  }
  ASSIGN_OR_RETURN(const c10::Device device, ParseDeviceFlag(options.device, "--device"));
  if (options.collective == "nccl" && !(device.is_cuda() && NcclAvailable())) {
    return absl::InvalidArgumentError(
        "--collective: nccl needs a CUDA device and a build with NCCL");
  }
  ASSIGN_OR_RETURN(AutocastMode autocast, ParseAutocast(options.autocast));
  BaseModelOptions load;
  load.device = device;
  RETURN_IF_ERROR(ApplyModelDtypeFlag(options.dtype, &load, "--dtype"));
  std::unique_ptr<AssignmentRunner> runner(new AssignmentRunner(options, load, autocast));
  for (const std::string& folder : options.preload_models) {
    // A folder the worker advertises but cannot load would only fail the
    // jobs sent to it: refuse to start instead.
    absl::StatusOr<LoadedModel> loaded = runner->Model(folder);
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(),
                          absl::StrCat("--models: cannot load ", folder, ": ",
                                       loaded.status().message()));
    }
  }
  return runner;
}

std::vector<std::string> AssignmentRunner::collectives() const {
  std::vector<std::string> kinds{"gloo"};
  if (device_.is_cuda() && NcclAvailable()) kinds.push_back("nccl");
  return kinds;
}

std::string AssignmentRunner::CollectiveKind() const {
  if (options_.collective != "auto") return options_.collective;
  return device_.is_cuda() && NcclAvailable() ? "nccl" : "gloo";
}

absl::StatusOr<AssignmentRunner::LoadedModel> AssignmentRunner::Model(const std::string& folder) {
  for (auto it = cache_.begin(); it != cache_.end(); ++it) {
    if (it->folder == folder) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front();
    }
  }
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(BaseModel base, LoadBaseModel(folder, load_options_));
  MPT_LOG(INFO) << "loaded " << folder << " (" << base.kind.model_type << ") on "
                << device_.str() << " in " << c10::toString(base.model->dtype()) << " ("
                << base.model->num_parameters() << " parameters) in "
                << absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)));
  while (static_cast<int>(cache_.size()) >= options_.max_cached_models) cache_.pop_back();
  cache_.push_front(LoadedModel{folder, std::move(base)});
  return cache_.front();
}

void AssignmentRunner::PrepareProducts(c10::ScalarType product_dtype) const {
  // In the stage's log, where the job's owner sees it.
  if (std::string warning = Bf16PrecisionWarning(device_, product_dtype); !warning.empty()) {
    MPT_LOG(WARNING) << warning;
  }
  if (!options_.compute_threads.has_value() || !device_.is_cpu()) return;
  ComputeThreads threads = *options_.compute_threads;
  UseThreadsForProducts(&threads, product_dtype);
}

absl::StatusOr<AssignmentOutput> AssignmentRunner::Run(const AssignmentContext& context) {
  try {
    return RunUnsafe(context);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

absl::Status AssignmentRunner::CheckSpecPaths(const mpt::v1::PipelineSpec& spec) const {
  if (options_.data_roots.empty()) return absl::OkStatus();
  return CheckPathsWithinRoots(ServiceFilePaths(spec), options_.data_roots, "worker",
                               "--data_roots");
}

absl::StatusOr<AssignmentOutput> AssignmentRunner::RunUnsafe(const AssignmentContext& context) {
  const mpt::v1::Assignment& a = *context.assignment;
  mpt::v1::PipelineSpec spec = a.spec();
  ApplyDefaults(&spec);
  if (spec.base_model().empty()) {
    return absl::InvalidArgumentError("spec.base_model: empty in the assignment");
  }
  RETURN_IF_ERROR(CheckSpecPaths(spec));
  ASSIGN_OR_RETURN(const AutocastMode autocast, SpecAutocast(spec.autocast(), autocast_));
  if (autocast != autocast_) {
    MPT_LOG(INFO) << "autocast " << AutocastName(autocast) << ", as the job's spec says";
  }
  ASSIGN_OR_RETURN(LoadedModel loaded, Model(spec.base_model()));
  const c10::ScalarType product_dtype = ProductDtype(loaded.base.model->dtype(), autocast);
  PrepareProducts(product_dtype);

  // The stage, its label (reported as the progress task) and its spec.
  std::string stage;
  std::string label;
  mpt::v1::TargetAdaptationSpec target = spec.target();
  switch (a.stage_kind()) {
    case mpt::v1::SOURCE_TRAINING:
      stage = std::string(kSourceStage);
      label = a.task();
      break;
    case mpt::v1::DISTILLATION:
      stage = std::string(kDistillationStage);
      break;
    case mpt::v1::TARGET_ADAPTATION: {
      stage = std::string(kTargetStage);
      if (target.shared()) {
        label = "shared";
      } else if (!a.task().empty()) {
        // One target task alone, as in RunTargetAdaptation over all of
        // them: the same data and the same batches (train.seed). Inits that
        // draw random numbers (RANDOM, TEXT, ONLY_SOURCE_SHARED) use
        // seed + 0 here where one process uses seed + k; the default
        // AVERAGE_SOURCE_TASKS and EXACT_SOURCE_TASK draw none, so their
        // results equal mpt_train's exactly.
        int index = -1;
        for (int k = 0; k < target.tasks_size(); ++k) {
          if (target.tasks(k).name() == a.task()) index = k;
        }
        if (index < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("assignment task \"", a.task(), "\" is not a target task"));
        }
        mpt::v1::TaskData task = target.tasks(index);
        target.clear_tasks();
        *target.add_tasks() = task;
        label = a.task();
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("assignment ", a.id(), ": stage_kind ", a.stage_kind(),
                       " is not SOURCE_TRAINING, DISTILLATION or TARGET_ADAPTATION"));
  }

  // The stage trains once (one task, the distillation or the shared
  // group), so one folder holds its checkpoint. Gang ranks cancel together:
  // the trainer carries each rank's `cancelled` in its per-step all-reduce.
  StageEnv env;
  env.model = loaded.base.model.get();
  env.tokenizer = loaded.base.tokenizer.get();
  env.model_digest = loaded.base.digest;
  std::optional<ProductDtypeSink> dtype_sink;
  if (context.sink != nullptr) {
    dtype_sink.emplace(context.sink, ProductDtypeName(product_dtype));
    env.sink = &*dtype_sink;
  }
  env.work_dir = context.work_dir;
  env.cancelled = context.cancelled;
  env.lanes = options_.lanes;
  ASSIGN_OR_RETURN(env.checkpoint_dir, PlaceCheckpoint(context));

  std::unique_ptr<Communicator> comm;
  if (a.world_size() > 1) {
    if (context.store == nullptr) {
      return absl::InvalidArgumentError("a gang assignment needs a rendezvous store");
    }
    CommunicatorOptions copts = options_.communicator;
    if (device_.is_cuda()) copts.cuda_device = device_.has_index() ? device_.index() : 0;
    const absl::Time start = absl::Now();
    // The coordinator picks the engine every rank has; "auto" decides only
    // when it does not say.
    const std::string kind = a.collective().empty() ? CollectiveKind() : a.collective();
    ASSIGN_OR_RETURN(comm, MakeCommunicator(kind, a.rank(), a.world_size(), context.store, copts));
    MPT_LOG(INFO) << a.id() << ": joined gang " << a.group() << " as rank " << a.rank() << " of "
                  << a.world_size() << " over " << kind << " in "
                  << absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)));
    env.comm = comm.get();
    // A cancel aborts the collective at once: a frozen peer would
    // otherwise hold this rank in it until the collective timeout.
    if (context.set_abort) context.set_abort([c = comm.get()] { c->Abort(); });
  }
  // Unregisters the hook before `comm` goes (declared after it, so it runs
  // first on every return).
  struct AbortHookGuard {
    const AssignmentContext& context;
    bool armed;
    ~AbortHookGuard() {
      if (armed && context.set_abort) context.set_abort(nullptr);
    }
  } abort_hook_guard{context, comm != nullptr};

  AssignmentOutput output;
  absl::Status status;
  // The stage trains and evaluates on this thread.
  AutocastScope autocast_scope(device_, autocast);
  switch (a.stage_kind()) {
    case mpt::v1::SOURCE_TRAINING: {
      std::vector<std::string> only;
      if (!a.task().empty()) only.push_back(a.task());
      absl::StatusOr<std::vector<TaskOutcome>> r =
          RunSourceTraining(env, spec.prompt(), spec.source(),
                            (fs::path(context.out_dir) / std::string(kSourceStage)).string(), only);
      status = r.status();
      if (r.ok()) {
        if (r->empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("assignment task \"", a.task(), "\" is not a source task"));
        }
        for (const TaskOutcome& o : *r) {
          output.adapters.push_back(o.adapter);
          AddOutcome(o, &output.final_progress);
        }
      }
      break;
    }
    case mpt::v1::DISTILLATION: {
      if (context.teachers.empty()) {
        return absl::InvalidArgumentError("distillation assignment without teacher inputs");
      }
      absl::StatusOr<TaskOutcome> r =
          RunDistillation(env, spec.prompt(), spec.distillation(), context.teachers,
                          (fs::path(context.out_dir) / std::string(kDistillationStage)).string());
      status = r.status();
      if (r.ok()) {
        output.adapters.push_back(r->adapter);
        AddOutcome(*r, &output.final_progress);
      }
      break;
    }
    default: {
      if (context.source_adapter.empty()) {
        return absl::InvalidArgumentError(
            "target adaptation assignment without a source_adapter input");
      }
      absl::StatusOr<std::vector<TaskOutcome>> r =
          RunTargetAdaptation(env, spec.prompt(), target, context.source_adapter,
                              (fs::path(context.out_dir) / std::string(kTargetStage)).string());
      status = r.status();
      if (r.ok()) {
        for (const TaskOutcome& o : *r) {
          output.adapters.push_back(o.adapter);
          AddOutcome(o, &output.final_progress);
        }
      }
      break;
    }
  }
  if (comm != nullptr && !status.ok() && context.cancelled && context.cancelled()) {
    // Aborted (or broken by a peer's abort) because the assignment was
    // cancelled: the cancel is the reason, not the collective.
    return absl::CancelledError(absl::StrCat("cancelled during the gang's collectives (",
                                             status.message(), ")"));
  }
  if (comm != nullptr && absl::IsUnavailable(status)) {
    return absl::UnavailableError(
        absl::StrCat("a peer of gang ", a.group(), " is gone: ", status.message()));
  }
  RETURN_IF_ERROR(status);
  output.final_progress.set_stage(stage);
  output.final_progress.set_task(label);
  return output;
}

std::vector<absl::StatusOr<AssignmentOutput>> AssignmentRunner::RunPack(
    const std::vector<const AssignmentContext*>& contexts) {
  try {
    return RunPackUnsafe(contexts);
  } catch (const c10::Error& e) {
    return std::vector<absl::StatusOr<AssignmentOutput>>(
        contexts.size(), absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return std::vector<absl::StatusOr<AssignmentOutput>>(contexts.size(),
                                                         absl::InternalError(e.what()));
  }
}

std::vector<absl::StatusOr<AssignmentOutput>> AssignmentRunner::RunPackUnsafe(
    const std::vector<const AssignmentContext*>& contexts) {
  std::vector<absl::StatusOr<AssignmentOutput>> results(
      contexts.size(), absl::InternalError("pack member not run"));
  std::vector<SourcePackTask> tasks;
  std::vector<size_t> task_of;  // index into `contexts` of tasks[i]
  std::string model_folder;
  std::optional<AutocastMode> pack_autocast;
  for (size_t i = 0; i < contexts.size(); ++i) {
    const AssignmentContext& c = *contexts[i];
    const mpt::v1::Assignment& a = *c.assignment;
    mpt::v1::PipelineSpec spec = a.spec();
    ApplyDefaults(&spec);
    if (a.stage_kind() != mpt::v1::SOURCE_TRAINING || a.world_size() > 1 || a.task().empty()) {
      results[i] = absl::InvalidArgumentError(absl::StrCat(
          "assignment ", a.id(), ": only single-worker source stages of one task can be packed"));
      continue;
    }
    if (spec.base_model().empty()) {
      results[i] = absl::InvalidArgumentError("spec.base_model: empty in the assignment");
      continue;
    }
    if (absl::Status inside = CheckSpecPaths(spec); !inside.ok()) {
      results[i] = inside;
      continue;
    }
    if (model_folder.empty()) model_folder = spec.base_model();
    if (spec.base_model() != model_folder) {
      results[i] = absl::InvalidArgumentError(
          absl::StrCat("assignment ", a.id(), ": base model ", spec.base_model(),
                       " differs from its pack's ", model_folder));
      continue;
    }
    absl::StatusOr<AutocastMode> autocast = SpecAutocast(spec.autocast(), autocast_);
    if (!autocast.ok()) {
      results[i] = autocast.status();
      continue;
    }
    if (!pack_autocast.has_value()) pack_autocast = *autocast;
    if (*autocast != *pack_autocast) {
      results[i] = absl::InvalidArgumentError(
          absl::StrCat("assignment ", a.id(), ": autocast ", AutocastName(*autocast),
                       " differs from its pack's ", AutocastName(*pack_autocast)));
      continue;
    }
    absl::StatusOr<std::string> checkpoint_dir = PlaceCheckpoint(c);
    if (!checkpoint_dir.ok()) {
      results[i] = checkpoint_dir.status();
      continue;
    }
    SourcePackTask t;
    t.prompt = spec.prompt();
    t.source = spec.source();
    t.task = a.task();
    t.out_dir = (fs::path(c.out_dir) / std::string(kSourceStage)).string();
    t.checkpoint_dir = *checkpoint_dir;
    t.sink = c.sink;
    t.cancelled = c.cancelled;
    if (c.done) {
      const std::string task = a.task();
      t.on_end = [&c, task](const absl::StatusOr<TaskOutcome>& outcome) {
        c.done(ToAssignmentOutput(outcome, task));
      };
    }
    tasks.push_back(std::move(t));
    task_of.push_back(i);
  }
  if (tasks.empty()) return results;
  absl::StatusOr<LoadedModel> loaded = Model(model_folder);
  if (!loaded.ok()) {
    for (size_t i : task_of) results[i] = loaded.status();
    return results;
  }
  StageEnv env;
  env.model = loaded->base.model.get();
  env.tokenizer = loaded->base.tokenizer.get();
  env.model_digest = loaded->base.digest;
  env.lanes = options_.lanes;
  MPT_LOG(INFO) << "training " << tasks.size() << " source stages in one pass"
                << (options_.lanes > 1 && device_.is_cpu()
                        ? absl::StrCat(", side by side in up to ", options_.lanes, " lanes")
                        : "");
  std::vector<absl::StatusOr<TaskOutcome>> outcomes;
  if (*pack_autocast != autocast_) {
    MPT_LOG(INFO) << "autocast " << AutocastName(*pack_autocast) << ", as the jobs' specs say";
  }
  const c10::ScalarType product_dtype =
      ProductDtype(loaded->base.model->dtype(), *pack_autocast);
  PrepareProducts(product_dtype);
  std::vector<std::unique_ptr<ProductDtypeSink>> dtype_sinks;
  for (SourcePackTask& t : tasks) {
    if (t.sink == nullptr) continue;
    dtype_sinks.push_back(std::make_unique<ProductDtypeSink>(t.sink, ProductDtypeName(product_dtype)));
    t.sink = dtype_sinks.back().get();
  }
  {
    AutocastScope autocast_scope(device_, *pack_autocast);
    outcomes = RunSourcePack(env, tasks);
  }
  for (size_t k = 0; k < tasks.size(); ++k) {
    results[task_of[k]] = ToAssignmentOutput(outcomes[k], tasks[k].task);
  }
  return results;
}

}  // namespace mpt
