// The log of one running assignment, as the coordinator will store it: the
// worker's own log lines written while the assignment runs (every thread's:
// fetching inputs, loading the model, training, uploads, and the error that
// ends it), plus its training progress as lines (started, every
// log_every_steps-th step, evaluations, checkpoints, finished or failed).
//
//   StageLog log(StageLogOptions{});
//   log.Attach();            // MPT_LOG lines now land here too
//   ... run; the outbox sends log.Pending() and calls Acknowledge() ...
//   log.Detach();
//   request.log_lines = log.Pending(...);  // the rest, with the completion
//
// Every line gets the next sequence number (1, 2, 3, ...). Lines stay until
// the coordinator acknowledges them, so a batch whose answer was lost is sent
// again with the same numbers and the coordinator stores it once. The buffer
// is bounded (max_lines, max_bytes): when a coordinator stays unreachable
// the oldest unacknowledged lines are dropped, and the gap in the numbers
// tells the coordinator how many.
//
// Thread-safety: every method may be called from any thread.
#ifndef MPT_WORKER_DAEMON_STAGE_LOG_H_
#define MPT_WORKER_DAEMON_STAGE_LOG_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/progress/progress.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {

struct StageLogOptions {
  // Lines kept while not yet acknowledged; beyond either bound the oldest
  // are dropped. Defaults 2000 lines and 512 KiB of text.
  int max_lines = 2000;
  int64_t max_bytes = int64_t{512} << 10;
  // A longer line is cut to this many bytes (on a UTF-8 boundary) and ends
  // in " [cut]". Default 2048.
  int max_line_bytes = 2048;
  // Progress: a STEP event becomes a line for the first step, every
  // log_every_steps-th and the last one; other events always do. Default 50;
  // values below 1 count as 1.
  int64_t log_every_steps = 50;
};

// `text` with every byte that is not part of well-formed UTF-8 replaced by
// U+FFFD, then cut to at most `max_bytes` bytes on a character boundary
// (with " [cut]" appended, beyond max_bytes) when longer.
std::string SanitizeLogText(absl::string_view text, int max_bytes);

class StageLog final : public LogListener {
 public:
  explicit StageLog(StageLogOptions options = {});
  // Detaches.
  ~StageLog() override;
  StageLog(const StageLog&) = delete;
  StageLog& operator=(const StageLog&) = delete;

  // Starts / stops receiving every MPT_LOG line of the process. Idempotent.
  void Attach();
  void Detach();

  // Adds one line. `severity` is "DEBUG", "INFO", "WARNING" or "ERROR";
  // `time_micros` microseconds since the Unix epoch.
  void Add(absl::string_view severity, int64_t time_micros, absl::string_view text);
  // Adds a progress event as FormatProgressLine() writes it without its
  // "[stage/task] " label ("STEP 450/1000 (45.0%) loss=0.4231 ..."), subject
  // to log_every_steps (FAILED events as ERROR, the rest as INFO).
  void AddProgress(const ProgressEvent& event);
  void OnLogLine(const LogRecord& record) override;

  // The oldest unacknowledged lines, at most `max_lines` and, beyond the
  // first line, at most `max_bytes` of text; each with sequence, time,
  // severity and text set.
  std::vector<mpt::v1::LogLine> Pending(int max_lines, int64_t max_bytes) const;
  bool HasPending() const;
  // Forgets the lines numbered up to `sequence` (they were stored).
  void Acknowledge(int64_t sequence);

  // Lines numbered so far, and how many of them were dropped unsent.
  int64_t last_sequence() const;
  int64_t dropped() const;

 private:
  struct Line {
    int64_t sequence;
    int64_t time_micros;
    std::string severity;
    std::string text;
  };
  void TrimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const StageLogOptions options_;
  mutable absl::Mutex mu_;
  std::deque<Line> lines_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool attached_ ABSL_GUARDED_BY(attach_mu_) = false;
  absl::Mutex attach_mu_;
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_STAGE_LOG_H_
