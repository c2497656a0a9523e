// The architecture settings of a Hugging Face decoder-only checkpoint of the
// Llama family (config.json): model_type "llama" (LlamaForCausalLM), "qwen2"
// (Qwen2ForCausalLM), "qwen3" (Qwen3ForCausalLM), "mistral"
// (MistralForCausalLM) and "phi3" (Phi3ForCausalLM: Phi-3, Phi-3.5 and
// Phi-4-mini).
//
// They share one architecture: RMS norm before attention and MLP, rotary
// position embeddings (transformers' rotate_half convention), grouped-query
// attention, a SwiGLU MLP (act(gate) * up -> down), a final RMS norm and an LM
// head that may be tied to the word embedding. They differ in what
// config.json may switch on, and the rules here are transformers' (5.x):
//  - llama: attention_bias (q, k, v and o projections), mlp_bias, head_dim;
//    no sliding window.
//  - qwen2: q, k and v projections always have a bias, o_proj and the MLP
//    never do; a sliding window only when use_sliding_window is true, and
//    then only on the layers layer_types marks "sliding_attention" (when
//    absent: the layers from max_window_layers on).
//  - qwen3: qwen2's sliding-window and token-id rules; attention_bias (q, k,
//    v and o projections, default false), no MLP bias; head_dim defaults to
//    128 (not hidden_size / num_attention_heads); q and k each pass through
//    an RMS norm over head_dim (self_attn.q_norm / k_norm) before the
//    rotation.
//  - phi3: no biases; q, k and v stored as one qkv_proj and the MLP's gate
//    and up as one gate_up_proj; partial_rotary_factor (in the rope dict,
//    else at the top level) rotates only the first w = int(head_dim *
//    factor) dimensions of each head (w odd: the first w + 1, at the
//    frequencies base^(-2i / w) as transformers computes them); rope type
//    "default" or "longrope" ("su" and "yarn" are older names for it), with
//    original_max_position_embeddings at the top level (default 4096);
//    sliding_window (default null) on every layer; rms_norm_eps defaults
//    to 1e-5, bos 1, eos and pad 32000.
//  - gemma3_text (Gemma3ForCausalLM: gemma-3-270m, gemma-3-1b): word
//    embeddings scaled by sqrt(hidden_size); RMS norms that multiply by
//    (1 + weight) in fp32, four per layer (before and after attention and
//    the MLP) and per head on q and k; attention_bias on all four
//    projections; scores scaled by query_pre_attn_scalar^-0.5 (default
//    256); hidden_activation (default gelu_pytorch_tanh); head_dim 256,
//    4 key/value heads, tied embeddings, bos 2, eos 1, pad 0 unless told;
//    sliding_window (default 4096) on the layers layer_types marks, else on
//    all but every sliding_window_pattern-th (default 6); one rope dict
//    per layer type (rope_parameters.full_attention / .sliding_attention,
//    or rope_theta (1e6), rope_local_base_freq (1e4) and rope_scaling for
//    the full layers), each "default" or "linear"; final_logit_softcapping.
//    use_bidirectional_attention is refused.
//  - gemma3 (Gemma3ForConditionalGeneration: gemma-3-4b and larger): its
//    text_config read as gemma3_text (the sizes it leaves out are
//    Gemma3TextConfig's: vocab 262208, hidden 2304, intermediate 9216, 26
//    layers, 8 heads), with the top level's token ids, dtype and
//    tie_word_embeddings (default true), and without text_config's
//    final_logit_softcapping, which Gemma3ForConditionalGeneration does not
//    apply; the language model only (text prompts and inputs; the vision
//    tower is not loaded).
//  - gemma (GemmaForCausalLM, Gemma 1): Llama's layout with Gemma's scaled
//    embeddings and (1 + weight) norms; hidden_act (its legacy "gelu"
//    means gelu_pytorch_tanh, as GemmaConfig converts it), head_dim 256,
//    16 key/value heads, 8192 positions, tied embeddings, bos 2, eos 1,
//    pad 0 unless told; no sliding window.
//  - gemma2 (Gemma2ForCausalLM): gemma3_text's layout without q/k norms,
//    with one rope of the usual kinds, every second layer sliding unless
//    layer_types says otherwise, attention scores and final logits capped
//    (attn_logit_softcapping 50, final_logit_softcapping 30 unless told;
//    null: none), 8192 positions.
//  - mistral: no biases; sliding_window (when not null) on every layer, or,
//    when config.json has layer_types, only on the layers it marks
//    "sliding_attention": transformers' Auto classes load such a file as
//    model_type "ministral" (MistralForCausalLM itself would ignore the
//    list). model_type "ministral" (MinistralForCausalLM) is read the same
//    way.
// Rotary settings: rope_theta (top level, or inside rope_parameters /
// rope_scaling), and the scaling dict from "rope_scaling" (older files) or
// "rope_parameters" (transformers 5), with its type under "rope_type" or
// "type": "default", "linear", "dynamic", "llama3", "yarn" or "longrope".
// Other types, and partial_rotary_factor != 1 outside phi3, are refused.
// Fields the architecture does not read (initializer_range, use_cache,
// attention_dropout, pretraining_tp, ...) are ignored.
//
// No libtorch here: the coordinator may read configs too.
#ifndef MPT_WORKER_MODEL_LLAMA_CONFIG_H_
#define MPT_WORKER_MODEL_LLAMA_CONFIG_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/t5_config.h"

