// mptctl's commands over the JobService, separate from flag parsing so that
// they can be driven by tests. Each command writes its result to `out`
// (a table or JSON) and its complaints to `err`, and returns the process
// exit status:
//
//   0  OK (for watch and submit --watch: the job SUCCEEDED)
//   1  any other error (INTERNAL, UNKNOWN, ...)
//   2  bad usage, or the service said INVALID_ARGUMENT (a bad spec names
//      the field)
//   3  NOT_FOUND (no such job or artefact)
//   4  the job ended FAILED or CANCELLED (watch, submit --watch)
//   5  UNAVAILABLE or DEADLINE_EXCEEDED: the coordinator cannot be reached;
//      a retry may succeed
//   6  FAILED_PRECONDITION (e.g. cancelling a finished job) or
//      ALREADY_EXISTS
//   7  UNAUTHENTICATED or PERMISSION_DENIED (token / TLS)
//   8  DATA_LOSS: a download did not match its SHA-256
//
// Not thread-safe; one command at a time.
#ifndef MPT_CLI_MPTCTL_COMMANDS_H_
#define MPT_CLI_MPTCTL_COMMANDS_H_

#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/client_channel.h"
#include "proto/mpt/v1/service.grpc.pb.h"

namespace mpt {

enum MptctlExit {
  kExitOk = 0,
  kExitError = 1,
  kExitUsage = 2,
  kExitNotFound = 3,
  kExitJobUnsuccessful = 4,
  kExitUnavailable = 5,
  kExitFailedPrecondition = 6,
  kExitUnauthenticated = 7,
  kExitDataLoss = 8,
};

// The exit status for a failed call (see the table above); 0 for OK.
int ExitCodeFor(const absl::Status& status);

// Waits until `channel` has connected to the coordinator at `address` (the
// name used in the message), at most `timeout`. OK once connected;
// UNAVAILABLE "cannot connect to the coordinator at <address> within <t>"
// otherwise (nothing listening, unreachable, a TLS handshake that fails).
// Every command checks this first, so that a wrong address fails in seconds
// instead of being retried; once connected, watch rides out a coordinator
// that goes away (MptctlOptions::reconnect_timeout).
absl::Status ConnectToCoordinator(grpc::Channel* channel, const std::string& address,
                                  absl::Duration timeout);

struct MptctlOptions {
  // The connection (for the token on each call).
  ClientChannelOptions channel;
  // "text" (default) or "json".
  std::string output = "text";
  // Deadline of each unary call. Default 30 seconds.
  absl::Duration call_timeout = absl::Seconds(30);
  // watch and logs --follow: how long to keep reconnecting to a
  // coordinator that became unreachable, or ended the call while shutting
  // down (CANCELLED), after the command started before giving up with
  // status 5, naming the address. Default 10 minutes.
  absl::Duration reconnect_timeout = absl::Minutes(10);
  // submit: how many times SubmitJob is sent in all when it ends UNAVAILABLE,
  // DEADLINE_EXCEEDED or CANCELLED by a coordinator shutting down (a lost
  // answer may mean a stored job); every
  // attempt carries the same request_id, so a retry returns the job the
  // first attempt created instead of a second one. Default 5.
  int submit_attempts = 5;
  // Draw a live progress bar (a terminal) rather than log lines.
  bool live = false;
};

struct SubmitArgs {
  std::string spec_path;
  std::string kind = "pipeline";
  int priority = 0;
  std::string display_name;
  // Idempotency key. Empty (default): a random one (32 hex digits).
  std::string request_id;
  // Check locally that the model folder and data files exist.
  bool check_files = true;
  bool watch = false;
};

// The SubmitJob request for `args`, without any network call: reads and
// checks the spec (and, with check_files, its files), makes its paths
// absolute and picks a request id. Errors name the file or flag.
absl::StatusOr<mpt::v1::SubmitJobRequest> BuildSubmitRequest(const SubmitArgs& args);

struct ListArgs {
  std::vector<std::string> states;
  std::vector<std::string> kinds;
  int page_size = 0;
  std::string page_token;
  // Follow next_page_token to the end.
  bool all = false;
};

struct LogsArgs {
  std::string job;
  // One stage ("source/sst2"); empty: every stage, in the job's stage order
  // (with follow: in the order the lines arrive).
  std::string stage;
  // Keep reading new lines until the stage (or, without a stage, the job)
  // is in a final state and every line was shown.
  bool follow = false;
  // follow: how often to ask for new lines. Default 1 second.
  absl::Duration poll_interval = absl::Seconds(1);
};

// A fresh idempotency key: 128 random bits as 32 lowercase hex digits.
std::string NewRequestId();

class Mptctl {
 public:
  // `stub`, `out` and `err` are borrowed.
  Mptctl(MptctlOptions options, mpt::v1::JobService::StubInterface* stub, std::ostream* out,
         std::ostream* err);

  int Submit(const SubmitArgs& args);
  // Sends a request made by BuildSubmitRequest (retrying with its
  // request_id) and, with args.watch, watches the job.
  int Submit(const SubmitArgs& args, const mpt::v1::SubmitJobRequest& request);
  int Get(const std::string& job);
  int List(const ListArgs& args);
  // Streams the job's events from `after_sequence` until it ends,
  // reconnecting after a lost connection from the last event seen.
  int Watch(const std::string& job, int64_t after_sequence);
  int Cancel(const std::string& job);
  // An artefact ("jobs/J/artifacts/A") into `out_dir` (default ./A), or
  // every stage result of a job into `out_dir`/<stage id> (default ./J).
  // A folder it writes is replaced only when it does not exist, is empty
  // or holds nothing but an earlier download's adapter files; otherwise
  // (other files, a file, the current folder) FAILED_PRECONDITION naming
  // it, before anything is fetched or written (CheckDownloadFolder).
  int Download(const std::string& name, const std::string& out_dir);
  int Workers();
  // The stage logs of a job (see LogsArgs): each line prefixed with its
  // stage; JSON Lines of LogLine with --output=json. 0 once every line was
  // shown (whatever the job's state); errors as for the other commands.
  // follow rides out a coordinator that went away (unreachable, or shut
  // down gracefully and restarted) for reconnect_timeout, as watch does,
  // resuming after the last line shown.
  int Logs(const LogsArgs& args);

 private:
  // Prints "mptctl: <message>" and returns the status's exit code.
  int Fail(const absl::Status& status);
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const;
  // Prints the lines of `response`, and first the note of each stage whose
  // dropped count is not in `dropped_shown` yet.
  void PrintLogPage(const mpt::v1::GetStageLogsResponse& response,
                    std::map<std::string, int64_t>* dropped_shown);
  absl::Status DownloadArtifact(const std::string& name, const std::string& expected_sha256,
                                const std::string& folder, absl::string_view label);
  bool json() const { return options_.output == "json"; }

  const MptctlOptions options_;
  mpt::v1::JobService::StubInterface* const stub_;
  std::ostream* const out_;
  std::ostream* const err_;
};

}  // namespace mpt

#endif  // MPT_CLI_MPTCTL_COMMANDS_H_
