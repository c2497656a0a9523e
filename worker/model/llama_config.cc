#include "worker/model/llama_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "worker/model/config_fields.h"

namespace mpt {
namespace {

using Json = nlohmann::json;

struct Family {
  const char* model_type;
  const char* causal_lm_class;
  // transformers' defaults when config.json omits the field.
  int default_max_position_embeddings;
  // 0: num_attention_heads (LlamaConfig); else the class default.
  int default_num_key_value_heads;
  double default_rms_norm_eps = 1e-6;
  // Token ids when config.json does not have the field (-1: none).
  int default_bos = 1;
  int default_eos = 2;
  int default_pad = -1;
};

constexpr Family kFamilies[] = {
    {"llama", "LlamaForCausalLM", 2048, 0},
    {"qwen2", "Qwen2ForCausalLM", 32768, 32, 1e-6, -1, -1},
    // Qwen2's config fields, plus attention_bias, head_dim (class default
    // 128) and per-head RMS norms of q and k.
    {"qwen3", "Qwen3ForCausalLM", 32768, 32, 1e-6, -1, -1},
    {"mistral", "MistralForCausalLM", 4096 * 32, 8},
    // Mistral's weights and defaults; sliding windows per layer_types.
    {"ministral", "MinistralForCausalLM", 4096 * 32, 8},
    // Fused qkv_proj and gate_up_proj, partial rotary embeddings, rope types
    // default and longrope only.
    {"phi3", "Phi3ForCausalLM", 4096, 0, 1e-5, 1, 32000, 32000},
    // Gemma 3's text model (gemma-3-270m, gemma-3-1b): scaled embeddings,
    // (1 + w) norms around attention and MLP, q/k norms, a rope per layer
    // type, query_pre_attn_scalar, an optional final logit cap.
    {"gemma3_text", "Gemma3ForCausalLM", 131072, 4, 1e-6, 2, 1, 0},
    // Gemma 2: Gemma 3's layout without q/k norms and with one rope, its
    // attention scores and final logits capped (50 and 30 unless told).
    {"gemma2", "Gemma2ForCausalLM", 8192, 4, 1e-6, 2, 1, 0},
    // Gemma 1: Llama's layout, Gemma's embeddings and norms.
    {"gemma", "GemmaForCausalLM", 8192, 16, 1e-6, 2, 1, 0},
};

std::string KnownModelTypes() {
  std::vector<std::string> names;
  for (const Family& f : kFamilies) names.push_back(absl::StrCat("\"", f.model_type, "\""));
  names.push_back("\"gemma3\" (its text model)");
  return absl::StrJoin(names, ", ");
}

using FieldReader = ConfigFieldReader;


// The rotary settings: the scaling dict comes from rope_scaling (older files)
// when it is a non-empty object, else from rope_parameters (transformers 5);
// rope_theta from that dict, else the top level, else 10000, as
// transformers' convert_rope_params_to_dict and standardize_rope_params.
absl::Status ParseRope(const FieldReader& top, absl::string_view source,
                       LlamaConfig& config) {
  const Json* dict = nullptr;
  std::string name;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const Json* value = top.Get(key);
    if (value == nullptr) continue;
    if (!value->is_object()) {
      return top.Error(key, absl::StrCat("must be an object, got ", DescribeJson(*value)));
    }
    if (value->empty()) continue;  // falsy in Python: the next one counts
    dict = value;
    name = key;
    break;
  }

