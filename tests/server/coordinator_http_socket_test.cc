// The coordinator's HTTP listener over real sockets on loopback: slow or
// idle clients are closed at the request-head deadline and cannot block
// the others (four clients trickling a byte at a time used to take every
// thread), one client address gets a bounded share of the threads, a client
// that half-closes after its request still gets the response, the bearer
// scheme is case-insensitive, 404 pages escape the path and say nosniff,
// other methods than GET get 405 in the JSON API's format under /api/, and
// a page of job events is bounded in bytes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/coordinator_http.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

constexpr char kToken[] = "s3cret";

// A TCP connection to 127.0.0.1:port.
class Connection {
 public:
  explicit Connection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }

  bool Send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  void HalfClose() { ::shutdown(fd_, SHUT_WR); }

  // Everything received until the peer closes or `timeout` passes.
  // Appends what arrives before `end` to `out`: kData when something came,
  // kClosed when the peer closed (or the socket failed), kTimeout.
  enum class Recv { kData, kClosed, kTimeout };
  Recv RecvSome(absl::Time end, std::string* out) {
    while (true) {
      const int64_t left = absl::ToInt64Milliseconds(end - absl::Now());
      if (left <= 0) return Recv::kTimeout;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buffer[65536];
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return Recv::kClosed;
      out->append(buffer, static_cast<size_t>(n));
      return Recv::kData;
    }
  }

  std::string ReadAll(absl::Duration timeout, bool* closed = nullptr) {
    std::string out;
    const absl::Time end = absl::Now() + timeout;
    Recv r;
    while ((r = RecvSome(end, &out)) == Recv::kData) {
    }
    if (closed != nullptr) *closed = r == Recv::kClosed;
    return out;
  }

  // One response to a request already sent: its head and body (by
  // Content-Length), waiting at most `timeout`.
  std::string ReadResponse(absl::Duration timeout) {
    std::string out;
    const absl::Time end = absl::Now() + timeout;
    while (true) {
      const size_t head = out.find("\r\n\r\n");
      if (head != std::string::npos) {
        size_t length = 0;
        const size_t at = out.find("Content-Length: ");
        if (at != std::string::npos && at < head) length = std::stoul(out.substr(at + 16));
        if (out.size() >= head + 4 + length) return out;
      }
      if (RecvSome(end, &out) != Recv::kData) return out;
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string Request(const std::string& path, const std::string& auth = "") {
  return absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: test\r\n",
                      auth.empty() ? "" : absl::StrCat("Authorization: ", auth, "\r\n"),
                      "Connection: close\r\n\r\n");
}

// Clients that trickle the head of a request one byte at a time, as slowly
// as `every`, until stopped or their connection is closed.
class Tricklers {
 public:
  Tricklers(int port, int n, absl::Duration every) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this, port, every] {
        Connection c(port);
        const std::string head = "GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Padding: ";
        for (size_t k = 0; !stop_.load(); ++k) {
          if (!c.Send(std::string(1, k < head.size() ? head[k] : 'a'))) break;
          absl::SleepFor(every);
        }
      });
    }
    absl::SleepFor(absl::Milliseconds(300));  // every one has taken a thread
  }
  ~Tricklers() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

