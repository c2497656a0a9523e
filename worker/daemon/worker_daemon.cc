#include "worker/daemon/worker_daemon.h"

#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/artifact_pack.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/daemon/outbox.h"
#include "worker/daemon/stage_log.h"
#include "common/progress/progress_proto.h"

namespace mpt {

namespace fs = std::filesystem;

namespace {

// Gives each event to the outbox, then to the observer.
class TeeProgressSink final : public ProgressSink {
 public:
  TeeProgressSink(ProgressSink* first, ProgressSink* second) : first_(first), second_(second) {}
  void OnEvent(const ProgressEvent& event) override {
    first_->OnEvent(event);
    if (second_ != nullptr) second_->OnEvent(event);
  }

 private:
  ProgressSink* const first_;
  ProgressSink* const second_;
};


// Codes that say the coordinator will never accept this worker as it is
// configured: retrying does not help, a person must act.
bool Fatal(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnauthenticated ||
         s.code() == absl::StatusCode::kPermissionDenied ||
         s.code() == absl::StatusCode::kInvalidArgument;
}

// "jobs/j1/stages/source/max/attempts/2/ranks/0" -> a single folder name.
std::string FolderNameFor(const std::string& id) {
  std::string name = absl::StrReplaceAll(id, {{"/", "_"}, {"..", "__"}});
  if (name.empty()) name = "assignment";
  return name;
}

}  // namespace

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Create(WorkerDaemonOptions options,
                                                                   CoordinatorClient* client,
                                                                   AssignmentExecutor* executor) {
  if (client == nullptr || executor == nullptr) {
    return absl::InvalidArgumentError("WorkerDaemon: client and executor are required");
  }
  if (options.work_dir.empty()) return absl::InvalidArgumentError("--work_dir: required");
  for (const auto& [name, d] :
       std::vector<std::pair<const char*, absl::Duration>>{
           {"poll_wait", options.poll_wait},
           {"min_backoff", options.min_backoff},
           {"max_backoff", options.max_backoff},
           {"heartbeat_interval", options.heartbeat_interval},
           {"result_retry_timeout", options.result_retry_timeout}}) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": must be positive"));
    }
  }
  if (options.max_backoff < options.min_backoff) options.max_backoff = options.min_backoff;
  std::error_code ec;
  fs::create_directories(fs::path(options.work_dir) / "assignments", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("--work_dir: cannot create ", options.work_dir, ": ", ec.message()));
  }
  return std::unique_ptr<WorkerDaemon>(new WorkerDaemon(std::move(options), client, executor));
}

WorkerDaemon::WorkerDaemon(WorkerDaemonOptions options, CoordinatorClient* client,
                           AssignmentExecutor* executor)
    : options_(std::move(options)),
      client_(client),
      executor_(executor),
      heartbeat_interval_(options_.heartbeat_interval) {}

WorkerDaemon::~WorkerDaemon() { Stop(); }

std::string WorkerDaemon::worker_name() const {
  absl::MutexLock lock(&mu_);
  return worker_name_;
}

int64_t WorkerDaemon::assignments_finished() const { return finished_.load(); }

void WorkerDaemon::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (const auto& r : running_) {
      r->lost.store(true);
      r->Cancel("the worker is stopping");
    }
  }
  client_->InterruptWaits();
}

bool WorkerDaemon::SleepUnlessStopped(absl::Duration d) {
  mu_.LockWhenWithTimeout(absl::Condition(&stopping_), d);
  const bool stopped = stopping_;
  mu_.Unlock();
  return !stopped;
}

absl::Duration WorkerDaemon::NextBackoff(absl::Duration* current) const {
  thread_local std::mt19937 rng(std::random_device{}());
  const absl::Duration now = *current;
  *current = std::min(*current * 2, options_.max_backoff);
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  return now * jitter(rng);
}

std::string WorkerDaemon::EnsureRegistered() {
  absl::Duration backoff = options_.min_backoff;
  int failures = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return "";
      if (!worker_name_.empty()) return worker_name_;
    }
    absl::StatusOr<mpt::v1::RegisterWorkerResponse> r = client_->RegisterWorker(options_.worker);
    if (r.ok()) {
      absl::MutexLock lock(&mu_);
      worker_name_ = r->name();
      if (r->heartbeat_seconds() > 0) {
        heartbeat_interval_ = absl::Seconds(r->heartbeat_seconds());
      }
      MPT_LOG(INFO) << "registered as " << worker_name_ << " (heartbeat every "
                    << absl::FormatDuration(heartbeat_interval_) << ", lease "
                    << r->lease_seconds() << "s)";
      return worker_name_;
    }
    if (Fatal(r.status())) {
      MPT_LOG(ERROR) << "the coordinator refused the registration: " << r.status();
      fatal_ = r.status();
      return "";
    }
    if (failures++ % 10 == 0) {
      MPT_LOG(WARNING) << "cannot register with the coordinator (will retry): " << r.status();
    }
    if (!SleepUnlessStopped(NextBackoff(&backoff))) return "";
  }
}

