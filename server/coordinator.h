// The coordinator's logic: jobs and their stages, the scheduler, the worker
// registry and leases, artefacts, job events and the rendezvous store, behind
// the RPC semantics documented in proto/mpt/v1/service.proto. The gRPC layer
// (grpc_service.h) only converts messages and statuses and calls in here;
// tests call it directly, without sockets.
//
//   ASSIGN_OR_RETURN(auto store, SqliteJobStore::Open(db_path));
//   ASSIGN_OR_RETURN(auto blobs, ArtifactStore::Open(artifact_dir));
//   ASSIGN_OR_RETURN(auto coordinator,
//                    Coordinator::Create(options, std::move(store),
//                                        std::move(blobs),
//                                        std::make_shared<RealClock>()));
//   coordinator->Start();  // the lease checker
//
// Durability: every call that changes state writes the change to the
// JobStore in one transaction before it returns OK. When that write fails
// the in-memory state is reloaded from the store (as after a restart) and
// the call returns the store's error (UNAVAILABLE or INTERNAL), so memory
// never runs ahead of disk. Not written, on purpose: heartbeat times (every
// worker gets a fresh lease after a restart) and progress reports that the
// event rate limit drops (progress is saved with the next event).
//
// Scheduling (the decision: Schedule() in scheduler.h):
// - A stage is ready when every stage it depends on SUCCEEDED. Ready stages
//   are served in job order: higher Job.priority first, then submission
//   order; within a job, in stage order (sources, distillation, targets).
// - A worker runs one assignment at a time, or one pack: ready source
//   stages that found no idle worker ride on a source stage started in the
//   same pass with the same base model and prompt shape (max_pack_size).
//   Each stage of a pack has its own assignment, so progress, logs,
//   artefacts, failures, cancellation and a lost worker's requeue stay per
//   stage; PollAssignment returns them as one Assignment with `packed`.
//   A worker can take a job when its
//   Worker.models lists the job's base_model exactly as the spec names it,
//   or lists no model at all.
// - A stage with world_size W > 1 (distillation) starts as a gang only when
//   W eligible workers are idle at once and share a collective ("nccl" if
//   all W list it, else "gloo"; a worker that lists no collective counts as
//   "gloo"). Ranks 0..W-1 go to the workers in registration order; all get
//   the same group.
// - No starvation by gangs: a gang that cannot start yet holds the eligible
//   idle workers it will use, so lower-ranked work cannot keep taking them,
//   but only while enough live eligible workers are registered for it to
//   start once busy ones finish. When fewer than W eligible workers exist at
//   all it holds none (the job gets an event saying so) and the queue
//   behind it keeps running. A hold therefore lasts at most as long as the
//   assignments already running.
//
// Leases: a worker that neither heartbeats nor polls for `lease` is lost;
// its assignments are requeued and restart from their stage's newest
// checkpoint (AssignmentInput role "checkpoint"). Losing one rank of a gang
// cancels the other ranks and requeues the whole gang. A stage that loses
// its worker more than max_worker_losses times fails its job.
//
// Gang faults: a gang rank that completes with peer_failure (its
// collective broke) is not blamed. The coordinator looks at the other
// ranks' workers: one silent for more than two heartbeat intervals (at
// most `lease`) is declared lost at once, so a killed peer requeues the
// gang within seconds rather than a lease; a peer that reports a real
// error instead fails the attempt as usual; when every rank's worker keeps
// heartbeating for a whole lease (or every rank reported a peer failure),
// the attempt ends as a gang fault. Lost workers and gang faults count
// against max_worker_losses, never against max_attempts. A frozen peer
// whose survivors sit in a collective is lost when its lease runs out; the
// survivors' assignments are cancelled and their workers abort the
// collective.
//
// Thread-safety: every method may be called from any thread. One mutex
// guards the scheduling state, but nobody holds it while a commit is
// fsynced: writes are group-committed (group_commit.h) and each call waits,
// unlocked, for its own write to be durable before it answers. GetJob reads
// committed copies of unfinished jobs (published_jobs.h); finished jobs,
// the pages of ListJobs, event logs and artefact bytes are read from the
// store (a page takes each unfinished job it lists from those copies). None
// of these take the mutex or wait for a commit.
#ifndef MPT_SERVER_COORDINATOR_H_
#define MPT_SERVER_COORDINATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metrics_registry.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/artifact_store.h"
#include "server/clock.h"
#include "server/coordinator_state.h"
#include "server/coordinator_state.pb.h"
#include "server/group_commit.h"
#include "server/job_event_notifier.h"
#include "server/job_store.h"
#include "server/published_jobs.h"
#include "server/rendezvous_kv.h"

