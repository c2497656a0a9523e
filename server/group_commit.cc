#include "server/group_commit.h"

#include <utility>

namespace mpt {
namespace {
constexpr size_t kKeptFailures = 64;
}  // namespace

GroupCommitter::GroupCommitter(JobStore* store) : store_(store) {
  thread_ = std::thread([this] { Run(); });
  callback_thread_ = std::thread([this] { RunCallbacks(); });
}

GroupCommitter::~GroupCommitter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
  {
    absl::MutexLock lock(&mu_);
    callbacks_stop_ = true;
  }
  callback_thread_.join();
}

void GroupCommitter::RunCallbacks() {
  while (true) {
    std::deque<std::pair<Callback, absl::Status>> due;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return !due_.empty() || callbacks_stop_;
      };
      mu_.Await(absl::Condition(&ready));
      if (due_.empty()) return;  // stopping, nothing left
      due.swap(due_);
    }
    for (auto& [callback, status] : due) std::move(callback)(status);
  }
}

int64_t GroupCommitter::Enqueue(StoreWrite write, Callback on_resolved) {
  absl::MutexLock lock(&mu_);
  const int64_t ticket = next_ticket_++;
  queue_.push_back(Entry{ticket, std::move(write), std::move(on_resolved)});
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
  failures_.push_back({queue_.front().ticket, queue_.back().ticket, status});
  if (failures_.size() > kKeptFailures) failures_.pop_front();
  resolved_through_ = queue_.back().ticket;
  for (Entry& e : queue_) {
    if (e.on_resolved) due_.emplace_back(std::move(e.on_resolved), status);
  }
  queue_.clear();
}

void GroupCommitter::Run() {
  while (true) {
    std::deque<Entry> batch;
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
    for (const Entry& e : batch) writes.push_back(&e.write);
    absl::Status status = store_->CommitBatch(writes);
    absl::MutexLock lock(&mu_);
    ++batches_;
    resolved_through_ = batch.back().ticket;
    if (!status.ok()) {
      failures_.push_back({batch.front().ticket, batch.back().ticket, status});
      if (failures_.size() > kKeptFailures) failures_.pop_front();
      failed_ = true;
      failed_status_ = status;
    }
    for (Entry& e : batch) {
      if (e.on_resolved) due_.emplace_back(std::move(e.on_resolved), status);
    }
  }
}

}  // namespace mpt