void WorkerDaemon::ForgetRegistration(const std::string& stale_name) {
  absl::MutexLock lock(&mu_);
  if (worker_name_ != stale_name || stale_name.empty()) return;
  MPT_LOG(WARNING) << "the coordinator no longer knows " << stale_name << "; registering again";
  worker_name_.clear();
  for (const auto& r : running_) {
    r->lost.store(true);
    r->Cancel("the coordinator declared this worker lost");
  }
}

void WorkerDaemon::HeartbeatLoop() {
  int failures = 0;
  absl::Time last_sent = absl::InfinitePast();
  while (true) {
    absl::Duration interval;
    {
      absl::MutexLock lock(&mu_);
      interval = heartbeat_interval_;
    }
    if (!SleepUnlessStopped(interval)) return;
    const std::string name = worker_name();
    if (name.empty()) continue;
    const absl::Time sent = absl::Now();
    if (last_sent != absl::InfinitePast() && sent - last_sent > 3 * interval) {
      MPT_LOG(WARNING) << "heartbeat sent " << absl::FormatDuration(sent - last_sent)
                       << " after the previous one (every " << absl::FormatDuration(interval)
                       << ")";
    }
    last_sent = sent;
    absl::StatusOr<mpt::v1::HeartbeatResponse> r = client_->Heartbeat(name);
    if (const absl::Duration took = absl::Now() - sent; took > interval) {
      // Slower than the interval: the lease may run out before the next one.
      MPT_LOG(WARNING) << "heartbeat took " << absl::FormatDuration(took) << " ("
                       << (r.ok() ? "ok" : r.status().ToString()) << ")";
    }
    if (r.ok()) {
      if (failures > 0) MPT_LOG(INFO) << "heartbeats reach the coordinator again";
      failures = 0;
      absl::MutexLock lock(&mu_);
      for (const std::string& id : r->cancelled_assignments()) {
        for (const auto& running : running_) {
          if (running->id == id) running->Cancel("cancelled by the coordinator");
        }
      }
    } else if (r.status().code() == absl::StatusCode::kNotFound) {
      ForgetRegistration(name);
    } else if (failures++ % 10 == 0) {
      MPT_LOG(WARNING) << "heartbeat failed (will retry): " << r.status();
    }
  }
}

absl::Status WorkerDaemon::Run() {
  std::thread heartbeats([this] { HeartbeatLoop(); });
  absl::Duration backoff = options_.min_backoff;
  int failures = 0;
  absl::Status result;
  while (true) {
    const std::string name = EnsureRegistered();
    if (name.empty()) break;  // stopped, or refused for good
    absl::StatusOr<std::optional<mpt::v1::Assignment>> polled =
        client_->PollAssignment(name, options_.poll_wait);
    if (!polled.ok()) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) break;  // Stop() interrupted the poll.
      }
      if (polled.status().code() == absl::StatusCode::kNotFound) {
        ForgetRegistration(name);
        continue;
      }
      if (failures++ % 10 == 0) {
        MPT_LOG(WARNING) << "cannot poll for work (will retry): " << polled.status();
      }
      if (!SleepUnlessStopped(NextBackoff(&backoff))) break;
      continue;
    }
    if (failures > 0) MPT_LOG(INFO) << "the coordinator is reachable again";
    failures = 0;
    backoff = options_.min_backoff;
    if (polled->has_value()) Execute(**polled, name);
  }
  Stop();
  heartbeats.join();
  return fatal_;
}

absl::Status WorkerDaemon::RetryCall(const std::function<absl::Status()>& call,
                                     const Running& running, const char* what) {
  const absl::Time give_up = absl::Now() + options_.result_retry_timeout;
  absl::Duration backoff = options_.min_backoff;
  int failures = 0;
  while (true) {
    absl::Status s = call();
    if (s.ok() || !IsRetryableRpcError(s)) return s;
    if (running.lost.load() || absl::Now() >= give_up) return s;
    if (failures++ % 10 == 0) {
      MPT_LOG(WARNING) << running.id << ": " << what << " failed (will retry): " << s;
    }
    if (!SleepUnlessStopped(NextBackoff(&backoff))) return s;
  }
}

