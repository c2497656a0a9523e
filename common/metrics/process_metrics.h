// The standard process metrics of Prometheus's client libraries, read from
// Linux's /proc at scrape time: process_resident_memory_bytes,
// process_virtual_memory_bytes, process_cpu_seconds_total,
// process_open_fds and process_start_time_seconds.
#ifndef MPT_COMMON_METRICS_PROCESS_METRICS_H_
#define MPT_COMMON_METRICS_PROCESS_METRICS_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "common/metrics/metrics_registry.h"

namespace mpt {

struct ProcessStats {
  int64_t resident_bytes = 0;
  int64_t virtual_bytes = 0;
  double cpu_seconds = 0;  // user + system
  int64_t open_fds = 0;
  double start_time_seconds = 0;  // since the Unix epoch
};

// This process's figures; nullopt where /proc cannot be read (not Linux).
std::optional<ProcessStats> ReadProcessStats();

// Registers the families above on `registry` and a hook that fills them on
// every scrape. The registry's error (a name registered before).
absl::Status AddProcessMetrics(MetricsRegistry* registry);

}  // namespace mpt

#endif  // MPT_COMMON_METRICS_PROCESS_METRICS_H_
