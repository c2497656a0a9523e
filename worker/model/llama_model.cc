#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/model/activations.h"
#include "worker/model/batched_matmul.h"
#include "worker/model/labels.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

constexpr double kPi = 3.14159265358979323846;

struct LayerWeights {
  at::Tensor input_norm;  // [d]
  at::Tensor qkv;         // [(H + 2 KV) * hd, d]: q, k, v stacked
  at::Tensor qkv_bias;    // [(H + 2 KV) * hd] or undefined
  at::Tensor o;           // [d, H * hd]
  at::Tensor o_bias;      // [d] or undefined
  at::Tensor q_norm;      // [hd] or undefined (qwen3)
  at::Tensor k_norm;      // [hd] or undefined (qwen3)
  at::Tensor post_norm;   // [d]: before the MLP (sandwich norms: after attention)
  at::Tensor pre_ff_norm;   // [d] or undefined (sandwich norms: before the MLP)
  at::Tensor post_ff_norm;  // [d] or undefined (sandwich norms: after the MLP)
  at::Tensor gate_up;     // [2 * I, d]: gate, up stacked
  at::Tensor gate_up_bias;  // [2 * I] or undefined
  at::Tensor down;        // [d, I]
  at::Tensor down_bias;   // [d] or undefined
};

// [B, T, n * hd] -> [B, n, T, hd]
at::Tensor SplitHeads(const at::Tensor& x, int64_t heads, int64_t head_dim) {
  return x.view({x.size(0), x.size(1), heads, head_dim}).transpose(1, 2);
}

// HF's rotate_half: [x1, x2] -> [-x2, x1] over the last dimension.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}

// base^(2i / dim) for i < dim / 2, in fp32 (transformers' `base **
// (torch.arange(0, dim, 2).float() / dim)`).
at::Tensor BasePowers(const at::Tensor& base, int64_t dim) {
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  return at::pow(base, exponents);
}

// x * cos + rotate_half(x) * sin over the first cos.size(-1) dimensions of
// x's last one; the rest (phi3's partial rotary) passes unchanged.
at::Tensor Rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rotary = cos.size(-1);
  if (rotary == x.size(-1)) return x * cos + RotateHalf(x) * sin;
  at::Tensor part = x.narrow(-1, 0, rotary);
  return at::cat({part * cos + RotateHalf(part) * sin, x.narrow(-1, rotary, x.size(-1) - rotary)},
                 -1);
}

// transformers' 1 / base^(arange(0, dim, 2) / dim) in fp32, on the CPU.
at::Tensor BaseInvFreq(const at::Tensor& base, int64_t dim) {
  return at::reciprocal(BasePowers(base, dim));
}

at::Tensor ScalarFloat(double v) { return at::scalar_tensor(v, at::kFloat); }


}  // namespace

struct LlamaModel::Weights {
  at::Tensor embed;    // [vocab, d]
  at::Tensor lm_head;  // [vocab, d]; the same tensor as `embed` when tied
  at::Tensor final_norm;
  std::vector<LayerWeights> layers;
  // The frequencies at load time (fp32, CPU) and the cos/sin scale;
  // longrope: inv_freq holds the short factors' and long_inv_freq the long
  // factors' frequencies.
  at::Tensor inv_freq;
  at::Tensor long_inv_freq;
  double attention_scaling = 1.0;
  // gemma: the sliding layers' frequencies and the embedding scale
  // (sqrt(hidden_size) in the model's dtype).
  at::Tensor sliding_inv_freq;
  at::Tensor embed_scale;
  int64_t num_parameters = 0;
};

LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& folder,
                                                             const LlamaLoadOptions& options) {
  RETURN_IF_ERROR(CheckWeightDtype(options.dtype, "LlamaLoadOptions.dtype"));
  const std::string prefix = folder.empty() || folder.back() == '/' ? folder : folder + "/";
  ASSIGN_OR_RETURN(LlamaConfig config, LlamaConfig::FromJsonFile(prefix + "config.json"));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelTensors> tensors, ModelTensors::Open(folder));

  std::unique_ptr<LlamaModel> model(new LlamaModel());
  model->config_ = config;
  model->folder_ = folder;
  model->weights_ = std::make_unique<Weights>();
  Weights& w = *model->weights_;

  const int64_t d = config.hidden_size;
  const int64_t q_dim = config.q_dim();
  const int64_t kv_dim = config.kv_dim();
  const int64_t inter = config.intermediate_size;
  const int64_t vocab = config.vocab_size;
  try {
    at::NoGradGuard no_grad;
    FrozenWeightLoader loader(*tensors, options.device, options.dtype);
    // A multimodal Gemma 3 keeps its language model under
    // "language_model.model." with "language_model.lm_head.weight" (its
    // released and saved files), or under "model.language_model." with
    // "lm_head.weight" (transformers' module names).
    std::string base = "model.";
    std::string head = "lm_head.weight";
    if (config.multimodal_gemma3) {
      if (loader.Has("language_model.model.embed_tokens.weight")) {
        base = "language_model.model.";
        if (!loader.Has(head)) head = "language_model.lm_head.weight";
      } else {
        base = "model.language_model.";
      }
    }
    ASSIGN_OR_RETURN(w.embed, loader.Get(base + "embed_tokens.weight", {vocab, d}));
    if (config.tie_word_embeddings) {
      w.lm_head = w.embed;
    } else if (!loader.Has(head)) {
      return absl::InvalidArgumentError(absl::StrCat(
          folder, ": missing tensor \"", head, "\" (expected shape ", ShapeString({vocab, d}),
          "), required because config.json's tie_word_embeddings is false or absent"));
    } else {
      ASSIGN_OR_RETURN(w.lm_head, loader.Get(head, {vocab, d}));
    }
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      LayerWeights l;
      const std::string p = absl::StrCat(base, "layers.", i, ".");
      ASSIGN_OR_RETURN(l.input_norm, loader.Get(p + "input_layernorm.weight", {d}));
      ASSIGN_OR_RETURN(l.post_norm, loader.Get(p + "post_attention_layernorm.weight", {d}));
      if (config.sandwich_norms) {
        ASSIGN_OR_RETURN(l.pre_ff_norm, loader.Get(p + "pre_feedforward_layernorm.weight", {d}));
        ASSIGN_OR_RETURN(l.post_ff_norm, loader.Get(p + "post_feedforward_layernorm.weight", {d}));
      }
      const std::string a = p + "self_attn.";
      const std::string m = p + "mlp.";
      if (config.fused_projections()) {
        // phi3: stored stacked as the model keeps them.
        ASSIGN_OR_RETURN(l.qkv, loader.Get(a + "qkv_proj.weight", {q_dim + 2 * kv_dim, d}));
        ASSIGN_OR_RETURN(l.gate_up, loader.Get(m + "gate_up_proj.weight", {2 * inter, d}));
      } else {
        ASSIGN_OR_RETURN(at::Tensor q, loader.Get(a + "q_proj.weight", {q_dim, d}));
        ASSIGN_OR_RETURN(at::Tensor k, loader.Get(a + "k_proj.weight", {kv_dim, d}));
        ASSIGN_OR_RETURN(at::Tensor v, loader.Get(a + "v_proj.weight", {kv_dim, d}));
        l.qkv = at::cat({q, k, v}, 0);
        ASSIGN_OR_RETURN(at::Tensor gate, loader.Get(m + "gate_proj.weight", {inter, d}));
        ASSIGN_OR_RETURN(at::Tensor up, loader.Get(m + "up_proj.weight", {inter, d}));
        l.gate_up = at::cat({gate, up}, 0);
      }
      if (config.qkv_bias) {
        ASSIGN_OR_RETURN(at::Tensor qb, loader.Get(a + "q_proj.bias", {q_dim}));
        ASSIGN_OR_RETURN(at::Tensor kb, loader.Get(a + "k_proj.bias", {kv_dim}));
        ASSIGN_OR_RETURN(at::Tensor vb, loader.Get(a + "v_proj.bias", {kv_dim}));
        l.qkv_bias = at::cat({qb, kb, vb}, 0);
      }
      if (config.qk_norm) {
        ASSIGN_OR_RETURN(l.q_norm, loader.Get(a + "q_norm.weight", {config.head_dim}));
        ASSIGN_OR_RETURN(l.k_norm, loader.Get(a + "k_norm.weight", {config.head_dim}));
      }
      ASSIGN_OR_RETURN(l.o, loader.Get(a + "o_proj.weight", {d, q_dim}));
      if (config.o_bias) {
        ASSIGN_OR_RETURN(l.o_bias, loader.Get(a + "o_proj.bias", {d}));
      }
      ASSIGN_OR_RETURN(l.down, loader.Get(m + "down_proj.weight", {d, inter}));
      if (config.mlp_bias) {
        ASSIGN_OR_RETURN(at::Tensor gb, loader.Get(m + "gate_proj.bias", {inter}));
        ASSIGN_OR_RETURN(at::Tensor ub, loader.Get(m + "up_proj.bias", {inter}));
        ASSIGN_OR_RETURN(l.down_bias, loader.Get(m + "down_proj.bias", {d}));
        l.gate_up_bias = at::cat({gb, ub}, 0);
      }
      w.layers.push_back(std::move(l));
    }
    ASSIGN_OR_RETURN(w.final_norm, loader.Get(base + "norm.weight", {d}));
    w.num_parameters = loader.num_parameters();
    if (config.gemma) {
      // Gemma's norms multiply by (1 + weight) in fp32: kept that way.
      auto plus_one = [](at::Tensor& t) {
        if (t.defined()) t = (t.to(at::kFloat) + 1.0).contiguous();
      };
      plus_one(w.final_norm);
      for (LayerWeights& l : w.layers) {
        for (at::Tensor* t : {&l.input_norm, &l.post_norm, &l.pre_ff_norm, &l.post_ff_norm,
                              &l.q_norm, &l.k_norm}) {
          plus_one(*t);
        }
      }
      w.embed_scale = at::scalar_tensor(std::sqrt(static_cast<double>(d)), at::kFloat)
                          .to(w.embed.options());
    }
    if (config.sliding_rope) {
      w.sliding_inv_freq = BaseInvFreq(ScalarFloat(config.sliding_rope_theta), config.rotary_dim);
      if (config.sliding_rope_scaling.type == RopeType::kLinear) {
        w.sliding_inv_freq = w.sliding_inv_freq / config.sliding_rope_scaling.factor;
      }
      w.sliding_inv_freq = w.sliding_inv_freq.contiguous();
    }

    // Rotary frequencies at load time, as transformers' rope init functions
    // compute them (fp32 tensor arithmetic where they use tensors).
    const RopeScaling& rope = config.rope_scaling;
    const int64_t dim = config.rotary_dim;
    at::Tensor inv_freq = BaseInvFreq(ScalarFloat(config.rope_theta), dim);
    switch (rope.type) {
      case RopeType::kDefault:
      case RopeType::kDynamic:  // the unscaled table up to max_position_embeddings
        break;
      case RopeType::kLinear:
        inv_freq = inv_freq / rope.factor;
        break;
      case RopeType::kLlama3: {
        const double old_context = rope.original_max_position_embeddings;
        const double low_wavelen = old_context / rope.low_freq_factor;
        const double high_wavelen = old_context / rope.high_freq_factor;
        at::Tensor wavelen = (2 * kPi) / inv_freq;
        at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq);
        at::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) /
                            (rope.high_freq_factor - rope.low_freq_factor);
        at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
        at::Tensor medium = (wavelen < high_wavelen).logical_not().logical_and(
            (wavelen > low_wavelen).logical_not());
        inv_freq = at::where(medium, smoothed, scaled);
        break;
      }
      case RopeType::kYarn: {
        const double base = config.rope_theta;
        const double factor = rope.factor;
        auto get_mscale = [](double scale, double mscale) {
          return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
        };
        if (rope.attention_factor.has_value()) {
          w.attention_scaling = *rope.attention_factor;
        } else if (rope.mscale.value_or(0) != 0 && rope.mscale_all_dim.value_or(0) != 0) {
          w.attention_scaling =
              get_mscale(factor, *rope.mscale) / get_mscale(factor, *rope.mscale_all_dim);
        } else {
          w.attention_scaling = get_mscale(factor, 1.0);
        }
        const double original = rope.original_max_position_embeddings;
        auto correction_dim = [&](double rotations) {
          return (static_cast<double>(dim) * std::log(original / (rotations * 2 * kPi))) /
                 (2 * std::log(base));
        };
        double low = correction_dim(rope.beta_fast);
        double high = correction_dim(rope.beta_slow);
        if (rope.truncate) {
          low = std::floor(low);
          high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, static_cast<double>(dim - 1));
        if (low == high) high += 0.001;
        at::Tensor pos_freqs = BasePowers(ScalarFloat(base), dim);
        at::Tensor extrapolation = at::reciprocal(pos_freqs);
        at::Tensor interpolation = at::reciprocal(pos_freqs * factor);
        at::Tensor ramp =
            at::clamp((at::arange(dim / 2, at::kFloat) - low) / (high - low), 0, 1);
        at::Tensor extrapolation_factor = 1 - ramp;
        inv_freq = interpolation * (1 - extrapolation_factor) +
                   extrapolation * extrapolation_factor;
        break;
      }
      case RopeType::kLongrope: {
        // transformers' _compute_longrope_parameters: 1 / (factors *
        // base^(2i / dim)) in fp32, cos and sin scaled by attention_factor
        // (default sqrt(1 + ln factor / ln original) when factor > 1).
        if (rope.attention_factor.has_value()) {
          w.attention_scaling = *rope.attention_factor;
        } else if (rope.factor > 1.0) {
          w.attention_scaling =
              std::sqrt(1 + std::log(rope.factor) /
                                std::log(static_cast<double>(rope.original_max_position_embeddings)));
        }
        at::Tensor powers = BasePowers(ScalarFloat(config.rope_theta), dim);
        auto with = [&](const std::vector<double>& factors) {
          at::Tensor f = at::tensor(at::ArrayRef<double>(factors), at::kDouble).to(at::kFloat);
          return at::reciprocal(f * powers);
        };
        inv_freq = with(rope.short_factor);
        w.long_inv_freq = with(rope.long_factor).contiguous();
        break;
      }
    }
    w.inv_freq = inv_freq.contiguous();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(folder, ": loading the weights failed: ", e.what_without_backtrace()));
  }
  return model;
}

