#!/usr/bin/env python3
"""Builds a tiny decoder-only model folder and what PEFT computes with prompts on it.

The reference is Hugging Face PEFT (PeftModelForCausalLM, task_type
CAUSAL_LM) over transformers' LlamaForCausalLM in fp32, eval mode, eager
attention. Running

    /tmp/tp-ref/bin/python tests/testdata/make_causal_lm.py --out tests/testdata/causal_lm

writes, reproducibly (same library versions, same seeds):

  model/         config.json (llama: 2 layers, hidden 32, 4 heads, 2 key/value
                 heads, tied embeddings, vocab = the tokenizer's length),
                 model.safetensors (random, initializer_range 0.2 so that
                 greedy tokens are not all alike), and the Llama 3 style
                 tokenizer of tests/testdata/tokenizers/llama3 (BOS added,
                 no pad token).
  peft_mpt/      a MULTITASK_PROMPT_TUNING adapter (2 tasks, 4 virtual tokens,
                 rank 1) saved by PEFT's save_pretrained, random values.
  peft_pt/       a PROMPT_TUNING adapter (4 virtual tokens) saved by PEFT.
  golden.json    the examples (input, target, task id), the rank candidates,
                 the TEXT-init text.
  golden.safetensors
      input_ids_I, target_ids_I: example I tokenised as PEFT's causal-LM
          prompt-tuning recipe does: tokenizer(input).input_ids, and
          tokenizer(target, add_special_tokens=False).input_ids + [eos].
      mpt_loss [N], pt_loss [N]: PEFT's forward loss on example I alone
          (input_ids = input + target, labels -100 over the input), with the
          multitask adapter (task golden task id) and the plain one.
      mpt_logits_I [Lt, V], mpt_hidden_I [Lt, d], pt_logits_I: PEFT's logits
          and last hidden states at the positions that predict the target
          tokens (nv + len(input) - 1 + j).
      mpt_generated_I: PEFT's generate() on the input alone (do_sample=False,
          max_new_tokens 6, use_cache=False), the new tokens only, up to and
          with the first EOS. With the KV cache, PEFT 0.21 on transformers
          5.24 gives other tokens from the second on, tokens that disagree
          with its own forward pass on the same sequence (the script checks
          that the uncached ones agree with it).
      mpt_rank_scores [N, K]: per candidate, the sum over its ids
          (tokenised as a target) of PEFT's log-probabilities.
      text_init [4, d]: PEFT's prompt_embeddings for prompt_tuning_init TEXT
          with golden.json's init text.

Requirements: torch, transformers (5.x), peft (0.21), safetensors.
"""

import argparse
import json
import os
import shutil

import torch
from peft import (MultitaskPromptTuningConfig, PeftModel, PromptTuningConfig, PromptTuningInit,
                  TaskType, get_peft_model)
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

NV = 4
EXAMPLES = [  # input, target, task id
    ("cat green red", "3", 0),
    ("blue sun", "two words", 1),
    ("Copy this: hello world", "hello world", 0),
    ("x", "the longest answer of the four", 1),
]
CANDIDATES = ["yes", "no", "3", "hello world"]
INIT_TEXT = "Answer the question"
GEN_STEPS = 6


