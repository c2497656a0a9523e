// Source tasks trained in one pass (PackedPromptTrainer through
// RunSourceTraining with tasks_per_pass) end with the prompts, metrics and
// best steps that separate runs reach on the same batches.
//
// Tolerance: the pack runs the model over the rows of all its tasks at
// once, pads them to the longest row of the pack, and gathers each row's
// prompt by index, so fp32 sums run in another order than in a separate
// run. The prompts must agree to 1e-5 relative to their largest entry
// (max |pack - separate| <= 1e-5 * max |separate|), after AdamW has
// amplified those differences over every step. That bound holds for these
// settings (18 steps at learning rate 0.05); AdamW's normalised update lets
// rounding differences grow with the steps and the rate, as it does between
// two separate runs with different thread counts (docs/MEASUREMENTS.md, "Many source tasks in one pass").
//
// Clipping is per prompt: each prompt's gradient is scaled so that its own
// L2 norm is at most max_grad_norm, exactly as its separate run clips it. The
// test sets a small norm and shows that clipping acts (the unclipped
// prompts end at least 100 times the tolerance away from the clipped ones).
#include "worker/training/packed_trainer.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "common/spec/spec_loader.h"
#include "gtest/gtest.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/lm/t5_task_tokenizer.h"
#include "tests/test_util.h"
#include "worker/model/torch_tensors.h"
#include "worker/prompts/adapter_io.h"
#include "worker/model/compute_threads.h"
#include "worker/training/mpt_stages.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using testing::DataPath;
using testing::FreshTempDir;

constexpr double kRelativeTolerance = 1e-5;

// Not thread-safe on purpose: lanes must serialise their events.
class RecordingSink : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override {
    events.push_back(e);
    threads.insert(std::this_thread::get_id());
  }
  std::vector<ProgressEvent> events;
  std::set<std::thread::id> threads;
};

mpt::v1::TaskData Task(const std::string& name) {
  mpt::v1::TaskData t;
  t.set_name(name);
  t.set_train_path(DataPath("tests/testdata/tiny_tasks/" + name + ".train.jsonl"));
  t.set_eval_path(DataPath("tests/testdata/tiny_tasks/" + name + ".eval.jsonl"));
  return t;
}

std::map<std::string, at::Tensor> AdapterTensors(const std::string& folder) {
  auto t = LoadSafetensors(folder + "/adapter_model.safetensors");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::map<std::string, at::Tensor>{};
}

// max |a - b| / max |b|.
double RelativeDifference(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         b.to(at::kDouble).abs().max().item<double>();
}

class PackedTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = T5Model::Load(DataPath("tests/testdata/t5_relu"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    auto tokenizer = T5Tokenizer::Load(DataPath("tests/testdata/t5_relu"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    lm_ = new T5PromptedModel(model_);
    task_tokenizer_ = new T5TaskTokenizer(tokenizer_);
  }
  static void TearDownTestSuite() {
    delete lm_;
    delete task_tokenizer_;
    delete model_;
    delete tokenizer_;
  }

  void SetUp() override {
    prompt_.set_num_virtual_tokens(4);
    prompt_.set_num_transformer_submodules(1);
    prompt_.set_num_ranks(1);
  }

  StageEnv Env(const std::string& work_dir = "") {
    StageEnv env;
    env.model = lm_;
    env.tokenizer = task_tokenizer_;
    env.sink = &sink_;
    env.work_dir = work_dir;
    return env;
  }

  // Three tasks of different lengths; evaluation every 6 steps so that the
  // best prompt is picked among several.
  mpt::v1::SourceTrainingSpec Source(int steps, int tasks_per_pass, double max_grad_norm) {
    mpt::v1::SourceTrainingSpec s;
    for (const char* name : {"echo", "first", "count"}) *s.add_tasks() = Task(name);
    mpt::v1::TrainSpec* t = s.mutable_train();
    t->set_steps(steps);
    t->set_batch_size(8);
    t->mutable_optimizer()->set_learning_rate(0.05);
    t->mutable_optimizer()->set_max_grad_norm(max_grad_norm);
    t->set_eval_every(6);
    t->set_seed(3);
    s.set_tasks_per_pass(tasks_per_pass);
    ApplyDefaults(&s);
    return s;
  }

  static T5Model* model_;
  static T5Tokenizer* tokenizer_;
  static T5PromptedModel* lm_;
  static T5TaskTokenizer* task_tokenizer_;
  mpt::v1::PromptSpec prompt_;
  RecordingSink sink_;
};

T5Model* PackedTrainerTest::model_ = nullptr;
T5Tokenizer* PackedTrainerTest::tokenizer_ = nullptr;
T5PromptedModel* PackedTrainerTest::lm_ = nullptr;
T5TaskTokenizer* PackedTrainerTest::task_tokenizer_ = nullptr;

TEST_F(PackedTrainerTest, APackOfThreeEndsWhereThreeSeparateRunsEnd) {
  const std::string dir = FreshTempDir("pack_vs_separate");
  // Small enough that clipping acts.
  const double clip = 0.02;
  auto separate = RunSourceTraining(Env(), prompt_, Source(18, 1, clip), dir + "/separate");
  ASSERT_TRUE(separate.ok()) << separate.status();
  sink_.events.clear();
  auto packed = RunSourceTraining(Env(), prompt_, Source(18, 3, clip), dir + "/packed");
  ASSERT_TRUE(packed.ok()) << packed.status();
  auto unclipped = RunSourceTraining(Env(), prompt_, Source(18, 1, -1), dir + "/unclipped");
  ASSERT_TRUE(unclipped.ok()) << unclipped.status();

  ASSERT_EQ(separate->size(), 3u);
  ASSERT_EQ(packed->size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    const TaskOutcome& s = (*separate)[k];
    const TaskOutcome& p = (*packed)[k];
    SCOPED_TRACE(s.task);
    EXPECT_EQ(p.task, s.task);
    EXPECT_EQ(p.adapter, dir + "/packed/" + s.task);
    const at::Tensor a = AdapterTensors(p.adapter)["prompt_embeddings"];
    const at::Tensor b = AdapterTensors(s.adapter)["prompt_embeddings"];
    const at::Tensor u = AdapterTensors((*unclipped)[k].adapter)["prompt_embeddings"];
    ASSERT_TRUE(a.defined() && b.defined() && u.defined());
    const double diff = RelativeDifference(a, b);
    EXPECT_LE(diff, kRelativeTolerance);
    // Clipping mattered: without it the prompts end far apart.
    const double unclipped_diff = RelativeDifference(u, b);
    EXPECT_GT(unclipped_diff, 100 * kRelativeTolerance);
    std::printf("%s: pack vs separate %.3g, unclipped vs clipped %.3g (relative)\n",
                s.task.c_str(), diff, unclipped_diff);
    // Evaluation and best-prompt tracking per task: the same best step and
    // metrics (greedy decoding of nearly equal prompts).
    EXPECT_EQ(p.train.best_step, s.train.best_step);
    EXPECT_EQ(p.train.steps, 18);
    ASSERT_EQ(p.metrics.size(), s.metrics.size());
    for (size_t i = 0; i < s.metrics.size(); ++i) {
      EXPECT_EQ(p.metrics[i].first, s.metrics[i].first);
      EXPECT_NEAR(p.metrics[i].second, s.metrics[i].second, 1e-9) << s.metrics[i].first;
    }
    ASSERT_EQ(p.train.final_losses.size(), 1u);
    EXPECT_NEAR(p.train.final_losses[0].second, s.train.final_losses[0].second,
                1e-5 * std::abs(s.train.final_losses[0].second));
  }
  // Progress per task: each task starts, logs, evaluates and finishes under
  // its own name with its own step counts.
  std::map<std::string, std::set<ProgressKind>> kinds;
  for (const ProgressEvent& e : sink_.events) {
    EXPECT_EQ(e.stage, "source");
    EXPECT_EQ(e.total_steps, 18);
    kinds[e.task].insert(e.kind);
  }
  for (const char* task : {"echo", "first", "count"}) {
    EXPECT_EQ(kinds[task], (std::set<ProgressKind>{ProgressKind::kStarted, ProgressKind::kStep,
                                                   ProgressKind::kEval, ProgressKind::kFinished}))
        << task;
  }
}

TEST_F(PackedTrainerTest, APackKilledAndResumedEndsWhereSeparateRunsEnd) {
  const std::string dir = FreshTempDir("pack_resume");
  mpt::v1::SourceTrainingSpec separate_spec = Source(10, 1, 1.0);
  separate_spec.mutable_train()->set_checkpoint_every(4);
  ASSERT_TRUE(RunSourceTraining(Env(), prompt_, separate_spec, dir + "/separate").ok());

  mpt::v1::SourceTrainingSpec spec = Source(10, 3, 1.0);
  spec.mutable_train()->set_checkpoint_every(4);
  StageEnv killed = Env(dir + "/work");
  int polls = 0;
  killed.cancelled = [&] { return ++polls > 6; };
  auto first = RunSourceTraining(killed, prompt_, spec, dir + "/packed");
  ASSERT_EQ(first.status().code(), absl::StatusCode::kCancelled) << first.status();
  EXPECT_FALSE(fs::exists(dir + "/packed/echo"));
  // Each task's checkpoint where its separate run would keep it.
  for (const char* task : {"echo", "first", "count"}) {
    EXPECT_TRUE(fs::exists(dir + "/work/source/" + std::string(task) + "/state.json")) << task;
  }

  auto second = RunSourceTraining(Env(dir + "/work"), prompt_, spec, dir + "/packed");
  ASSERT_TRUE(second.ok()) << second.status();
  for (const TaskOutcome& o : *second) {
    SCOPED_TRACE(o.task);
    EXPECT_EQ(o.train.resumed_from_step, 4);
    const at::Tensor a = AdapterTensors(o.adapter)["prompt_embeddings"];
    const at::Tensor b = AdapterTensors(dir + "/separate/" + o.task)["prompt_embeddings"];
    EXPECT_LE(RelativeDifference(a, b), kRelativeTolerance);
  }
}

// Lanes (StageEnv::lanes): the tasks train side by side on other threads,
// the first two each computing exactly what it computes alone with one
// compute thread; the third, which would leave a lane idle, is split into
// two thread ranks and ends where it ends alone up to fp32 summation order.
TEST_F(PackedTrainerTest, SourceTasksInLanesEndAsAloneOnOneThread) {
  const std::string dir = FreshTempDir("lanes_vs_alone");
  absl::StatusOr<std::vector<TaskOutcome>> alone;
  {
    OneComputeThreadScope one_thread;
    alone = RunSourceTraining(Env(), prompt_, Source(18, 1, 0.02), dir + "/alone");
  }
  ASSERT_TRUE(alone.ok()) << alone.status();
  sink_ = RecordingSink();
  StageEnv env = Env();
  env.lanes = 2;
  auto lanes = RunSourceTraining(env, prompt_, Source(18, 1, 0.02), dir + "/lanes");
  ASSERT_TRUE(lanes.ok()) << lanes.status();
  ASSERT_EQ(lanes->size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    const TaskOutcome& a = (*alone)[k];
    const TaskOutcome& l = (*lanes)[k];
    SCOPED_TRACE(a.task);
    EXPECT_EQ(l.task, a.task);
    EXPECT_EQ(l.adapter, dir + "/lanes/" + a.task);
    const at::Tensor pl = AdapterTensors(l.adapter)["prompt_embeddings"];
    const at::Tensor pa = AdapterTensors(a.adapter)["prompt_embeddings"];
    EXPECT_EQ(l.train.best_step, a.train.best_step);
    if (k < 2) {
      EXPECT_TRUE(at::equal(pl, pa));
      EXPECT_EQ(l.metrics, a.metrics);
      EXPECT_EQ(l.train.final_losses, a.train.final_losses);
    } else {
      const double d = (pl - pa).abs().max().item<double>();
      EXPECT_LE(d, 1e-5);
      EXPECT_GT(d, 0);  // really split: another summation order
    }
  }
  // Every task reported to its end, from threads other than this one (the
  // two lanes, then the third task's first rank).
  std::map<std::string, std::set<ProgressKind>> kinds;
  for (const ProgressEvent& e : sink_.events) kinds[e.task].insert(e.kind);
  for (const char* task : {"echo", "first", "count"}) {
    EXPECT_TRUE(kinds[task].count(ProgressKind::kFinished)) << task;
  }
  EXPECT_GE(sink_.threads.size(), 2u);
  EXPECT_EQ(sink_.threads.count(std::this_thread::get_id()), 0u);

  // A cancel reaches every lane.
  StageEnv cancelled = env;
  int polls = 0;
  cancelled.cancelled = [&] { return ++polls > 4; };
  auto stopped = RunSourceTraining(cancelled, prompt_, Source(18, 1, 0.02), dir + "/stopped");
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled) << stopped.status();
}

TEST_F(PackedTrainerTest, ASourcePackInLanesReportsPerTaskAndSurvivesOneCancel) {
  const std::string dir = FreshTempDir("source_pack_lanes");
  mpt::v1::SourceTrainingSpec job_a = Source(12, 1, 1.0);
  mpt::v1::SourceTrainingSpec job_b = Source(8, 1, 1.0);
  job_b.mutable_train()->set_seed(7);
  absl::StatusOr<std::vector<TaskOutcome>> alone_a, alone_b;
  {
    OneComputeThreadScope one_thread;
    alone_a = RunSourceTraining(Env(), prompt_, job_a, dir + "/alone_a", {"echo"});
    alone_b = RunSourceTraining(Env(), prompt_, job_b, dir + "/alone_b", {"count"});
  }
  ASSERT_TRUE(alone_a.ok()) << alone_a.status();
  ASSERT_TRUE(alone_b.ok()) << alone_b.status();

  RecordingSink sink_a, sink_b, sink_c;
  std::vector<SourcePackTask> tasks(4);
  tasks[0] = {prompt_, job_a, "echo", dir + "/a", dir + "/ckpt_a", &sink_a, nullptr};
  tasks[1] = {prompt_, job_b, "count", dir + "/b", dir + "/ckpt_b", &sink_b, nullptr};
  int polls = 0;  // not atomic: lanes call cancel functions under one lock
  tasks[2] = {prompt_, job_b, "first", dir + "/b", dir + "/ckpt_c", &sink_c,
              [&polls] { return ++polls > 3; }};
  tasks[3] = {prompt_, job_b, "nope", dir + "/b", "", nullptr, nullptr};
  std::vector<int> ends(4, 0);
  for (size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].on_end = [&ends, i](const absl::StatusOr<TaskOutcome>&) { ++ends[i]; };
  }
  StageEnv env = Env();
  env.lanes = 2;
  std::vector<absl::StatusOr<TaskOutcome>> r = RunSourcePack(env, tasks);
  ASSERT_EQ(r.size(), 4u);
  ASSERT_TRUE(r[0].ok()) << r[0].status();
  ASSERT_TRUE(r[1].ok()) << r[1].status();
  EXPECT_EQ(r[2].status().code(), absl::StatusCode::kCancelled) << r[2].status();
  EXPECT_EQ(r[3].status().code(), absl::StatusCode::kInvalidArgument) << r[3].status();
  EXPECT_EQ(ends, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(r[0]->adapter, dir + "/a/echo");
  EXPECT_EQ(r[1]->train.steps, 8);
  EXPECT_TRUE(at::equal(AdapterTensors(r[0]->adapter)["prompt_embeddings"],
                        AdapterTensors((*alone_a)[0].adapter)["prompt_embeddings"]));
  EXPECT_TRUE(at::equal(AdapterTensors(r[1]->adapter)["prompt_embeddings"],
                        AdapterTensors((*alone_b)[0].adapter)["prompt_embeddings"]));
  for (const RecordingSink* sink : {&sink_a, &sink_b, &sink_c}) {
    EXPECT_EQ(sink->threads.count(std::this_thread::get_id()), 0u);
  }
  EXPECT_TRUE(sink_a.events.back().kind == ProgressKind::kFinished);
  EXPECT_TRUE(sink_b.events.back().kind == ProgressKind::kFinished);
  for (const ProgressEvent& e : sink_c.events) EXPECT_EQ(e.task, "first");
}

// The trainer on its own, with a step function whose gradients are known:
// member m's loss is c_m(step) * sum(prompt_m) / tokens. Members with
// different step counts and learning rates leave the pack when done; each
// ends exactly (same float operations) where PromptTrainer takes it alone.
// The worker daemon's pack: tasks of two "jobs" (different specs and step
// counts), each with its own sink; one is cancelled on its own midway and
// the others end as their separate runs do.
TEST_F(PackedTrainerTest, ASourcePackOfTwoJobsReportsPerTaskAndSurvivesOneCancel) {
  const std::string dir = FreshTempDir("source_pack");
  mpt::v1::SourceTrainingSpec job_a = Source(12, 1, 1.0);
  mpt::v1::SourceTrainingSpec job_b = Source(8, 1, 1.0);
  job_b.mutable_train()->set_seed(7);
  auto alone_a = RunSourceTraining(Env(), prompt_, job_a, dir + "/alone_a", {"echo"});
  auto alone_b = RunSourceTraining(Env(), prompt_, job_b, dir + "/alone_b", {"count"});
  ASSERT_TRUE(alone_a.ok()) << alone_a.status();
  ASSERT_TRUE(alone_b.ok()) << alone_b.status();

  RecordingSink sink_a, sink_b, sink_c;
  std::vector<SourcePackTask> tasks(4);
  tasks[0] = {prompt_, job_a, "echo", dir + "/a", dir + "/ckpt_a", &sink_a, nullptr};
  tasks[1] = {prompt_, job_b, "count", dir + "/b", dir + "/ckpt_b", &sink_b, nullptr};
  // Job B's "first" is cancelled after a few steps of its own.
  int polls = 0;
  tasks[2] = {prompt_, job_b, "first", dir + "/b", dir + "/ckpt_c", &sink_c,
              [&polls] { return ++polls > 3; }};
  // Not a task of its spec: fails alone, before training.
  tasks[3] = {prompt_, job_b, "nope", dir + "/b", "", nullptr, nullptr};
  std::vector<absl::StatusOr<TaskOutcome>> r = RunSourcePack(Env(), tasks);
  ASSERT_EQ(r.size(), 4u);
  ASSERT_TRUE(r[0].ok()) << r[0].status();
  ASSERT_TRUE(r[1].ok()) << r[1].status();
  EXPECT_EQ(r[2].status().code(), absl::StatusCode::kCancelled) << r[2].status();
  EXPECT_EQ(r[3].status().code(), absl::StatusCode::kInvalidArgument) << r[3].status();
  EXPECT_EQ(r[0]->adapter, dir + "/a/echo");
  EXPECT_EQ(r[1]->train.steps, 8);
  EXPECT_LE(RelativeDifference(AdapterTensors(r[0]->adapter)["prompt_embeddings"],
                               AdapterTensors((*alone_a)[0].adapter)["prompt_embeddings"]),
            kRelativeTolerance);
  EXPECT_LE(RelativeDifference(AdapterTensors(r[1]->adapter)["prompt_embeddings"],
                               AdapterTensors((*alone_b)[0].adapter)["prompt_embeddings"]),
            kRelativeTolerance);
  // Each sink saw its own task only, to its own end.
  auto kinds_of = [](const RecordingSink& sink, const std::string& task) {
    std::set<ProgressKind> kinds;
    for (const ProgressEvent& e : sink.events) {
      EXPECT_EQ(e.task, task);
      kinds.insert(e.kind);
    }
    return kinds;
  };
  EXPECT_TRUE(kinds_of(sink_a, "echo").count(ProgressKind::kFinished));
  EXPECT_TRUE(kinds_of(sink_b, "count").count(ProgressKind::kFinished));
  EXPECT_FALSE(kinds_of(sink_c, "first").count(ProgressKind::kFinished));
  EXPECT_EQ(sink_b.events.back().total_steps, 8);
}

TEST(PackedPromptTrainerTest, MembersWithTheirOwnSettingsMatchPromptTrainerExactly) {
  SoftPromptConfig config;
  config.num_virtual_tokens = 3;
  config.token_dim = 5;
  std::vector<std::vector<TokenizedExample>> data(2);
  for (int m = 0; m < 2; ++m) {
    for (int i = 0; i < 6; ++i) {
      TokenizedExample e;
      e.input_ids = std::vector<int>(2 + i + m, 5);
      e.target_ids = std::vector<int>(1 + i % 3, 7);
      data[m].push_back(e);
    }
  }
  mpt::v1::TrainSpec trains[2];
  for (int m = 0; m < 2; ++m) {
    trains[m].set_steps(m == 0 ? 7 : 4);
    trains[m].set_batch_size(m == 0 ? 4 : 3);
    trains[m].set_seed(11 + m);
    trains[m].mutable_optimizer()->set_learning_rate(m == 0 ? 0.1 : 0.03);
    trains[m].mutable_optimizer()->set_weight_decay(1e-5);
    trains[m].mutable_optimizer()->set_schedule("linear");
    trains[m].mutable_optimizer()->set_max_grad_norm(0.5);
  }
  // A loss whose gradient grows with the batch's target tokens (and is
  // clipped at max_grad_norm 0.5).
  auto member_loss = [](const at::Tensor& prompt, const at::Tensor& targets_per_row,
                        double global) {
    return (prompt.sum() * targets_per_row.sum() * targets_per_row.sum()) / global;
  };
  LocalCommunicator comm;
  std::vector<at::Tensor> alone;
  for (int m = 0; m < 2; ++m) {
    SoftPrompt prompt = *SoftPrompt::Random(config, 5 + m);
    TrainerOptions options;
    options.train = trains[m];
    std::vector<std::vector<TokenizedExample>> one{data[m]};
    PromptTrainer trainer(options, &prompt, &one, 0, &comm, nullptr, nullptr);
    auto result = trainer.Run(
        [&](const Batch& batch, double global) -> absl::StatusOr<StepLoss> {
          StepLoss loss;
          loss.objective = member_loss(prompt.prompt_embeddings(),
                                       batch.labels.ne(-100).sum(1).to(at::kFloat), global);
          loss.parts = {{"loss", loss.objective.item<double>()}};
          return loss;
        },
        nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    alone.push_back(prompt.prompt_embeddings().detach().clone());
  }

  std::vector<SoftPrompt> prompts{*SoftPrompt::Random(config, 5), *SoftPrompt::Random(config, 6)};
  std::vector<PackMember> members;
  for (int m = 0; m < 2; ++m) {
    PackMember member;
    member.train = trains[m];
    member.task = m == 0 ? "a" : "b";
    member.prompt = &prompts[m];
    member.examples = &data[m];
    members.push_back(member);
  }
  RecordingSink sink;
  PackedPromptTrainer trainer("source", members, 0, &comm, &sink, nullptr);
  auto results = trainer.Run(
      [&](const Batch& batch,
          const std::vector<double>& global) -> absl::StatusOr<PackedStepLoss> {
        PackedStepLoss loss;
        loss.objective = at::zeros({});
        const at::Tensor targets = batch.labels.ne(-100).sum(1).to(at::kFloat);
        for (int m = 0; m < 2; ++m) {
          const at::Tensor rows = batch.task_ids.eq(m).nonzero().reshape({-1});
          if (rows.numel() == 0) {
            loss.parts.push_back({{"loss", 0.0}});
            continue;
          }
          at::Tensor term = member_loss(prompts[m].prompt_embeddings(),
                                        targets.index_select(0, rows), global[m]);
          loss.objective = loss.objective + term;
          loss.parts.push_back({{"loss", term.item<double>()}});
        }
        return loss;
      });
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 2u);
  EXPECT_EQ((*results)[0].steps, 7);
  EXPECT_EQ((*results)[1].steps, 4);
  for (int m = 0; m < 2; ++m) {
    EXPECT_TRUE(at::equal(prompts[m].prompt_embeddings().detach(), alone[m])) << m;
  }
  int64_t last_b = 0;
  for (const ProgressEvent& e : sink.events) {
    if (e.task == "b" && e.kind == ProgressKind::kStep) last_b = e.step;
  }
  EXPECT_EQ(last_b, 4);
}

TEST(PackedPromptTrainerTest, PromptsOfDifferentShapesAreRejected) {
  SoftPromptConfig a, b;
  a.num_virtual_tokens = 3;
  a.token_dim = 5;
  b = a;
  b.num_virtual_tokens = 4;
  SoftPrompt pa = *SoftPrompt::Random(a, 1), pb = *SoftPrompt::Random(b, 2);
  std::vector<TokenizedExample> data(2);
  for (auto& e : data) e.input_ids = e.target_ids = {1};
  std::vector<PackMember> members(2);
  for (int m = 0; m < 2; ++m) {
    members[m].train.set_steps(1);
    members[m].train.set_batch_size(1);
    members[m].task = m == 0 ? "a" : "b";
    members[m].examples = &data;
  }
  members[0].prompt = &pa;
  members[1].prompt = &pb;
  LocalCommunicator comm;
  PackedPromptTrainer trainer("source", members, 0, &comm, nullptr, nullptr);
  auto r = trainer.Run(nullptr);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("pack member 1 (b)"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("shape"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace mpt