c10::Device LlamaModel::device() const { return weights_->embed.device(); }
c10::ScalarType LlamaModel::dtype() const { return weights_->embed.scalar_type(); }
const at::Tensor& LlamaModel::word_embeddings() const { return weights_->embed; }
const at::Tensor& LlamaModel::embedding_scale() const { return weights_->embed_scale; }
int64_t LlamaModel::num_parameters() const { return weights_->num_parameters; }

std::vector<at::Tensor> LlamaModel::Parameters() const {
  const Weights& w = *weights_;
  std::vector<at::Tensor> out = {w.embed, w.final_norm};
  if (!w.lm_head.is_same(w.embed)) out.push_back(w.lm_head);
  for (const LayerWeights& l : w.layers) {
    for (const at::Tensor* t : {&l.input_norm, &l.qkv, &l.qkv_bias, &l.q_norm, &l.k_norm,
                                &l.o, &l.o_bias, &l.post_norm, &l.pre_ff_norm, &l.post_ff_norm, &l.gate_up, &l.gate_up_bias, &l.down,
                                &l.down_bias}) {
      if (t->defined()) out.push_back(*t);
    }
  }
  return out;
}

at::Tensor LlamaModel::Embed(const at::Tensor& ids) const {
  at::Tensor long_ids = ids.scalar_type() == at::kLong ? ids : ids.to(at::kLong);
  at::Tensor rows = at::embedding(weights_->embed, long_ids);
  return weights_->embed_scale.defined() ? rows * weights_->embed_scale : rows;
}

