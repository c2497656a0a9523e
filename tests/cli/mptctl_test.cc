// mptctl as a user runs it: the real binary against an in-process fake
// JobService, checking what it sends, prints and exits with.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/artifact_pack.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using mpt::v1::JobService;

class FakeJobService final : public JobService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext* context, const mpt::v1::SubmitJobRequest* request,
                         mpt::v1::Job* job) override {
    absl::MutexLock lock(&mu_);
    submitted.push_back(*request);
    auto token = context->client_metadata().find("authorization");
    if (token != context->client_metadata().end()) {
      last_token = std::string(token->second.data(), token->second.size());
    }
    if (!submit_error.ok()) return submit_error;
    if (!submit_failures.empty()) {  // as if the answer were lost
      grpc::Status failure = submit_failures.front();
      submit_failures.erase(submit_failures.begin());
      return failure;
    }
    job->set_name("jobs/j1");
    job->set_kind(request->kind());
    job->set_state(mpt::v1::QUEUED);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const mpt::v1::GetJobRequest* request,
                      mpt::v1::Job* job) override {
    absl::MutexLock lock(&mu_);
    auto it = jobs.find(request->name());
    if (it == jobs.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, request->name() + ": no such job");
    *job = it->second;
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const mpt::v1::ListJobsRequest* request,
                        mpt::v1::ListJobsResponse* response) override {
    absl::MutexLock lock(&mu_);
    list_requests.push_back(*request);
    for (const auto& [name, job] : jobs) *response->add_jobs() = job;
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const mpt::v1::CancelJobRequest* request,
                         mpt::v1::Job* job) override {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, request->name() + " is SUCCEEDED");
  }

  // Event streams: `watch_script[i]` is what the i-th call sends; a call
  // past the script's end sends nothing and ends OK.
  struct WatchCall {
    std::vector<mpt::v1::JobEvent> events;
    grpc::Status end;
  };
  grpc::Status WatchJob(grpc::ServerContext*, const mpt::v1::WatchJobRequest* request,
                        grpc::ServerWriter<mpt::v1::JobEvent>* writer) override {
    WatchCall call;
    {
      absl::MutexLock lock(&mu_);
      watch_requests.push_back(*request);
      if (watch_requests.size() > watch_script.size()) return grpc::Status::OK;
      call = watch_script[watch_requests.size() - 1];
    }
    for (const auto& e : call.events) {
      if (e.sequence() > request->after_sequence()) writer->Write(e);
    }
    return call.end;
  }

  grpc::Status DownloadArtifact(grpc::ServerContext*, const mpt::v1::DownloadArtifactRequest* request,
                                grpc::ServerWriter<mpt::v1::ArtifactChunk>* writer) override {
    std::string blob;
    bool corrupt = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = blobs.find(request->name());
      if (it == blobs.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no artifact");
      blob = it->second;
      corrupt = corrupt_downloads;
    }
    const std::string sha = Sha256Hex(blob);
    for (size_t pos = 0; pos < blob.size(); pos += 1000) {
      mpt::v1::ArtifactChunk chunk;
      chunk.set_offset(static_cast<int64_t>(pos));
      chunk.set_data(blob.substr(pos, 1000));
      if (corrupt && pos == 0) (*chunk.mutable_data())[0] ^= 1;
      if (pos + 1000 >= blob.size()) {
        chunk.set_sha256(sha);
        chunk.set_total_bytes(static_cast<int64_t>(blob.size()));
      }
      writer->Write(chunk);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListWorkers(grpc::ServerContext*, const mpt::v1::ListWorkersRequest*,
                           mpt::v1::ListWorkersResponse* response) override {
    auto* w = response->add_workers();
    w->set_name("workers/w1");
    w->set_hostname("node-1");
    w->set_device("cpu");
    w->set_state("idle");
    w->add_collectives("gloo");
    return grpc::Status::OK;
  }

  // Serves `log_lines` (line numbers 1, 2, ...) two at a time; of them
  // only the first `log_visible` exist yet, and each call shows one more;
  // `done` once all are visible and the page reaches the end.
  grpc::Status GetStageLogs(grpc::ServerContext*, const mpt::v1::GetStageLogsRequest* request,
                            mpt::v1::GetStageLogsResponse* response) override {
    absl::MutexLock lock(&mu_);
    log_requests.push_back(*request);
    if (log_failures_left != 0 &&
        static_cast<int>(log_requests.size()) > log_failures_after) {
      if (log_failures_left > 0) --log_failures_left;
      return log_failure;
    }
    if (request->stage() == "bogus") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "stage: \"bogus\" is not a stage id");
    }
    int returned = 0;
    for (int i = 0; i < log_visible && i < static_cast<int>(log_lines.size()); ++i) {
      const mpt::v1::LogLine& l = log_lines[i];
      if (l.line() <= request->after_line()) continue;
      if (!request->stage().empty() && l.stage() != request->stage()) continue;
      if (returned == 2) {
        response->set_more(true);
        break;
      }
      *response->add_lines() = l;
      ++returned;
    }
    response->set_last_line(response->lines().empty()
                                ? request->after_line()
                                : response->lines(response->lines_size() - 1).line());
    (*response->mutable_dropped_lines())["source/a"] = 7;
    response->set_done(log_visible >= static_cast<int>(log_lines.size()) && !response->more());
    log_visible = std::min<int>(log_visible + 1, static_cast<int>(log_lines.size()));
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::vector<mpt::v1::LogLine> log_lines;
  int log_visible = 0;
  std::vector<mpt::v1::GetStageLogsRequest> log_requests;
  // After the first `log_failures_after` calls, the next
  // `log_failures_left` (-1: every one) end with `log_failure`, as calls
  // to a coordinator that is shutting down or gone do.
  int log_failures_after = 0;
  int log_failures_left = 0;
  grpc::Status log_failure;
  std::vector<mpt::v1::SubmitJobRequest> submitted;
  std::string last_token;
  grpc::Status submit_error = grpc::Status::OK;
  // Returned, in order, by the first SubmitJob calls.
  std::vector<grpc::Status> submit_failures;
  std::map<std::string, mpt::v1::Job> jobs;
  std::vector<mpt::v1::ListJobsRequest> list_requests;
  std::vector<WatchCall> watch_script;
  std::vector<mpt::v1::WatchJobRequest> watch_requests;
  std::map<std::string, std::string> blobs;
  bool corrupt_downloads = false;
};

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs mptctl with `args`, capturing its output.
Result RunMptctl(const std::vector<std::string>& args) {
  const std::string dir = testing::FreshTempDir("mptctl_run");
  const std::string out_path = dir + "/out", err_path = dir + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    const int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out_fd < 0 || err_fd < 0) _exit(126);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    std::vector<std::string> all{testing::DataPath("cli/mptctl")};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    unsetenv("MPT_COORDINATOR");
    unsetenv("MPT_TOKEN");
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out_path).value_or("");
  r.err = ReadFile(err_path).value_or("");
  return r;
}

