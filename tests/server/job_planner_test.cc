#include "server/job_planner.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/test_requests.h"

namespace mpt {
namespace {

// The coordinator tests' pipeline, with this file's model path.
mpt::v1::SubmitJobRequest Pipeline(const std::vector<std::string>& sources,
                                   const std::vector<std::string>& targets, int world_size = 1) {
  return ::mpt::testing::PipelineRequest(sources, targets, world_size, /*priority=*/0,
                                         "/models/t5-small");
}

std::vector<std::string> StageIds(const JobPlan& plan) {
  std::vector<std::string> ids;
  for (const auto& s : plan.stages) ids.push_back(s.stage().id());
  return ids;
}

TEST(JobPlannerTest, PipelineExpandsIntoSourcesDistillationAndTargets) {
  absl::StatusOr<JobPlan> plan = PlanJob(Pipeline({"a", "b"}, {"c"}, 2), JobPlannerOptions());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(StageIds(*plan),
            (std::vector<std::string>{"source/a", "source/b", "distillation", "target/c"}));
  const auto& d = plan->stages[2];
  EXPECT_EQ(d.world_size(), 2);
  EXPECT_EQ(std::vector<std::string>(d.depends_on().begin(), d.depends_on().end()),
            (std::vector<std::string>{"source/a", "source/b"}));
  EXPECT_EQ(plan->stages[3].depends_on(0), "distillation");
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(plan->stages[i].index(), i);
    EXPECT_EQ(plan->stages[i].stage().state(), mpt::v1::QUEUED);
  }
  EXPECT_TRUE(plan->required_adapters.empty());
}

TEST(JobPlannerTest, PipelineWithoutTargetEndsAfterDistillation) {
  absl::StatusOr<JobPlan> plan = PlanJob(Pipeline({"a"}, {}), JobPlannerOptions());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(StageIds(*plan), (std::vector<std::string>{"source/a", "distillation"}));
}

TEST(JobPlannerTest, WorldSizeAboveTheClusterLimitIsRejected) {
  JobPlannerOptions options;
  options.max_world_size = 4;
  absl::StatusOr<JobPlan> plan = PlanJob(Pipeline({"a"}, {}, 8), options);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("distillation.world_size"), std::string::npos)
      << plan.status();
}

TEST(JobPlannerTest, MissingKindAndBaseModelNameTheirFields) {
  mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
  r.set_kind(mpt::v1::JOB_KIND_UNSPECIFIED);
  absl::StatusOr<JobPlan> plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.status().message().rfind("kind:", 0), 0u) << plan.status();

  mpt::v1::SubmitJobRequest s;
  s.set_kind(mpt::v1::SOURCE_TRAINING);
  *s.mutable_spec()->mutable_source()->add_tasks() = ::mpt::testing::Task("a");
  plan = PlanJob(s, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("base_model: required"), std::string::npos)
      << plan.status();
}

TEST(JobPlannerTest, AutocastIsCheckedForEveryKind) {
  mpt::v1::SubmitJobRequest pipeline = Pipeline({"a"}, {"c"});
  mpt::v1::SubmitJobRequest source;
  source.set_kind(mpt::v1::SOURCE_TRAINING);
  source.mutable_spec()->set_base_model("/models/t5-small");
  *source.mutable_spec()->mutable_source()->add_tasks() = ::mpt::testing::Task("a");
  source.mutable_spec()->mutable_source()->mutable_train()->set_steps(10);
  for (mpt::v1::SubmitJobRequest* r : {&pipeline, &source}) {
    r->mutable_spec()->set_autocast("bf16");
    absl::StatusOr<JobPlan> plan = PlanJob(*r, JobPlannerOptions());
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->spec.autocast(), "bf16");
    r->mutable_spec()->set_autocast("fp16");
    plan = PlanJob(*r, JobPlannerOptions());
    ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(plan.status().message().find("autocast: \"fp16\" is not a precision"),
              std::string::npos)
        << plan.status();
  }
}