at::Tensor LlamaModel::Norm(const at::Tensor& x, const at::Tensor& weight) const {
  // RMS norm in fp32 (fp64 for a double model), the weight applied after the
  // cast back, as transformers' LlamaRMSNorm.
  const c10::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor xf = x.to(acc);
  at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor normed = xf * at::rsqrt(variance + config_.rms_norm_eps);
  // Gemma multiplies before the cast back, by its fp32 (1 + weight).
  if (config_.gemma) return (normed * weight.to(acc)).to(x.scalar_type());
  return weight * normed.to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> LlamaModel::Rotary(const at::Tensor& positions, int64_t seq_len,
                                                     bool sliding) const {
  const Weights& w = *weights_;
  if (sliding && w.sliding_inv_freq.defined()) {
    at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) *
                       w.sliding_inv_freq.to(positions.device());
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    return {emb.cos().to(dtype()), emb.sin().to(dtype())};
  }
  at::Tensor inv_freq = w.inv_freq;
  const RopeScaling& rope = config_.rope_scaling;
  if (rope.type == RopeType::kDynamic) {
    // transformers' dynamic NTK: seq_len = max(position_ids) + 1; past
    // max_position_embeddings the base grows (fp32 tensor arithmetic).
    if (seq_len > config_.max_position_embeddings) {
      const int64_t dim = config_.rotary_dim;
      at::Tensor ratio = ScalarFloat(rope.factor) * at::scalar_tensor(seq_len, at::kLong) /
                         static_cast<double>(config_.max_position_embeddings);
      at::Tensor base = ScalarFloat(config_.rope_theta) *
                        at::pow(ratio - (rope.factor - 1),
                                static_cast<double>(dim) / static_cast<double>(dim - 2));
      inv_freq = BaseInvFreq(base, dim);
    }
  }
  if (rope.type == RopeType::kLongrope && seq_len > rope.original_max_position_embeddings) {
    // The long factors once the sequence (max position + 1) passes the
    // pre-training length, for the whole call (transformers'
    // longrope_frequency_update).
    inv_freq = w.long_inv_freq;
  }
  inv_freq = inv_freq.to(positions.device());
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, hd/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos();
  at::Tensor sin = emb.sin();
  if (w.attention_scaling != 1.0) {
    cos = cos * w.attention_scaling;
    sin = sin * w.attention_scaling;
  }
  return {cos.to(dtype()), sin.to(dtype())};
}

