#include "worker/model/t5_model.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/model/activations.h"
#include "worker/model/batched_matmul.h"
#include "worker/model/torch_tensors.h"
#include "worker/model/labels.h"

namespace mpt {
namespace {

struct BlockWeights {
  at::Tensor self_norm;  // [d]
  at::Tensor self_qkv;   // [3 * inner, d]: q, k, v stacked
  at::Tensor self_o;     // [d, inner]
  // Decoder blocks only.
  at::Tensor cross_norm;  // [d]
  at::Tensor cross_q;     // [inner, d]
  at::Tensor cross_kv;    // [2 * inner, d]: k, v stacked
  at::Tensor cross_o;     // [d, inner]
  // Feed-forward.
  at::Tensor ff_norm;  // [d]
  at::Tensor wi;       // [d_ff, d], or [2 * d_ff, d] (wi_0, wi_1) when gated
  at::Tensor wo;       // [d, d_ff]
  // UMT5 only: this layer's own relative attention bias, [buckets, H].
  at::Tensor bias_table;
};

bool IsReducedFloat(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::Half || dtype == c10::ScalarType::BFloat16;
}

// [B, T, H * dk] -> [B, H, T, dk]
at::Tensor SplitHeads(const at::Tensor& x, int64_t heads, int64_t d_kv) {
  return x.view({x.size(0), x.size(1), heads, d_kv}).transpose(1, 2);
}

// [B, H, T, dk] -> [B, T, H * dk]
at::Tensor MergeHeads(const at::Tensor& x) {
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

// T5 attention: no 1/sqrt(dk) scaling; `bias` (position bias and masks,
// broadcastable to [B, H, Tq, Tk]) is added to the scores.
// The result's memory is [B, Tq, H, dk] where BatchedMatmul's BLAS path
// runs, so MergeHeads is then a view.
at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& bias) {
  at::Tensor scores = BatchedMatmul(q, k.transpose(-1, -2));
  if (bias.defined()) {
    // In place where that keeps the sum's dtype (not under autocast, where
    // bf16 scores plus an fp32 bias is fp32).
    if (at::result_type(scores, bias) == scores.scalar_type()) {
      scores.add_(bias);
    } else {
      scores = scores + bias;
    }
  }
  return BatchedMatmul(at::softmax(scores, -1), v, ProductLayout::kHeadsInner);
}

// transformers clamps fp16 activations that overflowed after each sub-layer.
at::Tensor ClampHalf(at::Tensor x) {
  if (x.scalar_type() != c10::ScalarType::Half) return x;
  const double max = 65504.0;
  const double clamp = x.isinf().any().item<bool>() ? max - 1000.0 : max;
  return at::clamp(x, -clamp, clamp);
}

// transformers' _relative_position_bucket, op for op (float32 log), so that
// bucket boundaries round the same way.
at::Tensor RelativePositionBucket(at::Tensor relative_position, bool bidirectional,
                                  int64_t num_buckets, int64_t max_distance) {
  at::Tensor buckets = at::zeros_like(relative_position);
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (relative_position > 0).to(at::kLong) * num_buckets;
    relative_position = at::abs(relative_position);
  } else {
    relative_position = -at::min(relative_position, at::zeros_like(relative_position));
  }
  const int64_t max_exact = num_buckets / 2;
  at::Tensor is_small = relative_position < max_exact;
  at::Tensor if_large =
      (at::log(relative_position.to(at::kFloat) / max_exact) /
           std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
       (num_buckets - max_exact))
          .to(at::kLong) +
      max_exact;
  if_large = at::min(if_large, at::full_like(if_large, num_buckets - 1));
  return buckets + at::where(is_small, relative_position, if_large);
}


}  // namespace

struct T5Model::Weights {
  at::Tensor shared;   // [vocab, d]
  at::Tensor lm_head;  // [vocab, d]; the same tensor as `shared` when tied
  at::Tensor encoder_bias_table;  // [buckets, H]
  at::Tensor decoder_bias_table;  // [buckets, H]
  std::vector<BlockWeights> encoder;
  std::vector<BlockWeights> decoder;
  at::Tensor encoder_final_norm;
  at::Tensor decoder_final_norm;
  int64_t num_parameters = 0;
};

