// Training progress: the event a stage emits, and the sinks that show it to
// people (a live bar or log lines on the terminal) and to machines (JSON
// Lines).
//
//   auto fan_out = std::make_shared<FanOutProgressSink>();
//   fan_out->AddSubscriber(TerminalProgressSink::ForStderr());
//   ASSIGN_OR_RETURN(auto json, JsonLinesProgressSink::OpenFile(path));
//   fan_out->AddSubscriber(std::move(json));
//   stage.Run(fan_out.get());  // calls OnEvent() as it goes
//
// Every sink here is thread-safe: OnEvent() may be called from several
// threads, and each event is written whole.
#ifndef MPT_COMMON_PROGRESS_PROGRESS_H_
#define MPT_COMMON_PROGRESS_PROGRESS_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace mpt {

enum class ProgressKind {
  kStarted,     // The stage (or one task of it) began.
  kStep,        // One optimiser step finished.
  kEval,        // An evaluation finished; `metrics` holds its results.
  kCheckpoint,  // A checkpoint was written; `message` may name it.
  kFinished,    // The stage ended successfully.
  kFailed,      // The stage ended with an error; `message` says why.
  kState,       // A job or stage changed state (as a watcher sees it);
                // `message` says to what, e.g. "RUNNING on workers/w1".
};

// "STARTED", "STEP", "EVAL", "CHECKPOINT", "FINISHED", "FAILED", "STATE".
absl::string_view ProgressKindName(ProgressKind kind);

struct ProgressEvent {
  // "source", "distillation" or "target".
  std::string stage;
  // The task the event is about; empty for events about the whole stage
  // (distillation trains all its tasks at once).
  std::string task;
  ProgressKind kind = ProgressKind::kStep;
  // Optimiser steps done so far, and planned in all (0: unknown).
  int64_t step = 0;
  int64_t total_steps = 0;
  // Loss terms of the last step in display order, the total first, e.g.
  // {"loss", 1.2}, {"plm", 0.9}, {"kl", 0.2}, {"hidden", 0.1}.
  std::vector<std::pair<std::string, double>> losses;
  double learning_rate = 0;
  // Target and input tokens processed per second, all ranks together
  // (0: unknown).
  double tokens_per_second = 0;
  // STEP: the matrix-product FLOPs of this rank's steps in the logging
  // window (worker/model/model_flops.h), per step and per second of the
  // window's wall time; 0: not counted. A pack member reports its rows'
  // share of the pack's steps.
  double model_flops_per_step = 0;
  double model_flops_per_second = 0;
  // The dtype those products run in ("float32", "bfloat16", "float16"):
  // the model's, or bf16 under bf16 autocast; empty: not said.
  std::string product_dtype;
  // (name, value), e.g. {"sst2/accuracy", 0.93}; see MetricsReport::Flatten.
  std::vector<std::pair<std::string, double>> metrics;
  // Seconds since the stage started.
  double elapsed_seconds = 0;
  // Estimated seconds to the end of the stage; negative when unknown.
  double eta_seconds = -1;
  // Free text: the failure for FAILED, the checkpoint's path, and so on.
  std::string message;
};

// Receives progress events. Implementations say whether they are
// thread-safe; the ones in this file are.
class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void OnEvent(const ProgressEvent& event) = 0;
};

// Seconds left when `steps_done` of `total_steps` took `elapsed_seconds`,
// assuming the remaining steps run at the average pace so far. Returns -1
// (unknown) when steps_done <= 0, total_steps <= 0 or elapsed_seconds is
// negative or not finite; 0 once steps_done >= total_steps.
double EstimateEtaSeconds(double elapsed_seconds, int64_t steps_done,
                          int64_t total_steps);

// An ETA that leaves out the time before the first observed step (model
// loading, warm-up, compilation), which would otherwise inflate the
// estimate of a short stage. Not thread-safe.
class EtaEstimator {
 public:
  // Records that `step` steps were done `elapsed_seconds` after the start.
  // The first call sets the baseline.
  void Observe(int64_t step, double elapsed_seconds);
  // Seconds left to reach `total_steps`, from the pace since the first
  // observation; before two distinct observations it falls back to
  // EstimateEtaSeconds() over the whole elapsed time. -1 when unknown.
  double EtaSeconds(int64_t total_steps) const;

 private:
  bool has_baseline_ = false;
  int64_t first_step_ = 0;
  double first_elapsed_ = 0;
  int64_t last_step_ = 0;
  double last_elapsed_ = 0;
};

// "42s", "3m07s", "2h05m", "3d04h"; "?" for a negative or non-finite value.
std::string FormatDuration(double seconds);

// Delivers every event to each subscriber, in the order they subscribed.
// Events are delivered one at a time under a lock, so subscribers see one
// order of events and need not be thread-safe themselves; a subscriber must
// not call back into the same fan-out from OnEvent().
class FanOutProgressSink : public ProgressSink {
 public:
  FanOutProgressSink() = default;
  FanOutProgressSink(const FanOutProgressSink&) = delete;
  FanOutProgressSink& operator=(const FanOutProgressSink&) = delete;

  // Shares ownership of `sink`. A null sink is ignored.
  void AddSubscriber(std::shared_ptr<ProgressSink> sink);
  // Returns false when `sink` is not a subscriber.
  bool RemoveSubscriber(const ProgressSink* sink);
  size_t num_subscribers() const;

