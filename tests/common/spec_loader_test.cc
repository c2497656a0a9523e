#include "common/spec/spec_loader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

using ::mpt::v1::PipelineSpec;
using ::mpt::v1::TaskData;
using ::testing::HasSubstr;
using ::testing::Not;

std::string SpecsDir() {
  return std::filesystem::path(::mpt::testing::DataPath("tests/testdata/specs"))
      .lexically_normal()
      .string();
}

std::string TmpDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string WriteFile(const std::string& name, const std::string& content) {
  std::string path = absl::StrCat(TmpDir(), "/", name);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::trunc);
  out << content;
  return path;
}

std::string Message(const absl::Status& status) {
  return std::string(status.message());
}

// A valid, defaulted pipeline whose files exist under TEST_TMPDIR.
PipelineSpec ValidSpec() {
  PipelineSpec spec;
  std::string model = absl::StrCat(TmpDir(), "/model");
  std::filesystem::create_directories(model);
  spec.set_base_model(model);
  for (const char* name : {"sst2", "qnli", "mnli"}) {
    TaskData* task = spec.mutable_source()->add_tasks();
    task->set_name(name);
    task->set_train_path(WriteFile(absl::StrCat(name, "_train.jsonl"),
                                   "{\"input\": \"a\", \"target\": \"b\"}\n"));
  }
  spec.mutable_source()->mutable_train()->set_steps(10);
  spec.mutable_distillation()->mutable_train()->set_steps(20);
  TaskData* target = spec.mutable_target()->add_tasks();
  target->set_name("rte");
  target->set_train_path(WriteFile("rte_train.jsonl", "{}"));
  target->set_eval_path(WriteFile("rte_eval.jsonl", "{}"));
  target->set_eval_mode("rank");
  target->add_candidates("entailment");
  target->add_candidates("not_entailment");
  spec.mutable_target()->mutable_train()->set_steps(30);
  ApplyDefaults(&spec);
  return spec;
}

// Validates `spec` and returns the error message ("" when valid).
std::string Problems(const PipelineSpec& spec,
                     const SpecValidationOptions& options = {}) {
  absl::Status status = ValidatePipelineSpec(spec, options);
  if (!status.ok()) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  }
  return Message(status);
}

TEST(SpecFormat, ChosenByExtension) {
  EXPECT_EQ(SpecFormatForPath("a/spec.json"), SpecFormat::kJson);
  EXPECT_EQ(SpecFormatForPath("SPEC.JSON"), SpecFormat::kJson);
  EXPECT_EQ(SpecFormatForPath("spec.textproto"), SpecFormat::kText);
  EXPECT_EQ(SpecFormatForPath("spec.pbtxt"), SpecFormat::kText);
  EXPECT_EQ(SpecFormatForPath("json"), SpecFormat::kText);
}

TEST(ResolvePath, RelativeToTheSpecFolder) {
  EXPECT_EQ(ResolvePath("data/a.jsonl", "/specs"), "/specs/data/a.jsonl");
  EXPECT_EQ(ResolvePath("./x/../data/a.jsonl", "/specs/"), "/specs/data/a.jsonl");
  EXPECT_EQ(ResolvePath("../data", "/specs/sub"), "/specs/data");
  EXPECT_EQ(ResolvePath("/abs//p/./q", "/specs"), "/abs/p/q");
  EXPECT_EQ(ResolvePath("", "/specs"), "");
  std::string cwd = std::filesystem::current_path().string();
  EXPECT_EQ(ResolvePath("a.jsonl", "rel"), absl::StrCat(cwd, "/rel/a.jsonl"));
  EXPECT_EQ(ResolvePath("a.jsonl", ""), absl::StrCat(cwd, "/a.jsonl"));
}

