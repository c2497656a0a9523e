// Helpers for the coordinator tests: a coordinator over an in-memory or
// file-backed store, request builders and worker-side shortcuts that drive
// the core directly (no sockets).
#ifndef MPT_TESTS_SERVER_COORDINATOR_TEST_UTIL_H_
#define MPT_TESTS_SERVER_COORDINATOR_TEST_UTIL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/artifact_store.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "server/job_store.h"
#include "tests/server/test_adapters.h"
#include "tests/server/test_requests.h"
#include "tests/test_util.h"

namespace mpt::testing {

// Where a coordinator keeps its files; ":memory:" as db for a private
// in-memory store.
struct CoordinatorFiles {
  std::string db = ":memory:";
  std::string artifacts;
};

inline CoordinatorFiles FreshFiles(const std::string& name, bool on_disk) {
  CoordinatorFiles files;
  const std::string dir = FreshTempDir(name);
  if (on_disk) files.db = dir + "/jobs.db";
  files.artifacts = dir + "/artifacts";
  return files;
}

inline absl::StatusOr<std::unique_ptr<Coordinator>> OpenCoordinator(
    const CoordinatorFiles& files, std::shared_ptr<Clock> clock,
    CoordinatorOptions options = {}) {
  SqliteJobStoreOptions store_options;
  store_options.synchronous_full = false;  // tests do not survive power loss
  auto store = SqliteJobStore::Open(files.db, store_options);
  if (!store.ok()) return store.status();
  ArtifactStoreOptions blob_options;
  blob_options.fsync = false;
  auto blobs = ArtifactStore::Open(files.artifacts, blob_options);
  if (!blobs.ok()) return blobs.status();
  return Coordinator::Create(options, *std::move(store), *std::move(blobs), std::move(clock));
}


// A SOURCE_TRAINING job of one task.
inline mpt::v1::SubmitJobRequest SourceRequest(const std::string& task, int priority = 0,
                                               const std::string& model = "/models/t5") {
  mpt::v1::SubmitJobRequest r;
  r.set_kind(mpt::v1::SOURCE_TRAINING);
  r.set_priority(priority);
  r.mutable_spec()->set_base_model(model);
  *r.mutable_spec()->mutable_source()->add_tasks() = Task(task);
  r.mutable_spec()->mutable_source()->mutable_train()->set_steps(10);
  return r;
}

// A registered worker's name and key (RegisterWorkerResponse.worker_key).
struct RegisteredWorker {
  std::string name;
  std::string key;
};

inline RegisteredWorker RegisterWithKey(Coordinator* c,
                                        const std::vector<std::string>& models = {},
                                        const std::vector<std::string>& collectives = {}) {
  mpt::v1::Worker w;
  w.set_hostname("test-host");
  w.set_device("cpu");
  for (const auto& m : models) w.add_models(m);
  for (const auto& col : collectives) w.add_collectives(col);
  auto r = c->RegisterWorker(w);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {};
  return {r->name(), r->worker_key()};
}

inline std::string Register(Coordinator* c, const std::vector<std::string>& models = {},
                            const std::vector<std::string>& collectives = {}) {
  return RegisterWithKey(c, models, collectives).name;
}

// A poll that returns at once.
inline std::optional<mpt::v1::Assignment> Poll(Coordinator* c, const std::string& worker) {
  auto r = c->PollAssignment(worker, absl::Now());
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::nullopt;
}

// The worker that holds `assignment` (as ListWorkers shows it), or
// "workers/nobody" when none does.
inline std::string HolderOf(Coordinator* c, const std::string& assignment) {
  const mpt::v1::ListWorkersResponse workers = c->ListWorkers();
  for (const mpt::v1::Worker& w : workers.workers()) {
    for (const std::string& a : w.assignments()) {
      if (a == assignment) return w.name();
    }
  }
  return "workers/nobody";
}

// Uploads as `worker`.
inline absl::StatusOr<mpt::v1::Artifact> UploadAs(Coordinator* c, const std::string& worker,
                                                  const std::string& assignment,
                                                  const std::string& kind,
                                                  const std::string& data, int64_t step = 0) {
  mpt::v1::UploadArtifactRequest::Header h;
  h.set_assignment(assignment);
  h.set_worker(worker);
  h.set_kind(kind);
  h.set_step(step);
  return c->UploadArtifact(h, data, Sha256Hex(data));
}

// Uploads as the worker holding `assignment`.
inline absl::StatusOr<mpt::v1::Artifact> Upload(Coordinator* c, const std::string& assignment,
                                                const std::string& kind,
                                                const std::string& data, int64_t step = 0) {
  return UploadAs(c, HolderOf(c, assignment), assignment, kind, data, step);
}

// Completes as `worker`.
inline absl::Status CompleteAs(Coordinator* c, const std::string& worker,
                               const std::string& assignment, bool ok = true,
                               const std::string& error = "", bool permanent = false) {
  mpt::v1::CompleteAssignmentRequest r;
  r.set_assignment(assignment);
  r.set_worker(worker);
  r.set_ok(ok);
  r.set_error(error);
  r.set_permanent(permanent);
  return c->CompleteAssignment(r);
}

// Completes as the worker holding `assignment` (after a release it names
// "workers/nobody", which is refused: repeat a completion with CompleteAs()).
inline absl::Status Complete(Coordinator* c, const std::string& assignment, bool ok = true,
                             const std::string& error = "", bool permanent = false) {
  return CompleteAs(c, HolderOf(c, assignment), assignment, ok, error, permanent);
}

// A rendezvous-store call from rank `a` of a gang (by default as the
// worker holding it) on `a`'s group.
inline absl::Status StoreSetAs(Coordinator* c, const mpt::v1::Assignment& a, const std::string& key,
                               const std::string& value, const std::string& worker = "") {
  mpt::v1::StoreSetRequest r;
  r.set_group(a.group());
  r.set_assignment(a.id());
  r.set_worker(worker.empty() ? HolderOf(c, a.id()) : worker);
  r.set_key(key);
  r.set_value(value);
  return c->StoreSet(r);
}

inline absl::StatusOr<std::vector<std::string>> StoreGetAs(Coordinator* c,
                                                           const mpt::v1::Assignment& a,
                                                           const std::vector<std::string>& keys,
                                                           absl::Time deadline,
                                                           const std::string& worker = "") {
  mpt::v1::StoreGetRequest r;
  r.set_group(a.group());
  r.set_assignment(a.id());
  r.set_worker(worker.empty() ? HolderOf(c, a.id()) : worker);
  for (const std::string& k : keys) r.add_keys(k);
  return c->StoreGet(r, deadline);
}

// Uploads a valid adapter for `a` and completes it ok.
inline void Finish(Coordinator* c, const mpt::v1::Assignment& a) {
  auto art = Upload(c, a.id(), "adapter", AdapterBlobFor(a));
  ASSERT_TRUE(art.ok()) << art.status();
  ASSERT_TRUE(Complete(c, a.id()).ok());
}

inline const mpt::v1::Stage* FindStage(const mpt::v1::Job& job, const std::string& id) {
  for (const auto& s : job.stages()) {
    if (s.id() == id) return &s;
  }
  return nullptr;
}

inline mpt::v1::JobState StageState(Coordinator* c, const std::string& job,
                                    const std::string& stage) {
  auto j = c->GetJob(job);
  EXPECT_TRUE(j.ok()) << j.status();
  if (!j.ok()) return mpt::v1::JOB_STATE_UNSPECIFIED;
  const mpt::v1::Stage* s = FindStage(*j, stage);
  EXPECT_NE(s, nullptr) << stage;
  return s == nullptr ? mpt::v1::JOB_STATE_UNSPECIFIED : s->state();
}

inline mpt::v1::JobState JobStateOf(Coordinator* c, const std::string& job) {
  auto j = c->GetJob(job);
  EXPECT_TRUE(j.ok()) << j.status();
  return j.ok() ? j->state() : mpt::v1::JOB_STATE_UNSPECIFIED;
}

// Every event of `job` so far.
inline std::vector<mpt::v1::JobEvent> AllEvents(Coordinator* c, const std::string& job) {
  std::vector<mpt::v1::JobEvent> out;
  while (true) {
    auto batch = c->WaitForJobEvents(job, out.empty() ? 0 : out.back().sequence(), absl::Now());
    EXPECT_TRUE(batch.ok()) << batch.status();
    if (!batch.ok() || batch->events.empty()) return out;
    out.insert(out.end(), batch->events.begin(), batch->events.end());
  }
}

inline int CountJobs(Coordinator* c) {
  mpt::v1::ListJobsRequest r;
  r.set_page_size(1000);
  auto page = c->ListJobs(r);
  EXPECT_TRUE(page.ok()) << page.status();
  return page.ok() ? page->jobs_size() : -1;
}

// A coordinator core over its files and a fake clock, rebuilt at will.
class CoordinatorTest : public ::testing::Test {
 protected:
  // A new coordinator on fresh files named `name`.
  void OpenFresh(const std::string& name, bool on_disk, CoordinatorOptions options = {}) {
    files_ = FreshFiles(name, on_disk);
    Reopen(std::move(options));
  }
  // Destroys the coordinator (if any) and builds a new one from the same
  // files, as a restarted process would.
  void Reopen(CoordinatorOptions options = {}) {
    core_.reset();
    auto c = OpenCoordinator(files_, clock_, std::move(options));
    ASSERT_TRUE(c.ok()) << c.status();
    core_ = *std::move(c);
  }
  // Submits `r`, expecting success; the job's name.
  std::string Submit(const mpt::v1::SubmitJobRequest& r) {
    auto job = core_->SubmitJob(r);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->name() : "";
  }

  CoordinatorFiles files_;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::unique_ptr<Coordinator> core_;
};

}  // namespace mpt::testing

#endif  // MPT_TESTS_SERVER_COORDINATOR_TEST_UTIL_H_
