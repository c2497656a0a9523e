// The worker's Prometheus metrics, fed by the progress events of the stages
// it runs (README.md, "Monitoring", lists them):
//   mpt_worker_steps_total                optimiser steps done by this worker
//   mpt_worker_step, mpt_worker_total_steps   of the stage running now
//   mpt_worker_steps_per_second           between the last two step reports
//   mpt_worker_tokens_per_second          as the stage reports it (all ranks)
//   mpt_worker_loss{term}                 "loss", "plm", "kl", "hidden", ...
//   mpt_worker_learning_rate
//   mpt_worker_eval_metric{name}          the last evaluation ("<task>/accuracy")
//   mpt_worker_progress_events_total{kind}
//   mpt_worker_assignment_running         1 while a stage runs
//   mpt_worker_model_flops_per_step       matrix-product FLOPs of a step
//   mpt_worker_model_flops_per_second     ... per second, every stage
//                                         running on this worker (a pack's
//                                         members together), or of the
//                                         last pass once it ended
//   mpt_worker_matmul_peak_flops{dtype}   the peaks they are measured
//                                         against, per product dtype
//                                         (WorkerMetricsOptions)
//   mpt_worker_mfu_ratio                  model FLOPs utilisation: the FLOP
//                                         rate over the peak in the dtype
//                                         the pass's products run in (NaN
//                                         when that peak was not measured)
//   process_* (common/metrics/process_metrics.h): resident memory and more
// GPU utilisation and memory come from
// common/metrics/gpu_metrics.h, registered by the worker's main for CUDA
// devices.
//
// Thread-safety: OnEvent() may be called from any thread.
#ifndef MPT_WORKER_DAEMON_WORKER_METRICS_H_
#define MPT_WORKER_DAEMON_WORKER_METRICS_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/metrics_registry.h"
#include "common/progress/progress.h"

namespace mpt {

// One measured matrix-multiply peak of this worker (matmul_peak.h).
struct MatmulPeak {
  std::string dtype;  // ProductDtypeName's: "float32", "bfloat16", ...
  double flops = 0;   // FLOP/s
  std::string description;  // how it was measured, for the HELP text
};

struct WorkerMetricsOptions {
  // The peaks, the one in the worker's own precision first: a progress
  // event that names no product dtype is measured against it. Empty
  // (default): no mpt_worker_matmul_peak_flops or mpt_worker_mfu_ratio.
  std::vector<MatmulPeak> peaks;
};

class WorkerMetrics final : public ProgressSink {
 public:
  // Registers the families on `registry` (borrowed; must outlive the
  // object), process metrics included. The registry's error.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Create(
      MetricsRegistry* registry, const WorkerMetricsOptions& options = {});

  void OnEvent(const ProgressEvent& event) override;

 private:
  WorkerMetrics() = default;
  // Sets the FLOP rate and MFU gauges from flops_rate_.
  void SetFlopsRateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  CounterFamily* steps_total_ = nullptr;
  GaugeFamily* step_ = nullptr;
  GaugeFamily* total_steps_ = nullptr;
  GaugeFamily* steps_per_second_ = nullptr;
  GaugeFamily* tokens_per_second_ = nullptr;
  GaugeFamily* loss_ = nullptr;
  GaugeFamily* learning_rate_ = nullptr;
  GaugeFamily* eval_metric_ = nullptr;
  CounterFamily* events_ = nullptr;
  GaugeFamily* running_ = nullptr;
  GaugeFamily* flops_per_step_ = nullptr;
  GaugeFamily* flops_per_second_ = nullptr;
  GaugeFamily* mfu_ = nullptr;  // null without a peak
  std::vector<MatmulPeak> peaks_;

  absl::Mutex mu_;
  // Per stage/task of the pass running now (a pack has several): the step
  // and elapsed seconds of its last step report.
  struct LastStep {
    int64_t step = -1;
    double elapsed = 0;
  };
  std::map<std::string, LastStep> last_steps_ ABSL_GUARDED_BY(mu_);
  // Stages/tasks started and not finished in the pass running now, and
  // whether that pass has stepped (a STARTED after a step begins a new
  // pass: what was left belongs to stages that ended without FINISHED,
  // such as cancelled ones).
  std::set<std::string> running_keys_ ABSL_GUARDED_BY(mu_);
  bool stepped_ ABSL_GUARDED_BY(mu_) = false;
  // The last FLOP rate of each stage/task running now (a pack has several).
  std::map<std::string, double> flops_rate_ ABSL_GUARDED_BY(mu_);
  // The product dtype of the pass running now, as its steps say.
  std::string pass_dtype_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_WORKER_METRICS_H_
