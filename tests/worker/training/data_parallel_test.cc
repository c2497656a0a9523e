// Data-parallel training is the same training: two ranks (two processes
// talking over Gloo on 127.0.0.1), each taking half of every global batch,
// end where one rank with the whole batch ends.
//
// Tolerance: 1e-5 absolute on every prompt parameter. The two runs add the
// same float32 terms in a different order (per shard, then across ranks), so
// they may differ in the last bits; AdamW keeps such differences at the
// level of float32 rounding times the learning rate. The ranks of one run
// agree exactly with each other (they apply the same reduced gradient).
//
// Two step functions are checked: a synthetic one without a model (its loss
// depends on every example and its token count, normalised by the global
// target-token count as losses.h prescribes), and RunDistillation itself on
// the tiny T5 checkpoint of tests/testdata/t5_relu with L_PLM + L_KL +
// L_hidden. A third runs RunSourceTraining with both source tasks packed
// into one pass (tasks_per_pass 2) on two ranks against the tasks trained
// apart in one process. A negative control shows that the comparison has teeth:
// normalising by each rank's own token count instead moves the result far
// beyond the tolerance.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/lm/t5_task_tokenizer.h"
#include "proto/mpt/v1/spec.pb.h"
#include "tests/rank_processes.h"
#include "tests/test_util.h"
#include "worker/prompts/adapter_io.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/gloo_communicator.h"
#include "worker/training/mpt_stages.h"
#include "worker/training/prompt_trainer.h"
#include "worker/collectives/rendezvous_store.h"
#include "worker/prompts/soft_prompt.h"
#include "common/spec/spec_loader.h"
#include "worker/model/t5_model.h"
#include "worker/model/t5_tokenizer.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using mpt::testing::DataPath;
using mpt::testing::FreshTempDir;
using mpt::testing::SpawnSelf;
using mpt::testing::WaitForRanks;

constexpr double kTolerance = 1e-5;
constexpr int kWorld = 2;
constexpr auto kRankDeadline = std::chrono::seconds(240);

absl::StatusOr<std::unique_ptr<Communicator>> JoinGloo(int rank, int world,
                                                       const std::string& store_dir) {
  FileRendezvousStore store(store_dir);
  GlooOptions options;
  options.hostname = "127.0.0.1";
  options.timeout = absl::Seconds(120);
  return GlooCommunicator::Create(rank, world, &store, options);
}

// The largest absolute difference between two state dicts; +inf when their
// names or shapes differ.
double MaxAbsDiff(const std::map<std::string, at::Tensor>& a,
                  const std::map<std::string, at::Tensor>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.sizes() != t.sizes()) return INFINITY;
    worst = std::max(worst, (t.to(at::kDouble) - it->second.to(at::kDouble))
                                .abs()
                                .max()
                                .item<double>());
  }
  return worst;
}

// ---------------------------------------------------------------------------
// The synthetic problem: a multitask prompt (P*, U, V all train) pulled
// towards the target token values of each example, token by token. Targets
// have 2 to 4 tokens, so the shards of a batch hold different token counts
// and the normalisation matters.

std::vector<std::vector<TokenizedExample>> SyntheticData() {
  std::vector<std::vector<TokenizedExample>> sets(2);
  for (int i = 0; i < 10; ++i) {
    TokenizedExample e;
    e.input_ids = {i + 3, 1};
    for (int j = 0; j <= i % 3; ++j) e.target_ids.push_back(2 + (i * 7 + j * 3) % 11);
    e.target_ids.push_back(1);
    e.task_id = i % 2;
    e.target = std::to_string(i);
    sets[i % 2].push_back(e);
  }
  return sets;
}

SoftPrompt SyntheticPrompt() {
  SoftPromptConfig c;
  c.kind = PromptKind::kMultitask;
  c.num_virtual_tokens = 3;
  c.token_dim = 4;
  c.num_ranks = 1;
  c.num_tasks = 2;
  return *SoftPrompt::Random(c, 5);
}

