// Load benchmark of a real coordinator on loopback (not a test), served as
// coordinator_main serves it (its store options and its metrics: a
// histogram observed at every call):
//   1. SubmitJob, GetJob and ListJobs latency (p50/p99) from --clients
//      concurrent client threads, while --watchers WatchJob streams stay
//      open (they must all see their job's final event at the end);
//   2. restart recovery: the store is filled to --recovery_jobs unfinished
//      jobs, then the time from opening the store to the first answered RPC
//      of a new server is measured.
//
//   bazel run //server:coordinator_bench -- --clients=50 --watchers=200
//
// Everything lives in a fresh temporary folder (or --dir) and is bounded by
// the counts below; prints one table.
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/main_guard.h"
#include "proto/mpt/v1/service.grpc.pb.h"
#include "server/artifact_store.h"
#include "server/clock.h"
#include "server/coordinator.h"
#include "server/coordinator_metrics.h"
#include "server/grpc_service.h"
#include "server/job_store.h"

ABSL_FLAG(int, clients, 50, "concurrent closed-loop clients, each with its own connection");
ABSL_FLAG(int, client_threads, 1,
          "threads driving the clients' asynchronous calls; 0: one thread per client");
ABSL_FLAG(int, requests, 40, "requests of each kind per client thread");
ABSL_FLAG(int, watchers, 200, "WatchJob streams held open meanwhile");
ABSL_FLAG(std::vector<std::string>, calls, std::vector<std::string>({"submit", "get", "list"}),
          "which latency phases to run (submit, get, list), e.g. to profile one");
ABSL_FLAG(std::string, list_view, "full",
          "ListJobs view: full (each job as GetJob returns it) or basic (without spec and "
          "artefacts)");
ABSL_FLAG(bool, separate_process, true,
          "serve the coordinator from a process of its own, as users run it (its gRPC threads "
          "and polling apart from the clients'); false: clients and server in one process");
ABSL_FLAG(int, recovery_jobs, 10000, "unfinished jobs in the store for the restart test");
ABSL_FLAG(int, recovery_runs, 3, "restarts timed");
ABSL_FLAG(bool, sync_full, true, "SQLite synchronous=FULL, as the coordinator runs by default");
ABSL_FLAG(std::string, dir, "", "work folder (default: a fresh one under $TMPDIR)");
ABSL_FLAG(bool, keep_dir, false, "keep the work folder (and its store) at the end");
ABSL_FLAG(bool, restart_only, false,
          "only time --recovery_runs restarts over the store a --keep_dir run left in --dir");
ABSL_FLAG(bool, restart_in_process, false,
          "time every restart in this process, where later restarts reuse the heap earlier ones "
          "freed; default: each in a fresh process, as a coordinator restarts");
ABSL_FLAG(bool, restart_child, false, "internal: time one restart over --dir and print it");
ABSL_FLAG(std::string, restart_probe, "", "internal: the job --restart_child asks for");

