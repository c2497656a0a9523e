// Group commit: many writers, one store transaction and one fsync per batch.
//
// Writers Enqueue() a StoreWrite and get a ticket; a single thread takes
// everything queued, commits it with JobStore::CommitBatch() (one
// transaction), and resolves the batch's tickets. Wait(ticket) returns once
// its batch is committed: OK means the write is durable, so a caller may
// acknowledge it. Writes are committed in ticket order.
//
// A write may instead carry a callback (Enqueue(write, on_resolved)): a
// second thread of the committer calls it with the ticket's outcome once
// its batch is resolved, with no lock of this class held, so the callback
// may take its owner's locks and queue more writes. Callbacks run one at a
// time in ticket order, while the next batch is being committed. This lets
// a server acknowledge a write without a thread blocked in Wait() (the
// coordinator's asynchronous SubmitJob).
//
// Failure: when a batch fails, every ticket in it fails with the store's
// error, and so does every write queued after it until Recover() is called
// (those writes were built on memory that included the failed ones). The
// owner calls Recover() while it stops new writes from being queued (the
// Coordinator holds its mutex), reloads its memory from the store, and
// carries on.
//
// Thread-safety: every method may be called from any thread.
#ifndef MPT_SERVER_GROUP_COMMIT_H_
#define MPT_SERVER_GROUP_COMMIT_H_

#include <cstdint>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/job_store.h"

namespace mpt {

class GroupCommitter {
 public:
  // `store` is not owned and must outlive this object. Starts the threads.
  explicit GroupCommitter(JobStore* store);
  // The outcome of one ticket: OK once durable, else the store's error.
  using Callback = absl::AnyInvocable<void(absl::Status) &&>;

  // Commits what is queued, runs every callback still owed, then stops the
  // threads.
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Queues `write`; returns its ticket (1, 2, 3, ...). `on_resolved`, when
  // set, is called once on the committer's callback thread with the
  // ticket's outcome (see above); Wait() works for the ticket either way.
  int64_t Enqueue(StoreWrite write, Callback on_resolved = nullptr);

  // Blocks until `ticket`'s batch was committed or failed. OK: durable.
  // Otherwise the store's error (or the error of an earlier failed batch).
  // May be called more than once for a ticket (recent failures are kept).
  absl::Status Wait(int64_t ticket);

  // Ends the failed state: fails whatever is still queued and lets later
  // writes be committed again. True when it was failed (the caller must
  // reload its memory from the store); false when a commit had not failed.
  bool Recover();

  // Batches committed so far (for tests and the benchmark).
  int64_t batches() const;

 private:
  struct Entry {
    int64_t ticket = 0;
    StoreWrite write;
    Callback on_resolved;
  };
  struct Failure {
    int64_t first = 0;
    int64_t last = 0;
    absl::Status status;
  };
  void Run();
  void RunCallbacks();
  // Fails every queued write with `status`; their callbacks are left for
  // the callback thread.
  void FailQueuedLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  JobStore* const store_;
  mutable absl::Mutex mu_;
  std::deque<Entry> queue_ ABSL_GUARDED_BY(mu_);
  // Callbacks whose ticket is resolved, in ticket order, for callback_thread_.
  std::deque<std::pair<Callback, absl::Status>> due_ ABSL_GUARDED_BY(mu_);
  bool callbacks_stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  // Every ticket up to this one is committed or failed.
  int64_t resolved_through_ ABSL_GUARDED_BY(mu_) = 0;
  // The newest failed ranges (at most 64 kept).
  std::deque<Failure> failures_ ABSL_GUARDED_BY(mu_);
  // A batch failed and Recover() has not been called since.
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_status_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
  std::thread callback_thread_;
};

}  // namespace mpt

#endif  // MPT_SERVER_GROUP_COMMIT_H_
