#include "worker/model/t5_config.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The config.json of google-t5/t5-small, trimmed of task_specific_params.
constexpr char kT5Small[] = R"({
  "architectures": ["T5ForConditionalGeneration"],
  "d_ff": 2048, "d_kv": 64, "d_model": 512,
  "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1,
  "initializer_factor": 1.0, "is_encoder_decoder": true,
  "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
  "num_heads": 8, "num_layers": 6, "output_past": true, "pad_token_id": 0,
  "relative_attention_num_buckets": 32, "vocab_size": 32128
})";

// google/flan-t5-small's config.json.
constexpr char kFlanT5Small[] = R"({
  "architectures": ["T5ForConditionalGeneration"],
  "d_ff": 1024, "d_kv": 64, "d_model": 512, "decoder_start_token_id": 0,
  "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
  "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
  "is_encoder_decoder": true, "is_gated_act": true, "layer_norm_epsilon": 1e-06,
  "model_type": "t5", "n_positions": 512, "num_decoder_layers": 8,
  "num_heads": 6, "num_layers": 8, "output_past": true, "pad_token_id": 0,
  "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
  "tie_word_embeddings": false, "torch_dtype": "float32",
  "transformers_version": "4.23.1", "use_cache": true, "vocab_size": 32128
})";

// A small valid config; tests replace one field at a time.
std::string Small(const std::string& extra = "") {
  return absl::StrCat(R"({"model_type": "t5", "vocab_size": 100, "d_model": 16, "d_kv": 4,
                         "d_ff": 32, "num_layers": 2, "num_heads": 4)",
                      extra.empty() ? "" : ", ", extra, "}");
}

absl::Status ParseError(const std::string& json) {
  return T5Config::FromJson(json, "my/config.json").status();
}

TEST(T5ConfigTest, ParsesOriginalT5) {
  absl::StatusOr<T5Config> config = T5Config::FromJson(kT5Small);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "t5");
  EXPECT_EQ(config->vocab_size, 32128);
  EXPECT_EQ(config->d_model, 512);
  EXPECT_EQ(config->d_kv, 64);
  EXPECT_EQ(config->d_ff, 2048);
  EXPECT_EQ(config->num_layers, 6);
  EXPECT_EQ(config->num_decoder_layers, 6);  // absent: symmetric
  EXPECT_EQ(config->num_heads, 8);
  EXPECT_EQ(config->inner_dim(), 512);
  EXPECT_EQ(config->relative_attention_num_buckets, 32);
  EXPECT_EQ(config->relative_attention_max_distance, 128);  // default
  EXPECT_DOUBLE_EQ(config->layer_norm_epsilon, 1e-6);
  EXPECT_EQ(config->feed_forward_proj, "relu");  // default
  EXPECT_EQ(config->dense_act, T5Activation::kRelu);
  EXPECT_FALSE(config->is_gated_act);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_TRUE(config->scale_decoder_outputs);
  EXPECT_EQ(config->pad_token_id, 0);
  EXPECT_EQ(config->eos_token_id, 1);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(1));
  EXPECT_EQ(config->decoder_start_token_id, 0);
}

TEST(T5ConfigTest, ParsesFlanT5) {
  absl::StatusOr<T5Config> config = T5Config::FromJson(kFlanT5Small);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_decoder_layers, 8);
  EXPECT_EQ(config->num_heads, 6);
  EXPECT_EQ(config->inner_dim(), 384);
  EXPECT_TRUE(config->is_gated_act);
  // transformers: "gated-gelu" means the tanh approximation (gelu_new).
  EXPECT_EQ(config->dense_act, T5Activation::kGeluNew);
  EXPECT_EQ(T5ActivationName(config->dense_act), "gelu_new");
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_FALSE(config->scale_decoder_outputs);
}