TEST(LoadPipelineSpec, JsonExampleResolvedAndDefaulted) {
  const std::string dir = SpecsDir();
  absl::StatusOr<PipelineSpec> spec =
      LoadPipelineSpec(absl::StrCat(dir, "/pipeline.json"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->base_model(), absl::StrCat(dir, "/model"));
  EXPECT_EQ(spec->prompt().num_virtual_tokens(), 10);
  EXPECT_EQ(spec->prompt().num_transformer_submodules(), 2);
  ASSERT_EQ(spec->source().tasks_size(), 2);
  const TaskData& sst2 = spec->source().tasks(0);
  EXPECT_EQ(sst2.train_path(), absl::StrCat(dir, "/data/sst2_train.jsonl"));
  EXPECT_EQ(sst2.eval_path(), absl::StrCat(dir, "/data/sst2_eval.jsonl"));
  EXPECT_EQ(sst2.eval_mode(), "rank");
  // lowerCamelCase ("trainPath") is accepted as well as snake_case.
  const TaskData& qnli = spec->source().tasks(1);
  EXPECT_EQ(qnli.train_path(), absl::StrCat(dir, "/data/qnli_train.jsonl"));
  EXPECT_EQ(qnli.eval_path(), "");
  EXPECT_EQ(qnli.eval_mode(), "generate");
  EXPECT_EQ(spec->source().train().seed(), 7u);
  EXPECT_EQ(spec->source().train().max_input_length(), 128);

  // The distillation's tasks come from the source stage.
  ASSERT_EQ(spec->distillation().tasks_size(), 2);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      spec->distillation().tasks(0), sst2));
  EXPECT_EQ(spec->distillation().train().batch_size(), 8);
  EXPECT_EQ(spec->distillation().train().eval_every(), 50);
  EXPECT_DOUBLE_EQ(spec->distillation().lambda(), 0.5);
  EXPECT_DOUBLE_EQ(spec->distillation().temperature(), 1.0);
  EXPECT_EQ(spec->distillation().world_size(), 2);
  EXPECT_EQ(spec->distillation().sampling(), "uniform");

  ASSERT_TRUE(spec->has_target());
  EXPECT_EQ(spec->target().init(), "EXACT_SOURCE_TASK");
  EXPECT_EQ(spec->target().init_task(), 1);
  EXPECT_EQ(spec->target().train().optimizer().schedule(), "cosine");
  EXPECT_EQ(spec->target().train().optimizer().warmup_steps(), 5);
  EXPECT_DOUBLE_EQ(spec->target().train().optimizer().learning_rate(), 0.3);
}

TEST(LoadPipelineSpec, TextFormatEqualsJson) {
  absl::StatusOr<PipelineSpec> json =
      LoadPipelineSpec(absl::StrCat(SpecsDir(), "/pipeline.json"));
  absl::StatusOr<PipelineSpec> text =
      LoadPipelineSpec(absl::StrCat(SpecsDir(), "/pipeline.textproto"));
  ASSERT_TRUE(json.ok()) << json.status();
  ASSERT_TRUE(text.ok()) << text.status();
  std::string difference;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&difference);
  EXPECT_TRUE(differencer.Compare(*json, *text)) << difference;
}

TEST(LoadPipelineSpec, MinimalSpecGetsEveryDefault) {
  absl::StatusOr<PipelineSpec> spec =
      LoadPipelineSpec(absl::StrCat(SpecsDir(), "/minimal.textproto"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->prompt().num_virtual_tokens(), 20);
  EXPECT_EQ(spec->prompt().num_transformer_submodules(), 1);
  EXPECT_EQ(spec->prompt().num_ranks(), 1);
  EXPECT_EQ(spec->source().init(), "RANDOM");
  EXPECT_EQ(spec->source().tasks(0).eval_mode(), "generate");
  for (const mpt::v1::TrainSpec* train :
       {&spec->source().train(), &spec->distillation().train()}) {
    EXPECT_EQ(train->batch_size(), 16);
    EXPECT_EQ(train->max_input_length(), 128);
    EXPECT_EQ(train->max_target_length(), 32);
    EXPECT_EQ(train->eval_every(), 0);
    EXPECT_EQ(train->checkpoint_every(), 0);
    EXPECT_EQ(train->seed(), 0u);
    EXPECT_DOUBLE_EQ(train->optimizer().learning_rate(), 0.3);
    EXPECT_DOUBLE_EQ(train->optimizer().weight_decay(), 1e-5);
    EXPECT_EQ(train->optimizer().warmup_steps(), 0);
    EXPECT_EQ(train->optimizer().schedule(), "linear");
    EXPECT_DOUBLE_EQ(train->optimizer().max_grad_norm(), 1.0);
  }
  EXPECT_EQ(spec->distillation().tasks_size(), 1);
  EXPECT_EQ(spec->distillation().tasks(0).name(), "sst2");
  EXPECT_DOUBLE_EQ(spec->distillation().lambda(), 0.9);
  EXPECT_FALSE(spec->distillation().no_distillation_loss());
  EXPECT_DOUBLE_EQ(spec->distillation().temperature(), 1.0);
  EXPECT_EQ(spec->distillation().world_size(), 1);
  EXPECT_EQ(spec->distillation().sampling(), "proportional");
  EXPECT_FALSE(spec->has_target());  // the pipeline stops after distillation
}

TEST(LoadPipelineSpec, MissingFileIsNotFound) {
  std::string path = absl::StrCat(TmpDir(), "/nothing.json");
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(spec.status()), HasSubstr(path));
}

