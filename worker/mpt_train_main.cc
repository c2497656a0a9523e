// mpt_train: runs Multitask Prompt Tuning in one process from a spec file.
//
//   mpt_train --spec=pipeline.textproto --out=runs/demo
//   mpt_train --spec=spec.json --stage=target --out=runs/new-task
//
// Stages: all (default), source, distillation, target. With --baselines the
// target tasks are also trained by plain prompt tuning from a random prompt
// at the same step budget, and a comparison table is printed.
#include <torch/utils.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/lm/base_model_loader.h"
#include "worker/model/autocast.h"
#include "worker/model/compute_threads.h"
#include "worker/model/device_flags.h"
#include "worker/output_paths.h"
#include "worker/training/mpt_stages.h"
#include "worker/training/preflight.h"
#include "common/progress/progress.h"
#include "common/spec/spec_loader.h"
#include "common/spec/spec_paths.h"
#include "common/spec/stages.h"

ABSL_FLAG(std::string, spec, "", "Pipeline spec file: JSON (.json) or protobuf text format.");
ABSL_FLAG(std::string, out, "", "Output folder for adapters and the summary.");
ABSL_FLAG(std::string, stage, "all", "all, source, distillation or target.");
ABSL_FLAG(std::string, work_dir, "",
          "Checkpoint folder (default: <out>/.work). Runs resume from it.");
ABSL_FLAG(bool, baselines, false,
          "Also train the target tasks by plain prompt tuning and print a comparison.");
ABSL_FLAG(double, baseline_learning_rate, 0,
          "Learning rate of the --baselines prompt tuning (0: the target stage's).");
ABSL_FLAG(std::string, progress, "auto",
          "auto (a live bar on a terminal, plain lines otherwise), plain, or none.");
ABSL_FLAG(std::string, events, "", "Also write every progress event as JSON lines here.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:N].");
ABSL_FLAG(std::string, dtype, "auto",
          "The frozen base model's dtype: auto (a decoder-only model in the precision its "
          "config.json states where the device computes in it: bfloat16 anywhere, float16 on "
          "CUDA; float32 otherwise and for T5), float32, bfloat16 or float16 (prompts and "
          "their optimiser state stay fp32).");
ABSL_FLAG(std::string, autocast, "off",
          "off, or bf16: the frozen model computes in bfloat16 under autocast while the "
          "prompts and their optimiser state stay fp32 (worker/model/autocast.h). For a spec "
          "whose `autocast` field is empty; one that names a precision gets it.");
ABSL_FLAG(int, threads, 0,
          "Compute threads in total, libtorch's and BLAS's together (0: every usable core; "
          "more than the usable cores is cut to them). See worker/model/compute_threads.h.");
ABSL_FLAG(int, lanes, 0,
          "CPU lanes, one compute thread each: independent tasks of a stage (source tasks, "
          "target tasks, baselines) train side by side, and a run alone (the distillation, a "
          "single task) is split into that many data-parallel thread ranks (0: one per compute "
          "thread; 1: one run after another on one thread plus BLAS's). See "
          "worker/training/lanes.h.");

namespace mpt {
namespace {

namespace fs = std::filesystem;

std::string Metric(const NamedValues& values, const std::string& name) {
  for (const auto& [k, v] : values) {
    if (k == name || (k.size() > name.size() + 1 &&
                      k.compare(k.size() - name.size() - 1, std::string::npos, "/" + name) == 0)) {
      return absl::StrFormat("%.1f%%", 100 * v);
    }
  }
  return "-";
}

void PrintOutcomes(const std::string& title, const std::vector<TaskOutcome>& outcomes) {
  std::printf("\n%s\n", title.c_str());
  for (const TaskOutcome& o : outcomes) {
    std::printf("  %-24s accuracy %-7s loss %-8s -> %s\n", o.task.c_str(),
                Metric(o.metrics, "accuracy").c_str(),
                o.train.final_losses.empty()
                    ? "-"
                    : absl::StrFormat("%.4f", o.train.final_losses[0].second).c_str(),
                o.adapter.c_str());
  }
}

void PrintComparison(const std::vector<BaselineOutcome>& baselines,
                     const std::vector<TaskOutcome>& mpt, int steps) {
  std::printf("\nTarget tasks, accuracy after %d steps each:\n", steps);
  std::printf("  %-24s %14s %14s %14s\n", "task", "random prompt", "prompt tuning", "MPT");
  for (const BaselineOutcome& b : baselines) {
    std::string mpt_value = "-";
    for (const TaskOutcome& o : mpt) {
      if (o.task == b.task) mpt_value = Metric(o.metrics, "accuracy");
    }
    std::printf("  %-24s %14s %14s %14s\n", b.task.c_str(),
                Metric(b.random_prompt, "accuracy").c_str(),
                Metric(b.prompt_tuning.metrics, "accuracy").c_str(), mpt_value.c_str());
  }
}

// Validates what a single stage needs of a completed spec: its own part,
// the prompt shape and the precision.
absl::Status ValidateForStage(const mpt::v1::PipelineSpec& spec, const std::string& stage) {
  if (spec.base_model().empty()) {
    return absl::InvalidArgumentError(
        "base_model: required (a Hugging Face model folder: T5 or a Llama-family decoder-only "
        "model)");
  }
  RETURN_IF_ERROR(ValidateAutocast(spec.autocast()));
  RETURN_IF_ERROR(ValidatePromptSpec(spec.prompt()));
  if (stage == kSourceStage) RETURN_IF_ERROR(ValidateSourceTrainingSpec(spec.source()));
  if (stage == kDistillationStage) {
    RETURN_IF_ERROR(ValidateDistillationSpec(spec.distillation()));
    if (spec.distillation().teacher_adapters_size() != spec.distillation().tasks_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "distillation.teacher_adapters: ", spec.distillation().teacher_adapters_size(),
          " adapters for ", spec.distillation().tasks_size(),
          " tasks; give one teacher adapter folder per task, in the same order"));
    }
  }
  if (stage == kTargetStage) {
    RETURN_IF_ERROR(ValidateTargetAdaptationSpec(spec.target()));
    if (spec.target().source_adapter().empty() && spec.target().init() != "TEACHER_MEAN") {
      return absl::InvalidArgumentError(
          "target.source_adapter: required when the target stage runs on its own");
    }
  }
  return absl::OkStatus();
}