absl::StatusOr<std::string> WorkerDaemon::FetchWithRetry(const std::string& name,
                                                         const Running& running) {
  std::string bytes;
  // A transfer that arrives damaged is worth another try or two; an
  // artefact damaged in the coordinator's store (DATA_LOSS from it) stays
  // damaged, so the attempt fails with it rather than retrying for the
  // whole result_retry_timeout.
  constexpr int kDataLossRetries = 2;
  int data_losses = 0;
  absl::Status s = RetryCall(
      [&]() -> absl::Status {
        absl::StatusOr<std::string> fetched = client_->FetchArtifact(name);
        if (!fetched.ok()) {
          if (fetched.status().code() == absl::StatusCode::kDataLoss &&
              data_losses++ < kDataLossRetries) {
            return absl::UnavailableError(fetched.status().message());
          }
          return fetched.status();
        }
        bytes = std::move(*fetched);
        return absl::OkStatus();
      },
      running, "FetchArtifact");
  if (!s.ok()) return s;
  return bytes;
}

absl::Status WorkerDaemon::FetchInputs(const mpt::v1::Assignment& assignment,
                                       const std::string& dir, const Running& running,
                                       AssignmentContext* context) {
  std::vector<std::pair<std::string, std::string>> teachers;  // task, folder
  for (int i = 0; i < assignment.inputs_size(); ++i) {
    const mpt::v1::AssignmentInput& input = assignment.inputs(i);
    if (input.role() != "teacher" && input.role() != "source_adapter" &&
        input.role() != "checkpoint") {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", i, " (", input.artifact(), "): unknown role \"", input.role(),
                       "\""));
    }
    absl::StatusOr<std::string> blob = FetchWithRetry(input.artifact(), running);
    if (!blob.ok()) {
      return absl::Status(blob.status().code(),
                          absl::StrCat(input.role(), " input ", input.artifact(), ": ",
                                       blob.status().message()));
    }
    const std::string folder = (fs::path(dir) / absl::StrCat(input.role(), "-", i)).string();
    absl::Status unpacked = UnpackFolder(*blob, folder);
    if (!unpacked.ok()) {
      return absl::Status(unpacked.code(), absl::StrCat(input.role(), " input ", input.artifact(),
                                                        ": ", unpacked.message()));
    }
    if (input.role() == "teacher") {
      teachers.emplace_back(input.task(), folder);
    } else if (input.role() == "source_adapter") {
      context->source_adapter = folder;
    } else {
      context->checkpoint = folder;
    }
  }
  // Teachers in the order of the distillation's tasks (which default to the
  // source tasks) when the inputs name their tasks; in input order otherwise.
  const mpt::v1::PipelineSpec& spec = assignment.spec();
  std::vector<std::string> order;
  for (const auto& t : spec.distillation().tasks()) order.push_back(t.name());
  if (order.empty()) {
    for (const auto& t : spec.source().tasks()) order.push_back(t.name());
  }
  std::map<std::string, std::string> by_task;
  for (const auto& [task, folder] : teachers) by_task[task] = folder;
  bool named = by_task.size() == teachers.size() && teachers.size() == order.size();
  for (const std::string& task : order) named = named && by_task.count(task) > 0;
  if (named) {
    for (const std::string& task : order) context->teachers.push_back(by_task[task]);
  } else {
    for (const auto& [task, folder] : teachers) context->teachers.push_back(folder);
  }
  return absl::OkStatus();
}

std::vector<absl::StatusOr<AssignmentOutput>> AssignmentExecutor::RunPack(
    const std::vector<const AssignmentContext*>& contexts) {
  std::vector<absl::StatusOr<AssignmentOutput>> results;
  results.reserve(contexts.size());
  for (const AssignmentContext* c : contexts) results.push_back(Run(*c));
  return results;
}

// One assignment of what the daemon runs now (a pack has several).
struct WorkerDaemon::Member {
  Member(const mpt::v1::Assignment& a, const std::string& worker, const StageLogOptions& log)
      : assignment(a), running(std::make_shared<Running>(a.id(), worker)), stage_log(log) {}
  const mpt::v1::Assignment& assignment;
  std::shared_ptr<Running> running;
  StageLog stage_log;
  fs::path dir;
  AssignmentContext context;
  absl::Status status;
  std::unique_ptr<ProgressOutbox> outbox;
  std::unique_ptr<TeeProgressSink> tee;
  AssignmentOutput output;
  std::optional<mpt::v1::Progress> last_progress;
  bool reported = false;  // uploaded and completed (or not, when lost)
};

