// Inference with a frozen T5Model: greedy decoding with a KV cache, and rank
// classification (score each candidate answer by its summed token
// log-probability and pick the best), the two ways prompt-tuned tasks are
// evaluated.
//
// Both run without autograd (at::NoGradGuard) and are thread-safe in the way
// T5Model is: concurrent calls are fine. Errors: like the T5Model tensor
// functions (and libtorch), they throw c10::Error with a message naming the
// problem for tensors of the wrong rank, shape, dtype or device, ids outside
// the vocabulary, or max_new_tokens < 0; nothing else is thrown.
#ifndef MPT_WORKER_EVAL_GENERATION_H_
#define MPT_WORKER_EVAL_GENERATION_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "worker/prompts/prompt_inputs.h"
#include "worker/model/t5_model.h"

namespace mpt {

// Greedy decoding as transformers' generate(do_sample=False, num_beams=1,
// max_new_tokens=N) does it for T5: the decoder starts from
// decoder_start_token_id; each step appends the argmax token; a sequence is
// finished once it emits an EOS id (config.eos_token_ids) and gets
// pad_token_id after that; decoding stops when every sequence is finished or
// after `max_new_tokens` steps.
//
// Returns [B, 1 + n] int64 on the model's device, n <= max_new_tokens, column
// 0 being decoder_start_token_id (transformers' layout). inputs_embeds is
// [B, S, d]; attention_mask [B, S] or undefined.
at::Tensor GreedyGenerate(const T5Model& model, const at::Tensor& inputs_embeds,
                                          const at::Tensor& attention_mask, int max_new_tokens);

// What PEFT's PeftModelForSeq2SeqLM.generate does with a soft prompt: the
// prompt's first nv rows in front of the encoder input (and ones in front of
// the mask), then GreedyGenerate. The decoder is never prompted, whatever
// the layout says (PEFT's behaviour, for both PROMPT_TUNING and
// MULTITASK_PROMPT_TUNING). `prompt` is [R, d] or [B, R, d], R >= nv.
at::Tensor GreedyGenerateWithPrompt(const T5Model& model, const at::Tensor& prompt,
                                    int num_virtual_tokens, const at::Tensor& input_ids,
                                    const at::Tensor& attention_mask, int max_new_tokens);

struct RankResult {
  at::Tensor scores;  // [B, K] fp32: sum over each candidate's tokens of log p(token)
  at::Tensor best;    // [B] int64: argmax over K (the first on ties)
};

// Scores K candidate targets per example by teacher forcing: candidate c of
// example b (candidates[b, c], int ids, -100 padded on the right; T5 targets
// normally end with EOS) is decoded from ShiftRight(candidate), and its score
// is the sum of log-softmax(logits)[t, candidate[t]] over its non-(-100)
// positions. The encoder, the cross-attention keys and values and the
// decoder prefix run once per example; its K candidates continue from that
// decoder cache (T5Model::DecodeStep, RepeatRows).
//
// inputs_embeds [B, S, d]; attention_mask [B, S] or undefined; candidates
// [B, K, C]. `decoder_prefix` ([P, d] or [B, P, d], may be undefined) is put
// in front of every candidate's decoder input, as a two-submodule
// MULTITASK_PROMPT_TUNING forward does (see DecoderPromptRows); the prefix
// positions are not scored.
RankResult RankClassify(const T5Model& model, const at::Tensor& inputs_embeds,
                        const at::Tensor& attention_mask, const at::Tensor& candidates,
                        const at::Tensor& decoder_prefix = at::Tensor());

}  // namespace mpt

#endif  // MPT_WORKER_EVAL_GENERATION_H_
