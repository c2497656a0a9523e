#include "server/group_commit.h"

#include <utility>

namespace mpt {
namespace {
constexpr size_t kKeptFailures = 64;
}  // namespace

GroupCommitter::GroupCommitter(JobStore* store) : store_(store) {
  thread_ = std::thread([this] { Run(); });
}

GroupCommitter::~GroupCommitter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

int64_t GroupCommitter::Enqueue(StoreWrite write) {
  absl::MutexLock lock(&mu_);
  const int64_t ticket = next_ticket_++;
  queue_.emplace_back(ticket, std::move(write));
  return ticket;
}

absl::Status GroupCommitter::Wait(int64_t ticket) {
  absl::MutexLock lock(&mu_);
  auto resolved = [this, ticket]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return resolved_through_ >= ticket;
  };
  mu_.Await(absl::Condition(&resolved));
  for (const Failure& f : failures_) {
    if (ticket >= f.first && ticket <= f.last) return f.status;
  }
  return absl::OkStatus();
}

bool GroupCommitter::Recover() {
  absl::MutexLock lock(&mu_);
  if (!failed_) return false;
  FailQueuedLocked(failed_status_);
  failed_ = false;
  return true;
}

int64_t GroupCommitter::batches() const {
  absl::MutexLock lock(&mu_);
  return batches_;
}

void GroupCommitter::FailQueuedLocked(const absl::Status& status) {
  if (queue_.empty()) return;
  failures_.push_back({queue_.front().first, queue_.back().first, status});
  if (failures_.size() > kKeptFailures) failures_.pop_front();
  resolved_through_ = queue_.back().first;
  queue_.clear();
}

void GroupCommitter::Run() {
  while (true) {
    std::deque<std::pair<int64_t, StoreWrite>> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left
      if (failed_) {
        FailQueuedLocked(failed_status_);
        continue;
      }
      batch.swap(queue_);
    }
    std::vector<const StoreWrite*> writes;
    writes.reserve(batch.size());
    for (const auto& [ticket, write] : batch) writes.push_back(&write);
    absl::Status status = store_->CommitBatch(writes);
    absl::MutexLock lock(&mu_);
    ++batches_;
    resolved_through_ = batch.back().first;
    if (!status.ok()) {
      failures_.push_back({batch.front().first, batch.back().first, status});
      if (failures_.size() > kKeptFailures) failures_.pop_front();
      failed_ = true;
      failed_status_ = status;
    }
  }
}

}  // namespace mpt