mpt::v1::JobEvent Event(int64_t seq, mpt::v1::JobState state, const std::string& stage = "",
                        int64_t step = 0) {
  mpt::v1::JobEvent e;
  e.set_sequence(seq);
  e.set_job("jobs/j1");
  e.set_state(state);
  e.set_stage(stage);
  if (step > 0) {
    e.set_stage_state(mpt::v1::RUNNING);
    e.mutable_progress()->set_step(step);
    e.mutable_progress()->set_total_steps(10);
    (*e.mutable_progress()->mutable_losses())["loss"] = 1.0 / step;
    e.mutable_progress()->set_eta_seconds(10 - step);
  }
  return e;
}

class MptctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port_);
  }
  void TearDown() override { server_->Shutdown(); }

  Result Run(std::vector<std::string> args) {
    args.insert(args.begin(), "--coordinator=" + address_);
    return RunMptctl(args);
  }

  // A spec file with relative paths and the files they name.
  std::string WriteSpec(bool with_data) {
    const std::string dir = testing::FreshTempDir("spec");
    fs::create_directories(dir + "/model");
    fs::create_directories(dir + "/data");
    if (with_data) {
      EXPECT_TRUE(WriteFileAtomically(dir + "/data/a.jsonl", "{}\n").ok());
      EXPECT_TRUE(WriteFileAtomically(dir + "/data/b.jsonl", "{}\n").ok());
    }
    const std::string spec =
        "base_model: \"model\"\n"
        "source { tasks { name: \"a\" train_path: \"data/a.jsonl\" } train { steps: 5 } }\n"
        "target { tasks { name: \"b\" train_path: \"./data/../data/b.jsonl\" } train { steps: 5 } }\n";
    EXPECT_TRUE(WriteFileAtomically(dir + "/spec.textproto", spec).ok());
    return dir;
  }

  FakeJobService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

