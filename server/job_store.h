// Durable storage of the coordinator's state: jobs, their stages, live
// assignments, workers, artefact records, each job's event log and the
// idempotency keys of SubmitJob.
//
// The coordinator keeps the state of unfinished jobs in memory and writes
// every change through this interface, in one atomic Commit() per RPC,
// before it answers. On restart it reads the state back with LoadActive().
// Finished jobs are read from the store on demand (GetJob, ListJobs).
//
// Records are protos (server/coordinator_state.proto and the public ones of
// proto/mpt/v1/service.proto) stored as serialized blobs beside the columns
// that queries filter and sort on (state, kind, priority, create order).
#ifndef MPT_SERVER_JOB_STORE_H_
#define MPT_SERVER_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/coordinator_state.pb.h"

namespace mpt {

// Everything one Commit() writes; applied all or nothing. Upserts replace a
// row with the same key.
// An idempotency key's record: the job it created and the fingerprint of
// the request that created it (RequestFingerprint in job_planner.h). The
// fingerprint is empty for keys written before schema version 3.
struct RequestIdRecord {
  std::string request_id;
  std::string job;
  std::string fingerprint;
};

// Log lines a worker sent for one assignment of a stage (LogLine.sequence,
// time, severity, text set). The store keeps, per assignment, the last
// sequence it stored: lines numbered up to it are dropped (a batch sent
// again), a gap before a line adds a note saying how many lines the worker
// dropped. Each stored line gets the job's next line number. Then the
// stage's oldest lines are dropped (and counted) until it is within the
// store's bound.
struct StageLogAppend {
  std::string job;
  std::string stage;
  std::string assignment;
  std::vector<mpt::v1::LogLine> lines;
};

// What ReadStageLog() returns.
struct StageLogPage {
  // In line order; `line`, `stage` and `assignment` set.
  std::vector<mpt::v1::LogLine> lines;
  // More lines follow the page.
  bool more = false;
  // The number of the job's last line stored (over all its stages; 0 when
  // none was), read with the page.
  int64_t last_line = 0;
  // Per stage read: lines dropped to keep it within the bound (stages that
  // dropped none are absent).
  std::map<std::string, int64_t> dropped;
};

struct StoreWrite {
  std::vector<coordinator::JobRecord> jobs;  // key: job.name
  // key: (job name, stage.id)
  std::vector<std::pair<std::string, coordinator::StageRecord>> stages;
  std::vector<coordinator::AssignmentRecord> assignments;  // key: assignment.id
  std::vector<std::string> deleted_assignments;
  std::vector<coordinator::WorkerRecord> workers;  // key: worker.name
  std::vector<std::string> deleted_workers;
  std::vector<mpt::v1::Artifact> artifacts;  // key: name
  std::vector<std::string> deleted_artifacts;
  // Appended; key (job, sequence) must be new.
  std::vector<mpt::v1::JobEvent> events;
  // The key (request_id) must be new.
  std::vector<RequestIdRecord> request_ids;
  // Log lines, appended in order (see StageLogAppend).
  std::vector<StageLogAppend> logs;

  bool empty() const;
};

// Counts for monitoring (ReadStats()).
struct StoreStats {
  // Jobs and stages by state (the JobState enum's number -> count); states
  // with no job are absent.
  std::map<int, int64_t> jobs_by_state;
  std::map<int, int64_t> stages_by_state;
  int64_t artifacts = 0;
};

// Adds to `stage` (the public view of `record`) the progress a stage shows
// before its first report, its kind and task with the end unknown
// (eta_seconds -1), when it has none. The coordinator keeps no such
// progress in memory (it was a fifth of a queued job's memory there):
// records are planned without it, the store writes them with it (stored
// records, and what is read from them, are as they always were), and
// LoadActive() drops it again.
void AddInitialProgress(const coordinator::StageRecord& record, mpt::v1::Stage* stage);

// The state of every unfinished job, as the coordinator needs it to resume.
struct StoreSnapshot {
  // Jobs in QUEUED, RUNNING or CANCELLING, in create order.
  std::vector<coordinator::JobRecord> jobs;
  // The stages of those jobs: stages[i] are jobs[i]'s, in stage order.
  std::vector<std::vector<coordinator::StageRecord>> stages;
  std::vector<coordinator::AssignmentRecord> assignments;
  // Every worker record (lost ones included), in registration order.
  std::vector<coordinator::WorkerRecord> workers;
  // The largest create_seq ever stored (0 when empty).
  int64_t max_create_seq = 0;
  // The largest job name stored, finished jobs included, in byte order
  // ("" when there is none): a larger name is certainly free.
  std::string largest_job_name;
};

struct JobListFilter {
  // Empty: any.
  std::vector<mpt::v1::JobState> states;
  std::vector<mpt::v1::JobKind> kinds;
};

struct JobPage {
  std::vector<mpt::v1::Job> jobs;  // newest first, stages included
  // create_seq of the last job returned; pass it as `before_seq` for the
  // next page.
  int64_t last_seq = 0;
  bool more = false;  // there are further matching jobs
};

// ListJobs() in wire form (ListSerializedJobs()).
struct SerializedJobPage {
  // Each job (stages included) as a serialized mpt.v1.Job, newest first.
  std::vector<std::string> jobs;
  int64_t last_seq = 0;  // as JobPage
  bool more = false;     // as JobPage
};

// Where ListSerializedJobs() may take a job's bytes instead of reading them:
// given a job of the page and its state there, the job serialized in that
// state (the coordinator's published copy), or nullptr to read it.
using SerializedJobLookup =
    std::function<std::shared_ptr<const std::string>(const std::string& name,
                                                     mpt::v1::JobState state)>;

// Implementations are thread-safe.
class JobStore {
 public:
  virtual ~JobStore() = default;

