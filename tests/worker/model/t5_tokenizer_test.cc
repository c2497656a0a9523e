#include "worker/model/t5_tokenizer.h"

#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string TestDataDir() { return ::mpt::testing::DataPath("tests/testdata"); }

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

using ::mpt::testing::ReadFile;
using ::mpt::testing::WriteFile;

// tests/testdata/tokenizer_golden.json: Hugging Face's AutoTokenizer ids
// (EOS included) for texts chosen to hit every rule.
struct Golden {
  std::string spiece_model;
  nlohmann::json cases;
};

const Golden& LoadGolden() {
  static const Golden* golden = [] {
    auto* g = new Golden;
    const std::string path = TestDataDir() + "/tokenizer_golden.json";
    nlohmann::json doc = nlohmann::json::parse(ReadFile(path));
    g->spiece_model = TestDataDir() + "/" + doc.at("spiece_model").get<std::string>();
    g->cases = doc.at("cases");
    return g;
  }();
  return *golden;
}

const T5Tokenizer& GoldenTokenizer() {
  static const T5Tokenizer* tokenizer = [] {
    auto loaded = T5Tokenizer::Load(LoadGolden().spiece_model);
    if (!loaded.ok()) {
      std::cerr << loaded.status() << "\n";
      std::abort();
    }
    return loaded->release();
  }();
  return *tokenizer;
}

std::string Quoted(const std::string& text) { return nlohmann::json(text).dump(); }

TEST(T5TokenizerGolden, MatchesHuggingFaceOnEveryCase) {
  const Golden& golden = LoadGolden();
  const T5Tokenizer& tokenizer = GoldenTokenizer();
  ASSERT_FALSE(golden.cases.empty());
  int matches = 0;
  int differ_from_plain_spm = 0;
  int slow_matches = 0;
  int slow_cases = 0;
  for (const nlohmann::json& c : golden.cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int> want = c.at("ids").get<std::vector<int>>();
    const std::vector<int> got = tokenizer.Encode(text);
    if (got == want) {
      ++matches;
    } else {
      ADD_FAILURE() << "text " << Quoted(text) << "\n  Hugging Face " << nlohmann::json(want)
                    << "\n  ours         " << nlohmann::json(got);
    }
    if (c.contains("ids_spm")) ++differ_from_plain_spm;
    if (c.contains("ids_slow")) {
      ++slow_cases;
      if (c["ids_slow"].get<std::vector<int>>() == got) ++slow_matches;
    }
  }
  std::cout << "tokenizer golden: " << matches << " of " << golden.cases.size()
            << " cases match Hugging Face (" << differ_from_plain_spm
            << " of them differ from plain SentencePiece)";
  if (slow_cases > 0) std::cout << "; ids_slow: " << slow_matches << " of " << slow_cases;
  std::cout << "\n";
  RecordProperty("golden_cases", static_cast<int>(golden.cases.size()));
  RecordProperty("golden_matches", matches);
  EXPECT_EQ(matches, static_cast<int>(golden.cases.size()));
}

TEST(T5TokenizerGolden, RoundTripsThroughDecode) {
  const T5Tokenizer& tokenizer = GoldenTokenizer();
  // Checked against tokenizer.decode(...) of transformers 5.
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("Hello <extra_id_0> world"), false),
            "Hello<extra_id_0> world</s>");
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("Hello <extra_id_0> world")), "Hello world");
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("  leading and   trailing  ")),
            "leading and trailing");
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("x</s>y"), false), "x</s> y</s>");
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("<pad>a"), false), "<pad> a</s>");
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("Zürich café ☃"), false),
            "Zürich café <unk></s>");
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("Zürich café ☃")), "Zürich café ");
  // The first token written loses its "▁"s, the others turn them into spaces.
  const std::vector<int> spaces = tokenizer.Encode("\xE2\x96\x81", false);
  ASSERT_EQ(spaces.size(), 1u);
  EXPECT_EQ(tokenizer.IdToPiece(spaces[0]), "\xE2\x96\x81");
  EXPECT_EQ(tokenizer.Decode({spaces[0], spaces[0], spaces[0]}), "  ");
  // Out-of-range ids are ignored.
  std::vector<int> hello = tokenizer.Encode("hello", false);
  hello.insert(hello.begin(), tokenizer.vocab_size());
  hello.push_back(-1);
  hello.push_back(1 << 30);
  EXPECT_EQ(tokenizer.Decode(hello), "hello");
  EXPECT_EQ(tokenizer.Decode({}), "");
}

