#include "server/coordinator.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/logging.h"
#include "common/quote.h"
#include "common/secrets.h"
#include "common/sha256.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "server/adapter_validation.h"
#include "server/job_planner.h"
#include "server/proto_wire.h"
#include "server/resource_names.h"
#include "server/coordinator_requests.h"
#include "server/stage_logs.h"

namespace mpt {
namespace {

// `job`'s wire bytes, shared (as PublishedJobs makes them).
std::shared_ptr<const std::string> SerializeJob(const mpt::v1::Job& job) {
  return std::make_shared<const std::string>(job.SerializeAsString());
}

using coordinator::AssignmentRecord;
using coordinator::StageRecord;

constexpr int kMaxEventsPerBatch = 500;

}  // namespace

// ---------------------------------------------------------------------------
// Construction, loading and committing

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store,
                         std::unique_ptr<ArtifactStore> artifacts, std::shared_ptr<Clock> clock)
    : options_(options),
      store_(std::move(store)),
      artifacts_(std::move(artifacts)),
      clock_(std::move(clock)),
      committer_(store_.get()),
      state_(CoordinatorStateOptions{options_.max_attempts, options_.max_worker_losses},
             store_.get(), clock_.get()) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorOptions options, std::unique_ptr<JobStore> store,
    std::unique_ptr<ArtifactStore> artifacts, std::shared_ptr<Clock> clock) {
  if (store == nullptr || artifacts == nullptr) {
    return absl::InvalidArgumentError("coordinator: a job store and an artifact store are needed");
  }
  RETURN_IF_ERROR(CheckCoordinatorOptions(options));
  if (clock == nullptr) clock = std::make_shared<RealClock>();
  std::unique_ptr<Coordinator> c(
      new Coordinator(options, std::move(store), std::move(artifacts), std::move(clock)));
  {
    absl::MutexLock lock(&c->mu_);
    RETURN_IF_ERROR(c->LoadLocked());
  }
  return c;
}

Coordinator::~Coordinator() {
  Shutdown();
  // Submissions still being committed touch the state when they end.
  absl::MutexLock lock(&mu_);
  auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return async_commits_ == 0; };
  mu_.Await(absl::Condition(&drained));
}

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
    for (auto& [name, job] : state_.jobs()) job->events_changed->SignalAll();
  }
  notifier_.NotifyAll();
  kv_.Shutdown();
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
  StateTxn txn;
  RETURN_IF_ERROR(state_.Load(txn));
  durable_ticket_ = last_ticket_;  // memory is the store's again
  pending_request_ids_.clear();
  published_.Clear();  // memory is the store's: GetJob reads the store until a commit
  for (auto& [name, job] : state_.jobs()) job->durable_last_event = job->rec.job().last_event();
  ScheduleLocked(txn);
  return CommitLocked(txn, /*reload_on_failure=*/false);
}

void Coordinator::RecoverLocked(const absl::Status& failure, bool reload) {
  MPT_LOG(ERROR) << "job store write failed: " << failure
                 << (reload ? "; reloading the state from the store" : "");
  state_.WakeAllWatchers();
  // Only the first caller to see the failure reloads; the writes queued
  // behind it failed too and were built on the same memory.
  if (committer_.Recover() && reload) {
    absl::Status reloaded = LoadLocked();
    if (!reloaded.ok()) MPT_LOG(ERROR) << "reloading the state failed: " << reloaded;
  }
  state_.WakeAllWatchers();
  notifier_.NotifyAll();
  changed_.SignalAll();
}

absl::Status Coordinator::AwaitDurableLocked() {
  if (durable_ticket_ >= last_ticket_) return absl::OkStatus();
  const int64_t ticket = last_ticket_;
  mu_.Unlock();
  absl::Status status = committer_.Wait(ticket);
  mu_.Lock();
  if (status.ok()) durable_ticket_ = std::max(durable_ticket_, ticket);
  return status;
}

Coordinator::PendingCommit Coordinator::QueueCommitLocked(
    StateTxn& txn, GroupCommitter::Callback on_resolved,
    std::shared_ptr<const mpt::v1::Job> known) {
  PendingCommit pending;
  pending.known = known;
  StoreWrite write = state_.BuildWrite(txn);
  // The changed jobs as this write leaves them, published once it is durable.
  std::set<std::string> touched(txn.jobs.begin(), txn.jobs.end());
  for (const auto& [job, stage] : txn.stages) touched.insert(job);
  for (const std::string& name : touched) {
    if (known != nullptr && known->name() == name) {
      pending.snapshots.push_back(known);
    } else if (JobEntry* job = state_.FindJob(name)) {
      pending.snapshots.push_back(
          std::make_shared<const mpt::v1::Job>(state_.PublicJob(*job)));
    }
  }
  pending.ticket = last_ticket_;
  if (!write.empty()) {
    pending.ticket = last_ticket_ = committer_.Enqueue(std::move(write), std::move(on_resolved));
    pending.queued = true;
    for (const RequestIdRecord& r : txn.request_ids) {
      pending_request_ids_[r.request_id] = pending.ticket;
    }
  }
  return pending;
}

absl::Status Coordinator::CompleteCommitLocked(StateTxn& txn, PendingCommit& pending,
                                               const absl::Status& status,
                                               bool reload_on_failure) {
  const int64_t ticket = pending.ticket;
  if (pending.queued) {
    for (const RequestIdRecord& r : txn.request_ids) {
      auto it = pending_request_ids_.find(r.request_id);
      if (it != pending_request_ids_.end() && it->second == ticket) pending_request_ids_.erase(it);
    }
    if (!status.ok()) {
      RecoverLocked(status, reload_on_failure);
      return status;
    }
    durable_ticket_ = std::max(durable_ticket_, ticket);
  }
  state_.Committed(txn);
  {
    const std::string* previous = nullptr;  // events come grouped by job
    for (const mpt::v1::JobEvent& e : txn.events) {
      if (previous == nullptr || *previous != e.job()) notifier_.Notify(e.job());
      previous = &e.job();
    }
  }
  if (options_.stage_duration != nullptr) {
    for (const EndedAttempt& a : txn.ended_attempts) {
      options_.stage_duration->Labels({a.stage_kind, a.outcome})
          .Observe(absl::ToDoubleSeconds(a.duration));
    }
  }
  for (std::shared_ptr<const mpt::v1::Job>& job : pending.snapshots) {
    if (state_.FindJob(job->name()) == nullptr) continue;  // finished: read from the store
    published_.Publish(ticket, job, job == pending.known ? pending.known_serialized : nullptr);
  }
  for (const std::string& name : txn.finished_jobs) published_.Remove(name);
  for (const std::string& group : txn.groups_to_erase) kv_.EraseGroup(group);
  for (const std::string& sha : txn.blobs_to_collect) {
    if (uploading_.count(sha) == 0) CollectBlobIfUnreferenced(*store_, *artifacts_, sha);
  }
  if (txn.notify || !txn.assignments.empty() || !txn.deleted_assignments.empty()) {
    changed_.SignalAll();
  }
  return absl::OkStatus();
}