namespace mpt {
namespace {

// Reading of `clock` in ms (0 when it cannot be read).
double ClockMs(clockid_t clock) {
  timespec ts;
  if (clock_gettime(clock, &ts) != 0) return 0;
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// CPU time of this whole process, ms: the cost of a phase independent of
// what else runs on the machine.
double ProcessCpuMs() { return ClockMs(CLOCK_PROCESS_CPUTIME_ID); }

struct Instance {
  // Declared first, destroyed last: the coordinator and server use its
  // families.
  std::unique_ptr<MetricsRegistry> metrics;
  std::unique_ptr<Coordinator> core;
  std::unique_ptr<CoordinatorServer> server;
};

// The store as coordinator_main opens it.
SqliteJobStoreOptions ServingStoreOptions(bool sync_full) {
  SqliteJobStoreOptions options;
  options.synchronous_full = sync_full;
  options.check_in_background = true;
  return options;
}

// The coordinator as coordinator_main serves it: its metrics included (a
// histogram observed at every call and stage, collectors read at scrape).
absl::StatusOr<Instance> StartInstance(const std::string& dir, bool sync_full) {
  const std::string db_path = dir + "/jobs.db";
  auto store = SqliteJobStore::Open(db_path, ServingStoreOptions(sync_full));
  if (!store.ok()) return store.status();
  auto blobs = ArtifactStore::Open(dir + "/artifacts");
  if (!blobs.ok()) return blobs.status();
  Instance instance;
  instance.metrics = std::make_unique<MetricsRegistry>();
  auto histograms = AddCoordinatorHistograms(instance.metrics.get());
  if (!histograms.ok()) return histograms.status();
  CoordinatorOptions core_options;
  core_options.stage_duration = histograms->stage_duration;
  auto core = Coordinator::Create(core_options, *std::move(store), *std::move(blobs),
                                  std::make_shared<RealClock>());
  if (!core.ok()) return core.status();
  absl::Status collectors = AddCoordinatorCollectors(instance.metrics.get(), core->get(), db_path);
  if (!collectors.ok()) return collectors;
  GrpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.rpc_duration = histograms->rpc_duration;
  auto server = CoordinatorServer::Start(options, core->get());
  if (!server.ok()) return server.status();
  instance.core = *std::move(core);
  instance.server = *std::move(server);
  return instance;
}

// CPU time of process `pid` so far, ms (0 when it cannot be read).
double ProcessCpuMs(pid_t pid) {
  clockid_t clock;
  return clock_getcpuclockid(pid, &clock) == 0 ? ClockMs(clock) : 0;
}

// This process's peak resident memory so far (VmHWM), MiB; -1 when it
// cannot be read.
double PeakRssMib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    long kib = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %ld kB", &kib) == 1) return kib / 1024.0;
  }
  return -1;
}

// The coordinator under load: in this process, or (separate) in a child
// forked before this process starts anything of gRPC's, which serves until
// Stop() and exits.
class ServedCoordinator {
 public:
  static absl::StatusOr<std::unique_ptr<ServedCoordinator>> Start(const std::string& dir,
                                                                  bool sync_full, bool separate) {
    auto served = std::unique_ptr<ServedCoordinator>(new ServedCoordinator());
    if (!separate) {
      auto instance = StartInstance(dir, sync_full);
      if (!instance.ok()) return instance.status();
      served->port_ = instance->server->port();
      served->instance_ = *std::move(instance);
      return served;
    }
    int ready[2], stop[2];
    if (pipe(ready) != 0 || pipe(stop) != 0) return absl::InternalError("pipe failed");
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      close(ready[0]);
      close(stop[1]);
      auto instance = StartInstance(dir, sync_full);
      int port = 0;
      if (instance.ok()) {
        port = instance->server->port();
      } else {
        MPT_LOG(ERROR) << "coordinator process: " << instance.status();
      }
      if (write(ready[1], &port, sizeof port) != sizeof port || port == 0) _exit(1);
      char c;
      while (read(stop[0], &c, 1) < 0 && errno == EINTR) {
      }
      instance->server->Shutdown(absl::Seconds(2));
      instance->core.reset();
      _exit(0);
    }
    close(ready[1]);
    close(stop[0]);
    served->pid_ = pid;
    served->stop_fd_ = stop[1];
    int port = 0;
    const bool got = read(ready[0], &port, sizeof port) == sizeof port;
    close(ready[0]);
    if (!got || port == 0) {
      served->Stop();
      return absl::InternalError("the coordinator process did not start");
    }
    served->port_ = port;
    return served;
  }

  ~ServedCoordinator() { Stop(); }

  int port() const { return port_; }
  // The server process's CPU so far, ms; -1 when it shares this process.
  double ServerCpuMs() const { return pid_ > 0 ? ProcessCpuMs(pid_) : -1; }

  // Shuts the server down and (separate) waits for its process to end.
  void Stop() {
    if (instance_.server != nullptr) {
      instance_.server->Shutdown(absl::Seconds(2));
      instance_.core.reset();
      instance_.server.reset();
    }
    if (pid_ > 0) {
      close(stop_fd_);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = 0;
    }
  }

 private:
  ServedCoordinator() = default;
  Instance instance_;
  pid_t pid_ = 0;
  int stop_fd_ = -1;
  int port_ = 0;
};

std::shared_ptr<grpc::Channel> Connect(int port) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

