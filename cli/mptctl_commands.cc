#include "cli/mptctl_commands.h"

#include <filesystem>
#include <optional>
#include <random>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/job_format.h"
#include "common/artifact_pack.h"
#include "common/grpc_status.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/progress/progress.h"
#include "common/spec/spec_loader.h"
#include "common/spec/stages.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// The one rule for every retry (submit, watch, logs --follow): whether a
// call that ended with `s` may succeed when sent again once the coordinator
// is back. It could not be reached (UNAVAILABLE), gave no answer in time
// (DEADLINE_EXCEEDED), or was cut off by a coordinator shutting down
// gracefully (SIGTERM), which ends the calls it is serving CANCELLED:
// mptctl never cancels a call it would retry, so a CANCELLED one was
// cancelled by the other side.
bool Retryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kCancelled;
}

// What a retryable failure (or OK: a stream that closed early) means.
std::string WhatHappened(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return "the stream closed early";
    case absl::StatusCode::kCancelled:
      return absl::StrCat("it ended the call, as it does when it shuts down (CANCELLED: ",
                          s.message(), ")");
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat("no answer in time (DEADLINE_EXCEEDED: ", s.message(), ")");
    default:
      return absl::StrCat("unreachable (", absl::StatusCodeToString(s.code()), ": ", s.message(),
                          ")");
  }
}

// How watch and logs --follow ride out a coordinator that goes away (a
// restart, graceful or not): after each attempt that failed, Failed() says
// whether to try again (after a back-off it sleeps) or what to fail with;
// Reached() after each answer.
class Reconnect {
 public:
  Reconnect(const MptctlOptions& options, std::ostream* err) : options_(options), err_(err) {}

  // After an attempt that ended with `s` (OK: a stream that closed before
  // the end). `resume` says where the next attempt starts ("event 3"),
  // `doing` what gives up ("watching jobs/j1"). OK: try again. Otherwise
  // the status to fail with: `s` itself when a retry cannot cure it;
  // UNAVAILABLE naming the coordinator's address, what happened and for
  // how long once it stayed away longer than reconnect_timeout.
  absl::Status Failed(const absl::Status& s, absl::string_view doing, absl::string_view resume) {
    if (!s.ok() && !Retryable(s)) return s;
    const absl::Time now = absl::Now();
    if (!since_.has_value()) {
      since_ = now;
      *err_ << "mptctl: lost the coordinator at " << options_.channel.address << ": "
            << WhatHappened(s) << "; reconnecting from " << resume << "\n";
      err_->flush();
    } else if (now - *since_ > options_.reconnect_timeout) {
      return absl::UnavailableError(absl::StrCat(
          "gave up ", doing, " after ", resume, ": the coordinator at ", options_.channel.address,
          " has been lost for ", absl::FormatDuration(absl::Trunc(now - *since_, absl::Seconds(1))),
          " (last: ", WhatHappened(s), "); --reconnect_timeout_seconds waits longer"));
    }
    absl::SleepFor(backoff_);
    backoff_ = std::min(backoff_ * 2, absl::Seconds(5));
    return absl::OkStatus();
  }

  // After an answer: a lost coordinator is back.
  void Reached(absl::string_view resume) {
    backoff_ = absl::Milliseconds(250);
    if (!since_.has_value()) return;
    since_.reset();
    *err_ << "mptctl: reconnected to " << options_.channel.address << "; continuing after "
          << resume << "\n";
    err_->flush();
  }

 private:
  const MptctlOptions& options_;
  std::ostream* const err_;
  std::optional<absl::Time> since_;
  absl::Duration backoff_ = absl::Milliseconds(250);
};