TEST(T5ConfigTest, ScaleDecoderOutputsFieldWins) {
  // transformers 5 writes tie_word_embeddings=true plus this field.
  absl::StatusOr<T5Config> config =
      T5Config::FromJson(Small(R"("tie_word_embeddings": true, "scale_decoder_outputs": false)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_FALSE(config->scale_decoder_outputs);
}

TEST(T5ConfigTest, ActivationNames) {
  struct Case {
    const char* proj;
    T5Activation act;
    bool gated;
  };
  for (const Case& c : {Case{"relu", T5Activation::kRelu, false},
                        Case{"gelu", T5Activation::kGelu, false},
                        Case{"gated-relu", T5Activation::kRelu, true},
                        Case{"gated-silu", T5Activation::kSilu, true},
                        Case{"gated-swish", T5Activation::kSilu, true},
                        Case{"gated-gelu_new", T5Activation::kGeluNew, true},
                        Case{"gated-gelu_pytorch_tanh", T5Activation::kGeluPytorchTanh, true},
                        Case{"gelu_fast", T5Activation::kGeluFast, false},
                        Case{"quick_gelu", T5Activation::kQuickGelu, false},
                        Case{"tanh", T5Activation::kTanh, false}}) {
    absl::StatusOr<T5Config> config =
        T5Config::FromJson(Small(absl::StrCat(R"("feed_forward_proj": ")", c.proj, "\"")));
    ASSERT_TRUE(config.ok()) << c.proj << ": " << config.status();
    EXPECT_EQ(config->dense_act, c.act) << c.proj;
    EXPECT_EQ(config->is_gated_act, c.gated) << c.proj;
  }
}

// transformers writes dense_act_fn and is_gated_act (derived from
// feed_forward_proj) into config.json, and when they are there it builds the
// feed-forward from them. Found by tools/check_t5_numerics.py: a config with
// feed_forward_proj "gelu_fast" and dense_act_fn "silu" ran gelu_fast here
// and silu in transformers (relative logits error 0.3), and one with only
// dense_act_fn / is_gated_act (no feed_forward_proj) failed to load.
TEST(T5ConfigTest, WrittenDenseActFnAndIsGatedActWin) {
  struct Case {
    std::string extra;
    T5Activation act;
    bool gated;
  };
  for (const Case& c : {
           Case{R"("feed_forward_proj": "gelu_fast", "dense_act_fn": "silu")",
                T5Activation::kSilu, false},
           Case{R"("feed_forward_proj": "gated-gelu", "dense_act_fn": "relu",
                   "is_gated_act": false)",
                T5Activation::kRelu, false},
           Case{R"("feed_forward_proj": "relu", "is_gated_act": true)", T5Activation::kRelu, true},
           // No feed_forward_proj: T5's default "relu" is overridden.
           Case{R"("dense_act_fn": "gelu_new", "is_gated_act": true)", T5Activation::kGeluNew,
                true},
           // An activation we do not have, overridden by one we do.
           Case{R"("feed_forward_proj": "gated-mish", "dense_act_fn": "gelu")",
                T5Activation::kGelu, true},
           // As transformers writes them: the same as feed_forward_proj says.
           Case{R"("feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
                   "is_gated_act": true)",
                T5Activation::kGeluNew, true},
       }) {
    absl::StatusOr<T5Config> config = T5Config::FromJson(Small(c.extra));
    ASSERT_TRUE(config.ok()) << c.extra << ": " << config.status();
    EXPECT_EQ(config->dense_act, c.act) << c.extra;
    EXPECT_EQ(config->is_gated_act, c.gated) << c.extra;
  }
  // mT5's default feed_forward_proj ("gated-gelu") with a written is_gated_act.
  absl::StatusOr<T5Config> mt5 = T5Config::FromJson(absl::StrReplaceAll(
      Small(R"("dense_act_fn": "quick_gelu", "is_gated_act": false)"), {{"\"t5\"", "\"mt5\""}}));
  ASSERT_TRUE(mt5.ok()) << mt5.status();
  EXPECT_EQ(mt5->dense_act, T5Activation::kQuickGelu);
  EXPECT_FALSE(mt5->is_gated_act);

  struct Bad {
    std::string extra;
    const char* field;
    const char* problem;
  };
  for (const Bad& b : {
           Bad{R"("dense_act_fn": "prelu")", "dense_act_fn", "prelu"},
           Bad{R"("feed_forward_proj": "gated-gelu", "dense_act_fn": "gated-gelu")", "dense_act_fn",
               "unknown"},
           Bad{R"("dense_act_fn": 3)", "dense_act_fn", "string"},
           Bad{R"("dense_act_fn": null)", "dense_act_fn", "null"},
           Bad{R"("is_gated_act": "yes")", "is_gated_act", "boolean"},
           Bad{R"("is_gated_act": null)", "is_gated_act", "null"},
           // The form of feed_forward_proj is still checked, as transformers does.
           Bad{R"("feed_forward_proj": "geglu-gelu", "dense_act_fn": "gelu")", "feed_forward_proj",
               "geglu-gelu"},
       }) {
    absl::Status status = ParseError(Small(b.extra));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << b.extra;
    EXPECT_THAT(status.message(),
                AllOf(HasSubstr("my/config.json"), HasSubstr(b.field), HasSubstr(b.problem)))
        << b.extra;
  }
}

