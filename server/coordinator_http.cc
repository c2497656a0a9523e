#include "server/coordinator_http.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/logging.h"
#include "common/quote.h"
#include "common/secrets.h"
#include "server/dashboard/dashboard_files.h"

namespace mpt {
namespace {

constexpr int kMaxEventsPerPage = 500;
// /api/jobs/{id}/events: a page ends after the event that takes its JSON
// past this size, and the store is read this many events at a time.
constexpr size_t kMaxEventsPageBytes = 4 << 20;
constexpr int kEventsReadBatch = 16;

// A 404 page for `path`, which is shown escaped and cut (QuoteForError()).
HttpResponse NotFound(absl::string_view path) {
  return HttpResponse::Text(404, absl::StrCat("not found: ", QuoteForError(path), "\n"));
}

HttpResponse MetricsResponse(MetricsRegistry* registry) {
  HttpResponse r;
  r.content_type = kPrometheusTextContentType;
  r.body = registry->Render();
  return r;
}

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    // google.rpc.Code's HTTP mapping (google/rpc/code.proto).
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists: return 409;
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;  // INTERNAL, UNKNOWN, DATA_LOSS
  }
}

HttpResponse FromStatus(const absl::Status& status) {
  return HttpResponse::JsonError(HttpStatusOf(status), ErrorMessageForClient(status.message()));
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot write JSON: ", status.ToString()));
  }
  return out;
}

// A JSON body of live state: never cached.
HttpResponse JsonResponse(std::string body) {
  HttpResponse r;
  r.content_type = kJsonContentType;
  r.body = std::move(body);
  r.headers.push_back({"Cache-Control", "no-store"});
  return r;
}

HttpResponse JsonResponse(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = ToJson(message);
  if (!json.ok()) return FromStatus(json.status());
  return JsonResponse(*std::move(json));
}

// A non-negative integer query parameter; `fallback` when absent.
absl::StatusOr<int64_t> IntParam(const HttpRequest& request, const std::string& name,
                                 int64_t fallback) {
  const std::string text = request.Param(name);
  if (text.empty()) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": must be a non-negative integer, got ", QuoteForError(text)));
  }
  return value;
}

class Routes {
 public:
  Routes(const CoordinatorHttpOptions& options, Coordinator* coordinator)
      : token_(options.auth_token), core_(coordinator) {}

  // OK when no token is needed or the request carries it. The scheme is
  // case-insensitive ("bearer", "BEARER": RFC 7235, section 2.1).
  bool Authorized(const HttpRequest& request) const {
    if (token_.empty()) return true;
    const std::string header = request.Header("authorization");
    const absl::string_view value(header);
    if (value.size() > 7 && absl::EqualsIgnoreCase(value.substr(0, 7), "Bearer ") &&
        ConstantTimeEquals(value.substr(7), token_)) {
      return true;
    }
    const std::string param = request.Param("token");
    return !param.empty() && ConstantTimeEquals(param, token_);
  }

  HttpResponse Page(const HttpRequest& request) const {
    if (!Authorized(request)) {
      HttpResponse r = HttpResponse::Text(
          401,
          "This coordinator needs its API token: open the dashboard as /?token=<token> "
          "(the page keeps it in memory and sends it as \"Authorization: Bearer\").\n");
      r.headers.push_back({"WWW-Authenticate", "Bearer"});
      return r;
    }
    return Static("index.html");
  }

  static HttpResponse Static(absl::string_view file) {
    for (int i = 0; i < kDashboardFileCount; ++i) {
      if (file != kDashboardFiles[i].name) continue;
      HttpResponse r;
      r.body.assign(kDashboardFiles[i].data, kDashboardFiles[i].size);
      r.content_type = absl::EndsWith(file, ".html") ? "text/html; charset=utf-8"
                       : absl::EndsWith(file, ".js") ? "text/javascript; charset=utf-8"
                       : absl::EndsWith(file, ".css") ? "text/css; charset=utf-8"
                                                      : "application/octet-stream";
      r.headers.push_back({"X-Content-Type-Options", "nosniff"});
      r.headers.push_back({"Content-Security-Policy",
                           "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data: blob:"});
      return r;
    }
    return NotFound(absl::StrCat("/static/", file));
  }

  HttpResponse Api(const HttpRequest& request) const {
    if (!Authorized(request)) {
      HttpResponse r = HttpResponse::JsonError(
          401, "this coordinator needs \"Authorization: Bearer <token>\" (or ?token=<token>)");
      r.headers.push_back({"WWW-Authenticate", "Bearer"});
      return r;
    }
    const std::vector<absl::string_view> parts =
        absl::StrSplit(absl::string_view(request.path).substr(5), '/');  // after "/api/"
    if (parts.size() == 1 && parts[0] == "jobs") return ListJobs(request);
    if (parts.size() == 1 && parts[0] == "workers") return Workers();
    if (parts.size() == 2 && parts[0] == "jobs") {
      absl::StatusOr<mpt::v1::Job> job = core_->GetJob(absl::StrCat("jobs/", parts[1]));
      if (!job.ok()) return FromStatus(job.status());
      return JsonResponse(*job);
    }
    if (parts.size() == 3 && parts[0] == "jobs" && parts[2] == "events") {
      return Events(absl::StrCat("jobs/", parts[1]), request);
    }
    if (parts.size() == 3 && parts[0] == "jobs" && parts[2] == "logs") {
      return Logs(absl::StrCat("jobs/", parts[1]), request);
    }
    return HttpResponse::JsonError(404,
                                   absl::StrCat("no such endpoint: ", QuoteForError(request.path)));
  }

