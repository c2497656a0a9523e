// The coordinator's Prometheus metrics (README.md, "Monitoring", lists
// them):
//   mpt_jobs{state}, mpt_stages{state}        jobs and stages in the store
//   mpt_stages_ready                          the queue: stages that could run now
//   mpt_assignments_live                      assignments handed out
//   mpt_workers{state}                        idle, busy, lost
//   mpt_stage_attempt_duration_seconds{stage_kind,outcome}   histogram
//   mpt_rpc_duration_seconds{method,code}     histogram (rpc_metrics.h fills it)
//   mpt_store_file_bytes{file}, mpt_store_jobs, mpt_store_artifacts
//   mpt_metrics_collect_errors_total{source}
//   process_* (common/metrics/process_metrics.h)
// Counts are read at scrape time: the store's through its reading
// connection (never waiting for a commit), the scheduling state under the
// coordinator's mutex for as long as it takes to count.
#ifndef MPT_SERVER_COORDINATOR_METRICS_H_
#define MPT_SERVER_COORDINATOR_METRICS_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/metrics/metrics_registry.h"
#include "server/coordinator.h"

namespace mpt {

// The histograms the coordinator and its gRPC server fill as things happen.
struct CoordinatorHistograms {
  HistogramFamily* stage_duration = nullptr;  // CoordinatorOptions::stage_duration
  HistogramFamily* rpc_duration = nullptr;    // GrpcServerOptions::rpc_duration
};

// Registers the two histograms on `registry` (before the coordinator is
// created, which needs them). The registry's error.
absl::StatusOr<CoordinatorHistograms> AddCoordinatorHistograms(MetricsRegistry* registry);

// Registers the scrape-time families and the hook that reads them from
// `coordinator` and from the files `db_path` and `db_path`-wal, plus the
// process metrics. `coordinator` is borrowed and must outlive every
// Render() of `registry`. The registry's error.
absl::Status AddCoordinatorCollectors(MetricsRegistry* registry, Coordinator* coordinator,
                                      const std::string& db_path);

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_METRICS_H_
