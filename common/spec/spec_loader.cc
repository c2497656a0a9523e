#include "common/spec/spec_loader.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

using ::mpt::v1::DistillationSpec;
using ::mpt::v1::OptimizerSpec;
using ::mpt::v1::PipelineSpec;
using ::mpt::v1::PromptSpec;
using ::mpt::v1::SourceTrainingSpec;
using ::mpt::v1::TargetAdaptationSpec;
using ::mpt::v1::TaskData;
using ::mpt::v1::TrainSpec;

// Defaults, as documented in spec.proto.
constexpr int kDefaultNumVirtualTokens = 20;
constexpr int kDefaultNumTransformerSubmodules = 1;
constexpr int kDefaultNumRanks = 1;
constexpr int kDefaultBatchSize = 16;
constexpr int kDefaultMaxInputLength = 128;
constexpr int kDefaultMaxTargetLength = 32;
constexpr double kDefaultLearningRate = 0.3;
constexpr double kDefaultWeightDecay = 1e-5;
constexpr double kDefaultMaxGradNorm = 1.0;
constexpr double kDefaultLambda = 0.9;
constexpr double kDefaultTemperature = 1.0;
constexpr int kDefaultWorldSize = 1;
constexpr size_t kMaxTaskNameLength = 128;

const std::vector<std::string>& EvalModes() {
  static const auto* v = new std::vector<std::string>{"generate", "rank"};
  return *v;
}
const std::vector<std::string>& Schedules() {
  static const auto* v =
      new std::vector<std::string>{"linear", "cosine", "constant"};
  return *v;
}
const std::vector<std::string>& SourceInits() {
  static const auto* v = new std::vector<std::string>{"RANDOM", "TEXT", "SAMPLE_VOCAB", "ADAPTERS"};
  return *v;
}
const std::vector<std::string>& TargetInits() {
  static const auto* v = new std::vector<std::string>{
      "AVERAGE_SOURCE_TASKS", "EXACT_SOURCE_TASK", "ONLY_SOURCE_SHARED",
      "TEXT", "RANDOM", "TEACHER_MEAN"};
  return *v;
}
const std::vector<std::string>& Samplings() {
  static const auto* v =
      new std::vector<std::string>{"proportional", "uniform"};
  return *v;
}

// The problems found so far, each "<field path>: <problem>".
class Problems {
 public:
  void Add(absl::string_view field, absl::string_view problem) {
    list_.push_back(absl::StrCat(field, ": ", problem));
  }
  absl::Status ToStatus() const {
    if (list_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrJoin(list_, "; "));
  }

 private:
  std::vector<std::string> list_;
};

// `s` in double quotes, escaped and cut short (QuoteForError), so that a
// message shows the bytes (a NUL would otherwise cut it short), cannot drive a
// terminal, and one long value does not crowd out the other problems.
std::string Quote(absl::string_view s) { return QuoteForError(s); }

// What is wrong with a spec's `autocast`, or empty.
std::string AutocastProblem(absl::string_view autocast) {
  if (autocast.empty() || autocast == "off" || autocast == "bf16") return "";
  return absl::StrCat(Quote(autocast),
                      " is not a precision: \"off\" or \"bf16\" (empty: the worker's --autocast)");
}

std::string OneOf(const std::vector<std::string>& allowed) {
  return absl::StrJoin(allowed, ", ", [](std::string* out, const std::string& s) {
    absl::StrAppend(out, Quote(s));
  });
}

void CheckOneOf(absl::string_view field, const std::string& value,
                const std::vector<std::string>& allowed, Problems* problems) {
  for (const std::string& a : allowed) {
    if (value == a) return;
  }
  problems->Add(field, absl::StrCat("unknown value ", Quote(value),
                                    "; expected one of ", OneOf(allowed)));
}

bool CheckFinite(absl::string_view field, double value, Problems* problems) {
  if (std::isfinite(value)) return true;
  problems->Add(field, absl::StrCat("must be a finite number, got ", value));
  return false;
}

// Adds "<field>: must be in [min, max], got v" (or "(min, max]" when the
// minimum itself is excluded) unless `value` is finite and inside.
void CheckInRange(absl::string_view field, double value, const SpecRange& range,
                  Problems* problems) {
  if (!CheckFinite(field, value, problems)) return;
  const bool above_min = range.min_exclusive ? value > range.min : value >= range.min;
  if (above_min && value <= range.max) return;
  problems->Add(field, absl::StrCat("must be in ", range.min_exclusive ? "(" : "[",
                                    range.min, ", ", range.max, "], got ", value));
}