def save_adapter(model, folder):
    """PEFT's save_pretrained, without the model card it writes beside the adapter."""
    model.save_pretrained(folder)
    card = os.path.join(folder, "README.md")
    if os.path.exists(card):
        os.remove(card)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default=os.path.join(os.path.dirname(__file__),
                                                         "tokenizers", "llama3"))
    args = p.parse_args()
    torch.manual_seed(0)
    model_dir = os.path.join(args.out, "model")
    os.makedirs(model_dir, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.tokenizer, name), os.path.join(model_dir, name))
    tok = AutoTokenizer.from_pretrained(model_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, initializer_range=0.2,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=None)
    base = LlamaForCausalLM(config).eval()
    base.config._attn_implementation = "eager"
    base.save_pretrained(model_dir, safe_serialization=True)
    base = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()

    eos = tok.eos_token_id
    tensors = {}
    encoded = []
    for i, (text, target, _) in enumerate(EXAMPLES):
        ids = tok(text).input_ids
        tgt = tok(target, add_special_tokens=False).input_ids + [eos]
        encoded.append((ids, tgt))
        tensors[f"input_ids_{i}"] = torch.tensor(ids, dtype=torch.long)
        tensors[f"target_ids_{i}"] = torch.tensor(tgt, dtype=torch.long)

    def forward(model, i, task):
        ids, tgt = encoded[i]
        input_ids = torch.tensor([ids + tgt])
        labels = torch.tensor([[-100] * len(ids) + tgt])
        kwargs = {} if task is None else {"task_ids": torch.tensor([task])}
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                        labels=labels, output_hidden_states=True, **kwargs)
        start = NV + len(ids) - 1
        return (out.loss, out.logits[0, start:start + len(tgt)],
                out.hidden_states[-1][0, start:start + len(tgt)])

    # Multitask adapter, random values, saved and loaded back by PEFT.
    mpt_cfg = MultitaskPromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=NV,
                                          num_tasks=2, num_ranks=1,
                                          prompt_tuning_init="RANDOM")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager"),
                           mpt_cfg)
    emb = model.prompt_encoder["default"]
    with torch.no_grad():
        emb.embedding.weight.copy_(torch.randn_like(emb.embedding.weight) * 0.5)
        emb.prefix_task_cols.copy_(1.0 + 0.3 * torch.randn_like(emb.prefix_task_cols))
        emb.prefix_task_rows.copy_(1.0 + 0.3 * torch.randn_like(emb.prefix_task_rows))
    save_adapter(model, os.path.join(args.out, "peft_mpt"))
    model = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager"),
        os.path.join(args.out, "peft_mpt")).eval()
    losses = []
    for i, (_, _, task) in enumerate(EXAMPLES):
        loss, logits, hidden = forward(model, i, task)
        losses.append(loss)
        tensors[f"mpt_logits_{i}"] = logits.contiguous()
        tensors[f"mpt_hidden_{i}"] = hidden.contiguous()
        ids, _ = encoded[i]
        with torch.no_grad():
            gen = model.generate(input_ids=torch.tensor([ids]),
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 task_ids=torch.tensor([task]), max_new_tokens=GEN_STEPS,
                                 do_sample=False, num_beams=1, pad_token_id=eos,
                                 use_cache=False)
        new = gen[0].tolist()
        if new[:len(ids)] == ids:
            new = new[len(ids):]
        if eos in new:
            new = new[:new.index(eos) + 1]
        tensors[f"mpt_generated_{i}"] = torch.tensor(new, dtype=torch.long)
        # Premise: each generated token is the argmax of PEFT's forward on
        # the sequence before it.
        for step in range(len(new)):
            seq = torch.tensor([ids + new[:step]])
            with torch.no_grad():
                out = model(input_ids=seq, task_ids=torch.tensor([task]))
            assert out.logits[0, -1].argmax().item() == new[step], (i, step)
    tensors["mpt_loss"] = torch.stack(losses)
    # Rank scores: each candidate as a target.
    scores = torch.zeros(len(EXAMPLES), len(CANDIDATES))
    for i, (_, _, task) in enumerate(EXAMPLES):
        ids, _ = encoded[i]
        for c, cand in enumerate(CANDIDATES):
            tgt = tok(cand, add_special_tokens=False).input_ids + [eos]
            input_ids = torch.tensor([ids + tgt])
            with torch.no_grad():
                out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                            task_ids=torch.tensor([task]))
            start = NV + len(ids) - 1
            logp = torch.log_softmax(out.logits[0, start:start + len(tgt)].float(), -1)
            scores[i, c] = logp.gather(-1, torch.tensor(tgt).unsqueeze(-1)).sum()
    tensors["mpt_rank_scores"] = scores

    # Plain prompt tuning.
    pt_cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=NV,
                                prompt_tuning_init=PromptTuningInit.RANDOM)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager"),
                           pt_cfg)
    emb = model.prompt_encoder["default"]
    with torch.no_grad():
        emb.embedding.weight.copy_(torch.randn_like(emb.embedding.weight) * 0.5)
    save_adapter(model, os.path.join(args.out, "peft_pt"))
    model = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager"),
        os.path.join(args.out, "peft_pt")).eval()
    losses = []
    for i in range(len(EXAMPLES)):
        loss, logits, _ = forward(model, i, None)
        losses.append(loss)
        tensors[f"pt_logits_{i}"] = logits.contiguous()
    tensors["pt_loss"] = torch.stack(losses)

    # TEXT init.
    text_cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=NV,
                                  prompt_tuning_init=PromptTuningInit.TEXT,
                                  prompt_tuning_init_text=INIT_TEXT,
                                  tokenizer_name_or_path=model_dir)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager"),
                           text_cfg)
    tensors["text_init"] = model.prompt_encoder["default"].embedding.weight.detach().clone()

    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(args.out, "golden.safetensors"))
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump({"examples": [{"input": a, "target": b, "task": t} for a, b, t in EXAMPLES],
                   "candidates": CANDIDATES, "init_text": INIT_TEXT,
                   "num_virtual_tokens": NV, "gen_steps": GEN_STEPS}, f, indent=1)
        f.write("\n")
    for i in range(len(EXAMPLES)):
        print(i, "generated", tensors[f"mpt_generated_{i}"].tolist(),
              "loss", float(tensors["mpt_loss"][i]))
    print("rank scores", scores)


if __name__ == "__main__":
    main()