LlamaDecoderState LlamaModel::StartDecoding() const {
  LlamaDecoderState state;
  state.keys.resize(weights_->layers.size());
  state.values.resize(weights_->layers.size());
  return state;
}

at::Tensor LlamaModel::DecodeStep(const at::Tensor& step_embeds, const at::Tensor& step_mask,
                                  const at::Tensor& step_positions,
                                  LlamaDecoderState* state) const {
  return DecodeStepAt(step_embeds, step_mask, step_positions, 0, -1, state);
}

at::Tensor LlamaModel::DecodeStepAt(const at::Tensor& step_embeds, const at::Tensor& step_mask,
                                    const at::Tensor& step_positions, int64_t outputs_from,
                                    int64_t outputs, LlamaDecoderState* state) const {
  const Weights& w = *weights_;
  TORCH_CHECK(state != nullptr && state->keys.size() == w.layers.size(),
              "LlamaModel: the decoder state was not made by StartDecoding of this model");
  TORCH_CHECK(step_embeds.dim() == 3 && step_embeds.size(2) == config_.hidden_size,
              "LlamaModel: embeddings must be [batch, length, ", config_.hidden_size, "], got ",
              step_embeds.sizes());
  const int64_t batch = step_embeds.size(0);
  const int64_t steps = step_embeds.size(1);
  if (outputs < 0) outputs = steps - outputs_from;
  TORCH_CHECK(outputs_from >= 0 && outputs >= 0 && outputs_from + outputs <= steps,
              "LlamaModel: outputs [", outputs_from, ", ", outputs_from + outputs,
              ") are not within the ", steps, " positions of the call");
  const int64_t offset = state->length;
  const int64_t keys = offset + steps;
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t group = heads / kv_heads;
  const int64_t hd = config_.head_dim;
  TORCH_CHECK(state->keys.empty() || !state->keys[0].defined() ||
                  state->keys[0].size(0) == batch,
              "LlamaModel::DecodeStep: batch ", batch, " does not match the cached batch ",
              state->keys.empty() || !state->keys[0].defined() ? 0 : state->keys[0].size(0));
  TORCH_CHECK(!step_mask.defined() ||
                  (step_mask.dim() == 2 && step_mask.size(0) == batch && step_mask.size(1) == steps),
              "LlamaModel: attention_mask must be [", batch, ", ", steps, "], got ",
              step_mask.defined() ? step_mask.sizes() : at::IntArrayRef());
  TORCH_CHECK(!step_positions.defined() ||
                  (step_positions.dim() == 2 && step_positions.size(0) == batch &&
                   step_positions.size(1) == steps),
              "LlamaModel: position_ids must be [", batch, ", ", steps, "], got ",
              step_positions.defined() ? step_positions.sizes() : at::IntArrayRef());
  TORCH_CHECK(!step_positions.defined() ||
                  at::isIntegralType(step_positions.scalar_type(), /*includeBool=*/false),
              "LlamaModel: position_ids must be integers, got ",
              step_positions.defined() ? step_positions.scalar_type() : at::kFloat);

  const auto long_options = at::TensorOptions().dtype(at::kLong).device(step_embeds.device());
  at::Tensor positions =
      step_positions.defined()
          ? step_positions.to(at::kLong)
          : (at::arange(steps, long_options) + offset).unsqueeze(0).expand({batch, steps});

  // The call's largest position + 1, which the dynamic and longrope rules
  // read (one device sync, only for them).
  const RopeType rope_type = config_.rope_scaling.type;
  const int64_t seq_len =
      (rope_type == RopeType::kDynamic || rope_type == RopeType::kLongrope) && positions.numel() > 0
          ? positions.max().item<int64_t>() + 1
          : 0;

  // Longrope picks its factors from the largest position of the call. The
  // first call that passes original_max_position_embeddings after a cache
  // was built with the short factors runs the whole sequence again, so that
  // every key takes the long ones (Phi-3's generate() does the same): each
  // step then equals Hidden() over the sequence so far. Until then the
  // inputs are kept for that.
  if (rope_type == RopeType::kLongrope && !state->long_factors) {
    const bool long_factors = seq_len > config_.rope_scaling.original_max_position_embeddings;
    if (long_factors && offset == 0) {
      state->long_factors = true;  // the first call: nothing cached with the short ones
    } else {
      state->past_embeds.push_back(step_embeds);
      state->past_masks.push_back(step_mask.defined()
                                      ? step_mask != 0
                                      : at::ones({batch, steps}, long_options.dtype(at::kBool)));
      state->past_positions.push_back(positions);
      if (long_factors) {
        const at::Tensor all_embeds = at::cat(state->past_embeds, 1);
        const at::Tensor all_masks = at::cat(state->past_masks, 1);
        const at::Tensor all_positions = at::cat(state->past_positions, 1);
        *state = StartDecoding();
        return DecodeStep(all_embeds, all_masks, all_positions, state)
            .narrow(1, offset + outputs_from, outputs);
      }
    }
  }

  // Key padding so far: undefined means every key is real.
  if (step_mask.defined()) {
    at::Tensor real = step_mask != 0;
    at::Tensor before =
        state->key_mask.defined() ? state->key_mask : at::ones({batch, offset}, real.options());
    state->key_mask = at::cat({before, real}, 1);
  } else if (state->key_mask.defined()) {
    state->key_mask =
        at::cat({state->key_mask, at::ones({batch, steps}, state->key_mask.options())}, 1);
  }

  // [B, 1, T, rotary_dim] per rope: the full layers', and gemma's sliding
  // layers' own.
  std::pair<at::Tensor, at::Tensor> rope[2];
  auto rope_for = [&](bool sliding) -> const std::pair<at::Tensor, at::Tensor>& {
    const int which = sliding && config_.sliding_rope ? 1 : 0;
    if (!rope[which].first.defined()) {
      auto [cos, sin] = Rotary(positions, seq_len, which == 1);
      rope[which] = {cos.unsqueeze(1), sin.unsqueeze(1)};
    }
    return rope[which];
  };

  // Blocked-key masks [B or 1, 1, T, K] per distinct sliding window, on
  // sequence indices: the query at offset + i sees key j when j <= offset + i
  // (and j > offset + i - W with a window W), and the key is real. Blocked
  // scores become the dtype's lowest value: the same probabilities as
  // transformers' additive mask (a row with no key left attends uniformly),
  // without overflowing to -inf in fp16.
  at::Tensor query_index = (at::arange(steps, long_options) + offset).unsqueeze(1);  // [T, 1]
  at::Tensor key_index = at::arange(keys, long_options).unsqueeze(0);               // [1, K]
  std::map<int, at::Tensor> masks;
  auto blocked_for = [&](int window) -> const at::Tensor& {
    auto it = masks.find(window);
    if (it != masks.end()) return it->second;
    at::Tensor keep = key_index <= query_index;
    if (window > 0) keep = keep.logical_and(key_index > query_index - window);
    keep = keep.view({1, 1, steps, keys});
    if (state->key_mask.defined()) {
      keep = keep.logical_and(state->key_mask.view({batch, 1, 1, keys}));
    }
    return masks.emplace(window, keep.logical_not()).first->second;
  };
  const double lowest = LowestValue(dtype());

  const double scaling = config_.attention_scale > 0
                             ? config_.attention_scale
                             : 1.0 / std::sqrt(static_cast<double>(hd));
  const int64_t q_dim = heads * hd;
  const int64_t kv_dim = kv_heads * hd;
  at::Tensor h = step_embeds;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    at::Tensor x = Norm(h, l.input_norm);
    at::Tensor qkv = at::linear(x, l.qkv, l.qkv_bias);
    at::Tensor q = SplitHeads(qkv.narrow(-1, 0, q_dim), heads, hd);
    at::Tensor k = SplitHeads(qkv.narrow(-1, q_dim, kv_dim), kv_heads, hd);
    at::Tensor v = SplitHeads(qkv.narrow(-1, q_dim + kv_dim, kv_dim), kv_heads, hd);
    if (l.q_norm.defined()) {  // per head, over hd: the same on [B, H, T, hd] as on [B, T, H, hd]
      q = Norm(q, l.q_norm);
      k = Norm(k, l.k_norm);
    }
    const auto& [cos, sin] = rope_for(config_.layer_sliding_window[i] > 0);
    q = Rotate(q, cos, sin);
    k = Rotate(k, cos, sin);
    if (state->keys[i].defined()) {
      k = at::cat({state->keys[i], k}, 2);
      v = at::cat({state->values[i], v}, 2);
    }
    state->keys[i] = k;
    state->values[i] = v;
    // The last layer's queries, attention output and MLP run only where
    // outputs are wanted; its keys and values above cover every position.
    int64_t rows = steps;
    at::Tensor blocked = blocked_for(config_.layer_sliding_window[i]);
    if (i + 1 == w.layers.size() && outputs != steps) {
      rows = outputs;
      q = q.narrow(2, outputs_from, rows);
      h = h.narrow(1, outputs_from, rows);
      blocked = blocked.narrow(2, outputs_from, rows);
    }
    // Grouped-query attention without copying k and v: the `group` query
    // heads that share key/value head g are rows of one matrix product
    // (the same products as repeating each k/v head `group` times).
    at::Tensor qg = q.reshape({batch, kv_heads, group * rows, hd});
    at::Tensor scores = BatchedMatmul(qg, k.transpose(-1, -2)) * scaling;  // [B, KV, G*T, K]
    if (const std::optional<double>& cap = config_.attn_logit_softcapping) {
      scores = at::tanh(scores / *cap) * *cap;
    }
    scores = scores.view({batch, heads, rows, keys}).masked_fill(blocked, lowest);
    at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    at::Tensor attended =
        BatchedMatmul(probs.view({batch, kv_heads, group * rows, keys}), v)  // [B, KV, G*T, hd]
            .view({batch, heads, rows, hd})
            .transpose(1, 2)
            .reshape({batch, rows, q_dim});
    at::Tensor attention_out = at::linear(attended, l.o, l.o_bias);
    // Gemma 2 and 3 normalise each block's output too, and the MLP's input
    // with a norm of its own.
    h = h + (config_.sandwich_norms ? Norm(attention_out, l.post_norm) : attention_out);

    x = Norm(h, config_.sandwich_norms ? l.pre_ff_norm : l.post_norm);
    at::Tensor gate_up = at::linear(x, l.gate_up, l.gate_up_bias);
    const int64_t inter = config_.intermediate_size;
    at::Tensor act = ApplyActivation(gate_up.narrow(-1, 0, inter), config_.activation) *
                     gate_up.narrow(-1, inter, inter);
    at::Tensor mlp_out = at::linear(act, l.down, l.down_bias);
    h = h + (config_.sandwich_norms ? Norm(mlp_out, l.post_ff_norm) : mlp_out);
  }
  state->length = keys;
  return Norm(h, w.final_norm);
}

