// One loopback test of the real gRPC server: a coordinator on 127.0.0.1:0
// and real channels. JobService and WorkerService calls, the bearer token,
// streaming (WatchJob, UploadArtifact, DownloadArtifact), health checking
// and server reflection.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <google/protobuf/unknown_field_set.h>

#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "common/secrets.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "proto/grpc/reflection/v1/reflection.grpc.pb.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "server/grpc_service.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

constexpr char kToken[] = "s3cret-token";

// A self-signed certificate for localhost and 127.0.0.1 (EC P-256, valid
// 2000-2199), made for this test and used nowhere else.
constexpr char kTestCertPem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBXDCCAQGgAwIBAgIUZDaCYFAyNzqIRdapSzXLMlg7RfIwCgYIKoZIzj0EAwIw\n"
    "FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTAwMDEwMTAwMDAwMFoYDzIxOTkxMjMx\n"
    "MDAwMDAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
    "PQMBBwNCAASX4sEVnSh20W6u8B5EwFHZUEKLgy0wIlTP4+ad/LUTRvCoSo3tqZOX\n"
    "yh85JF6JY9msBqtY7QMfJgBsr9054CU9oy8wLTAPBgNVHRMBAf8EBTADAQH/MBoG\n"
    "A1UdEQQTMBGCCWxvY2FsaG9zdIcEfwAAATAKBggqhkjOPQQDAgNJADBGAiEAsd1Y\n"
    "Mv1dg58w8kkqxvy8kw02CbibYAJ9Z6ZQ71HSIPQCIQD9fbDAuiGUD3Fh1Fq3dyRV\n"
    "zm5weOCOaC5MNEmC0xleZg==\n"
    "-----END CERTIFICATE-----\n";

constexpr char kTestKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5hJ1iLX3mzisD2Sy\n"
    "2/GOZnoDnSKTDwXH9/Am79Yk71yhRANCAASX4sEVnSh20W6u8B5EwFHZUEKLgy0w\n"
    "IlTP4+ad/LUTRvCoSo3tqZOXyh85JF6JY9msBqtY7QMfJgBsr9054CU9\n"
    "-----END PRIVATE KEY-----\n";

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

void Await(grpc::CompletionQueue* cq, intptr_t expected, bool want_ok = true) {
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq->Next(&tag, &ok));
  EXPECT_EQ(reinterpret_cast<intptr_t>(tag), expected);
  if (want_ok) {
    EXPECT_TRUE(ok) << "tag " << expected;
  }
}

// The length-delimited fields numbered `number` of a serialized message.
std::vector<std::string> Fields(const std::string& message, int number) {
  google::protobuf::UnknownFieldSet set;
  EXPECT_TRUE(set.ParseFromString(message));
  std::vector<std::string> out;
  for (int i = 0; i < set.field_count(); ++i) {
    if (set.field(i).number() == number &&
        set.field(i).type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(set.field(i).length_delimited());
    }
  }
  return out;
}

class GrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = testing::FreshFiles("grpc", /*on_disk=*/true);
    auto core = testing::OpenCoordinator(files_, std::make_shared<RealClock>());
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = *std::move(core);
    GrpcServerOptions options;
    options.listen = "127.0.0.1:0";
    options.auth_token = kToken;
    options.artifact_chunk_bytes = 7;  // several chunks even for small artefacts
    auto server = CoordinatorServer::Start(options, core_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    jobs_ = mpt::v1::JobService::NewStub(channel_);
    workers_ = mpt::v1::WorkerService::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  // A context with the token and a deadline.
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(10)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", std::string("Bearer ") + kToken);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return ctx;
  }

  // The same with the key of the worker a test registered (worker_key_).
  std::unique_ptr<grpc::ClientContext> WorkerContext() {
    auto ctx = Context();
    ctx->AddMetadata(kWorkerKeyMetadata, worker_key_);
    return ctx;
  }

  testing::CoordinatorFiles files_;
  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<mpt::v1::JobService::Stub> jobs_;
  std::unique_ptr<mpt::v1::WorkerService::Stub> workers_;
  std::string worker_key_;
};

