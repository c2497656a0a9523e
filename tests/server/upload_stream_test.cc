// UploadArtifact over a real gRPC server on loopback: the header is checked
// on the first message, so an upload that names no worker or an
// assignment nobody holds ends there, long before its client has sent its
// data (the coordinator used to read the whole stream into memory first);
// a valid upload in many chunks is stored whole.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/secrets.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "server/grpc_service.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

constexpr int64_t kChunk = 1 << 20;
// What a client tries to send after a bad header: far more than gRPC's
// flow-control windows hold, so a server that does not read it all stops
// the client's writes well before the end.
constexpr int64_t kFlood = int64_t{192} << 20;

class UploadStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto core = testing::OpenCoordinator(testing::FreshFiles("upload_stream", /*on_disk=*/false),
                                         std::make_shared<RealClock>());
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = *std::move(core);
    GrpcServerOptions options;
    options.listen = "127.0.0.1:0";
    auto server = CoordinatorServer::Start(options, core_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    workers_ = mpt::v1::WorkerService::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  struct Sent {
    grpc::Status status;
    int64_t bytes = 0;  // data written before a write failed
  };
  // Sends `header` and then up to `total` bytes in kChunk messages (the
  // last with `sha256` when the data is all sent).
  // `key`: the worker's (RegisterWorkerResponse.worker_key), if any.
  Sent Send(const mpt::v1::UploadArtifactRequest::Header& header, int64_t total,
            const std::string& sha256 = "", const std::string& key = "") {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    if (!key.empty()) context.AddMetadata(kWorkerKeyMetadata, key);
    mpt::v1::UploadArtifactResponse response;
    auto writer = workers_->UploadArtifact(&context, &response);
    mpt::v1::UploadArtifactRequest first;
    *first.mutable_header() = header;
    Sent sent;
    bool ok = writer->Write(first);
    const std::string chunk(kChunk, 'x');
    while (ok && sent.bytes < total) {
      mpt::v1::UploadArtifactRequest data;
      data.set_data(chunk.substr(0, std::min(kChunk, total - sent.bytes)));
      if (sent.bytes + static_cast<int64_t>(data.data().size()) >= total) {
        data.set_sha256(sha256);
      }
      ok = writer->Write(data);
      if (ok) sent.bytes += static_cast<int64_t>(data.data().size());
    }
    if (ok) writer->WritesDone();
    sent.status = writer->Finish();
    return sent;
  }

  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<mpt::v1::WorkerService::Stub> workers_;
};

TEST_F(UploadStreamTest, ABadHeaderEndsTheCallBeforeTheData) {
  // The audit's case: a made-up assignment and kind, no worker.
  mpt::v1::UploadArtifactRequest::Header bogus;
  bogus.set_assignment("bogus");
  bogus.set_kind("bogus");
  const absl::Time start = absl::Now();
  Sent sent = Send(bogus, kFlood);
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(sent.status.error_message(), "header.")) << sent.status.error_message();
  EXPECT_LT(sent.bytes, kFlood / 2) << "the coordinator read the data of a refused upload";

  // A well-formed header for an assignment that does not exist.
  const testing::RegisteredWorker worker = testing::RegisterWithKey(core_.get());
  bogus.set_worker(worker.name);
  bogus.set_kind("checkpoint");
  bogus.set_assignment("jobs/000000000000/stages/source/a/attempts/1/ranks/0");
  sent = Send(bogus, kFlood, "", worker.key);
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::NOT_FOUND) << sent.status.error_message();
  EXPECT_LT(sent.bytes, kFlood / 2);
  // The same header without the worker's key, or with another's: refused
  // before the data as well.
  sent = Send(bogus, kFlood);
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_LT(sent.bytes, kFlood / 2);
  sent = Send(bogus, kFlood, "", testing::RegisterWithKey(core_.get()).key);
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_LT(sent.bytes, kFlood / 2);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST_F(UploadStreamTest, AnUploadOfManyChunksIsStoredWhole) {
  const testing::RegisteredWorker worker = testing::RegisterWithKey(core_.get());
  ASSERT_TRUE(core_->SubmitJob(testing::SourceRequest("a")).ok());
  auto a = testing::Poll(core_.get(), worker.name);
  ASSERT_TRUE(a.has_value());
  mpt::v1::UploadArtifactRequest::Header header;
  header.set_assignment(a->id());
  header.set_worker(worker.name);
  header.set_kind("checkpoint");
  header.set_step(5);
  const int64_t total = 5 * kChunk + 123;
  std::string data;
  const std::string chunk(kChunk, 'x');
  while (static_cast<int64_t>(data.size()) < total) {
    data += chunk.substr(0, std::min<int64_t>(kChunk, total - data.size()));
  }
  const Sent sent = Send(header, total, Sha256Hex(data), worker.key);
  ASSERT_TRUE(sent.status.ok()) << sent.status.error_message();
  auto job = core_->GetJob(a->job());
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(job->artifacts_size(), 1);
  EXPECT_EQ(job->artifacts(0).size_bytes(), total);
  auto read = core_->ReadArtifact(job->artifacts(0).name());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->data, data);
  // A wrong checksum stores nothing.
  const Sent wrong = Send(header, total, Sha256Hex("other"), worker.key);
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::DATA_LOSS);
}

}  // namespace
}  // namespace mpt