absl::Status Coordinator::CommitLocked(StateTxn& txn, bool reload_on_failure) {
  PendingCommit pending = QueueCommitLocked(txn, nullptr);
  absl::Status status;
  if (pending.queued) {
    mu_.Unlock();
    status = committer_.Wait(pending.ticket);
    mu_.Lock();
  }
  return CompleteCommitLocked(txn, pending, status, reload_on_failure);
}

// ---------------------------------------------------------------------------
// Scheduling

void Coordinator::ScheduleLocked(StateTxn& txn) {
  if (shutting_down_) return;
  RunSchedulingPass(state_, txn, options_.max_pack_size);
}

// ---------------------------------------------------------------------------
// Submission

absl::StatusOr<mpt::v1::Job> Coordinator::SubmitJob(const mpt::v1::SubmitJobRequest& request) {
  absl::Notification done;
  absl::StatusOr<mpt::v1::Job> result;
  SubmitJobAsync(request, [&](absl::StatusOr<SubmittedJob> job) {
    if (job.ok()) {
      result = *job->job;
    } else {
      result = job.status();
    }
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

void Coordinator::SubmitJobAsync(const mpt::v1::SubmitJobRequest& request, SubmitDone done) {
  std::optional<absl::StatusOr<SubmittedJob>> answer = QueueSubmission(request, done);
  if (answer.has_value()) std::move(done)(*std::move(answer));
}

std::optional<absl::StatusOr<Coordinator::SubmittedJob>> Coordinator::QueueSubmission(
    const mpt::v1::SubmitJobRequest& request, SubmitDone& done) {
  JobPlannerOptions planner;
  planner.max_world_size = options_.max_world_size;
  planner.check_spec_files = options_.check_spec_files;
  planner.data_roots = options_.data_roots;
  ASSIGN_OR_RETURN(JobPlan plan, PlanJob(request, planner));
  // A request_id seen before returns its job, if the request is the same.
  const std::string fingerprint = RequestFingerprint(plan.spec, request.kind(), request.display_name());
  // Keys stored since schema version 3 carry the fingerprint of the request
  // that created the job; older ones are compared with the stored job.
  auto same_request = [&](const RequestIdRecord& key,
                          absl::StatusOr<mpt::v1::Job> job) -> absl::StatusOr<SubmittedJob> {
    if (!job.ok()) return job.status();
    const std::string stored =
        !key.fingerprint.empty()
            ? key.fingerprint
            : RequestFingerprint(job->spec(), job->kind(), job->display_name());
    if (stored == fingerprint) {
      auto shared = std::make_shared<const mpt::v1::Job>(*std::move(job));
      std::shared_ptr<const std::string> bytes = SerializeJob(*shared);
      return SubmittedJob{std::move(shared), std::move(bytes)};
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "request_id: \"", request.request_id(), "\" was already used for ", job->name(),
        " with a different spec, kind or display_name; use a new request_id"));
  };
  if (!request.request_id().empty()) {
    ASSIGN_OR_RETURN(std::optional<RequestIdRecord> existing,
                     store_->FindRequestId(request.request_id()));
    if (existing.has_value()) return same_request(*existing, GetJob(existing->job));
  }
  // Artefacts named by a single-stage spec must exist and be adapters.
  for (const RequiredAdapter& needed : plan.required_adapters) {
    ASSIGN_OR_RETURN(std::optional<mpt::v1::Artifact> a, store_->ReadArtifact(needed.artifact));
    if (!a.has_value()) {
      return absl::NotFoundError(
          absl::StrCat(needed.field, ": artefact ", needed.artifact, " does not exist"));
    }
    if (a->kind() != "adapter") {
      return absl::InvalidArgumentError(absl::StrCat(needed.field, ": artefact ", needed.artifact,
                                                     " is a ", a->kind(), ", not an adapter"));
    }
  }

  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
  if (!request.request_id().empty()) {
    // A concurrent submission with the same key may have won the race; when
    // its write is not durable yet, wait for it and look again.
    for (auto p = pending_request_ids_.find(request.request_id());
         p != pending_request_ids_.end(); p = pending_request_ids_.find(request.request_id())) {
      const int64_t ticket = p->second;
      mu_.Unlock();
      committer_.Wait(ticket).IgnoreError();
      mu_.Lock();
      p = pending_request_ids_.find(request.request_id());
      if (p != pending_request_ids_.end() && p->second == ticket) pending_request_ids_.erase(p);
    }
    if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
    ASSIGN_OR_RETURN(std::optional<RequestIdRecord> existing,
                     store_->FindRequestId(request.request_id()));
    if (existing.has_value()) {
      if (JobEntry* job = state_.FindJob(existing->job)) {
        return same_request(*existing, state_.PublicJob(*job));
      }
      ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> stored, store_->ReadJob(existing->job));
      if (stored.has_value()) return same_request(*existing, *std::move(stored));
    }
  }
  std::string name;
  // A time-ordered id first; should it be taken (the clock went back since
  // an earlier process made it), random ones.
  for (int tries = 0;; ++tries) {
    if (tries > 10) return absl::InternalError("cannot find a free job id");
    name = absl::StrCat("jobs/", tries == 0
                                     ? TimeOrderedId(clock_->Now(), &last_job_id_, random_)
                                     : RandomId(random_));
    if (state_.jobs().count(name) > 0) continue;
    // Ids grow, so a new one is usually above every stored name.
    if (name > state_.largest_job_name()) break;
    ASSIGN_OR_RETURN(bool clash, store_->HasJob(name));
    if (!clash) break;
  }
  state_.NoteJobName(name);
  auto job = std::make_unique<JobEntry>();
  mpt::v1::Job* j = job->rec.mutable_job();
  j->set_name(name);
  j->set_display_name(request.display_name());
  j->set_kind(request.kind());
  j->set_state(mpt::v1::QUEUED);
  j->set_priority(request.priority());
  *j->mutable_spec() = std::move(plan.spec);
  *j->mutable_create_time() = ToTimestamp(clock_->Now());
  j->mutable_progress()->set_eta_seconds(-1);
  job->rec.set_create_seq(state_.NextCreateSeq());
  for (StageRecord& r : plan.stages) {
    StageEntry s;
    s.rec = std::move(r);
    job->stages.push_back(std::move(s));
  }
  JobEntry* raw = job.get();
  state_.AddJob(std::move(job));

  StateTxn txn;
  state_.MarkJob(txn, raw);
  for (StageEntry& s : raw->stages) state_.MarkStage(txn, raw, &s);
  if (!request.request_id().empty()) {
    txn.request_ids.push_back(RequestIdRecord{request.request_id(), name, fingerprint});
  }
  state_.AddEvent(txn, raw, nullptr,
                 absl::StrCat("submitted: ", mpt::v1::JobKind_Name(request.kind()), " with ",
                              raw->stages.size(), raw->stages.size() == 1 ? " stage" : " stages"));
  ScheduleLocked(txn);
  // The answer is sent once the write is durable, from the committer's
  // thread: no thread waits for the disk meanwhile.
  struct Submission {
    StateTxn txn;
    PendingCommit pending;
    // The job as this write leaves it: the answer, and the copy published.
    std::shared_ptr<const mpt::v1::Job> out;
    SubmitDone done;
  };
  auto submission = std::make_shared<Submission>();
  submission->out = std::make_shared<const mpt::v1::Job>(state_.PublicJob(*raw));
  submission->done = std::move(done);
  done = nullptr;
  ++async_commits_;
  submission->pending = QueueCommitLocked(
      txn,
      [this, submission](absl::Status status) mutable {
        // Serialized once, outside the lock (`out` never changes): sent
        // as the answer and kept for GetJob.
        std::shared_ptr<const std::string> bytes =
            status.ok() ? SerializeJob(*submission->out) : nullptr;
        absl::StatusOr<SubmittedJob> result;
        {
          absl::MutexLock lock(&mu_);
          submission->pending.known_serialized = bytes;
          status = CompleteCommitLocked(submission->txn, submission->pending, status,
                                        /*reload_on_failure=*/true);
          if (status.ok()) {
            const mpt::v1::Job& out = *submission->out;
            MPT_LOG(DEBUG) << "submitted " << out.name() << " ("
                           << mpt::v1::JobKind_Name(out.kind()) << ", priority "
                           << out.priority() << ", " << out.stages_size() << " stages)";
            result = SubmittedJob{submission->out, std::move(bytes)};
          } else {
            result = status;
          }
          --async_commits_;
        }
        std::move(submission->done)(std::move(result));
      },
      submission->out);
  submission->txn = std::move(txn);
  return std::nullopt;  // the commit's callback answers
}

// ---------------------------------------------------------------------------
// Reading jobs

absl::StatusOr<mpt::v1::Job> Coordinator::GetJob(const std::string& name) {
  RETURN_IF_ERROR(CheckJobName(name));
  if (std::shared_ptr<const mpt::v1::Job> job = published_.Find(name)) return *job;
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> stored, store_->ReadJob(name));
  if (!stored.has_value()) return UnknownJob(name);
  return *std::move(stored);
}