class HttpSocketTest : public ::testing::Test {
 protected:
  void Start(CoordinatorHttpOptions options = {}) {
    files_ = ::mpt::testing::FreshFiles("http_socket", /*on_disk=*/false);
    CoordinatorOptions core_options;
    core_options.progress_event_interval = absl::ZeroDuration();
    auto c = ::mpt::testing::OpenCoordinator(files_, clock_, core_options);
    ASSERT_TRUE(c.ok()) << c.status();
    core_ = *std::move(c);
    options.listen = "127.0.0.1:0";
    options.auth_token = kToken;
    auto server = StartCoordinatorHttp(options, core_.get(), &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    port_ = server_->port();
  }
  void TearDown() override {
    if (server_) server_->Stop();
  }

  // GET `path` on a new connection; the response, or "" after `timeout`.
  std::string Get(const std::string& path, const std::string& auth = "",
                  absl::Duration timeout = absl::Seconds(5)) {
    Connection c(port_);
    EXPECT_TRUE(c.connected());
    if (!c.Send(Request(path, auth))) return "";
    return c.ReadResponse(timeout);
  }

  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  ::mpt::testing::CoordinatorFiles files_;
  MetricsRegistry registry_;
  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpSocketTest, SlowClientsDoNotBlockTheOthers) {
  Start();
  Tricklers slow(port_, 4, absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  const std::string response = Get("/metrics", "", absl::Seconds(3));
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(HttpSocketTest, TricklingAndIdleClientsAreClosedAtTheHeadDeadline) {
  CoordinatorHttpOptions options;
  options.request_head_timeout = absl::Seconds(1);
  options.idle_timeout = absl::Milliseconds(500);
  Start(options);
  // One byte every 100 ms: every read makes progress, the head never ends.
  {
    Connection c(port_);
    ASSERT_TRUE(c.connected());
    const absl::Time start = absl::Now();
    bool sending = true;
    const std::string head = "GET /metrics HTTP/1.1\r\nX-Slow: ";
    for (size_t k = 0; sending && absl::Now() - start < absl::Seconds(5); ++k) {
      sending = c.Send(std::string(1, k < head.size() ? head[k] : 'a'));
      bool closed = false;
      c.ReadAll(absl::Milliseconds(100), &closed);
      if (closed) break;
    }
    const absl::Duration took = absl::Now() - start;
    EXPECT_GE(took, absl::Milliseconds(800));
    EXPECT_LT(took, absl::Seconds(3)) << "a trickling client kept its connection";
  }
  // A client that sends nothing.
  {
    Connection c(port_);
    const absl::Time start = absl::Now();
    bool closed = false;
    c.ReadAll(absl::Seconds(5), &closed);
    EXPECT_TRUE(closed);
    EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  }
  // A kept-alive connection that goes idle after a response.
  {
    Connection c(port_);
    ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"));
    EXPECT_TRUE(absl::StartsWith(c.ReadResponse(absl::Seconds(3)), "HTTP/1.1 200"));
    const absl::Time start = absl::Now();
    bool closed = false;
    c.ReadAll(absl::Seconds(5), &closed);
    EXPECT_TRUE(closed);
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  }
  // Meanwhile the server answers as usual.
  EXPECT_TRUE(absl::StartsWith(Get("/metrics"), "HTTP/1.1 200"));
}

TEST_F(HttpSocketTest, OneClientAddressGetsABoundedShareOfTheThreads) {
  CoordinatorHttpOptions options;
  options.threads = 4;
  options.max_connections_per_client = 2;
  Start(options);
  std::string refused;
  {
    Tricklers slow(port_, 2, absl::Milliseconds(200));
    refused = Get("/metrics", "", absl::Seconds(3));
  }
  EXPECT_TRUE(absl::StartsWith(refused, "HTTP/1.1 503")) << refused;
  // Once they are gone the client is served again.
  std::string served;
  for (int i = 0; i < 50 && !absl::StartsWith(served, "HTTP/1.1 200"); ++i) {
    served = Get("/metrics");
    if (!absl::StartsWith(served, "HTTP/1.1 200")) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(absl::StartsWith(served, "HTTP/1.1 200")) << served;
}

TEST_F(HttpSocketTest, AHalfClosedClientGetsItsResponse) {
  Start();
  Connection c(port_);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"));
  c.HalfClose();  // as `nc -N` does
  const std::string response = c.ReadAll(absl::Seconds(5));
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
}

TEST_F(HttpSocketTest, BearerSchemeIsCaseInsensitiveAnd404sAreEscaped) {
  Start();
  for (const std::string scheme : {"Bearer", "bearer", "BEARER"}) {
    const std::string response = Get("/api/jobs", scheme + " " + kToken);
    EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << scheme << ": " << response;
  }
  EXPECT_TRUE(absl::StartsWith(Get("/api/jobs", "Basic s3cret"), "HTTP/1.1 401"));
  EXPECT_TRUE(absl::StartsWith(Get("/api/jobs", "bearer wrong"), "HTTP/1.1 401"));

  const std::string response = Get("/no%00where%0aX-Injected:%20yes");
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 404")) << response;
  const size_t head = response.find("\r\n\r\n");
  ASSERT_NE(head, std::string::npos);
  const std::string body = response.substr(head + 4);
  EXPECT_EQ(body.find('\0'), std::string::npos) << "a raw NUL in the page";
  EXPECT_EQ(body.find("\nX-Injected"), std::string::npos) << body;
  EXPECT_NE(body.find("\\x00"), std::string::npos) << body;
  EXPECT_TRUE(absl::StrContains(response.substr(0, head), "X-Content-Type-Options: nosniff"))
      << response.substr(0, head);
}

// A method other than GET or HEAD is refused 405 in the format of the path
// it asked for: the JSON API's errors are JSON, the rest plain text.
TEST_F(HttpSocketTest, OtherMethodsAreRefusedInTheFormatOfThePath) {
  Start();
  auto send = [this](const std::string& method, const std::string& path) {
    Connection c(port_);
    EXPECT_TRUE(c.connected());
    const std::string body = "{}";
    if (!c.Send(absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ",
                             kToken, "\r\nContent-Type: application/json\r\nContent-Length: ",
                             body.size(), "\r\nConnection: close\r\n\r\n", body))) {
      return std::string();
    }
    return c.ReadResponse(absl::Seconds(5));
  };
  for (const std::string method : {"POST", "PUT", "DELETE", "PATCH"}) {
    const std::string response = send(method, "/api/jobs");
    const size_t head = response.find("\r\n\r\n");
    ASSERT_NE(head, std::string::npos) << method << ": " << response;
    EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 405")) << method << ": " << response;
    EXPECT_TRUE(absl::StrContains(response.substr(0, head), "Content-Type: application/json"))
        << method << ": " << response;
    EXPECT_TRUE(absl::StrContains(response.substr(0, head), "Allow: GET, HEAD")) << response;
    EXPECT_EQ(response.substr(head + 4),
              "{\"error\":\"method not allowed: this server is read-only\"}\n")
        << method;
  }
  const std::string page = send("POST", "/metrics");
  EXPECT_TRUE(absl::StartsWith(page, "HTTP/1.1 405")) << page;
  EXPECT_TRUE(absl::StrContains(page, "Content-Type: text/plain")) << page;
  EXPECT_TRUE(absl::EndsWith(page, "\r\n\r\nmethod not allowed: this server is read-only\n"))
      << page;
}

TEST_F(HttpSocketTest, APageOfEventsIsBoundedInBytes) {
  Start();
  const std::string worker = ::mpt::testing::Register(core_.get());
  auto job = core_->SubmitJob(::mpt::testing::SourceRequest("a"));
  ASSERT_TRUE(job.ok());
  auto a = ::mpt::testing::Poll(core_.get(), worker);
  ASSERT_TRUE(a.has_value());
  // 24 events of about 400 KB each (within the bounds of a report).
  for (int i = 1; i <= 24; ++i) {
    mpt::v1::ReportProgressRequest r;
    r.set_assignment(a->id());
    r.set_worker(worker);
    r.mutable_progress()->set_step(i);
    r.mutable_progress()->set_total_steps(100);
    for (int m = 0; m < 2000; ++m) {
      (*r.mutable_progress()->mutable_metrics())[absl::StrCat(std::string(180, 'm'), m)] = m;
    }
    r.set_message(absl::StrCat("report ", i));
    clock_->Advance(absl::Seconds(2));
    ASSERT_TRUE(core_->ReportProgress(r).ok());
  }
  int64_t after = 0;
  int pages = 0;
  int events = 0;
  bool more = true;
  while (more && pages < 20) {
    const std::string response =
        Get(absl::StrCat("/api/", job->name(), "/events?after=", after), absl::StrCat("Bearer ", kToken),
            absl::Seconds(10));
    ASSERT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response.substr(0, 200);
    const std::string body = response.substr(response.find("\r\n\r\n") + 4);
    EXPECT_LT(body.size(), size_t{6} << 20) << "page " << pages;
    more = absl::StrContains(body, "\"more\":true");
    // The sequences of the page: after the last, read on.
    for (size_t at = body.find("\"sequence\":\""); at != std::string::npos;
         at = body.find("\"sequence\":\"", at + 1)) {
      after = std::stoll(body.substr(at + 12));
      ++events;
    }
    ++pages;
  }
  EXPECT_GT(pages, 1) << "the events did not come in pages";
  EXPECT_FALSE(more);
  EXPECT_GE(events, 25);  // submitted, started, 24 reports
}

}  // namespace
}  // namespace mpt
