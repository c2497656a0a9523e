// Untrusted JSON: no exception, no deep recursion, no silent conversion.
#include "common/json_util.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(ParseJson, ParsesAndNamesTheSource) {
  absl::StatusOr<json> j = ParseJson(R"({"a": [1, 2.5, "x"]})", "f.json");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["a"][0], 1);
  absl::StatusOr<json> bad = ParseJson("{\"a\": }", "f.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("f.json: not valid JSON"));
}

TEST(ParseJson, DeepNestingIsAnErrorNotACrash) {
  EXPECT_TRUE(ParseJson(Nested(kMaxJsonDepth), "f").ok());
  for (int depth : {kMaxJsonDepth + 1, 100000}) {
    absl::StatusOr<json> j = ParseJson(Nested(depth), "f");
    EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(j.status().message()), HasSubstr("nested deeper"));
  }
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseJson("\"" + std::string(1000, '[') + "\"", "f").ok());
}

TEST(ParseJson, HugeNumberIsAnError) {
  EXPECT_EQ(ParseJson(R"({"x": 1e999})", "f").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseJson, NulByteIsAnErrorNotAnEnd) {
  const std::string text("{\"a\": 1}\0garbage", 16);
  absl::StatusOr<json> j = ParseJson(text, "f");
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(j.status().message()), HasSubstr("NUL"));
}

TEST(GetInt, RangeIsCheckedWithoutWrapping) {
  json j = json::parse(R"({"n": 4294967300, "m": -1, "f": 1.5, "s": "3", "ok": 7})");
  EXPECT_EQ(GetInt(j, "n", "c.json", 0, 1 << 30).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(GetInt(j, "n", "c.json", 0, 1 << 30).status().message()),
              HasSubstr("c.json: field 'n' is out of range"));
  EXPECT_FALSE(GetInt(j, "m", "c", 0, 10).ok());
  EXPECT_FALSE(GetInt(j, "f", "c", 0, 10).ok());
  EXPECT_FALSE(GetInt(j, "s", "c", 0, 10).ok());
  EXPECT_EQ(*GetInt(j, "ok", "c", 0, 10), 7);
  EXPECT_EQ(*GetInt(j, "absent", "c", 0, 10, 3), 3);
  EXPECT_THAT(std::string(GetInt(j, "absent", "c", 0, 10).status().message()),
              HasSubstr("is missing"));
}

// nlohmann stores 0 and every positive literal as unsigned; the lower bound
// must hold for those too (found by tools/fuzz/adapter_config_fuzzer:
// "num_ranks": 0 was accepted against a minimum of 1).
TEST(GetInt, LowerBoundHoldsForNonNegativeLiterals) {
  json j = json::parse(R"({"zero": 0, "two": 2, "five": 5})");
  EXPECT_THAT(std::string(GetInt(j, "zero", "c.json", 1, 10).status().message()),
              HasSubstr("c.json: field 'zero' is out of range [1, 10]: 0"));
  EXPECT_FALSE(GetInt(j, "two", "c", 3, 10).ok());
  EXPECT_FALSE(GetInt(j, "zero", "c", 1, 10, /*fallback=*/4).ok());
  EXPECT_EQ(*GetInt(j, "five", "c", 5, 5), 5);
  EXPECT_EQ(*GetInt(j, "zero", "c", 0, 10), 0);
  EXPECT_EQ(*GetInt(j, "two", "c", -3, 10), 2);
}

TEST(GetDouble, RejectsNonFiniteAndOutOfRange) {
  json j = json::parse(R"({"x": 0.5, "big": 1e300})");
  EXPECT_EQ(*GetDouble(j, "x", "c", 0, 1), 0.5);
  EXPECT_FALSE(GetDouble(j, "big", "c", 0, 1e10).ok());
}

TEST(DescribeJson, IsBoundedForHugeValues) {
  json deep = json::array();
  json* cur = &deep;
  for (int i = 0; i < 10; ++i) {
    cur->push_back(json::array());
    cur = &(*cur)[0];
  }
  EXPECT_EQ(DescribeJson(deep), "an array");
  EXPECT_LE(DescribeJson(json(std::string(10000, 'x'))).size(), 50u);
}

}  // namespace
}  // namespace mpt