absl::StatusOr<std::shared_ptr<const std::string>> Coordinator::GetJobSerialized(
    const std::string& name) {
  RETURN_IF_ERROR(CheckJobName(name));
  if (std::shared_ptr<const std::string> job = published_.FindSerialized(name)) return job;
  ASSIGN_OR_RETURN(std::optional<std::string> stored, store_->ReadSerializedJob(name));
  if (!stored.has_value()) return UnknownJob(name);
  return std::make_shared<const std::string>(*std::move(stored));
}

absl::StatusOr<std::string> Coordinator::ListJobsSerialized(
    const mpt::v1::ListJobsRequest& request) {
  ASSIGN_OR_RETURN(ListJobsQuery q, ParseListJobsRequest(request));
  ASSIGN_OR_RETURN(SerializedJobPage page,
                   store_->ListSerializedJobs(
                       q.filter, q.before_seq, q.page_size,
                       // Jobs in memory as the page found them: their
                       // published bytes, as GetJob answers.
                       [this](const std::string& name, mpt::v1::JobState state) {
                         return published_.FindSerializedInState(name, state);
                       }));
  std::string response;
  size_t bytes = 0;
  for (const std::string& job : page.jobs) bytes += job.size() + 8;
  response.reserve(bytes + 64);
  for (const std::string& job : page.jobs) {
    if (q.basic) {
      ASSIGN_OR_RETURN(std::string basic,
                       RemoveLengthDelimitedFields(job, {mpt::v1::Job::kSpecFieldNumber,
                                                         mpt::v1::Job::kArtifactsFieldNumber}));
      AppendLengthDelimitedField(mpt::v1::ListJobsResponse::kJobsFieldNumber, basic, &response);
    } else {
      AppendLengthDelimitedField(mpt::v1::ListJobsResponse::kJobsFieldNumber, job, &response);
    }
  }
  if (page.more) {
    AppendLengthDelimitedField(mpt::v1::ListJobsResponse::kNextPageTokenFieldNumber,
                               MakePageToken(page.last_seq, q.filter_key), &response);
  }
  return response;
}

