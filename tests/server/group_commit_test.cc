// Group commit: nothing is acknowledged before its batch's commit returned,
// a failed batch fails every write in it and every write queued behind it
// until Recover(), and a coordinator under concurrent submissions acks
// only what a restart finds.
#include "server/group_commit.h"

#include <atomic>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

// A store whose commits block until released and may be told to fail. It
// records the job names of every committed write.
class GatedStore : public JobStore {
 public:
  absl::Status Commit(const StoreWrite& write) override { return CommitBatch({&write}); }
  absl::Status CommitBatch(const std::vector<const StoreWrite*>& writes) override {
    absl::MutexLock lock(&mu_);
    ++entered_;
    auto open = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return released_ >= entered_; };
    mu_.Await(absl::Condition(&open));
    batch_sizes_.push_back(static_cast<int>(writes.size()));
    if (fail_) return absl::UnavailableError("disk full (injected)");
    for (const StoreWrite* w : writes) {
      for (const auto& j : w->jobs) committed_.push_back(j.job().name());
    }
    return absl::OkStatus();
  }
  // Lets the next blocked (or future) commit through.
  void ReleaseOne() {
    absl::MutexLock lock(&mu_);
    ++released_;
  }
  void ReleaseAll() {
    absl::MutexLock lock(&mu_);
    released_ = 1 << 30;
  }
  void WaitEntered(int n) {
    absl::MutexLock lock(&mu_);
    auto entered = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return entered_ >= n; };
    mu_.Await(absl::Condition(&entered));
  }
  void SetFail(bool fail) {
    absl::MutexLock lock(&mu_);
    fail_ = fail;
  }
  std::vector<std::string> committed() {
    absl::MutexLock lock(&mu_);
    return committed_;
  }
  std::vector<int> batch_sizes() {
    absl::MutexLock lock(&mu_);
    return batch_sizes_;
  }

  absl::StatusOr<std::optional<mpt::v1::Job>> ReadJob(const std::string&) override {
    return std::optional<mpt::v1::Job>();
  }
  absl::StatusOr<JobPage> ListJobs(const JobListFilter&, int64_t, int) override {
    return JobPage{};
  }
  absl::StatusOr<std::vector<mpt::v1::JobEvent>> ReadEvents(const std::string&, int64_t,
                                                            int) override {
    return std::vector<mpt::v1::JobEvent>();
  }
  absl::StatusOr<std::optional<RequestIdRecord>> FindRequestId(const std::string&) override {
    return std::optional<RequestIdRecord>();
  }
  absl::StatusOr<std::optional<mpt::v1::Artifact>> ReadArtifact(const std::string&) override {
    return std::optional<mpt::v1::Artifact>();
  }
  absl::StatusOr<int64_t> CountArtifactsWithSha256(const std::string&) override { return 0; }
  absl::StatusOr<StoreSnapshot> LoadActive() override { return StoreSnapshot{}; }
  absl::StatusOr<StageLogPage> ReadStageLog(const std::string&, const std::string&, int64_t,
                                            int) override {
    return StageLogPage{};
  }

 private:
  absl::Mutex mu_;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  int released_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> committed_ ABSL_GUARDED_BY(mu_);
  std::vector<int> batch_sizes_ ABSL_GUARDED_BY(mu_);
};

StoreWrite JobWrite(const std::string& name) {
  StoreWrite w;
  w.jobs.emplace_back();
  w.jobs.back().mutable_job()->set_name(name);
  return w;
}

// Waits for `ticket` on a thread; `done` turns true when Wait() returned.
struct Waiter {
  Waiter(GroupCommitter& c, int64_t ticket) {
    thread = std::thread([&c, ticket, this] {
      status = c.Wait(ticket);
      done = true;
    });
  }
  ~Waiter() { thread.join(); }
  std::atomic<bool> done{false};
  absl::Status status;
  std::thread thread;
};