namespace mpt {

struct CoordinatorOptions {
  // How often workers are told to heartbeat
  // (RegisterWorkerResponse.heartbeat_seconds). Default 2 s.
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // A worker that neither heartbeats nor polls for this long is declared
  // lost and its assignments are requeued. Must exceed heartbeat_interval.
  // Default 10 s.
  absl::Duration lease = absl::Seconds(10);
  // The largest distillation.world_size a job may ask for: the number of
  // workers the cluster will ever have for one gang. A larger request is
  // INVALID_ARGUMENT at submission instead of waiting forever. Default 8.
  int max_world_size = 8;
  // Attempts a stage gets when its worker reports failure
  // (CompleteAssignment ok = false); after the last one the job FAILS with
  // the error. Default 3.
  int max_attempts = 3;
  // Times a stage may be requeued because a worker was lost before its job
  // fails (a stage that kills its worker every time must end). Default 10.
  int max_worker_losses = 10;
  // Check at submission that base_model is a folder and every train_path
  // and eval_path a file, as the coordinator sees the file system. Turn on
  // only where the coordinator sees the same files as the workers (one
  // machine, or a shared file system). Default false.
  bool check_spec_files = false;
  // JobPlannerOptions::data_roots. Default empty: any path.
  std::vector<std::string> data_roots;
  // At most one progress event per stage in this interval; reports that
  // carry metrics or a message may come ten times as often. Default 1 s.
  absl::Duration progress_event_interval = absl::Seconds(1);
  // The largest artefact UploadArtifact accepts: an upload that grows past
  // it is refused (INVALID_ARGUMENT naming `data`) as soon as it does.
  // Uploads go to a temporary file, never to memory, so this bounds disk
  // use per upload; an adapter is read back once to be validated.
  // Default 1 GiB.
  int64_t max_artifact_bytes = int64_t{1} << 30;
  // Uploads received at once; one more is UNAVAILABLE (workers retry it)
  // until one ends. An assignment has at most kMaxUploadsPerAssignment at
  // once (a checkpoint and the adapter may overlap). Default 8.
  int max_concurrent_uploads = 8;
  // Lost workers stay in ListWorkers this long. Default 1 h.
  absl::Duration lost_worker_retention = absl::Hours(1);
  // The most single-worker source stages (of one job or several, with the
  // same base model and prompt shape) that one worker trains in one pass,
  // as one pack of assignments (Assignment.packed); each worker's own
  // Worker.max_pack_size caps it further, and a worker that sets none gets
  // no pack. Only stages that found no idle worker of their own are
  // packed, so packing never leaves a worker idle. 1: no packing. Default
  // 8: the worker decides (its --max_pack_size is one per lane on a CPU,
  // where it trains a pack side by side, and 8 on a GPU).
  int max_pack_size = 8;
  // How often the thread started by Start() checks leases. Default 0.5 s.
  absl::Duration maintenance_interval = absl::Milliseconds(500);
  // Borrowed, may be null (default): when set, every stage attempt that
  // ends after its commit is observed in seconds, labelled
  // {stage_kind, outcome} (coordinator_metrics.h makes it).
  HistogramFamily* stage_duration = nullptr;
};

// Figures of the scheduling state for monitoring (ReadClusterStats()).
struct ClusterStats {
  // Unfinished jobs in memory.
  int64_t unfinished_jobs = 0;
  // QUEUED stages whose dependencies all SUCCEEDED: waiting for workers.
  int64_t ready_stages = 0;
  // Assignments handed out and not yet released.
  int64_t live_assignments = 0;
  // Registered workers by state ("idle", "busy", "lost").
  std::map<std::string, int64_t> workers_by_state;
};

// What WaitForJobEvents() returns.
struct JobEventBatch {
  // New events in sequence order (may be empty when the wait timed out).
  std::vector<mpt::v1::JobEvent> events;
  // True when the job is in a final state and its last event has been
  // returned (now or before `after_sequence`): the watch is over.
  bool done = false;
};

// An artefact's record and its bytes, checked against the record's hash.
struct ArtifactContent {
  mpt::v1::Artifact artifact;
  std::string data;
};

// An artefact opened for streaming (Coordinator::OpenArtifact()).
struct ArtifactReader {
  mpt::v1::Artifact artifact;
  // Its bytes, artifact.size_bytes() of them; the last piece of an in-order
  // read is DATA_LOSS when they no longer match artifact.sha256.
  std::unique_ptr<ArtifactStore::BlobReader> blob;
};

class Coordinator;

// An upload in progress (Coordinator::BeginUpload()): its header was
// checked, its bytes go to a temporary file of the artefact store as they
// arrive. Destroying it without Coordinator::FinishUpload() drops them and
// frees its place among the uploads in flight. Must not outlive the
// Coordinator. Not thread-safe (one per call).
class ArtifactUpload {
 public:
  ~ArtifactUpload();
  ArtifactUpload(const ArtifactUpload&) = delete;
  ArtifactUpload& operator=(const ArtifactUpload&) = delete;

