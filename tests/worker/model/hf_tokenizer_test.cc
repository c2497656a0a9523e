#include "worker/model/hf_tokenizer.h"

#include <sys/stat.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::ReadFile;
using ::mpt::testing::WriteFile;
using ::testing::HasSubstr;

std::string TokenizersDir() { return ::mpt::testing::DataPath("tests/testdata/tokenizers"); }

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string Quoted(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

// The families of tests/testdata/make_bpe_tokenizers.py.
const char* const kFamilies[] = {"llama3",      "qwen2",     "gpt2",  "llama2",
                                 "sp_bpe_fast", "metaspace", "custom", "gemma"};

struct Family {
  std::unique_ptr<HfTokenizer> tokenizer;
  nlohmann::json golden;
};

const Family& LoadFamily(const std::string& name) {
  static auto* families = new std::map<std::string, Family>();
  auto it = families->find(name);
  if (it != families->end()) return it->second;
  Family family;
  const std::string folder = TokenizersDir() + "/" + name;
  auto loaded = HfTokenizer::Load(folder);
  if (!loaded.ok()) {
    std::cerr << loaded.status() << "\n";
    std::abort();
  }
  family.tokenizer = *std::move(loaded);
  family.golden = nlohmann::json::parse(ReadFile(folder + "/golden.json"));
  return families->emplace(name, std::move(family)).first->second;
}

std::string CaseText(const nlohmann::json& c) {
  if (c.contains("bytes_hex")) return absl::HexStringToBytes(c["bytes_hex"].get<std::string>());
  return c.at("text").get<std::string>();
}

class GoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenTest, EncodeMatchesTransformers) {
  const Family& family = LoadFamily(GetParam());
  const HfTokenizer& tok = *family.tokenizer;
  int matches = 0, total = 0;
  for (const nlohmann::json& c : family.golden.at("cases")) {
    const std::string text = CaseText(c);
    for (bool special : {true, false}) {
      ++total;
      const std::vector<int64_t> want = c.at(special ? "ids" : "ids_plain").get<std::vector<int64_t>>();
      const std::vector<int64_t> got = tok.Encode(text, special);
      if (got == want) {
        ++matches;
      } else {
        ADD_FAILURE() << GetParam() << " text " << Quoted(text) << " add_special_tokens=" << special
                      << "\n  transformers " << nlohmann::json(want) << "\n  ours         "
                      << nlohmann::json(got);
      }
    }
  }
  std::cout << GetParam() << ": " << matches << " of " << total << " encodings match transformers ("
            << family.golden.at("cases").size() << " strings)\n";
  EXPECT_GE(total, 800);
  EXPECT_EQ(matches, total);
}

// Long runs of one kind of character (regex backtracking, BPE on long
// words); the golden file keeps a checksum of transformers' ids.
TEST_P(GoldenTest, LongInputsMatchTransformers) {
  const Family& family = LoadFamily(GetParam());
  const HfTokenizer& tok = *family.tokenizer;
  int checked = 0;
  for (const nlohmann::json& c : family.golden.at("long_cases")) {
    std::string text;
    for (int i = 0; i < c.at("times").get<int>(); ++i) text += c.at("piece").get<std::string>();
    text += c.at("suffix").get<std::string>();
    const std::vector<int64_t> ids = tok.Encode(text);
    int64_t checksum = 0;
    for (size_t k = 0; k < ids.size(); ++k) {
      checksum = (checksum + (ids[k] + 1) * static_cast<int64_t>(k % 1000 + 1)) % 1000000007;
    }
    const std::string label = absl::StrCat(GetParam(), " ", Quoted(c.at("piece").get<std::string>()),
                                           " x ", c.at("times").get<int>());
    EXPECT_EQ(ids.size(), c.at("count").get<size_t>()) << label;
    EXPECT_EQ(checksum, c.at("checksum").get<int64_t>()) << label;
    const auto head = c.at("head").get<std::vector<int64_t>>();
    const auto tail = c.at("tail").get<std::vector<int64_t>>();
    if (ids.size() >= head.size()) {
      EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.begin() + head.size()), head) << label;
      EXPECT_EQ(std::vector<int64_t>(ids.end() - tail.size(), ids.end()), tail) << label;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 10);
}

