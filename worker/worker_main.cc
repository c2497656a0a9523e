// worker: the MPT worker daemon. One process per GPU (or per CPU host).
//
//   worker --coordinator=coord:50051 --device=cpu --models=/models/t5-base
//          --work_dir=/scratch/mpt --threads=8 --gloo_bind=10.0.0.7
//
// It registers with the coordinator, takes assignments, trains and reports
// until it gets SIGINT or SIGTERM. A stage interrupted that way is resumed
// elsewhere from its last uploaded checkpoint.
//
// Exit status: 0 after a signal; 1 when the coordinator refuses the worker
// for good (bad token, ...); 2 for bad flags.
#include <net/if.h>
#include <netdb.h>
#include <signal.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/client_channel.h"
#include "common/http_server.h"
#include "common/metrics/gpu_metrics.h"
#include "common/metrics/metrics_registry.h"
#include "common/logging.h"
#include "common/spec/spec_paths.h"
#include "common/status_macros.h"
#include "worker/model/matmul_peak.h"
#include "worker/model/autocast.h"
#include "worker/model/compute_threads.h"
#include "worker/daemon/assignment_runner.h"
#include "worker/daemon/coordinator_client.h"
#include "worker/daemon/worker_daemon.h"
#include "worker/daemon/worker_metrics.h"

ABSL_FLAG(std::string, coordinator, "",
          "Coordinator address host:port (default: $MPT_COORDINATOR).");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, autocast, "off",
          "off, or bf16: the frozen model computes in bfloat16 under autocast while the "
          "prompts and their optimiser state stay fp32 (worker/model/autocast.h). For a job's spec "
          "whose `autocast` field is empty; one that names a precision gets it.");
ABSL_FLAG(std::string, dtype, "auto",
          "The frozen base model's dtype: auto (a decoder-only model in the precision its "
          "config.json states where the device computes in it: bfloat16 anywhere, float16 on "
          "CUDA; float32 otherwise and for T5), float32, bfloat16 or float16 (prompts and "
          "their optimiser state stay fp32).");
ABSL_FLAG(std::vector<std::string>, models, {},
          "Comma-separated base-model folders this worker can load (as the specs name them); "
          "they are loaded at start-up and kept loaded.");
ABSL_FLAG(std::string, work_dir, "",
          "Scratch folder for inputs, checkpoints and results (default: "
          "/tmp/mpt-worker-<pid>).");
ABSL_FLAG(int, threads, 0,
          "Compute threads in total, libtorch's and BLAS's together (0: every usable core; "
          "more than the usable cores is cut to them). See worker/model/compute_threads.h.");
ABSL_FLAG(std::string, gloo_bind, "127.0.0.1",
          "Where this worker listens for Gloo collectives: an address of this host that its "
          "peers can reach, or a network interface name (e.g. eth0).");
ABSL_FLAG(std::string, collective, "auto",
          "Collective engine for gangs: auto (NCCL on CUDA, else Gloo), gloo or nccl.");
ABSL_FLAG(double, collective_timeout_seconds, 600,
          "How long a gang member waits for its peers in a collective before it gives up.");
ABSL_FLAG(std::string, hostname, "", "Host name to register (default: gethostname()).");
ABSL_FLAG(int64_t, memory_bytes, 0, "Memory to register (default: the host's RAM).");
ABSL_FLAG(double, poll_seconds, 10, "Long-poll wait for assignments.");
ABSL_FLAG(double, progress_interval_seconds, 1, "At most one step report per interval.");
ABSL_FLAG(int, max_cached_models, 2, "Base models kept loaded at once.");
ABSL_FLAG(bool, keep_assignment_dirs, false, "Keep each assignment's scratch folder.");
ABSL_FLAG(bool, tls, false, "Connect with TLS.");
ABSL_FLAG(std::string, tls_ca, "", "PEM roots that sign the coordinator's certificate.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM client key (mutual TLS).");
ABSL_FLAG(std::string, tls_server_name, "", "Expected name in the coordinator's certificate.");
ABSL_FLAG(std::string, token, "", "Bearer token (default: $MPT_TOKEN).");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token.");
ABSL_FLAG(int, lanes, 0,
          "CPU lanes, one compute thread each: the source stages of a pack train side by "
          "side, and a stage alone is split into that many data-parallel thread ranks (0: one "
          "per compute thread; 1: a pack trains as one mixed batch, a stage on one thread plus "
          "BLAS's). See worker/training/lanes.h.");