// The part of the spec a job of `kind` uses.
void CheckTasks(const char* stage, const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& tasks,
                std::vector<std::string>* problems) {
  std::error_code ec;
  for (int i = 0; i < tasks.size(); ++i) {
    const mpt::v1::TaskData& t = tasks[i];
    for (const auto& [field, path] : {std::pair<const char*, const std::string*>{"train_path", &t.train_path()},
                                      {"eval_path", &t.eval_path()}}) {
      if (path->empty()) continue;
      if (!fs::is_regular_file(*path, ec)) {
        problems->push_back(absl::StrCat(stage, ".tasks[", i, "].", field,
                                         ": file does not exist: ", *path));
      }
    }
  }
}

// Checks, as this machine sees the file system, that the model folder and
// the data files of the stages a job of `kind` runs exist.
absl::Status CheckSpecFiles(const mpt::v1::PipelineSpec& spec, mpt::v1::JobKind kind) {
  std::vector<std::string> problems;
  std::error_code ec;
  if (!spec.base_model().empty() && !fs::is_directory(spec.base_model(), ec)) {
    problems.push_back(absl::StrCat("base_model: not a folder: ", spec.base_model()));
  }
  const bool pipeline = kind == mpt::v1::PIPELINE;
  if (pipeline || kind == mpt::v1::SOURCE_TRAINING) {
    CheckTasks("source", spec.source().tasks(), &problems);
  }
  if (pipeline || kind == mpt::v1::DISTILLATION) {
    CheckTasks("distillation", spec.distillation().tasks(), &problems);
  }
  if (pipeline || kind == mpt::v1::TARGET_ADAPTATION) {
    CheckTasks("target", spec.target().tasks(), &problems);
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      absl::StrJoin(problems, "; "),
      " (checked on this machine; --nocheck_files leaves the check to the workers)"));
}

// A relative folder for a stage id ("source/max" stays, ".." is refused).
std::optional<std::string> StageFolder(const std::string& stage) {
  std::vector<std::string> parts;
  for (absl::string_view p : absl::StrSplit(stage, '/', absl::SkipEmpty())) {
    if (p == "." || p == "..") return std::nullopt;
    parts.emplace_back(p);
  }
  if (parts.empty()) return std::nullopt;
  return absl::StrJoin(parts, "/");
}

std::string LastPart(const std::string& name) {
  const size_t slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

}  // namespace

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitUsage;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return kExitFailedPrecondition;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitUnauthenticated;
    case absl::StatusCode::kDataLoss:
      return kExitDataLoss;
    default:
      return kExitError;
  }
}

std::string NewRequestId() {
  std::random_device random;
  std::string id;
  for (int i = 0; i < 4; ++i) {
    absl::StrAppend(&id, absl::Hex(static_cast<uint32_t>(random()), absl::kZeroPad8));
  }
  return id;
}

absl::Status ConnectToCoordinator(grpc::Channel* channel, const std::string& address,
                                  absl::Duration timeout) {
  if (channel->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat(
      "cannot connect to the coordinator at ", address, " within ", absl::FormatDuration(timeout),
      " (nothing listening, unreachable, or TLS settings that do not match; "
      "--connect_timeout_seconds waits longer)"));
}

Mptctl::Mptctl(MptctlOptions options, mpt::v1::JobService::StubInterface* stub, std::ostream* out,
               std::ostream* err)
    : options_(std::move(options)), stub_(stub), out_(out), err_(err) {}

int Mptctl::Fail(const absl::Status& status) {
  *err_ << "mptctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
        << "\n";
  err_->flush();
  return ExitCodeFor(status);
}

void Mptctl::Prepare(grpc::ClientContext* context, absl::Duration timeout) const {
  PrepareClientContext(options_.channel, timeout, context);
}