T5Model::~T5Model() = default;

absl::StatusOr<std::unique_ptr<T5Model>> T5Model::Load(const std::string& folder,
                                                        const T5LoadOptions& options) {
  RETURN_IF_ERROR(CheckWeightDtype(options.dtype, "T5LoadOptions.dtype"));
  const std::string prefix = folder.empty() || folder.back() == '/' ? folder : folder + "/";
  ASSIGN_OR_RETURN(T5Config config, T5Config::FromJsonFile(prefix + "config.json"));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelTensors> tensors, ModelTensors::Open(folder));

  std::unique_ptr<T5Model> model(new T5Model());
  model->config_ = config;
  model->folder_ = folder;
  model->weights_ = std::make_unique<Weights>();
  Weights& w = *model->weights_;

  const int64_t d = config.d_model;
  const int64_t inner = config.inner_dim();
  const int64_t d_ff = config.d_ff;
  const int64_t vocab = config.vocab_size;
  try {
    at::NoGradGuard no_grad;
    FrozenWeightLoader loader(*tensors, options.device, options.dtype);

    std::string embed_name = "shared.weight";
    for (const char* alt : {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}) {
      if (!loader.Has(embed_name) && loader.Has(alt)) embed_name = alt;
    }
    ASSIGN_OR_RETURN(w.shared, loader.Get(embed_name, {vocab, d}));
    if (loader.Has("lm_head.weight")) {
      ASSIGN_OR_RETURN(w.lm_head, loader.Get("lm_head.weight", {vocab, d}));
    } else if (!config.tie_word_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          folder, ": missing tensor \"lm_head.weight\" (expected shape ",
          ShapeString({vocab, d}), "), required because config.json sets "
          "tie_word_embeddings to false"));
    } else {
      w.lm_head = w.shared;
    }

    auto load_stack = [&](const std::string& stack, int64_t layers, bool decoder,
                          std::vector<BlockWeights>& blocks, at::Tensor& bias_table,
                          at::Tensor& final_norm) -> absl::Status {
      for (int64_t i = 0; i < layers; ++i) {
        BlockWeights b;
        const std::string p = absl::StrCat(stack, ".block.", i, ".layer.");
        const std::string self = p + "0.SelfAttention.";
        ASSIGN_OR_RETURN(b.self_norm, loader.Get(p + "0.layer_norm.weight", {d}));
        ASSIGN_OR_RETURN(at::Tensor q, loader.Get(self + "q.weight", {inner, d}));
        ASSIGN_OR_RETURN(at::Tensor k, loader.Get(self + "k.weight", {inner, d}));
        ASSIGN_OR_RETURN(at::Tensor v, loader.Get(self + "v.weight", {inner, d}));
        ASSIGN_OR_RETURN(b.self_o, loader.Get(self + "o.weight", {d, inner}));
        b.self_qkv = at::cat({q, k, v}, 0);
        if (i == 0 || config.per_layer_position_bias) {
          ASSIGN_OR_RETURN(at::Tensor table,
                           loader.Get(self + "relative_attention_bias.weight",
                                      {config.relative_attention_num_buckets, config.num_heads}));
          if (i == 0) bias_table = table;
          if (config.per_layer_position_bias) b.bias_table = table;
        }
        int ff_layer = 1;
        if (decoder) {
          const std::string cross = p + "1.EncDecAttention.";
          ASSIGN_OR_RETURN(b.cross_norm, loader.Get(p + "1.layer_norm.weight", {d}));
          ASSIGN_OR_RETURN(b.cross_q, loader.Get(cross + "q.weight", {inner, d}));
          ASSIGN_OR_RETURN(at::Tensor ck, loader.Get(cross + "k.weight", {inner, d}));
          ASSIGN_OR_RETURN(at::Tensor cv, loader.Get(cross + "v.weight", {inner, d}));
          ASSIGN_OR_RETURN(b.cross_o, loader.Get(cross + "o.weight", {d, inner}));
          b.cross_kv = at::cat({ck, cv}, 0);
          ff_layer = 2;
        }
        const std::string ff = absl::StrCat(p, ff_layer, ".DenseReluDense.");
        ASSIGN_OR_RETURN(b.ff_norm, loader.Get(absl::StrCat(p, ff_layer, ".layer_norm.weight"), {d}));
        if (config.is_gated_act) {
          ASSIGN_OR_RETURN(at::Tensor wi0, loader.Get(ff + "wi_0.weight", {d_ff, d}));
          ASSIGN_OR_RETURN(at::Tensor wi1, loader.Get(ff + "wi_1.weight", {d_ff, d}));
          b.wi = at::cat({wi0, wi1}, 0);
        } else {
          ASSIGN_OR_RETURN(b.wi, loader.Get(ff + "wi.weight", {d_ff, d}));
        }
        ASSIGN_OR_RETURN(b.wo, loader.Get(ff + "wo.weight", {d, d_ff}));
        blocks.push_back(std::move(b));
      }
      ASSIGN_OR_RETURN(final_norm, loader.Get(stack + ".final_layer_norm.weight", {d}));
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(load_stack("encoder", config.num_layers, /*decoder=*/false, w.encoder,
                               w.encoder_bias_table, w.encoder_final_norm));
    RETURN_IF_ERROR(load_stack("decoder", config.num_decoder_layers, /*decoder=*/true, w.decoder,
                               w.decoder_bias_table, w.decoder_final_norm));
    w.num_parameters = loader.num_parameters();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(folder, ": loading the weights failed: ", e.what_without_backtrace()));
  }
  return model;
}