  const bool phi3 = config.model_type == "phi3";
  ASSIGN_OR_RETURN(std::optional<double> top_theta, top.Number("rope_theta"));
  config.rope_theta = top_theta.value_or(10000.0);
  if (top_theta.has_value() && !(*top_theta > 0)) {
    return top.Error("rope_theta", absl::StrCat("must be positive, got ", *top_theta));
  }
  // The part of each head that rotates: the dict's partial_rotary_factor,
  // else the top level's (Phi3Config's setdefault), times head_dim,
  // truncated as Python's int(). Only phi3 applies it; the other classes'
  // rotation needs the whole head.
  absl::Status odd_rotary;  // set when the rotated width is odd
  auto apply_partial = [&](const FieldReader& where,
                           std::optional<double> factor) -> absl::Status {
    config.rotary_dim = config.head_dim;
    if (!factor.has_value() || *factor == 1.0) {
      if (config.head_dim % 2 == 0) return absl::OkStatus();
      return top.Error("head_dim", absl::StrCat("must be even to rotate the whole head, got ",
                                                config.head_dim));
    }
    if (!phi3) {
      return where.Error("partial_rotary_factor",
                         absl::StrCat("is ", *factor,
                                      "; only 1 (rotate the whole head) is supported for this "
                                      "architecture"));
    }
    if (!(*factor > 0 && *factor <= 1)) {
      return where.Error("partial_rotary_factor",
                         absl::StrCat("must be in (0, 1], got ", *factor));
    }
    // An odd width w rotates w + 1 dimensions at frequencies base^(-2i / w),
    // and a width of 0 none, as transformers computes them (longrope, whose
    // factor lists need an even width, is checked with its lists).
    config.rotary_dim = static_cast<int>(config.head_dim * *factor);
    if (config.rotary_dim % 2 != 0) {
      odd_rotary = where.Error(
          "partial_rotary_factor",
          absl::StrCat("(", *factor, ") times head_dim (", config.head_dim, ") gives ",
                       config.rotary_dim,
                       " rotary dimensions; rope type \"longrope\" needs an even number (its "
                       "factor lists hold one number per pair)"));
    }
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(std::optional<double> top_partial, top.Number("partial_rotary_factor"));
  RopeScaling& rope = config.rope_scaling;
  rope = RopeScaling();
  // Phi3Config always has a top-level original_max_position_embeddings
  // (default 4096); the other classes fall back to max_position_embeddings.
  rope.original_max_position_embeddings = config.max_position_embeddings;
  if (phi3) {
    ASSIGN_OR_RETURN(rope.original_max_position_embeddings,
                     top.OptionalSize("original_max_position_embeddings", 4096));
  }
  if (dict == nullptr) return apply_partial(top, top_partial);

  FieldReader r(*dict, source, name + ".");
  for (const char* layer_type : {"full_attention", "sliding_attention"}) {
    if (dict->contains(layer_type)) {
      return r.Error(layer_type,
                     "is present: rotary settings per layer type are not supported for this "
                     "architecture (one dict of rope_type, rope_theta, factor, ... is)");
    }
  }
  std::string type_name = "default";
  std::string type_field = "rope_type";
  if (r.Get("rope_type") != nullptr) {
    ASSIGN_OR_RETURN(std::optional<std::string> t, r.String("rope_type"));
    type_name = *t;
  } else if (r.Get("type") != nullptr) {
    ASSIGN_OR_RETURN(std::optional<std::string> t, r.String("type"));
    type_name = *t;
    type_field = "type";
  }
  if (phi3 && (type_name == "su" || type_name == "yarn")) {
    type_name = "longrope";  // Phi3Config's older names for it
  }
  if (phi3 && type_name != "default" && type_name != "longrope") {
    return r.Error(type_field, absl::StrCat("is \"", type_name,
                                            "\"; phi3 supports \"default\" and \"longrope\" "
                                            "(also written \"su\" or \"yarn\")"));
  }
  if (type_name == "default") {
    rope.type = RopeType::kDefault;
  } else if (type_name == "linear") {
    rope.type = RopeType::kLinear;
  } else if (type_name == "dynamic") {
    rope.type = RopeType::kDynamic;
  } else if (type_name == "llama3") {
    rope.type = RopeType::kLlama3;
  } else if (type_name == "yarn") {
    rope.type = RopeType::kYarn;
  } else if (type_name == "longrope") {
    rope.type = RopeType::kLongrope;
  } else {
    return r.Error(type_field,
                   absl::StrCat("is \"", type_name,
                                "\", which is not supported (supported: \"default\", \"linear\", "
                                "\"dynamic\", \"llama3\", \"yarn\", \"longrope\")"));
  }

  ASSIGN_OR_RETURN(std::optional<double> theta, r.Number("rope_theta"));
  if (theta.has_value()) {
    if (!(*theta > 0)) return r.Error("rope_theta", absl::StrCat("must be positive, got ", *theta));
    config.rope_theta = *theta;
  }
  ASSIGN_OR_RETURN(std::optional<double> partial, r.Number("partial_rotary_factor"));
  RETURN_IF_ERROR(partial.has_value() ? apply_partial(r, partial)
                                      : apply_partial(top, top_partial));

  const bool needs_original = rope.type == RopeType::kLlama3 || rope.type == RopeType::kYarn ||
                              rope.type == RopeType::kLongrope;
  if (needs_original) {
    // A top-level original_max_position_embeddings wins (transformers'
    // standardisation), then the dict's, then max_position_embeddings.
    if (phi3) {
      // set above
    } else if (top.Get("original_max_position_embeddings") != nullptr) {
      ASSIGN_OR_RETURN(rope.original_max_position_embeddings,
                       top.RequiredSize("original_max_position_embeddings"));
    } else {
      ASSIGN_OR_RETURN(rope.original_max_position_embeddings,
                       r.OptionalSize("original_max_position_embeddings",
                                      config.max_position_embeddings));
    }
  }

  auto required_factor = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::optional<double> factor, r.Number("factor"));
    if (!factor.has_value()) {
      return r.Error("factor", absl::StrCat("is missing (required by rope type \"", type_name,
                                            "\")"));
    }
    if (!(*factor > 0)) return r.Error("factor", absl::StrCat("must be positive, got ", *factor));
    rope.factor = *factor;
    return absl::OkStatus();
  };

  // yarn and longrope: `factor` (absent or null: max_position_embeddings /
  // original_max_position_embeddings) and an optional attention_factor,
  // both positive.
  auto factor_and_attention_factor = [&](std::optional<double> factor) -> absl::Status {
    rope.factor = factor.has_value() ? *factor
                                     : static_cast<double>(config.max_position_embeddings) /
                                           rope.original_max_position_embeddings;
    if (!(rope.factor > 0)) {
      return r.Error("factor", absl::StrCat("must be positive, got ", rope.factor));
    }
    ASSIGN_OR_RETURN(rope.attention_factor, r.Number("attention_factor"));
    if (rope.attention_factor.has_value() && !(*rope.attention_factor > 0)) {
      return r.Error("attention_factor",
                     absl::StrCat("must be positive, got ", *rope.attention_factor));
    }
    return absl::OkStatus();
  };