absl::StatusOr<mpt::v1::SubmitJobRequest> BuildSubmitRequest(const SubmitArgs& args) {
  if (args.spec_path.empty()) return absl::InvalidArgumentError("--spec: required");
  ASSIGN_OR_RETURN(mpt::v1::JobKind kind, ParseJobKind(args.kind));
  ASSIGN_OR_RETURN(mpt::v1::PipelineSpec spec, ReadPipelineSpec(args.spec_path));
  // Relative paths are relative to the spec's folder; the coordinator and
  // the workers get absolute ones. Artefact names ("jobs/J/artifacts/A") in
  // a single-stage spec are names, not paths, and stay as they are.
  std::error_code ec;
  const fs::path spec_file = fs::absolute(args.spec_path, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(args.spec_path, ": cannot make the path absolute: ", ec.message()));
  }
  const mpt::v1::PipelineSpec as_written = spec;
  ResolveSpecPaths(spec_file.parent_path().string(), &spec);
  auto is_artifact = [](const std::string& s) {
    return absl::StartsWith(s, "jobs/") && absl::StrContains(s, "/artifacts/");
  };
  if (is_artifact(as_written.target().source_adapter())) {
    spec.mutable_target()->set_source_adapter(as_written.target().source_adapter());
  }
  const auto& teachers = as_written.distillation().teacher_adapters();
  for (int i = 0; i < teachers.size() && i < spec.distillation().teacher_adapters_size(); ++i) {
    if (is_artifact(teachers[i])) spec.mutable_distillation()->set_teacher_adapters(i, teachers[i]);
  }
  if (args.check_files) RETURN_IF_ERROR(CheckSpecFiles(spec, kind));
  mpt::v1::SubmitJobRequest request;
  request.set_kind(kind);
  *request.mutable_spec() = std::move(spec);
  request.set_priority(args.priority);
  request.set_display_name(args.display_name);
  request.set_request_id(args.request_id.empty() ? NewRequestId() : args.request_id);
  return request;
}

int Mptctl::Submit(const SubmitArgs& args) {
  absl::StatusOr<mpt::v1::SubmitJobRequest> request = BuildSubmitRequest(args);
  if (!request.ok()) return Fail(request.status());
  return Submit(args, *request);
}

int Mptctl::Submit(const SubmitArgs& args, const mpt::v1::SubmitJobRequest& request) {
  mpt::v1::Job job;
  absl::Status s;
  absl::Duration backoff = absl::Milliseconds(250);
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    Prepare(&context, options_.call_timeout);
    s = FromGrpcStatus(stub_->SubmitJob(&context, request, &job));
    if (s.ok() || !Retryable(s) || attempt >= options_.submit_attempts) break;
    *err_ << "mptctl: SubmitJob: " << absl::StatusCodeToString(s.code()) << ": " << s.message()
          << "; retrying with the same request_id " << request.request_id() << "\n";
    err_->flush();
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(4));
  }
  if (!s.ok()) return Fail(s);
  if (json()) {
    *out_ << ToJson(job, /*pretty=*/!args.watch) << "\n";
  } else {
    *out_ << job.name() << "\n";
    *err_ << "submitted " << job.name() << " (" << KindName(job.kind()) << ", "
          << job.stages_size() << " stages, " << StateName(job.state()) << ")\n";
  }
  out_->flush();
  if (args.watch) return Watch(job.name(), 0);
  return kExitOk;
}

int Mptctl::Get(const std::string& id) {
  if (id.empty()) return Fail(absl::InvalidArgumentError("get: JOB required"));
  mpt::v1::GetJobRequest request;
  request.set_name(JobName(id));
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  mpt::v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->GetJob(&context, request, &job));
  if (!s.ok()) return Fail(s);
  *out_ << (json() ? ToJson(job, true) + "\n" : FormatJob(job));
  return kExitOk;
}

