#include "cli/job_format.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "common/progress/progress_proto.h"

namespace mpt {
namespace {

std::string Time(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(t.seconds()),
                          absl::LocalTimeZone());
}

std::string ShortName(const std::string& name) {
  const size_t slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

std::string StepText(const mpt::v1::Progress& p) {
  if (p.total_steps() > 0) return absl::StrCat(p.step(), "/", p.total_steps());
  if (p.step() > 0) return absl::StrCat(p.step());
  return "-";
}

std::string LossText(const mpt::v1::Progress& p) {
  auto it = p.losses().find("loss");
  if (it == p.losses().end()) return "-";
  return absl::StrFormat("%.4f", it->second);
}

std::string MetricsText(const mpt::v1::Progress& p) {
  std::map<std::string, double> sorted(p.metrics().begin(), p.metrics().end());
  std::vector<std::string> parts;
  for (const auto& [name, value] : sorted) {
    const bool fraction = absl::EndsWith(name, "accuracy") || absl::EndsWith(name, "exact_match") ||
                          absl::EndsWith(name, "f1");
    parts.push_back(fraction ? absl::StrFormat("%s=%.1f%%", name, 100 * value)
                             : absl::StrFormat("%s=%.4g", name, value));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, " ");
}

// Left-aligned columns separated by two spaces.
std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string Upper(std::string s) {
  absl::AsciiStrToUpper(&s);
  return s;
}

}  // namespace

std::string StateName(mpt::v1::JobState state) { return mpt::v1::JobState_Name(state); }
std::string KindName(mpt::v1::JobKind kind) { return mpt::v1::JobKind_Name(kind); }

absl::StatusOr<mpt::v1::JobState> ParseJobState(const std::string& text) {
  mpt::v1::JobState state;
  if (mpt::v1::JobState_Parse(Upper(text), &state) && state != mpt::v1::JOB_STATE_UNSPECIFIED) {
    return state;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--state: \"", text,
      "\" is not one of queued, running, succeeded, failed, cancelling, cancelled"));
}

absl::StatusOr<mpt::v1::JobKind> ParseJobKind(const std::string& text) {
  const std::string upper = Upper(text);
  if (upper == "SOURCE") return mpt::v1::SOURCE_TRAINING;
  if (upper == "TARGET") return mpt::v1::TARGET_ADAPTATION;
  mpt::v1::JobKind kind;
  if (mpt::v1::JobKind_Parse(upper, &kind) && kind != mpt::v1::JOB_KIND_UNSPECIFIED) return kind;
  return absl::InvalidArgumentError(absl::StrCat(
      "--kind: \"", text, "\" is not one of pipeline, source, distillation, target"));
}

std::string JobName(const std::string& id_or_name) {
  if (absl::StartsWith(id_or_name, "jobs/")) return id_or_name;
  return absl::StrCat("jobs/", id_or_name);
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    // Printing a message the service sent cannot fail short of a bug; say so
    // in the output instead of printing half a document.
    nlohmann::json error = {{"error", std::string(status.message())}};
    return error.dump();
  }
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

std::string FormatJobTable(const std::vector<mpt::v1::Job>& jobs) {
  std::vector<std::vector<std::string>> rows{
      {"NAME", "KIND", "STATE", "PRIORITY", "CREATED", "PROGRESS", "DISPLAY NAME"}};
  for (const mpt::v1::Job& j : jobs) {
    int done = 0;
    for (const auto& s : j.stages()) done += s.state() == mpt::v1::SUCCEEDED;
    rows.push_back({j.name(), KindName(j.kind()), StateName(j.state()), absl::StrCat(j.priority()),
                    Time(j.create_time()),
                    j.stages_size() > 0 ? absl::StrCat(done, "/", j.stages_size(), " stages") : "-",
                    j.display_name().empty() ? "-" : j.display_name()});
  }
  return Table(rows);
}