mpt::v1::TrainSpec SyntheticTrainSpec() {
  mpt::v1::TrainSpec t;
  t.set_steps(8);
  t.set_batch_size(4);
  t.mutable_optimizer()->set_learning_rate(0.05);
  t.mutable_optimizer()->set_weight_decay(0.01);
  t.mutable_optimizer()->set_warmup_steps(2);
  t.mutable_optimizer()->set_schedule("linear");
  t.mutable_optimizer()->set_max_grad_norm(1.0);
  t.set_seed(3);
  return t;
}

// `local_counts`: the mistake the negative control makes, dividing by this
// rank's own target tokens instead of the global count.
StepFunction SyntheticStep(const SoftPrompt* prompt, bool local_counts) {
  return [prompt, local_counts](const Batch& batch,
                                double global_tokens) -> absl::StatusOr<StepLoss> {
    at::Tensor p = prompt->Forward(batch.task_ids, batch.size());    // [B, T, d]
    at::Tensor pred = p.mean(1);                                      // [B, d]
    at::Tensor mask = batch.labels.ne(-100).to(at::kFloat);          // [B, L]
    at::Tensor values = batch.labels.clamp_min(0).to(at::kFloat) / 10;  // [B, L]
    at::Tensor diff = pred.unsqueeze(1) - values.unsqueeze(2);        // [B, L, d]
    at::Tensor sum = (diff.pow(2).sum(2) * mask).sum();
    const double count = local_counts ? static_cast<double>(batch.target_tokens) : global_tokens;
    StepLoss loss;
    loss.objective = sum / count;
    loss.parts = {{"loss", loss.objective.item<double>()}};
    return loss;
  };
}

absl::StatusOr<std::map<std::string, at::Tensor>> TrainSynthetic(Communicator* comm,
                                                                 bool local_counts) {
  SoftPrompt prompt = SyntheticPrompt();
  auto data = SyntheticData();
  TrainerOptions options;
  options.train = SyntheticTrainSpec();
  options.stage = "synthetic";
  PromptTrainer trainer(options, &prompt, &data, 0, comm, nullptr, nullptr);
  absl::StatusOr<TrainResult> result = trainer.Run(SyntheticStep(&prompt, local_counts), nullptr);
  if (!result.ok()) return result.status();
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : prompt.StateDict()) out[name] = t.detach().clone();
  return out;
}

// ---------------------------------------------------------------------------
// RunDistillation on the tiny T5: two source tasks, random teachers, a
// student with a decoder prompt block too (two submodules).

const char* const kTasks[] = {"sst2", "qnli"};

mpt::v1::PromptSpec DistillPromptSpec() {
  mpt::v1::PromptSpec p;
  p.set_num_virtual_tokens(4);
  p.set_num_transformer_submodules(2);
  p.set_num_ranks(1);
  ApplyDefaults(&p);
  return p;
}

mpt::v1::DistillationSpec DistillSpec() {
  mpt::v1::DistillationSpec spec;
  for (const char* task : kTasks) {
    mpt::v1::TaskData* t = spec.add_tasks();
    t->set_name(task);
    t->set_train_path(DataPath(absl::StrCat("tests/testdata/specs/data/", task, "_train.jsonl")));
  }
  spec.mutable_train()->set_steps(3);
  spec.mutable_train()->set_batch_size(4);
  spec.mutable_train()->set_seed(9);
  spec.set_lambda(0.9);
  spec.set_world_size(kWorld);
  ApplyDefaults(&spec);
  return spec;
}

std::vector<std::string> TeacherFolders(const std::string& root) {
  std::vector<std::string> out;
  for (const char* task : kTasks) out.push_back((fs::path(root) / "teachers" / task).string());
  return out;
}

