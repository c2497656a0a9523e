// Bounds on what workers send, through the coordinator's core (no
// sockets): RegisterWorker's fields, ReportProgress's and
// CompleteAssignment's progress, messages and errors, the rendezvous store's
// groups and names, uploads checked on their header before any byte and
// capped in size and number, GetStageLogs cursors and repeated completions
// by another worker. Every refusal names its field.
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/coordinator_requests.h"
#include "server/rendezvous_kv.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::AllEvents;
using ::mpt::testing::CompleteAs;
using ::mpt::testing::CoordinatorTest;
using ::mpt::testing::Finish;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::StoreGetAs;
using ::mpt::testing::StoreSetAs;
using ::mpt::testing::UploadAs;

// INVALID_ARGUMENT whose message starts with `field`.
void ExpectRefused(const absl::Status& status, const std::string& field,
                   absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), field)) << status << " (want " << field << ")";
  EXPECT_LT(status.message().size(), 1024u) << "messages stay short";
}

mpt::v1::Worker GoodWorker() {
  mpt::v1::Worker w;
  w.set_hostname("node-1.example.org");
  w.set_device("cuda:0");
  w.set_memory_bytes(int64_t{24} << 30);
  w.add_models("/models/t5");
  w.add_collectives("gloo");
  w.set_max_pack_size(8);
  return w;
}

class BoundsTest : public CoordinatorTest {
 protected:
  void SetUp() override { OpenFresh("bounds", /*on_disk=*/false); }

  // A worker holding a running source assignment of a new job.
  struct Running {
    std::string job;
    std::string worker;
    mpt::v1::Assignment assignment;
  };
  Running Start(const std::string& task = "a") {
    Running r;
    r.job = Submit(SourceRequest(task));
    r.worker = Register(core_.get());
    auto a = Poll(core_.get(), r.worker);
    EXPECT_TRUE(a.has_value());
    if (a.has_value()) r.assignment = *a;
    return r;
  }

  absl::Status Report(const Running& r, const mpt::v1::Progress& progress,
                      const std::string& message = "") {
    mpt::v1::ReportProgressRequest request;
    request.set_assignment(r.assignment.id());
    request.set_worker(r.worker);
    *request.mutable_progress() = progress;
    request.set_message(message);
    clock_->Advance(absl::Seconds(2));  // past the event rate limit
    return core_->ReportProgress(request).status();
  }
};

// ---- RegisterWorker --------------------------------------------------------------