  void OnEvent(const ProgressEvent& event) override;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<ProgressSink>> subscribers_ ABSL_GUARDED_BY(mu_);
};

struct TerminalProgressOptions {
  // Plain mode: a STEP event is written for the first step, every
  // log_every_steps-th step and the last step (step == total_steps).
  // Default 50; values below 1 count as 1.
  int64_t log_every_steps = 50;
  // Live mode: the bar's width in characters between the brackets.
  // Default 30.
  int bar_width = 30;
  // Live mode: the line is cut to this many columns so that it never wraps
  // (a wrapped line cannot be redrawn in place). 0 (default): the
  // terminal's width, or 100 when it cannot be asked.
  int max_columns = 0;
  // Live mode: redraw on a STEP event only when at least this many seconds
  // (by the events' elapsed_seconds) passed since the last redraw; the first
  // and the last step are always drawn. Default 0.1.
  double min_redraw_seconds = 0.1;
};

// Shows progress to a person.
//
// Live mode (a terminal): one line redrawn in place with "\r":
//   source/sst2 [=============>                ]  450/1000  45% | loss
//   0.4231 | 12.3k tok/s | ETA 1m23s
// Other events are written as plain lines above the bar, which is then
// drawn again until the stage finishes or fails.
//
// Plain mode (a file or pipe): log lines, see FormatProgressLine(), for
// every non-STEP event and for some STEP events (see log_every_steps).
//
// Other writers to the same stream (MPT_LOG writes to stderr) are not
// coordinated with the bar: a log line written while a bar is shown starts
// on the bar's line, and the next redraw continues below it.
class TerminalProgressSink : public ProgressSink {
 public:
  // Writes to std::cerr: live mode when stderr is a terminal (isatty),
  // plain mode otherwise.
  static std::unique_ptr<TerminalProgressSink> ForStderr(
      TerminalProgressOptions options = {});

  // Writes to `out`, which must outlive the sink (not owned).
  TerminalProgressSink(std::ostream* out, bool live,
                       TerminalProgressOptions options = {});
  TerminalProgressSink(const TerminalProgressSink&) = delete;
  TerminalProgressSink& operator=(const TerminalProgressSink&) = delete;
  // Ends a bar left on screen with a newline.
  ~TerminalProgressSink() override;

  bool live() const { return live_; }
  void OnEvent(const ProgressEvent& event) override;

 private:
  void WritePlain(const ProgressEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteLive(const ProgressEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const bool live_;
  const TerminalProgressOptions options_;
  int columns_;  // Live mode: the line is cut to columns_ - 1 characters.
  absl::Mutex mu_;
  std::ostream* out_ ABSL_GUARDED_BY(mu_);
  // Live mode: the bar on screen ("" when none) and when it was drawn.
  std::string bar_ ABSL_GUARDED_BY(mu_);
  double bar_elapsed_ ABSL_GUARDED_BY(mu_) = 0;
};

// The live bar of a STEP event, without "\r" or newline, before it is cut
// to the terminal's width.
std::string FormatProgressBar(const ProgressEvent& event, int bar_width);

// One log line, without newline, e.g.
//   [source/sst2] STEP 450/1000 (45.0%) loss=0.4231 plm=0.3012 lr=3.00e-01
//   tok/s=12345 elapsed=1m02s eta=1m23s
//   [target/rte] EVAL 500/1000 (50.0%) rte/accuracy=0.7112
//   [distillation] FAILED 3/1000 (0.3%): out of memory
// Fields that are unknown or empty (no total, no ETA, no tokens/s) are left
// out.
std::string FormatProgressLine(const ProgressEvent& event);

// One JSON object per line, for machines:
//   {"stage":"source","task":"sst2","kind":"STEP","step":450,
//    "total_steps":1000,"losses":{"loss":0.42},"learning_rate":0.3,
//    "tokens_per_second":12345.0,"metrics":{},"elapsed_seconds":62.0,
//    "eta_seconds":83.0,"message":""}
// Every key is always present; "losses" and "metrics" keep the event's
// order. NaN, infinities and an unknown ETA are written as null. Invalid
// UTF-8 in strings is replaced by U+FFFD.
std::string ProgressEventToJson(const ProgressEvent& event);

class JsonLinesProgressSink : public ProgressSink {
 public:
  // Appends to the file at `path`, creating it if needed. When it cannot be
  // opened (the message names the path): NOT_FOUND if its folder does not
  // exist, PERMISSION_DENIED if access is refused, INTERNAL otherwise.
  static absl::StatusOr<std::unique_ptr<JsonLinesProgressSink>> OpenFile(
      const std::string& path);

  // Writes to `out`, which must outlive the sink (not owned).
  explicit JsonLinesProgressSink(std::ostream* out);
  JsonLinesProgressSink(const JsonLinesProgressSink&) = delete;
  JsonLinesProgressSink& operator=(const JsonLinesProgressSink&) = delete;

  // Writes ProgressEventToJson(event) and a newline, then flushes. A write
  // error is logged once; the training goes on.
  void OnEvent(const ProgressEvent& event) override;

 private:
  explicit JsonLinesProgressSink(std::unique_ptr<std::ofstream> file);

  absl::Mutex mu_;
  std::unique_ptr<std::ofstream> file_ ABSL_GUARDED_BY(mu_);  // May be null.
  std::ostream* out_ ABSL_GUARDED_BY(mu_);
  bool reported_error_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace mpt

#endif  // MPT_COMMON_PROGRESS_PROGRESS_H_