c10::Device T5Model::device() const { return weights_->shared.device(); }
c10::ScalarType T5Model::dtype() const { return weights_->shared.scalar_type(); }
const at::Tensor& T5Model::word_embeddings() const { return weights_->shared; }
int64_t T5Model::num_parameters() const { return weights_->num_parameters; }

std::vector<at::Tensor> T5Model::Parameters() const {
  const Weights& w = *weights_;
  std::vector<at::Tensor> out = {w.shared, w.encoder_bias_table, w.decoder_bias_table,
                                 w.encoder_final_norm, w.decoder_final_norm};
  if (!w.lm_head.is_same(w.shared)) out.push_back(w.lm_head);
  for (const std::vector<BlockWeights>* stack : {&w.encoder, &w.decoder}) {
    for (const BlockWeights& b : *stack) {
      for (const at::Tensor* t : {&b.self_norm, &b.self_qkv, &b.self_o, &b.cross_norm, &b.cross_q,
                                  &b.cross_kv, &b.cross_o, &b.ff_norm, &b.wi, &b.wo,
                                  &b.bias_table}) {
        if (t->defined() && !t->is_same(w.encoder_bias_table) &&
            !t->is_same(w.decoder_bias_table)) {
          out.push_back(*t);
        }
      }
    }
  }
  return out;
}

at::Tensor T5Model::Embed(const at::Tensor& ids) const {
  at::Tensor long_ids = ids.scalar_type() == at::kLong ? ids : ids.to(at::kLong);
  return at::embedding(weights_->shared, long_ids);
}

at::Tensor T5Model::LayerNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // T5LayerNorm: RMS only, accumulated in fp32 (or fp64 for a double model).
  const c10::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor xf = x.to(acc);
  at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor normed = xf * at::rsqrt(variance + config_.layer_norm_epsilon);
  if (IsReducedFloat(weight.scalar_type())) normed = normed.to(weight.scalar_type());
  return weight * normed;
}

at::Tensor T5Model::FeedForward(const at::Tensor& x, int64_t block, bool decoder) const {
  const BlockWeights& b = decoder ? weights_->decoder[block] : weights_->encoder[block];
  at::Tensor h = at::linear(x, b.wi);
  if (config_.is_gated_act) {
    std::vector<at::Tensor> parts = h.chunk(2, -1);
    h = ApplyActivation(parts[0], config_.dense_act) * parts[1];
  } else if (config_.dense_act == T5Activation::kRelu) {
    // In place: the product's backward needs the weight, not its output.
    h = at::relu_(h);
  } else {
    h = ApplyActivation(h, config_.dense_act);
  }
  return at::linear(h, b.wo);
}

