#include "worker/training/prompt_trainer.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "worker/training/checkpoint.h"
#include "worker/model/denormals.h"
#include "worker/training/losses.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  fs::path p = fs::path(root ? root : "/tmp") / name;
  fs::remove_all(p);
  return p.string();
}

mpt::v1::TrainSpec Spec(int steps) {
  mpt::v1::TrainSpec t;
  t.set_steps(steps);
  t.set_batch_size(4);
  t.mutable_optimizer()->set_learning_rate(0.1);
  t.mutable_optimizer()->set_weight_decay(0.01);
  t.mutable_optimizer()->set_warmup_steps(2);
  t.mutable_optimizer()->set_schedule("linear");
  t.mutable_optimizer()->set_max_grad_norm(1.0);
  t.set_seed(11);
  return t;
}

// Eight examples whose "target" is a number; the loss pulls each prompt row
// towards the mean target of the batch, so the batch order matters.
std::vector<std::vector<TokenizedExample>> Data() {
  std::vector<TokenizedExample> set;
  for (int i = 0; i < 8; ++i) set.push_back({{i + 3, 1}, {i + 3, 1}, 0, std::to_string(i)});
  return {set};
}

StepFunction QuadraticStep(SoftPrompt* prompt) {
  return [prompt](const Batch& batch, double global_tokens) -> absl::StatusOr<StepLoss> {
    at::Tensor targets = batch.labels.select(1, 0).to(at::kFloat);  // [B]
    at::Tensor p = prompt->Forward(batch.task_ids, batch.size());   // [B, T, d]
    at::Tensor diff = p - targets.view({-1, 1, 1});
    StepLoss loss;
    loss.objective = diff.pow(2).sum() / global_tokens;
    loss.parts = {{"loss", loss.objective.item<double>()}};
    return loss;
  };
}

SoftPrompt NewPrompt() {
  SoftPromptConfig c;
  c.num_virtual_tokens = 3;
  c.token_dim = 2;
  return *SoftPrompt::Random(c, 5);
}

class CountingSink : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override { events.push_back(e); }
  std::vector<ProgressEvent> events;
};

TEST(PromptTrainer, LowersTheLoss) {
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  CountingSink sink;
  TrainerOptions options;
  options.train = Spec(40);
  options.stage = "test";
  PromptTrainer trainer(options, &prompt, &data, 0, &comm, &sink, nullptr);
  auto result = trainer.Run(QuadraticStep(&prompt), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_FALSE(sink.events.empty());
  EXPECT_EQ(sink.events.front().kind, ProgressKind::kStarted);
  EXPECT_EQ(sink.events.back().kind, ProgressKind::kFinished);
  double first = -1, last = -1;
  for (const auto& e : sink.events) {
    if (e.kind != ProgressKind::kStep) continue;
    if (first < 0) first = e.losses[0].second;
    last = e.losses[0].second;
  }
  EXPECT_LT(last, first * 0.5);
}

TEST(PromptTrainer, StepsAndEvaluationsRunWithSubnormalsFlushed) {
#if defined(__x86_64__) || defined(__i386__)
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(4);
  options.train.set_eval_every(2);
  options.stage = "test";
  PromptTrainer trainer(options, &prompt, &data, 0, &comm, nullptr, nullptr);
  int steps = 0, flushed_steps = 0, evals = 0, flushed_evals = 0;
  StepFunction quadratic = QuadraticStep(&prompt);
  StepFunction step = [&](const Batch& batch, double tokens) {
    ++steps;
    flushed_steps += FlushDenormalsScope::Active();
    return quadratic(batch, tokens);
  };
  EvalFunction eval = [&]() -> absl::StatusOr<NamedValues> {
    ++evals;
    flushed_evals += FlushDenormalsScope::Active();
    return NamedValues{{"score", 0.0}};
  };
  ASSERT_FALSE(FlushDenormalsScope::Active());
  ASSERT_TRUE(trainer.Run(step, eval).ok());
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(flushed_steps, steps);
  EXPECT_GT(evals, 0);
  EXPECT_EQ(flushed_evals, evals);
  EXPECT_FALSE(FlushDenormalsScope::Active());  // the caller's mode is back
#else
  GTEST_SKIP() << "no MXCSR on this CPU";
#endif
}

TEST(PromptTrainer, ResumedRunEndsWhereAnUninterruptedRunEnds) {
  auto data = Data();
  LocalCommunicator comm;

  SoftPrompt straight = NewPrompt();
  TrainerOptions options;
  options.train = Spec(12);
  options.train.set_checkpoint_every(4);
  options.stage = "test";
  options.checkpoint_dir = TempDir("straight");
  ASSERT_TRUE(PromptTrainer(options, &straight, &data, 0, &comm, nullptr, nullptr)
                  .Run(QuadraticStep(&straight), nullptr)
                  .ok());

  // Killed after step 6 (the last checkpoint is at step 4) ...
  SoftPrompt first = NewPrompt();
  options.checkpoint_dir = TempDir("resumed");
  int polls = 0;
  auto killed = PromptTrainer(options, &first, &data, 0, &comm, nullptr,
                              [&] { return ++polls > 6; })
                    .Run(QuadraticStep(&first), nullptr);
  ASSERT_EQ(killed.status().code(), absl::StatusCode::kCancelled);

  // ... and started again from scratch in a new process.
  SoftPrompt second = NewPrompt();
  auto resumed = PromptTrainer(options, &second, &data, 0, &comm, nullptr, nullptr)
                     .Run(QuadraticStep(&second), nullptr);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->resumed_from_step, 4);
  EXPECT_TRUE(at::allclose(second.prompt_embeddings(), straight.prompt_embeddings(), 0, 0))
      << second.prompt_embeddings() << "\nvs\n" << straight.prompt_embeddings();
}

