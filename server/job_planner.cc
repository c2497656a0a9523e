#include "server/job_planner.h"

#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "common/spec/spec_loader.h"
#include "common/spec/spec_paths.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "common/spec/stages.h"
#include "server/resource_names.h"

namespace mpt {
namespace {

using coordinator::StageRecord;

constexpr size_t kMaxDisplayNameChars = 1024;
constexpr size_t kMaxRequestIdChars = 256;

// The position of the first control character of UTF-8 `text` (C0, DEL or
// C1), or -1: names shown in a terminal must not carry escape sequences.
int64_t FirstControlCharacter(absl::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F) return static_cast<int64_t>(i);
    if (c == 0xC2 && i + 1 < text.size()) {
      const unsigned char next = static_cast<unsigned char>(text[i + 1]);
      if (next >= 0x80 && next <= 0x9F) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

// Every string field of `message` (recursively) that is not valid UTF-8,
// as "<field path>: not valid UTF-8".
void CheckUtf8(const google::protobuf::Message& message, const std::string& prefix,
               std::vector<std::string>* problems) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const google::protobuf::FieldDescriptor* f : fields) {
    const std::string path = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    using FD = google::protobuf::FieldDescriptor;
    if (f->cpp_type() == FD::CPPTYPE_STRING && f->type() == FD::TYPE_STRING) {
      if (f->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, f); ++i) {
          if (!IsValidUtf8(reflection->GetRepeatedString(message, f, i))) {
            problems->push_back(absl::StrCat(path, "[", i, "]: not valid UTF-8"));
          }
        }
      } else if (!IsValidUtf8(reflection->GetString(message, f))) {
        problems->push_back(absl::StrCat(path, ": not valid UTF-8"));
      }
    } else if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, f); ++i) {
          CheckUtf8(reflection->GetRepeatedMessage(message, f, i),
                    absl::StrCat(path, "[", i, "]"), problems);
        }
      } else {
        CheckUtf8(reflection->GetMessage(message, f), path, problems);
      }
    }
  }
}

// The coordinator must not resolve paths against its own working folder:
// data and model paths must be absolute and free of ".." components.
void CheckServerPath(const std::string& path, const std::string& field,
                     std::vector<std::string>* problems) {
  if (path.empty()) return;  // "required" is reported by the validators
  if (path[0] != '/') {
    problems->push_back(absl::StrCat(field, ": \"", path,
                                     "\" is relative; the coordinator needs an absolute path "
                                     "(mptctl makes paths absolute before submitting)"));
    return;
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      problems->push_back(
          absl::StrCat(field, ": \"", path, "\" has a \"..\" component; give the path without it"));
      return;
    }
  }
}

void CheckTaskPaths(const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& tasks,
                    const std::string& stage, std::vector<std::string>* problems) {
  for (int i = 0; i < tasks.size(); ++i) {
    const std::string field = absl::StrCat(stage, ".tasks[", i, "]");
    CheckServerPath(tasks[i].train_path(), absl::StrCat(field, ".train_path"), problems);
    CheckServerPath(tasks[i].eval_path(), absl::StrCat(field, ".eval_path"), problems);
  }
}

}  // namespace

