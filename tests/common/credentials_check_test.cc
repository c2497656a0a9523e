// Bearer tokens and PEM files are checked before gRPC sees them: every byte
// value, the length bound, and where the token came from.
#include "common/credentials_check.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "common/client_channel.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

TEST(CredentialsCheckTest, TokensArePrintableAsciiWithoutSpacesEveryByteChecked) {
  EXPECT_TRUE(CheckBearerToken("s3cret-TOKEN_~!.+/=", "--token").ok());
  for (int c = 0; c < 256; ++c) {
    const std::string token = std::string("ab") + static_cast<char>(c) + "cd";
    const absl::Status s = CheckBearerToken(token, "--token");
    EXPECT_EQ(s.ok(), c >= 0x21 && c <= 0x7E) << c << ": " << s;
    if (!s.ok()) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(s.message().rfind("--token: ", 0), 0u) << s;
      EXPECT_NE(s.message().find("position 2"), std::string::npos) << s;
      EXPECT_EQ(s.message().find("abcd"), std::string::npos) << s;  // never repeated
    }
  }
  EXPECT_FALSE(CheckBearerToken("", "x").ok());
  EXPECT_TRUE(CheckBearerToken(std::string(kMaxBearerTokenBytes, 'a'), "x").ok());
  EXPECT_FALSE(CheckBearerToken(std::string(kMaxBearerTokenBytes + 1, 'a'), "x").ok());
}

TEST(CredentialsCheckTest, ResolveTokenNamesTheFileFlagOrVariable) {
  const std::string dir = testing::FreshTempDir("credentials_check");
  std::ofstream(dir + "/good") << "  tok3n\n";
  std::ofstream(dir + "/utf8") << "caf\xC3\xA9\n";
  std::ofstream(dir + "/blank") << " \n\t\n";
  ::unsetenv(kTokenEnv);
  EXPECT_EQ(*ResolveToken("", dir + "/good"), "tok3n");
  absl::StatusOr<std::string> t = ResolveToken("", dir + "/utf8");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message().rfind("--token_file " + dir + "/utf8: ", 0), 0u) << t.status();
  EXPECT_FALSE(ResolveToken("", dir + "/blank").ok());
  EXPECT_EQ(ResolveToken("a\tb", "").status().message().rfind("--token: ", 0), 0u);
  ::setenv(kTokenEnv, "x\x1b", 1);
  t = ResolveToken("", "");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message().rfind(std::string(kTokenEnv) + ": ", 0), 0u) << t.status();
  ::setenv(kTokenEnv, "", 1);
  EXPECT_EQ(*ResolveToken("", ""), "");  // no token
  ::unsetenv(kTokenEnv);

  // A channel is never made with a token gRPC would abort on.
  ClientChannelOptions options;
  options.address = "127.0.0.1:1";
  options.token = "bad\ntoken";
  EXPECT_EQ(MakeClientChannel(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CredentialsCheckTest, PemFilesMustHoldABlockOfTheirKind) {
  const std::string cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  EXPECT_TRUE(CheckPem(cert, "--tls_ca", "ca.pem", PemKind::kCertificate).ok());
  EXPECT_TRUE(CheckPem("junk\n" + cert + cert, "--tls_ca", "ca.pem", PemKind::kCertificate).ok());
  for (const char* key : {"-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n",
                          "-----BEGIN RSA PRIVATE KEY-----\nMII\n-----END RSA PRIVATE KEY-----\n",
                          "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"}) {
    EXPECT_TRUE(CheckPem(key, "--tls_key", "k.pem", PemKind::kPrivateKey).ok()) << key;
    EXPECT_FALSE(CheckPem(key, "--tls_cert", "k.pem", PemKind::kCertificate).ok()) << key;
  }
  EXPECT_FALSE(CheckPem(cert, "--tls_key", "c.pem", PemKind::kPrivateKey).ok());
  for (const std::string& bad :
       {std::string(""), std::string("root:x:0:0\n"), cert.substr(0, cert.size() / 2),
        std::string("-----BEGIN CERTIFICATE"), std::string("\0\xff", 2)}) {
    absl::Status s = CheckPem(bad, "--tls_cert", "/etc/x.pem", PemKind::kCertificate);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message().rfind("--tls_cert: /etc/x.pem", 0), 0u) << s;
  }
}

}  // namespace
}  // namespace mpt