enum class FileKind { kRegular, kDirectory };

void CheckPathExists(absl::string_view field, const std::string& path,
                     FileKind kind, Problems* problems) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    problems->Add(field, absl::StrCat(kind == FileKind::kDirectory
                                          ? "folder does not exist: "
                                          : "file does not exist: ",
                                      path));
    return;
  }
  if (kind == FileKind::kDirectory && !S_ISDIR(st.st_mode)) {
    problems->Add(field, absl::StrCat("is not a folder: ", path));
  } else if (kind == FileKind::kRegular && !S_ISREG(st.st_mode)) {
    problems->Add(field, absl::StrCat("is not a regular file: ", path));
  }
}

void ValidateTaskName(absl::string_view field, const std::string& name,
                      Problems* problems) {
  if (name.empty()) {
    problems->Add(field, "required (a task name)");
    return;
  }
  if (name.size() > kMaxTaskNameLength) {
    problems->Add(field, absl::StrCat("longer than ", kMaxTaskNameLength,
                                      " characters"));
    return;
  }
  if (name == "." || name == "..") {
    problems->Add(field, absl::StrCat(Quote(name), " is not a task name"));
    return;
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' &&
        c != '-' && c != '.') {
      problems->Add(field,
                    absl::StrCat(Quote(name),
                                 " may hold only letters, digits, '_', '-' "
                                 "and '.'"));
      return;
    }
  }
}

void ValidateTask(absl::string_view field, const TaskData& task,
                  const SpecValidationOptions& options, Problems* problems) {
  ValidateTaskName(absl::StrCat(field, ".name"), task.name(), problems);
  if (task.train_path().empty()) {
    problems->Add(absl::StrCat(field, ".train_path"),
                  "required (a JSON Lines file)");
  } else if (options.check_files) {
    CheckPathExists(absl::StrCat(field, ".train_path"), task.train_path(),
                    FileKind::kRegular, problems);
  }
  if (!task.eval_path().empty() && options.check_files) {
    CheckPathExists(absl::StrCat(field, ".eval_path"), task.eval_path(),
                    FileKind::kRegular, problems);
  }
  CheckOneOf(absl::StrCat(field, ".eval_mode"), task.eval_mode(), EvalModes(),
             problems);
  if (task.eval_mode() == "rank" && task.candidates_size() < 2) {
    problems->Add(absl::StrCat(field, ".candidates"),
                  absl::StrCat("eval_mode \"rank\" needs at least two candidates to choose "
                               "from; got ", task.candidates_size()));
  }
  if (task.candidates_size() > kMaxCandidates) {
    problems->Add(absl::StrCat(field, ".candidates"),
                  absl::StrCat(task.candidates_size(), " candidates; at most ",
                               kMaxCandidates, " are allowed"));
  }
  std::map<std::string, int> seen;
  for (int i = 0; i < task.candidates_size(); ++i) {
    const std::string& candidate = task.candidates(i);
    std::string path = absl::StrCat(field, ".candidates[", i, "]");
    if (candidate.empty()) {
      problems->Add(path, "empty candidate");
      continue;
    }
    auto [it, inserted] = seen.emplace(candidate, i);
    if (!inserted) {
      problems->Add(path, absl::StrCat(Quote(candidate), " repeats ", field,
                                       ".candidates[", it->second, "]"));
    }
  }
}

// Validates each task and that no name is used twice; returns the names.
std::set<std::string> ValidateTasks(
    absl::string_view stage,
    const google::protobuf::RepeatedPtrField<TaskData>& tasks,
    const SpecValidationOptions& options, Problems* problems) {
  std::map<std::string, int> first_use;
  std::set<std::string> names;
  if (tasks.empty()) {
    problems->Add(absl::StrCat(stage, ".tasks"),
                  absl::StrCat("at least one ", stage, " task is required"));
  } else if (tasks.size() > kMaxTasks) {
    problems->Add(absl::StrCat(stage, ".tasks"),
                  absl::StrCat(tasks.size(), " tasks; at most ", kMaxTasks,
                               " are allowed"));
  }
  for (int i = 0; i < tasks.size(); ++i) {
    std::string field = absl::StrCat(stage, ".tasks[", i, "]");
    ValidateTask(field, tasks[i], options, problems);
    if (tasks[i].name().empty()) continue;
    auto [it, inserted] = first_use.emplace(tasks[i].name(), i);
    if (!inserted) {
      problems->Add(absl::StrCat(field, ".name"),
                    absl::StrCat(Quote(tasks[i].name()), " is also the name of ",
                                 stage, ".tasks[", it->second,
                                 "]; task names must be unique in a stage"));
    }
    names.insert(tasks[i].name());
  }
  return names;
}

