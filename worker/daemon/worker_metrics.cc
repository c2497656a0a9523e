#include "worker/daemon/worker_metrics.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/metrics/process_metrics.h"
#include "common/status_macros.h"

namespace mpt {

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Create(
    MetricsRegistry* registry, const WorkerMetricsOptions& options) {
  std::unique_ptr<WorkerMetrics> m(new WorkerMetrics());
  ASSIGN_OR_RETURN(m->steps_total_,
                   registry->AddCounter("mpt_worker_steps_total",
                                        "Optimiser steps this worker's stages reported."));
  ASSIGN_OR_RETURN(m->step_, registry->AddGauge("mpt_worker_step",
                                                "Step of the stage running (or last run)."));
  ASSIGN_OR_RETURN(m->total_steps_,
                   registry->AddGauge("mpt_worker_total_steps",
                                      "Planned steps of the stage running (or last run)."));
  ASSIGN_OR_RETURN(m->steps_per_second_,
                   registry->AddGauge("mpt_worker_steps_per_second",
                                      "Optimiser steps per second between the last two step "
                                      "reports."));
  ASSIGN_OR_RETURN(m->tokens_per_second_,
                   registry->AddGauge("mpt_worker_tokens_per_second",
                                      "Input and target tokens per second of the running stage, "
                                      "all ranks of a gang together."));
  ASSIGN_OR_RETURN(m->loss_, registry->AddGauge("mpt_worker_loss",
                                                "Loss terms of the last step.", {"term"}));
  ASSIGN_OR_RETURN(m->learning_rate_,
                   registry->AddGauge("mpt_worker_learning_rate", "Learning rate of the last step."));
  ASSIGN_OR_RETURN(m->eval_metric_,
                   registry->AddGauge("mpt_worker_eval_metric",
                                      "Results of the last evaluation (e.g. <task>/accuracy).",
                                      {"name"}));
  ASSIGN_OR_RETURN(m->events_, registry->AddCounter("mpt_worker_progress_events_total",
                                                    "Progress events of this worker's stages.",
                                                    {"kind"}));
  ASSIGN_OR_RETURN(m->running_, registry->AddGauge("mpt_worker_assignment_running",
                                                   "1 while a stage runs on this worker."));
  ASSIGN_OR_RETURN(m->flops_per_step_,
                   registry->AddGauge("mpt_worker_model_flops_per_step",
                                      "Matrix-product FLOPs of one step of the last stage that "
                                      "reported (forward and the prompt's backward, padding "
                                      "included; this rank's share of a gang's batch)."));
  ASSIGN_OR_RETURN(m->flops_per_second_,
                   registry->AddGauge("mpt_worker_model_flops_per_second",
                                      "Matrix-product FLOPs per second of every stage running on "
                                      "this worker together (or of the last pass that ran), over "
                                      "each one's last logging window."));
  if (!options.peaks.empty()) {
    m->peaks_ = options.peaks;
    std::vector<std::string> how;
    for (const MatmulPeak& p : options.peaks) how.push_back(absl::StrCat(p.dtype, ": ", p.description));
    const std::string described = absl::StrJoin(how, "; ");
    ASSIGN_OR_RETURN(GaugeFamily * peak,
                     registry->AddGauge("mpt_worker_matmul_peak_flops",
                                        absl::StrCat("Matrix-multiply peak of this worker in "
                                                     "FLOP/s by product dtype (",
                                                     described, ")."),
                                        {"dtype"}));
    for (const MatmulPeak& p : options.peaks) peak->Labels({p.dtype}).Set(p.flops);
    ASSIGN_OR_RETURN(m->mfu_,
                     registry->AddGauge("mpt_worker_mfu_ratio",
                                        "Model FLOPs utilisation: mpt_worker_model_flops_per_second "
                                        "over mpt_worker_matmul_peak_flops in the dtype the "
                                        "pass's matrix products run in (NaN when that peak was "
                                        "not measured)."));
  }
  RETURN_IF_ERROR(AddProcessMetrics(registry));
  return m;
}

void WorkerMetrics::OnEvent(const ProgressEvent& event) {
  events_->Labels({std::string(ProgressKindName(event.kind))}).Increment();
  const std::string key = absl::StrCat(event.stage, "/", event.task);
  switch (event.kind) {
    case ProgressKind::kStarted: {
      running_->Labels({}).Set(1);
      absl::MutexLock lock(&mu_);
      // A worker runs one pass at a time and a pass's stages all start
      // before any of them steps: after a step, a start begins a new pass.
      if (stepped_) {
        last_steps_.clear();
        flops_rate_.clear();
        running_keys_.clear();
        pass_dtype_.clear();
        stepped_ = false;
      }
      running_keys_.insert(key);
      SetFlopsRateLocked();
      break;
    }
    case ProgressKind::kFinished:
    case ProgressKind::kFailed: {
      absl::MutexLock lock(&mu_);
      last_steps_.erase(key);
      running_keys_.erase(key);
      if (running_keys_.empty()) {
        // The pass is over: its FLOP rate and MFU stay on show until the
        // next one steps (as the step and tokens/s gauges do).
        running_->Labels({}).Set(0);
        steps_per_second_->Labels({}).Set(0);
      } else {
        flops_rate_.erase(key);  // the rest of the pack trains on
        SetFlopsRateLocked();
      }
      break;
    }
    case ProgressKind::kEval:
      for (const auto& [name, value] : event.metrics) eval_metric_->Labels({name}).Set(value);
      break;
    case ProgressKind::kStep: {
      running_->Labels({}).Set(1);
      step_->Labels({}).Set(static_cast<double>(event.step));
      total_steps_->Labels({}).Set(static_cast<double>(event.total_steps));
      tokens_per_second_->Labels({}).Set(event.tokens_per_second);
      learning_rate_->Labels({}).Set(event.learning_rate);
      for (const auto& [term, value] : event.losses) loss_->Labels({term}).Set(value);
      if (event.model_flops_per_step > 0) {
        flops_per_step_->Labels({}).Set(event.model_flops_per_step);
      }
      absl::MutexLock lock(&mu_);
      stepped_ = true;
      running_keys_.insert(key);
      if (!event.product_dtype.empty()) pass_dtype_ = event.product_dtype;
      if (event.model_flops_per_second > 0) {
        flops_rate_[key] = event.model_flops_per_second;
        SetFlopsRateLocked();
      }
      LastStep& last = last_steps_[key];
      if (last.step >= 0 && event.step > last.step) {
        steps_total_->Labels({}).Increment(static_cast<double>(event.step - last.step));
        if (event.elapsed_seconds > last.elapsed) {
          steps_per_second_->Labels({}).Set((event.step - last.step) /
                                            (event.elapsed_seconds - last.elapsed));
        }
      } else if (last.step < 0) {
        // The first report of a stage (or task) counts its steps from 0, or
        // from where a resumed stage's report says it is.
        steps_total_->Labels({}).Increment(event.step > 0 ? 1 : 0);
      }
      last.step = event.step;
      last.elapsed = event.elapsed_seconds;
      break;
    }
    default:
      break;
  }
}

void WorkerMetrics::SetFlopsRateLocked() {
  double total = 0;
  for (const auto& [key, rate] : flops_rate_) total += rate;
  flops_per_second_->Labels({}).Set(total);
  if (mfu_ == nullptr) return;
  // A pass that names no dtype runs in the worker's own precision: the first peak.
  double peak = pass_dtype_.empty() ? peaks_.front().flops : 0;
  for (const MatmulPeak& p : peaks_) {
    if (p.dtype == pass_dtype_) peak = p.flops;
  }
  mfu_->Labels({}).Set(peak > 0 ? total / peak : std::numeric_limits<double>::quiet_NaN());
}

}  // namespace mpt
