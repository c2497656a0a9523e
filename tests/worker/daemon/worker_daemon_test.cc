// The worker daemon's logic against an in-memory coordinator and a stage
// runner that only pretends to train.
#include "worker/daemon/worker_daemon.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/artifact_pack.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/daemon/fake_coordinator_client.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

class FakeExecutor final : public AssignmentExecutor {
 public:
  using Body = std::function<absl::StatusOr<AssignmentOutput>(const AssignmentContext&)>;
  explicit FakeExecutor(Body body) : body_(std::move(body)) {}
  absl::StatusOr<AssignmentOutput> Run(const AssignmentContext& context) override {
    runs_.fetch_add(1);
    return body_(context);
  }
  int runs() const { return runs_.load(); }

 private:
  Body body_;
  std::atomic<int> runs_{0};
};

ProgressEvent Step(int64_t step, int64_t total) {
  ProgressEvent e;
  e.stage = "source";
  e.task = "max";
  e.kind = ProgressKind::kStep;
  e.step = step;
  e.total_steps = total;
  e.losses = {{"loss", 1.0 / (step + 1)}};
  e.eta_seconds = 3;
  return e;
}

// Writes a pretend adapter folder and returns the output naming it.
AssignmentOutput WriteAdapter(const AssignmentContext& c, const std::string& label) {
  const std::string folder = (fs::path(c.out_dir) / label).string();
  fs::create_directories(folder);
  EXPECT_TRUE(WriteFileAtomically(folder + "/adapter_config.json", "{\"label\":\"" + label + "\"}")
                  .ok());
  AssignmentOutput out;
  out.adapters.push_back(folder);
  out.final_progress.set_step(10);
  (*out.final_progress.mutable_metrics())["max/accuracy"] = 0.5;
  return out;
}

// Emits steps until cancelled (or `max_steps`), sleeping `pause` each.
absl::StatusOr<AssignmentOutput> TrainUntilCancelled(const AssignmentContext& c, int max_steps,
                                                     absl::Duration pause) {
  for (int i = 0; i < max_steps; ++i) {
    if (c.cancelled()) return absl::CancelledError("cancelled at step " + std::to_string(i));
    c.sink->OnEvent(Step(i + 1, max_steps));
    absl::SleepFor(pause);
  }
  return WriteAdapter(c, "max");
}

mpt::v1::Assignment SourceAssignment(const std::string& id) {
  mpt::v1::Assignment a;
  a.set_id(id);
  a.set_job("jobs/j");
  a.set_stage("source/max");
  a.set_stage_kind(mpt::v1::SOURCE_TRAINING);
  a.set_task("max");
  a.set_world_size(1);
  return a;
}

class DaemonTest : public ::testing::Test {
 protected:
  void Start(AssignmentExecutor* executor, WorkerDaemonOptions options = {},
             absl::Duration poll_wait = absl::Milliseconds(50)) {
    options.work_dir = testing::FreshTempDir("daemon");
    options.worker.set_hostname("test-host");
    options.worker.set_device("cpu");
    options.poll_wait = poll_wait;
    options.min_backoff = absl::Milliseconds(10);
    options.max_backoff = absl::Milliseconds(50);
    options.progress_interval = absl::Milliseconds(20);
    options.heartbeat_interval = absl::Milliseconds(50);
    auto daemon = WorkerDaemon::Create(options, &client_, executor);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    thread_ = std::thread([this] { run_status_ = daemon_->Run(); });
  }

  void TearDown() override {
    if (daemon_) daemon_->Stop();
    if (thread_.joinable()) thread_.join();
  }

  FakeCoordinatorClient client_;
  std::unique_ptr<WorkerDaemon> daemon_;
  std::thread thread_;
  absl::Status run_status_;
};