TEST(LoadPipelineSpec, JsonSyntaxErrorNamesFileAndLine) {
  std::string path = absl::StrCat(SpecsDir(), "/bad_syntax.json");
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  // The trailing comma on line 4 is noticed at the "}" of line 5.
  EXPECT_THAT(Message(spec.status()), HasSubstr(absl::StrCat(path, ":5:3: ")));
}

TEST(LoadPipelineSpec, TextSyntaxErrorNamesFileAndLine) {
  std::string path = absl::StrCat(SpecsDir(), "/bad_syntax.textproto");
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(spec.status()), HasSubstr(absl::StrCat(path, ":4:")));
  EXPECT_THAT(Message(spec.status()), HasSubstr("\"two\""));
}

TEST(LoadPipelineSpec, UnknownFieldsAreErrors) {
  std::string path = absl::StrCat(SpecsDir(), "/unknown_field.json");
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(spec.status()), HasSubstr(path));
  EXPECT_THAT(Message(spec.status()), HasSubstr("num_virtual_tokns"));

  std::string text = WriteFile("unknown.textproto", "\n\nbase_modle: \"x\"\n");
  spec = LoadPipelineSpec(text);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(spec.status()), HasSubstr(absl::StrCat(text, ":3:")));
  EXPECT_THAT(Message(spec.status()), HasSubstr("base_modle"));
}

TEST(LoadPipelineSpec, WrongJsonTypesNameTheField) {
  std::string path = WriteFile(
      "wrong_type.json", "{\"prompt\": {\"num_ranks\": \"two\"}}");
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(spec.status()), HasSubstr("prompt.num_ranks"));
  path = WriteFile("array.json", "[1]");
  spec = LoadPipelineSpec(path);
  EXPECT_THAT(Message(spec.status()),
              HasSubstr(absl::StrCat(path, ": expected a JSON object, got array")));
}

TEST(LoadPipelineSpec, ValidationProblemsAreAllListed) {
  std::string path = absl::StrCat(SpecsDir(), "/invalid.textproto");
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  std::string message = Message(spec.status());
  EXPECT_THAT(message, HasSubstr(absl::StrCat(path, ": ")));
  EXPECT_THAT(message,
              HasSubstr("prompt.num_ranks: 200 is larger than the prompt "
                        "(num_virtual_tokens*num_transformer_submodules = 10)"));
  EXPECT_THAT(message, HasSubstr("source.tasks[0].candidates: eval_mode "
                                 "\"rank\" needs at least two candidates"));
  EXPECT_THAT(message, HasSubstr("source.tasks[1].name: \"sst2\" is also the "
                                 "name of source.tasks[0]"));
  EXPECT_THAT(message,
              HasSubstr(absl::StrCat("source.tasks[1].train_path: file does not "
                                     "exist: ",
                                     SpecsDir(), "/data/missing.jsonl")));
  EXPECT_THAT(message, HasSubstr("source.train.steps: required, must be > 0, "
                                 "got 0"));
  EXPECT_THAT(message, HasSubstr("distillation.world_size: must be >= 1, got -1"));
}

TEST(LoadPipelineSpec, RejectsOversizedFile) {
  std::string path =
      WriteFile("huge.textproto", std::string(kMaxSpecFileBytes + 1, ' '));
  absl::StatusOr<PipelineSpec> spec = LoadPipelineSpec(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(spec.status()), HasSubstr("larger than the limit"));
}

TEST(ParsePipelineSpec, ParsesWithoutResolvingOrDefaulting) {
  absl::StatusOr<PipelineSpec> spec = ParsePipelineSpec(
      "{\"baseModel\": \"rel/model\"}", SpecFormat::kJson, "request");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->base_model(), "rel/model");
  EXPECT_EQ(spec->prompt().num_virtual_tokens(), 0);
  absl::StatusOr<PipelineSpec> bad =
      ParsePipelineSpec("prompt {", SpecFormat::kText, "request");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(bad.status()), HasSubstr("request:1:"));
}

