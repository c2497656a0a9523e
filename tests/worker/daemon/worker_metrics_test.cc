#include "worker/daemon/worker_metrics.h"

#include <cmath>
#include <string>

#include "gtest/gtest.h"

namespace mpt {
namespace {

ProgressEvent Step(int64_t step, double elapsed, double loss) {
  ProgressEvent e;
  e.stage = "source";
  e.task = "sst2";
  e.kind = ProgressKind::kStep;
  e.step = step;
  e.total_steps = 100;
  e.elapsed_seconds = elapsed;
  e.losses = {{"loss", loss}, {"plm", loss / 2}};
  e.learning_rate = 0.3;
  e.tokens_per_second = 1234.5;
  return e;
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(WorkerMetricsTest, StepsRatesLossesAndEvaluations) {
  MetricsRegistry registry;
  auto metrics = WorkerMetrics::Create(&registry);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ProgressEvent started;
  started.stage = "source";
  started.task = "sst2";
  started.kind = ProgressKind::kStarted;
  (*metrics)->OnEvent(started);
  (*metrics)->OnEvent(Step(1, 1.0, 2.0));
  (*metrics)->OnEvent(Step(5, 3.0, 1.5));  // 4 steps in 2 s
  std::string text = registry.Render();
  EXPECT_TRUE(Has(text, "mpt_worker_steps_total 5")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_step 5")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_total_steps 100")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_steps_per_second 2")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_tokens_per_second 1234.5")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_loss{term=\"loss\"} 1.5")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_loss{term=\"plm\"} 0.75")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_learning_rate 0.3")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_assignment_running 1")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_progress_events_total{kind=\"STEP\"} 2")) << text;
  EXPECT_NE(text.find("process_resident_memory_bytes "), std::string::npos) << text;