TEST_F(BoundsTest, RegisterWorkerRefusesFieldsOutOfBounds) {
  ASSERT_TRUE(core_->RegisterWorker(GoodWorker()).ok());
  auto refused = [&](auto change, const std::string& field) {
    mpt::v1::Worker w = GoodWorker();
    change(w);
    absl::StatusOr<mpt::v1::RegisterWorkerResponse> r = core_->RegisterWorker(w);
    ExpectRefused(r.status(), field);
  };
  refused([](mpt::v1::Worker& w) { w.set_hostname(std::string(12 << 20, 'h')); },
          "worker.hostname");
  refused([](mpt::v1::Worker& w) { w.set_hostname(std::string(kMaxHostnameBytes + 1, 'h')); },
          "worker.hostname");
  // A newline would forge a line of the coordinator's log.
  refused(
      [](mpt::v1::Worker& w) {
        w.set_hostname("x\nI1130 00:00:00.000 fake.cc:1] forged log line");
      },
      "worker.hostname");
  refused([](mpt::v1::Worker& w) { w.set_hostname("two words"); }, "worker.hostname");
  refused(
      [](mpt::v1::Worker& w) {
        w.clear_models();
        for (int i = 0; i < 10000; ++i) w.add_models(absl::StrCat("/models/m", i));
      },
      "worker.models");
  refused([](mpt::v1::Worker& w) { w.add_models(std::string(kMaxModelNameBytes + 1, 'm')); },
          "worker.models[1]");
  refused([](mpt::v1::Worker& w) { w.add_models("/models/a\nb"); }, "worker.models[1]");
  refused([](mpt::v1::Worker& w) { w.add_models(""); }, "worker.models[1]");
  refused(
      [](mpt::v1::Worker& w) {
        w.clear_models();
        for (int i = 0; i < 200; ++i) w.add_models(std::string(4000, 'm') + std::to_string(i));
      },
      "worker.models");  // 800 KB in all
  refused([](mpt::v1::Worker& w) { w.set_memory_bytes(-5); }, "worker.memory_bytes");
  refused([](mpt::v1::Worker& w) { w.set_max_pack_size(-3); }, "worker.max_pack_size");
  refused([](mpt::v1::Worker& w) { w.set_max_pack_size(1 << 30); }, "worker.max_pack_size");
  refused([](mpt::v1::Worker& w) { w.set_device("cuda:-7"); }, "worker.device");
  refused([](mpt::v1::Worker& w) { w.set_device(std::string(100, 'c')); }, "worker.device");
  refused([](mpt::v1::Worker& w) { w.add_collectives("mpi"); }, "worker.collectives[1]");
  refused(
      [](mpt::v1::Worker& w) {
        for (int i = 0; i < 100; ++i) w.add_collectives("gloo");
      },
      "worker.collectives");
  // Only the good one was stored: ListWorkers stays small.
  const mpt::v1::ListWorkersResponse workers = core_->ListWorkers();
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_LT(workers.ByteSizeLong(), 1024u);
  // What the workers send is accepted: cpu, cuda, an empty device and
  // hostname.
  for (const char* device : {"cpu", "cuda", "cuda:12", ""}) {
    mpt::v1::Worker w = GoodWorker();
    w.set_device(device);
    w.set_hostname("");
    EXPECT_TRUE(core_->RegisterWorker(w).ok()) << device;
  }
}

// ---- ReportProgress and CompleteAssignment ------------------------------------

TEST_F(BoundsTest, ProgressMessagesAreCutAndNonsenseNumbersRefused) {
  const Running r = Start();
  mpt::v1::Progress ok;
  ok.set_step(3);
  ok.set_total_steps(10);
  ok.set_learning_rate(1e-3);
  ok.set_eta_seconds(-1);
  // An 8 MiB message is stored cut, with a marker.
  ASSERT_TRUE(Report(r, ok, std::string(8 << 20, 'm')).ok());
  const std::vector<mpt::v1::JobEvent> events = AllEvents(core_.get(), r.job);
  ASSERT_FALSE(events.empty());
  const std::string& stored = events.back().message();
  EXPECT_LE(stored.size(), kMaxEventMessageBytes + 16);
  EXPECT_TRUE(absl::EndsWith(stored, " [cut]")) << stored.substr(stored.size() - 20);

  auto refused = [&](auto change, const std::string& field) {
    mpt::v1::Progress p = ok;
    change(p);
    ExpectRefused(Report(r, p), field);
  };
  refused([](mpt::v1::Progress& p) { p.set_step(-5); }, "progress.step");
  refused([](mpt::v1::Progress& p) { p.set_step(int64_t{1} << 62); }, "progress.step");
  refused([](mpt::v1::Progress& p) { p.set_total_steps(-1); }, "progress.total_steps");
  refused([](mpt::v1::Progress& p) { p.set_learning_rate(-INFINITY); },
          "progress.learning_rate");
  refused([](mpt::v1::Progress& p) { p.set_learning_rate(NAN); }, "progress.learning_rate");
  refused([](mpt::v1::Progress& p) { p.set_tokens_per_second(INFINITY); },
          "progress.tokens_per_second");
  refused([](mpt::v1::Progress& p) { p.set_eta_seconds(-7); }, "progress.eta_seconds");
  refused([](mpt::v1::Progress& p) { p.set_stage(std::string(1 << 20, 's')); },
          "progress.stage");
  refused([](mpt::v1::Progress& p) { p.set_task(std::string(1 << 20, 't')); }, "progress.task");
  refused(
      [](mpt::v1::Progress& p) {
        for (int i = 0; i < 50000; ++i) (*p.mutable_metrics())[absl::StrCat("m", i)] = i;
      },
      "progress.metrics");
  refused([](mpt::v1::Progress& p) { (*p.mutable_losses())[std::string(5000, 'l')] = 1; },
          "progress.losses");
  refused(
      [](mpt::v1::Progress& p) {
        for (int i = 0; i < 1000; ++i) {
          (*p.mutable_metrics())[absl::StrCat(std::string(1500, 'm'), i)] = i;
        }
      },
      "progress");  // 1.5 MB in all
  // A diverging run's losses are what it computed: accepted.
  mpt::v1::Progress diverged = ok;
  (*diverged.mutable_losses())["loss"] = NAN;
  (*diverged.mutable_metrics())["a/accuracy"] = INFINITY;
  EXPECT_TRUE(Report(r, diverged).ok());
  // Unknown totals (0) take any step; a step at the total is fine.
  mpt::v1::Progress unknown;
  unknown.set_step(7);
  EXPECT_TRUE(Report(r, unknown).ok());
  mpt::v1::Progress last = ok;
  last.set_step(10);
  EXPECT_TRUE(Report(r, last).ok());

  // CompleteAssignment: the same checks on final_progress; a long error is
  // cut.
  mpt::v1::CompleteAssignmentRequest complete;
  complete.set_assignment(r.assignment.id());
  complete.set_worker(r.worker);
  complete.set_ok(true);
  complete.mutable_final_progress()->set_step(-1);
  ExpectRefused(core_->CompleteAssignment(complete), "final_progress.step");
  complete.clear_final_progress();
  complete.set_ok(false);
  complete.set_permanent(true);
  complete.set_error(std::string(1 << 20, 'e'));
  ASSERT_TRUE(core_->CompleteAssignment(complete).ok());
  auto job = core_->GetJob(r.job);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), mpt::v1::FAILED);
  EXPECT_LT(job->error().size(), kMaxErrorBytes + 256);
  EXPECT_TRUE(absl::EndsWith(job->error(), " [cut]"));
}

