#include "server/grpc_service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/server_credentials.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/credentials_check.h"
#include "common/grpc_status.h"
#include "common/http_server.h"
#include "common/logging.h"
#include "common/quote.h"
#include "common/secrets.h"
#include "common/status_macros.h"
#include "common/sha256.h"
#include "common/utf8.h"
#include "server/coordinator_requests.h"
#include "server/job_event_notifier.h"
#include "server/rpc_metrics.h"

namespace mpt {
namespace {

// Blocking calls into the core last at most this long, so that a call whose
// client went away is noticed within it.
constexpr absl::Duration kSlice = absl::Seconds(1);
// The longest PollAssignment / StoreGet wait honoured.
constexpr double kMaxWaitSeconds = 3600;

const char* const kJobService = "mpt.v1.JobService";
const char* const kWorkerService = "mpt.v1.WorkerService";

absl::Time ContextDeadline(const grpc::ServerContextBase& context) {
  // A call without a deadline reports one centuries away.
  const absl::Time deadline = absl::FromChrono(context.deadline());
  if (deadline > absl::Now() + absl::Hours(24 * 365 * 50)) return absl::InfiniteFuture();
  return deadline;
}

// `wait_seconds` from a request as an end time, capped by the call's own
// deadline.
absl::StatusOr<absl::Time> WaitEnd(const grpc::ServerContext& context, double wait_seconds,
                                   const char* field) {
  if (!std::isfinite(wait_seconds) || wait_seconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be a number >= 0, got ", wait_seconds));
  }
  absl::Time end = absl::Now() + absl::Seconds(std::min(wait_seconds, kMaxWaitSeconds));
  return std::min(end, ContextDeadline(context));
}

// Streams the artefact in chunks read one at a time; the last one carries
// the SHA-256, and is not sent when the stored bytes no longer match it
// (DATA_LOSS instead).
grpc::Status StreamArtifact(grpc::ServerContext* context, const ArtifactReader& reader,
                            int chunk_bytes,
                            grpc::internal::WriterInterface<mpt::v1::ArtifactChunk>* writer) {
  const int64_t total = reader.blob->size();
  int64_t offset = 0;
  do {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    mpt::v1::ArtifactChunk chunk;
    absl::Status read =
        reader.blob->Read(offset, static_cast<size_t>(chunk_bytes), chunk.mutable_data());
    if (!read.ok()) {
      return ToGrpcStatus(absl::Status(
          read.code(), absl::StrCat("artefact ", reader.artifact.name(), ": ", read.message())));
    }
    chunk.set_offset(offset);
    chunk.set_total_bytes(total);
    offset += static_cast<int64_t>(chunk.data().size());
    if (offset == total) chunk.set_sha256(reader.artifact.sha256());
    if (!writer->Write(chunk)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading");
    }
  } while (offset < total);
  return grpc::Status::OK;
}

// Parses one raw request message: INVALID_ARGUMENT naming a string field
// that is not valid UTF-8, saying the message is malformed, or that there
// was none.
grpc::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* request) {
  // A unary or server-streaming call whose client sent no message (an
  // empty message is a valid, empty buffer).
  if (!buffer.Valid()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the call carried no request message");
  }
  std::vector<grpc::Slice> slices;
  grpc::Status dumped = buffer.Dump(&slices);
  if (!dumped.ok()) return dumped;
  std::string bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return ToGrpcStatus(ParseProtoStrict(bytes, request));
}

// A ByteBuffer over `bytes` that keeps them alive and copies nothing.
grpc::ByteBuffer SharedBytesBuffer(std::shared_ptr<const std::string> bytes) {
  auto* owner = new std::shared_ptr<const std::string>(std::move(bytes));
  grpc::Slice slice(const_cast<char*>((*owner)->data()), (*owner)->size(),
                    [](void* p) { delete static_cast<std::shared_ptr<const std::string>*>(p); },
                    owner);
  return grpc::ByteBuffer(&slice, 1);
}

// The response type gRPC serializes a handler's response as: protobuf
// messages through MessageLite (as generated services do), bytes as they
// are.
template <class Response>
using WireResponse =
    std::conditional_t<std::is_same_v<Response, grpc::ByteBuffer>, grpc::ByteBuffer,
                       google::protobuf::MessageLite>;

// Handlers that take the request as raw bytes and parse it themselves. Each
// keeps its method's call type (a unary method is served as unary: gRPC
// receives its request with the call and answers with one batch).
template <class Service, class Request, class Response>
grpc::internal::MethodHandler* RawUnary(
    Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, const Request*, Response*)) {
  return new grpc::internal::RpcMethodHandler<Service, grpc::ByteBuffer, Response,
                                              grpc::ByteBuffer, WireResponse<Response>>(
      [method](Service* self, grpc::ServerContext* context, const grpc::ByteBuffer* raw,
               Response* response) {
        Request request;
        grpc::Status status = ParseRequest(*raw, &request);
        if (!status.ok()) return status;
        return (self->*method)(context, &request, response);
      },
      service);
}

