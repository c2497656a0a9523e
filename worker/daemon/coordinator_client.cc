#include "worker/daemon/coordinator_client.h"

#include <algorithm>
#include <set>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/secrets.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "proto/mpt/v1/service.grpc.pb.h"

namespace mpt {
namespace {

using mpt::v1::WorkerService;

absl::Status WithContext(const grpc::Status& status, absl::string_view call) {
  absl::Status s = FromGrpcStatus(status);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(call, ": ", s.message()));
}

class GrpcClient final : public CoordinatorClient {
 public:
  GrpcClient(GrpcCoordinatorClientOptions options, std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)), stub_(WorkerService::NewStub(channel)) {}

  absl::StatusOr<mpt::v1::RegisterWorkerResponse> RegisterWorker(
      const mpt::v1::Worker& worker) override {
    grpc::ClientContext context;
    Prepare(options_.call_timeout, &context);
    mpt::v1::RegisterWorkerRequest request;
    *request.mutable_worker() = worker;
    mpt::v1::RegisterWorkerResponse response;
    RETURN_IF_ERROR(
        WithContext(stub_->RegisterWorker(&context, request, &response), "RegisterWorker"));
    // Every later call carries this registration's key.
    absl::MutexLock lock(&key_mu_);
    worker_key_ = response.worker_key();
    return response;
  }

  absl::StatusOr<mpt::v1::HeartbeatResponse> Heartbeat(const std::string& worker) override {
    grpc::ClientContext context;
    Prepare(options_.call_timeout, &context);
    mpt::v1::HeartbeatRequest request;
    request.set_worker(worker);
    mpt::v1::HeartbeatResponse response;
    RETURN_IF_ERROR(WithContext(stub_->Heartbeat(&context, request, &response), "Heartbeat"));
    return response;
  }

  absl::StatusOr<std::optional<mpt::v1::Assignment>> PollAssignment(
      const std::string& worker, absl::Duration wait) override {
    grpc::ClientContext context;
    Prepare(wait + options_.call_timeout, &context);
    WaitRegistration registration(this, &context);
    mpt::v1::PollAssignmentRequest request;
    request.set_worker(worker);
    request.set_wait_seconds(absl::ToDoubleSeconds(wait));
    mpt::v1::PollAssignmentResponse response;
    RETURN_IF_ERROR(
        WithContext(stub_->PollAssignment(&context, request, &response), "PollAssignment"));
    if (!response.has_assignment()) return std::optional<mpt::v1::Assignment>();
    return std::optional<mpt::v1::Assignment>(response.assignment());
  }

  absl::StatusOr<mpt::v1::ReportProgressResponse> ReportProgress(
      const mpt::v1::ReportProgressRequest& request) override {
    grpc::ClientContext context;
    Prepare(options_.call_timeout, &context);
    mpt::v1::ReportProgressResponse response;
    RETURN_IF_ERROR(
        WithContext(stub_->ReportProgress(&context, request, &response), "ReportProgress"));
    return response;
  }