void ValidateTrain(absl::string_view stage, const TrainSpec& train,
                   Problems* problems) {
  std::string prefix = absl::StrCat(stage, ".train.");
  auto at_least = [&](absl::string_view name, int64_t value, int64_t min) {
    if (value < min) {
      problems->Add(absl::StrCat(prefix, name),
                    absl::StrCat("must be >= ", min, ", got ", value));
    }
  };
  auto at_most = [&](absl::string_view name, int64_t value, int64_t max) {
    if (value > max) {
      problems->Add(absl::StrCat(prefix, name),
                    absl::StrCat("must be <= ", max, ", got ", value));
    }
  };
  if (train.steps() <= 0) {
    problems->Add(absl::StrCat(prefix, "steps"),
                  absl::StrCat("required, must be > 0, got ", train.steps()));
  }
  at_most("steps", train.steps(), kMaxSteps);
  at_least("batch_size", train.batch_size(), 1);
  at_most("batch_size", train.batch_size(), kMaxBatchSize);
  at_least("eval_every", train.eval_every(), 0);
  at_most("eval_every", train.eval_every(), kMaxSteps);
  at_least("checkpoint_every", train.checkpoint_every(), 0);
  at_most("checkpoint_every", train.checkpoint_every(), kMaxSteps);
  at_least("max_input_length", train.max_input_length(), 1);
  at_most("max_input_length", train.max_input_length(), kMaxSequenceLength);
  at_least("max_target_length", train.max_target_length(), 1);
  at_most("max_target_length", train.max_target_length(), kMaxSequenceLength);
  at_least("max_eval_examples", train.max_eval_examples(), 0);
  at_most("max_eval_examples", train.max_eval_examples(), kMaxEvalExamples);
  at_least("length_bucket_batches", train.length_bucket_batches(), 0);
  at_most("length_bucket_batches", train.length_bucket_batches(), kMaxLengthBucketBatches);

  const OptimizerSpec& opt = train.optimizer();
  std::string opt_prefix = absl::StrCat(prefix, "optimizer.");
  CheckInRange(absl::StrCat(opt_prefix, "learning_rate"), opt.learning_rate(),
               kLearningRateRange, problems);
  CheckInRange(absl::StrCat(opt_prefix, "weight_decay"), opt.weight_decay(),
               kWeightDecayRange, problems);
  if (opt.warmup_steps() < 0) {
    problems->Add(absl::StrCat(opt_prefix, "warmup_steps"),
                  absl::StrCat("must be >= 0, got ", opt.warmup_steps()));
  } else if (train.steps() > 0 && opt.warmup_steps() > train.steps()) {
    problems->Add(absl::StrCat(opt_prefix, "warmup_steps"),
                  absl::StrCat(opt.warmup_steps(), " is more than ", prefix,
                               "steps (", train.steps(), ")"));
  }
  CheckOneOf(absl::StrCat(opt_prefix, "schedule"), opt.schedule(), Schedules(),
             problems);
  // Negative: no clipping, so only the upper end is bounded.
  if (CheckFinite(absl::StrCat(opt_prefix, "max_grad_norm"), opt.max_grad_norm(),
                  problems) &&
      opt.max_grad_norm() > kMaxGradNormLimit) {
    problems->Add(absl::StrCat(opt_prefix, "max_grad_norm"),
                  absl::StrCat("must be <= ", kMaxGradNormLimit,
                               " (negative: no clipping), got ", opt.max_grad_norm()));
  }
}

void ValidateInitText(absl::string_view stage, const std::string& init,
                      const std::string& init_text, Problems* problems) {
  if (init == "TEXT" && absl::StripAsciiWhitespace(init_text).empty()) {
    problems->Add(absl::StrCat(stage, ".init_text"),
                  "required when init is \"TEXT\"");
  }
}

