#include "server/published_jobs.h"

namespace mpt {

void PublishedJobs::Publish(int64_t version, mpt::v1::Job job) {
  Publish(version, std::make_shared<const mpt::v1::Job>(std::move(job)));
}

void PublishedJobs::Publish(int64_t version, std::shared_ptr<const mpt::v1::Job> job,
                            std::shared_ptr<const std::string> serialized) {
  absl::MutexLock lock(&mu_);
  Entry& e = jobs_[job->name()];
  if (e.job != nullptr && e.version > version) return;
  e.version = version;
  e.job = std::move(job);
  e.serialized = std::move(serialized);
}

void PublishedJobs::SetProgress(const std::string& name, const std::string& stage_id,
                                const mpt::v1::Progress& progress) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(name);
  if (it == jobs_.end()) return;
  auto job = std::make_shared<mpt::v1::Job>(*it->second.job);  // readers keep the old copy
  *job->mutable_progress() = progress;
  for (mpt::v1::Stage& stage : *job->mutable_stages()) {
    if (stage.id() == stage_id) *stage.mutable_progress() = progress;
  }
  it->second.job = std::move(job);
  it->second.serialized = nullptr;
}

void PublishedJobs::Remove(const std::string& name) {
  absl::MutexLock lock(&mu_);
  jobs_.erase(name);
}

void PublishedJobs::Clear() {
  absl::MutexLock lock(&mu_);
  jobs_.clear();
}

std::shared_ptr<const mpt::v1::Job> PublishedJobs::Find(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = jobs_.find(name);
  return it == jobs_.end() ? nullptr : it->second.job;
}

std::shared_ptr<const std::string> PublishedJobs::FindSerialized(const std::string& name) {
  return FindSerializedIf(name, std::nullopt);
}

std::shared_ptr<const std::string> PublishedJobs::FindSerializedInState(const std::string& name,
                                                                        mpt::v1::JobState state) {
  return FindSerializedIf(name, state);
}

std::shared_ptr<const std::string> PublishedJobs::FindSerializedIf(
    const std::string& name, std::optional<mpt::v1::JobState> state) {
  std::shared_ptr<const mpt::v1::Job> job;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = jobs_.find(name);
    if (it == jobs_.end()) return nullptr;
    if (state.has_value() && it->second.job->state() != *state) return nullptr;
    if (it->second.serialized != nullptr) return it->second.serialized;
    job = it->second.job;
  }
  auto serialized = std::make_shared<const std::string>(job->SerializeAsString());
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(name);
  // Kept only while that copy is still the published one.
  if (it != jobs_.end() && it->second.job == job) it->second.serialized = serialized;
  return serialized;
}

}  // namespace mpt