TEST(T5Tokenizer, SpecialTokensAndSentinelIds) {
  const T5Tokenizer& tokenizer = GoldenTokenizer();
  const int n = tokenizer.spm_vocab_size();
  EXPECT_EQ(tokenizer.vocab_size(), n + 100);
  EXPECT_EQ(tokenizer.pad_id(), 0);
  EXPECT_EQ(tokenizer.eos_id(), 1);
  EXPECT_EQ(tokenizer.unk_id(), 2);
  EXPECT_EQ(tokenizer.ExtraId(0), n + 99);
  EXPECT_EQ(tokenizer.ExtraId(99), n);
  EXPECT_EQ(tokenizer.ExtraId(100), -1);
  EXPECT_EQ(tokenizer.ExtraId(-1), -1);
  EXPECT_EQ(tokenizer.IdToPiece(0), "<pad>");
  EXPECT_EQ(tokenizer.IdToPiece(1), "</s>");
  EXPECT_EQ(tokenizer.IdToPiece(2), "<unk>");
  EXPECT_EQ(tokenizer.IdToPiece(n + 99), "<extra_id_0>");
  EXPECT_EQ(tokenizer.IdToPiece(n), "<extra_id_99>");
  EXPECT_EQ(tokenizer.IdToPiece(n + 100), "");
  EXPECT_EQ(tokenizer.IdToPiece(-1), "");
  EXPECT_TRUE(tokenizer.IsSpecial(0));
  EXPECT_TRUE(tokenizer.IsSpecial(2));
  EXPECT_TRUE(tokenizer.IsSpecial(n));
  EXPECT_FALSE(tokenizer.IsSpecial(3));
  EXPECT_FALSE(tokenizer.IsSpecial(n - 1));
  EXPECT_FALSE(tokenizer.IsSpecial(n + 100));

  EXPECT_THAT(tokenizer.Encode("<extra_id_0>"), ElementsAre(n + 99, 1));
  EXPECT_THAT(tokenizer.Encode("<extra_id_7><extra_id_10>", false), ElementsAre(n + 92, n + 89));
  EXPECT_THAT(tokenizer.Encode("</s><pad><unk>", false), ElementsAre(1, 0, 2));
  EXPECT_THAT(tokenizer.Encode("", true), ElementsAre(1));
  EXPECT_TRUE(tokenizer.Encode(" \t\n", false).empty());
  // White space around a special token does not matter.
  EXPECT_EQ(tokenizer.Encode("a <extra_id_0> b"), tokenizer.Encode("a<extra_id_0>b"));
  // Not special: out of range, leading zero, spaces, case.
  for (const char* text : {"<extra_id_100>", "<extra_id_01>", "<extra_id_0 >", "<EXTRA_ID_0>",
                           "<extra_id_>", "<extra_id_5"}) {
    for (int id : tokenizer.Encode(text)) {
      EXPECT_TRUE(id < n || id >= n + 100) << text;
    }
  }
}

TEST(T5Tokenizer, LoadsFromTheFolderOrTheFile) {
  const std::string model = LoadGolden().spiece_model;
  const std::string folder = model.substr(0, model.rfind('/'));
  auto from_folder = T5Tokenizer::Load(folder);
  ASSERT_TRUE(from_folder.ok()) << from_folder.status();
  auto from_folder_slash = T5Tokenizer::Load(folder + "/");
  ASSERT_TRUE(from_folder_slash.ok()) << from_folder_slash.status();
  EXPECT_EQ((*from_folder)->model_path(), model);
  EXPECT_EQ((*from_folder)->Encode("Hello world"), GoldenTokenizer().Encode("Hello world"));
}