absl::StatusOr<mpt::v1::ListJobsResponse> Coordinator::ListJobs(
    const mpt::v1::ListJobsRequest& request) {
  ASSIGN_OR_RETURN(std::string bytes, ListJobsSerialized(request));
  mpt::v1::ListJobsResponse response;
  if (!response.ParseFromString(bytes)) {
    return absl::DataLossError("a page of jobs read from the store does not parse");
  }
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
  int64_t limit = -1;  // a job in memory: its last event known to be durable
  {
    absl::MutexLock lock(&mu_);
    while (true) {
      JobEntry* job = state_.FindJob(name);
      if (job == nullptr) {  // finished (or unknown): all of it is in the store
        limit = -1;
        break;
      }
      const int64_t last = job->durable_last_event;
      limit = last;
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
  return ReadEventBatch(*store_, name, after_sequence, limit, kMaxEventsPerBatch);
}

absl::StatusOr<ArtifactContent> Coordinator::ReadArtifact(const std::string& name) {
  ASSIGN_OR_RETURN(ArtifactReader reader, OpenArtifact(name));
  absl::StatusOr<std::string> data = reader.blob->ReadAll();
  if (!data.ok()) {
    return absl::Status(data.status().code(),
                        absl::StrCat("artefact ", name, ": ", data.status().message()));
  }
  ArtifactContent content;
  content.artifact = std::move(reader.artifact);
  content.data = *std::move(data);
  return content;
}

absl::StatusOr<ArtifactReader> Coordinator::OpenArtifact(const std::string& name) {
  RETURN_IF_ERROR(CheckArtifactName(name, "name"));
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Artifact> record, store_->ReadArtifact(name));
  if (!record.has_value()) {
    return UnknownArtifact(name);
  }
  absl::StatusOr<std::unique_ptr<ArtifactStore::BlobReader>> data =
      artifacts_->OpenBlob(record->sha256());
  if (!data.ok() && data.status().code() == absl::StatusCode::kNotFound) {
    // The record may have gone with its blob meanwhile (a checkpoint
    // dropped as its stage ended): then the artefact is simply gone.
    ASSIGN_OR_RETURN(std::optional<mpt::v1::Artifact> again, store_->ReadArtifact(name));
    if (!again.has_value()) {
      return UnknownArtifact(name);
    }
    // The store lists it and its file is gone: lost data, not a wrong name.
    return absl::DataLossError(absl::StrCat(
        "artefact ", name, ": ", data.status().message(),
        " although the job store records it (the file was deleted or lost); rerun the stage "
        "that made it"));
  }
  if (!data.ok()) {
    return absl::Status(data.status().code(),
                        absl::StrCat("artefact ", name, ": ", data.status().message()));
  }
  if ((*data)->size() != record->size_bytes()) {
    return absl::DataLossError(absl::StrCat("artefact ", name, ": stored blob has ",
                                            (*data)->size(), " bytes, the record says ",
                                            record->size_bytes()));
  }
  ArtifactReader reader;
  reader.artifact = *std::move(record);
  reader.blob = *std::move(data);
  return reader;
}

mpt::v1::ListWorkersResponse Coordinator::ListWorkers() {
  absl::MutexLock lock(&mu_);
  return ListWorkersOf(state_);
}

ClusterStats Coordinator::ReadClusterStats() {
  ClusterStats stats;
  absl::MutexLock lock(&mu_);
  stats.unfinished_jobs = static_cast<int64_t>(state_.jobs().size());
  for (const auto& [name, job] : state_.jobs()) {
    for (const StageEntry& s : job->stages) {
      if (state_.StageReady(*job, s)) ++stats.ready_stages;
    }
  }
  stats.live_assignments = static_cast<int64_t>(state_.assignments().size());
  for (const char* st : {"idle", "busy", "lost"}) stats.workers_by_state[st] = 0;
  for (const auto& [name, w] : state_.workers()) ++stats.workers_by_state[w.rec.worker().state()];
  return stats;
}

absl::StatusOr<StoreStats> Coordinator::ReadStoreStats() { return store_->ReadStats(); }

absl::StatusOr<std::vector<mpt::v1::JobEvent>> Coordinator::ReadCommittedEvents(
    const std::string& name, int64_t after_sequence, int limit) {
  RETURN_IF_ERROR(CheckJobName(name));
  if (after_sequence < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("after_sequence: must be >= 0, got ", after_sequence));
  }
  return store_->ReadEvents(name, after_sequence, std::max(1, limit));
}

// ---------------------------------------------------------------------------
// Cancellation and job endings

absl::StatusOr<mpt::v1::Job> Coordinator::CancelJob(const std::string& name) {
  RETURN_IF_ERROR(CheckJobName(name));
  {
    absl::MutexLock lock(&mu_);
    JobEntry* job = state_.FindJob(name);
    if (job != nullptr) {
      if (job->rec.job().state() == mpt::v1::CANCELLING) return state_.PublicJob(*job);
      StateTxn txn;
      state_.RequestCancel(txn, job);
      mpt::v1::Job out = state_.PublicJob(*job);
      ScheduleLocked(txn);
      RETURN_IF_ERROR(CommitLocked(txn));
      MPT_LOG(DEBUG) << "cancel " << name << ": now " << mpt::v1::JobState_Name(out.state());
      return out;
    }
  }
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> stored, store_->ReadJob(name));
  if (!stored.has_value()) return UnknownJob(name);
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", name, " is already ", mpt::v1::JobState_Name(stored->state()),
      "; only unfinished jobs can be cancelled"));
}


// ---------------------------------------------------------------------------
// Workers

absl::StatusOr<mpt::v1::RegisterWorkerResponse> Coordinator::RegisterWorker(
    const mpt::v1::Worker& worker, const std::string& cert_sha256) {
  RETURN_IF_ERROR(CheckWorkerRegistration(worker));
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
  if (state_.workers().size() >= kMaxRegisteredWorkers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        state_.workers().size(), " workers are registered (lost ones count for ",
        absl::FormatDuration(options_.lost_worker_retention),
        " after they were lost); no more are accepted"));
  }
  std::string name;
  do {
    name = absl::StrCat("workers/", RandomId(random_));
  } while (state_.workers().count(name) > 0);
  ASSIGN_OR_RETURN(std::string key, RandomHexSecret(kWorkerKeyBytes));
  StateTxn txn;
  state_.AddWorker(txn, worker, name, Sha256Hex(key), cert_sha256);
  ScheduleLocked(txn);
  RETURN_IF_ERROR(CommitLocked(txn));
  MPT_LOG(INFO) << "registered " << name << " (" << QuoteForError(worker.hostname()) << ", "
                << (worker.device().empty() ? "?" : QuoteForError(worker.device())) << ")";
  mpt::v1::RegisterWorkerResponse response;
  response.set_name(name);
  response.set_heartbeat_seconds(absl::ToDoubleSeconds(options_.heartbeat_interval));
  response.set_lease_seconds(absl::ToDoubleSeconds(options_.lease));
  response.set_worker_key(std::move(key));
  return response;
}