TEST(ApplyDefaults, KeepsExplicitValuesAndIsIdempotent) {
  PipelineSpec spec;
  spec.mutable_prompt()->set_num_ranks(4);
  spec.mutable_source()->add_tasks()->set_name("a");
  spec.mutable_source()->mutable_train()->mutable_optimizer()->set_max_grad_norm(-1);
  spec.mutable_source()->mutable_train()->mutable_optimizer()->set_schedule("constant");
  spec.mutable_distillation()->add_tasks()->set_name("b");
  spec.mutable_distillation()->set_no_distillation_loss(true);
  ApplyDefaults(&spec);
  EXPECT_EQ(spec.prompt().num_ranks(), 4);
  EXPECT_DOUBLE_EQ(spec.source().train().optimizer().max_grad_norm(), -1);
  EXPECT_EQ(spec.source().train().optimizer().schedule(), "constant");
  ASSERT_EQ(spec.distillation().tasks_size(), 1);  // not replaced
  EXPECT_EQ(spec.distillation().tasks(0).name(), "b");
  EXPECT_EQ(spec.distillation().tasks(0).eval_mode(), "generate");
  EXPECT_TRUE(spec.distillation().no_distillation_loss());
  EXPECT_FALSE(spec.has_target());
  PipelineSpec again = spec;
  ApplyDefaults(&again);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(spec, again));
}

TEST(ApplyDefaults, TargetStageWhenPresent) {
  PipelineSpec spec;
  spec.mutable_target();
  ApplyDefaults(&spec);
  EXPECT_EQ(spec.target().init(), "AVERAGE_SOURCE_TASKS");
  EXPECT_FALSE(spec.target().shared());
  EXPECT_EQ(spec.target().train().batch_size(), 16);
}

TEST(ValidatePipelineSpec, ValidSpecPasses) {
  EXPECT_EQ(Problems(ValidSpec()), "");
}

TEST(ValidatePipelineSpec, UpperBounds) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->mutable_train()->set_steps(kMaxSteps);
  spec.mutable_source()->mutable_train()->set_batch_size(kMaxBatchSize);
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_source()->mutable_train()->set_steps(kMaxSteps + 1);
  spec.mutable_source()->mutable_train()->set_batch_size(kMaxBatchSize + 1);
  spec.mutable_source()->mutable_train()->set_max_input_length(8193);
  spec.mutable_distillation()->mutable_train()->set_max_eval_examples(kMaxEvalExamples + 1);
  spec.mutable_prompt()->set_num_ranks(1025);
  spec.mutable_distillation()->set_world_size(1025);
  const std::string problems = Problems(spec);
  EXPECT_THAT(problems, HasSubstr("source.train.steps: must be <= 10000000"));
  EXPECT_THAT(problems, HasSubstr("source.train.batch_size: must be <= 65536"));
  EXPECT_THAT(problems, HasSubstr("source.train.max_input_length: must be <= 8192"));
  EXPECT_THAT(problems, HasSubstr("distillation.train.max_eval_examples: must be <= 10000000"));
  EXPECT_THAT(problems, HasSubstr("prompt.num_ranks: must be <= 1024"));
  EXPECT_THAT(problems, HasSubstr("distillation.world_size: must be <= 1024"));
}

TEST(ValidatePipelineSpec, BaseModel) {
  PipelineSpec spec = ValidSpec();
  spec.set_base_model("");
  EXPECT_THAT(Problems(spec), HasSubstr("base_model: required"));
  spec.set_base_model(absl::StrCat(TmpDir(), "/no_model"));
  EXPECT_THAT(Problems(spec), HasSubstr("base_model: folder does not exist: "));
  spec.set_base_model(spec.source().tasks(0).train_path());
  EXPECT_THAT(Problems(spec), HasSubstr("base_model: is not a folder: "));
}

TEST(ValidatePipelineSpec, Autocast) {
  PipelineSpec spec = ValidSpec();
  for (const char* ok : {"", "off", "bf16"}) {
    spec.set_autocast(ok);
    EXPECT_EQ(Problems(spec), "") << ok;
  }
  spec.set_autocast("fp16");
  EXPECT_EQ(Problems(spec),
            "autocast: \"fp16\" is not a precision: \"off\" or \"bf16\" (empty: the "
            "worker's --autocast)");
  spec.set_autocast("BF16");
  EXPECT_THAT(Problems(spec), HasSubstr("autocast: \"BF16\" is not a precision"));
}

