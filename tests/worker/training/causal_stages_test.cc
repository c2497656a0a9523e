// The three MPT stages on a decoder-only model (the tiny llama of
// tests/testdata/causal_lm) through the same library calls as for T5: each
// stage lowers its loss and writes PEFT CAUSAL_LM adapters; distillation
// from a student equal to its teacher starts at zero KL and zero hidden-state
// loss (teacher and student outputs line up at the target positions); a
// spec the family cannot take and an adapter of the other family are clear
// errors.
#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/spec/spec_loader.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/data/task_data.h"
#include "worker/lm/base_model_loader.h"
#include "worker/prompts/adapter_io.h"
#include "worker/training/mpt_stages.h"
#include "worker/training/teacher_cache.h"

namespace mpt {
namespace {

using testing::DataPath;
using testing::FreshTempDir;

class StepLog : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override { events.push_back(e); }
  // The mean of `name` over the first and the last three step events of `task`.
  std::pair<double, double> FirstAndLast(const std::string& name,
                                         const std::string& task = "") const {
    std::vector<double> values;
    for (const auto& e : events) {
      if (e.kind != ProgressKind::kStep || (!task.empty() && e.task != task)) continue;
      for (const auto& [k, v] : e.losses) {
        if (k == name) values.push_back(v);
      }
    }
    const size_t n = std::min<size_t>(3, values.size() / 2);
    if (n == 0) return {-1, -1};
    double first = 0, last = 0;
    for (size_t i = 0; i < n; ++i) {
      first += values[i] / n;
      last += values[values.size() - 1 - i] / n;
    }
    return {first, last};
  }
  std::vector<ProgressEvent> events;
};

mpt::v1::TaskData Task(const std::string& name) {
  mpt::v1::TaskData t;
  t.set_name(name);
  t.set_train_path(DataPath("tests/testdata/tiny_tasks/" + name + ".train.jsonl"));
  t.set_eval_path(DataPath("tests/testdata/tiny_tasks/" + name + ".eval.jsonl"));
  return t;
}

mpt::v1::TrainSpec Train(int steps) {
  mpt::v1::TrainSpec t;
  t.set_steps(steps);
  t.set_batch_size(8);
  t.mutable_optimizer()->set_learning_rate(0.1);
  t.set_seed(5);
  t.set_max_eval_examples(8);
  return t;
}

class CausalStagesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto base = LoadBaseModel(DataPath("tests/testdata/causal_lm/model"));
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = new BaseModel(std::move(*base));
  }
  static void TearDownTestSuite() { delete base_; }

  void SetUp() override {
    prompt_.set_num_virtual_tokens(4);
    prompt_.set_num_transformer_submodules(1);
    prompt_.set_num_ranks(1);
  }

  StageEnv Env() {
    StageEnv env;
    env.model = base_->model.get();
    env.tokenizer = base_->tokenizer.get();
    env.sink = &log_;
    return env;
  }

  // A plain prompt of 4 x 32, the test model's width.
  static SoftPromptConfig PlainPrompt() {
    SoftPromptConfig c;
    c.kind = PromptKind::kPromptTuning;
    c.num_virtual_tokens = 4;
    c.token_dim = 32;
    return c;
  }

  // Six training rows of task "first" and a teacher prompt (4 x 32) for
  // the distillation step tests.
  struct DistillationSetUp {
    std::vector<TokenizedExample> examples;
    std::vector<const TokenizedExample*> rows;
    SoftPromptConfig multi;  // a one-task multitask prompt of the teacher's shape
    at::Tensor teacher_prompt;
  };
  static DistillationSetUp SetUpDistillation() {
    DistillationSetUp s;
    google::protobuf::RepeatedPtrField<mpt::v1::TaskData> tasks;
    *tasks.Add() = Task("first");
    auto data = LoadTaskData(tasks, Train(1), *base_->tokenizer);
    EXPECT_TRUE(data.ok()) << data.status();
    if (!data.ok()) return s;
    s.examples = (*data)[0].train;
    for (int i = 0; i < 6; ++i) s.rows.push_back(&s.examples[i]);
    const SoftPromptConfig plain = PlainPrompt();
    auto teacher = SoftPrompt::Random(plain, 11);
    EXPECT_TRUE(teacher.ok());
    if (!teacher.ok()) return s;
    s.multi = plain;
    s.multi.kind = PromptKind::kMultitask;
    s.multi.num_tasks = 1;
    s.teacher_prompt = teacher->TaskPrompt(0).detach();
    return s;
  }

  static BaseModel* base_;
  mpt::v1::PromptSpec prompt_;
  StepLog log_;
};

BaseModel* CausalStagesTest::base_ = nullptr;