// Found by tools/check_t5_numerics.py: an umt5 config.json without
// decoder_start_token_id and pad_token_id 52 started decoding with 52 here
// and with 0 (UMT5Config's default) in transformers.
TEST(T5ConfigTest, AbsentDecoderStartFollowsTheModelType) {
  for (const char* type : {"mt5", "umt5"}) {
    for (const char* extra :
         {R"("pad_token_id": 5)", R"("pad_token_id": 5, "decoder_start_token_id": null)"}) {
      absl::StatusOr<T5Config> config = T5Config::FromJson(
          absl::StrReplaceAll(Small(extra), {{"\"t5\"", absl::StrCat("\"", type, "\"")}}));
      ASSERT_TRUE(config.ok()) << type << ": " << config.status();
      EXPECT_EQ(config->pad_token_id, 5) << type;
      EXPECT_EQ(config->decoder_start_token_id, 0) << type << " " << extra;
    }
    absl::StatusOr<T5Config> given = T5Config::FromJson(absl::StrReplaceAll(
        Small(R"("pad_token_id": 5, "decoder_start_token_id": 7)"),
        {{"\"t5\"", absl::StrCat("\"", type, "\"")}}));
    ASSERT_TRUE(given.ok()) << given.status();
    EXPECT_EQ(given->decoder_start_token_id, 7) << type;
  }
  // T5Config has no default; T5 starts with the pad token.
  absl::StatusOr<T5Config> t5 = T5Config::FromJson(Small(R"("pad_token_id": 5)"));
  ASSERT_TRUE(t5.ok()) << t5.status();
  EXPECT_EQ(t5->decoder_start_token_id, 5);
}

// The decoder's buckets divide by log(max_distance / (num_buckets / 2)):
// at or below num_buckets / 2 transformers indexes the bias table with
// negative buckets (IndexError) once targets are long enough. Found by
// tools/check_t5_numerics.py (num_buckets 21, max_distance 9: "index out of
// range in self" from t5_dump, naming nothing).
TEST(T5ConfigTest, MaxDistanceMustExceedTheDecodersExactBuckets) {
  auto buckets = [](int num_buckets, int max_distance) {
    return Small(absl::StrCat(R"("relative_attention_num_buckets": )", num_buckets,
                              R"(, "relative_attention_max_distance": )", max_distance));
  };
  for (const std::string& extra : {buckets(21, 9), buckets(21, 10), buckets(32, 16)}) {
    absl::Status status = ParseError(extra);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << extra;
    EXPECT_THAT(status.message(), AllOf(HasSubstr("my/config.json"),
                                        HasSubstr("relative_attention_max_distance"),
                                        HasSubstr("relative_attention_num_buckets / 2")))
        << extra;
  }
  for (const std::string& extra : {buckets(21, 11), buckets(4, 3), buckets(32, 17)}) {
    EXPECT_TRUE(T5Config::FromJson(extra).ok()) << extra;
  }
}

