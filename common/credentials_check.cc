#include "common/credentials_check.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"

namespace mpt {

absl::Status CheckBearerToken(absl::string_view token, absl::string_view where) {
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": the token is empty"));
  if (token.size() > kMaxBearerTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the token has ", token.size(),
                                                   " bytes; at most ", kMaxBearerTokenBytes));
  }
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c < 0x21 || c > 0x7E) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the token holds byte 0x%02X at position %d; a token is printable ASCII without "
          "spaces or control characters (0x21 to 0x7E)",
          where, c, i));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPem(absl::string_view text, absl::string_view flag, absl::string_view path,
                      PemKind kind) {
  const char* what = kind == PemKind::kCertificate ? "PEM certificate" : "PEM private key";
  size_t at = 0;
  while ((at = text.find("-----BEGIN ", at)) != absl::string_view::npos) {
    const size_t label_start = at + 11;
    const size_t label_end = text.find("-----", label_start);
    if (label_end == absl::string_view::npos) break;
    const absl::string_view label = text.substr(label_start, label_end - label_start);
    const bool wanted = kind == PemKind::kCertificate
                            ? label == "CERTIFICATE"
                            : label.size() >= 11 && label.substr(label.size() - 11) == "PRIVATE KEY";
    if (wanted) {
      if (text.find(absl::StrCat("-----END ", label, "-----"), label_end) ==
          absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, ": ", path, ": the \"BEGIN ", label, "\" block has no END line (truncated?)"));
      }
      return absl::OkStatus();
    }
    at = label_end;
  }
  return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " holds no ", what,
                                                 kind == PemKind::kCertificate
                                                     ? " (\"-----BEGIN CERTIFICATE-----\")"
                                                     : " (\"-----BEGIN ... PRIVATE KEY-----\")"));
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view flag,
                                        PemKind kind) {
  absl::StatusOr<std::string> pem = ReadFile(path);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(), absl::StrCat(flag, ": ", pem.status().message()));
  }
  if (absl::Status s = CheckPem(*pem, flag, path, kind); !s.ok()) return s;
  return pem;
}

}  // namespace mpt