TEST(ValidatePipelineSpec, Prompt) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_prompt()->set_num_ranks(200);
  EXPECT_EQ(Problems(spec),
            "prompt.num_ranks: 200 is larger than the prompt "
            "(num_virtual_tokens*num_transformer_submodules = 20)");
  spec.mutable_prompt()->set_num_transformer_submodules(2);
  spec.mutable_prompt()->set_num_ranks(40);
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_prompt()->set_num_ranks(41);
  EXPECT_THAT(Problems(spec), HasSubstr("= 40)"));
  spec.mutable_prompt()->set_num_ranks(-1);
  EXPECT_EQ(Problems(spec), "prompt.num_ranks: must be >= 1, got -1");
  spec = ValidSpec();
  spec.mutable_prompt()->set_num_transformer_submodules(3);
  EXPECT_THAT(Problems(spec), HasSubstr("prompt.num_transformer_submodules: "
                                        "must be 1 (encoder) or 2"));
  spec = ValidSpec();
  spec.mutable_prompt()->set_num_virtual_tokens(-5);
  EXPECT_EQ(Problems(spec), "prompt.num_virtual_tokens: must be >= 1, got -5");
  EXPECT_THAT(Message(ValidatePromptSpec(spec.prompt())),
              HasSubstr("prompt.num_virtual_tokens"));
}

TEST(ValidatePipelineSpec, SourceNeedsTasks) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->clear_tasks();
  EXPECT_THAT(Problems(spec),
              HasSubstr("source.tasks: at least one source task is required"));
}

TEST(ValidatePipelineSpec, TaskNames) {
  struct Case {
    std::string name;
    std::string problem;
  };
  for (const Case& c : std::vector<Case>{
           {"", "source.tasks[1].name: required"},
           {"has space", "source.tasks[1].name: \"has space\" may hold only"},
           {"a/b", "may hold only letters"},
           {"..", "source.tasks[1].name: \"..\" is not a task name"},
           {std::string(129, 'a'), "longer than 128 characters"},
           // Escaped, so that the message is not cut at the NUL.
           {std::string("a\0b", 3), "source.tasks[1].name: \"a\\x00\\x62\" may hold only"},
           {"a\x1b[31m", "source.tasks[1].name: \"a\\x1b[31m\" may hold only"},
           {"sst2", "source.tasks[1].name: \"sst2\" is also the name of "
                    "source.tasks[0]; task names must be unique"},
       }) {
    PipelineSpec spec = ValidSpec();
    spec.mutable_source()->mutable_tasks(1)->set_name(c.name);
    EXPECT_THAT(Problems(spec), HasSubstr(c.problem)) << c.name;
  }
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->mutable_tasks(1)->set_name("Super_GLUE-v1.1");
  spec.mutable_distillation()->mutable_tasks(1)->set_name("Super_GLUE-v1.1");
  EXPECT_EQ(Problems(spec), "");
}

TEST(ValidatePipelineSpec, TaskFiles) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->mutable_tasks(2)->set_train_path(
      absl::StrCat(TmpDir(), "/missing.jsonl"));
  EXPECT_EQ(Problems(spec),
            absl::StrCat("source.tasks[2].train_path: file does not exist: ",
                         TmpDir(), "/missing.jsonl"));
  // Without file checks the same spec passes.
  SpecValidationOptions no_files;
  no_files.check_files = false;
  EXPECT_EQ(Problems(spec, no_files), "");

  spec = ValidSpec();
  spec.mutable_source()->mutable_tasks(0)->set_train_path(TmpDir());
  EXPECT_THAT(Problems(spec),
              HasSubstr("source.tasks[0].train_path: is not a regular file"));
  spec = ValidSpec();
  spec.mutable_source()->mutable_tasks(0)->set_train_path("");
  EXPECT_THAT(Problems(spec), HasSubstr("source.tasks[0].train_path: required"));
  EXPECT_THAT(Problems(spec, no_files),
              HasSubstr("source.tasks[0].train_path: required"));
  spec = ValidSpec();
  spec.mutable_target()->mutable_tasks(0)->set_eval_path("/no/such/eval.jsonl");
  EXPECT_EQ(Problems(spec),
            "target.tasks[0].eval_path: file does not exist: "
            "/no/such/eval.jsonl");
}