TEST(GroupCommitTest, WritesQueuedDuringACommitShareTheNextOneAndWaitForIt) {
  GatedStore store;
  GroupCommitter committer(&store);
  const int64_t first = committer.Enqueue(JobWrite("jobs/a"));
  store.WaitEntered(1);  // "jobs/a" is being committed, alone
  std::vector<int64_t> tickets;
  for (const char* name : {"jobs/b", "jobs/c", "jobs/d"}) {
    tickets.push_back(committer.Enqueue(JobWrite(name)));
  }
  Waiter a(committer, first), b(committer, tickets[0]), d(committer, tickets[2]);
  absl::SleepFor(absl::Milliseconds(50));
  // Nothing acknowledged while the store has not returned.
  EXPECT_FALSE(a.done);
  EXPECT_FALSE(b.done);
  EXPECT_FALSE(d.done);
  store.ReleaseOne();
  store.WaitEntered(2);  // b, c and d: one batch
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(a.done);
  EXPECT_FALSE(b.done);
  EXPECT_FALSE(d.done);
  store.ReleaseOne();
  EXPECT_TRUE(committer.Wait(tickets[0]).ok());
  EXPECT_TRUE(committer.Wait(tickets[2]).ok());
  EXPECT_EQ(store.batch_sizes(), (std::vector<int>{1, 3}));
  EXPECT_EQ(store.committed(),
            (std::vector<std::string>{"jobs/a", "jobs/b", "jobs/c", "jobs/d"}));
}