TEST_P(GoldenTest, DecodeMatchesTransformers) {
  const Family& family = LoadFamily(GetParam());
  const HfTokenizer& tok = *family.tokenizer;
  int checked = 0;
  for (const nlohmann::json& c : family.golden.at("cases")) {
    const std::vector<int64_t> ids = c.at("ids").get<std::vector<int64_t>>();
    EXPECT_EQ(tok.Decode(ids, false), c.at("decoded").get<std::string>())
        << GetParam() << " ids " << nlohmann::json(ids);
    EXPECT_EQ(tok.Decode(ids, true), c.at("decoded_skip").get<std::string>())
        << GetParam() << " ids " << nlohmann::json(ids);
    checked += 2;
  }
  // Random id lists: partial UTF-8, byte tokens, special tokens anywhere.
  for (const nlohmann::json& d : family.golden.at("decodes")) {
    const std::vector<int64_t> ids = d.at("ids").get<std::vector<int64_t>>();
    EXPECT_EQ(tok.Decode(ids, false), d.at("decoded").get<std::string>())
        << GetParam() << " ids " << nlohmann::json(ids);
    EXPECT_EQ(tok.Decode(ids, true), d.at("decoded_skip").get<std::string>())
        << GetParam() << " ids " << nlohmann::json(ids);
    checked += 2;
  }
  EXPECT_GE(checked, 900);
}

TEST_P(GoldenTest, SpecialIdsAndSizeMatchTransformers) {
  const Family& family = LoadFamily(GetParam());
  const HfTokenizer& tok = *family.tokenizer;
  const nlohmann::json& g = family.golden;
  auto id_or_none = [&](const char* key) -> int64_t {
    return g.at(key).is_null() ? -1 : g.at(key).get<int64_t>();
  };
  EXPECT_EQ(tok.vocab_size(), g.at("len").get<int64_t>());
  EXPECT_EQ(tok.bos_id(), id_or_none("bos_id"));
  EXPECT_EQ(tok.eos_id(), id_or_none("eos_id"));
  EXPECT_EQ(tok.pad_id(), id_or_none("pad_id"));
  EXPECT_EQ(tok.unk_id(), id_or_none("unk_id"));
  // Every token round-trips through IdOf / IdToToken.
  for (int64_t id = 0; id < tok.vocab_size(); ++id) {
    const std::string token = tok.IdToToken(id);
    ASSERT_FALSE(token.empty()) << id;
    EXPECT_EQ(tok.IdOf(token), id) << Quoted(token);
  }
  EXPECT_EQ(tok.IdToToken(-1), "");
  EXPECT_EQ(tok.IdToToken(tok.vocab_size()), "");
  EXPECT_EQ(tok.IdOf("no such token at all"), -1);
  // Out-of-range ids are ignored by Decode.
  std::vector<int64_t> ids = tok.Encode("hello", false);
  const std::string hello = tok.Decode(ids, true);
  ids.insert(ids.begin(), tok.vocab_size());
  ids.push_back(-1);
  ids.push_back(int64_t{1} << 40);
  EXPECT_EQ(tok.Decode(ids, true), hello);
  EXPECT_EQ(tok.Decode({}, false), "");
}