mpt::v1::SubmitJobRequest BenchJob(int i) {
  mpt::v1::SubmitJobRequest r;
  r.set_kind(mpt::v1::PIPELINE);
  r.set_priority(i % 3);
  r.set_display_name(absl::StrCat("bench-", i));
  mpt::v1::PipelineSpec* spec = r.mutable_spec();
  spec->set_base_model("/models/t5-base");
  for (const char* task : {"mnli", "qnli", "qqp"}) {
    mpt::v1::TaskData* t = spec->mutable_source()->add_tasks();
    t->set_name(task);
    t->set_train_path(absl::StrCat("/data/", task, ".jsonl"));
  }
  spec->mutable_source()->mutable_train()->set_steps(1000);
  spec->mutable_distillation()->mutable_train()->set_steps(1000);
  for (const char* task : {"rte", "boolq"}) {
    mpt::v1::TaskData* t = spec->mutable_target()->add_tasks();
    t->set_name(task);
    t->set_train_path(absl::StrCat("/data/", task, ".jsonl"));
  }
  spec->mutable_target()->mutable_train()->set_steps(500);
  return r;
}

grpc::ClientContext* WithDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
  return ctx;
}

struct Latencies {
  std::vector<double> ms;
  int errors = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * v.size()));
  return v[i];
}

// One closed-loop client per channel, each with one call in flight at a
// time, `requests` calls each. `threads` threads drive them,
// each with its own completion queue (client c on thread c % threads);
// threads == clients gives every client a thread of its own.
// `start(stub, context, client, index, gen, cq)` prepares a call;
// `check(client, response)` says whether its answer is right.
template <class Response, class Start, class Check>
Latencies RunClients(const std::vector<std::shared_ptr<grpc::Channel>>& channels, int requests,
                     int threads, Start start, Check check) {
  const int clients = static_cast<int>(channels.size());
  struct Call {
    int client = 0;
    int index = 0;
    absl::Time start;
    grpc::ClientContext context;
    Response response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader;
  };
  threads = std::max(1, std::min(threads, clients));
  std::vector<std::unique_ptr<mpt::v1::JobService::Stub>> stubs;
  for (const auto& channel : channels) stubs.push_back(mpt::v1::JobService::NewStub(channel));
  std::vector<Latencies> per(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      grpc::CompletionQueue cq;
      absl::BitGen gen;
      int in_flight = 0;
      auto issue = [&](int c, int i) {
        auto* call = new Call;
        call->client = c;
        call->index = i;
        WithDeadline(&call->context, absl::Seconds(30));
        call->start = absl::Now();
        call->reader = start(stubs[c].get(), &call->context, c, i, gen, &cq);
        call->reader->StartCall();
        call->reader->Finish(&call->response, &call->status, call);
        ++in_flight;
      };
      if (requests > 0) {
        for (int c = t; c < clients; c += threads) issue(c, 0);
      }
      void* tag = nullptr;
      bool ok = false;
      while (in_flight > 0 && cq.Next(&tag, &ok)) {
        std::unique_ptr<Call> call(static_cast<Call*>(tag));
        --in_flight;
        per[t].ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - call->start));
        if (!ok || !call->status.ok() || !check(call->client, call->response)) ++per[t].errors;
        if (call->index + 1 < requests) issue(call->client, call->index + 1);
      }
      cq.Shutdown();
      while (cq.Next(&tag, &ok)) {
      }
    });
  }
  for (auto& w : workers) w.join();
  Latencies all;
  for (auto& p : per) {
    all.ms.insert(all.ms.end(), p.ms.begin(), p.ms.end());
    all.errors += p.errors;
  }
  return all;
}

// One restart over the store in `dir`: opening the store, loading and
// resuming, then starting the server and answering GetJob of `probe_job`.
struct RestartTiming {
  double open_ms = 0, load_ms = 0, load_cpu_ms = 0, serve_ms = 0, total_ms = 0, total_cpu_ms = 0;
  double peak_rss_mib = -1;  // of the restarted process; -1 when it shares this one
};