TEST_F(MptctlTest, SubmitResolvesPathsAgainstTheSpecFolderAndSendsTheToken) {
  const std::string dir = WriteSpec(true);
  Result r = Run({"submit", "--spec", dir + "/spec.textproto", "--priority=3", "--name=demo",
                  "--token=s3cret"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "jobs/j1\n");
  absl::MutexLock lock(&service_.mu_);
  ASSERT_EQ(service_.submitted.size(), 1u);
  const auto& req = service_.submitted[0];
  EXPECT_EQ(req.kind(), mpt::v1::PIPELINE);
  EXPECT_EQ(req.priority(), 3);
  EXPECT_EQ(req.display_name(), "demo");
  EXPECT_EQ(req.spec().base_model(), dir + "/model");
  EXPECT_EQ(req.spec().source().tasks(0).train_path(), dir + "/data/a.jsonl");
  EXPECT_EQ(req.spec().target().tasks(0).train_path(), dir + "/data/b.jsonl");
  EXPECT_EQ(service_.last_token, "Bearer s3cret");
}

TEST_F(MptctlTest, SubmitRetriesWithTheSameGeneratedRequestId) {
  const std::string dir = WriteSpec(true);
  {
    absl::MutexLock lock(&service_.mu_);
    service_.submit_failures = {
        grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline passed"),
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting")};
  }
  Result r = Run({"submit", "--spec", dir + "/spec.textproto"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "jobs/j1\n");
  EXPECT_TRUE(absl::StrContains(r.err, "retrying with the same request_id")) << r.err;
  std::string first_id;
  {
    absl::MutexLock lock(&service_.mu_);
    ASSERT_EQ(service_.submitted.size(), 3u);
    first_id = service_.submitted[0].request_id();
    EXPECT_EQ(first_id.size(), 32u);
    EXPECT_EQ(first_id.find_first_not_of("0123456789abcdef"), std::string::npos) << first_id;
    EXPECT_EQ(service_.submitted[1].request_id(), first_id);
    EXPECT_EQ(service_.submitted[2].request_id(), first_id);
    service_.submitted.clear();
    // A user's key is sent as given; a non-retryable error is not retried.
    service_.submit_failures = {grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"),
                                grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "request_id")};
  }
  r = Run({"submit", "--spec", dir + "/spec.textproto", "--request_id=mine-1"});
  EXPECT_EQ(r.code, 6) << r.err;
  absl::MutexLock lock(&service_.mu_);
  ASSERT_EQ(service_.submitted.size(), 2u);
  EXPECT_EQ(service_.submitted[0].request_id(), "mine-1");
  EXPECT_EQ(service_.submitted[1].request_id(), "mine-1");
}

TEST_F(MptctlTest, ArtefactNamesInASingleStageSpecAreNotTakenForPaths) {
  const std::string dir = WriteSpec(true);
  ASSERT_TRUE(WriteFileAtomically(
                  dir + "/target.textproto",
                  "base_model: \"model\"\n"
                  "target { tasks { name: \"b\" train_path: \"data/b.jsonl\" } train { steps: 5 }\n"
                  "         source_adapter: \"jobs/j0/artifacts/distillation-adapter-1\" }\n")
                  .ok());
  Result r = Run({"submit", "--kind=target", "--spec=" + dir + "/target.textproto"});
  ASSERT_EQ(r.code, 0) << r.err;
  absl::MutexLock lock(&service_.mu_);
  ASSERT_EQ(service_.submitted.size(), 1u);
  EXPECT_EQ(service_.submitted[0].kind(), mpt::v1::TARGET_ADAPTATION);
  EXPECT_EQ(service_.submitted[0].spec().target().source_adapter(),
            "jobs/j0/artifacts/distillation-adapter-1");
  EXPECT_EQ(service_.submitted[0].spec().target().tasks(0).train_path(), dir + "/data/b.jsonl");
}

TEST_F(MptctlTest, SubmitChecksFilesLocallyUnlessTold) {
  const std::string dir = WriteSpec(false);
  Result r = Run({"submit", "--spec=" + dir + "/spec.textproto"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "source.tasks[0].train_path")) << r.err;
  {
    absl::MutexLock lock(&service_.mu_);
    EXPECT_TRUE(service_.submitted.empty());
  }
  r = Run({"submit", "--spec=" + dir + "/spec.textproto", "--nocheck_files", "--kind=source",
           "--output=json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["name"], "jobs/j1");
  EXPECT_EQ(json["kind"], "SOURCE_TRAINING");
}

TEST_F(MptctlTest, ServiceErrorsMapToExitCodes) {
  const std::string dir = WriteSpec(true);
  {
    absl::MutexLock lock(&service_.mu_);
    service_.submit_error =
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt.num_ranks: 40 is larger than the prompt");
  }
  Result r = Run({"submit", "--spec=" + dir + "/spec.textproto"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "prompt.num_ranks")) << r.err;
  EXPECT_EQ(Run({"get", "nope"}).code, 3);
  EXPECT_EQ(Run({"cancel", "jobs/j1"}).code, 6);
  EXPECT_EQ(Run({"submit", "--spec=" + dir + "/missing.textproto"}).code, 3);
  EXPECT_EQ(Run({"frobnicate"}).code, 2);
  EXPECT_EQ(Run({"list", "--state=sleepy"}).code, 2);
  EXPECT_EQ(RunMptctl({"--coordinator=127.0.0.1:1", "workers"}).code, 5);
  EXPECT_EQ(RunMptctl({"workers"}).code, 2);  // no coordinator at all
  // A bad spec is reported as such before any connection is tried.
  Result bad = RunMptctl({"--coordinator=127.0.0.1:1", "submit",
                          "--spec=" + dir + "/missing.textproto"});
  EXPECT_EQ(bad.code, 3) << bad.err;
  EXPECT_NE(bad.err.find("missing.textproto"), std::string::npos) << bad.err;
}

TEST_F(MptctlTest, WatchResumesAfterALostStreamFromTheLastEvent) {
  {
    absl::MutexLock lock(&service_.mu_);
    FakeJobService::WatchCall first;
    first.events = {Event(1, mpt::v1::RUNNING), Event(2, mpt::v1::RUNNING, "source/a", 3),
                    Event(3, mpt::v1::RUNNING, "source/a", 6)};
    first.end = grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    FakeJobService::WatchCall second;
    second.events = {Event(1, mpt::v1::RUNNING), Event(2, mpt::v1::RUNNING, "source/a", 3),
                     Event(3, mpt::v1::RUNNING, "source/a", 6),
                     Event(4, mpt::v1::RUNNING, "source/a", 10),
                     Event(5, mpt::v1::SUCCEEDED)};
    second.events[3].set_stage_state(mpt::v1::RUNNING);
    service_.watch_script = {first, second};
    mpt::v1::Job job;
    job.set_name("jobs/j1");
    job.set_state(mpt::v1::SUCCEEDED);
    auto* stage = job.add_stages();
    stage->set_id("target/b");
    stage->set_state(mpt::v1::SUCCEEDED);
    (*stage->mutable_progress()->mutable_metrics())["b/accuracy"] = 0.875;
    service_.jobs["jobs/j1"] = job;
  }
  Result r = Run({"watch", "j1"});
  ASSERT_EQ(r.code, 0) << r.err;
  {
    absl::MutexLock lock(&service_.mu_);
    ASSERT_EQ(service_.watch_requests.size(), 2u);
    EXPECT_EQ(service_.watch_requests[0].after_sequence(), 0);
    EXPECT_EQ(service_.watch_requests[1].after_sequence(), 3);
  }
  EXPECT_TRUE(absl::StrContains(r.err, "reconnecting from event 3")) << r.err;
  // Each step line once, in order, with the loss.
  const size_t s3 = r.out.find("STEP 3/10");
  const size_t s6 = r.out.find("STEP 6/10");
  const size_t s10 = r.out.find("STEP 10/10");
  ASSERT_NE(s3, std::string::npos) << r.out;
  ASSERT_NE(s6, std::string::npos) << r.out;
  ASSERT_NE(s10, std::string::npos) << r.out;
  EXPECT_LT(s3, s6);
  EXPECT_LT(s6, s10);
  EXPECT_EQ(r.out.find("STEP 6/10", s6 + 1), std::string::npos) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "jobs/j1: SUCCEEDED")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "b/accuracy=87.5%")) << r.out;
}

// A coordinator stopped with SIGTERM ends the streams and calls it serves
// CANCELLED; watch rides that out as it does UNAVAILABLE.
TEST_F(MptctlTest, WatchResumesAfterAStreamCancelledByAShutdown) {
  {
    absl::MutexLock lock(&service_.mu_);
    FakeJobService::WatchCall first;
    first.events = {Event(1, mpt::v1::RUNNING), Event(2, mpt::v1::RUNNING, "source/a", 3)};
    first.end = grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED");
    FakeJobService::WatchCall second;
    second.events = {Event(1, mpt::v1::RUNNING), Event(2, mpt::v1::RUNNING, "source/a", 3),
                     Event(3, mpt::v1::SUCCEEDED)};
    service_.watch_script = {first, second};
  }
  Result r = Run({"watch", "j1", "--output=json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "lost the coordinator at " + address_)) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "reconnecting from event 2")) << r.err;
  absl::MutexLock lock(&service_.mu_);
  ASSERT_EQ(service_.watch_requests.size(), 2u);
  EXPECT_EQ(service_.watch_requests[1].after_sequence(), 2);
}

// A TCP port on 127.0.0.1 that accepts connections in the kernel but never
// answers (listening, never accept()ed); closed with the returned fd.
int SilentListener(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  *port = ntohs(addr.sin_port);
  return fd;
}

TEST(MptctlConnectTest, AnAddressThatNeverAnswersFailsFastWithFive) {
  int silent_port = 0;
  const int silent = SilentListener(&silent_port);
  // A port nothing listens on: the silent listener's, once closed.
  int closed_port = 0;
  close(SilentListener(&closed_port));
  for (const std::string& address : {absl::StrCat("127.0.0.1:", silent_port),
                                    absl::StrCat("127.0.0.1:", closed_port)}) {
    for (const char* command : {"watch", "get"}) {
      SCOPED_TRACE(absl::StrCat(command, " ", address));
      const absl::Time start = absl::Now();
      Result r = RunMptctl({"--coordinator=" + address, "--connect_timeout_seconds=1", command,
                            "jobs/j1"});
      EXPECT_EQ(r.code, 5) << r.err;
      EXPECT_LT(absl::Now() - start, absl::Seconds(15));
      EXPECT_TRUE(absl::StrContains(
          r.err, "UNAVAILABLE: cannot connect to the coordinator at " + address + " within 1s"))
          << r.err;
    }
  }
  close(silent);
}

TEST_F(MptctlTest, WatchOfAFailedJobExitsWithFour) {
  {
    absl::MutexLock lock(&service_.mu_);
    FakeJobService::WatchCall call;
    call.events = {Event(1, mpt::v1::RUNNING), Event(2, mpt::v1::FAILED)};
    call.events[1].set_message("source/a: data file missing");
    service_.watch_script = {call};
  }
  Result r = Run({"watch", "jobs/j1", "--output=json"});
  EXPECT_EQ(r.code, 4) << r.err;
  // One JSON object per line.
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    auto e = nlohmann::json::parse(line);
    EXPECT_EQ(e["job"], "jobs/j1");
    ++lines;
  }
  EXPECT_EQ(lines, 2);
}

TEST_F(MptctlTest, DownloadWritesEveryStageAdapterAndChecksTheHash) {
  const std::string src = testing::FreshTempDir("adapter_src");
  ASSERT_TRUE(WriteFileAtomically(src + "/adapter_config.json", std::string(3000, 'c')).ok());
  const std::string blob = *PackFolder(src);
  {
    absl::MutexLock lock(&service_.mu_);
    mpt::v1::Job job;
    job.set_name("jobs/j1");
    job.set_state(mpt::v1::SUCCEEDED);
    for (const char* id : {"source/a", "distillation", "target/b"}) {
      auto* stage = job.add_stages();
      stage->set_id(id);
      stage->set_state(mpt::v1::SUCCEEDED);
      stage->set_artifact(absl::StrCat("jobs/j1/artifacts/", job.stages_size()));
      auto* a = job.add_artifacts();
      a->set_name(stage->artifact());
      a->set_kind("adapter");
      a->set_sha256(Sha256Hex(blob));
      service_.blobs[stage->artifact()] = blob;
    }
    service_.jobs["jobs/j1"] = job;
  }
  const std::string out = testing::FreshTempDir("download") + "/adapters";
  Result r = Run({"download", "j1", "--out=" + out});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* stage : {"source/a", "distillation", "target/b"}) {
    EXPECT_EQ(*ReadFile(out + "/" + stage + "/adapter_config.json"), std::string(3000, 'c'))
        << stage;
  }
  const std::string one = testing::FreshTempDir("download_one") + "/x";
  r = Run({"download", "jobs/j1/artifacts/2", "--out", one});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(one + "/adapter_config.json"));

  {
    absl::MutexLock lock(&service_.mu_);
    service_.corrupt_downloads = true;
  }
  const std::string bad = testing::FreshTempDir("download_bad") + "/y";
  r = Run({"download", "jobs/j1/artifacts/2", "--out=" + bad});
  EXPECT_EQ(r.code, 8) << r.err;
  EXPECT_FALSE(fs::exists(bad));
  EXPECT_EQ(Run({"download", "jobs/j1/artifacts/99"}).code, 3);
}