  // Appends bytes. INVALID_ARGUMENT naming `data` once the artefact grows
  // past max_artifact_bytes; UNAVAILABLE when the disk write fails. The upload
  // is over after an error.
  absl::Status Append(absl::string_view data);
  int64_t size() const { return blob_->size(); }
  const mpt::v1::UploadArtifactRequest::Header& header() const { return header_; }

 private:
  friend class Coordinator;
  ArtifactUpload(Coordinator* owner, mpt::v1::UploadArtifactRequest::Header header,
                 std::unique_ptr<ArtifactStore::BlobWriter> blob, int64_t max_bytes)
      : owner_(owner), header_(std::move(header)), blob_(std::move(blob)),
        max_bytes_(max_bytes) {}

  Coordinator* const owner_;
  const mpt::v1::UploadArtifactRequest::Header header_;
  std::unique_ptr<ArtifactStore::BlobWriter> blob_;
  const int64_t max_bytes_;
  bool failed_ = false;
};

class Coordinator {
 public:
  // Uploads of one assignment received at once.
  static constexpr int kMaxUploadsPerAssignment = 2;
  // A failure to write the artefact store is logged at most this often.
  static constexpr absl::Duration kStorageFaultLogInterval = absl::Minutes(1);

  // Builds the coordinator over `store` and `artifacts` and resumes every
  // unfinished job found in the store: QUEUED stages stay queued, stages
  // whose assignments have no live worker are requeued, and every known
  // worker gets a fresh lease to heartbeat again. `clock` null means a
  // RealClock. INVALID_ARGUMENT for inconsistent options; the store's error
  // when its state cannot be read.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      CoordinatorOptions options, std::unique_ptr<JobStore> store,
      std::unique_ptr<ArtifactStore> artifacts, std::shared_ptr<Clock> clock);

  // Calls Shutdown().
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Starts the background thread that checks leases every
  // maintenance_interval. Tests that drive a FakeClock call CheckLeases()
  // themselves instead. Calling it twice does nothing more.
  void Start();

  // Stops the lease checker and wakes every blocked call (long polls,
  // watches, StoreGet), which return UNAVAILABLE. Idempotent.
  void Shutdown();

  const CoordinatorOptions& options() const { return options_; }

  // ---- JobService ----------------------------------------------------------