at::Tensor T5Model::PositionBias(int64_t query_length, int64_t key_length, int64_t query_offset,
                                 bool bidirectional, const at::Tensor& table) const {
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(table.device());
  at::Tensor context = at::arange(query_length, long_options).unsqueeze(1) + query_offset;
  at::Tensor memory = at::arange(key_length, long_options).unsqueeze(0);
  at::Tensor buckets = RelativePositionBucket(memory - context, bidirectional,
                                              config_.relative_attention_num_buckets,
                                              config_.relative_attention_max_distance);
  // [Tq, Tk, H] -> [1, H, Tq, Tk]
  return at::embedding(table, buckets).permute({2, 0, 1}).unsqueeze(0);
}

at::Tensor T5Model::MaskBias(const at::Tensor& mask) const {
  // [B, S] -> [B, 1, 1, S]: 0 where attended, the dtype's lowest where masked.
  at::Tensor keep = (mask != 0).view({mask.size(0), 1, 1, mask.size(1)});
  at::Tensor zeros = at::zeros(keep.sizes(), keep.options().dtype(dtype()));
  return zeros.masked_fill(keep.logical_not(), LowestValue(dtype()));
}

at::Tensor T5Model::Encode(const at::Tensor& inputs_embeds,
                           const at::Tensor& attention_mask) const {
  const Weights& w = *weights_;
  const int64_t batch = inputs_embeds.size(0);
  const int64_t length = inputs_embeds.size(1);
  const int64_t heads = config_.num_heads;
  const int64_t d_kv = config_.d_kv;

  TORCH_CHECK(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == config_.d_model,
              "T5Model::Encode: inputs_embeds must be [batch, length, ", config_.d_model,
              "], got ", inputs_embeds.sizes());
  TORCH_CHECK(!attention_mask.defined() || (attention_mask.dim() == 2 &&
                                            attention_mask.size(0) == batch &&
                                            attention_mask.size(1) == length),
              "T5Model::Encode: attention_mask must be [", batch, ", ", length, "], got ",
              attention_mask.defined() ? attention_mask.sizes() : at::IntArrayRef());
  at::Tensor keep;
  if (attention_mask.defined()) keep = (attention_mask != 0).view({batch, 1, 1, length});
  auto make_bias = [&](const at::Tensor& table) {
    at::Tensor bias = PositionBias(length, length, 0, /*bidirectional=*/true, table);
    if (!keep.defined()) return bias;
    return bias.expand({batch, heads, length, length})
        .masked_fill(keep.logical_not(), LowestValue(dtype()));
  };
  at::Tensor bias = make_bias(w.encoder_bias_table);

  at::Tensor h = inputs_embeds;
  for (size_t i = 0; i < w.encoder.size(); ++i) {
    const BlockWeights& b = w.encoder[i];
    if (i > 0 && b.bias_table.defined()) bias = make_bias(b.bias_table);  // UMT5
    at::Tensor qkv = at::linear(LayerNorm(h, b.self_norm), b.self_qkv);
    std::vector<at::Tensor> parts = qkv.chunk(3, -1);
    at::Tensor attended = Attend(SplitHeads(parts[0], heads, d_kv), SplitHeads(parts[1], heads, d_kv),
                                 SplitHeads(parts[2], heads, d_kv), bias);
    h = ClampHalf(h + at::linear(MergeHeads(attended), b.self_o));
    h = ClampHalf(h + FeedForward(LayerNorm(h, b.ff_norm), static_cast<int64_t>(i), false));
  }
  return LayerNorm(h, w.encoder_final_norm);
}