namespace mpt {

// The rotary embedding's frequency rule (transformers' ROPE_INIT_FUNCTIONS).
enum class RopeType {
  kDefault,  // inv_freq = 1 / theta^(2i / head_dim)
  kLinear,   // default / factor
  kDynamic,  // NTK: theta grows with the sequence length past max_position_embeddings
  kLlama3,   // Llama 3.1's piecewise low/high frequency scaling
  kYarn,     // YaRN: ramp between interpolated and extrapolated, cos/sin scaled
  kLongrope, // LongRoPE: per-frequency short or long factors, by the sequence length
};

absl::string_view RopeTypeName(RopeType type);

struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;  // linear, dynamic, llama3, yarn: required, > 0
  // llama3 and yarn: the pre-training context length (default
  // max_position_embeddings, as transformers' standardisation).
  int original_max_position_embeddings = 0;
  double low_freq_factor = 1.0;   // llama3 (required)
  double high_freq_factor = 4.0;  // llama3 (required, > low_freq_factor)
  // yarn
  std::optional<double> attention_factor;  // else from factor / mscale
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  bool truncate = true;  // absent: true; "truncate": null is false (falsy in transformers)
  // longrope (both required, head_dim / 2 each): inv_freq is divided by
  // short_factor while the sequence (max position + 1) is at most
  // original_max_position_embeddings, by long_factor past it; cos and sin
  // are scaled by attention_factor (else from factor, whose default is
  // max_position_embeddings / original_max_position_embeddings).
  std::vector<double> short_factor;
  std::vector<double> long_factor;
};

struct LlamaConfig {
  std::string model_type;  // "llama", "qwen2", "qwen3", "mistral", "ministral", "phi3", "gemma",
                           // "gemma2" or "gemma3_text" (also for a "gemma3" file's text_config)
  // config.json was a multimodal Gemma 3's (model_type "gemma3"): its
  // language model's tensors are stored under "language_model.model."
  // (or "model.language_model.").
  bool multimodal_gemma3 = false;
  int vocab_size = 0;               // required
  int hidden_size = 0;              // required
  int intermediate_size = 0;        // required
  int num_hidden_layers = 0;        // required
  int num_attention_heads = 0;      // required
  int num_key_value_heads = 0;      // default num_attention_heads; divides it
  int head_dim = 0;                 // default hidden_size / num_attention_heads (qwen3: 128)
  int rotary_dim = 0;               // head_dim; phi3: int(head_dim * partial_rotary_factor)
  int max_position_embeddings = 0;  // default 2048 llama, 32768 qwen2/3, 131072 mistral, 4096 phi3
  double rms_norm_eps = 1e-6;       // phi3: 1e-5
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;