TEST(JobPlannerTest, DistillationJobNeedsOneTeacherPerTaskAndReportsThem) {
  mpt::v1::SubmitJobRequest r;
  r.set_kind(mpt::v1::DISTILLATION);
  r.mutable_spec()->set_base_model("/models/t5-small");
  auto* d = r.mutable_spec()->mutable_distillation();
  *d->add_tasks() = ::mpt::testing::Task("a");
  *d->add_tasks() = ::mpt::testing::Task("b");
  d->mutable_train()->set_steps(5);
  d->add_teacher_adapters("jobs/x/artifacts/a");
  absl::StatusOr<JobPlan> plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("distillation.teacher_adapters"), std::string::npos);

  d->add_teacher_adapters("jobs/x/artifacts/b");
  plan = PlanJob(r, JobPlannerOptions());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->stages.size(), 1u);
  EXPECT_EQ(plan->stages[0].inputs_size(), 2);
  EXPECT_EQ(plan->stages[0].inputs(1).artifact(), "jobs/x/artifacts/b");
  EXPECT_EQ(plan->stages[0].inputs(1).task(), "b");
  ASSERT_EQ(plan->required_adapters.size(), 2u);
  EXPECT_EQ(plan->required_adapters[1].field, "distillation.teacher_adapters[1]");
  EXPECT_FALSE(plan->spec.has_source());
}

TEST(JobPlannerTest, TargetAdaptationNeedsAWellFormedSourceAdapter) {
  mpt::v1::SubmitJobRequest r;
  r.set_kind(mpt::v1::TARGET_ADAPTATION);
  r.mutable_spec()->set_base_model("/models/t5-small");
  auto* t = r.mutable_spec()->mutable_target();
  *t->add_tasks() = ::mpt::testing::Task("c");
  t->mutable_train()->set_steps(5);
  t->set_source_adapter("not-a-name");
  absl::StatusOr<JobPlan> plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("target.source_adapter"), std::string::npos);

  t->set_source_adapter("jobs/x/artifacts/d");
  plan = PlanJob(r, JobPlannerOptions());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(StageIds(*plan), (std::vector<std::string>{"target/c"}));
  EXPECT_EQ(plan->stages[0].inputs(0).role(), "source_adapter");
  ASSERT_EQ(plan->required_adapters.size(), 1u);
  EXPECT_EQ(plan->required_adapters[0].field, "target.source_adapter");
}

}  // namespace
}  // namespace mpt

namespace mpt {
namespace {

TEST(JobPlannerTest, RelativeAndDotDotPathsAreRejectedNamingTheField) {
  mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_train_path("data/a.jsonl");
  absl::StatusOr<JobPlan> plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("spec.source.tasks[0].train_path"), std::string::npos)
      << plan.status();

  r = Pipeline({"a"}, {});
  r.mutable_spec()->set_base_model("/models/../etc");
  plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("spec.base_model"), std::string::npos) << plan.status();

  r = Pipeline({"a"}, {});
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_eval_path("/d/x/../../e.jsonl");
  plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("spec.source.tasks[0].eval_path"), std::string::npos);

  r = Pipeline({"a"}, {});
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_train_path("/d/a..b.jsonl");
  EXPECT_TRUE(PlanJob(r, JobPlannerOptions()).ok());  // ".." inside a name is fine
}

