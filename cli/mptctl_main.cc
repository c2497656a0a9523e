// mptctl: the command-line client of the MPT service.
//
//   mptctl submit --spec=demo/pipeline.textproto [--kind=pipeline|source|
//                 distillation|target] [--priority=N] [--name=TEXT] [--watch]
//   mptctl get JOB
//   mptctl list [--state=running,queued] [--kind=pipeline] [--page_size=N] [--all]
//   mptctl watch JOB [--from=SEQUENCE]
//   mptctl cancel JOB
//   mptctl download ARTIFACT|JOB [--out=DIR]
//   mptctl workers
//   mptctl logs JOB [--stage=ID] [--follow]
//
// JOB is "jobs/<id>" or just "<id>". The coordinator comes from
// --coordinator or $MPT_COORDINATOR; the token from --token, --token_file or
// $MPT_TOKEN. --output=json prints JSON for scripts. Exit status: see
// cli/mptctl_commands.h (0 ok, 2 usage / INVALID_ARGUMENT, 3 NOT_FOUND,
// 4 job FAILED or CANCELLED, 5 UNAVAILABLE, ...).
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/mptctl_commands.h"
#include "common/client_channel.h"

ABSL_FLAG(std::string, coordinator, "", "Coordinator address host:port ($MPT_COORDINATOR).");
ABSL_FLAG(std::string, output, "text", "text or json.");
ABSL_FLAG(double, timeout_seconds, 30, "Deadline of each call (not of watch).");
ABSL_FLAG(double, connect_timeout_seconds, 5,
          "Give up (exit status 5) when the coordinator cannot be connected to this long.");
ABSL_FLAG(std::string, token, "", "Bearer token ($MPT_TOKEN).");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token.");
ABSL_FLAG(bool, tls, false, "Connect with TLS.");
ABSL_FLAG(std::string, tls_ca, "", "PEM roots that sign the coordinator's certificate.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM client key (mutual TLS).");
ABSL_FLAG(std::string, tls_server_name, "", "Expected name in the coordinator's certificate.");
// submit
ABSL_FLAG(std::string, spec, "", "submit: the spec file (JSON or protobuf text format).");
ABSL_FLAG(std::string, kind, "pipeline",
          "submit: pipeline, source, distillation or target; list: filter by kinds.");
ABSL_FLAG(int, priority, 0, "submit: higher runs first.");
ABSL_FLAG(std::string, name, "", "submit: a display name.");
ABSL_FLAG(std::string, request_id, "",
          "submit: idempotency key (default: a random one); SubmitJob is retried with it "
          "when the coordinator is unreachable, shutting down or the call times out.");
ABSL_FLAG(bool, watch, false, "submit: then watch the job to its end.");
ABSL_FLAG(bool, check_files, true,
          "submit: check that the model folder and data files exist on this machine.");
// list
ABSL_FLAG(std::vector<std::string>, state, {}, "list: only jobs in these states.");
ABSL_FLAG(int, page_size, 0, "list: jobs per page (0: the service's default, 50).");
ABSL_FLAG(std::string, page_token, "", "list: continue from this page.");
ABSL_FLAG(bool, all, false, "list: every page.");
// watch
ABSL_FLAG(int64_t, from, 0, "watch: start after this event number.");
ABSL_FLAG(std::string, progress, "auto",
          "watch: auto (a live bar on a terminal), plain (log lines) or live.");
ABSL_FLAG(double, reconnect_timeout_seconds, 600,
          "watch, logs --follow: give up after a coordinator that went away (unreachable, "
          "or shutting down and restarting) was away this long.");
// download
ABSL_FLAG(std::string, out, "",
          "download: the folder to write (default: ./<id>); it must not exist, be empty or "
          "hold only an earlier download's adapter files (other contents are refused, "
          "never deleted).");
// logs
ABSL_FLAG(std::string, stage, "", "logs: only this stage (source/<task>, distillation, ...).");
ABSL_FLAG(bool, follow, false, "logs: keep printing new lines until the stage or job ends.");
ABSL_FLAG(double, poll_seconds, 1, "logs --follow: how often to ask for new lines.");

