#include "worker/daemon/fake_coordinator_client.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/sha256.h"

namespace mpt {

void FakeCoordinatorClient::SetAvailable(bool available) {
  absl::MutexLock lock(&mu_);
  available_ = available;
}

void FakeCoordinatorClient::AddAssignment(const mpt::v1::Assignment& assignment) {
  absl::MutexLock lock(&mu_);
  assignments_.push_back(assignment);
}

void FakeCoordinatorClient::PutArtifact(const std::string& name, const std::string& blob,
                                        bool corrupt_once) {
  absl::MutexLock lock(&mu_);
  artifacts_[name] = blob;
  if (corrupt_once) corrupt_once_.insert(name);
}

void FakeCoordinatorClient::PutDamagedArtifact(const std::string& name) {
  absl::MutexLock lock(&mu_);
  artifacts_[name] = "";
  damaged_.insert(name);
}

void FakeCoordinatorClient::CancelAssignment(const std::string& id) {
  absl::MutexLock lock(&mu_);
  cancelled_.insert(id);
}

void FakeCoordinatorClient::CancelThroughProgress(const std::string& id) {
  absl::MutexLock lock(&mu_);
  cancelled_by_progress_.insert(id);
}

void FakeCoordinatorClient::ForgetWorkers() {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < next_worker_; ++i) forgotten_.insert(absl::StrCat("workers/w", i));
}

int FakeCoordinatorClient::registrations() const {
  absl::MutexLock lock(&mu_);
  return registrations_;
}

std::vector<mpt::v1::ReportProgressRequest> FakeCoordinatorClient::progress() const {
  absl::MutexLock lock(&mu_);
  return progress_;
}

std::vector<FakeCoordinatorClient::Upload> FakeCoordinatorClient::uploads() const {
  absl::MutexLock lock(&mu_);
  return uploads_;
}

std::vector<mpt::v1::CompleteAssignmentRequest> FakeCoordinatorClient::completions() const {
  absl::MutexLock lock(&mu_);
  return completions_;
}

bool FakeCoordinatorClient::WaitForCompletions(size_t n, absl::Duration timeout) const {
  auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completions_.size() >= n; };
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

bool FakeCoordinatorClient::WaitForUploads(const std::string& kind, size_t n,
                                           absl::Duration timeout) const {
  auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t count = 0;
    for (const Upload& u : uploads_) count += u.kind == kind;
    return count >= n;
  };
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

bool FakeCoordinatorClient::WaitForProgress(size_t n, absl::Duration timeout) const {
  auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return progress_.size() >= n; };
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

absl::Status FakeCoordinatorClient::Gate() const {
  if (!available_) return absl::UnavailableError("fake coordinator: unavailable");
  return absl::OkStatus();
}

bool FakeCoordinatorClient::Known(const std::string& worker) const {
  return forgotten_.count(worker) == 0;
}

absl::StatusOr<mpt::v1::RegisterWorkerResponse> FakeCoordinatorClient::RegisterWorker(
    const mpt::v1::Worker&) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  ++registrations_;
  mpt::v1::RegisterWorkerResponse r;
  r.set_name(absl::StrCat("workers/w", next_worker_++));
  r.set_heartbeat_seconds(0.05);
  r.set_lease_seconds(1);
  return r;
}

absl::StatusOr<mpt::v1::HeartbeatResponse> FakeCoordinatorClient::Heartbeat(
    const std::string& worker) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  if (!Known(worker)) return absl::NotFoundError(absl::StrCat(worker, ": unknown worker"));
  mpt::v1::HeartbeatResponse r;
  for (const std::string& id : cancelled_) r.add_cancelled_assignments(id);
  return r;
}

absl::StatusOr<std::optional<mpt::v1::Assignment>> FakeCoordinatorClient::PollAssignment(
    const std::string& worker, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  if (!Known(worker)) return absl::NotFoundError(absl::StrCat(worker, ": unknown worker"));
  const int64_t interrupts = interrupts_;
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !assignments_.empty() || !available_ || interrupts_ != interrupts;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
  if (interrupts_ != interrupts) return absl::CancelledError("fake: interrupted");
  if (absl::Status s = Gate(); !s.ok()) return s;
  if (assignments_.empty()) return std::optional<mpt::v1::Assignment>();
  mpt::v1::Assignment a = assignments_.front();
  assignments_.pop_front();
  return std::optional<mpt::v1::Assignment>(a);
}

absl::StatusOr<mpt::v1::ReportProgressResponse> FakeCoordinatorClient::ReportProgress(
    const mpt::v1::ReportProgressRequest& request) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  progress_.push_back(request);
  mpt::v1::ReportProgressResponse r;
  r.set_cancelled(cancelled_by_progress_.count(request.assignment()) > 0);
  return r;
}

absl::StatusOr<mpt::v1::Artifact> FakeCoordinatorClient::UploadArtifact(
    const std::string& worker, const std::string& assignment, const std::string& kind, int64_t step,
    absl::string_view blob) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  uploads_.push_back(Upload{assignment, kind, step, std::string(blob), worker});
  mpt::v1::Artifact a;
  a.set_name(absl::StrCat("jobs/j/artifacts/a", uploads_.size()));
  a.set_kind(kind);
  a.set_sha256(Sha256Hex(blob));
  a.set_size_bytes(static_cast<int64_t>(blob.size()));
  artifacts_[a.name()] = std::string(blob);
  return a;
}

absl::StatusOr<std::string> FakeCoordinatorClient::FetchArtifact(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  auto it = artifacts_.find(name);
  if (it == artifacts_.end()) return absl::NotFoundError(absl::StrCat(name, ": no such artifact"));
  if (corrupt_once_.erase(name) > 0) return absl::DataLossError("fake: checksum mismatch");
  if (damaged_.count(name) > 0) {
    return absl::DataLossError(absl::StrCat(name, ": blob is corrupt in the store"));
  }
  return it->second;
}

absl::Status FakeCoordinatorClient::CompleteAssignment(
    const mpt::v1::CompleteAssignmentRequest& request) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  completions_.push_back(request);
  return absl::OkStatus();
}

void FakeCoordinatorClient::InterruptWaits() {
  absl::MutexLock lock(&mu_);
  ++interrupts_;
}

namespace {

// As the coordinator: a store call names its group, rank and worker.
absl::Status CheckMember(const RendezvousMember& member) {
  if (member.group.empty() || member.assignment.empty() || member.worker.empty()) {
    return absl::InvalidArgumentError("fake: group, assignment and worker are required");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FakeCoordinatorClient::StoreSet(const RendezvousMember& member,
                                             const std::string& key, const std::string& value) {
  RETURN_IF_ERROR(CheckMember(member));
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  store_[member.group + "\n" + key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FakeCoordinatorClient::StoreGet(
    const RendezvousMember& member, const std::vector<std::string>& keys, absl::Duration wait) {
  RETURN_IF_ERROR(CheckMember(member));
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Gate(); !s.ok()) return s;
  auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::string& k : keys) {
      if (store_.count(member.group + "\n" + k) == 0) return false;
    }
    return true;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&all), wait)) {
    return absl::DeadlineExceededError("fake: keys missing");
  }
  std::vector<std::string> values;
  for (const std::string& k : keys) values.push_back(store_[member.group + "\n" + k]);
  return values;
}

}  // namespace mpt