TEST_F(GrpcServerTest, JobLifecycleOverTheWire) {
  // Without the token: UNAUTHENTICATED.
  {
    grpc::ClientContext ctx;
    mpt::v1::Job job;
    grpc::Status s = jobs_->SubmitJob(&ctx, testing::SourceRequest("a"), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext wrong;
    wrong.AddMetadata("authorization", "Bearer nope");
    mpt::v1::HeartbeatResponse heartbeat;
    EXPECT_EQ(workers_->Heartbeat(&wrong, mpt::v1::HeartbeatRequest(), &heartbeat).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // A bad spec: INVALID_ARGUMENT naming the field, nothing stored.
  {
    auto bad = testing::SourceRequest("a");
    bad.mutable_spec()->mutable_source()->clear_tasks();
    mpt::v1::Job job;
    grpc::Status s = jobs_->SubmitJob(Context().get(), bad, &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "source.tasks")) << s.error_message();
  }
  mpt::v1::Job job;
  ASSERT_TRUE(jobs_->SubmitJob(Context().get(), testing::SourceRequest("a"), &job).ok());
  EXPECT_EQ(job.state(), mpt::v1::QUEUED);
  mpt::v1::GetJobRequest get;
  get.set_name(job.name());
  mpt::v1::Job got;
  ASSERT_TRUE(jobs_->GetJob(Context().get(), get, &got).ok());
  EXPECT_EQ(got.name(), job.name());
  get.set_name("jobs/missing");
  EXPECT_EQ(jobs_->GetJob(Context().get(), get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  mpt::v1::ListJobsResponse list;
  ASSERT_TRUE(jobs_->ListJobs(Context().get(), mpt::v1::ListJobsRequest(), &list).ok());
  ASSERT_EQ(list.jobs_size(), 1);

  // Watch the job from the start in the background until its stream ends.
  std::vector<mpt::v1::JobEvent> watched;
  grpc::Status watch_status;
  std::thread watcher([&] {
    auto ctx = Context(absl::Seconds(30));
    mpt::v1::WatchJobRequest w;
    w.set_name(job.name());
    auto reader = jobs_->WatchJob(ctx.get(), w);
    mpt::v1::JobEvent e;
    while (reader->Read(&e)) watched.push_back(e);
    watch_status = reader->Finish();
  });

  // A worker: register, long-poll, upload in chunks, complete.
  mpt::v1::RegisterWorkerRequest reg;
  reg.mutable_worker()->set_hostname("loopback");
  mpt::v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(workers_->RegisterWorker(Context().get(), reg, &registered).ok());
  ASSERT_EQ(registered.worker_key().size(), 64u);
  worker_key_ = registered.worker_key();
  mpt::v1::PollAssignmentRequest poll;
  poll.set_worker(registered.name());
  poll.set_wait_seconds(5);
  mpt::v1::PollAssignmentResponse polled;
  ASSERT_TRUE(workers_->PollAssignment(WorkerContext().get(), poll, &polled).ok());
  ASSERT_TRUE(polled.has_assignment());
  const mpt::v1::Assignment& a = polled.assignment();

  mpt::v1::ReportProgressRequest progress;
  progress.set_assignment(a.id());
  progress.set_worker(registered.name());
  progress.mutable_progress()->set_step(5);
  progress.mutable_progress()->set_total_steps(10);
  mpt::v1::ReportProgressResponse reported;
  ASSERT_TRUE(workers_->ReportProgress(WorkerContext().get(), progress, &reported).ok());
  EXPECT_FALSE(reported.cancelled());

  const std::string adapter = testing::AdapterBlobFor(a);
  ASSERT_GT(adapter.size(), 10u);
  {
    auto ctx = WorkerContext();
    mpt::v1::UploadArtifactResponse uploaded;
    auto writer = workers_->UploadArtifact(ctx.get(), &uploaded);
    mpt::v1::UploadArtifactRequest first;
    first.mutable_header()->set_assignment(a.id());
    first.mutable_header()->set_kind("adapter");
    first.mutable_header()->set_worker(registered.name());
    first.set_data(adapter.substr(0, 10));
    ASSERT_TRUE(writer->Write(first));
    mpt::v1::UploadArtifactRequest last;
    last.set_data(adapter.substr(10));
    last.set_sha256(Sha256Hex(adapter));
    ASSERT_TRUE(writer->Write(last));
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(uploaded.artifact().size_bytes(), static_cast<int64_t>(adapter.size()));
  }
  mpt::v1::CompleteAssignmentRequest complete;
  complete.set_assignment(a.id());
  complete.set_worker(registered.name());
  complete.set_ok(true);
  mpt::v1::CompleteAssignmentResponse completed;
  ASSERT_TRUE(workers_->CompleteAssignment(WorkerContext().get(), complete, &completed).ok());

  watcher.join();
  ASSERT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_GE(watched.size(), 3u);
  EXPECT_EQ(watched.front().sequence(), 1);
  EXPECT_EQ(watched.back().state(), mpt::v1::SUCCEEDED);

  // Download: chunks with offsets, the hash on the last.
  get.set_name(job.name());
  ASSERT_TRUE(jobs_->GetJob(Context().get(), get, &got).ok());
  ASSERT_EQ(got.state(), mpt::v1::SUCCEEDED);
  mpt::v1::DownloadArtifactRequest download;
  download.set_name(got.stages(0).artifact());
  auto ctx = Context();
  auto reader = jobs_->DownloadArtifact(ctx.get(), download);
  mpt::v1::ArtifactChunk chunk;
  std::string bytes;
  std::string sha;
  int chunks = 0;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.offset(), static_cast<int64_t>(bytes.size()));
    EXPECT_EQ(chunk.total_bytes(), static_cast<int64_t>(adapter.size()));
    bytes += chunk.data();
    if (!chunk.sha256().empty()) sha = chunk.sha256();
    ++chunks;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(bytes, adapter);
  EXPECT_EQ(sha, Sha256Hex(adapter));
  // In chunks of 7 bytes.
  EXPECT_EQ(chunks, static_cast<int>((adapter.size() + 6) / 7));

  // The rendezvous store: the group of an attempt that ended is refused
  // (groups are those of running attempts, server/README.md).
  mpt::v1::StoreSetRequest set;
  set.set_group(a.group());
  set.set_assignment(a.id());
  set.set_worker(poll.worker());
  set.set_key("nccl_id");
  set.set_value(std::string("\x00\x01\x02", 3));
  mpt::v1::StoreSetResponse set_response;
  EXPECT_EQ(workers_->StoreSet(WorkerContext().get(), set, &set_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  mpt::v1::Job running;
  ASSERT_TRUE(jobs_->SubmitJob(Context().get(), testing::SourceRequest("b"), &running).ok());
  ASSERT_TRUE(workers_->PollAssignment(WorkerContext().get(), poll, &polled).ok());
  ASSERT_TRUE(polled.has_assignment());
  set.set_group(polled.assignment().group());
  set.set_assignment(polled.assignment().id());
  ASSERT_TRUE(workers_->StoreSet(WorkerContext().get(), set, &set_response).ok());
  // Only the rank's own worker.
  set.set_worker("workers/forged");
  EXPECT_EQ(workers_->StoreSet(WorkerContext().get(), set, &set_response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  mpt::v1::StoreGetRequest store_get;
  store_get.set_group(polled.assignment().group());
  store_get.set_assignment(polled.assignment().id());
  store_get.set_worker(poll.worker());
  store_get.add_keys("nccl_id");
  store_get.set_wait_seconds(1);
  mpt::v1::StoreGetResponse values;
  ASSERT_TRUE(workers_->StoreGet(WorkerContext().get(), store_get, &values).ok());
  ASSERT_EQ(values.values_size(), 1);
  EXPECT_EQ(values.values(0), std::string("\x00\x01\x02", 3));
}

// Each registration's key binds the calls that name its worker: a holder of
// the worker token cannot act as another worker, nor fetch artefacts
// without a live worker's key.
TEST_F(GrpcServerTest, WorkerCallsCarryTheirWorkersKey) {
  auto register_worker = [&](const std::string& host) {
    mpt::v1::RegisterWorkerRequest reg;
    reg.mutable_worker()->set_hostname(host);
    mpt::v1::RegisterWorkerResponse registered;
    EXPECT_TRUE(workers_->RegisterWorker(Context().get(), reg, &registered).ok());
    return registered;
  };
  const mpt::v1::RegisterWorkerResponse a = register_worker("a");
  const mpt::v1::RegisterWorkerResponse b = register_worker("b");
  ASSERT_EQ(a.worker_key().size(), 64u);
  ASSERT_NE(a.worker_key(), b.worker_key());
  auto heartbeat = [&](const std::string& worker, const std::string* key) {
    auto ctx = Context();
    if (key != nullptr) ctx->AddMetadata(kWorkerKeyMetadata, *key);
    mpt::v1::HeartbeatRequest request;
    request.set_worker(worker);
    mpt::v1::HeartbeatResponse response;
    return workers_->Heartbeat(ctx.get(), request, &response);
  };
  EXPECT_TRUE(heartbeat(a.name(), &a.worker_key()).ok());
  grpc::Status s = heartbeat(a.name(), nullptr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(s.error_message(), kWorkerKeyMetadata)) << s.error_message();
  EXPECT_EQ(heartbeat(a.name(), &b.worker_key()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const std::string guess(64, '0');
  EXPECT_EQ(heartbeat(a.name(), &guess).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // An unknown worker is still NOT_FOUND (the worker registers again).
  EXPECT_EQ(heartbeat("workers/000000000000", &a.worker_key()).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // FetchArtifact names no worker: any live worker's key.
  auto fetch = [&](const std::string* key) {
    auto ctx = Context();
    if (key != nullptr) ctx->AddMetadata(kWorkerKeyMetadata, *key);
    mpt::v1::FetchArtifactRequest request;
    request.set_name("jobs/000000000000/artifacts/000000000000");
    auto reader = workers_->FetchArtifact(ctx.get(), request);
    mpt::v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  };
  EXPECT_EQ(fetch(nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(fetch(&guess).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(fetch(&b.worker_key()).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Downloads are read from disk chunk by chunk; a blob damaged on disk ends
// the stream DATA_LOSS before the last chunk, so no client is ever handed a
// checksum with bytes that do not match it.
TEST_F(GrpcServerTest, ADamagedBlobEndsTheDownloadWithoutTheChecksum) {
  const testing::RegisteredWorker w = testing::RegisterWithKey(core_.get());
  ASSERT_TRUE(core_->SubmitJob(testing::SourceRequest("a")).ok());
  auto a = testing::Poll(core_.get(), w.name);
  ASSERT_TRUE(a.has_value());
  const std::string blob = testing::AdapterBlobFor(*a);
  auto art = testing::Upload(core_.get(), a->id(), "adapter", blob);
  ASSERT_TRUE(art.ok()) << art.status();
  ASSERT_GT(blob.size(), 70u);

  auto download = [&](bool as_worker, std::string* bytes, bool* got_sha) {
    auto ctx = Context();
    bytes->clear();
    *got_sha = false;
    mpt::v1::ArtifactChunk chunk;
    std::unique_ptr<grpc::ClientReader<mpt::v1::ArtifactChunk>> reader;
    if (as_worker) {
      ctx->AddMetadata(kWorkerKeyMetadata, w.key);
      mpt::v1::FetchArtifactRequest request;
      request.set_name(art->name());
      reader = workers_->FetchArtifact(ctx.get(), request);
    } else {
      mpt::v1::DownloadArtifactRequest request;
      request.set_name(art->name());
      reader = jobs_->DownloadArtifact(ctx.get(), request);
    }
    while (reader->Read(&chunk)) {
      *bytes += chunk.data();
      *got_sha |= !chunk.sha256().empty();
    }
    return reader->Finish();
  };
  std::string bytes;
  bool got_sha = false;
  for (bool as_worker : {false, true}) {
    ASSERT_TRUE(download(as_worker, &bytes, &got_sha).ok());
    EXPECT_EQ(bytes, blob);
    EXPECT_TRUE(got_sha);
  }

  {
    std::fstream f(files_.artifacts + "/sha256/" + art->sha256().substr(0, 2) + "/" +
                       art->sha256().substr(2),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put(static_cast<char>(blob[3] ^ 1));
  }
  for (bool as_worker : {false, true}) {
    grpc::Status s = download(as_worker, &bytes, &got_sha);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), art->name())) << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "corrupt")) << s.error_message();
    EXPECT_FALSE(got_sha);
    EXPECT_LT(bytes.size(), blob.size());
  }
}

// Raw calls with a string field that is not valid UTF-8: INVALID_ARGUMENT
// naming the field (gRPC's own parser would answer INTERNAL with no message).
TEST_F(GrpcServerTest, InvalidUtf8IsInvalidArgumentNamingTheField) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  auto unary = [&](const std::string& method, const std::string& request) {
    auto ctx = Context(absl::Seconds(5));
    auto call = stub.PrepareUnaryCall(ctx.get(), method, ToBuffer(request), &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    Await(&cq, 1);
    return status;
  };
  // A string field's whole value replaced by as many bytes ending in 0xFF.
  auto corrupt = [](const google::protobuf::Message& m, const std::string& placeholder) {
    std::string wire = m.SerializeAsString();
    std::string bad = placeholder;
    bad.back() = '\xff';
    const size_t at = wire.find(placeholder);
    EXPECT_NE(at, std::string::npos);
    return wire.replace(at, placeholder.size(), bad);
  };

  auto submit = testing::SourceRequest("placeholdertask");
  submit.set_display_name("DISPLAYNAME");
  grpc::Status s = unary("/mpt.v1.JobService/SubmitJob", corrupt(submit, "DISPLAYNAME"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "display_name: a string field is not valid UTF-8");
  s = unary("/mpt.v1.JobService/SubmitJob", corrupt(submit, "placeholdertask"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "spec.source.tasks[0].name: a string field"))
      << s.error_message();
  mpt::v1::ListJobsResponse list;
  ASSERT_TRUE(jobs_->ListJobs(Context().get(), mpt::v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);  // nothing stored
  // The same bytes, valid: the raw path serves the call.
  EXPECT_TRUE(unary("/mpt.v1.JobService/SubmitJob", submit.SerializeAsString()).ok());

  mpt::v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker("workers/WORKERNAME");
  s = unary("/mpt.v1.WorkerService/Heartbeat", corrupt(heartbeat, "WORKERNAME"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "worker: a string field is not valid UTF-8");
  // Not a protobuf message at all.
  s = unary("/mpt.v1.JobService/GetJob", std::string("\x0a\x7f", 2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "not a well-formed mpt.v1.GetJobRequest"))
      << s.error_message();

  // Unary and server-streaming calls whose client half-closes without
  // sending a message.
  for (const char* method : {"/mpt.v1.JobService/GetJob", "/mpt.v1.JobService/SubmitJob",
                             "/mpt.v1.JobService/DownloadArtifact", "/mpt.v1.JobService/WatchJob",
                             "/mpt.v1.WorkerService/Heartbeat"}) {
    auto ctx = Context(absl::Seconds(5));
    auto call = stub.PrepareCall(ctx.get(), method, &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    Await(&cq, 1);
    call->WritesDone(reinterpret_cast<void*>(2));
    Await(&cq, 2);
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(3));
    Await(&cq, 3);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_EQ(status.error_message(), "the call carried no request message") << method;
  }

  // A server-streaming call.
  {
    mpt::v1::WatchJobRequest watch;
    watch.set_name("jobs/JOBNAME");
    auto ctx = Context(absl::Seconds(5));
    auto call = stub.PrepareCall(ctx.get(), "/mpt.v1.JobService/WatchJob", &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    Await(&cq, 1);
    call->WriteLast(ToBuffer(corrupt(watch, "JOBNAME")), grpc::WriteOptions(),
                    reinterpret_cast<void*>(2));
    Await(&cq, 2);
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(3));
    Await(&cq, 3);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(), "name: a string field is not valid UTF-8");
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(GrpcServerTest, HealthCheckingAndReflection) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    // HealthCheckRequest{service: "mpt.v1.JobService"}
    const std::string service = "mpt.v1.JobService";
    std::string request = "\x0a" + std::string(1, static_cast<char>(service.size())) + service;
    auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", ToBuffer(request), &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    Await(&cq, 1);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(FromBuffer(response), std::string("\x08\x01", 2));  // status: SERVING
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    auto call = stub.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    Await(&cq, 1);
    // ServerReflectionRequest{list_services: ""}
    call->Write(ToBuffer(std::string("\x3a\x00", 2)), reinterpret_cast<void*>(2));
    Await(&cq, 2);
    call->WritesDone(reinterpret_cast<void*>(3));
    Await(&cq, 3);
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(4));
    Await(&cq, 4);
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    Await(&cq, 5);
    ASSERT_TRUE(status.ok()) << status.error_message();
    // list_services_response (6) -> service (1) -> name (1)
    std::set<std::string> services;
    for (const std::string& list : Fields(FromBuffer(response), 6)) {
      for (const std::string& service : Fields(list, 1)) {
        for (const std::string& name : Fields(service, 1)) services.insert(name);
      }
    }
    EXPECT_TRUE(services.count("mpt.v1.JobService")) << services.size();
    EXPECT_TRUE(services.count("mpt.v1.WorkerService"));
    EXPECT_TRUE(services.count("grpc.health.v1.Health"));
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

// One reflection request over `method` (v1 or v1alpha: the same messages on
// the wire), as a raw call.
grpc::reflection::v1::ServerReflectionResponse Reflect(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const grpc::reflection::v1::ServerReflectionRequest& request) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  auto call = stub.PrepareCall(&ctx, method, &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  Await(&cq, 1);
  call->WriteLast(ToBuffer(request.SerializeAsString()), grpc::WriteOptions(),
                  reinterpret_cast<void*>(2));
  Await(&cq, 2);
  grpc::ByteBuffer buffer;
  call->Read(&buffer, reinterpret_cast<void*>(3));
  Await(&cq, 3);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  Await(&cq, 4);
  EXPECT_TRUE(status.ok()) << method << ": " << status.error_message();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  grpc::reflection::v1::ServerReflectionResponse response;
  EXPECT_TRUE(response.ParseFromString(FromBuffer(buffer)));
  return response;
}

// Builds the files of a file descriptor response into a fresh pool, as a
// client does, and returns whether `service` can be found there with a
// method whose input type resolves.
bool Describes(const grpc::reflection::v1::ServerReflectionResponse& response,
               const std::string& service) {
  google::protobuf::DescriptorPool pool;
  std::vector<google::protobuf::FileDescriptorProto> files;
  for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    files.emplace_back();
    if (!files.back().ParseFromString(bytes)) return false;
  }
  // Build each file once all its dependencies are built: every one must be
  // in the response.
  std::vector<bool> built(files.size(), false);
  for (size_t round = 0; round < files.size(); ++round) {
    for (size_t i = 0; i < files.size(); ++i) {
      if (built[i]) continue;
      bool ready = true;
      for (const std::string& dep : files[i].dependency()) {
        ready = ready && pool.FindFileByName(dep) != nullptr;
      }
      if (ready) built[i] = pool.BuildFile(files[i]) != nullptr;
    }
  }
  for (bool b : built) {
    if (!b) return false;
  }
  const google::protobuf::ServiceDescriptor* s = pool.FindServiceByName(service);
  return s != nullptr && s->method_count() > 0 && s->method(0)->input_type() != nullptr;
}

TEST(GeneratedPoolTest, HealthServiceIsDescribed) {
  // The server links grpc/health/v1/health.proto (reflection_v1.cc).
  EXPECT_NE(google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
                "grpc.health.v1.Health"),
            nullptr);
}

TEST_F(GrpcServerTest, ReflectionV1AndV1Alpha) {
  // The generated v1 stub: list the services.
  {
    auto stub = grpc::reflection::v1::ServerReflection::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    auto stream = stub->ServerReflectionInfo(&ctx);
    grpc::reflection::v1::ServerReflectionRequest request;
    request.set_list_services("");
    ASSERT_TRUE(stream->Write(request));
    grpc::reflection::v1::ServerReflectionResponse response;
    ASSERT_TRUE(stream->Read(&response));
    std::set<std::string> services;
    for (const auto& s : response.list_services_response().service()) services.insert(s.name());
    EXPECT_EQ(services, (std::set<std::string>{"mpt.v1.JobService", "mpt.v1.WorkerService",
                                                "grpc.health.v1.Health",
                                                "grpc.reflection.v1.ServerReflection",
                                                "grpc.reflection.v1alpha.ServerReflection"}));
    // A second request on the same stream.
    request.set_file_containing_symbol("no.such.Symbol");
    ASSERT_TRUE(stream->Write(request));
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  for (const std::string method : {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   "/grpc.reflection.v1alpha.ServerReflection/"
                                   "ServerReflectionInfo"}) {
    SCOPED_TRACE(method);
    for (const std::string service : {"grpc.health.v1.Health", "mpt.v1.JobService",
                                      "mpt.v1.WorkerService"}) {
      grpc::reflection::v1::ServerReflectionRequest request;
      request.set_file_containing_symbol(service);
      auto response = Reflect(channel_, method, request);
      ASSERT_TRUE(response.has_file_descriptor_response())
          << service << ": " << response.error_response().error_message();
      EXPECT_TRUE(Describes(response, service)) << service;
    }
  }
  // v1 by file name (with service.proto's dependencies spec.proto and
  // timestamp.proto), and the extension queries.
  grpc::reflection::v1::ServerReflectionRequest request;
  const std::string v1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
  request.set_file_by_filename(mpt::v1::Job::descriptor()->file()->name());
  auto response = Reflect(channel_, v1, request);
  EXPECT_EQ(response.file_descriptor_response().file_descriptor_proto_size(), 3);
  EXPECT_TRUE(Describes(response, "mpt.v1.JobService"));
  request.set_file_by_filename("no/such.proto");
  EXPECT_EQ(Reflect(channel_, v1, request).error_response().error_code(),
            grpc::StatusCode::NOT_FOUND);
  request.set_all_extension_numbers_of_type("mpt.v1.Job");
  response = Reflect(channel_, v1, request);
  EXPECT_EQ(response.all_extension_numbers_response().base_type_name(), "mpt.v1.Job");
  EXPECT_EQ(response.all_extension_numbers_response().extension_number_size(), 0);
  request.mutable_file_containing_extension()->set_containing_type(
      "google.protobuf.MessageOptions");
  request.mutable_file_containing_extension()->set_extension_number(424242);
  EXPECT_EQ(Reflect(channel_, v1, request).error_response().error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST(GrpcServerAuthTest, SeparateWorkerTokenKeepsUsersAndWorkersApart) {
  auto core = testing::OpenCoordinator(testing::FreshFiles("grpc_worker_token", false),
                                       std::make_shared<RealClock>());
  ASSERT_TRUE(core.ok()) << core.status();
  GrpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.auth_token = "user-token";
  options.worker_token = "worker-token";
  auto server = CoordinatorServer::Start(options, core->get());
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto jobs = mpt::v1::JobService::NewStub(channel);
  auto workers = mpt::v1::WorkerService::NewStub(channel);
  auto list_jobs = [&](const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    mpt::v1::ListJobsResponse response;
    return jobs->ListJobs(&ctx, mpt::v1::ListJobsRequest(), &response).error_code();
  };
  auto register_worker = [&](const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    mpt::v1::RegisterWorkerRequest request;
    request.mutable_worker()->set_hostname("h");
    mpt::v1::RegisterWorkerResponse response;
    return workers->RegisterWorker(&ctx, request, &response).error_code();
  };
  EXPECT_EQ(list_jobs("user-token"), grpc::StatusCode::OK);
  EXPECT_EQ(list_jobs("worker-token"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(register_worker("worker-token"), grpc::StatusCode::OK);
  EXPECT_EQ(register_worker("user-token"), grpc::StatusCode::UNAUTHENTICATED);
  (*server)->Shutdown(absl::Seconds(1));
}

TEST(GrpcServerWatchTest, WatchStreamsAreBounded) {
  auto core = testing::OpenCoordinator(testing::FreshFiles("grpc_watch_cap", false),
                                       std::make_shared<RealClock>());
  ASSERT_TRUE(core.ok()) << core.status();
  GrpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_watch_streams = 2;
  auto server = CoordinatorServer::Start(options, core->get());
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto jobs = mpt::v1::JobService::NewStub(channel);
  mpt::v1::Job job;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(jobs->SubmitJob(&ctx, testing::SourceRequest("a"), &job).ok());
  }
  mpt::v1::WatchJobRequest request;
  request.set_name(job.name());
  // Two streams stay open (the job never ends: no worker) ...
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<mpt::v1::JobEvent>>> readers;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(jobs->WatchJob(contexts.back().get(), request));
    mpt::v1::JobEvent event;
    ASSERT_TRUE(readers.back()->Read(&event));  // the stream is being served
  }
  // ... a third is refused, naming the flag ...
  {
    grpc::ClientContext ctx;
    auto reader = jobs->WatchJob(&ctx, request);
    mpt::v1::JobEvent event;
    while (reader->Read(&event)) {
    }
    grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(status.error_message().find("--max_watch_streams"), std::string::npos)
        << status.error_message();
  }
  // ... and once one closes, a new one is served.
  contexts[0]->TryCancel();
  readers[0]->Finish();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  bool served = false;
  while (!served && absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    auto reader = jobs->WatchJob(&ctx, request);
    mpt::v1::JobEvent event;
    served = reader->Read(&event);
    ctx.TryCancel();
    reader->Finish();
    if (!served) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(served);
  contexts[1]->TryCancel();
  readers[1]->Finish();
  (*server)->Shutdown(absl::Seconds(1));
}

TEST(GrpcServerTlsTest, ServesOverTlsAndChecksTheToken) {
  const std::string dir = testing::FreshTempDir("grpc_tls");
  std::ofstream(dir + "/cert.pem") << kTestCertPem;
  std::ofstream(dir + "/key.pem") << kTestKeyPem;
  auto core = testing::OpenCoordinator(testing::FreshFiles("grpc_tls_core", false),
                                       std::make_shared<RealClock>());
  ASSERT_TRUE(core.ok()) << core.status();

  GrpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls_cert_file = dir + "/cert.pem";
  EXPECT_EQ(CoordinatorServer::Start(options, core->get()).status().code(),
            absl::StatusCode::kInvalidArgument);  // a certificate without its key
  options.tls_key_file = dir + "/missing.pem";
  EXPECT_EQ(CoordinatorServer::Start(options, core->get()).status().code(),
            absl::StatusCode::kNotFound);
  options.tls_key_file = dir + "/key.pem";
  options.auth_token = kToken;
  auto server = CoordinatorServer::Start(options, core->get());
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE((*server)->tls());
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());

  auto call = [](const std::shared_ptr<grpc::Channel>& channel, bool with_token) {
    auto stub = mpt::v1::JobService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    if (with_token) ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    mpt::v1::ListJobsResponse response;
    return stub->ListJobs(&ctx, mpt::v1::ListJobsRequest(), &response);
  };
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = kTestCertPem;
  auto secure = grpc::CreateChannel(target, grpc::SslCredentials(ssl));
  EXPECT_TRUE(call(secure, true).ok()) << call(secure, true).error_message();
  EXPECT_EQ(call(secure, false).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto plain = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  EXPECT_EQ(call(plain, true).error_code(), grpc::StatusCode::UNAVAILABLE);
  (*server)->Shutdown(absl::Seconds(1));
}

TEST(GrpcServerStartTest, RefusesAPortInUseABadAddressBadPemFilesAndUnsendableTokens) {
  const std::string dir = testing::FreshTempDir("grpc_start");
  auto core = testing::OpenCoordinator(testing::FreshFiles("grpc_start_core", false),
                                       std::make_shared<RealClock>());
  ASSERT_TRUE(core.ok()) << core.status();
  GrpcServerOptions options;
  options.listen = "127.0.0.1:0";
  auto first = CoordinatorServer::Start(options, core->get());
  ASSERT_TRUE(first.ok()) << first.status();

  // A second server on the first one's port fails instead of sharing it.
  GrpcServerOptions same = options;
  same.listen = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = CoordinatorServer::Start(same, core->get());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(same.listen), std::string::npos) << second.status();

  for (const char* bad : {"localhost:99999", "localhost:-1", "localhost", "localhost:", ":7070",
                          "localhost:http"}) {
    GrpcServerOptions o = options;
    o.listen = bad;
    absl::Status s = CoordinatorServer::Start(o, core->get()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s;
    EXPECT_EQ(s.message().rfind("--listen:", 0), 0u) << s;
  }

  // PEM files that hold something else name the flag and the file.
  std::ofstream(dir + "/cert.pem") << kTestCertPem;
  std::ofstream(dir + "/key.pem") << kTestKeyPem;
  std::ofstream(dir + "/passwd") << "root:x:0:0:root:/root:/bin/bash\n";
  const std::string cert(kTestCertPem);
  std::ofstream(dir + "/truncated.pem") << cert.substr(0, cert.size() / 2);
  struct Case {
    std::string cert, key, client_ca, flag, file;
  };
  for (const Case& c : std::vector<Case>{
           {dir + "/passwd", dir + "/key.pem", "", "--tls_cert", dir + "/passwd"},
           {dir + "/truncated.pem", dir + "/key.pem", "", "--tls_cert", dir + "/truncated.pem"},
           {dir + "/cert.pem", dir + "/cert.pem", "", "--tls_key", dir + "/cert.pem"},
           {dir + "/cert.pem", dir + "/key.pem", dir + "/key.pem", "--tls_client_ca",
            dir + "/key.pem"}}) {
    GrpcServerOptions o = options;
    o.tls_cert_file = c.cert;
    o.tls_key_file = c.key;
    o.tls_client_ca_file = c.client_ca;
    absl::Status s = CoordinatorServer::Start(o, core->get()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.flag << ": " << s;
    EXPECT_EQ(s.message().rfind(c.flag + ": " + c.file, 0), 0u) << s;
  }

  // Binding workers to certificates needs client certificates.
  {
    GrpcServerOptions o = options;
    o.tls_cert_file = dir + "/cert.pem";
    o.tls_key_file = dir + "/key.pem";
    o.bind_workers_to_certificates = true;
    absl::Status s = CoordinatorServer::Start(o, core->get()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(s.message().rfind("--bind_workers_to_certificates", 0), 0u) << s;
  }

  // A token no client could send in a header is refused at start.
  for (const std::string& token : {std::string("caf\xC3\xA9"), std::string("a b"),
                                   std::string("a\x7f"), std::string(5000, 't')}) {
    GrpcServerOptions o = options;
    o.auth_token = token;
    EXPECT_EQ(CoordinatorServer::Start(o, core->get()).status().code(),
              absl::StatusCode::kInvalidArgument);
    o.auth_token = "";
    o.worker_token = token;
    EXPECT_EQ(CoordinatorServer::Start(o, core->get()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  (*first)->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace mpt
