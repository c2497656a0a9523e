// A frozen Hugging Face decoder-only language model of the Llama family
// (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM; see
// llama_config.h) in plain ATen ops, built for prompt tuning: every entry
// point takes embeddings, so a training loop can put soft prompts in front of
// the word embeddings and get gradients for the prompts only.
//
// API summary (what callers may rely on):
//   LlamaModel::Load(folder, LlamaLoadOptions{device, dtype})
//   config(), folder(), device(), dtype(), word_embeddings(),
//   num_parameters(), Parameters()
//   Embed(ids)                                   [B,S] -> [B,S,d]
//   Hidden(inputs_embeds, attention_mask, position_ids) -> [B,S,d]
//   LmHead(hidden)                               [B,S,d] -> [B,S,V]
//   Forward(CausalLmInputs{inputs_embeds, attention_mask, position_ids,
//           labels}) -> CausalLmOutput{loss, logits, hidden}
//   CheckForwardInputs(CausalLmInputs) -> absl::Status
//   StartDecoding() -> LlamaDecoderState   (no arguments: the batch is
//           fixed by the first DecodeStep)
//   DecodeStep(step_embeds, step_mask, step_positions, &state) -> [B,T,d]
//   GenerationPositionIds(attention_mask)        transformers' generate rule
//
// What it computes is what transformers (5.x) computes in eval mode with
// attn_implementation="eager": RMS norm in fp32 (the weight applied after the
// cast back to the model dtype), rotary embeddings with HF's rotate_half
// convention and inv_freq per rope type (cos and sin in fp32, cast to the
// model dtype; YaRN's attention factor applied to them), grouped-query
// attention by repeating each key/value head num_heads / num_kv_heads times,
// scores scaled by head_dim^-0.5, an additive mask of the dtype's lowest
// value (causal, padding, and the sliding window where the config has one),
// softmax in fp32, SwiGLU MLP, final RMS norm, LM head.
//
// Positions: position_ids [B, S] (int64) are the rotary positions; when
// undefined they are 0..S-1 for every row, as transformers' forward does
// (with or without padding). The causal mask and the sliding window work on
// sequence indices, not on position ids, as transformers' masks do. For left
// padded prompts in generation use GenerationPositionIds(mask), the rule of
// transformers' generate.
//
// Dynamic rope ("dynamic"): transformers recomputes the frequencies from
// the largest position in the call (seq_len = max(position_ids) + 1) when it
// exceeds max_position_embeddings. Each call here does the same, without
// transformers' memory of earlier calls; so a KV-cached decode past
// max_position_embeddings rotates earlier keys with the frequencies of their
// own step (as transformers' cached generate does) and then differs from one
// Hidden() over the whole sequence. Below that length both agree. Longrope
// (each call picks the short or the long factors from its own largest
// position) differs: the first decode step past
// original_max_position_embeddings recomputes the cache with the long
// factors, as Phi-3's generate() does, so a cached decode equals Hidden()
// over the sequence so far at every step.
//
// Weights are loaded once, converted to the requested dtype and device and
// never require gradients. Inputs that require gradients (a soft prompt) get
// them as usual.
//
// Errors: Load() returns a status. The tensor functions are the hot path of
// training and, like libtorch itself, throw c10::Error when given tensors of
// the wrong rank, shape or device; CheckForwardInputs() validates a batch and
// returns a status instead. No function here throws anything else.
//
// Thread-safety: a loaded LlamaModel is immutable; const methods may run
// concurrently (each call allocates its own activations). A
// LlamaDecoderState belongs to one caller.
#ifndef MPT_WORKER_MODEL_LLAMA_MODEL_H_
#define MPT_WORKER_MODEL_LLAMA_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/llama_config.h"

