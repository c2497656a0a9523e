#include "server/coordinator.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/spec/spec_loader.h"
#include "common/spec/stages.h"

namespace mpt {
namespace {

using coordinator::AssignmentRecord;
using coordinator::JobRecord;
using coordinator::StageRecord;
using coordinator::WorkerRecord;
using mpt::v1::JobState;

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr int kMaxEventsPerBatch = 500;
constexpr size_t kMaxReleasedRemembered = 10000;
constexpr size_t kMaxStoreValueBytes = size_t{1} << 20;
constexpr size_t kMaxKeysPerGroup = 4096;
constexpr size_t kMaxGroups = 10000;
constexpr size_t kMaxDisplayNameChars = 1024;
constexpr size_t kMaxRequestIdChars = 256;

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  int64_t seconds = absl::ToUnixSeconds(t);
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
  return ts;
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// "jobs/{id}" with a non-empty id and no further '/'.
absl::Status CheckJobName(absl::string_view name, absl::string_view field = "name") {
  absl::string_view id = name;
  if (!absl::ConsumePrefix(&id, "jobs/") || id.empty() || absl::StrContains(id, '/')) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", name, "\" is not a job name (jobs/{job_id})"));
  }
  return absl::OkStatus();
}

// "jobs/{id}/artifacts/{id}".
absl::Status CheckArtifactName(absl::string_view name, absl::string_view field) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 4 || parts[0] != "jobs" || parts[1].empty() || parts[2] != "artifacts" ||
      parts[3].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": \"", name, "\" is not an artefact name (jobs/{job_id}/artifacts/{artifact_id})"));
  }
  return absl::OkStatus();
}

// The page token: opaque to clients, tied to the filters it was made for.
std::string FilterKey(const mpt::v1::ListJobsRequest& request) {
  std::set<int> states(request.states().begin(), request.states().end());
  std::set<int> kinds(request.kinds().begin(), request.kinds().end());
  return absl::StrCat(absl::StrJoin(states, ","), "/", absl::StrJoin(kinds, ","));
}

std::string MakePageToken(int64_t last_seq, const std::string& filter_key) {
  return absl::WebSafeBase64Escape(absl::StrCat("v1:", last_seq, ":", filter_key));
}

absl::StatusOr<int64_t> ParsePageToken(const std::string& token, const std::string& filter_key) {
  std::string raw;
  const absl::Status bad = absl::InvalidArgumentError(
      "page_token: not a token this service returned (pass next_page_token unchanged)");
  if (!absl::WebSafeBase64Unescape(token, &raw)) return bad;
  std::vector<std::string> parts = absl::StrSplit(raw, absl::MaxSplits(':', 2));
  int64_t seq = 0;
  if (parts.size() != 3 || parts[0] != "v1" || !absl::SimpleAtoi(parts[1], &seq) || seq <= 0) {
    return bad;
  }
  if (parts[2] != filter_key) {
    return absl::InvalidArgumentError(
        "page_token: was made for other filters (states/kinds must stay the same while paging)");
  }
  return seq;
}

bool WorkerCanRun(const mpt::v1::Worker& worker, const std::string& model) {
  if (worker.models().empty()) return true;
  return std::find(worker.models().begin(), worker.models().end(), model) !=
         worker.models().end();
}

bool WorkerSupports(const mpt::v1::Worker& worker, absl::string_view collective) {
  if (worker.collectives().empty()) return collective == "gloo";
  return std::find(worker.collectives().begin(), worker.collectives().end(), collective) !=
         worker.collectives().end();
}

std::string ArtifactId(const std::string& stage_id, const std::string& kind, int attempt,
                       int64_t step) {
  std::string stage = stage_id;
  std::replace(stage.begin(), stage.end(), '/', '-');
  if (kind == "checkpoint") return absl::StrCat(stage, "-checkpoint-", attempt, "-", step);
  return absl::StrCat(stage, "-", kind, "-", attempt);
}

std::string RandomId(absl::BitGen& gen) {
  return absl::StrFormat("%012x", absl::Uniform<uint64_t>(gen, 0, uint64_t{1} << 48));
}

}  // namespace

struct Coordinator::Txn {
  std::set<std::string> jobs;
  std::set<std::pair<std::string, std::string>> stages;  // (job, stage id)
  std::set<std::string> assignments;
  std::set<std::string> deleted_assignments;
  std::set<std::string> workers;
  std::set<std::string> deleted_workers;
  std::vector<mpt::v1::Artifact> artifacts;
  std::vector<std::string> deleted_artifacts;
  std::vector<mpt::v1::JobEvent> events;
  std::vector<std::pair<std::string, std::string>> request_ids;
  // Jobs that reached a final state: they leave memory after the commit.
  std::vector<std::string> finished_jobs;
  // Blob hashes that may have lost their last reference.
  std::vector<std::string> blobs_to_collect;
  // Rendezvous groups of attempts that ended.
  std::vector<std::string> groups_to_erase;
  // Wake waiters even when nothing is written (a cancellation flag, ...).
  bool notify = false;
};

// ---------------------------------------------------------------------------
// Construction, loading and committing

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store,
                         std::unique_ptr<ArtifactStore> artifacts, std::shared_ptr<Clock> clock)
    : options_(options),
      store_(std::move(store)),
      artifacts_(std::move(artifacts)),
      clock_(std::move(clock)) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorOptions options, std::unique_ptr<JobStore> store,
    std::unique_ptr<ArtifactStore> artifacts, std::shared_ptr<Clock> clock) {
  if (store == nullptr || artifacts == nullptr) {
    return absl::InvalidArgumentError("coordinator: a job store and an artifact store are needed");
  }
  std::vector<std::string> problems;
  if (options.heartbeat_interval <= absl::ZeroDuration()) {
    problems.push_back("heartbeat_interval must be > 0");
  }
  if (options.lease <= options.heartbeat_interval) {
    problems.push_back("lease must be longer than heartbeat_interval");
  }
  if (options.max_world_size < 1) problems.push_back("max_world_size must be >= 1");
  if (options.max_attempts < 1) problems.push_back("max_attempts must be >= 1");
  if (options.max_worker_losses < 0) problems.push_back("max_worker_losses must be >= 0");
  if (options.max_artifact_bytes < 1) problems.push_back("max_artifact_bytes must be >= 1");
  if (options.maintenance_interval <= absl::ZeroDuration()) {
    problems.push_back("maintenance_interval must be > 0");
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator options: ", absl::StrJoin(problems, "; ")));
  }
  if (clock == nullptr) clock = std::make_shared<RealClock>();
  std::unique_ptr<Coordinator> c(
      new Coordinator(options, std::move(store), std::move(artifacts), std::move(clock)));
  {
    absl::MutexLock lock(&c->mu_);
    RETURN_IF_ERROR(c->LoadLocked());
  }
  return c;
}

Coordinator::~Coordinator() { Shutdown(); }

void Coordinator::Start() {
  absl::MutexLock lock(&maintenance_mu_);
  if (maintenance_thread_.joinable() || maintenance_stop_) return;
  maintenance_thread_ = std::thread([this] { MaintenanceLoop(); });
}

void Coordinator::Shutdown() {
  {
    absl::MutexLock lock(&maintenance_mu_);
    maintenance_stop_ = true;
  }
  if (maintenance_thread_.joinable()) maintenance_thread_.join();
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    changed_.SignalAll();
    for (auto& [name, job] : jobs_) job->events_changed->SignalAll();
  }
  {
    absl::MutexLock lock(&kv_mu_);
    kv_shutting_down_ = true;
    kv_changed_.SignalAll();
  }
}

void Coordinator::MaintenanceLoop() {
  while (true) {
    {
      absl::MutexLock lock(&maintenance_mu_);
      auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(maintenance_mu_) {
        return maintenance_stop_;
      };
      maintenance_mu_.AwaitWithTimeout(absl::Condition(&stop), options_.maintenance_interval);
      if (maintenance_stop_) return;
    }
    absl::Status s = CheckLeases();
    if (!s.ok()) MPT_LOG(WARNING) << "lease check failed: " << s;
  }
}