ABSL_FLAG(int, max_pack_size, -1,
          "Most source stages this worker trains in one pass when the coordinator packs them "
          "(Worker.max_pack_size); 1: one at a time. Default -1: on a CPU as many as its lanes "
          "(one stage per lane; mixed batches measured no gain there), 8 on a GPU.");
ABSL_FLAG(std::string, data_roots, "",
          "Comma-separated absolute folders: the only places the files a job's spec names "
          "(base model, data, adapters) are read from; a job naming anything else fails, "
          "without saying whether it exists. Empty (default): any path this process can read.");
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port to serve Prometheus metrics on at /metrics, e.g. localhost:9100 (port 0 "
          "picks a free one); empty (default): none.");

namespace mpt {
namespace {

namespace fs = std::filesystem;

std::string HostName() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

// True when getaddrinfo() finds `host` (an IP address or a host name).
bool Resolves(const std::string& host) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  struct addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return false;
  freeaddrinfo(found);
  return true;
}

struct Setup {
  GrpcCoordinatorClientOptions client;
  AssignmentRunnerOptions runner;
  WorkerDaemonOptions daemon;
};

absl::StatusOr<Setup> SetupFromFlags() {
  Setup s;
  s.client.channel.address = ResolveCoordinatorAddress(absl::GetFlag(FLAGS_coordinator));
  if (s.client.channel.address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--coordinator: required (or set ", kCoordinatorEnv, ")"));
  }
  s.client.channel.tls = absl::GetFlag(FLAGS_tls);
  s.client.channel.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  s.client.channel.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  s.client.channel.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  s.client.channel.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  ASSIGN_OR_RETURN(s.client.channel.token,
                   ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file)));

  s.runner.device = absl::GetFlag(FLAGS_device);
  s.runner.autocast = absl::GetFlag(FLAGS_autocast);
  s.runner.dtype = absl::GetFlag(FLAGS_dtype);
  for (const std::string& m : absl::GetFlag(FLAGS_models)) {
    if (m.empty()) continue;
    // As the specs name them: absolute and normalised (mptctl resolves
    // relative paths the same way).
    std::error_code ec;
    const fs::path absolute = fs::absolute(m, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--models: ", m, ": ", ec.message()));
    // A folder that is not there would be advertised to the coordinator,
    // which would then send this worker jobs that cannot run.
    if (!fs::is_directory(absolute, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--models: ", m, ": not a folder (a Hugging Face model folder)"));
    }
    s.runner.preload_models.push_back(absolute.lexically_normal().string());
  }
  ASSIGN_OR_RETURN(s.runner.data_roots,
                   ParseDataRoots(absl::GetFlag(FLAGS_data_roots), "--data_roots"));
  s.runner.max_cached_models = absl::GetFlag(FLAGS_max_cached_models);
  s.runner.collective = absl::GetFlag(FLAGS_collective);
  const std::string bind = absl::GetFlag(FLAGS_gloo_bind);
  std::error_code ec;
  if (!bind.empty() && bind.find_first_of(".:/") == std::string::npos &&
      if_nametoindex(bind.c_str()) != 0) {
    s.runner.communicator.interface = bind;
  } else {
    if (!bind.empty() && !Resolves(bind)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--gloo_bind: \"", absl::CEscape(bind),
          "\" is neither a network interface of this host nor an address or host name that "
          "resolves"));
    }
    s.runner.communicator.hostname = bind;
  }
  const double timeout = absl::GetFlag(FLAGS_collective_timeout_seconds);
  if (!(timeout > 0)) return absl::InvalidArgumentError("--collective_timeout_seconds: must be > 0");
  s.runner.communicator.timeout = absl::Seconds(timeout);

  s.daemon.work_dir = absl::GetFlag(FLAGS_work_dir);
  if (s.daemon.work_dir.empty()) s.daemon.work_dir = absl::StrCat("/tmp/mpt-worker-", getpid());
  s.daemon.poll_wait = absl::Seconds(absl::GetFlag(FLAGS_poll_seconds));
  s.daemon.progress_interval = absl::Seconds(absl::GetFlag(FLAGS_progress_interval_seconds));
  s.daemon.keep_assignment_dirs = absl::GetFlag(FLAGS_keep_assignment_dirs);
  mpt::v1::Worker& w = s.daemon.worker;
  w.set_hostname(absl::GetFlag(FLAGS_hostname).empty() ? HostName()
                                                       : absl::GetFlag(FLAGS_hostname));
  w.set_device(s.runner.device);
  if (absl::GetFlag(FLAGS_memory_bytes) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory_bytes: must be >= 0 (0: the host's RAM), got ", absl::GetFlag(FLAGS_memory_bytes)));
  }
  w.set_memory_bytes(absl::GetFlag(FLAGS_memory_bytes) > 0 ? absl::GetFlag(FLAGS_memory_bytes)
                                                           : HostMemoryBytes());
  for (const std::string& m : s.runner.preload_models) w.add_models(m);
  const int max_pack = absl::GetFlag(FLAGS_max_pack_size);
  if (max_pack == 0 || max_pack < -1 || max_pack > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_pack_size: must be 1 to 64 (or -1 for the default), got ", max_pack));
  }
  // Main sets Worker.max_pack_size: its CPU default follows the lanes, known
  // once the threads are applied.
  return s;
}

