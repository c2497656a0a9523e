#include "common/http_server.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

// The most bytes a streamed body supplies at once.
constexpr size_t kStreamPieceBytes = 256 << 10;

// A Range header applies to a 200 only (RFC 9110 14.2: a server ignores
// it otherwise); cpp-httplib 0.11 would cut any response to the ranges,
// errors included (a 404 sent as multipart/byteranges), so they are
// dropped from the request before an answer that is not a 200. The
// request is cpp-httplib's own non-const object, handed to handlers as
// const.
void IgnoreRanges(const httplib::Request& req) {
  const_cast<httplib::Request&>(req).ranges.clear();
}

// Whether every range of a Range header (cpp-httplib's parse: -1 for an
// open end; a first of -1 is a suffix of `last` bytes) lies in a body of
// `length` bytes.
bool RangesFit(const httplib::Ranges& ranges, int64_t length) {
  for (const auto& [first, last] : ranges) {
    if (first < 0) {
      if (last <= 0 || length == 0) return false;  // an empty suffix
    } else if (first >= length || (last >= 0 && last < first)) {
      return false;
    }
  }
  return true;
}

// A socket as cpp-httplib's Stream, with deadlines: reads end at the
// deadline set for the request being read (however the bytes trickle in),
// writes when one makes no progress for the write timeout. Unlike
// cpp-httplib's own stream it writes to a socket whose peer half-closed
// (shut down its sending side after the request), so such a client gets
// its response. Every wait is cut into slices that check `stopping`.
class DeadlineStream final : public httplib::Stream {
 public:
  DeadlineStream(int sock, absl::Duration write_timeout, std::function<bool()> stopping)
      : sock_(sock), write_timeout_(write_timeout), stopping_(std::move(stopping)) {}

  void set_read_deadline(absl::Time deadline) { read_deadline_ = deadline; }

  // Waits until the socket is readable (data, end of stream or an error)
  // or `deadline` passes or the server stops; true when readable.
  bool WaitReadable(absl::Time deadline) const {
    return begin_ < end_ || Wait(POLLIN, deadline);
  }