absl::Status Coordinator::LoadLocked() {
  ASSIGN_OR_RETURN(StoreSnapshot snap, store_->LoadActive());
  jobs_.clear();
  job_order_.clear();
  workers_.clear();
  worker_order_.clear();
  assignments_.clear();
  const absl::Time now = clock_->Now();

  for (JobRecord& rec : snap.jobs) {
    auto job = std::make_unique<JobEntry>();
    job->rec = std::move(rec);
    JobEntry* raw = job.get();
    job_order_[{-int64_t{raw->rec.job().priority()}, raw->rec.create_seq()}] = raw;
    jobs_[raw->rec.job().name()] = std::move(job);
  }
  for (auto& [job_name, rec] : snap.stages) {
    auto it = jobs_.find(job_name);
    if (it == jobs_.end()) continue;
    StageEntry stage;
    stage.rec = std::move(rec);
    it->second->stages.push_back(std::move(stage));
  }
  for (auto& [name, job] : jobs_) {
    std::sort(job->stages.begin(), job->stages.end(),
              [](const StageEntry& a, const StageEntry& b) {
                return a.rec.index() < b.rec.index();
              });
  }
  next_register_seq_ = 1;
  for (WorkerRecord& rec : snap.workers) {
    const std::string name = rec.worker().name();
    WorkerEntry w;
    w.rec = std::move(rec);
    w.last_seen = now;  // a fresh lease for everyone known
    next_register_seq_ = std::max(next_register_seq_, w.rec.register_seq() + 1);
    worker_order_[w.rec.register_seq()] = name;
    workers_[name] = std::move(w);
  }
  for (AssignmentRecord& rec : snap.assignments) {
    const std::string id = rec.assignment().id();
    assignments_[id] = std::move(rec);
  }
  next_create_seq_ = snap.max_create_seq + 1;

  // Repair what a crash between the writes of two RPCs cannot leave but a
  // damaged or hand-edited store might, and what time did meanwhile.
  Txn txn;
  for (auto& [name, w] : workers_) {
    mpt::v1::Worker* pw = w.rec.mutable_worker();
    std::vector<std::string> kept;
    for (const std::string& id : pw->assignments()) {
      if (assignments_.count(id) > 0) kept.push_back(id);
    }
    if (static_cast<int>(kept.size()) != pw->assignments_size()) {
      pw->clear_assignments();
      for (const std::string& id : kept) pw->add_assignments(id);
      if (pw->state() != "lost") pw->set_state(kept.empty() ? "idle" : "busy");
      txn.workers.insert(name);
    }
  }
  std::vector<std::string> orphans;
  for (const auto& [id, rec] : assignments_) {
    auto it = workers_.find(rec.worker());
    if (it == workers_.end() || it->second.rec.worker().state() == "lost") orphans.push_back(id);
  }
  for (const std::string& id : orphans) {
    AssignmentRecord rec = assignments_[id];
    ReleaseAssignmentLocked(txn, id);
    if (rec.cancelled()) continue;
    JobEntry* job = FindJobLocked(rec.assignment().job());
    if (job == nullptr) continue;
    StageEntry* stage = FindStageLocked(job, rec.assignment().stage());
    if (stage != nullptr && stage->rec.stage().state() == mpt::v1::RUNNING) {
      EndAttemptLocked(txn, job, stage, AttemptEnd::kWorkerLost,
                       absl::StrCat("its worker ", rec.worker(), " is gone"));
    }
  }
  for (auto& [key, job] : job_order_) {
    if (IsFinalState(job->rec.job().state())) continue;
    for (StageEntry& stage : job->stages) {
      if (stage.rec.stage().state() != mpt::v1::RUNNING) continue;
      bool missing = false;
      for (const std::string& id : stage.rec.assignments()) {
        if (!id.empty() && assignments_.count(id) == 0) missing = true;
      }
      if (missing) {
        EndAttemptLocked(txn, job, &stage, AttemptEnd::kWorkerLost,
                         "an assignment of it was lost in a coordinator restart");
      }
    }
    MaybeFinishCancelLocked(txn, job);
  }
  ScheduleLocked(txn);
  return CommitLocked(txn, /*reload_on_failure=*/false);
}