  HttpResponse Download(const HttpRequest& request) const {
    if (!Authorized(request)) {
      return HttpResponse::Text(401, "this coordinator needs its API token\n");
    }
    const std::string name = request.path.substr(std::string("/download/").size());
    absl::StatusOr<ArtifactReader> content = core_->OpenArtifact(name);
    if (!content.ok()) {
      return HttpResponse::Text(
          HttpStatusOf(content.status()),
          absl::StrCat(ErrorMessageForClient(content.status().message()), "\n"));
    }
    HttpResponse r;
    r.content_type = "application/x-tar";
    // Read as the client reads; a corrupt blob ends the body short (its
    // last piece is refused), which the client sees against Content-Length.
    r.stream_length = content->blob->size();
    r.stream = [blob = std::shared_ptr<ArtifactStore::BlobReader>(std::move(content->blob)),
                name](int64_t offset, size_t max, std::string* out) {
      absl::Status read = blob->Read(offset, max, out);
      if (!read.ok()) MPT_LOG(ERROR) << "download of " << name << ": " << read.message();
      return read.ok();
    };
    std::string file = absl::StrCat(content->artifact.stage(), "-",
                                    name.substr(name.rfind('/') + 1), ".tar");
    std::replace(file.begin(), file.end(), '/', '_');
    std::replace(file.begin(), file.end(), '"', '_');
    r.headers.push_back({"Content-Disposition", absl::StrCat("attachment; filename=\"", file, "\"")});
    r.headers.push_back({"X-Content-SHA256", content->artifact.sha256()});
    return r;
  }

 private:
  HttpResponse ListJobs(const HttpRequest& request) const {
    mpt::v1::ListJobsRequest list;
    absl::StatusOr<int64_t> page_size = IntParam(request, "page_size", 50);
    if (!page_size.ok()) return FromStatus(page_size.status());
    list.set_page_size(static_cast<int>(std::min<int64_t>(*page_size, 1000)));
    list.set_page_token(request.Param("page_token"));
    absl::StatusOr<mpt::v1::ListJobsResponse> page = core_->ListJobs(list);
    if (!page.ok()) return FromStatus(page.status());
    return JsonResponse(*page);
  }

  // At most `limit` (500) events and about kMaxEventsPageBytes of JSON
  // (always at least one event): read from the store kEventsReadBatch at a
  // time, so that neither the page nor what is read for it grows with the
  // size of the events. "more" is true when events after the page exist;
  // read on with after=<the last sequence>.
  HttpResponse Events(const std::string& job, const HttpRequest& request) const {
    absl::StatusOr<int64_t> after = IntParam(request, "after", 0);
    if (!after.ok()) return FromStatus(after.status());
    absl::StatusOr<int64_t> limit = IntParam(request, "limit", kMaxEventsPerPage);
    if (!limit.ok()) return FromStatus(limit.status());
    const int64_t wanted = std::clamp<int64_t>(*limit, 1, kMaxEventsPerPage);
    std::string body = "{\"events\":[";
    int64_t cursor = *after;
    int64_t written = 0;
    bool more = false;
    while (true) {
      // One more than needed: whether events follow the page.
      const int batch = static_cast<int>(std::min<int64_t>(kEventsReadBatch, wanted - written + 1));
      absl::StatusOr<std::vector<mpt::v1::JobEvent>> events =
          core_->ReadCommittedEvents(job, cursor, batch);
      if (!events.ok()) return FromStatus(events.status());
      for (const mpt::v1::JobEvent& event : *events) {
        if (written == wanted || (written > 0 && body.size() >= kMaxEventsPageBytes)) {
          more = true;
          break;
        }
        absl::StatusOr<std::string> json = ToJson(event);
        if (!json.ok()) return FromStatus(json.status());
        absl::StrAppend(&body, written > 0 ? "," : "", *json);
        ++written;
        cursor = event.sequence();
      }
      if (more || static_cast<int>(events->size()) < batch) break;
    }
    absl::StrAppend(&body, "],\"more\":", more ? "true" : "false", "}\n");
    return JsonResponse(std::move(body));
  }

  HttpResponse Logs(const std::string& job, const HttpRequest& request) const {
    mpt::v1::GetStageLogsRequest logs;
    logs.set_name(job);
    logs.set_stage(request.Param("stage"));
    absl::StatusOr<int64_t> after = IntParam(request, "after_line", 0);
    if (!after.ok()) return FromStatus(after.status());
    absl::StatusOr<int64_t> page_size = IntParam(request, "page_size", 1000);
    if (!page_size.ok()) return FromStatus(page_size.status());
    logs.set_after_line(*after);
    logs.set_page_size(static_cast<int>(std::min<int64_t>(*page_size, 5000)));
    absl::StatusOr<mpt::v1::GetStageLogsResponse> page = core_->GetStageLogs(logs);
    if (!page.ok()) return FromStatus(page.status());
    return JsonResponse(*page);
  }

