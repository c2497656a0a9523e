// Checks of the secrets and certificates a program is given, before they
// reach gRPC: gRPC aborts the process on a header value it cannot send, and
// reports a certificate it cannot load only as a port it cannot open or a
// connection it cannot make.
//
//   RETURN_IF_ERROR(CheckBearerToken(token, "--token_file /etc/mpt/token"));
//   ASSIGN_OR_RETURN(std::string cert,
//                    ReadPemFile(path, "--tls_cert", PemKind::kCertificate));
#ifndef MPT_COMMON_CREDENTIALS_CHECK_H_
#define MPT_COMMON_CREDENTIALS_CHECK_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The longest bearer token accepted (gRPC's default limit on a call's
// headers is 8 KiB, and the token travels in one of them).
inline constexpr size_t kMaxBearerTokenBytes = 4096;

// OK when `token` can travel as "authorization: Bearer <token>": 1 to
// kMaxBearerTokenBytes bytes, each printable ASCII other than the space
// (0x21 to 0x7E). Otherwise INVALID_ARGUMENT naming `where` (the flag, file
// or variable it came from), the first bad byte and its position; the token
// itself is never repeated.
absl::Status CheckBearerToken(absl::string_view token, absl::string_view where);

enum class PemKind { kCertificate, kPrivateKey };

// OK when `text` holds at least one PEM block of `kind` ("-----BEGIN
// CERTIFICATE-----", or any "-----BEGIN ... PRIVATE KEY-----"), complete
// with its END line. Otherwise INVALID_ARGUMENT naming `flag` and `path`.
// Whether the block decodes is left to the TLS library.
absl::Status CheckPem(absl::string_view text, absl::string_view flag, absl::string_view path,
                      PemKind kind);

// The contents of PEM file `path`, checked with CheckPem: the file's
// errors (NOT_FOUND, ...) and CheckPem's are led by `flag`.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view flag,
                                        PemKind kind);

}  // namespace mpt

#endif  // MPT_COMMON_CREDENTIALS_CHECK_H_