TEST(T5Tokenizer, IsSafeToShareBetweenThreads) {
  const Golden& golden = LoadGolden();
  const T5Tokenizer& tokenizer = GoldenTokenizer();
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (const nlohmann::json& c : golden.cases) {
          if (tokenizer.Encode(c.at("text").get<std::string>()) !=
              c.at("ids").get<std::vector<int>>()) {
            ++failures[t];
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(failures, ElementsAre(0, 0, 0, 0));
}

// A SentencePiece ModelProto written by hand: pieces (text, score) and no
// normalisation rules.
std::string Varint(uint64_t v) {
  std::string s;
  while (v >= 0x80) {
    s += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  s += static_cast<char>(v);
  return s;
}

std::string LengthDelimited(int field, const std::string& bytes) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) + Varint(bytes.size()) + bytes;
}

std::string ModelProto(const std::vector<std::pair<std::string, float>>& pieces) {
  std::string proto;
  for (const auto& [text, score] : pieces) {
    std::string piece = LengthDelimited(1, text);
    uint32_t bits;
    std::memcpy(&bits, &score, sizeof(bits));
    piece += Varint(2 << 3 | 5);
    for (int i = 0; i < 4; ++i) piece += static_cast<char>(bits >> (8 * i));
    proto += LengthDelimited(1, piece);
  }
  return proto;
}

std::string WriteModel(const std::string& name, const std::string& bytes) {
  const std::string path = absl::StrCat(TempDir(), "/", name);
  WriteFile(path, bytes);
  return path;
}

TEST(T5Tokenizer, SegmentsWithTheUnigramScores) {
  const std::string path = WriteModel(
      "handmade.model", ModelProto({{"<pad>", 0}, {"</s>", 0}, {"<unk>", 0}, {"\xE2\x96\x81", -1},
                                    {"a", -2}, {"b", -2}, {"\xE2\x96\x81" "ab", -3},
                                    {"ba", -5}, {"c", -20}}));
  auto loaded = T5Tokenizer::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const T5Tokenizer& tokenizer = **loaded;
  EXPECT_EQ(tokenizer.spm_vocab_size(), 9);
  EXPECT_EQ(tokenizer.vocab_size(), 109);
  // "▁ab" (-3) beats "▁" "a" "b" (-5); then "ba" (-5) loses to "b" "a" (-4).
  EXPECT_THAT(tokenizer.Encode("abba", false), ElementsAre(6, 5, 4));
  EXPECT_THAT(tokenizer.Encode("ab  ab"), ElementsAre(6, 6, 1));
  // Unknown characters: one <unk> for a run of them.
  EXPECT_THAT(tokenizer.Encode("a\xE2\x98\x83\xE2\x98\x83x", false), ElementsAre(3, 4, 2));
  // Invalid UTF-8 is unknown too.
  EXPECT_THAT(tokenizer.Encode("a\xFF", false), ElementsAre(3, 4, 2));
  // A word that starts with "▁" gets no second one; a "▁" inside starts a part.
  EXPECT_THAT(tokenizer.Encode("\xE2\x96\x81" "ab", false), ElementsAre(6));
  EXPECT_THAT(tokenizer.Encode("b\xE2\x96\x81" "ab", false), ElementsAre(3, 5, 6));
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("ab ab c")), "ab ab c");
}

TEST(T5TokenizerLoad, MissingPathIsNotFound) {
  const std::string path = TempDir() + "/no_such_model";
  auto loaded = T5Tokenizer::Load(path);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), StartsWith(path + ": "));
}

TEST(T5TokenizerLoad, FolderWithoutSpieceModelIsNotFound) {
  const std::string folder = TempDir() + "/model_without_tokenizer";
  ::mkdir(folder.c_str(), 0755);
  WriteFile(folder + "/config.json", "{}");
  auto loaded = T5Tokenizer::Load(folder);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()),
              StartsWith(folder + "/spiece.model: no such file"));
}

TEST(T5TokenizerLoad, FilesThatAreNotModelsAreInvalid) {
  struct Case {
    std::string name;
    std::string bytes;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"empty.model", "", "empty"},
      {"text.model", "this is not a model\n", "not a usable SentencePiece model"},
      {"truncated.model", ModelProto({{"<pad>", 0}, {"</s>", 0}, {"<unk>", 0}}).substr(0, 20),
       "malformed"},
      {"wrong_pieces.model", ModelProto({{"<s>", 0}, {"</s>", 0}, {"<unk>", 0}, {"a", -1}}),
       "starts with the pieces <pad>, </s>, <unk>"},
      {"too_few.model", ModelProto({{"<pad>", 0}}), "has 1 pieces"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteModel(c.name, c.bytes);
    auto loaded = T5Tokenizer::Load(path);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(loaded.status().message()), StartsWith(path + ": ")) << c.name;
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(c.expected)) << c.name;
  }
  const std::string folder = TempDir() + "/folder_named_like_a_model";
  ::mkdir(folder.c_str(), 0755);
  ::mkdir((folder + "/spiece.model").c_str(), 0755);
  auto loaded = T5Tokenizer::Load(folder);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("not a regular file"));
}

}  // namespace
}  // namespace mpt