T5DecoderState T5Model::StartDecoding(const at::Tensor& encoder_hidden,
                                      const at::Tensor& encoder_attention_mask) const {
  const Weights& w = *weights_;
  TORCH_CHECK(encoder_hidden.dim() == 3 && encoder_hidden.size(2) == config_.d_model,
              "T5Model: encoder_hidden must be [batch, length, ", config_.d_model, "], got ",
              encoder_hidden.sizes());
  TORCH_CHECK(!encoder_attention_mask.defined() ||
                  (encoder_attention_mask.dim() == 2 &&
                   encoder_attention_mask.size(0) == encoder_hidden.size(0) &&
                   encoder_attention_mask.size(1) == encoder_hidden.size(1)),
              "T5Model: encoder_attention_mask must be [", encoder_hidden.size(0), ", ",
              encoder_hidden.size(1), "], got ",
              encoder_attention_mask.defined() ? encoder_attention_mask.sizes() : at::IntArrayRef());
  T5DecoderState state;
  if (encoder_attention_mask.defined()) state.encoder_bias = MaskBias(encoder_attention_mask);
  state.cross_keys.reserve(w.decoder.size());
  state.cross_values.reserve(w.decoder.size());
  for (const BlockWeights& b : w.decoder) {
    std::vector<at::Tensor> kv = at::linear(encoder_hidden, b.cross_kv).chunk(2, -1);
    state.cross_keys.push_back(SplitHeads(kv[0], config_.num_heads, config_.d_kv));
    state.cross_values.push_back(SplitHeads(kv[1], config_.num_heads, config_.d_kv));
  }
  state.self_keys.resize(w.decoder.size());
  state.self_values.resize(w.decoder.size());
  return state;
}