// Writes one random PROMPT_TUNING teacher per task under `root`/teachers.
absl::Status WriteTeachers(const std::string& root, const T5Model& model) {
  const std::vector<std::string> folders = TeacherFolders(root);
  for (size_t k = 0; k < folders.size(); ++k) {
    SoftPromptConfig c;
    c.kind = PromptKind::kPromptTuning;
    c.num_virtual_tokens = 4;
    c.num_transformer_submodules = 2;
    c.token_dim = static_cast<int>(model.config().d_model);
    absl::StatusOr<SoftPrompt> teacher = SoftPrompt::Random(c, 100 + k);
    if (!teacher.ok()) return teacher.status();
    AdapterInfo info;
    info.prompt = c;
    info.base_model_name_or_path = model.folder();
    absl::Status s = WriteAdapter(folders[k], *teacher, info);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

struct LoadedModel {
  std::unique_ptr<T5Model> model;
  std::unique_ptr<T5Tokenizer> tokenizer;
  std::unique_ptr<T5PromptedModel> lm;
  std::unique_ptr<T5TaskTokenizer> task_tokenizer;
};

absl::StatusOr<LoadedModel> LoadTinyT5() {
  const std::string folder = DataPath("tests/testdata/t5_relu");
  LoadedModel m;
  auto model = T5Model::Load(folder);
  if (!model.ok()) return model.status();
  auto tokenizer = T5Tokenizer::Load(folder);
  if (!tokenizer.ok()) return tokenizer.status();
  m.model = std::move(*model);
  m.tokenizer = std::move(*tokenizer);
  m.lm = std::make_unique<T5PromptedModel>(m.model.get());
  m.task_tokenizer = std::make_unique<T5TaskTokenizer>(m.tokenizer.get());
  return m;
}

// Distils the teachers under `root` into `out_dir` with `comm` (null: one
// process).
absl::Status Distill(const LoadedModel& m, const std::string& root, Communicator* comm,
                     const std::string& out_dir) {
  StageEnv env;
  env.model = m.lm.get();
  env.tokenizer = m.task_tokenizer.get();
  env.comm = comm;
  absl::StatusOr<TaskOutcome> outcome =
      RunDistillation(env, DistillPromptSpec(), DistillSpec(), TeacherFolders(root), out_dir);
  return outcome.status();
}

// Source training of both tasks in one pass (tasks_per_pass 2) on the tiny
// T5 with `comm` (null: one process); `tasks_per_pass` 1 trains them one
// after the other instead. Adapters go to `out_dir`/<task>.
absl::Status SourcePack(const LoadedModel& m, Communicator* comm, int tasks_per_pass,
                        const std::string& out_dir) {
  StageEnv env;
  env.model = m.lm.get();
  env.tokenizer = m.task_tokenizer.get();
  env.comm = comm;
  mpt::v1::PromptSpec prompt = DistillPromptSpec();
  prompt.set_num_transformer_submodules(1);
  mpt::v1::SourceTrainingSpec spec;
  *spec.mutable_tasks() = DistillSpec().tasks();
  *spec.mutable_train() = DistillSpec().train();
  spec.mutable_train()->set_steps(4);
  spec.mutable_train()->mutable_optimizer()->set_learning_rate(0.05);
  spec.set_tasks_per_pass(tasks_per_pass);
  ApplyDefaults(&spec);
  return RunSourceTraining(env, prompt, spec, out_dir).status();
}

// ---------------------------------------------------------------------------
// The ranks' side (this binary started again; see rank_processes.h).

#define ROLE_CHECK(cond, what)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::cerr << "rank " << rank << ": " << __LINE__ << ": " << what << std::endl; \
      return 1;                                                                      \
    }                                                                                \
  } while (0)

// --rank_role synthetic|synthetic_local_counts <rank> <world> <store> <out>
// Trains and writes this rank's final prompt to <out>.rank<r>.safetensors.
int RoleSynthetic(int rank, int world, const std::string& store, const std::string& out,
                  bool local_counts) {
  auto comm = JoinGloo(rank, world, store);
  ROLE_CHECK(comm.ok(), "create: " << comm.status());
  auto state = TrainSynthetic(comm->get(), local_counts);
  ROLE_CHECK(state.ok(), "train: " << state.status());
  absl::Status s = SaveSafetensors(absl::StrCat(out, ".rank", rank, ".safetensors"), *state);
  ROLE_CHECK(s.ok(), "save: " << s);
  return 0;
}

