// A job store whose writes fail: the call fails with the store's error,
// nothing of it is visible afterwards, and the coordinator carries on from
// what the store holds.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/fake_clock.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::CountJobs;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;
using ::mpt::testing::AdapterBlobFor;
using ::mpt::testing::Upload;

// Forwards to a real store; Commit() fails while `fail` is set.
class FlakyJobStore : public JobStore {
 public:
  FlakyJobStore(std::unique_ptr<JobStore> real, std::shared_ptr<std::atomic<bool>> fail)
      : real_(std::move(real)), fail_(std::move(fail)) {}
  absl::Status Commit(const StoreWrite& write) override {
    if (fail_->load() && !write.empty()) return absl::UnavailableError("disk full (injected)");
    return real_->Commit(write);
  }
  absl::StatusOr<std::optional<mpt::v1::Job>> ReadJob(const std::string& name) override {
    return real_->ReadJob(name);
  }
  absl::StatusOr<JobPage> ListJobs(const JobListFilter& filter, int64_t before_seq,
                                   int page_size) override {
    return real_->ListJobs(filter, before_seq, page_size);
  }
  absl::StatusOr<std::vector<mpt::v1::JobEvent>> ReadEvents(const std::string& name,
                                                            int64_t after, int limit) override {
    return real_->ReadEvents(name, after, limit);
  }
  absl::StatusOr<std::optional<RequestIdRecord>> FindRequestId(const std::string& id) override {
    return real_->FindRequestId(id);
  }
  absl::StatusOr<std::optional<mpt::v1::Artifact>> ReadArtifact(const std::string& name) override {
    return real_->ReadArtifact(name);
  }
  absl::StatusOr<int64_t> CountArtifactsWithSha256(const std::string& sha256) override {
    return real_->CountArtifactsWithSha256(sha256);
  }
  absl::StatusOr<StoreSnapshot> LoadActive() override { return real_->LoadActive(); }
  absl::StatusOr<StageLogPage> ReadStageLog(const std::string& job, const std::string& stage,
                                            int64_t after_line, int limit) override {
    return real_->ReadStageLog(job, stage, after_line, limit);
  }

 private:
  std::unique_ptr<JobStore> real_;
  std::shared_ptr<std::atomic<bool>> fail_;
};

class StoreFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto real = SqliteJobStore::Open(":memory:");
    ASSERT_TRUE(real.ok());
    auto blobs = ArtifactStore::Open(::mpt::testing::FreshTempDir("store_failure"));
    ASSERT_TRUE(blobs.ok());
    auto c = Coordinator::Create({}, std::make_unique<FlakyJobStore>(*std::move(real), fail_),
                                 *std::move(blobs), clock_);
    ASSERT_TRUE(c.ok()) << c.status();
    core_ = *std::move(c);
  }

  std::shared_ptr<std::atomic<bool>> fail_ = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::unique_ptr<Coordinator> core_;
};

TEST_F(StoreFailureTest, AFailedWriteLeavesNoTrace) {
  auto kept = core_->SubmitJob(SourceRequest("a"));
  ASSERT_TRUE(kept.ok());
  fail_->store(true);
  auto lost = core_->SubmitJob(SourceRequest("b"));
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  mpt::v1::Worker w;
  EXPECT_EQ(core_->RegisterWorker(w).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(core_->ListWorkers().workers().empty());
  fail_->store(false);
  EXPECT_EQ(CountJobs(core_.get()), 1);
  auto job = core_->GetJob(kept->name());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), mpt::v1::QUEUED);
  EXPECT_EQ(job->last_event(), kept->last_event());
}

// Submissions answered by the group commit (SubmitJobAsync, what the gRPC
// service calls) fail together when their batch fails, the state is
// reloaded once, and the same request ids succeed when retried.
TEST_F(StoreFailureTest, ConcurrentAsyncSubmissionsOfAFailedBatchAllFailAndRetry) {
  auto kept = core_->SubmitJob(SourceRequest("a"));
  ASSERT_TRUE(kept.ok());
  auto with_id = [](int i) {
    mpt::v1::SubmitJobRequest r = SourceRequest(absl::StrCat("r", i));
    r.set_request_id(absl::StrCat("retry-", i));
    return r;
  };
  constexpr int kSubmissions = 24;
  absl::Mutex mu;
  std::vector<absl::StatusCode> codes;
  auto submit_all = [&] {
    {
      absl::MutexLock lock(&mu);
      codes.clear();
    }
    for (int i = 0; i < kSubmissions; ++i) {
      core_->SubmitJobAsync(with_id(i), [&](absl::StatusOr<Coordinator::SubmittedJob> job) {
        absl::MutexLock lock(&mu);
        codes.push_back(job.status().code());
      });
    }
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return codes.size() == kSubmissions; };
    mu.Await(absl::Condition(&all));
    return codes;
  };
  fail_->store(true);
  for (absl::StatusCode code : submit_all()) EXPECT_EQ(code, absl::StatusCode::kUnavailable);
  EXPECT_EQ(CountJobs(core_.get()), 1);  // nothing of the failed batches stored
  fail_->store(false);
  for (absl::StatusCode code : submit_all()) EXPECT_EQ(code, absl::StatusCode::kOk);
  EXPECT_EQ(CountJobs(core_.get()), 1 + kSubmissions);
  // The retried ids name the jobs now stored: a third try returns them.
  auto again = core_->SubmitJob(with_id(3));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(CountJobs(core_.get()), 1 + kSubmissions);
}

TEST_F(StoreFailureTest, AssignmentSurvivesAFailedCompletion) {
  const std::string worker = Register(core_.get());
  auto job = core_->SubmitJob(SourceRequest("a"));
  ASSERT_TRUE(job.ok());
  auto a = Poll(core_.get(), worker);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(Upload(core_.get(), a->id(), "adapter", AdapterBlobFor(*a)).ok());
  fail_->store(true);
  EXPECT_EQ(::mpt::testing::Complete(core_.get(), a->id()).code(),
            absl::StatusCode::kUnavailable);
  fail_->store(false);
  // Nothing moved: the worker still holds the assignment and may retry.
  auto again = Poll(core_.get(), worker);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id(), a->id());
  ASSERT_TRUE(::mpt::testing::Complete(core_.get(), a->id()).ok());
  EXPECT_EQ(core_->GetJob(job->name())->state(), mpt::v1::SUCCEEDED);
}

}  // namespace
}  // namespace mpt
