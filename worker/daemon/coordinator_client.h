// The worker's view of the coordinator: the WorkerService calls as plain
// functions that return absl::Status, behind an interface so that the
// daemon's logic is tested against a fake (see worker/daemon/fake_coordinator_client.h).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
//                    GrpcCoordinatorClient::Create(channel_options));
//   ASSIGN_OR_RETURN(auto registered, client->RegisterWorker(worker));
//
// Errors are the coordinator's canonical codes, passed through: UNAVAILABLE
// (and DEADLINE_EXCEEDED) when the coordinator cannot be reached or did not
// answer in time, so the caller may retry; NOT_FOUND when it no longer
// knows the worker or the assignment; others as service.proto documents.
//
// Thread-safety: implementations must allow concurrent calls (the daemon's
// heartbeat, progress and main threads share one client).
#ifndef MPT_WORKER_DAEMON_COORDINATOR_CLIENT_H_
#define MPT_WORKER_DAEMON_COORDINATOR_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/client_channel.h"
#include "proto/mpt/v1/service.pb.h"
#include "worker/collectives/rendezvous_store.h"

namespace mpt {

// Who uses a gang's rendezvous group: the group (Assignment.group), one
// rank of its attempt (Assignment.id) and the worker that holds that rank
// ("workers/{worker_id}"). The coordinator takes store calls only from
// the attempt's own ranks.
struct RendezvousMember {
  std::string group;
  std::string assignment;
  std::string worker;
};

class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;

  virtual absl::StatusOr<mpt::v1::RegisterWorkerResponse> RegisterWorker(
      const mpt::v1::Worker& worker) = 0;

  // NOT_FOUND when the coordinator declared the worker lost: register again.
  virtual absl::StatusOr<mpt::v1::HeartbeatResponse> Heartbeat(const std::string& worker) = 0;

  // Waits up to `wait` for work. std::nullopt when there is none.
  virtual absl::StatusOr<std::optional<mpt::v1::Assignment>> PollAssignment(
      const std::string& worker, absl::Duration wait) = 0;

  virtual absl::StatusOr<mpt::v1::ReportProgressResponse> ReportProgress(
      const mpt::v1::ReportProgressRequest& request) = 0;

  // Streams `blob` with its SHA-256 for `worker`'s assignment; returns the
  // stored artefact.
  virtual absl::StatusOr<mpt::v1::Artifact> UploadArtifact(const std::string& worker,
                                                           const std::string& assignment,
                                                           const std::string& kind, int64_t step,
                                                           absl::string_view blob) = 0;

  // The artefact's bytes. DATA_LOSS when the bytes do not match the SHA-256
  // the coordinator sent, or the stream ended early.
  virtual absl::StatusOr<std::string> FetchArtifact(const std::string& name) = 0;

  virtual absl::Status CompleteAssignment(const mpt::v1::CompleteAssignmentRequest& request) = 0;

  // The rendezvous store of `member.group`, used on behalf of
  // `member.assignment` held by `member.worker`.
  virtual absl::Status StoreSet(const RendezvousMember& member, const std::string& key,
                                const std::string& value) = 0;
  // DEADLINE_EXCEEDED when a key is still missing after `wait`.
  virtual absl::StatusOr<std::vector<std::string>> StoreGet(const RendezvousMember& member,
                                                            const std::vector<std::string>& keys,
                                                            absl::Duration wait) = 0;

  // Ends the waits in flight (PollAssignment, StoreGet) at once; they
  // return CANCELLED. Later calls are not affected. Used when the worker
  // stops.
  virtual void InterruptWaits() = 0;
};

struct GrpcCoordinatorClientOptions {
  ClientChannelOptions channel;
  // Deadline of a unary call. Default 30 seconds.
  absl::Duration call_timeout = absl::Seconds(30);
  // Deadline of an artefact transfer: call_timeout plus this much per MiB.
  // Default 2 seconds.
  absl::Duration transfer_timeout_per_mib = absl::Seconds(2);
  // Bytes per upload message. Default 1 MiB.
  int64_t chunk_bytes = int64_t{1} << 20;
};

// The real client over gRPC.
class GrpcCoordinatorClient {
 public:
  // INVALID_ARGUMENT / NOT_FOUND for bad channel options (see
  // MakeClientChannel); never contacts the coordinator.
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Create(
      const GrpcCoordinatorClientOptions& options);
};

// A group's rendezvous store over the coordinator's StoreSet / StoreGet.
// Long waits are split into polls of at most `poll` each, and UNAVAILABLE
// answers are retried until the caller's timeout, so that a coordinator
// restart while a gang forms does not break the group. Thread-safe when
// `client` is; `client` is borrowed and must outlive the store.
//
// `cancelled`, when given, is checked between polls: Get() then returns
// CANCELLED, so that a gang member whose gang was called off while it
// waited for its peers stops within one poll.
class CoordinatorRendezvousStore final : public RendezvousStore {
 public:
  CoordinatorRendezvousStore(CoordinatorClient* client, RendezvousMember member,
                             std::function<bool()> cancelled = nullptr,
                             absl::Duration poll = absl::Seconds(2));
  CoordinatorRendezvousStore(const CoordinatorRendezvousStore&) = delete;
  CoordinatorRendezvousStore& operator=(const CoordinatorRendezvousStore&) = delete;

  // Retries UNAVAILABLE for up to a minute, then returns it.
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

 private:
  CoordinatorClient* const client_;
  const RendezvousMember member_;
  const std::function<bool()> cancelled_;
  const absl::Duration poll_;
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_COORDINATOR_CLIENT_H_