absl::Status Coordinator::CheckWorkerKey(absl::string_view worker, absl::string_view key,
                                         const std::optional<std::string>& cert_sha256) {
  // Hashed outside the lock; hashes are compared, so the time taken does
  // not tell how much of a guess was right.
  const std::string key_sha256 = key.empty() ? std::string() : Sha256Hex(key);
  absl::MutexLock lock(&mu_);
  // An unknown worker, or none named, is the call's own error.
  auto it = state_.workers().find(std::string(worker));
  if (it == state_.workers().end()) return absl::OkStatus();
  const std::string& expected = it->second.rec.key_sha256();
  if (expected.empty()) return absl::OkStatus();  // registered before keys
  if (key.empty()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "this call names ", QuoteForError(worker), " but carries no \"", kWorkerKeyMetadata,
        "\" metadata (the worker_key its RegisterWorker returned)"));
  }
  if (!ConstantTimeEquals(key_sha256, expected)) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the \"", kWorkerKeyMetadata, "\" metadata is not the key of ", QuoteForError(worker)));
  }
  const std::string& bound = it->second.rec.cert_sha256();
  if (cert_sha256.has_value() && !bound.empty() && !ConstantTimeEquals(*cert_sha256, bound)) {
    return absl::PermissionDeniedError(absl::StrCat(
        QuoteForError(worker), " registered with another client certificate than this call's ",
        cert_sha256->empty() ? "(none)" : "one",
        " (workers are bound to their certificates: --bind_workers_to_certificates)"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::CheckAnyWorkerKey(absl::string_view key,
                                            const std::optional<std::string>& cert_sha256) {
  if (key.empty()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "this call needs the \"", kWorkerKeyMetadata,
        "\" metadata (the worker_key a RegisterWorker returned)"));
  }
  const std::string key_sha256 = Sha256Hex(key);
  absl::MutexLock lock(&mu_);
  bool found = false;
  for (const auto& [name, entry] : state_.workers()) {
    if (entry.rec.worker().state() == "lost") continue;
    const std::string& bound = entry.rec.cert_sha256();
    const bool cert_ok =
        !cert_sha256.has_value() || bound.empty() || ConstantTimeEquals(*cert_sha256, bound);
    found |= ConstantTimeEquals(key_sha256, entry.rec.key_sha256()) && cert_ok;
  }
  if (!found) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the \"", kWorkerKeyMetadata, "\" metadata is not the key of any live worker",
        cert_sha256.has_value() ? " registered with this call's client certificate" : ""));
  }
  return absl::OkStatus();
}

absl::StatusOr<mpt::v1::HeartbeatResponse> Coordinator::Heartbeat(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  WorkerEntry* w = state_.FindLiveWorker(worker);
  if (w == nullptr) return UnknownWorker(worker);
  w->last_seen = clock_->Now();
  mpt::v1::HeartbeatResponse response;
  for (const std::string& id : w->rec.worker().assignments()) {
    auto it = state_.assignments().find(id);
    if (it != state_.assignments().end() && it->second.cancelled()) {
      response.add_cancelled_assignments(id);
    }
  }
  return response;
}

absl::StatusOr<std::optional<mpt::v1::Assignment>> Coordinator::PollAssignment(
    const std::string& worker, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  WorkerEntry* w = state_.FindLiveWorker(worker);
  if (w == nullptr) return UnknownWorker(worker);
  ++w->active_polls;
  auto done_polling = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = state_.workers().find(worker);
    if (it != state_.workers().end()) {
      --it->second.active_polls;
      it->second.last_seen = clock_->Now();
    }
  };
  while (true) {
    w = state_.FindLiveWorker(worker);
    if (w == nullptr) {
      done_polling();
      return UnknownWorker(worker);
    }
    w->last_seen = clock_->Now();
    // Polling means the worker stopped whatever was cancelled.
    std::vector<std::string> stale;
    for (const std::string& id : w->rec.worker().assignments()) {
      auto it = state_.assignments().find(id);
      if (it != state_.assignments().end() && it->second.cancelled()) stale.push_back(id);
    }
    if (!stale.empty()) {
      StateTxn txn;
      for (const std::string& id : stale) state_.ReleaseAssignment(txn, id);
      ScheduleLocked(txn);
      absl::Status s = CommitLocked(txn);
      if (!s.ok()) {
        done_polling();
        return s;
      }
      continue;  // the commit may have reloaded the state
    }
    // The first live assignment; the worker's other live ones are the
    // rest of its pack (a worker gets several only as a pack).
    std::optional<mpt::v1::Assignment> current;
    for (const std::string& id : w->rec.worker().assignments()) {
      auto it = state_.assignments().find(id);
      if (it == state_.assignments().end() || it->second.cancelled()) continue;
      if (!current.has_value()) {
        current = it->second.assignment();
      } else {
        *current->add_packed() = it->second.assignment();
      }
    }
    if (current.has_value()) {
      if (durable_ticket_ < last_ticket_) {  // hand out only durable work
        absl::Status s = AwaitDurableLocked();
        if (!s.ok()) RecoverLocked(s, /*reload=*/true);
        continue;
      }
      done_polling();
      return current;
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

absl::StatusOr<mpt::v1::ReportProgressResponse> Coordinator::ReportProgress(
    const mpt::v1::ReportProgressRequest& request) {
  if (request.assignment().empty()) return absl::InvalidArgumentError("assignment: required");
  if (request.worker().empty()) return absl::InvalidArgumentError("worker: required");
  RETURN_IF_ERROR(CheckWorkerLogLines(request.log_lines()));
  if (request.has_progress()) RETURN_IF_ERROR(CheckProgress(request.progress(), "progress"));
  const std::string message = CutText(request.message(), kMaxEventMessageBytes);
  absl::MutexLock lock(&mu_);
  auto it = state_.assignments().find(request.assignment());
  if (it == state_.assignments().end()) return UnknownAssignment(request.assignment());
  const AssignmentRecord& rec = it->second;
  RETURN_IF_ERROR(CheckHolder(rec, request.assignment(), request.worker()));
  auto w = state_.workers().find(rec.worker());
  if (w != state_.workers().end() && w->second.rec.worker().state() != "lost") {
    w->second.last_seen = clock_->Now();
  }
  // Log lines are kept from every rank, even of a cancelled assignment,
  // while the stage is not final.
  StateTxn txn;
  AppendLogLinesLocked(txn, rec, request.log_lines());
  mpt::v1::ReportProgressResponse response;
  auto answer = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_)
                    -> absl::StatusOr<mpt::v1::ReportProgressResponse> {
    if (!txn.logs.empty()) RETURN_IF_ERROR(CommitLocked(txn));
    return response;
  };
  if (rec.cancelled()) {
    response.set_cancelled(true);
    return answer();
  }
  JobEntry* job = state_.FindJob(rec.assignment().job());
  StageEntry* stage = job == nullptr ? nullptr : state_.FindStage(job, rec.assignment().stage());
  if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) {
    response.set_cancelled(true);
    return answer();
  }
  // Rank 0 speaks for the gang; a report without progress carries lines only.
  if (rec.assignment().rank() != 0 || !request.has_progress()) return answer();

  const mpt::v1::Progress progress = StageProgress(request.progress(), *stage);
  const int64_t previous_step = stage->rec.stage().progress().step();
  *stage->rec.mutable_stage()->mutable_progress() = progress;
  *job->rec.mutable_job()->mutable_progress() = progress;

  const absl::Time now = clock_->Now();
  const absl::Duration since = now - stage->last_progress_event;
  // The report that first reaches a stage's last step is always kept: the
  // final loss. Later reports at that step are rate-limited like the rest.
  const bool last_step = progress.total_steps() > 0 && progress.step() >= progress.total_steps();
  const bool reached_end = last_step && previous_step < progress.total_steps();
  const bool notable = !progress.metrics().empty() || !message.empty() || last_step;
  if (since >= options_.progress_event_interval || reached_end ||
      (notable && since >= options_.progress_event_interval / 10)) {
    stage->last_progress_event = now;
    state_.MarkStage(txn, job, stage);
    state_.AddEvent(txn, job, stage, message, &progress);
    RETURN_IF_ERROR(CommitLocked(txn));
    return response;
  }
  published_.SetProgress(job->rec.job().name(), stage->rec.stage().id(), progress);
  return answer();
}