  bool is_readable() const override { return WaitReadable(read_deadline_); }
  bool is_writable() const override { return Wait(POLLOUT, absl::Now() + write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (begin_ < end_) {
      const size_t n = std::min(size, end_ - begin_);
      std::memcpy(ptr, buffer_ + begin_, n);
      begin_ += n;
      return static_cast<ssize_t>(n);
    }
    if (!Wait(POLLIN, read_deadline_)) return -1;
    // cpp-httplib reads the head a byte at a time: buffer what is there.
    const bool direct = size >= sizeof(buffer_);
    ssize_t n;
    do {
      n = ::recv(sock_, direct ? ptr : buffer_, direct ? size : sizeof(buffer_), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0 || direct) return n;
    begin_ = 0;
    end_ = static_cast<size_t>(n);
    return read(ptr, size);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!Wait(POLLOUT, absl::Now() + write_timeout_)) return -1;
    ssize_t n;
    do {
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(::getsockname, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  bool Wait(short events, absl::Time deadline) const {
    while (true) {
      if (stopping_()) return false;
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd p{sock_, events, 0};
      const int ms = static_cast<int>(
          std::clamp<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1, 100));
      const int rc = ::poll(&p, 1, ms);
      if (rc > 0) return true;  // ready, or an error the next call reports
      if (rc < 0 && errno != EINTR) return false;
    }
  }

  template <class Get>
  void Address(Get get, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    ip.clear();
    port = 0;
    if (get(sock_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
    char host[NI_MAXHOST];
    char service[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), service,
                      sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
      return;
    }
    ip = host;
    absl::SimpleAtoi(service, &port);
  }

  const int sock_;
  const absl::Duration write_timeout_;
  const std::function<bool()> stopping_;
  absl::Time read_deadline_ = absl::InfinitePast();
  char buffer_[4096];
  size_t begin_ = 0;
  size_t end_ = 0;
};

// cpp-httplib's server with its connection loop replaced by one with
// deadlines (DeadlineStream) and a limit of connections per client.
class DeadlineServer final : public httplib::Server {
 public:
  explicit DeadlineServer(const HttpServerOptions& options) : options_(options) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ret = false;
    std::string client;
    int port = 0;
    auto stopping = [this] { return svr_sock_ == INVALID_SOCKET; };
    DeadlineStream stream(sock, options_.write_timeout, stopping);
    stream.get_remote_ip_and_port(client, port);
    if (Admit(client)) {
      const absl::Time start = absl::Now();
      for (size_t count = keep_alive_max_count_; count > 0 && !stopping(); --count) {
        const bool first = count == keep_alive_max_count_;
        // The first request's head is due from the start; a later one may
        // wait for the idle timeout, then has the head timeout from its
        // first byte.
        const absl::Time wait_end = first ? start + options_.request_head_timeout
                                          : absl::Now() + options_.idle_timeout;
        if (!stream.WaitReadable(wait_end)) break;
        stream.set_read_deadline(first ? wait_end
                                       : absl::Now() + options_.request_head_timeout);
        bool connection_closed = false;
        ret = process_request(stream, /*close_connection=*/count == 1, connection_closed,
                              nullptr);
        if (!ret || connection_closed) break;
      }
      Leave(client);
    } else {
      const std::string body = "too many connections from this client at once\n";
      const std::string busy = absl::StrCat(
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
          "X-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: ",
          body.size(), "\r\n\r\n", body);
      stream.write(busy.data(), busy.size());
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }

  // Counts a connection of `client`; false when it has the most allowed.
  bool Admit(const std::string& client) {
    std::lock_guard<std::mutex> lock(mu_);
    int& n = connections_[client];
    if (options_.max_connections_per_client > 0 && n >= options_.max_connections_per_client) {
      if (n == 0) connections_.erase(client);
      return false;
    }
    ++n;
    return true;
  }
  void Leave(const std::string& client) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = connections_.find(client);
    if (it != connections_.end() && --it->second <= 0) connections_.erase(it);
  }

  const HttpServerOptions options_;
  std::mutex mu_;
  std::map<std::string, int> connections_;
};

// `path` for a 404 page: escaped (no control character or byte above
// ASCII reaches the page) and cut.
std::string PathForPage(absl::string_view path) {
  constexpr size_t kShown = 256;
  if (path.size() <= kShown) return absl::CHexEscape(path);
  return absl::StrCat(absl::CHexEscape(path.substr(0, kShown)), "... (", path.size(), " bytes)");
}

}  // namespace

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

HttpResponse HttpResponse::JsonError(int status, absl::string_view message) {
  HttpResponse r;
  r.status = status;
  r.content_type = kJsonContentType;
  r.body = absl::StrCat("{\"error\":", JsonStringLiteral(message), "}\n");
  return r;
}

std::string JsonStringLiteral(absl::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
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
  Impl(const HttpServerOptions& options, std::vector<std::pair<std::string, HttpHandler>> routes)
      : routes_(std::move(routes)),
        json_error_prefixes_(options.json_error_prefixes),
        server_(options) {}

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
    // The server is read-only: requests carry no body worth reading.
    server_.set_payload_max_length(64 << 10);
    server_.set_exception_handler(
        [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
          Refuse(req, res, 500, "internal error");
        });
    auto serve = [this](const httplib::Request& req, httplib::Response& res) {
      Serve(req, res);
    };
    // Every response, cpp-httplib's own errors included.
    server_.set_default_headers({{"X-Content-Type-Options", "nosniff"}});
    // [\s\S]: a decoded path may hold a newline, which '.' does not match.
    server_.Get("[\\s\\S]*", serve);
    auto refuse = [this](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", "GET, HEAD");
      Refuse(req, res, 405, "method not allowed: this server is read-only");
    };
    server_.Post("[\\s\\S]*", refuse);
    server_.Put("[\\s\\S]*", refuse);
    server_.Delete("[\\s\\S]*", refuse);
    server_.Patch("[\\s\\S]*", refuse);
    server_.Options("[\\s\\S]*", refuse);
    auto [host, port] = *address;
    if (absl::EqualsIgnoreCase(host, "localhost")) host = "127.0.0.1";  // see listen's comment
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
      Refuse(req, res, 404, absl::StrCat("not found: ", PathForPage(req.path)));
      return;
    }
    HttpRequest request;
    request.method = req.method;
    request.path = req.path;
    for (const auto& [k, v] : req.params) request.params.emplace(k, v);
    for (const auto& [k, v] : req.headers) request.headers.emplace(absl::AsciiStrToLower(k), v);
    HttpResponse response = (*handler)(request);
    // A 200 is left to cpp-httplib, which answers a Range request 206 with
    // the part asked for, once every range is known to lie in the body
    // (cpp-httplib 0.11 does not check; RFC 9110's 416 otherwise).
    const int64_t length = response.stream ? response.stream_length
                                           : static_cast<int64_t>(response.body.size());
    if (response.status == 200 && !RangesFit(req.ranges, length)) {
      res.status = 416;
      res.set_header("Content-Range", absl::StrCat("bytes */", length));
      return;
    }
    if (response.status != 200) IgnoreRanges(req);
    res.status = response.status == 200 ? -1 : response.status;
    for (const auto& [k, v] : response.headers) {
      if (absl::EqualsIgnoreCase(k, "X-Content-Type-Options")) res.headers.erase(k);
      res.set_header(k, v);
    }
    if (!response.stream) {
      res.set_content(response.body, response.content_type);
      return;
    }
    res.set_content_provider(
        static_cast<size_t>(response.stream_length), response.content_type,
        [stream = std::move(response.stream)](size_t offset, size_t length,
                                              httplib::DataSink& sink) {
          std::string piece;
          if (!stream(static_cast<int64_t>(offset), std::min(length, kStreamPieceBytes), &piece) ||
              piece.empty()) {
            return false;
          }
          return sink.write(piece.data(), piece.size());
        });
  }

