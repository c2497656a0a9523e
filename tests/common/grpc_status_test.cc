// absl::Status <-> grpc::Status keeps codes and messages.
#include "common/grpc_status.h"

#include <string>

#include "common/quote.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(GrpcStatusTest, EveryCanonicalCodeRoundTrips) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  for (int code = 1; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), "field: message");
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "field: message");
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::UnauthenticatedError("x")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd")).code(),
            absl::StatusCode::kUnknown);
}

TEST(GrpcStatusTest, MessagesLeaveAsOneBoundedLine) {
  // Control characters become escapes; UTF-8 text stays.
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError(std::string("job jobs/x\n\r\t\0y not found", 25)))
                .error_message(),
            "job jobs/x\\n\\r\\t\\x00y not found");
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("tâche \xe6\xbc\xa2")).error_message(),
            "tâche \xe6\xbc\xa2");
  // A long message is cut at a character boundary and says how long it was.
  std::string long_text;
  for (int i = 0; i < 3000; ++i) long_text += "\xc3\xa9";  // "é", 2 bytes
  const std::string cut = ToGrpcStatus(absl::InvalidArgumentError(long_text)).error_message();
  EXPECT_LE(cut.size(), kMaxClientErrorBytes + 32);
  EXPECT_NE(cut.find("... (6000 bytes)"), std::string::npos) << cut.substr(cut.size() - 40);
  const std::string kept = cut.substr(0, cut.find("... ("));
  EXPECT_EQ(kept.size() % 2, 0u);  // whole characters only
  EXPECT_EQ(long_text.compare(0, kept.size(), kept), 0);
  EXPECT_EQ(ErrorMessageForClient(std::string(4096, 'a')), std::string(4096, 'a'));
}

}  // namespace
}  // namespace mpt
