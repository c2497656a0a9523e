#include "server/coordinator_requests.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/quote.h"
#include "common/sha256.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "server/resource_names.h"
#include "server/scheduler.h"

namespace mpt {
namespace {
using mpt::v1::JobState;
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
}  // namespace

absl::Status CheckCoordinatorOptions(const CoordinatorOptions& options) {
  std::vector<std::string> problems;
  if (options.heartbeat_interval <= absl::ZeroDuration()) {
    problems.push_back("heartbeat_interval must be > 0");
  }
  if (options.lease <= options.heartbeat_interval) {
    problems.push_back("lease must be longer than heartbeat_interval");
  }
  if (options.max_world_size < 1) problems.push_back("max_world_size must be >= 1");
  if (options.max_pack_size < 1) problems.push_back("max_pack_size must be >= 1");
  if (options.max_attempts < 1) problems.push_back("max_attempts must be >= 1");
  if (options.max_worker_losses < 0) problems.push_back("max_worker_losses must be >= 0");
  if (options.max_artifact_bytes < 1) problems.push_back("max_artifact_bytes must be >= 1");
  if (options.max_concurrent_uploads < 1 || options.max_concurrent_uploads > 1024) {
    problems.push_back("max_concurrent_uploads must be in [1, 1024]");
  }
  if (options.maintenance_interval <= absl::ZeroDuration()) {
    problems.push_back("maintenance_interval must be > 0");
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator options: ", absl::StrJoin(problems, "; ")));
  }
  return absl::OkStatus();
}

absl::StatusOr<ListJobsQuery> ParseListJobsRequest(const mpt::v1::ListJobsRequest& request) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be >= 0, got ", request.page_size()));
  }
  ListJobsQuery q;
  q.page_size = std::min(request.page_size() == 0 ? kDefaultPageSize : request.page_size(),
                         kMaxPageSize);
  for (int i = 0; i < request.states_size(); ++i) {
    JobState s = request.states(i);
    if (s == mpt::v1::JOB_STATE_UNSPECIFIED || !mpt::v1::JobState_IsValid(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("states[", i, "]: not a job state (", static_cast<int>(s), ")"));
    }
    q.filter.states.push_back(s);
  }
  for (int i = 0; i < request.kinds_size(); ++i) {
    mpt::v1::JobKind k = request.kinds(i);
    if (k == mpt::v1::JOB_KIND_UNSPECIFIED || !mpt::v1::JobKind_IsValid(k)) {
      return absl::InvalidArgumentError(
          absl::StrCat("kinds[", i, "]: not a job kind (", static_cast<int>(k), ")"));
    }
    q.filter.kinds.push_back(k);
  }
  if (!mpt::v1::JobView_IsValid(request.view())) {
    return absl::InvalidArgumentError(
        absl::StrCat("view: not a job view (", static_cast<int>(request.view()), ")"));
  }
  q.basic = request.view() == mpt::v1::JOB_VIEW_BASIC;
  q.filter_key = ListFilterKey(request);
  if (!request.page_token().empty()) {
    ASSIGN_OR_RETURN(q.before_seq, ParsePageToken(request.page_token(), q.filter_key));
  }
  return q;
}

void CollectBlobIfUnreferenced(JobStore& store, ArtifactStore& blobs, const std::string& sha256) {
  absl::StatusOr<int64_t> refs = store.CountArtifactsWithSha256(sha256);
  if (!refs.ok()) {
    MPT_LOG(WARNING) << "cannot count the references to blob " << sha256
                     << ", keeping it: " << refs.status();
    return;
  }
  if (*refs > 0) return;
  absl::Status removed = blobs.Remove(sha256);
  if (!removed.ok()) MPT_LOG(WARNING) << "cannot remove blob " << sha256 << ": " << removed;
}

std::string SourcePackKey(const mpt::v1::PipelineSpec& spec, const StageEntry& stage) {
  if (stage.rec.kind() != mpt::v1::SOURCE_TRAINING || std::max(1, stage.rec.world_size()) != 1 ||
      stage.rec.task().empty()) {
    return "";
  }
  return absl::StrCat(spec.base_model(), "\n", spec.prompt().num_virtual_tokens(), "x",
                      spec.prompt().num_transformer_submodules(), "\n", spec.autocast());
}