// A unary method answered with bytes on gRPC's callback API, inline on the
// thread that read the call, for handlers that never wait long (GetJob
// answers from a published copy, ListJobs reads one page). A sync method's
// call is instead read by one thread and handed to a sync-server thread;
// with both kinds registered (SubmitJob and WatchJob are callback methods),
// that hand-off costs more CPU than the handler and, with other processes
// on the cores, adds waits of up to 100 ms (coordinator_bench).
template <class Service, class Request>
grpc::internal::MethodHandler* RawCallbackUnary(
    Service* service,
    grpc::Status (Service::*method)(grpc::ServerContextBase*, const Request*, grpc::ByteBuffer*)) {
  return new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
      [service, method](grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw,
                        grpc::ByteBuffer* response) {
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        Request request;
        grpc::Status status = ParseRequest(*raw, &request);
        if (status.ok()) status = (service->*method)(context, &request, response);
        reactor->Finish(std::move(status));
        return reactor;
      });
}

template <class Service, class Request, class Response>
grpc::internal::MethodHandler* RawServerStreaming(
    Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, const Request*,
                                    grpc::internal::WriterInterface<Response>*)) {
  return new grpc::internal::ServerStreamingHandler<Service, grpc::ByteBuffer, Response>(
      [method](Service* self, grpc::ServerContext* context, const grpc::ByteBuffer* raw,
               grpc::ServerWriter<Response>* writer) {
        Request request;
        grpc::Status status = ParseRequest(*raw, &request);
        if (!status.ok()) return status;
        return (self->*method)(context, &request, writer);
      },
      service);
}

template <class Service, class Response>
grpc::internal::MethodHandler* RawClientStreaming(
    Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*,
                                    grpc::internal::ReaderInterface<grpc::ByteBuffer>*,
                                    Response*)) {
  return new grpc::internal::ClientStreamingHandler<Service, grpc::ByteBuffer, Response>(
      [method](Service* self, grpc::ServerContext* context,
               grpc::ServerReader<grpc::ByteBuffer>* reader, Response* response) {
        return (self->*method)(context, reader, response);
      },
      service);
}

// One WatchJob stream. It holds no thread while it waits: the core's
// JobEventNotifier calls OnJobEvents() on its thread when events of the job
// were committed (and once at the start); that call reads what is new
// without waiting and starts writing it. Writes go one at a time; the
// stream ends with OK after the job's final event, with the core's error
// (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE at shutdown), or when the
// client cancels or its deadline passes.
//
// Lifetime: gRPC calls OnDone() last; it unregisters from the notifier
// (which waits for a call in progress) and deletes the reactor. Only the
// thread that sets finishing_ calls Finish(), and nothing touches the
// reactor after that call; a write in flight (writing_) defers the end to
// OnWriteDone().
class WatchJobReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                              public JobEventListener {
 public:
  // `open` (may be null) counts the streams open; this one is counted from
  // construction and uncounted in OnDone().
  WatchJobReactor(Coordinator* core, grpc::CallbackServerContext* context,
                  mpt::v1::WatchJobRequest request, std::atomic<int>* open)
      : open_(open),
        core_(core),
        notifier_(&core->job_event_notifier()),
        name_(request.name()),
        deadline_(ContextDeadline(*context)),
        after_(request.after_sequence()) {}