  // Applies `write` atomically; when it returns OK the change is durable (see
  // the implementation for how durable). On error nothing is applied:
  // UNAVAILABLE for a busy or full disk (a retry may succeed), INTERNAL
  // otherwise.
  virtual absl::Status Commit(const StoreWrite& write) = 0;

  // Applies `writes` in order as one atomic transaction (group commit: one
  // fsync for all of them); errors as Commit(), and then none is applied.
  // The default concatenates them into one Commit(), which is right as long
  // as no key is deleted by one write and written again by a later one.
  virtual absl::Status CommitBatch(const std::vector<const StoreWrite*>& writes);

  // The job named `name` ("jobs/{id}") with its stages, or nullopt.
  virtual absl::StatusOr<std::optional<mpt::v1::Job>> ReadJob(const std::string& name) = 0;

  // Up to `page_size` jobs matching `filter` with create_seq < `before_seq`
  // (0: from the newest), newest first.
  virtual absl::StatusOr<JobPage> ListJobs(const JobListFilter& filter, int64_t before_seq,
                                           int page_size) = 0;

  // Whether job `name` is stored. The default calls ReadJob().
  virtual absl::StatusOr<bool> HasJob(const std::string& name);

  // ReadJob() and ListJobs() with each job serialized (the bytes parse as
  // the mpt.v1.Job the proto form returns; field order may differ). The
  // defaults serialize what ReadJob() and ListJobs() return.
  virtual absl::StatusOr<std::optional<std::string>> ReadSerializedJob(const std::string& name);
  // `lookup` (may be empty) supplies jobs it has in the page's state.
  virtual absl::StatusOr<SerializedJobPage> ListSerializedJobs(const JobListFilter& filter,
                                                               int64_t before_seq, int page_size,
                                                               const SerializedJobLookup& lookup);

  // Events of job `name` with sequence > `after_sequence`, in order, at most
  // `limit`.
  virtual absl::StatusOr<std::vector<mpt::v1::JobEvent>> ReadEvents(const std::string& name,
                                                                    int64_t after_sequence,
                                                                    int limit) = 0;

  // The record of `request_id`, or nullopt.
  virtual absl::StatusOr<std::optional<RequestIdRecord>> FindRequestId(
      const std::string& request_id) = 0;

  // The artefact record named `name`, or nullopt.
  virtual absl::StatusOr<std::optional<mpt::v1::Artifact>> ReadArtifact(
      const std::string& name) = 0;

  // How many artefact records refer to blob `sha256`.
  virtual absl::StatusOr<int64_t> CountArtifactsWithSha256(const std::string& sha256) = 0;

  // Everything LoadActive() describes.
  virtual absl::StatusOr<StoreSnapshot> LoadActive() = 0;

  // Counts of what the store holds, read in one transaction of the reading
  // connection (it never waits for a commit). The default is UNIMPLEMENTED
  // (stores for tests).
  virtual absl::StatusOr<StoreStats> ReadStats();

