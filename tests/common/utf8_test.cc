#include "common/utf8.h"

#include <string>

#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {
namespace {

TEST(Utf8Test, ValidAndInvalidSequences) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
}

// A serialized request in which `placeholder` (a string field's whole
// value) is replaced by the same number of bytes ending in 0xFF.
std::string Corrupt(const mpt::v1::SubmitJobRequest& request, const std::string& placeholder) {
  std::string wire;
  EXPECT_TRUE(request.SerializeToString(&wire));
  std::string bad = placeholder;
  bad.back() = '\xff';
  return absl::StrReplaceAll(wire, {{placeholder, bad}});
}

mpt::v1::SubmitJobRequest Request() {
  mpt::v1::SubmitJobRequest r;
  r.set_display_name("DISPLAYNAME");
  r.set_request_id("REQUESTID");
  r.mutable_spec()->set_base_model("/models/t5");
  r.mutable_spec()->mutable_source()->add_tasks()->set_train_path("/data/first.jsonl");
  r.mutable_spec()->mutable_source()->add_tasks()->set_train_path("/data/SECONDPATH");
  return r;
}

TEST(Utf8Test, NamesTheFieldOnTheWire) {
  const auto* type = mpt::v1::SubmitJobRequest::descriptor();
  std::string good;
  ASSERT_TRUE(Request().SerializeToString(&good));
  EXPECT_EQ(FindInvalidUtf8Field(*type, good), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8Field(*type, Corrupt(Request(), "DISPLAYNAME")), "display_name");
  EXPECT_EQ(FindInvalidUtf8Field(*type, Corrupt(Request(), "SECONDPATH")),
            "spec.source.tasks[1].train_path");
}

TEST(Utf8Test, ParseProtoStrict) {
  mpt::v1::SubmitJobRequest parsed;
  std::string good;
  ASSERT_TRUE(Request().SerializeToString(&good));
  ASSERT_TRUE(ParseProtoStrict(good, &parsed).ok());
  EXPECT_EQ(parsed.display_name(), "DISPLAYNAME");

  absl::Status s = ParseProtoStrict(Corrupt(Request(), "REQUESTID"), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "request_id: a string field is not valid UTF-8");

  s = ParseProtoStrict(std::string("\x0a\x05\x41", 3), &parsed);  // truncated field
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "the request is not a well-formed mpt.v1.SubmitJobRequest message");
}

}  // namespace
}  // namespace mpt
