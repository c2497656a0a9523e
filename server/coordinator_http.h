// The coordinator's HTTP endpoints, served on --http_listen next to gRPC:
//
//   GET /metrics                     Prometheus text format (coordinator_metrics.h)
//   GET /                            the dashboard (server/dashboard/), read-only
//   GET /api/jobs                    recent jobs (JSON)
//   GET /api/jobs/{id}               one job with stages and artefacts (JSON)
//   GET /api/jobs/{id}/events?after=N   its committed events (JSON)
//   GET /api/jobs/{id}/logs?stage=S&after_line=N   its stages' log lines (JSON)
//   GET /api/workers                 workers and their assignments (JSON)
//   GET /download/jobs/{id}/artifacts/{aid}   an artefact's bytes (a tar stream)
//
// Authentication: when `auth_token` is set, everything except /metrics and
// /static/ (the page's script and styles, which hold no data) needs it, as "Authorization: Bearer <token>" or as the query parameter
// "?token=<token>" (the form links and the page's first load use); others
// get 401. /metrics stays open, like gRPC health checking: it carries
// counts, never names of jobs, tasks or files.
//
// Nothing here changes state, and no handler waits for a commit: jobs come
// from the committed copies and the store's reading connection
// (Coordinator::GetJob, ListJobs, ReadCommittedEvents, GetStageLogs,
// ReadArtifact);
// workers from Coordinator::ListWorkers, which holds the coordinator's
// mutex only to copy the worker table.
#ifndef MPT_SERVER_COORDINATOR_HTTP_H_
#define MPT_SERVER_COORDINATOR_HTTP_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "server/coordinator.h"

namespace mpt {

struct CoordinatorHttpOptions {
  // host:port (port 0 picks a free one). Default "localhost:0".
  std::string listen = "localhost:0";
  // The API's bearer token; empty (default): no token needed.
  std::string auth_token;
};

// The routes above, for HttpServer::Start (or for tests to call directly).
// `coordinator` and `registry` are borrowed and must outlive the routes.
std::vector<std::pair<std::string, HttpHandler>> CoordinatorHttpRoutes(
    const CoordinatorHttpOptions& options, Coordinator* coordinator, MetricsRegistry* registry);

// Starts serving the routes. HttpServer::Start's errors.
absl::StatusOr<std::unique_ptr<HttpServer>> StartCoordinatorHttp(
    const CoordinatorHttpOptions& options, Coordinator* coordinator, MetricsRegistry* registry);

}  // namespace mpt

#endif  // MPT_SERVER_COORDINATOR_HTTP_H_