  // Up to `limit` log lines of job `job` with line > `after_line`, of stage
  // `stage` only unless it is empty, in line order. An unknown job or stage
  // has no lines.
  virtual absl::StatusOr<StageLogPage> ReadStageLog(const std::string& job,
                                                    const std::string& stage,
                                                    int64_t after_line, int limit) = 0;
};

struct SqliteJobStoreOptions {
  // PRAGMA synchronous: true (default) = FULL: with WAL, every commit fsyncs
  // the write-ahead log, so an acknowledged change survives a power loss or
  // a killed VM, not only a crashed process. false = NORMAL: commits survive
  // a crash of the coordinator but the last ones may be lost with the
  // machine; for benchmarks and tests.
  bool synchronous_full = true;
  // Migrate the database up to this schema version. Default: the newest
  // (kCurrentSchemaVersion); tests open older versions to check migrations.
  int target_schema_version = 0;
  // The bound of each stage's log: beyond either, its oldest lines are
  // dropped. Defaults 2000 lines and 512 KiB of text.
  int64_t max_log_lines_per_stage = 2000;
  int64_t max_log_bytes_per_stage = int64_t{512} << 10;
  // Check every page of the file when it is opened (PRAGMA quick_check) and
  // refuse a damaged one with DATA_LOSS. Default true.
  bool check_on_open = true;
  // With check_on_open: Open() starts the check on a thread of its own and
  // returns; the check runs beside the first LoadActive(), which waits for
  // it and fails with its DATA_LOSS, and every commit waits for it (and
  // fails the same way). For the coordinator's start, where the check and
  // the load share the cores instead of taking turns.
  bool check_in_background = false;
};

// SQLite in WAL mode. One connection writes, a second one reads, so reads
// (GetJob, ListJobs, WatchJob) do not wait for a commit's fsync. The path
// ":memory:" gives a private in-memory database (one connection) for tests.
// Every error SQLite reports names the database file ("job store FILE:
// ..."): DATA_LOSS when the file is damaged; UNAVAILABLE when the file is
// busy, its disk full, an I/O failed or it (or its -wal/-shm files) cannot
// be written or opened; INTERNAL otherwise.
class SqliteJobStore final : public JobStore {
 public:
  // The schema this build writes. Version history:
  //   1: jobs, stages, assignments, workers, artifacts, events.
  //   2: idempotency keys (request_ids) and an index of artefacts by hash.
  //   3: the request's fingerprint stored with its idempotency key (keys
  //      migrated from 2 have an empty one).
  //   4: stage logs (log_lines, log_stages, log_sources, log_jobs).
  static constexpr int kCurrentSchemaVersion = 4;

  // Opens or creates the database at `path` and migrates it, one version at
  // a time and each step in a transaction, to the target version.
  // FAILED_PRECONDITION when the database was written by a newer
  // coordinator (its schema version is above kCurrentSchemaVersion) or is
  // not a coordinator database, or when it exists but cannot be written
  // (read-only file system, immutable or read-only file: named, with the
  // reason); INTERNAL or UNAVAILABLE (naming the file, with SQLite's
  // message) when it cannot be opened, locked for writing or migrated.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path,
                                                              SqliteJobStoreOptions options = {});

  // The schema version of the database at `path` (0 for a new one).
  static absl::StatusOr<int> ReadSchemaVersion(const std::string& path);

  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  absl::Status Commit(const StoreWrite& write) override;
  absl::Status CommitBatch(const std::vector<const StoreWrite*>& writes) override;
  absl::StatusOr<std::optional<mpt::v1::Job>> ReadJob(const std::string& name) override;
  absl::StatusOr<JobPage> ListJobs(const JobListFilter& filter, int64_t before_seq,
                                   int page_size) override;
  // Splice the stored records' bytes (proto_wire.h): no parse, no
  // serialization; one prepared statement a query shape.
  absl::StatusOr<std::optional<std::string>> ReadSerializedJob(const std::string& name) override;
  absl::StatusOr<bool> HasJob(const std::string& name) override;
  absl::StatusOr<SerializedJobPage> ListSerializedJobs(const JobListFilter& filter,
                                                       int64_t before_seq, int page_size,
                                                       const SerializedJobLookup& lookup) override;
  absl::StatusOr<std::vector<mpt::v1::JobEvent>> ReadEvents(const std::string& name,
                                                            int64_t after_sequence,
                                                            int limit) override;
  absl::StatusOr<std::optional<RequestIdRecord>> FindRequestId(
      const std::string& request_id) override;
  absl::StatusOr<std::optional<mpt::v1::Artifact>> ReadArtifact(const std::string& name) override;
  absl::StatusOr<int64_t> CountArtifactsWithSha256(const std::string& sha256) override;
  absl::StatusOr<StoreSnapshot> LoadActive() override;
  absl::StatusOr<StoreStats> ReadStats() override;
  absl::StatusOr<StageLogPage> ReadStageLog(const std::string& job, const std::string& stage,
                                            int64_t after_line, int limit) override;

  class Impl;

 private:
  explicit SqliteJobStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mpt

#endif  // MPT_SERVER_JOB_STORE_H_
