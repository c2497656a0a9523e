#include "common/metrics/metrics_registry.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/metrics/process_metrics.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

// An independent reader of the text format, written from the format's
// description: one sample per line, "name{label="value",...} value".
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

// Parses the sample lines of `text`; fails the test on a malformed one.
std::vector<Sample> ParseSamples(const std::string& text) {
  std::vector<Sample> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') continue;
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') s.name += line[i++];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (line[i] != '}') {
        std::string key;
        while (line[i] != '=') key += line[i++];
        ++i;
        EXPECT_EQ(line[i], '"') << line;
        ++i;
        std::string value;
        while (line[i] != '"') {
          if (line[i] == '\\') {
            ++i;
            value += line[i] == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
          ++i;
        }
        ++i;
        s.labels[key] = value;
        if (line[i] == ',') ++i;
      }
      ++i;
    }
    EXPECT_EQ(line[i], ' ') << line;
    s.value = std::string(line.substr(i + 1));
    out.push_back(s);
  }
  return out;
}

TEST(MetricsRegistryTest, RendersCountersAndGaugesWithHelpAndType) {
  MetricsRegistry registry;
  CounterFamily* jobs = *registry.AddCounter("mpt_jobs_submitted_total", "Jobs submitted.",
                                             {"kind"});
  GaugeFamily* queue = *registry.AddGauge("mpt_queue_length", "Stages ready to run.");
  jobs->Labels({"PIPELINE"}).Increment();
  jobs->Labels({"PIPELINE"}).Increment(2);
  jobs->Labels({"PIPELINE"}).Increment(-5);  // ignored
  queue->Labels({}).Set(3);
  EXPECT_EQ(registry.Render(),
            "# HELP mpt_jobs_submitted_total Jobs submitted.\n"
            "# TYPE mpt_jobs_submitted_total counter\n"
            "mpt_jobs_submitted_total{kind=\"PIPELINE\"} 3\n"
            "# HELP mpt_queue_length Stages ready to run.\n"
            "# TYPE mpt_queue_length gauge\n"
            "mpt_queue_length 3\n");
}

TEST(MetricsRegistryTest, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  GaugeFamily* g = *registry.AddGauge("odd", "A \\ help\nline.", {"path"});
  const std::string nasty = "a\"b\\c\nd é";
  g->Labels({nasty}).Set(1);
  const std::string text = registry.Render();
  EXPECT_NE(text.find("# HELP odd A \\\\ help\\nline.\n"), std::string::npos) << text;
  EXPECT_NE(text.find("odd{path=\"a\\\"b\\\\c\\nd é\"} 1\n"), std::string::npos) << text;
  std::vector<Sample> samples = ParseSamples(text);
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].labels["path"], nasty);
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeWithInf) {
  MetricsRegistry registry;
  HistogramFamily* h =
      *registry.AddHistogram("rpc_seconds", "Latency.", {"method"}, {0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 5.0, 50.0}) h->Labels({"Get"}).Observe(v);
  h->Labels({"Get"}).Observe(std::nan(""));  // ignored
  std::map<std::string, std::string> buckets;
  std::string sum, count;
  for (const Sample& s : ParseSamples(registry.Render())) {
    EXPECT_EQ(s.labels.at("method"), "Get");
    if (s.name == "rpc_seconds_bucket") buckets[s.labels.at("le")] = s.value;
    if (s.name == "rpc_seconds_sum") sum = s.value;
    if (s.name == "rpc_seconds_count") count = s.value;
  }
  EXPECT_EQ(buckets, (std::map<std::string, std::string>{
                         {"0.1", "2"}, {"1", "3"}, {"10", "4"}, {"+Inf", "5"}}));
  EXPECT_DOUBLE_EQ(std::strtod(sum.c_str(), nullptr), 55.65);
  EXPECT_EQ(count, "5");
}

TEST(MetricsRegistryTest, UnlabelledFamiliesShowZeroBeforeUse) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry.AddHistogram("h_seconds", "H.", {}, {1}).ok());
  ASSERT_TRUE(registry.AddCounter("c_total", "C.").ok());
  const std::string text = registry.Render();
  EXPECT_NE(text.find("h_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_count 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("c_total 0\n"), std::string::npos) << text;
}

TEST(MetricsRegistryTest, RefusesBadNames) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.AddGauge("1bad", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("bad-name", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("ok", "x", {"__reserved"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("ok", "x", {"a", "a"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {}, {2, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(registry.AddGauge("ok", "x").ok());
  EXPECT_EQ(registry.AddCounter("ok", "x").status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(MetricsRegistryTest, FormatsValuesExactly) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(1e300), "1e+300");
  EXPECT_EQ(FormatMetricValue(123456789012345678.0), "1.2345678901234568e+17");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
  for (double v : {1.0 / 3, 2.0 / 3, 1e-9 / 7, 12345.678901}) {
    EXPECT_EQ(std::strtod(FormatMetricValue(v).c_str(), nullptr), v);
  }
}

TEST(MetricsRegistryTest, CollectHooksRunBeforeRendering) {
  MetricsRegistry registry;
  GaugeFamily* g = *registry.AddGauge("scrapes", "Renders so far.");
  int n = 0;
  registry.AddCollectHook([&] { g->Labels({}).Set(++n); });
  EXPECT_NE(registry.Render().find("scrapes 1\n"), std::string::npos);
  EXPECT_NE(registry.Render().find("scrapes 2\n"), std::string::npos);
}

TEST(ProcessMetricsTest, ReadsThisProcess) {
  std::optional<ProcessStats> s = ReadProcessStats();
  ASSERT_TRUE(s.has_value());
  EXPECT_GT(s->resident_bytes, 1 << 20);
  EXPECT_GE(s->virtual_bytes, s->resident_bytes);
  EXPECT_GT(s->open_fds, 2);
  EXPECT_GT(s->start_time_seconds, 1.6e9);
  MetricsRegistry registry;
  ASSERT_TRUE(AddProcessMetrics(&registry).ok());
  const std::string text = registry.Render();
  for (const Sample& sample : ParseSamples(text)) {
    if (sample.name == "process_resident_memory_bytes") {
      EXPECT_GT(std::strtod(sample.value.c_str(), nullptr), 1 << 20);
    }
  }
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter"), std::string::npos);
}

}  // namespace
}  // namespace mpt