  absl::StatusOr<mpt::v1::Artifact> UploadArtifact(const std::string& worker,
                                                   const std::string& assignment,
                                                   const std::string& kind, int64_t step,
                                                   absl::string_view blob) override {
    grpc::ClientContext context;
    Prepare(TransferTimeout(blob.size()), &context);
    mpt::v1::UploadArtifactResponse response;
    std::unique_ptr<grpc::ClientWriter<mpt::v1::UploadArtifactRequest>> writer =
        stub_->UploadArtifact(&context, &response);
    mpt::v1::UploadArtifactRequest header;
    header.mutable_header()->set_assignment(assignment);
    header.mutable_header()->set_worker(worker);
    header.mutable_header()->set_kind(kind);
    header.mutable_header()->set_step(step);
    bool ok = writer->Write(header);
    const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, options_.chunk_bytes));
    for (size_t pos = 0; ok && pos < blob.size(); pos += chunk) {
      mpt::v1::UploadArtifactRequest data;
      data.set_data(std::string(blob.substr(pos, chunk)));
      ok = writer->Write(data);
    }
    if (ok) {
      mpt::v1::UploadArtifactRequest last;
      last.set_sha256(Sha256Hex(blob));
      ok = writer->Write(last);
    }
    if (ok) writer->WritesDone();
    // Finish() tells why a write failed.
    RETURN_IF_ERROR(WithContext(writer->Finish(), "UploadArtifact"));
    return response.artifact();
  }

  absl::StatusOr<std::string> FetchArtifact(const std::string& name) override {
    grpc::ClientContext context;
    // The size is not known up front; allow for a large artefact.
    Prepare(TransferTimeout(int64_t{256} << 20), &context);
    mpt::v1::FetchArtifactRequest request;
    request.set_name(name);
    std::unique_ptr<grpc::ClientReader<mpt::v1::ArtifactChunk>> reader =
        stub_->FetchArtifact(&context, request);
    std::string bytes;
    std::string sha256;
    int64_t total = -1;
    mpt::v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != static_cast<int64_t>(bytes.size())) {
        context.TryCancel();
        reader->Finish();
        return absl::DataLossError(absl::StrCat("FetchArtifact ", name, ": chunk at offset ",
                                                chunk.offset(), ", expected ", bytes.size()));
      }
      bytes += chunk.data();
      if (!chunk.sha256().empty()) sha256 = chunk.sha256();
      if (chunk.total_bytes() > 0) total = chunk.total_bytes();
    }
    RETURN_IF_ERROR(WithContext(reader->Finish(), "FetchArtifact"));
    if (sha256.empty()) {
      return absl::DataLossError(
          absl::StrCat("FetchArtifact ", name, ": the stream ended without a checksum"));
    }
    if (total >= 0 && total != static_cast<int64_t>(bytes.size())) {
      return absl::DataLossError(absl::StrCat("FetchArtifact ", name, ": got ", bytes.size(),
                                              " bytes of ", total));
    }
    const std::string actual = Sha256Hex(bytes);
    if (actual != sha256) {
      return absl::DataLossError(absl::StrCat("FetchArtifact ", name, ": SHA-256 ", actual,
                                              " does not match the coordinator's ", sha256));
    }
    return bytes;
  }

  absl::Status CompleteAssignment(const mpt::v1::CompleteAssignmentRequest& request) override {
    grpc::ClientContext context;
    Prepare(options_.call_timeout, &context);
    mpt::v1::CompleteAssignmentResponse response;
    return WithContext(stub_->CompleteAssignment(&context, request, &response),
                       "CompleteAssignment");
  }

  absl::Status StoreSet(const RendezvousMember& member, const std::string& key,
                        const std::string& value) override {
    grpc::ClientContext context;
    Prepare(options_.call_timeout, &context);
    mpt::v1::StoreSetRequest request;
    request.set_group(member.group);
    request.set_assignment(member.assignment);
    request.set_worker(member.worker);
    request.set_key(key);
    request.set_value(value);
    mpt::v1::StoreSetResponse response;
    return WithContext(stub_->StoreSet(&context, request, &response), "StoreSet");
  }

  absl::StatusOr<std::vector<std::string>> StoreGet(const RendezvousMember& member,
                                                    const std::vector<std::string>& keys,
                                                    absl::Duration wait) override {
    grpc::ClientContext context;
    Prepare(wait + options_.call_timeout, &context);
    WaitRegistration registration(this, &context);
    mpt::v1::StoreGetRequest request;
    request.set_group(member.group);
    request.set_assignment(member.assignment);
    request.set_worker(member.worker);
    for (const std::string& k : keys) request.add_keys(k);
    request.set_wait_seconds(absl::ToDoubleSeconds(wait));
    mpt::v1::StoreGetResponse response;
    RETURN_IF_ERROR(WithContext(stub_->StoreGet(&context, request, &response), "StoreGet"));
    if (response.values_size() != static_cast<int>(keys.size())) {
      return absl::InternalError(absl::StrCat("StoreGet: ", response.values_size(),
                                              " values for ", keys.size(), " keys"));
    }
    return std::vector<std::string>(response.values().begin(), response.values().end());
  }

 void InterruptWaits() override {
    absl::MutexLock lock(&waits_mu_);
    for (grpc::ClientContext* context : waits_) context->TryCancel();
  }

 private:
  // Tracks a long wait so that InterruptWaits() can cancel it.
  class WaitRegistration {
   public:
    WaitRegistration(GrpcClient* client, grpc::ClientContext* context)
        : client_(client), context_(context) {
      absl::MutexLock lock(&client_->waits_mu_);
      client_->waits_.insert(context_);
    }
    ~WaitRegistration() {
      absl::MutexLock lock(&client_->waits_mu_);
      client_->waits_.erase(context_);
    }

   private:
    GrpcClient* client_;
    grpc::ClientContext* context_;
  };

  void Prepare(absl::Duration timeout, grpc::ClientContext* context) const {
    PrepareClientContext(options_.channel, timeout, context);
    absl::MutexLock lock(&key_mu_);
    if (!worker_key_.empty()) context->AddMetadata(kWorkerKeyMetadata, worker_key_);
  }

  absl::Duration TransferTimeout(int64_t bytes) const {
    return options_.call_timeout +
           options_.transfer_timeout_per_mib * (static_cast<double>(bytes) / (1 << 20));
  }

  const GrpcCoordinatorClientOptions options_;
  std::unique_ptr<WorkerService::Stub> stub_;
  absl::Mutex waits_mu_;
  std::set<grpc::ClientContext*> waits_ ABSL_GUARDED_BY(waits_mu_);
  mutable absl::Mutex key_mu_;
  std::string worker_key_ ABSL_GUARDED_BY(key_mu_);  // the last registration's
};


}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorClient>> GrpcCoordinatorClient::Create(
    const GrpcCoordinatorClientOptions& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeClientChannel(options.channel));
  return std::unique_ptr<CoordinatorClient>(new GrpcClient(options, std::move(channel)));
}