  // Validates the request, fills the spec's defaults, expands the job into
  // stages and queues it. Returns the job as stored. INVALID_ARGUMENT
  // naming the field for a bad request (unknown kind, a spec the
  // validators reject, a world size above max_world_size, a missing data
  // file when check_spec_files is on); NOT_FOUND naming the field when a
  // single-stage spec names an artefact that does not exist. Nothing is
  // stored on error. A request_id seen before returns the job it created
  // when the request asks for the same job (RequestFingerprint() of the
  // planned spec, kind and display_name, compared with the stored job's);
  // ALREADY_EXISTS naming request_id when it asks for a different one.
  absl::StatusOr<mpt::v1::Job> SubmitJob(const mpt::v1::SubmitJobRequest& request);
  // SubmitJob() without a blocked thread: `done` gets the same answer,
  // either before this returns (errors, a repeated request_id) or later on
  // the group commit's thread once the job is durable. `done` must not call
  // into the Coordinator's job-changing methods on that thread (answering
  // an RPC is what it is for).
  struct SubmittedJob {
    std::shared_ptr<const mpt::v1::Job> job;
    // `*job` serialized (what the gRPC service sends; GetJob sends the same
    // bytes until the job changes).
    std::shared_ptr<const std::string> serialized;
  };
  using SubmitDone = absl::AnyInvocable<void(absl::StatusOr<SubmittedJob>) &&>;
  void SubmitJobAsync(const mpt::v1::SubmitJobRequest& request, SubmitDone done);

  // INVALID_ARGUMENT for a name that is not "jobs/{id}"; NOT_FOUND.
  absl::StatusOr<mpt::v1::Job> GetJob(const std::string& name);
  // GetJob() serialized (what the gRPC layer sends): an unfinished job's
  // bytes are made once per committed version, a finished job's are
  // spliced from the stored records (proto_wire.h). Same errors.
  absl::StatusOr<std::shared_ptr<const std::string>> GetJobSerialized(const std::string& name);

  // Newest first. page_size 0 means 50, above 1000 means 1000, negative is
  // INVALID_ARGUMENT. The page token is opaque, stays valid while jobs are
  // added, and must come with the same filters (INVALID_ARGUMENT
  // otherwise); the view (JOB_VIEW_BASIC: without spec and artefacts) may
  // change between pages.
  absl::StatusOr<mpt::v1::ListJobsResponse> ListJobs(const mpt::v1::ListJobsRequest& request);
  // ListJobs() as a serialized ListJobsResponse, spliced from the stored
  // records without parsing them; a job that the page finds in the state
  // its published copy has is that copy (each job as GetJob shows it).
  // Same errors.
  absl::StatusOr<std::string> ListJobsSerialized(const mpt::v1::ListJobsRequest& request);

  // QUEUED (or RUNNING with nothing running now) -> CANCELLED at once;
  // with assignments running -> CANCELLING, and CANCELLED once every one of
  // them stopped (completed, polled again, or its worker was lost).
  // Cancelling a CANCELLING job returns it unchanged. FAILED_PRECONDITION for
  // a job in a final state; NOT_FOUND; INVALID_ARGUMENT for a bad name.
  absl::StatusOr<mpt::v1::Job> CancelJob(const std::string& name);

  // The events of job `name` after `after_sequence`, waiting until
  // `deadline` for new ones when there are none yet. At most 500 events a
  // call. NOT_FOUND; INVALID_ARGUMENT for a bad name, a negative
  // after_sequence or one beyond the job's last event; UNAVAILABLE after
  // Shutdown().
  absl::StatusOr<JobEventBatch> WaitForJobEvents(const std::string& name, int64_t after_sequence,
                                                 absl::Time deadline);

  // Calls the listeners of a job whenever events of it are committed, and
  // every listener after a failed commit and at Shutdown(): watch streams
  // register here instead of blocking in WaitForJobEvents(), then read with
  // a deadline in the past.
  JobEventNotifier& job_event_notifier() { return notifier_; }

