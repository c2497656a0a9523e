#include "server/coordinator_requests.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
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
  if (!job.has_value()) return absl::NotFoundError(absl::StrCat("job ", name, " not found"));
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

absl::Status UnknownWorker(const std::string& name) {
  return absl::NotFoundError(absl::StrCat(
      "worker ", name, " is not registered (or was declared lost): register again"));
}

absl::Status UnknownAssignment(const std::string& id) {
  return absl::NotFoundError(absl::StrCat(
      "assignment ", id,
      " not found (it ended, or its worker was declared lost and it was requeued)"));
}

// Only the worker an assignment was handed to may report on it.
absl::Status CheckHolder(const coordinator::AssignmentRecord& rec, const std::string& id,
                         const std::string& worker) {
  if (rec.worker() == worker) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "assignment ", id, " was not handed to ", worker.substr(0, 64),
      "; only its own worker may report on it"));
}

// A reported progress with the stage's kind and task where it names none.
mpt::v1::Progress StageProgress(mpt::v1::Progress progress, const StageEntry& stage) {
  if (progress.stage().empty()) progress.set_stage(std::string(StageKindName(stage.rec.kind())));
  if (progress.task().empty()) progress.set_task(stage.rec.task());
  return progress;
}

absl::Status CheckUploadRequest(const mpt::v1::UploadArtifactRequest::Header& header,
                                size_t data_size, absl::string_view sha256, int64_t max_bytes) {
  if (header.assignment().empty()) return absl::InvalidArgumentError("header.assignment: required");
  if (header.worker().empty()) return absl::InvalidArgumentError("header.worker: required");
  if (header.kind() != "adapter" && header.kind() != "checkpoint") {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.kind: \"", header.kind(), "\" is not an artefact kind (adapter or checkpoint)"));
  }
  if (header.step() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.step: must be >= 0, got ", header.step()));
  }
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        "sha256: required on the last message, as 64 hexadecimal digits");
  }
  if (static_cast<int64_t>(data_size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data_size,
                                                   " bytes is more than the coordinator accepts (",
                                                   max_bytes, ")"));
  }
  return absl::OkStatus();
}

}  // namespace mpt
