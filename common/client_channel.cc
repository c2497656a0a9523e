#include "common/client_channel.h"

#include <chrono>
#include <cstdlib>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/credentials_check.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

// "" for no file (the defaults: the system's roots, no client certificate).
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what, PemKind kind) {
  if (path.empty()) return std::string();
  return ReadPemFile(path, what, kind);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(
    const ClientChannelOptions& options) {
  if (options.address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator address: empty (give --coordinator or set ", kCoordinatorEnv,
                     ")"));
  }
  // gRPC aborts the process on a header value it cannot send.
  if (!options.token.empty()) RETURN_IF_ERROR(CheckBearerToken(options.token, "token"));
  grpc::ChannelArguments args;
  const int max_backoff_ms =
      static_cast<int>(std::max<int64_t>(100, absl::ToInt64Milliseconds(options.max_reconnect_backoff)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff_ms);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(500, max_backoff_ms));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(500, max_backoff_ms));
  // Artefacts travel in chunks, but leave room for large progress messages.
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.tls) {
    if (!options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
        !options.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          "TLS files were given but TLS is off (add --tls)");
    }
    credentials = grpc::InsecureChannelCredentials();
  } else {
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_cert and --tls_key: give both (mutual TLS) or neither");
    }
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs,
                     ReadPem(options.tls_ca_file, "--tls_ca", PemKind::kCertificate));
    ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                     ReadPem(options.tls_cert_file, "--tls_cert", PemKind::kCertificate));
    ASSIGN_OR_RETURN(ssl.pem_private_key,
                     ReadPem(options.tls_key_file, "--tls_key", PemKind::kPrivateKey));
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  return grpc::CreateCustomChannel(options.address, credentials, args);
}

void PrepareClientContext(const ClientChannelOptions& options, absl::Duration timeout,
                          grpc::ClientContext* context) {
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  }
  if (!options.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
  }
}

absl::StatusOr<std::string> ResolveToken(const std::string& token, const std::string& token_file) {
  if (!token.empty() && !token_file.empty()) {
    return absl::InvalidArgumentError("--token and --token_file: give one, not both");
  }
  if (!token.empty()) {
    RETURN_IF_ERROR(CheckBearerToken(token, "--token"));
    return token;
  }
  if (!token_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(token_file);
    if (!contents.ok()) {
      return absl::Status(contents.status().code(),
                          absl::StrCat("--token_file: ", contents.status().message()));
    }
    std::string stripped(absl::StripAsciiWhitespace(*contents));
    RETURN_IF_ERROR(CheckBearerToken(stripped, absl::StrCat("--token_file ", token_file)));
    return stripped;
  }
  const char* env = std::getenv(kTokenEnv);
  if (env == nullptr || *env == '\0') return std::string();
  RETURN_IF_ERROR(CheckBearerToken(env, kTokenEnv));
  return std::string(env);
}

std::string ResolveCoordinatorAddress(const std::string& address) {
  if (!address.empty()) return address;
  const char* env = std::getenv(kCoordinatorEnv);
  return env ? env : "";
}

}  // namespace mpt