// SIGINT and SIGTERM reach a handler that only writes the signal's number to
// a pipe; a thread reads it and stops the daemon. (Blocking the signals and
// sigwait()ing is not enough here: libraries start threads before main()
// that would not inherit the mask.)
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int sig) {
  const char byte = static_cast<char>(sig);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
}

int Main() {
  if (pipe(g_signal_pipe) != 0) {
    std::perror("worker: pipe");
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  absl::StatusOr<Setup> setup = SetupFromFlags();
  if (!setup.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(setup.status().message()).c_str());
    return 2;
  }
  ComputeThreadOptions thread_options;
  thread_options.total = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<ComputeThreads> threads = ApplyComputeThreads(thread_options);
  if (!threads.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(threads.status().message()).c_str());
    return 2;
  }

  setup->runner.compute_threads = *threads;
  const bool cuda = setup->runner.device.rfind("cuda", 0) == 0;
  absl::StatusOr<int> lanes = PlanLanes(absl::GetFlag(FLAGS_lanes), *threads, !cuda);
  if (!lanes.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(lanes.status().message()).c_str());
    return 2;
  }
  setup->runner.lanes = *lanes;
  const int max_pack = absl::GetFlag(FLAGS_max_pack_size);
  setup->daemon.worker.set_max_pack_size(max_pack > 0 ? max_pack : cuda ? 8 : *lanes);
  absl::StatusOr<std::unique_ptr<AssignmentRunner>> runner =
      AssignmentRunner::Create(setup->runner);
  if (!runner.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(runner.status().message()).c_str());
    return 2;
  }
  for (const std::string& c : (*runner)->collectives()) setup->daemon.worker.add_collectives(c);
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
      GrpcCoordinatorClient::Create(setup->client);
  if (!client.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(client.status().message()).c_str());
    return 2;
  }
  // Declared before the daemon, which feeds it, and the HTTP server, which
  // reads it.
  MetricsRegistry metrics;
  std::unique_ptr<WorkerMetrics> worker_metrics;
  std::unique_ptr<HttpServer> metrics_server;
  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    // The MFU denominators, measured once here with the threads just set
    // (about half a second each on a CPU), before any stage competes for
    // them: first in the products' dtype of this worker's own precision
    // (bf16 under --autocast=bf16, fp32 for the fp32 models a worker
    // trains on a CPU unless told otherwise), then in the other one for
    // jobs whose spec sets their own, where bf16 is fast to time (a GPU or
    // a CPU that multiplies bf16 in hardware).
    WorkerMetricsOptions metrics_options;
    const bool own_bf16 = setup->runner.autocast == "bf16";
    std::vector<c10::ScalarType> peak_dtypes = {own_bf16 ? c10::ScalarType::BFloat16
                                                         : c10::ScalarType::Float};
    if (own_bf16) {
      peak_dtypes.push_back(c10::ScalarType::Float);
    } else if (cuda || CpuHasNativeBf16()) {
      peak_dtypes.push_back(c10::ScalarType::BFloat16);
    }
    const int64_t square = cuda ? 8192 : 1024;
    for (c10::ScalarType peak_dtype : peak_dtypes) {
      // On a CPU, with the threads such products get (libtorch's own
      // kernels for bf16), then back to the plan's split.
      if (!cuda) UseThreadsForProducts(&*threads, peak_dtype);
      absl::StatusOr<double> peak = MeasureMatmulPeak(
          {{square, square, square}}, c10::Device(setup->runner.device), peak_dtype);
      const std::string with_threads = absl::StrCat(
          threads->intra_op_threads, " libtorch and ", threads->blas_threads, " BLAS threads");
      if (!cuda) UseThreadsForProducts(&*threads, c10::ScalarType::Float);
      if (!peak.ok()) {
        MPT_LOG(WARNING) << "no MFU metric for " << ProductDtypeName(peak_dtype) << ": "
                         << peak.status();
        continue;
      }
      MatmulPeak p;
      p.dtype = ProductDtypeName(peak_dtype);
      p.flops = *peak;
      p.description = absl::StrCat("best of timed ", square, "^3 at::mm on ",
                                   setup->runner.device, " at worker start, with ", with_threads,
                                   " as the stages' products get them");
      MPT_LOG(INFO) << "matrix-multiply peak in " << p.dtype << " " << *peak / 1e9
                    << " GFLOP/s (" << p.description << ")";
      metrics_options.peaks.push_back(std::move(p));
    }
    absl::StatusOr<std::unique_ptr<WorkerMetrics>> m =
        WorkerMetrics::Create(&metrics, metrics_options);
    if (!m.ok()) {
      std::fprintf(stderr, "worker: %s\n", std::string(m.status().message()).c_str());
      return 2;
    }
    worker_metrics = std::move(*m);
    setup->daemon.progress_observer = worker_metrics.get();
    if (cuda) {
      std::string why;
      absl::Status gpu = AddGpuMetrics(&metrics, "libnvidia-ml.so.1", &why);
      if (!gpu.ok()) {
        std::fprintf(stderr, "worker: %s\n", std::string(gpu.message()).c_str());
        return 2;
      }
      if (!why.empty()) MPT_LOG(WARNING) << "no GPU metrics: " << why;
    }
  }
  absl::StatusOr<std::unique_ptr<WorkerDaemon>> daemon =
      WorkerDaemon::Create(setup->daemon, client->get(), runner->get());
  if (!daemon.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(daemon.status().message()).c_str());
    return 2;
  }
  MPT_LOG(INFO) << "worker on " << setup->daemon.worker.hostname() << " (" << setup->runner.device
                << ", autocast " << setup->runner.autocast << "), coordinator "
                << setup->client.channel.address << ", work dir " << setup->daemon.work_dir
                << ", packs of up to " << setup->daemon.worker.max_pack_size()
                << " source stages, lanes " << *lanes << "; " << Describe(*threads)
                << "; jobs' files read from "
                << (setup->runner.data_roots.empty()
                        ? std::string("any path (no --data_roots)")
                        : absl::StrJoin(setup->runner.data_roots, ","));
  if (absl::StatusOr<AutocastMode> mode = ParseAutocast(setup->runner.autocast); mode.ok()) {
    if (std::string hint = NativeBf16Hint(c10::Device(setup->runner.device), *mode);
        !hint.empty()) {
      MPT_LOG(INFO) << "worker: " << hint;
    }
    if (std::string warning =
            Bf16PrecisionWarning(c10::Device(setup->runner.device),
                                 ProductDtype(c10::ScalarType::Float, *mode));
        !warning.empty()) {
      MPT_LOG(WARNING) << "worker: " << warning;
    }
  }

  WorkerDaemon* d = daemon->get();
  if (worker_metrics != nullptr) {
    absl::StatusOr<CounterFamily*> finished = metrics.AddCounter(
        "mpt_worker_assignments_finished_total", "Assignments this worker ended (any outcome).");
    if (finished.ok()) {
      metrics.AddCollectHook([d, f = *finished] {
        f->Labels({}).SetTotal(static_cast<double>(d->assignments_finished()));
      });
    }
    HttpServerOptions http;
    http.listen = metrics_listen;
    http.threads = 2;
    MetricsRegistry* registry = &metrics;
    absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(
        http, {{"/metrics", [registry](const HttpRequest&) {
                  HttpResponse r;
                  r.content_type = kPrometheusTextContentType;
                  r.body = registry->Render();
                  return r;
                }}});
    if (!server.ok()) {
      std::fprintf(stderr, "worker: --metrics_listen: %s\n",
                   std::string(server.status().message()).c_str());
      return 2;
    }
    metrics_server = std::move(*server);
    MPT_LOG(INFO) << "metrics on " << metrics_listen << " (metrics port "
                  << metrics_server->port() << ")";
  }
  std::thread signal_thread([d] {
    char byte = 0;
    while (read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    if (byte != 0) {
      MPT_LOG(INFO) << "signal " << static_cast<int>(byte) << ": stopping";
      d->Stop();
    }
  });
  absl::Status status = d->Run();
  // Wake the signal thread if no signal came.
  const char zero = 0;
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &zero, 1);
  signal_thread.join();
  if (metrics_server != nullptr) metrics_server->Stop();
  if (!status.ok()) {
    std::fprintf(stderr, "worker: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "The MPT worker daemon.\n"
      "  worker --coordinator=HOST:PORT [--device=cpu|cuda:N] [--autocast=off|bf16] "
      "[--models=DIR,...] "
      "[--work_dir=DIR]");
  absl::ParseCommandLine(argc, argv);
  return mpt::Main();
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
