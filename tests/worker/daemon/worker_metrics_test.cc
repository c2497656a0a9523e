#include "worker/daemon/worker_metrics.h"

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

TEST(WorkerMetricsTest, TwoWorkersMetricsCannotShareARegistry) {
  MetricsRegistry registry;
  ASSERT_TRUE(WorkerMetrics::Create(&registry).ok());
  EXPECT_EQ(WorkerMetrics::Create(&registry).status().code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace mpt