  switch (rope.type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear:
    case RopeType::kDynamic:
      RETURN_IF_ERROR(required_factor());
      break;
    case RopeType::kLlama3: {
      RETURN_IF_ERROR(required_factor());
      for (const char* key : {"low_freq_factor", "high_freq_factor"}) {
        ASSIGN_OR_RETURN(std::optional<double> v, r.Number(key));
        if (!v.has_value()) {
          return r.Error(key, "is missing (required by rope type \"llama3\")");
        }
        if (!(*v > 0)) return r.Error(key, absl::StrCat("must be positive, got ", *v));
        (std::string(key) == "low_freq_factor" ? rope.low_freq_factor : rope.high_freq_factor) = *v;
      }
      if (!(rope.high_freq_factor > rope.low_freq_factor)) {
        return r.Error("high_freq_factor",
                       absl::StrCat("(", rope.high_freq_factor,
                                    ") must exceed low_freq_factor (", rope.low_freq_factor, ")"));
      }
      break;
    }
    case RopeType::kYarn: {
      ASSIGN_OR_RETURN(std::optional<double> factor, r.Number("factor"));
      if (!r.Present("factor")) {
        return r.Error("factor", "is missing (required by rope type \"yarn\")");
      }
      // null: max_position_embeddings / original_max_position_embeddings.
      RETURN_IF_ERROR(factor_and_attention_factor(factor));
      // transformers: `get("beta_fast") or 32`, so 0 means the default too.
      ASSIGN_OR_RETURN(std::optional<double> fast, r.Number("beta_fast"));
      ASSIGN_OR_RETURN(std::optional<double> slow, r.Number("beta_slow"));
      rope.beta_fast = fast.has_value() && *fast != 0 ? *fast : 32.0;
      rope.beta_slow = slow.has_value() && *slow != 0 ? *slow : 1.0;
      ASSIGN_OR_RETURN(rope.mscale, r.Number("mscale"));
      ASSIGN_OR_RETURN(rope.mscale_all_dim, r.Number("mscale_all_dim"));
      // transformers: `if rope_parameters.get("truncate", True):`, so only an
      // absent key means true; "truncate": null is falsy, as false.
      ASSIGN_OR_RETURN(std::optional<bool> truncate, r.Bool("truncate"));
      rope.truncate = truncate.value_or(!r.Present("truncate"));
      break;
    }
    case RopeType::kLongrope: {
      // factor: absent or null means max_position_embeddings /
      // original_max_position_embeddings (transformers' default).
      ASSIGN_OR_RETURN(std::optional<double> factor, r.Number("factor"));
      RETURN_IF_ERROR(factor_and_attention_factor(factor));
      RETURN_IF_ERROR(odd_rotary);
      const size_t half = static_cast<size_t>(config.rotary_dim / 2);
      const char* half_name =
          config.rotary_dim == config.head_dim ? "head_dim / 2" : "the rotary dimensions / 2";
      for (const char* key : {"short_factor", "long_factor"}) {
        const Json* list = r.Get(key);
        if (list == nullptr || !list->is_array()) {
          return r.Error(key, absl::StrCat(list == nullptr ? "is missing" : "must be a list",
                                           " (rope type \"longrope\" needs ", half_name, " = ",
                                           half, " numbers)"));
        }
        if (list->size() != half) {
          return r.Error(key, absl::StrCat("has ", list->size(), " numbers; ", half_name, " = ",
                                           half, " are needed"));
        }
        std::vector<double>& out =
            std::string(key) == "short_factor" ? rope.short_factor : rope.long_factor;
        out.clear();
        for (const Json& item : *list) {
          if (!item.is_number() || !std::isfinite(item.get<double>()) || !(item.get<double>() > 0)) {
            return r.Error(key, absl::StrCat("must hold positive numbers, got ", DescribeJson(item)));
          }
          out.push_back(item.get<double>());
        }
      }
      break;
    }
  }
  return absl::OkStatus();
}

// One layer type's rotary dict of Gemma 3 ("default" or "linear"), applied
// over what `theta` and `scaling` hold (dict.update(): keys it lacks keep
// their values). `has_factor` says whether any dict gave a factor.
absl::Status UpdateGemma3Rope(const FieldReader& r, double& theta, RopeScaling& scaling,
                              bool& has_factor) {
  for (const char* key : {"rope_type", "type"}) {
    if (r.Get(key) == nullptr) continue;
    ASSIGN_OR_RETURN(std::optional<std::string> t, r.String(key));
    if (*t == "linear") {
      scaling.type = RopeType::kLinear;
    } else if (*t == "default") {
      scaling.type = RopeType::kDefault;
    } else {
      return r.Error(key, absl::StrCat("is \"", t->substr(0, 64),
                                       "\"; Gemma 3 supports \"default\" and \"linear\" here"));
    }
    break;  // rope_type wins over type
  }
  ASSIGN_OR_RETURN(std::optional<double> factor, r.Number("factor"));
  if (factor.has_value()) {
    if (!(*factor > 0)) return r.Error("factor", absl::StrCat("must be positive, got ", *factor));
    scaling.factor = *factor;
    has_factor = true;
  }
  ASSIGN_OR_RETURN(std::optional<double> t, r.Number("rope_theta"));
  if (t.has_value()) {
    if (!(*t > 0)) return r.Error("rope_theta", absl::StrCat("must be positive, got ", *t));
    theta = *t;
  }
  ASSIGN_OR_RETURN(std::optional<double> partial, r.Number("partial_rotary_factor"));
  if (partial.has_value() && *partial != 1.0) {
    return r.Error("partial_rotary_factor",
                   absl::StrCat("is ", *partial, "; only 1 is supported for Gemma 3"));
  }
  return absl::OkStatus();
}

