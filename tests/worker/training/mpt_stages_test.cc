// The three stages on the small golden T5 (t5_relu) and tiny word tasks:
// each lowers its loss and writes PEFT adapters; a stage killed and resumed
// ends where an uninterrupted one ends; bad input is a clear error and
// leaves nothing half-written.
#include "worker/training/mpt_stages.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>
#include <set>

#include <ATen/ATen.h>

#include "gtest/gtest.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/lm/t5_task_tokenizer.h"
#include "tests/test_util.h"
#include "worker/prompts/adapter_io.h"
#include "common/spec/spec_loader.h"
#include "worker/model/compute_threads.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using testing::DataPath;
using testing::FreshTempDir;

class RecordingSink : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override { events.push_back(e); }
  // The mean logged value of `name` over the first and over the last five
  // step events (of `task` when it is not empty): single batches are noisy.
  std::pair<double, double> FirstAndLast(const std::string& name,
                                         const std::string& task = "") const {
    std::vector<double> values;
    for (const auto& e : events) {
      if (e.kind != ProgressKind::kStep || (!task.empty() && e.task != task)) continue;
      for (const auto& [k, v] : e.losses) {
        if (k == name) values.push_back(v);
      }
    }
    const size_t n = std::min<size_t>(5, values.size() / 2);
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
  // The golden model's embeddings have std 0.3; a smaller rate than the
  // default suits prompts of that scale.
  t.mutable_optimizer()->set_learning_rate(0.05);
  t.set_seed(3);
  return t;
}

class MptStagesTest : public ::testing::Test {
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