at::Tensor LlamaModel::Hidden(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                              const at::Tensor& position_ids) const {
  LlamaDecoderState state = StartDecoding();
  return DecodeStep(inputs_embeds, attention_mask, position_ids, &state);
}

at::Tensor LlamaModel::HiddenAt(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                                const at::Tensor& position_ids, int64_t from, int64_t count) const {
  TORCH_CHECK(count >= 0, "LlamaModel::HiddenAt: count must not be negative, got ", count);
  LlamaDecoderState state = StartDecoding();
  return DecodeStepAt(inputs_embeds, attention_mask, position_ids, from, count, &state);
}

at::Tensor LlamaModel::LmHead(const at::Tensor& hidden) const {
  at::Tensor logits = at::linear(hidden, weights_->lm_head);
  if (const std::optional<double>& cap = config_.final_logit_softcapping) {
    logits = at::tanh(logits / *cap) * *cap;
  }
  return logits;
}

CausalLmOutput LlamaModel::Forward(const CausalLmInputs& inputs) const {
  CausalLmOutput out;
  out.hidden = Hidden(inputs.inputs_embeds, inputs.attention_mask, inputs.position_ids);
  out.logits = LmHead(out.hidden);
  if (inputs.labels.defined()) {
    // transformers' ForCausalLMLoss: logits in fp32, labels shifted left by
    // one with -100 after the last, mean over the labels that count.
    const int64_t length = out.logits.size(1);
    at::Tensor labels = inputs.labels.to(at::kLong);
    at::Tensor shifted = at::full_like(labels, kIgnoreIndex);
    if (length > 1) shifted.narrow(1, 0, length - 1).copy_(labels.narrow(1, 1, length - 1));
    at::Tensor logits = out.logits.reshape({-1, out.logits.size(-1)});
    if (logits.scalar_type() != at::kFloat) logits = logits.to(at::kFloat);
    out.loss = at::cross_entropy_loss(logits, shifted.reshape({-1}), /*weight=*/{},
                                      at::Reduction::Mean, kIgnoreIndex);
  }
  return out;
}

