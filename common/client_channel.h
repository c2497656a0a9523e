// The client side of a connection to the coordinator, shared by the worker
// daemon and mptctl: the address, TLS and the bearer token, turned into a
// gRPC channel and per-call contexts.
//
//   ClientChannelOptions options;
//   options.address = "coordinator:50051";
//   options.token = "s3cret";
//   ASSIGN_OR_RETURN(auto channel, MakeClientChannel(options));
//   auto stub = mpt::v1::JobService::NewStub(channel);
//   grpc::ClientContext context;
//   PrepareClientContext(options, absl::Seconds(30), &context);
//
// Thread-safety: the functions keep no state; a channel may be shared by
// threads.
#ifndef MPT_COMMON_CLIENT_CHANNEL_H_
#define MPT_COMMON_CLIENT_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mpt {

// The environment variable that names the coordinator when no flag does.
inline constexpr char kCoordinatorEnv[] = "MPT_COORDINATOR";
// The environment variable that holds the bearer token when no flag does.
inline constexpr char kTokenEnv[] = "MPT_TOKEN";

struct ClientChannelOptions {
  // "host:port" (or any gRPC target, e.g. "unix:/run/mpt.sock"). Required.
  std::string address;

  // Use TLS. Default false (plain TCP, for loopback and trusted networks).
  bool tls = false;
  // PEM file with the certificate authorities that sign the coordinator's
  // certificate. Default empty: the system's roots.
  std::string tls_ca_file;
  // PEM files with this client's certificate and key, for coordinators that
  // require mutual TLS. Default empty: no client certificate.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the coordinator's certificate must carry, when it differs from
  // the host part of `address`. Default empty.
  std::string tls_server_name;

  // Sent with every call as "authorization: Bearer <token>". Default empty:
  // no token.
  std::string token;

  // The longest pause between two attempts of the channel to reconnect.
  // gRPC's own default is two minutes, which is far too slow to notice that
  // a restarted coordinator is back. Default 5 seconds.
  absl::Duration max_reconnect_backoff = absl::Seconds(5);
};

// A channel to options.address. INVALID_ARGUMENT for an empty address or a
// key without a certificate (or the reverse); NOT_FOUND / INTERNAL naming
// the file when a TLS file cannot be read. Connecting happens lazily: an
// unreachable coordinator shows up as UNAVAILABLE on the first call.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(
    const ClientChannelOptions& options);

// Sets the deadline (now + timeout; none when timeout is infinite) and the
// token of one call.
void PrepareClientContext(const ClientChannelOptions& options, absl::Duration timeout,
                          grpc::ClientContext* context);

// The token to use: `token` when non-empty, else the contents of
// `token_file` (surrounding white space removed) when non-empty, else the
// environment variable MPT_TOKEN, else empty. NOT_FOUND / INTERNAL naming
// the file when it cannot be read; INVALID_ARGUMENT when both `token` and
// `token_file` are given, when a given file holds only white space, or when
// the token could not travel in a header (CheckBearerToken).
absl::StatusOr<std::string> ResolveToken(const std::string& token, const std::string& token_file);

// `address` when non-empty, else the environment variable MPT_COORDINATOR,
// else empty.
std::string ResolveCoordinatorAddress(const std::string& address);

}  // namespace mpt

#endif  // MPT_COMMON_CLIENT_CHANNEL_H_