void RunSchedulingPass(CoordinatorState& state, StateTxn& txn, int max_pack_size) {
  ClusterView view;
  view.max_pack_size = max_pack_size;
  std::vector<WorkerEntry*> view_workers;
  for (const auto& [seq, name] : state.worker_order()) {
    WorkerEntry& w = state.workers().at(name);
    const mpt::v1::Worker& pw = w.rec.worker();
    if (pw.state() == "lost") continue;
    SchedulerWorker sw;
    sw.models.assign(pw.models().begin(), pw.models().end());
    sw.collectives.assign(pw.collectives().begin(), pw.collectives().end());
    sw.idle = pw.assignments().empty();
    sw.max_pack = pw.max_pack_size();
    view.workers.push_back(std::move(sw));
    view_workers.push_back(&w);
  }
  // Schedule() decides nothing without an idle worker: skip the walk over
  // every queued job (the cost of each write under load).
  if (std::none_of(view.workers.begin(), view.workers.end(),
                   [](const SchedulerWorker& w) { return w.idle; })) {
    return;
  }
  std::map<std::string, int> worker_index;  // "workers/{id}" -> index in the view
  for (int i = 0; i < static_cast<int>(view_workers.size()); ++i) {
    worker_index[view_workers[i]->rec.worker().name()] = i;
  }
  std::vector<JobEntry*> view_jobs;
  for (auto& [key, job] : state.job_order()) {
    const JobState js = job->rec.job().state();
    if (js != mpt::v1::QUEUED && js != mpt::v1::RUNNING) continue;
    SchedulerJob sj;
    sj.base_model = job->rec.job().spec().base_model();
    sj.gang_note_sent = job->gang_note_sent;
    for (const StageEntry& stage : job->stages) {
      SchedulerStage ss;
      ss.ready = state.StageReady(*job, stage);
      ss.world_size = stage.rec.world_size();
      if (max_pack_size > 1 && ss.ready) ss.pack_key = SourcePackKey(job->rec.job().spec(), stage);
      if (ss.ready) {
        for (const std::string& w : stage.rec.failed_on()) {
          if (auto it = worker_index.find(w); it != worker_index.end()) ss.avoid.push_back(it->second);
        }
      }
      sj.stages.push_back(std::move(ss));
    }
    view.jobs.push_back(std::move(sj));
    view_jobs.push_back(job);
  }
  for (const ScheduleAction& action : Schedule(view)) {
    JobEntry* job = view_jobs[action.job];
    StageEntry* stage = &job->stages[action.stage];
    switch (action.kind) {
      case ScheduleAction::Kind::kStart: {
        std::vector<WorkerEntry*> workers;
        for (int w : action.workers) workers.push_back(view_workers[w]);
        // A pack: the other stages start on the same worker, each with an
        // assignment of its own (PollAssignment hands them out together).
        const std::string note =
            action.packed.empty()
                ? ""
                : absl::StrCat("in one pass with ", action.packed.size(),
                               action.packed.size() == 1 ? " other stage" : " other stages");
        state.StartStage(txn, job, stage, workers, action.collective, note);
        for (const auto& [pj, ps] : action.packed) {
          JobEntry* packed_job = view_jobs[pj];
          state.StartStage(txn, packed_job, &packed_job->stages[ps], workers, "", note);
        }
        break;
      }
      case ScheduleAction::Kind::kHold:
        break;  // nothing to write: holds are recomputed on every pass
      case ScheduleAction::Kind::kWaitNote:
        job->gang_note_sent = true;
        state.AddEvent(txn, job, stage,
                        absl::StrCat("waiting for ", action.world_size, " workers that can run ",
                                     job->rec.job().spec().base_model(), " together; ",
                                     action.registered, action.registered == 1 ? " is" : " are",
                                     " registered (other jobs run meanwhile)"));
        break;
    }
  }
}

absl::StatusOr<JobEventBatch> ReadEventBatch(JobStore& store, const std::string& name,
                                             int64_t after_sequence, int64_t limit,
                                             int max_events) {
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> job, store.ReadJob(name));
  if (!job.has_value()) return UnknownJob(name);
  if (after_sequence > job->last_event()) {
    return absl::InvalidArgumentError(absl::StrCat("after_sequence: ", after_sequence,
                                                   " is beyond the last event of ", name, " (",
                                                   job->last_event(), ")"));
  }
  JobEventBatch batch;
  ASSIGN_OR_RETURN(batch.events, store.ReadEvents(name, after_sequence, max_events));
  // Events past `limit` may be committed while memory has not caught up;
  // a reader sent them would next ask for a sequence the coordinator does
  // not know yet. They go out on the next call.
  while (limit >= 0 && !batch.events.empty() && batch.events.back().sequence() > limit) {
    batch.events.pop_back();
  }
  const int64_t seen = batch.events.empty() ? after_sequence : batch.events.back().sequence();
  batch.done = IsFinalState(job->state()) && seen >= job->last_event();
  return batch;
}