  std::string hidden_act = "silu";  // an ACT2FN name (see T5Activation)
  T5Activation activation = T5Activation::kSilu;

  // Bias terms of the projections (see the file comment for each family).
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  // qwen3, gemma3_text: RMS norms over head_dim on q and k, before the
  // rotation.
  bool qk_norm = false;

  // gemma, gemma2, gemma3_text: embeddings times sqrt(hidden_size),
  // (1 + weight) norms.
  bool gemma = false;
  // gemma2, gemma3_text: norms after attention and around the MLP.
  bool sandwich_norms = false;
  // gemma3_text: the sliding layers' own rope.
  bool sliding_rope = false;
  double sliding_rope_theta = 10000.0;
  RopeScaling sliding_rope_scaling;
  // Scores are multiplied by this; 0 means head_dim^-0.5.
  double attention_scale = 0;
  // x = cap * tanh(x / cap) when set: attention scores (before the mask)
  // and final logits.
  std::optional<double> attn_logit_softcapping;
  std::optional<double> final_logit_softcapping;

  // Per layer: 0 = full causal attention, W > 0 = a key at sequence index j
  // is seen by the query at index i only when i - W < j <= i.
  std::vector<int> layer_sliding_window;

  // Default false for every family; when false the checkpoint must
  // hold lm_head.weight.
  bool tie_word_embeddings = false;

  std::optional<int> bos_token_id;
  std::optional<int> pad_token_id;
  std::vector<int> eos_token_ids;  // config.json: an int, a list or null

  // "torch_dtype" (or "dtype", transformers 5) as written: "float32",
  // "float16", "bfloat16", or empty when absent. The stored weights' own
  // dtype is what the loader reads; this is informational.
  std::string torch_dtype;

  int q_dim() const { return num_attention_heads * head_dim; }
  // Whether q/k/v and gate/up are stored as one tensor each (phi3).
  bool fused_projections() const { return model_type == "phi3"; }
  int kv_dim() const { return num_key_value_heads * head_dim; }

  // Parses config.json text. INVALID_ARGUMENT, with a message that starts
  // with `source` and names the field, for: malformed JSON, a top level that
  // is not an object, a model_type other than those above
  // (or missing), an architectures entry that does not belong to it, a
  // missing or non-positive size, num_attention_heads not a multiple of
  // num_key_value_heads, an odd head_dim, an unknown hidden_act, an
  // unsupported rope type (rope_scaling.rope_type / rope_scaling.type),
  // a missing or bad rope parameter (e.g. rope_scaling.factor),
  // partial_rotary_factor other than 1 (phi3: outside (0, 1], or giving an
  // odd rotary width with longrope), a bad layer_types entry, a token id
  // that is negative or outside the vocabulary, an unknown torch_dtype, or a
  // field of the wrong JSON type. For a multimodal gemma3 file: a missing or
  // non-object text_config, or another text_config.model_type; errors about
  // text_config's fields start "<source>: text_config: " (those about a
  // token id, dtype or tie taken from the top level, "<source>: ").
  static absl::StatusOr<LlamaConfig> FromJson(absl::string_view json_text,
                                              absl::string_view source = "config.json");

  // Reads and parses a file. NOT_FOUND when it does not exist, INTERNAL when
  // it cannot be read, otherwise as FromJson with the path as `source`.
  static absl::StatusOr<LlamaConfig> FromJsonFile(const std::string& path);
};

// Whether `model_type` is one of the decoder-only families above.
bool IsLlamaFamilyModelType(absl::string_view model_type);

// Those model_types, comma-separated ("llama, qwen2, ...").
std::string LlamaFamilyModelTypes();

// True when config.json text names one of the decoder-only families above
// (its model_type), so that a loader can choose between T5Model and
// LlamaModel without parsing twice. False for malformed text.
bool IsLlamaFamilyConfig(absl::string_view json_text);

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_LLAMA_CONFIG_H_