void WorkerDaemon::Execute(const mpt::v1::Assignment& assignment, const std::string& worker) {
  // The assignment and the rest of its pack, each reported on by its own id.
  std::vector<std::unique_ptr<Member>> members;
  members.push_back(std::make_unique<Member>(assignment, worker, options_.stage_log));
  for (const mpt::v1::Assignment& p : assignment.packed()) {
    members.push_back(std::make_unique<Member>(p, worker, options_.stage_log));
  }
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    running_.clear();
    for (const auto& m : members) running_.push_back(m->running);
  }
  // Every line this process logs from now until the end is reported is the
  // stage's log (a worker runs one assignment, or one pack, at a time; a
  // pack's lines go to each of its stages).
  for (auto& m : members) m->stage_log.Attach();
  for (auto& m : members) {
    const mpt::v1::Assignment& a = m->assignment;
    MPT_LOG(INFO) << "assignment " << a.id() << ": stage " << a.stage()
                  << (a.world_size() > 1
                          ? absl::StrCat(", rank ", a.rank(), " of ", a.world_size())
                          : "")
                  << (members.size() > 1
                          ? absl::StrCat(", in one pass with ", members.size() - 1, " more")
                          : "");
    m->dir = fs::path(options_.work_dir) / "assignments" / FolderNameFor(a.id());
    std::error_code ec;
    fs::remove_all(m->dir, ec);
    AssignmentContext& context = m->context;
    context.assignment = &a;
    context.work_dir = (m->dir / "work").string();
    context.out_dir = (m->dir / "out").string();
    fs::create_directories(context.work_dir, ec);
    fs::create_directories(context.out_dir, ec);
    fs::create_directories(m->dir / "inputs", ec);
    m->status = ec ? absl::InternalError(absl::StrCat(m->dir.string(), ": ", ec.message()))
                   : FetchInputs(a, (m->dir / "inputs").string(), *m->running, &context);
  }

  // The members whose inputs are in run, alone or as one pack; the others
  // end now.
  std::vector<Member*> runnable;
  for (auto& m : members) {
    if (m->status.ok()) {
      runnable.push_back(m.get());
    } else if (members.size() > 1) {
      Report(*m);
      m->reported = true;
    }
  }
  // A member's end: its outbox flushed, then reported (once).
  auto end_member = [this](Member* m, const absl::StatusOr<AssignmentOutput>& result) {
    if (m->reported) return;
    m->outbox->Close(absl::Seconds(5));
    m->last_progress = m->outbox->last_progress();
    if (result.ok()) {
      m->output = *result;
    } else {
      m->status = result.status();
    }
    Report(*m);
    m->reported = true;
  };
  std::unique_ptr<CoordinatorRendezvousStore> store;
  OutboxOptions outbox_options;
  outbox_options.progress_interval = options_.progress_interval;
  outbox_options.min_backoff = options_.min_backoff;
  outbox_options.max_backoff = options_.max_backoff;
  outbox_options.log_interval = options_.progress_interval;
  for (Member* m : runnable) {
    const bool leader = m->assignment.rank() == 0;
    m->outbox = std::make_unique<ProgressOutbox>(client_, m->running.get(), outbox_options,
                                                 /*reports=*/leader, &m->stage_log);
    Running* r = m->running.get();
    m->context.cancelled = [r] { return r->cancelled.load(); };
    m->context.set_abort = [r](std::function<void()> hook) { r->SetAbort(std::move(hook)); };
    m->tee = std::make_unique<TeeProgressSink>(m->outbox.get(), options_.progress_observer);
    m->context.sink = options_.progress_observer != nullptr
                          ? static_cast<ProgressSink*>(m->tee.get())
                          : m->outbox.get();
    // A pack member that ends while others train is reported at once.
    if (runnable.size() > 1) {
      m->context.done = [&end_member, m](const absl::StatusOr<AssignmentOutput>& result) {
        end_member(m, result);
      };
    }
  }
  if (runnable.size() == 1 && runnable[0]->assignment.world_size() > 1) {
    Member* m = runnable[0];
    store = std::make_unique<CoordinatorRendezvousStore>(
        client_, RendezvousMember{m->assignment.group(), m->assignment.id(), worker},
        m->context.cancelled);
    m->context.store = store.get();
  }
  std::vector<absl::StatusOr<AssignmentOutput>> ran;
  try {
    if (runnable.size() == 1) {
      ran.push_back(executor_->Run(runnable[0]->context));
    } else if (!runnable.empty()) {
      std::vector<const AssignmentContext*> contexts;
      for (Member* m : runnable) contexts.push_back(&m->context);
      ran = executor_->RunPack(contexts);
    }
  } catch (const std::exception& e) {
    ran.assign(runnable.size(), absl::InternalError(absl::StrCat("stage failed: ", e.what())));
  } catch (...) {
    ran.assign(runnable.size(), absl::InternalError("stage failed with an unknown exception"));
  }
  if (ran.size() != runnable.size()) {
    ran.assign(runnable.size(),
               absl::InternalError("the stage runner returned results for another pack size"));
  }
  for (size_t i = 0; i < runnable.size(); ++i) end_member(runnable[i], ran[i]);
  for (auto& m : members) {
    if (!m->reported) Report(*m);
  }
  std::error_code ec;
  for (auto& m : members) {
    if (!options_.keep_assignment_dirs) fs::remove_all(m->dir, ec);
  }
  {
    absl::MutexLock lock(&mu_);
    running_.clear();
  }
  finished_.fetch_add(static_cast<int64_t>(members.size()));
}