absl::Status Coordinator::CommitLocked(Txn& txn, bool reload_on_failure) {
  StoreWrite w;
  for (const std::string& name : txn.jobs) {
    auto it = jobs_.find(name);
    if (it != jobs_.end()) w.jobs.push_back(it->second->rec);
  }
  for (const auto& [job_name, stage_id] : txn.stages) {
    auto it = jobs_.find(job_name);
    if (it == jobs_.end()) continue;
    for (const StageEntry& s : it->second->stages) {
      if (s.rec.stage().id() == stage_id) w.stages.emplace_back(job_name, s.rec);
    }
  }
  for (const std::string& id : txn.assignments) {
    if (txn.deleted_assignments.count(id) > 0) continue;
    auto it = assignments_.find(id);
    if (it != assignments_.end()) w.assignments.push_back(it->second);
  }
  w.deleted_assignments.assign(txn.deleted_assignments.begin(), txn.deleted_assignments.end());
  for (const std::string& name : txn.workers) {
    auto it = workers_.find(name);
    if (it != workers_.end()) w.workers.push_back(it->second.rec);
  }
  w.deleted_workers.assign(txn.deleted_workers.begin(), txn.deleted_workers.end());
  w.artifacts = txn.artifacts;
  w.deleted_artifacts = txn.deleted_artifacts;
  w.events = txn.events;
  w.request_ids = txn.request_ids;

  absl::Status status = store_->Commit(w);
  if (!status.ok()) {
    MPT_LOG(ERROR) << "job store write failed: " << status
                   << (reload_on_failure ? "; reloading the state from the store" : "");
    if (reload_on_failure) {
      for (auto& [name, job] : jobs_) job->events_changed->SignalAll();
      absl::Status reload = LoadLocked();
      if (!reload.ok()) MPT_LOG(ERROR) << "reloading the state failed: " << reload;
    }
    changed_.SignalAll();
    return status;
  }
  for (const mpt::v1::JobEvent& e : txn.events) {
    auto it = jobs_.find(e.job());
    if (it != jobs_.end()) it->second->events_changed->SignalAll();
  }
  for (const std::string& name : txn.finished_jobs) {
    auto it = jobs_.find(name);
    if (it == jobs_.end()) continue;
    job_order_.erase({-int64_t{it->second->rec.job().priority()}, it->second->rec.create_seq()});
    jobs_.erase(it);
  }
  for (const std::string& group : txn.groups_to_erase) EraseGroup(group);
  for (const std::string& sha : txn.blobs_to_collect) {
    if (uploading_.count(sha) > 0) continue;
    absl::StatusOr<int64_t> refs = store_->CountArtifactsWithSha256(sha);
    if (refs.ok() && *refs == 0) {
      absl::Status removed = artifacts_->Remove(sha);
      if (!removed.ok()) MPT_LOG(WARNING) << "cannot remove blob " << sha << ": " << removed;
    }
  }
  if (txn.notify || !txn.assignments.empty() || !txn.deleted_assignments.empty()) {
    changed_.SignalAll();
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Small helpers

mpt::v1::Job Coordinator::PublicJobLocked(const JobEntry& job) const {
  mpt::v1::Job out = job.rec.job();
  for (const StageEntry& s : job.stages) *out.add_stages() = s.rec.stage();
  return out;
}

Coordinator::JobEntry* Coordinator::FindJobLocked(const std::string& name) {
  auto it = jobs_.find(name);
  return it == jobs_.end() ? nullptr : it->second.get();
}

Coordinator::StageEntry* Coordinator::FindStageLocked(JobEntry* job, const std::string& stage_id) {
  for (StageEntry& s : job->stages) {
    if (s.rec.stage().id() == stage_id) return &s;
  }
  return nullptr;
}

Coordinator::WorkerEntry* Coordinator::FindLiveWorkerLocked(const std::string& name) {
  auto it = workers_.find(name);
  if (it == workers_.end() || it->second.rec.worker().state() == "lost") return nullptr;
  return &it->second;
}

void Coordinator::MarkJobLocked(Txn& txn, JobEntry* job) { txn.jobs.insert(job->rec.job().name()); }

void Coordinator::MarkStageLocked(Txn& txn, JobEntry* job, StageEntry* stage) {
  txn.stages.insert({job->rec.job().name(), stage->rec.stage().id()});
}

void Coordinator::AddEventLocked(Txn& txn, JobEntry* job, const StageEntry* stage,
                                 const std::string& message, const mpt::v1::Progress* progress) {
  mpt::v1::Job* j = job->rec.mutable_job();
  j->set_last_event(j->last_event() + 1);
  mpt::v1::JobEvent e;
  e.set_sequence(j->last_event());
  *e.mutable_time() = ToTimestamp(clock_->Now());
  e.set_job(j->name());
  e.set_state(j->state());
  if (stage != nullptr) {
    e.set_stage(stage->rec.stage().id());
    e.set_stage_state(stage->rec.stage().state());
  }
  if (progress != nullptr) *e.mutable_progress() = *progress;
  e.set_message(message);
  txn.events.push_back(std::move(e));
  MarkJobLocked(txn, job);
}

int Coordinator::LiveAssignmentsOfJobLocked(const std::string& job) const {
  int n = 0;
  for (const auto& [id, rec] : assignments_) {
    if (rec.assignment().job() == job) ++n;
  }
  return n;
}

void Coordinator::EraseGroup(const std::string& group) {
  absl::MutexLock lock(&kv_mu_);
  kv_.erase(group);
}

// ---------------------------------------------------------------------------
// Submission

absl::Status Coordinator::ValidateAndExpand(const mpt::v1::SubmitJobRequest& request,
                                            mpt::v1::PipelineSpec* spec,
                                            std::vector<StageRecord>* stages) {
  std::vector<std::string> problems;
  auto add_status = [&](const absl::Status& s) {
    if (!s.ok()) problems.push_back(std::string(s.message()));
  };
  const mpt::v1::JobKind kind = request.kind();
  if (kind == mpt::v1::JOB_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "kind: required (PIPELINE, SOURCE_TRAINING, DISTILLATION or TARGET_ADAPTATION)");
  }
  if (!mpt::v1::JobKind_IsValid(kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kind: unknown job kind ", static_cast<int>(kind),
        " (PIPELINE, SOURCE_TRAINING, DISTILLATION or TARGET_ADAPTATION)"));
  }
  if (request.display_name().size() > kMaxDisplayNameChars) {
    problems.push_back(
        absl::StrCat("display_name: longer than ", kMaxDisplayNameChars, " characters"));
  }
  if (request.request_id().size() > kMaxRequestIdChars) {
    problems.push_back(
        absl::StrCat("request_id: longer than ", kMaxRequestIdChars, " characters"));
  }

  SpecValidationOptions check;
  check.check_files = options_.check_spec_files;
  *spec = request.spec();
  auto check_base_model = [&]() {
    if (spec->base_model().empty()) {
      problems.push_back("base_model: required (a Hugging Face T5 folder)");
    } else if (options_.check_spec_files) {
      std::error_code ec;
      if (!std::filesystem::is_directory(spec->base_model(), ec)) {
        problems.push_back(
            absl::StrCat("base_model: not a folder: ", spec->base_model()));
      }
    }
  };
  auto check_world_size = [&](int world_size) {
    if (world_size > options_.max_world_size) {
      problems.push_back(absl::StrCat(
          "distillation.world_size: ", world_size, " is more than the ",
          options_.max_world_size,
          " workers a gang may have in this cluster (the coordinator's --max_world_size)"));
    }
  };

  switch (kind) {
    case mpt::v1::PIPELINE:
      ApplyDefaults(spec);
      add_status(ValidatePipelineSpec(*spec, check));
      check_world_size(spec->distillation().world_size());
      break;
    case mpt::v1::SOURCE_TRAINING:
      ApplyDefaults(spec->mutable_prompt());
      ApplyDefaults(spec->mutable_source());
      spec->clear_distillation();
      spec->clear_target();
      check_base_model();
      add_status(ValidatePromptSpec(spec->prompt()));
      add_status(ValidateSourceTrainingSpec(spec->source(), check));
      break;
    case mpt::v1::DISTILLATION: {
      ApplyDefaults(spec->mutable_prompt());
      ApplyDefaults(spec->mutable_distillation());
      spec->clear_source();
      spec->clear_target();
      check_base_model();
      add_status(ValidatePromptSpec(spec->prompt()));
      add_status(ValidateDistillationSpec(spec->distillation(), check));
      check_world_size(spec->distillation().world_size());
      const auto& d = spec->distillation();
      if (d.teacher_adapters_size() != d.tasks_size()) {
        problems.push_back(absl::StrCat(
            "distillation.teacher_adapters: ", d.teacher_adapters_size(), " given for ",
            d.tasks_size(),
            " tasks (a distillation job needs one teacher adapter artefact per task, in order)"));
      }
      for (int i = 0; i < d.teacher_adapters_size(); ++i) {
        add_status(CheckArtifactName(d.teacher_adapters(i),
                                     absl::StrCat("distillation.teacher_adapters[", i, "]")));
      }
      break;
    }
    case mpt::v1::TARGET_ADAPTATION:
      ApplyDefaults(spec->mutable_prompt());
      ApplyDefaults(spec->mutable_target());
      spec->clear_source();
      spec->clear_distillation();
      check_base_model();
      add_status(ValidatePromptSpec(spec->prompt()));
      add_status(ValidateTargetAdaptationSpec(spec->target(), check));
      if (spec->target().source_adapter().empty()) {
        problems.push_back(
            "target.source_adapter: required for a target adaptation job (the artefact of a "
            "distillation, jobs/{job_id}/artifacts/{artifact_id})");
      } else {
        add_status(CheckArtifactName(spec->target().source_adapter(), "target.source_adapter"));
      }
      break;
    default:
      break;
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));

  // Artefacts named by a single-stage spec must exist and be adapters.
  auto check_artifact = [&](const std::string& name,
                            const std::string& field) -> absl::Status {
    ASSIGN_OR_RETURN(std::optional<mpt::v1::Artifact> a, store_->ReadArtifact(name));
    if (!a.has_value()) {
      return absl::NotFoundError(absl::StrCat(field, ": artefact ", name, " does not exist"));
    }
    if (a->kind() != "adapter") {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": artefact ", name, " is a ", a->kind(), ", not an adapter"));
    }
    return absl::OkStatus();
  };
  if (kind == mpt::v1::DISTILLATION) {
    for (int i = 0; i < spec->distillation().teacher_adapters_size(); ++i) {
      RETURN_IF_ERROR(check_artifact(spec->distillation().teacher_adapters(i),
                                     absl::StrCat("distillation.teacher_adapters[", i, "]")));
    }
  }
  if (kind == mpt::v1::TARGET_ADAPTATION) {
    RETURN_IF_ERROR(check_artifact(spec->target().source_adapter(), "target.source_adapter"));
  }

  // Expansion into stages.
  auto add_stage = [&](const std::string& id, mpt::v1::JobKind stage_kind,
                       const std::string& task) -> StageRecord& {
    StageRecord r;
    r.mutable_stage()->set_id(id);
    r.mutable_stage()->set_state(mpt::v1::QUEUED);
    r.mutable_stage()->mutable_progress()->set_stage(std::string(StageKindName(stage_kind)));
    r.mutable_stage()->mutable_progress()->set_task(task);
    r.mutable_stage()->mutable_progress()->set_eta_seconds(-1);
    r.set_index(static_cast<int>(stages->size()));
    r.set_kind(stage_kind);
    r.set_task(task);
    r.set_world_size(1);
    stages->push_back(std::move(r));
    return stages->back();
  };
  if (kind == mpt::v1::PIPELINE || kind == mpt::v1::SOURCE_TRAINING) {
    for (const auto& task : spec->source().tasks()) {
      add_stage(SourceStageId(task.name()), mpt::v1::SOURCE_TRAINING, task.name());
    }
  }
  if (kind == mpt::v1::PIPELINE || kind == mpt::v1::DISTILLATION) {
    StageRecord& d = add_stage(DistillationStageId(), mpt::v1::DISTILLATION, "");
    d.set_world_size(spec->distillation().world_size());
    const auto& dist = spec->distillation();
    for (int i = 0; i < dist.tasks_size(); ++i) {
      if (kind == mpt::v1::PIPELINE) {
        d.add_depends_on(SourceStageId(dist.tasks(i).name()));
      } else {
        mpt::v1::AssignmentInput* in = d.add_inputs();
        in->set_role("teacher");
        in->set_artifact(dist.teacher_adapters(i));
        in->set_task(dist.tasks(i).name());
      }
    }
  }
  if ((kind == mpt::v1::PIPELINE && spec->has_target()) || kind == mpt::v1::TARGET_ADAPTATION) {
    std::vector<std::string> targets;
    if (spec->target().shared()) {
      targets.push_back("");
    } else {
      for (const auto& task : spec->target().tasks()) targets.push_back(task.name());
    }
    for (const std::string& task : targets) {
      StageRecord& t = add_stage(TargetStageId(task),
                                 mpt::v1::TARGET_ADAPTATION, task);
      if (kind == mpt::v1::PIPELINE) {
        t.add_depends_on(DistillationStageId());
      } else {
        mpt::v1::AssignmentInput* in = t.add_inputs();
        in->set_role("source_adapter");
        in->set_artifact(spec->target().source_adapter());
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<mpt::v1::Job> Coordinator::SubmitJob(const mpt::v1::SubmitJobRequest& request) {
  if (!request.request_id().empty()) {
    ASSIGN_OR_RETURN(std::optional<std::string> existing,
                     store_->FindRequestId(request.request_id()));
    if (existing.has_value()) return GetJob(*existing);
  }
  mpt::v1::PipelineSpec spec;
  std::vector<StageRecord> stage_records;
  RETURN_IF_ERROR(ValidateAndExpand(request, &spec, &stage_records));

  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
  if (!request.request_id().empty()) {
    // A concurrent submission with the same key may have won the race.
    ASSIGN_OR_RETURN(std::optional<std::string> existing,
                     store_->FindRequestId(request.request_id()));
    if (existing.has_value()) {
      if (JobEntry* job = FindJobLocked(*existing)) return PublicJobLocked(*job);
      ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> stored, store_->ReadJob(*existing));
      if (stored.has_value()) return *stored;
    }
  }
  std::string name;
  for (int tries = 0;; ++tries) {
    name = absl::StrCat("jobs/", RandomId(random_));
    if (jobs_.count(name) > 0) continue;
    ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> clash, store_->ReadJob(name));
    if (!clash.has_value()) break;
    if (tries > 10) return absl::InternalError("cannot find a free job id");
  }
  auto job = std::make_unique<JobEntry>();
  mpt::v1::Job* j = job->rec.mutable_job();
  j->set_name(name);
  j->set_display_name(request.display_name());
  j->set_kind(request.kind());
  j->set_state(mpt::v1::QUEUED);
  j->set_priority(request.priority());
  *j->mutable_spec() = std::move(spec);
  *j->mutable_create_time() = ToTimestamp(clock_->Now());
  j->mutable_progress()->set_eta_seconds(-1);
  job->rec.set_create_seq(next_create_seq_++);
  for (StageRecord& r : stage_records) {
    StageEntry s;
    s.rec = std::move(r);
    job->stages.push_back(std::move(s));
  }
  JobEntry* raw = job.get();
  jobs_[name] = std::move(job);
  job_order_[{-int64_t{raw->rec.job().priority()}, raw->rec.create_seq()}] = raw;

  Txn txn;
  MarkJobLocked(txn, raw);
  for (StageEntry& s : raw->stages) MarkStageLocked(txn, raw, &s);
  if (!request.request_id().empty()) txn.request_ids.emplace_back(request.request_id(), name);
  AddEventLocked(txn, raw, nullptr,
                 absl::StrCat("submitted: ", mpt::v1::JobKind_Name(request.kind()), " with ",
                              raw->stages.size(), raw->stages.size() == 1 ? " stage" : " stages"));
  ScheduleLocked(txn);
  mpt::v1::Job out = PublicJobLocked(*raw);
  RETURN_IF_ERROR(CommitLocked(txn));
  MPT_LOG(INFO) << "submitted " << name << " (" << mpt::v1::JobKind_Name(request.kind())
                << ", priority " << request.priority() << ", " << out.stages_size()
                << " stages)";
  return out;
}

// ---------------------------------------------------------------------------
// Reading jobs

absl::StatusOr<mpt::v1::Job> Coordinator::GetJob(const std::string& name) {
  RETURN_IF_ERROR(CheckJobName(name));
  {
    absl::MutexLock lock(&mu_);
    if (JobEntry* job = FindJobLocked(name)) return PublicJobLocked(*job);
  }
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> stored, store_->ReadJob(name));
  if (!stored.has_value()) return absl::NotFoundError(absl::StrCat("job ", name, " not found"));
  return *std::move(stored);
}

