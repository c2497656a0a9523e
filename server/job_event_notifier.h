// Wakes the watchers of jobs whose events were committed, so that a watch
// stream needs no thread of its own while it waits: a listener registers for
// a job and is called, on the notifier's one thread, whenever events of that
// job may have become readable (and once right after it registers). The
// listener then reads what is new without waiting (Coordinator::
// WaitForJobEvents with a deadline in the past) and returns.
//
//   notifier.Add("jobs/abc", listener);      // listener->OnJobEvents() soon
//   notifier.Notify("jobs/abc");             // after a commit with its events
//   notifier.Remove("jobs/abc", listener);   // no call runs or follows
//
// Calls are coalesced: a listener notified several times before it runs is
// called once; one notified while it runs is called again afterwards.
//
// Thread-safety: every method may be called from any thread, also from
// inside OnJobEvents(). Listeners are called one at a time, never while the
// notifier's lock is held.
#ifndef MPT_SERVER_JOB_EVENT_NOTIFIER_H_
#define MPT_SERVER_JOB_EVENT_NOTIFIER_H_

#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace mpt {

class JobEventListener {
 public:
  virtual ~JobEventListener() = default;
  // Events of the listener's job may be readable. Runs on the notifier's
  // thread; must not block for long (it delays every other watcher).
  virtual void OnJobEvents() = 0;
};

class JobEventNotifier {
 public:
  // Starts the notifier's thread.
  JobEventNotifier();
  // Stops the thread; pending calls are dropped. Listeners must have been
  // removed (their streams ended) before.
  ~JobEventNotifier();
  JobEventNotifier(const JobEventNotifier&) = delete;
  JobEventNotifier& operator=(const JobEventNotifier&) = delete;

  // Registers `listener` (not owned) for `job` and schedules its first
  // call. A listener may be registered for one job at a time.
  void Add(const std::string& job, JobEventListener* listener) ABSL_LOCKS_EXCLUDED(mu_);
  // Unregisters `listener`. When it returns, no call of it runs (unless
  // Remove is called from that very call) and none will follow: the
  // listener may then be destroyed.
  void Remove(const std::string& job, JobEventListener* listener) ABSL_LOCKS_EXCLUDED(mu_);
  // Schedules a call of every listener of `job`.
  void Notify(const std::string& job) ABSL_LOCKS_EXCLUDED(mu_);
  // Schedules a call of every listener (after a failed commit, at shutdown).
  void NotifyAll() ABSL_LOCKS_EXCLUDED(mu_);
  // Schedules a call of `listener` alone; nothing when it is not registered.
  void Wake(JobEventListener* listener) ABSL_LOCKS_EXCLUDED(mu_);

  // Listeners registered now (for tests and monitoring).
  int size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void ScheduleLocked(JobEventListener* listener) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, absl::flat_hash_set<JobEventListener*>> by_job_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<JobEventListener*> registered_ ABSL_GUARDED_BY(mu_);
  // Listeners to call, in order, each at most once.
  std::deque<JobEventListener*> pending_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<JobEventListener*> pending_set_ ABSL_GUARDED_BY(mu_);
  // The listener being called now, nullptr when none.
  JobEventListener* running_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace mpt

#endif  // MPT_SERVER_JOB_EVENT_NOTIFIER_H_