absl::Status LlamaModel::CheckForwardInputs(const CausalLmInputs& in) const {
  const int64_t d = config_.hidden_size;
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  auto shape = [](const at::Tensor& t) { return ShapeString(t.sizes()); };
  try {
    const at::Tensor& x = in.inputs_embeds;
    if (!x.defined()) return bad("inputs_embeds is undefined");
    if (x.dim() != 3 || x.size(2) != d) {
      return bad("inputs_embeds must be [batch, length, ", d, "], got ", shape(x));
    }
    if (x.size(0) == 0 || x.size(1) == 0) return bad("inputs_embeds is empty, ", shape(x));
    if (x.device() != device()) {
      return bad("inputs_embeds is on ", x.device().str(), ", the model on ", device().str());
    }
    if (x.scalar_type() != dtype()) {
      return bad("inputs_embeds has dtype ", c10::toString(x.scalar_type()),
                 ", the model computes in ", c10::toString(dtype()));
    }
    const int64_t batch = x.size(0);
    const int64_t length = x.size(1);
    for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"attention_mask", &in.attention_mask},
                           {"position_ids", &in.position_ids},
                           {"labels", &in.labels}}) {
      if (!t->defined()) continue;
      if (t->dim() != 2 || t->size(0) != batch || t->size(1) != length) {
        return bad(name, " must be [", batch, ", ", length, "], got ", shape(*t));
      }
      if (t->device() != device()) {
        return bad(name, " is on ", t->device().str(), ", the model on ", device().str());
      }
    }
    if (in.position_ids.defined()) {
      if (!at::isIntegralType(in.position_ids.scalar_type(), /*includeBool=*/false)) {
        return bad("position_ids must be integers, got ",
                   c10::toString(in.position_ids.scalar_type()));
      }
      if ((in.position_ids < 0).any().item<bool>()) return bad("position_ids hold negative values");
    }
    if (in.labels.defined()) {
      if (!at::isIntegralType(in.labels.scalar_type(), /*includeBool=*/false)) {
        return bad("labels must be integer ids, got ", c10::toString(in.labels.scalar_type()));
      }
      at::Tensor labels = in.labels.to(at::kLong);
      at::Tensor invalid = (labels != kIgnoreIndex).logical_and(
          (labels < 0).logical_or(labels >= config_.vocab_size));
      if (invalid.any().item<bool>()) {
        return bad("labels hold ids outside [0, ", config_.vocab_size, ") other than -100");
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  }
  return absl::OkStatus();
}

void RepeatRows(int64_t times, LlamaDecoderState* state) {
  TORCH_CHECK(times >= 1, "RepeatRows: times must be at least 1, got ", times);
  if (times == 1) return;
  auto repeat = [times](at::Tensor& t) {
    if (t.defined()) t = t.repeat_interleave(times, 0);
  };
  for (at::Tensor& t : state->keys) repeat(t);
  for (at::Tensor& t : state->values) repeat(t);
  repeat(state->key_mask);
  for (std::vector<at::Tensor>* list :
       {&state->past_embeds, &state->past_masks, &state->past_positions}) {
    for (at::Tensor& t : *list) repeat(t);
  }
}

at::Tensor GenerationPositionIds(const at::Tensor& attention_mask) {
  at::Tensor mask = attention_mask.to(at::kLong);
  return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0);
}

}  // namespace mpt
