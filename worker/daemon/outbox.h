// The outbox of a running assignment: a thread that sends the stage's
// progress to the coordinator and uploads its checkpoints, so that a slow or
// absent coordinator never blocks training.
//
// Step events are coalesced (the newest is sent at most every
// progress_interval); other events queue (at most 256, oldest dropped) and
// are flushed, within a deadline, by Close(). A checkpoint event packs the
// folder it names on the calling (training) thread and uploads the newest
// one. Retryable errors (UNAVAILABLE, DEADLINE_EXCEEDED) back off from
// min_backoff to max_backoff; NOT_FOUND and FAILED_PRECONDITION (the
// coordinator no longer wants this assignment) cancel it; other errors are
// logged and the item dropped. A ReportProgress answer that says
// "cancelled" cancels the assignment.
//
// With a StageLog, progress events also become log lines (leader only),
// and the log's pending lines ride along with every report, or go alone
// (a report without progress) at most every log_interval. A line is
// forgotten once a report carrying it was answered (or refused for good);
// after a retryable error it is sent again, with the same sequence number.
// What is still pending at Close() goes with CompleteAssignment.
//
// Thread-safety: OnEvent may be called from any thread; Close is
// idempotent. With reports = false the outbox sends no progress (a gang
// rank other than the leader), only the log's lines.
#ifndef MPT_WORKER_DAEMON_OUTBOX_H_
#define MPT_WORKER_DAEMON_OUTBOX_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/progress/progress.h"
#include "proto/mpt/v1/service.pb.h"
#include "worker/daemon/coordinator_client.h"
#include "worker/daemon/running_assignment.h"
#include "worker/daemon/stage_log.h"

namespace mpt {

struct OutboxOptions {
  // Step events are sent at most this often. Default 1 s.
  absl::Duration progress_interval = absl::Seconds(1);
  // Backoff after a retryable error: doubles from min to max. Defaults
  // 200 ms and 10 s.
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  // Log lines that wait for no report are sent at most this often. Default
  // 1 s.
  absl::Duration log_interval = absl::Seconds(1);
  // At most this many lines, and this much text beyond the first line, in
  // one report. Defaults 500 lines and 256 KiB.
  int log_batch_lines = 500;
  int64_t log_batch_bytes = int64_t{256} << 10;
};

class ProgressOutbox final : public ProgressSink {
 public:
  // `log` may be null (no log lines are sent); it is borrowed and must
  // outlive the outbox.
  ProgressOutbox(CoordinatorClient* client, RunningAssignment* running,
                 const OutboxOptions& options, bool reports, StageLog* log = nullptr)
      : client_(client), running_(running), options_(options), reports_(reports), log_(log) {
    if (reports_ || log_ != nullptr) thread_ = std::thread([this] { Loop(); });
  }
  ProgressOutbox(const ProgressOutbox&) = delete;
  ProgressOutbox& operator=(const ProgressOutbox&) = delete;
  ~ProgressOutbox() override { Close(absl::ZeroDuration()); }

  void OnEvent(const ProgressEvent& event) override;

  // Stops the thread after trying, for up to `flush`, to deliver the queued
  // non-step events. Idempotent.
  void Close(absl::Duration flush);

  std::optional<mpt::v1::Progress> last_progress() const {
    absl::MutexLock lock(&mu_);
    return last_progress_;
  }

 private:
  static constexpr size_t kMaxQueued = 256;

  struct Checkpoint {
    int64_t step = 0;
    std::string blob;
  };

  // Queues a report, dropping the oldest beyond kMaxQueued.
  void Enqueue(mpt::v1::ReportProgressRequest request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = absl::Now();
    if (Done(now)) return true;
    if (now < retry_after_) return false;
    if (!queue_.empty()) return true;
    if (closing_) return false;  // Closing flushes the queue only.
    return checkpoint_.has_value() || (step_.has_value() && now >= next_step_time_) ||
           (log_ != nullptr && now >= next_log_time_ && log_->HasPending());
  }

  bool Done(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ && (queue_.empty() || now >= flush_deadline_);
  }

  // Handles one answer; true when the item was delivered (or must be
  // dropped), false to retry it later.
  bool Settle(const absl::Status& status, const char* what);

  void Loop();
  // Puts the log's pending lines into `report`; the last sequence put, 0
  // when none.
  int64_t AttachLogLines(mpt::v1::ReportProgressRequest* report);

  CoordinatorClient* const client_;
  RunningAssignment* const running_;
  const OutboxOptions options_;
  const bool reports_;
  StageLog* const log_;
  absl::Duration backoff_ = options_.min_backoff;  // Only the thread uses it.

  mutable absl::Mutex mu_;
  std::deque<mpt::v1::ReportProgressRequest> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<mpt::v1::ReportProgressRequest> step_ ABSL_GUARDED_BY(mu_);
  std::optional<Checkpoint> checkpoint_ ABSL_GUARDED_BY(mu_);
  std::optional<mpt::v1::Progress> last_progress_ ABSL_GUARDED_BY(mu_);
  absl::Time next_step_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time next_log_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time retry_after_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time flush_deadline_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_OUTBOX_H_
