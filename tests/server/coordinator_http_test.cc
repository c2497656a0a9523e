// The coordinator's HTTP routes (/metrics, the dashboard's JSON and page,
// downloads) called directly, over a real coordinator on a SQLite file and
// a FakeClock: no sockets.
#include "server/coordinator_http.h"

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "server/coordinator_metrics.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::Finish;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;

class CoordinatorHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    clock_ = std::make_shared<FakeClock>();
    files_ = ::mpt::testing::FreshFiles("coordinator_http", /*on_disk=*/true);
    auto histograms = AddCoordinatorHistograms(&registry_);
    ASSERT_TRUE(histograms.ok()) << histograms.status();
    CoordinatorOptions options;
    options.stage_duration = histograms->stage_duration;
    auto c = ::mpt::testing::OpenCoordinator(files_, clock_, options);
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = *std::move(c);
    ASSERT_TRUE(AddCoordinatorCollectors(&registry_, coordinator_.get(), files_.db).ok());
    CoordinatorHttpOptions http;
    http.auth_token = "s3cret";
    routes_ = CoordinatorHttpRoutes(http, coordinator_.get(), &registry_);
  }

  // Serves `path` (with `query` params and an optional bearer token) as the
  // HTTP server would: the longest matching route.
  HttpResponse Get(const std::string& path, const std::string& token = "",
                   std::multimap<std::string, std::string> query = {}) {
    HttpRequest request;
    request.method = "GET";
    request.path = path;
    request.params = std::move(query);
    if (!token.empty()) request.headers.emplace("authorization", "Bearer " + token);
    const HttpHandler* best = nullptr;
    size_t best_len = 0;
    for (const auto& [route, handler] : routes_) {
      const bool prefix = route.back() == '/';
      if (prefix ? absl::StartsWith(path, route) && route.size() >= best_len : path == route) {
        best = &handler;
        if (!prefix) break;
        best_len = route.size();
      }
    }
    EXPECT_NE(best, nullptr) << path;
    if (best == nullptr) return HttpResponse::Text(404, "");
    HttpResponse response = (*best)(request);
    // A streamed body read in small pieces, in order, as a client would.
    while (response.stream && static_cast<int64_t>(response.body.size()) < response.stream_length) {
      std::string piece;
      if (!response.stream(static_cast<int64_t>(response.body.size()), 100, &piece)) break;
      EXPECT_FALSE(piece.empty());
      EXPECT_LE(piece.size(), 100u);
      response.body += piece;
    }
    return response;
  }

  // A source job run to SUCCEEDED in `seconds` of the fake clock; returns
  // its name.
  std::string RunSourceJob(absl::Duration seconds) {
    auto job = coordinator_->SubmitJob(SourceRequest("t1"));
    EXPECT_TRUE(job.ok()) << job.status();
    const std::string worker = Register(coordinator_.get());
    auto a = Poll(coordinator_.get(), worker);
    EXPECT_TRUE(a.has_value());
    clock_->Advance(seconds);
    Finish(coordinator_.get(), *a);
    return job->name();
  }

  std::shared_ptr<FakeClock> clock_;
  ::mpt::testing::CoordinatorFiles files_;
  MetricsRegistry registry_;
  std::unique_ptr<Coordinator> coordinator_;
  std::vector<std::pair<std::string, HttpHandler>> routes_;
};

TEST_F(CoordinatorHttpTest, MetricsCountJobsStagesWorkersAndTimeAttempts) {
  // Two queued jobs and no worker: two ready stages.
  ASSERT_TRUE(coordinator_->SubmitJob(SourceRequest("a")).ok());
  ASSERT_TRUE(coordinator_->SubmitJob(SourceRequest("b")).ok());
  std::string text = Get("/metrics").body;  // open without the token
  EXPECT_NE(text.find("mpt_jobs{state=\"QUEUED\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mpt_stages_ready 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mpt_store_jobs 2\n"), std::string::npos) << text;

  RunSourceJob(absl::Seconds(7));
  HttpResponse metrics = Get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, kPrometheusTextContentType);
  text = metrics.body;
  EXPECT_NE(text.find("mpt_jobs{state=\"SUCCEEDED\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mpt_stages{state=\"SUCCEEDED\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mpt_workers{state=\"busy\"} 1\n"), std::string::npos)
      << "the worker took the next queued job: " << text;
  EXPECT_NE(text.find("mpt_assignments_live 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mpt_stage_attempt_duration_seconds_count{stage_kind=\"source\","
                      "outcome=\"succeeded\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mpt_stage_attempt_duration_seconds_sum{stage_kind=\"source\","
                      "outcome=\"succeeded\"} 7\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mpt_stage_attempt_duration_seconds_bucket{stage_kind=\"source\","
                      "outcome=\"succeeded\",le=\"4\"} 0\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mpt_stage_attempt_duration_seconds_bucket{stage_kind=\"source\","
                      "outcome=\"succeeded\",le=\"8\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("mpt_store_file_bytes{file=\"database\"} 0\n"), std::string::npos) << text;
}

TEST_F(CoordinatorHttpTest, CancelledAttemptsAreTimedAsCancelled) {
  auto job = coordinator_->SubmitJob(SourceRequest("t1"));
  ASSERT_TRUE(job.ok());
  const std::string worker = Register(coordinator_.get());
  ASSERT_TRUE(Poll(coordinator_.get(), worker).has_value());
  clock_->Advance(absl::Seconds(3));
  ASSERT_TRUE(coordinator_->CancelJob(job->name()).ok());
  ASSERT_TRUE(Poll(coordinator_.get(), worker) == std::nullopt);  // releases it
  const std::string text = Get("/metrics").body;
  EXPECT_NE(text.find("mpt_stage_attempt_duration_seconds_count{stage_kind=\"source\","
                      "outcome=\"cancelled\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mpt_jobs{state=\"CANCELLED\"} 1\n"), std::string::npos) << text;
}