CoordinatorRendezvousStore::CoordinatorRendezvousStore(CoordinatorClient* client,
                                                       RendezvousMember member,
                                                       std::function<bool()> cancelled,
                                                       absl::Duration poll)
    : client_(client),
      member_(std::move(member)),
      cancelled_(std::move(cancelled)),
      poll_(poll) {}

absl::Status CoordinatorRendezvousStore::Set(const std::string& key, const std::string& value) {
  const absl::Time give_up = absl::Now() + absl::Minutes(1);
  absl::Duration pause = absl::Milliseconds(200);
  while (true) {
    absl::Status s = client_->StoreSet(member_, key, value);
    if (s.ok() || !IsRetryableRpcError(s) || absl::Now() + pause > give_up) {
      if (s.code() == absl::StatusCode::kDeadlineExceeded) {
        return absl::UnavailableError(s.message());
      }
      return s;
    }
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Seconds(5));
  }
}

absl::StatusOr<std::vector<std::string>> CoordinatorRendezvousStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::DeadlineExceededError("no attempt");
  while (true) {
    if (cancelled_ && cancelled_()) {
      return absl::CancelledError(
          absl::StrCat("rendezvous group ", member_.group, ": cancelled while waiting for peers"));
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    absl::StatusOr<std::vector<std::string>> values =
        client_->StoreGet(member_, keys, std::min(left, poll_));
    if (values.ok()) return values;
    last = values.status();
    if (last.code() == absl::StatusCode::kUnavailable) {
      absl::SleepFor(std::min(absl::Milliseconds(500), std::max(absl::ZeroDuration(),
                                                               deadline - absl::Now())));
    } else if (last.code() != absl::StatusCode::kDeadlineExceeded) {
      return last;
    }
  }
  if (last.code() == absl::StatusCode::kUnavailable) return last;
  return absl::DeadlineExceededError(absl::StrCat("rendezvous group ", member_.group, ": keys [",
                                                  absl::StrJoin(keys, ", "),
                                                  "] not all set within ",
                                                  absl::FormatDuration(timeout), ": ",
                                                  last.message()));
}

}  // namespace mpt