  // The artefact named "jobs/{job}/artifacts/{id}" and its bytes.
  // INVALID_ARGUMENT for a malformed name; NOT_FOUND when no such artefact
  // is recorded; DATA_LOSS naming the blob's file when the stored bytes no
  // longer match their hash, or the file of a recorded artefact is missing
  // or cannot be read.
  absl::StatusOr<ArtifactContent> ReadArtifact(const std::string& name);
  // The same artefact opened to be read piece by piece (downloads: memory
  // bounded by a piece, whatever the artefact's size), with the same errors;
  // a corrupt blob shows when its last piece is read.
  absl::StatusOr<ArtifactReader> OpenArtifact(const std::string& name);

  // Every registered worker (lost ones for lost_worker_retention), in
  // registration order.
  mpt::v1::ListWorkersResponse ListWorkers();

  // ---- Monitoring (never waits for a commit) -------------------------------

  // Counts of the scheduling state; holds the coordinator's mutex only to
  // count.
  ClusterStats ReadClusterStats();
  // The job store's counts (JobStore::ReadStats()); does not take the
  // mutex.
  absl::StatusOr<StoreStats> ReadStoreStats();
  // Up to `limit` committed events of job `name` after `after_sequence`,
  // from the store, without waiting and without the mutex.
  // INVALID_ARGUMENT for a bad name or a negative after_sequence; an
  // unknown job has no events.
  absl::StatusOr<std::vector<mpt::v1::JobEvent>> ReadCommittedEvents(const std::string& name,
                                                                     int64_t after_sequence,
                                                                     int limit);

  // Log lines of job `request.name()` (of one stage, or of all), paged by
  // line number (stage_logs.h). INVALID_ARGUMENT naming the field for a
  // malformed name or stage id, a negative after_line or page_size, or an
  // after_line beyond the job's last line (as WatchJob's after_sequence);
  // NOT_FOUND for an unknown job, or (naming `stage`) a stage the job does
  // not have. Reads committed state only; takes no lock.
  absl::StatusOr<mpt::v1::GetStageLogsResponse> GetStageLogs(
      const mpt::v1::GetStageLogsRequest& request);

  // ---- WorkerService -------------------------------------------------------

  // Registers a new worker (the request's name is ignored) and gives it a
  // lease. INVALID_ARGUMENT naming the field for a field out of its bounds
  // (CheckWorkerRegistration() in coordinator_requests.h: hostname, device,
  // models, collectives, memory_bytes, max_pack_size); RESOURCE_EXHAUSTED
  // when kMaxRegisteredWorkers are registered (lost ones included while
  // they are retained).
  // `cert_sha256`: the SHA-256 of the client certificate the worker
  // registers with, when workers are bound to certificates ("" otherwise);
  // its later calls must then present the same certificate.
  absl::StatusOr<mpt::v1::RegisterWorkerResponse> RegisterWorker(
      const mpt::v1::Worker& worker, const std::string& cert_sha256 = "");

  // Whether a WorkerService call naming `worker` may proceed: `key` (the
  // call's kWorkerKeyMetadata metadata) must be that worker's key.
  // UNAUTHENTICATED otherwise; OK as well when no known worker is named
  // (the call itself reports that) or the worker was registered before
  // workers had keys. `cert_sha256`, when given (workers bound to
  // certificates), is the SHA-256 of the call's client certificate ("" for
  // none): a worker that registered with a certificate must present that
  // one, PERMISSION_DENIED otherwise.
  absl::Status CheckWorkerKey(absl::string_view worker, absl::string_view key,
                              const std::optional<std::string>& cert_sha256 = std::nullopt);
  // The same for a call that names no worker (FetchArtifact): `key` must be
  // a live worker's (and, with `cert_sha256`, one bound to that certificate
  // or to none).
  absl::Status CheckAnyWorkerKey(absl::string_view key,
                                 const std::optional<std::string>& cert_sha256 = std::nullopt);

  // Renews the lease; lists the worker's assignments that must stop.
  // NOT_FOUND when the worker is unknown or was declared lost: register
  // again.
  absl::StatusOr<mpt::v1::HeartbeatResponse> Heartbeat(const std::string& worker);