  // Starts watching (the notifier's first call reads the backlog).
  void Begin() {
    registered_ = true;
    notifier_->Add(name_, this);
  }

  void OnJobEvents() override {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_ || cancelled_ || writing_ || !queue_.empty()) return;
    }
    // Never waits: a deadline in the past returns what is committed now.
    absl::StatusOr<JobEventBatch> batch =
        core_->WaitForJobEvents(name_, after_, absl::InfinitePast());
    mu_.Lock();
    if (!batch.ok()) {
      if (!finishing_) end_status_ = ToGrpcStatus(batch.status());
    } else {
      for (const mpt::v1::JobEvent& event : batch->events) {
        grpc::ByteBuffer buffer;
        bool own = false;
        grpc::Status serialized =
            grpc::SerializationTraits<mpt::v1::JobEvent>::Serialize(event, &buffer, &own);
        if (!serialized.ok()) {
          end_status_ = serialized;
          break;
        }
        queue_.push_back(std::move(buffer));
        after_ = event.sequence();
      }
      read_more_ = !batch->events.empty();
      job_done_ = batch->done;
    }
    Advance();  // unlocks
  }

  void OnWriteDone(bool ok) override {
    mu_.Lock();
    writing_ = false;
    if (!ok) cancelled_ = true;  // the stream broke
    Advance();
  }

  void OnCancel() override {
    mu_.Lock();
    cancelled_ = true;
    Advance();
  }

  void OnDone() override {
    if (registered_) notifier_->Remove(name_, this);
    if (open_ != nullptr) open_->fetch_sub(1);
    delete this;
  }

  // Ends a stream that failed before it started watching.
  void FinishNow(grpc::Status status) {
    mu_.Lock();
    finishing_ = true;
    mu_.Unlock();
    Finish(std::move(status));
  }

 private:
  // Decides the next step with mu_ held, then releases mu_ and takes it.
  void Advance() ABSL_UNLOCK_FUNCTION(mu_) {
    enum { kNothing, kWrite, kFinish, kReadAgain } action = kNothing;
    grpc::Status status;
    if (!finishing_ && !writing_) {
      if (cancelled_) {
        status = absl::Now() >= deadline_
                     ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                    "the call's deadline passed; watch again from the last "
                                    "sequence seen")
                     : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        action = kFinish;
      } else if (!end_status_.ok()) {
        status = end_status_;
        action = kFinish;
      } else if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = true;
        action = kWrite;
      } else if (job_done_) {
        status = grpc::Status::OK;
        action = kFinish;
      } else if (read_more_) {
        read_more_ = false;
        action = kReadAgain;
      }
      if (action == kFinish) finishing_ = true;
    }
    mu_.Unlock();
    switch (action) {
      case kWrite:
        StartWrite(&current_);
        break;
      case kFinish:
        Finish(std::move(status));  // nothing touches `this` after it
        break;
      case kReadAgain:
        notifier_->Wake(this);
        break;
      case kNothing:
        break;
    }
  }

  std::atomic<int>* const open_;
  Coordinator* const core_;
  JobEventNotifier* const notifier_;
  const std::string name_;
  const absl::Time deadline_;
  bool registered_ = false;
  // The last sequence read; only the notifier's calls use it (one at a time).
  int64_t after_;

  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer current_;  // the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool job_done_ ABSL_GUARDED_BY(mu_) = false;
  // The last read found events: read again once they are written.
  bool read_more_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::Status BearerTokenAuthenticator::Check(const grpc::ServerContextBase& context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    if (ConstantTimeEquals(value, absl::StrCat("Bearer ", token_))) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "this coordinator requires the metadata \"authorization: Bearer <token>\" "
                      "with its token");
}

#define MPT_AUTHORIZE(context)                             \
  do {                                                     \
    grpc::Status auth_status_ = auth_->Check(*(context));  \
    if (!auth_status_.ok()) return auth_status_;           \
  } while (0)

namespace {

// The call's kWorkerKeyMetadata metadata ("" when absent).
absl::string_view WorkerKeyOf(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kWorkerKeyMetadata);
  if (it == metadata.end()) return {};
  return absl::string_view(it->second.data(), it->second.size());
}