// The relative paths and contents of every file under `root`, sorted.
std::string Listing(const std::string& root) {
  std::vector<std::string> lines;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    std::string line = fs::relative(e.path(), root).string();
    if (e.is_regular_file()) line += "=" + ReadFile(e.path().string()).value_or("?");
    lines.push_back(line + "\n");
  }
  std::sort(lines.begin(), lines.end());
  return absl::StrJoin(lines, "");
}

// A download never deletes what the user did not ask to replace: --out
// holding other files, a file, or the current folder is refused (6) before
// anything is fetched; an earlier download of the adapter is replaced.
TEST_F(MptctlTest, DownloadRefusesAFolderWithOtherFilesOrAFile) {
  const std::string src = testing::FreshTempDir("refuse_src");
  ASSERT_TRUE(WriteFileAtomically(src + "/adapter_config.json", "{\"new\": 1}").ok());
  ASSERT_TRUE(WriteFileAtomically(src + "/adapter_model.safetensors", "weights").ok());
  const std::string blob = *PackFolder(src);
  {
    absl::MutexLock lock(&service_.mu_);
    mpt::v1::Job job;
    job.set_name("jobs/j1");
    job.set_state(mpt::v1::SUCCEEDED);
    auto* stage = job.add_stages();
    stage->set_id("source/a");
    stage->set_state(mpt::v1::SUCCEEDED);
    stage->set_artifact("jobs/j1/artifacts/a");
    service_.blobs["jobs/j1/artifacts/a"] = blob;
    service_.jobs["jobs/j1"] = job;
  }
  const std::string dir = testing::FreshTempDir("refuse");
  fs::create_directories(dir + "/adapters/old_run");
  ASSERT_TRUE(WriteFileAtomically(dir + "/adapters/old_run/adapter_model.safetensors", "old").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/adapters/README.txt", "notes").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/myfile.txt", "user data").ok());
  const std::string before = Listing(dir);

  Result r = Run({"download", "jobs/j1/artifacts/a", "--out=" + dir + "/adapters"});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_TRUE(absl::StrContains(
      r.err, "FAILED_PRECONDITION: --out: " + dir +
                 "/adapters is not empty and is not an adapter folder (it holds README.txt, "
                 "old_run/); give a new or empty folder"))
      << r.err;
  r = Run({"download", "jobs/j1/artifacts/a", "--out=" + dir + "/myfile.txt"});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "myfile.txt is a file, not a folder")) << r.err;
  // A whole job: <out>/<stage id> under a file, or holding other files.
  r = Run({"download", "j1", "--out=" + dir + "/myfile.txt"});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "myfile.txt, which is a file, not a folder")) << r.err;
  fs::create_directories(dir + "/job/source/a");
  ASSERT_TRUE(WriteFileAtomically(dir + "/job/source/a/train.jsonl", "{}").ok());
  r = Run({"download", "j1", "--out=" + dir + "/job"});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "source/a is not empty")) << r.err;
  // The current folder (the child runs where this test runs).
  r = Run({"download", "jobs/j1/artifacts/a", "--out=" + fs::current_path().string()});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "is or contains the current working folder")) << r.err;
  r = Run({"download", "jobs/j1/artifacts/a", "--out=."});
  EXPECT_EQ(r.code, 6) << r.err;
  fs::remove_all(dir + "/job");
  EXPECT_EQ(Listing(dir), before) << "a refused download changed something";

  // An earlier download is replaced by the new one.
  const std::string one = dir + "/one";
  ASSERT_EQ(Run({"download", "jobs/j1/artifacts/a", "--out=" + one}).code, 0);
  ASSERT_TRUE(WriteFileAtomically(one + "/adapter_config.json", "edited").ok());
  r = Run({"download", "jobs/j1/artifacts/a", "--out=" + one});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Listing(one), "adapter_config.json={\"new\": 1}\nadapter_model.safetensors=weights\n");
}