  // The server's own error answer: `message` as plain text, or as JSON
  // under one of json_error_prefixes_.
  void Refuse(const httplib::Request& req, httplib::Response& res, int status,
              absl::string_view message) const {
    IgnoreRanges(req);
    res.status = status;
    for (const std::string& prefix : json_error_prefixes_) {
      if (absl::StartsWith(req.path, prefix)) {
        HttpResponse json = HttpResponse::JsonError(status, message);
        res.set_content(json.body, json.content_type);
        return;
      }
    }
    res.set_content(absl::StrCat(message, "\n"), "text/plain; charset=utf-8");
  }

  const std::vector<std::pair<std::string, HttpHandler>> routes_;
  const std::vector<std::string> json_error_prefixes_;
  DeadlineServer server_;
  std::thread thread_;
  int port_ = -1;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> listen_returned_{false};
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, std::vector<std::pair<std::string, HttpHandler>> routes) {
  if (options.threads < 1) return absl::InvalidArgumentError("HTTP server: threads must be >= 1");
  if (options.request_head_timeout <= absl::ZeroDuration() ||
      options.idle_timeout <= absl::ZeroDuration() ||
      options.write_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("HTTP server: timeouts must be > 0");
  }
  if (options.max_connections_per_client < 0) {
    return absl::InvalidArgumentError("HTTP server: max_connections_per_client must be >= 0");
  }
  for (const auto& [route, handler] : routes) {
    if (route.empty() || route.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP server: route \"", route, "\" must start with '/'"));
    }
  }
  auto impl = std::make_unique<Impl>(options, std::move(routes));
  absl::Status started = impl->Start(options);
  if (!started.ok()) return started;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }
int HttpServer::port() const { return impl_->port(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace mpt