absl::StatusOr<JobPlan> PlanJob(const mpt::v1::SubmitJobRequest& request,
                                const JobPlannerOptions& options) {
  JobPlan plan;
  mpt::v1::PipelineSpec* spec = &plan.spec;
  std::vector<StageRecord>* stages = &plan.stages;
  std::vector<std::string> problems;
  auto add_status = [&](const absl::Status& s) {
    if (!s.ok()) problems.push_back(std::string(s.message()));
  };
  CheckUtf8(request, "", &problems);
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
  const mpt::v1::JobKind kind = request.kind();
  if (kind == mpt::v1::JOB_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "kind: required (PIPELINE, SOURCE_TRAINING, DISTILLATION or TARGET_ADAPTATION)");
  }
  if (!mpt::v1::JobKind_IsValid(kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kind: unknown job kind ", static_cast<int>(kind),
        " (PIPELINE, SOURCE_TRAINING, DISTILLATION or TARGET_ADAPTATION)"));
  }
  if (request.display_name().size() > kMaxDisplayNameChars) {
    problems.push_back(
        absl::StrCat("display_name: longer than ", kMaxDisplayNameChars, " characters"));
  }
  if (request.request_id().size() > kMaxRequestIdChars) {
    problems.push_back(
        absl::StrCat("request_id: longer than ", kMaxRequestIdChars, " characters"));
  }
  for (auto [field, value] : {std::make_pair("display_name", &request.display_name()),
                              std::make_pair("request_id", &request.request_id())}) {
    if (const int64_t at = FirstControlCharacter(*value); at >= 0) {
      problems.push_back(absl::StrCat(field, ": holds a control character at byte ", at,
                                      " (tabs, newlines and escape sequences are not allowed)"));
    }
  }

  if (!options.data_roots.empty()) {
    RETURN_IF_ERROR(CheckPathsWithinRoots(ServiceFilePaths(request.spec(), "spec."),
                                          options.data_roots, "coordinator", "--data_roots"));
  }
  SpecValidationOptions check;
  check.check_files = options.check_spec_files;
  *spec = request.spec();
  auto check_base_model = [&]() {
    if (spec->base_model().empty()) {
      problems.push_back("base_model: required (a Hugging Face model folder: T5 or a Llama-family decoder-only model)");
    } else if (options.check_spec_files) {
      std::error_code ec;
      if (!std::filesystem::is_directory(spec->base_model(), ec)) {
        problems.push_back(
            absl::StrCat("base_model: not a folder: ", spec->base_model()));
      }
    }
  };
  auto check_world_size = [&](int world_size) {
    if (world_size > options.max_world_size) {
      problems.push_back(absl::StrCat(
          "distillation.world_size: ", world_size, " is more than the ",
          options.max_world_size,
          " workers a gang may have in this cluster (the coordinator's --max_world_size)"));
    }
  };

  switch (kind) {
    case mpt::v1::PIPELINE:
      ApplyDefaults(spec);
      add_status(ValidatePipelineSpec(*spec, check));
      check_world_size(spec->distillation().world_size());
      break;
    case mpt::v1::SOURCE_TRAINING:
      ApplyDefaults(spec->mutable_prompt());
      ApplyDefaults(spec->mutable_source());
      spec->clear_distillation();
      spec->clear_target();
      check_base_model();
      add_status(ValidatePromptSpec(spec->prompt()));
      add_status(ValidateSourceTrainingSpec(spec->source(), check));
      break;
    case mpt::v1::DISTILLATION: {
      ApplyDefaults(spec->mutable_prompt());
      ApplyDefaults(spec->mutable_distillation());
      spec->clear_source();
      spec->clear_target();
      check_base_model();
      add_status(ValidatePromptSpec(spec->prompt()));
      add_status(ValidateDistillationSpec(spec->distillation(), check));
      check_world_size(spec->distillation().world_size());
      const auto& d = spec->distillation();
      if (d.teacher_adapters_size() != d.tasks_size()) {
        problems.push_back(absl::StrCat(
            "distillation.teacher_adapters: ", d.teacher_adapters_size(), " given for ",
            d.tasks_size(),
            " tasks (a distillation job needs one teacher adapter artefact per task, in order)"));
      }
      for (int i = 0; i < d.teacher_adapters_size(); ++i) {
        add_status(CheckArtifactName(d.teacher_adapters(i),
                                     absl::StrCat("distillation.teacher_adapters[", i, "]")));
      }
      break;
    }
    case mpt::v1::TARGET_ADAPTATION:
      ApplyDefaults(spec->mutable_prompt());
      ApplyDefaults(spec->mutable_target());
      spec->clear_source();
      spec->clear_distillation();
      check_base_model();
      add_status(ValidatePromptSpec(spec->prompt()));
      add_status(ValidateTargetAdaptationSpec(spec->target(), check));
      if (spec->target().source_adapter().empty()) {
        problems.push_back(
            "target.source_adapter: required for a target adaptation job (the artefact of a "
            "distillation, jobs/{job_id}/artifacts/{artifact_id})");
      } else {
        add_status(CheckArtifactName(spec->target().source_adapter(), "target.source_adapter"));
      }
      break;
    default:
      break;
  }
  if (kind != mpt::v1::PIPELINE) add_status(ValidateAutocast(spec->autocast()));
  CheckServerPath(spec->base_model(), "spec.base_model", &problems);
  CheckTaskPaths(spec->source().tasks(), "spec.source", &problems);
  CheckTaskPaths(spec->distillation().tasks(), "spec.distillation", &problems);
  CheckTaskPaths(spec->target().tasks(), "spec.target", &problems);
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));

  if (kind == mpt::v1::DISTILLATION) {
    for (int i = 0; i < spec->distillation().teacher_adapters_size(); ++i) {
      plan.required_adapters.push_back({absl::StrCat("distillation.teacher_adapters[", i, "]"),
                                        spec->distillation().teacher_adapters(i)});
    }
  }
  if (kind == mpt::v1::TARGET_ADAPTATION) {
    plan.required_adapters.push_back({"target.source_adapter", spec->target().source_adapter()});
  }

  // Expansion into stages.
  auto add_stage = [&](const std::string& id, mpt::v1::JobKind stage_kind,
                       const std::string& task) -> StageRecord& {
    StageRecord r;
    r.mutable_stage()->set_id(id);
    r.mutable_stage()->set_state(mpt::v1::QUEUED);
    // No progress until the first report: the public views add the
    // initial one (AddInitialProgress).
    r.set_index(static_cast<int>(stages->size()));
    r.set_kind(stage_kind);
    r.set_task(task);
    r.set_world_size(1);
    stages->push_back(std::move(r));
    return stages->back();
  };
  if (kind == mpt::v1::PIPELINE || kind == mpt::v1::SOURCE_TRAINING) {
    for (const auto& task : spec->source().tasks()) {
      add_stage(SourceStageId(task.name()), mpt::v1::SOURCE_TRAINING, task.name());
    }
  }
  if (kind == mpt::v1::PIPELINE || kind == mpt::v1::DISTILLATION) {
    StageRecord& d = add_stage(DistillationStageId(), mpt::v1::DISTILLATION, "");
    d.set_world_size(spec->distillation().world_size());
    const auto& dist = spec->distillation();
    for (int i = 0; i < dist.tasks_size(); ++i) {
      if (kind == mpt::v1::PIPELINE) {
        d.add_depends_on(SourceStageId(dist.tasks(i).name()));
      } else {
        mpt::v1::AssignmentInput* in = d.add_inputs();
        in->set_role("teacher");
        in->set_artifact(dist.teacher_adapters(i));
        in->set_task(dist.tasks(i).name());
      }
    }
  }
  if ((kind == mpt::v1::PIPELINE && spec->has_target()) || kind == mpt::v1::TARGET_ADAPTATION) {
    std::vector<std::string> targets;
    if (spec->target().shared()) {
      targets.push_back("");
    } else {
      for (const auto& task : spec->target().tasks()) targets.push_back(task.name());
    }
    for (const std::string& task : targets) {
      StageRecord& t = add_stage(TargetStageId(task),
                                 mpt::v1::TARGET_ADAPTATION, task);
      if (kind == mpt::v1::PIPELINE) {
        t.add_depends_on(DistillationStageId());
      } else {
        mpt::v1::AssignmentInput* in = t.add_inputs();
        in->set_role("source_adapter");
        in->set_artifact(spec->target().source_adapter());
      }
    }
  }
  return plan;
}

std::string RequestFingerprint(const mpt::v1::PipelineSpec& planned_spec, mpt::v1::JobKind kind,
                               const std::string& display_name) {
  std::string spec_bytes;
  {
    google::protobuf::io::StringOutputStream out(&spec_bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    planned_spec.SerializeToCodedStream(&coded);
  }
  Sha256 hash;
  hash.Update(absl::StrCat(spec_bytes.size(), ":"));
  hash.Update(spec_bytes);
  hash.Update(absl::StrCat("|", static_cast<int>(kind), "|", display_name.size(), ":"));
  hash.Update(display_name);
  return hash.HexDigest();
}

}  // namespace mpt