absl::StatusOr<mpt::v1::ListJobsResponse> Coordinator::ListJobs(
    const mpt::v1::ListJobsRequest& request) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be >= 0, got ", request.page_size()));
  }
  int page_size = request.page_size() == 0 ? kDefaultPageSize : request.page_size();
  page_size = std::min(page_size, kMaxPageSize);
  JobListFilter filter;
  for (int i = 0; i < request.states_size(); ++i) {
    JobState s = request.states(i);
    if (s == mpt::v1::JOB_STATE_UNSPECIFIED || !mpt::v1::JobState_IsValid(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("states[", i, "]: not a job state (", static_cast<int>(s), ")"));
    }
    filter.states.push_back(s);
  }
  for (int i = 0; i < request.kinds_size(); ++i) {
    mpt::v1::JobKind k = request.kinds(i);
    if (k == mpt::v1::JOB_KIND_UNSPECIFIED || !mpt::v1::JobKind_IsValid(k)) {
      return absl::InvalidArgumentError(
          absl::StrCat("kinds[", i, "]: not a job kind (", static_cast<int>(k), ")"));
    }
    filter.kinds.push_back(k);
  }
  const std::string filter_key = FilterKey(request);
  int64_t before = 0;
  if (!request.page_token().empty()) {
    ASSIGN_OR_RETURN(before, ParsePageToken(request.page_token(), filter_key));
  }
  ASSIGN_OR_RETURN(JobPage page, store_->ListJobs(filter, before, page_size));
  mpt::v1::ListJobsResponse response;
  for (mpt::v1::Job& job : page.jobs) *response.add_jobs() = std::move(job);
  if (page.more) response.set_next_page_token(MakePageToken(page.last_seq, filter_key));
  return response;
}

absl::StatusOr<JobEventBatch> Coordinator::WaitForJobEvents(const std::string& name,
                                                            int64_t after_sequence,
                                                            absl::Time deadline) {
  RETURN_IF_ERROR(CheckJobName(name));
  if (after_sequence < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("after_sequence: must be >= 0, got ", after_sequence));
  }
  {
    absl::MutexLock lock(&mu_);
    while (true) {
      JobEntry* job = FindJobLocked(name);
      if (job == nullptr) break;  // finished (or unknown): read the store
      const int64_t last = job->rec.job().last_event();
      if (after_sequence > last) {
        return absl::InvalidArgumentError(absl::StrCat(
            "after_sequence: ", after_sequence, " is beyond the last event of ", name, " (",
            last, ")"));
      }
      if (last > after_sequence) break;
      if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
      if (absl::Now() >= deadline) return JobEventBatch{};
      std::shared_ptr<absl::CondVar> events_changed = job->events_changed;
      events_changed->WaitWithDeadline(&mu_, deadline);
    }
  }
  // The events are committed before the job's last_event moves in memory,
  // so the store has everything seen above.
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> job, store_->ReadJob(name));
  if (!job.has_value()) return absl::NotFoundError(absl::StrCat("job ", name, " not found"));
  if (after_sequence > job->last_event()) {
    return absl::InvalidArgumentError(absl::StrCat("after_sequence: ", after_sequence,
                                                   " is beyond the last event of ", name, " (",
                                                   job->last_event(), ")"));
  }
  JobEventBatch batch;
  ASSIGN_OR_RETURN(batch.events, store_->ReadEvents(name, after_sequence, kMaxEventsPerBatch));
  const int64_t seen = batch.events.empty() ? after_sequence : batch.events.back().sequence();
  batch.done = IsFinalState(job->state()) && seen >= job->last_event();
  return batch;
}

absl::StatusOr<ArtifactContent> Coordinator::ReadArtifact(const std::string& name) {
  RETURN_IF_ERROR(CheckArtifactName(name, "name"));
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Artifact> record, store_->ReadArtifact(name));
  if (!record.has_value()) {
    return absl::NotFoundError(absl::StrCat("artefact ", name, " not found"));
  }
  ArtifactContent content;
  ASSIGN_OR_RETURN(content.data, artifacts_->Get(record->sha256()));
  if (static_cast<int64_t>(content.data.size()) != record->size_bytes()) {
    return absl::DataLossError(absl::StrCat("artefact ", name, ": stored blob has ",
                                            content.data.size(), " bytes, the record says ",
                                            record->size_bytes()));
  }
  content.artifact = *std::move(record);
  return content;
}

mpt::v1::ListWorkersResponse Coordinator::ListWorkers() {
  absl::MutexLock lock(&mu_);
  mpt::v1::ListWorkersResponse response;
  for (const auto& [seq, name] : worker_order_) {
    const WorkerEntry& w = workers_.at(name);
    mpt::v1::Worker* out = response.add_workers();
    *out = w.rec.worker();
    if (out->state() != "lost") *out->mutable_last_heartbeat() = ToTimestamp(w.last_seen);
  }
  return response;
}

// ---------------------------------------------------------------------------
// Cancellation and job endings

