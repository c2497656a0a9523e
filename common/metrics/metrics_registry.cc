#include "common/metrics/metrics_registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

bool ValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' || c == ':' ||
                    (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool ValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c)))) return false;
  }
  return true;
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == 0) return "0";  // also -0
  char buffer[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

std::string EscapeLabelValue(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string EscapeHelpText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  if (!(start > 0) || !(factor > 1) || count < 1) return out;
  double b = start;
  for (int i = 0; i < count; ++i, b *= factor) out.push_back(b);
  return out;
}

// ---------------------------------------------------------------------------
// Children

void Counter::Increment(double by) {
  if (!(by >= 0)) return;
  absl::MutexLock lock(&mu_);
  value_ += by;
}

void Counter::SetTotal(double total) {
  absl::MutexLock lock(&mu_);
  if (total > value_) value_ = total;
}

double Counter::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

void Gauge::Set(double value) {
  absl::MutexLock lock(&mu_);
  value_ = value;
}

void Gauge::Add(double by) {
  absl::MutexLock lock(&mu_);
  value_ += by;
}

double Gauge::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  const size_t bucket =
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    running += counts_[i];
    s.cumulative.push_back(running);
  }
  s.count = count_;
  s.sum = sum_;
  return s;
}

// ---------------------------------------------------------------------------
// Families

void MetricFamily::RenderHeader(std::string* out) const {
  const char* type = type_ == Type::kCounter ? "counter"
                     : type_ == Type::kGauge ? "gauge"
                                             : "histogram";
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelpText(help_), "\n", "# TYPE ", name_, " ",
                  type, "\n");
}

std::string MetricFamily::LabelText(const std::vector<std::string>& values,
                                    absl::string_view extra) const {
  if (labels_.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels_.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, labels_[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, labels_.empty() ? "" : ",", extra);
  out += "}";
  return out;
}

CounterFamily::CounterFamily(std::string name, std::string help, std::vector<std::string> labels)
    : LabelledFamily(std::move(name), std::move(help), Type::kCounter, std::move(labels)) {}

void CounterFamily::Render(std::string* out) const {
  RenderHeader(out);
  for (const auto& [values, child] : Children()) {
    absl::StrAppend(out, name_, LabelText(values), " ", FormatMetricValue(child->value()), "\n");
  }
}

GaugeFamily::GaugeFamily(std::string name, std::string help, std::vector<std::string> labels)
    : LabelledFamily(std::move(name), std::move(help), Type::kGauge, std::move(labels)) {}

void GaugeFamily::Render(std::string* out) const {
  RenderHeader(out);
  for (const auto& [values, child] : Children()) {
    absl::StrAppend(out, name_, LabelText(values), " ", FormatMetricValue(child->value()), "\n");
  }
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> labels, std::vector<double> bounds)
    : LabelledFamily(std::move(name), std::move(help), Type::kHistogram, std::move(labels)),
      bounds_(std::move(bounds)) {}

void HistogramFamily::Render(std::string* out) const {
  RenderHeader(out);
  for (const auto& [values, child] : Children()) {
    const Histogram::Snapshot s = child->snapshot();
    for (size_t i = 0; i < s.bounds.size(); ++i) {
      absl::StrAppend(out, name_, "_bucket",
                      LabelText(values, absl::StrCat("le=\"", FormatMetricValue(s.bounds[i]), "\"")),
                      " ", s.cumulative[i], "\n");
    }
    absl::StrAppend(out, name_, "_bucket", LabelText(values, "le=\"+Inf\""), " ", s.count, "\n");
    absl::StrAppend(out, name_, "_sum", LabelText(values), " ", FormatMetricValue(s.sum), "\n");
    absl::StrAppend(out, name_, "_count", LabelText(values), " ", s.count, "\n");
  }
}

// ---------------------------------------------------------------------------
// The registry

absl::Status MetricsRegistry::CheckNew(const std::string& name,
                                       const std::vector<std::string>& labels) const {
  if (!ValidMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metric name \"", name, "\" does not match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  std::set<std::string> seen;
  for (const std::string& l : labels) {
    if (!ValidLabelName(l)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metric ", name, ": label name \"", l,
          "\" does not match [a-zA-Z_][a-zA-Z0-9_]* or starts with \"__\""));
    }
    if (!seen.insert(l).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", name, ": label name \"", l, "\" given twice"));
    }
  }
  for (const auto& f : families_) {
    if (f->name() == name) {
      return absl::AlreadyExistsError(absl::StrCat("metric ", name, " is already registered"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CounterFamily*> MetricsRegistry::AddCounter(std::string name, std::string help,
                                                           std::vector<std::string> labels) {
  absl::MutexLock lock(&mu_);
  absl::Status ok = CheckNew(name, labels);
  if (!ok.ok()) return ok;
  const bool plain = labels.empty();
  auto family = std::make_unique<CounterFamily>(std::move(name), std::move(help), std::move(labels));
  CounterFamily* raw = family.get();
  if (plain) raw->Labels({});
  families_.push_back(std::move(family));
  return raw;
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::AddGauge(std::string name, std::string help,
                                                       std::vector<std::string> labels) {
  absl::MutexLock lock(&mu_);
  absl::Status ok = CheckNew(name, labels);
  if (!ok.ok()) return ok;
  const bool plain = labels.empty();
  auto family = std::make_unique<GaugeFamily>(std::move(name), std::move(help), std::move(labels));
  GaugeFamily* raw = family.get();
  if (plain) raw->Labels({});
  families_.push_back(std::move(family));
  return raw;
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::AddHistogram(std::string name, std::string help,
                                                               std::vector<std::string> labels,
                                                               std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  absl::Status ok = CheckNew(name, labels);
  if (!ok.ok()) return ok;
  if (std::find(labels.begin(), labels.end(), "le") != labels.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("histogram ", name, ": the label name \"le\" is reserved for buckets"));
  }
  if (bounds.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("histogram ", name, ": no bucket bounds"));
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram ", name, ": bucket bounds must be finite and strictly increasing (bound ",
          i, " is ", FormatMetricValue(bounds[i]), ")"));
    }
  }
  const bool plain = labels.empty();
  auto family = std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                                  std::move(labels), std::move(bounds));
  HistogramFamily* raw = family.get();
  if (plain) raw->Labels({});
  families_.push_back(std::move(family));
  return raw;
}

void MetricsRegistry::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&hooks_mu_);
  hooks_.push_back(std::move(hook));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  absl::MutexLock hooks_lock(&hooks_mu_);
  for (const auto& hook : hooks_) hook();
  absl::MutexLock lock(&mu_);
  for (const auto& family : families_) family->Render(&out);
  return out;
}

}  // namespace mpt