int Mptctl::List(const ListArgs& args) {
  mpt::v1::ListJobsRequest request;
  for (const std::string& text : args.states) {
    absl::StatusOr<mpt::v1::JobState> state = ParseJobState(text);
    if (!state.ok()) return Fail(state.status());
    request.add_states(*state);
  }
  for (const std::string& text : args.kinds) {
    absl::StatusOr<mpt::v1::JobKind> kind = ParseJobKind(text);
    if (!kind.ok()) return Fail(kind.status());
    request.add_kinds(*kind);
  }
  request.set_page_size(args.page_size);
  request.set_page_token(args.page_token);
  // The table shows no spec or artefacts: ask for jobs without them.
  if (!json()) request.set_view(mpt::v1::JOB_VIEW_BASIC);
  mpt::v1::ListJobsResponse all;
  while (true) {
    grpc::ClientContext context;
    Prepare(&context, options_.call_timeout);
    mpt::v1::ListJobsResponse page;
    absl::Status s = FromGrpcStatus(stub_->ListJobs(&context, request, &page));
    if (!s.ok()) return Fail(s);
    for (auto& j : *page.mutable_jobs()) *all.add_jobs() = std::move(j);
    all.set_next_page_token(page.next_page_token());
    if (!args.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (json()) {
    *out_ << ToJson(all, true) << "\n";
    return kExitOk;
  }
  *out_ << FormatJobTable(std::vector<mpt::v1::Job>(all.jobs().begin(), all.jobs().end()));
  if (!all.next_page_token().empty()) {
    *err_ << "more jobs: --page_token=" << all.next_page_token() << " (or --all)\n";
  }
  return kExitOk;
}

int Mptctl::Watch(const std::string& id, int64_t after_sequence) {
  if (id.empty()) return Fail(absl::InvalidArgumentError("watch: JOB required"));
  const std::string name = JobName(id);
  std::unique_ptr<TerminalProgressSink> sink;
  if (!json()) {
    TerminalProgressOptions display;
    display.log_every_steps = 1;  // the coordinator already thins them out
    sink = std::make_unique<TerminalProgressSink>(out_, options_.live, display);
  }
  int64_t last = after_sequence;
  mpt::v1::JobState final_state = mpt::v1::JOB_STATE_UNSPECIFIED;
  Reconnect reconnect(options_, err_);
  while (!IsFinalState(final_state)) {
    grpc::ClientContext context;
    Prepare(&context, absl::InfiniteDuration());
    mpt::v1::WatchJobRequest request;
    request.set_name(name);
    request.set_after_sequence(last);
    std::unique_ptr<grpc::ClientReaderInterface<mpt::v1::JobEvent>> reader =
        stub_->WatchJob(&context, request);
    mpt::v1::JobEvent event;
    while (reader->Read(&event)) {
      reconnect.Reached(absl::StrCat("event ", last));
      if (event.sequence() <= last) continue;  // already shown
      last = event.sequence();
      if (json()) {
        *out_ << ToJson(event, false) << "\n";
        out_->flush();
      } else if (std::optional<ProgressEvent> e = ProgressEventFor(event)) {
        sink->OnEvent(*e);
      }
      if (IsFinalState(event.state())) final_state = event.state();
    }
    absl::Status s = FromGrpcStatus(reader->Finish());
    if (IsFinalState(final_state)) break;
    // The stream ended early (a restarted or unreachable coordinator):
    // resume from the last event seen.
    s = reconnect.Failed(s, absl::StrCat("watching ", name), absl::StrCat("event ", last));
    if (!s.ok()) return Fail(s);
  }
  sink.reset();  // ends a bar left on screen
  if (!json()) {
    *out_ << name << ": " << StateName(final_state) << "\n";
    mpt::v1::GetJobRequest request;
    request.set_name(name);
    grpc::ClientContext context;
    Prepare(&context, options_.call_timeout);
    mpt::v1::Job job;
    if (stub_->GetJob(&context, request, &job).ok()) {
      *out_ << FormatResults(job);
      if (!job.error().empty()) *out_ << "error: " << job.error() << "\n";
    }
  }
  out_->flush();
  return final_state == mpt::v1::SUCCEEDED ? kExitOk : kExitJobUnsuccessful;
}

int Mptctl::Cancel(const std::string& id) {
  if (id.empty()) return Fail(absl::InvalidArgumentError("cancel: JOB required"));
  mpt::v1::CancelJobRequest request;
  request.set_name(JobName(id));
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  mpt::v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->CancelJob(&context, request, &job));
  if (!s.ok()) return Fail(s);
  *out_ << (json() ? ToJson(job, true) : absl::StrCat(job.name(), ": ", StateName(job.state())))
        << "\n";
  return kExitOk;
}

absl::Status Mptctl::DownloadArtifact(const std::string& name, const std::string& expected_sha256,
                                      const std::string& folder, absl::string_view label) {
  mpt::v1::DownloadArtifactRequest request;
  request.set_name(name);
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout + absl::Minutes(10));
  std::unique_ptr<grpc::ClientReaderInterface<mpt::v1::ArtifactChunk>> reader =
      stub_->DownloadArtifact(&context, request);
  std::string bytes;
  std::string sha256;
  int64_t total = -1;
  mpt::v1::ArtifactChunk chunk;
  Sha256 hash;
  while (reader->Read(&chunk)) {
    if (chunk.offset() != static_cast<int64_t>(bytes.size())) {
      context.TryCancel();
      reader->Finish();
      return absl::DataLossError(absl::StrCat(name, ": chunk at offset ", chunk.offset(),
                                              " where ", bytes.size(), " was expected"));
    }
    hash.Update(chunk.data());
    bytes += chunk.data();
    if (!chunk.sha256().empty()) sha256 = chunk.sha256();
    if (chunk.total_bytes() > 0) total = chunk.total_bytes();
  }
  absl::Status s = FromGrpcStatus(reader->Finish());
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
  const std::string actual = hash.HexDigest();
  if (total >= 0 && total != static_cast<int64_t>(bytes.size())) {
    return absl::DataLossError(absl::StrCat(name, ": got ", bytes.size(), " of ", total, " bytes"));
  }
  if (sha256.empty() || actual != sha256 ||
      (!expected_sha256.empty() && actual != expected_sha256)) {
    return absl::DataLossError(absl::StrCat(name, ": SHA-256 ", actual, " does not match ",
                                            sha256.empty() ? "(none sent)" : sha256));
  }
  absl::Status unpacked = UnpackDownload(bytes, folder, label);
  if (!unpacked.ok()) {
    return absl::Status(unpacked.code(), absl::StrCat(name, ": ", unpacked.message()));
  }
  return absl::OkStatus();
}

