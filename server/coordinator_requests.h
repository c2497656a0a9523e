// Pieces of the coordinator that need none of its own locks: the check of
// its options, the parsing of a ListJobs request, blob collection, and one
// scheduling pass over the state (the decision itself is Schedule() in scheduler.h).
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
};
// INVALID_ARGUMENT naming the field: a negative page_size, an unknown state
// or kind, a page token not made for these filters.
absl::StatusOr<ListJobsQuery> ParseListJobsRequest(const mpt::v1::ListJobsRequest& request);

// Deletes blob `sha256` when no artefact record refers to it any more; a
// failure is logged and the blob stays until a later collection.
void CollectBlobIfUnreferenced(JobStore& store, ArtifactStore& blobs, const std::string& sha256);

// One scheduling pass over `state`; starts what Schedule() decides in `txn`
// (and sends a job its one "waiting for N workers" event).
void RunSchedulingPass(CoordinatorState& state, StateTxn& txn);

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_REQUESTS_H_
