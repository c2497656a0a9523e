// The coordinator's durable state: the unfinished jobs with their stages,
// the workers and the live assignments, kept in memory and written to the
// JobStore in transactions (StateTxn), plus the state transitions every
// RPC is made of (start a stage, end an attempt, finish a job, release an
// assignment, ...). A transition only changes memory and records what it
// changed in the StateTxn; Commit() writes that in one store transaction.
//
// Thread-safety: none. The owner (the Coordinator) serializes every call
// with its own mutex and guards its CoordinatorState with it.
#ifndef MPT_SERVER_COORDINATOR_STATE_H_
#define MPT_SERVER_COORDINATOR_STATE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/clock.h"
#include "server/coordinator_state.pb.h"
#include "server/job_store.h"

namespace mpt {

struct StageEntry {
  coordinator::StageRecord rec;
  absl::Time last_progress_event = absl::InfinitePast();
  // A rank of the running gang attempt reported a peer failure
  // (CompleteAssignment peer_failure) at this time, InfinitePast when none
  // did; the first such error. Memory only: after a restart the attempt
  // is requeued anyway (its reporter's assignment is gone).
  absl::Time peer_failure_since = absl::InfinitePast();
  std::string peer_failure_error;
  // When the running attempt started, by the clock; InfinitePast when no
  // attempt runs or it started before the coordinator did (memory only).
  absl::Time attempt_start = absl::InfinitePast();
};

struct JobEntry {
  coordinator::JobRecord rec;  // rec.job() holds no stages
  std::vector<StageEntry> stages;
  // The newest event known to be committed (watchers read up to it).
  int64_t durable_last_event = 0;
  // The gang note ("waiting for N workers") was already sent.
  bool gang_note_sent = false;
  // Signalled when events of this job are committed. Shared so that a
  // watcher keeps it alive while the job leaves memory.
  std::shared_ptr<absl::CondVar> events_changed = std::make_shared<absl::CondVar>();
};

struct WorkerEntry {
  coordinator::WorkerRecord rec;
  absl::Time last_seen;  // by the clock
  int active_polls = 0;
};

// A stage attempt that ended (for the stage duration metric).
struct EndedAttempt {
  std::string stage_kind;  // "source", "distillation" or "target"
  std::string outcome;     // "succeeded", "failed", "lost" or "cancelled"
  absl::Duration duration;
};

// What one operation changed; CoordinatorState::Commit() writes it.
struct StateTxn {
  std::set<std::string> jobs;
  std::set<std::pair<std::string, std::string>> stages;  // (job, stage id)
  std::set<std::string> assignments;
  std::set<std::string> deleted_assignments;
  std::set<std::string> workers;
  std::set<std::string> deleted_workers;
  std::vector<mpt::v1::Artifact> artifacts;
  std::vector<std::string> deleted_artifacts;
  std::vector<mpt::v1::JobEvent> events;
  // New idempotency keys.
  std::vector<RequestIdRecord> request_ids;
  // Workers' log lines to store.
  std::vector<StageLogAppend> logs;
  // Jobs that reached a final state: they leave memory after the commit.
  std::vector<std::string> finished_jobs;
  // Blob hashes that may have lost their last reference.
  std::vector<std::string> blobs_to_collect;
  // Rendezvous groups of attempts that ended.
  std::vector<std::string> groups_to_erase;
  // Wake waiters even when nothing is written (a cancellation flag, ...).
  bool notify = false;
  // Attempts that ended, with how long they ran (only attempts started
  // since the coordinator did).
  std::vector<EndedAttempt> ended_attempts;
};

// How an attempt of a stage ended. kWorkerLost and kGangFault count as
// losses (max_worker_losses), kFailed as failed attempts (max_attempts).
enum class AttemptEnd {
  kWorkerLost,         // a worker of the attempt was declared lost
  kGangFault,          // a gang's collectives broke and no peer is to blame
  kFailed,             // the stage itself failed (a training error)
  kFailedPermanently,  // ... in a way every attempt would repeat
};

struct CoordinatorStateOptions {
  // Failed attempts before a stage fails its job. Default 3.
  int max_attempts = 3;
  // Lost workers a stage survives before it fails its job. Default 10.
  int max_worker_losses = 10;
};

class CoordinatorState {
 public:
  // `store` and `clock` are not owned and must outlive this object.
  CoordinatorState(CoordinatorStateOptions options, JobStore* store, Clock* clock);
  CoordinatorState(const CoordinatorState&) = delete;
  CoordinatorState& operator=(const CoordinatorState&) = delete;

