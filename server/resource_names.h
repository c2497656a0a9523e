// Resource names and identifiers the coordinator hands out or accepts:
// "jobs/{id}", "jobs/{id}/artifacts/{id}", artefact ids, random ids and the
// opaque ListJobs page token. Pure functions; thread-safe.
#ifndef MPT_SERVER_RESOURCE_NAMES_H_
#define MPT_SERVER_RESOURCE_NAMES_H_

#include <cstdint>
#include <string>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {

// The longest job or artefact name accepted in a request. Names the
// coordinator makes are far shorter (an artefact's carries its stage's id).
inline constexpr size_t kMaxResourceNameBytes = 1024;

// OK for "jobs/{id}" with a non-empty id and no further '/', at most
// kMaxResourceNameBytes long; otherwise INVALID_ARGUMENT led by `field`
// (the name shown escaped and cut short).
absl::Status CheckJobName(absl::string_view name, absl::string_view field = "name");

// OK for "jobs/{job_id}/artifacts/{artifact_id}" with non-empty ids, at
// most kMaxResourceNameBytes long; otherwise INVALID_ARGUMENT led by `field`.
absl::Status CheckArtifactName(absl::string_view name, absl::string_view field);

// The id of an artefact of stage `stage_id`: "<stage>-checkpoint-<attempt>-
// <step>" for a checkpoint, "<stage>-<kind>-<attempt>" otherwise, '/' in the
// stage id becoming '-'.
std::string ArtifactId(const std::string& stage_id, const std::string& kind, int attempt,
                       int64_t step);

// 12 random hex digits.
std::string RandomId(absl::BitGen& gen);

// 12 hex digits that grow with time, for job ids: the milliseconds since
// 2024-01-01 (UTC; 0 before) in the top 40 bits and 8 random bits below,
// raised to one more than `*last` if it would not exceed it, which it then
// holds. Ids made by one process therefore never repeat and always grow,
// and ids of a restarted process continue above (unless the clock went
// back). New jobs' rows then go at the end of the store's indexes instead
// of at random places in them: a batch of new jobs rewrites a few pages of
// the write-ahead log instead of a few per job (25 % less CPU a
// SubmitJob, docs/MEASUREMENTS.md).
std::string TimeOrderedId(absl::Time now, uint64_t* last, absl::BitGen& gen);

// The filters of a ListJobs request in a canonical form (order and
// duplicates of states/kinds do not matter).
std::string ListFilterKey(const mpt::v1::ListJobsRequest& request);

// An opaque page token that resumes after create_seq `last_seq` for the
// filters `filter_key`.
std::string MakePageToken(int64_t last_seq, const std::string& filter_key);

// The create_seq a token made by MakePageToken() resumes after.
// INVALID_ARGUMENT naming page_token for a token this service did not make,
// or one made for other filters.
absl::StatusOr<int64_t> ParsePageToken(const std::string& token, const std::string& filter_key);

// Conversions between absl::Time and google.protobuf.Timestamp.
google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& ts);

}  // namespace mpt

#endif  // MPT_SERVER_RESOURCE_NAMES_H_
