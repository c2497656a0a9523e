// One assignment in flight on a worker: its id, whether and why it was
// cancelled, whether the coordinator forgot it, and the hook that aborts its
// gang's collective.
//
// Thread-safety: every member may be used from any thread (the daemon's
// heartbeat thread cancels while the training thread runs).
#ifndef MPT_WORKER_DAEMON_RUNNING_ASSIGNMENT_H_
#define MPT_WORKER_DAEMON_RUNNING_ASSIGNMENT_H_

#include <atomic>
#include <functional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"

namespace mpt {

struct RunningAssignment {
  RunningAssignment(std::string assignment_id, std::string worker_name)
      : id(std::move(assignment_id)), worker(std::move(worker_name)) {}

  void Cancel(const std::string& why) {
    absl::MutexLock lock(&mu);
    if (!cancelled.load()) {
      reason = why;
      MPT_LOG(INFO) << "cancelling " << id << ": " << why;
    }
    cancelled.store(true);
    if (abort) {
      // Once: a blocked collective returns; later calls fail by themselves.
      std::function<void()> once = std::move(abort);
      abort = nullptr;
      once();
    }
  }
  // AssignmentContext::set_abort. Runs the hook under `mu`, so a hook that
  // was unregistered is not running any more.
  void SetAbort(std::function<void()> hook) {
    absl::MutexLock lock(&mu);
    if (hook && cancelled.load()) {
      hook();
      return;
    }
    abort = std::move(hook);
  }
  std::string Reason() const {
    absl::MutexLock lock(&mu);
    return reason;
  }

  const std::string id;
  // The name this worker polled it under: every report on it carries it.
  const std::string worker;
  std::atomic<bool> cancelled{false};
  // The coordinator forgot this assignment (the worker was declared lost),
  // or the daemon is stopping: its end is not reported.
  std::atomic<bool> lost{false};
  mutable absl::Mutex mu;
  std::string reason ABSL_GUARDED_BY(mu);
  std::function<void()> abort ABSL_GUARDED_BY(mu);
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_RUNNING_ASSIGNMENT_H_