absl::StatusOr<RestartTiming> TimeOneRestart(const std::string& dir, bool sync_full,
                                             const std::string& probe_job) {
  RestartTiming t;
  const absl::Time t0 = absl::Now();
  const double cpu0 = ProcessCpuMs();
  auto store = SqliteJobStore::Open(dir + "/jobs.db", ServingStoreOptions(sync_full));
  if (!store.ok()) return store.status();
  auto blobs = ArtifactStore::Open(dir + "/artifacts");
  if (!blobs.ok()) return blobs.status();
  const absl::Time t1 = absl::Now();
  const double cpu1 = ProcessCpuMs();
  auto core =
      Coordinator::Create({}, *std::move(store), *std::move(blobs), std::make_shared<RealClock>());
  if (!core.ok()) return core.status();
  const absl::Time t2 = absl::Now();
  t.load_cpu_ms = ProcessCpuMs() - cpu1;
  GrpcServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = CoordinatorServer::Start(options, core->get());
  if (!server.ok()) return server.status();
  auto stub = mpt::v1::JobService::NewStub(Connect((*server)->port()));
  grpc::ClientContext ctx;
  mpt::v1::GetJobRequest r;
  r.set_name(probe_job);
  mpt::v1::Job job;
  grpc::Status s = stub->GetJob(WithDeadline(&ctx, absl::Seconds(30)), r, &job);
  const absl::Time t3 = absl::Now();
  t.total_cpu_ms = ProcessCpuMs() - cpu0;
  if (!s.ok()) {
    return absl::InternalError(
        absl::StrCat("first call after restart failed: ", s.error_message()));
  }
  t.open_ms = absl::ToDoubleMilliseconds(t1 - t0);
  t.load_ms = absl::ToDoubleMilliseconds(t2 - t1);
  t.serve_ms = absl::ToDoubleMilliseconds(t3 - t2);
  t.total_ms = absl::ToDoubleMilliseconds(t3 - t0);
  (*server)->Shutdown(absl::Seconds(1));
  return t;
}