INSTANTIATE_TEST_SUITE_P(Families, GoldenTest, ::testing::ValuesIn(kFamilies),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

// variants.json: folders that reuse a family's tokenizer.json with other
// tokenizer_config.json / config.json files; how transformers picks the class
// and reads Llama's and GPT-2's flags.
TEST(HfTokenizer, VariantsMatchTransformers) {
  const nlohmann::json doc = nlohmann::json::parse(ReadFile(TokenizersDir() + "/variants.json"));
  int variants = 0;
  for (const nlohmann::json& v : doc.at("variants")) {
    const std::string name = v.at("name").get<std::string>();
    const std::string folder = TempDir() + "/variant_" + name;
    mkdir(folder.c_str(), 0755);
    WriteFile(folder + "/tokenizer.json",
              ReadFile(TokenizersDir() + "/" + v.at("base").get<std::string>() + "/tokenizer.json"));
    if (!v.at("tokenizer_config").is_null()) {
      WriteFile(folder + "/tokenizer_config.json", v.at("tokenizer_config").dump());
    }
    if (v.contains("config") && !v.at("config").is_null()) {
      WriteFile(folder + "/config.json", v.at("config").dump());
    }
    auto loaded = HfTokenizer::Load(folder);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const HfTokenizer& tok = **loaded;
    auto id_or_none = [&](const char* key) -> int64_t {
      return v.at(key).is_null() ? -1 : v.at(key).get<int64_t>();
    };
    EXPECT_EQ(tok.vocab_size(), v.at("len").get<int64_t>()) << name;
    EXPECT_EQ(tok.bos_id(), id_or_none("bos_id")) << name;
    EXPECT_EQ(tok.eos_id(), id_or_none("eos_id")) << name;
    EXPECT_EQ(tok.pad_id(), id_or_none("pad_id")) << name;
    EXPECT_EQ(tok.unk_id(), id_or_none("unk_id")) << name;
    int matches = 0;
    for (const nlohmann::json& c : v.at("cases")) {
      const std::string text = c.at("text").get<std::string>();
      const std::vector<int64_t> ids = c.at("ids").get<std::vector<int64_t>>();
      const bool same = tok.Encode(text) == ids &&
                        tok.Encode(text, false) == c.at("ids_plain").get<std::vector<int64_t>>() &&
                        tok.Decode(ids, false) == c.at("decoded").get<std::string>() &&
                        tok.Decode(ids, true) == c.at("decoded_skip").get<std::string>();
      if (same) {
        ++matches;
      } else {
        ADD_FAILURE() << name << " text " << Quoted(text) << "\n  transformers "
                      << nlohmann::json(ids) << "\n  ours         "
                      << nlohmann::json(tok.Encode(text)) << " decoded "
                      << Quoted(tok.Decode(ids, false));
      }
    }
    std::cout << "variant " << name << " (" << v.at("tokenizer_class").get<std::string>()
              << "): " << matches << " of " << v.at("cases").size() << " strings match\n";
    EXPECT_EQ(matches, static_cast<int>(v.at("cases").size()));
    ++variants;
  }
  EXPECT_EQ(variants, 10);
}

TEST(HfTokenizer, FamilyRules) {
  const HfTokenizer& llama3 = *LoadFamily("llama3").tokenizer;
  EXPECT_TRUE(llama3.adds_bos());
  EXPECT_FALSE(llama3.adds_eos());
  EXPECT_EQ(llama3.Encode("")[0], llama3.IdOf("<|begin_of_text|>"));
  EXPECT_TRUE(llama3.IsSpecial(llama3.IdOf("<|eot_id|>")));
  // ignore_merges: a whole pre-token in the vocabulary is one token.
  EXPECT_EQ(llama3.Encode(" supercalifragilistic", false),
            std::vector<int64_t>{llama3.IdOf("\xC4\xA0supercalifragilistic")});

  const HfTokenizer& qwen2 = *LoadFamily("qwen2").tokenizer;
  EXPECT_FALSE(qwen2.adds_bos());
  EXPECT_EQ(qwen2.bos_id(), -1);
  EXPECT_EQ(qwen2.Encode("e\xCC\x81"), qwen2.Encode("\xC3\xA9"));  // NFC
  EXPECT_FALSE(qwen2.IsSpecial(qwen2.IdOf("<tool_call>")));
  EXPECT_TRUE(qwen2.IsSpecial(qwen2.IdOf("<|im_start|>")));

  // transformers 5 ignores add_eos_token when tokenizer.json exists.
  const HfTokenizer& sp = *LoadFamily("sp_bpe_fast").tokenizer;
  EXPECT_TRUE(sp.adds_bos());
  EXPECT_FALSE(sp.adds_eos());
  EXPECT_EQ(sp.Encode("a<s>b", false).size(), 3u);
}

TEST(HfTokenizer, InvalidUtf8IsReplacedLikePython) {
  const HfTokenizer& tok = *LoadFamily("gpt2").tokenizer;
  EXPECT_EQ(tok.Encode("a\xFF" "b"), tok.Encode("a\xEF\xBF\xBD" "b"));
  // "\xE2\x82\x80" is U+2080, then one U+FFFD for the lone "\x80"; one
  // U+FFFD for the maximal prefix "\xE2\x82" before "A".
  EXPECT_EQ(tok.Encode("\xE2\x82\x80\x80x"), tok.Encode("\xE2\x82\x80\xEF\xBF\xBDx"));
  EXPECT_EQ(tok.Encode("\xE2\x82" "A"), tok.Encode("\xEF\xBF\xBD" "A"));
  EXPECT_EQ(tok.Encode("\xE2\x82x"), tok.Encode("\xEF\xBF\xBDx"));
}

TEST(HfTokenizer, ThreadSafeEncodeAndDecode) {
  const HfTokenizer& tok = *LoadFamily("llama3").tokenizer;
  const std::string text = "Hello, world! <|eot_id|> 12345 東京 \xF0\x9F\x98\x80";
  const std::vector<int64_t> want = tok.Encode(text);
  const std::string decoded = tok.Decode(want, false);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        ok[t] += tok.Encode(text) == want && tok.Decode(want, false) == decoded;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(ok[t], 200);
}

// ---------------------------------------------------------------------------
// Errors.

class ErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = nlohmann::json::parse(ReadFile(TokenizersDir() + "/llama3/tokenizer.json"));
    config_ = ReadFile(TokenizersDir() + "/llama3/tokenizer_config.json");
  }
  absl::Status LoadWith(const nlohmann::json& doc, const std::string& config = "") {
    return HfTokenizer::LoadFromJson(doc.dump(), config.empty() ? config_ : config, "", "m").status();
  }
  nlohmann::json base_;
  std::string config_;
};