// ---------------------------------------------------------------------------
// Uploads

absl::Status ArtifactUpload::Append(absl::string_view data) {
  if (failed_) return absl::FailedPreconditionError("data: the upload already failed");
  if (static_cast<int64_t>(data.size()) > max_bytes_ - blob_->size()) {
    failed_ = true;
    return absl::InvalidArgumentError(absl::StrCat(
        "data: the artefact is larger than the ", max_bytes_,
        " bytes the coordinator accepts (--max_artifact_mb)"));
  }
  absl::Status appended = blob_->Append(data);
  if (!appended.ok()) {
    failed_ = true;
    if (appended.code() == absl::StatusCode::kUnavailable) {
      owner_->NoteArtifactStoreFault(appended);
    }
  }
  return appended;
}

void Coordinator::NoteArtifactStoreFault(const absl::Status& fault) {
  absl::MutexLock lock(&fault_log_mu_);
  const absl::Time now = clock_->Now();
  if (last_fault_logged_.has_value() && now - *last_fault_logged_ < kStorageFaultLogInterval) {
    ++faults_not_logged_;
    return;
  }
  MPT_LOG(ERROR) << "artefact store: " << fault.message()
                 << "; uploads are refused with UNAVAILABLE and retried by the workers "
                    "until it can be written again (stages are not failed for it)"
                 << (faults_not_logged_ > 0
                         ? absl::StrCat("; ", faults_not_logged_,
                                        " more such failures since the last report")
                         : std::string());
  last_fault_logged_ = now;
  faults_not_logged_ = 0;
}

ArtifactUpload::~ArtifactUpload() {
  blob_.reset();  // removes the temporary file unless it was committed
  owner_->EndUpload(header_.assignment());
}

void Coordinator::EndUpload(const std::string& assignment) {
  absl::MutexLock lock(&mu_);
  --uploads_in_flight_;
  auto it = uploads_by_assignment_.find(assignment);
  if (it != uploads_by_assignment_.end() && --it->second <= 0) uploads_by_assignment_.erase(it);
}