std::string FormatJob(const mpt::v1::Job& job) {
  std::string out;
  absl::StrAppend(&out, "name:      ", job.name(), "\n");
  if (!job.display_name().empty()) absl::StrAppend(&out, "display:   ", job.display_name(), "\n");
  absl::StrAppend(&out, "kind:      ", KindName(job.kind()), "\n");
  absl::StrAppend(&out, "state:     ", StateName(job.state()), "\n");
  absl::StrAppend(&out, "priority:  ", job.priority(), "\n");
  absl::StrAppend(&out, "created:   ", Time(job.create_time()), "\n");
  if (job.has_start_time()) absl::StrAppend(&out, "started:   ", Time(job.start_time()), "\n");
  if (job.has_end_time()) absl::StrAppend(&out, "ended:     ", Time(job.end_time()), "\n");
  if (!job.spec().base_model().empty()) {
    absl::StrAppend(&out, "model:     ", job.spec().base_model(), "\n");
  }
  // The job's own precision, when its spec fixes one (else each worker's flag).
  if (!job.spec().autocast().empty()) {
    absl::StrAppend(&out, "autocast:  ", job.spec().autocast(), "\n");
  }
  if (job.stages_size() > 0) {
    out += "stages:\n";
    std::vector<std::vector<std::string>> rows{
        {"  STAGE", "STATE", "ATTEMPTS", "WORKERS", "STEP", "LOSS", "METRICS", "ARTIFACT"}};
    for (const mpt::v1::Stage& s : job.stages()) {
      std::vector<std::string> workers;
      for (const std::string& w : s.workers()) workers.push_back(ShortName(w));
      rows.push_back({"  " + s.id(), StateName(s.state()), absl::StrCat(s.attempts()),
                      workers.empty() ? "-" : absl::StrJoin(workers, ","),
                      StepText(s.progress()), LossText(s.progress()), MetricsText(s.progress()),
                      s.artifact().empty() ? "-" : s.artifact()});
    }
    out += Table(rows);
    for (const mpt::v1::Stage& s : job.stages()) {
      if (!s.error().empty()) absl::StrAppend(&out, "  ", s.id(), " error: ", s.error(), "\n");
    }
  }
  if (job.artifacts_size() > 0) {
    out += "artifacts:\n";
    std::vector<std::vector<std::string>> rows{{"  NAME", "KIND", "STAGE", "BYTES", "SHA256"}};
    for (const mpt::v1::Artifact& a : job.artifacts()) {
      rows.push_back({"  " + a.name(), a.kind(), a.stage(), absl::StrCat(a.size_bytes()),
                      a.sha256().substr(0, 16)});
    }
    out += Table(rows);
  }
  if (!job.error().empty()) absl::StrAppend(&out, "error:     ", job.error(), "\n");
  return out;
}

std::string FormatWorkerTable(const std::vector<mpt::v1::Worker>& workers) {
  std::vector<std::vector<std::string>> rows{{"NAME", "HOST", "DEVICE", "MEMORY", "STATE",
                                              "COLLECTIVES", "LAST HEARTBEAT", "ASSIGNMENTS",
                                              "MODELS"}};
  for (const mpt::v1::Worker& w : workers) {
    rows.push_back({w.name(), w.hostname(), w.device(),
                    w.memory_bytes() > 0
                        ? absl::StrFormat("%.1fG", static_cast<double>(w.memory_bytes()) / (1 << 30))
                        : "-",
                    w.state(), w.collectives().empty() ? "-" : absl::StrJoin(w.collectives(), ","),
                    Time(w.last_heartbeat()),
                    w.assignments().empty() ? "-" : absl::StrJoin(w.assignments(), ","),
                    w.models().empty() ? "(any)" : absl::StrJoin(w.models(), ",")});
  }
  return Table(rows);
}

std::string FormatResults(const mpt::v1::Job& job) {
  std::vector<std::vector<std::string>> rows{{"  STAGE", "STATE", "STEPS", "LOSS", "ACCURACY"}};
  for (const mpt::v1::Stage& s : job.stages()) {
    // Per-task accuracy only; `mptctl get` shows every metric.
    mpt::v1::Progress accuracy;
    for (const auto& [name, value] : s.progress().metrics()) {
      if (absl::EndsWith(name, "/accuracy") && !absl::StartsWith(name, "average/")) {
        (*accuracy.mutable_metrics())[name] = value;
      }
    }
    rows.push_back({"  " + s.id(), StateName(s.state()), StepText(s.progress()),
                    LossText(s.progress()), MetricsText(accuracy)});
  }
  return Table(rows);
}

