#include "worker/model/t5_config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "worker/model/config_fields.h"

namespace mpt {
namespace {

using Json = nlohmann::json;

struct ActivationName {
  const char* name;
  T5Activation activation;
};

constexpr ActivationName kActivations[] = {
    {"relu", T5Activation::kRelu},
    {"gelu", T5Activation::kGelu},
    {"gelu_new", T5Activation::kGeluNew},
    {"gelu_fast", T5Activation::kGeluFast},
    {"gelu_pytorch_tanh", T5Activation::kGeluPytorchTanh},
    {"quick_gelu", T5Activation::kQuickGelu},
    {"silu", T5Activation::kSilu},
    {"swish", T5Activation::kSilu},
    {"tanh", T5Activation::kTanh},
    {"sigmoid", T5Activation::kSigmoid},
    {"gelu_python", T5Activation::kGeluPython},
    {"gelu_python_tanh", T5Activation::kGeluPythonTanh},
    {"gelu_accurate", T5Activation::kGeluAccurate},
    {"gelu_10", T5Activation::kGelu10},
    {"hardswish", T5Activation::kHardswish},
    {"laplace", T5Activation::kLaplace},
    {"leaky_relu", T5Activation::kLeakyRelu},
    {"linear", T5Activation::kLinear},
    {"mish", T5Activation::kMish},
    {"relu2", T5Activation::kRelu2},
    {"relu6", T5Activation::kRelu6},
    {"sqrtsoftplus", T5Activation::kSqrtSoftplus},
};

using FieldReader = ConfigFieldReader;


// Checks the form of feed_forward_proj ("gated-ACT" or "ACT", as
// transformers requires), sets is_gated_act from it and returns ACT as
// transformers reads it.
absl::StatusOr<std::string> ParseFeedForward(const FieldReader& reader, T5Config& config) {
  // transformers: "gated-ACT" or "ACT"; nothing else.
  std::vector<std::string> parts = absl::StrSplit(config.feed_forward_proj, '-');
  std::string act;
  if (parts.size() == 1) {
    act = parts[0];
    config.is_gated_act = false;
  } else if (parts.size() == 2 && parts[0] == "gated") {
    act = parts[1];
    config.is_gated_act = true;
  } else {
    return reader.Error("feed_forward_proj",
                        absl::StrCat("has the unknown value \"", config.feed_forward_proj,
                                     "\" (expected \"ACT\" or \"gated-ACT\", e.g. \"relu\" or "
                                     "\"gated-gelu\")"));
  }
  // The T5 v1.1 checkpoints were trained with the tanh approximation and say
  // "gated-gelu"; transformers keeps that meaning.
  if (config.feed_forward_proj == "gated-gelu") act = "gelu_new";
  return act;
}

}  // namespace

std::string T5KnownActivations() {
  std::vector<std::string> names;
  for (const ActivationName& a : kActivations) names.push_back(a.name);
  return absl::StrJoin(names, ", ");
}

std::optional<T5Activation> T5ActivationFromName(absl::string_view name) {
  for (const ActivationName& a : kActivations) {
    if (name == a.name) return a.activation;
  }
  return std::nullopt;
}

absl::string_view T5ActivationName(T5Activation activation) {
  for (const ActivationName& a : kActivations) {
    if (a.activation == activation) return a.name;
  }
  return "unknown";
}

absl::StatusOr<T5Config> T5Config::FromJson(absl::string_view json_text,
                                            absl::string_view source) {
  ASSIGN_OR_RETURN(Json root, ParseJson(json_text, source));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": the top level must be a JSON object, got ", DescribeJson(root)));
  }
  FieldReader reader(root, source);
  T5Config config;

  const Json* model_type = reader.Get("model_type");
  if (model_type == nullptr) {
    return reader.Error("model_type", "is missing (expected \"t5\", \"mt5\" or \"umt5\")");
  }
  if (!model_type->is_string()) {
    return reader.Error("model_type",
                        absl::StrCat("must be a string, got ", DescribeJson(*model_type)));
  }
  config.model_type = model_type->get<std::string>();
  if (config.model_type != "t5" && config.model_type != "mt5" && config.model_type != "umt5") {
    return reader.Error("model_type",
                        absl::StrCat("is \"", config.model_type,
                                     "\", which is not a supported architecture (supported: "
                                     "\"t5\", \"mt5\", \"umt5\")"));
  }
  const bool mt5 = config.model_type == "mt5";
  // mT5 is T5 v1.1 with a larger vocabulary, UMT5 the same with a bias per
  // layer; transformers' MT5Config and UMT5Config default to the gated
  // feed-forward.
  if (config.model_type != "t5") config.feed_forward_proj = "gated-gelu";
  config.per_layer_position_bias = config.model_type == "umt5";

  ASSIGN_OR_RETURN(config.vocab_size, reader.RequiredSize("vocab_size"));
  ASSIGN_OR_RETURN(config.d_model, reader.RequiredSize("d_model"));
  ASSIGN_OR_RETURN(config.d_kv, reader.RequiredSize("d_kv"));
  ASSIGN_OR_RETURN(config.d_ff, reader.RequiredSize("d_ff"));
  ASSIGN_OR_RETURN(config.num_layers, reader.RequiredSize("num_layers"));
  ASSIGN_OR_RETURN(config.num_decoder_layers,
                   reader.OptionalSize("num_decoder_layers", config.num_layers));
  ASSIGN_OR_RETURN(config.num_heads, reader.RequiredSize("num_heads"));
  ASSIGN_OR_RETURN(config.relative_attention_num_buckets,
                   reader.OptionalSize("relative_attention_num_buckets",
                                       config.relative_attention_num_buckets));
  ASSIGN_OR_RETURN(config.relative_attention_max_distance,
                   reader.OptionalSize("relative_attention_max_distance",
                                       config.relative_attention_max_distance));
  // The bucket formula divides by log(max_distance / max_exact), where
  // max_exact is num_buckets / 4 in the encoder (bidirectional) and
  // num_buckets / 2 in the decoder (causal). At or below the decoder's,
  // transformers maps the farther positions to negative buckets (an index
  // error) or below max_exact; no checkpoint can have been trained with it.
  {
    const int encoder_max_exact = config.relative_attention_num_buckets / 2 / 2;
    const int decoder_max_exact = config.relative_attention_num_buckets / 2;
    if (encoder_max_exact < 1) {
      return reader.Error("relative_attention_num_buckets",
                          absl::StrCat("must be at least 4, got ",
                                       config.relative_attention_num_buckets));
    }
    if (config.relative_attention_max_distance <= decoder_max_exact) {
      return reader.Error(
          "relative_attention_max_distance",
          absl::StrCat("must exceed relative_attention_num_buckets / 2 (", decoder_max_exact,
                       ", the decoder's exact buckets), got ",
                       config.relative_attention_max_distance));
    }
  }

  if (const Json* eps = reader.Get("layer_norm_epsilon")) {
    if (!eps->is_number()) {
      return reader.Error("layer_norm_epsilon",
                          absl::StrCat("must be a number, got ", DescribeJson(*eps)));
    }
    config.layer_norm_epsilon = eps->get<double>();
    if (!(config.layer_norm_epsilon > 0) || !std::isfinite(config.layer_norm_epsilon)) {
      return reader.Error("layer_norm_epsilon",
                          absl::StrCat("must be a positive number, got ", DescribeJson(*eps)));
    }
  }

  if (const Json* ff = reader.Get("feed_forward_proj")) {
    if (!ff->is_string()) {
      return reader.Error("feed_forward_proj",
                          absl::StrCat("must be a string, got ", DescribeJson(*ff)));
    }
    config.feed_forward_proj = ff->get<std::string>();
  }
  // transformers derives dense_act_fn and is_gated_act from feed_forward_proj
  // and writes both into config.json; when config.json has them, it builds
  // the feed-forward from them, whatever feed_forward_proj says.
  for (const char* field : {"dense_act_fn", "is_gated_act"}) {
    if (reader.Present(field) && reader.Get(field) == nullptr) {
      return reader.Error(field,
                          "is null; give a value (it overrides feed_forward_proj) or remove it");
    }
  }
  ASSIGN_OR_RETURN(std::optional<std::string> dense_act_fn, reader.String("dense_act_fn"));
  ASSIGN_OR_RETURN(std::optional<bool> is_gated_act, reader.Bool("is_gated_act"));
  ASSIGN_OR_RETURN(std::string proj_act, ParseFeedForward(reader, config));
  // dense_act_fn, when written, is the activation; feed_forward_proj's is
  // then only checked for its form, as transformers does.
  std::optional<T5Activation> act = T5ActivationFromName(dense_act_fn.value_or(proj_act));
  if (!act.has_value() && dense_act_fn.has_value()) {
    return reader.Error("dense_act_fn",
                        absl::StrCat("has the unknown value \"", *dense_act_fn,
                                     "\" (known: ", T5KnownActivations(), ")"));
  }
  if (!act.has_value()) {
    return reader.Error("feed_forward_proj",
                        absl::StrCat("has the unknown value \"", config.feed_forward_proj,
                                     "\": activation \"", proj_act, "\" is not supported (known: ",
                                     T5KnownActivations(), ")"));
  }
  config.dense_act = *act;
  if (is_gated_act.has_value()) config.is_gated_act = *is_gated_act;

  ASSIGN_OR_RETURN(std::optional<bool> tie, reader.Bool("tie_word_embeddings"));
  config.tie_word_embeddings = tie.value_or(true);
  ASSIGN_OR_RETURN(std::optional<bool> scale, reader.Bool("scale_decoder_outputs"));
  if (mt5) {
    // MT5ForConditionalGeneration never scales the decoder output, whatever
    // tie_word_embeddings says.
    if (scale.value_or(false)) {
      return reader.Error("scale_decoder_outputs",
                          "is true, which mT5 does not have (an mT5 decoder output goes to the "
                          "LM head unscaled); remove the field or set it to false");
    }
    config.scale_decoder_outputs = false;
  } else {
    config.scale_decoder_outputs = scale.value_or(config.tie_word_embeddings);
  }

  ASSIGN_OR_RETURN(std::optional<int> pad, reader.TokenId("pad_token_id"));
  config.pad_token_id = pad.value_or(0);

  if (const Json* eos = reader.Get("eos_token_id")) {
    config.eos_token_ids.clear();
    if (eos->is_array()) {
      if (eos->empty()) return reader.Error("eos_token_id", "must not be an empty list");
      for (const Json& item : *eos) {
        ASSIGN_OR_RETURN(int64_t v, reader.Integer("eos_token_id", item));
        if (v < 0) {
          return reader.Error("eos_token_id", absl::StrCat("must not be negative, got ", v));
        }
        config.eos_token_ids.push_back(static_cast<int>(v));
      }
    } else {
      ASSIGN_OR_RETURN(std::optional<int> v, reader.TokenId("eos_token_id"));
      config.eos_token_ids.push_back(*v);
    }
    config.eos_token_id = config.eos_token_ids.front();
  }

  ASSIGN_OR_RETURN(std::optional<int> start, reader.TokenId("decoder_start_token_id"));
  // transformers' MT5Config and UMT5Config default it to 0; T5Config has no
  // default (transformers then cannot shift labels), and T5 starts with the
  // pad token.
  config.decoder_start_token_id =
      start.value_or(config.model_type == "t5" ? config.pad_token_id : 0);

  for (auto [name, id] : {std::pair<const char*, int>{"pad_token_id", config.pad_token_id},
                          {"decoder_start_token_id", config.decoder_start_token_id}}) {
    if (id >= config.vocab_size) {
      return reader.Error(name, absl::StrCat("is ", id, ", outside the vocabulary (vocab_size ",
                                             config.vocab_size, ")"));
    }
  }
  for (int id : config.eos_token_ids) {
    if (id >= config.vocab_size) {
      return reader.Error("eos_token_id", absl::StrCat("is ", id, ", outside the vocabulary (vocab_size ",
                                                       config.vocab_size, ")"));
    }
  }
  return config;
}

absl::StatusOr<T5Config> T5Config::FromJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromJson(text, path);
}

}  // namespace mpt