TEST_F(DaemonTest, RunsAnAssignmentAndUploadsCheckpointAndAdapter) {
  FakeExecutor executor([](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    EXPECT_TRUE(fs::is_directory(c.work_dir));
    EXPECT_TRUE(c.teachers.empty());
    EXPECT_EQ(c.store, nullptr);
    for (int i = 1; i <= 5; ++i) c.sink->OnEvent(Step(i, 10));
    const std::string ckpt = c.work_dir + "/source/max";
    fs::create_directories(ckpt);
    EXPECT_TRUE(WriteFileAtomically(ckpt + "/state.json", "{\"step\":5}").ok());
    ProgressEvent e = Step(5, 10);
    e.kind = ProgressKind::kCheckpoint;
    e.message = ckpt;
    c.sink->OnEvent(e);
    ProgressEvent eval = Step(5, 10);
    eval.kind = ProgressKind::kEval;
    eval.metrics = {{"max/accuracy", 0.25}};
    c.sink->OnEvent(eval);
    absl::SleepFor(absl::Milliseconds(100));  // Let the outbox upload it.
    return WriteAdapter(c, "max");
  });
  client_.AddAssignment(SourceAssignment("jobs/j/stages/source/max/attempts/1/ranks/0"));
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  const auto done = client_.completions()[0];
  EXPECT_TRUE(done.ok()) << done.error();
  EXPECT_EQ(done.final_progress().step(), 10);
  // Every report names the worker the assignment was polled by.
  EXPECT_EQ(done.worker(), "workers/w0");

  std::vector<FakeCoordinatorClient::Upload> uploads = client_.uploads();
  ASSERT_EQ(uploads.size(), 2u);
  EXPECT_EQ(uploads[0].worker, "workers/w0");
  EXPECT_EQ(uploads[1].worker, "workers/w0");
  EXPECT_EQ(uploads[0].kind, "checkpoint");
  EXPECT_EQ(uploads[0].step, 5);
  auto ckpt = ReadPackedEntries(uploads[0].blob);
  ASSERT_TRUE(ckpt.ok());
  ASSERT_EQ(ckpt->size(), 1u);
  EXPECT_EQ((*ckpt)[0].path, "state.json");
  EXPECT_EQ(uploads[1].kind, "adapter");
  auto adapter = ReadPackedEntries(uploads[1].blob);
  ASSERT_TRUE(adapter.ok());
  EXPECT_EQ((*adapter)[0].path, "adapter_config.json");

  bool saw_eval = false, saw_step = false;
  for (const auto& p : client_.progress()) {
    EXPECT_EQ(p.assignment(), "jobs/j/stages/source/max/attempts/1/ranks/0");
    EXPECT_EQ(p.worker(), "workers/w0");
    saw_eval |= p.progress().metrics().count("max/accuracy") > 0;
    saw_step |= p.progress().step() > 0 && p.progress().losses().count("loss") > 0;
  }
  EXPECT_TRUE(saw_eval);
  EXPECT_TRUE(saw_step);
  EXPECT_FALSE(daemon_->worker_name().empty());
  // The assignment's folder is cleaned up (just after the completion).
  for (int i = 0; i < 500 && daemon_->assignments_finished() < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(daemon_->assignments_finished(), 1);
}

TEST_F(DaemonTest, StepReportsAreRateLimited) {
  FakeExecutor executor([](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    for (int i = 1; i <= 2000; ++i) c.sink->OnEvent(Step(i, 2000));
    return WriteAdapter(c, "max");
  });
  client_.AddAssignment(SourceAssignment("a1"));
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_LT(client_.progress().size(), 50u);
  // However fast the steps came, the last one reaches the coordinator.
  int64_t last_step = 0;
  for (const auto& p : client_.progress()) {
    if (p.has_progress()) last_step = std::max<int64_t>(last_step, p.progress().step());
  }
  EXPECT_EQ(last_step, 2000);
}

TEST_F(DaemonTest, FetchesInputsInTaskOrderAndRetriesACorruptTransfer) {
  auto pack = [](const std::string& name, const std::string& contents) {
    const std::string dir = testing::FreshTempDir("in_" + name);
    EXPECT_TRUE(WriteFileAtomically(dir + "/who", contents).ok());
    return *PackFolder(dir);
  };
  client_.PutArtifact("jobs/j/artifacts/t_b", pack("tb", "teacher b"), /*corrupt_once=*/true);
  client_.PutArtifact("jobs/j/artifacts/t_a", pack("ta", "teacher a"));
  client_.PutArtifact("jobs/j/artifacts/ck", pack("ck", "checkpoint"));
  mpt::v1::Assignment a;
  a.set_id("jobs/j/stages/distillation/attempts/2/ranks/0");
  a.set_stage("distillation");
  a.set_stage_kind(mpt::v1::DISTILLATION);
  a.set_world_size(1);
  a.mutable_spec()->mutable_source()->add_tasks()->set_name("a");
  a.mutable_spec()->mutable_source()->add_tasks()->set_name("b");
  auto* in = a.add_inputs();
  in->set_role("teacher");
  in->set_task("b");
  in->set_artifact("jobs/j/artifacts/t_b");
  in = a.add_inputs();
  in->set_role("teacher");
  in->set_task("a");
  in->set_artifact("jobs/j/artifacts/t_a");
  in = a.add_inputs();
  in->set_role("checkpoint");
  in->set_artifact("jobs/j/artifacts/ck");
  client_.AddAssignment(a);
  std::vector<std::string> seen;
  FakeExecutor executor([&](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    for (const std::string& t : c.teachers) seen.push_back(*ReadFile(t + "/who"));
    seen.push_back(*ReadFile(c.checkpoint + "/who"));
    return WriteAdapter(c, "distillation");
  });
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_TRUE(client_.completions()[0].ok()) << client_.completions()[0].error();
  EXPECT_EQ(seen, (std::vector<std::string>{"teacher a", "teacher b", "checkpoint"}));
}

// A target adaptation whose source adapter `artifact` the coordinator
// does not serve: the attempt fails before the stage runs, naming it and
// `code`.
class InputFailureTest : public DaemonTest {
 protected:
  mpt::v1::CompleteAssignmentRequest RunWithInput(const std::string& artifact,
                                                  const std::string& code) {
    mpt::v1::Assignment a = SourceAssignment("a1");
    a.set_stage_kind(mpt::v1::TARGET_ADAPTATION);
    auto* in = a.add_inputs();
    in->set_role("source_adapter");
    in->set_artifact(artifact);
    client_.AddAssignment(a);
    FakeExecutor executor([](const AssignmentContext& c) { return WriteAdapter(c, "x"); });
    Start(&executor);
    EXPECT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
    const auto done = client_.completions().at(0);
    EXPECT_FALSE(done.ok());
    EXPECT_NE(done.error().find(artifact), std::string::npos) << done.error();
    EXPECT_NE(done.error().find(code), std::string::npos) << done.error();
    EXPECT_EQ(executor.runs(), 0);
    return done;
  }
};

TEST_F(InputFailureTest, MissingInputFailsTheAssignment) {
  EXPECT_TRUE(RunWithInput("jobs/j/artifacts/gone", "NOT_FOUND").permanent());
}

// An artefact damaged in the coordinator's store stays damaged: after a
// retry or two the attempt fails naming it, instead of retrying for the
// whole result_retry_timeout (15 minutes) while the job shows RUNNING.
TEST_F(InputFailureTest, InputDamagedInTheStoreFailsTheAttemptSoon) {
  client_.PutDamagedArtifact("jobs/j/artifacts/damaged");
  RunWithInput("jobs/j/artifacts/damaged", "DATA_LOSS");
}

TEST_F(DaemonTest, CancelledThroughHeartbeatStopsWithinAFewSteps) {
  client_.AddAssignment(SourceAssignment("a1"));
  absl::Notification started;
  FakeExecutor executor([&](const AssignmentContext& c) {
    started.Notify();
    return TrainUntilCancelled(c, 100000, absl::Milliseconds(5));
  });
  Start(&executor);
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  const absl::Time t0 = absl::Now();
  client_.CancelAssignment("a1");
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  const auto done = client_.completions()[0];
  EXPECT_FALSE(done.ok());
  EXPECT_NE(done.error().find("cancelled"), std::string::npos) << done.error();
  EXPECT_TRUE(client_.uploads().empty());
}

// Runs a pack in lockstep: a step of every member still going, until each
// is cancelled or done.
class LockstepPackExecutor final : public AssignmentExecutor {
 public:
  absl::StatusOr<AssignmentOutput> Run(const AssignmentContext& c) override {
    return absl::InternalError("a pack member ran alone");
  }
  std::vector<absl::StatusOr<AssignmentOutput>> RunPack(
      const std::vector<const AssignmentContext*>& contexts) override {
    packs_.fetch_add(1);
    std::vector<absl::StatusOr<AssignmentOutput>> out(contexts.size(),
                                                      absl::UnknownError("running"));
    std::vector<bool> done(contexts.size(), false);
    checkpoints_.clear();
    for (const AssignmentContext* c : contexts) checkpoints_.push_back(c->checkpoint);
    for (int step = 1; step <= 40; ++step) {
      for (size_t i = 0; i < contexts.size(); ++i) {
        if (done[i]) continue;
        const AssignmentContext& c = *contexts[i];
        if (c.cancelled()) {
          out[i] = absl::CancelledError("cancelled at step " + std::to_string(step));
          done[i] = true;
          if (c.done) c.done(out[i]);  // reported while the others train
          continue;
        }
        ProgressEvent e = Step(step, 40);
        e.task = c.assignment->task();
        c.sink->OnEvent(e);
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    for (size_t i = 0; i < contexts.size(); ++i) {
      if (!done[i]) out[i] = WriteAdapter(*contexts[i], contexts[i]->assignment->task());
    }
    return out;
  }
  int packs() const { return packs_.load(); }
  std::vector<std::string> checkpoints_;

 private:
  std::atomic<int> packs_{0};
};

TEST_F(DaemonTest, APackRunsInOneCallAndEachMemberEndsOnItsOwn) {
  mpt::v1::Assignment lead = SourceAssignment("p1");
  mpt::v1::Assignment second = SourceAssignment("p2");
  second.set_job("jobs/other");
  second.set_task("min");
  mpt::v1::Assignment third = SourceAssignment("p3");
  third.set_task("sum");
  // The third resumes from a checkpoint, fetched into its own folder.
  mpt::v1::AssignmentInput* in = third.add_inputs();
  in->set_role("checkpoint");
  in->set_artifact("jobs/j/artifacts/ckpt");
  std::string blob;
  {
    const std::string folder = testing::FreshTempDir("pack_ckpt");
    ASSERT_TRUE(WriteFileAtomically(folder + "/state.txt", "step 5").ok());
    auto packed = PackFolder(folder);
    ASSERT_TRUE(packed.ok()) << packed.status();
    blob = *packed;
  }
  client_.PutArtifact("jobs/j/artifacts/ckpt", blob);
  *lead.add_packed() = second;
  *lead.add_packed() = third;
  client_.AddAssignment(lead);
  client_.CancelAssignment("p2");  // the other job was cancelled
  LockstepPackExecutor executor;
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(3, absl::Seconds(20)));
  EXPECT_EQ(executor.packs(), 1);
  ASSERT_EQ(executor.checkpoints_.size(), 3u);
  EXPECT_TRUE(executor.checkpoints_[0].empty());
  EXPECT_FALSE(executor.checkpoints_[2].empty());
  // The cancelled member was completed first, while the others trained.
  EXPECT_EQ(client_.completions()[0].assignment(), "p2");
  std::map<std::string, mpt::v1::CompleteAssignmentRequest> by_id;
  for (const auto& c : client_.completions()) by_id[c.assignment()] = c;
  ASSERT_EQ(by_id.size(), 3u);
  EXPECT_TRUE(by_id["p1"].ok());
  EXPECT_FALSE(by_id["p2"].ok());
  EXPECT_NE(by_id["p2"].error().find("cancelled"), std::string::npos) << by_id["p2"].error();
  EXPECT_FALSE(by_id["p2"].permanent());
  EXPECT_TRUE(by_id["p3"].ok());
  // Adapters of the two that finished, each under its own assignment.
  std::set<std::string> uploaded;
  for (const auto& u : client_.uploads()) {
    if (u.kind == "adapter") uploaded.insert(u.assignment);
  }
  EXPECT_EQ(uploaded, (std::set<std::string>{"p1", "p3"}));
  // Progress under each member's id with its own task; the last step of
  // both finishers reached the coordinator.
  std::map<std::string, int64_t> last_step;
  for (const auto& p : client_.progress()) {
    if (!p.has_progress()) continue;
    last_step[p.assignment()] = std::max(last_step[p.assignment()], p.progress().step());
    if (p.assignment() == "p3") {
      EXPECT_EQ(p.progress().task(), "sum");
    }
  }
  EXPECT_EQ(last_step["p1"], 40);
  EXPECT_EQ(last_step["p3"], 40);
  EXPECT_LT(last_step["p2"], 40);
  // Each member's completion carried log lines of the pack.
  EXPECT_GT(by_id["p1"].log_lines_size() + by_id["p3"].log_lines_size(), 0);
  for (int i = 0; i < 200 && daemon_->assignments_finished() < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(daemon_->assignments_finished(), 3);
}

TEST_F(DaemonTest, CancelledThroughProgressAnswer) {
  client_.AddAssignment(SourceAssignment("a1"));
  client_.CancelThroughProgress("a1");
  FakeExecutor executor(
      [&](const AssignmentContext& c) { return TrainUntilCancelled(c, 100000, absl::Milliseconds(5)); });
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_FALSE(client_.completions()[0].ok());
}

TEST_F(DaemonTest, RegistersAgainWhenForgottenAndDropsTheLostAssignment) {
  client_.AddAssignment(SourceAssignment("lost"));
  absl::Notification started;
  std::atomic<int> calls{0};
  FakeExecutor executor([&](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    if (calls.fetch_add(1) == 0) {
      started.Notify();
      return TrainUntilCancelled(c, 100000, absl::Milliseconds(5));
    }
    return WriteAdapter(c, "second");
  });
  Start(&executor);
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  client_.ForgetWorkers();
  client_.AddAssignment(SourceAssignment("second"));
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  const auto done = client_.completions();
  ASSERT_EQ(done.size(), 1u);  // the lost one is not reported
  EXPECT_EQ(done[0].assignment(), "second");
  EXPECT_TRUE(done[0].ok());
  EXPECT_EQ(client_.registrations(), 2);
}

TEST_F(DaemonTest, RidesOutAnUnavailableCoordinator) {
  client_.SetAvailable(false);
  client_.AddAssignment(SourceAssignment("a1"));
  absl::Notification finishing, gone;
  FakeExecutor executor([&](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    for (int i = 1; i <= 3; ++i) c.sink->OnEvent(Step(i, 3));
    finishing.Notify();
    // The result is delivered only once the coordinator is gone again.
    gone.WaitForNotificationWithTimeout(absl::Seconds(10));
    return WriteAdapter(c, "max");
  });
  Start(&executor);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(client_.registrations(), 0);
  client_.SetAvailable(true);
  ASSERT_TRUE(finishing.WaitForNotificationWithTimeout(absl::Seconds(10)));
  client_.SetAvailable(false);  // Gone while the result is delivered.
  gone.Notify();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_TRUE(client_.completions().empty());
  client_.SetAvailable(true);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_TRUE(client_.completions()[0].ok());
  ASSERT_TRUE(client_.WaitForUploads("adapter", 1, absl::Seconds(1)));
}

TEST_F(DaemonTest, ExceptionsBecomeFailures) {
  client_.AddAssignment(SourceAssignment("a1"));
  FakeExecutor executor([](const AssignmentContext&) -> absl::StatusOr<AssignmentOutput> {
    throw std::runtime_error("tensor shape mismatch");
  });
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_FALSE(client_.completions()[0].ok());
  EXPECT_NE(client_.completions()[0].error().find("tensor shape mismatch"), std::string::npos);
}

TEST_F(DaemonTest, GangMemberBelowRankZeroDoesNotUploadButGetsAStore) {
  mpt::v1::Assignment a = SourceAssignment("jobs/j/stages/distillation/attempts/1/ranks/1");
  a.set_stage_kind(mpt::v1::DISTILLATION);
  a.set_rank(1);
  a.set_world_size(2);
  a.set_group("jobs/j/stages/distillation/attempts/1");
  client_.AddAssignment(a);
  FakeExecutor executor([&](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    EXPECT_NE(c.store, nullptr);
    if (c.store == nullptr) return absl::InternalError("no store");
    EXPECT_TRUE(c.store->Set("rank1", "addr1").ok());
    EXPECT_TRUE(client_
                    .StoreSet({a.group(), "jobs/j/stages/distillation/attempts/1/ranks/0",
                               "workers/peer"},
                              "rank0", "addr0")
                    .ok());
    auto values = c.store->Get({"rank0", "rank1"}, absl::Seconds(1));
    EXPECT_TRUE(values.ok());
    if (values.ok()) {
      EXPECT_EQ((*values)[0], "addr0");
    }
    auto missing = c.store->Get({"rank7"}, absl::Milliseconds(100));
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
    for (int i = 1; i <= 3; ++i) c.sink->OnEvent(Step(i, 3));
    return WriteAdapter(c, "distillation");
  });
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(10)));
  EXPECT_TRUE(client_.completions()[0].ok());
  EXPECT_TRUE(client_.uploads().empty());
  // A rank other than 0 sends no progress, only its log lines.
  for (const auto& p : client_.progress()) EXPECT_FALSE(p.has_progress());
}

TEST_F(DaemonTest, LogLinesReachTheCoordinatorWithoutLossOrResendOfDeliveredOnes) {
  FakeExecutor executor([this](const AssignmentContext& c) -> absl::StatusOr<AssignmentOutput> {
    for (int i = 1; i <= 40; ++i) {
      MPT_LOG(INFO) << "training line " << i;
      c.sink->OnEvent(Step(i, 40));
      if (i == 10) client_.SetAvailable(false);  // the coordinator goes away...
      if (i == 25) client_.SetAvailable(true);   // ... and comes back
      absl::SleepFor(absl::Milliseconds(10));
    }
    return absl::InvalidArgumentError("data.jsonl:3: not a JSON object");
  });
  client_.AddAssignment(SourceAssignment("jobs/j/stages/source/max/attempts/1/ranks/0"));
  Start(&executor);
  ASSERT_TRUE(client_.WaitForCompletions(1, absl::Seconds(20)));
  const mpt::v1::CompleteAssignmentRequest done = client_.completions()[0];
  EXPECT_FALSE(done.ok());
  // Every line delivered once: reports the fake answered are never sent
  // again, and what was left goes with the completion.
  std::map<int64_t, std::string> delivered;
  auto take = [&](const mpt::v1::LogLine& l) {
    EXPECT_TRUE(delivered.emplace(l.sequence(), l.text()).second)
        << "line " << l.sequence() << " delivered twice: " << l.text();
  };
  int reports_with_lines = 0;
  for (const auto& p : client_.progress()) {
    reports_with_lines += p.log_lines_size() > 0;
    for (const auto& l : p.log_lines()) take(l);
  }
  for (const auto& l : done.log_lines()) take(l);
  EXPECT_GT(reports_with_lines, 1) << "lines should travel with the progress";
  ASSERT_FALSE(delivered.empty());
  EXPECT_EQ(delivered.begin()->first, 1);
  EXPECT_EQ(delivered.rbegin()->first, static_cast<int64_t>(delivered.size()))
      << "a gap in the sequence numbers";
  int training_lines = 0;
  for (const auto& [sequence, text] : delivered) {
    training_lines += text.find("] training line ") != std::string::npos;
  }
  EXPECT_EQ(training_lines, 40);
  // The progress as lines, and last the error that failed the stage.
  bool saw_step = false;
  for (const auto& [sequence, text] : delivered) {
    saw_step |= text.find("STEP 40/40") != std::string::npos;
  }
  EXPECT_TRUE(saw_step);
  bool saw_error = false;
  for (const auto& l : done.log_lines()) {
    saw_error |= l.severity() == "ERROR" &&
                 l.text().find("failed: INVALID_ARGUMENT: data.jsonl:3: not a JSON object") !=
                     std::string::npos;
  }
  EXPECT_TRUE(saw_error) << "the completion's lines lack the error";
}

TEST(RendezvousStoreTest, GetStopsWhenCancelled) {
  FakeCoordinatorClient client;
  std::atomic<bool> cancelled{false};
  CoordinatorRendezvousStore store(&client, {"g", "g/ranks/0", "workers/w"},
                                   [&] { return cancelled.load(); }, absl::Milliseconds(20));
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(100));
    cancelled.store(true);
  });
  const absl::Time t0 = absl::Now();
  auto values = store.Get({"never"}, absl::Seconds(30));
  canceller.join();
  EXPECT_EQ(values.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
}