at::Tensor T5Model::DecodeStep(const at::Tensor& step_embeds, const at::Tensor& step_mask,
                               T5DecoderState* state, int64_t outputs_from) const {
  const Weights& w = *weights_;
  const int64_t batch = step_embeds.size(0);
  const int64_t steps = step_embeds.size(1);
  const int64_t offset = state->length;
  const int64_t keys = offset + steps;
  const int64_t heads = config_.num_heads;
  const int64_t d_kv = config_.d_kv;
  TORCH_CHECK(state->cross_keys.size() == w.decoder.size(),
              "T5Model::DecodeStep: the state was not made by StartDecoding of this model");
  TORCH_CHECK(step_embeds.dim() == 3 && step_embeds.size(2) == config_.d_model,
              "T5Model::DecodeStep: decoder embeddings must be [batch, length, ", config_.d_model,
              "], got ", step_embeds.sizes());
  TORCH_CHECK(state->cross_keys.empty() || state->cross_keys[0].size(0) == batch,
              "T5Model::DecodeStep: decoder batch ", batch, " does not match the encoder batch ",
              state->cross_keys.empty() ? 0 : state->cross_keys[0].size(0));
  TORCH_CHECK(!step_mask.defined() ||
                  (step_mask.dim() == 2 && step_mask.size(0) == batch && step_mask.size(1) == steps),
              "T5Model::DecodeStep: decoder_attention_mask must be [", batch, ", ", steps,
              "], got ", step_mask.defined() ? step_mask.sizes() : at::IntArrayRef());
  TORCH_CHECK(outputs_from >= 0 && outputs_from < steps, "T5Model::DecodeStep: outputs_from ",
              outputs_from, " is not in [0, ", steps, ")");
  // fp16 keeps every row to the end: ClampHalf's bound depends on whether
  // any row of the sub-layer's output overflowed, as in transformers.
  const int64_t from = dtype() == c10::ScalarType::Half ? 0 : outputs_from;

  // Key padding so far: undefined means every key is real.
  if (step_mask.defined()) {
    at::Tensor real = step_mask != 0;
    at::Tensor before = state->self_mask.defined()
                            ? state->self_mask
                            : at::ones({batch, offset}, real.options());
    state->self_mask = at::cat({before, real}, 1);
  } else if (state->self_mask.defined()) {
    state->self_mask =
        at::cat({state->self_mask, at::ones({batch, steps}, state->self_mask.options())}, 1);
  }

  // Causal: query offset + i sees keys j <= offset + i.
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(step_embeds.device());
  at::Tensor causal = at::arange(keys, long_options).unsqueeze(0) <=
                      (at::arange(steps, long_options).unsqueeze(1) + offset);  // [T, K]
  at::Tensor keep = causal.view({1, 1, steps, keys});
  if (state->self_mask.defined()) keep = keep.logical_and(state->self_mask.view({batch, 1, 1, keys}));
  auto make_bias = [&](const at::Tensor& table) {
    return PositionBias(steps, keys, offset, /*bidirectional=*/false, table)
        .expand({keep.size(0), heads, steps, keys})
        .masked_fill(keep.logical_not(), LowestValue(dtype()));
  };
  at::Tensor self_bias = make_bias(w.decoder_bias_table);

  at::Tensor h = step_embeds;
  for (size_t i = 0; i < w.decoder.size(); ++i) {
    const BlockWeights& b = w.decoder[i];
    if (i > 0 && b.bias_table.defined()) self_bias = make_bias(b.bias_table);  // UMT5
    at::Tensor normed = LayerNorm(h, b.self_norm);
    at::Tensor q, k, v;
    at::Tensor bias = self_bias;
    if (from > 0 && i + 1 == w.decoder.size()) {
      // The last block's outputs at positions >= from only: its keys and
      // values cover every position, its queries and everything after
      // them the rows returned.
      const int64_t inner = heads * d_kv, rows = steps - from;
      std::vector<at::Tensor> kv =
          at::linear(normed, b.self_qkv.narrow(0, inner, 2 * inner)).chunk(2, -1);
      k = SplitHeads(kv[0], heads, d_kv);
      v = SplitHeads(kv[1], heads, d_kv);
      q = SplitHeads(at::linear(normed.narrow(1, from, rows), b.self_qkv.narrow(0, 0, inner)),
                     heads, d_kv);
      h = h.narrow(1, from, rows);
      bias = self_bias.narrow(2, from, rows);
    } else {
      std::vector<at::Tensor> parts = at::linear(normed, b.self_qkv).chunk(3, -1);
      q = SplitHeads(parts[0], heads, d_kv);
      k = SplitHeads(parts[1], heads, d_kv);
      v = SplitHeads(parts[2], heads, d_kv);
    }
    if (state->self_keys[i].defined()) {
      k = at::cat({state->self_keys[i], k}, 2);
      v = at::cat({state->self_values[i], v}, 2);
    }
    state->self_keys[i] = k;
    state->self_values[i] = v;
    at::Tensor attended = Attend(q, k, v, bias);
    h = ClampHalf(h + at::linear(MergeHeads(attended), b.self_o));

    q = SplitHeads(at::linear(LayerNorm(h, b.cross_norm), b.cross_q), heads, d_kv);
    attended = Attend(q, state->cross_keys[i], state->cross_values[i], state->encoder_bias);
    h = ClampHalf(h + at::linear(MergeHeads(attended), b.cross_o));

    h = ClampHalf(h + FeedForward(LayerNorm(h, b.ff_norm), static_cast<int64_t>(i), true));
  }
  state->length = keys;
  // Not narrowed in the last block (fp16): narrowed here.
  if (h.size(1) != steps - outputs_from) h = h.narrow(1, outputs_from, steps - outputs_from);
  return LayerNorm(h, w.decoder_final_norm);
}

at::Tensor T5Model::Decode(const at::Tensor& decoder_inputs_embeds,
                           const at::Tensor& decoder_attention_mask,
                           const at::Tensor& encoder_hidden,
                           const at::Tensor& encoder_attention_mask, int64_t outputs_from) const {
  T5DecoderState state = StartDecoding(encoder_hidden, encoder_attention_mask);
  return DecodeStep(decoder_inputs_embeds, decoder_attention_mask, &state, outputs_from);
}

at::Tensor T5Model::LmHead(const at::Tensor& decoder_hidden) const {
  at::Tensor h = decoder_hidden;
  if (config_.scale_decoder_outputs) h = h * std::pow(static_cast<double>(config_.d_model), -0.5);
  return at::linear(h, weights_->lm_head);
}

