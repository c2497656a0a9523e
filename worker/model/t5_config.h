// The architecture settings of a Hugging Face T5 checkpoint (config.json).
//
// Covers the original T5 (ReLU feed-forward, tied embeddings, LM head input
// scaled by d_model^-0.5), T5 v1.1 / FLAN-T5 (gated GELU, no scaling) and
// mT5 (model_type "mt5": the T5 v1.1 architecture with a 250k vocabulary).
// For "mt5" the rules are transformers' MT5Config and
// MT5ForConditionalGeneration: feed_forward_proj defaults to "gated-gelu" and
// the decoder output is never scaled (scale_decoder_outputs is false; true is
// an error). The LM head is lm_head.weight when the checkpoint has it, else
// the word embedding, as for T5. UMT5 ("umt5") is mT5 with a relative
// attention bias in every layer; transformers' UMT5Config scales the decoder
// output by the T5 rule (scale_decoder_outputs, else tie_word_embeddings,
// else true) and also defaults to the gated feed-forward.
// Only the fields that the architecture reads are kept; everything else in
// config.json (dropout_rate, initializer_factor, task_specific_params, ...)
// is ignored.
//
// No libtorch here: the coordinator may read configs too.
#ifndef MPT_WORKER_MODEL_T5_CONFIG_H_
#define MPT_WORKER_MODEL_T5_CONFIG_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The activation of the feed-forward block, named as in transformers'
// ACT2FN.
enum class T5Activation {
  kRelu,             // "relu"
  kGelu,             // "gelu": exact, erf based
  kGeluNew,          // "gelu_new": 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
  kGeluFast,         // "gelu_fast": the same curve, transformers' other formula
  kGeluPytorchTanh,  // "gelu_pytorch_tanh": torch's tanh approximation
  kQuickGelu,        // "quick_gelu": x * sigmoid(1.702x)
  kSilu,             // "silu" or "swish"
  kTanh,             // "tanh"
  kSigmoid,          // "sigmoid"
  kGeluPython,       // "gelu_python": x/2 (1 + erf(x / sqrt 2)) written out
  kGeluPythonTanh,   // "gelu_python_tanh": gelu_new's curve, x/2 first
  kGeluAccurate,     // "gelu_accurate": gelu_new's curve, its own formula
  kGelu10,           // "gelu_10": gelu clipped to [-10, 10]
  kHardswish,        // "hardswish"
  kLaplace,          // "laplace": (1 + erf((x - 0.707107) / (0.282095 sqrt 2))) / 2
  kLeakyRelu,        // "leaky_relu": negative slope 0.01
  kLinear,           // "linear": the identity
  kMish,             // "mish": x tanh(softplus(x))
  kRelu2,            // "relu2": relu(x)^2
  kRelu6,            // "relu6": min(max(x, 0), 6)
  kSqrtSoftplus,     // "sqrtsoftplus": sqrt(softplus(x))
};

// The ACT2FN name ("relu", "gelu_new", ...).
absl::string_view T5ActivationName(T5Activation activation);

// The activation an ACT2FN name means ("swish" is silu); nullopt when it is
// not one of the names above (ACT2FN's "prelu" and "xielu" carry learned
// parameters and are not among them). Shared by the decoder-only configs.
std::optional<T5Activation> T5ActivationFromName(absl::string_view name);

// The known names, comma separated, for error messages.
std::string T5KnownActivations();

struct T5Config {
  std::string model_type = "t5";
  int vocab_size = 0;   // required
  int d_model = 0;      // required
  int d_kv = 0;         // required; per-head size of q, k, v
  int d_ff = 0;         // required
  int num_layers = 0;   // required; encoder blocks
  int num_decoder_layers = 0;  // defaults to num_layers when absent or null
  int num_heads = 0;    // required
  int relative_attention_num_buckets = 32;  // at least 4
  // Must exceed relative_attention_num_buckets / 2 (see FromJson).
  int relative_attention_max_distance = 128;
  // UMT5: every layer's self-attention has its own relative attention bias
  // (T5 and mT5: the first layer's serves the whole stack).
  bool per_layer_position_bias = false;
  double layer_norm_epsilon = 1e-6;

  // As written in config.json ("relu", "gated-gelu", ...). transformers'
  // rule: "gated-ACT" or "ACT"; ACT is an ACT2FN name, except that
  // "gated-gelu" means gelu_new (the tanh approximation), kept for
  // compatibility with the T5 v1.1 checkpoints.
  std::string feed_forward_proj = "relu";  // "gated-gelu" for mt5 and umt5
  // Derived from feed_forward_proj, unless config.json has the fields
  // dense_act_fn (an ACT2FN name) and is_gated_act, which transformers
  // writes there and then uses instead of feed_forward_proj.
  T5Activation dense_act = T5Activation::kRelu;
  bool is_gated_act = false;  // wi_0 / wi_1 instead of wi

  // Default true. When false the checkpoint must hold lm_head.weight.
  bool tie_word_embeddings = true;
  // Whether the decoder output is multiplied by d_model^-0.5 before the LM
  // head (the original T5). transformers 5 writes this field; when it is
  // absent it follows tie_word_embeddings, which is what older configs mean.
  bool scale_decoder_outputs = true;

  int pad_token_id = 0;
  // The first of eos_token_ids (config.json may hold an int or a list).
  int eos_token_id = 1;
  std::vector<int> eos_token_ids = {1};
  // T5 starts decoding with the pad token. When absent or null: pad_token_id
  // for "t5", 0 for "mt5" and "umt5" (the default of transformers'
  // MT5Config and UMT5Config, whatever pad_token_id is).
  int decoder_start_token_id = 0;

  int inner_dim() const { return num_heads * d_kv; }

  // Parses config.json text. INVALID_ARGUMENT, with a message that starts
  // with `source` and names the field, for: malformed JSON, a top level that
  // is not an object, a model_type other than "t5", "mt5" or "umt5" (or
  // missing), an unknown feed_forward_proj (or dense_act_fn), a missing or
  // non-positive size (vocab_size, d_model, d_kv, d_ff, num_layers,
  // num_heads, and the optional sizes when given),
  // relative_attention_num_buckets below 4, relative_attention_max_distance
  // not above relative_attention_num_buckets / 2, a token id that is
  // negative, or a field of the wrong JSON type (sizes and token ids must be
  // integers, layer_norm_epsilon a positive number, tie_word_embeddings and
  // is_gated_act booleans, dense_act_fn a string; dense_act_fn and
  // is_gated_act must not be null), scale_decoder_outputs true for mt5.
  static absl::StatusOr<T5Config> FromJson(absl::string_view json_text,
                                           absl::string_view source = "config.json");

  // Reads and parses a file. NOT_FOUND when it does not exist, INTERNAL when
  // it cannot be read, otherwise as FromJson with the path as `source`.
  static absl::StatusOr<T5Config> FromJsonFile(const std::string& path);
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_T5_CONFIG_H_
