// A small HTTP/1.1 server for read-only endpoints (/metrics, the dashboard
// and its JSON), over Debian's cpp-httplib, whose header stays out of the
// code that uses this one.
//
//   HttpServerOptions options;
//   options.listen = "localhost:9090";
//   ASSIGN_OR_RETURN(auto server, HttpServer::Start(options, {
//       {"/metrics", [&](const HttpRequest&) { return MetricsResponse(registry); }}}));
//   MPT_LOG(INFO) << "metrics on port " << server->port();
//
// Routing: a route whose path ends in '/' serves every path under it (the
// longest such prefix wins); any other route serves its exact path. GET and
// HEAD reach the handlers; other methods get 405. Unknown paths get 404
// (the path shown escaped). These answers, and the 500 that replaces a
// handler's exception, are plain text, or JSON under the prefixes listed in
// HttpServerOptions::json_error_prefixes. Every response carries
// "X-Content-Type-Options: nosniff".
//
// Connections: each is served by one thread; its request heads have a
// deadline and an idle connection is closed (see HttpServerOptions), so
// slow or idle clients hold a thread for a bounded time. A client that
// half-closes its side after its request still gets the response.
//
// Thread-safety: handlers run on the server's worker threads, several at
// once; they must be thread-safe and must not throw (an exception becomes a
// 500 response).
#ifndef MPT_COMMON_HTTP_SERVER_H_
#define MPT_COMMON_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace mpt {

struct HttpRequest {
  std::string method;  // "GET" or "HEAD"
  std::string path;    // decoded, without the query
  // Decoded query parameters (a name may repeat).
  std::multimap<std::string, std::string> params;
  // Header names in lower case.
  std::multimap<std::string, std::string> headers;

  // The first value of query parameter or header `name`, "" when absent.
  std::string Param(const std::string& name) const;
  std::string Header(const std::string& lower_case_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Instead of `body` when set: a body of `stream_length` bytes supplied
  // piece by piece as the client reads it (Range requests included), so
  // that a large body is never held whole. Called with an offset and the
  // most bytes wanted, it puts at least one byte in `out`, or returns false
  // to end the response there: the connection closes and the client sees a
  // body shorter than its Content-Length.
  int64_t stream_length = 0;
  std::function<bool(int64_t offset, size_t max, std::string* out)> stream;

  static HttpResponse Text(int status, std::string body);
  // `{"error":"<message>"}` as application/json (JsonStringLiteral).
  static HttpResponse JsonError(int status, absl::string_view message);
};

// JSON's Content-Type, as JSON answers carry it.
inline constexpr char kJsonContentType[] = "application/json; charset=utf-8";

// `text` as a JSON string literal, quotes included: '"', '\\' and control
// characters escaped, every other byte as it is.
std::string JsonStringLiteral(absl::string_view text);

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  // host:port to listen on ("[::1]:8080" for IPv6); port 0 picks a free
  // one (see HttpServer::port()). Default "localhost:0". "localhost" is
  // the IPv4 loopback, 127.0.0.1, whatever /etc/hosts lists first for it
  // (Debian lists ::1 too): clients given "localhost" try both, clients
  // given 127.0.0.1 only that.
  std::string listen = "localhost:0";
  // Worker threads serving requests; each serves one connection at a time.
  // Default 4.
  int threads = 4;
  // A request's line and headers must have arrived this long after the
  // connection was taken up (for a kept-alive connection's later requests:
  // after their first byte). It bounds the whole head, not each read, so a
  // client that trickles bytes cannot hold a thread for longer; such a
  // connection is closed. Default 10 s.
  absl::Duration request_head_timeout = absl::Seconds(10);
  // A kept-alive connection that sends nothing for this long after a
  // response is closed. Default 5 s.
  absl::Duration idle_timeout = absl::Seconds(5);
  // A response write that makes no progress for this long closes the
  // connection. Default 10 s.
  absl::Duration write_timeout = absl::Seconds(10);
  // Connections from one client address served at once; a further one is
  // answered 503 at once and closed, so that one client cannot occupy
  // every thread. 0 (default): no limit.
  int max_connections_per_client = 0;
  // Path prefixes (e.g. "/api/") under which the server's own error answers
  // (405 for a method other than GET and HEAD, 404 for a path no route
  // takes, 500 for a handler that threw) are JSON, `{"error": "..."}` with
  // Content-Type application/json, as a JSON API's own errors are; plain
  // text elsewhere. Default: none.
  std::vector<std::string> json_error_prefixes;
};

class HttpServer {
 public:
  // Binds and starts serving `routes` (path -> handler; see Routing above)
  // on a thread of its own. INVALID_ARGUMENT for a malformed listen
  // address, a route that does not start with '/', fewer than 1 thread, a
  // timeout that is not positive or a negative per-client limit;
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, std::vector<std::pair<std::string, HttpHandler>> routes);

  // Calls Stop().
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound.
  int port() const;
  // Stops listening and waits for the serving thread. Idempotent.
  void Stop();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" or "[v6]:port". INVALID_ARGUMENT naming `what` (the
// flag) when the port is missing or not in 0..65535.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& listen,
                                                          const std::string& what);

}  // namespace mpt

#endif  // MPT_COMMON_HTTP_SERVER_H_