absl::StatusOr<mpt::v1::Job> Coordinator::CancelJob(const std::string& name) {
  RETURN_IF_ERROR(CheckJobName(name));
  {
    absl::MutexLock lock(&mu_);
    JobEntry* job = FindJobLocked(name);
    if (job != nullptr) {
      if (job->rec.job().state() == mpt::v1::CANCELLING) return PublicJobLocked(*job);
      Txn txn;
      std::vector<std::string> running;
      for (StageEntry& s : job->stages) {
        if (s.rec.stage().state() != mpt::v1::RUNNING) continue;
        for (const std::string& id : s.rec.assignments()) {
          if (!id.empty() && assignments_.count(id) > 0) running.push_back(id);
        }
      }
      if (running.empty() && LiveAssignmentsOfJobLocked(name) == 0) {
        FinishJobLocked(txn, job, mpt::v1::CANCELLED, "");
      } else {
        job->rec.mutable_job()->set_state(mpt::v1::CANCELLING);
        for (StageEntry& s : job->stages) {
          JobState st = s.rec.stage().state();
          if (st == mpt::v1::QUEUED) {
            s.rec.mutable_stage()->set_state(mpt::v1::CANCELLED);
            MarkStageLocked(txn, job, &s);
          } else if (st == mpt::v1::RUNNING) {
            s.rec.mutable_stage()->set_state(mpt::v1::CANCELLING);
            MarkStageLocked(txn, job, &s);
          }
        }
        for (const auto& [id, rec] : assignments_) {
          if (rec.assignment().job() == name && !rec.cancelled()) running.push_back(id);
        }
        for (const std::string& id : running) CancelAssignmentLocked(txn, id);
        AddEventLocked(txn, job, nullptr,
                       "cancellation requested; waiting for running assignments to stop");
      }
      mpt::v1::Job out = PublicJobLocked(*job);
      ScheduleLocked(txn);
      RETURN_IF_ERROR(CommitLocked(txn));
      MPT_LOG(INFO) << "cancel " << name << ": now " << mpt::v1::JobState_Name(out.state());
      return out;
    }
  }
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> stored, store_->ReadJob(name));
  if (!stored.has_value()) return absl::NotFoundError(absl::StrCat("job ", name, " not found"));
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", name, " is already ", mpt::v1::JobState_Name(stored->state()),
      "; only unfinished jobs can be cancelled"));
}

void Coordinator::FinishJobLocked(Txn& txn, JobEntry* job, JobState state,
                                  const std::string& error) {
  mpt::v1::Job* j = job->rec.mutable_job();
  if (IsFinalState(j->state())) return;
  for (StageEntry& s : job->stages) {
    JobState st = s.rec.stage().state();
    if (IsFinalState(st)) continue;
    for (const std::string& id : s.rec.assignments()) {
      if (!id.empty() && assignments_.count(id) > 0) CancelAssignmentLocked(txn, id);
    }
    if (!s.rec.group().empty()) txn.groups_to_erase.push_back(s.rec.group());
    s.rec.clear_assignments();
    s.rec.set_completed_ranks(0);
    s.rec.clear_group();
    s.rec.mutable_stage()->clear_workers();
    s.rec.mutable_stage()->set_state(mpt::v1::CANCELLED);
    MarkStageLocked(txn, job, &s);
  }
  std::vector<std::string> still_running;
  for (const auto& [id, rec] : assignments_) {
    if (rec.assignment().job() == j->name() && !rec.cancelled()) still_running.push_back(id);
  }
  for (const std::string& id : still_running) CancelAssignmentLocked(txn, id);
  j->set_state(state);
  j->set_error(error);
  *j->mutable_end_time() = ToTimestamp(clock_->Now());
  std::string message;
  switch (state) {
    case mpt::v1::SUCCEEDED:
      message = "job succeeded";
      break;
    case mpt::v1::FAILED:
      message = absl::StrCat("job failed: ", error);
      break;
    default:
      message = "job cancelled";
      break;
  }
  AddEventLocked(txn, job, nullptr, message);
  txn.finished_jobs.push_back(j->name());
  txn.notify = true;
  MPT_LOG(INFO) << j->name() << ": " << message;
}

void Coordinator::MaybeFinishCancelLocked(Txn& txn, JobEntry* job) {
  if (job->rec.job().state() != mpt::v1::CANCELLING) return;
  if (LiveAssignmentsOfJobLocked(job->rec.job().name()) > 0) return;
  FinishJobLocked(txn, job, mpt::v1::CANCELLED, "");
}

void Coordinator::CancelAssignmentLocked(Txn& txn, const std::string& id) {
  auto it = assignments_.find(id);
  if (it == assignments_.end() || it->second.cancelled()) return;
  it->second.set_cancelled(true);
  txn.assignments.insert(id);
  txn.notify = true;
}

void Coordinator::ReleaseAssignmentLocked(Txn& txn, const std::string& id) {
  auto it = assignments_.find(id);
  if (it == assignments_.end()) return;
  const AssignmentRecord rec = std::move(it->second);
  assignments_.erase(it);
  txn.deleted_assignments.insert(id);
  txn.notify = true;
  if (released_.insert(id).second) {
    released_order_.push_back(id);
    if (released_order_.size() > kMaxReleasedRemembered) {
      const size_t drop = released_order_.size() / 2;
      for (size_t i = 0; i < drop; ++i) released_.erase(released_order_[i]);
      released_order_.erase(released_order_.begin(), released_order_.begin() + drop);
    }
  }
  auto w = workers_.find(rec.worker());
  if (w != workers_.end()) {
    mpt::v1::Worker* pw = w->second.rec.mutable_worker();
    auto* list = pw->mutable_assignments();
    auto pos = std::find(list->begin(), list->end(), id);
    if (pos != list->end()) {
      list->erase(pos);
      if (pw->state() != "lost") pw->set_state(list->empty() ? "idle" : "busy");
      txn.workers.insert(rec.worker());
    }
  }
  if (JobEntry* job = FindJobLocked(rec.assignment().job())) MaybeFinishCancelLocked(txn, job);
}

void Coordinator::DropArtifactLocked(Txn& txn, JobEntry* job, const std::string& name) {
  auto* list = job->rec.mutable_job()->mutable_artifacts();
  for (int i = 0; i < list->size(); ++i) {
    if (list->Get(i).name() != name) continue;
    txn.blobs_to_collect.push_back(list->Get(i).sha256());
    list->DeleteSubrange(i, 1);
    break;
  }
  txn.deleted_artifacts.push_back(name);
  MarkJobLocked(txn, job);
}

void Coordinator::EndAttemptLocked(Txn& txn, JobEntry* job, StageEntry* stage, AttemptEnd how,
                                   const std::string& reason) {
  if (IsFinalState(job->rec.job().state()) || job->rec.job().state() == mpt::v1::CANCELLING) return;
  StageRecord& r = stage->rec;
  for (const std::string& id : r.assignments()) {
    if (!id.empty()) CancelAssignmentLocked(txn, id);
  }
  if (!r.group().empty()) txn.groups_to_erase.push_back(r.group());
  if (!r.adapter().empty()) DropArtifactLocked(txn, job, r.adapter());
  r.clear_assignments();
  r.set_completed_ranks(0);
  r.clear_group();
  r.clear_collective();
  r.clear_adapter();
  r.mutable_stage()->clear_workers();
  MarkStageLocked(txn, job, stage);
  const std::string& id = r.stage().id();
  const std::string resume =
      r.checkpoint().empty() ? "from the start"
                             : absl::StrCat("from its checkpoint at step ", r.checkpoint_step());

  if (how == AttemptEnd::kWorkerLost) {
    r.set_losses(r.losses() + 1);
    if (r.losses() > options_.max_worker_losses) {
      const std::string error = absl::StrCat("stage ", id, " lost its worker ", r.losses(),
                                             " times; the last time ", reason);
      r.mutable_stage()->set_state(mpt::v1::FAILED);
      r.mutable_stage()->set_error(error);
      AddEventLocked(txn, job, stage, error);
      FinishJobLocked(txn, job, mpt::v1::FAILED, error);
      return;
    }
    r.mutable_stage()->set_state(mpt::v1::QUEUED);
    AddEventLocked(txn, job, stage,
                   absl::StrCat("requeued because ", reason, "; resumes ", resume));
    return;
  }
  r.set_failures(r.failures() + 1);
  r.mutable_stage()->set_error(reason);
  const bool give_up =
      how == AttemptEnd::kFailedPermanently || r.failures() >= options_.max_attempts;
  if (give_up) {
    const std::string error =
        how == AttemptEnd::kFailedPermanently
            ? absl::StrCat("stage ", id, " failed: ", reason)
            : absl::StrCat("stage ", id, " failed ", r.failures(),
                           r.failures() == 1 ? " time: " : " times; last error: ", reason);
    r.mutable_stage()->set_state(mpt::v1::FAILED);
    AddEventLocked(txn, job, stage, error);
    FinishJobLocked(txn, job, mpt::v1::FAILED, error);
    return;
  }
  r.mutable_stage()->set_state(mpt::v1::QUEUED);
  AddEventLocked(txn, job, stage,
                 absl::StrCat("attempt ", r.stage().attempts(), " failed: ", reason,
                              "; retrying (", r.failures(), " of ", options_.max_attempts,
                              " failures) ", resume));
}

