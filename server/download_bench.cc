// Memory of artefact downloads (not a test): a real coordinator on loopback
// stores one artefact of --mib MiB, then --downloads clients fetch it at
// once over gRPC (DownloadArtifact, hashing what they receive and keeping
// none of it), while a thread samples the process's resident memory.
// For comparison the same number of threads then read the artefact whole
// with Coordinator::ReadArtifact(), which is how every download was served
// before downloads were read from disk piece by piece.
//
//   bazel run //server:download_bench -- --mib=256 --downloads=8
//
// Prints one line per way: wall time, MiB/s and the peak resident memory
// above the level before it started (clients and server share the process;
// the clients hold one chunk each).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/main_guard.h"
#include "common/sha256.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "server/artifact_store.h"
#include "server/clock.h"
#include "server/coordinator.h"
#include "server/grpc_service.h"
#include "server/job_store.h"

ABSL_FLAG(int, mib, 256, "size of the artefact, MiB (at most 1024)");
ABSL_FLAG(int, downloads, 8, "downloads at once");
ABSL_FLAG(bool, whole, true, "also time the whole-artefact reads for comparison");

namespace mpt {
namespace {

// Resident memory of this process, MiB.
double RssMib() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

// Samples RssMib() every 5 ms until destroyed; peak() is the highest seen.
class RssSampler {
 public:
  RssSampler() : thread_([this] {
      while (!stop_.load()) {
        const double now = RssMib();
        double seen = peak_.load();
        while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
        }
        absl::SleepFor(absl::Milliseconds(5));
      }
    }) {}
  ~RssSampler() {
    stop_ = true;
    thread_.join();
  }
  double peak() const { return std::max(peak_.load(), RssMib()); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<double> peak_{0};
  std::thread thread_;
};

absl::Status Run() {
  const int mib = absl::GetFlag(FLAGS_mib);
  const int downloads = absl::GetFlag(FLAGS_downloads);
  if (mib < 1 || mib > 1024) return absl::InvalidArgumentError("--mib: must be in [1, 1024]");
  if (downloads < 1 || downloads > 256) {
    return absl::InvalidArgumentError("--downloads: must be in [1, 256]");
  }
  const std::string dir =
      (std::filesystem::temp_directory_path() / absl::StrCat("download_bench_", getpid())).string();
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};

  auto store = SqliteJobStore::Open(dir + "/jobs.db", {});
  if (!store.ok()) return store.status();
  auto blobs = ArtifactStore::Open(dir + "/artifacts");
  if (!blobs.ok()) return blobs.status();
  CoordinatorOptions options;
  options.max_artifact_bytes = int64_t{1} << 30;
  auto core = Coordinator::Create(options, *std::move(store), *std::move(blobs),
                                  std::make_shared<RealClock>());
  if (!core.ok()) return core.status();
  GrpcServerOptions server_options;
  server_options.listen = "127.0.0.1:0";
  auto server = CoordinatorServer::Start(server_options, core->get());
  if (!server.ok()) return server.status();

  // One checkpoint of `mib` MiB, appended a MiB at a time.
  mpt::v1::Worker worker;
  worker.set_hostname("bench");
  worker.set_device("cpu");
  auto registered = (*core)->RegisterWorker(worker);
  if (!registered.ok()) return registered.status();
  mpt::v1::SubmitJobRequest submit;
  submit.set_kind(mpt::v1::SOURCE_TRAINING);
  submit.mutable_spec()->set_base_model("/models/t5");
  mpt::v1::TaskData* task = submit.mutable_spec()->mutable_source()->add_tasks();
  task->set_name("a");
  task->set_train_path("/data/a.jsonl");
  submit.mutable_spec()->mutable_source()->mutable_train()->set_steps(10);
  auto job = (*core)->SubmitJob(submit);
  if (!job.ok()) return job.status();
  auto assignment = (*core)->PollAssignment(registered->name(), absl::Now() + absl::Seconds(5));
  if (!assignment.ok()) return assignment.status();
  if (!assignment->has_value()) return absl::InternalError("no assignment handed out");
  mpt::v1::UploadArtifactRequest::Header header;
  header.set_assignment((*assignment)->id());
  header.set_worker(registered->name());
  header.set_kind("checkpoint");
  header.set_step(1);
  auto upload = (*core)->BeginUpload(header);
  if (!upload.ok()) return upload.status();
  Sha256 hash;
  std::string piece(1 << 20, '\0');
  for (int i = 0; i < mib; ++i) {
    for (size_t j = 0; j < piece.size(); ++j) piece[j] = static_cast<char>((i * 131 + j * 7) & 255);
    hash.Update(piece);
    if (absl::Status s = (*upload)->Append(piece); !s.ok()) return s;
  }
  const std::string sha256 = hash.HexDigest();
  auto artifact = (*core)->FinishUpload(*std::move(upload), sha256);
  if (!artifact.ok()) return artifact.status();
  piece.clear();
  piece.shrink_to_fit();

  std::printf("artefact of %d MiB, %d downloads at once, %u hardware threads\n", mib, downloads,
              std::thread::hardware_concurrency());
  // Runs `download` (true when it got the right bytes) on `downloads`
  // threads at once and prints the line for `way`.
  auto measure = [&](const char* way, const std::function<bool()>& download) {
    std::atomic<int> failed{0};
    const double before = RssMib();
    const absl::Time start = absl::Now();
    double peak = 0;
    {
      RssSampler sampler;
      std::vector<std::thread> threads;
      for (int d = 0; d < downloads; ++d) {
        threads.emplace_back([&] {
          if (!download()) ++failed;
        });
      }
      for (std::thread& t : threads) t.join();
      peak = sampler.peak();
    }
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("%-46s %7.2f s  %8.0f MiB/s  peak resident +%7.0f MiB%s\n", way, seconds,
                static_cast<double>(mib) * downloads / seconds, peak - before,
                failed > 0 ? absl::StrCat("  (", failed.load(), " FAILED)").c_str() : "");
  };

  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = mpt::v1::JobService::NewStub(channel);
  measure("DownloadArtifact over gRPC (read piece by piece)", [&] {
    grpc::ClientContext context;
    mpt::v1::DownloadArtifactRequest request;
    request.set_name(artifact->name());
    auto reader = stub->DownloadArtifact(&context, request);
    Sha256 got;
    std::string expected_sha;
    mpt::v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
      got.Update(chunk.data());
      if (!chunk.sha256().empty()) expected_sha = chunk.sha256();
    }
    return reader->Finish().ok() && expected_sha == sha256 && got.HexDigest() == sha256;
  });
  if (absl::GetFlag(FLAGS_whole)) {
    measure("whole artefacts in memory (ReadArtifact)", [&] {
      absl::StatusOr<ArtifactContent> content = (*core)->ReadArtifact(artifact->name());
      return content.ok() && Sha256Hex(content->data) == sha256;
    });
  }
  (*server)->Shutdown(absl::Seconds(1));
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

int main(int argc, char** argv) { return mpt::RunFlagsMain(argc, argv, mpt::Run); }
