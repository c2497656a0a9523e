#include "worker/model/grapheme_clusters.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

using ::testing::ElementsAre;

// The clusters of `text`, as strings.
std::vector<std::string> Clusters(const std::string& text) {
  std::vector<std::string> clusters;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = GraphemeClusterEnd(text, pos);
    EXPECT_GT(end, pos);
    clusters.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return clusters;
}

TEST(DecodeUtf8, ValidSequences) {
  char32_t c;
  EXPECT_EQ(DecodeUtf8("a", 0, &c), 1u);
  EXPECT_EQ(c, U'a');
  EXPECT_EQ(DecodeUtf8("\xC3\xA9", 0, &c), 2u);
  EXPECT_EQ(c, U'\u00E9');
  EXPECT_EQ(DecodeUtf8("x\xE2\x96\x81", 1, &c), 3u);
  EXPECT_EQ(c, U'\u2581');
  EXPECT_EQ(DecodeUtf8("\xF0\x9F\x99\x82", 0, &c), 4u);
  EXPECT_EQ(c, U'\U0001F642');
  EXPECT_EQ(DecodeUtf8(std::string("\0", 1), 0, &c), 1u);
  EXPECT_EQ(c, U'\0');
}

TEST(DecodeUtf8, InvalidSequencesTakeOneByte) {
  for (const char* bad : {"\x80", "\xC0\xAF", "\xC3", "\xE0\x80\xAF", "\xED\xA0\x80",
                          "\xF4\x90\x80\x80", "\xF8\x88\x80\x80\x80", "\xE2\x96", "\xFF"}) {
    char32_t c = 0;
    EXPECT_EQ(DecodeUtf8(bad, 0, &c), 1u) << bad;
    EXPECT_EQ(c, kInvalidCodePoint) << bad;
  }
}

TEST(IsUnicodeWhiteSpace, MatchesTheWhiteSpaceProperty) {
  for (char32_t c : {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', U'\u0085', U'\u00A0', U'\u1680',
                     U'\u2000', U'\u200A', U'\u2028', U'\u2029', U'\u202F', U'\u205F',
                     U'\u3000'}) {
    EXPECT_TRUE(IsUnicodeWhiteSpace(c)) << static_cast<uint32_t>(c);
  }
  for (char32_t c : {U'a', U'\0', U'\u001C', U'\u200B', U'\u2581', U'\uFEFF', U'\u180E'}) {
    EXPECT_FALSE(IsUnicodeWhiteSpace(c)) << static_cast<uint32_t>(c);
  }
}

// Expected clusters as Python's `regex` \X finds them (UAX #29).
TEST(GraphemeClusterEnd, FollowsUax29) {
  EXPECT_THAT(Clusters("ab"), ElementsAre("a", "b"));
  EXPECT_THAT(Clusters("a\r\nb"), ElementsAre("a", "\r\n", "b"));  // GB3
  EXPECT_THAT(Clusters("\n\r"), ElementsAre("\n", "\r"));          // GB4, GB5
  EXPECT_THAT(Clusters("a\x01\xCC\x81"), ElementsAre("a", "\x01", "\xCC\x81"));
  // e + two combining acutes (GB9).
  EXPECT_THAT(Clusters("e\xCC\x81\xCC\x81x"), ElementsAre("e\xCC\x81\xCC\x81", "x"));
  // Hangul jamo L V T and a syllable LV + T (GB6 to GB8).
  EXPECT_THAT(Clusters("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"),
              ElementsAre("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"));
  EXPECT_THAT(Clusters("\xEA\xB0\x80\xE1\x86\xA8"), ElementsAre("\xEA\xB0\x80\xE1\x86\xA8"));
  // U+AC01 is LVT: no V may follow.
  EXPECT_THAT(Clusters("\xEA\xB0\x81\xE1\x85\xA1"), ElementsAre("\xEA\xB0\x81", "\xE1\x85\xA1"));
  // Devanagari ka + virama + ssa is one cluster (GB9c), and ki (GB9a).
  EXPECT_THAT(Clusters("\xE0\xA4\x95\xE0\xA5\x8D\xE0\xA4\xB7"),
              ElementsAre("\xE0\xA4\x95\xE0\xA5\x8D\xE0\xA4\xB7"));
  EXPECT_THAT(Clusters("\xE0\xA4\x95\xE0\xA4\xBF"), ElementsAre("\xE0\xA4\x95\xE0\xA4\xBF"));
  // Family emoji joined by ZWJ (GB11); thumbs up with a skin tone.
  EXPECT_THAT(Clusters("\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7!"),
              ElementsAre("\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
                          "!"));
  EXPECT_THAT(Clusters("\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBB"),
              ElementsAre("\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBB"));
  // ZWJ after a letter does not join the next letter.
  EXPECT_THAT(Clusters("a\xE2\x80\x8D" "b"), ElementsAre("a\xE2\x80\x8D", "b"));
  // Three regional indicators: a flag, then a lone one (GB12, GB13).
  EXPECT_THAT(Clusters("\xF0\x9F\x87\xA9\xF0\x9F\x87\xAA\xF0\x9F\x87\xAB"),
              ElementsAre("\xF0\x9F\x87\xA9\xF0\x9F\x87\xAA", "\xF0\x9F\x87\xAB"));
  // Arabic number sign U+0600 is Prepend (GB9b).
  EXPECT_THAT(Clusters("\xD8\x80" "1"), ElementsAre("\xD8\x80" "1"));
  // Heart + variation selector 16.
  EXPECT_THAT(Clusters("\xE2\x9D\xA4\xEF\xB8\x8F"), ElementsAre("\xE2\x9D\xA4\xEF\xB8\x8F"));
  // An invalid byte is its own cluster and keeps a combining mark off.
  EXPECT_THAT(Clusters("a\xFF\xCC\x81"), ElementsAre("a", "\xFF", "\xCC\x81"));
}

}  // namespace
}  // namespace mpt