void Coordinator::StageSucceededLocked(Txn& txn, JobEntry* job, StageEntry* stage) {
  StageRecord& r = stage->rec;
  if (!r.group().empty()) txn.groups_to_erase.push_back(r.group());
  r.mutable_stage()->set_state(mpt::v1::SUCCEEDED);
  r.mutable_stage()->set_artifact(r.adapter());
  r.mutable_stage()->clear_error();
  r.mutable_stage()->clear_workers();
  r.clear_adapter();
  r.clear_assignments();
  r.clear_group();
  r.clear_collective();
  // The stage will not resume again: its checkpoint is no longer needed.
  if (!r.checkpoint().empty()) {
    DropArtifactLocked(txn, job, r.checkpoint());
    r.clear_checkpoint();
    r.set_checkpoint_step(0);
  }
  MarkStageLocked(txn, job, stage);
  AddEventLocked(txn, job, stage, absl::StrCat("stage succeeded: ", r.stage().artifact()));
  for (const StageEntry& s : job->stages) {
    if (s.rec.stage().state() != mpt::v1::SUCCEEDED) return;
  }
  FinishJobLocked(txn, job, mpt::v1::SUCCEEDED, "");
}

// ---------------------------------------------------------------------------
// Scheduling

bool Coordinator::StageReadyLocked(const JobEntry& job, const StageEntry& stage) const {
  if (stage.rec.stage().state() != mpt::v1::QUEUED) return false;
  for (const std::string& dep : stage.rec.depends_on()) {
    bool done = false;
    for (const StageEntry& s : job.stages) {
      if (s.rec.stage().id() == dep) done = s.rec.stage().state() == mpt::v1::SUCCEEDED;
    }
    if (!done) return false;
  }
  return true;
}

void Coordinator::ScheduleLocked(Txn& txn) {
  if (shutting_down_) return;
  std::vector<WorkerEntry*> idle;
  for (const auto& [seq, name] : worker_order_) {
    WorkerEntry& w = workers_.at(name);
    if (w.rec.worker().state() != "lost" && w.rec.worker().assignments().empty()) {
      idle.push_back(&w);
    }
  }
  for (auto& [key, job] : job_order_) {
    if (idle.empty()) return;
    const JobState js = job->rec.job().state();
    if (js != mpt::v1::QUEUED && js != mpt::v1::RUNNING) continue;
    const std::string& model = job->rec.job().spec().base_model();
    for (StageEntry& stage : job->stages) {
      if (idle.empty()) return;
      if (!StageReadyLocked(*job, stage)) continue;
      const int world = std::max(1, stage.rec.world_size());
      if (world == 1) {
        auto it = std::find_if(idle.begin(), idle.end(), [&](WorkerEntry* w) {
          return WorkerCanRun(w->rec.worker(), model);
        });
        if (it == idle.end()) continue;
        WorkerEntry* w = *it;
        idle.erase(it);
        StartStageLocked(txn, job, &stage, {w}, "");
        continue;
      }
      // A gang: W idle workers that can run the model and share a collective.
      bool started = false;
      std::string hold_collective;
      int best_live = 0;
      for (const char* collective : {"nccl", "gloo"}) {
        std::vector<WorkerEntry*> members;
        for (WorkerEntry* w : idle) {
          if (WorkerCanRun(w->rec.worker(), model) && WorkerSupports(w->rec.worker(), collective)) {
            members.push_back(w);
          }
        }
        if (static_cast<int>(members.size()) >= world) {
          members.resize(world);
          for (WorkerEntry* m : members) idle.erase(std::find(idle.begin(), idle.end(), m));
          StartStageLocked(txn, job, &stage, members, collective);
          started = true;
          break;
        }
        int live = 0;
        for (const auto& [name, w] : workers_) {
          if (w.rec.worker().state() != "lost" && WorkerCanRun(w.rec.worker(), model) &&
              WorkerSupports(w.rec.worker(), collective)) {
            ++live;
          }
        }
        if (live > best_live) {
          best_live = live;
          hold_collective = collective;
        }
      }
      if (started) continue;
      if (best_live >= world) {
        // Hold the idle workers this gang will use once the busy ones free up.
        int held = 0;
        for (auto it = idle.begin(); it != idle.end() && held < world;) {
          if (WorkerCanRun((*it)->rec.worker(), model) &&
              WorkerSupports((*it)->rec.worker(), hold_collective)) {
            it = idle.erase(it);
            ++held;
          } else {
            ++it;
          }
        }
      } else if (!job->gang_note_sent) {
        job->gang_note_sent = true;
        AddEventLocked(txn, job, &stage,
                       absl::StrCat("waiting for ", world, " workers that can run ", model,
                                    " together; ", best_live,
                                    best_live == 1 ? " is" : " are",
                                    " registered (other jobs run meanwhile)"));
      }
    }
  }
}

void Coordinator::StartStageLocked(Txn& txn, JobEntry* job, StageEntry* stage,
                                   const std::vector<WorkerEntry*>& workers,
                                   const std::string& collective) {
  StageRecord& r = stage->rec;
  mpt::v1::Job* j = job->rec.mutable_job();
  const int attempt = r.stage().attempts() + 1;
  const int world = static_cast<int>(workers.size());
  const std::string group =
      absl::StrCat(j->name(), "/stages/", r.stage().id(), "/attempts/", attempt);

  std::vector<mpt::v1::AssignmentInput> inputs(r.inputs().begin(), r.inputs().end());
  for (const std::string& dep : r.depends_on()) {
    for (const StageEntry& s : job->stages) {
      if (s.rec.stage().id() != dep) continue;
      mpt::v1::AssignmentInput in;
      if (s.rec.kind() == mpt::v1::SOURCE_TRAINING) {
        in.set_role("teacher");
        in.set_task(s.rec.task());
      } else {
        in.set_role("source_adapter");
      }
      in.set_artifact(s.rec.stage().artifact());
      inputs.push_back(std::move(in));
    }
  }
  if (!r.checkpoint().empty()) {
    mpt::v1::AssignmentInput in;
    in.set_role("checkpoint");
    in.set_artifact(r.checkpoint());
    in.set_task(r.task());
    inputs.push_back(std::move(in));
  }

  r.clear_assignments();
  r.mutable_stage()->clear_workers();
  for (int rank = 0; rank < world; ++rank) {
    WorkerEntry* w = workers[rank];
    AssignmentRecord rec;
    mpt::v1::Assignment* a = rec.mutable_assignment();
    a->set_id(absl::StrCat(group, "/ranks/", rank));
    a->set_job(j->name());
    a->set_stage(r.stage().id());
    a->set_stage_kind(r.kind());
    *a->mutable_spec() = j->spec();
    a->set_task(r.task());
    for (const auto& in : inputs) *a->add_inputs() = in;
    a->set_rank(rank);
    a->set_world_size(world);
    a->set_group(group);
    a->set_collective(collective);
    rec.set_worker(w->rec.worker().name());
    *rec.mutable_create_time() = ToTimestamp(clock_->Now());
    const std::string id = a->id();
    assignments_[id] = std::move(rec);
    txn.assignments.insert(id);
    mpt::v1::Worker* pw = w->rec.mutable_worker();
    pw->add_assignments(id);
    pw->set_state("busy");
    txn.workers.insert(pw->name());
    r.add_assignments(id);
    r.mutable_stage()->add_workers(pw->name());
  }
  r.set_completed_ranks(0);
  r.set_group(group);
  r.set_collective(collective);
  r.clear_adapter();
  r.mutable_stage()->set_attempts(attempt);
  r.mutable_stage()->set_state(mpt::v1::RUNNING);
  MarkStageLocked(txn, job, stage);
  if (j->state() == mpt::v1::QUEUED) {
    j->set_state(mpt::v1::RUNNING);
    *j->mutable_start_time() = ToTimestamp(clock_->Now());
    MarkJobLocked(txn, job);
  }
  job->gang_note_sent = false;
  AddEventLocked(txn, job, stage,
                 absl::StrCat("started attempt ", attempt, " on ",
                              absl::StrJoin(r.stage().workers(), ", "),
                              r.checkpoint().empty()
                                  ? ""
                                  : absl::StrCat(" from step ", r.checkpoint_step())));
  txn.notify = true;
}

// ---------------------------------------------------------------------------
// Workers

