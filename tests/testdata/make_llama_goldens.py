#!/usr/bin/env python3
"""Builds small random decoder-only checkpoints and what transformers computes with them.

The reference is Hugging Face transformers (LlamaForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, GemmaForCausalLM,
Gemma2ForCausalLM, Gemma3ForCausalLM, MistralForCausalLM) with attn_implementation="eager", in
fp32, in eval mode. Running

    /tmp/tp-ref/bin/python tests/testdata/make_llama_goldens.py --out tests/testdata/llama

writes, reproducibly (same library versions, same seeds), one folder per
checkpoint with config.json, the weights and golden.safetensors:

  llama_gqa/      llama: grouped-query attention (4 heads, 2 key/value heads),
                  rope type "llama3" (transformers 5's rope_parameters form),
                  untied head, weights stored in bf16 and sharded into two
                  files with model.safetensors.index.json.
  llama_linear/   llama: the older config form (rope_scaling {"type":
                  "linear"} and a top-level rope_theta), attention_bias and
                  mlp_bias, an explicit head_dim (q/k/v width != hidden size),
                  the gelu_new activation, tied embeddings.
  llama_dynamic/  llama: rope_scaling {"rope_type": "dynamic"}, weights stored
                  in f16, max_position_embeddings 16 while the golden batch has
                  20 positions and generation runs past 16, so the NTK
                  recomputation is exercised.
  qwen2/          qwen2: q/k/v biases, tied embeddings, rope type "yarn",
                  use_sliding_window with a window of 6 on the layers from
                  max_window_layers (1) on (layer_types left for the loader to
                  derive), eos_token_id a list.
  qwen3/          qwen3: q/k/v/o biases (attention_bias), per-head q and k
                  norms, head_dim absent from config.json (Qwen3Config's 128,
                  wider than hidden_size / heads), untied head, a sliding
                  window of 5 on the second layer (layer_types), weights
                  stored in bf16.
  phi3/           phi3: fused qkv_proj and gate_up_proj, partial rotary
                  (0.75 of a 16-wide head), rope_scaling {"type": "longrope"}
                  with a top-level original_max_position_embeddings
                  16 under a batch of 20 positions (the long factors apply),
                  tied embeddings.
  gemma3/         gemma3_text: scaled embeddings, (1 + w) norms around
                  attention and MLP, q/k norms, q/k/v/o biases, scores scaled
                  by query_pre_attn_scalar 24 (head_dim 16), final logits
                  capped at 30, layers [sliding, full, sliding] from
                  sliding_window_pattern 2 with a window of 5, a linear rope
                  (factor 2, theta 1e6) on the full layers and a default one
                  (theta 1e4) on the sliding ones, in the top-level form of
                  Gemma 3's files (rope_local_base_freq, rope_scaling).
  gemma/          gemma (Gemma 1): Llama's layout with scaled embeddings and
                  (1 + w) norms, q/k/v/o biases, one key/value head, an
                  untied head, hidden_act "gelu" as the released files
                  write it (the tanh approximation in GemmaConfig).
  gemma2/         gemma2: as gemma3 without q/k norms, one linear rope,
                  attention scores capped at 2 and logits at 8 (both
                  change the outputs), layers [sliding, full, sliding]
                  derived from the default alternation, weights in bf16.
  mistral/        mistral: one key/value head, explicit head_dim, a sliding
                  window of 5 on every layer (shorter than the batch), the
                  default rope type with rope_theta 1e6.

golden.safetensors (fp32 / int64; metadata: num_parameters, gen_steps):
  input_ids, attention_mask [3, S]: row 0 full, row 1 right-padded, row 2
      left-padded.
  labels [3, S]: input_ids with -100 on padding and on the first 3 tokens.
  logits [3, S, V], hidden [3, S, d] (after the final norm), loss (scalar):
      transformers' forward with input_ids, attention_mask and labels (default
      position ids 0..S-1 on every row).
  position_ids [3, S]: cumsum(mask) - 1, 0 on padding (generate's rule);
      pos_logits, pos_hidden: the forward with those position ids.
  gen_inputs_embeds [2, P, d], gen_attention_mask [2, P] (row 1
      left-padded), gen_tokens [2, gen_steps]: greedy generate() from
      inputs_embeds (phi3: from the ids, so that its cache is recomputed
      past original_max_position_embeddings) with the KV cache, no EOS stop.
  gen_min_margin (scalar): the smallest gap between the best and the second
      best logit over the generated steps (how robust the token check is).

The script checks its own premises: the sliding window changes the outputs
in eager attention (mistral, qwen2, qwen3), the dynamic rope changes them past
max_position_embeddings, and the bf16/f16 stored weights round-trip.

With --qwen2_05b_shaped DIR it instead writes a random checkpoint of
Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads / 2 key/value heads,
intermediate 4864, vocabulary 151936, tied; ~494M parameters stored in bf16,
about 1 GB) for load and memory checks; it is never committed.

Requirements: torch, transformers (5.x), safetensors.
"""

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 384
GEN_STEPS = 8
# phi3's longrope factors: 6 = int(16 * 0.75) / 2 rotary frequencies.
PHI3_SHORT = [1.0, 1.1, 1.3, 1.7, 2.2, 3.0]
PHI3_LONG = [1.0, 1.9, 3.5, 6.0, 9.5, 14.0]