TEST(JobPlannerTest, DataRootsConfinePathsBeforeAnyFileIsLookedAt) {
  JobPlannerOptions options;
  options.data_roots = {"/models", "/data/"};
  EXPECT_TRUE(PlanJob(Pipeline({"a"}, {}), options).ok());
  // Outside, whether it exists (/etc/passwd) or not, and with the file
  // check on: the same answer, which says nothing about the file.
  options.check_spec_files = true;
  for (const char* path : {"/etc/passwd", "/root/no_such_file", "/data2/a.jsonl"}) {
    mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
    r.mutable_spec()->mutable_source()->mutable_tasks(0)->set_eval_path(path);
    absl::StatusOr<JobPlan> plan = PlanJob(r, options);
    ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << path;
    const std::string message(plan.status().message());
    EXPECT_NE(message.find("spec.source.tasks[0].eval_path: \"" + std::string(path) +
                           "\" is outside the folders this coordinator reads jobs' files from "
                           "(--data_roots: /models,/data/)"),
              std::string::npos)
        << message;
    EXPECT_EQ(message.find("exist"), std::string::npos) << message;
  }
  mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
  r.mutable_spec()->set_base_model("/srv/models/t5");
  options.check_spec_files = false;
  absl::StatusOr<JobPlan> plan = PlanJob(r, options);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("spec.base_model: "), std::string::npos);
}

TEST(JobPlannerTest, InvalidUtf8IsInvalidArgumentNamingTheField) {
  mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
  r.set_display_name("bad \xC3\x28 name");
  absl::StatusOr<JobPlan> plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.status().message(), "display_name: not valid UTF-8");

  r = Pipeline({"a"}, {});
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->add_candidates("ok");
  r.mutable_spec()->mutable_source()->mutable_tasks(0)->add_candidates("\xED\xA0\x80");  // surrogate
  plan = PlanJob(r, JobPlannerOptions());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.status().message(), "spec.source.tasks[0].candidates[1]: not valid UTF-8");

  r = Pipeline({"a"}, {});
  r.set_display_name("caf\xC3\xA9 \xF0\x9F\x98\x80");  // valid two- and four-byte forms
  EXPECT_TRUE(PlanJob(r, JobPlannerOptions()).ok());
}

TEST(JobPlannerTest, UpperBoundsNameTheirFields) {
  mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
  r.mutable_spec()->mutable_source()->mutable_train()->set_steps(10'000'001);
  r.mutable_spec()->mutable_prompt()->set_num_virtual_tokens(10'001);
  JobPlannerOptions options;
  options.max_world_size = 100000;
  r.mutable_spec()->mutable_distillation()->set_world_size(1025);
  absl::StatusOr<JobPlan> plan = PlanJob(r, options);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(plan.status().message());
  EXPECT_NE(message.find("source.train.steps: must be <= 10000000"), std::string::npos) << message;
  EXPECT_NE(message.find("prompt.num_virtual_tokens: must be <= 10000"), std::string::npos);
  EXPECT_NE(message.find("distillation.world_size: must be <= 1024"), std::string::npos);
}

TEST(JobPlannerTest, ControlCharactersInNamesAreRefusedNamingTheField) {
  // C0 (tab, newline, escape), DEL and C1 (U+009B, a one-character CSI).
  for (const std::string& bad : {std::string("a\tb"), std::string("a\nb"),
                                std::string("\x1b[31mred"), std::string("a\x7f"),
                                std::string("a\xC2\x9B" "0m"), std::string("a\0b", 3)}) {
    mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
    r.set_display_name(bad);
    absl::StatusOr<JobPlan> plan = PlanJob(r, JobPlannerOptions());
    ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(plan.status().message().rfind("display_name: holds a control character", 0), 0u)
        << plan.status();
    r = Pipeline({"a"}, {});
    r.set_request_id(bad);
    plan = PlanJob(r, JobPlannerOptions());
    ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(plan.status().message().rfind("request_id: holds a control character", 0), 0u)
        << plan.status();
  }
  // Other non-ASCII text (here U+00A0 and U+00E9, which share the lead byte
  // 0xC2 / 0xC3 with C1 and Latin-1) is a name like any other.
  mpt::v1::SubmitJobRequest r = Pipeline({"a"}, {});
  r.set_display_name("caf\xC3\xA9\xC2\xA0x");
  EXPECT_TRUE(PlanJob(r, JobPlannerOptions()).ok());
}

}  // namespace
}  // namespace mpt
