#include "worker/eval/metrics.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

absl::Status CheckSizes(const std::vector<std::string>& predictions,
                        const std::vector<std::string>& references) {
  if (predictions.size() != references.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(predictions.size(), " predictions but ",
                     references.size(), " references"));
  }
  if (predictions.empty()) {
    return absl::InvalidArgumentError("no examples to evaluate");
  }
  return absl::OkStatus();
}

// A metric value as a JSON number; nlohmann writes NaN and infinities as
// null, which keeps the document valid.
nlohmann::ordered_json MetricsObject(
    const std::vector<std::pair<std::string, double>>& values) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& [name, value] : values) object[name] = value;
  return object;
}

}  // namespace

std::string NormalizeAnswer(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

absl::StatusOr<double> Accuracy(const std::vector<std::string>& predictions,
                                const std::vector<std::string>& references) {
  absl::Status status = CheckSizes(predictions, references);
  if (!status.ok()) return status;
  size_t correct = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (predictions[i] == references[i]) ++correct;
  }
  return static_cast<double>(correct) / predictions.size();
}

absl::StatusOr<double> ExactMatch(const std::vector<std::string>& predictions,
                                  const std::vector<std::string>& references) {
  absl::Status status = CheckSizes(predictions, references);
  if (!status.ok()) return status;
  size_t correct = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (NormalizeAnswer(predictions[i]) == NormalizeAnswer(references[i])) {
      ++correct;
    }
  }
  return static_cast<double>(correct) / predictions.size();
}

absl::StatusOr<double> MacroF1(const std::vector<std::string>& predictions,
                               const std::vector<std::string>& references) {
  absl::Status status = CheckSizes(predictions, references);
  if (!status.ok()) return status;
  struct Counts {
    int64_t tp = 0, fp = 0, fn = 0;
  };
  std::map<std::string, Counts> labels;
  for (size_t i = 0; i < predictions.size(); ++i) {
    std::string predicted = NormalizeAnswer(predictions[i]);
    std::string gold = NormalizeAnswer(references[i]);
    if (predicted == gold) {
      ++labels[gold].tp;
    } else {
      ++labels[predicted].fp;
      ++labels[gold].fn;
    }
  }
  double sum = 0;
  for (const auto& [label, c] : labels) {
    sum += 2.0 * c.tp / static_cast<double>(2 * c.tp + c.fp + c.fn);
  }
  return sum / labels.size();
}

std::optional<double> TaskMetrics::Get(absl::string_view metric) const {
  for (const auto& [name, value] : values) {
    if (name == metric) return value;
  }
  return std::nullopt;
}

absl::Status MetricsReport::AddTask(
    absl::string_view task, const std::vector<std::string>& predictions,
    const std::vector<std::string>& references) {
  if (Find(task) != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("task \"", task, "\" is already in the ", stage_,
                     " metrics report"));
  }
  absl::StatusOr<double> accuracy = Accuracy(predictions, references);
  if (!accuracy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task \"", task, "\": ", accuracy.status().message()));
  }
  TaskMetrics metrics;
  metrics.task = std::string(task);
  metrics.num_examples = static_cast<int64_t>(predictions.size());
  metrics.values.emplace_back(kAccuracy, *accuracy);
  metrics.values.emplace_back(kExactMatch, *ExactMatch(predictions, references));
  metrics.values.emplace_back(kMacroF1, *MacroF1(predictions, references));
  tasks_.push_back(std::move(metrics));
  return absl::OkStatus();
}

void MetricsReport::Set(absl::string_view task, absl::string_view metric,
                        double value, int64_t num_examples) {
  TaskMetrics* metrics = FindMutable(task);
  if (metrics == nullptr) {
    tasks_.push_back(TaskMetrics{std::string(task), num_examples, {}});
    metrics = &tasks_.back();
  }
  for (auto& [name, old_value] : metrics->values) {
    if (name == metric) {
      old_value = value;
      return;
    }
  }
  metrics->values.emplace_back(std::string(metric), value);
}

const TaskMetrics* MetricsReport::Find(absl::string_view task) const {
  for (const TaskMetrics& metrics : tasks_) {
    if (metrics.task == task) return &metrics;
  }
  return nullptr;
}

TaskMetrics* MetricsReport::FindMutable(absl::string_view task) {
  return const_cast<TaskMetrics*>(Find(task));
}

std::optional<double> MetricsReport::Average(absl::string_view metric) const {
  double sum = 0;
  int count = 0;
  for (const TaskMetrics& metrics : tasks_) {
    if (std::optional<double> value = metrics.Get(metric)) {
      sum += *value;
      ++count;
    }
  }
  if (count == 0) return std::nullopt;
  return sum / count;
}

std::vector<std::string> MetricsReport::MetricNames() const {
  std::vector<std::string> names;
  for (const TaskMetrics& metrics : tasks_) {
    for (const auto& entry : metrics.values) {
      if (std::find(names.begin(), names.end(), entry.first) == names.end()) {
        names.push_back(entry.first);
      }
    }
  }
  return names;
}

std::vector<std::pair<std::string, double>> MetricsReport::Flatten() const {
  std::vector<std::pair<std::string, double>> out;
  for (const TaskMetrics& metrics : tasks_) {
    for (const auto& [name, value] : metrics.values) {
      out.emplace_back(absl::StrCat(metrics.task, "/", name), value);
    }
  }
  for (const std::string& name : MetricNames()) {
    out.emplace_back(absl::StrCat("average/", name), *Average(name));
  }
  return out;
}

std::string MetricsReport::ToString() const {
  std::vector<std::string> names = MetricNames();
  // Rows of cells; the first row is the header.
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"task", "examples"};
  header.insert(header.end(), names.begin(), names.end());
  rows.push_back(header);
  for (const TaskMetrics& metrics : tasks_) {
    std::vector<std::string> row = {metrics.task,
                                    absl::StrCat(metrics.num_examples)};
    for (const std::string& name : names) {
      std::optional<double> value = metrics.Get(name);
      row.push_back(value ? absl::StrFormat("%.2f", 100 * *value) : "-");
    }
    rows.push_back(std::move(row));
  }
  if (tasks_.size() > 1) {
    int64_t total = 0;
    for (const TaskMetrics& metrics : tasks_) total += metrics.num_examples;
    std::vector<std::string> row = {"average", absl::StrCat(total)};
    for (const std::string& name : names) {
      row.push_back(absl::StrFormat("%.2f", 100 * *Average(name)));
    }
    rows.push_back(std::move(row));
  }
  std::vector<size_t> widths(header.size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out = absl::StrCat(stage_, " evaluation at step ", step_, "\n");
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      std::string padding(widths[i] - row[i].size(), ' ');
      // The task column is left-aligned, numbers right-aligned.
      line += i == 0 ? row[i] + padding : padding + row[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string MetricsReport::ToJson() const {
  nlohmann::ordered_json root;
  root["stage"] = stage_;
  root["step"] = step_;
  nlohmann::ordered_json tasks = nlohmann::ordered_json::array();
  for (const TaskMetrics& metrics : tasks_) {
    nlohmann::ordered_json task;
    task["task"] = metrics.task;
    task["num_examples"] = metrics.num_examples;
    task["metrics"] = MetricsObject(metrics.values);
    tasks.push_back(std::move(task));
  }
  root["tasks"] = std::move(tasks);
  std::vector<std::pair<std::string, double>> averages;
  for (const std::string& name : MetricNames()) {
    averages.emplace_back(name, *Average(name));
  }
  root["average"] = MetricsObject(averages);
  // Invalid UTF-8 in a task name is replaced rather than thrown on.
  return root.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace mpt