  // The worker's current assignment, waiting until `deadline` for one;
  // nullopt when there is none by then. A poll renews the lease while it
  // waits, releases the worker's cancelled assignments (polling means it
  // stopped them) and returns the same running assignment again until it is
  // completed, so a lost response loses no work. NOT_FOUND as for
  // Heartbeat; UNAVAILABLE after Shutdown().
  absl::StatusOr<std::optional<mpt::v1::Assignment>> PollAssignment(const std::string& worker,
                                                                    absl::Time deadline);

  // Records the progress of a running assignment (rank 0's is shown for a
  // gang), renews its worker's lease and, within the rate limit, appends a
  // job event. `cancelled` tells the worker to stop. NOT_FOUND for an
  // unknown assignment; INVALID_ARGUMENT naming the field for progress out
  // of its bounds (CheckProgress() in coordinator_requests.h). A message
  // longer than kMaxEventMessageBytes is cut, ending in " [cut]".
  absl::StatusOr<mpt::v1::ReportProgressResponse> ReportProgress(
      const mpt::v1::ReportProgressRequest& request);

  // Stores `data` (checked against `sha256`, hex) as an artefact of the
  // assignment's stage: a "checkpoint" becomes the stage's resume point (the
  // one it replaces is deleted); an "adapter" becomes the stage's result
  // when the assignment completes ok. INVALID_ARGUMENT for a missing
  // assignment, an unknown kind, a malformed hash or data over
  // max_artifact_bytes; NOT_FOUND for an unknown assignment;
  // FAILED_PRECONDITION when the assignment was cancelled; DATA_LOSS when
  // the bytes do not match `sha256` (nothing is stored; upload again);
  // UNAVAILABLE naming the file and the errno's text when the artefact
  // store cannot be written (full disk, read-only or immutable folder):
  // the worker retries, the attempt is not failed, and the fault is logged
  // at most once per kStorageFaultLogInterval. Bytes equal to a stored
  // blob that was damaged on disk replace it (logged). BeginUpload(),
  // Append() and FinishUpload() in one call, for bytes held in memory.
  absl::StatusOr<mpt::v1::Artifact> UploadArtifact(
      const mpt::v1::UploadArtifactRequest::Header& header, absl::string_view data,
      absl::string_view sha256);
  // UploadArtifact() for a stream, checked before any byte is accepted:
  // INVALID_ARGUMENT naming the field for a header without assignment or
  // worker, with an unknown kind or a negative step; NOT_FOUND for an
  // unknown assignment; FAILED_PRECONDITION when `header.worker` does not
  // hold it, it was cancelled, or (an adapter) its stage no longer runs;
  // UNAVAILABLE when max_concurrent_uploads uploads (or
  // kMaxUploadsPerAssignment of this assignment) are in flight, at
  // shutdown, or when the artefact store cannot create the upload's file.
  absl::StatusOr<std::unique_ptr<ArtifactUpload>> BeginUpload(
      const mpt::v1::UploadArtifactRequest::Header& header);
  // Ends `upload` as UploadArtifact() does with the bytes appended and
  // `sha256` (INVALID_ARGUMENT when it is not 64 hex digits).
  absl::StatusOr<mpt::v1::Artifact> FinishUpload(std::unique_ptr<ArtifactUpload> upload,
                                                 absl::string_view sha256);

  // Ends an assignment. ok: the rank is done; the stage SUCCEEDS when every
  // rank is done and an adapter was uploaded (no adapter: the attempt
  // fails). Not ok: the attempt fails, the gang's other ranks are cancelled
  // and the stage is retried from its checkpoint, up to max_attempts
  // (`permanent` fails at once); then the job FAILS with the error. Not ok
  // with peer_failure on a gang rank: see "Gang faults" above (the peer
  // that fell silent is declared lost; nothing counts against
  // max_attempts).
  // Completing a cancelled assignment just releases it. NOT_FOUND for an
  // unknown assignment; completing the same one twice is OK for the worker
  // that held it (FAILED_PRECONDITION for any other). INVALID_ARGUMENT
  // naming the field for final_progress out of its bounds; an error longer
  // than kMaxErrorBytes is cut, ending in " [cut]".
  absl::Status CompleteAssignment(const mpt::v1::CompleteAssignmentRequest& request);

