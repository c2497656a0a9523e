// LlamaConfig reads config.json the way transformers' LlamaConfig,
// Qwen2Config, Qwen3Config and MistralConfig do (defaults per family, both rope forms) and
// refuses what it cannot honour with an error naming the file and the field.
#include "worker/model/llama_config.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kBase[] = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 3, "num_attention_heads": 4)";

std::string Config(const std::string& model_type, const std::string& extra = "") {
  return "{\"model_type\": \"" + model_type + "\", " + kBase + (extra.empty() ? "" : ", " + extra) +
         "}";
}

LlamaConfig Parse(const std::string& json) {
  absl::StatusOr<LlamaConfig> c = LlamaConfig::FromJson(json, "x/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : LlamaConfig();
}

std::string Error(const std::string& json) {
  absl::StatusOr<LlamaConfig> c = LlamaConfig::FromJson(json, "x/config.json");
  EXPECT_FALSE(c.ok()) << json;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("x/config.json: "));
  return std::string(c.status().message());
}

TEST(LlamaConfigTest, FamilyDefaults) {
  LlamaConfig llama = Parse(Config("llama"));
  EXPECT_EQ(llama.num_key_value_heads, 4);
  EXPECT_EQ(llama.head_dim, 16);
  EXPECT_EQ(llama.max_position_embeddings, 2048);
  EXPECT_EQ(llama.rope_theta, 10000.0);
  EXPECT_EQ(llama.rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(llama.activation, T5Activation::kSilu);
  EXPECT_FALSE(llama.tie_word_embeddings);
  EXPECT_FALSE(llama.qkv_bias);
  EXPECT_EQ(llama.bos_token_id, 1);
  EXPECT_EQ(llama.eos_token_ids, std::vector<int>{2});
  EXPECT_FALSE(llama.pad_token_id.has_value());
  EXPECT_EQ(llama.layer_sliding_window, (std::vector<int>{0, 0, 0}));

  LlamaConfig qwen2 = Parse(Config("qwen2", R"("num_key_value_heads": 2)"));
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_FALSE(qwen2.o_bias);
  EXPECT_FALSE(qwen2.mlp_bias);
  EXPECT_EQ(qwen2.max_position_embeddings, 32768);
  EXPECT_FALSE(qwen2.bos_token_id.has_value());
  EXPECT_TRUE(qwen2.eos_token_ids.empty());
  EXPECT_EQ(qwen2.layer_sliding_window, (std::vector<int>{0, 0, 0}));  // use_sliding_window off

  // Qwen3Config: head_dim 128 whatever the hidden size, attention_bias on
  // all four projections (default off), q/k norms, Qwen2's other defaults.
  LlamaConfig qwen3 = Parse(Config("qwen3", R"("num_key_value_heads": 2)"));
  EXPECT_EQ(qwen3.head_dim, 128);
  EXPECT_EQ(qwen3.q_dim(), 512);
  EXPECT_EQ(qwen3.kv_dim(), 256);
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_FALSE(qwen3.qkv_bias);
  EXPECT_FALSE(qwen3.o_bias);
  EXPECT_FALSE(qwen3.mlp_bias);
  EXPECT_EQ(qwen3.max_position_embeddings, 32768);
  EXPECT_FALSE(qwen3.bos_token_id.has_value());
  EXPECT_TRUE(qwen3.eos_token_ids.empty());
  EXPECT_EQ(qwen3.layer_sliding_window, (std::vector<int>{0, 0, 0}));
  EXPECT_EQ(Parse(R"({"model_type": "qwen3", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 64})")
                .num_key_value_heads,
            32);
  LlamaConfig biased = Parse(Config(
      "qwen3", R"("num_key_value_heads": 2, "attention_bias": true, "head_dim": 16,
      "use_sliding_window": true, "sliding_window": 7, "max_window_layers": 1)"));
  EXPECT_TRUE(biased.qkv_bias);
  EXPECT_TRUE(biased.o_bias);
  EXPECT_FALSE(biased.mlp_bias);  // Qwen3's MLP has no bias, whatever mlp_bias says
  EXPECT_EQ(biased.head_dim, 16);
  EXPECT_EQ(biased.layer_sliding_window, (std::vector<int>{0, 7, 7}));
  EXPECT_FALSE(Parse(Config("llama")).qk_norm);
  EXPECT_TRUE(IsLlamaFamilyModelType("qwen3"));
  EXPECT_FALSE(IsLlamaFamilyModelType("qwen3_moe"));

  // Phi3Config: rms_norm_eps 1e-5, 4096 positions, bos 1, eos and pad 32000
  // (dropped here: outside this vocabulary), no window unless told.
  LlamaConfig phi3 = Parse(Config("phi3"));
  EXPECT_EQ(phi3.rms_norm_eps, 1e-5);
  EXPECT_EQ(phi3.max_position_embeddings, 4096);
  EXPECT_EQ(phi3.num_key_value_heads, 4);
  EXPECT_EQ(phi3.rotary_dim, 16);
  EXPECT_TRUE(phi3.fused_projections());
  EXPECT_FALSE(phi3.qkv_bias);
  EXPECT_EQ(phi3.bos_token_id, 1);
  EXPECT_TRUE(phi3.eos_token_ids.empty());
  EXPECT_FALSE(phi3.pad_token_id.has_value());
  EXPECT_EQ(phi3.layer_sliding_window, (std::vector<int>{0, 0, 0}));
  LlamaConfig phi3_vocab = Parse(R"({"model_type": "phi3", "vocab_size": 32064, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
      "sliding_window": 2047})");
  EXPECT_EQ(phi3_vocab.eos_token_ids, std::vector<int>{32000});
  EXPECT_EQ(phi3_vocab.pad_token_id, 32000);
  EXPECT_EQ(phi3_vocab.layer_sliding_window, (std::vector<int>{2047, 2047}));
  EXPECT_FALSE(Parse(Config("llama")).fused_projections());
  // The same defaults written out, as save_pretrained writes them: dropped
  // too; other ids outside the vocabulary are still refused.
  LlamaConfig saved = Parse(Config("phi3", R"("eos_token_id": 32000, "pad_token_id": 32000)"));
  EXPECT_TRUE(saved.eos_token_ids.empty());
  EXPECT_FALSE(saved.pad_token_id.has_value());
  EXPECT_THAT(Error(Config("phi3", R"("eos_token_id": 32001)")),
              HasSubstr("'eos_token_id' is 32001, outside the vocabulary"));

  // MistralConfig: 8 key/value heads and a 4096 window unless told.
  LlamaConfig m = Parse(R"({"model_type": "mistral", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 8})");
  EXPECT_EQ(m.num_key_value_heads, 8);
  EXPECT_EQ(m.layer_sliding_window, (std::vector<int>{4096, 4096}));
  EXPECT_EQ(m.max_position_embeddings, 131072);
  LlamaConfig no_window = Parse(R"({"model_type": "mistral", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 8,
      "sliding_window": null})");
  EXPECT_EQ(no_window.layer_sliding_window, (std::vector<int>{0, 0}));
}

