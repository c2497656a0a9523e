// The coordinator's HTTP endpoints, served on --http_listen next to gRPC:
//
//   GET /metrics                     Prometheus text format (coordinator_metrics.h)
//   GET /                            the dashboard (server/dashboard/), read-only
//   GET /api/jobs                    recent jobs (JSON)
//   GET /api/jobs/{id}               one job with stages and artefacts (JSON)
//   GET /api/jobs/{id}/events?after=N&limit=L   its committed events (JSON): at
//                                    most L (500) and about 4 MiB a page, "more"
//                                    true when further events exist
//   GET /api/jobs/{id}/logs?stage=S&after_line=N   its stages' log lines (JSON)
//   GET /api/workers                 workers and their assignments (JSON)
//   GET /download/jobs/{id}/artifacts/{aid}   an artefact's bytes (a tar stream)
//
// Authentication: when `auth_token` is set, everything except /metrics and
// /static/ (the page's script and styles, which hold no data) needs it, as "Authorization: Bearer <token>" (the scheme in any case) or as the query parameter
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
#include "absl/time/time.h"
#include "common/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "server/coordinator.h"

namespace mpt {

struct CoordinatorHttpOptions {
  // host:port (port 0 picks a free one). Default "localhost:0".
  std::string listen = "localhost:0";
  // The API's bearer token; empty (default): no token needed.
  std::string auth_token;
  // Connections served at once (one thread each), and at most this many of
  // one client address (more get 503 at once), so that slow clients from
  // one address cannot occupy every thread. Defaults 16 and 8.
  int threads = 16;
  int max_connections_per_client = 8;
  // A request's line and headers must arrive within request_head_timeout
  // (in all, not per byte); a kept-alive connection idle for idle_timeout
  // is closed. Defaults 10 s and 5 s (HttpServerOptions).
  absl::Duration request_head_timeout = absl::Seconds(10);
  absl::Duration idle_timeout = absl::Seconds(5);
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