  // Replaces the tables with the store's unfinished state and repairs what
  // a crash or time can leave (assignments without a live worker, RUNNING
  // stages missing an assignment, CANCELLING jobs with nothing running),
  // recording the repairs in `txn` (not committed). Every known worker gets
  // a fresh lease. The store's error when it cannot be read; the tables
  // are then unchanged.
  absl::Status Load(StateTxn& txn);

  // What `txn` changed, as one store write (the rows as memory holds them
  // now). The caller commits it, then calls Committed(txn); when the commit
  // fails memory runs ahead of the store and the caller must Load() again.
  StoreWrite BuildWrite(const StateTxn& txn) const;
  // After `txn`'s write is durable: its events become visible to watchers
  // (durable_last_event, events_changed) and finished jobs leave memory.
  void Committed(const StateTxn& txn);
  // Wakes every job's watchers (after a failed commit).
  void WakeAllWatchers();

  // ---- The tables ----------------------------------------------------------
  // Unfinished jobs by name, and the same in scheduling order
  // (-priority, create_seq).
  absl::flat_hash_map<std::string, std::unique_ptr<JobEntry>>& jobs() { return jobs_; }
  std::map<std::pair<int64_t, int64_t>, JobEntry*>& job_order() { return job_order_; }
  // Workers by name (lost ones too), and their names in registration order.
  absl::flat_hash_map<std::string, WorkerEntry>& workers() { return workers_; }
  std::map<int64_t, std::string>& worker_order() { return worker_order_; }
  const absl::flat_hash_map<std::string, WorkerEntry>& workers() const { return workers_; }
  const std::map<int64_t, std::string>& worker_order() const { return worker_order_; }
  // Assignments not yet released by their worker.
  absl::flat_hash_map<std::string, coordinator::AssignmentRecord>& assignments() {
    return assignments_;
  }
  // Adds a new job (create_seq already set) to both job tables.
  void AddJob(std::unique_ptr<JobEntry> job);
  int64_t NextCreateSeq() { return next_create_seq_++; }
  // The largest job name the store held when it was loaded or that was
  // made since ("" for none): a new name above it cannot be in the store
  // (the coordinator is its only writer), so it needs no look-up there.
  const std::string& largest_job_name() const { return largest_job_name_; }
  void NoteJobName(const std::string& name) {
    if (name > largest_job_name_) largest_job_name_ = name;
  }
  // Registers `worker` idle as `name` (not yet taken) with a fresh lease,
  // its key's and (when bound to one) its client certificate's SHA-256.
  void AddWorker(StateTxn& txn, const mpt::v1::Worker& worker, const std::string& name,
                 const std::string& key_sha256, const std::string& cert_sha256 = "");
  // Forgets a (lost) worker's record.
  void ForgetWorker(StateTxn& txn, const std::string& name);
  // True when assignment `id` was released recently (bounded memory).
  bool WasReleased(const std::string& id) const { return released_.count(id) > 0; }
  // The worker that held assignment `id`, when it was released recently;
  // nullptr otherwise.
  const std::string* ReleasedHolder(const std::string& id) const {
    auto it = released_.find(id);
    return it == released_.end() ? nullptr : &it->second;
  }

  // ---- Lookups (nullptr when absent) --------------------------------------
  JobEntry* FindJob(const std::string& name);
  StageEntry* FindStage(JobEntry* job, const std::string& stage_id);
  // nullptr for unknown and lost workers.
  WorkerEntry* FindLiveWorker(const std::string& name);
  // The job as the API shows it, stages included.
  mpt::v1::Job PublicJob(const JobEntry& job) const;
  int LiveAssignmentsOfJob(const std::string& job) const;
  // QUEUED and every stage it depends on SUCCEEDED.
  bool StageReady(const JobEntry& job, const StageEntry& stage) const;