int Mptctl::Download(const std::string& name, const std::string& out_dir) {
  if (name.empty()) return Fail(absl::InvalidArgumentError("download: ARTIFACT or JOB required"));
  struct Item {
    std::string artifact, stage, sha256, folder;
  };
  std::vector<Item> items;
  if (absl::StrContains(name, "/artifacts/")) {
    items.push_back({name, "", "", out_dir.empty() ? LastPart(name) : out_dir});
  } else {
    mpt::v1::GetJobRequest request;
    request.set_name(JobName(name));
    grpc::ClientContext context;
    Prepare(&context, options_.call_timeout);
    mpt::v1::Job job;
    absl::Status s = FromGrpcStatus(stub_->GetJob(&context, request, &job));
    if (!s.ok()) return Fail(s);
    const std::string root = out_dir.empty() ? LastPart(job.name()) : out_dir;
    for (const mpt::v1::Stage& stage : job.stages()) {
      if (stage.artifact().empty()) continue;
      std::optional<std::string> folder = StageFolder(stage.id());
      if (!folder.has_value()) {
        return Fail(absl::InternalError(absl::StrCat("unusable stage id \"", stage.id(), "\"")));
      }
      std::string sha;
      for (const mpt::v1::Artifact& a : job.artifacts()) {
        if (a.name() == stage.artifact()) sha = a.sha256();
      }
      items.push_back({stage.artifact(), stage.id(), sha, (fs::path(root) / *folder).string()});
    }
    if (items.empty()) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          job.name(), " (", StateName(job.state()), ") has no finished stage with an adapter yet")));
    }
  }
  // Nothing is fetched or written unless every folder may be written: one
  // that holds anything but an earlier download's adapter is refused.
  const std::string label = out_dir.empty() ? "download folder" : "--out";
  for (const Item& item : items) {
    absl::Status s = CheckDownloadFolder(item.folder, label);
    if (!s.ok()) return Fail(s);
  }
  for (const Item& item : items) {
    absl::Status s = DownloadArtifact(item.artifact, item.sha256, item.folder, label);
    if (!s.ok()) return Fail(s);
    if (json()) {
      std::error_code ec;
      const fs::path absolute = fs::absolute(item.folder, ec);
      nlohmann::json line = {{"artifact", item.artifact},
                             {"stage", item.stage},
                             {"path", ec ? item.folder : absolute.string()}};
      *out_ << line.dump() << "\n";
    } else {
      *out_ << item.folder << "\n";
    }
  }
  return kExitOk;
}