  ProgressEvent eval;
  eval.kind = ProgressKind::kEval;
  eval.metrics = {{"sst2/accuracy", 0.875}};
  (*metrics)->OnEvent(eval);
  ProgressEvent finished;
  finished.stage = "source";
  finished.task = "sst2";
  finished.kind = ProgressKind::kFinished;
  (*metrics)->OnEvent(finished);
  text = registry.Render();
  EXPECT_TRUE(Has(text, "mpt_worker_eval_metric{name=\"sst2/accuracy\"} 0.875")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_assignment_running 0")) << text;
  EXPECT_TRUE(Has(text, "mpt_worker_steps_per_second 0")) << text;

  // A new stage counts on from its own first report.
  (*metrics)->OnEvent(started);
  (*metrics)->OnEvent(Step(1, 0.5, 3.0));
  (*metrics)->OnEvent(Step(2, 1.0, 2.5));
  EXPECT_TRUE(Has(registry.Render(), "mpt_worker_steps_total 7"));
}

// The value of the series line starting with `series` + " ", or -1.
double Value(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(WorkerMetricsTest, ModelFlopsAndMfuAddUpAPacksMembers) {
  MetricsRegistry registry;
  WorkerMetricsOptions options;
  options.peaks.push_back({"float32", 1e10, "fp32 at::mm on cpu, 1 libtorch thread"});
  options.peaks.push_back({"bfloat16", 4e10, "bf16 at::mm on cpu"});
  auto metrics = WorkerMetrics::Create(&registry, options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  std::string text = registry.Render();
  EXPECT_EQ(Value(text, "mpt_worker_matmul_peak_flops{dtype=\"float32\"}"), 1e10) << text;
  EXPECT_EQ(Value(text, "mpt_worker_matmul_peak_flops{dtype=\"bfloat16\"}"), 4e10) << text;
  EXPECT_NE(text.find("# HELP mpt_worker_mfu_ratio Model FLOPs utilisation"), std::string::npos);
  EXPECT_NE(text.find("fp32 at::mm on cpu, 1 libtorch thread"), std::string::npos) << text;

  // Two members of a pack, each with its rows' share of the FLOPs.
  ProgressEvent a = Step(1, 1.0, 2.0), b = Step(1, 1.0, 2.0);
  b.task = "mnli";
  a.model_flops_per_step = 4e9;
  a.model_flops_per_second = 2e9;
  b.model_flops_per_step = 6e9;
  b.model_flops_per_second = 3e9;
  ProgressEvent started_a = a, started_b = b;
  started_a.kind = started_b.kind = ProgressKind::kStarted;
  (*metrics)->OnEvent(started_a);
  (*metrics)->OnEvent(started_b);
  (*metrics)->OnEvent(a);
  (*metrics)->OnEvent(b);
  text = registry.Render();
  EXPECT_DOUBLE_EQ(Value(text, "mpt_worker_model_flops_per_second"), 5e9) << text;
  EXPECT_DOUBLE_EQ(Value(text, "mpt_worker_mfu_ratio"), 0.5) << text;
  EXPECT_DOUBLE_EQ(Value(text, "mpt_worker_model_flops_per_step"), 6e9) << text;
  // One leaves the pack: only the other's rate is left; a new pass starts
  // from nothing.
  ProgressEvent done = a;
  done.kind = ProgressKind::kFinished;
  (*metrics)->OnEvent(done);
  text = registry.Render();
  EXPECT_DOUBLE_EQ(Value(text, "mpt_worker_mfu_ratio"), 0.3) << text;
  EXPECT_EQ(Value(text, "mpt_worker_assignment_running"), 1) << text;
  // Each member's optimiser steps count: 1 + 1 so far, then 4 more of b.
  EXPECT_EQ(Value(text, "mpt_worker_steps_total"), 2) << text;
  ProgressEvent b5 = b;
  b5.step = 5;
  b5.elapsed_seconds = 3.0;
  (*metrics)->OnEvent(b5);
  EXPECT_EQ(Value(registry.Render(), "mpt_worker_steps_total"), 6);
  // The last member ends: the pass's figures stay on show, until the
  // next pass starts.
  ProgressEvent done_b = b;
  done_b.kind = ProgressKind::kFinished;
  (*metrics)->OnEvent(done_b);
  text = registry.Render();
  EXPECT_DOUBLE_EQ(Value(text, "mpt_worker_mfu_ratio"), 0.3) << text;
  EXPECT_EQ(Value(text, "mpt_worker_assignment_running"), 0) << text;
  (*metrics)->OnEvent(started_a);
  EXPECT_DOUBLE_EQ(Value(registry.Render(), "mpt_worker_mfu_ratio"), 0);

  // A pass whose products run in bf16 is measured against the bf16 peak;
  // one in a dtype without a peak has no MFU (NaN); the next pass that
  // names no dtype is the worker's own precision again (the first peak).
  ProgressEvent bf16 = a;
  bf16.product_dtype = "bfloat16";
  (*metrics)->OnEvent(bf16);
  EXPECT_DOUBLE_EQ(Value(registry.Render(), "mpt_worker_mfu_ratio"), 0.05);
  ProgressEvent half = a, half_start = started_a;
  half.product_dtype = "float16";
  (*metrics)->OnEvent(half_start);
  (*metrics)->OnEvent(half);
  EXPECT_TRUE(std::isnan(Value(registry.Render(), "mpt_worker_mfu_ratio")));
  (*metrics)->OnEvent(started_a);
  (*metrics)->OnEvent(a);
  EXPECT_DOUBLE_EQ(Value(registry.Render(), "mpt_worker_mfu_ratio"), 0.2);

  // Without a peak there is no MFU series.
  MetricsRegistry bare;
  ASSERT_TRUE(WorkerMetrics::Create(&bare).ok());
  EXPECT_EQ(bare.Render().find("mpt_worker_mfu_ratio"), std::string::npos);
}

TEST(WorkerMetricsTest, TwoWorkersMetricsCannotShareARegistry) {
  MetricsRegistry registry;
  ASSERT_TRUE(WorkerMetrics::Create(&registry).ok());
  EXPECT_EQ(WorkerMetrics::Create(&registry).status().code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace mpt
