#include "worker/training/preflight.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "worker/data/jsonl_dataset.h"
#include "worker/lm/model_family.h"
#include "worker/model/hf_tokenizer.h"
#include "worker/model/llama_config.h"
#include "worker/model/t5_config.h"
#include "worker/model/t5_tokenizer.h"
#include "worker/prompts/adapter_io.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// Problems found so far; the code of the first one is kept.
class Problems {
 public:
  void Add(absl::string_view where, const absl::Status& status) {
    if (status.ok()) return;
    if (code_ == absl::StatusCode::kOk) code_ = status.code();
    messages_.push_back(absl::StrCat(where, ": ", status.message()));
  }
  absl::Status ToStatus() const {
    if (messages_.empty()) return absl::OkStatus();
    return absl::Status(code_, absl::StrJoin(messages_, "; "));
  }

 private:
  absl::StatusCode code_ = absl::StatusCode::kOk;
  std::vector<std::string> messages_;
};

// A file read once per task even when several stages name it.
using Seen = std::set<std::pair<std::string, std::string>>;

void CheckData(absl::string_view where, const std::string& path, const std::string& task,
               Seen* seen, Problems* problems) {
  if (!seen->emplace(path, task).second) return;
  JsonlOptions options;
  options.default_task = task;
  options.allowed_tasks = {task};
  problems->Add(where, ReadJsonl(path, options).status());
}

void CheckTasks(absl::string_view stage,
                const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& tasks,
                Seen* seen, Problems* problems) {
  for (int i = 0; i < tasks.size(); ++i) {
    const mpt::v1::TaskData& t = tasks[i];
    const std::string field = absl::StrCat(stage, ".tasks[", i, "]");
    CheckData(absl::StrCat(field, ".train_path"), t.train_path(), t.name(), seen, problems);
    if (!t.eval_path().empty()) {
      CheckData(absl::StrCat(field, ".eval_path"), t.eval_path(), t.name(), seen, problems);
    }
  }
}

absl::Status CheckWritable(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return FileErrnoStatus(dir, "cannot create the folder", ec.value());
  const std::string probe =
      (fs::path(dir) / absl::StrCat(".mpt_write_probe.", getpid())).string();
  const int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return FileErrnoStatus(dir, "cannot create a file in the folder", errno);
  close(fd);
  if (unlink(probe.c_str()) != 0) return FileErrnoStatus(probe, "cannot remove", errno);
  return absl::OkStatus();
}

}  // namespace

absl::Status PreflightCheck(const mpt::v1::PipelineSpec& spec, const PreflightOptions& options) {
  Problems problems;
  const std::string& stage = options.stage;
  const bool all = stage == "all";
  Seen seen;

  // The model's small files first: everything else is pointless without it.
  const std::string config = (fs::path(spec.base_model()) / "config.json").string();
  absl::StatusOr<ModelKind> kind = ReadModelKind(spec.base_model());
  problems.Add("base_model", kind.status());
  if (kind.ok() && kind->family == ModelFamily::kEncoderDecoder) {
    problems.Add("base_model", T5Config::FromJsonFile(config).status());
    problems.Add("base_model", T5Tokenizer::Load(spec.base_model()).status());
  } else if (kind.ok()) {
    problems.Add("base_model", LlamaConfig::FromJsonFile(config).status());
    problems.Add("base_model", HfTokenizer::Load(spec.base_model()).status());
    if (spec.prompt().num_transformer_submodules() != 1) {
      problems.Add("prompt.num_transformer_submodules",
                   absl::InvalidArgumentError(absl::StrCat(
                       "is ", spec.prompt().num_transformer_submodules(), "; the base model (",
                       kind->model_type, ") is decoder-only and takes 1 (PEFT's CAUSAL_LM)")));
    }
  }

  if (all || stage == "source") CheckTasks("source", spec.source().tasks(), &seen, &problems);
  if (all || stage == "distillation") {
    CheckTasks("distillation", spec.distillation().tasks(), &seen, &problems);
  }
  if (all || stage == "target") CheckTasks("target", spec.target().tasks(), &seen, &problems);

  if ((all || stage == "source") && spec.source().init() == "ADAPTERS") {
    const auto& inits = spec.source().init_adapters();
    for (int i = 0; i < inits.size(); ++i) {
      problems.Add(absl::StrCat("source.init_adapters[", i, "]"), ReadAdapter(inits[i]).status());
    }
  }
  if (stage == "distillation") {
    const auto& teachers = spec.distillation().teacher_adapters();
    for (int i = 0; i < teachers.size(); ++i) {
      problems.Add(absl::StrCat("distillation.teacher_adapters[", i, "]"),
                   ReadAdapter(teachers[i]).status());
    }
  }
  if (stage == "target" && !spec.target().source_adapter().empty()) {
    problems.Add("target.source_adapter", ReadAdapter(spec.target().source_adapter()).status());
  }

  for (const std::string& dir : options.output_dirs) {
    problems.Add("output folder", CheckWritable(dir));
  }
  return problems.ToStatus();
}

}  // namespace mpt
