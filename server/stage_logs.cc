#include "server/stage_logs.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/quote.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "server/coordinator.h"
#include "server/coordinator_requests.h"
#include "server/resource_names.h"

namespace mpt {

absl::Status CheckWorkerLogLines(
    const google::protobuf::RepeatedPtrField<mpt::v1::LogLine>& lines) {
  if (lines.size() > kMaxLogLinesPerReport) {
    return absl::InvalidArgumentError(absl::StrCat("log_lines: ", lines.size(),
                                                   " lines in one report; at most ",
                                                   kMaxLogLinesPerReport));
  }
  int64_t previous = 0;
  for (int i = 0; i < lines.size(); ++i) {
    const mpt::v1::LogLine& line = lines[i];
    if (line.sequence() <= previous) {
      return absl::InvalidArgumentError(
          absl::StrCat("log_lines[", i, "].sequence: ", line.sequence(),
                       previous == 0 ? " is not positive"
                                     : absl::StrCat(" does not follow ", previous)));
    }
    previous = line.sequence();
    const std::string& severity = line.severity();
    if (severity != "DEBUG" && severity != "INFO" && severity != "WARNING" &&
        severity != "ERROR" && severity != "FATAL") {
      return absl::InvalidArgumentError(
          absl::StrCat("log_lines[", i, "].severity: \"", severity,
                       "\" is not DEBUG, INFO, WARNING, ERROR or FATAL"));
    }
  }
  return absl::OkStatus();
}

mpt::v1::LogLine StorableLogLine(const mpt::v1::LogLine& line) {
  mpt::v1::LogLine out = line;
  out.clear_line();
  out.clear_stage();
  out.clear_assignment();
  if (out.text().size() > static_cast<size_t>(kMaxLogLineBytes)) {
    out.set_text(CutText(out.text(), kMaxLogLineBytes));
  }
  return out;
}

absl::StatusOr<StageLogQuery> ParseGetStageLogsRequest(
    const mpt::v1::GetStageLogsRequest& request) {
  RETURN_IF_ERROR(CheckJobName(request.name()));
  StageLogQuery q;
  q.job = request.name();
  q.stage = request.stage();
  if (!q.stage.empty()) {
    const bool per_task = (absl::StartsWith(q.stage, "source/") && q.stage.size() > 7) ||
                          (absl::StartsWith(q.stage, "target/") && q.stage.size() > 7);
    if (!per_task && q.stage != DistillationStageId()) {
      return absl::InvalidArgumentError(
          absl::StrCat("stage: ", QuoteForError(q.stage),
                       " is not a stage id (source/<task>, distillation, target/<task> or "
                       "target/shared)"));
    }
  }
  if (request.after_line() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("after_line: must be >= 0, got ", request.after_line()));
  }
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be >= 0, got ", request.page_size()));
  }
  q.after_line = request.after_line();
  q.page_size = request.page_size() == 0 ? 1000 : std::min(request.page_size(), 5000);
  return q;
}

// ---------------------------------------------------------------------------
// The coordinator's part (declared in coordinator.h)

void Coordinator::AppendLogLinesLocked(
    StateTxn& txn, const coordinator::AssignmentRecord& rec,
    const google::protobuf::RepeatedPtrField<mpt::v1::LogLine>& lines) {
  if (lines.empty()) return;
  JobEntry* job = state_.FindJob(rec.assignment().job());
  StageEntry* stage = job == nullptr ? nullptr : state_.FindStage(job, rec.assignment().stage());
  // A finished job has left memory; a final stage's log is closed, so that
  // a reader that saw it final has seen all of it.
  if (stage == nullptr || IsFinalState(stage->rec.stage().state())) return;
  StageLogAppend append;
  append.job = rec.assignment().job();
  append.stage = rec.assignment().stage();
  append.assignment = rec.assignment().id();
  append.lines.reserve(lines.size());
  for (const mpt::v1::LogLine& line : lines) append.lines.push_back(StorableLogLine(line));
  txn.logs.push_back(std::move(append));
}

absl::StatusOr<mpt::v1::GetStageLogsResponse> Coordinator::GetStageLogs(
    const mpt::v1::GetStageLogsRequest& request) {
  ASSIGN_OR_RETURN(StageLogQuery q, ParseGetStageLogsRequest(request));
  // The state first, then the lines: a stage seen final here has all its
  // lines stored already (they are committed with or before that state).
  ASSIGN_OR_RETURN(mpt::v1::Job job, GetJob(q.job));
  bool is_final = IsFinalState(job.state());
  if (!q.stage.empty()) {
    const mpt::v1::Stage* found = nullptr;
    std::vector<std::string> ids;
    for (const mpt::v1::Stage& s : job.stages()) {
      ids.push_back(s.id());
      if (s.id() == q.stage) found = &s;
    }
    if (found == nullptr) {
      return absl::NotFoundError(absl::StrCat("stage: ", q.job, " has no stage ",
                                              QuoteForError(q.stage), " (its stages: ", absl::StrJoin(ids, ", "),
                                              ")"));
    }
    is_final = is_final || IsFinalState(found->state());
  }
  ASSIGN_OR_RETURN(StageLogPage page,
                   store_->ReadStageLog(q.job, q.stage, q.after_line, q.page_size));
  // As WatchJob does with after_sequence: a cursor past the end would be
  // echoed as last_line, and a client following it would miss the lines
  // numbered up to it.
  if (q.after_line > page.last_line) {
    return absl::InvalidArgumentError(absl::StrCat("after_line: ", q.after_line,
                                                   " is beyond the last line of ", q.job, " (",
                                                   page.last_line, ")"));
  }
  mpt::v1::GetStageLogsResponse response;
  response.set_last_line(page.lines.empty() ? q.after_line : page.lines.back().line());
  for (mpt::v1::LogLine& line : page.lines) *response.add_lines() = std::move(line);
  response.set_more(page.more);
  for (const auto& [stage, dropped] : page.dropped) {
    (*response.mutable_dropped_lines())[stage] = dropped;
  }
  response.set_done(is_final && !page.more);
  return response;
}

}  // namespace mpt
