// The HTTP server on loopback, with cpp-httplib's client as the other end.
#include "common/http_server.h"

#include <httplib.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>

#include "gtest/gtest.h"

namespace mpt {
namespace {

HttpHandler Echo(const std::string& who) {
  return [who](const HttpRequest& r) {
    HttpResponse out = HttpResponse::Text(200, who + " " + r.path + " q=" + r.Param("q") +
                                                   " auth=" + r.Header("authorization"));
    out.headers.push_back({"X-Who", who});
    return out;
  };
}

TEST(HttpServerTest, RoutesExactPathsAndLongestPrefixes) {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(
      options, {{"/metrics", Echo("metrics")}, {"/api/", Echo("api")},
                {"/api/jobs/", Echo("jobs")}, {"/", Echo("root")}});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  httplib::Client client("127.0.0.1", (*server)->port());

  auto r = client.Get("/metrics?q=1", {{"Authorization", "Bearer x"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "metrics /metrics q=1 auth=Bearer x");
  EXPECT_EQ(r->get_header_value("X-Who"), "metrics");
  r = client.Get("/api/jobs/abc");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "jobs /api/jobs/abc q= auth=");
  r = client.Get("/api/workers");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "api /api/workers q= auth=");
  r = client.Get("/metrics/more");  // exact routes do not match below them
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "root /metrics/more q= auth=");
  r = client.Get("/a%20b?q=x%26y");  // decoded
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "root /a b q=x&y auth=");
  r = client.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  (*server)->Stop();
  (*server)->Stop();  // idempotent
}

// "localhost" listens on 127.0.0.1 also where /etc/hosts gives ::1 first
// (an installed Debian lists both).
TEST(HttpServerTest, UnknownPathsAre404) {
  HttpServerOptions options;
  options.listen = "localhost:0";
  auto server = HttpServer::Start(options, {{"/metrics", Echo("m")}});
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto r = client.Get("/other");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

// A streamed body: pieces supplied as the client reads, Range requests
// answered 206 with their part, and a source that gives up closes the
// connection short of Content-Length (the client sees an error).
TEST(HttpServerTest, StreamedBodiesAndRanges) {
  std::string data;
  for (int i = 0; i < 600000; ++i) data += static_cast<char>('a' + i % 23);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto stream = [&data, calls](int64_t offset, size_t max, std::string* out) {
    ++*calls;
    *out = data.substr(static_cast<size_t>(offset), max);
    return true;
  };
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(
      options, {{"/whole", [&](const HttpRequest&) {
                   HttpResponse r;
                   r.content_type = "application/octet-stream";
                   r.stream_length = static_cast<int64_t>(data.size());
                   r.stream = stream;
                   return r;
                 }},
                {"/broken", [&](const HttpRequest&) {
                   HttpResponse r;
                   r.stream_length = static_cast<int64_t>(data.size());
                   r.stream = [&data](int64_t offset, size_t max, std::string* out) {
                     if (offset >= 300000) return false;
                     *out = data.substr(static_cast<size_t>(offset), max);
                     return true;
                   };
                   return r;
                 }}});
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto r = client.Get("/whole");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, data);
  EXPECT_EQ(r->get_header_value("Content-Length"), std::to_string(data.size()));
  EXPECT_GE(calls->load(), 3);  // in pieces of at most 256 KiB
  r = client.Get("/whole", {{"Range", "bytes=100-299"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, data.substr(100, 200));
  r = client.Get("/whole", {{"Range", "bytes=599990-"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, data.substr(599990));
  r = client.Get("/whole", {{"Range", "bytes=700000-800000"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 416);
  r = client.Get("/broken");
  EXPECT_FALSE(r && r->status == 200 && r->body.size() == data.size());
}

// A Range header applies to a 200 only: errors (the handler's, a path
// without a route, a refused method) come whole with their own status.
TEST(HttpServerTest, ErrorsIgnoreRanges) {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(
      options, {{"/api/", [](const HttpRequest&) {
                   return HttpResponse::Text(404, "{\"error\":\"no such job\"}\n");
                 }}});
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  for (const char* range : {"bytes=0-1,4-5", "bytes=2-3", "bytes=999999-"}) {
    auto r = client.Get("/api/x", {{"Range", range}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << range;
    EXPECT_EQ(r->body, "{\"error\":\"no such job\"}\n") << range;
    r = client.Get("/elsewhere", {{"Range", range}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << range;
    EXPECT_EQ(r->body.rfind("not found: ", 0), 0u) << range << ": " << r->body;
    r = client.Delete("/api/x", httplib::Headers{{"Range", range}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405) << range;
    EXPECT_EQ(r->body, "method not allowed: this server is read-only\n") << range;
  }
  auto r = client.Options("/api/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
}

// Under a JSON prefix the server's own errors (405, 404, the 500 of a
// handler that threw) are {"error": ...} with the message escaped for JSON;
// elsewhere they stay plain text.
TEST(HttpServerTest, OwnErrorsAreJsonUnderTheJsonPrefixes) {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.json_error_prefixes = {"/api/"};
  HttpHandler throws = [](const HttpRequest&) -> HttpResponse {
    throw std::runtime_error("handler failed");
  };
  auto server = HttpServer::Start(
      options, {{"/api/jobs", Echo("jobs")}, {"/api/boom", throws}, {"/boom", throws}});
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());

  auto r = client.Post("/api/jobs", "{}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Content-Type"), kJsonContentType);
  EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
  EXPECT_EQ(r->body, "{\"error\":\"method not allowed: this server is read-only\"}\n");

  r = client.Get("/api/no%22such%5Cjob");  // a quote and a backslash in the path
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->get_header_value("Content-Type"), kJsonContentType);
  // CHexEscape for the page, then JSON: /api/no\"such\\job as a JSON string.
  EXPECT_EQ(r->body, "{\"error\":\"not found: /api/no\\\\\\\"such\\\\\\\\job\"}\n");

  r = client.Get("/api/boom");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body, "{\"error\":\"internal error\"}\n");

  r = client.Get("/boom");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body, "internal error\n");
  r = client.Post("/jobs", "{}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->body, "method not allowed: this server is read-only\n");
  r = client.Get("/apix");  // a prefix is matched as given, not as a word
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, "not found: /apix\n");
}

TEST(HttpServerTest, JsonStringLiteralEscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonStringLiteral(""), "\"\"");
  EXPECT_EQ(JsonStringLiteral("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(JsonStringLiteral(std::string("\n\r\t\x01\x1f", 5)), "\"\\n\\r\\t\\u0001\\u001f\"");
  EXPECT_EQ(JsonStringLiteral("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 as it is
}

TEST(HttpServerTest, RefusesBadOptionsAndBusyPorts) {
  HttpServerOptions options;
  options.listen = "127.0.0.1";
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options.listen = "127.0.0.1:99999";
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options.listen = ":8080";
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options.listen = "127.0.0.1:0";
  EXPECT_EQ(HttpServer::Start(options, {{"metrics", Echo("m")}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = HttpServer::Start(options, {});
  ASSERT_TRUE(first.ok());
  options.listen = "127.0.0.1:" + std::to_string((*first)->port());
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kUnavailable);
}

TEST(HttpServerTest, ParsesHostPort) {
  auto v6 = ParseHostPort("[::1]:9100", "--x");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 9100);
  auto bad = ParseHostPort("host:port", "--metrics_listen");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--metrics_listen"), absl::string_view::npos);
}

}  // namespace
}  // namespace mpt