// The verified client certificate of a call (mutual TLS): the SHA-256 of
// its PEM and its names (the subject's common name and its subject
// alternative names, as gRPC's TLS layer reports them). nullopt when the
// call presents none.
struct PeerCertificate {
  std::string sha256;
  std::vector<std::string> names;
};
std::optional<PeerCertificate> PeerCertificateOf(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return std::nullopt;
  std::vector<grpc::string_ref> pem = auth->FindPropertyValues("x509_pem_cert");
  if (pem.empty()) return std::nullopt;
  PeerCertificate cert;
  cert.sha256 = Sha256Hex(absl::string_view(pem[0].data(), pem[0].size()));
  for (const char* property : {"x509_common_name", "x509_subject_alternative_name"}) {
    for (const grpc::string_ref& name : auth->FindPropertyValues(property)) {
      cert.names.emplace_back(name.data(), name.size());
    }
  }
  return cert;
}

}  // namespace

// A WorkerService call that names `worker` must carry its key (and, when
// workers are bound to certificates, present the one it registered with).
#define MPT_CHECK_WORKER_KEY(context, worker)                                                \
  do {                                                                                       \
    absl::Status key_status_ =                                                               \
        core_->CheckWorkerKey((worker), WorkerKeyOf(*(context)), CertificateFor(*(context))); \
    if (!key_status_.ok()) return ToGrpcStatus(key_status_);                                 \
  } while (0)

// ---------------------------------------------------------------------------
// RawService

RawService::RawService(const char* service)
    : service_(mpt::v1::Job::descriptor()->file()->FindServiceByName(service)) {
  GPR_ASSERT(service_ != nullptr);
}

void RawService::AddRawMethod(const char* method, grpc::internal::MethodHandler* handler,
                              bool callback) {
  const google::protobuf::MethodDescriptor* m = service_->FindMethodByName(method);
  GPR_ASSERT(m != nullptr);
  paths_.push_back(absl::StrCat("/", service_->full_name(), "/", m->name()));
  const grpc::internal::RpcMethod::RpcType type =
      m->client_streaming()
          ? (m->server_streaming() ? grpc::internal::RpcMethod::BIDI_STREAMING
                                   : grpc::internal::RpcMethod::CLIENT_STREAMING)
          : (m->server_streaming() ? grpc::internal::RpcMethod::SERVER_STREAMING
                                   : grpc::internal::RpcMethod::NORMAL_RPC);
  auto* rpc = new grpc::internal::RpcServiceMethod(paths_.back().c_str(), type, handler);
  if (callback) rpc->SetServerApiType(grpc::internal::RpcServiceMethod::ApiType::RAW_CALL_BACK);
  AddMethod(rpc);
}

void RawService::CheckAllMethodsAdded() const {
  GPR_ASSERT(static_cast<int>(paths_.size()) == service_->method_count());
}

// ---------------------------------------------------------------------------
// JobService

