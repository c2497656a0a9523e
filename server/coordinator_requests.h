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

// NOT_FOUND for a worker the coordinator does not know (register again).
absl::Status UnknownWorker(const std::string& name);
// NOT_FOUND for an assignment that ended or was requeued.
absl::Status UnknownAssignment(const std::string& id);
// OK when `worker` holds assignment `id` (`rec`); FAILED_PRECONDITION
// otherwise: only the worker an assignment was handed to may report on it.
absl::Status CheckHolder(const coordinator::AssignmentRecord& rec, const std::string& id,
                         const std::string& worker);
// `progress` with the stage's kind and task where it names none.
mpt::v1::Progress StageProgress(mpt::v1::Progress progress, const StageEntry& stage);

// INVALID_ARGUMENT naming the field for an upload whose header lacks the
// assignment or worker, names another kind than "adapter" or "checkpoint",
// has a negative step, whose sha256 is not 64 hex digits, or whose data is
// larger than `max_bytes`.
absl::Status CheckUploadRequest(const mpt::v1::UploadArtifactRequest::Header& header,
                                size_t data_size, absl::string_view sha256, int64_t max_bytes);

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_REQUESTS_H_
