// The coordinator's gRPC surface: JobService and WorkerService adapters that
// only convert between messages and the core (coordinator.h), plus the
// server that hosts them with health checking, reflection (v1alpha and v1) and optional TLS
// and bearer-token authentication.
//
//   ASSIGN_OR_RETURN(auto server, CoordinatorServer::Start(options, core));
//   MPT_LOG(INFO) << "listening on port " << server->port();
//   ...
//   server->Shutdown(absl::Seconds(5));
//
// WatchJob is served with gRPC's callback API: an open watch holds no
// thread; it registers with the core's JobEventNotifier and writes what
// each commit of its job's events made readable. The long polls
// (PollAssignment, StoreGet) call the core in slices of at most one second
// and check between slices whether the client went away or its deadline
// passed.
//
// Both services parse their requests themselves (every method is served
// from raw bytes), so that a request whose string field is not valid UTF-8
// gets INVALID_ARGUMENT naming the field ("spec.display_name: a string
// field is not valid UTF-8") instead of gRPC's INTERNAL with no message.
#ifndef MPT_SERVER_GRPC_SERVICE_H_
#define MPT_SERVER_GRPC_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "common/metrics/metrics_registry.h"
#include "server/coordinator.h"
#include "server/reflection_v1.h"

namespace mpt {

struct GrpcServerOptions {
  // host:port to listen on; port 0 picks a free one (see
  // CoordinatorServer::port()). Default "localhost:7070".
  std::string listen = "localhost:7070";
  // PEM files of the server's certificate chain and private key. Both set:
  // TLS; both empty (default): plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // When set (requires TLS): PEM CA bundle; clients must then present a
  // certificate it signed (mutual TLS). Default empty: no client
  // certificates.
  std::string tls_client_ca_file;
  // When non-empty, every JobService call must carry the metadata
  // "authorization: Bearer <auth_token>", and so must every WorkerService
  // call unless worker_token is set; others get UNAUTHENTICATED. Health
  // checking and reflection stay open. Default empty: no token.
  std::string auth_token;
  // When non-empty, WorkerService calls must carry this token instead and
  // JobService calls never accept it: users cannot act as workers, workers
  // cannot act as users. Default empty: WorkerService checks auth_token
  // (one shared token, as before).
  std::string worker_token;
  // When true (requires tls_client_ca_file): each worker is bound to its
  // client certificate. RegisterWorker needs one whose subject common name
  // or a subject alternative name is the worker's hostname
  // (UNAUTHENTICATED without a certificate, PERMISSION_DENIED for another
  // name), and every later call for that worker must present the same
  // certificate (PERMISSION_DENIED otherwise), whoever holds its key.
  // Default false.
  bool bind_workers_to_certificates = false;
  // The largest message accepted (UploadArtifact chunks, specs). Default
  // 16 MiB.
  int max_receive_message_bytes = 16 << 20;
  // Chunk size of DownloadArtifact and FetchArtifact. Default 256 KiB.
  int artifact_chunk_bytes = 256 << 10;
  // WatchJob streams open at once (each holds about 16 KiB); more are
  // refused with RESOURCE_EXHAUSTED. Default 10,000.
  int max_watch_streams = 10000;
  // Borrowed, may be null (default): when set, every call's duration is
  // observed in it by {method, code} (rpc_metrics.h).
  HistogramFamily* rpc_duration = nullptr;
};

// Checks the bearer token of a call. Thread-safe.
class BearerTokenAuthenticator {
 public:
  // An empty token accepts every call.
  explicit BearerTokenAuthenticator(std::string token) : token_(std::move(token)) {}
  // OK, or UNAUTHENTICATED when the "authorization" metadata is missing or
  // carries another token.
  grpc::Status Check(const grpc::ServerContextBase& context) const;

 private:
  const std::string token_;
};

// A gRPC service served from raw bytes: each method is registered under
// its proto's full name with its own call type, and its handler parses the
// request itself. Subclasses add a handler for every method of the service
// in their constructor.
class RawService : public grpc::Service {
 protected:
  // `service` is the proto's (e.g. "JobService" in mpt/v1/service.proto).
  explicit RawService(const char* service);

  // Registers `handler` (owned by gRPC) for `method`; `callback`: served
  // with gRPC's callback API. Aborts on a method the service lacks.
  void AddRawMethod(const char* method, grpc::internal::MethodHandler* handler,
                    bool callback = false);
  // Aborts unless every method of the service was added.
  void CheckAllMethodsAdded() const;

 private:
  const google::protobuf::ServiceDescriptor* const service_;
  std::deque<std::string> paths_;  // "/mpt.v1.JobService/SubmitJob"; gRPC keeps pointers
};

// Forwards JobService calls to the core. Holds no state of its own.
class JobServiceImpl final : public RawService {
 public:
  // Neither pointer is owned; both must outlive the service.
  // At most `max_watch_streams` WatchJob streams are open at once; more are
  // refused with RESOURCE_EXHAUSTED.
  JobServiceImpl(Coordinator* coordinator, const BearerTokenAuthenticator* auth,
                 int chunk_bytes, int max_watch_streams);