// --rank_role distill <rank> <world> <store> <root>
// Distils the teachers under <root>; rank 0 writes <root>/data_parallel.
int RoleDistill(int rank, int world, const std::string& store, const std::string& root) {
  auto m = LoadTinyT5();
  ROLE_CHECK(m.ok(), "load: " << m.status());
  auto comm = JoinGloo(rank, world, store);
  ROLE_CHECK(comm.ok(), "create: " << comm.status());
  absl::Status s = Distill(*m, root, comm->get(), (fs::path(root) / "data_parallel").string());
  ROLE_CHECK(s.ok(), "distill: " << s);
  return 0;
}

// --rank_role pack <rank> <world> <store> <root>
// Trains both source tasks in one pass; rank r writes <root>/pack_rank<r>.
int RolePack(int rank, int world, const std::string& store, const std::string& root) {
  auto m = LoadTinyT5();
  ROLE_CHECK(m.ok(), "load: " << m.status());
  auto comm = JoinGloo(rank, world, store);
  ROLE_CHECK(comm.ok(), "create: " << comm.status());
  absl::Status s =
      SourcePack(*m, comm->get(), 2, (fs::path(root) / absl::StrCat("pack_rank", rank)).string());
  ROLE_CHECK(s.ok(), "pack: " << s);
  return 0;
}

int RunRole(int argc, char** argv) {
  if (argc != 7) {
    std::cerr << "usage: --rank_role <role> <rank> <world> <store dir> <path>" << std::endl;
    return 2;
  }
  const std::string role = argv[2];
  const int rank = std::atoi(argv[3]);
  const int world = std::atoi(argv[4]);
  if (role == "synthetic") return RoleSynthetic(rank, world, argv[5], argv[6], false);
  if (role == "synthetic_local_counts") {
    return RoleSynthetic(rank, world, argv[5], argv[6], true);
  }
  if (role == "distill") return RoleDistill(rank, world, argv[5], argv[6]);
  if (role == "pack") return RolePack(rank, world, argv[5], argv[6]);
  std::cerr << "unknown role " << role << std::endl;
  return 2;
}

// Runs `role` as kWorld processes and expects each to succeed.
void RunRanks(const std::string& role, const std::string& store, const std::string& path) {
  std::vector<pid_t> pids;
  for (int r = 0; r < kWorld; ++r) {
    pids.push_back(SpawnSelf({role, std::to_string(r), std::to_string(kWorld), store, path}));
  }
  std::vector<int> codes = WaitForRanks(pids, kRankDeadline);
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(codes[r], 0) << role << " rank " << r;
}

// ---------------------------------------------------------------------------
// The tests.

// A pack of two source tasks on two Gloo ranks ends where the two tasks
// trained one after the other in one process end; the ranks agree exactly.
TEST(DataParallel, TwoGlooRanksTrainAPackAsOneProcessTrainsItsTasksApart) {
  const std::string dir = FreshTempDir("pack");
  auto m = LoadTinyT5();
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(SourcePack(*m, nullptr, 1, (fs::path(dir) / "separate").string()).ok());
  RunRanks("pack", (fs::path(dir) / "store").string(), dir);
  for (const char* task : kTasks) {
    SCOPED_TRACE(task);
    auto separate = LoadSafetensors(
        (fs::path(dir) / "separate" / task / "adapter_model.safetensors").string());
    ASSERT_TRUE(separate.ok()) << separate.status();
    std::vector<std::map<std::string, at::Tensor>> ranks;
    for (int r = 0; r < kWorld; ++r) {
      auto state = LoadSafetensors((fs::path(dir) / absl::StrCat("pack_rank", r) / task /
                                    "adapter_model.safetensors")
                                       .string());
      ASSERT_TRUE(state.ok()) << state.status();
      ranks.push_back(*state);
    }
    const double diff = MaxAbsDiff(*separate, ranks[0]);
    std::cout << task << ": max |separate, W=1 - pack, W=2| = " << diff << std::endl;
    EXPECT_LE(diff, kTolerance);
    EXPECT_EQ(MaxAbsDiff(ranks[0], ranks[1]), 0.0);
  }
}

