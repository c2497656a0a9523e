// Writes an exposition with every kind of family and awkward label values
// to stdout, for metrics_promtool_test.sh to give to `promtool check metrics`.
#include <cstdio>
#include <limits>

#include "common/metrics/metrics_registry.h"
#include "common/metrics/process_metrics.h"

int main() {
  mpt::MetricsRegistry registry;
  auto counter = registry.AddCounter("sample_requests_total", "Requests, with \"quotes\" and \\.",
                                     {"path", "code"});
  auto gauge = registry.AddGauge("sample_temperature_celsius", "A gauge.\nOn two lines.");
  auto histogram = registry.AddHistogram("sample_latency_seconds", "A histogram.", {"method"},
                                         mpt::ExponentialBuckets(0.001, 10, 5));
  if (!counter.ok() || !gauge.ok() || !histogram.ok() || !mpt::AddProcessMetrics(&registry).ok()) {
    std::fprintf(stderr, "cannot register the sample families\n");
    return 1;
  }
  (*counter)->Labels({"/a \"quoted\" path\\with\nnewline", "200"}).Increment(3);
  (*counter)->Labels({"/ünïcödé", "404"}).Increment();
  (*gauge)->Labels({}).Set(-std::numeric_limits<double>::infinity());
  for (double v : {0.0005, 0.02, 0.3, 4.0, 50.0}) (*histogram)->Labels({"Get"}).Observe(v);
  (*histogram)->Labels({"Put"});  // a child never observed
  std::fputs(registry.Render().c_str(), stdout);
  return 0;
}