TEST_F(MptctlTest, ListAndWorkers) {
  {
    absl::MutexLock lock(&service_.mu_);
    mpt::v1::Job job;
    job.set_name("jobs/j1");
    job.set_kind(mpt::v1::PIPELINE);
    job.set_state(mpt::v1::RUNNING);
    job.set_display_name("demo");
    service_.jobs["jobs/j1"] = job;
  }
  Result r = Run({"list", "--state=running,queued", "--kind=pipeline", "--page_size=5"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "jobs/j1")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "RUNNING")) << r.out;
  {
    absl::MutexLock lock(&service_.mu_);
    ASSERT_EQ(service_.list_requests.size(), 1u);
    EXPECT_EQ(service_.list_requests[0].states_size(), 2);
    EXPECT_EQ(service_.list_requests[0].kinds_size(), 1);
    EXPECT_EQ(service_.list_requests[0].page_size(), 5);
  }
  r = Run({"list", "--output=json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["jobs"][0]["display_name"], "demo");
  {
    absl::MutexLock lock(&service_.mu_);
    EXPECT_EQ(service_.list_requests[1].kinds_size(), 0);  // no --kind: no filter
  }
  r = Run({"workers"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "node-1")) << r.out;
}

// Lines of stages a and b, interleaved as the coordinator numbers them.
void AddLogLines(FakeJobService* service) {
  absl::MutexLock lock(&service->mu_);
  const char* stages[] = {"source/a", "source/b", "source/a", "source/b", "source/a"};
  for (int i = 0; i < 5; ++i) {
    mpt::v1::LogLine l;
    l.set_line(i + 1);
    l.set_stage(stages[i]);
    l.set_assignment(absl::StrCat("jobs/j1/stages/", stages[i], "/attempts/1/ranks/0"));
    l.set_severity(i == 4 ? "ERROR" : "INFO");
    l.set_text(absl::StrCat("line ", i + 1));
    service->log_lines.push_back(l);
  }
  service->log_visible = 5;
  mpt::v1::Job job;
  job.set_name("jobs/j1");
  job.add_stages()->set_id("source/a");
  job.add_stages()->set_id("source/b");
  service->jobs["jobs/j1"] = job;
}

TEST_F(MptctlTest, LogsPrintsEveryPageOfAStagePrefixedWithIt) {
  AddLogLines(&service_);
  Result r = Run({"logs", "j1", "--stage=source/a"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_NE(lines[0].find("[source/a] ... 7 earlier lines dropped"), std::string::npos) << r.out;
  EXPECT_EQ(lines[1].rfind("[source/a] ", 0), 0u);
  EXPECT_NE(lines[1].find(" INFO line 1"), std::string::npos) << lines[1];
  EXPECT_NE(lines[3].find(" ERROR line 5"), std::string::npos) << lines[3];
}

TEST_F(MptctlTest, LogsWithoutAStageReadsTheStagesInTheJobsOrder) {
  AddLogLines(&service_);
  Result r = Run({"logs", "jobs/j1"});
  ASSERT_EQ(r.code, 0) << r.err;
  const size_t a5 = r.out.find("line 5");
  const size_t b2 = r.out.find("line 2");
  ASSERT_NE(a5, std::string::npos);
  ASSERT_NE(b2, std::string::npos);
  EXPECT_LT(a5, b2) << "stage a's lines come before stage b's:\n" << r.out;
}

// "line 1" ... "line N" each appear exactly once in `out`.
void ExpectLinesOnce(const std::string& out, int n) {
  for (int i = 1; i <= n; ++i) {
    const std::string text = absl::StrCat("line ", i);
    const size_t first = out.find(text);
    ASSERT_NE(first, std::string::npos) << text << " missing:\n" << out;
    EXPECT_EQ(out.find(text, first + 1), std::string::npos) << text << " twice:\n" << out;
  }
}

TEST_F(MptctlTest, LogsFollowPrintsNewLinesOnceAndEndsWhenDone) {
  AddLogLines(&service_);
  {
    absl::MutexLock lock(&service_.mu_);
    service_.log_visible = 1;
  }
  Result r = Run({"logs", "j1", "--follow", "--poll_seconds=0.01"});
  ASSERT_EQ(r.code, 0) << r.err;
  ExpectLinesOnce(r.out, 5);
  absl::MutexLock lock(&service_.mu_);
  // It polled while lines were appearing, each time from the last one seen.
  EXPECT_GT(service_.log_requests.size(), 3u);
  for (size_t i = 1; i < service_.log_requests.size(); ++i) {
    EXPECT_GE(service_.log_requests[i].after_line(), service_.log_requests[i - 1].after_line());
  }
}

// A coordinator stopped with SIGTERM ends GetStageLogs calls CANCELLED
// and then is unreachable until it is back: --follow rides it out as watch
// does, from the last line shown, each line once.
TEST_F(MptctlTest, LogsFollowRidesOutACoordinatorShuttingDown) {
  AddLogLines(&service_);
  {
    absl::MutexLock lock(&service_.mu_);
    service_.log_visible = 1;
    service_.log_failures_after = 2;
    service_.log_failures_left = 3;
    service_.log_failure = grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED");
  }
  Result r = Run({"logs", "j1", "--follow", "--poll_seconds=0.01"});
  ASSERT_EQ(r.code, 0) << r.err;
  ExpectLinesOnce(r.out, 5);
  EXPECT_TRUE(absl::StrContains(r.err, "lost the coordinator at " + address_ +
                                           ": it ended the call, as it does when it shuts down"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "reconnected to " + address_)) << r.err;
  absl::MutexLock lock(&service_.mu_);
  // The three failed calls and the next one asked from the same line.
  ASSERT_GT(service_.log_requests.size(), 6u);
  EXPECT_GT(service_.log_requests[2].after_line(), 0);
  for (int i = 3; i <= 5; ++i) {
    EXPECT_EQ(service_.log_requests[i].after_line(), service_.log_requests[2].after_line()) << i;
  }
}

TEST_F(MptctlTest, LogsFollowGivesUpNamingTheCoordinator) {
  AddLogLines(&service_);
  {
    absl::MutexLock lock(&service_.mu_);
    service_.log_visible = 1;
    service_.log_failures_after = 1;
    service_.log_failures_left = -1;
    service_.log_failure = grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED");
  }
  Result r = Run({"logs", "j1", "--follow", "--poll_seconds=0.01",
                  "--reconnect_timeout_seconds=1"});
  EXPECT_EQ(r.code, 5) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "UNAVAILABLE: gave up following the logs of jobs/j1 after "
                                       "line 1: the coordinator at " + address_ +
                                       " has been lost for "))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "shuts down (CANCELLED: CANCELLED)")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "line 1")) << r.out;
}

TEST_F(MptctlTest, LogsOfABadStageExitsTwo) {
  AddLogLines(&service_);
  Result r = Run({"logs", "j1", "--stage=bogus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("stage: \"bogus\""), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mpt