SPECS = {
    "llama_gqa": dict(
        cls=(LlamaConfig, LlamaForCausalLM),
        seed=11,
        length=14,
        stored=torch.bfloat16,
        shards=2,
        config=dict(
            hidden_size=64,
            intermediate_size=112,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
            bos_token_id=1,
            eos_token_id=2,
        ),
        rewrite=None,
    ),
    "llama_linear": dict(
        cls=(LlamaConfig, LlamaForCausalLM),
        seed=12,
        length=14,
        stored=torch.float32,
        shards=1,
        config=dict(
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=16,
            hidden_act="gelu_new",
            max_position_embeddings=128,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="linear", rope_theta=20000.0, factor=2.0),
        ),
        # The pre-5.x form of the same settings.
        rewrite=dict(
            drop=("rope_parameters",),
            set={"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 20000.0},
        ),
    ),
    "llama_dynamic": dict(
        cls=(LlamaConfig, LlamaForCausalLM),
        seed=13,
        length=20,
        stored=torch.float16,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=16,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0),
        ),
        rewrite=dict(
            drop=("rope_parameters",),
            set={"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "rope_theta": 10000.0},
        ),
    ),
    "qwen2": dict(
        cls=(Qwen2Config, Qwen2ForCausalLM),
        seed=14,
        length=14,
        stored=torch.float32,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=True,
            sliding_window=6,
            max_window_layers=1,
            rope_parameters=dict(
                rope_type="yarn", rope_theta=1000000.0, factor=4.0, original_max_position_embeddings=32
            ),
            bos_token_id=5,
            eos_token_id=[2, 3],
        ),
        # Qwen 2.5's form: rope_scaling with "type", top-level rope_theta; no
        # layer_types (derived from max_window_layers).
        rewrite=dict(
            drop=("rope_parameters", "layer_types"),
            set={
                "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
                "rope_theta": 1000000.0,
            },
        ),
    ),
    "qwen3": dict(
        cls=(Qwen3Config, Qwen3ForCausalLM),
        seed=16,
        length=14,
        stored=torch.bfloat16,
        shards=1,
        config=dict(
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            attention_bias=True,
            tie_word_embeddings=False,
            use_sliding_window=True,
            sliding_window=5,
            layer_types=["full_attention", "sliding_attention"],
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            eos_token_id=2,
        ),
        # head_dim left to Qwen3Config's default (128, not hidden / heads).
        rewrite=dict(drop=("head_dim",), set={}),
    ),
    "phi3": dict(
        cls=(Phi3Config, Phi3ForCausalLM),
        seed=17,
        length=20,
        stored=torch.float32,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            original_max_position_embeddings=16,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="longrope",
                rope_theta=10000.0,
                partial_rotary_factor=0.75,
                short_factor=PHI3_SHORT,
                long_factor=PHI3_LONG,
            ),
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        # The form of Phi-3.5 and Phi-4-mini's files: rope_scaling with
        # "type", partial_rotary_factor and rope_theta at the top level.
        rewrite=dict(
            drop=("rope_parameters",),
            set={
                "rope_scaling": {"type": "longrope", "short_factor": PHI3_SHORT, "long_factor": PHI3_LONG},
                "partial_rotary_factor": 0.75,
                "rope_theta": 10000.0,
            },
        ),
    ),
    "gemma3": dict(
        cls=(Gemma3TextConfig, Gemma3ForCausalLM),
        seed=18,
        length=14,
        stored=torch.float32,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=256,
            query_pre_attn_scalar=24,
            final_logit_softcapping=30.0,
            attention_bias=True,
            sliding_window=5,
            sliding_window_pattern=2,
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        ),
        # The form of Gemma 3's released files: rope_theta,
        # rope_local_base_freq and rope_scaling (for the full layers) at the
        # top level; layer types from sliding_window_pattern.
        rewrite=dict(
            drop=("rope_parameters", "layer_types"),
            set={
                "rope_theta": 1000000.0,
                "rope_local_base_freq": 10000.0,
                "rope_scaling": {"rope_type": "linear", "factor": 2.0},
                "sliding_window_pattern": 2,
            },
        ),
    ),
    "gemma": dict(
        cls=(GemmaConfig, GemmaForCausalLM),
        seed=20,
        length=14,
        stored=torch.float32,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
            attention_bias=True,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        # The released files' legacy "gelu", which GemmaConfig reads as the
        # tanh approximation.
        rewrite=dict(drop=(), set={"hidden_act": "gelu"}),
    ),
    "gemma2": dict(
        cls=(Gemma2Config, Gemma2ForCausalLM),
        seed=19,
        length=14,
        stored=torch.bfloat16,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=256,
            query_pre_attn_scalar=32,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=8.0,
            sliding_window=5,
            rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=10000.0),
        ),
        # layer_types left for the loader to derive (every second layer full).
        rewrite=dict(drop=("layer_types",), set={}),
    ),
    "mistral": dict(
        cls=(MistralConfig, MistralForCausalLM),
        seed=15,
        length=14,
        stored=torch.float32,
        shards=1,
        config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=24,
            max_position_embeddings=256,
            sliding_window=5,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
        rewrite=None,
    ),
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def fill_weights(model, seed):
    """Sets every parameter from a private generator, livelier than HF's init.

    Norm gains spread around 1, biases of std 0.1, projections of std
    ~1/sqrt(fan_in) (outputs 2x), embeddings and head of std 0.3: the layers change the
    residual stream visibly, so a wrong rotation, mask or bias shows.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight") or "layernorm" in name:
                v = 1.0 + torch.randn(p.shape, generator=g) * 0.2
            elif name.endswith(".bias"):
                v = torch.randn(p.shape, generator=g) * 0.1
            elif "embed_tokens" in name or name == "lm_head.weight":
                v = torch.randn(p.shape, generator=g) * 0.3
            else:
                fan_in = p.shape[1]
                scale = 2.0 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
                v = torch.randn(p.shape, generator=g) * scale * fan_in**-0.5
            p.copy_(v)


def rewrite_config(folder, rewrite):
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if rewrite:
        for k in rewrite.get("drop", ()):
            cfg.pop(k, None)
        cfg.update(rewrite.get("set", {}))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return cfg


def save_weights(model, folder, stored, shards):
    state = {k: v.detach().to(stored).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    names = sorted(state)
    if shards == 1:
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return
    per = (len(names) + shards - 1) // shards
    weight_map = {}
    total = 0
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, os.path.join(folder, file), metadata={"format": "pt"})
        for n, t in part.items():
            weight_map[n] = file
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


def reset_rotary(model):
    """Forgets a dynamic rope's growth, so each call starts from the config."""
    rotary = model.model.rotary_emb
    if hasattr(rotary, "original_inv_freq"):
        rotary.inv_freq = rotary.original_inv_freq.clone()
        rotary.max_seq_len_cached = rotary.original_max_seq_len