JobServiceImpl::JobServiceImpl(Coordinator* coordinator, const BearerTokenAuthenticator* auth,
                               int chunk_bytes, int max_watch_streams)
    : RawService("JobService"),
      core_(coordinator),
      auth_(auth),
      chunk_bytes_(chunk_bytes),
      max_watch_streams_(max_watch_streams) {
  using J = JobServiceImpl;
  AddRawMethod("SubmitJob",
               new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
                   [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                          grpc::ByteBuffer* response) {
                     return SubmitJob(context, request, response);
                   }),
               /*callback=*/true);
  AddRawMethod("GetJob", RawCallbackUnary(this, &J::GetJob), /*callback=*/true);
  AddRawMethod("ListJobs", RawCallbackUnary(this, &J::ListJobs), /*callback=*/true);
  AddRawMethod(
      "WatchJob",
      new grpc::internal::CallbackServerStreamingHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
          [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
            return WatchJob(context, request);
          }),
      /*callback=*/true);
  AddRawMethod("CancelJob", RawUnary(this, &J::CancelJob));
  AddRawMethod("DownloadArtifact", RawServerStreaming(this, &J::DownloadArtifact));
  AddRawMethod("ListWorkers", RawUnary(this, &J::ListWorkers));
  AddRawMethod("GetStageLogs", RawUnary(this, &J::GetStageLogs));
  CheckAllMethodsAdded();
}

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* raw,
                                                    grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  mpt::v1::SubmitJobRequest request;
  grpc::Status status = auth_->Check(*context);
  if (status.ok()) status = ParseRequest(*raw, &request);
  if (!status.ok()) {
    reactor->Finish(std::move(status));
    return reactor;
  }
  // Answered when the job is durable, maybe on the group commit's thread;
  // gRPC keeps `response` until Finish().
  core_->SubmitJobAsync(request,
                        [reactor, response](absl::StatusOr<Coordinator::SubmittedJob> job) {
                          if (!job.ok()) {
                            reactor->Finish(ToGrpcStatus(job.status()));
                            return;
                          }
                          *response = SharedBytesBuffer(std::move(job->serialized));
                          reactor->Finish(grpc::Status::OK);
                        });
  return reactor;
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContextBase* context,
                                    const mpt::v1::GetJobRequest* request,
                                    grpc::ByteBuffer* response) {
  MPT_AUTHORIZE(context);
  absl::StatusOr<std::shared_ptr<const std::string>> job = core_->GetJobSerialized(request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = SharedBytesBuffer(*std::move(job));
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContextBase* context,
                                      const mpt::v1::ListJobsRequest* request,
                                      grpc::ByteBuffer* response) {
  MPT_AUTHORIZE(context);
  absl::StatusOr<std::string> page = core_->ListJobsSerialized(*request);
  if (!page.ok()) return ToGrpcStatus(page.status());
  *response = SharedBytesBuffer(std::make_shared<const std::string>(*std::move(page)));
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  mpt::v1::WatchJobRequest request;
  grpc::Status status = auth_->Check(*context);
  if (status.ok()) status = ParseRequest(*raw, &request);
  if (status.ok() && open_watch_streams_.fetch_add(1) >= max_watch_streams_) {
    open_watch_streams_.fetch_sub(1);
    status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("this coordinator already serves ", max_watch_streams_,
                                       " WatchJob streams (--max_watch_streams); close some, "
                                       "or poll GetJob"));
  }
  auto* reactor = new WatchJobReactor(core_, context, std::move(request),
                                      status.ok() ? &open_watch_streams_ : nullptr);
  if (status.ok()) {
    reactor->Begin();
  } else {
    reactor->FinishNow(std::move(status));
  }
  return reactor;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const mpt::v1::CancelJobRequest* request,
                                       mpt::v1::Job* response) {
  MPT_AUTHORIZE(context);
  absl::StatusOr<mpt::v1::Job> job = core_->CancelJob(request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::DownloadArtifact(
    grpc::ServerContext* context, const mpt::v1::DownloadArtifactRequest* request,
    grpc::internal::WriterInterface<mpt::v1::ArtifactChunk>* writer) {
  MPT_AUTHORIZE(context);
  absl::StatusOr<ArtifactReader> reader = core_->OpenArtifact(request->name());
  if (!reader.ok()) return ToGrpcStatus(reader.status());
  return StreamArtifact(context, *reader, chunk_bytes_, writer);
}

grpc::Status JobServiceImpl::ListWorkers(grpc::ServerContext* context,
                                         const mpt::v1::ListWorkersRequest* /*request*/,
                                         mpt::v1::ListWorkersResponse* response) {
  MPT_AUTHORIZE(context);
  *response = core_->ListWorkers();
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetStageLogs(grpc::ServerContext* context,
                                          const mpt::v1::GetStageLogsRequest* request,
                                          mpt::v1::GetStageLogsResponse* response) {
  MPT_AUTHORIZE(context);
  absl::StatusOr<mpt::v1::GetStageLogsResponse> page = core_->GetStageLogs(*request);
  if (!page.ok()) return ToGrpcStatus(page.status());
  *response = *std::move(page);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// WorkerService

WorkerServiceImpl::WorkerServiceImpl(Coordinator* coordinator,
                                     const BearerTokenAuthenticator* auth, int chunk_bytes,
                                     int64_t max_artifact_bytes,
                                     bool bind_workers_to_certificates)
    : RawService("WorkerService"),
      core_(coordinator),
      auth_(auth),
      chunk_bytes_(chunk_bytes),
      max_artifact_bytes_(max_artifact_bytes),
      bind_workers_to_certificates_(bind_workers_to_certificates) {
  using W = WorkerServiceImpl;
  AddRawMethod("RegisterWorker", RawUnary(this, &W::RegisterWorker));
  AddRawMethod("Heartbeat", RawUnary(this, &W::Heartbeat));
  AddRawMethod("PollAssignment", RawUnary(this, &W::PollAssignment));
  AddRawMethod("ReportProgress", RawUnary(this, &W::ReportProgress));
  AddRawMethod("UploadArtifact", RawClientStreaming(this, &W::UploadArtifact));
  AddRawMethod("FetchArtifact", RawServerStreaming(this, &W::FetchArtifact));
  AddRawMethod("CompleteAssignment", RawUnary(this, &W::CompleteAssignment));
  AddRawMethod("StoreSet", RawUnary(this, &W::StoreSet));
  AddRawMethod("StoreGet", RawUnary(this, &W::StoreGet));
  CheckAllMethodsAdded();
}

std::optional<std::string> WorkerServiceImpl::CertificateFor(
    const grpc::ServerContextBase& context) const {
  if (!bind_workers_to_certificates_) return std::nullopt;
  std::optional<PeerCertificate> cert = PeerCertificateOf(context);
  return cert.has_value() ? cert->sha256 : std::string();
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const mpt::v1::RegisterWorkerRequest* request,
                                               mpt::v1::RegisterWorkerResponse* response) {
  MPT_AUTHORIZE(context);
  std::string cert_sha256;
  if (bind_workers_to_certificates_) {
    std::optional<PeerCertificate> cert = PeerCertificateOf(*context);
    if (!cert.has_value()) {
      return ToGrpcStatus(absl::UnauthenticatedError(
          "this coordinator binds workers to client certificates "
          "(--bind_workers_to_certificates): RegisterWorker needs one"));
    }
    const std::string& host = request->worker().hostname();
    // Host names compare without regard to case, as DNS names do.
    if (std::none_of(cert->names.begin(), cert->names.end(),
                     [&](const std::string& n) { return absl::EqualsIgnoreCase(n, host); })) {
      std::vector<std::string> quoted;
      for (const std::string& n : cert->names) quoted.push_back(QuoteForError(n));
      return ToGrpcStatus(absl::PermissionDeniedError(absl::StrCat(
          "worker.hostname: ", QuoteForError(host), " is not a name of the client certificate (",
          quoted.empty() ? "it has none" : absl::StrJoin(quoted, ", "),
          "); workers are bound to their certificates (--bind_workers_to_certificates)")));
    }
    cert_sha256 = cert->sha256;
  }
  absl::StatusOr<mpt::v1::RegisterWorkerResponse> r =
      core_->RegisterWorker(request->worker(), cert_sha256);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const mpt::v1::HeartbeatRequest* request,
                                          mpt::v1::HeartbeatResponse* response) {
  MPT_AUTHORIZE(context);
  MPT_CHECK_WORKER_KEY(context, request->worker());
  absl::StatusOr<mpt::v1::HeartbeatResponse> r = core_->Heartbeat(request->worker());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::PollAssignment(grpc::ServerContext* context,
                                               const mpt::v1::PollAssignmentRequest* request,
                                               mpt::v1::PollAssignmentResponse* response) {
  MPT_AUTHORIZE(context);
  MPT_CHECK_WORKER_KEY(context, request->worker());
  absl::StatusOr<absl::Time> end = WaitEnd(*context, request->wait_seconds(), "wait_seconds");
  if (!end.ok()) return ToGrpcStatus(end.status());
  while (true) {
    const absl::Time now = absl::Now();
    absl::StatusOr<std::optional<mpt::v1::Assignment>> a =
        core_->PollAssignment(request->worker(), std::min(*end, now + kSlice));
    if (!a.ok()) return ToGrpcStatus(a.status());
    if (a->has_value()) {
      *response->mutable_assignment() = **std::move(a);
      return grpc::Status::OK;
    }
    if (absl::Now() >= *end) return grpc::Status::OK;  // nothing to do
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* context,
                                               const mpt::v1::ReportProgressRequest* request,
                                               mpt::v1::ReportProgressResponse* response) {
  MPT_AUTHORIZE(context);
  MPT_CHECK_WORKER_KEY(context, request->worker());
  absl::StatusOr<mpt::v1::ReportProgressResponse> r = core_->ReportProgress(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

// The header is checked on the first message, before any data is
// accepted (an upload for an assignment the caller does not hold ends
// there), and the data goes to a temporary file as it arrives
// (Coordinator::BeginUpload()), never to memory: one message at a time.
grpc::Status WorkerServiceImpl::UploadArtifact(
    grpc::ServerContext* context, grpc::internal::ReaderInterface<grpc::ByteBuffer>* reader,
    mpt::v1::UploadArtifactResponse* response) {
  MPT_AUTHORIZE(context);
  grpc::ByteBuffer buffer;
  mpt::v1::UploadArtifactRequest message;
  if (!reader->Read(&buffer)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "header: the upload carried no message");
  }
  grpc::Status parsed = ParseRequest(buffer, &message);
  if (!parsed.ok()) return parsed;
  if (!message.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "header: the first message of an upload must carry the header");
  }
  MPT_CHECK_WORKER_KEY(context, message.header().worker());
  absl::StatusOr<std::unique_ptr<ArtifactUpload>> upload = core_->BeginUpload(message.header());
  if (!upload.ok()) return ToGrpcStatus(upload.status());
  std::string sha256;
  while (true) {
    if (absl::Status appended = (*upload)->Append(message.data()); !appended.ok()) {
      return ToGrpcStatus(appended);
    }
    if (!message.sha256().empty()) sha256 = message.sha256();
    buffer.Clear();
    if (!reader->Read(&buffer)) break;
    message.Clear();
    parsed = ParseRequest(buffer, &message);
    if (!parsed.ok()) return parsed;
    if (message.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "header: only the first message of an upload may carry it");
    }
  }
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  absl::StatusOr<mpt::v1::Artifact> artifact =
      core_->FinishUpload(*std::move(upload), sha256);
  if (!artifact.ok()) return ToGrpcStatus(artifact.status());
  *response->mutable_artifact() = *std::move(artifact);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::FetchArtifact(
    grpc::ServerContext* context, const mpt::v1::FetchArtifactRequest* request,
    grpc::internal::WriterInterface<mpt::v1::ArtifactChunk>* writer) {
  MPT_AUTHORIZE(context);
  if (absl::Status key = core_->CheckAnyWorkerKey(WorkerKeyOf(*context), CertificateFor(*context));
      !key.ok()) {
    return ToGrpcStatus(key);
  }
  absl::StatusOr<ArtifactReader> reader = core_->OpenArtifact(request->name());
  if (!reader.ok()) return ToGrpcStatus(reader.status());
  return StreamArtifact(context, *reader, chunk_bytes_, writer);
}

grpc::Status WorkerServiceImpl::CompleteAssignment(
    grpc::ServerContext* context, const mpt::v1::CompleteAssignmentRequest* request,
    mpt::v1::CompleteAssignmentResponse* /*response*/) {
  MPT_AUTHORIZE(context);
  MPT_CHECK_WORKER_KEY(context, request->worker());
  return ToGrpcStatus(core_->CompleteAssignment(*request));
}

grpc::Status WorkerServiceImpl::StoreSet(grpc::ServerContext* context,
                                         const mpt::v1::StoreSetRequest* request,
                                         mpt::v1::StoreSetResponse* /*response*/) {
  MPT_AUTHORIZE(context);
  MPT_CHECK_WORKER_KEY(context, request->worker());
  return ToGrpcStatus(core_->StoreSet(*request));
}

grpc::Status WorkerServiceImpl::StoreGet(grpc::ServerContext* context,
                                         const mpt::v1::StoreGetRequest* request,
                                         mpt::v1::StoreGetResponse* response) {
  MPT_AUTHORIZE(context);
  MPT_CHECK_WORKER_KEY(context, request->worker());
  absl::StatusOr<absl::Time> end = WaitEnd(*context, request->wait_seconds(), "wait_seconds");
  if (!end.ok()) return ToGrpcStatus(end.status());
  while (true) {
    absl::StatusOr<std::vector<std::string>> values =
        core_->StoreGet(*request, std::min(*end, absl::Now() + kSlice));
    if (values.ok()) {
      for (std::string& v : *values) response->add_values(std::move(v));
      return grpc::Status::OK;
    }
    if (values.status().code() != absl::StatusCode::kDeadlineExceeded || absl::Now() >= *end) {
      return ToGrpcStatus(values.status());
    }
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
}

#undef MPT_CHECK_WORKER_KEY
#undef MPT_AUTHORIZE

// ---------------------------------------------------------------------------
// The server

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const GrpcServerOptions& options, Coordinator* coordinator) {
  if (coordinator == nullptr) return absl::InvalidArgumentError("no coordinator to serve");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key: give both (TLS) or neither (plaintext)");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
  }
  if (options.bind_workers_to_certificates && options.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--bind_workers_to_certificates needs client certificates (--tls_client_ca, with "
        "--tls_cert and --tls_key)");
  }
  if (options.artifact_chunk_bytes < 1) {
    return absl::InvalidArgumentError("artifact_chunk_bytes must be >= 1");
  }
  // A gRPC target other than host:port (unix:PATH, unix-abstract:NAME) is
  // left to gRPC.
  if (!absl::StartsWith(options.listen, "unix:") &&
      !absl::StartsWith(options.listen, "unix-abstract:")) {
    RETURN_IF_ERROR(ParseHostPort(options.listen, "--listen").status());
  }
  for (auto [flag, value] : {std::make_pair("--auth_token_file", &options.auth_token),
                             std::make_pair("--worker_token_file", &options.worker_token)}) {
    if (!value->empty()) RETURN_IF_ERROR(CheckBearerToken(*value, flag));
  }
  std::shared_ptr<grpc::ServerCredentials> credentials;
  const bool tls = !options.tls_cert_file.empty();
  if (tls) {
    ASSIGN_OR_RETURN(std::string cert,
                     ReadPemFile(options.tls_cert_file, "--tls_cert", PemKind::kCertificate));
    ASSIGN_OR_RETURN(std::string key,
                     ReadPemFile(options.tls_key_file, "--tls_key", PemKind::kPrivateKey));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!options.tls_client_ca_file.empty()) {
      absl::StatusOr<std::string> ca =
          ReadPemFile(options.tls_client_ca_file, "--tls_client_ca", PemKind::kCertificate);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }

  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->coordinator_ = coordinator;
  server->tls_ = tls;
  server->auth_ = std::make_unique<BearerTokenAuthenticator>(options.auth_token);
  server->job_service_ = std::make_unique<JobServiceImpl>(
      coordinator, server->auth_.get(), options.artifact_chunk_bytes, options.max_watch_streams);
  server->worker_auth_ = std::make_unique<BearerTokenAuthenticator>(
      options.worker_token.empty() ? options.auth_token : options.worker_token);
  server->worker_service_ = std::make_unique<WorkerServiceImpl>(
      coordinator, server->worker_auth_.get(), options.artifact_chunk_bytes,
      coordinator->options().max_artifact_bytes, options.bind_workers_to_certificates);

  server->reflection_v1_ = std::make_unique<ServerReflectionV1>(std::vector<std::string>{
      kJobService, kWorkerService, "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which lets a second server bind a
  // port in use and take part of its traffic instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  builder.RegisterService(server->job_service_.get());
  builder.RegisterService(server->worker_service_.get());
  builder.RegisterService(server->reflection_v1_.get());
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  if (options.rpc_duration != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(MakeRpcMetricsInterceptorFactory(options.rpc_duration));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    if (tls) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on ", options.listen, ": the address is in use or not resolvable, or "
          "gRPC could not load the TLS files (--tls_cert=", options.tls_cert_file, ", --tls_key=",
          options.tls_key_file, ": is the key the certificate's?)"));
    }
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                               ": the address is in use or not resolvable"));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(kJobService, true);
    health->SetServingStatus(kWorkerService, true);
  }
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(absl::ZeroDuration()); }

void CoordinatorServer::Shutdown(absl::Duration grace) {
  if (shut_down_.exchange(true)) return;
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
  coordinator_->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

}  // namespace mpt
