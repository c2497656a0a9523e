// Pieces of the coordinator that need none of its own locks: the check of
// its options, the parsing and checking of requests (ListJobs, uploads, who
// may report on an assignment), blob collection, and one scheduling pass
// over the state (the decision itself is Schedule() in scheduler.h).
#ifndef MPT_SERVER_COORDINATOR_REQUESTS_H_
#define MPT_SERVER_COORDINATOR_REQUESTS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/artifact_store.h"
#include "server/coordinator.h"
#include "server/coordinator_state.h"
#include "server/job_store.h"

namespace mpt {

// INVALID_ARGUMENT listing every inconsistent option; OK otherwise.
absl::Status CheckCoordinatorOptions(const CoordinatorOptions& options);

// A ListJobs request, checked.
struct ListJobsQuery {
  JobListFilter filter;
  int64_t before_seq = 0;  // from the page token; 0: from the newest
  int page_size = 0;       // 1..1000 (0 in the request means 50)
  std::string filter_key;  // what page tokens are tied to
  bool basic = false;      // JOB_VIEW_BASIC: jobs without spec and artefacts
};
// INVALID_ARGUMENT naming the field: a negative page_size, an unknown state,
// kind or view, a page token not made for these filters.
absl::StatusOr<ListJobsQuery> ParseListJobsRequest(const mpt::v1::ListJobsRequest& request);

// Deletes blob `sha256` when no artefact record refers to it any more; a
// failure is logged and the blob stays until a later collection.
void CollectBlobIfUnreferenced(JobStore& store, ArtifactStore& blobs, const std::string& sha256);

// One scheduling pass over `state`; starts what Schedule() decides in `txn`
// (and sends a job its one "waiting for N workers" event). Single-worker
// source stages with the same base model, prompt shape and precision (SourcePackKey)
// may be packed onto one worker, up to `max_pack_size` stages and the
// worker's own Worker.max_pack_size: every stage of a pack starts with an
// assignment of its own on that worker.
void RunSchedulingPass(CoordinatorState& state, StateTxn& txn, int max_pack_size = 1);

// What source stages must share to train in one pass: the base model as the
// spec names it, the prompt's shape (num_virtual_tokens,
// num_transformer_submodules) and the spec's autocast. Empty for every other
// stage (never packed).
std::string SourcePackKey(const mpt::v1::PipelineSpec& spec, const StageEntry& stage);

// The events of job `name` after `after_sequence` from the store, at most
// `max_events`, none past `limit` when limit >= 0 (the last event known to be
// durable in memory); `done` when the job is final and nothing is left.
// NOT_FOUND for an unknown job; INVALID_ARGUMENT when after_sequence is past
// the job's last stored event.
absl::StatusOr<JobEventBatch> ReadEventBatch(JobStore& store, const std::string& name,
                                             int64_t after_sequence, int64_t limit,
                                             int max_events);

// Every worker in registration order, lost ones included (their last
// heartbeat left out). The caller holds whatever guards `state`.
mpt::v1::ListWorkersResponse ListWorkersOf(const CoordinatorState& state);

// NOT_FOUND for a job, or an artefact, the coordinator does not hold.
absl::Status UnknownJob(const std::string& name);
absl::Status UnknownArtifact(const std::string& name);
// NOT_FOUND for a worker the coordinator does not know (register again).
absl::Status UnknownWorker(const std::string& name);
// NOT_FOUND for an assignment that ended or was requeued.
absl::Status UnknownAssignment(const std::string& id);
// OK when `worker` holds assignment `id` (`rec`); FAILED_PRECONDITION
// otherwise: only the worker an assignment was handed to may report on it.
absl::Status CheckHolder(const coordinator::AssignmentRecord& rec, const std::string& id,
                         const std::string& worker);
// CheckHolder() for an assignment that was released: `holder` held it.
absl::Status CheckHolderName(const std::string& holder, const std::string& id,
                             const std::string& worker);
// True when `group` is the rendezvous group of a running stage attempt
// ("jobs/{job}/stages/{stage}/attempts/{n}", StageRecord.group).
bool IsRunningAttemptGroup(CoordinatorState& state, const std::string& group);
// `progress` with the stage's kind and task where it names none.
mpt::v1::Progress StageProgress(mpt::v1::Progress progress, const StageEntry& stage);

// INVALID_ARGUMENT naming the field for an upload header that lacks the
// assignment or worker, names another kind than "adapter" or "checkpoint",
// or has a negative step (checked on the upload's first message, before any
// data is accepted).
absl::Status CheckUploadHeader(const mpt::v1::UploadArtifactRequest::Header& header);

// ---- Bounds on what workers send -------------------------------------------
//
// Everything a worker sends is stored (the worker table, job events) and
// shown (ListWorkers, WatchJob, the dashboard, the log), so every field is
// bounded: a request over a bound is INVALID_ARGUMENT naming the field,
// except free text (event messages, errors), which is cut to its bound on a
// UTF-8 boundary and ends in " [cut]".

// RegisterWorker (Worker).
inline constexpr size_t kMaxHostnameBytes = 255;  // printable ASCII, no spaces
inline constexpr size_t kMaxDeviceBytes = 64;     // "cpu", "cuda", "cuda:N", name[:N]
inline constexpr int kMaxWorkerModels = 256;
inline constexpr size_t kMaxModelNameBytes = 4096;  // a path (PATH_MAX)
inline constexpr size_t kMaxWorkerModelsBytes = 64 << 10;  // all of them together
inline constexpr int kMaxWorkerCollectives = 8;
inline constexpr int kMaxWorkerPackSize = 1024;
// Workers registered at once (lost ones count while they are retained):
// RESOURCE_EXHAUSTED beyond.
inline constexpr size_t kMaxRegisteredWorkers = 10000;
// Each registration's secret (RegisterWorkerResponse.worker_key): this many
// random bytes, sent back as hex in the kWorkerKeyMetadata metadata
// (common/secrets.h) on every later call.
inline constexpr int kWorkerKeyBytes = 32;

// ReportProgress and CompleteAssignment.
inline constexpr size_t kMaxEventMessageBytes = 4 << 10;  // message: cut
inline constexpr size_t kMaxErrorBytes = 16 << 10;         // error: cut
inline constexpr size_t kMaxProgressNameBytes = 2048;  // stage, task, loss and metric names
inline constexpr int kMaxProgressLosses = 1024;
inline constexpr int kMaxProgressMetrics = 16384;
inline constexpr size_t kMaxProgressBytes = 1 << 20;  // the whole Progress, serialized

// OK, or INVALID_ARGUMENT naming the field ("worker.hostname",
// "worker.models[3]", ...): a hostname longer than kMaxHostnameBytes or with
// a character that is not printable ASCII or is a space; a device that is
// not `name` or `name:N` (lower-case letters, digits and '_'; N a decimal
// index); more than kMaxWorkerModels models, an empty one, one longer than
// kMaxModelNameBytes or with a control character, or more than
// kMaxWorkerModelsBytes in all; a collective other than gloo and nccl, or
// more than kMaxWorkerCollectives; a negative memory_bytes; max_pack_size
// outside [0, kMaxWorkerPackSize].
absl::Status CheckWorkerRegistration(const mpt::v1::Worker& worker);

// OK, or INVALID_ARGUMENT naming the field under `field` ("progress",
// "final_progress"): a negative step or total_steps, a step beyond
// total_steps (when total_steps > 0; 0 means unknown), a learning_rate or
// tokens_per_second that is negative or not finite, an eta_seconds that is
// neither -1 (unknown) nor a finite number >= 0, a stage, task, loss or
// metric name longer than kMaxProgressNameBytes, more than
// kMaxProgressLosses losses or kMaxProgressMetrics metrics, or more than
// kMaxProgressBytes in all. Loss and metric values may be NaN or infinite:
// a diverging run reports what it computed (the worker stops it).
absl::Status CheckProgress(const mpt::v1::Progress& progress, absl::string_view field);

// `text` cut to at most `max_bytes` (on a UTF-8 character boundary; the
// text is valid UTF-8, as the request parser checked) followed by " [cut]";
// unchanged when it fits.
std::string CutText(absl::string_view text, size_t max_bytes);

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_REQUESTS_H_
