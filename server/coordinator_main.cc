// The coordinator process: parses flags into CoordinatorMainOptions, opens the
// job store and the artefact store, resumes unfinished jobs, serves gRPC
// until SIGTERM or SIGINT, then shuts down cleanly. See server/README.md.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/credentials_check.h"
#include "common/file_util.h"
#include "common/heap_memory.h"
#include "common/logging.h"
#include "common/spec/spec_paths.h"
#include "common/status_macros.h"
#include "server/artifact_store.h"
#include "server/clock.h"
#include "common/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "server/coordinator.h"
#include "server/coordinator_http.h"
#include "server/coordinator_metrics.h"
#include "server/grpc_service.h"
#include "server/job_store.h"

ABSL_FLAG(std::string, listen, "localhost:7070",
          "host:port to serve on; 0.0.0.0:7070 for every interface");
ABSL_FLAG(std::string, db, "mpt-coordinator/jobs.db", "SQLite database of jobs and workers");
ABSL_FLAG(std::string, artifacts, "mpt-coordinator/artifacts",
          "folder of the content-addressed artefact store");
ABSL_FLAG(double, heartbeat_seconds, 2, "how often workers are told to heartbeat");
ABSL_FLAG(double, lease_seconds, 10, "a worker silent this long is lost and its work requeued");
ABSL_FLAG(int, max_pack_size, 8,
          "Most source stages (same base model and prompt shape, of one job or several) one "
          "worker trains in one pass; each worker's --max_pack_size caps it further. 1: no "
          "packing.");
ABSL_FLAG(int, max_world_size, 8,
          "largest distillation gang a job may ask for: the most workers one gang can get in "
          "this cluster");
ABSL_FLAG(int, max_attempts, 3, "failed attempts before a stage fails its job");
ABSL_FLAG(bool, check_spec_files, false,
          "reject specs whose model folder or data files do not exist here (only where the "
          "coordinator sees the workers' files)");
ABSL_FLAG(std::string, data_roots, "",
          "comma-separated absolute folders: a spec naming a model, data or adapter path "
          "outside them is refused before any file is looked at (set it with "
          "--check_spec_files so that clients cannot probe other paths)");
ABSL_FLAG(double, max_artifact_mb, 1024,
          "largest artefact accepted, in MiB (an upload is refused as soon as it grows past "
          "it; uploads go to a temporary file under --artifacts, not to memory)");
ABSL_FLAG(int, max_watch_streams, 10000,
          "WatchJob streams served at once (about 16 KiB each); more are refused with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_concurrent_uploads, 8,
          "artefact uploads received at once; more are refused with UNAVAILABLE, which "
          "workers retry");
ABSL_FLAG(bool, sync_full, true,
          "fsync every commit (SQLite synchronous=FULL); false risks the last commits on "
          "power loss");
ABSL_FLAG(int64_t, max_log_lines_per_stage, 2000,
          "each stage's log keeps its newest lines up to this many (older ones are dropped "
          "and counted)");
ABSL_FLAG(int64_t, max_log_kb_per_stage, 512,
          "each stage's log keeps its newest lines up to this much text, in KiB");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain; with --tls_key turns TLS on");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed");
ABSL_FLAG(bool, bind_workers_to_certificates, false,
          "with --tls_client_ca: a worker registers only with a client certificate naming its "
          "hostname (subject CN or a subject alternative name), and its later calls must present "
          "that certificate");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding the bearer token clients must send (authorization: Bearer <token>)");
ABSL_FLAG(std::string, http_listen, "",
          "host:port of the HTTP listener for /metrics (Prometheus) and the dashboard, e.g. "
          "localhost:8080 (port 0 picks a free one); empty (default): no HTTP listener");
ABSL_FLAG(std::string, worker_token_file, "",
          "file holding the workers' bearer token: WorkerService then accepts only it and "
          "JobService never does (default: workers use --auth_token_file's token)");
ABSL_FLAG(int, heap_arenas, 2,
          "most allocator arenas where glibc's malloc runs (the coordinator links tcmalloc, "
          "which has none); MALLOC_ARENA_MAX in the environment wins");
ABSL_FLAG(double, heap_trim_seconds, 30,
          "return free heap pages to the kernel this often; 0: never");

