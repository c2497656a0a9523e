#include "worker/model/model_flops.h"

namespace mpt {

StepFlops CountT5StepFlops(const T5Config& c, int64_t batch, int64_t encoder_length,
                           int64_t decoder_prefix_length, int64_t target_length,
                           bool with_teacher) {
  const bool decoder_prefix = decoder_prefix_length > 0;
  const double B = static_cast<double>(batch), S = static_cast<double>(encoder_length),
               L = static_cast<double>(decoder_prefix_length + target_length),
               targets = static_cast<double>(target_length), d = c.d_model, inner = c.inner_dim(),
               H = c.num_heads, dkv = c.d_kv, ff = c.d_ff, V = c.vocab_size;
  const double ff_in = c.is_gated_act ? 2 : 1;
  auto mm = [](double m, double n, double k) { return 2 * m * n * k; };
  // Weight products (backward 1x) and activation products (backward 2x).
  double weights = 0, activations = 0, no_backward = 0;
  // Encoder.
  weights += c.num_layers * (3 * mm(B * S, inner, d) + mm(B * S, d, inner) +
                             ff_in * mm(B * S, ff, d) + mm(B * S, d, ff));
  activations += c.num_layers * 2 * mm(B * H * S, S, dkv);
  // Decoder: self-attention, cross-attention, feed-forward. Each block's
  // self-attention keys and values cover all L positions; its queries and
  // everything after them cover `out`: L, except the last block's after a
  // decoder prefix, which runs at the target positions only.
  for (int i = 0; i < c.num_decoder_layers; ++i) {
    const double out = decoder_prefix && i + 1 == c.num_decoder_layers ? targets : L;
    const double self_w = 2 * mm(B * L, inner, d) + mm(B * out, inner, d) + mm(B * out, d, inner);
    const double self_a = 2 * mm(B * H * out, L, dkv);
    if (i == 0 && !decoder_prefix) {
      no_backward += self_w + self_a;  // block 0's self-attention sees no prompt
    } else {
      weights += self_w;
      activations += self_a;
    }
    weights += 2 * mm(B * out, inner, d) + 2 * mm(B * S, inner, d) + ff_in * mm(B * out, ff, d) +
               mm(B * out, d, ff);
    activations += 2 * mm(B * H * out, S, dkv);
  }
  weights += mm(B * targets, V, d);  // LM head, at the target positions only
  StepFlops f;
  f.forward = weights + activations + no_backward;
  f.backward = weights + 2 * activations;
  if (with_teacher) f.teacher = f.forward;
  return f;
}

StepFlops CountCausalStepFlops(const LlamaConfig& c, int64_t batch, int64_t prompt,
                               int64_t input, int64_t target, bool with_teacher) {
  const double B = static_cast<double>(batch), T = static_cast<double>(prompt + input + target),
               L = static_cast<double>(target), d = c.hidden_size, H = c.num_attention_heads,
               hd = c.head_dim, ff = c.intermediate_size, V = c.vocab_size;
  auto mm = [](double m, double n, double k) { return 2 * m * n * k; };
  // A layer whose keys and values cover `rows` positions and whose
  // queries, attention, output projection and MLP cover `out`.
  auto layer_weights = [&](double rows, double out) {
    return mm(rows, 2.0 * c.kv_dim(), d) + mm(out, c.q_dim(), d) + mm(out, d, c.q_dim()) +
           2 * mm(out, ff, d) + mm(out, d, ff);
  };
  const double layers = c.num_hidden_layers;
  // Every layer but the last at all positions; the last one's outputs only
  // where the target is predicted.
  double weights = (layers - 1) * layer_weights(B * T, B * T) + layer_weights(B * T, B * L);
  const double activations = (layers - 1) * 2 * mm(B * H * T, T, hd) + 2 * mm(B * H * L, T, hd);
  weights += mm(B * L, V, d);  // LM head
  StepFlops f;
  f.forward = weights + activations;
  f.backward = weights + 2 * activations;
  if (with_teacher) f.teacher = f.forward;
  return f;
}

}  // namespace mpt