  // Every worker with what it runs: the stages of unfinished jobs that list
  // it, and its rank there.
  HttpResponse Workers() const {
    struct Running {
      std::string job, stage;
      int rank = 0, world_size = 1;
    };
    std::map<std::string, std::vector<Running>> running;
    mpt::v1::ListJobsRequest list;
    list.set_page_size(1000);
    list.add_states(mpt::v1::RUNNING);
    list.add_states(mpt::v1::CANCELLING);
    absl::StatusOr<mpt::v1::ListJobsResponse> jobs = core_->ListJobs(list);
    if (!jobs.ok()) return FromStatus(jobs.status());
    for (const mpt::v1::Job& stored : jobs->jobs()) {
      // The committed copy is newer than the store's row for a running job.
      absl::StatusOr<mpt::v1::Job> job = core_->GetJob(stored.name());
      const mpt::v1::Job& j = job.ok() ? *job : stored;
      for (const mpt::v1::Stage& s : j.stages()) {
        for (int r = 0; r < s.workers_size(); ++r) {
          running[s.workers(r)].push_back(Running{j.name(), s.id(), r, s.workers_size()});
        }
      }
    }
    const mpt::v1::ListWorkersResponse workers = core_->ListWorkers();
    std::string body = "{\"workers\":[";
    for (int i = 0; i < workers.workers_size(); ++i) {
      absl::StatusOr<std::string> json = ToJson(workers.workers(i));
      if (!json.ok()) return FromStatus(json.status());
      // Append "running" to the worker's object.
      std::string runs = "\"running\":[";
      const auto it = running.find(workers.workers(i).name());
      if (it != running.end()) {
        for (size_t k = 0; k < it->second.size(); ++k) {
          const Running& r = it->second[k];
          absl::StrAppend(&runs, k > 0 ? "," : "", "{\"job\":", JsonStringLiteral(r.job),
                          ",\"stage\":", JsonStringLiteral(r.stage), ",\"rank\":", r.rank,
                          ",\"worldSize\":", r.world_size, "}");
        }
      }
      runs += "]";
      json->pop_back();  // the closing brace
      absl::StrAppend(&body, i > 0 ? "," : "", *json, json->size() > 1 ? "," : "", runs, "}");
    }
    body += "]}\n";
    return JsonResponse(std::move(body));
  }

  const std::string token_;
  Coordinator* const core_;
};

}  // namespace

std::vector<std::pair<std::string, HttpHandler>> CoordinatorHttpRoutes(
    const CoordinatorHttpOptions& options, Coordinator* coordinator, MetricsRegistry* registry) {
  auto routes = std::make_shared<Routes>(options, coordinator);
  std::vector<std::pair<std::string, HttpHandler>> out;
  out.emplace_back("/metrics",
                   [registry](const HttpRequest&) { return MetricsResponse(registry); });
  out.emplace_back("/", [routes](const HttpRequest& r) {
    if (r.path == "/" || r.path == "/index.html") return routes->Page(r);
    return NotFound(r.path);
  });
  out.emplace_back("/static/", [](const HttpRequest& r) {
    const absl::string_view file = absl::string_view(r.path).substr(8);
    // The page itself needs the token (Page()); its scripts and styles hold
    // no data.
    if (file == "index.html") return HttpResponse::Text(404, "not found\n");
    return Routes::Static(file);
  });
  out.emplace_back("/api/", [routes](const HttpRequest& r) { return routes->Api(r); });
  out.emplace_back("/download/", [routes](const HttpRequest& r) { return routes->Download(r); });
  // No response is to be sniffed into another type than it says (a text
  // page that echoes a path must stay text).
  for (auto& [path, handler] : out) {
    handler = [inner = std::move(handler)](const HttpRequest& r) {
      HttpResponse response = inner(r);
      bool has = false;
      for (const auto& [name, value] : response.headers) {
        has = has || absl::EqualsIgnoreCase(name, "X-Content-Type-Options");
      }
      if (!has) response.headers.push_back({"X-Content-Type-Options", "nosniff"});
      return response;
    };
  }
  return out;
}

absl::StatusOr<std::unique_ptr<HttpServer>> StartCoordinatorHttp(
    const CoordinatorHttpOptions& options, Coordinator* coordinator, MetricsRegistry* registry) {
  HttpServerOptions server;
  server.listen = options.listen;
  server.threads = options.threads;
  server.max_connections_per_client = options.max_connections_per_client;
  server.request_head_timeout = options.request_head_timeout;
  server.idle_timeout = options.idle_timeout;
  server.json_error_prefixes = {"/api/"};
  return HttpServer::Start(server, CoordinatorHttpRoutes(options, coordinator, registry));
}

}  // namespace mpt