TEST(T5ConfigTest, NullsAndDefaults) {
  absl::StatusOr<T5Config> config = T5Config::FromJson(Small(
      R"("num_decoder_layers": null, "decoder_start_token_id": null, "pad_token_id": 3)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_decoder_layers, 2);
  EXPECT_EQ(config->pad_token_id, 3);
  EXPECT_EQ(config->decoder_start_token_id, 3);  // T5 starts with the pad token
}

TEST(T5ConfigTest, EosList) {
  absl::StatusOr<T5Config> config = T5Config::FromJson(Small(R"("eos_token_id": [1, 7])"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->eos_token_id, 1);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(1, 7));
}

TEST(T5ConfigTest, UnknownModelType) {
  absl::Status status = ParseError(absl::StrReplaceAll(Small(), {{"\"t5\"", "\"llama\""}}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("my/config.json"), HasSubstr("model_type"), HasSubstr("llama")));
  status = ParseError(absl::StrReplaceAll(Small(), {{"\"model_type\": \"t5\",", ""}}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("model_type"), HasSubstr("missing")));
  status = ParseError(absl::StrReplaceAll(Small(), {{"\"t5\"", "5"}}));
  EXPECT_THAT(status.message(), AllOf(HasSubstr("model_type"), HasSubstr("string")));
}

TEST(T5ConfigTest, UnknownFeedForward) {
  for (const char* proj : {"gated-foo", "foo", "geglu-gelu", "gated-gelu-x", "", "gated-"}) {
    absl::Status status = ParseError(Small(absl::StrCat(R"("feed_forward_proj": ")", proj, "\"")));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << proj;
    EXPECT_THAT(status.message(), AllOf(HasSubstr("my/config.json"),
                                        HasSubstr("feed_forward_proj"), HasSubstr(proj)))
        << proj;
  }
}

TEST(T5ConfigTest, MissingOrBadSizes) {
  const std::vector<std::pair<std::string, std::string>> fields = {
      {"vocab_size", "100"}, {"d_model", "16"},   {"d_kv", "4"},
      {"d_ff", "32"},        {"num_layers", "2"}, {"num_heads", "4"}};
  for (const auto& [missing, unused] : fields) {
    std::vector<std::string> kept = {R"("model_type": "t5")"};
    for (const auto& [name, value] : fields) {
      if (name != missing) kept.push_back(absl::StrCat("\"", name, "\": ", value));
    }
    const std::string json = absl::StrCat("{", absl::StrJoin(kept, ", "), "}");
    absl::Status status = ParseError(json);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(status.message(), AllOf(HasSubstr(missing), HasSubstr("missing"))) << json;
  }
  for (const char* bad : {R"("d_model": 0)", R"("d_model": -16)"}) {
    absl::Status status = ParseError(absl::StrReplaceAll(Small(), {{"\"d_model\": 16", bad}}));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(status.message(), AllOf(HasSubstr("d_model"), HasSubstr("positive"))) << bad;
  }
  absl::Status status = ParseError(Small(R"("num_decoder_layers": 0)"));
  EXPECT_THAT(status.message(), AllOf(HasSubstr("num_decoder_layers"), HasSubstr("positive")));
  status = ParseError(Small(R"("relative_attention_num_buckets": 2)"));
  EXPECT_THAT(status.message(), HasSubstr("relative_attention_num_buckets"));
  status = ParseError(Small(R"("relative_attention_max_distance": 4)"));
  EXPECT_THAT(status.message(), HasSubstr("relative_attention_max_distance"));
}

TEST(T5ConfigTest, WrongJsonTypes) {
  struct Case {
    std::string json;
    const char* field;
    const char* problem;
  };
  for (const Case& c : {
           Case{absl::StrReplaceAll(Small(), {{"\"d_model\": 16", "\"d_model\": \"16\""}}),
                "d_model", "integer"},
           Case{absl::StrReplaceAll(Small(), {{"\"d_model\": 16", "\"d_model\": 16.5"}}),
                "d_model", "integer"},
           Case{Small(R"("tie_word_embeddings": "yes")"), "tie_word_embeddings", "boolean"},
           Case{Small(R"("layer_norm_epsilon": "1e-6")"), "layer_norm_epsilon", "number"},
           Case{Small(R"("layer_norm_epsilon": -1)"), "layer_norm_epsilon", "positive"},
           Case{Small(R"("feed_forward_proj": 3)"), "feed_forward_proj", "string"},
           Case{Small(R"("pad_token_id": -1)"), "pad_token_id", "negative"},
           Case{Small(R"("eos_token_id": 100)"), "eos_token_id", "vocabulary"},
           Case{Small(R"("eos_token_id": ["a"])"), "eos_token_id", "integer"},
           Case{Small(R"("decoder_start_token_id": 1.5)"), "decoder_start_token_id", "integer"},
           Case{Small(R"("num_heads": 1e12)"), "num_heads", "integer"},
           Case{Small(R"("vocab_size": 99999999999)"), "vocab_size", "range"},
       }) {
    absl::Status status = ParseError(c.json);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(status.message(),
                AllOf(HasSubstr("my/config.json"), HasSubstr(c.field), HasSubstr(c.problem)))
        << c.json;
  }
}

TEST(T5ConfigTest, MalformedJson) {
  absl::Status status = ParseError("{\"model_type\": \"t5\",");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("my/config.json"), HasSubstr("JSON")));
  status = ParseError("[1, 2]");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("object"));
}

TEST(T5ConfigTest, FromJsonFile) {
  const std::string dir = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  const std::string path = dir + "/t5_config_test_config.json";
  {
    std::ofstream out(path);
    out << kFlanT5Small;
  }
  absl::StatusOr<T5Config> config = T5Config::FromJsonFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->is_gated_act);

  {
    std::ofstream out(path);
    out << absl::StrReplaceAll(kFlanT5Small, {{"\"t5\"", "\"bart\""}});
  }
  absl::Status status = T5Config::FromJsonFile(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("bart")));

  status = T5Config::FromJsonFile(dir + "/no_such_dir/config.json").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("no_such_dir/config.json"));
}

}  // namespace
}  // namespace mpt