namespace mpt {

struct LlamaLoadOptions {
  // Where the weights live and the computation runs. Default: the CPU.
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  // The dtype of the weights and activations: Float (default), Half,
  // BFloat16 (norms, rotary tables and softmax still in fp32) or Double.
  // Stored weights of any floating dtype are converted to it.
  c10::ScalarType dtype = c10::ScalarType::Float;
};

struct CausalLmInputs {
  at::Tensor inputs_embeds;   // [B, S, d], required
  at::Tensor attention_mask;  // [B, S], 1 = real, 0 = padding; undefined: none
  at::Tensor position_ids;    // [B, S] int64; undefined: 0..S-1 per row
  at::Tensor labels;          // [B, S] int64, -100 = ignored; undefined: no loss
};

struct CausalLmOutput {
  // fp32 scalar when labels were given: transformers' causal-LM loss, the
  // mean cross-entropy of logits[:, t] against labels[:, t + 1] over the
  // labels that are not -100 (NaN when there are none, as transformers).
  at::Tensor loss;
  at::Tensor logits;  // [B, S, vocab] in the model dtype
  at::Tensor hidden;  // [B, S, d] after the final norm
};

// The KV cache of an incremental decode; see LlamaModel::StartDecoding.
// Owned by the caller, one per sequence batch; not thread-safe.
struct LlamaDecoderState {
  std::vector<at::Tensor> keys;    // per layer [B, kv_heads, t, head_dim], rotated
  std::vector<at::Tensor> values;  // per layer [B, kv_heads, t, head_dim]
  at::Tensor key_mask;             // [B, t] bool real/padding so far, or undefined (all real)
  int64_t length = 0;              // t: positions consumed so far
  // Longrope only: whether the cache holds keys rotated with the long
  // factors, and until it does each call's embeddings, real-token masks and
  // positions (see DecodeStep).
  bool long_factors = false;
  std::vector<at::Tensor> past_embeds, past_masks, past_positions;
};

class LlamaModel {
 public:
  // Loads `folder`: config.json (see LlamaConfig::FromJsonFile) and the
  // weights (model.safetensors, or model.safetensors.index.json and its
  // shards; see ModelTensors::Open). Tensor names are transformers'
  // (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...,
  // model.norm.weight, lm_head.weight). Every tensor the config calls for
  // must be present with the right shape and a floating dtype (f32, f16,
  // bf16, f64); extra tensors are ignored. The LM head is lm_head.weight when
  // tie_word_embeddings is false (required then), else the word embedding.
  //
  // Errors: NOT_FOUND for a missing config.json or weights file or a shard
  // the index lists (naming the path); INVALID_ARGUMENT naming the folder,
  // the tensor, the expected and the actual shape (and the file) for a
  // missing or misshapen tensor, and the errors of LlamaConfig and
  // ModelTensors; INVALID_ARGUMENT for an unsupported dtype option; INTERNAL
  // when libtorch fails (e.g. an unavailable device), with its message.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& folder,
                                                          const LlamaLoadOptions& options = {});

  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;
  ~LlamaModel();

  const LlamaConfig& config() const { return config_; }
  const std::string& folder() const { return folder_; }
  c10::Device device() const;
  c10::ScalarType dtype() const;
  // The word-embedding table [vocab, d] (frozen), e.g. for TEXT prompt init.
  const at::Tensor& word_embeddings() const;
  // What Embed() multiplies rows by (gemma: sqrt(hidden_size) in the
  // model's dtype); undefined for the other families.
  const at::Tensor& embedding_scale() const;
  // Number of weight elements in the checkpoint tensors used (a tied head
  // counted once).
  int64_t num_parameters() const;
  // Every weight tensor the model computes with (q/k/v and gate/up are held
  // concatenated); none requires grad.
  std::vector<at::Tensor> Parameters() const;

  // [B, S] ids -> [B, S, d] word embeddings.
  at::Tensor Embed(const at::Tensor& ids) const;