def golden_batch(length, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    ids = torch.randint(4, VOCAB, (3, length), generator=g)
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, 9:] = 0  # right padding
    mask[2, : length - 10] = 0  # left padding
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    for row in range(3):
        real = mask[row].nonzero().flatten()
        labels[row, real[:3]] = -100
    return ids, mask, labels


def forward(model, **kwargs):
    reset_rotary(model)
    with torch.no_grad():
        out = model(**kwargs, output_hidden_states=True, use_cache=False)
    return out


def build(name, spec, out_dir):
    config_class, model_class = spec["cls"]
    cfg = config_class(vocab_size=VOCAB, **spec["config"])
    torch.manual_seed(spec["seed"])
    model = model_class(cfg).eval()
    fill_weights(model, spec["seed"])
    folder = os.path.join(out_dir, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    cfg.save_pretrained(folder)
    written = rewrite_config(folder, spec["rewrite"])
    save_weights(model, folder, spec["stored"], spec["shards"])

    # The reference reads exactly the committed files.
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    assert type(ref) is model_class, type(ref)
    assert ref.config._attn_implementation == "eager"
    for k, v in model.state_dict().items():
        expect = v.to(spec["stored"]).to(torch.float32)
        got = ref.state_dict()[k]
        assert torch.equal(got, expect), (name, k)
    tied = ref.lm_head.weight.data_ptr() == ref.model.embed_tokens.weight.data_ptr()
    assert tied == bool(written.get("tie_word_embeddings")), name
    num_parameters = sum(p.numel() for p in ref.parameters())  # tied counted once

    ids, mask, labels = golden_batch(spec["length"], spec["seed"])
    out = forward(ref, input_ids=ids, attention_mask=mask, labels=labels)
    golden = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "logits": out.logits,
        "hidden": out.hidden_states[-1],
        "loss": out.loss.reshape(()),
    }
    reset_rotary(ref)
    with torch.no_grad():
        last = ref.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(last, golden["hidden"], atol=1e-6), name

    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    pos_out = forward(ref, input_ids=ids, attention_mask=mask, position_ids=positions)
    golden["position_ids"] = positions
    golden["pos_logits"] = pos_out.logits
    golden["pos_hidden"] = pos_out.hidden_states[-1]

    # Premises: the window and the dynamic rope matter for these inputs.
    if any(written.get(k) for k in ("sliding_window",)) and name in ("mistral", "qwen2", "qwen3"):
        cfg2 = config_class.from_pretrained(folder)
        cfg2.sliding_window = None
        if name in ("qwen2", "qwen3"):
            cfg2.layer_types = ["full_attention"] * cfg2.num_hidden_layers
        cfg2._attn_implementation = "eager"
        full = model_class(cfg2).eval()
        full.load_state_dict(ref.state_dict())
        diff = (forward(full, input_ids=ids, attention_mask=mask).logits - out.logits).abs().max().item()
        log(f"{name}: logits without the sliding window differ by {diff:.4f}")
        assert diff > 1e-3, "the sliding window does not change the eager outputs"
    if name == "gemma2":
        for field, value in (("attn_logit_softcapping", None), ("final_logit_softcapping", None)):
            cfg2 = config_class.from_pretrained(folder)
            setattr(cfg2, field, value)
            cfg2._attn_implementation = "eager"
            uncapped = model_class(cfg2).eval()
            uncapped.load_state_dict(ref.state_dict())
            diff = (forward(uncapped, input_ids=ids, attention_mask=mask).logits - out.logits).abs().max().item()
            log(f"{name}: logits without {field} differ by {diff:.4f}")
            assert diff > 1e-3, f"{field} does not change the outputs"
    if name == "gemma3":
        assert ref.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"], ref.config.layer_types
        cfg2 = config_class.from_pretrained(folder)
        cfg2.layer_types = ["full_attention"] * cfg2.num_hidden_layers
        cfg2._attn_implementation = "eager"
        full = model_class(cfg2).eval()
        full.load_state_dict(ref.state_dict())
        diff = (forward(full, input_ids=ids, attention_mask=mask).logits - out.logits).abs().max().item()
        log(f"{name}: logits with every layer full (no window, the global rope) differ by {diff:.4f}")
        assert diff > 1e-3, "the sliding layers do not change the eager outputs"
    if name == "phi3":
        short = forward(ref, input_ids=ids[:, :16], attention_mask=mask[:, :16]).logits
        diff = (short - out.logits[:, :16]).abs().max().item()
        log(f"{name}: logits of the first 16 positions alone vs inside 20 differ by {diff:.4f}")
        assert diff > 1e-3, "longrope did not switch to the long factors past 16 positions"
    if name == "llama_dynamic":
        short = forward(ref, input_ids=ids[:, :16], attention_mask=mask[:, :16]).logits
        diff = (short - out.logits[:, :16]).abs().max().item()
        log(f"{name}: logits of the first 16 positions alone vs inside 20 differ by {diff:.4f}")
        assert diff > 1e-3, "dynamic rope did not rescale past max_position_embeddings"

    # Greedy generation from inputs_embeds, left-padded, KV cache on.
    prompt_len = 12
    g = torch.Generator().manual_seed(spec["seed"] + 2000)
    gen_ids = torch.randint(4, VOCAB, (2, prompt_len), generator=g)
    gen_mask = torch.ones(2, prompt_len, dtype=torch.long)
    gen_mask[1, :4] = 0
    gen_ids = gen_ids.masked_fill(gen_mask == 0, 0)
    with torch.no_grad():
        embeds = ref.model.embed_tokens(gen_ids)
    reset_rotary(ref)
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    ref.generation_config.bos_token_id = None
    # From the embeddings; Phi-3 (longrope) from the ids, as its users call
    # it: its generate() recomputes the cache once input_ids grow past
    # original_max_position_embeddings, which generating from embeddings
    # alone never triggers (input_ids then hold the new tokens only).
    source = dict(input_ids=gen_ids) if name == "phi3" else dict(inputs_embeds=embeds)
    with torch.no_grad():
        gen = ref.generate(
            **source,
            attention_mask=gen_mask,
            max_new_tokens=GEN_STEPS,
            min_new_tokens=GEN_STEPS,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            output_scores=True,
            return_dict_in_generate=True,
        )
    tokens = gen.sequences[:, -GEN_STEPS:]
    assert tokens.shape == (2, GEN_STEPS), tokens.shape
    margins = []
    for scores in gen.scores:
        top = scores.float().topk(2, dim=-1).values
        margins.append((top[:, 0] - top[:, 1]).min().item())
    log(f"{name}: greedy tokens {tokens.tolist()}, smallest top-2 margin {min(margins):.4f}")
    golden["gen_inputs_embeds"] = embeds
    golden["gen_attention_mask"] = gen_mask
    golden["gen_tokens"] = tokens
    golden["gen_min_margin"] = torch.tensor(min(margins))

    golden = {k: v.detach().contiguous() for k, v in golden.items()}
    save_file(
        golden,
        os.path.join(folder, "golden.safetensors"),
        metadata={
            "num_parameters": str(num_parameters),
            "gen_steps": str(GEN_STEPS),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    )
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    log(f"{name}: loss {out.loss.item():.6f}, parameters {num_parameters}, files {sizes}")


QWEN2_05B = dict(
    architectures=["Qwen2ForCausalLM"],
    model_type="qwen2",
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    max_window_layers=21,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    sliding_window=32768,
    use_sliding_window=False,
    tie_word_embeddings=True,
    hidden_act="silu",
    bos_token_id=151643,
    eos_token_id=151645,
    torch_dtype="bfloat16",
)


def write_qwen2_05b_shaped(folder):
    """Random bf16 weights of Qwen2.5-0.5B's shapes, written tensor by tensor
    (no model object, so the peak memory stays near the file size)."""
    os.makedirs(folder, exist_ok=True)
    c = QWEN2_05B
    d, inter, hd = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], d), "model.norm.weight": (d,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (d, q),
            p + "mlp.gate_proj.weight": (inter, d),
            p + "mlp.up_proj.weight": (inter, d),
            p + "mlp.down_proj.weight": (d, inter),
        })
    g = torch.Generator().manual_seed(5)
    state = {}
    for name, shape in sorted(shapes.items()):
        if name.endswith("norm.weight"):
            t = 1.0 + torch.randn(shape, generator=g) * 0.1
        elif name.endswith(".bias"):
            t = torch.randn(shape, generator=g) * 0.02
        else:
            t = torch.randn(shape, generator=g) * 0.02
        state[name] = t.to(torch.bfloat16)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")
    log(f"wrote {folder}: {sum(t.numel() for t in state.values())} parameters")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama"))
    parser.add_argument("--only", nargs="*", help="checkpoint names (default: all)")
    parser.add_argument("--qwen2_05b_shaped", metavar="DIR", help="write only a Qwen2.5-0.5B-shaped random checkpoint to DIR")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.qwen2_05b_shaped:
        write_qwen2_05b_shaped(args.qwen2_05b_shaped)
        return
    os.makedirs(args.out, exist_ok=True)
    for name, spec in SPECS.items():
        if args.only and name not in args.only:
            continue
        build(name, spec, args.out)


if __name__ == "__main__":
    main()