TEST(ValidatePipelineSpec, EvalModeAndCandidates) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->mutable_tasks(0)->set_eval_mode("Rank");
  EXPECT_EQ(Problems(spec),
            "source.tasks[0].eval_mode: unknown value \"Rank\"; expected one "
            "of \"generate\", \"rank\"");
  spec = ValidSpec();
  spec.mutable_target()->mutable_tasks(0)->clear_candidates();
  EXPECT_EQ(Problems(spec),
            "target.tasks[0].candidates: eval_mode \"rank\" needs at least two candidates to "
            "choose from; got 0");
  spec = ValidSpec();
  spec.mutable_target()->mutable_tasks(0)->clear_candidates();
  spec.mutable_target()->mutable_tasks(0)->add_candidates("entailment");
  EXPECT_EQ(Problems(spec),
            "target.tasks[0].candidates: eval_mode \"rank\" needs at least two candidates to "
            "choose from; got 1");
  spec = ValidSpec();
  spec.mutable_target()->mutable_tasks(0)->add_candidates("");
  spec.mutable_target()->mutable_tasks(0)->add_candidates("entailment");
  EXPECT_EQ(Problems(spec),
            "target.tasks[0].candidates[2]: empty candidate; "
            "target.tasks[0].candidates[3]: \"entailment\" repeats "
            "target.tasks[0].candidates[0]");
}

TEST(ValidatePipelineSpec, TrainSettings) {
  struct Case {
    std::function<void(mpt::v1::TrainSpec*)> change;
    std::string problem;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (const Case& c : std::vector<Case>{
           {[](auto* t) { t->set_steps(0); },
            "source.train.steps: required, must be > 0, got 0"},
           {[](auto* t) { t->set_steps(-5); },
            "source.train.steps: required, must be > 0, got -5"},
           {[](auto* t) { t->set_batch_size(-1); },
            "source.train.batch_size: must be >= 1, got -1"},
           {[](auto* t) { t->set_eval_every(-1); },
            "source.train.eval_every: must be >= 0, got -1"},
           {[](auto* t) { t->set_checkpoint_every(-2); },
            "source.train.checkpoint_every: must be >= 0, got -2"},
           {[](auto* t) { t->set_max_input_length(-1); },
            "source.train.max_input_length: must be >= 1, got -1"},
           {[](auto* t) { t->set_max_target_length(-1); },
            "source.train.max_target_length: must be >= 1, got -1"},
           {[](auto* t) { t->set_max_eval_examples(-1); },
            "source.train.max_eval_examples: must be >= 0, got -1"},
           {[](auto* t) { t->mutable_optimizer()->set_learning_rate(-0.1); },
            "source.train.optimizer.learning_rate: must be in (0, 1000], got -0.1"},
           {[](auto* t) { t->mutable_optimizer()->set_learning_rate(1e300); },
            "source.train.optimizer.learning_rate: must be in (0, 1000], got 1e+300"},
           {[](auto* t) { t->mutable_optimizer()->set_learning_rate(1e39); },
            "source.train.optimizer.learning_rate: must be in (0, 1000], got 1e+39"},
           {[nan](auto* t) { t->mutable_optimizer()->set_learning_rate(nan); },
            "source.train.optimizer.learning_rate: must be a finite number"},
           {[](auto* t) { t->mutable_optimizer()->set_weight_decay(-1); },
            "source.train.optimizer.weight_decay: must be in [0, 1000], got -1"},
           {[](auto* t) { t->mutable_optimizer()->set_weight_decay(1e300); },
            "source.train.optimizer.weight_decay: must be in [0, 1000], got 1e+300"},
           {[](auto* t) { t->mutable_optimizer()->set_max_grad_norm(1e300); },
            "source.train.optimizer.max_grad_norm: must be <= 1e+06 (negative: no clipping), "
            "got 1e+300"},
           {[](auto* t) { t->mutable_optimizer()->set_warmup_steps(-1); },
            "source.train.optimizer.warmup_steps: must be >= 0, got -1"},
           {[](auto* t) { t->mutable_optimizer()->set_warmup_steps(11); },
            "source.train.optimizer.warmup_steps: 11 is more than "
            "source.train.steps (10)"},
           {[](auto* t) { t->mutable_optimizer()->set_schedule("exponential"); },
            "source.train.optimizer.schedule: unknown value \"exponential\"; "
            "expected one of \"linear\", \"cosine\", \"constant\""},
           {[inf](auto* t) { t->mutable_optimizer()->set_max_grad_norm(inf); },
            "source.train.optimizer.max_grad_norm: must be a finite number"},
       }) {
    PipelineSpec spec = ValidSpec();
    c.change(spec.mutable_source()->mutable_train());
    EXPECT_THAT(Problems(spec), HasSubstr(c.problem));
  }
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->mutable_train()->mutable_optimizer()->set_warmup_steps(10);
  spec.mutable_source()->mutable_train()->mutable_optimizer()->set_max_grad_norm(-1);
  spec.mutable_source()->mutable_train()->mutable_optimizer()->set_learning_rate(1e3);
  spec.mutable_source()->mutable_train()->mutable_optimizer()->set_weight_decay(1e3);
  EXPECT_EQ(Problems(spec), "");
}

TEST(ValidatePipelineSpec, SourceInit) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_source()->set_init("ZERO");
  EXPECT_EQ(Problems(spec),
            "source.init: unknown value \"ZERO\"; expected one of \"RANDOM\", "
            "\"TEXT\", \"SAMPLE_VOCAB\", \"ADAPTERS\"");
  spec.mutable_source()->set_init("TEXT");
  EXPECT_EQ(Problems(spec), "source.init_text: required when init is \"TEXT\"");
  spec.mutable_source()->set_init_text("classify the sentiment");
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_source()->set_init("SAMPLE_VOCAB");
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_source()->set_init("ADAPTERS");
  EXPECT_EQ(Problems(spec), "source.init_adapters: required when init is \"ADAPTERS\"");
  spec.mutable_source()->add_init_adapters("/adapters/a");
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_source()->set_init("RANDOM");
  EXPECT_EQ(Problems(spec),
            "source.init_adapters: used only when source.init is \"ADAPTERS\", but source.init "
            "is \"RANDOM\"");
}