absl::Status Coordinator::CheckUploadableLocked(const std::string& id, const std::string& worker) {
  auto it = state_.assignments().find(id);
  if (it == state_.assignments().end()) return UnknownAssignment(id);
  RETURN_IF_ERROR(CheckHolder(it->second, id, worker));
  if (it->second.cancelled()) {
    return absl::FailedPreconditionError(
        absl::StrCat("assignment ", id, " was cancelled; its artefacts are not wanted"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ArtifactUpload>> Coordinator::BeginUpload(
    const mpt::v1::UploadArtifactRequest::Header& header) {
  RETURN_IF_ERROR(CheckUploadHeader(header));
  const std::string& id = header.assignment();
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
    RETURN_IF_ERROR(CheckUploadableLocked(id, header.worker()));
    if (header.kind() == "adapter") {
      const AssignmentRecord& rec = state_.assignments().at(id);
      JobEntry* job = state_.FindJob(rec.assignment().job());
      StageEntry* stage =
          job == nullptr ? nullptr : state_.FindStage(job, rec.assignment().stage());
      if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) {
        return absl::FailedPreconditionError(absl::StrCat("assignment ", id, " no longer runs"));
      }
    }
    if (uploads_in_flight_ >= options_.max_concurrent_uploads) {
      return absl::UnavailableError(absl::StrCat(
          "the coordinator is receiving ", uploads_in_flight_,
          " uploads already (--max_concurrent_uploads); retry later"));
    }
    int& of_assignment = uploads_by_assignment_[id];
    if (of_assignment >= kMaxUploadsPerAssignment) {
      return absl::UnavailableError(
          absl::StrCat("assignment ", id, " has ", of_assignment,
                       " uploads in flight already; retry once one ends"));
    }
    ++of_assignment;
    ++uploads_in_flight_;
  }
  absl::StatusOr<std::unique_ptr<ArtifactStore::BlobWriter>> blob = artifacts_->NewBlob();
  if (!blob.ok()) {
    EndUpload(id);
    if (blob.status().code() == absl::StatusCode::kUnavailable) {
      NoteArtifactStoreFault(blob.status());
    }
    return blob.status();
  }
  return std::unique_ptr<ArtifactUpload>(
      new ArtifactUpload(this, header, *std::move(blob), options_.max_artifact_bytes));
}

absl::StatusOr<mpt::v1::Artifact> Coordinator::UploadArtifact(
    const mpt::v1::UploadArtifactRequest::Header& header, absl::string_view data,
    absl::string_view sha256) {
  RETURN_IF_ERROR(CheckUploadHeader(header));
  if (static_cast<int64_t>(data.size()) > options_.max_artifact_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(),
                                                   " bytes is more than the coordinator accepts (",
                                                   options_.max_artifact_bytes, ")"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ArtifactUpload> upload, BeginUpload(header));
  RETURN_IF_ERROR(upload->Append(data));
  return FinishUpload(std::move(upload), sha256);
}

absl::StatusOr<mpt::v1::Artifact> Coordinator::FinishUpload(
    std::unique_ptr<ArtifactUpload> upload, absl::string_view sha256) {
  const mpt::v1::UploadArtifactRequest::Header header = upload->header();
  const std::string& id = header.assignment();
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        "sha256: required on the last message, as 64 hexadecimal digits");
  }
  const int64_t size = upload->size();
  const std::string expected = absl::AsciiStrToLower(sha256);
  // The stage of the running assignment `id`, nullptr when it no longer runs.
  auto running_stage = [&](JobEntry** job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> StageEntry* {
    const AssignmentRecord& rec = state_.assignments().at(id);
    *job = state_.FindJob(rec.assignment().job());
    StageEntry* stage =
        *job == nullptr ? nullptr : state_.FindStage(*job, rec.assignment().stage());
    if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) return nullptr;
    return stage;
  };
  std::optional<ExpectedAdapter> expected_adapter;
  std::string adapter_what;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckUploadableLocked(id, header.worker()));
    if (header.kind() == "adapter") {
      JobEntry* job = nullptr;
      StageEntry* stage = running_stage(&job);
      if (stage == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat("assignment ", id, " no longer runs"));
      }
      ASSIGN_OR_RETURN(expected_adapter,
                       ExpectedAdapterFor(job->rec.job().spec(), job->rec.job().kind(),
                                          stage->rec.kind()));
      adapter_what = absl::StrCat("the adapter artefact uploaded for ", job->rec.job().name(),
                                  " stage ", stage->rec.stage().id());
    }
    ++uploading_[expected];
  }
  absl::StatusOr<std::string> put = upload->blob_->Commit(expected);
  if (put.ok() && !upload->blob_->repaired().empty()) {
    MPT_LOG(WARNING) << "upload for " << id << ": " << upload->blob_->repaired();
  }
  // A failure of the coordinator's own storage is not the worker's fault:
  // UNAVAILABLE, which the worker retries, and the attempt goes on.
  if (!put.ok() && put.status().code() == absl::StatusCode::kUnavailable) {
    NoteArtifactStoreFault(put.status());
  }
  // Checked once the bytes are known to be the ones the worker sent, and
  // outside the lock: reads the whole archive (at most max_artifact_bytes,
  // for at most max_concurrent_uploads uploads at once).
  absl::Status valid = absl::OkStatus();
  absl::Status read_back = absl::OkStatus();
  if (put.ok() && expected_adapter.has_value()) {
    absl::StatusOr<std::string> data = artifacts_->Get(*put);
    if (data.ok()) {
      valid = ValidateAdapterArtifact(*data, *expected_adapter, adapter_what);
    } else {
      // The bytes were verified on their way in: a failure to read them
      // back is the store's, and another upload stores them again.
      read_back = absl::UnavailableError(absl::StrCat(
          "the uploaded adapter was stored but cannot be read back: ", data.status().message(),
          "; retry"));
      NoteArtifactStoreFault(read_back);
    }
  }

  absl::MutexLock lock(&mu_);
  auto done_uploading = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (--uploading_[expected] == 0) uploading_.erase(expected);
  };
  if (!put.ok()) {
    done_uploading();
    return put.status();
  }
  StateTxn txn;
  absl::Status running = CheckUploadableLocked(id, header.worker());
  JobEntry* job = nullptr;
  StageEntry* stage = nullptr;
  if (running.ok()) {
    stage = running_stage(&job);
    if (stage == nullptr) {
      running = absl::FailedPreconditionError(
          absl::StrCat("assignment ", id, " no longer runs"));
    }
  }
  if (running.ok() && !read_back.ok()) running = read_back;
  if (running.ok() && !valid.ok()) {
    // The worker produced garbage: the attempt fails (and is retried up to
    // --max_attempts), and the upload is refused.
    MPT_LOG(WARNING) << "upload for " << id << " refused: " << valid;
    state_.EndAttempt(txn, job, stage, AttemptEnd::kFailed, std::string(valid.message()));
    ScheduleLocked(txn);
    running = valid;
  }
  if (!running.ok()) {
    done_uploading();
    txn.blobs_to_collect.push_back(expected);
    // Only collects the blob just written; a failed commit is logged by
    // CommitLocked() and leaves an unreferenced blob that a later
    // collection of the same hash removes. The caller needs `running`.
    absl::Status collected = CommitLocked(txn);
    if (!collected.ok()) {
      MPT_LOG(WARNING) << "upload for " << id << " refused (" << running
                       << "); its blob stays until collected later: " << collected;
    }
    return running;
  }
  const AssignmentRecord& rec = state_.assignments().at(id);
  if (auto w = state_.workers().find(rec.worker()); w != state_.workers().end()) {
    w->second.last_seen = clock_->Now();
  }
  const mpt::v1::Artifact artifact =
      state_.RecordArtifact(txn, job, stage, header.kind(), header.step(), *put, size);
  absl::Status committed = CommitLocked(txn);
  done_uploading();
  RETURN_IF_ERROR(committed);
  return artifact;
}