int Mptctl::Workers() {
  mpt::v1::ListWorkersRequest request;
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  mpt::v1::ListWorkersResponse response;
  absl::Status s = FromGrpcStatus(stub_->ListWorkers(&context, request, &response));
  if (!s.ok()) return Fail(s);
  if (json()) {
    *out_ << ToJson(response, true) << "\n";
  } else {
    *out_ << FormatWorkerTable(
        std::vector<mpt::v1::Worker>(response.workers().begin(), response.workers().end()));
  }
  return kExitOk;
}

void Mptctl::PrintLogPage(const mpt::v1::GetStageLogsResponse& response,
                          std::map<std::string, int64_t>* dropped_shown) {
  for (const auto& [stage, dropped] : response.dropped_lines()) {
    auto [it, inserted] = dropped_shown->emplace(stage, dropped);
    if (!inserted) continue;  // a note per stage, before its first line
    if (!json()) *out_ << FormatDroppedLines(stage, dropped) << "\n";
  }
  const absl::TimeZone zone = absl::LocalTimeZone();
  for (const mpt::v1::LogLine& line : response.lines()) {
    *out_ << (json() ? ToJson(line, false) : FormatLogLine(line, zone)) << "\n";
  }
  out_->flush();
}

int Mptctl::Logs(const LogsArgs& args) {
  if (args.job.empty()) return Fail(absl::InvalidArgumentError("logs: JOB required"));
  const std::string name = JobName(args.job);
  std::map<std::string, int64_t> dropped_shown;
  // One stage, or all of them read in one stream of line numbers.
  auto read = [&](const std::string& stage, bool follow) -> absl::Status {
    int64_t after = 0;
    Reconnect reconnect(options_, err_);
    const std::string doing =
        absl::StrCat("following the logs of ", name, stage.empty() ? "" : " stage ", stage);
    while (true) {
      mpt::v1::GetStageLogsRequest request;
      request.set_name(name);
      request.set_stage(stage);
      request.set_after_line(after);
      grpc::ClientContext context;
      Prepare(&context, options_.call_timeout);
      mpt::v1::GetStageLogsResponse response;
      absl::Status s = FromGrpcStatus(stub_->GetStageLogs(&context, request, &response));
      if (!s.ok()) {
        if (!follow) return s;
        // As watch does: the same request again, from the last line shown.
        RETURN_IF_ERROR(reconnect.Failed(s, doing, absl::StrCat("line ", after)));
        continue;
      }
      reconnect.Reached(absl::StrCat("line ", after));
      PrintLogPage(response, &dropped_shown);
      after = response.last_line();
      if (response.more()) continue;
      if (!follow || response.done()) return absl::OkStatus();
      absl::SleepFor(args.poll_interval);
    }
  };
  if (!args.stage.empty() || args.follow) {
    absl::Status s = read(args.stage, args.follow);
    return s.ok() ? kExitOk : Fail(s);
  }
  // Every stage in the job's order.
  mpt::v1::GetJobRequest request;
  request.set_name(name);
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  mpt::v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->GetJob(&context, request, &job));
  if (!s.ok()) return Fail(s);
  for (const mpt::v1::Stage& stage : job.stages()) {
    s = read(stage.id(), false);
    if (!s.ok()) return Fail(s);
  }
  return kExitOk;
}

}  // namespace mpt