TEST_F(CausalStagesTest, ThreeStagesLowerTheirLossesAndWriteCausalLmAdapters) {
  const std::string out = FreshTempDir("causal_pipeline");
  mpt::v1::SourceTrainingSpec source;
  *source.add_tasks() = Task("first");
  mpt::v1::TaskData count = Task("count");
  count.set_eval_mode("rank");
  for (const char* c : {"1", "2", "3", "4"}) count.add_candidates(c);
  *source.add_tasks() = count;
  *source.mutable_train() = Train(24);
  source.set_init("TEXT");
  source.set_init_text("Answer:");
  ApplyDefaults(&source);
  auto trained = RunSourceTraining(Env(), prompt_, source, out + "/source");
  ASSERT_TRUE(trained.ok()) << trained.status();
  std::vector<std::string> teachers;
  for (const TaskOutcome& t : *trained) {
    auto [first, last] = log_.FirstAndLast("loss", t.task);
    EXPECT_LT(last, first) << "source training did not learn " << t.task;
    EXPECT_FALSE(t.metrics.empty()) << "evaluation (generation / rank) should have run";
    auto adapter = ReadAdapter(t.adapter);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    EXPECT_EQ(adapter->info.task_type, "CAUSAL_LM");
    EXPECT_EQ(adapter->info.prompt.num_transformer_submodules, 1);
    EXPECT_EQ(adapter->info.prompt.token_dim, 32);
    teachers.push_back(t.adapter);
  }
  // The steps report their model FLOPs (the worker's MFU metric): the
  // decoder-only count of worker/model/model_flops.h, not 0.
  double flops_per_step = 0;
  for (const ProgressEvent& e : log_.events) {
    flops_per_step = std::max(flops_per_step, e.model_flops_per_step);
  }
  EXPECT_GT(flops_per_step, 0);

  log_.events.clear();
  mpt::v1::DistillationSpec distill;
  *distill.mutable_tasks() = source.tasks();
  *distill.mutable_train() = Train(16);
  ApplyDefaults(&distill);
  auto student = RunDistillation(Env(), prompt_, distill, teachers, out + "/distillation");
  ASSERT_TRUE(student.ok()) << student.status();
  auto [kl_first, kl_last] = log_.FirstAndLast("kl");
  EXPECT_GT(kl_first, 0);
  EXPECT_LT(kl_last, kl_first) << "distillation did not bring the student towards the teachers";
  EXPECT_GT(log_.FirstAndLast("hidden").first, 0);
  auto multitask = ReadAdapter(out + "/distillation");
  ASSERT_TRUE(multitask.ok()) << multitask.status();
  EXPECT_EQ(multitask->info.task_type, "CAUSAL_LM");
  EXPECT_EQ(multitask->info.prompt.num_tasks, 2);
  EXPECT_EQ(multitask->info.task_names, (std::vector<std::string>{"first", "count"}));

  log_.events.clear();
  mpt::v1::TargetAdaptationSpec target;
  *target.add_tasks() = Task("echo");
  *target.mutable_train() = Train(16);
  ApplyDefaults(&target);
  auto adapted = RunTargetAdaptation(Env(), prompt_, target, out + "/distillation",
                                     out + "/target");
  ASSERT_TRUE(adapted.ok()) << adapted.status();
  auto [t_first, t_last] = log_.FirstAndLast("loss");
  EXPECT_LT(t_last, t_first) << "target adaptation did not learn";
  auto echo = ReadAdapter(out + "/target/echo");
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_EQ(echo->info.task_type, "CAUSAL_LM");
  EXPECT_EQ(echo->info.base_model_name_or_path, base_->model->folder());
}

// A student that is its teacher (one task, U = V = 1) has nothing to learn
// from it: KL and hidden-state loss are exactly zero, so the teacher's
// outputs (taken on the teacher path, at its target positions) line up
// with the student's. A different teacher gives both a positive value.
TEST_F(CausalStagesTest, DistillationTermsCompareTheSamePositions) {
  const DistillationSetUp s = SetUpDistillation();
  ASSERT_EQ(s.rows.size(), 6u);
  const Batch batch = Collate(s.rows, base_->tokenizer->pad_id());
  const at::Tensor& teacher_prompt = s.teacher_prompt;
  auto student = SoftPrompt::FromTeachers(s.multi, {teacher_prompt});
  ASSERT_TRUE(student.ok());
  DistillationLoss options;
  options.teacher_cache_bytes = 0;
  for (const bool same : {true, false}) {
    SCOPED_TRACE(same ? "same teacher" : "other teacher");
    const at::Tensor table =
        (same ? teacher_prompt : teacher_prompt + 0.5).unsqueeze(0);  // [1, T, d]
    StepFunction step =
        MakeDistillationStep(*base_->model, prompt_, &*student, table, options);
    auto loss = step(batch, static_cast<double>(batch.target_tokens));
    ASSERT_TRUE(loss.ok()) << loss.status();
    std::map<std::string, double> parts(loss->parts.begin(), loss->parts.end());
    if (same) {
      EXPECT_EQ(parts["kl"], 0.0);
      EXPECT_EQ(parts["hidden"], 0.0);
    } else {
      EXPECT_GT(parts["kl"], 1e-6);
      EXPECT_GT(parts["hidden"], 1e-6);
    }
    EXPECT_GT(parts["plm"], 0.0);
  }
}