TEST(ValidatePipelineSpec, AblationSwitches) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_distillation()->set_losses("kl");
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_distillation()->set_losses("hidden");
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_distillation()->set_losses("logits");
  EXPECT_EQ(Problems(spec),
            "distillation.losses: unknown value \"logits\"; expected one of \"kl+hidden\", "
            "\"kl\", \"hidden\"");
  // A long value is cut short, so that it does not crowd out the other problems.
  spec.mutable_distillation()->set_losses(std::string(5000, 'z'));
  EXPECT_EQ(Problems(spec), "distillation.losses: unknown value \"" + std::string(64, 'z') +
                                "\"... (5000 bytes); expected one of \"kl+hidden\", \"kl\", "
                                "\"hidden\"");
  spec.mutable_distillation()->set_losses("kl+hidden");
  spec.mutable_target()->set_init("TEACHER_MEAN");
  EXPECT_EQ(Problems(spec),
            "target.teacher_adapters: required when init is \"TEACHER_MEAN\"");
  spec.mutable_target()->set_init("AVERAGE_SOURCE_TASKS");
  spec.mutable_target()->set_trainable("factors");
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_target()->set_trainable("shared");
  EXPECT_EQ(Problems(spec),
            "target.trainable: unknown value \"shared\"; expected one of \"all\", \"factors\"");
}

TEST(ValidatePipelineSpec, Distillation) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_distillation()->mutable_tasks(1)->set_name("boolq");
  EXPECT_EQ(Problems(spec),
            "distillation.tasks[1].name: \"boolq\" is not a source task, so it "
            "has no teacher prompt");
  spec = ValidSpec();
  spec.mutable_distillation()->set_lambda(-1);
  EXPECT_EQ(Problems(spec), "distillation.lambda: must be in [0, 10000], got -1");
  spec.mutable_distillation()->set_lambda(1e300);
  EXPECT_EQ(Problems(spec), "distillation.lambda: must be in [0, 10000], got 1e+300");
  spec.mutable_distillation()->set_lambda(1e4);
  EXPECT_EQ(Problems(spec), "");
  spec = ValidSpec();
  spec.mutable_distillation()->set_temperature(-2);
  EXPECT_EQ(Problems(spec), "distillation.temperature: must be in [0.001, 1000], got -2");
  spec.mutable_distillation()->set_temperature(1e300);
  EXPECT_EQ(Problems(spec), "distillation.temperature: must be in [0.001, 1000], got 1e+300");
  spec.mutable_distillation()->set_temperature(1e-300);
  EXPECT_EQ(Problems(spec), "distillation.temperature: must be in [0.001, 1000], got 1e-300");
  spec.mutable_distillation()->set_temperature(1e-3);
  EXPECT_EQ(Problems(spec), "");
  spec = ValidSpec();
  spec.mutable_distillation()->set_world_size(-2);
  EXPECT_EQ(Problems(spec), "distillation.world_size: must be >= 1, got -2");
  spec = ValidSpec();
  spec.mutable_distillation()->set_world_size(32);
  EXPECT_EQ(Problems(spec),
            "distillation.train.batch_size: 16 is smaller than "
            "distillation.world_size (32); every rank needs at least one "
            "example a step");
  spec = ValidSpec();
  spec.mutable_distillation()->set_sampling("random");
  EXPECT_THAT(Problems(spec),
              HasSubstr("distillation.sampling: unknown value \"random\""));
  spec = ValidSpec();
  spec.mutable_distillation()->mutable_train()->set_steps(0);
  EXPECT_EQ(Problems(spec), "distillation.train.steps: required, must be > 0, got 0");
  // A subset of the source tasks, in another order, is fine.
  spec = ValidSpec();
  spec.mutable_distillation()->mutable_tasks()->SwapElements(0, 2);
  spec.mutable_distillation()->mutable_tasks()->RemoveLast();
  EXPECT_EQ(Problems(spec), "");
}