mpt::v1::ListWorkersResponse ListWorkersOf(const CoordinatorState& state) {
  mpt::v1::ListWorkersResponse response;
  for (const auto& [seq, name] : state.worker_order()) {
    const WorkerEntry& w = state.workers().at(name);
    mpt::v1::Worker* out = response.add_workers();
    *out = w.rec.worker();
    if (out->state() != "lost") *out->mutable_last_heartbeat() = ToTimestamp(w.last_seen);
  }
  return response;
}

absl::Status UnknownJob(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("job ", QuoteForError(name), " not found"));
}

absl::Status UnknownArtifact(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("artefact ", QuoteForError(name), " not found"));
}

absl::Status UnknownWorker(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("worker ", QuoteForError(name),
                                          " is not registered (or was declared lost): register "
                                          "again"));
}

absl::Status UnknownAssignment(const std::string& id) {
  return absl::NotFoundError(absl::StrCat(
      "assignment ", id,
      " not found (it ended, or its worker was declared lost and it was requeued)"));
}

// Only the worker an assignment was handed to may report on it.
absl::Status CheckHolder(const coordinator::AssignmentRecord& rec, const std::string& id,
                         const std::string& worker) {
  return CheckHolderName(rec.worker(), id, worker);
}

absl::Status CheckHolderName(const std::string& holder, const std::string& id,
                             const std::string& worker) {
  if (holder == worker) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "assignment ", id, " was not handed to ", QuoteForError(worker),
      "; only its own worker may report on it"));
}

bool IsRunningAttemptGroup(CoordinatorState& state, const std::string& group) {
  // "jobs/{job}/stages/{stage}/attempts/{n}"; the stage id may hold '/'.
  const size_t stages = group.find("/stages/");
  const size_t attempts = group.rfind("/attempts/");
  if (stages == std::string::npos || attempts == std::string::npos || attempts <= stages + 8) {
    return false;
  }
  JobEntry* job = state.FindJob(group.substr(0, stages));
  if (job == nullptr) return false;
  StageEntry* stage = state.FindStage(job, group.substr(stages + 8, attempts - stages - 8));
  return stage != nullptr && stage->rec.stage().state() == mpt::v1::RUNNING &&
         stage->rec.group() == group;
}

// A reported progress with the stage's kind and task where it names none.
mpt::v1::Progress StageProgress(mpt::v1::Progress progress, const StageEntry& stage) {
  if (progress.stage().empty()) progress.set_stage(std::string(StageKindName(stage.rec.kind())));
  if (progress.task().empty()) progress.set_task(stage.rec.task());
  return progress;
}

absl::Status CheckUploadHeader(const mpt::v1::UploadArtifactRequest::Header& header) {
  if (header.assignment().empty()) return absl::InvalidArgumentError("header.assignment: required");
  if (header.assignment().size() > kMaxResourceNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("header.assignment: ",
                                                   QuoteForError(header.assignment()),
                                                   " is not an assignment id: longer than ",
                                                   kMaxResourceNameBytes, " bytes"));
  }
  if (header.worker().empty()) return absl::InvalidArgumentError("header.worker: required");
  if (header.kind() != "adapter" && header.kind() != "checkpoint") {
    return absl::InvalidArgumentError(
        absl::StrCat("header.kind: ", QuoteForError(header.kind()),
                     " is not an artefact kind (adapter or checkpoint)"));
  }
  if (header.step() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.step: must be >= 0, got ", header.step()));
  }
  return absl::OkStatus();
}

namespace {

bool IsDeviceName(absl::string_view device) {
  const size_t colon = device.find(':');
  const absl::string_view name = device.substr(0, colon);
  if (name.empty()) return false;
  for (char c : name) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '_') return false;
  }
  if (colon == absl::string_view::npos) return true;
  const absl::string_view index = device.substr(colon + 1);
  if (index.empty() || index.size() > 6) return false;
  for (char c : index) {
    if (!absl::ascii_isdigit(c)) return false;
  }
  return true;
}

bool HasControlCharacter(absl::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

absl::Status TooLong(absl::string_view field, absl::string_view value, size_t max) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", value.size(), " bytes; at most ", max));
}