// The teacher cache keeps hidden states only and rebuilds a cached row's
// logits with the LM head: a step served from the cache, wholly or in part,
// gives the distillation terms of a step that runs the teachers.
TEST_F(CausalStagesTest, CachedTeachersGiveTheTeachersTerms) {
  const DistillationSetUp s = SetUpDistillation();
  ASSERT_EQ(s.rows.size(), 6u);
  const Batch batch = Collate(s.rows, base_->tokenizer->pad_id());
  const Batch part = Collate({s.rows[1], s.rows[4]}, base_->tokenizer->pad_id());
  auto student = SoftPrompt::FromTeachers(s.multi, {s.teacher_prompt + 0.3});
  ASSERT_TRUE(student.ok());
  const at::Tensor table = s.teacher_prompt.unsqueeze(0);
  struct Terms {
    double kl = 0, hidden = 0, flops = 0;
  };
  auto terms = [&](StepFunction& step, const Batch& b) {
    auto loss = step(b, static_cast<double>(b.target_tokens));
    EXPECT_TRUE(loss.ok()) << loss.status();
    if (!loss.ok()) return Terms{};
    std::map<std::string, double> parts(loss->parts.begin(), loss->parts.end());
    return Terms{parts["kl"], parts["hidden"], loss->flops};
  };
  DistillationLoss uncached;
  uncached.teacher_cache_bytes = 0;
  StepFunction plain_step =
      MakeDistillationStep(*base_->model, prompt_, &*student, table, uncached);
  const Terms want = terms(plain_step, batch);
  ASSERT_GT(want.kl, 1e-6);
  DistillationLoss student_only;
  student_only.lambda = 0;
  StepFunction student_step =
      MakeDistillationStep(*base_->model, prompt_, &*student, table, student_only);
  const double student_flops = terms(student_step, batch).flops;

  DistillationLoss cached;
  cached.teacher_cache = std::make_shared<TeacherCache>(TeacherCache::kDefaultMaxBytes);
  StepFunction step = MakeDistillationStep(*base_->model, prompt_, &*student, table, cached);
  terms(step, part);                      // two rows cached
  const Terms mixed = terms(step, batch);  // two from the cache, four computed
  const Terms all = terms(step, batch);    // all six from the cache
  EXPECT_EQ(cached.teacher_cache->hits(), 2 + 6);
  for (const Terms& got : {mixed, all}) {
    EXPECT_NEAR(got.kl, want.kl, 1e-6 * want.kl);
    EXPECT_NEAR(got.hidden, want.hidden, 1e-6 * want.hidden);
  }
  // The FLOPs count the LM head run on the cached rows' hidden states at
  // their real target positions only ([32] x [32, vocab] each) and no
  // teacher pass.
  const int64_t real_positions = batch.labels.ne(-100).sum().item<int64_t>();
  ASSERT_LT(real_positions, 6 * batch.labels.size(1));  // the batch has padding
  EXPECT_DOUBLE_EQ(all.flops, student_flops + 2.0 * static_cast<double>(real_positions) * 32 *
                                                  static_cast<double>(base_->model->vocab_size()));
}

TEST_F(CausalStagesTest, RefusesTwoSubmodulesAndAdaptersOfTheOtherFamily) {
  const std::string out = FreshTempDir("causal_errors");
  mpt::v1::SourceTrainingSpec source;
  *source.add_tasks() = Task("first");
  *source.mutable_train() = Train(2);
  ApplyDefaults(&source);
  mpt::v1::PromptSpec two = prompt_;
  two.set_num_transformer_submodules(2);
  auto refused = RunSourceTraining(Env(), two, source, out + "/source");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status()));
  EXPECT_NE(refused.status().message().find("prompt.num_transformer_submodules"),
            std::string::npos)
      << refused.status();

  // A SEQ_2_SEQ_LM (T5) teacher of the right width.
  const SoftPromptConfig c = PlainPrompt();
  auto prompt = SoftPrompt::Random(c, 3);
  ASSERT_TRUE(prompt.ok());
  AdapterInfo info;
  info.prompt = c;
  info.task_type = "SEQ_2_SEQ_LM";
  ASSERT_TRUE(WriteAdapter(out + "/t5_teacher", *prompt, info).ok());
  mpt::v1::DistillationSpec distill;
  *distill.add_tasks() = Task("first");
  *distill.mutable_train() = Train(2);
  ApplyDefaults(&distill);
  auto wrong = RunDistillation(Env(), prompt_, distill, {out + "/t5_teacher"}, out + "/d");
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(wrong.status()));
  EXPECT_NE(wrong.status().message().find("task_type"), std::string::npos) << wrong.status();
}

}  // namespace
}  // namespace mpt