TEST_F(BoundsTest, ARepeatedCompletionIsOkOnlyForTheWorkerThatHeldIt) {
  const Running r = Start();
  Finish(core_.get(), r.assignment);
  EXPECT_TRUE(CompleteAs(core_.get(), r.worker, r.assignment.id()).ok());
  ExpectRefused(CompleteAs(core_.get(), "workers/nobody", r.assignment.id()), "assignment",
                absl::StatusCode::kFailedPrecondition);
  const std::string other = Register(core_.get());
  ExpectRefused(CompleteAs(core_.get(), other, r.assignment.id(), false, "forged"), "assignment",
                absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(::mpt::testing::JobStateOf(core_.get(), r.job), mpt::v1::SUCCEEDED);
}

// ---- GetStageLogs --------------------------------------------------------------

TEST_F(BoundsTest, StageLogCursorBeyondTheEndIsRefusedAsWatchJobDoes) {
  const Running r = Start();
  mpt::v1::ReportProgressRequest lines;
  lines.set_assignment(r.assignment.id());
  lines.set_worker(r.worker);
  for (int i = 1; i <= 3; ++i) {
    mpt::v1::LogLine* l = lines.add_log_lines();
    l->set_sequence(i);
    l->set_severity("INFO");
    l->set_text(absl::StrCat("line ", i));
  }
  ASSERT_TRUE(core_->ReportProgress(lines).ok());
  mpt::v1::GetStageLogsRequest request;
  request.set_name(r.job);
  request.set_after_line(3);
  auto at_end = core_->GetStageLogs(request);
  ASSERT_TRUE(at_end.ok()) << at_end.status();
  EXPECT_EQ(at_end->last_line(), 3);
  EXPECT_EQ(at_end->lines_size(), 0);
  request.set_after_line(int64_t{1} << 62);
  ExpectRefused(core_->GetStageLogs(request).status(), "after_line");
  request.set_stage("source/a");
  request.set_after_line(4);
  ExpectRefused(core_->GetStageLogs(request).status(), "after_line");
  // The same for a job that logged nothing yet.
  const std::string quiet = Submit(SourceRequest("q"));
  request.set_name(quiet);
  request.set_stage("");
  request.set_after_line(0);
  EXPECT_TRUE(core_->GetStageLogs(request).ok());
  request.set_after_line(1);
  ExpectRefused(core_->GetStageLogs(request).status(), "after_line");
  EXPECT_EQ(core_->WaitForJobEvents(quiet, 1000, absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- The rendezvous store ----------------------------------------------------------

TEST_F(BoundsTest, StoreSetTakesOnlyGroupsOfRunningAttemptsAndBoundedNames) {
  const Running r = Start();
  const std::string group = r.assignment.group();
  ASSERT_FALSE(group.empty());
  auto set = [&](const std::string& g, const std::string& key, const std::string& value) {
    mpt::v1::Assignment a = r.assignment;
    a.set_group(g);
    return StoreSetAs(core_.get(), a, key, value, r.worker);
  };
  auto get = [&](const std::string& g, const std::vector<std::string>& keys) {
    mpt::v1::Assignment a = r.assignment;
    a.set_group(g);
    return StoreGetAs(core_.get(), a, keys, absl::Now(), r.worker).status();
  };
  ASSERT_TRUE(set(group, "rank0", "10.0.0.1:1234").ok());
  // Groups nobody runs are refused: nothing is created.
  ExpectRefused(set("any/forged", "k", "v"), "group", absl::StatusCode::kNotFound);
  ExpectRefused(set(r.job + "/stages/source/a/attempts/7", "k", "v"), "group",
                absl::StatusCode::kNotFound);
  ExpectRefused(set(std::string(10 << 20, 'g'), "k", "v"), "group");
  ExpectRefused(set(group, std::string(10 << 20, 'k'), "v"), "key");
  ExpectRefused(set(group, std::string(RendezvousKv::kMaxKeyBytes + 1, 'k'), "v"), "key");
  ExpectRefused(get(group, {std::string(10 << 20, 'k')}), "keys[0]");
  ExpectRefused(get(std::string(10 << 20, 'g'), {"k"}), "group");
  // A group holds a bounded number of bytes.
  const std::string mib(RendezvousKv::kMaxValueBytes, 'v');
  absl::Status full = absl::OkStatus();
  for (int i = 0; i < 64 && full.ok(); ++i) full = set(group, absl::StrCat("k", i), mib);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;

  // When the attempt ends its group goes, and cannot come back.
  Finish(core_.get(), r.assignment);
  ExpectRefused(get(group, {"rank0"}), "group", absl::StatusCode::kNotFound);
  ExpectRefused(set(group, "rank0", "x"), "group", absl::StatusCode::kNotFound);
}

TEST_F(BoundsTest, TheRendezvousStoreServesOnlyTheAttemptsOwnRanks) {
  const Running r = Start("a");
  const Running other = Start("b");
  // The caller must be named: its rank and its worker.
  mpt::v1::StoreSetRequest request;
  request.set_group(r.assignment.group());
  request.set_key("k");
  request.set_worker(r.worker);
  ExpectRefused(core_->StoreSet(request), "assignment");
  request.set_assignment(r.assignment.id());
  request.clear_worker();
  ExpectRefused(core_->StoreSet(request), "worker");
  // Another worker, with or without an assignment of its own, may neither
  // write nor read the group.
  ExpectRefused(StoreSetAs(core_.get(), r.assignment, "k", "v", other.worker), "assignment",
                absl::StatusCode::kFailedPrecondition);
  ExpectRefused(StoreSetAs(core_.get(), r.assignment, "k", "v", "workers/forged"), "assignment",
                absl::StatusCode::kFailedPrecondition);
  ExpectRefused(
      StoreGetAs(core_.get(), r.assignment, {"k"}, absl::Now(), other.worker).status(),
      "assignment", absl::StatusCode::kFailedPrecondition);
  // A rank of one running attempt may not use another running attempt's group.
  mpt::v1::Assignment crossed = other.assignment;
  crossed.set_group(r.assignment.group());
  ExpectRefused(StoreSetAs(core_.get(), crossed, "k", "v", other.worker), "assignment",
                absl::StatusCode::kFailedPrecondition);
  // An unknown rank of a running group.
  mpt::v1::Assignment unknown = r.assignment;
  unknown.set_id(r.assignment.group() + "/ranks/9");
  ExpectRefused(StoreSetAs(core_.get(), unknown, "k", "v", r.worker), "assignment",
                absl::StatusCode::kNotFound);
  // Nothing was written by the refused calls; the rank itself still may.
  EXPECT_EQ(StoreGetAs(core_.get(), r.assignment, {"k"}, absl::Now(), r.worker).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(StoreSetAs(core_.get(), r.assignment, "k", "v", r.worker).ok());
  auto values = StoreGetAs(core_.get(), r.assignment, {"k"}, absl::Now(), r.worker);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ((*values)[0], "v");
}

// ---- Uploads ---------------------------------------------------------------------------

TEST_F(BoundsTest, UploadsAreCheckedOnTheirHeaderAndBoundedInSizeAndNumber) {
  CoordinatorOptions options;
  options.max_artifact_bytes = 1000;
  options.max_concurrent_uploads = 2;
  OpenFresh("bounds_upload", /*on_disk=*/false, options);
  const Running r = Start();
  const Running s = Start("b");
  mpt::v1::UploadArtifactRequest::Header h;
  h.set_assignment(r.assignment.id());
  h.set_worker(r.worker);
  h.set_kind("checkpoint");
  h.set_step(1);

  // Refused on the header, before any byte.
  mpt::v1::UploadArtifactRequest::Header bad = h;
  bad.clear_worker();
  ExpectRefused(core_->BeginUpload(bad).status(), "header.worker");
  bad = h;
  bad.set_assignment("bogus");
  bad.set_kind("bogus");
  ExpectRefused(core_->BeginUpload(bad).status(), "header.kind");
  bad.set_kind("adapter");
  EXPECT_EQ(core_->BeginUpload(bad).status().code(), absl::StatusCode::kNotFound);
  bad = h;
  bad.set_worker(s.worker);  // not its holder
  EXPECT_EQ(core_->BeginUpload(bad).status().code(), absl::StatusCode::kFailedPrecondition);
  bad.set_step(-1);
  ExpectRefused(core_->BeginUpload(bad).status(), "header.step");

  // The size bound holds as the bytes arrive.
  {
    auto upload = core_->BeginUpload(h);
    ASSERT_TRUE(upload.ok()) << upload.status();
    ASSERT_TRUE((*upload)->Append(std::string(600, 'x')).ok());
    ExpectRefused((*upload)->Append(std::string(600, 'x')), "data");
  }
  // At most max_concurrent_uploads at once, kMaxUploadsPerAssignment for
  // one assignment: UNAVAILABLE, which workers retry.
  {
    auto first = core_->BeginUpload(h);
    auto second = core_->BeginUpload(h);
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_EQ(core_->BeginUpload(h).status().code(), absl::StatusCode::kUnavailable);
    mpt::v1::UploadArtifactRequest::Header of_s = h;
    of_s.set_assignment(s.assignment.id());
    of_s.set_worker(s.worker);
    EXPECT_EQ(core_->BeginUpload(of_s).status().code(), absl::StatusCode::kUnavailable);
    first->reset();
    auto third = core_->BeginUpload(of_s);
    EXPECT_TRUE(third.ok()) << third.status();
  }
  // Abandoned uploads leave no temporary file; a finished one is stored.
  auto upload = core_->BeginUpload(h);
  ASSERT_TRUE(upload.ok());
  const std::string data = "checkpoint bytes";
  ASSERT_TRUE((*upload)->Append(data.substr(0, 5)).ok());
  ASSERT_TRUE((*upload)->Append(data.substr(5)).ok());
  auto stored = core_->FinishUpload(*std::move(upload), Sha256Hex(data));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->size_bytes(), static_cast<int64_t>(data.size()));
  auto read = core_->ReadArtifact(stored->name());
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->data, data);
  EXPECT_TRUE(std::filesystem::is_empty(files_.artifacts + "/tmp"));
  // The whole-buffer call keeps its checks.
  EXPECT_EQ(UploadAs(core_.get(), r.worker, r.assignment.id(), "checkpoint",
                     std::string(1001, 'x'))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mpt
