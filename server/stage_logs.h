// Stage logs on the coordinator: the check of the log lines workers send
// (ReportProgress, CompleteAssignment) and of GetStageLogs requests. The
// lines are stored by the job store (StageLogAppend in job_store.h), which
// drops resent lines, notes lines the worker dropped and keeps each stage
// within its bound; Coordinator::GetStageLogs (defined in stage_logs.cc)
// reads them back.
#ifndef MPT_SERVER_STAGE_LOGS_H_
#define MPT_SERVER_STAGE_LOGS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {

// The most lines one report may carry, and the longest text kept of one
// line (longer ones are cut on a UTF-8 boundary and end in " [cut]").
inline constexpr int kMaxLogLinesPerReport = 5000;
inline constexpr int kMaxLogLineBytes = 16 << 10;

// INVALID_ARGUMENT naming the field ("log_lines[3].sequence") when a
// worker's lines are too many, or their sequence numbers are not positive
// and increasing, or a severity is not DEBUG, INFO, WARNING, ERROR or
// FATAL.
absl::Status CheckWorkerLogLines(
    const google::protobuf::RepeatedPtrField<mpt::v1::LogLine>& lines);

// `line` as stored: its text cut to kMaxLogLineBytes; the fields the
// coordinator sets (line, stage, assignment) cleared.
mpt::v1::LogLine StorableLogLine(const mpt::v1::LogLine& line);

// A GetStageLogs request, checked.
struct StageLogQuery {
  std::string job;
  std::string stage;  // empty: every stage
  int64_t after_line = 0;
  int page_size = 1000;  // 1..5000
};
// INVALID_ARGUMENT naming the field: a malformed job name, a stage that is
// not a stage id ("source/<task>", "distillation", "target/<task>"), a
// negative after_line or page_size. (Coordinator::GetStageLogs() also
// refuses an after_line beyond the job's last line.)
absl::StatusOr<StageLogQuery> ParseGetStageLogsRequest(
    const mpt::v1::GetStageLogsRequest& request);

}  // namespace mpt

#endif  // MPT_SERVER_STAGE_LOGS_H_