TEST(PromptTrainer, CheckpointOfARunWithOtherSettingsIsNotResumed) {
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(8);
  options.train.set_checkpoint_every(2);
  options.checkpoint_dir = TempDir("other_settings");
  options.fingerprint = "first settings";
  SoftPrompt first = NewPrompt();
  int polls = 0;
  ASSERT_EQ(PromptTrainer(options, &first, &data, 0, &comm, nullptr, [&] { return ++polls > 5; })
                .Run(QuadraticStep(&first), nullptr)
                .status()
                .code(),
            absl::StatusCode::kCancelled);

  options.fingerprint = "second settings";
  SoftPrompt second = NewPrompt();
  auto result = PromptTrainer(options, &second, &data, 0, &comm, nullptr, nullptr)
                    .Run(QuadraticStep(&second), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->resumed_from_step, 0);

  options.checkpoint_dir = TempDir("fresh");
  SoftPrompt fresh = NewPrompt();
  ASSERT_TRUE(PromptTrainer(options, &fresh, &data, 0, &comm, nullptr, nullptr)
                  .Run(QuadraticStep(&fresh), nullptr)
                  .ok());
  EXPECT_TRUE(at::equal(second.prompt_embeddings(), fresh.prompt_embeddings()));
}

TEST(PromptTrainer, KeepsTheBestPromptByEvaluationScore) {
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(9);
  options.train.set_eval_every(3);
  int evals = 0;
  at::Tensor at_second_eval;
  // Scores 1, 3, 2: the prompt after step 6 must be the one kept.
  EvalFunction eval = [&]() -> absl::StatusOr<NamedValues> {
    ++evals;
    if (evals == 2) at_second_eval = prompt.prompt_embeddings().detach().clone();
    double score = evals == 2 ? 3.0 : static_cast<double>(evals);
    return NamedValues{{"score", score}};
  };
  auto result = PromptTrainer(options, &prompt, &data, 0, &comm, nullptr, nullptr)
                    .Run(QuadraticStep(&prompt), eval);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(evals, 3);
  EXPECT_EQ(result->best_step, 6);
  EXPECT_TRUE(at::equal(prompt.prompt_embeddings(), at_second_eval));
}