// Gemma 2 and 3's own fields: query_pre_attn_scalar, the logit caps
// (final_logit_softcapping; attn_logit_softcapping, which only Gemma 2's
// attention applies; absent: Gemma2Config's 30 and 50, none for Gemma 3;
// null: none); use_bidirectional_attention is refused.
absl::Status ParseGemma(const FieldReader& top, LlamaConfig& config) {
  const bool gemma2 = config.model_type == "gemma2";
  config.gemma = true;
  config.sandwich_norms = true;
  ASSIGN_OR_RETURN(std::optional<bool> bidirectional, top.Bool("use_bidirectional_attention"));
  if (bidirectional.value_or(false)) {
    return top.Error("use_bidirectional_attention",
                     "is true: only causal (generative) Gemma models are supported");
  }
  ASSIGN_OR_RETURN(double scalar, top.PositiveNumber("query_pre_attn_scalar", 256));
  config.attention_scale = std::pow(scalar, -0.5);
  auto cap = [&](const char* field, std::optional<double> fallback,
                 std::optional<double>& out) -> absl::Status {
    ASSIGN_OR_RETURN(out, top.Number(field));
    if (!top.Present(field)) out = fallback;
    if (out.has_value() && !(*out > 0)) {
      return top.Error(field, absl::StrCat("must be positive or null, got ", *out));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(cap("final_logit_softcapping",
                      gemma2 ? std::optional<double>(30.0) : std::nullopt,
                      config.final_logit_softcapping));
  if (gemma2) {
    RETURN_IF_ERROR(cap("attn_logit_softcapping", 50.0, config.attn_logit_softcapping));
  }
  return absl::OkStatus();
}

// Gemma3TextConfig's rotary dict per layer type (rope_parameters
// {"full_attention": {...}, "sliding_attention": {...}}, or the older
// rope_theta / rope_local_base_freq / rope_scaling, the last for the full
// layers).
absl::Status ParseGemma3Rope(const FieldReader& top, absl::string_view source,
                             LlamaConfig& config) {
  config.rotary_dim = config.head_dim;
  config.sliding_rope = true;
  // transformers' order: the per-type dicts, rope_scaling over the full
  // layers' dict, then the top-level thetas where a dict has none.
  ASSIGN_OR_RETURN(std::optional<double> global_theta, top.Number("rope_theta"));
  ASSIGN_OR_RETURN(std::optional<double> local_theta, top.Number("rope_local_base_freq"));
  std::optional<double> dict_theta[2];  // full, sliding
  double theta[2] = {0, 0};
  RopeScaling scaling[2];
  bool has_factor[2] = {false, false};
  auto update = [&](const FieldReader& r, int which) -> absl::Status {
    double t = 0;
    RETURN_IF_ERROR(UpdateGemma3Rope(r, t, scaling[which], has_factor[which]));
    if (t > 0) dict_theta[which] = t;
    return absl::OkStatus();
  };
  if (const Json* params = top.Get("rope_parameters")) {
    if (!params->is_object()) {
      return top.Error("rope_parameters",
                       absl::StrCat("must be an object, got ", DescribeJson(*params)));
    }
    for (auto it = params->begin(); it != params->end(); ++it) {
      if (it.key() != "full_attention" && it.key() != "sliding_attention") {
        return top.Error("rope_parameters",
                         absl::StrCat("has the key \"", it.key().substr(0, 64),
                                      "\"; Gemma 3 keeps one dict per layer type "
                                      "(\"full_attention\", \"sliding_attention\")"));
      }
      if (it->is_null()) continue;
      if (!it->is_object()) {
        return top.Error(absl::StrCat("rope_parameters.", it.key()),
                         absl::StrCat("must be an object, got ", DescribeJson(*it)));
      }
      FieldReader r(*it, source, absl::StrCat("rope_parameters.", it.key(), "."));
      RETURN_IF_ERROR(update(r, it.key() == "full_attention" ? 0 : 1));
    }
  }
  if (const Json* rope_scaling = top.Get("rope_scaling")) {
    if (!rope_scaling->is_object()) {
      return top.Error("rope_scaling",
                       absl::StrCat("must be an object, got ", DescribeJson(*rope_scaling)));
    }
    FieldReader r(*rope_scaling, source, "rope_scaling.");
    RETURN_IF_ERROR(update(r, 0));
  }
  theta[0] = dict_theta[0].value_or(global_theta.value_or(1e6));
  theta[1] = dict_theta[1].value_or(local_theta.value_or(1e4));
  for (int which : {0, 1}) {
    const char* name = which == 0 ? "rope_theta" : "rope_local_base_freq";
    if (!(theta[which] > 0)) {
      return top.Error(name, absl::StrCat("must be positive, got ", theta[which]));
    }
    if (scaling[which].type == RopeType::kLinear && !has_factor[which]) {
      return top.Error(which == 0 ? "rope_parameters.full_attention.factor"
                                  : "rope_parameters.sliding_attention.factor",
                       "is missing (required by rope type \"linear\")");
    }
  }
  config.rope_theta = theta[0];
  config.sliding_rope_theta = theta[1];
  config.rope_scaling = scaling[0];
  config.sliding_rope_scaling = scaling[1];
  ASSIGN_OR_RETURN(std::optional<double> partial, top.Number("partial_rotary_factor"));
  if (partial.has_value() && *partial != 1.0) {
    return top.Error("partial_rotary_factor", absl::StrCat("is ", *partial,
                                                           "; only 1 is supported for Gemma 3"));
  }
  return absl::OkStatus();
}

absl::Status ParseEos(const FieldReader& reader, const Json* eos, LlamaConfig& config) {
  config.eos_token_ids.clear();
  if (eos == nullptr) return absl::OkStatus();
  if (eos->is_array()) {
    for (const Json& item : *eos) {
      ASSIGN_OR_RETURN(std::optional<int> v, reader.TokenId("eos_token_id", item));
      config.eos_token_ids.push_back(*v);
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::optional<int> v, reader.TokenId("eos_token_id", *eos));
  config.eos_token_ids.push_back(*v);
  return absl::OkStatus();
}

}  // namespace

absl::string_view RopeTypeName(RopeType type) {
  switch (type) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kLlama3: return "llama3";
    case RopeType::kYarn: return "yarn";
    case RopeType::kLongrope: return "longrope";
  }
  return "unknown";
}

namespace {

// Gemma 3's multimodal checkpoints (model_type "gemma3",
// Gemma3ForConditionalGeneration: gemma-3-4b and larger): the language
// model is text_config, a gemma3_text config; the top level's token ids,
// dtype and tie_word_embeddings (Gemma3Config's, default true) are the
// model's. The vision tower is not loaded: prompts and inputs are text.
// `from_top` gets the names of the fields taken from the top level.
absl::StatusOr<Json> MultimodalGemma3TextConfig(const Json& root, absl::string_view source,
                                                std::vector<std::string>* from_top) {
  FieldReader reader(root, source);
  const Json* text = reader.Get("text_config");
  if (text == nullptr) {
    return reader.Error("text_config",
                        "is missing (model_type \"gemma3\" keeps its language model there)");
  }
  if (!text->is_object()) {
    return reader.Error("text_config",
                        absl::StrCat("must be an object, got ", DescribeJson(*text)));
  }
  Json merged = *text;
  auto type = merged.find("model_type");
  if (type != merged.end() && *type != "gemma3_text") {
    return reader.Error("text_config.model_type",
                        absl::StrCat("is ", DescribeJson(*type), " (expected \"gemma3_text\")"));
  }
  merged["model_type"] = "gemma3_text";
  merged.erase("architectures");
  // The released files' text_config lists only what differs from
  // Gemma3TextConfig's defaults (gemma-3-4b: no vocab_size, no heads).
  const std::pair<const char*, int> class_defaults[] = {
      {"vocab_size", 262208},    {"hidden_size", 2304},      {"intermediate_size", 9216},
      {"num_hidden_layers", 26}, {"num_attention_heads", 8},
  };
  for (const auto& [key, value] : class_defaults) {
    if (!merged.contains(key)) merged[key] = value;
  }
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
                          "tie_word_embeddings"}) {
    if (!root.contains(key)) continue;
    merged[key] = root[key];
    from_top->push_back(key);
  }
  // Gemma3Config ties unless told otherwise, whatever text_config says.
  if (!root.contains("tie_word_embeddings")) merged["tie_word_embeddings"] = true;
  return merged;
}