namespace {

// Workers send "<KIND>" or "<KIND>: <text>" as an event's message; the line
// already says what happened, so keep only the text.
std::string WithoutKindPrefix(const std::string& message) {
  for (ProgressKind kind : {ProgressKind::kStarted, ProgressKind::kStep, ProgressKind::kEval,
                            ProgressKind::kCheckpoint, ProgressKind::kFinished,
                            ProgressKind::kFailed}) {
    absl::string_view m = message;
    if (!absl::ConsumePrefix(&m, ProgressKindName(kind))) continue;
    if (m.empty()) return "";
    if (absl::ConsumePrefix(&m, ": ")) return std::string(m);
  }
  return message;
}

}  // namespace

std::optional<ProgressEvent> ProgressEventFor(const mpt::v1::JobEvent& event) {
  // The kind is decided below from the event's states.
  ProgressEvent e = ProgressFromProto(event.progress(), ProgressKind::kStep);
  e.stage = event.stage();  // the stage id ("source/max"), not only its kind
  // The stage id already names its task; keep a task only where it adds to
  // it (a task of "target/shared").
  if (absl::EndsWith(e.stage, absl::StrCat("/", e.task))) e.task.clear();
  if (!event.has_progress()) e.eta_seconds = -1;
  e.message = WithoutKindPrefix(event.message());
  if (event.stage().empty()) {
    // The job itself: its new state, once.
    e.stage = event.job();
    e.step = 0;
    e.total_steps = 0;
    switch (event.state()) {
      case mpt::v1::SUCCEEDED:
        e.kind = ProgressKind::kFinished;
        break;
      case mpt::v1::FAILED:
      case mpt::v1::CANCELLED:
        e.kind = ProgressKind::kFailed;
        if (e.message.empty()) e.message = StateName(event.state());
        break;
      default:
        e.kind = ProgressKind::kState;
        e.message = e.message.empty() ? StateName(event.state())
                                      : absl::StrCat(StateName(event.state()), ": ", e.message);
    }
    return e;
  }
  switch (event.stage_state()) {
    case mpt::v1::SUCCEEDED:
      e.kind = ProgressKind::kFinished;
      return e;
    case mpt::v1::FAILED:
    case mpt::v1::CANCELLED:
      e.kind = ProgressKind::kFailed;
      if (e.message.empty()) e.message = StateName(event.stage_state());
      return e;
    default:
      break;
  }
  if (!e.metrics.empty()) {
    e.kind = ProgressKind::kEval;
    return e;
  }
  if (e.step > 0 && e.total_steps > 0) {
    e.kind = ProgressKind::kStep;
    return e;
  }
  if (event.stage_state() != mpt::v1::JOB_STATE_UNSPECIFIED) {
    e.kind = ProgressKind::kState;
    e.message = e.message.empty()
                    ? StateName(event.stage_state())
                    : absl::StrCat(StateName(event.stage_state()), ": ", e.message);
    return e;
  }
  if (!e.message.empty()) {
    e.kind = ProgressKind::kStarted;
    return e;
  }
  return std::nullopt;
}

std::string FormatLogLine(const mpt::v1::LogLine& line, absl::TimeZone zone) {
  std::string label = line.stage();
  // ".../attempts/<n>/ranks/<r>"
  const std::vector<std::string> parts = absl::StrSplit(line.assignment(), '/');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i] == "attempts" && parts[i + 1] != "1") {
      absl::StrAppend(&label, " attempt ", parts[i + 1]);
    }
    if (parts[i] == "ranks" && parts[i + 1] != "0") absl::StrAppend(&label, " rank ", parts[i + 1]);
  }
  const absl::Time time = absl::FromUnixSeconds(line.time().seconds()) +
                          absl::Nanoseconds(line.time().nanos());
  return absl::StrCat("[", label, "] ", absl::FormatTime("%H:%M:%E3S", time, zone), " ",
                      line.severity().empty() ? "INFO" : line.severity(), " ", line.text());
}

std::string FormatDroppedLines(const std::string& stage, int64_t dropped) {
  return absl::StrCat("[", stage, "] ... ", dropped, dropped == 1 ? " earlier line" : " earlier lines",
                      " dropped (the coordinator keeps the newest lines of each stage)");
}

}  // namespace mpt