TEST(PromptTrainer, EvaluatesTheInitialPromptWhenAsked) {
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(4);
  options.train.set_eval_before_training(true);
  std::vector<at::Tensor> seen;
  EvalFunction eval = [&]() -> absl::StatusOr<NamedValues> {
    seen.push_back(prompt.prompt_embeddings().detach().clone());
    // The initial prompt scores higher, but is never the one kept.
    return NamedValues{{"score", seen.size() == 1 ? 9.0 : 1.0}};
  };
  SoftPrompt initial = NewPrompt();
  auto result = PromptTrainer(options, &prompt, &data, 0, &comm, nullptr, nullptr)
                    .Run(QuadraticStep(&prompt), eval);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(at::equal(seen[0], initial.prompt_embeddings()));
  EXPECT_EQ(result->best_step, 4);
  EXPECT_FALSE(at::equal(prompt.prompt_embeddings(), initial.prompt_embeddings()));
  ASSERT_EQ(result->metrics.size(), 2u);
  EXPECT_EQ(result->metrics[1], (std::pair<std::string, double>{"initial/score", 9.0}));
}

TEST(PromptTrainer, LearningRateWarmsUpThenDecays) {
  mpt::v1::TrainSpec t = Spec(10);
  EXPECT_DOUBLE_EQ(PromptTrainer::LearningRate(t, 0), 0.0);
  EXPECT_DOUBLE_EQ(PromptTrainer::LearningRate(t, 1), 0.05);
  EXPECT_DOUBLE_EQ(PromptTrainer::LearningRate(t, 2), 0.1);
  EXPECT_DOUBLE_EQ(PromptTrainer::LearningRate(t, 6), 0.05);
  t.mutable_optimizer()->set_schedule("constant");
  EXPECT_DOUBLE_EQ(PromptTrainer::LearningRate(t, 9), 0.1);
}

TEST(PromptTrainer, RejectsUnusableSettings) {
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(0);
  auto result = PromptTrainer(options, &prompt, &data, 0, &comm, nullptr, nullptr)
                    .Run(QuadraticStep(&prompt), nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("steps"), std::string::npos);
}

// The loss turns NaN at the third step: the run stops there with an error
// naming the step and the stage, and the last checkpoint (step 2) is the
// newest thing saved; the prompt holds no NaN.
TEST(PromptTrainer, StopsWhenTheLossIsNotFinite) {
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(6);
  options.train.set_checkpoint_every(1);
  options.stage = "source";
  options.task = "animal";
  options.checkpoint_dir = TempDir("nan_loss");
  StepFunction quadratic = QuadraticStep(&prompt);
  int calls = 0;
  StepFunction step = [&](const Batch& batch, double tokens) -> absl::StatusOr<StepLoss> {
    ASSIGN_OR_RETURN(StepLoss loss, quadratic(batch, tokens));
    if (++calls == 3) {
      loss.objective = loss.objective * std::nan("");
      loss.parts[0].second = std::nan("");
    }
    return loss;
  };
  auto result = PromptTrainer(options, &prompt, &data, 0, &comm, nullptr, nullptr).Run(step, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find(
                "loss is not finite at step 3 of stage source (task animal)"),
            std::string::npos)
      << result.status();
  for (const auto& [name, t] : prompt.StateDict()) {
    EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
  }
  CheckpointExpectations expected;
  expected.total_steps = 6;
  expected.prompt = prompt.StateDict();
  expected.parameters = prompt.Parameters();
  auto saved = ReadCheckpoint(options.checkpoint_dir, expected);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->step, 2);
}

// A weight decay that overflows the parameters while every loss stays
// finite (one step): the final prompt is refused rather than saved.
TEST(PromptTrainer, RefusesToSaveAPromptThatIsNotFinite) {
  SoftPrompt prompt = NewPrompt();
  auto data = Data();
  LocalCommunicator comm;
  TrainerOptions options;
  options.train = Spec(1);
  options.train.mutable_optimizer()->set_warmup_steps(0);
  options.train.mutable_optimizer()->set_schedule("constant");
  options.train.mutable_optimizer()->set_weight_decay(1e300);
  options.stage = "source";
  options.checkpoint_dir = TempDir("nan_params");
  auto result = PromptTrainer(options, &prompt, &data, 0, &comm, nullptr, nullptr)
                    .Run(QuadraticStep(&prompt), nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("parameters are not finite after step 1 of stage "
                                           "source"),
            std::string::npos)
      << result.status();
  EXPECT_FALSE(CheckpointExists(options.checkpoint_dir));
}

}  // namespace
}  // namespace mpt
