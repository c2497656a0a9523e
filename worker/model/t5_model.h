// A frozen Hugging Face T5 encoder-decoder (T5ForConditionalGeneration, and
// the mT5 and UMT5 variants; see t5_config.h) in
// plain ATen ops, built for prompt tuning: every entry point takes
// embeddings, so a training loop can put soft prompts in front of the word
// embeddings and get gradients for the prompts only.
//
// What it computes is what transformers' T5 computes in eval mode (no
// dropout): RMS layer norm in fp32 without mean or bias, relative position
// buckets (bidirectional in the encoder, causal in the decoder) computed once
// per stack from the first block's bias table and shared by all blocks
// (UMT5, model_type "umt5": each block's self-attention uses its own), no
// 1/sqrt(d_kv) scaling of the attention scores, causal and padding masks
// that set masked scores to the dtype's lowest value (a fully masked row
// attends uniformly instead of producing NaN), cross-attention without
// position bias,
// ReLU or gated-GELU (or another ACT2FN activation) feed-forward, final layer
// norms, and the LM head (scaled by d_model^-0.5 for the original T5).
//
// Weights are loaded once, converted to the requested dtype and device and
// never require gradients: autograd records nothing for them and no gradient
// is ever stored in them. Inputs that require gradients (a soft prompt) get
// them as usual.
//
// Tensors: "ids" are int64 (other integer types are converted); masks are
// [B, S] with 1 (or true) for real tokens and 0 for padding, any dtype;
// embeddings and hidden states are [B, S, d_model] in the model's dtype.
//
// Errors: Load() returns a status. The tensor functions are the hot path of
// training and, like libtorch itself, throw c10::Error when given tensors of
// the wrong rank, shape or device; CheckForwardInputs() validates a batch and
// returns a status instead, so a caller at a module boundary can validate
// once and catch nothing. No function here throws anything else.
//
// Thread-safety: a loaded T5Model is immutable; const methods may run
// concurrently (each call allocates its own activations).
#ifndef MPT_WORKER_MODEL_T5_MODEL_H_
#define MPT_WORKER_MODEL_T5_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/t5_config.h"

namespace mpt {

struct T5LoadOptions {
  // Where the weights live and the computation runs. Default: the CPU.
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  // The dtype of the weights and activations: Float (default), Half or
  // BFloat16 (layer norms still accumulate in fp32), or Double.
  c10::ScalarType dtype = c10::ScalarType::Float;
};

struct T5ForwardInputs {
  at::Tensor inputs_embeds;           // [B, S, d], required
  at::Tensor attention_mask;          // [B, S]; undefined: no padding
  at::Tensor decoder_inputs_embeds;   // [B, L, d], required
  at::Tensor decoder_attention_mask;  // [B, L]; undefined: causal mask only
  at::Tensor labels;                  // [B, L] int64, -100 = ignored; undefined: no loss
};

struct T5Output {
  at::Tensor loss;            // scalar fp32 when labels were given, else undefined
  at::Tensor logits;          // [B, L, vocab] in the model dtype
  at::Tensor encoder_hidden;  // [B, S, d] after the encoder's final layer norm
  at::Tensor decoder_hidden;  // [B, L, d] after the decoder's final layer norm
};

// The decoder state of an incremental (KV-cached) decode; see
// T5Model::StartDecoding. Owned by the caller, one per sequence batch; not
// thread-safe.
struct T5DecoderState {
  at::Tensor encoder_bias;               // [B, 1, 1, S] additive padding mask
  std::vector<at::Tensor> cross_keys;    // per layer [B, H, S, d_kv]
  std::vector<at::Tensor> cross_values;  // per layer [B, H, S, d_kv]
  std::vector<at::Tensor> self_keys;     // per layer [B, H, t, d_kv]
  std::vector<at::Tensor> self_values;   // per layer [B, H, t, d_kv]
  at::Tensor self_mask;                  // [B, t] key mask so far (bool), or undefined
  int64_t length = 0;                    // t: decoder positions consumed so far
};

// Repeats each row of the state `times` times in place, as repeat_interleave
// does along the batch: row b becomes rows b * times .. b * times + times - 1.
// The following DecodeSteps then continue `times` sequences from each one
// (rank classification scores K answers of one encoded input).
void RepeatRows(int64_t times, T5DecoderState* state);

class T5Model {
 public:
  // Loads `folder`: config.json (see T5Config::FromJsonFile) and the weights
  // (model.safetensors, or an index and its shards; see ModelTensors::Open).
  // Every tensor the architecture needs must be present with the right shape
  // and a floating dtype; extra tensors are ignored. The word embedding is
  // shared.weight (encoder.embed_tokens.weight or decoder.embed_tokens.weight
  // when that is absent). The LM head is lm_head.weight when the checkpoint
  // has it, else the word embedding; with tie_word_embeddings false,
  // lm_head.weight is required.
  //
  // Errors: NOT_FOUND for a missing config.json or weights file (naming the
  // path); INVALID_ARGUMENT naming the folder, the tensor, the expected and
  // the actual shape for a missing or misshapen tensor, and the errors of
  // T5Config and ModelTensors for a bad config or file; INVALID_ARGUMENT for
  // an unsupported dtype option; INTERNAL when libtorch fails (e.g. moving to
  // an unavailable device), with its message.
  static absl::StatusOr<std::unique_ptr<T5Model>> Load(const std::string& folder,
                                                       const T5LoadOptions& options = {});

