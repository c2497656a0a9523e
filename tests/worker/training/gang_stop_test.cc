// A cancel seen by one rank of a data-parallel gang stops every rank before
// the same step: two processes train over Gloo on 127.0.0.1 and only one of
// them is told to stop. Without the stop flag in the trainer's per-step
// all-reduce the other rank would go on into the next collective alone and
// fail with UNAVAILABLE (or hang until the deadline) instead of returning
// CANCELLED at the same step.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/rank_processes.h"
#include "worker/collectives/gloo_communicator.h"
#include "worker/collectives/rendezvous_store.h"
#include "worker/training/prompt_trainer.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using mpt::testing::SpawnSelf;
using mpt::testing::WaitForRanks;

constexpr int kWorld = 2;
constexpr int kSteps = 10;

std::string FreshDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  fs::path p = fs::path(root ? root : "/tmp") / "gang_stop_test" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// --rank_role stop <rank> <store> <stopping rank> <stop at step>
// Trains with `stopping rank` told to stop at the start of step `stop at`.
// Exit 0 when this rank returned CANCELLED at exactly that step after
// running exactly that many steps; 1 otherwise.
int RoleStop(int rank, const std::string& store_dir, int stopping_rank, int stop_at) {
  FileRendezvousStore store(store_dir);
  GlooOptions gloo;
  gloo.hostname = "127.0.0.1";
  gloo.timeout = absl::Seconds(30);
  auto comm = GlooCommunicator::Create(rank, kWorld, &store, gloo);
  if (!comm.ok()) {
    std::cerr << "rank " << rank << ": " << comm.status() << std::endl;
    return 1;
  }
  SoftPromptConfig config;
  config.num_virtual_tokens = 3;
  config.token_dim = 2;
  SoftPrompt prompt = *SoftPrompt::Random(config, 5);
  std::vector<TokenizedExample> set;
  for (int i = 0; i < 8; ++i) set.push_back({{i + 3, 1}, {i + 3, 1}, 0, std::to_string(i)});
  std::vector<std::vector<TokenizedExample>> data{set};

  TrainerOptions options;
  options.stage = "gang";
  options.train.set_steps(kSteps);
  options.train.set_batch_size(4);
  options.train.mutable_optimizer()->set_learning_rate(0.1);
  options.train.set_seed(1);
  int steps_run = 0;
  StepFunction step = [&](const Batch& batch, double global_tokens) -> absl::StatusOr<StepLoss> {
    ++steps_run;
    at::Tensor targets = batch.labels.select(1, 0).to(at::kFloat);
    at::Tensor p = prompt.Forward(batch.task_ids, batch.size());
    StepLoss loss;
    loss.objective = (p - targets.view({-1, 1, 1})).pow(2).sum() / global_tokens;
    loss.parts = {{"loss", loss.objective.item<double>()}};
    return loss;
  };
  int polls = 0;
  auto cancelled = [&] { return rank == stopping_rank && polls++ >= stop_at; };
  PromptTrainer trainer(options, &prompt, &data, 0, comm->get(), nullptr, cancelled);
  absl::StatusOr<TrainResult> result = trainer.Run(step, nullptr);
  const std::string expected = absl::StrCat("cancelled at step ", stop_at);
  if (!absl::IsCancelled(result.status()) ||
      result.status().message().find(expected) == std::string::npos || steps_run != stop_at) {
    std::cerr << "rank " << rank << ": ran " << steps_run << " steps and returned "
              << result.status() << "; expected CANCELLED at step " << stop_at << std::endl;
    return 1;
  }
  return 0;
}

int RunRole(int argc, char** argv) {
  if (argc != 7 || std::string(argv[2]) != "stop") {
    std::cerr << "usage: --rank_role stop <rank> <store> <stopping rank> <stop at>" << std::endl;
    return 2;
  }
  return RoleStop(std::atoi(argv[3]), argv[4], std::atoi(argv[5]), std::atoi(argv[6]));
}

void ExpectBothStopAt(int stopping_rank, int stop_at) {
  const std::string store =
      FreshDir(absl::StrCat("store_", stopping_rank, "_", stop_at));
  std::vector<pid_t> pids;
  for (int r = 0; r < kWorld; ++r) {
    pids.push_back(SpawnSelf({"stop", std::to_string(r), store, std::to_string(stopping_rank),
                              std::to_string(stop_at)}));
  }
  std::vector<int> codes = WaitForRanks(pids, std::chrono::seconds(120));
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(codes[r], 0) << "rank " << r << " (rank " << stopping_rank << " told to stop at step "
                           << stop_at << ")";
  }
}

TEST(GangStop, ACancelOnRankOneStopsBothRanksAtTheSameStep) { ExpectBothStopAt(1, 3); }

TEST(GangStop, ACancelOnRankZeroStopsBothRanksAtTheSameStep) { ExpectBothStopAt(0, 6); }

}  // namespace
}  // namespace mpt

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == mpt::testing::kRankRoleFlag) {
    return mpt::RunRole(argc, argv);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