TEST(ValidatePipelineSpec, Target) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_target()->clear_tasks();
  EXPECT_EQ(Problems(spec), "target.tasks: at least one target task is required");
  spec = ValidSpec();
  spec.clear_target();
  EXPECT_EQ(Problems(spec), "");
  spec = ValidSpec();
  spec.mutable_target()->set_init("MEAN");
  EXPECT_THAT(Problems(spec), HasSubstr("target.init: unknown value \"MEAN\""));
  spec = ValidSpec();
  spec.mutable_target()->set_init("EXACT_SOURCE_TASK");
  spec.mutable_target()->set_init_task(2);
  EXPECT_EQ(Problems(spec), "");
  spec.mutable_target()->set_init_task(3);
  EXPECT_EQ(Problems(spec),
            "target.init_task: 3 is not a distillation task index (there are 3 "
            "tasks)");
  spec.mutable_target()->set_init_task(-1);
  EXPECT_EQ(Problems(spec), "target.init_task: must be >= 0, got -1");
  spec = ValidSpec();
  spec.mutable_target()->set_init("TEXT");
  spec.mutable_target()->set_init_text("   ");
  EXPECT_EQ(Problems(spec), "target.init_text: required when init is \"TEXT\"");
  spec = ValidSpec();
  spec.mutable_target()->mutable_train()->set_steps(0);
  EXPECT_EQ(Problems(spec), "target.train.steps: required, must be > 0, got 0");
}

TEST(ValidatePipelineSpec, ReportsEveryProblem) {
  PipelineSpec spec = ValidSpec();
  spec.mutable_prompt()->set_num_ranks(21);
  spec.mutable_distillation()->set_world_size(-1);
  spec.mutable_target()->mutable_train()->set_steps(-1);
  EXPECT_EQ(Problems(spec),
            "prompt.num_ranks: 21 is larger than the prompt "
            "(num_virtual_tokens*num_transformer_submodules = 20); "
            "distillation.world_size: must be >= 1, got -1; "
            "target.train.steps: required, must be > 0, got -1");
}

TEST(StageValidators, WorkOnTheirOwn) {
  PipelineSpec spec = ValidSpec();
  EXPECT_TRUE(ValidateSourceTrainingSpec(spec.source()).ok());
  EXPECT_TRUE(ValidateDistillationSpec(spec.distillation()).ok());
  EXPECT_TRUE(ValidateTargetAdaptationSpec(spec.target()).ok());

  mpt::v1::DistillationSpec distillation;
  ApplyDefaults(&distillation);
  absl::Status status = ValidateDistillationSpec(distillation);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              HasSubstr("distillation.tasks: at least one distillation task is "
                        "required"));
  EXPECT_THAT(Message(status), HasSubstr("distillation.train.steps"));

  // Alone, the target stage cannot know the number of source tasks.
  mpt::v1::TargetAdaptationSpec target = spec.target();
  target.set_init("EXACT_SOURCE_TASK");
  target.set_init_task(99);
  EXPECT_TRUE(ValidateTargetAdaptationSpec(target).ok());

  mpt::v1::SourceTrainingSpec source = spec.source();
  source.mutable_tasks(0)->set_train_path("/no/such/file");
  EXPECT_THAT(Message(ValidateSourceTrainingSpec(source)),
              HasSubstr("source.tasks[0].train_path: file does not exist"));
  SpecValidationOptions no_files;
  no_files.check_files = false;
  EXPECT_TRUE(ValidateSourceTrainingSpec(source, no_files).ok());
}

}  // namespace
}  // namespace mpt