  // The rendezvous store. Values replace earlier ones. `request.group`
  // must be the group of a running stage attempt (Assignment.group,
  // "jobs/{job}/stages/{stage}/attempts/{n}"): NOT_FOUND for any other, so
  // groups exist only while their attempt runs and are dropped when it
  // ends. Only a member of the attempt may use it: `request.assignment`
  // must be a rank of that attempt (NOT_FOUND when it is unknown,
  // FAILED_PRECONDITION when it belongs to another group) held by
  // `request.worker` (FAILED_PRECONDITION for another worker).
  // INVALID_ARGUMENT for an empty group, key, assignment or worker, a name
  // over its size limit, or a value over 1 MiB; RESOURCE_EXHAUSTED at a
  // limit of the store (rendezvous_kv.h: keys and bytes a group, groups and
  // bytes in all).
  absl::Status StoreSet(const mpt::v1::StoreSetRequest& request);

  // The values of `request.keys` in order, waiting until `deadline` for
  // all to exist; the caller is checked as for StoreSet.
  // DEADLINE_EXCEEDED naming the missing keys; INVALID_ARGUMENT for an
  // empty key list or a name over its size limit; UNAVAILABLE after
  // Shutdown().
  absl::StatusOr<std::vector<std::string>> StoreGet(const mpt::v1::StoreGetRequest& request,
                                                    absl::Time deadline);

  // ---- Maintenance -----------------------------------------------------------

  // Declares lost every worker whose lease ran out (by the clock) and
  // requeues its assignments; forgets workers lost longer than
  // lost_worker_retention. Start()'s thread calls it periodically.
  absl::Status CheckLeases();