void ValidatePrompt(const PromptSpec& prompt, Problems* problems) {
  if (prompt.num_virtual_tokens() < 1) {
    problems->Add("prompt.num_virtual_tokens",
                  absl::StrCat("must be >= 1, got ", prompt.num_virtual_tokens()));
  } else if (prompt.num_virtual_tokens() > kMaxVirtualTokens) {
    problems->Add("prompt.num_virtual_tokens",
                  absl::StrCat("must be <= ", kMaxVirtualTokens, ", got ",
                               prompt.num_virtual_tokens()));
  }
  if (prompt.num_ranks() > kMaxRanks) {
    problems->Add("prompt.num_ranks", absl::StrCat("must be <= ", kMaxRanks, ", got ",
                                                   prompt.num_ranks()));
  }
  if (prompt.num_transformer_submodules() != 1 &&
      prompt.num_transformer_submodules() != 2) {
    problems->Add("prompt.num_transformer_submodules",
                  absl::StrCat("must be 1 (encoder) or 2 (encoder and "
                               "decoder), got ",
                               prompt.num_transformer_submodules()));
  }
  if (prompt.num_ranks() < 1) {
    problems->Add("prompt.num_ranks",
                  absl::StrCat("must be >= 1, got ", prompt.num_ranks()));
  } else if (prompt.num_virtual_tokens() >= 1 &&
             (prompt.num_transformer_submodules() == 1 ||
              prompt.num_transformer_submodules() == 2)) {
    int64_t t = int64_t{prompt.num_virtual_tokens()} *
                prompt.num_transformer_submodules();
    if (prompt.num_ranks() > t) {
      problems->Add(
          "prompt.num_ranks",
          absl::StrCat(prompt.num_ranks(),
                       " is larger than the prompt "
                       "(num_virtual_tokens*num_transformer_submodules = ",
                       t, ")"));
    }
  }
}

void ValidateSource(const SourceTrainingSpec& source,
                    const SpecValidationOptions& options, Problems* problems) {
  ValidateTasks("source", source.tasks(), options, problems);
  ValidateTrain("source", source.train(), problems);
  CheckOneOf("source.init", source.init(), SourceInits(), problems);
  ValidateInitText("source", source.init(), source.init_text(), problems);
  if (source.init() == "ADAPTERS" && source.init_adapters().empty()) {
    problems->Add("source.init_adapters", "required when init is \"ADAPTERS\"");
  } else if (source.init() != "ADAPTERS" && !source.init_adapters().empty()) {
    problems->Add("source.init_adapters",
                  absl::StrCat("used only when source.init is \"ADAPTERS\", but source.init is ",
                               Quote(source.init())));
  }
  if (source.tasks_per_pass() < 0 || source.tasks_per_pass() > kMaxTasksPerPass) {
    problems->Add("source.tasks_per_pass",
                  absl::StrCat("must be in [0, ", kMaxTasksPerPass, "], got ",
                               source.tasks_per_pass()));
  }
}

void ValidateDistillation(const DistillationSpec& distillation,
                          const SpecValidationOptions& options,
                          Problems* problems) {
  ValidateTasks("distillation", distillation.tasks(), options, problems);
  ValidateTrain("distillation", distillation.train(), problems);
  CheckInRange("distillation.lambda", distillation.lambda(), kLambdaRange,
               problems);
  CheckInRange("distillation.temperature", distillation.temperature(),
               kTemperatureRange, problems);
  if (distillation.world_size() < 1) {
    problems->Add("distillation.world_size",
                  absl::StrCat("must be >= 1, got ", distillation.world_size()));
  } else if (distillation.world_size() > kMaxWorldSize) {
    problems->Add("distillation.world_size",
                  absl::StrCat("must be <= ", kMaxWorldSize, ", got ",
                               distillation.world_size()));
  } else if (distillation.train().batch_size() >= 1 &&
             distillation.train().batch_size() < distillation.world_size()) {
    problems->Add("distillation.train.batch_size",
                  absl::StrCat(distillation.train().batch_size(),
                               " is smaller than distillation.world_size (",
                               distillation.world_size(),
                               "); every rank needs at least one example a "
                               "step"));
  }
  CheckOneOf("distillation.sampling", distillation.sampling(), Samplings(),
             problems);
  CheckOneOf("distillation.losses", distillation.losses(),
             {"kl+hidden", "kl", "hidden"}, problems);
}