// config.json's object as one family's config; errors start with `source`.
absl::StatusOr<LlamaConfig> ParseObject(const Json& root, absl::string_view source);

}  // namespace

absl::StatusOr<LlamaConfig> LlamaConfig::FromJson(absl::string_view json_text,
                                                  absl::string_view source) {
  ASSIGN_OR_RETURN(Json top, ParseJson(json_text, source));
  if (!top.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": the top level must be a JSON object, got ", DescribeJson(top)));
  }
  if (!top.contains("model_type") || top["model_type"] != "gemma3") return ParseObject(top, source);

  std::vector<std::string> from_top;
  ASSIGN_OR_RETURN(Json text, MultimodalGemma3TextConfig(top, source, &from_top));
  const std::string text_source = absl::StrCat(source, ": text_config");
  absl::StatusOr<LlamaConfig> config = ParseObject(text, text_source);
  if (!config.ok()) {
    // A field taken from the top level is named there.
    std::string message(config.status().message());
    for (const std::string& key : from_top) {
      const std::string in_text = absl::StrCat(text_source, ": field '", key, "'");
      if (absl::StartsWith(message, in_text)) {
        message = absl::StrCat(source, ": field '", key, "'", message.substr(in_text.size()));
      }
    }
    return absl::InvalidArgumentError(message);
  }
  config->multimodal_gemma3 = true;
  // Gemma3ForConditionalGeneration's head does not apply text_config's
  // final_logit_softcapping (transformers 5.24); nor does it here.
  config->final_logit_softcapping.reset();
  return config;
}

