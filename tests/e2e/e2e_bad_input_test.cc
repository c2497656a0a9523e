// End to end (e): bad requests through the real coordinator's gRPC API. Each
// is refused with INVALID_ARGUMENT or NOT_FOUND, the message names the
// field, and nothing is stored: no job is listed afterwards and the
// artefact store stays empty. mptctl maps the same refusals to its exit
// codes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// A child process that is killed when the object goes, whatever happens to
// the test.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log) {
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool alive() const { return pid_ > 0 && kill(pid_, 0) == 0; }

 private:
  pid_t pid_ = -1;
};

// Runs mptctl and returns its exit status; its stderr goes to *err.
int RunMptctl(const std::vector<std::string>& args, std::string* err) {
  const std::string path = testing::FreshTempDir("mptctl_err") + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int null = open("/dev/null", O_WRONLY);
    if (fd >= 0) dup2(fd, STDERR_FILENO);
    if (null >= 0) dup2(null, STDOUT_FILENO);
    std::vector<std::string> all{testing::DataPath("cli/mptctl")};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  *err = ReadFile(path).value_or("");
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    state_ = new std::string(testing::FreshTempDir("coordinator"));
    const std::string log = *state_ + "/coordinator.log";
    coordinator_ = new Process({testing::DataPath("server/coordinator"), "--listen=127.0.0.1:0",
                                "--db=" + *state_ + "/jobs.db",
                                "--artifacts=" + *state_ + "/artifacts", "--check_spec_files",
                                "--max_world_size=4"},
                               log);
    const std::regex port_re("\\(port ([0-9]+)");
    for (int i = 0; i < 300 && port_ == 0; ++i) {
      std::smatch m;
      const std::string text = ReadFile(log).value_or("");
      if (std::regex_search(text, m, port_re)) port_ = std::stoi(m[1]);
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_GT(port_, 0) << ReadFile(log).value_or("(no log)");
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    delete channel_;
    delete coordinator_;
    delete state_;
  }

  grpc::Status Submit(const mpt::v1::SubmitJobRequest& request) {
    auto stub = mpt::v1::JobService::NewStub(*channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    mpt::v1::Job job;
    return stub->SubmitJob(&context, request, &job);
  }

  // A valid pipeline over the tiny tasks and the tiny T5.
  static mpt::v1::SubmitJobRequest GoodPipeline() {
    mpt::v1::SubmitJobRequest r;
    r.set_kind(mpt::v1::PIPELINE);
    mpt::v1::PipelineSpec* spec = r.mutable_spec();
    spec->set_base_model(testing::DataPath("tests/testdata/t5_relu"));
    spec->mutable_prompt()->set_num_virtual_tokens(4);
    for (const char* t : {"first", "last"}) {
      auto* task = spec->mutable_source()->add_tasks();
      task->set_name(t);
      task->set_train_path(testing::DataPath(absl::StrCat("tests/testdata/tiny_tasks/", t, ".train.jsonl")));
    }
    spec->mutable_source()->mutable_train()->set_steps(5);
    spec->mutable_distillation()->mutable_train()->set_steps(5);
    spec->mutable_distillation()->set_world_size(2);
    auto* target = spec->mutable_target()->add_tasks();
    target->set_name("echo");
    target->set_train_path(testing::DataPath("tests/testdata/tiny_tasks/echo.train.jsonl"));
    spec->mutable_target()->mutable_train()->set_steps(5);
    return r;
  }

  static void ExpectRefused(const grpc::Status& status, grpc::StatusCode code,
                            const std::string& field) {
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), field))
        << "the message does not name " << field << ": " << status.error_message();
  }

  static std::string* state_;
  static Process* coordinator_;
  static int port_;
  static std::shared_ptr<grpc::Channel>* channel_;
};

std::string* BadInputTest::state_ = nullptr;
Process* BadInputTest::coordinator_ = nullptr;
int BadInputTest::port_ = 0;
std::shared_ptr<grpc::Channel>* BadInputTest::channel_ = nullptr;