// `num_source_tasks` < 0: unknown (a stage submitted alone).
void ValidateTarget(const TargetAdaptationSpec& target, int num_source_tasks,
                    const SpecValidationOptions& options, Problems* problems) {
  ValidateTasks("target", target.tasks(), options, problems);
  ValidateTrain("target", target.train(), problems);
  CheckOneOf("target.init", target.init(), TargetInits(), problems);
  CheckOneOf("target.trainable", target.trainable(), {"all", "factors"}, problems);
  ValidateInitText("target", target.init(), target.init_text(), problems);
  if (target.init() == "TEACHER_MEAN" && target.teacher_adapters().empty()) {
    problems->Add("target.teacher_adapters", "required when init is \"TEACHER_MEAN\"");
  }
  if (target.init_task() < 0) {
    problems->Add("target.init_task",
                  absl::StrCat("must be >= 0, got ", target.init_task()));
  } else if (target.init() == "EXACT_SOURCE_TASK" && num_source_tasks >= 0 &&
             target.init_task() >= num_source_tasks) {
    problems->Add("target.init_task",
                  absl::StrCat(target.init_task(),
                               " is not a distillation task index (there are ",
                               num_source_tasks, " tasks)"));
  }
}

void ApplyTaskDefaults(google::protobuf::RepeatedPtrField<TaskData>* tasks) {
  for (TaskData& task : *tasks) {
    if (task.eval_mode().empty()) task.set_eval_mode("generate");
  }
}

// Reads a whole spec file (a regular file of at most kMaxSpecFileBytes).
absl::StatusOr<std::string> ReadSpecFile(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFile(path, kMaxSpecFileBytes);
  if (absl::IsFailedPrecondition(content.status())) {
    // Not a regular file, or too large: a bad spec path.
    return absl::InvalidArgumentError(content.status().message());
  }
  return content;
}

// Collects the text-format parser's errors as "<name>:<line>:<column>: ...".
class TextErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit TextErrorCollector(absl::string_view source_name)
      : source_name_(source_name) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (line < 0) {
      errors_.push_back(absl::StrCat(source_name_, ": ", message));
    } else {
      errors_.push_back(absl::StrCat(source_name_, ":", line + 1, ":",
                                     column + 1, ": ", message));
    }
  }
  std::string Joined() const { return absl::StrJoin(errors_, "; "); }

 private:
  std::string source_name_;
  std::vector<std::string> errors_;
};

// nlohmann's parse_error::what() reads "[json.exception.parse_error.101]
// parse error at line 3, column 5: <reason>"; returns "<name>:3:5: <reason>".
std::string JsonSyntaxError(absl::string_view source_name,
                            const std::string& what) {
  const std::string kAt = "parse error at line ";
  size_t at = what.find(kAt);
  if (at != std::string::npos) {
    absl::string_view rest = absl::string_view(what).substr(at + kAt.size());
    size_t comma = rest.find(", column ");
    size_t colon = rest.find(": ");
    int line = 0, column = 0;
    if (comma != absl::string_view::npos && colon != absl::string_view::npos &&
        comma < colon &&
        absl::SimpleAtoi(rest.substr(0, comma), &line) &&
        absl::SimpleAtoi(rest.substr(comma + 9, colon - comma - 9), &column)) {
      return absl::StrCat(source_name, ":", line, ":", column, ": ",
                          rest.substr(colon + 2));
    }
  }
  return absl::StrCat(source_name, ": ", what);
}

}  // namespace

SpecFormat SpecFormatForPath(absl::string_view path) {
  return absl::EndsWithIgnoreCase(path, ".json") ? SpecFormat::kJson
                                                 : SpecFormat::kText;
}

absl::StatusOr<PipelineSpec> ParsePipelineSpec(absl::string_view content,
                                               SpecFormat format,
                                               absl::string_view source_name) {
  PipelineSpec spec;
  if (content.size() > kMaxSpecFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": larger than the limit of ",
                     kMaxSpecFileBytes, " bytes for a spec file"));
  }
  if (format == SpecFormat::kJson) {
    // protobuf's JSON parser reports no line numbers and lets some syntax
    // errors pass (a trailing comma); a strict JSON parse first gives both.
    RETURN_IF_ERROR(CheckJsonText(content, source_name));
    try {
      nlohmann::json value = nlohmann::json::parse(content.begin(), content.end());
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source_name, ": expected a JSON object, got ",
                         value.type_name()));
      }
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(JsonSyntaxError(source_name, e.what()));
    }
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(content.data(), content.size()), &spec,
        options);
    if (!status.ok()) {
      // The message names the field, e.g. "(prompt) bogus: Cannot find
      // field." or "(prompt.num_ranks): invalid value "x" for type
      // TYPE_INT32".
      return absl::InvalidArgumentError(
          absl::StrCat(source_name, ": ", status.message().as_string()));
    }
    return spec;
  }
  TextErrorCollector errors(source_name);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(content), &spec)) {
    std::string message = errors.Joined();
    if (message.empty()) message = absl::StrCat(source_name, ": parse error");
    return absl::InvalidArgumentError(message);
  }
  return spec;
}