namespace mpt {
namespace {

struct CoordinatorMainOptions {
  // SQLite database (--db). Default "mpt-coordinator/jobs.db".
  std::string db_path;
  // Artefact store folder (--artifacts). Default "mpt-coordinator/artifacts".
  std::string artifact_dir;
  // synchronous=FULL (--sync_full). Default true.
  bool sync_full = true;
  // The bound of each stage's log (--max_log_lines_per_stage,
  // --max_log_kb_per_stage). Defaults 2000 lines and 512 KiB.
  int64_t max_log_lines_per_stage = 2000;
  int64_t max_log_bytes_per_stage = int64_t{512} << 10;
  // File with the bearer token (--auth_token_file). Default "": no token.
  std::string auth_token_file;
  // File with the workers' token (--worker_token_file). Default "": workers
  // use the users' token.
  std::string worker_token_file;
  // Allocator arenas (--heap_arenas). Default 2.
  int heap_arenas = 2;
  // Free heap pages go back to the kernel this often (--heap_trim_seconds).
  // Default 30 s; zero: never.
  absl::Duration heap_trim_interval = absl::Seconds(30);
  // The core's settings; each field documents its default (coordinator.h).
  CoordinatorOptions coordinator;
  // The server's settings; each field documents its default
  // (grpc_service.h).
  GrpcServerOptions server;
  // --http_listen. Default "": no HTTP listener.
  std::string http_listen;
};

absl::StatusOr<CoordinatorMainOptions> OptionsFromFlags() {
  CoordinatorMainOptions o;
  o.db_path = absl::GetFlag(FLAGS_db);
  o.artifact_dir = absl::GetFlag(FLAGS_artifacts);
  o.sync_full = absl::GetFlag(FLAGS_sync_full);
  o.max_log_lines_per_stage = absl::GetFlag(FLAGS_max_log_lines_per_stage);
  o.max_log_bytes_per_stage = absl::GetFlag(FLAGS_max_log_kb_per_stage) << 10;
  if (o.max_log_lines_per_stage < 1) {
    return absl::InvalidArgumentError("--max_log_lines_per_stage: must be >= 1");
  }
  if (o.max_log_bytes_per_stage < 1024) {
    return absl::InvalidArgumentError("--max_log_kb_per_stage: must be >= 1");
  }  o.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  o.worker_token_file = absl::GetFlag(FLAGS_worker_token_file);
  o.heap_arenas = absl::GetFlag(FLAGS_heap_arenas);
  const double trim_seconds = absl::GetFlag(FLAGS_heap_trim_seconds);
  if (!(trim_seconds >= 0 && trim_seconds <= 86400)) {
    return absl::InvalidArgumentError("--heap_trim_seconds: must be between 0 and 86400");
  }
  o.heap_trim_interval = absl::Seconds(trim_seconds);
  if (o.heap_arenas < 1 || o.heap_arenas > 1024) {
    return absl::InvalidArgumentError("--heap_arenas: must be between 1 and 1024");
  }
  o.coordinator.heartbeat_interval = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_seconds));
  o.coordinator.lease = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  o.coordinator.max_world_size = absl::GetFlag(FLAGS_max_world_size);
  o.coordinator.max_pack_size = absl::GetFlag(FLAGS_max_pack_size);
  o.coordinator.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  o.coordinator.check_spec_files = absl::GetFlag(FLAGS_check_spec_files);
  ASSIGN_OR_RETURN(o.coordinator.data_roots,
                   ParseDataRoots(absl::GetFlag(FLAGS_data_roots), "--data_roots"));
  const double max_artifact_mb = absl::GetFlag(FLAGS_max_artifact_mb);
  if (!(max_artifact_mb > 0 && max_artifact_mb <= (1 << 20))) {
    return absl::InvalidArgumentError("--max_artifact_mb: must be > 0 and at most 1048576");
  }
  o.coordinator.max_artifact_bytes = static_cast<int64_t>(max_artifact_mb * (1 << 20));
  o.coordinator.max_concurrent_uploads = absl::GetFlag(FLAGS_max_concurrent_uploads);
  o.server.listen = absl::GetFlag(FLAGS_listen);
  o.server.max_watch_streams = absl::GetFlag(FLAGS_max_watch_streams);
  if (o.server.max_watch_streams < 1 || o.server.max_watch_streams > 1000000) {
    return absl::InvalidArgumentError("--max_watch_streams: must be between 1 and 1000000");
  }
  o.http_listen = absl::GetFlag(FLAGS_http_listen);
  if (!o.http_listen.empty()) {
    RETURN_IF_ERROR(ParseHostPort(o.http_listen, "--http_listen").status());
  }
  o.server.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.server.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  o.server.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o.server.bind_workers_to_certificates = absl::GetFlag(FLAGS_bind_workers_to_certificates);
  if (o.db_path.empty()) return absl::InvalidArgumentError("--db: required");
  if (o.artifact_dir.empty()) return absl::InvalidArgumentError("--artifacts: required");
  for (auto [flag, file, token] :
       {std::make_tuple("--auth_token_file", &o.auth_token_file, &o.server.auth_token),
        std::make_tuple("--worker_token_file", &o.worker_token_file, &o.server.worker_token)}) {
    if (file->empty()) continue;
    ASSIGN_OR_RETURN(std::string text, ReadFile(*file));
    *token = std::string(absl::StripAsciiWhitespace(text));
    if (token->empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", *file, " is empty"));
    RETURN_IF_ERROR(CheckBearerToken(*token, absl::StrCat(flag, " ", *file)));
  }
  if (!o.server.worker_token.empty() && o.server.worker_token == o.server.auth_token) {
    return absl::InvalidArgumentError(
        "--worker_token_file: the workers' token must differ from the users' (--auth_token_file)");
  }
  return o;
}

absl::Status Run(sigset_t* signals) {
  ASSIGN_OR_RETURN(CoordinatorMainOptions options, OptionsFromFlags());
  // Before any thread starts: under glibc's malloc one arena per thread
  // would keep freed pages of the RPC threads (see common/heap_memory.h).
  LimitHeapArenas(options.heap_arenas);
  // Debian's Abseil is built with mutex deadlock detection on: every Lock()
  // then updates a global graph of lock orders. The tests keep it; the
  // serving process does not pay for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const absl::Time start = absl::Now();
  std::error_code ec;
  const std::filesystem::path db_dir = std::filesystem::path(options.db_path).parent_path();
  if (!db_dir.empty()) std::filesystem::create_directories(db_dir, ec);

  SqliteJobStoreOptions store_options;
  store_options.synchronous_full = options.sync_full;
  store_options.max_log_lines_per_stage = options.max_log_lines_per_stage;
  store_options.max_log_bytes_per_stage = options.max_log_bytes_per_stage;
  // The page check runs beside the load of the unfinished jobs; a damaged
  // file still stops the start (Coordinator::Create fails with DATA_LOSS
  // naming it).
  store_options.check_in_background = true;
  // A store the coordinator cannot write stops the start, naming the flag:
  // otherwise every job would fail later, one write at a time.
  auto for_flag = [](const char* flag, const std::string& path, const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(flag, "=", path, ": ", s.message()));
  };
  absl::StatusOr<std::unique_ptr<SqliteJobStore>> opened_store =
      SqliteJobStore::Open(options.db_path, store_options);
  if (!opened_store.ok()) return for_flag("--db", options.db_path, opened_store.status());
  std::unique_ptr<SqliteJobStore> store = *std::move(opened_store);
  absl::StatusOr<std::unique_ptr<ArtifactStore>> opened_artifacts =
      ArtifactStore::Open(options.artifact_dir);
  if (!opened_artifacts.ok()) {
    return for_flag("--artifacts", options.artifact_dir, opened_artifacts.status());
  }
  std::unique_ptr<ArtifactStore> artifacts = *std::move(opened_artifacts);
  // Declared before the coordinator and the servers: they use its families.
  MetricsRegistry metrics;
  ASSIGN_OR_RETURN(CoordinatorHistograms histograms, AddCoordinatorHistograms(&metrics));
  options.coordinator.stage_duration = histograms.stage_duration;
  options.server.rpc_duration = histograms.rpc_duration;
  ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator,
                   Coordinator::Create(options.coordinator, std::move(store),
                                       std::move(artifacts), std::make_shared<RealClock>()));
  RETURN_IF_ERROR(AddCoordinatorCollectors(&metrics, coordinator.get(), options.db_path));
  coordinator->Start();
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(options.server, coordinator.get()));
  std::unique_ptr<HttpServer> http;
  if (!options.http_listen.empty()) {
    CoordinatorHttpOptions http_options;
    http_options.listen = options.http_listen;
    http_options.auth_token = options.server.auth_token;
    ASSIGN_OR_RETURN(http, StartCoordinatorHttp(http_options, coordinator.get(), &metrics));
    MPT_LOG(INFO) << "HTTP (metrics, dashboard) on " << options.http_listen << " (http port "
                  << http->port() << ")";
  }
  MPT_LOG(INFO) << "coordinator listening on " << options.server.listen << " (port "
                << server->port() << ", " << (server->tls() ? "TLS" : "plaintext")
                << (options.server.auth_token.empty() ? ", no token" : ", bearer token")
                << "); db " << options.db_path << ", artefacts " << options.artifact_dir
                << "; heap allocator " << HeapAllocatorName()
                << "; ready in " << absl::FormatDuration(absl::Now() - start);

  // Wait for a shutdown signal; between waits, hand free heap pages back.
  int signal_number = 0;
  while (signal_number <= 0) {
    if (options.heap_trim_interval <= absl::ZeroDuration()) {
      if (sigwait(signals, &signal_number) != 0) signal_number = 0;
      continue;
    }
    const timespec wait = absl::ToTimespec(options.heap_trim_interval);
    signal_number = sigtimedwait(signals, nullptr, &wait);
    if (signal_number < 0) ReleaseFreeHeapMemory();  // timeout (or EINTR)
  }
  MPT_LOG(INFO) << "signal " << signal_number << ": shutting down";
  if (http != nullptr) http->Stop();
  server->Shutdown(absl::Seconds(5));
  coordinator->Shutdown();
  MPT_LOG(INFO) << "coordinator stopped";
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  // Block the shutdown signals in every thread; main waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::SetProgramUsageMessage(
      "The MPT coordinator: job API, scheduler and artefact store.\n"
      "  coordinator --listen=0.0.0.0:7070 --db=/data/jobs.db --artifacts=/data/artifacts");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = mpt::Run(&signals);
  if (!status.ok()) {
    MPT_LOG(ERROR) << status;
    return 1;
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