  // The decoder stack over whole sequences: [B, S, d] embeddings, a [B, S]
  // padding mask (may be undefined; left or right padding) with causal
  // masking on top, [B, S] position ids (may be undefined: 0..S-1) -> final
  // hidden states [B, S, d] after the final norm.
  at::Tensor Hidden(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                    const at::Tensor& position_ids) const;
  // Hidden() at positions [from, from + count) only, [B, count, d]: the
  // last layer computes its queries, attention output and MLP there only
  // (its keys and values, and every layer below, still cover every
  // position). Equal to Hidden(...).narrow(1, from, count) up to float
  // rounding; what a prompted forward that scores a few target positions
  // needs.
  at::Tensor HiddenAt(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                      const at::Tensor& position_ids, int64_t from, int64_t count) const;

  // [B, S, d] -> [B, S, vocab] logits in the model dtype.
  at::Tensor LmHead(const at::Tensor& hidden) const;

  // Hidden, LM head and, when labels are defined, the shifted loss (see
  // CausalLmOutput).
  CausalLmOutput Forward(const CausalLmInputs& inputs) const;

  // INVALID_ARGUMENT describing the first problem (undefined or empty
  // embeddings, embeddings of a dtype other than dtype() (cast a fp32 prompt
  // for a bf16 model), rank, batch or length mismatch, wrong hidden size,
  // device, non-integer position ids or labels, negative positions, label
  // ids out of range) of a batch for Forward(); OK when Forward() will not
  // throw.
  absl::Status CheckForwardInputs(const CausalLmInputs& inputs) const;

  // Incremental decoding with a KV cache, for generation. Each DecodeStep
  // appends T >= 1 positions ([B, T, d] embeddings: the whole prompt first,
  // then one generated token at a time) and returns their final hidden
  // states [B, T, d], equal (up to float rounding) to the same positions of
  // Hidden() over the whole sequence with the concatenated mask and
  // positions (but see the dynamic rope note above; with longrope, to
  // Hidden() over the sequence up to and including this step). `step_mask`
  // ([B, T], may be undefined = all real) marks padding among the new
  // positions; `step_positions` ([B, T] int64, may be undefined = length ..
  // length+T-1 for every row) their rotary positions. The batch size must
  // stay the same. Call under at::NoGradGuard unless gradients are wanted.
  LlamaDecoderState StartDecoding() const;
  at::Tensor DecodeStep(const at::Tensor& step_embeds, const at::Tensor& step_mask,
                        const at::Tensor& step_positions, LlamaDecoderState* state) const;
  // DecodeStep returning the positions [outputs_from, outputs_from +
  // outputs) of the call only (outputs < 0: to the end), the last layer's
  // queries, attention output and MLP computed there only; the state still
  // holds every position's keys and values.
  at::Tensor DecodeStepAt(const at::Tensor& step_embeds, const at::Tensor& step_mask,
                          const at::Tensor& step_positions, int64_t outputs_from, int64_t outputs,
                          LlamaDecoderState* state) const;

 private:
  struct Weights;
  LlamaModel() = default;

  at::Tensor Norm(const at::Tensor& x, const at::Tensor& weight) const;
  // cos and sin [B, T, rotary_dim] in the model dtype for these positions:
  // of the full layers' rope, or with `sliding` of the sliding layers'
  // (gemma's second rope; the full one for the other families).
  // `seq_len` is the call's largest position + 1, which the dynamic and
  // longrope rules read (0 for an empty call).
  std::pair<at::Tensor, at::Tensor> Rotary(const at::Tensor& positions, int64_t seq_len,
                                           bool sliding) const;

  LlamaConfig config_;
  std::string folder_;
  std::unique_ptr<Weights> weights_;
};

// Repeats each cached row `times` times in place, as repeat_interleave does
// along the batch: row b becomes rows b * times .. b * times + times - 1.
// The following DecodeSteps then continue `times` sequences from each
// cached one (rank classification scores K answers after one prefix).
void RepeatRows(int64_t times, LlamaDecoderState* state);

// transformers' generate rule for position ids of a (left-)padded prompt:
// cumsum(mask) - 1 along each row, 0 at padding. [B, S] -> [B, S] int64.
at::Tensor GenerationPositionIds(const at::Tensor& attention_mask);

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_LLAMA_MODEL_H_