absl::StatusOr<PipelineSpec> ReadPipelineSpec(const std::string& path) {
  ASSIGN_OR_RETURN(std::string content, ReadSpecFile(path));
  return ParsePipelineSpec(content, SpecFormatForPath(path), path);
}

absl::StatusOr<PipelineSpec> LoadPipelineSpec(
    const std::string& path, const SpecValidationOptions& options) {
  ASSIGN_OR_RETURN(PipelineSpec spec, ReadPipelineSpec(path));
  ResolveSpecPaths(std::filesystem::path(path).parent_path().string(), &spec);
  ApplyDefaults(&spec);
  absl::Status status = ValidatePipelineSpec(spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", status.message()));
  }
  return spec;
}

std::string ResolvePath(absl::string_view path, absl::string_view base_dir) {
  if (path.empty()) return "";
  std::filesystem::path p{std::string(path)};
  if (p.is_relative()) {
    std::filesystem::path base{std::string(base_dir)};
    if (base.is_relative()) {
      std::error_code error;
      std::filesystem::path cwd = std::filesystem::current_path(error);
      if (!error) base = cwd / base;
    }
    p = base / p;
  }
  return p.lexically_normal().string();
}

void ResolveSpecPaths(absl::string_view base_dir, PipelineSpec* spec) {
  if (!spec->base_model().empty()) {
    spec->set_base_model(ResolvePath(spec->base_model(), base_dir));
  }
  auto resolve_tasks = [&](google::protobuf::RepeatedPtrField<TaskData>* tasks) {
    for (TaskData& task : *tasks) {
      task.set_train_path(ResolvePath(task.train_path(), base_dir));
      task.set_eval_path(ResolvePath(task.eval_path(), base_dir));
    }
  };
  if (spec->has_source()) {
    resolve_tasks(spec->mutable_source()->mutable_tasks());
    for (std::string& a : *spec->mutable_source()->mutable_init_adapters()) {
      a = ResolvePath(a, base_dir);
    }
  }
  if (spec->has_distillation()) {
    resolve_tasks(spec->mutable_distillation()->mutable_tasks());
    for (std::string& teacher : *spec->mutable_distillation()->mutable_teacher_adapters()) {
      teacher = ResolvePath(teacher, base_dir);
    }
  }
  if (spec->has_target()) {
    resolve_tasks(spec->mutable_target()->mutable_tasks());
    if (!spec->target().source_adapter().empty()) {
      spec->mutable_target()->set_source_adapter(
          ResolvePath(spec->target().source_adapter(), base_dir));
    }
    for (std::string& a : *spec->mutable_target()->mutable_teacher_adapters()) {
      a = ResolvePath(a, base_dir);
    }
  }
}

void ApplyDefaults(PromptSpec* prompt) {
  if (prompt->num_virtual_tokens() == 0) {
    prompt->set_num_virtual_tokens(kDefaultNumVirtualTokens);
  }
  if (prompt->num_transformer_submodules() == 0) {
    prompt->set_num_transformer_submodules(kDefaultNumTransformerSubmodules);
  }
  if (prompt->num_ranks() == 0) prompt->set_num_ranks(kDefaultNumRanks);
}

void ApplyDefaults(TrainSpec* train) {
  if (train->batch_size() == 0) train->set_batch_size(kDefaultBatchSize);
  if (train->max_input_length() == 0) {
    train->set_max_input_length(kDefaultMaxInputLength);
  }
  if (train->max_target_length() == 0) {
    train->set_max_target_length(kDefaultMaxTargetLength);
  }
  OptimizerSpec* opt = train->mutable_optimizer();
  if (opt->learning_rate() == 0) opt->set_learning_rate(kDefaultLearningRate);
  if (opt->weight_decay() == 0) opt->set_weight_decay(kDefaultWeightDecay);
  if (opt->schedule().empty()) opt->set_schedule("linear");
  if (opt->max_grad_norm() == 0) opt->set_max_grad_norm(kDefaultMaxGradNorm);
}