// Every file and folder the spec names, and the spec itself: what an output
// must not overwrite.
std::vector<InputPath> InputsOf(const mpt::v1::PipelineSpec& spec, const std::string& spec_path) {
  std::vector<InputPath> inputs{{"--spec", spec_path}};
  for (SpecPath& p : SpecInputPaths(spec)) inputs.push_back({std::move(p.field), std::move(p.path)});
  return inputs;
}

// Reads, completes and validates the spec; a single stage needs only its
// own part (and the prompt shape). Problems name the file, as
// LoadPipelineSpec's do.
absl::StatusOr<mpt::v1::PipelineSpec> LoadSpecForStage(const std::string& path,
                                                       const std::string& stage) {
  if (stage == "all") return LoadPipelineSpec(path);
  ASSIGN_OR_RETURN(mpt::v1::PipelineSpec spec, ReadPipelineSpec(path));
  ResolveSpecPaths(fs::absolute(path).parent_path().string(), &spec);
  ApplyDefaults(&spec);
  if (absl::Status s = ValidateForStage(spec, stage); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return spec;
}

absl::Status Main() {
  const std::string spec_path = absl::GetFlag(FLAGS_spec);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (spec_path.empty()) return absl::InvalidArgumentError("--spec: required");
  if (out.empty()) return absl::InvalidArgumentError("--out: required");
  const std::string stage = absl::GetFlag(FLAGS_stage);
  if (stage != "all" && StageKindFromName(stage) == mpt::v1::JOB_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--stage: \"", stage, "\" is not one of all, source, distillation, target"));
  }
  const double baseline_lr = absl::GetFlag(FLAGS_baseline_learning_rate);
  if (!(baseline_lr == 0 || (baseline_lr > 0 && baseline_lr <= kLearningRateRange.max))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--baseline_learning_rate: must be in (0, ", kLearningRateRange.max,
                     "], or 0 for the target stage's rate; got ", baseline_lr));
  }
  ASSIGN_OR_RETURN(mpt::v1::PipelineSpec spec, LoadSpecForStage(spec_path, stage));
  const std::vector<InputPath> inputs = InputsOf(spec, spec_path);
  RETURN_IF_ERROR(CheckOutputIsNotAnInput(absl::GetFlag(FLAGS_events), "--events", inputs));
  const std::string work_dir = absl::GetFlag(FLAGS_work_dir).empty()
                                   ? (fs::path(out) / ".work").string()
                                   : absl::GetFlag(FLAGS_work_dir);
  // The folders this run replaces (its stages' adapters and checkpoints)
  // must hold no input.
  std::vector<std::string> stages;
  if (stage == "all") {
    stages = {std::string(kSourceStage), std::string(kDistillationStage),
              std::string(kTargetStage)};
  } else {
    stages = {stage};
  }
  if (absl::GetFlag(FLAGS_baselines)) stages.push_back("baseline");
  std::vector<std::string> replaced_out, replaced_work;
  for (const std::string& s : stages) {
    replaced_out.push_back((fs::path(out) / s).string());
    replaced_work.push_back((fs::path(work_dir) / s).string());
  }
  RETURN_IF_ERROR(CheckNoInputInside(replaced_out, "--out", inputs));
  RETURN_IF_ERROR(CheckNoInputInside(replaced_work, "--work_dir", inputs));
  // Every input read and every output folder tried before the first step.
  PreflightOptions preflight;
  preflight.stage = stage;
  preflight.output_dirs = {out, work_dir};
  RETURN_IF_ERROR(PreflightCheck(spec, preflight));
  ASSIGN_OR_RETURN(const AutocastMode flag_autocast, ParseAutocast(absl::GetFlag(FLAGS_autocast)));
  // The spec's precision, when it names one, is the job's: it wins over the flag.
  ASSIGN_OR_RETURN(const AutocastMode autocast, SpecAutocast(spec.autocast(), flag_autocast));
  ComputeThreadOptions thread_options;
  thread_options.total = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(ComputeThreads threads, ApplyComputeThreads(thread_options));
  BaseModelOptions load;
  ASSIGN_OR_RETURN(load.device, ParseDeviceFlag(absl::GetFlag(FLAGS_device)));
  ASSIGN_OR_RETURN(const int lanes,
                   PlanLanes(absl::GetFlag(FLAGS_lanes), threads, load.device.is_cpu()));
  MPT_LOG(INFO) << "mpt_train: " << Describe(threads) << ", lanes " << lanes << ", device "
                << absl::GetFlag(FLAGS_device) << ", autocast " << AutocastName(autocast);
  if (std::string hint = NativeBf16Hint(load.device, autocast); !hint.empty()) {
    MPT_LOG(INFO) << "mpt_train: " << hint;
  }
  RETURN_IF_ERROR(ApplyModelDtypeFlag(absl::GetFlag(FLAGS_dtype), &load));
  ASSIGN_OR_RETURN(BaseModel base, LoadBaseModel(spec.base_model(), load));
  const c10::ScalarType product_dtype = ProductDtype(base.model->dtype(), autocast);
  if (load.device.is_cpu()) UseThreadsForProducts(&threads, product_dtype);
  if (std::string warning = Bf16PrecisionWarning(load.device, product_dtype); !warning.empty()) {
    MPT_LOG(WARNING) << "mpt_train: " << warning;
  }
  // Every stage below trains and evaluates on this thread.
  AutocastScope autocast_scope(load.device, autocast);

  FanOutProgressSink sink;
  const std::string mode = absl::GetFlag(FLAGS_progress);
  if (mode == "auto") {
    sink.AddSubscriber(TerminalProgressSink::ForStderr());
  } else if (mode == "plain") {
    sink.AddSubscriber(std::make_shared<TerminalProgressSink>(&std::cerr, /*live=*/false));
  } else if (mode != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("--progress: \"", mode, "\" is not one of auto, plain, none"));
  }
  if (!absl::GetFlag(FLAGS_events).empty()) {
    ASSIGN_OR_RETURN(auto events, JsonLinesProgressSink::OpenFile(absl::GetFlag(FLAGS_events)));
    sink.AddSubscriber(std::move(events));
  }

  StageEnv env;
  env.model = base.model.get();
  env.tokenizer = base.tokenizer.get();
  env.model_digest = base.digest;
  env.sink = &sink;
  env.work_dir = work_dir;
  env.lanes = lanes;
  std::vector<TaskOutcome> targets;
  if (stage == "all") {
    ASSIGN_OR_RETURN(PipelineOutcome p, RunPipeline(env, spec, out));
    PrintOutcomes("Source prompts (teachers):", p.source);
    PrintOutcomes("Distillation (shared prompt + task factors):", {p.distillation});
    targets = p.target;
  } else if (stage == kSourceStage) {
    ASSIGN_OR_RETURN(auto s,
                     RunSourceTraining(env, spec.prompt(), spec.source(),
                                       (fs::path(out) / std::string(kSourceStage)).string()));
    PrintOutcomes("Source prompts (teachers):", s);
  } else if (stage == kDistillationStage) {
    const auto& d = spec.distillation();
    std::vector<std::string> teachers(d.teacher_adapters().begin(), d.teacher_adapters().end());
    ASSIGN_OR_RETURN(TaskOutcome o,
                     RunDistillation(env, spec.prompt(), d, teachers,
                                     (fs::path(out) / std::string(kDistillationStage)).string()));
    PrintOutcomes("Distillation (shared prompt + task factors):", {o});
  } else {
    ASSIGN_OR_RETURN(targets, RunTargetAdaptation(
                                  env, spec.prompt(), spec.target(), spec.target().source_adapter(),
                                  (fs::path(out) / std::string(kTargetStage)).string()));
  }
  if (!targets.empty()) PrintOutcomes("Target adaptation (from the shared prompt):", targets);
  if (absl::GetFlag(FLAGS_baselines) && spec.target().tasks_size() > 0) {
    // Plain prompt tuning often wants another rate than adaptation from a
    // shared prompt; the step budget stays the same.
    mpt::v1::TargetAdaptationSpec baseline = spec.target();
    if (baseline_lr > 0) {
      baseline.mutable_train()->mutable_optimizer()->set_learning_rate(baseline_lr);
    }
    ASSIGN_OR_RETURN(auto baselines, RunTargetBaselines(env, spec.prompt(), baseline,
                                                        (fs::path(out) / "baseline").string()));
    PrintComparison(baselines, targets, spec.target().train().steps());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains Multitask Prompt Tuning prompts from a spec file.\n"
      "  mpt_train --spec=FILE --out=FOLDER [--stage=all|source|distillation|target]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "mpt_train: unexpected argument \"%s\" (see --help)\n", rest[1]);
    return 2;
  }
  absl::Status status = mpt::Main();
  if (!status.ok()) {
    std::fprintf(stderr, "mpt_train: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ||
                   status.code() == absl::StatusCode::kNotFound
               ? 2
               : 1;
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