// A mistral config.json with layer_types is what transformers' Auto classes
// load as "ministral": the window only on the "sliding_attention" layers
// (found by tools/check_decoder_numerics.py; every layer used to slide).
TEST(LlamaConfigTest, MistralLayerTypes) {
  const std::string base = R"({"model_type": "mistral", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 8, )";
  LlamaConfig listed = Parse(base + R"("sliding_window": 3,
      "layer_types": ["full_attention", "sliding_attention", "full_attention"]})");
  EXPECT_EQ(listed.layer_sliding_window, (std::vector<int>{0, 3, 0}));
  LlamaConfig default_window = Parse(base + R"("layer_types": ["sliding_attention",
      "full_attention", "sliding_attention"]})");
  EXPECT_EQ(default_window.layer_sliding_window, (std::vector<int>{4096, 0, 4096}));
  LlamaConfig null_list = Parse(base + R"("sliding_window": 3, "layer_types": null})");
  EXPECT_EQ(null_list.layer_sliding_window, (std::vector<int>{3, 3, 3}));
  EXPECT_THAT(Error(base + R"("layer_types": ["full_attention"]})"), HasSubstr("'layer_types'"));
}

// "ministral" (what transformers' save_pretrained writes for the folder
// above): Mistral's defaults, windows per layer_types, and without the
// list every layer slides.
TEST(LlamaConfigTest, Ministral) {
  const std::string base = R"({"model_type": "ministral", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 16, )";
  LlamaConfig listed = Parse(base + R"("sliding_window": 3,
      "layer_types": ["full_attention", "sliding_attention", "full_attention"]})");
  EXPECT_EQ(listed.layer_sliding_window, (std::vector<int>{0, 3, 0}));
  EXPECT_EQ(listed.num_key_value_heads, 8);
  EXPECT_EQ(listed.max_position_embeddings, 131072);
  EXPECT_FALSE(listed.qkv_bias);
  EXPECT_FALSE(listed.mlp_bias);
  LlamaConfig every = Parse(base + R"("sliding_window": 5})");
  EXPECT_EQ(every.layer_sliding_window, (std::vector<int>{5, 5, 5}));
  LlamaConfig none = Parse(base + R"("sliding_window": null})");
  EXPECT_EQ(none.layer_sliding_window, (std::vector<int>{0, 0, 0}));
  EXPECT_THAT(Error(R"({"model_type": "ministral3", "vocab_size": 100})"),
              AllOf(HasSubstr("'model_type'"), HasSubstr("\"ministral3\"")));
}