 private:
  Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store,
              std::unique_ptr<ArtifactStore> artifacts, std::shared_ptr<Clock> clock);

  // Replaces the in-memory state with the store's, repairs what a crash
  // can leave, schedules and writes the repairs (no reload on failure).
  absl::Status LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `txn`'s write for the group commit and waits for it with mu_
  // RELEASED (callers must not keep pointers into the state across it). OK:
  // publishes the jobs it changed, erases the rendezvous groups of ended
  // attempts, deletes blobs nothing refers to any more and wakes waiters.
  // Otherwise logs the store's error, reloads from the store when
  // `reload_on_failure` (a failed reload is logged) and returns the
  // store's error.
  absl::Status CommitLocked(StateTxn& txn, bool reload_on_failure = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CommitLocked() in two halves, for callers that do not wait: the first
  // queues the write (`on_resolved` is the committer's callback, see
  // group_commit.h) and snapshots the jobs it changes; the second, called
  // with mu_ held once the ticket is resolved with `status`, does the rest.
  struct PendingCommit {
    int64_t ticket = 0;
    bool queued = false;  // false: nothing to write
    std::vector<std::shared_ptr<const mpt::v1::Job>> snapshots;
    // Set by the caller before the second half: the bytes of the snapshot
    // that is `known` (below), published with it.
    std::shared_ptr<const mpt::v1::Job> known;
    std::shared_ptr<const std::string> known_serialized;
  };
  // `known`, when set, is the caller's snapshot of one of the changed jobs,
  // taken under the same lock; it is used instead of another copy.
  PendingCommit QueueCommitLocked(StateTxn& txn, GroupCommitter::Callback on_resolved,
                                  std::shared_ptr<const mpt::v1::Job> known = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CompleteCommitLocked(StateTxn& txn, PendingCommit& pending,
                                    const absl::Status& status, bool reload_on_failure)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // SubmitJobAsync() up to the queued write. An answer to send now, or
  // nullopt when `done` was handed to the commit's callback.
  std::optional<absl::StatusOr<SubmittedJob>> QueueSubmission(
      const mpt::v1::SubmitJobRequest& request, SubmitDone& done);
  // Waits (mu_ released) until every write queued so far is durable.
  absl::Status AwaitDurableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a failed commit: reloads from the store unless another caller
  // already did (or `reload` is false), and wakes every waiter.
  void RecoverLocked(const absl::Status& failure, bool reload) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One scheduling pass (scheduler.h) over the state; starts what it
  // decides in `txn`.
  void ScheduleLocked(StateTxn& txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Adds `lines`, sent by the holder of assignment `rec`, to `txn` unless
  // its stage is gone or in a final state (its log is closed then).
  void AppendLogLinesLocked(StateTxn& txn, const coordinator::AssignmentRecord& rec,
                            const google::protobuf::RepeatedPtrField<mpt::v1::LogLine>& lines)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void MaintenanceLoop();
  // How long a gang peer may be silent before a peer failure reported by
  // another rank is blamed on it: two heartbeat intervals, at most the
  // lease.
  absl::Duration PeerSilence() const;

  const CoordinatorOptions options_;
  const std::unique_ptr<JobStore> store_;
  const std::unique_ptr<ArtifactStore> artifacts_;
  const std::shared_ptr<Clock> clock_;
  // Destroyed before store_: drains the queue first.
  GroupCommitter committer_;
  PublishedJobs published_;

  mutable absl::Mutex mu_;
  // The newest ticket queued, and the newest known durable.
  int64_t last_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t durable_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  // Idempotency keys whose job is queued but not yet durable -> ticket.
  absl::flat_hash_map<std::string, int64_t> pending_request_ids_ ABSL_GUARDED_BY(mu_);
  // Signalled (to all) whenever assignments or the shutdown flag change;
  // watchers wait on their job's events_changed instead.
  absl::CondVar changed_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Submissions queued for the group commit whose callback has not ended;
  // the destructor waits for none.
  int async_commits_ ABSL_GUARDED_BY(mu_) = 0;
  // Jobs, stages, workers and assignments, and their transactions.
  CoordinatorState state_ ABSL_GUARDED_BY(mu_);
  // Blobs being uploaded (hash -> uploads in flight): never garbage.
  absl::flat_hash_map<std::string, int> uploading_ ABSL_GUARDED_BY(mu_);
  // Uploads begun and not ended (ArtifactUpload objects alive), in all and
  // per assignment.
  int uploads_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> uploads_by_assignment_ ABSL_GUARDED_BY(mu_);
  friend class ArtifactUpload;
  // Called by ~ArtifactUpload().
  void EndUpload(const std::string& assignment);
  // OK when assignment `id` exists, is held by `worker` and is not
  // cancelled.
  absl::Status CheckUploadableLocked(const std::string& id, const std::string& worker)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK when `group` is the group of a running attempt and `assignment`, a
  // rank of that attempt, is held by `worker` (the rendezvous store's
  // caller check; see StoreSet()).
  absl::Status CheckGroupMemberLocked(const std::string& group, const std::string& assignment,
                                      const std::string& worker)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs a failure to write the artefact store (UNAVAILABLE from it) at
  // most once per kStorageFaultLogInterval (by clock_), with the number of
  // failures not logged since; every upload retry would log it otherwise.
  void NoteArtifactStoreFault(const absl::Status& fault) ABSL_LOCKS_EXCLUDED(fault_log_mu_);
  absl::Mutex fault_log_mu_;
  std::optional<absl::Time> last_fault_logged_ ABSL_GUARDED_BY(fault_log_mu_);
  int64_t faults_not_logged_ ABSL_GUARDED_BY(fault_log_mu_) = 0;
  absl::BitGen random_ ABSL_GUARDED_BY(mu_);
  // The newest job id made (resource_names.h, TimeOrderedId()).
  uint64_t last_job_id_ ABSL_GUARDED_BY(mu_) = 0;
  // (job, stage) of gang attempts with a peer failure not yet decided;
  // CheckLeases() decides them.
  std::set<std::pair<std::string, std::string>> peer_failures_ ABSL_GUARDED_BY(mu_);

  // The rendezvous store (its own lock, taken after mu_ when both are).
  RendezvousKv kv_;

  absl::Mutex maintenance_mu_;
  bool maintenance_stop_ ABSL_GUARDED_BY(maintenance_mu_) = false;
  std::thread maintenance_thread_;

  // Declared last: its thread calls into this object, so it stops first.
  JobEventNotifier notifier_;
};

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_H_