  mpt::v1::SourceTrainingSpec Source(int steps) {
    mpt::v1::SourceTrainingSpec s;
    for (const char* name : {"echo", "first", "count"}) *s.add_tasks() = Task(name);
    *s.mutable_train() = Train(steps);
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

T5Model* MptStagesTest::model_ = nullptr;
T5Tokenizer* MptStagesTest::tokenizer_ = nullptr;
T5PromptedModel* MptStagesTest::lm_ = nullptr;
T5TaskTokenizer* MptStagesTest::task_tokenizer_ = nullptr;

TEST_F(MptStagesTest, ThreeStagesLowerTheirLossesAndWritePeftAdapters) {
  const std::string out = FreshTempDir("pipeline");
  auto source = RunSourceTraining(Env(), prompt_, Source(40), out + "/source");
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_EQ(source->size(), 3u);
  for (const TaskOutcome& t : *source) {
    auto [first, last] = sink_.FirstAndLast("loss", t.task);
    // A random model: prompts can only move its loss a little.
    EXPECT_LT(last, first - 0.1) << "source training did not learn " << t.task;
    auto adapter = ReadAdapter(t.adapter);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    EXPECT_EQ(adapter->info.prompt.kind, PromptKind::kPromptTuning);
    EXPECT_FALSE(t.metrics.empty()) << "evaluation should have run";
  }

  sink_.events.clear();
  mpt::v1::DistillationSpec distill;
  *distill.mutable_tasks() = Source(0).tasks();
  *distill.mutable_train() = Train(30);
  ApplyDefaults(&distill);
  std::vector<std::string> teachers;
  for (const TaskOutcome& t : *source) teachers.push_back(t.adapter);
  auto student = RunDistillation(Env(), prompt_, distill, teachers, out + "/distillation");
  ASSERT_TRUE(student.ok()) << student.status();
  auto [plm_first, plm_last] = sink_.FirstAndLast("plm");
  EXPECT_LT(plm_last, plm_first) << "distillation did not lower L_PLM";
  auto [kl_first, kl_last] = sink_.FirstAndLast("kl");
  EXPECT_GT(kl_first, 0);
  EXPECT_LT(kl_last, kl_first) << "distillation did not bring the student towards the teachers";
  EXPECT_GE(sink_.FirstAndLast("hidden").first, 0);
  auto multitask = ReadAdapter(out + "/distillation");
  ASSERT_TRUE(multitask.ok()) << multitask.status();
  EXPECT_EQ(multitask->info.prompt.kind, PromptKind::kMultitask);
  EXPECT_EQ(multitask->info.prompt.num_tasks, 3);
  EXPECT_EQ(multitask->info.task_names, (std::vector<std::string>{"echo", "first", "count"}));

  sink_.events.clear();
  mpt::v1::TargetAdaptationSpec target;
  *target.add_tasks() = Task("last");
  *target.mutable_train() = Train(30);
  ApplyDefaults(&target);
  auto adapted = RunTargetAdaptation(Env(), prompt_, target, out + "/distillation", out + "/target");
  ASSERT_TRUE(adapted.ok()) << adapted.status();
  auto [t_first, t_last] = sink_.FirstAndLast("loss");
  EXPECT_LT(t_last, t_first) << "target adaptation did not learn";
  auto last_adapter = ReadAdapter(out + "/target/last");
  ASSERT_TRUE(last_adapter.ok()) << last_adapter.status();
  EXPECT_EQ(last_adapter->info.prompt.num_tasks, 1);
  EXPECT_EQ(last_adapter->info.task_names, std::vector<std::string>{"last"});
}

// Lanes (StageEnv::lanes): target tasks and baselines train side by side,
// the first round of two each exactly as alone with one compute thread; the
// third, which would leave a lane idle, is split into two thread ranks and
// ends where it ends alone up to fp32 summation order.
TEST_F(MptStagesTest, TargetsAndBaselinesInLanesEndAsAloneOnOneThread) {
  const std::string out = FreshTempDir("target_lanes");
  auto source = RunSourceTraining(Env(), prompt_, Source(6), out + "/source");
  ASSERT_TRUE(source.ok()) << source.status();
  mpt::v1::DistillationSpec distill;
  *distill.mutable_tasks() = Source(0).tasks();
  *distill.mutable_train() = Train(4);
  ApplyDefaults(&distill);
  std::vector<std::string> teachers;
  for (const TaskOutcome& t : *source) teachers.push_back(t.adapter);
  ASSERT_TRUE(RunDistillation(Env(), prompt_, distill, teachers, out + "/distillation").ok());

  mpt::v1::TargetAdaptationSpec target;
  for (const char* name : {"last", "echo", "first"}) *target.add_tasks() = Task(name);
  *target.mutable_train() = Train(10);
  target.mutable_train()->set_eval_every(5);
  ApplyDefaults(&target);
  absl::StatusOr<std::vector<TaskOutcome>> alone;
  absl::StatusOr<std::vector<BaselineOutcome>> alone_baselines;
  {
    OneComputeThreadScope one_thread;
    alone = RunTargetAdaptation(Env(), prompt_, target, out + "/distillation", out + "/alone");
    alone_baselines = RunTargetBaselines(Env(), prompt_, target, out + "/alone_baselines");
  }
  ASSERT_TRUE(alone.ok()) << alone.status();
  ASSERT_TRUE(alone_baselines.ok()) << alone_baselines.status();
  StageEnv env = Env();
  env.lanes = 2;
  auto lanes = RunTargetAdaptation(env, prompt_, target, out + "/distillation", out + "/lanes");
  auto lanes_baselines = RunTargetBaselines(env, prompt_, target, out + "/lanes_baselines");
  ASSERT_TRUE(lanes.ok()) << lanes.status();
  ASSERT_TRUE(lanes_baselines.ok()) << lanes_baselines.status();
  ASSERT_EQ(lanes->size(), 3u);
  ASSERT_EQ(lanes_baselines->size(), 3u);
  // The largest absolute difference between two adapters' tensors (a huge
  // value when they cannot be compared).
  auto max_diff = [](const std::string& a, const std::string& b) {
    auto x = LoadSafetensors(a + "/adapter_model.safetensors");
    auto y = LoadSafetensors(b + "/adapter_model.safetensors");
    if (!x.ok() || !y.ok() || x->size() != y->size() || x->empty()) return 1e9;
    double d = 0;
    for (const auto& [name, t] : *x) {
      if (!y->count(name)) return 1e9;
      d = std::max(d, (t - y->at(name)).abs().max().item<double>());
    }
    return d;
  };
  for (size_t k = 0; k < 3; ++k) {
    SCOPED_TRACE((*alone)[k].task);
    const BaselineOutcome& b = (*lanes_baselines)[k];
    const BaselineOutcome& a = (*alone_baselines)[k];
    EXPECT_EQ((*lanes)[k].task, (*alone)[k].task);
    EXPECT_EQ(b.task, a.task);
    EXPECT_EQ(b.random_prompt, a.random_prompt);  // evaluation only
    EXPECT_EQ((*lanes)[k].train.best_step, (*alone)[k].train.best_step);
    if (k < 2) {
      EXPECT_EQ(max_diff((*lanes)[k].adapter, (*alone)[k].adapter), 0);
      EXPECT_EQ((*lanes)[k].metrics, (*alone)[k].metrics);
      EXPECT_EQ(max_diff(b.prompt_tuning.adapter, a.prompt_tuning.adapter), 0);
      EXPECT_EQ(b.prompt_tuning.metrics, a.prompt_tuning.metrics);
    } else {
      const double d = max_diff((*lanes)[k].adapter, (*alone)[k].adapter);
      EXPECT_LE(d, 1e-5);
      EXPECT_GT(d, 0);  // really split: another summation order
      const double db = max_diff(b.prompt_tuning.adapter, a.prompt_tuning.adapter);
      EXPECT_LE(db, 1e-5);
      EXPECT_GT(db, 0);
    }
  }
}

// Thread ranks (StageEnv::lanes with one run): a source task and a
// distillation split over 2 threads end where one rank ends up to fp32
// summation order (1e-5 absolute, as data_parallel_test allows a gang of
// processes), the same bits every time, and report from one thread only.
TEST_F(MptStagesTest, OneRunInThreadRanksEndsWhereOneRankEnds) {
  const std::string out = FreshTempDir("thread_ranks");
  auto prompt_of = [](const std::string& folder) {
    auto t = LoadSafetensors(folder + "/adapter_model.safetensors");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : std::map<std::string, at::Tensor>{};
  };
  auto max_diff = [](const std::map<std::string, at::Tensor>& a,
                     const std::map<std::string, at::Tensor>& b) {
    double d = a.empty() || a.size() != b.size() ? 1e9 : 0;
    for (const auto& [name, t] : a) {
      if (!b.count(name)) return 1e9;
      d = std::max(d, (t - b.at(name)).abs().max().item<double>());
    }
    return d;
  };
  mpt::v1::SourceTrainingSpec source = Source(12);
  source.mutable_train()->set_eval_every(6);
  auto one = RunSourceTraining(Env(), prompt_, source, out + "/one", {"echo"});
  ASSERT_TRUE(one.ok()) << one.status();
  StageEnv env = Env();
  env.lanes = 2;
  sink_ = RecordingSink();
  std::set<std::thread::id> threads;
  struct ThreadSink : ProgressSink {
    std::set<std::thread::id>* threads;
    void OnEvent(const ProgressEvent&) override { threads->insert(std::this_thread::get_id()); }
  } thread_sink;
  thread_sink.threads = &threads;
  env.sink = &thread_sink;
  auto ranks = RunSourceTraining(env, prompt_, source, out + "/ranks", {"echo"});
  ASSERT_TRUE(ranks.ok()) << ranks.status();
  EXPECT_EQ(threads.size(), 1u);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
  auto again = RunSourceTraining(env, prompt_, source, out + "/again", {"echo"});
  ASSERT_TRUE(again.ok()) << again.status();
  const auto p_one = prompt_of((*one)[0].adapter);
  const auto p_ranks = prompt_of((*ranks)[0].adapter);
  const double diff = max_diff(p_ranks, p_one);
  EXPECT_LE(diff, 1e-5);
  EXPECT_GT(diff, 0);  // really another summation order: two ranks ran
  EXPECT_EQ(max_diff(prompt_of((*again)[0].adapter), p_ranks), 0);
  EXPECT_EQ((*ranks)[0].train.best_step, (*one)[0].train.best_step);

  mpt::v1::DistillationSpec distill;
  *distill.mutable_tasks() = Source(0).tasks();
  *distill.mutable_train() = Train(8);
  ApplyDefaults(&distill);
  std::vector<std::string> teachers;
  for (const char* t : {"echo", "echo", "echo"}) teachers.push_back(out + "/one/" + t);
  auto d_one = RunDistillation(Env(), prompt_, distill, teachers, out + "/d_one");
  auto d_ranks = RunDistillation(env, prompt_, distill, teachers, out + "/d_ranks");
  ASSERT_TRUE(d_one.ok()) << d_one.status();
  ASSERT_TRUE(d_ranks.ok()) << d_ranks.status();
  EXPECT_LE(max_diff(prompt_of(out + "/d_ranks"), prompt_of(out + "/d_one")), 1e-5);
  EXPECT_EQ(prompt_of(out + "/d_ranks").size(), 3u);  // P*, U, V
}

// The switches the few-shot study uses: SPoT-style ADAPTERS init, the
// distillation-term switch and adaptation from the teachers' mean.
TEST_F(MptStagesTest, TransferBaselinesAndAblationSwitches) {
  const std::string out = FreshTempDir("switches");
  mpt::v1::SourceTrainingSpec source = Source(2);
  auto teachers = RunSourceTraining(Env(), prompt_, source, out + "/source");
  ASSERT_TRUE(teachers.ok()) << teachers.status();
  std::vector<std::string> folders;
  std::vector<at::Tensor> prompts;
  for (const TaskOutcome& t : *teachers) {
    folders.push_back(t.adapter);
    auto a = ReadAdapter(t.adapter);
    ASSERT_TRUE(a.ok()) << a.status();
    prompts.push_back(a->prompt.TaskPrompt(0).detach());
  }
  const at::Tensor mean = at::stack(prompts).mean(0);

  // ADAPTERS: a plain prompt that starts at the mean of the given prompts
  // (learning rate 0 keeps it there).
  mpt::v1::SourceTrainingSpec spot;
  *spot.add_tasks() = Task("last");
  *spot.mutable_train() = Train(1);
  spot.mutable_train()->mutable_optimizer()->set_learning_rate(1e-12);
  spot.set_init("ADAPTERS");
  for (const auto& f : folders) spot.add_init_adapters(f);
  ApplyDefaults(&spot);
  auto spotted = RunSourceTraining(Env(), prompt_, spot, out + "/spot");
  ASSERT_TRUE(spotted.ok()) << spotted.status();
  auto spot_adapter = ReadAdapter(out + "/spot/last");
  ASSERT_TRUE(spot_adapter.ok()) << spot_adapter.status();
  EXPECT_TRUE(at::allclose(spot_adapter->prompt.TaskPrompt(0), mean, 1e-4, 1e-5));

  // distillation.losses: "kl" leaves L_hidden out, "hidden" L_KL.
  for (const std::string losses : {"kl", "hidden"}) {
    sink_.events.clear();
    mpt::v1::DistillationSpec distill;
    *distill.mutable_tasks() = Source(0).tasks();
    *distill.mutable_train() = Train(2);
    distill.set_losses(losses);
    ApplyDefaults(&distill);
    auto student = RunDistillation(Env(), prompt_, distill, folders, out + "/d_" + losses);
    ASSERT_TRUE(student.ok()) << student.status();
    EXPECT_EQ(sink_.FirstAndLast("kl").first > 0, losses == "kl") << losses;
    EXPECT_EQ(sink_.FirstAndLast("hidden").first > 0, losses == "hidden") << losses;
  }

  // TEACHER_MEAN: MPT's adaptation from P* = mean of the teachers, U = V = 1.
  mpt::v1::TargetAdaptationSpec target;
  *target.add_tasks() = Task("last");
  *target.mutable_train() = Train(1);
  target.mutable_train()->mutable_optimizer()->set_learning_rate(1e-12);
  target.set_init("TEACHER_MEAN");
  for (const auto& f : folders) target.add_teacher_adapters(f);
  ApplyDefaults(&target);
  auto adapted = RunTargetAdaptation(Env(), prompt_, target, "", out + "/target");
  ASSERT_TRUE(adapted.ok()) << adapted.status();
  auto adapter = ReadAdapter(out + "/target/last");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->info.prompt.kind, PromptKind::kMultitask);
  EXPECT_TRUE(at::allclose(adapter->prompt.TaskPrompt(0), mean, 1e-4, 1e-5));

  // trainable "factors": at a real rate U and V move, P* does not.
  *target.mutable_train() = Train(3);
  target.set_trainable("factors");
  auto factors = RunTargetAdaptation(Env(), prompt_, target, "", out + "/factors");
  ASSERT_TRUE(factors.ok()) << factors.status();
  auto moved = ReadAdapter(out + "/factors/last");
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_TRUE(at::allclose(moved->prompt.prompt_embeddings(), mean, 0, 1e-6));
  EXPECT_GT((moved->prompt.prefix_task_rows() - 1).abs().max().item<double>(), 1e-3);
}

std::map<std::string, at::Tensor> AdapterTensors(const std::string& folder) {
  auto t = LoadSafetensors(folder + "/adapter_model.safetensors");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::map<std::string, at::Tensor>{};
}

TEST_F(MptStagesTest, KilledAndResumedStageEndsWhereAnUninterruptedOneEnds) {
  mpt::v1::SourceTrainingSpec spec = Source(12);
  spec.mutable_tasks()->DeleteSubrange(1, 2);
  spec.mutable_train()->set_checkpoint_every(4);

  const std::string straight = FreshTempDir("straight");
  ASSERT_TRUE(RunSourceTraining(Env(straight + "/work"), prompt_, spec, straight + "/out").ok());

  const std::string resumed = FreshTempDir("resumed");
  StageEnv killed = Env(resumed + "/work");
  int polls = 0;
  killed.cancelled = [&] { return ++polls > 7; };
  auto first = RunSourceTraining(killed, prompt_, spec, resumed + "/out");
  ASSERT_EQ(first.status().code(), absl::StatusCode::kCancelled) << first.status();
  EXPECT_FALSE(fs::exists(resumed + "/out/echo")) << "a cancelled stage must not write its result";

  auto second = RunSourceTraining(Env(resumed + "/work"), prompt_, spec, resumed + "/out");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)[0].train.resumed_from_step, 4);
  auto a = AdapterTensors(straight + "/out/echo");
  auto b = AdapterTensors(resumed + "/out/echo");
  ASSERT_EQ(a.count("prompt_embeddings"), 1u);
  EXPECT_TRUE(at::equal(a["prompt_embeddings"], b["prompt_embeddings"]));
}