TEST_F(CoordinatorHttpTest, JsonNeedsTheToken) {
  const std::string job = RunSourceJob(absl::Seconds(2));
  EXPECT_EQ(Get("/api/jobs").status, 401);
  EXPECT_EQ(Get("/api/jobs", "wrong").status, 401);
  EXPECT_EQ(Get("/api/workers").status, 401);
  EXPECT_EQ(Get("/").status, 401);
  HttpResponse list = Get("/api/jobs", "s3cret");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_TRUE(absl::StartsWith(list.content_type, "application/json"));
  EXPECT_NE(list.body.find("\"name\":\"" + job + "\""), std::string::npos) << list.body;
  // The query form works too.
  EXPECT_EQ(Get("/api/jobs", "", {{"token", "s3cret"}}).status, 200);
  EXPECT_EQ(Get("/api/jobs", "", {{"token", "s3cre"}}).status, 401);
}

TEST_F(CoordinatorHttpTest, JobEventsWorkersAndDownload) {
  const std::string job = RunSourceJob(absl::Seconds(2));
  HttpResponse one = Get("/api/" + job, "s3cret");
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_NE(one.body.find("\"state\":\"SUCCEEDED\""), std::string::npos) << one.body;
  EXPECT_NE(one.body.find("\"id\":\"source/t1\""), std::string::npos) << one.body;

  HttpResponse events = Get("/api/" + job + "/events", "s3cret", {{"after", "0"}, {"limit", "2"}});
  ASSERT_EQ(events.status, 200) << events.body;
  EXPECT_NE(events.body.find("\"sequence\":\"1\""), std::string::npos) << events.body;
  EXPECT_NE(events.body.find("\"sequence\":\"2\""), std::string::npos) << events.body;
  EXPECT_EQ(events.body.find("\"sequence\":\"3\""), std::string::npos) << events.body;
  EXPECT_NE(events.body.find("submitted"), std::string::npos) << events.body;
  EXPECT_EQ(Get("/api/" + job + "/events", "s3cret", {{"after", "-1"}}).status, 400);
  EXPECT_EQ(Get("/api/jobs/no-such-job", "s3cret").status, 404);
  EXPECT_EQ(Get("/api/jobs/", "s3cret").status, 400);  // "jobs/" names no job
  EXPECT_EQ(Get("/api/nothing", "s3cret").status, 404);

  HttpResponse logs = Get("/api/" + job + "/logs", "s3cret", {{"stage", "source/t1"}});
  ASSERT_EQ(logs.status, 200) << logs.body;
  EXPECT_NE(logs.body.find("\"lines\":["), std::string::npos) << logs.body;
  EXPECT_EQ(Get("/api/" + job + "/logs", "s3cret", {{"stage", "source/nope"}}).status, 404);
  EXPECT_EQ(Get("/api/" + job + "/logs", "s3cret", {{"after_line", "x"}}).status, 400);
  EXPECT_EQ(Get("/api/" + job + "/logs").status, 401);

  HttpResponse workers = Get("/api/workers", "s3cret");
  ASSERT_EQ(workers.status, 200);
  EXPECT_NE(workers.body.find("\"state\":\"idle\""), std::string::npos) << workers.body;
  EXPECT_NE(workers.body.find("\"running\":[]"), std::string::npos) << workers.body;

  auto stored = coordinator_->GetJob(job);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->artifacts_size(), 1);
  const mpt::v1::Artifact& artifact = stored->artifacts(0);
  EXPECT_EQ(Get("/download/" + artifact.name()).status, 401);
  HttpResponse download = Get("/download/" + artifact.name(), "s3cret");
  ASSERT_EQ(download.status, 200) << download.body;
  EXPECT_EQ(download.content_type, "application/x-tar");
  EXPECT_EQ(Sha256Hex(download.body), artifact.sha256());
  EXPECT_EQ(Get("/download/" + job + "/artifacts/nope", "s3cret").status, 404);
}

TEST_F(CoordinatorHttpTest, RunningStagesShowOnTheirWorker) {
  auto job = coordinator_->SubmitJob(SourceRequest("t1"));
  ASSERT_TRUE(job.ok());
  const std::string worker = Register(coordinator_.get());
  ASSERT_TRUE(Poll(coordinator_.get(), worker).has_value());
  HttpResponse workers = Get("/api/workers", "s3cret");
  ASSERT_EQ(workers.status, 200);
  EXPECT_NE(workers.body.find("\"running\":[{\"job\":\"" + job->name() +
                              "\",\"stage\":\"source/t1\",\"rank\":0,\"worldSize\":1}]"),
            std::string::npos)
      << workers.body;
}

TEST_F(CoordinatorHttpTest, ThePageAndItsFilesAreCompiledIn) {
  HttpResponse page = Get("/", "s3cret");
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(absl::StartsWith(page.content_type, "text/html"));
  EXPECT_NE(page.body.find("<script src=\"/static/app.js\"></script>"), std::string::npos);
  HttpResponse js = Get("/static/app.js");  // no data in it: no token needed
  ASSERT_EQ(js.status, 200);
  EXPECT_TRUE(absl::StartsWith(js.content_type, "text/javascript"));
  EXPECT_NE(js.body.find("function stageDag("), std::string::npos);
  EXPECT_EQ(Get("/static/app.css").status, 200);
  EXPECT_EQ(Get("/static/index.html").status, 404);
  EXPECT_EQ(Get("/static/nothing.js").status, 404);
  EXPECT_EQ(Get("/elsewhere", "s3cret").status, 404);
}

}  // namespace
}  // namespace mpt