namespace {

absl::StatusOr<LlamaConfig> ParseObject(const Json& root, absl::string_view source) {
  FieldReader reader(root, source);
  LlamaConfig config;

  ASSIGN_OR_RETURN(std::optional<std::string> model_type, reader.String("model_type"));
  if (!model_type.has_value()) {
    return reader.Error("model_type", absl::StrCat("is missing (expected one of ",
                                                   KnownModelTypes(), ")"));
  }
  const Family* family = nullptr;
  for (const Family& f : kFamilies) {
    if (*model_type == f.model_type) family = &f;
  }
  if (family == nullptr) {
    return reader.Error("model_type",
                        absl::StrCat("is \"", *model_type,
                                     "\", which is not a supported decoder-only architecture "
                                     "(supported: ",
                                     KnownModelTypes(), ")"));
  }
  config.model_type = family->model_type;

  if (const Json* archs = reader.Get("architectures")) {
    if (!archs->is_array()) {
      return reader.Error("architectures",
                          absl::StrCat("must be a list of class names, got ", DescribeJson(*archs)));
    }
    bool causal_lm = archs->empty();
    std::vector<std::string> names;
    for (const Json& a : *archs) {
      if (!a.is_string()) {
        return reader.Error("architectures",
                            absl::StrCat("must hold class names, got ", DescribeJson(a)));
      }
      names.push_back(a.get<std::string>());
      for (const Family& f : kFamilies) {
        if (a.get<std::string>() == f.causal_lm_class) causal_lm = true;
      }
    }
    if (!causal_lm) {
      return reader.Error(
          "architectures",
          absl::StrCat("is [", absl::StrJoin(names, ", "), "]: a causal language model (",
                       family->causal_lm_class,
                       ") is required, with its lm_head (or a tied embedding)"));
    }
  }

  ASSIGN_OR_RETURN(config.vocab_size, reader.RequiredSize("vocab_size"));
  ASSIGN_OR_RETURN(config.hidden_size, reader.RequiredSize("hidden_size"));
  ASSIGN_OR_RETURN(config.intermediate_size, reader.RequiredSize("intermediate_size"));
  ASSIGN_OR_RETURN(config.num_hidden_layers, reader.RequiredSize("num_hidden_layers"));
  ASSIGN_OR_RETURN(config.num_attention_heads, reader.RequiredSize("num_attention_heads"));
  // A null num_key_value_heads means num_attention_heads; an absent one is
  // the class default (LlamaConfig: num_attention_heads; Qwen2Config: 32;
  // MistralConfig: 8).
  if (reader.Present("num_key_value_heads") || family->default_num_key_value_heads == 0) {
    ASSIGN_OR_RETURN(config.num_key_value_heads,
                     reader.OptionalSize("num_key_value_heads", config.num_attention_heads));
  } else {
    config.num_key_value_heads = family->default_num_key_value_heads;
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return reader.Error("num_key_value_heads",
                        absl::StrCat("(", config.num_key_value_heads,
                                     ") must divide num_attention_heads (",
                                     config.num_attention_heads, ")"));
  }
  if (reader.Get("head_dim") != nullptr) {
    ASSIGN_OR_RETURN(config.head_dim, reader.RequiredSize("head_dim"));
  } else if (config.model_type == "qwen3") {
    config.head_dim = 128;  // Qwen3Config's default, whatever hidden_size is
  } else if (config.model_type == "gemma3_text" || config.model_type == "gemma2" ||
             config.model_type == "gemma") {
    config.head_dim = 256;  // the Gemma configs' default
  } else {
    if (config.hidden_size % config.num_attention_heads != 0) {
      return reader.Error("num_attention_heads",
                          absl::StrCat("(", config.num_attention_heads,
                                       ") must divide hidden_size (", config.hidden_size,
                                       ") when head_dim is not given"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  // phi3 rotates part of a head: ParseRope checks that part.
  if (config.head_dim % 2 != 0 && config.model_type != "phi3") {
    return reader.Error("head_dim", absl::StrCat("must be even for rotary embeddings, got ",
                                                 config.head_dim));
  }
  ASSIGN_OR_RETURN(config.max_position_embeddings,
                   reader.OptionalSize("max_position_embeddings",
                                       family->default_max_position_embeddings));
  ASSIGN_OR_RETURN(config.rms_norm_eps,
                   reader.PositiveNumber("rms_norm_eps", family->default_rms_norm_eps));

  const bool gemma3 = config.model_type == "gemma3_text";
  const bool gemma = gemma3 || config.model_type == "gemma2";
  const bool gemma1 = config.model_type == "gemma";
  if (gemma) RETURN_IF_ERROR(ParseGemma(reader, config));
  if (gemma1) {
    config.gemma = true;
    ASSIGN_OR_RETURN(std::optional<bool> bidirectional,
                     reader.Bool("use_bidirectional_attention"));
    if (bidirectional.value_or(false)) {
      return reader.Error("use_bidirectional_attention",
                          "is true: only causal (generative) Gemma models are supported");
    }
  }
  if (gemma3) {
    RETURN_IF_ERROR(ParseGemma3Rope(reader, source, config));
  } else {
    RETURN_IF_ERROR(ParseRope(reader, source, config));
  }

  // Gemma's configs name the activation hidden_activation.
  const char* act_field = gemma ? "hidden_activation" : "hidden_act";
  ASSIGN_OR_RETURN(std::optional<std::string> act, reader.String(act_field));
  config.hidden_act = act.value_or(gemma || gemma1 ? "gelu_pytorch_tanh" : "silu");
  // GemmaConfig reads its released files' "gelu" as the tanh approximation.
  if (gemma1 && config.hidden_act == "gelu") config.hidden_act = "gelu_pytorch_tanh";
  std::optional<T5Activation> activation = T5ActivationFromName(config.hidden_act);
  if (!activation.has_value()) {
    return reader.Error(act_field, absl::StrCat("has the unknown value \"", config.hidden_act,
                                                "\" (known: ", T5KnownActivations(), ")"));
  }
  config.activation = *activation;

  if (config.model_type == "llama") {
    ASSIGN_OR_RETURN(std::optional<bool> attention_bias, reader.Bool("attention_bias"));
    ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, reader.Bool("mlp_bias"));
    config.qkv_bias = config.o_bias = attention_bias.value_or(false);
    config.mlp_bias = mlp_bias.value_or(false);
  } else if (config.model_type == "qwen2") {
    config.qkv_bias = true;
    config.o_bias = false;
    config.mlp_bias = false;
  } else if (config.model_type == "qwen3" || gemma || gemma1) {
    ASSIGN_OR_RETURN(std::optional<bool> attention_bias, reader.Bool("attention_bias"));
    config.qkv_bias = config.o_bias = attention_bias.value_or(false);
    config.mlp_bias = false;
    config.qk_norm = config.model_type == "qwen3" || gemma3;
  }

  // Sliding windows.
  config.layer_sliding_window.assign(config.num_hidden_layers, 0);
  // layer_types (a list of num_hidden_layers "full_attention" /
  // "sliding_attention"; absent or null: none): `window` on the sliding
  // layers. Returns whether the list was there.
  auto apply_layer_types = [&](int window) -> absl::StatusOr<bool> {
    const Json* types = reader.Get("layer_types");
    if (types == nullptr) return false;
    if (!types->is_array() || types->size() != static_cast<size_t>(config.num_hidden_layers)) {
      return reader.Error("layer_types",
                          absl::StrCat("must be a list of num_hidden_layers (",
                                       config.num_hidden_layers, ") layer types"));
    }
    for (size_t i = 0; i < types->size(); ++i) {
      const Json& t = (*types)[i];
      if (!t.is_string() || (t.get<std::string>() != "full_attention" &&
                             t.get<std::string>() != "sliding_attention")) {
        return reader.Error("layer_types",
                            absl::StrCat("entry ", i, " is ", DescribeJson(t),
                                         " (expected \"full_attention\" or "
                                         "\"sliding_attention\")"));
      }
      if (t.get<std::string>() == "sliding_attention") config.layer_sliding_window[i] = window;
    }
    return true;
  };
  if (config.model_type == "mistral" || config.model_type == "ministral") {
    // MistralConfig and MinistralConfig: sliding_window defaults to 4096;
    // null turns it off.
    int window = 4096;
    if (reader.Present("sliding_window")) {
      ASSIGN_OR_RETURN(window, reader.OptionalSize("sliding_window", 0));
    }
    // MistralForCausalLM slides on every layer. A config.json with
    // layer_types, though, transformers' Auto classes load as "ministral"
    // (MinistralForCausalLM, the same weights), which slides only on the
    // layers marked "sliding_attention"; that is what loading the folder
    // with AutoModelForCausalLM computes, so it is what counts here.
    // Without the list MinistralConfig slides on every layer, as Mistral.
    ASSIGN_OR_RETURN(bool listed, apply_layer_types(window));
    if (!listed) config.layer_sliding_window.assign(config.num_hidden_layers, window);
  } else if (gemma) {
    // Gemma2Config / Gemma3TextConfig: sliding_window 4096 unless told, on
    // the layers layer_types marks "sliding_attention"; without the list
    // every second layer (Gemma 2) or every sliding_window_pattern-th
    // (Gemma 3, default 6) is a full one.
    int window = 4096;
    if (reader.Present("sliding_window")) {
      if (reader.Get("sliding_window") == nullptr) {
        return reader.Error("sliding_window",
                            "is null; Gemma's sliding layers need a window size");
      }
      ASSIGN_OR_RETURN(window, reader.RequiredSize("sliding_window"));
    }
    ASSIGN_OR_RETURN(bool listed, apply_layer_types(window));
    if (!listed) {
      int pattern = 2;
      if (gemma3) {
        ASSIGN_OR_RETURN(pattern, reader.OptionalSize("sliding_window_pattern", 6));
      }
      for (int i = 0; i < config.num_hidden_layers; ++i) {
        if ((i + 1) % pattern != 0) config.layer_sliding_window[i] = window;
      }
    }
  } else if (config.model_type == "phi3") {
    // Phi3Config: sliding_window defaults to null; when set, every layer
    // slides (Phi3Model has no per-layer types).
    ASSIGN_OR_RETURN(int window, reader.OptionalSize("sliding_window", 0));
    config.layer_sliding_window.assign(config.num_hidden_layers, window);
  } else if (config.model_type == "qwen2" || config.model_type == "qwen3") {
    ASSIGN_OR_RETURN(std::optional<bool> use, reader.Bool("use_sliding_window"));
    int window = 4096;
    if (reader.Present("sliding_window")) {
      ASSIGN_OR_RETURN(window, reader.OptionalSize("sliding_window", 0));
    }
    if (!use.value_or(false)) window = 0;  // Qwen2Config drops it
    // Any integer (Qwen2Config: `int = 28`): the layers i >= max_window_layers
    // slide, so 0 (or less) makes every layer a sliding one.
    int max_window_layers = 28;
    if (const Json* v = reader.Get("max_window_layers")) {
      ASSIGN_OR_RETURN(int64_t n, reader.Integer("max_window_layers", *v));
      max_window_layers = static_cast<int>(std::max<int64_t>(n, 0));
    }
    ASSIGN_OR_RETURN(bool listed, apply_layer_types(window));
    if (!listed) {
      for (int i = max_window_layers; i < config.num_hidden_layers; ++i) {
        config.layer_sliding_window[i] = window;
      }
    }
  }

  ASSIGN_OR_RETURN(std::optional<bool> tie, reader.Bool("tie_word_embeddings"));
  config.tie_word_embeddings = tie.value_or(gemma || gemma1);  // Gemma's configs: true

  // Token ids: the class defaults (the Family table) when absent; null
  // means none. A class default outside the vocabulary (phi3's 32000 in a
  // smaller one) can never occur, so it is dropped rather than refused,
  // whether absent or written out: save_pretrained writes the defaults into
  // every config.json it saves.
  auto in_vocab = [&](int id) -> std::optional<int> {
    if (id < 0 || id >= config.vocab_size) return std::nullopt;
    return id;
  };
  auto single_id = [&](absl::string_view name,
                       int class_default) -> absl::StatusOr<std::optional<int>> {
    if (!reader.Present(name)) return in_vocab(class_default);
    const Json* v = reader.Get(name);
    if (v == nullptr) return std::nullopt;
    ASSIGN_OR_RETURN(std::optional<int> id, reader.TokenId(name, *v));
    if (id == class_default) return in_vocab(class_default);
    return id;
  };
  ASSIGN_OR_RETURN(config.bos_token_id, single_id("bos_token_id", family->default_bos));
  ASSIGN_OR_RETURN(config.pad_token_id, single_id("pad_token_id", family->default_pad));
  if (reader.Present("eos_token_id")) {
    RETURN_IF_ERROR(ParseEos(reader, reader.Get("eos_token_id"), config));
    const std::vector<int> default_only = {family->default_eos};
    if (config.eos_token_ids == default_only && !in_vocab(family->default_eos)) {
      config.eos_token_ids.clear();
    }
  } else if (std::optional<int> eos = in_vocab(family->default_eos)) {
    config.eos_token_ids = {*eos};
  }
  auto check_id = [&](absl::string_view name, int id) -> absl::Status {
    if (id >= config.vocab_size) {
      return reader.Error(name, absl::StrCat("is ", id, ", outside the vocabulary (vocab_size ",
                                             config.vocab_size, ")"));
    }
    return absl::OkStatus();
  };
  if (config.bos_token_id) RETURN_IF_ERROR(check_id("bos_token_id", *config.bos_token_id));
  if (config.pad_token_id) RETURN_IF_ERROR(check_id("pad_token_id", *config.pad_token_id));
  for (int id : config.eos_token_ids) RETURN_IF_ERROR(check_id("eos_token_id", id));

  for (const char* key : {"torch_dtype", "dtype"}) {
    ASSIGN_OR_RETURN(std::optional<std::string> dtype, reader.String(key));
    if (!dtype.has_value()) continue;
    if (*dtype != "float32" && *dtype != "float16" && *dtype != "bfloat16" &&
        *dtype != "float64" && *dtype != "auto") {
      return reader.Error(key, absl::StrCat("is \"", *dtype,
                                            "\" (expected \"float32\", \"float16\", "
                                            "\"bfloat16\", \"float64\" or \"auto\")"));
    }
    config.torch_dtype = *dtype;
  }
  return config;
}

}  // namespace

absl::StatusOr<LlamaConfig> LlamaConfig::FromJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromJson(text, path);
}

bool IsLlamaFamilyModelType(absl::string_view model_type) {
  if (model_type == "gemma3") return true;  // its text_config
  for (const Family& f : kFamilies) {
    if (model_type == f.model_type) return true;
  }
  return false;
}

std::string LlamaFamilyModelTypes() {
  std::vector<absl::string_view> names;
  for (const Family& f : kFamilies) names.push_back(f.model_type);
  names.push_back("gemma3");
  return absl::StrJoin(names, ", ");
}

bool IsLlamaFamilyConfig(absl::string_view json_text) {
  absl::StatusOr<Json> root = ParseJson(json_text, "config.json");
  if (!root.ok() || !root->is_object()) return false;
  auto it = root->find("model_type");
  return it != root->end() && it->is_string() &&
         IsLlamaFamilyModelType(it->get<std::string>());
}

}  // namespace mpt