using testing::WriteFile;

TEST_F(MptStagesTest, BadDataIsAClearErrorNamingFileAndLine) {
  const std::string dir = FreshTempDir("bad_data");
  struct Case {
    const char* content;
    const char* expect;
  };
  for (const Case& c : {Case{"{\"input\": \"a\", \"target\": \"b\"}\n{\"input\": \"a\"\n", ":2:"},
                        Case{"{\"input\": \"a\"}\n", "target"},
                        Case{"", "no examples"},
                        Case{"{\"input\": \"a\", \"target\": \"b\", \"task\": \"other\"}\n", "other"}}) {
    SCOPED_TRACE(c.content);
    const std::string path = dir + "/data.jsonl";
    WriteFile(path, c.content);
    mpt::v1::SourceTrainingSpec spec = Source(2);
    spec.mutable_tasks()->DeleteSubrange(1, 2);
    spec.mutable_tasks(0)->set_train_path(path);
    auto result = RunSourceTraining(Env(), prompt_, spec, dir + "/out");
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status();
    EXPECT_NE(result.status().message().find(c.expect), std::string::npos) << result.status();
    EXPECT_FALSE(fs::exists(dir + "/out"));
  }
}

TEST_F(MptStagesTest, AdaptersThatDoNotFitAreRejectedAndNothingIsWritten) {
  const std::string dir = FreshTempDir("misfit");
  // A teacher with the wrong width (token_dim 32 for a d_model 64 model).
  SoftPromptConfig narrow;
  narrow.num_virtual_tokens = 4;
  narrow.token_dim = 32;
  AdapterInfo info;
  info.prompt = narrow;
  ASSERT_TRUE(WriteAdapter(dir + "/narrow", *SoftPrompt::Random(narrow, 1), info).ok());
  // A teacher with too many virtual tokens.
  SoftPromptConfig longer = narrow;
  longer.token_dim = 64;
  longer.num_virtual_tokens = 6;
  info.prompt = longer;
  ASSERT_TRUE(WriteAdapter(dir + "/longer", *SoftPrompt::Random(longer, 1), info).ok());

  mpt::v1::DistillationSpec distill;
  *distill.add_tasks() = Task("echo");
  *distill.mutable_train() = Train(2);
  ApplyDefaults(&distill);
  auto wide = RunDistillation(Env(), prompt_, distill, {dir + "/narrow"}, dir + "/out");
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.status().message().find("token_dim"), std::string::npos) << wide.status();
  auto tokens = RunDistillation(Env(), prompt_, distill, {dir + "/longer"}, dir + "/out");
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tokens.status().message().find("num_virtual_tokens"), std::string::npos)
      << tokens.status();
  auto count = RunDistillation(Env(), prompt_, distill, {}, dir + "/out");
  EXPECT_EQ(count.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir + "/out"));

  // Target adaptation needs a multitask (stage-2) adapter ...
  mpt::v1::TargetAdaptationSpec target;
  *target.add_tasks() = Task("last");
  *target.mutable_train() = Train(2);
  ApplyDefaults(&target);
  auto plain = RunTargetAdaptation(Env(), prompt_, target, dir + "/longer", dir + "/target");
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plain.status().message().find("MULTITASK_PROMPT_TUNING"), std::string::npos);

  // ... whose num_tasks agrees with its tensors ...
  SoftPromptConfig multi = longer;
  multi.kind = PromptKind::kMultitask;
  multi.num_virtual_tokens = 4;
  multi.num_tasks = 3;
  info.prompt = multi;
  ASSERT_TRUE(WriteAdapter(dir + "/multi", *SoftPrompt::Random(multi, 1), info).ok());
  {
    std::ifstream in(dir + "/multi/adapter_config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.replace(text.find("\"num_tasks\": 3"), 14, "\"num_tasks\": 5");
    WriteFile(dir + "/multi/adapter_config.json", text);
  }
  auto tasks = RunTargetAdaptation(Env(), prompt_, target, dir + "/multi", dir + "/target");
  EXPECT_EQ(tasks.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tasks.status().message().find("prefix_task_cols"), std::string::npos) << tasks.status();

  // ... and an EXACT_SOURCE_TASK that names one of its tasks.
  ASSERT_TRUE(WriteAdapter(dir + "/multi", *SoftPrompt::Random(multi, 1), info).ok());
  target.set_init("EXACT_SOURCE_TASK");
  target.set_init_task(3);
  auto exact = RunTargetAdaptation(Env(), prompt_, target, dir + "/multi", dir + "/target");
  EXPECT_EQ(exact.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(exact.status().message().find("target.init_task: 3 is not a task of "
                                          "target.source_adapter"),
            std::string::npos)
      << exact.status();
  EXPECT_FALSE(fs::exists(dir + "/target"));
}

}  // namespace
}  // namespace mpt