TEST_F(ErrorTest, MissingFolderAndFiles) {
  auto missing = HfTokenizer::Load(TempDir() + "/no_such_folder");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("no_such_folder"));

  const std::string empty = TempDir() + "/empty_model";
  mkdir(empty.c_str(), 0755);
  auto no_json = HfTokenizer::Load(empty);
  EXPECT_EQ(no_json.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_json.status().message(), HasSubstr("empty_model/tokenizer.json: no such file"));

  const std::string spm_only = TempDir() + "/spm_only";
  mkdir(spm_only.c_str(), 0755);
  WriteFile(spm_only + "/tokenizer.model", "x");
  auto spm = HfTokenizer::Load(spm_only);
  EXPECT_EQ(spm.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(spm.status().message(), HasSubstr("tokenizer.model"));
}

TEST_F(ErrorTest, BadJson) {
  const std::string folder = TempDir() + "/bad_json";
  mkdir(folder.c_str(), 0755);
  WriteFile(folder + "/tokenizer.json", "{\"model\": [");
  auto bad = HfTokenizer::Load(folder);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("bad_json/tokenizer.json"));

  WriteFile(folder + "/tokenizer.json", ReadFile(TokenizersDir() + "/gpt2/tokenizer.json"));
  WriteFile(folder + "/tokenizer_config.json", "[1, 2]");
  auto bad_config = HfTokenizer::Load(folder);
  EXPECT_EQ(bad_config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_config.status().message(), HasSubstr("bad_json/tokenizer_config.json"));
}