  T5Model(const T5Model&) = delete;
  T5Model& operator=(const T5Model&) = delete;
  ~T5Model();

  const T5Config& config() const { return config_; }
  const std::string& folder() const { return folder_; }
  c10::Device device() const;
  c10::ScalarType dtype() const;
  // The word-embedding table [vocab, d] (frozen), e.g. for TEXT prompt init.
  const at::Tensor& word_embeddings() const;
  // Number of weight elements in the checkpoint tensors used (a tied head
  // counted once).
  int64_t num_parameters() const;
  // Every weight tensor the model computes with (q/k/v and wi_0/wi_1 are
  // held concatenated); none requires grad.
  std::vector<at::Tensor> Parameters() const;

  // [B, S] ids -> [B, S, d] word embeddings (no scaling, as T5).
  at::Tensor Embed(const at::Tensor& ids) const;

  // The encoder: [B, S, d] embeddings and a [B, S] mask (may be undefined)
  // -> final encoder hidden states [B, S, d].
  at::Tensor Encode(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask) const;

  // The decoder over a whole target (teacher forcing): causal self-attention
  // (plus padding of decoder_attention_mask when defined) and cross-attention
  // to `encoder_hidden` masked by `encoder_attention_mask` (may be
  // undefined) -> final decoder hidden states [B, L, d] (after the final
  // layer norm, before any LM-head scaling). With `outputs_from` = p > 0
  // only positions p.. are returned ([B, L - p, d], the same values) and
  // the last block computes its queries, attention, cross-attention and
  // feed-forward at those positions only (its keys and values at all);
  // fp16 models compute every position and narrow at the end.
  at::Tensor Decode(const at::Tensor& decoder_inputs_embeds,
                    const at::Tensor& decoder_attention_mask, const at::Tensor& encoder_hidden,
                    const at::Tensor& encoder_attention_mask, int64_t outputs_from = 0) const;

  // [B, L, d] -> [B, L, vocab] logits. Scales by d_model^-0.5 first when the
  // config says so (the original T5).
  at::Tensor LmHead(const at::Tensor& decoder_hidden) const;

  // Encoder, decoder, LM head and, when labels are defined, the mean token
  // cross-entropy over the labels that are not -100 (computed in fp32; NaN
  // when every label is -100, as transformers).
  T5Output Forward(const T5ForwardInputs& inputs) const;

  // INVALID_ARGUMENT describing the first problem (rank, batch or length
  // mismatch, wrong d_model, device, non-integer labels, label ids out of
  // range) of a batch for Forward(); OK when Forward() will not throw.
  absl::Status CheckForwardInputs(const T5ForwardInputs& inputs) const;

  // transformers' _shift_right: [B, L] labels -> decoder input ids with
  // decoder_start_token_id first, labels[:, :-1] after it, and -100 replaced
  // by pad_token_id.
  at::Tensor ShiftRight(const at::Tensor& labels) const;

  // Incremental decoding with a KV cache, for generation. StartDecoding
  // projects the encoder output for cross-attention once; each DecodeStep
  // appends T >= 1 positions ([B, T, d] embeddings; T = 1 per generated
  // token) and returns their final hidden states [B, T, d], identical (up to
  // float rounding) to the same positions of Decode() over the whole
  // sequence. `step_mask` ([B, T], may be undefined) marks padding among the
  // new positions. Call under at::NoGradGuard unless gradients are wanted.
  // `outputs_from` as Decode's, over the T new positions (the state still
  // holds every position's keys and values).
  T5DecoderState StartDecoding(const at::Tensor& encoder_hidden,
                               const at::Tensor& encoder_attention_mask) const;
  at::Tensor DecodeStep(const at::Tensor& step_embeds, const at::Tensor& step_mask,
                        T5DecoderState* state, int64_t outputs_from = 0) const;

 private:
  struct Weights;
  T5Model() = default;

  at::Tensor PositionBias(int64_t query_length, int64_t key_length, int64_t query_offset,
                          bool bidirectional, const at::Tensor& table) const;
  at::Tensor MaskBias(const at::Tensor& mask) const;
  at::Tensor LayerNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor FeedForward(const at::Tensor& x, int64_t block, bool decoder) const;

  T5Config config_;
  std::string folder_;
  std::unique_ptr<Weights> weights_;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_T5_MODEL_H_
