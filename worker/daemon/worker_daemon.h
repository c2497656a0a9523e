// The worker daemon: one per GPU (or per CPU host). It registers with the
// coordinator, heartbeats, long-polls for assignments and runs each one:
//
// A pack (Assignment.packed, offered up to Worker.max_pack_size) runs as
// one AssignmentExecutor::RunPack call; each member keeps its own inputs,
// outbox, log, upload and completion, and a cancel stops only its member.
//
//   fetch inputs (teachers, source adapter, checkpoint; SHA-256 checked)
//     -> run the stage (AssignmentExecutor) with a sink that forwards
//        progress (rate-limited) and uploads every checkpoint it announces
//     -> upload the result adapters (rank 0 of a gang only)
//     -> CompleteAssignment(ok, error, final progress)
//
// Faults it rides out:
// - The coordinator is unreachable (UNAVAILABLE, DEADLINE_EXCEEDED): every
//   call is retried with exponential backoff; a running stage goes on, its
//   progress and checkpoints wait in an outbox, its result is delivered once
//   the coordinator is back (for up to `result_retry_timeout`).
// - The coordinator no longer knows the worker (NOT_FOUND on Heartbeat or
//   PollAssignment, e.g. after it declared the worker lost): the running
//   assignment is cancelled (the coordinator has requeued it) and the worker
//   registers again.
// - Cancellation: an assignment named in HeartbeatResponse.
//   cancelled_assignments, or answered `cancelled` (or NOT_FOUND /
//   FAILED_PRECONDITION) by ReportProgress, stops at the stage's next step,
//   and a gang rank's collective is aborted (AssignmentContext::set_abort)
//   so that a frozen peer cannot hold it; the daemon then reports
//   CompleteAssignment(ok=false).
// - Gang faults: a gang rank that fails with UNAVAILABLE or
//   DEADLINE_EXCEEDED (a peer died, froze or was unreachable, or the gang
//   did not form) reports CompleteAssignment(peer_failure=true), so the
//   coordinator blames the peer that stopped heartbeating, not this rank.
// - Stop() (SIGTERM): the running stage is cancelled and not reported; the
//   coordinator requeues it from its last checkpoint when the lease ends.
//
// The coordinator client and the stage runner come in through the
// constructor as interfaces, so the logic is tested with fakes.
#ifndef MPT_WORKER_DAEMON_WORKER_DAEMON_H_
#define MPT_WORKER_DAEMON_WORKER_DAEMON_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/mpt/v1/service.pb.h"
#include "worker/daemon/running_assignment.h"
#include "worker/daemon/coordinator_client.h"
#include "worker/daemon/stage_log.h"
#include "common/progress/progress.h"
#include "worker/collectives/rendezvous_store.h"

namespace mpt {

struct AssignmentOutput;

// Everything a stage run needs from the daemon. Pointers are borrowed for
// the duration of AssignmentExecutor::Run().
struct AssignmentContext {
  const mpt::v1::Assignment* assignment = nullptr;
  // Distillation: the teacher adapter folders, in the order of the spec's
  // distillation tasks.
  std::vector<std::string> teachers;
  // Target adaptation: the multitask adapter folder to start from.
  std::string source_adapter;
  // A checkpoint folder to resume from (fetched from the coordinator), or
  // empty to start afresh.
  std::string checkpoint;
  // Private to this assignment: checkpoints go under `work_dir`, result
  // adapters under `out_dir`. Both exist and are empty.
  std::string work_dir;
  std::string out_dir;
  ProgressSink* sink = nullptr;
  // True once the stage must stop. Thread-safe.
  std::function<bool()> cancelled;
  // Registers `abort`, which the daemon calls from another thread as soon
  // as the stage must stop (at once when it already must), so that a call
  // blocked on gang peers, a collective above all, returns instead of
  // waiting for a frozen peer until its timeout. A later call replaces it;
  // an empty function unregisters it, and once that call returns `abort` is
  // neither running nor called again. May be empty (the caller then only
  // polls `cancelled`).
  std::function<void(std::function<void()>)> set_abort;
  // World size > 1: the gang's rendezvous store; null otherwise.
  RendezvousStore* store = nullptr;
  // Pack members (AssignmentExecutor::RunPack) only: the executor may call
  // it once with this member's result as soon as the member ended while
  // others still train; the daemon then reports the member at once (its
  // job need not wait for the pack). The same result must then also be in
  // RunPack's answer. May be empty.
  std::function<void(const absl::StatusOr<AssignmentOutput>&)> done;
};

struct AssignmentOutput {
  // Adapter folders to upload, in order (rank 0 only).
  std::vector<std::string> adapters;
  // Losses and metrics of the result.
  mpt::v1::Progress final_progress;
};

// Runs one assignment's stage. Implementations: worker/daemon/assignment_runner.h
// (the MPT stages on a T5 model); tests use fakes.
class AssignmentExecutor {
 public:
  virtual ~AssignmentExecutor() = default;
  // CANCELLED when context.cancelled() fired; the stage's error otherwise.
  // Must not throw.
  virtual absl::StatusOr<AssignmentOutput> Run(const AssignmentContext& context) = 0;