absl::Status Coordinator::CompleteAssignment(const mpt::v1::CompleteAssignmentRequest& request) {
  const std::string& id = request.assignment();
  if (id.empty()) return absl::InvalidArgumentError("assignment: required");
  if (request.worker().empty()) return absl::InvalidArgumentError("worker: required");
  RETURN_IF_ERROR(CheckWorkerLogLines(request.log_lines()));
  if (request.has_final_progress()) {
    RETURN_IF_ERROR(CheckProgress(request.final_progress(), "final_progress"));
  }
  absl::MutexLock lock(&mu_);
  auto it = state_.assignments().find(id);
  if (it == state_.assignments().end()) {
    // A repeated call (its answer was lost), or the late completion of an
    // attempt that ended: either way nothing changes, for the worker that
    // held it.
    if (const std::string* holder = state_.ReleasedHolder(id)) {
      return CheckHolderName(*holder, id, request.worker());
    }
    return UnknownAssignment(id);
  }
  const AssignmentRecord rec = it->second;
  RETURN_IF_ERROR(CheckHolder(rec, id, request.worker()));
  if (auto w = state_.workers().find(rec.worker()); w != state_.workers().end()) {
    w->second.last_seen = clock_->Now();
  }
  JobEntry* job = state_.FindJob(rec.assignment().job());
  StageEntry* stage = job == nullptr ? nullptr : state_.FindStage(job, rec.assignment().stage());
  const int rank = rec.assignment().rank();
  const bool current = !rec.cancelled() && stage != nullptr &&
                       stage->rec.stage().state() == mpt::v1::RUNNING &&
                       rank < stage->rec.assignments_size() &&
                       stage->rec.assignments(rank) == id;
  StateTxn txn;
  // Stored with the completion, before it can make the stage final.
  AppendLogLinesLocked(txn, rec, request.log_lines());
  state_.ReleaseAssignment(txn, id);
  if (current) {
    if (request.ok()) {
      if (rank == 0 && request.has_final_progress()) {
        const mpt::v1::Progress progress = StageProgress(request.final_progress(), *stage);
        *stage->rec.mutable_stage()->mutable_progress() = progress;
        *job->rec.mutable_job()->mutable_progress() = progress;
      }
      stage->rec.set_assignments(rank, "");
      stage->rec.set_completed_ranks(stage->rec.completed_ranks() + 1);
      state_.MarkStage(txn, job, stage);
      if (stage->rec.completed_ranks() >= std::max(1, stage->rec.world_size())) {
        if (stage->rec.adapter().empty()) {
          state_.EndAttempt(txn, job, stage, AttemptEnd::kFailed,
                           "the assignment completed without uploading an adapter");
        } else {
          state_.StageSucceeded(txn, job, stage);
        }
      }
    } else {
      std::string error = request.error().empty() ? "the worker reported a failure"
                                                  : CutText(request.error(), kMaxErrorBytes);
      if (stage->rec.world_size() > 1) error = absl::StrCat("rank ", rank, ": ", error);
      if (request.peer_failure() && !request.permanent() && stage->rec.world_size() > 1) {
        // The gang's fault, not this rank's: blame the peer that fell
        // silent (now, or once it has), or a real error a peer reports.
        if (stage->peer_failure_since == absl::InfinitePast()) {
          stage->peer_failure_since = clock_->Now();
          stage->peer_failure_error = error;
          MPT_LOG(INFO) << "stage " << job->rec.job().name() << "/" << stage->rec.stage().id()
                        << ": " << QuoteForError(error)
                        << " (peer failure; checking the gang's heartbeats)";
        }
        peer_failures_.insert({job->rec.job().name(), stage->rec.stage().id()});
        state_.ResolvePeerFailure(txn, job, stage, PeerSilence(), options_.lease);
      } else {
        state_.EndAttempt(txn, job, stage,
                          request.permanent() ? AttemptEnd::kFailedPermanently
                                              : AttemptEnd::kFailed,
                          error);
      }
    }
  }
  ScheduleLocked(txn);
  return CommitLocked(txn);
}

absl::Status Coordinator::CheckLeases() {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::OkStatus();
  const absl::Time now = clock_->Now();
  StateTxn txn;
  std::vector<std::string> forget;
  for (const auto& [seq, name] : state_.worker_order()) {
    WorkerEntry& w = state_.workers().at(name);
    if (w.rec.worker().state() == "lost") {
      if (now - FromTimestamp(w.rec.lost_time()) > options_.lost_worker_retention) {
        forget.push_back(name);
      }
      continue;
    }
    if (w.active_polls > 0) continue;  // waiting in a long poll: alive
    const absl::Duration silent = now - w.last_seen;
    if (silent > options_.lease) {
      state_.DeclareLost(txn, &w,
                        absl::StrFormat("no heartbeat for %.1f s (lease %.1f s)",
                                        absl::ToDoubleSeconds(silent),
                                        absl::ToDoubleSeconds(options_.lease)));
    }
  }
  for (const std::string& name : forget) state_.ForgetWorker(txn, name);
  // Gang attempts with a reported peer failure: has the culprit fallen
  // silent yet (or the wait run out)?
  for (auto it = peer_failures_.begin(); it != peer_failures_.end();) {
    JobEntry* job = state_.FindJob(it->first);
    StageEntry* stage = job == nullptr ? nullptr : state_.FindStage(job, it->second);
    if (stage == nullptr || stage->peer_failure_since == absl::InfinitePast() ||
        state_.ResolvePeerFailure(txn, job, stage, PeerSilence(), options_.lease)) {
      it = peer_failures_.erase(it);
    } else {
      ++it;
    }
  }
  ScheduleLocked(txn);
  return CommitLocked(txn);
}

absl::Duration Coordinator::PeerSilence() const {
  return std::min(options_.lease, 2 * options_.heartbeat_interval);
}

// ---------------------------------------------------------------------------
// Rendezvous store

absl::Status Coordinator::CheckGroupMemberLocked(const std::string& group,
                                                 const std::string& assignment,
                                                 const std::string& worker) {
  if (group.empty()) return absl::InvalidArgumentError("group: required");
  if (group.size() > RendezvousKv::kMaxGroupBytes) {
    return absl::InvalidArgumentError(absl::StrCat("group: ", QuoteForError(group), " is longer than ",
                                                   RendezvousKv::kMaxGroupBytes, " bytes"));
  }
  if (assignment.empty()) return absl::InvalidArgumentError("assignment: required");
  if (worker.empty()) return absl::InvalidArgumentError("worker: required");
  if (!IsRunningAttemptGroup(state_, group)) {
    return absl::NotFoundError(absl::StrCat(
        "group: ", QuoteForError(group),
        " is not the rendezvous group of a running stage attempt (Assignment.group); "
        "the attempt may have ended"));
  }
  auto it = state_.assignments().find(assignment);
  if (it == state_.assignments().end()) return UnknownAssignment(QuoteForError(assignment));
  RETURN_IF_ERROR(CheckHolder(it->second, QuoteForError(assignment), worker));
  if (it->second.assignment().group() != group) {
    return absl::FailedPreconditionError(
        absl::StrCat("assignment ", QuoteForError(assignment), " is not a rank of group ",
                     QuoteForError(group), "; a gang member may use only its own group"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::StoreSet(const mpt::v1::StoreSetRequest& request) {
  // Held while the key is set: an attempt that ends meanwhile erases its
  // group after its commit, which takes mu_ too, so nothing is left behind.
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckGroupMemberLocked(request.group(), request.assignment(), request.worker()));
  return kv_.Set(request.group(), request.key(), request.value());
}

absl::StatusOr<std::vector<std::string>> Coordinator::StoreGet(
    const mpt::v1::StoreGetRequest& request, absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(
        CheckGroupMemberLocked(request.group(), request.assignment(), request.worker()));
  }
  // The wait holds no lock; a group erased meanwhile (its attempt ended)
  // leaves the wait to its deadline.
  return kv_.Get(request.group(), std::vector<std::string>(request.keys().begin(), request.keys().end()),
                 deadline);
}

}  // namespace mpt