TEST(RendezvousStoreTest, RetriesAnUnavailableCoordinatorUntilTheDeadline) {
  FakeCoordinatorClient client;
  client.SetAvailable(false);
  CoordinatorRendezvousStore store(&client, {"g", "g/ranks/0", "workers/w"}, nullptr,
                                   absl::Milliseconds(20));
  std::thread fixer([&] {
    absl::SleepFor(absl::Milliseconds(200));
    client.SetAvailable(true);
    ASSERT_TRUE(client.StoreSet({"g", "g/ranks/1", "workers/v"}, "k", "v").ok());
  });
  auto values = store.Get({"k"}, absl::Seconds(10));
  fixer.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ((*values)[0], "v");
}

TEST_F(DaemonTest, StopCancelsWithoutReporting) {
  client_.AddAssignment(SourceAssignment("a1"));
  absl::Notification started;
  FakeExecutor executor([&](const AssignmentContext& c) {
    started.Notify();
    return TrainUntilCancelled(c, 100000, absl::Milliseconds(5));
  });
  Start(&executor);
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  daemon_->Stop();
  thread_.join();
  EXPECT_TRUE(run_status_.ok()) << run_status_;
  EXPECT_TRUE(client_.completions().empty());
}

TEST_F(DaemonTest, StopEndsALongPollAtOnce) {
  FakeExecutor executor([](const AssignmentContext& c) { return WriteAdapter(c, "x"); });
  Start(&executor, {}, /*poll_wait=*/absl::Seconds(60));
  while (daemon_->worker_name().empty()) absl::SleepFor(absl::Milliseconds(5));
  absl::SleepFor(absl::Milliseconds(100));  // now inside the long poll
  const absl::Time t0 = absl::Now();
  daemon_->Stop();
  thread_.join();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
}

TEST(DaemonCreateTest, RejectsBadOptions) {
  FakeCoordinatorClient client;
  FakeExecutor executor([](const AssignmentContext&) { return AssignmentOutput(); });
  WorkerDaemonOptions options;
  EXPECT_EQ(WorkerDaemon::Create(options, &client, &executor).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.work_dir = testing::FreshTempDir("create");
  options.poll_wait = absl::ZeroDuration();
  EXPECT_EQ(WorkerDaemon::Create(options, &client, &executor).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mpt