// A map of names to numbers of a Progress: at most `max_entries`, each
// name at most kMaxProgressNameBytes.
absl::Status CheckNamedValues(const google::protobuf::Map<std::string, double>& values,
                              absl::string_view field, int max_entries) {
  if (values.size() > static_cast<size_t>(max_entries)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", values.size(), " entries; at most ", max_entries));
  }
  for (const auto& [name, value] : values) {
    if (name.size() > kMaxProgressNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", QuoteForError(name), "]: the name has ",
                                                     name.size(), " bytes; at most ",
                                                     kMaxProgressNameBytes));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckWorkerRegistration(const mpt::v1::Worker& worker) {
  const std::string& host = worker.hostname();
  if (host.size() > kMaxHostnameBytes) {
    return TooLong("worker.hostname", host, kMaxHostnameBytes);
  }
  for (size_t i = 0; i < host.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(host[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker.hostname: ", QuoteForError(host), " has a character that is not ",
                       "printable ASCII or is a space (byte ", i, ")"));
    }
  }
  const std::string& device = worker.device();
  if (device.size() > kMaxDeviceBytes) return TooLong("worker.device", device, kMaxDeviceBytes);
  if (!device.empty() && !IsDeviceName(device)) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker.device: ", QuoteForError(device),
                     " is not a device (cpu, cuda or cuda:N: a lower-case name and an optional "
                     ":index)"));
  }
  if (worker.memory_bytes() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker.memory_bytes: must be >= 0, got ", worker.memory_bytes()));
  }
  if (worker.max_pack_size() < 0 || worker.max_pack_size() > kMaxWorkerPackSize) {
    return absl::InvalidArgumentError(absl::StrCat("worker.max_pack_size: must be in [0, ",
                                                   kMaxWorkerPackSize, "], got ",
                                                   worker.max_pack_size()));
  }
  if (worker.collectives_size() > kMaxWorkerCollectives) {
    return absl::InvalidArgumentError(absl::StrCat("worker.collectives: ",
                                                   worker.collectives_size(),
                                                   " entries; at most ", kMaxWorkerCollectives));
  }
  for (int i = 0; i < worker.collectives_size(); ++i) {
    const std::string& c = worker.collectives(i);
    if (c != "gloo" && c != "nccl") {
      return absl::InvalidArgumentError(absl::StrCat(
          "worker.collectives[", i, "]: unknown collective ", QuoteForError(c), " (gloo or nccl)"));
    }
  }
  if (worker.models_size() > kMaxWorkerModels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker.models: ", worker.models_size(), " models; at most ", kMaxWorkerModels));
  }
  size_t models_bytes = 0;
  for (int i = 0; i < worker.models_size(); ++i) {
    const std::string& m = worker.models(i);
    const std::string field = absl::StrCat("worker.models[", i, "]");
    if (m.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
    if (m.size() > kMaxModelNameBytes) return TooLong(field, m, kMaxModelNameBytes);
    if (HasControlCharacter(m)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", QuoteForError(m), " has a control character"));
    }
    models_bytes += m.size();
  }
  if (models_bytes > kMaxWorkerModelsBytes) {
    return absl::InvalidArgumentError(absl::StrCat("worker.models: ", models_bytes,
                                                   " bytes in all; at most ",
                                                   kMaxWorkerModelsBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckProgress(const mpt::v1::Progress& progress, absl::string_view field) {
  auto name = [&](absl::string_view sub) { return absl::StrCat(field, ".", sub); };
  if (progress.step() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name("step"), ": must be >= 0, got ", progress.step()));
  }
  if (progress.total_steps() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name("total_steps"), ": must be >= 0, got ", progress.total_steps()));
  }
  if (progress.total_steps() > 0 && progress.step() > progress.total_steps()) {
    return absl::InvalidArgumentError(absl::StrCat(name("step"), ": ", progress.step(),
                                                   " is beyond total_steps (",
                                                   progress.total_steps(), ")"));
  }
  for (auto [sub, value] : {std::make_pair("learning_rate", progress.learning_rate()),
                            std::make_pair("tokens_per_second", progress.tokens_per_second())}) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name(sub), ": must be a finite number >= 0, got ", value));
    }
  }
  const double eta = progress.eta_seconds();
  if (!std::isfinite(eta) || (eta < 0 && eta != -1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name("eta_seconds"), ": must be -1 (unknown) or a finite number >= 0, got ", eta));
  }
  if (progress.stage().size() > kMaxProgressNameBytes) {
    return TooLong(name("stage"), progress.stage(), kMaxProgressNameBytes);
  }
  if (progress.task().size() > kMaxProgressNameBytes) {
    return TooLong(name("task"), progress.task(), kMaxProgressNameBytes);
  }
  RETURN_IF_ERROR(CheckNamedValues(progress.losses(), name("losses"), kMaxProgressLosses));
  RETURN_IF_ERROR(CheckNamedValues(progress.metrics(), name("metrics"), kMaxProgressMetrics));
  const size_t bytes = progress.ByteSizeLong();
  if (bytes > kMaxProgressBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", bytes, " bytes; at most ", kMaxProgressBytes));
  }
  return absl::OkStatus();
}

std::string CutText(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  // Back to the start of a UTF-8 character.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(text.substr(0, cut), " [cut]");
}

}  // namespace mpt
