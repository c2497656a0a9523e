#include "common/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <exception>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace mpt {

std::string HttpRequest::Param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? "" : it->second;
}

std::string HttpRequest::Header(const std::string& lower_case_name) const {
  auto it = headers.find(lower_case_name);
  return it == headers.end() ? "" : it->second;
}

HttpResponse HttpResponse::Text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& listen,
                                                          const std::string& what) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", listen, "\" is not host:port (e.g. localhost:9090)"));
  }
  std::string host = listen.substr(0, colon);
  int port = -1;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", listen, "\" has no port in 0..65535"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", listen, "\" has no host (0.0.0.0 for every interface)"));
  }
  return std::make_pair(host, port);
}

class HttpServer::Impl {
 public:
  explicit Impl(std::vector<std::pair<std::string, HttpHandler>> routes)
      : routes_(std::move(routes)) {}

  ~Impl() { Stop(); }

  absl::Status Start(const HttpServerOptions& options) {
    absl::StatusOr<std::pair<std::string, int>> address = ParseHostPort(options.listen, "listen");
    if (!address.ok()) return address.status();
    const int threads = options.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which
    // would let a second server bind a port that is in use and share its
    // traffic instead of failing.
    server_.set_socket_options([](int sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          res.status = 500;
          res.set_content("internal error\n", "text/plain; charset=utf-8");
        });
    auto serve = [this](const httplib::Request& req, httplib::Response& res) {
      Serve(req, res);
    };
    server_.Get(".*", serve);
    auto refuse = [](const httplib::Request&, httplib::Response& res) {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("method not allowed: this server is read-only\n",
                      "text/plain; charset=utf-8");
    };
    server_.Post(".*", refuse);
    server_.Put(".*", refuse);
    server_.Delete(".*", refuse);
    server_.Patch(".*", refuse);
    const auto& [host, port] = *address;
    if (port == 0) {
      port_ = server_.bind_to_any_port(host);
    } else {
      port_ = server_.bind_to_port(host, port) ? port : -1;
    }
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                                 " (address in use or not resolvable?)"));
    }
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      listen_returned_ = true;
    });
    // Until the server runs, stop() would not reach it and Stop() would
    // wait for it forever.
    while (!server_.is_running() && !listen_returned_) absl::SleepFor(absl::Milliseconds(1));
    if (!server_.is_running()) {
      Stop();
      return absl::UnavailableError(absl::StrCat("cannot serve on ", options.listen));
    }
    return absl::OkStatus();
  }

  void Stop() {
    if (stopped_.exchange(true)) return;
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  int port() const { return port_; }

 private:
  void Serve(const httplib::Request& req, httplib::Response& res) const {
    const HttpHandler* handler = nullptr;
    size_t best = 0;
    for (const auto& [route, h] : routes_) {
      const bool prefix = !route.empty() && route.back() == '/';
      if (prefix ? (absl::StartsWith(req.path, route) && route.size() >= best)
                 : req.path == route) {
        handler = &h;
        if (!prefix) break;
        best = route.size();
      }
    }
    if (handler == nullptr) {
      res.status = 404;
      res.set_content(absl::StrCat("not found: ", req.path, "\n"), "text/plain; charset=utf-8");
      return;
    }
    HttpRequest request;
    request.method = req.method;
    request.path = req.path;
    for (const auto& [k, v] : req.params) request.params.emplace(k, v);
    for (const auto& [k, v] : req.headers) request.headers.emplace(absl::AsciiStrToLower(k), v);
    HttpResponse response = (*handler)(request);
    res.status = response.status;
    for (const auto& [k, v] : response.headers) res.set_header(k, v);
    res.set_content(response.body, response.content_type);
  }

  const std::vector<std::pair<std::string, HttpHandler>> routes_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> listen_returned_{false};
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, std::vector<std::pair<std::string, HttpHandler>> routes) {
  if (options.threads < 1) return absl::InvalidArgumentError("HTTP server: threads must be >= 1");
  for (const auto& [route, handler] : routes) {
    if (route.empty() || route.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP server: route \"", route, "\" must start with '/'"));
    }
  }
  auto impl = std::make_unique<Impl>(std::move(routes));
  absl::Status started = impl->Start(options);
  if (!started.ok()) return started;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }
int HttpServer::port() const { return impl_->port(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace mpt
