#include "server/job_event_notifier.h"

#include <utility>

namespace mpt {

JobEventNotifier::JobEventNotifier() : thread_([this] { Loop(); }) {}

JobEventNotifier::~JobEventNotifier() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void JobEventNotifier::Add(const std::string& job, JobEventListener* listener) {
  absl::MutexLock lock(&mu_);
  by_job_[job].insert(listener);
  registered_.insert(listener);
  ScheduleLocked(listener);
}

void JobEventNotifier::Remove(const std::string& job, JobEventListener* listener) {
  absl::MutexLock lock(&mu_);
  auto it = by_job_.find(job);
  if (it != by_job_.end()) {
    it->second.erase(listener);
    if (it->second.empty()) by_job_.erase(it);
  }
  registered_.erase(listener);
  if (pending_set_.erase(listener) > 0) {
    for (auto p = pending_.begin(); p != pending_.end(); ++p) {
      if (*p == listener) {
        pending_.erase(p);
        break;
      }
    }
  }
  if (std::this_thread::get_id() == thread_.get_id()) return;  // from its own call
  auto not_running = [this, listener]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return running_ != listener;
  };
  mu_.Await(absl::Condition(&not_running));
}

void JobEventNotifier::Notify(const std::string& job) {
  absl::MutexLock lock(&mu_);
  auto it = by_job_.find(job);
  if (it == by_job_.end()) return;
  for (JobEventListener* listener : it->second) ScheduleLocked(listener);
}

void JobEventNotifier::NotifyAll() {
  absl::MutexLock lock(&mu_);
  for (JobEventListener* listener : registered_) ScheduleLocked(listener);
}

void JobEventNotifier::Wake(JobEventListener* listener) {
  absl::MutexLock lock(&mu_);
  if (registered_.count(listener) > 0) ScheduleLocked(listener);
}

int JobEventNotifier::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(registered_.size());
}

void JobEventNotifier::ScheduleLocked(JobEventListener* listener) {
  if (pending_set_.insert(listener).second) pending_.push_back(listener);
}

void JobEventNotifier::Loop() {
  absl::MutexLock lock(&mu_);
  auto work = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !pending_.empty(); };
  while (true) {
    mu_.Await(absl::Condition(&work));
    if (stop_) return;
    JobEventListener* listener = pending_.front();
    pending_.pop_front();
    pending_set_.erase(listener);
    running_ = listener;
    mu_.Unlock();
    listener->OnJobEvents();
    mu_.Lock();
    running_ = nullptr;
  }
}

}  // namespace mpt