// TimeOneRestart() in a fresh process (this program run again with
// --restart_child), as a coordinator restarts: nothing of an earlier
// restart's heap is at hand. The child prints its figures on one line.
absl::StatusOr<RestartTiming> TimeRestartInChild(const std::string& dir, bool sync_full,
                                                 const std::string& probe_job) {
  std::vector<std::string> args = {"coordinator_bench", "--restart_child",
                                   absl::StrCat("--dir=", dir),
                                   absl::StrCat("--sync_full=", sync_full ? "true" : "false"),
                                   absl::StrCat("--restart_probe=", probe_job)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (pipe(out) != 0) return absl::InternalError("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat("could not start a restart process: errno ", spawned));
  }
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = read(out[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  RestartTiming t;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      std::sscanf(text.c_str(), "restart_child %lf %lf %lf %lf %lf %lf %lf", &t.open_ms, &t.load_ms,
                  &t.load_cpu_ms, &t.serve_ms, &t.total_ms, &t.total_cpu_ms,
                  &t.peak_rss_mib) != 7) {
    return absl::InternalError(absl::StrCat("the restart process failed: ", text));
  }
  return t;
}

// Times --recovery_runs restarts over the store in `dir` (`stored`
// unfinished jobs), each in a process of its own unless
// --restart_in_process.
int TimeRestarts(const std::string& dir, int stored, bool sync_full,
                 const std::string& probe_job) {
  const int64_t db_bytes = static_cast<int64_t>(std::filesystem::file_size(dir + "/jobs.db"));
  const bool in_process = absl::GetFlag(FLAGS_restart_in_process);
  std::vector<double> total_ms, total_cpu, peak_rss;
  for (int run = 0; run < absl::GetFlag(FLAGS_recovery_runs); ++run) {
    absl::StatusOr<RestartTiming> t = in_process ? TimeOneRestart(dir, sync_full, probe_job)
                                                 : TimeRestartInChild(dir, sync_full, probe_job);
    if (!t.ok()) {
      MPT_LOG(ERROR) << t.status();
      return 1;
    }
    total_ms.push_back(t->total_ms);
    total_cpu.push_back(t->total_cpu_ms);
    if (t->peak_rss_mib >= 0) peak_rss.push_back(t->peak_rss_mib);
    std::printf(
        "restart %d: open store %.1f ms, load and resume %.1f ms (%.0f ms of CPU), start "
        "server and first GetJob %.1f ms: serving after %.1f ms (%.0f ms of CPU, all "
        "threads)%s\n",
        run + 1, t->open_ms, t->load_ms, t->load_cpu_ms, t->serve_ms, t->total_ms, t->total_cpu_ms,
        t->peak_rss_mib >= 0 ? absl::StrFormat(", peak RSS %.0f MiB", t->peak_rss_mib).c_str()
                             : "");
  }
  std::printf(
      "recovery with %d unfinished jobs (db %.1f MiB), %s: median %.0f ms to serving, %.0f ms "
      "of CPU%s\n",
      stored, db_bytes / 1048576.0,
      in_process ? "restarts in this process" : "each restart a fresh process",
      Percentile(total_ms, 0.5), Percentile(total_cpu, 0.5),
      peak_rss.empty()
          ? ""
          : absl::StrFormat(", peak RSS %.0f MiB (%.1f KiB a job)", Percentile(peak_rss, 0.5),
                            Percentile(peak_rss, 0.5) * 1024.0 / std::max(stored, 1))
                .c_str());
  return 0;
}

int Run() {
  const int clients = absl::GetFlag(FLAGS_clients);
  const int requests = absl::GetFlag(FLAGS_requests);
  const int watchers = absl::GetFlag(FLAGS_watchers);
  const bool sync_full = absl::GetFlag(FLAGS_sync_full);
  const std::vector<std::string> calls = absl::GetFlag(FLAGS_calls);
  if (clients < 1 || requests < 0 || watchers < 0) {
    MPT_LOG(ERROR) << "--clients must be at least 1, --requests and --watchers at least 0; got "
                   << clients << ", " << requests << ", " << watchers;
    return 2;
  }
  for (const std::string& call : calls) {
    if (call != "submit" && call != "get" && call != "list") {
      MPT_LOG(ERROR) << "--calls: submit, get or list, got \"" << call << "\"";
      return 2;
    }
  }
  auto asks_for = [&](const char* call) {
    return std::find(calls.begin(), calls.end(), call) != calls.end();
  };
  if (asks_for("get") && !(asks_for("submit") && requests > 0) && watchers == 0) {
    MPT_LOG(ERROR) << "--calls: get needs jobs to ask for: submit some (--calls=submit,get "
                      "with --requests > 0) or open watched jobs (--watchers > 0)";
    return 2;
  }
  const std::string list_view = absl::GetFlag(FLAGS_list_view);
  if (list_view != "full" && list_view != "basic") {
    MPT_LOG(ERROR) << "--list_view: full or basic, got \"" << list_view << "\"";
    return 2;
  }
  const bool basic_view = list_view == "basic";
  std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = absl::StrCat(tmp ? tmp : "/tmp", "/coordinator_bench_", ::getpid());
  }
  if (absl::GetFlag(FLAGS_restart_child)) {
    absl::StatusOr<RestartTiming> t =
        TimeOneRestart(dir, sync_full, absl::GetFlag(FLAGS_restart_probe));
    if (!t.ok()) {
      std::printf("%s\n", t.status().ToString().c_str());
      std::fflush(stdout);
      _exit(1);
    }
    // The peak of this process's own memory (VmHWM), not its rusage: a
    // child started by posix_spawn shares the parent's memory until exec,
    // and the kernel carries that high-water mark into ru_maxrss.
    std::printf("restart_child %.3f %.3f %.3f %.3f %.3f %.3f %.1f\n", t->open_ms, t->load_ms,
                t->load_cpu_ms, t->serve_ms, t->total_ms, t->total_cpu_ms, PeakRssMib());
    std::fflush(stdout);
    _exit(0);  // a restarted coordinator's teardown is not part of its restart
  }
  if (absl::GetFlag(FLAGS_restart_only)) {
    // A job to ask for, and how many are unfinished.
    auto store = SqliteJobStore::Open(dir + "/jobs.db");
    if (!store.ok()) {
      MPT_LOG(ERROR) << store.status();
      return 1;
    }
    auto page = (*store)->ListJobs({}, 0, 1);
    auto stats = (*store)->ReadStats();
    if (!page.ok() || page->jobs.empty() || !stats.ok()) {
      MPT_LOG(ERROR) << "--restart_only: no jobs in " << dir << "/jobs.db";
      return 1;
    }
    const std::string probe = page->jobs[0].name();
    int stored = 0;
    for (mpt::v1::JobState state : {mpt::v1::QUEUED, mpt::v1::RUNNING, mpt::v1::CANCELLING}) {
      auto it = stats->jobs_by_state.find(state);
      if (it != stats->jobs_by_state.end()) stored += static_cast<int>(it->second);
    }
    store->reset();
    return TimeRestarts(dir, stored, sync_full, probe);
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  const bool separate = absl::GetFlag(FLAGS_separate_process);
  auto served = ServedCoordinator::Start(dir, sync_full, separate);
  if (!served.ok()) {
    MPT_LOG(ERROR) << served.status();
    return 1;
  }
  const int port = (*served)->port();
  std::printf("coordinator on 127.0.0.1:%d (%s), store %s (synchronous=%s), %u hardware threads\n",
              port, separate ? "a process of its own" : "in the clients' process", dir.c_str(),
              sync_full ? "FULL" : "NORMAL", std::thread::hardware_concurrency());

  // The watched jobs, and one stream each.
  std::vector<std::string> watched;
  {
    auto stub = mpt::v1::JobService::NewStub(Connect(port));
    for (int i = 0; i < watchers; ++i) {
      grpc::ClientContext ctx;
      mpt::v1::Job job;
      if (!stub->SubmitJob(WithDeadline(&ctx, absl::Seconds(30)), BenchJob(i), &job).ok()) {
        MPT_LOG(ERROR) << "submit for watcher failed";
        return 1;
      }
      watched.push_back(job.name());
    }
  }
  // The watch streams, all driven by one thread on one completion queue
  // (their clients' cost stays small next to the server's).
  std::atomic<int> streams_open{0}, streams_final{0}, stream_events{0};
  struct Watch {
    enum { kStarting, kReading, kFinishing } phase = kStarting;
    grpc::ClientContext context;
    mpt::v1::JobEvent event;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncReader<mpt::v1::JobEvent>> reader;
    bool counted = false;
  };
  grpc::CompletionQueue watch_cq;
  std::vector<std::unique_ptr<mpt::v1::JobService::Stub>> watch_stubs;
  for (int i = 0; i < 8; ++i) watch_stubs.push_back(mpt::v1::JobService::NewStub(Connect(port)));
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < watchers; ++i) {
    auto w = std::make_unique<Watch>();
    WithDeadline(&w->context, absl::Minutes(10));
    mpt::v1::WatchJobRequest request;
    request.set_name(watched[i]);
    w->reader = watch_stubs[i % watch_stubs.size()]->PrepareAsyncWatchJob(&w->context, request,
                                                                          &watch_cq);
    w->reader->StartCall(w.get());
    watches.push_back(std::move(w));
  }
  std::thread watch_thread([&] {
    int open = watchers;
    void* tag = nullptr;
    bool ok = false;
    while (open > 0 && watch_cq.Next(&tag, &ok)) {
      Watch* w = static_cast<Watch*>(tag);
      if (w->phase == Watch::kFinishing) {
        --open;
        continue;
      }
      if (w->phase == Watch::kReading && ok) {
        ++stream_events;
        if (!w->counted) {
          ++streams_open;
          w->counted = true;
        }
        if (w->event.state() == mpt::v1::CANCELLED) ++streams_final;
      }
      if (ok) {
        w->phase = Watch::kReading;
        w->reader->Read(&w->event, w);
      } else {
        w->phase = Watch::kFinishing;
        w->reader->Finish(&w->status, w);
      }
    }
  });
  const absl::Time wait_open = absl::Now() + absl::Seconds(60);
  while (streams_open.load() < watchers && absl::Now() < wait_open) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::printf("%d of %d WatchJob streams open\n", streams_open.load(), watchers);

  const int client_threads =
      absl::GetFlag(FLAGS_client_threads) > 0 ? absl::GetFlag(FLAGS_client_threads) : clients;
  // Every client connects before the timing starts, as a client that keeps
  // its channel does; the first call then pays no connection set-up.
  std::vector<std::shared_ptr<grpc::Channel>> client_channels;
  for (int c = 0; c < clients; ++c) {
    client_channels.push_back(Connect(port));
    if (!client_channels.back()->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(30)))) {
      MPT_LOG(ERROR) << "client " << c << " could not connect";
      return 1;
    }
  }
  std::printf("%d clients (one connection each) driven by %d thread(s)\n", clients,
              std::min(client_threads, clients));
  auto requests_of = [&](const char* call) { return asks_for(call) ? requests : 0; };
  std::vector<std::vector<std::string>> submitted(clients);
  const double submit_cpu = ProcessCpuMs();
  const double submit_server_cpu = (*served)->ServerCpuMs();
  const absl::Time submit_start = absl::Now();
  absl::Mutex submitted_mu;
  Latencies submit = RunClients<mpt::v1::Job>(
      client_channels, requests_of("submit"), client_threads,
      [&](mpt::v1::JobService::Stub* stub, grpc::ClientContext* ctx, int c, int i,
          absl::BitGen&, grpc::CompletionQueue* cq) {
        return stub->PrepareAsyncSubmitJob(ctx, BenchJob(c * requests + i), cq);
      },
      [&](int c, const mpt::v1::Job& job) {
        absl::MutexLock lock(&submitted_mu);
        submitted[c].push_back(job.name());
        return true;
      });
  const double submit_seconds = absl::ToDoubleSeconds(absl::Now() - submit_start);
  const double submit_cpu_ms = ProcessCpuMs() - submit_cpu;
  const double submit_server_cpu_ms = (*served)->ServerCpuMs() - submit_server_cpu;
  std::vector<std::string> all_jobs = watched;
  for (auto& v : submitted) all_jobs.insert(all_jobs.end(), v.begin(), v.end());

  const double get_cpu = ProcessCpuMs();
  const double get_server_cpu = (*served)->ServerCpuMs();
  const absl::Time get_start = absl::Now();
  if (all_jobs.empty() && requests_of("get") > 0) {
    std::printf("GetJob skipped: no job was submitted or watched\n");
  }
  Latencies get = RunClients<mpt::v1::Job>(
      client_channels, all_jobs.empty() ? 0 : requests_of("get"), client_threads,
      [&](mpt::v1::JobService::Stub* stub, grpc::ClientContext* ctx, int, int, absl::BitGen& gen,
          grpc::CompletionQueue* cq) {
        mpt::v1::GetJobRequest r;
        r.set_name(all_jobs[absl::Uniform<size_t>(gen, 0, all_jobs.size())]);
        return stub->PrepareAsyncGetJob(ctx, r, cq);
      },
      [](int, const mpt::v1::Job& job) { return !job.name().empty(); });
  const double get_seconds = absl::ToDoubleSeconds(absl::Now() - get_start);
  const double get_cpu_ms = ProcessCpuMs() - get_cpu;
  const double get_server_cpu_ms = (*served)->ServerCpuMs() - get_server_cpu;

  const double list_cpu = ProcessCpuMs();
  const double list_server_cpu = (*served)->ServerCpuMs();
  const absl::Time list_start = absl::Now();
  Latencies list = RunClients<mpt::v1::ListJobsResponse>(
      client_channels, requests_of("list"), client_threads,
      [&](mpt::v1::JobService::Stub* stub, grpc::ClientContext* ctx, int, int i, absl::BitGen&,
          grpc::CompletionQueue* cq) {
        mpt::v1::ListJobsRequest r;
        r.set_page_size(50);
        if (basic_view) r.set_view(mpt::v1::JOB_VIEW_BASIC);
        if (i % 2 == 1) r.add_states(mpt::v1::QUEUED);
        return stub->PrepareAsyncListJobs(ctx, r, cq);
      },
      // Every job is still queued (no workers), so a page is full unless
      // there are fewer jobs than a page.
      [&](int, const mpt::v1::ListJobsResponse& page) {
        return page.jobs_size() == static_cast<int>(std::min<size_t>(50, all_jobs.size()));
      });
  const double list_seconds = absl::ToDoubleSeconds(absl::Now() - list_start);
  const double list_cpu_ms = ProcessCpuMs() - list_cpu;
  const double list_server_cpu_ms = (*served)->ServerCpuMs() - list_server_cpu;

  // End the watched jobs: every stream must see the final event and end.
  {
    auto stub = mpt::v1::JobService::NewStub(Connect(port));
    for (const std::string& name : watched) {
      grpc::ClientContext ctx;
      mpt::v1::CancelJobRequest r;
      r.set_name(name);
      mpt::v1::Job job;
      stub->CancelJob(WithDeadline(&ctx, absl::Seconds(30)), r, &job);
    }
  }
  watch_thread.join();
  watch_cq.Shutdown();
  {
    void* tag = nullptr;
    bool ok = false;
    while (watch_cq.Next(&tag, &ok)) {
    }
  }

  // cpu ms/req: CPU per request of the phase, clients and server together
  // (with the server apart: both processes); server: the server process's
  // share.
  std::printf("\n%-10s %8s %8s %9s %9s %9s %7s %12s %10s\n", "call", "requests", "errors", "p50 ms",
              "p99 ms", "max ms", "req/s", "cpu ms/req", "server");
  auto row = [&](const char* name, const Latencies& l, double seconds, double cpu_ms,
                 double server_cpu_ms) {
    const double n = static_cast<double>(l.ms.size());
    const std::string server =
        !separate || l.ms.empty() ? "-" : absl::StrFormat("%.3f", server_cpu_ms / n);
    std::printf("%-10s %8zu %8d %9.2f %9.2f %9.2f %7.0f %12.3f %10s\n", name, l.ms.size(), l.errors,
                Percentile(l.ms, 0.50), Percentile(l.ms, 0.99), Percentile(l.ms, 1.0), n / seconds,
                l.ms.empty() ? 0.0 : (cpu_ms + std::max(0.0, server_cpu_ms)) / n, server.c_str());
  };
  row("SubmitJob", submit, submit_seconds, submit_cpu_ms, submit_server_cpu_ms);
  row("GetJob", get, get_seconds, get_cpu_ms, get_server_cpu_ms);
  row(basic_view ? "ListBasic" : "ListJobs", list, list_seconds, list_cpu_ms, list_server_cpu_ms);
  std::printf("WatchJob: %d streams held open throughout; %d saw their final event (%d events)\n",
              streams_open.load(), streams_final.load(), stream_events.load());

  // Restart recovery with --recovery_jobs unfinished jobs in the store.
  (*served)->Stop();
  int stored = static_cast<int>(all_jobs.size()) - watchers;  // the watched ones are cancelled
  {
    SqliteJobStoreOptions fill_options;
    fill_options.synchronous_full = false;  // filling fast; the format is the same
    auto store = SqliteJobStore::Open(dir + "/jobs.db", fill_options);
    auto blobs = ArtifactStore::Open(dir + "/artifacts");
    if (!store.ok() || !blobs.ok()) return 1;
    auto core = Coordinator::Create({}, *std::move(store), *std::move(blobs),
                                    std::make_shared<RealClock>());
    if (!core.ok()) {
      MPT_LOG(ERROR) << core.status();
      return 1;
    }
    const absl::Time fill_start = absl::Now();
    // Several submitters, so that group commit batches their writes.
    std::atomic<int> next{stored}, failed{0};
    absl::Mutex filled_mu;
    std::vector<std::thread> fillers;
    for (int t = 0; t < 8; ++t) {
      fillers.emplace_back([&] {
        for (int i = next++; i < absl::GetFlag(FLAGS_recovery_jobs); i = next++) {
          absl::StatusOr<mpt::v1::Job> job = (*core)->SubmitJob(BenchJob(i));
          if (!job.ok()) {
            ++failed;
            continue;
          }
          absl::MutexLock lock(&filled_mu);
          if (all_jobs.empty()) all_jobs.push_back(job->name());  // a job to ask for
        }
      });
    }
    for (std::thread& t : fillers) t.join();
    if (failed > 0) return 1;
    stored = std::max(stored, absl::GetFlag(FLAGS_recovery_jobs));
    std::printf("\nstore filled to %d unfinished jobs (%d stages) in %.1f s\n", stored,
                stored * 6, absl::ToDoubleSeconds(absl::Now() - fill_start));
  }
  if (all_jobs.empty()) {
    std::printf("restart not timed: the store holds no job (--recovery_jobs=0, none submitted)\n");
  } else if (TimeRestarts(dir, stored, sync_full, all_jobs.back()) != 0) {
    return 1;
  }
  if (!absl::GetFlag(FLAGS_keep_dir)) std::filesystem::remove_all(dir);
  const bool ok = submit.errors == 0 && get.errors == 0 && list.errors == 0 &&
                  streams_final.load() == watchers;
  return ok ? 0 : 2;
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As the coordinator process runs (coordinator_main.cc).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return mpt::Run();
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
