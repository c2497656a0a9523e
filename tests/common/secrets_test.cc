#include "common/secrets.h"

#include <set>
#include <string>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(SecretsTest, ConstantTimeEqualsIsEquality) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_FALSE(ConstantTimeEquals("a", ""));
  // A prefix padded with the bytes a shorter string would be read as.
  EXPECT_FALSE(ConstantTimeEquals(std::string("ab\0", 3), "ab"));
}

TEST(SecretsTest, RandomHexSecretsAreHexAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<std::string> s = RandomHexSecret(32);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_EQ(s->size(), 64u);
    for (char c : *s) EXPECT_TRUE(absl::ascii_isxdigit(c) && !absl::ascii_isupper(c)) << *s;
    seen.insert(*s);
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(RandomHexSecret(1)->size(), 2u);
  EXPECT_FALSE(RandomHexSecret(0).ok());
  EXPECT_FALSE(RandomHexSecret(-1).ok());
}

}  // namespace
}  // namespace mpt