TEST(DataParallel, TwoGlooRanksTrainThePromptOneRankTrains) {
  LocalCommunicator local;
  auto single = TrainSynthetic(&local, false);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_GT(MaxAbsDiff(*single, SyntheticPrompt().StateDict()), 0.05) << "training moved nothing";

  const std::string dir = FreshTempDir("synthetic");
  const std::string out = (fs::path(dir) / "prompt").string();
  RunRanks("synthetic", (fs::path(dir) / "store").string(), out);
  std::vector<std::map<std::string, at::Tensor>> ranks;
  for (int r = 0; r < kWorld; ++r) {
    auto state = LoadSafetensors(absl::StrCat(out, ".rank", r, ".safetensors"));
    ASSERT_TRUE(state.ok()) << state.status();
    ranks.push_back(*state);
  }
  const double diff = MaxAbsDiff(*single, ranks[0]);
  std::cout << "synthetic: max |W=1 - W=2| = " << diff << std::endl;
  EXPECT_LE(diff, kTolerance);
  EXPECT_EQ(MaxAbsDiff(ranks[0], ranks[1]), 0.0) << "the two ranks disagree";
}

TEST(DataParallel, NormalisingByLocalTokenCountsIsCaught) {
  LocalCommunicator local;
  auto single = TrainSynthetic(&local, false);
  ASSERT_TRUE(single.ok()) << single.status();
  const std::string dir = FreshTempDir("synthetic_local");
  const std::string out = (fs::path(dir) / "prompt").string();
  RunRanks("synthetic_local_counts", (fs::path(dir) / "store").string(), out);
  auto wrong = LoadSafetensors(absl::StrCat(out, ".rank0.safetensors"));
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  const double diff = MaxAbsDiff(*single, *wrong);
  std::cout << "negative control: max |W=1 - W=2 (local counts)| = " << diff << std::endl;
  EXPECT_GT(diff, 100 * kTolerance);
}

TEST(DataParallel, DistillationOnTinyT5WithTwoGlooRanksMatchesOneRank) {
  auto m = LoadTinyT5();
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string root = FreshTempDir("distill");
  ASSERT_TRUE(WriteTeachers(root, *m->model).ok());

  const std::string single_dir = (fs::path(root) / "single").string();
  absl::Status s = Distill(*m, root, nullptr, single_dir);
  ASSERT_TRUE(s.ok()) << s;
  RunRanks("distill", (fs::path(root) / "store").string(), root);

  auto single = ReadAdapter(single_dir);
  ASSERT_TRUE(single.ok()) << single.status();
  auto parallel = ReadAdapter((fs::path(root) / "data_parallel").string());
  ASSERT_TRUE(parallel.ok()) << parallel.status();
  EXPECT_EQ(parallel->info.task_names, single->info.task_names);

  // The student starts at the teachers' mean: make sure it moved.
  std::vector<at::Tensor> teachers;
  for (const std::string& folder : TeacherFolders(root)) {
    auto teacher = ReadAdapter(folder);
    ASSERT_TRUE(teacher.ok()) << teacher.status();
    teachers.push_back(teacher->prompt.TaskPrompt(0).detach());
  }
  const at::Tensor start = at::stack(teachers).mean(0);
  const at::Tensor trained = single->prompt.StateDict().at("prompt_embeddings");
  EXPECT_GT((trained - start).abs().max().item<double>(), 0.05) << "distillation moved nothing";

  const double diff = MaxAbsDiff(single->prompt.StateDict(), parallel->prompt.StateDict());
  std::cout << "distillation: max |W=1 - W=2| = " << diff << std::endl;
  EXPECT_LE(diff, kTolerance);
}

}  // namespace
}  // namespace mpt

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == mpt::testing::kRankRoleFlag) {
    return mpt::RunRole(argc, argv);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