TEST(LlamaConfigTest, Qwen2SlidingLayers) {
  LlamaConfig derived = Parse(Config(
      "qwen2", R"("use_sliding_window": true, "sliding_window": 7, "max_window_layers": 2,
      "num_key_value_heads": 4)"));
  EXPECT_EQ(derived.layer_sliding_window, (std::vector<int>{0, 0, 7}));
  LlamaConfig listed = Parse(Config("qwen2", R"("use_sliding_window": true, "sliding_window": 7, "num_key_value_heads": 4,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"])"));
  EXPECT_EQ(listed.layer_sliding_window, (std::vector<int>{7, 0, 7}));
  // max_window_layers is any integer (Qwen2Config: int): layers i >= it
  // slide, so 0 or less means all of them (found by
  // tools/check_decoder_numerics.py; it used to be refused as "must be
  // positive").
  for (const char* n : {"0", "-1"}) {
    LlamaConfig all = Parse(Config("qwen2", std::string(R"("use_sliding_window": true,
        "sliding_window": 5, "num_key_value_heads": 4, "max_window_layers": )") + n));
    EXPECT_EQ(all.layer_sliding_window, (std::vector<int>{5, 5, 5})) << n;
  }
  LlamaConfig off = Parse(Config("qwen2", R"("sliding_window": 5, "max_window_layers": 0,
      "num_key_value_heads": 4)"));
  EXPECT_EQ(off.layer_sliding_window, (std::vector<int>{0, 0, 0}));
  EXPECT_THAT(Error(Config("qwen2", R"("max_window_layers": 1.5, "num_key_value_heads": 4)")),
              HasSubstr("'max_window_layers' must be an integer"));
  EXPECT_THAT(Error(Config("qwen2", R"("num_key_value_heads": 4, "layer_types": ["full_attention"])")),
              HasSubstr("'layer_types'"));
  EXPECT_THAT(Error(Config("qwen2", R"("num_key_value_heads": 4,
      "layer_types": ["full_attention", "x", "full_attention"])")),
              AllOf(HasSubstr("'layer_types' entry 1"), HasSubstr("\"x\"")));
}

TEST(LlamaConfigTest, RopeBothForms) {
  // transformers 5: rope_parameters holds the type and theta.
  LlamaConfig c5 = Parse(Config("llama", R"("rope_parameters": {"rope_type": "llama3",
      "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, "max_position_embeddings": 131072)"));
  EXPECT_EQ(c5.rope_scaling.type, RopeType::kLlama3);
  EXPECT_EQ(c5.rope_theta, 500000.0);
  EXPECT_EQ(c5.rope_scaling.factor, 8.0);
  EXPECT_EQ(c5.rope_scaling.original_max_position_embeddings, 8192);
  // Older files: rope_scaling with "type", rope_theta at the top level.
  LlamaConfig c4 = Parse(Config("llama", R"("rope_scaling": {"type": "linear", "factor": 2},
      "rope_theta": 20000)"));
  EXPECT_EQ(c4.rope_scaling.type, RopeType::kLinear);
  EXPECT_EQ(c4.rope_scaling.factor, 2.0);
  EXPECT_EQ(c4.rope_theta, 20000.0);
  // rope_scaling null or {}: no scaling.
  EXPECT_EQ(Parse(Config("llama", R"("rope_scaling": null)")).rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(Parse(Config("llama", R"("rope_scaling": {})")).rope_scaling.type, RopeType::kDefault);
  // yarn defaults: original length = max_position_embeddings, betas 32 / 1.
  LlamaConfig yarn = Parse(Config("qwen2", R"("rope_scaling": {"type": "yarn", "factor": 4.0},
      "max_position_embeddings": 4096, "num_key_value_heads": 2)"));
  EXPECT_EQ(yarn.rope_scaling.type, RopeType::kYarn);
  EXPECT_EQ(yarn.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_EQ(yarn.rope_scaling.beta_fast, 32.0);
  EXPECT_EQ(yarn.rope_scaling.beta_slow, 1.0);
  EXPECT_TRUE(yarn.rope_scaling.truncate);
  // transformers reads `rope_parameters.get("truncate", True)` as a truth
  // value: only an absent key truncates by default; null is falsy (found by
  // tools/check_decoder_numerics.py: null used to mean true here, and the
  // YaRN ramp, hence every logit, differed).
  const std::string yarn_base = R"("max_position_embeddings": 64, "num_key_value_heads": 2,
      "rope_parameters": {"rope_type": "yarn", "factor": 2.0,
      "original_max_position_embeddings": 26)";
  EXPECT_FALSE(Parse(Config("mistral", yarn_base + R"(, "truncate": null})")).rope_scaling.truncate);
  EXPECT_FALSE(Parse(Config("mistral", yarn_base + R"(, "truncate": false})")).rope_scaling.truncate);
  EXPECT_TRUE(Parse(Config("mistral", yarn_base + R"(, "truncate": true})")).rope_scaling.truncate);
  EXPECT_TRUE(Parse(Config("mistral", yarn_base + "}")).rope_scaling.truncate);
}

TEST(LlamaConfigTest, Longrope) {
  // head_dim 16: eight factors each; factor defaults to max / original.
  const std::string eight = "[1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5]";
  const std::string base = R"("max_position_embeddings": 8192,
      "original_max_position_embeddings": 2048, "rope_scaling": {"type": "longrope", )";
  LlamaConfig c = Parse(Config("llama", base + "\"short_factor\": " + eight +
                                            ", \"long_factor\": " + eight + "}"));
  EXPECT_EQ(c.rope_scaling.type, RopeType::kLongrope);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 2048);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_FALSE(c.rope_scaling.attention_factor.has_value());
  ASSERT_EQ(c.rope_scaling.short_factor.size(), 8u);
  EXPECT_EQ(c.rope_scaling.short_factor[7], 4.5);
  LlamaConfig given = Parse(Config("llama", base + "\"short_factor\": " + eight +
                                                ", \"long_factor\": " + eight +
                                                ", \"factor\": 2, \"attention_factor\": 1.2}"));
  EXPECT_EQ(given.rope_scaling.factor, 2.0);
  EXPECT_EQ(given.rope_scaling.attention_factor.value_or(0), 1.2);
  EXPECT_THAT(Error(Config("llama", base + "\"short_factor\": " + eight + "}")),
              HasSubstr("'rope_scaling.long_factor' is missing"));
  EXPECT_THAT(Error(Config("llama", base + "\"short_factor\": [1, 2], \"long_factor\": " +
                                        eight + "}")),
              HasSubstr("'rope_scaling.short_factor' has 2 numbers; head_dim / 2 = 8"));
  EXPECT_THAT(Error(Config("llama", base + "\"short_factor\": " + eight +
                                        ", \"long_factor\": [1, 1, 1, 1, 1, 1, 1, 0]}")),
              HasSubstr("'rope_scaling.long_factor' must hold positive numbers"));
  EXPECT_THAT(Error(Config("llama", base + "\"short_factor\": 2, \"long_factor\": " + eight +
                                        "}")),
              HasSubstr("'rope_scaling.short_factor' must be a list"));
}

TEST(LlamaConfigTest, RefusesWhatItCannotHonour) {
  EXPECT_THAT(Error(Config("gpt2")), AllOf(HasSubstr("'model_type'"), HasSubstr("\"gpt2\"")));
  EXPECT_THAT(Error(R"({"vocab_size": 5})"), HasSubstr("'model_type' is missing"));
  EXPECT_THAT(Error(Config("llama", R"("rope_scaling": {"rope_type": "longrope", "factor": 2})")),
              HasSubstr("'rope_scaling.short_factor' is missing"));
  EXPECT_THAT(Error(Config("llama", R"("rope_parameters": {"rope_type": "su"})")),
              HasSubstr("'rope_parameters.rope_type'"));
  EXPECT_THAT(Error(Config("llama", R"("rope_scaling": {"type": "linear"})")),
              HasSubstr("'rope_scaling.factor' is missing"));
  EXPECT_THAT(Error(Config("llama", R"("rope_scaling": {"type": "dynamic", "factor": -1})")),
              HasSubstr("'rope_scaling.factor' must be positive"));
  EXPECT_THAT(Error(Config("llama", R"("rope_scaling": {"type": "llama3", "factor": 8,
      "low_freq_factor": 4, "high_freq_factor": 1})")),
              HasSubstr("'rope_scaling.high_freq_factor'"));
  EXPECT_THAT(Error(Config("llama", R"("partial_rotary_factor": 0.5)")),
              HasSubstr("'partial_rotary_factor'"));
  EXPECT_THAT(Error(Config("llama", R"("num_key_value_heads": 3)")),
              HasSubstr("'num_key_value_heads'"));
  EXPECT_THAT(Error(Config("llama", R"("head_dim": 15)")), HasSubstr("'head_dim'"));
  EXPECT_THAT(Error(Config("llama", R"("hidden_act": "mish2")")),
              AllOf(HasSubstr("'hidden_act'"), HasSubstr("mish2")));
  EXPECT_THAT(Error(Config("llama", R"("eos_token_id": [2, 100])")),
              AllOf(HasSubstr("'eos_token_id'"), HasSubstr("outside the vocabulary")));
  EXPECT_THAT(Error(Config("llama", R"("pad_token_id": -1)")), HasSubstr("'pad_token_id'"));
  EXPECT_THAT(Error(Config("llama", R"("torch_dtype": "int8")")), HasSubstr("'torch_dtype'"));
  EXPECT_THAT(Error(Config("llama", R"("architectures": ["LlamaForSequenceClassification"])")),
              HasSubstr("'architectures'"));
  EXPECT_THAT(Error(Config("llama", R"("rms_norm_eps": 0)")), HasSubstr("'rms_norm_eps'"));
  EXPECT_THAT(Error(R"({"model_type": "llama", "vocab_size": 100})"),
              HasSubstr("'hidden_size' is missing"));
  EXPECT_THAT(Error(Config("llama", R"("attention_bias": "yes")")),
              HasSubstr("'attention_bias' must be a boolean"));
  // phi3: only default and longrope; longrope's lists need an even rotated width.
  EXPECT_THAT(Error(Config("phi3", R"("rope_scaling": {"type": "linear", "factor": 2})")),
              AllOf(HasSubstr("'rope_scaling.type'"), HasSubstr("\"longrope\"")));
  EXPECT_THAT(Error(Config("phi3", R"("partial_rotary_factor": 0.35, "rope_scaling":
      {"type": "longrope", "short_factor": [1, 1], "long_factor": [1, 1]})")),  // 5.6 -> 5
              AllOf(HasSubstr("'partial_rotary_factor' (0.35)"), HasSubstr("gives 5"),
                    HasSubstr("needs an even number")));
  EXPECT_THAT(Error(Config("phi3", R"("partial_rotary_factor": 1.5)")),
              HasSubstr("must be in (0, 1]"));
  EXPECT_THAT(Error(Config("phi3", R"("head_dim": 15)")), HasSubstr("'head_dim' must be even"));
  EXPECT_THAT(Error(Config("phi3", R"("partial_rotary_factor": 0.5, "rope_scaling":
      {"type": "longrope", "short_factor": [1, 1, 1, 1, 1, 1, 1, 1], "long_factor": [1]})")),
              AllOf(HasSubstr("'rope_scaling.short_factor' has 8 numbers"),
                    HasSubstr("the rotary dimensions / 2 = 4")));
}

// Gemma3TextConfig's defaults and its rope per layer type, in both forms
// and with rope_scaling updating the full layers' dict.
TEST(LlamaConfigTest, Gemma3Text) {
  LlamaConfig g = Parse(Config("gemma3_text"));
  EXPECT_TRUE(g.gemma);
  EXPECT_TRUE(g.qk_norm);
  EXPECT_EQ(g.head_dim, 256);
  EXPECT_EQ(g.num_key_value_heads, 4);
  EXPECT_TRUE(g.tie_word_embeddings);
  EXPECT_EQ(g.bos_token_id, 2);
  EXPECT_EQ(g.eos_token_ids, std::vector<int>{1});
  EXPECT_EQ(g.pad_token_id, 0);
  EXPECT_EQ(g.activation, T5Activation::kGeluPytorchTanh);
  EXPECT_DOUBLE_EQ(g.attention_scale, 1.0 / 16);  // query_pre_attn_scalar 256
  EXPECT_FALSE(g.final_logit_softcapping.has_value());
  EXPECT_EQ(g.max_position_embeddings, 131072);
  EXPECT_EQ(g.layer_sliding_window, (std::vector<int>{4096, 4096, 4096}));  // pattern 6
  EXPECT_EQ(g.rope_theta, 1e6);
  EXPECT_EQ(g.sliding_rope_theta, 1e4);

  g = Parse(Config("gemma3_text", R"("sliding_window": 7, "sliding_window_pattern": 2,
      "hidden_act": "silu", "hidden_activation": "gelu", "query_pre_attn_scalar": 4,
      "final_logit_softcapping": 30, "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8, "rope_theta": 5e5},
        "sliding_attention": {"rope_theta": 100}},
      "rope_scaling": {"factor": 4}, "rope_theta": 7)"));
  EXPECT_EQ(g.layer_sliding_window, (std::vector<int>{7, 0, 7}));
  EXPECT_EQ(g.activation, T5Activation::kGelu);  // hidden_activation, not hidden_act
  EXPECT_DOUBLE_EQ(g.attention_scale, 0.5);
  EXPECT_EQ(g.final_logit_softcapping, 30.0);
  EXPECT_EQ(g.rope_scaling.type, RopeType::kLinear);
  EXPECT_EQ(g.rope_scaling.factor, 4.0);  // rope_scaling updates the dict
  EXPECT_EQ(g.rope_theta, 5e5);           // the dict's theta wins over the top level's
  EXPECT_EQ(g.sliding_rope_theta, 100.0);
  EXPECT_EQ(g.sliding_rope_scaling.type, RopeType::kDefault);

  g = Parse(Config("gemma3_text", R"("rope_theta": 7, "rope_local_base_freq": 3,
      "layer_types": ["full_attention", "sliding_attention", "full_attention"])"));
  EXPECT_EQ(g.rope_theta, 7.0);
  EXPECT_EQ(g.sliding_rope_theta, 3.0);
  EXPECT_EQ(g.layer_sliding_window, (std::vector<int>{0, 4096, 0}));

  EXPECT_THAT(Error(Config("gemma3_text", R"("use_bidirectional_attention": true)")),
              HasSubstr("'use_bidirectional_attention'"));
  EXPECT_THAT(Error(Config("gemma3_text", R"("sliding_window": null)")),
              HasSubstr("'sliding_window' is null"));
  EXPECT_THAT(Error(Config("gemma3_text", R"("hidden_activation": "prelu")")),
              HasSubstr("'hidden_activation'"));
  EXPECT_THAT(Error(Config("gemma3_text", R"("rope_parameters": {"rope_type": "default"})")),
              AllOf(HasSubstr("'rope_parameters'"), HasSubstr("one dict per layer type")));
  EXPECT_THAT(Error(Config("gemma3_text", R"("rope_parameters": {
      "full_attention": {"rope_type": "yarn", "factor": 2}})")),
              AllOf(HasSubstr("'rope_parameters.full_attention.rope_type'"), HasSubstr("yarn")));
  EXPECT_THAT(Error(Config("gemma3_text", R"("rope_scaling": {"rope_type": "linear"})")),
              HasSubstr("'rope_parameters.full_attention.factor' is missing"));
}

// A multimodal Gemma 3 (model_type "gemma3"): its text_config, as released
// (gemma-3-4b's lists only what differs from Gemma3TextConfig), with the
// top level's eos, dtype and tie; transformers' AutoConfig reads the same
// values from this file.
TEST(LlamaConfigTest, MultimodalGemma3) {
  constexpr char kReleased[] = R"({"architectures": ["Gemma3ForConditionalGeneration"],
      "boi_token_index": 255999, "eos_token_id": [1, 106], "image_token_index": 262144,
      "model_type": "gemma3", "torch_dtype": "bfloat16",
      "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
        "model_type": "gemma3_text", "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
      "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}})";
  LlamaConfig g = Parse(kReleased);
  EXPECT_TRUE(g.multimodal_gemma3);
  EXPECT_EQ(g.model_type, "gemma3_text");
  EXPECT_TRUE(g.gemma);
  EXPECT_TRUE(g.qk_norm);
  EXPECT_EQ(g.vocab_size, 262208);
  EXPECT_EQ(g.hidden_size, 2560);
  EXPECT_EQ(g.intermediate_size, 10240);
  EXPECT_EQ(g.num_hidden_layers, 34);
  EXPECT_EQ(g.num_attention_heads, 8);
  EXPECT_EQ(g.num_key_value_heads, 4);
  EXPECT_EQ(g.head_dim, 256);
  EXPECT_DOUBLE_EQ(g.attention_scale, 1.0 / 16);
  EXPECT_EQ(g.layer_sliding_window.size(), 34u);
  EXPECT_EQ(g.layer_sliding_window[4], 1024);
  EXPECT_EQ(g.layer_sliding_window[5], 0);  // every sixth layer full
  EXPECT_EQ(g.rope_scaling.type, RopeType::kLinear);
  EXPECT_EQ(g.rope_scaling.factor, 8.0);
  EXPECT_EQ(g.rope_theta, 1e6);
  EXPECT_EQ(g.sliding_rope_theta, 1e4);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int>{1, 106}));
  EXPECT_EQ(g.bos_token_id, 2);
  EXPECT_EQ(g.pad_token_id, 0);
  EXPECT_TRUE(g.tie_word_embeddings);
  EXPECT_EQ(g.torch_dtype, "bfloat16");

  // The top level's tie wins over text_config's (Gemma3Config's default:
  // true); the final logit cap is not applied.
  g = Parse(R"({"model_type": "gemma3", "tie_word_embeddings": false,
      "text_config": {"vocab_size": 50, "tie_word_embeddings": true,
                      "final_logit_softcapping": 30}})");
  EXPECT_FALSE(g.tie_word_embeddings);
  EXPECT_FALSE(g.final_logit_softcapping.has_value());
  EXPECT_EQ(g.vocab_size, 50);
  g = Parse(R"({"model_type": "gemma3", "text_config": {"vocab_size": 50,
      "tie_word_embeddings": false}})");
  EXPECT_TRUE(g.tie_word_embeddings);

  EXPECT_THAT(Error(R"({"model_type": "gemma3"})"), HasSubstr("'text_config' is missing"));
  EXPECT_THAT(Error(R"({"model_type": "gemma3", "text_config": [1]})"),
              HasSubstr("'text_config' must be an object"));
  EXPECT_THAT(Error(R"({"model_type": "gemma3", "text_config": {"model_type": "llama"}})"),
              AllOf(HasSubstr("'text_config.model_type'"), HasSubstr("gemma3_text")));
  // A field of text_config is named after it.
  EXPECT_THAT(Error(R"({"model_type": "gemma3", "text_config": {"hidden_size": "big"}})"),
              AllOf(HasSubstr("x/config.json: text_config: "), HasSubstr("'hidden_size'")));
  EXPECT_THAT(Error(R"({"model_type": "gemma3", "eos_token_id": 300000, "text_config": {}})"),
              HasSubstr("x/config.json: field 'eos_token_id' is 300000, outside the vocabulary"));
  EXPECT_THAT(Error(R"({"model_type": "gemma3", "text_config": {"eos_token_id": 300000}})"),
              HasSubstr("x/config.json: text_config: field 'eos_token_id' is 300000"));
  EXPECT_THAT(Error(R"({"model_type": "gemma3", "dtype": "int8", "text_config": {}})"),
              HasSubstr("x/config.json: field 'dtype' is \"int8\""));
}

// Gemma2Config: Gemma 3's defaults without q/k norms, with both caps (null
// turns one off), one rope and every second layer sliding.
TEST(LlamaConfigTest, Gemma2) {
  LlamaConfig g = Parse(Config("gemma2"));
  EXPECT_TRUE(g.gemma);
  EXPECT_FALSE(g.qk_norm);
  EXPECT_FALSE(g.sliding_rope);
  EXPECT_EQ(g.head_dim, 256);
  EXPECT_EQ(g.max_position_embeddings, 8192);
  EXPECT_EQ(g.attn_logit_softcapping, 50.0);
  EXPECT_EQ(g.final_logit_softcapping, 30.0);
  EXPECT_EQ(g.layer_sliding_window, (std::vector<int>{4096, 0, 4096}));
  EXPECT_EQ(g.activation, T5Activation::kGeluPytorchTanh);
  g = Parse(Config("gemma2", R"("attn_logit_softcapping": null, "sliding_window_pattern": 3,
      "rope_scaling": {"rope_type": "yarn", "factor": 2})"));
  EXPECT_FALSE(g.attn_logit_softcapping.has_value());
  EXPECT_EQ(g.layer_sliding_window, (std::vector<int>{4096, 0, 4096}));  // no pattern key
  EXPECT_EQ(g.rope_scaling.type, RopeType::kYarn);
  EXPECT_THAT(Error(Config("gemma2", R"("final_logit_softcapping": 0)")),
              HasSubstr("'final_logit_softcapping' must be positive or null"));
}

// phi3's partial rotation: the dict's factor wins over the top level's,
// int() truncation, odd head and rotated widths,
// longrope's factors sized by the rotated part and its pre-training length
// from the top level (default 4096).
TEST(LlamaConfigTest, Phi3Rotary) {
  LlamaConfig c = Parse(Config("phi3", R"("partial_rotary_factor": 0.5,
      "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.75})"));
  EXPECT_EQ(c.rotary_dim, 12);
  c = Parse(Config("phi3", R"("head_dim": 15, "partial_rotary_factor": 0.7)"));  // 10.5 -> 10
  EXPECT_EQ(c.rotary_dim, 10);
  // Odd widths and none at all, as transformers runs them with the default rope.
  c = Parse(Config("phi3", R"("partial_rotary_factor": 0.35)"));  // 5.6 -> 5
  EXPECT_EQ(c.rotary_dim, 5);
  c = Parse(Config("phi3", R"("rope_parameters": {"partial_rotary_factor": 0.05})"));  // 0.8 -> 0
  EXPECT_EQ(c.rotary_dim, 0);
  c = Parse(Config("phi3", R"("partial_rotary_factor": 0.5, "max_position_embeddings": 8192,
      "rope_scaling": {"type": "su", "short_factor": [1, 1, 1, 1], "long_factor": [2, 2, 2, 2]})"));
  EXPECT_EQ(c.rotary_dim, 8);
  EXPECT_EQ(c.rope_scaling.type, RopeType::kLongrope);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_EQ(c.rope_scaling.long_factor, (std::vector<double>{2, 2, 2, 2}));
}

TEST(LlamaConfigTest, TokenIdsAndDtype) {
  LlamaConfig c = Parse(Config("llama", R"("eos_token_id": [2, 3, 7], "bos_token_id": null,
      "pad_token_id": 0, "torch_dtype": "bfloat16", "architectures": ["LlamaForCausalLM"])"));
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{2, 3, 7}));
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_TRUE(IsLlamaFamilyConfig(Config("qwen2")));
  // Qwen2Config's default of 32 key/value heads does not fit 4 heads.
  EXPECT_THAT(Error(Config("qwen2")), HasSubstr("'num_key_value_heads' (32)"));
  EXPECT_FALSE(IsLlamaFamilyConfig(R"({"model_type": "t5"})"));
  EXPECT_FALSE(IsLlamaFamilyConfig("not json"));
}

}  // namespace
}  // namespace mpt