  // Served with the callback API: no thread waits while the job is made
  // durable (Coordinator::SubmitJobAsync).
  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response);
  // GetJob and ListJobs answer with bytes the core serialized (a
  // published job's cached bytes, or a page spliced from the store), on the
  // callback API, inline on the thread that read the call.
  grpc::Status GetJob(grpc::ServerContextBase* context, const mpt::v1::GetJobRequest* request,
                      grpc::ByteBuffer* response);
  grpc::Status ListJobs(grpc::ServerContextBase* context, const mpt::v1::ListJobsRequest* request,
                        grpc::ByteBuffer* response);
  // Served by a callback reactor (no thread held while it waits for
  // events): see WatchJobReactor in grpc_service.cc.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchJob(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request);
  // Streaming methods write through the stream the raw handlers give them.
  grpc::Status CancelJob(grpc::ServerContext* context, const mpt::v1::CancelJobRequest* request,
                         mpt::v1::Job* response);
  grpc::Status DownloadArtifact(grpc::ServerContext* context,
                                const mpt::v1::DownloadArtifactRequest* request,
                                grpc::internal::WriterInterface<mpt::v1::ArtifactChunk>* writer);
  grpc::Status ListWorkers(grpc::ServerContext* context,
                           const mpt::v1::ListWorkersRequest* request,
                           mpt::v1::ListWorkersResponse* response);
  grpc::Status GetStageLogs(grpc::ServerContext* context,
                            const mpt::v1::GetStageLogsRequest* request,
                            mpt::v1::GetStageLogsResponse* response);

 private:
  Coordinator* const core_;
  const BearerTokenAuthenticator* const auth_;
  const int chunk_bytes_;
  const int max_watch_streams_;
  std::atomic<int> open_watch_streams_{0};
};

// Forwards WorkerService calls to the core. Holds no state of its own.
class WorkerServiceImpl final : public RawService {
 public:
  WorkerServiceImpl(Coordinator* coordinator, const BearerTokenAuthenticator* auth,
                    int chunk_bytes, int64_t max_artifact_bytes,
                    bool bind_workers_to_certificates = false);

  grpc::Status RegisterWorker(grpc::ServerContext* context,
                              const mpt::v1::RegisterWorkerRequest* request,
                              mpt::v1::RegisterWorkerResponse* response);
  grpc::Status Heartbeat(grpc::ServerContext* context, const mpt::v1::HeartbeatRequest* request,
                         mpt::v1::HeartbeatResponse* response);
  grpc::Status PollAssignment(grpc::ServerContext* context,
                              const mpt::v1::PollAssignmentRequest* request,
                              mpt::v1::PollAssignmentResponse* response);
  grpc::Status ReportProgress(grpc::ServerContext* context,
                              const mpt::v1::ReportProgressRequest* request,
                              mpt::v1::ReportProgressResponse* response);
  // Reads the raw messages of the upload and parses each.
  grpc::Status UploadArtifact(grpc::ServerContext* context,
                              grpc::internal::ReaderInterface<grpc::ByteBuffer>* reader,
                              mpt::v1::UploadArtifactResponse* response);
  grpc::Status FetchArtifact(grpc::ServerContext* context,
                             const mpt::v1::FetchArtifactRequest* request,
                             grpc::internal::WriterInterface<mpt::v1::ArtifactChunk>* writer);
  grpc::Status CompleteAssignment(grpc::ServerContext* context,
                                  const mpt::v1::CompleteAssignmentRequest* request,
                                  mpt::v1::CompleteAssignmentResponse* response);
  grpc::Status StoreSet(grpc::ServerContext* context, const mpt::v1::StoreSetRequest* request,
                        mpt::v1::StoreSetResponse* response);
  grpc::Status StoreGet(grpc::ServerContext* context, const mpt::v1::StoreGetRequest* request,
                        mpt::v1::StoreGetResponse* response);

 private:
  Coordinator* const core_;
  const BearerTokenAuthenticator* const auth_;
  const int chunk_bytes_;
  const int64_t max_artifact_bytes_;
  const bool bind_workers_to_certificates_;

  // With bind_workers_to_certificates_: the SHA-256 of the call's client
  // certificate ("" when it presents none); otherwise nullopt (no check).
  std::optional<std::string> CertificateFor(const grpc::ServerContextBase& context) const;
};

// A running gRPC server for one coordinator core.
class CoordinatorServer {
 public:
  // Builds and starts the server. `coordinator` is not owned and must
  // outlive the server. INVALID_ARGUMENT for inconsistent TLS options;
  // NOT_FOUND / INTERNAL naming a certificate file that cannot be read;
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(const GrpcServerOptions& options,
                                                                  Coordinator* coordinator);

  // Calls Shutdown(absl::ZeroDuration()) if it was not called.
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  // The port actually bound.
  int port() const { return port_; }
  bool tls() const { return tls_; }

  // Reports NOT_SERVING to health checks, shuts the core down (blocked
  // polls and watches return UNAVAILABLE at once, so clients retry
  // elsewhere or later) and stops the server, cancelling calls still
  // running after `grace`. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  CoordinatorServer() = default;

  Coordinator* coordinator_ = nullptr;
  std::unique_ptr<BearerTokenAuthenticator> auth_;
  std::unique_ptr<BearerTokenAuthenticator> worker_auth_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<ServerReflectionV1> reflection_v1_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool tls_ = false;
  std::atomic<bool> shut_down_{false};
};

}  // namespace mpt

#endif  // MPT_SERVER_GRPC_SERVICE_H_