T5Output T5Model::Forward(const T5ForwardInputs& inputs) const {
  T5Output out;
  out.encoder_hidden = Encode(inputs.inputs_embeds, inputs.attention_mask);
  out.decoder_hidden = Decode(inputs.decoder_inputs_embeds, inputs.decoder_attention_mask,
                              out.encoder_hidden, inputs.attention_mask);
  out.logits = LmHead(out.decoder_hidden);
  if (inputs.labels.defined()) {
    at::Tensor logits = out.logits.reshape({-1, out.logits.size(-1)});
    if (logits.scalar_type() != at::kFloat) logits = logits.to(at::kFloat);
    out.loss = at::cross_entropy_loss(logits, inputs.labels.reshape({-1}).to(at::kLong),
                                      /*weight=*/{}, at::Reduction::Mean, kIgnoreIndex);
  }
  return out;
}

absl::Status T5Model::CheckForwardInputs(const T5ForwardInputs& in) const {
  const int64_t d = config_.d_model;
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  auto shape = [](const at::Tensor& t) { return ShapeString(t.sizes()); };
  try {
    if (!in.inputs_embeds.defined()) return bad("inputs_embeds is undefined");
    if (!in.decoder_inputs_embeds.defined()) return bad("decoder_inputs_embeds is undefined");
    for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"inputs_embeds", &in.inputs_embeds},
                           {"decoder_inputs_embeds", &in.decoder_inputs_embeds}}) {
      if (t->dim() != 3 || t->size(2) != d) {
        return bad(name, " must be [batch, length, ", d, "], got ", shape(*t));
      }
      if (t->size(1) == 0) return bad(name, " is empty (length 0)");
      if (t->device() != device()) {
        return bad(name, " is on ", t->device().str(), ", the model on ", device().str());
      }
      if (!at::isFloatingType(t->scalar_type())) {
        return bad(name, " must be floating point, got ", c10::toString(t->scalar_type()));
      }
    }
    const int64_t batch = in.inputs_embeds.size(0);
    if (in.decoder_inputs_embeds.size(0) != batch) {
      return bad("decoder_inputs_embeds has batch ", in.decoder_inputs_embeds.size(0),
                 ", inputs_embeds has ", batch);
    }
    const int64_t source = in.inputs_embeds.size(1);
    const int64_t target = in.decoder_inputs_embeds.size(1);
    for (auto [name, t, length] :
         {std::tuple<const char*, const at::Tensor*, int64_t>{"attention_mask", &in.attention_mask, source},
          {"decoder_attention_mask", &in.decoder_attention_mask, target},
          {"labels", &in.labels, target}}) {
      if (!t->defined()) continue;
      if (t->dim() != 2 || t->size(0) != batch || t->size(1) != length) {
        return bad(name, " must be [", batch, ", ", length, "], got ", shape(*t));
      }
      if (t->device() != device()) {
        return bad(name, " is on ", t->device().str(), ", the model on ", device().str());
      }
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

void RepeatRows(int64_t times, T5DecoderState* state) {
  TORCH_CHECK(times >= 1, "RepeatRows: times must be at least 1, got ", times);
  if (times == 1) return;
  auto repeat = [times](at::Tensor& t) {
    if (t.defined()) t = t.repeat_interleave(times, 0);
  };
  repeat(state->encoder_bias);
  repeat(state->self_mask);
  for (std::vector<at::Tensor>* list :
       {&state->cross_keys, &state->cross_values, &state->self_keys, &state->self_values}) {
    for (at::Tensor& t : *list) repeat(t);
  }
}

at::Tensor T5Model::ShiftRight(const at::Tensor& labels) const {
  at::Tensor ids = labels.to(at::kLong);
  at::Tensor shifted = at::empty_like(ids);
  shifted.select(-1, 0).fill_(config_.decoder_start_token_id);
  if (ids.size(-1) > 1) {
    shifted.narrow(-1, 1, ids.size(-1) - 1).copy_(ids.narrow(-1, 0, ids.size(-1) - 1));
  }
  return shifted.masked_fill(shifted == kIgnoreIndex, config_.pad_token_id);
}

}  // namespace mpt
