// Evaluation metrics over predicted and reference answers.
//
// All metrics are fractions in [0, 1] (a report prints them as percentages).
//
// - Accuracy: the fraction of examples whose prediction equals the
//   reference byte for byte. Meant for "rank" evaluation, where the
//   prediction is always one of the candidate strings.
// - Exact match: the same after NormalizeAnswer() on both sides. Meant for
//   "generate" evaluation, where the decoder may differ in case or spacing.
// - Macro-F1: the unweighted mean, over the label set L = (normalised
//   references) ∪ (normalised predictions), of each label's
//   F1 = 2·TP / (2·TP + FP + FN). Every label of L occurs at least once, so
//   the denominator is never zero; a label that is only ever predicted (never
//   a reference) has F1 = 0. This is scikit-learn's
//   f1_score(average="macro") with its default label set.
//
// The functions return INVALID_ARGUMENT when the two vectors differ in
// length or are empty.
//
// Thread-safety: the free functions keep no state. A MetricsReport is not
// thread-safe; fill it from one thread.
#ifndef MPT_WORKER_EVAL_METRICS_H_
#define MPT_WORKER_EVAL_METRICS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The normalisation of exact match and macro-F1: removes leading and
// trailing ASCII whitespace, replaces every inner run of ASCII whitespace
// (space, \t, \n, \v, \f, \r) by one space, and lower-cases ASCII letters.
// Other bytes (UTF-8 text included) are kept as they are.
std::string NormalizeAnswer(absl::string_view text);

absl::StatusOr<double> Accuracy(const std::vector<std::string>& predictions,
                                const std::vector<std::string>& references);
absl::StatusOr<double> ExactMatch(const std::vector<std::string>& predictions,
                                  const std::vector<std::string>& references);
absl::StatusOr<double> MacroF1(const std::vector<std::string>& predictions,
                               const std::vector<std::string>& references);

// Metric names as they appear in reports, progress events and JSON.
inline constexpr absl::string_view kAccuracy = "accuracy";
inline constexpr absl::string_view kExactMatch = "exact_match";
inline constexpr absl::string_view kMacroF1 = "macro_f1";

// One task's evaluation.
struct TaskMetrics {
  std::string task;
  int64_t num_examples = 0;
  // (metric name, value) in the order they were added.
  std::vector<std::pair<std::string, double>> values;

  // The value of `metric`, or nullopt when the task has none.
  std::optional<double> Get(absl::string_view metric) const;
};

// The evaluation of a stage: one entry per task, in the order added.
//
//   MetricsReport report("target", /*step=*/1000);
//   RETURN_IF_ERROR(report.AddTask("rte", predictions, references));
//   MPT_LOG(INFO) << "\n" << report.ToString();
class MetricsReport {
 public:
  MetricsReport(std::string stage, int64_t step)
      : stage_(std::move(stage)), step_(step) {}

  // Computes accuracy, exact match and macro-F1 of one task and adds them.
  // INVALID_ARGUMENT (the task named) when the vectors differ in length or
  // are empty, or when the task is already in the report; the report is
  // then unchanged.
  absl::Status AddTask(absl::string_view task,
                       const std::vector<std::string>& predictions,
                       const std::vector<std::string>& references);

  // Sets one metric of a task, adding the task (with `num_examples`) if it
  // is new, replacing the metric's value if the task has it already.
  void Set(absl::string_view task, absl::string_view metric, double value,
           int64_t num_examples = 0);

  const std::string& stage() const { return stage_; }
  int64_t step() const { return step_; }
  const std::vector<TaskMetrics>& tasks() const { return tasks_; }
  // nullptr when the task is not in the report.
  const TaskMetrics* Find(absl::string_view task) const;

  // Unweighted mean of `metric` over the tasks that have it (the way GLUE
  // averages are reported); nullopt when none has it.
  std::optional<double> Average(absl::string_view metric) const;

  // ("<task>/<metric>", value) for every value, then ("average/<metric>",
  // mean) for every metric that some task has, in first-seen order; the
  // shape of ProgressEvent::metrics.
  std::vector<std::pair<std::string, double>> Flatten() const;

  // A table for people, one row per task and an "average" row when there is
  // more than one task; values as percentages with two decimals:
  //
  //   target evaluation at step 1000
  //   task  examples  accuracy  exact_match  macro_f1
  //   rte        277     71.12        71.12     70.95
  std::string ToString() const;

  // One JSON object for machines: {"stage": ..., "step": ..., "tasks":
  // [{"task": ..., "num_examples": ..., "metrics": {name: fraction}}],
  // "average": {name: fraction}}.
  std::string ToJson() const;

 private:
  TaskMetrics* FindMutable(absl::string_view task);
  // Metric names in first-seen order over all tasks.
  std::vector<std::string> MetricNames() const;

  std::string stage_;
  int64_t step_;
  std::vector<TaskMetrics> tasks_;
};

}  // namespace mpt

#endif  // MPT_WORKER_EVAL_METRICS_H_