absl::StatusOr<mpt::v1::RegisterWorkerResponse> Coordinator::RegisterWorker(
    const mpt::v1::Worker& worker) {
  for (int i = 0; i < worker.collectives_size(); ++i) {
    const std::string& c = worker.collectives(i);
    if (c != "gloo" && c != "nccl") {
      return absl::InvalidArgumentError(absl::StrCat(
          "worker.collectives[", i, "]: unknown collective \"", c, "\" (gloo or nccl)"));
    }
  }
  for (int i = 0; i < worker.models_size(); ++i) {
    if (worker.models(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("worker.models[", i, "]: empty"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
  std::string name;
  do {
    name = absl::StrCat("workers/", RandomId(random_));
  } while (workers_.count(name) > 0);
  WorkerEntry w;
  mpt::v1::Worker* pw = w.rec.mutable_worker();
  *pw = worker;
  pw->set_name(name);
  pw->set_state("idle");
  pw->clear_assignments();
  const absl::Time now = clock_->Now();
  *pw->mutable_last_heartbeat() = ToTimestamp(now);
  w.rec.set_register_seq(next_register_seq_++);
  w.last_seen = now;
  worker_order_[w.rec.register_seq()] = name;
  workers_[name] = std::move(w);

  Txn txn;
  txn.workers.insert(name);
  ScheduleLocked(txn);
  RETURN_IF_ERROR(CommitLocked(txn));
  MPT_LOG(INFO) << "registered " << name << " (" << worker.hostname() << ", "
                << (worker.device().empty() ? "?" : worker.device()) << ")";
  mpt::v1::RegisterWorkerResponse response;
  response.set_name(name);
  response.set_heartbeat_seconds(absl::ToDoubleSeconds(options_.heartbeat_interval));
  response.set_lease_seconds(absl::ToDoubleSeconds(options_.lease));
  return response;
}

namespace {
absl::Status UnknownWorker(const std::string& name) {
  return absl::NotFoundError(absl::StrCat(
      "worker ", name, " is not registered (or was declared lost): register again"));
}
}  // namespace

absl::StatusOr<mpt::v1::HeartbeatResponse> Coordinator::Heartbeat(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  WorkerEntry* w = FindLiveWorkerLocked(worker);
  if (w == nullptr) return UnknownWorker(worker);
  w->last_seen = clock_->Now();
  mpt::v1::HeartbeatResponse response;
  for (const std::string& id : w->rec.worker().assignments()) {
    auto it = assignments_.find(id);
    if (it != assignments_.end() && it->second.cancelled()) {
      response.add_cancelled_assignments(id);
    }
  }
  return response;
}

absl::StatusOr<std::optional<mpt::v1::Assignment>> Coordinator::PollAssignment(
    const std::string& worker, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  WorkerEntry* w = FindLiveWorkerLocked(worker);
  if (w == nullptr) return UnknownWorker(worker);
  ++w->active_polls;
  auto done_polling = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = workers_.find(worker);
    if (it != workers_.end()) {
      --it->second.active_polls;
      it->second.last_seen = clock_->Now();
    }
  };
  while (true) {
    w = FindLiveWorkerLocked(worker);
    if (w == nullptr) {
      done_polling();
      return UnknownWorker(worker);
    }
    w->last_seen = clock_->Now();
    // Polling means the worker stopped whatever was cancelled.
    std::vector<std::string> stale;
    for (const std::string& id : w->rec.worker().assignments()) {
      auto it = assignments_.find(id);
      if (it != assignments_.end() && it->second.cancelled()) stale.push_back(id);
    }
    if (!stale.empty()) {
      Txn txn;
      for (const std::string& id : stale) ReleaseAssignmentLocked(txn, id);
      ScheduleLocked(txn);
      absl::Status s = CommitLocked(txn);
      if (!s.ok()) {
        done_polling();
        return s;
      }
      continue;  // the commit may have reloaded the state
    }
    for (const std::string& id : w->rec.worker().assignments()) {
      auto it = assignments_.find(id);
      if (it != assignments_.end() && !it->second.cancelled()) {
        done_polling();
        return std::optional<mpt::v1::Assignment>(it->second.assignment());
      }
    }
    if (shutting_down_) {
      done_polling();
      return absl::UnavailableError("coordinator is shutting down");
    }
    if (absl::Now() >= deadline) {
      done_polling();
      return std::optional<mpt::v1::Assignment>();
    }
    changed_.WaitWithDeadline(&mu_, deadline);
  }
}

namespace {
absl::Status UnknownAssignment(const std::string& id) {
  return absl::NotFoundError(absl::StrCat(
      "assignment ", id,
      " not found (it ended, or its worker was declared lost and it was requeued)"));
}
}  // namespace

absl::StatusOr<mpt::v1::ReportProgressResponse> Coordinator::ReportProgress(
    const mpt::v1::ReportProgressRequest& request) {
  if (request.assignment().empty()) return absl::InvalidArgumentError("assignment: required");
  absl::MutexLock lock(&mu_);
  auto it = assignments_.find(request.assignment());
  if (it == assignments_.end()) return UnknownAssignment(request.assignment());
  const AssignmentRecord& rec = it->second;
  auto w = workers_.find(rec.worker());
  if (w != workers_.end() && w->second.rec.worker().state() != "lost") {
    w->second.last_seen = clock_->Now();
  }
  mpt::v1::ReportProgressResponse response;
  if (rec.cancelled()) {
    response.set_cancelled(true);
    return response;
  }
  JobEntry* job = FindJobLocked(rec.assignment().job());
  StageEntry* stage = job == nullptr ? nullptr : FindStageLocked(job, rec.assignment().stage());
  if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) {
    response.set_cancelled(true);
    return response;
  }
  if (rec.assignment().rank() != 0) return response;  // rank 0 speaks for the gang

  mpt::v1::Progress progress = request.progress();
  if (progress.stage().empty()) progress.set_stage(std::string(StageKindName(stage->rec.kind())));
  if (progress.task().empty()) progress.set_task(stage->rec.task());
  *stage->rec.mutable_stage()->mutable_progress() = progress;
  *job->rec.mutable_job()->mutable_progress() = progress;

  const absl::Time now = clock_->Now();
  const absl::Duration since = now - stage->last_progress_event;
  const bool notable = !progress.metrics().empty() || !request.message().empty() ||
                       (progress.total_steps() > 0 && progress.step() >= progress.total_steps());
  if (since >= options_.progress_event_interval ||
      (notable && since >= options_.progress_event_interval / 10)) {
    stage->last_progress_event = now;
    Txn txn;
    MarkStageLocked(txn, job, stage);
    AddEventLocked(txn, job, stage, request.message(), &progress);
    RETURN_IF_ERROR(CommitLocked(txn));
  }
  return response;
}

absl::StatusOr<mpt::v1::Artifact> Coordinator::UploadArtifact(
    const mpt::v1::UploadArtifactRequest::Header& header, absl::string_view data,
    absl::string_view sha256) {
  const std::string& id = header.assignment();
  if (id.empty()) return absl::InvalidArgumentError("header.assignment: required");
  if (header.kind() != "adapter" && header.kind() != "checkpoint") {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.kind: \"", header.kind(), "\" is not an artefact kind (adapter or checkpoint)"));
  }
  if (header.step() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.step: must be >= 0, got ", header.step()));
  }
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        "sha256: required on the last message, as 64 hexadecimal digits");
  }
  if (static_cast<int64_t>(data.size()) > options_.max_artifact_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(),
                                                   " bytes is more than the coordinator accepts (",
                                                   options_.max_artifact_bytes, ")"));
  }
  const std::string expected = absl::AsciiStrToLower(sha256);
  auto check_running = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    auto it = assignments_.find(id);
    if (it == assignments_.end()) return UnknownAssignment(id);
    if (it->second.cancelled()) {
      return absl::FailedPreconditionError(
          absl::StrCat("assignment ", id, " was cancelled; its artefacts are not wanted"));
    }
    return absl::OkStatus();
  };
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(check_running());
    ++uploading_[expected];
  }
  absl::StatusOr<std::string> put = artifacts_->Put(data, expected);

  absl::MutexLock lock(&mu_);
  auto done_uploading = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (--uploading_[expected] == 0) uploading_.erase(expected);
  };
  if (!put.ok()) {
    done_uploading();
    return put.status();
  }
  Txn txn;
  absl::Status running = check_running();
  JobEntry* job = nullptr;
  StageEntry* stage = nullptr;
  if (running.ok()) {
    const AssignmentRecord& rec = assignments_.at(id);
    job = FindJobLocked(rec.assignment().job());
    stage = job == nullptr ? nullptr : FindStageLocked(job, rec.assignment().stage());
    if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) {
      running = absl::FailedPreconditionError(
          absl::StrCat("assignment ", id, " no longer runs"));
    }
  }
  if (!running.ok()) {
    done_uploading();
    txn.blobs_to_collect.push_back(expected);
    (void)CommitLocked(txn);
    return running;
  }
  const AssignmentRecord& rec = assignments_.at(id);
  if (auto w = workers_.find(rec.worker()); w != workers_.end()) {
    w->second.last_seen = clock_->Now();
  }
  StageRecord& r = stage->rec;
  mpt::v1::Artifact artifact;
  artifact.set_name(absl::StrCat(job->rec.job().name(), "/artifacts/",
                                 ArtifactId(r.stage().id(), header.kind(), r.stage().attempts(),
                                            header.step())));
  artifact.set_kind(header.kind());
  artifact.set_stage(r.stage().id());
  artifact.set_sha256(*put);
  artifact.set_size_bytes(static_cast<int64_t>(data.size()));
  *artifact.mutable_create_time() = ToTimestamp(clock_->Now());

  std::string replaced = header.kind() == "adapter" ? r.adapter() : r.checkpoint();
  if (!replaced.empty() && replaced != artifact.name()) DropArtifactLocked(txn, job, replaced);
  if (header.kind() == "adapter") {
    r.set_adapter(artifact.name());
  } else {
    r.set_checkpoint(artifact.name());
    r.set_checkpoint_step(header.step());
  }
  auto* list = job->rec.mutable_job()->mutable_artifacts();
  bool found = false;
  for (auto& a : *list) {
    if (a.name() == artifact.name()) {
      txn.blobs_to_collect.push_back(a.sha256());
      a = artifact;
      found = true;
    }
  }
  if (!found) *list->Add() = artifact;
  txn.artifacts.push_back(artifact);
  MarkJobLocked(txn, job);
  MarkStageLocked(txn, job, stage);
  absl::Status committed = CommitLocked(txn);
  done_uploading();
  RETURN_IF_ERROR(committed);
  return artifact;
}