void WorkerDaemon::Report(Member& m) {
  const mpt::v1::Assignment& assignment = m.assignment;
  Running* running = m.running.get();
  absl::Status& status = m.status;
  StageLog& stage_log = m.stage_log;
  const AssignmentOutput& output = m.output;
  const bool leader = assignment.rank() == 0;
  if (running->cancelled.load() && status.ok()) {
    // Finished anyway; the result still counts.
    MPT_LOG(INFO) << assignment.id() << ": finished before the cancellation took effect";
  }
  if (running->lost.load()) {
    MPT_LOG(INFO) << assignment.id() << ": not reported (" << running->Reason() << ")";
    stage_log.Detach();
    return;
  }
  if (status.ok() && leader) {
    for (const std::string& folder : output.adapters) {
      absl::StatusOr<std::string> blob = PackFolder(folder);
      if (!blob.ok()) {
        status = blob.status();
        break;
      }
      const int64_t step = output.final_progress.step();
      status = RetryCall(
          [&]() -> absl::Status {
            absl::StatusOr<mpt::v1::Artifact> a = client_->UploadArtifact(
                running->worker, assignment.id(), "adapter", step, *blob);
            if (a.ok()) MPT_LOG(INFO) << assignment.id() << ": uploaded " << a->name();
            return a.status();
          },
          *running, "UploadArtifact(adapter)");
      if (!status.ok()) break;
    }
  }
  mpt::v1::CompleteAssignmentRequest complete;
  complete.set_assignment(assignment.id());
  complete.set_worker(running->worker);
  complete.set_ok(status.ok());
  if (!status.ok()) {
    complete.set_error(running->cancelled.load() && status.code() == absl::StatusCode::kCancelled
                           ? absl::StrCat("cancelled: ", running->Reason())
                           : status.ToString());
    // A bad spec or data file fails the same way on every attempt.
    complete.set_permanent(!running->cancelled.load() &&
                           (status.code() == absl::StatusCode::kInvalidArgument ||
                            status.code() == absl::StatusCode::kNotFound));
    // A gang's collective failed or the gang did not form: a peer died,
    // froze or is unreachable (AssignmentRunner's contract).
    complete.set_peer_failure(!running->cancelled.load() && assignment.world_size() > 1 &&
                              (status.code() == absl::StatusCode::kUnavailable ||
                               status.code() == absl::StatusCode::kDeadlineExceeded));
  }
  if (!status.ok()) {
    // The reason goes into the stage's log, which a user reads through
    // the coordinator.
    MPT_LOG(ERROR) << assignment.id() << ": failed: " << complete.error();
  }
  stage_log.Detach();
  if (stage_log.dropped() > 0) {
    MPT_LOG(WARNING) << assignment.id() << ": " << stage_log.dropped()
                     << " log lines were dropped while the coordinator was unreachable";
  }
  for (mpt::v1::LogLine& line :
       stage_log.Pending(options_.stage_log.max_lines, options_.stage_log.max_bytes)) {
    *complete.add_log_lines() = std::move(line);
  }
  if (output.final_progress.ByteSizeLong() > 0) {
    *complete.mutable_final_progress() = output.final_progress;
  } else if (m.last_progress.has_value()) {
    *complete.mutable_final_progress() = *m.last_progress;
  }
  absl::Status reported = RetryCall(
      [&] { return client_->CompleteAssignment(complete); }, *running, "CompleteAssignment");
  if (reported.ok()) {
    MPT_LOG(INFO) << assignment.id() << ": "
                  << (status.ok() ? "done" : absl::StrCat("failed: ", complete.error()));
  } else {
    MPT_LOG(WARNING) << assignment.id() << ": the end could not be reported: " << reported;
  }
}

}  // namespace mpt
