// How mptctl shows jobs, workers and job events to people and to scripts.
// Pure functions over the API messages; torch-free and gRPC-free.
#ifndef MPT_CLI_JOB_FORMAT_H_
#define MPT_CLI_JOB_FORMAT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "proto/mpt/v1/service.pb.h"
#include "common/progress/progress.h"

namespace mpt {

// "QUEUED", "SUCCEEDED", ...; "PIPELINE", "SOURCE_TRAINING", ...
std::string StateName(mpt::v1::JobState state);
std::string KindName(mpt::v1::JobKind kind);

// Parses a state or kind as mptctl's flags take them: the enum name in any
// case ("succeeded"), and for kinds also "source", "distillation",
// "target". INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<mpt::v1::JobState> ParseJobState(const std::string& text);
absl::StatusOr<mpt::v1::JobKind> ParseJobKind(const std::string& text);

// "jobs/abc" for "abc" or "jobs/abc"; artefact names are kept as they are.
std::string JobName(const std::string& id_or_name);

// One JSON object (proto field names, every field present) without a
// trailing newline. Multi-line when `pretty`.
std::string ToJson(const google::protobuf::Message& message, bool pretty);

// A table of jobs: NAME, KIND, STATE, PRIORITY, CREATED, PROGRESS, DISPLAY
// NAME; one line per job after a header.
std::string FormatJobTable(const std::vector<mpt::v1::Job>& jobs);

// A job in detail: its fields, then one line per stage (state, attempts,
// workers, step, loss, metrics, artefact), the artefacts and the error.
std::string FormatJob(const mpt::v1::Job& job);

// A table of workers.
std::string FormatWorkerTable(const std::vector<mpt::v1::Worker>& workers);

// A job's results, one line per stage: state, steps, final loss and the
// per-task accuracies ("  target/min  SUCCEEDED  150/150  0.4211
// min/accuracy=87.5%").
std::string FormatResults(const mpt::v1::Job& job);

// What a job event means for the progress display: the event to feed a
// TerminalProgressSink, or nullopt when the event carries nothing to show.
//   stage RUNNING without a step    -> STARTED
//   a step (progress.step > 0)      -> STEP
//   metrics                         -> EVAL
//   stage SUCCEEDED                 -> FINISHED
//   stage FAILED / CANCELLED        -> FAILED (message = event.message)
//   job-level state changes         -> STARTED/FINISHED/FAILED labelled
//                                      with the job's name
std::optional<ProgressEvent> ProgressEventFor(const mpt::v1::JobEvent& event);

// One stage log line for people, without newline:
//   [source/sst2] 22:43:00.123 INFO worker_daemon.cc:12] text
//   [distillation attempt 2 rank 1] 22:43:00.123 ERROR ...
// The attempt is shown when it is not the first, the rank when it is not 0
// (both read from LogLine.assignment); the time in `zone`.
std::string FormatLogLine(const mpt::v1::LogLine& line, absl::TimeZone zone);

// The note shown before a stage's first line when the coordinator dropped
// its oldest `dropped` lines to keep the log within its bound.
std::string FormatDroppedLines(const std::string& stage, int64_t dropped);

}  // namespace mpt

#endif  // MPT_CLI_JOB_FORMAT_H_