TEST(GroupCommitTest, AFailedBatchFailsEveryWaiterInItAndEverythingQueuedBehind) {
  GatedStore store;
  GroupCommitter committer(&store);
  const int64_t first = committer.Enqueue(JobWrite("jobs/a"));
  store.WaitEntered(1);
  const int64_t second = committer.Enqueue(JobWrite("jobs/b"));
  const int64_t third = committer.Enqueue(JobWrite("jobs/c"));
  store.ReleaseOne();
  ASSERT_TRUE(committer.Wait(first).ok());
  store.WaitEntered(2);  // b and c
  store.SetFail(true);
  // Queued while the failing batch is in the store: built on its changes.
  const int64_t behind = committer.Enqueue(JobWrite("jobs/d"));
  store.ReleaseAll();
  EXPECT_EQ(committer.Wait(second).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(committer.Wait(third).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(committer.Wait(behind).code(), absl::StatusCode::kUnavailable);
  // Waiting again gives the same answer.
  EXPECT_EQ(committer.Wait(second).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(committer.Recover());
  EXPECT_FALSE(committer.Recover());  // only the first caller reloads
  store.SetFail(false);
  const int64_t after = committer.Enqueue(JobWrite("jobs/e"));
  EXPECT_TRUE(committer.Wait(after).ok());
  EXPECT_EQ(store.committed(), (std::vector<std::string>{"jobs/a", "jobs/e"}));
}

// Callbacks: called once per ticket, on the committer's callback thread, in ticket
// order, only after the store returned; a callback may queue more writes.
class Outcomes {
 public:
  GroupCommitter::Callback For(int64_t id) {
    return [this, id](absl::Status status) {
      absl::MutexLock lock(&mu_);
      calls_.push_back({id, status.code()});
      threads_.insert(std::this_thread::get_id());
    };
  }
  std::vector<std::pair<int64_t, absl::StatusCode>> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  bool called_on(std::thread::id id) {
    absl::MutexLock lock(&mu_);
    return threads_.count(id) > 0;
  }
  size_t thread_count() {
    absl::MutexLock lock(&mu_);
    return threads_.size();
  }
  void AwaitCalls(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_.size() >= n; };
    mu_.Await(absl::Condition(&enough));
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<int64_t, absl::StatusCode>> calls_ ABSL_GUARDED_BY(mu_);
  std::set<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
};

TEST(GroupCommitTest, CallbacksRunOnceDurableInTicketOrderAndMayQueueMore) {
  GatedStore store;
  Outcomes outcomes;
  GroupCommitter committer(&store);
  committer.Enqueue(JobWrite("jobs/a"), outcomes.For(1));
  store.WaitEntered(1);
  committer.Enqueue(JobWrite("jobs/b"), outcomes.For(2));
  // A callback that queues another write from the committer's callback thread.
  std::atomic<int64_t> chained{0};
  committer.Enqueue(JobWrite("jobs/c"), [&](absl::Status status) {
    ASSERT_TRUE(status.ok());
    chained = committer.Enqueue(JobWrite("jobs/d"), outcomes.For(4));
    outcomes.For(3)(status);
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(outcomes.calls().empty());  // the store has not returned
  store.ReleaseAll();
  outcomes.AwaitCalls(4);
  EXPECT_TRUE(committer.Wait(chained).ok());
  using C = absl::StatusCode;
  EXPECT_EQ(outcomes.calls(), (std::vector<std::pair<int64_t, C>>{
                                  {1, C::kOk}, {2, C::kOk}, {3, C::kOk}, {4, C::kOk}}));
  EXPECT_EQ(outcomes.thread_count(), 1u);
  EXPECT_EQ(store.committed(),
            (std::vector<std::string>{"jobs/a", "jobs/b", "jobs/c", "jobs/d"}));
}

TEST(GroupCommitTest, CallbacksOfFailedWritesGetTheErrorOnTheCommittersThread) {
  GatedStore store;
  Outcomes outcomes;
  auto committer = std::make_unique<GroupCommitter>(&store);
  committer->Enqueue(JobWrite("jobs/a"), outcomes.For(1));
  store.WaitEntered(1);
  store.SetFail(true);
  store.ReleaseAll();
  outcomes.AwaitCalls(1);
  // Queued after the failure: failed by the committer (no Recover yet) ...
  committer->Enqueue(JobWrite("jobs/b"), outcomes.For(2));
  outcomes.AwaitCalls(2);
  // Recover() fails what is still queued; whatever it fails, the callbacks
  // run on the committer's callback thread, never inside the caller's Recover()
  // (the coordinator calls it with its own lock held).
  committer->Enqueue(JobWrite("jobs/x"), outcomes.For(3));
  EXPECT_TRUE(committer->Recover());
  outcomes.AwaitCalls(3);
  store.SetFail(false);
  committer->Enqueue(JobWrite("jobs/c"), outcomes.For(4));
  outcomes.AwaitCalls(4);
  // Queued writes are committed, and their callbacks called, before the
  // destructor returns.
  store.SetFail(false);
  committer->Enqueue(JobWrite("jobs/d"), outcomes.For(5));
  committer.reset();
  using C = absl::StatusCode;
  EXPECT_EQ(outcomes.calls(), (std::vector<std::pair<int64_t, C>>{{1, C::kUnavailable},
                                                                  {2, C::kUnavailable},
                                                                  {3, C::kUnavailable},
                                                                  {4, C::kOk},
                                                                  {5, C::kOk}}));
  EXPECT_EQ(outcomes.thread_count(), 1u);
  EXPECT_FALSE(outcomes.called_on(std::this_thread::get_id()));
  EXPECT_EQ(store.committed(), (std::vector<std::string>{"jobs/c", "jobs/d"}));
}

// Every submission acknowledged by a coordinator under concurrent load is
// in the store when it is reopened.
class GroupCommitCoordinatorTest : public testing::CoordinatorTest {};

TEST_F(GroupCommitCoordinatorTest, EveryAcknowledgedSubmissionSurvivesARestart) {
  OpenFresh("group_commit_restart", /*on_disk=*/true);
  absl::Mutex mu;
  std::vector<std::string> acked;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        auto job = core_->SubmitJob(testing::SourceRequest(absl::StrCat("t", t, "_", i)));
        ASSERT_TRUE(job.ok()) << job.status();
        // Readable at once: GetJob serves only what is committed.
        auto read = core_->GetJob(job->name());
        ASSERT_TRUE(read.ok()) << read.status();
        absl::MutexLock lock(&mu);
        acked.push_back(job->name());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  Reopen();
  for (const std::string& name : acked) {
    auto job = core_->GetJob(name);
    EXPECT_TRUE(job.ok()) << name << ": " << job.status();
  }
  EXPECT_EQ(testing::CountJobs(core_.get()), 80);
}

// SubmitJobAsync answers from the committer's callback thread once the job is
// durable; a coordinator destroyed with submissions still queued answers
// every one of them first, and the store has each job it acknowledged.
TEST_F(GroupCommitCoordinatorTest, AsyncSubmissionsInFlightAtDestructionAreAnsweredAndKept) {
  OpenFresh("group_commit_async", /*on_disk=*/true);
  absl::Mutex mu;
  std::vector<std::string> acked;
  int answered = 0;
  const auto caller = std::this_thread::get_id();
  std::atomic<int> answered_on_caller{0};
  for (int i = 0; i < 40; ++i) {
    core_->SubmitJobAsync(testing::SourceRequest(absl::StrCat("async_", i)),
                          [&](absl::StatusOr<Coordinator::SubmittedJob> job) {
                            if (std::this_thread::get_id() == caller) ++answered_on_caller;
                            absl::MutexLock lock(&mu);
                            ++answered;
                            if (!job.ok()) return;
                            acked.push_back(job->job->name());
                            // The bytes are the job's.
                            mpt::v1::Job parsed;
                            EXPECT_TRUE(parsed.ParseFromString(*job->serialized));
                            EXPECT_EQ(parsed.SerializeAsString(), job->job->SerializeAsString());
                          });
  }
  Reopen();  // destroys the coordinator at once
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(answered, 40);
    EXPECT_EQ(acked.size(), 40u);
  }
  EXPECT_EQ(answered_on_caller, 0);  // none waited for the disk on the caller
  for (const std::string& name : acked) {
    auto job = core_->GetJob(name);
    EXPECT_TRUE(job.ok()) << name << ": " << job.status();
  }
  // A bad request is answered at once, on the caller's thread.
  mpt::v1::SubmitJobRequest bad;
  bool bad_answered = false;
  core_->SubmitJobAsync(bad, [&](absl::StatusOr<Coordinator::SubmittedJob> job) {
    bad_answered = true;
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
  });
  EXPECT_TRUE(bad_answered);
}

// Pages stay correct while jobs are added between them: newest first, no
// job twice, and every job that existed before the first page is seen.
TEST_F(GroupCommitCoordinatorTest, PagingIsStableUnderConcurrentInserts) {
  OpenFresh("paging_inserts", /*on_disk=*/true);
  std::set<std::string> before;
  for (int i = 0; i < 60; ++i) before.insert(Submit(testing::SourceRequest(absl::StrCat("p", i))));
  std::atomic<bool> stop{false};
  std::thread inserter([&] {
    for (int i = 0; !stop; ++i) {
      ASSERT_TRUE(core_->SubmitJob(testing::SourceRequest(absl::StrCat("n", i))).ok());
    }
  });
  std::set<std::string> seen;
  std::string token;
  int64_t last_create = std::numeric_limits<int64_t>::max();
  int pages = 0;
  do {
    mpt::v1::ListJobsRequest r;
    r.set_page_size(7);
    r.set_page_token(token);
    r.add_states(mpt::v1::QUEUED);
    auto page = core_->ListJobs(r);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const mpt::v1::Job& job : page->jobs()) {
      EXPECT_TRUE(seen.insert(job.name()).second) << job.name() << " seen twice";
      const int64_t created = job.create_time().seconds() * 1000000000 + job.create_time().nanos();
      EXPECT_LE(created, last_create) << "not newest first";
      last_create = created;
    }
    token = page->next_page_token();
    ++pages;
    absl::SleepFor(absl::Milliseconds(2));  // let inserts land between pages
  } while (!token.empty());
  stop = true;
  inserter.join();
  for (const std::string& name : before) EXPECT_EQ(seen.count(name), 1u) << name;
  EXPECT_GE(pages, 9);
}

}  // namespace
}  // namespace mpt