namespace mpt {
namespace {

constexpr char kUsage[] =
    "mptctl: the MPT service's command-line client.\n"
    "\n"
    "  mptctl submit --spec=FILE [--kind=pipeline|source|distillation|target]\n"
    "                [--priority=N] [--name=TEXT] [--request_id=ID] [--watch]\n"
    "  mptctl get JOB\n"
    "  mptctl list [--state=S,...] [--kind=K,...] [--page_size=N] [--page_token=T] [--all]\n"
    "  mptctl watch JOB [--from=SEQUENCE]\n"
    "  mptctl cancel JOB\n"
    "  mptctl download ARTIFACT|JOB [--out=DIR]\n"
    "  mptctl workers\n"
    "  mptctl logs JOB [--stage=ID] [--follow]\n"
    "\n"
    "Common flags: --coordinator=HOST:PORT ($MPT_COORDINATOR), --output=text|json,\n"
    "  --token / --token_file ($MPT_TOKEN), --tls [--tls_ca --tls_cert --tls_key\n"
    "  --tls_server_name], --timeout_seconds, --connect_timeout_seconds (default 5).\n"
    "\n"
    "Exit status: 0 ok; 1 other error; 2 bad usage or INVALID_ARGUMENT; 3 NOT_FOUND;\n"
    "4 the job ended FAILED or CANCELLED (watch, submit --watch); 5 coordinator\n"
    "unreachable (UNAVAILABLE, DEADLINE_EXCEEDED); 6 FAILED_PRECONDITION;\n"
    "7 UNAUTHENTICATED or PERMISSION_DENIED; 8 DATA_LOSS (checksum mismatch).\n";

// Flags absl does not know make absl exit with status 1; mptctl promises 2
// for bad usage, so they are caught first.
bool UnknownFlag(int argc, char** argv, std::string* which) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::StartsWith(arg, "-") || arg == "-") continue;
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    absl::string_view name = arg.substr(0, arg.find('='));
    if (name == "help" || name == "helpfull" || name == "version") continue;
    if (const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name)) {
      // "--flag value": the value is the next argument.
      if (arg.find('=') == absl::string_view::npos && !flag->IsOfType<bool>()) ++i;
      continue;
    }
    if (absl::StartsWith(name, "no") && absl::FindCommandLineFlag(name.substr(2)) != nullptr) {
      continue;
    }
    *which = std::string(argv[i]);
    return true;
  }
  return false;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "help") == 0) {
      std::cout << kUsage;
      return kExitOk;
    }
  }
  std::string unknown;
  if (UnknownFlag(argc, argv, &unknown)) {
    std::cerr << "mptctl: unknown flag " << unknown << "\n\n" << kUsage;
    return kExitUsage;
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string command = positional[1];
  const std::string arg = positional.size() > 2 ? positional[2] : "";
  if (positional.size() > 3) {
    std::cerr << "mptctl: unexpected argument " << positional[3] << "\n";
    return kExitUsage;
  }

  MptctlOptions options;
  options.output = absl::GetFlag(FLAGS_output);
  if (options.output != "text" && options.output != "json") {
    std::cerr << "mptctl: --output: \"" << options.output << "\" is not text or json\n";
    return kExitUsage;
  }
  for (auto [flag, seconds] :
       {std::make_pair("--timeout_seconds", absl::GetFlag(FLAGS_timeout_seconds)),
        std::make_pair("--reconnect_timeout_seconds",
                       absl::GetFlag(FLAGS_reconnect_timeout_seconds)),
        std::make_pair("--connect_timeout_seconds",
                       absl::GetFlag(FLAGS_connect_timeout_seconds))}) {
    // Up to a year: beyond it absl's durations saturate to infinity.
    if (!(seconds > 0) || seconds > 365 * 86400.0) {
      std::cerr << "mptctl: " << flag << ": must be > 0 and at most a year (31536000)\n";
      return kExitUsage;
    }
  }
  options.call_timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_seconds));
  options.reconnect_timeout = absl::Seconds(absl::GetFlag(FLAGS_reconnect_timeout_seconds));
  const std::string progress = absl::GetFlag(FLAGS_progress);
  if (progress == "auto") {
    options.live = isatty(STDOUT_FILENO) != 0;
  } else if (progress == "live" || progress == "plain") {
    options.live = progress == "live";
  } else {
    std::cerr << "mptctl: --progress: \"" << progress << "\" is not auto, plain or live\n";
    return kExitUsage;
  }
  ClientChannelOptions& channel = options.channel;
  channel.address = ResolveCoordinatorAddress(absl::GetFlag(FLAGS_coordinator));
  if (channel.address.empty()) {
    std::cerr << "mptctl: --coordinator: required (or set " << kCoordinatorEnv << ")\n";
    return kExitUsage;
  }
  channel.tls = absl::GetFlag(FLAGS_tls);
  channel.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  channel.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  channel.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  channel.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  absl::StatusOr<std::string> token =
      ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  if (!token.ok()) {
    std::cerr << "mptctl: " << token.status().message() << "\n";
    return ExitCodeFor(token.status());
  }
  channel.token = *token;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> grpc_channel = MakeClientChannel(channel);
  if (!grpc_channel.ok()) {
    std::cerr << "mptctl: " << grpc_channel.status().message() << "\n";
    return ExitCodeFor(grpc_channel.status());
  }
  static const char* const kCommands[] = {"submit",   "get",     "list", "watch", "cancel",
                                          "download", "workers", "logs"};
  if (std::find(std::begin(kCommands), std::end(kCommands), command) == std::end(kCommands)) {
    std::cerr << "mptctl: unknown command \"" << command << "\"\n\n" << kUsage;
    return kExitUsage;
  }
  const double connect_seconds = absl::GetFlag(FLAGS_connect_timeout_seconds);
  // A submit's spec is read and checked before any connection, so that a bad
  // spec is reported even when no coordinator is reachable.
  std::optional<mpt::v1::SubmitJobRequest> submit_request;
  SubmitArgs submit_args;
  if (command == "submit") {
    submit_args.spec_path = absl::GetFlag(FLAGS_spec);
    if (submit_args.spec_path.empty()) submit_args.spec_path = arg;
    submit_args.kind = absl::GetFlag(FLAGS_kind);
    submit_args.priority = absl::GetFlag(FLAGS_priority);
    submit_args.display_name = absl::GetFlag(FLAGS_name);
    submit_args.request_id = absl::GetFlag(FLAGS_request_id);
    submit_args.watch = absl::GetFlag(FLAGS_watch);
    submit_args.check_files = absl::GetFlag(FLAGS_check_files);
    absl::StatusOr<mpt::v1::SubmitJobRequest> request = BuildSubmitRequest(submit_args);
    if (!request.ok()) {
      std::cerr << "mptctl: " << absl::StatusCodeToString(request.status().code()) << ": "
                << request.status().message() << "\n";
      return ExitCodeFor(request.status());
    }
    submit_request = *std::move(request);
  }
  absl::Status connected =
      ConnectToCoordinator(grpc_channel->get(), channel.address, absl::Seconds(connect_seconds));
  if (!connected.ok()) {
    std::cerr << "mptctl: " << absl::StatusCodeToString(connected.code()) << ": "
              << connected.message() << "\n";
    return ExitCodeFor(connected);
  }
  std::unique_ptr<mpt::v1::JobService::Stub> stub = mpt::v1::JobService::NewStub(*grpc_channel);
  Mptctl ctl(options, stub.get(), &std::cout, &std::cerr);

  if (command == "submit") return ctl.Submit(submit_args, *submit_request);
  if (command == "get") return ctl.Get(arg);
  if (command == "list") {
    ListArgs args;
    args.states = absl::GetFlag(FLAGS_state);
    // --kind defaults to "pipeline" for submit; list filters only when given.
    for (int i = 1; i < argc; ++i) {
      if (absl::StartsWith(argv[i], "--kind")) {
        for (absl::string_view k : absl::StrSplit(absl::GetFlag(FLAGS_kind), ',', absl::SkipEmpty())) {
          args.kinds.emplace_back(k);
        }
        break;
      }
    }
    args.page_size = absl::GetFlag(FLAGS_page_size);
    args.page_token = absl::GetFlag(FLAGS_page_token);
    args.all = absl::GetFlag(FLAGS_all);
    return ctl.List(args);
  }
  if (command == "watch") return ctl.Watch(arg, absl::GetFlag(FLAGS_from));
  if (command == "cancel") return ctl.Cancel(arg);
  if (command == "download") return ctl.Download(arg, absl::GetFlag(FLAGS_out));
  if (command == "workers") return ctl.Workers();
  if (command == "logs") {
    LogsArgs args;
    args.job = arg;
    args.stage = absl::GetFlag(FLAGS_stage);
    args.follow = absl::GetFlag(FLAGS_follow);
    const double poll = absl::GetFlag(FLAGS_poll_seconds);
    if (!(poll > 0)) {
      std::cerr << "mptctl: --poll_seconds: must be > 0\n";
      return kExitUsage;
    }
    args.poll_interval = absl::Seconds(poll);
    return ctl.Logs(args);
  }
  std::cerr << "mptctl: unknown command \"" << command << "\"\n\n" << kUsage;
  return kExitUsage;
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) { return mpt::Main(argc, argv); }
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
