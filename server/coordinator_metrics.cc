#include "server/coordinator_metrics.h"

#include <filesystem>
#include <system_error>

#include "common/logging.h"
#include "common/metrics/process_metrics.h"
#include "common/status_macros.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {
namespace {

// Every state a job or stage can be in, so that a state whose count drops
// to zero shows 0 rather than its last value.
constexpr mpt::v1::JobState kStates[] = {mpt::v1::QUEUED,    mpt::v1::RUNNING,
                                         mpt::v1::SUCCEEDED, mpt::v1::FAILED,
                                         mpt::v1::CANCELLING, mpt::v1::CANCELLED};

}  // namespace

absl::StatusOr<CoordinatorHistograms> AddCoordinatorHistograms(MetricsRegistry* registry) {
  CoordinatorHistograms h;
  // 1 s .. about 9 h.
  ASSIGN_OR_RETURN(h.stage_duration,
                   registry->AddHistogram(
                       "mpt_stage_attempt_duration_seconds",
                       "How long stage attempts ran, from start to their end (succeeded, "
                       "failed, lost or cancelled).",
                       {"stage_kind", "outcome"}, ExponentialBuckets(1, 2, 16)));
  // 1 ms .. about 65 s (long polls and watches land in the upper buckets).
  ASSIGN_OR_RETURN(h.rpc_duration,
                   registry->AddHistogram(
                       "mpt_rpc_duration_seconds",
                       "gRPC calls served, by full method name and status code, from the "
                       "call's start to its status.",
                       {"method", "code"}, ExponentialBuckets(0.001, 2, 17)));
  return h;
}

absl::Status AddCoordinatorCollectors(MetricsRegistry* registry, Coordinator* coordinator,
                                      const std::string& db_path) {
  ASSIGN_OR_RETURN(GaugeFamily * jobs,
                   registry->AddGauge("mpt_jobs", "Jobs in the job store by state.", {"state"}));
  ASSIGN_OR_RETURN(GaugeFamily * stages, registry->AddGauge(
                                             "mpt_stages", "Stages in the job store by state.",
                                             {"state"}));
  ASSIGN_OR_RETURN(GaugeFamily * ready,
                   registry->AddGauge("mpt_stages_ready",
                                      "The queue: QUEUED stages whose dependencies succeeded, "
                                      "waiting for a worker."));
  ASSIGN_OR_RETURN(GaugeFamily * live, registry->AddGauge("mpt_assignments_live",
                                                          "Assignments handed to workers "
                                                          "and not yet released."));
  ASSIGN_OR_RETURN(GaugeFamily * workers, registry->AddGauge("mpt_workers",
                                                             "Registered workers by state.",
                                                             {"state"}));
  ASSIGN_OR_RETURN(GaugeFamily * file_bytes,
                   registry->AddGauge("mpt_store_file_bytes",
                                      "Size of the SQLite job store's files (database, wal).",
                                      {"file"}));
  ASSIGN_OR_RETURN(GaugeFamily * store_jobs,
                   registry->AddGauge("mpt_store_jobs", "Jobs in the job store."));
  ASSIGN_OR_RETURN(GaugeFamily * store_artifacts,
                   registry->AddGauge("mpt_store_artifacts", "Artefact records in the job store."));
  ASSIGN_OR_RETURN(CounterFamily * errors,
                   registry->AddCounter("mpt_metrics_collect_errors_total",
                                        "Scrapes that could not read a source of figures.",
                                        {"source"}));
  RETURN_IF_ERROR(AddProcessMetrics(registry));
  registry->AddCollectHook([=] {
    absl::StatusOr<StoreStats> s = coordinator->ReadStoreStats();
    if (s.ok()) {
      int64_t total = 0;
      for (mpt::v1::JobState st : kStates) {
        auto j = s->jobs_by_state.find(st);
        auto g = s->stages_by_state.find(st);
        const int64_t nj = j == s->jobs_by_state.end() ? 0 : j->second;
        total += nj;
        jobs->Labels({mpt::v1::JobState_Name(st)}).Set(static_cast<double>(nj));
        stages->Labels({mpt::v1::JobState_Name(st)})
            .Set(static_cast<double>(g == s->stages_by_state.end() ? 0 : g->second));
      }
      store_jobs->Labels({}).Set(static_cast<double>(total));
      store_artifacts->Labels({}).Set(static_cast<double>(s->artifacts));
    } else {
      errors->Labels({"job_store"}).Increment();
      MPT_LOG(WARNING) << "metrics: cannot read the job store's counts: " << s.status();
    }
    for (const auto& [file, path] : {std::make_pair("database", db_path),
                                     std::make_pair("wal", db_path + "-wal")}) {
      std::error_code ec;
      const uintmax_t size = std::filesystem::file_size(path, ec);
      file_bytes->Labels({file}).Set(ec ? 0.0 : static_cast<double>(size));
    }
    const ClusterStats c = coordinator->ReadClusterStats();
    ready->Labels({}).Set(static_cast<double>(c.ready_stages));
    live->Labels({}).Set(static_cast<double>(c.live_assignments));
    for (const auto& [state, n] : c.workers_by_state) {
      workers->Labels({state}).Set(static_cast<double>(n));
    }
  });
  return absl::OkStatus();
}

}  // namespace mpt
