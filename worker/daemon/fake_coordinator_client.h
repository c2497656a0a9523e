// An in-memory CoordinatorClient for tests of the worker daemon: it hands
// out queued assignments, stores artefacts, records every report, and can
// play an unreachable coordinator or one that forgot its workers.
#ifndef MPT_WORKER_DAEMON_FAKE_COORDINATOR_CLIENT_H_
#define MPT_WORKER_DAEMON_FAKE_COORDINATOR_CLIENT_H_

#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "worker/daemon/coordinator_client.h"

namespace mpt {

class FakeCoordinatorClient final : public CoordinatorClient {
 public:
  struct Upload {
    std::string assignment;
    std::string kind;
    int64_t step = 0;
    std::string blob;
    std::string worker;  // the worker name the upload carried
  };

  // --- Scripting (thread-safe) ---
  // While false, every call returns UNAVAILABLE.
  void SetAvailable(bool available);
  void AddAssignment(const mpt::v1::Assignment& assignment);
  // FetchArtifact(name) returns `blob` (or DATA_LOSS once when `corrupt_once`).
  void PutArtifact(const std::string& name, const std::string& blob, bool corrupt_once = false);
  // FetchArtifact(name) answers DATA_LOSS every time: an artefact damaged in
  // the coordinator's store.
  void PutDamagedArtifact(const std::string& name);
  // The next heartbeats list this assignment as cancelled.
  void CancelAssignment(const std::string& id);
  // ReportProgress answers `cancelled` for this assignment.
  void CancelThroughProgress(const std::string& id);
  // Heartbeat and PollAssignment answer NOT_FOUND for every name given so far.
  void ForgetWorkers();

  // --- Inspection (thread-safe) ---
  int registrations() const;
  std::vector<mpt::v1::ReportProgressRequest> progress() const;
  std::vector<Upload> uploads() const;
  std::vector<mpt::v1::CompleteAssignmentRequest> completions() const;
  // Blocks until `n` completions were recorded or `timeout` passed.
  bool WaitForCompletions(size_t n, absl::Duration timeout) const;
  bool WaitForUploads(const std::string& kind, size_t n, absl::Duration timeout) const;
  bool WaitForProgress(size_t n, absl::Duration timeout) const;

  // --- CoordinatorClient ---
  absl::StatusOr<mpt::v1::RegisterWorkerResponse> RegisterWorker(
      const mpt::v1::Worker& worker) override;
  absl::StatusOr<mpt::v1::HeartbeatResponse> Heartbeat(const std::string& worker) override;
  absl::StatusOr<std::optional<mpt::v1::Assignment>> PollAssignment(
      const std::string& worker, absl::Duration wait) override;
  absl::StatusOr<mpt::v1::ReportProgressResponse> ReportProgress(
      const mpt::v1::ReportProgressRequest& request) override;
  absl::StatusOr<mpt::v1::Artifact> UploadArtifact(const std::string& worker,
                                                   const std::string& assignment,
                                                   const std::string& kind, int64_t step,
                                                   absl::string_view blob) override;
  absl::StatusOr<std::string> FetchArtifact(const std::string& name) override;
  absl::Status CompleteAssignment(const mpt::v1::CompleteAssignmentRequest& request) override;
  absl::Status StoreSet(const RendezvousMember& member, const std::string& key,
                        const std::string& value) override;
  absl::StatusOr<std::vector<std::string>> StoreGet(const RendezvousMember& member,
                                                    const std::vector<std::string>& keys,
                                                    absl::Duration wait) override;
  void InterruptWaits() override;

 private:
  absl::Status Gate() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Known(const std::string& worker) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  int64_t interrupts_ ABSL_GUARDED_BY(mu_) = 0;
  int next_worker_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<std::string> forgotten_ ABSL_GUARDED_BY(mu_);
  std::deque<mpt::v1::Assignment> assignments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> artifacts_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> corrupt_once_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> damaged_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_by_progress_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> store_ ABSL_GUARDED_BY(mu_);
  int registrations_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<mpt::v1::ReportProgressRequest> progress_ ABSL_GUARDED_BY(mu_);
  std::vector<Upload> uploads_ ABSL_GUARDED_BY(mu_);
  std::vector<mpt::v1::CompleteAssignmentRequest> completions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_FAKE_COORDINATOR_CLIENT_H_
