// WatchJob over a real loopback server, served by the callback API: many
// open watches hold no server thread, every one still sees its job's final
// event; resumption from a sequence, the token, deadlines, client
// cancellation and server shutdown end streams with the documented codes,
// and every ended stream leaves the core's notifier.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "server/grpc_service.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

constexpr char kToken[] = "watch-token";

// Threads of this process (/proc/self/status), -1 when unreadable.
int ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) {
      int n = -1;
      if (absl::SimpleAtoi(line.substr(8), &n)) return n;
    }
  }
  return -1;
}

class WatchStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto core = testing::OpenCoordinator(testing::FreshFiles("watch", /*on_disk=*/true),
                                         std::make_shared<RealClock>());
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = *std::move(core);
    GrpcServerOptions options;
    options.listen = "127.0.0.1:0";
    options.auth_token = kToken;
    auto server = CoordinatorServer::Start(options, core_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    jobs_ = mpt::v1::JobService::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(30)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", std::string("Bearer ") + kToken);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return ctx;
  }

  std::string Submit(const std::string& task) {
    mpt::v1::Job job;
    grpc::Status s = jobs_->SubmitJob(Context().get(), testing::SourceRequest(task), &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job.name();
  }

  void Cancel(const std::string& name) {
    mpt::v1::CancelJobRequest r;
    r.set_name(name);
    mpt::v1::Job job;
    grpc::Status s = jobs_->CancelJob(Context().get(), r, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }

  // Waits until the core's notifier holds `n` listeners (open watches).
  bool AwaitListeners(int n) {
    const absl::Time end = absl::Now() + absl::Seconds(20);
    while (absl::Now() < end) {
      if (core_->job_event_notifier().size() == n) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return core_->job_event_notifier().size() == n;
  }

  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<mpt::v1::JobService::Stub> jobs_;
};

// An asynchronous watch on a completion queue: no client thread per stream
// either, so that the process's thread count shows the server's.
struct AsyncWatch {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientAsyncReader<mpt::v1::JobEvent>> reader;
  mpt::v1::JobEvent event;
  std::vector<mpt::v1::JobEvent> events;
  grpc::Status status;
  bool finished = false;
};

TEST_F(WatchStreamTest, ManyOpenWatchesHoldNoServerThreadAndAllSeeTheEnd) {
  constexpr int kWatches = 300;
  std::vector<std::string> names;
  for (int i = 0; i < kWatches; ++i) names.push_back(Submit(absl::StrCat("t", i)));
  const int threads_before = ThreadCount();
  ASSERT_GT(threads_before, 0);

  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<AsyncWatch>> watches;
  // Tags: 3 * i (started), 3 * i + 1 (read), 3 * i + 2 (finished).
  for (int i = 0; i < kWatches; ++i) {
    auto w = std::make_unique<AsyncWatch>();
    w->ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    w->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(2)));
    mpt::v1::WatchJobRequest request;
    request.set_name(names[i]);
    w->reader = jobs_->AsyncWatchJob(&w->ctx, request, &cq,
                                     reinterpret_cast<void*>(static_cast<intptr_t>(3 * i)));
    watches.push_back(std::move(w));
  }
  auto pump = [&](absl::Duration timeout, auto done) {
    const absl::Time end = absl::Now() + timeout;
    while (!done()) {
      void* tag = nullptr;
      bool ok = false;
      if (cq.AsyncNext(&tag, &ok, absl::ToChronoTime(end)) !=
          grpc::CompletionQueue::NextStatus::GOT_EVENT) {
        return false;
      }
      const intptr_t t = reinterpret_cast<intptr_t>(tag);
      AsyncWatch& w = *watches[t / 3];
      void* read_tag = reinterpret_cast<void*>(t - t % 3 + 1);
      void* finish_tag = reinterpret_cast<void*>(t - t % 3 + 2);
      if (t % 3 == 0 || (t % 3 == 1 && ok)) {
        if (t % 3 == 1) w.events.push_back(w.event);
        if (ok) {
          w.reader->Read(&w.event, read_tag);
        } else {
          w.reader->Finish(&w.status, finish_tag);
        }
      } else if (t % 3 == 1) {
        w.reader->Finish(&w.status, finish_tag);
      } else {
        w.finished = true;
      }
    }
    return true;
  };
  // Every stream delivers its job's "submitted" event, then waits.
  ASSERT_TRUE(pump(absl::Seconds(60), [&] {
    for (auto& w : watches) {
      if (w->events.empty()) return false;
    }
    return true;
  }));
  ASSERT_TRUE(AwaitListeners(kWatches));
  const int threads_open = ThreadCount();
  // A thread per stream would add kWatches; the server's pollers and the
  // notifier's thread are a handful.
  std::printf("threads: %d before the watches, %d with %d open\n", threads_before, threads_open,
              kWatches);
  EXPECT_LT(threads_open - threads_before, 40)
      << threads_before << " threads before the watches, " << threads_open << " with them";

  for (const std::string& name : names) Cancel(name);
  ASSERT_TRUE(pump(absl::Seconds(60), [&] {
    for (auto& w : watches) {
      if (!w->finished) return false;
    }
    return true;
  }));
  for (int i = 0; i < kWatches; ++i) {
    const AsyncWatch& w = *watches[i];
    EXPECT_TRUE(w.status.ok()) << names[i] << ": " << w.status.error_message();
    ASSERT_FALSE(w.events.empty());
    EXPECT_EQ(w.events.back().state(), mpt::v1::CANCELLED) << names[i];
    for (size_t k = 1; k < w.events.size(); ++k) {
      EXPECT_EQ(w.events[k].sequence(), w.events[k - 1].sequence() + 1);
    }
  }
  EXPECT_TRUE(AwaitListeners(0));
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(WatchStreamTest, ResumesAfterASequenceAndEndsWithTheFinalEvent) {
  const std::string name = Submit("a");
  Cancel(name);  // queued: cancelled at once; events 1 (submitted), 2 (cancelled)
  std::vector<mpt::v1::JobEvent> all;
  {
    auto ctx = Context();
    mpt::v1::WatchJobRequest r;
    r.set_name(name);
    auto reader = jobs_->WatchJob(ctx.get(), r);
    mpt::v1::JobEvent e;
    while (reader->Read(&e)) all.push_back(e);
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_GE(all.size(), 2u);
  EXPECT_EQ(all.front().sequence(), 1);
  EXPECT_EQ(all.back().state(), mpt::v1::CANCELLED);

  auto ctx = Context();
  mpt::v1::WatchJobRequest r;
  r.set_name(name);
  r.set_after_sequence(1);
  auto reader = jobs_->WatchJob(ctx.get(), r);
  std::vector<mpt::v1::JobEvent> rest;
  mpt::v1::JobEvent e;
  while (reader->Read(&e)) rest.push_back(e);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(rest.size(), all.size() - 1);
  EXPECT_EQ(rest.front().sequence(), 2);

  // Beyond the last event, and a job that does not exist.
  auto ctx2 = Context();
  r.set_after_sequence(all.back().sequence() + 5);
  auto beyond = jobs_->WatchJob(ctx2.get(), r);
  while (beyond->Read(&e)) {
  }
  EXPECT_EQ(beyond->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto ctx3 = Context();
  mpt::v1::WatchJobRequest missing;
  missing.set_name("jobs/doesnotexist");
  auto none = jobs_->WatchJob(ctx3.get(), missing);
  while (none->Read(&e)) {
  }
  EXPECT_EQ(none->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(AwaitListeners(0));
}

TEST_F(WatchStreamTest, NeedsTheToken) {
  const std::string name = Submit("a");
  grpc::ClientContext ctx;  // no token
  mpt::v1::WatchJobRequest r;
  r.set_name(name);
  auto reader = jobs_->WatchJob(&ctx, r);
  mpt::v1::JobEvent e;
  EXPECT_FALSE(reader->Read(&e));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(core_->job_event_notifier().size(), 0);
}

TEST_F(WatchStreamTest, DeadlineAndCancellationEndTheStreamAndFreeIt) {
  const std::string name = Submit("a");
  {
    const absl::Time start = absl::Now();
    auto ctx = Context(absl::Milliseconds(500));
    mpt::v1::WatchJobRequest r;
    r.set_name(name);
    auto reader = jobs_->WatchJob(ctx.get(), r);
    mpt::v1::JobEvent e;
    int events = 0;
    while (reader->Read(&e)) ++events;
    EXPECT_EQ(events, 1);  // "submitted"; nothing after it
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  }
  {
    auto ctx = Context();
    mpt::v1::WatchJobRequest r;
    r.set_name(name);
    auto reader = jobs_->WatchJob(ctx.get(), r);
    mpt::v1::JobEvent e;
    ASSERT_TRUE(reader->Read(&e));
    ASSERT_TRUE(AwaitListeners(1));
    ctx->TryCancel();
    while (reader->Read(&e)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(AwaitListeners(0));
}

TEST_F(WatchStreamTest, ShutdownEndsOpenWatchesWithUnavailable) {
  const std::string name = Submit("a");
  auto ctx = Context();
  mpt::v1::WatchJobRequest r;
  r.set_name(name);
  auto reader = jobs_->WatchJob(ctx.get(), r);
  mpt::v1::JobEvent e;
  ASSERT_TRUE(reader->Read(&e));
  ASSERT_TRUE(AwaitListeners(1));
  const absl::Time start = absl::Now();
  std::thread stop([&] { server_->Shutdown(absl::Seconds(5)); });
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  stop.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(4)) << "the watch waited for the grace period";
  EXPECT_EQ(core_->job_event_notifier().size(), 0);
}

}  // namespace
}  // namespace mpt