void ApplyDefaults(SourceTrainingSpec* source) {
  ApplyTaskDefaults(source->mutable_tasks());
  ApplyDefaults(source->mutable_train());
  if (source->init().empty()) source->set_init("RANDOM");
}

void ApplyDefaults(DistillationSpec* distillation) {
  ApplyTaskDefaults(distillation->mutable_tasks());
  ApplyDefaults(distillation->mutable_train());
  if (distillation->lambda() == 0) distillation->set_lambda(kDefaultLambda);
  if (distillation->temperature() == 0) {
    distillation->set_temperature(kDefaultTemperature);
  }
  if (distillation->world_size() == 0) {
    distillation->set_world_size(kDefaultWorldSize);
  }
  if (distillation->sampling().empty()) {
    distillation->set_sampling("proportional");
  }
  if (distillation->losses().empty()) distillation->set_losses("kl+hidden");
}

void ApplyDefaults(TargetAdaptationSpec* target) {
  ApplyTaskDefaults(target->mutable_tasks());
  ApplyDefaults(target->mutable_train());
  if (target->init().empty()) target->set_init("AVERAGE_SOURCE_TASKS");
  if (target->trainable().empty()) target->set_trainable("all");
}

void ApplyDefaults(PipelineSpec* spec) {
  ApplyDefaults(spec->mutable_prompt());
  ApplyDefaults(spec->mutable_source());
  DistillationSpec* distillation = spec->mutable_distillation();
  if (distillation->tasks().empty()) {
    *distillation->mutable_tasks() = spec->source().tasks();
  }
  ApplyDefaults(distillation);
  if (spec->has_target()) ApplyDefaults(spec->mutable_target());
}

absl::Status ValidatePromptSpec(const PromptSpec& prompt) {
  Problems problems;
  ValidatePrompt(prompt, &problems);
  return problems.ToStatus();
}

absl::Status ValidateAutocast(absl::string_view autocast) {
  const std::string problem = AutocastProblem(autocast);
  if (problem.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("autocast: ", problem));
}

absl::Status ValidateSourceTrainingSpec(const SourceTrainingSpec& source,
                                        const SpecValidationOptions& options) {
  Problems problems;
  ValidateSource(source, options, &problems);
  return problems.ToStatus();
}

absl::Status ValidateDistillationSpec(const DistillationSpec& distillation,
                                      const SpecValidationOptions& options) {
  Problems problems;
  ValidateDistillation(distillation, options, &problems);
  return problems.ToStatus();
}

absl::Status ValidateTargetAdaptationSpec(const TargetAdaptationSpec& target,
                                          const SpecValidationOptions& options) {
  Problems problems;
  ValidateTarget(target, /*num_source_tasks=*/-1, options, &problems);
  return problems.ToStatus();
}

absl::Status ValidatePipelineSpec(const PipelineSpec& spec,
                                  const SpecValidationOptions& options) {
  Problems problems;
  if (spec.base_model().empty()) {
    problems.Add("base_model", "required (a Hugging Face model folder: T5 or a Llama-family decoder-only model)");
  } else if (options.check_files) {
    CheckPathExists("base_model", spec.base_model(), FileKind::kDirectory,
                    &problems);
  }
  if (std::string problem = AutocastProblem(spec.autocast()); !problem.empty()) {
    problems.Add("autocast", problem);
  }
  ValidatePrompt(spec.prompt(), &problems);
  ValidateSource(spec.source(), options, &problems);
  ValidateDistillation(spec.distillation(), options, &problems);
  std::set<std::string> source_names;
  for (const TaskData& task : spec.source().tasks()) {
    source_names.insert(task.name());
  }
  for (int i = 0; i < spec.distillation().tasks_size(); ++i) {
    const std::string& name = spec.distillation().tasks(i).name();
    if (!name.empty() && source_names.count(name) == 0) {
      problems.Add(absl::StrCat("distillation.tasks[", i, "].name"),
                   absl::StrCat(Quote(name),
                                " is not a source task, so it has no teacher "
                                "prompt"));
    }
  }
  if (spec.has_target()) {
    ValidateTarget(spec.target(), spec.distillation().tasks_size(), options,
                   &problems);
  }
  return problems.ToStatus();
}

}  // namespace mpt