  // Runs a pack (Assignment.packed: single-worker source stages with the
  // same base model and prompt shape), one context per member with its own
  // sink, cancel flag and folders, and returns one result per context, in
  // order, each as Run() would return it for that member alone: one
  // member's cancel or bad input must not end the others. The default runs
  // the members one after another with Run(). Must not throw.
  virtual std::vector<absl::StatusOr<AssignmentOutput>> RunPack(
      const std::vector<const AssignmentContext*>& contexts);
};

struct WorkerDaemonOptions {
  // What the worker registers as (hostname, device, memory, models,
  // collectives); the name is assigned by the coordinator.
  mpt::v1::Worker worker;
  // Scratch folder for assignments (inputs, checkpoints, results); created
  // if needed. Required.
  std::string work_dir;
  // Long-poll wait of PollAssignment. Default 10 seconds.
  absl::Duration poll_wait = absl::Seconds(10);
  // Backoff between attempts to reach an unreachable coordinator: doubles
  // from min to max, with up to 20% jitter. Defaults 200 ms and 10 s.
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  // At most one STEP progress report per interval (other events are always
  // sent). Default 1 second.
  absl::Duration progress_interval = absl::Seconds(1);
  // How long to keep retrying input downloads and the delivery of a result
  // while the coordinator is unreachable. Default 15 minutes.
  absl::Duration result_retry_timeout = absl::Minutes(15);
  // Heartbeat period until the coordinator says otherwise. Default 5 s.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // Keep each assignment's folder after it ends (for debugging). Default
  // false: removed.
  bool keep_assignment_dirs = false;
  // Borrowed, may be null (default): also gets every progress event of
  // every stage this worker runs, on the stage's thread (the worker's
  // metrics, worker_metrics.h). Must be thread-safe and quick.
  ProgressSink* progress_observer = nullptr;
  // The bound of an assignment's log lines held until the coordinator has
  // them (see stage_log.h; defaults 2000 lines, 512 KiB). Every line the
  // worker logs while an assignment runs, its progress and its error are
  // sent with its progress reports and its completion.
  StageLogOptions stage_log;
};

class WorkerDaemon {
 public:
  // INVALID_ARGUMENT for an empty work_dir or non-positive durations;
  // INTERNAL when work_dir cannot be created. `client` and `executor` are
  // borrowed and must outlive the daemon.
  static absl::StatusOr<std::unique_ptr<WorkerDaemon>> Create(WorkerDaemonOptions options,
                                                              CoordinatorClient* client,
                                                              AssignmentExecutor* executor);
  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;
  ~WorkerDaemon();

  // Serves assignments until Stop(); returns OK then. Returns the error when
  // the coordinator refuses the registration in a way a retry cannot fix
  // (UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT). Call once.
  absl::Status Run();

  // Makes Run() return soon: cancels the running assignment (without
  // reporting it) and interrupts waits. Thread-safe; not async-signal-safe.
  void Stop();

  // The name the coordinator gave this worker ("" before registration).
  std::string worker_name() const;
  // Assignments that ended (reported or not) since Run() started; a pack
  // counts each of its members.
  int64_t assignments_finished() const;

 private:
  using Running = RunningAssignment;

  WorkerDaemon(WorkerDaemonOptions options, CoordinatorClient* client,
               AssignmentExecutor* executor);

  // Registers (retrying with backoff) unless already registered; "" when
  // stopped first.
  std::string EnsureRegistered();
  // Forgets `stale_name` (when still current) and cancels the running
  // assignment: the coordinator no longer knows this worker.
  void ForgetRegistration(const std::string& stale_name);
  void HeartbeatLoop();
  struct Member;
  // Runs `assignment` (with the rest of its pack, Assignment.packed),
  // polled as `worker`.
  void Execute(const mpt::v1::Assignment& assignment, const std::string& worker);
  // Uploads a member's adapters and completes it (unless it was lost).
  void Report(Member& member);
  // Fetches the inputs into `dir`; fills the context's input fields.
  absl::Status FetchInputs(const mpt::v1::Assignment& assignment, const std::string& dir,
                           const Running& running, AssignmentContext* context);
  absl::StatusOr<std::string> FetchWithRetry(const std::string& name, const Running& running);
  // Retries `call` while it returns UNAVAILABLE or DEADLINE_EXCEEDED, for up
  // to result_retry_timeout, unless the daemon stops or `running` is lost.
  absl::Status RetryCall(const std::function<absl::Status()>& call, const Running& running,
                         const char* what);
  // Sleeps for `d` or until Stop(); false when stopped.
  bool SleepUnlessStopped(absl::Duration d);
  absl::Duration NextBackoff(absl::Duration* current) const;

  const WorkerDaemonOptions options_;
  CoordinatorClient* const client_;
  AssignmentExecutor* const executor_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string worker_name_ ABSL_GUARDED_BY(mu_);
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_);
  // What runs now: one assignment, or every member of a pack.
  std::vector<std::shared_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> finished_{0};
  // Why the coordinator refused the registration for good; only Run()'s
  // thread touches it.
  absl::Status fatal_;
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_WORKER_DAEMON_H_