  // ---- Transitions ---------------------------------------------------------
  void MarkJob(StateTxn& txn, JobEntry* job);
  void MarkStage(StateTxn& txn, JobEntry* job, StageEntry* stage);
  // Appends the job's next event (time, state, stage and its state).
  void AddEvent(StateTxn& txn, JobEntry* job, const StageEntry* stage,
                const std::string& message, const mpt::v1::Progress* progress = nullptr);
  // Starts the next attempt of `stage` with rank r on workers[r]; `note`
  // (may be empty) is added to the start event.
  void StartStage(StateTxn& txn, JobEntry* job, StageEntry* stage,
                  const std::vector<WorkerEntry*>& workers, const std::string& collective,
                  const std::string& note = "");
  // Ends the running attempt: requeues the stage, or fails the job when the
  // stage is out of attempts (max_attempts) or losses (max_worker_losses).
  void EndAttempt(StateTxn& txn, JobEntry* job, StageEntry* stage, AttemptEnd how,
                  const std::string& reason);
  void StageSucceeded(StateTxn& txn, JobEntry* job, StageEntry* stage);
  // Moves an unfinished job to `state`, cancelling what still runs.
  void FinishJob(StateTxn& txn, JobEntry* job, mpt::v1::JobState state, const std::string& error);
  // CANCELLING -> CANCELLED once nothing of the job runs.
  void MaybeFinishCancel(StateTxn& txn, JobEntry* job);
  void CancelAssignment(StateTxn& txn, const std::string& id);
  // Forgets a live assignment and frees its worker.
  void ReleaseAssignment(StateTxn& txn, const std::string& id);
  // Marks `worker` lost and requeues its assignments' stages.
  void DeclareLost(StateTxn& txn, WorkerEntry* worker, const std::string& reason);
  // Decides a RUNNING gang attempt one of whose ranks reported a peer
  // failure (stage->peer_failure_since set), by the other ranks' workers:
  // - one that has been silent (no heartbeat, poll, progress or upload)
  //   longer than `silence` is to blame: it is declared lost (the longest
  //   silent first), which requeues the gang as a lost worker;
  // - otherwise, when no other rank still runs (every one reported or was
  //   released), or the first report is `wait` old, the attempt ends as a
  //   kGangFault;
  // - otherwise nothing happens yet: a rank that hit a real error reports
  //   it soon (CompleteAssignment without peer_failure fails the attempt
  //   as kFailed), a dead one falls silent. Call again later.
  // True when the attempt ended.
  bool ResolvePeerFailure(StateTxn& txn, JobEntry* job, StageEntry* stage,
                          absl::Duration silence, absl::Duration wait);
  void DropArtifact(StateTxn& txn, JobEntry* job, const std::string& name);
  // Cancels an unfinished, not yet CANCELLING job: CANCELLED at once when
  // nothing of it runs, else CANCELLING with its assignments cancelled.
  void RequestCancel(StateTxn& txn, JobEntry* job);
  // Records an uploaded blob as the `kind` ("adapter" or "checkpoint")
  // artefact of the running `stage` and returns the artefact; the stage's
  // previous adapter or checkpoint is dropped.
  mpt::v1::Artifact RecordArtifact(StateTxn& txn, JobEntry* job, StageEntry* stage,
                                   const std::string& kind, int64_t step,
                                   const std::string& sha256, int64_t size_bytes);

 private:
  // Records in `txn` that `stage`'s running attempt ended with `outcome`.
  void AttemptEnded(StateTxn& txn, StageEntry* stage, const char* outcome);

  const CoordinatorStateOptions options_;
  JobStore* const store_;
  Clock* const clock_;

  absl::flat_hash_map<std::string, std::unique_ptr<JobEntry>> jobs_;
  std::map<std::pair<int64_t, int64_t>, JobEntry*> job_order_;
  int64_t next_create_seq_ = 1;
  std::string largest_job_name_;
  absl::flat_hash_map<std::string, WorkerEntry> workers_;
  std::map<int64_t, std::string> worker_order_;
  int64_t next_register_seq_ = 1;
  absl::flat_hash_map<std::string, coordinator::AssignmentRecord> assignments_;
  // Assignments released recently (a repeated CompleteAssignment is OK for
  // its worker) -> the worker that held it; bounded, oldest dropped first.
  std::map<std::string, std::string> released_;
  std::vector<std::string> released_order_;
};

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_STATE_H_
