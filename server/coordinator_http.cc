#include "server/coordinator_http.h"

namespace mpt {
namespace {

HttpResponse MetricsResponse(MetricsRegistry* registry) {
  HttpResponse r;
  r.content_type = kPrometheusTextContentType;
  r.body = registry->Render();
  return r;
}

}  // namespace

std::vector<std::pair<std::string, HttpHandler>> CoordinatorHttpRoutes(
    const CoordinatorHttpOptions& options, Coordinator* coordinator, MetricsRegistry* registry) {
  std::vector<std::pair<std::string, HttpHandler>> routes;
  routes.emplace_back("/metrics",
                      [registry](const HttpRequest&) { return MetricsResponse(registry); });
  return routes;
}

absl::StatusOr<std::unique_ptr<HttpServer>> StartCoordinatorHttp(
    const CoordinatorHttpOptions& options, Coordinator* coordinator, MetricsRegistry* registry) {
  HttpServerOptions server;
  server.listen = options.listen;
  return HttpServer::Start(server, CoordinatorHttpRoutes(options, coordinator, registry));
}

}  // namespace mpt