absl::Status Coordinator::CompleteAssignment(const mpt::v1::CompleteAssignmentRequest& request) {
  const std::string& id = request.assignment();
  if (id.empty()) return absl::InvalidArgumentError("assignment: required");
  absl::MutexLock lock(&mu_);
  auto it = assignments_.find(id);
  if (it == assignments_.end()) {
    if (released_.count(id) > 0) return absl::OkStatus();  // a repeated call
    return UnknownAssignment(id);
  }
  const AssignmentRecord rec = it->second;
  if (auto w = workers_.find(rec.worker()); w != workers_.end()) {
    w->second.last_seen = clock_->Now();
  }
  JobEntry* job = FindJobLocked(rec.assignment().job());
  StageEntry* stage = job == nullptr ? nullptr : FindStageLocked(job, rec.assignment().stage());
  const int rank = rec.assignment().rank();
  const bool current = !rec.cancelled() && stage != nullptr &&
                       stage->rec.stage().state() == mpt::v1::RUNNING &&
                       rank < stage->rec.assignments_size() &&
                       stage->rec.assignments(rank) == id;
  Txn txn;
  ReleaseAssignmentLocked(txn, id);
  if (current) {
    if (request.ok()) {
      if (rank == 0 && request.has_final_progress()) {
        mpt::v1::Progress progress = request.final_progress();
        if (progress.stage().empty()) progress.set_stage(std::string(StageKindName(stage->rec.kind())));
        if (progress.task().empty()) progress.set_task(stage->rec.task());
        *stage->rec.mutable_stage()->mutable_progress() = progress;
        *job->rec.mutable_job()->mutable_progress() = progress;
      }
      stage->rec.set_assignments(rank, "");
      stage->rec.set_completed_ranks(stage->rec.completed_ranks() + 1);
      MarkStageLocked(txn, job, stage);
      if (stage->rec.completed_ranks() >= std::max(1, stage->rec.world_size())) {
        if (stage->rec.adapter().empty()) {
          EndAttemptLocked(txn, job, stage, AttemptEnd::kFailed,
                           "the assignment completed without uploading an adapter");
        } else {
          StageSucceededLocked(txn, job, stage);
        }
      }
    } else {
      std::string error =
          request.error().empty() ? "the worker reported a failure" : request.error();
      if (stage->rec.world_size() > 1) error = absl::StrCat("rank ", rank, ": ", error);
      EndAttemptLocked(txn, job, stage,
                       request.permanent() ? AttemptEnd::kFailedPermanently : AttemptEnd::kFailed,
                       error);
    }
  }
  ScheduleLocked(txn);
  return CommitLocked(txn);
}

absl::Status Coordinator::CheckLeases() {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::OkStatus();
  const absl::Time now = clock_->Now();
  Txn txn;
  std::vector<std::string> forget;
  for (const auto& [seq, name] : worker_order_) {
    WorkerEntry& w = workers_.at(name);
    if (w.rec.worker().state() == "lost") {
      if (now - FromTimestamp(w.rec.lost_time()) > options_.lost_worker_retention) {
        forget.push_back(name);
      }
      continue;
    }
    if (w.active_polls > 0) continue;  // waiting in a long poll: alive
    const absl::Duration silent = now - w.last_seen;
    if (silent > options_.lease) {
      DeclareLostLocked(txn, &w,
                        absl::StrFormat("no heartbeat for %.1f s (lease %.1f s)",
                                        absl::ToDoubleSeconds(silent),
                                        absl::ToDoubleSeconds(options_.lease)));
    }
  }
  for (const std::string& name : forget) {
    worker_order_.erase(workers_.at(name).rec.register_seq());
    workers_.erase(name);
    txn.deleted_workers.insert(name);
  }
  ScheduleLocked(txn);
  return CommitLocked(txn);
}

void Coordinator::DeclareLostLocked(Txn& txn, WorkerEntry* worker, const std::string& reason) {
  mpt::v1::Worker* pw = worker->rec.mutable_worker();
  const std::string name = pw->name();
  std::vector<std::string> ids(pw->assignments().begin(), pw->assignments().end());
  pw->set_state("lost");
  pw->clear_assignments();
  *worker->rec.mutable_lost_time() = ToTimestamp(clock_->Now());
  txn.workers.insert(name);
  MPT_LOG(WARNING) << "worker " << name << " lost: " << reason;
  for (const std::string& id : ids) {
    auto it = assignments_.find(id);
    if (it == assignments_.end()) continue;
    const AssignmentRecord rec = it->second;
    ReleaseAssignmentLocked(txn, id);
    if (rec.cancelled()) continue;
    JobEntry* job = FindJobLocked(rec.assignment().job());
    if (job == nullptr) continue;
    StageEntry* stage = FindStageLocked(job, rec.assignment().stage());
    if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) continue;
    EndAttemptLocked(txn, job, stage, AttemptEnd::kWorkerLost,
                     absl::StrCat("worker ", name, " was lost (", reason, ")"));
  }
}

// ---------------------------------------------------------------------------
// Rendezvous store

absl::Status Coordinator::StoreSet(const std::string& group, const std::string& key,
                                   std::string value) {
  if (group.empty()) return absl::InvalidArgumentError("group: required");
  if (key.empty()) return absl::InvalidArgumentError("key: required");
  if (value.size() > kMaxStoreValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("value: ", value.size(),
                                                   " bytes is more than the store keeps (",
                                                   kMaxStoreValueBytes, ")"));
  }
  absl::MutexLock lock(&kv_mu_);
  auto it = kv_.find(group);
  if (it == kv_.end()) {
    if (kv_.size() >= kMaxGroups) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the rendezvous store holds ", kMaxGroups, " groups already"));
    }
    it = kv_.emplace(group, std::map<std::string, std::string>()).first;
  }
  if (it->second.count(key) == 0 && it->second.size() >= kMaxKeysPerGroup) {
    return absl::ResourceExhaustedError(
        absl::StrCat("group ", group, " holds ", kMaxKeysPerGroup, " keys already"));
  }
  it->second[key] = std::move(value);
  kv_changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Coordinator::StoreGet(
    const std::string& group, const std::vector<std::string>& keys, absl::Time deadline) {
  if (group.empty()) return absl::InvalidArgumentError("group: required");
  if (keys.empty()) return absl::InvalidArgumentError("keys: at least one key is required");
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].empty()) return absl::InvalidArgumentError(absl::StrCat("keys[", i, "]: empty"));
  }
  absl::MutexLock lock(&kv_mu_);
  while (true) {
    std::vector<std::string> missing;
    std::vector<std::string> values;
    auto it = kv_.find(group);
    for (const std::string& key : keys) {
      if (it == kv_.end() || it->second.count(key) == 0) {
        missing.push_back(key);
      } else {
        values.push_back(it->second.at(key));
      }
    }
    if (missing.empty()) return values;
    if (kv_shutting_down_) return absl::UnavailableError("coordinator is shutting down");
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("group ", group, ": still missing keys ",
                                                      absl::StrJoin(missing, ", ")));
    }
    kv_changed_.WaitWithDeadline(&kv_mu_, deadline);
  }
}

}  // namespace mpt
