#include "server/coordinator_state.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "server/resource_names.h"

namespace mpt {
namespace {

using coordinator::AssignmentRecord;
using coordinator::JobRecord;
using coordinator::StageRecord;
using coordinator::WorkerRecord;
using mpt::v1::JobState;

constexpr size_t kMaxReleasedRemembered = 10000;

}  // namespace

CoordinatorState::CoordinatorState(CoordinatorStateOptions options, JobStore* store, Clock* clock)
    : options_(options), store_(store), clock_(clock) {}

void CoordinatorState::AddJob(std::unique_ptr<JobEntry> job) {
  JobEntry* raw = job.get();
  job_order_[{-int64_t{raw->rec.job().priority()}, raw->rec.create_seq()}] = raw;
  jobs_[raw->rec.job().name()] = std::move(job);
}

void CoordinatorState::AddWorker(StateTxn& txn, const mpt::v1::Worker& worker,
                                 const std::string& name, const std::string& key_sha256,
                                 const std::string& cert_sha256) {
  WorkerEntry w;
  w.rec.set_key_sha256(key_sha256);
  w.rec.set_cert_sha256(cert_sha256);
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
  txn.workers.insert(name);
}

void CoordinatorState::ForgetWorker(StateTxn& txn, const std::string& name) {
  auto it = workers_.find(name);
  if (it == workers_.end()) return;
  worker_order_.erase(it->second.rec.register_seq());
  workers_.erase(it);
  txn.deleted_workers.insert(name);
}

absl::Status CoordinatorState::Load(StateTxn& txn) {
  ASSIGN_OR_RETURN(StoreSnapshot snap, store_->LoadActive());
  jobs_.clear();
  job_order_.clear();
  workers_.clear();
  worker_order_.clear();
  assignments_.clear();
  const absl::Time now = clock_->Now();

  jobs_.reserve(snap.jobs.size());
  for (size_t i = 0; i < snap.jobs.size(); ++i) {
    auto job = std::make_unique<JobEntry>();
    job->rec = std::move(snap.jobs[i]);
    std::vector<StageRecord>& stages = snap.stages[i];
    job->stages.resize(stages.size());
    for (size_t k = 0; k < stages.size(); ++k) job->stages[k].rec = std::move(stages[k]);
    // The moved-from records now, freed as the load goes: with 100,000 jobs
    // they were a tenth of the load's peak memory.
    std::vector<StageRecord>().swap(stages);
    JobEntry* raw = job.get();
    job_order_[{-int64_t{raw->rec.job().priority()}, raw->rec.create_seq()}] = raw;
    jobs_[raw->rec.job().name()] = std::move(job);
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
  largest_job_name_ = snap.largest_job_name;

  // Repair what a crash between the writes of two RPCs cannot leave but a
  // damaged or hand-edited store might, and what time did meanwhile.
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
    ReleaseAssignment(txn, id);
    if (rec.cancelled()) continue;
    JobEntry* job = FindJob(rec.assignment().job());
    if (job == nullptr) continue;
    StageEntry* stage = FindStage(job, rec.assignment().stage());
    if (stage != nullptr && stage->rec.stage().state() == mpt::v1::RUNNING) {
      EndAttempt(txn, job, stage, AttemptEnd::kWorkerLost,
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
        EndAttempt(txn, job, &stage, AttemptEnd::kWorkerLost,
                         "an assignment of it was lost in a coordinator restart");
      }
    }
    MaybeFinishCancel(txn, job);
  }
  return absl::OkStatus();
}

StoreWrite CoordinatorState::BuildWrite(const StateTxn& txn) const {
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
  w.logs = txn.logs;

  return w;
}

void CoordinatorState::WakeAllWatchers() {
  for (auto& [name, job] : jobs_) job->events_changed->SignalAll();
}

void CoordinatorState::Committed(const StateTxn& txn) {
  for (const mpt::v1::JobEvent& e : txn.events) {
    auto it = jobs_.find(e.job());
    if (it == jobs_.end()) continue;
    JobEntry& job = *it->second;
    job.durable_last_event = std::max(job.durable_last_event, e.sequence());
    job.events_changed->SignalAll();
  }
  for (const std::string& name : txn.finished_jobs) {
    auto it = jobs_.find(name);
    if (it == jobs_.end()) continue;
    job_order_.erase({-int64_t{it->second->rec.job().priority()}, it->second->rec.create_seq()});
    jobs_.erase(it);
  }
}

mpt::v1::Job CoordinatorState::PublicJob(const JobEntry& job) const {
  mpt::v1::Job out = job.rec.job();
  for (const StageEntry& s : job.stages) {
    mpt::v1::Stage* stage = out.add_stages();
    *stage = s.rec.stage();
    AddInitialProgress(s.rec, stage);
  }
  return out;
}

JobEntry* CoordinatorState::FindJob(const std::string& name) {
  auto it = jobs_.find(name);
  return it == jobs_.end() ? nullptr : it->second.get();
}

StageEntry* CoordinatorState::FindStage(JobEntry* job, const std::string& stage_id) {
  for (StageEntry& s : job->stages) {
    if (s.rec.stage().id() == stage_id) return &s;
  }
  return nullptr;
}

WorkerEntry* CoordinatorState::FindLiveWorker(const std::string& name) {
  auto it = workers_.find(name);
  if (it == workers_.end() || it->second.rec.worker().state() == "lost") return nullptr;
  return &it->second;
}

void CoordinatorState::MarkJob(StateTxn& txn, JobEntry* job) { txn.jobs.insert(job->rec.job().name()); }

void CoordinatorState::MarkStage(StateTxn& txn, JobEntry* job, StageEntry* stage) {
  txn.stages.insert({job->rec.job().name(), stage->rec.stage().id()});
}

void CoordinatorState::AddEvent(StateTxn& txn, JobEntry* job, const StageEntry* stage,
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
  MarkJob(txn, job);
}

int CoordinatorState::LiveAssignmentsOfJob(const std::string& job) const {
  int n = 0;
  for (const auto& [id, rec] : assignments_) {
    if (rec.assignment().job() == job) ++n;
  }
  return n;
}

void CoordinatorState::FinishJob(StateTxn& txn, JobEntry* job, JobState state,
                                  const std::string& error) {
  mpt::v1::Job* j = job->rec.mutable_job();
  if (IsFinalState(j->state())) return;
  for (StageEntry& s : job->stages) {
    JobState st = s.rec.stage().state();
    if (IsFinalState(st)) continue;
    AttemptEnded(txn, &s, "cancelled");
    for (const std::string& id : s.rec.assignments()) {
      if (!id.empty() && assignments_.count(id) > 0) CancelAssignment(txn, id);
    }
    if (!s.rec.group().empty()) txn.groups_to_erase.push_back(s.rec.group());
    s.rec.clear_assignments();
    s.rec.set_completed_ranks(0);
    s.rec.clear_group();
    s.rec.mutable_stage()->clear_workers();
    s.rec.mutable_stage()->set_state(mpt::v1::CANCELLED);
    MarkStage(txn, job, &s);
  }
  std::vector<std::string> still_running;
  for (const auto& [id, rec] : assignments_) {
    if (rec.assignment().job() == j->name() && !rec.cancelled()) still_running.push_back(id);
  }
  for (const std::string& id : still_running) CancelAssignment(txn, id);
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
  AddEvent(txn, job, nullptr, message);
  txn.finished_jobs.push_back(j->name());
  txn.notify = true;
  MPT_LOG(DEBUG) << j->name() << ": " << message;
}

void CoordinatorState::MaybeFinishCancel(StateTxn& txn, JobEntry* job) {
  if (job->rec.job().state() != mpt::v1::CANCELLING) return;
  if (LiveAssignmentsOfJob(job->rec.job().name()) > 0) return;
  FinishJob(txn, job, mpt::v1::CANCELLED, "");
}

void CoordinatorState::CancelAssignment(StateTxn& txn, const std::string& id) {
  auto it = assignments_.find(id);
  if (it == assignments_.end() || it->second.cancelled()) return;
  it->second.set_cancelled(true);
  txn.assignments.insert(id);
  txn.notify = true;
}

void CoordinatorState::ReleaseAssignment(StateTxn& txn, const std::string& id) {
  auto it = assignments_.find(id);
  if (it == assignments_.end()) return;
  const AssignmentRecord rec = std::move(it->second);
  assignments_.erase(it);
  txn.deleted_assignments.insert(id);
  txn.notify = true;
  if (released_.emplace(id, rec.worker()).second) {
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
  if (JobEntry* job = FindJob(rec.assignment().job())) MaybeFinishCancel(txn, job);
}

void CoordinatorState::DropArtifact(StateTxn& txn, JobEntry* job, const std::string& name) {
  auto* list = job->rec.mutable_job()->mutable_artifacts();
  for (int i = 0; i < list->size(); ++i) {
    if (list->Get(i).name() != name) continue;
    txn.blobs_to_collect.push_back(list->Get(i).sha256());
    list->DeleteSubrange(i, 1);
    break;
  }
  txn.deleted_artifacts.push_back(name);
  MarkJob(txn, job);
}

void CoordinatorState::EndAttempt(StateTxn& txn, JobEntry* job, StageEntry* stage, AttemptEnd how,
                                   const std::string& reason) {
  if (IsFinalState(job->rec.job().state()) || job->rec.job().state() == mpt::v1::CANCELLING) return;
  StageRecord& r = stage->rec;
  const std::vector<std::string> attempt_workers(r.stage().workers().begin(),
                                                 r.stage().workers().end());
  AttemptEnded(txn, stage,
               how == AttemptEnd::kWorkerLost || how == AttemptEnd::kGangFault ? "lost" : "failed");
  stage->peer_failure_since = absl::InfinitePast();
  stage->peer_failure_error.clear();
  for (const std::string& id : r.assignments()) {
    if (!id.empty()) CancelAssignment(txn, id);
  }
  if (!r.group().empty()) txn.groups_to_erase.push_back(r.group());
  if (!r.adapter().empty()) DropArtifact(txn, job, r.adapter());
  r.clear_assignments();
  r.set_completed_ranks(0);
  r.clear_group();
  r.clear_collective();
  r.clear_adapter();
  r.mutable_stage()->clear_workers();
  MarkStage(txn, job, stage);
  const std::string& id = r.stage().id();
  const std::string resume =
      r.checkpoint().empty() ? "from the start"
                             : absl::StrCat("from its checkpoint at step ", r.checkpoint_step());

  if (how == AttemptEnd::kWorkerLost || how == AttemptEnd::kGangFault) {
    r.set_losses(r.losses() + 1);
    if (r.losses() > options_.max_worker_losses) {
      const std::string error = absl::StrCat("stage ", id, " lost its worker ", r.losses(),
                                             " times; the last time ", reason);
      r.mutable_stage()->set_state(mpt::v1::FAILED);
      r.mutable_stage()->set_error(error);
      AddEvent(txn, job, stage, error);
      FinishJob(txn, job, mpt::v1::FAILED, error);
      return;
    }
    r.mutable_stage()->set_state(mpt::v1::QUEUED);
    AddEvent(txn, job, stage,
                   absl::StrCat("requeued because ", reason, "; resumes ", resume));
    return;
  }
  r.set_failures(r.failures() + 1);
  r.mutable_stage()->set_error(reason);
  r.clear_failed_on();
  for (const std::string& w : attempt_workers) r.add_failed_on(w);
  const bool give_up =
      how == AttemptEnd::kFailedPermanently || r.failures() >= options_.max_attempts;
  if (give_up) {
    const std::string error =
        how == AttemptEnd::kFailedPermanently
            ? absl::StrCat("stage ", id, " failed: ", reason)
            : absl::StrCat("stage ", id, " failed ", r.failures(),
                           r.failures() == 1 ? " time: " : " times; last error: ", reason);
    r.mutable_stage()->set_state(mpt::v1::FAILED);
    AddEvent(txn, job, stage, error);
    FinishJob(txn, job, mpt::v1::FAILED, error);
    return;
  }
  r.mutable_stage()->set_state(mpt::v1::QUEUED);
  AddEvent(txn, job, stage,
                 absl::StrCat("attempt ", r.stage().attempts(), " failed: ", reason,
                              "; retrying (", r.failures(), " of ", options_.max_attempts,
                              " failures) ", resume));
}

void CoordinatorState::AttemptEnded(StateTxn& txn, StageEntry* stage, const char* outcome) {
  if (stage->attempt_start == absl::InfinitePast()) return;
  const std::string& id = stage->rec.stage().id();
  txn.ended_attempts.push_back(
      EndedAttempt{id.substr(0, id.find('/')), outcome, clock_->Now() - stage->attempt_start});
  stage->attempt_start = absl::InfinitePast();
}

void CoordinatorState::StageSucceeded(StateTxn& txn, JobEntry* job, StageEntry* stage) {
  StageRecord& r = stage->rec;
  AttemptEnded(txn, stage, "succeeded");
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
    DropArtifact(txn, job, r.checkpoint());
    r.clear_checkpoint();
    r.set_checkpoint_step(0);
  }
  MarkStage(txn, job, stage);
  AddEvent(txn, job, stage, absl::StrCat("stage succeeded: ", r.stage().artifact()));
  for (const StageEntry& s : job->stages) {
    if (s.rec.stage().state() != mpt::v1::SUCCEEDED) return;
  }
  FinishJob(txn, job, mpt::v1::SUCCEEDED, "");
}

// ---------------------------------------------------------------------------
// Scheduling

bool CoordinatorState::StageReady(const JobEntry& job, const StageEntry& stage) const {
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


void CoordinatorState::StartStage(StateTxn& txn, JobEntry* job, StageEntry* stage,
                                   const std::vector<WorkerEntry*>& workers,
                                   const std::string& collective, const std::string& note) {
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
  stage->attempt_start = clock_->Now();
  MarkStage(txn, job, stage);
  if (j->state() == mpt::v1::QUEUED) {
    j->set_state(mpt::v1::RUNNING);
    *j->mutable_start_time() = ToTimestamp(clock_->Now());
    MarkJob(txn, job);
  }
  job->gang_note_sent = false;
  AddEvent(txn, job, stage,
                 absl::StrCat("started attempt ", attempt, " on ",
                              absl::StrJoin(r.stage().workers(), ", "),
                              r.checkpoint().empty()
                                  ? ""
                                  : absl::StrCat(" from step ", r.checkpoint_step()),
                              note.empty() ? "" : absl::StrCat(" (", note, ")")));
  txn.notify = true;
}

bool CoordinatorState::ResolvePeerFailure(StateTxn& txn, JobEntry* job, StageEntry* stage,
                                          absl::Duration silence, absl::Duration wait) {
  if (stage->peer_failure_since == absl::InfinitePast() ||
      stage->rec.stage().state() != mpt::v1::RUNNING) {
    return false;
  }
  const absl::Time now = clock_->Now();
  WorkerEntry* culprit = nullptr;
  absl::Duration longest = silence;
  int still_running = 0;
  for (const std::string& id : stage->rec.assignments()) {
    auto a = assignments_.find(id);
    if (id.empty() || a == assignments_.end() || a->second.cancelled()) continue;
    ++still_running;
    auto w = workers_.find(a->second.worker());
    if (w == workers_.end() || w->second.rec.worker().state() == "lost") continue;
    if (w->second.active_polls > 0) continue;  // in a long poll: alive
    const absl::Duration silent = now - w->second.last_seen;
    if (silent > longest) {
      longest = silent;
      culprit = &w->second;
    }
  }
  if (culprit != nullptr) {
    DeclareLost(txn, culprit,
                absl::StrFormat("a peer of its gang reported a collective failure (%s) and it "
                                "has not heartbeated for %.1f s",
                                stage->peer_failure_error, absl::ToDoubleSeconds(longest)));
    return true;
  }
  if (still_running == 0 || now - stage->peer_failure_since >= wait) {
    EndAttempt(txn, job, stage, AttemptEnd::kGangFault,
               absl::StrCat("the gang's collectives broke (", stage->peer_failure_error,
                            ") while every rank's worker kept heartbeating"));
    return true;
  }
  return false;
}

void CoordinatorState::DeclareLost(StateTxn& txn, WorkerEntry* worker, const std::string& reason) {
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
    ReleaseAssignment(txn, id);
    if (rec.cancelled()) continue;
    JobEntry* job = FindJob(rec.assignment().job());
    if (job == nullptr) continue;
    StageEntry* stage = FindStage(job, rec.assignment().stage());
    if (stage == nullptr || stage->rec.stage().state() != mpt::v1::RUNNING) continue;
    EndAttempt(txn, job, stage, AttemptEnd::kWorkerLost,
                     absl::StrCat("worker ", name, " was lost (", reason, ")"));
  }
}

void CoordinatorState::RequestCancel(StateTxn& txn, JobEntry* job) {
  const std::string name = job->rec.job().name();
  std::vector<std::string> running;
  for (StageEntry& s : job->stages) {
    if (s.rec.stage().state() != mpt::v1::RUNNING) continue;
    for (const std::string& id : s.rec.assignments()) {
      if (!id.empty() && assignments().count(id) > 0) running.push_back(id);
    }
  }
  if (running.empty() && LiveAssignmentsOfJob(name) == 0) {
    FinishJob(txn, job, mpt::v1::CANCELLED, "");
  } else {
    job->rec.mutable_job()->set_state(mpt::v1::CANCELLING);
    for (StageEntry& s : job->stages) {
      JobState st = s.rec.stage().state();
      if (st == mpt::v1::QUEUED) {
        s.rec.mutable_stage()->set_state(mpt::v1::CANCELLED);
        MarkStage(txn, job, &s);
      } else if (st == mpt::v1::RUNNING) {
        s.rec.mutable_stage()->set_state(mpt::v1::CANCELLING);
        MarkStage(txn, job, &s);
      }
    }
    for (const auto& [id, rec] : assignments()) {
      if (rec.assignment().job() == name && !rec.cancelled()) running.push_back(id);
    }
    for (const std::string& id : running) CancelAssignment(txn, id);
    AddEvent(txn, job, nullptr,
                   "cancellation requested; waiting for running assignments to stop");
  }
}

mpt::v1::Artifact CoordinatorState::RecordArtifact(StateTxn& txn, JobEntry* job, StageEntry* stage,
                                                   const std::string& kind, int64_t step,
                                                   const std::string& sha256,
                                                   int64_t size_bytes) {
  StageRecord& r = stage->rec;
  mpt::v1::Artifact artifact;
  artifact.set_name(absl::StrCat(job->rec.job().name(), "/artifacts/",
                                 ArtifactId(r.stage().id(), kind, r.stage().attempts(),
                                            step)));
  artifact.set_kind(kind);
  artifact.set_stage(r.stage().id());
  artifact.set_sha256(sha256);
  artifact.set_size_bytes(size_bytes);
  *artifact.mutable_create_time() = ToTimestamp(clock_->Now());

  std::string replaced = kind == "adapter" ? r.adapter() : r.checkpoint();
  if (!replaced.empty() && replaced != artifact.name()) DropArtifact(txn, job, replaced);
  if (kind == "adapter") {
    r.set_adapter(artifact.name());
  } else {
    r.set_checkpoint(artifact.name());
    r.set_checkpoint_step(step);
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
  MarkJob(txn, job);
  MarkStage(txn, job, stage);
  return artifact;
}

}  // namespace mpt
