// The learning core on the demo model (demo/model, a small T5 pretrained on
// instructed skills): each stage lowers its loss and reaches a stated
// accuracy on held-out examples.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "gtest/gtest.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/lm/t5_task_tokenizer.h"
#include "tests/test_util.h"
#include "worker/prompts/adapter_io.h"
#include "worker/training/mpt_stages.h"
#include "common/spec/spec_loader.h"
#include "worker/data/task_data.h"

namespace mpt {
namespace {

using testing::DataPath;
using testing::FreshTempDir;

double Metric(const NamedValues& values, const std::string& name) {
  for (const auto& [k, v] : values) {
    if (k == name) return v;
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

class LossLog : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override {
    if (e.kind != ProgressKind::kStep || e.losses.empty()) return;
    if (first < 0) first = e.losses[0].second;
    last = e.losses[0].second;
  }
  double first = -1, last = -1;
};

mpt::v1::TaskData Task(const std::string& name, bool rank = false) {
  mpt::v1::TaskData t;
  t.set_name(name);
  t.set_train_path(DataPath("demo/data/" + name + "/train.jsonl"));
  t.set_eval_path(DataPath("demo/data/" + name + "/eval.jsonl"));
  return t;
}

mpt::v1::TrainSpec Train(int steps, double lr) {
  mpt::v1::TrainSpec t;
  t.set_steps(steps);
  t.set_batch_size(16);
  t.mutable_optimizer()->set_learning_rate(lr);
  t.mutable_optimizer()->set_schedule("constant");
  t.set_max_input_length(64);
  t.set_max_target_length(24);
  t.set_max_eval_examples(100);
  return t;
}

TEST(DemoLearning, EachStageLearnsOnTheDemoModel) {
  auto model = T5Model::Load(DataPath("demo/model"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = T5Tokenizer::Load(DataPath("demo/model"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  LossLog log;
  StageEnv env;
  const T5PromptedModel lm(model->get());
  const T5TaskTokenizer task_tokenizer(tokenizer->get());
  env.model = &lm;
  env.tokenizer = &task_tokenizer;
  env.sink = &log;
  mpt::v1::PromptSpec prompt;
  prompt.set_num_virtual_tokens(20);
  ApplyDefaults(&prompt);
  const std::string out = FreshTempDir("demo");

  // Stage 1: the inputs carry no instruction; a prompt learns to stand in.
  mpt::v1::SourceTrainingSpec source;
  *source.add_tasks() = Task("animal");
  *source.add_tasks() = Task("colour");
  *source.mutable_train() = Train(150, 0.3);
  ApplyDefaults(&source);
  std::vector<std::string> teachers;
  for (const char* name : {"animal", "colour"}) {
    log = LossLog();
    mpt::v1::SourceTrainingSpec one = source;
    auto result = RunSourceTraining(env, prompt, one, out + "/source", {name});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LT(log.last, 0.5 * log.first) << name;
    EXPECT_GE(Metric((*result)[0].metrics, std::string(name) + "/accuracy"), 0.9) << name;
    teachers.push_back((*result)[0].adapter);
  }

  // Stage 2: the shared prompt keeps both skills.
  log = LossLog();
  mpt::v1::DistillationSpec distill;
  *distill.mutable_tasks() = source.tasks();
  *distill.mutable_train() = Train(100, 0.03);
  distill.set_sampling("uniform");
  ApplyDefaults(&distill);
  auto student = RunDistillation(env, prompt, distill, teachers, out + "/distillation");
  ASSERT_TRUE(student.ok()) << student.status();
  EXPECT_LT(log.last, log.first);
  EXPECT_GE(Metric(student->metrics, "average/accuracy"), 0.85);

  // Stage 3: a new skill (find the food) from the shared prompt, few steps;
  // an untrained random prompt scores 0 on it. How far 40 steps get depends
  // on the shared prompt, which rounding-level differences in the stages
  // before change (a build whose attention products round differently gave
  // 0.27 to 0.98 over six seeds where another gave 1.0 on all), so the
  // accuracy is the mean over three seeds of the target run.
  double sum = 0;
  for (int seed = 0; seed < 3; ++seed) {
    log = LossLog();
    mpt::v1::TargetAdaptationSpec target;
    *target.add_tasks() = Task("food");
    *target.mutable_train() = Train(40, 0.1);
    target.mutable_train()->set_seed(seed);
    ApplyDefaults(&target);
    auto adapted = RunTargetAdaptation(env, prompt, target, out + "/distillation",
                                       out + "/target" + std::to_string(seed));
    ASSERT_TRUE(adapted.ok()) << adapted.status();
    EXPECT_LT(log.last, log.first) << "seed " << seed;
    const double accuracy = Metric((*adapted)[0].metrics, "food/accuracy");
    std::printf("food accuracy after 40 steps, seed %d: %.3f\n", seed, accuracy);
    sum += accuracy;
  }
  EXPECT_GE(sum / 3, 0.6);
}

}  // namespace
}  // namespace mpt