TEST_F(BadInputTest, EveryBadRequestIsRefusedNamingTheFieldAndNothingIsStored) {
  {
    auto r = GoodPipeline();
    r.set_kind(static_cast<mpt::v1::JobKind>(42));
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "kind");
  }
  {
    auto r = GoodPipeline();
    r.set_kind(mpt::v1::JOB_KIND_UNSPECIFIED);
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "kind");
  }
  {
    auto r = GoodPipeline();
    r.mutable_spec()->mutable_source()->mutable_tasks(1)->set_train_path("/nonexistent/last.jsonl");
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "source.tasks[1].train_path");
  }
  {
    auto r = GoodPipeline();
    r.mutable_spec()->mutable_source()->clear_tasks();
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "source.tasks");
  }
  {
    auto r = GoodPipeline();
    r.mutable_spec()->mutable_prompt()->set_num_ranks(50);  // T = 4
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "prompt.num_ranks");
  }
  {
    auto r = GoodPipeline();
    r.mutable_spec()->mutable_distillation()->set_world_size(16);  // max 4
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "distillation.world_size");
  }
  {
    auto r = GoodPipeline();
    r.mutable_spec()->set_base_model("/nonexistent/model");
    ExpectRefused(Submit(r), grpc::StatusCode::INVALID_ARGUMENT, "base_model");
  }
  {
    auto r = GoodPipeline();
    r.set_kind(mpt::v1::TARGET_ADAPTATION);
    r.mutable_spec()->mutable_target()->set_source_adapter("jobs/nope/artifacts/missing");
    ExpectRefused(Submit(r), grpc::StatusCode::NOT_FOUND, "target.source_adapter");
  }
  {
    auto r = GoodPipeline();
    r.set_kind(mpt::v1::DISTILLATION);
    auto* d = r.mutable_spec()->mutable_distillation();
    *d->mutable_tasks() = r.spec().source().tasks();
    d->add_teacher_adapters("jobs/nope/artifacts/t0");
    d->add_teacher_adapters("jobs/nope/artifacts/t1");
    ExpectRefused(Submit(r), grpc::StatusCode::NOT_FOUND, "distillation.teacher_adapters");
  }

  // Nothing was stored.
  auto stub = mpt::v1::JobService::NewStub(*channel_);
  grpc::ClientContext context;
  mpt::v1::ListJobsRequest list;
  mpt::v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub->ListJobs(&context, list, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
  std::error_code ec;
  int artefact_files = 0;
  if (fs::exists(*state_ + "/artifacts")) {
    for (const auto& e : fs::recursive_directory_iterator(*state_ + "/artifacts", ec)) {
      artefact_files += e.is_regular_file();
    }
  }
  EXPECT_EQ(artefact_files, 0);
}

TEST_F(BadInputTest, NamesAndUnknownJobs) {
  auto stub = mpt::v1::JobService::NewStub(*channel_);
  {
    grpc::ClientContext context;
    mpt::v1::GetJobRequest r;
    r.set_name("jobs/doesnotexist");
    mpt::v1::Job job;
    EXPECT_EQ(stub->GetJob(&context, r, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    mpt::v1::GetJobRequest r;
    r.set_name("not-a-job-name");
    mpt::v1::Job job;
    EXPECT_EQ(stub->GetJob(&context, r, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    mpt::v1::CancelJobRequest r;
    r.set_name("jobs/doesnotexist");
    mpt::v1::Job job;
    EXPECT_EQ(stub->CancelJob(&context, r, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    mpt::v1::DownloadArtifactRequest r;
    r.set_name("jobs/doesnotexist/artifacts/x");
    auto reader = stub->DownloadArtifact(&context, r);
    mpt::v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(BadInputTest, MptctlExitCodesForTheSameRefusals) {
  const std::string dir = testing::FreshTempDir("specs");
  const std::string model = testing::DataPath("tests/testdata/t5_relu");
  const std::string data = testing::DataPath("tests/testdata/tiny_tasks");
  auto write = [&](const std::string& name, const std::string& text) {
    EXPECT_TRUE(WriteFileAtomically(dir + "/" + name, text).ok());
    return dir + "/" + name;
  };
  const std::string coordinator = absl::StrCat("--coordinator=127.0.0.1:", port_);
  std::string err;
  const std::string ranks = write(
      "ranks.textproto",
      absl::StrCat("base_model: \"", model, "\" prompt { num_virtual_tokens: 4 num_ranks: 9 }\n",
                   "source { tasks { name: \"a\" train_path: \"", data,
                   "/first.train.jsonl\" } train { steps: 3 } }\n",
                   "distillation { train { steps: 3 } }\n"));
  EXPECT_EQ(RunMptctl({coordinator, "submit", "--spec=" + ranks}, &err), 2) << err;
  EXPECT_TRUE(absl::StrContains(err, "prompt.num_ranks")) << err;

  const std::string target = write(
      "target.textproto",
      absl::StrCat("base_model: \"", model, "\" prompt { num_virtual_tokens: 4 }\n",
                   "target { tasks { name: \"t\" train_path: \"", data,
                   "/echo.train.jsonl\" } train { steps: 3 } ",
                   "source_adapter: \"jobs/nope/artifacts/gone\" }\n"));
  EXPECT_EQ(RunMptctl({coordinator, "submit", "--kind=target", "--spec=" + target}, &err), 3)
      << err;
  EXPECT_TRUE(absl::StrContains(err, "target.source_adapter")) << err;

  // A data file missing on the coordinator's side (the local check off).
  const std::string missing = write(
      "missing.textproto",
      absl::StrCat("base_model: \"", model, "\"\n",
                   "source { tasks { name: \"a\" train_path: \"", dir,
                   "/nothere.jsonl\" } train { steps: 3 } }\n",
                   "distillation { train { steps: 3 } }\n"));
  EXPECT_EQ(RunMptctl({coordinator, "submit", "--nocheck_files", "--spec=" + missing}, &err), 2)
      << err;
  EXPECT_TRUE(absl::StrContains(err, "source.tasks[0].train_path")) << err;
  EXPECT_EQ(RunMptctl({coordinator, "submit", "--kind=bogus", "--spec=" + missing}, &err), 2);
  EXPECT_EQ(RunMptctl({coordinator, "get", "jobs/nothing"}, &err), 3);
}

}  // namespace
}  // namespace mpt
