// Metrics for Prometheus: counters, gauges and histograms in labelled
// families, rendered in the Prometheus text exposition format (version
// 0.0.4) that a scrape of /metrics reads.
//
//   MetricsRegistry registry;
//   ASSIGN_OR_RETURN(CounterFamily * steps,
//                    registry.AddCounter("mpt_worker_steps_total", "Optimiser steps.",
//                                        {"stage"}));
//   steps->Labels({"source"}).Increment();
//   registry.AddCollectHook([&] { queue->Labels({}).Set(QueueLength()); });
//   std::string text = registry.Render();  // serve as kPrometheusTextContentType
//
// Names follow Prometheus's rules: a metric name matches
// [a-zA-Z_:][a-zA-Z0-9_:]*, a label name [a-zA-Z_][a-zA-Z0-9_]* and does not
// start with "__"; a histogram may not use the label "le". Label values are
// any UTF-8 text; Render() escapes backslash, double quote and newline.
//
// Thread-safety: every method of every class here may be called from any
// thread. Families and children live as long as the registry; pointers to
// them stay valid.
#ifndef MPT_COMMON_METRICS_METRICS_REGISTRY_H_
#define MPT_COMMON_METRICS_METRICS_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace mpt {

// The Content-Type of Render()'s text.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// A value as the exposition format writes it: "NaN", "+Inf", "-Inf", or the
// shortest decimal form that reads back as the same double.
std::string FormatMetricValue(double value);

// `text` with backslash, double quote and newline escaped as a label value
// must be (\\, \", \n).
std::string EscapeLabelValue(absl::string_view text);

// `text` with backslash and newline escaped as a HELP line must be.
std::string EscapeHelpText(absl::string_view text);

// `count` bucket bounds: start, start*factor, start*factor^2, ...
// Empty unless start > 0, factor > 1 and count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// A value that only goes up.
class Counter {
 public:
  // Adds `by`; a negative or NaN `by` is ignored (a counter never goes down).
  void Increment(double by = 1);
  // For a total kept elsewhere (the kernel's CPU time): sets the value; a
  // value below the current one is ignored.
  void SetTotal(double total);
  double value() const;

 private:
  mutable absl::Mutex mu_;
  double value_ ABSL_GUARDED_BY(mu_) = 0;
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value);
  void Add(double by);
  double value() const;

 private:
  mutable absl::Mutex mu_;
  double value_ ABSL_GUARDED_BY(mu_) = 0;
};

// Counts of observations in buckets with fixed upper bounds, their sum and
// their count.
class Histogram {
 public:
  // `bounds` are the finite upper bounds, strictly increasing (checked by
  // MetricsRegistry::AddHistogram); +Inf is implied.
  explicit Histogram(std::vector<double> bounds);
  // A NaN is ignored.
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    // Cumulative counts: cumulative[i] observations were <= bounds[i];
    // `count` of them in all (the +Inf bucket).
    std::vector<uint64_t> cumulative;
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, +Inf last
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

// A metric name with its help text, type and label names, and one child per
// combination of label values seen. A family without labels has its one
// child from the start, so it is rendered (as 0) before its first use.
class MetricFamily {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  virtual ~MetricFamily() = default;
  const std::string& name() const { return name_; }
  Type type() const { return type_; }
  // Appends the family's HELP and TYPE lines and its samples to `out`.
  virtual void Render(std::string* out) const = 0;

 protected:
  MetricFamily(std::string name, std::string help, Type type, std::vector<std::string> labels)
      : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)) {}
  void RenderHeader(std::string* out) const;
  // `{a="x",b="y"}` for `values` (with `extra` appended, e.g. le="0.5"), or
  // "" when there are no labels at all.
  std::string LabelText(const std::vector<std::string>& values,
                        absl::string_view extra = "") const;

  const std::string name_;
  const std::string help_;
  const Type type_;
  const std::vector<std::string> labels_;
};

// The children of a family by their label values. Labels() takes the
// values in the order of the family's label names; missing values count as
// "" and extra ones are dropped (a caller's mistake that must not crash a
// server; the unit tests of each caller pin its label sets).
template <class Child>
class LabelledFamily : public MetricFamily {
 public:
  Child& Labels(const std::vector<std::string>& values) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::string> key = values;
    key.resize(labels_.size());
    absl::MutexLock lock(&mu_);
    auto it = children_.find(key);
    if (it == children_.end()) it = children_.emplace(key, NewChild()).first;
    return *it->second;
  }

 protected:
  using MetricFamily::MetricFamily;
  virtual std::unique_ptr<Child> NewChild() const = 0;
  // The children, sorted by label values.
  std::vector<std::pair<std::vector<std::string>, const Child*>> Children() const
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<std::vector<std::string>, const Child*>> out;
    for (const auto& [k, v] : children_) out.push_back({k, v.get()});
    return out;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Child>> children_ ABSL_GUARDED_BY(mu_);
};

class CounterFamily final : public LabelledFamily<Counter> {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> labels);
  void Render(std::string* out) const override;

 private:
  std::unique_ptr<Counter> NewChild() const override { return std::make_unique<Counter>(); }
};

class GaugeFamily final : public LabelledFamily<Gauge> {
 public:
  GaugeFamily(std::string name, std::string help, std::vector<std::string> labels);
  void Render(std::string* out) const override;

 private:
  std::unique_ptr<Gauge> NewChild() const override { return std::make_unique<Gauge>(); }
};

class HistogramFamily final : public LabelledFamily<Histogram> {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> labels,
                  std::vector<double> bounds);
  void Render(std::string* out) const override;

 private:
  std::unique_ptr<Histogram> NewChild() const override {
    return std::make_unique<Histogram>(bounds_);
  }
  const std::vector<double> bounds_;
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Register a family. INVALID_ARGUMENT naming the problem for a bad metric
  // or label name, a label name used twice, or (histograms) a label "le" or
  // bounds that are empty, not finite or not strictly increasing;
  // ALREADY_EXISTS for a name registered before. The family is owned by the
  // registry.
  absl::StatusOr<CounterFamily*> AddCounter(std::string name, std::string help,
                                            std::vector<std::string> labels = {});
  absl::StatusOr<GaugeFamily*> AddGauge(std::string name, std::string help,
                                        std::vector<std::string> labels = {});
  absl::StatusOr<HistogramFamily*> AddHistogram(std::string name, std::string help,
                                                std::vector<std::string> labels,
                                                std::vector<double> bounds);

  // `hook` runs at the start of every Render(), before any family is read,
  // to set values computed at scrape time (counts read from a store, the
  // process's memory). Hooks run one Render() at a time, in the order added.
  void AddCollectHook(std::function<void()> hook);

  // Every family, in registration order, in the text exposition format.
  std::string Render() const;

 private:
  absl::Status CheckNew(const std::string& name, const std::vector<std::string>& labels) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_ ABSL_GUARDED_BY(mu_);
  mutable absl::Mutex hooks_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(hooks_mu_);
};

}  // namespace mpt

#endif  // MPT_COMMON_METRICS_METRICS_REGISTRY_H_