TEST_F(ErrorTest, UnsupportedComponentsNameTheField) {
  nlohmann::json doc = base_;
  doc["pre_tokenizer"] = {{"type", "Whitespace"}};
  absl::Status s = LoadWith(doc);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer.json: pre_tokenizer.type \"Whitespace\" is not supported"));

  doc = base_;
  doc["pre_tokenizer"]["pretokenizers"][1]["type"] = "BertPreTokenizer";
  EXPECT_THAT(LoadWith(doc).message(),
              HasSubstr("pre_tokenizer.pretokenizers[1].type \"BertPreTokenizer\" is not supported"));

  doc = base_;
  doc["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("normalizer.type \"NFKC\" is not supported"));

  doc = base_;
  doc["model"]["type"] = "Unigram";
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.type \"Unigram\" is not supported"));

  doc = base_;
  doc["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("decoder.type \"WordPiece\" is not supported"));

  doc = base_;
  doc["post_processor"] = {{"type", "BertProcessing"}};
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("post_processor.type \"BertProcessing\" is not supported"));

  doc = base_;
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  s = LoadWith(doc);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("pre_tokenizer.pretokenizers[0].pattern.Regex: the regular expression does not compile"));

  doc = base_;
  doc["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("pre_tokenizer.pretokenizers[0].behavior"));

  doc = base_;
  doc["model"]["dropout"] = 0.1;
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.dropout"));
}

TEST_F(ErrorTest, BadModelFields) {
  nlohmann::json doc = base_;
  doc["model"]["merges"][3] = "only_one_part";
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.merges[3]"));

  doc = base_;
  doc["model"]["merges"][5] = {"not_in_vocab_x", "y"};
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.merges[5]: token \"not_in_vocab_x\" is not in model.vocab"));

  doc = base_;
  doc["model"]["vocab"]["abc"] = "seven";
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.vocab[\"abc\"]"));

  doc = base_;
  doc["model"]["vocab"]["abc"] = int64_t{1} << 40;
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.vocab[\"abc\"]"));

  doc = base_;
  doc["model"]["unk_token"] = "<nope>";
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("model.unk_token"));

  doc = base_;
  doc["added_tokens"][0]["id"] = -3;
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("added_tokens[0].id"));

  doc = base_;
  doc["added_tokens"][0]["lstrip"] = "yes";
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("added_tokens[0].lstrip"));

  doc = base_;
  doc.erase("model");
  EXPECT_THAT(LoadWith(doc).message(), HasSubstr("m/tokenizer.json: model: must be an object"));

  EXPECT_THAT(LoadWith(base_, "{\"tokenizer_class\": \"BertTokenizer\"}").message(),
              HasSubstr("m/tokenizer_config.json: tokenizer_class: \"BertTokenizer\" is not supported"));
  EXPECT_THAT(LoadWith(base_, "{\"bos_token\": 3}").message(),
              HasSubstr("tokenizer_config.json: bos_token: must be a string"));
}

TEST_F(ErrorTest, OddConfigTokens) {
  // Empty tokens are not added; a non-numeric added_tokens_decoder key is
  // an error naming it.
  auto tok = HfTokenizer::LoadFromJson(
      base_.dump(), "{\"extra_special_tokens\": [\"\", {\"content\": \"\"}], \"pad_token\": \"\"}",
      "", "m");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->pad_id(), -1);
  EXPECT_EQ((*tok)->Encode("ab", false), (*tok)->Encode("ab", false));
  EXPECT_THAT(LoadWith(base_, "{\"added_tokens_decoder\": {\"x\": {\"content\": \"y\"}}}").message(),
              HasSubstr("tokenizer_config.json: added_tokens_decoder[\"x\"]: the key must be an id"));
  EXPECT_THAT(LoadWith(base_, "{\"extra_special_tokens\": [7]}").message(),
              HasSubstr("tokenizer_config.json: extra_special_tokens[0]: must be a string or an object"));
}

TEST_F(ErrorTest, PatternsNotSeenBeforeWork) {
  // A Split on a literal string, removed, then a regex with lookbehind.
  nlohmann::json doc = base_;
  doc["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"String", ","}}}, {"behavior", "Removed"}, {"invert", false}},
        {{"type", "Split"},
         {"pattern", {{"Regex", "(?<=\\p{Ll})(?=\\p{Lu})"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  auto tok = HfTokenizer::LoadFromJson(doc.dump(), config_, "", "m");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int64_t> ids = (*tok)->Encode("camelCase,x", false);
  EXPECT_EQ((*tok)->Decode(ids, false), "camelCasex");
}

}  // namespace
}  // namespace mpt
