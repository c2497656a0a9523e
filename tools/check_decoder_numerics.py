#!/usr/bin/env python3
"""Differential fuzz of llama_dump against transformers' *ForCausalLM.

Draws random tiny decoder-only configurations (model_type llama, qwen2,
qwen3, mistral, phi3, gemma, gemma2 or gemma3_text) over the fields worker/model/llama_config.cc reads and transformers
honours: grouped-query / multi-query attention, an explicit head_dim, rope
theta, every rope type of transformers' ROPE_INIT_FUNCTIONS that these classes
reach (default, linear, dynamic, yarn with its optional fields, llama3,
longrope, proportional) written as rope_scaling or rope_parameters, with "type" or
"rope_type", theta and original_max_position_embeddings at the top level or in
the dict, tied embeddings, llama's attention_bias / mlp_bias, qwen2's and qwen3's
use_sliding_window / max_window_layers / layer_types, qwen3's attention_bias
and its head_dim default of 128, phi3's partial_rotary_factor (dict, top
level or both) with its default and longrope types and top-level
original_max_position_embeddings, gemma3_text's rope per layer type (nested
or top-level form), layer types from a list or sliding_window_pattern,
query_pre_attn_scalar, final_logit_softcapping and hidden_activation, and
gemma2's attention logit cap, gemma's legacy "gelu", three in ten of the
gemma3_text cases wrapped as multimodal Gemma 3 files (model_type "gemma3",
text_config, a tiny vision tower), mistral's sliding_window
(often shorter than the batch) and layer_types, hidden_act, rms_norm_eps, token ids (ints,
lists, null), stored weight dtypes (f32, bf16, f16, f64; sometimes sharded),
and fields both sides ignore.

For each case it writes config.json as drawn, builds the model with
transformers from it (torch.manual_seed, weights re-drawn at a scale where
attention is not uniform, so that rope and masks matter), and saves the
weights with save_pretrained. Two folders are checked: "raw" (the drawn
config.json) and "saved" (the config.json save_pretrained wrote). For each,
the reference is AutoModelForCausalLM.from_pretrained(folder) in fp32 with
attn_implementation="eager"; llama_dump runs on the same right-padded ids
(--ids, --generate, --threads=1). Compared at real (unmasked) positions:
logits and final hidden states (max |diff| against a tolerance relative to
the reference's magnitude), the loss, and the greedy tokens (a divergence
counts only when the reference's top two logits at that step are further
apart than the tolerance). The reference's greedy tokens come from full
forwards over the growing row; transformers' own KV-cached decode is run too,
and where it disagrees with its forward that is reported, not counted against
llama_dump (transformers 5.24's DynamicCache keeps every key for
sliding_window 1, and windows the cache of a llama config that carries a
sliding_window its forward ignores). A generated row also passes when it
is exactly what transformers' cached decode (generate()'s way) gives: past
max_position_embeddings a "dynamic" rope's cache keeps keys rotated with
the bases of the shorter lengths before, which full forwards recompute.
Every reference computation starts with the rope as loaded (transformers'
dynamic rope otherwise keeps the base of the longest sequence it saw). The
reference is also run in fp64 to show the fp32 rounding noise each case
has on its own.

In about a quarter of the cases max_position_embeddings is shorter than
the batch or the generation, as neither transformers nor llama_dump sets a
limit there: past it transformers 5.24's "dynamic" rope recomputes its
frequencies from the length, and the other types run on unchanged.

A refusal by llama_dump (exit 1) is accepted only when the case drew a value
listed in EXPECTED_REFUSALS and the error message names that field; anything
else is a failure, as are numeric mismatches, a crash (signal) and a timeout.

    /tmp/tp-ref/bin/python tools/check_decoder_numerics.py --seed 1 --cases 100

With --adapters each case's saved folder also gets a random PEFT CAUSAL_LM
prompt adapter (PROMPT_TUNING or MULTITASK_PROMPT_TUNING, 1 to 8 virtual
tokens, 1 to 4 tasks of rank 1 to 3, random values at scales 0.05 to 3)
built and saved by PEFT; llama_dump --adapter --task_id must give PEFT's
logits at every real position (the prompt's included), its loss, and its
greedy tokens (full forwards over the growing row, PEFT's own cached
generate(), or, past max_position_embeddings with a dynamic rope where
those two can differ from transformers' cached decode, the base model's
cached decode with the prompt in front; a divergence at a near tie ends
a row's comparison)
(status ADAPTER_MISMATCH otherwise).

Options: --llama_dump PATH (default bazel-bin/worker/llama_dump),
--family llama|qwen2|mistral|qwen3|phi3|gemma3_text|gemma2|gemma (only that family), --keep DIR (keep the folders
of failing cases there: config.json, weights, ids.txt, and the command),
--only INDEX (run one case of the seed), -v (print the drawn config),
--mutate theta|factor|window|eps (self-test of the comparison: llama_dump gets
a config with rope_theta x1.05, the rope factor x1.1, sliding_window - 1 or
rms_norm_eps + 0.1, and every case that changes must come out MISMATCH).
Exit status: 0 when every case passed or was an accepted refusal, 1 otherwise.
Requirements: torch, transformers (5.x), safetensors.
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

FAMILIES = ("llama", "qwen2", "mistral", "qwen3", "phi3", "gemma3_text", "gemma2", "gemma")
CAUSAL_LM = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
             "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
             "gemma2": "Gemma2ForCausalLM", "gemma": "GemmaForCausalLM"}
GEMMA = ("gemma2", "gemma3_text")  # Gemma 2 and 3's shared fields

# ACT2FN names llama_config.cc maps (worker/model/t5_config.cc's table).
SUPPORTED_ACTS = ["silu", "swish", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh",
                  "quick_gelu", "relu", "tanh", "sigmoid", "gelu_python", "gelu_accurate",
                  "gelu_10", "gelu_python_tanh", "relu2", "relu6", "mish", "leaky_relu",
                  "linear", "laplace", "hardswish", "sqrtsoftplus"]
# ACT2FN entries with learned parameters, which llama_dump refuses.
UNSUPPORTED_ACTS = ["prelu", "xielu"]

# What llama_dump may refuse: a case records the keys it drew, and a refusal
# counts as expected only when its message holds every string of the second
# element (the field's name as the error quotes it, and the value).
EXPECTED_REFUSALS = {
    "longrope": ("rope type \"longrope\"", ("type'", "\"longrope\"")),
    "proportional": ("rope type \"proportional\"", ("type'", "\"proportional\"")),
    "partial_rotary_factor": ("partial_rotary_factor != 1", ("partial_rotary_factor'",)),
    "hidden_act": ("an ACT2FN activation outside llama_dump's table", ("'hidden_act'",)),
    "hidden_activation": ("an ACT2FN activation outside llama_dump's table", ("'hidden_activation'",)),
    "bidirectional": ("Gemma's bidirectional attention", ("'use_bidirectional_attention'",)),
    "token_id_range": ("a bos/eos/pad id >= vocab_size", ("_token_id'", "outside the vocabulary")),
}

# fp32 tolerance: both sides compute in fp32 with the same operations in the
# same order; what is left is summation order in BLAS and libm rounding, a few
# ulps per op (fp32 eps 1.2e-7) over at most 3 layers, measured at <= 6e-6 of
# the output magnitude (the fp32-vs-fp64 column shows the same noise in
# transformers alone). A semantic difference (a wrong rope frequency, mask,
# bias or activation) moves outputs by >1e-2 of their magnitude with these
# weights. 1e-4 relative leaves two orders of magnitude on both sides.
RTOL = 1e-4
ATOL = 1e-6


# ----------------------------------------------------------------------------
# Drawing a case


def maybe(rng, p):
    return rng.random() < p


def draw_window(rng, cfg, length, kinds):
    """Sets cfg's sliding_window as one of `kinds` says (absent, null, shorter
    than the row, or at least as long) and returns the kind drawn."""
    w = rng.choice(kinds)
    if w == "null":
        cfg["sliding_window"] = None
    elif w == "short":
        cfg["sliding_window"] = rng.randint(1, max(1, length - 1))
    elif w == "long":
        cfg["sliding_window"] = rng.randint(length, length + 10)
    return w


def draw_longrope_factors(rng, d, half, p_factor):
    """longrope's short and long factors (half of the rotated width each),
    sometimes its factor and attention_factor."""
    d["short_factor"] = [round(rng.uniform(1.0, 3.0), 3) for _ in range(half)]
    d["long_factor"] = [round(rng.uniform(1.0, 9.0), 3) for _ in range(half)]
    if maybe(rng, p_factor):
        d["factor"] = rng.choice([2.0, 4.0])
    if maybe(rng, 0.3):
        d["attention_factor"] = rng.choice([1.1, 1.4])


def draw_gemma3_rope(rng, cfg):
    """Gemma 3's rope per layer type, "default" or "linear" each: as
    rope_parameters {"full_attention": ..., "sliding_attention": ...}, or as
    the top-level rope_theta / rope_local_base_freq / rope_scaling (the last
    for the full layers), sometimes both (rope_scaling updates the full
    layers' dict)."""
    def one():
        d = {}
        if maybe(rng, 0.5):
            d["rope_type"] = "linear"
            d["factor"] = rng.choice([0.5, 2.0, 8.0])
        elif maybe(rng, 0.5):
            d["rope_type"] = "default"
        if maybe(rng, 0.6):
            d["rope_theta"] = rng.choice([100.0, 10000.0, 1e6])
        return d
    form = rng.choice(["nested", "top", "both"])
    desc = []
    if form in ("nested", "both"):
        cfg["rope_parameters"] = {"full_attention": one(), "sliding_attention": one()}
        desc.append("nested")
    if form in ("top", "both"):
        for key in ("rope_theta", "rope_local_base_freq"):
            if maybe(rng, 0.6):
                cfg[key] = rng.choice([100.0, 10000.0, 1e6])
        if maybe(rng, 0.6):
            scaling = {"rope_type": "linear", "factor": rng.choice([2.0, 8.0])}
            if maybe(rng, 0.3):
                scaling["rope_theta"] = rng.choice([500.0, 1e5])
            cfg["rope_scaling"] = scaling
        desc.append("top")
    return "+".join(desc)


def draw_phi3_rope(rng, cfg, case, head_dim, length):
    """phi3's rope fields: type default or longrope (rarely its old name "su",
    which transformers 5.24 no longer loads), partial_rotary_factor in the
    dict, at the top level or both (the dict's wins), and
    original_max_position_embeddings, which Phi3Config keeps at the top level
    (default 4096; a dict's value is overwritten by it)."""
    d = {}
    theta = rng.choice([None, 10000.0, 100.0, 37.5, 1e6])
    if theta is not None:
        (cfg if maybe(rng, 0.6) else d)["rope_theta"] = theta
    partial = None
    where = rng.choice(["absent", "absent", "dict", "top", "both"])
    if where != "absent":
        partial = rng.choice([1.0, 0.75, 0.5, 0.4, 0.35, 0.25, 0.8, 0.1, 0.05])
        if where in ("dict", "both"):
            d["partial_rotary_factor"] = partial
        if where in ("top", "both"):
            cfg["partial_rotary_factor"] = partial if where == "top" else rng.choice([0.5, 1.0])
    rotary = int(head_dim * partial) if partial is not None else head_dim
    kind = "longrope" if maybe(rng, 0.45) else "default"
    # An odd width (w + 1 dimensions rotate at base^(-2i / w)) or none at
    # all runs with the default rope; longrope's lists need an even one.
    if kind == "longrope" and rotary % 2:
        case["refusals"].add("partial_rotary_factor")
    if kind == "longrope":
        draw_longrope_factors(rng, d, rotary // 2, p_factor=0.4)
        original = rng.randint(2, max(2, length - 1)) if maybe(rng, 0.75) else rng.randint(length, length + 20)
        orig_where = rng.choice(["top", "top", "top", "dict", "absent"])
        if orig_where == "top":
            cfg["original_max_position_embeddings"] = original
        elif orig_where == "dict":
            d["original_max_position_embeddings"] = original
        d[rng.choice(["rope_type", "type"])] = "su" if maybe(rng, 0.05) else "longrope"
    elif maybe(rng, 0.4):
        d[rng.choice(["rope_type", "type"])] = "default"
    if not d:
        return f"{kind}[none] rot={rotary}/{head_dim}"
    form = rng.choice(["rope_scaling", "rope_parameters"])
    cfg[form] = d
    return f"{kind}[{form}] rot={rotary}/{head_dim}"


def draw_rope(rng, cfg, case, head_dim, length):
    """Adds rope fields to cfg; returns a short description."""
    kind = rng.choices(["default", "linear", "dynamic", "yarn", "llama3", "longrope",
                        "proportional"],
                       weights=[14, 12, 12, 26, 18, 8, 4])[0]
    d = {}
    theta = rng.choice([None, 10000.0, 500000.0, 100.0, 37.5, 1e6])
    theta_where = rng.choice(["top", "dict", "both"])
    if theta is not None:
        if theta_where in ("top", "both"):
            cfg["rope_theta"] = theta
        if theta_where in ("dict", "both"):
            d["rope_theta"] = theta if theta_where == "dict" else rng.choice([50.0, 2000.0, 1e5])
    # The pre-training length the scaled types look at: shorter than the
    # batch most of the time, so the scaling changes positions we compare.
    original = rng.randint(2, max(2, length - 1)) if maybe(rng, 0.8) else rng.randint(length, length + 20)
    orig_where = rng.choice(["dict", "dict", "top", "both", "absent"])

    def put_original():
        if orig_where in ("dict", "both"):
            d["original_max_position_embeddings"] = original if orig_where == "dict" else original + 7
        if orig_where in ("top", "both"):
            cfg["original_max_position_embeddings"] = original

    if kind == "default":
        if maybe(rng, 0.5):
            d["rope_type"] = "default"
    elif kind == "linear":
        d["factor"] = rng.choice([0.5, 1.0, 2.0, 4.5, 8.0])
    elif kind == "dynamic":
        d["factor"] = rng.choice([1.0, 2.0, 4.0, 16.0])
        if maybe(rng, 0.3):
            d["original_max_position_embeddings"] = original  # not read by transformers' dynamic
    elif kind == "yarn":
        d["factor"] = rng.choice([None, 0.5, 1.0, 2.0, 4.0, 8.0, 40.0]) if maybe(rng, 0.9) else None
        put_original()
        if maybe(rng, 0.3):
            d["attention_factor"] = rng.choice([0.5, 0.9, 1.3, 2.0])
        if maybe(rng, 0.4):
            d["beta_fast"] = rng.choice([None, 0, 4, 16, 32.0, 64])
        if maybe(rng, 0.4):
            d["beta_slow"] = rng.choice([None, 0, 0.5, 1, 2.0, 3])
        if maybe(rng, 0.35):
            d["mscale"] = rng.choice([0, 0.5, 0.707, 1.0, 2.0])
        if maybe(rng, 0.35):
            d["mscale_all_dim"] = rng.choice([0, 0.5, 0.707, 1.0, 1.5])
        if maybe(rng, 0.35):
            d["truncate"] = rng.choice([True, False, None])
    elif kind == "llama3":
        d["factor"] = rng.choice([2.0, 4.0, 8.0, 32.0])
        low = rng.choice([0.5, 1.0, 2.0])
        d["low_freq_factor"] = low
        d["high_freq_factor"] = low * rng.choice([1.5, 2.0, 4.0, 8.0])
        put_original()
    elif kind == "longrope":
        draw_longrope_factors(rng, d, head_dim // 2, p_factor=0.5)
        put_original()
    elif kind == "proportional":
        # Gemma 4's type; ROPE_INIT_FUNCTIONS serves it to these classes too.
        if maybe(rng, 0.6):
            d["factor"] = rng.choice([1.0, 2.0])
        if maybe(rng, 0.5):
            d["partial_rotary_factor"] = rng.choice([0.5, 0.75])
        case["refusals"].add("proportional")

    if kind != "default" or "rope_type" in d:
        type_key = rng.choice(["rope_type", "type", "both"])
        if type_key == "both":
            d["rope_type"] = kind
            d["type"] = rng.choice(["linear", "dynamic", "default"])  # rope_type wins
        else:
            d[type_key] = kind
    if kind == "yarn" and "factor" not in d:
        d["factor"] = None
    if maybe(rng, 0.05):
        (d if maybe(rng, 0.5) else cfg)["partial_rotary_factor"] = rng.choice([0.5, 0.25])
        case["refusals"].add("partial_rotary_factor")

    form = rng.choice(["rope_scaling", "rope_parameters", "rope_scaling", "rope_parameters",
                       "scaling_over_parameters", "empty_scaling", "null_scaling"])
    if not d:
        if maybe(rng, 0.5):
            cfg[rng.choice(["rope_scaling", "rope_parameters"])] = None
        where = "none"
    elif form in ("rope_scaling", "rope_parameters"):
        cfg[form] = d
        where = form
    elif form == "scaling_over_parameters":
        # transformers: a non-empty rope_scaling wins over rope_parameters.
        cfg["rope_scaling"] = d
        cfg["rope_parameters"] = {"rope_type": "linear", "factor": 3.0, "rope_theta": 123.0}
        where = "rope_scaling>rope_parameters"
    elif form == "empty_scaling":
        cfg["rope_scaling"] = {}
        cfg["rope_parameters"] = d
        where = "{}+rope_parameters"
    else:
        cfg["rope_scaling"] = None
        cfg["rope_parameters"] = d
        where = "null+rope_parameters"
    return f"{kind}[{where}]"


def draw_case(seed, index, family=None):
    rng = random.Random(f"{seed}:{index}")
    case = {"refusals": set(), "seed": seed, "index": index}
    fam = family or rng.choice(FAMILIES[:3])
    # A sixth of the cases each are qwen3, phi3 and gemma3_text, drawn apart
    # so that the other families' cases of a seed stay what they were
    # before these came in.
    if family is None:
        u = random.Random(f"{seed}:{index}:qwen3").random()
        fam = "qwen3" if u < 0.17 else "phi3" if u < 0.34 else "gemma3_text" if u < 0.5 else fam
        if fam in FAMILIES[:3] and random.Random(f"{seed}:{index}:gemma2").random() < 0.25:
            fam = "gemma2"
        if fam in FAMILIES[:3] and random.Random(f"{seed}:{index}:gemma").random() < 0.2:
            fam = "gemma"
    cfg = {"model_type": fam}
    if maybe(rng, 0.7):
        cfg["architectures"] = [CAUSAL_LM[fam]]

    heads = rng.choice([1, 2, 3, 4, 6, 8])
    explicit_hd = maybe(rng, 0.35)
    if explicit_hd:
        head_dim = rng.choice([4, 6, 8, 10, 12, 16, 20, 24, 32])
        # LlamaConfig and Gemma3TextConfig validate hidden_size % num_attention_heads == 0
        # even with head_dim.
        step = heads if fam in ("llama", "gemma") + GEMMA else 1
        choices = [h for h in range(16, 97) if h % step == 0 and h != heads * head_dim]
        hidden = rng.choice(choices)
        cfg["head_dim"] = head_dim
    else:
        choices = [(h, h // heads) for h in range(16, 97)
                   if h % heads == 0 and (h // heads) % 2 == 0 and h // heads >= 2]
        hidden, head_dim = rng.choice(choices)
        if maybe(rng, 0.15) and fam not in ("qwen2", "qwen3", "phi3", "gemma") + GEMMA:  # these read a null head_dim as is
            cfg["head_dim"] = None
        if fam in ("qwen3", "gemma") + GEMMA:
            if maybe(rng, 0.25):
                head_dim = 128 if fam == "qwen3" else 256  # absent: the class default, whatever hidden_size is
            else:
                cfg["head_dim"] = head_dim
    cfg["hidden_size"] = hidden
    cfg["num_attention_heads"] = heads
    kv_choices = [k for k in range(1, heads + 1) if heads % k == 0]
    kv_form = rng.choice(["int", "int", "int", "null", "absent"])
    family_default_kv = {"llama": heads, "qwen2": 32, "qwen3": 32, "mistral": 8, "phi3": heads,
                         "gemma3_text": 4, "gemma2": 4, "gemma": 16}[fam]
    if kv_form == "absent" and heads % family_default_kv != 0:
        kv_form = "int"
    if kv_form == "null" and fam in ("mistral", "gemma") + GEMMA:
        kv_form = "int"  # their strict typing refuses null
    if kv_form == "int":
        kv = rng.choice(kv_choices)
        cfg["num_key_value_heads"] = kv
    elif kv_form == "null":
        kv = heads
        cfg["num_key_value_heads"] = None
    else:
        kv = family_default_kv
    layers = rng.randint(1, 3)
    cfg["num_hidden_layers"] = layers
    cfg["intermediate_size"] = rng.randint(8, 128)
    vocab = rng.randint(50, 300)
    cfg["vocab_size"] = vocab
    eps = rng.choice([None, 1e-6, 1e-5, 1e-3, 0.05, 0.5])
    if eps is not None:
        cfg["rms_norm_eps"] = eps

    # The batch: 1..3 rows, right padding of different lengths.
    length = rng.choice([rng.randint(1, 12), rng.randint(8, 40), rng.randint(20, 48)])
    rows = rng.randint(1, 3)
    lengths = [length] + [rng.randint(1, length) for _ in range(rows - 1)]
    rng.shuffle(lengths)
    ids = [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
    gen = rng.choice([0, 2, 3, 4])
    case["ids"] = ids
    case["generate"] = gen

    if fam == "phi3":
        rope_desc = draw_phi3_rope(rng, cfg, case, head_dim, length)
    elif fam == "gemma3_text":
        rope_desc = draw_gemma3_rope(rng, cfg)
    else:
        rope_desc = draw_rope(rng, cfg, case, head_dim, length)

    max_pos_needed = length + gen
    if maybe(rng, 0.15) and fam != "llama":
        pass  # family default (32768 / 131072)
    elif maybe(rng, 0.1) and fam == "llama":
        pass  # 2048
    elif maybe(rng, 0.3) and max_pos_needed > 2:
        # Shorter than the batch or the generation: past it "dynamic"
        # recomputes its frequencies, and every type runs on.
        cfg["max_position_embeddings"] = rng.randint(max(1, length // 3), max_pos_needed - 1)
    else:
        cfg["max_position_embeddings"] = max_pos_needed + rng.choice([0, 0, 1, 5, 30, 200])

    act_pool = SUPPORTED_ACTS if maybe(rng, 0.88) else UNSUPPORTED_ACTS
    act = rng.choice(act_pool)
    if act != "silu" or maybe(rng, 0.5):
        cfg["hidden_act"] = act
    if act in UNSUPPORTED_ACTS:
        case["refusals"].add("hidden_act")
    if fam in GEMMA:
        # Gemma's configs read hidden_activation (default gelu_pytorch_tanh);
        # a hidden_act beside it is ignored.
        cfg.pop("hidden_act", None)
        if act != "gelu_pytorch_tanh" or maybe(rng, 0.5):
            cfg["hidden_activation"] = act
        if maybe(rng, 0.15):
            cfg["hidden_act"] = rng.choice(["silu", "relu"])
        if act in UNSUPPORTED_ACTS:
            case["refusals"].discard("hidden_act")
            case["refusals"].add("hidden_activation")

    tie = rng.choice([None, True, False])
    if tie is not None:
        cfg["tie_word_embeddings"] = tie

    window_desc = ""
    if fam == "llama":
        for key in ("attention_bias", "mlp_bias"):
            v = rng.choice([None, True, False])
            if v is not None:
                cfg[key] = v
        if maybe(rng, 0.1):
            cfg["sliding_window"] = rng.randint(1, 4)  # LlamaForCausalLM ignores it
        if maybe(rng, 0.2):
            cfg["pretraining_tp"] = rng.choice([1, 2])
    elif fam in ("qwen2", "qwen3"):
        use = rng.choice([None, True, True, False])
        if use is not None:
            cfg["use_sliding_window"] = use
        w = draw_window(rng, cfg, length, ["absent", "null", "short", "short", "long"])
        if maybe(rng, 0.7):
            cfg["max_window_layers"] = rng.randint(-1, layers + 1)
        if maybe(rng, 0.35) and use and w != "null":
            cfg["layer_types"] = [rng.choice(["full_attention", "sliding_attention"])
                                  for _ in range(layers)]
        if fam == "qwen3":
            bias = rng.choice([None, True, False])  # q, k, v and o
            if bias is not None:
                cfg["attention_bias"] = bias
            if maybe(rng, 0.1):
                cfg["mlp_bias"] = True  # Qwen3's MLP ignores it
        elif maybe(rng, 0.1):
            cfg["attention_bias"] = rng.choice([True, False])  # Qwen2 ignores it
        window_desc = f" use_sw={use} sw={cfg.get('sliding_window', 'absent')}" \
                      f" mwl={cfg.get('max_window_layers', 'absent')}" \
                      f"{' lt' if 'layer_types' in cfg else ''}"
    elif fam == "phi3":
        w = draw_window(rng, cfg, length, ["absent", "null", "short", "long"])  # every layer
        window_desc = f" sw={cfg.get('sliding_window', 'absent')}"
    elif fam == "gemma":
        # GemmaConfig: hidden_act (its legacy "gelu" is the tanh
        # approximation), no window, no caps.
        v = rng.choice([None, True, False])
        if v is not None:
            cfg["attention_bias"] = v
        if maybe(rng, 0.04):
            cfg["use_bidirectional_attention"] = True
            case["refusals"].add("bidirectional")
    elif fam in GEMMA:
        draw_window(rng, cfg, length, ["absent", "short", "short", "long"])
        if maybe(rng, 0.4):
            cfg["layer_types"] = [rng.choice(["full_attention", "sliding_attention"])
                                  for _ in range(layers)]
        elif maybe(rng, 0.6):
            cfg["sliding_window_pattern"] = rng.choice([1, 2, 3])  # Gemma2Config ignores it
        caps = (("attn_logit_softcapping", [None, 1.0, 5.0, 50.0]),) if fam == "gemma2" else ()
        for key, values in (("attention_bias", [None, True, False]),
                            ("query_pre_attn_scalar", [None, 8, 16, 24, 256]),
                            ("final_logit_softcapping", [None, None, 5.0, 30.0])) + caps:
            v = rng.choice(values)
            if v is not None:
                cfg[key] = v
        if maybe(rng, 0.04):
            cfg["use_bidirectional_attention"] = True
            case["refusals"].add("bidirectional")
        window_desc = (f" sw={cfg.get('sliding_window', 'absent')}"
                       f" swp={cfg.get('sliding_window_pattern', '-')}{' lt' if 'layer_types' in cfg else ''}"
                       f" qpas={cfg.get('query_pre_attn_scalar', '-')}"
                       f" cap={cfg.get('final_logit_softcapping', '-')}"
                       f"/{cfg.get('attn_logit_softcapping', '-')}")
    else:
        w = draw_window(rng, cfg, length, ["absent", "null", "short", "short", "short", "long"])
        if maybe(rng, 0.15):
            # AutoConfig loads mistral + layer_types as "ministral" (per-layer
            # windows; MistralForCausalLM would ignore the list), and its
            # save_pretrained writes model_type "ministral". Ministral's
            # attention needs an explicit head_dim.
            cfg["layer_types"] = [rng.choice(["full_attention", "sliding_attention"])
                                  for _ in range(layers)]
            if cfg.get("head_dim") is None:
                cfg["head_dim"] = head_dim
        window_desc = f" sw={cfg.get('sliding_window', 'absent')}" \
                      f"{' lt' if 'layer_types' in cfg else ''}"

    # Token ids.
    out_of_range = maybe(rng, 0.04)
    for key in ("bos_token_id", "pad_token_id"):
        form = rng.choice(["absent", "null", "int"])
        if fam == "phi3" and key == "pad_token_id" and form == "absent":
            form = "int"  # Phi3Config's 32000 would be the embedding's padding_idx, past the vocabulary
        if form == "null":
            cfg[key] = None
        elif form == "int":
            cfg[key] = rng.randrange(vocab)
    form = rng.choice(["absent", "null", "int", "list"])
    if form == "null":
        cfg["eos_token_id"] = None
    elif form == "int":
        cfg["eos_token_id"] = rng.randrange(vocab)
    elif form == "list":
        cfg["eos_token_id"] = [rng.randrange(vocab) for _ in range(rng.randint(1, 3))]
    if out_of_range:
        cfg["eos_token_id"] = vocab + rng.randint(0, 50)
        case["refusals"].add("token_id_range")

    # Fields both sides ignore.
    if maybe(rng, 0.4):
        cfg["initializer_range"] = 0.02
        cfg["attention_dropout"] = 0.0
        cfg["use_cache"] = rng.choice([True, False])
    dtype_key = rng.choice([None, "torch_dtype", "dtype"])
    if dtype_key:
        cfg[dtype_key] = rng.choice(["float32", "bfloat16", "float16"])
    case["stored"] = rng.choices([torch.float32, torch.bfloat16, torch.float16, torch.float64],
                                 weights=[8, 1, 1, 1])[0]
    # Sometimes sharded (model.safetensors.index.json and several files).
    case["shard"] = rng.choice([None, None, None, "40KB"])
    case["gain"] = rng.choice([1.0, 1.5, 2.0])

    wrapped = ""
    if fam == "gemma3_text" and random.Random(f"{seed}:{index}:gemma3mm").random() < 0.3:
        cfg = wrap_multimodal_gemma3(random.Random(f"{seed}:{index}:gemma3mm:fields"), cfg)
        wrapped = " multimodal"

    case["family"] = fam
    case["config"] = cfg
    cfg = cfg.get("text_config", cfg)
    kvs = cfg.get("num_key_value_heads", "abs")
    case["desc"] = (f"{fam:7s} d={hidden} h={heads}/{kvs} hd={head_dim}{'*' if explicit_hd else ''}"
                    f" L={layers} V={vocab} rope={rope_desc} act={act}"
                    f" tie={tie}{window_desc} rows={lengths} gen={gen}"
                    f" maxpos={cfg.get('max_position_embeddings', 'default')}"
                    f"{'<needed' if cfg.get('max_position_embeddings', 1 << 30) < max_pos_needed else ''}"
                    f"{wrapped}")
    return case


def wrap_multimodal_gemma3(rng, text):
    """A multimodal Gemma 3 config (model_type "gemma3",
    Gemma3ForConditionalGeneration) around a drawn gemma3_text one, with a
    tiny vision tower. The token ids, the dtype and tie_word_embeddings move
    to the top level or stay in text_config at random (Gemma3Config's own
    tie_word_embeddings, default true, is the one that counts)."""
    text = dict(text)
    text.pop("architectures", None)
    if maybe(rng, 0.2):
        text.pop("model_type")
    top = {"model_type": "gemma3"}
    if maybe(rng, 0.7):
        top["architectures"] = ["Gemma3ForConditionalGeneration"]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
                "tie_word_embeddings"):
        if key in text and maybe(rng, 0.5):
            top[key] = text.pop(key)
    if "tie_word_embeddings" not in top and maybe(rng, 0.3):
        top["tie_word_embeddings"] = rng.choice([True, False])
    top["text_config"] = text
    top["vision_config"] = {"model_type": "siglip_vision_model", "hidden_size": 8,
                            "intermediate_size": 16, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    top["mm_tokens_per_image"] = 4
    return top


# ----------------------------------------------------------------------------
# Running both sides


def randomize_weights(model, gain):
    """Weights at a scale where attention is peaked and every term matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vision_tower" in name or "multi_modal_projector" in name:
                p.copy_(torch.randn(p.shape) * 0.02)  # a multimodal Gemma 3's, unused on text
            elif name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape) * 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape))
            else:
                p.copy_(torch.randn(p.shape) * (gain / math.sqrt(p.shape[1])))


def batch_tensors(ids):
    length = max(len(r) for r in ids)
    input_ids = torch.zeros(len(ids), length, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    return input_ids, mask


def fresh_rope(model):
    """Makes transformers' "dynamic" rope forget earlier calls.

    Its rotary embedding keeps the frequencies of the longest sequence seen
    since the last one shorter than max_position_embeddings, so a forward
    after a longer one computes with the longer one's base. Each reference
    computation here starts as a freshly loaded model would (the base from
    its own length), which is what llama_dump computes for every call.
    """
    for m in model.modules():
        if hasattr(m, "original_inv_freq") and hasattr(m, "original_max_seq_len"):
            # A copy: longrope's update writes into inv_freq in place, which
            # must not reach original_inv_freq.
            m.register_buffer("inv_freq", m.original_inv_freq.to(m.inv_freq.dtype).clone(),
                              persistent=False)
            m.max_seq_len_cached = m.original_max_seq_len


def reference(folder, ids, gen):
    """transformers on `folder`: fp32 logits, hidden, loss, greedy tokens and
    their margins; and the fp64 logits (rounding noise of fp32 alone)."""
    model, info = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing or info.get("mismatched_keys"):
        raise RuntimeError(f"from_pretrained did not load every weight: missing {missing[:4]} "
                           f"mismatched {info.get('mismatched_keys')}")
    model.eval()
    input_ids, mask = batch_tensors(ids)
    labels = input_ids.masked_fill(mask == 0, -100)
    captured = {}
    text_model = getattr(model.model, "language_model", model.model)  # a multimodal Gemma 3's
    hook = text_model.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    with torch.no_grad():
        fresh_rope(model)
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        hidden = captured["h"]
        hook.remove()
        # Greedy tokens by full forwards over the growing row (no KV cache):
        # the definition the cached decode must reproduce. transformers' own
        # cached decode is run too; where it disagrees with its forward that
        # is noted. (Its DynamicSlidingWindowLayer keeps every key when
        # sliding_window is 1, `[..., -sliding_window + 1:, :]` being
        # `[..., 0:, :]`; and DynamicCache(config=...) windows a llama
        # config's cache by a sliding_window LlamaAttention never applies.)
        tokens, margins, cached_tokens, cache_quirk = [], [], [], False
        for row in ids:
            seq = list(row)
            row_tokens, row_margins = [], []
            for _ in range(gen):
                fresh_rope(model)
                last = model(input_ids=torch.tensor([seq])).logits[0, -1]
                top = torch.topk(last, 2).values
                nxt = int(last.argmax())
                row_tokens.append(nxt)
                row_margins.append(float(top[0] - top[1]))
                seq.append(nxt)
            tokens.append(row_tokens)
            margins.append(row_margins)
            # The cached decode (what generate() does) to the end: past
            # max_position_embeddings a dynamic rope's cache keeps keys
            # rotated with the bases of earlier lengths, so its tokens may
            # differ from full forwards'; llama_dump decodes with a cache too.
            fresh_rope(model)
            cache, step_in, row_cached = None, torch.tensor([row]), []
            for t in range(gen):
                o = model(input_ids=step_in, cache=cache, use_cache=True)
                cache = o.cache
                nxt = int(o.logits[0, -1].argmax())
                if row_cached == row_tokens[:t] and nxt != row_tokens[t]:
                    cache_quirk = cache_quirk or row_margins[t] > 1e-3
                row_cached.append(nxt)
                step_in = torch.tensor([[nxt]])
            cached_tokens.append(row_cached)
        fresh_rope(model)
        model64 = model.to(torch.float64)
        logits64 = model64(input_ids=input_ids, attention_mask=mask).logits.float()
    return dict(logits=out.logits, hidden=hidden, loss=float(out.loss), tokens=tokens,
                margins=margins, cached_tokens=cached_tokens, logits64=logits64, mask=mask,
                cache_quirk=cache_quirk)


def run_dump(binary, folder, ids, gen, out_path):
    ids_flag = ";".join(",".join(str(t) for t in row) for row in ids)
    cmd = [binary, f"--model={folder}", f"--ids={ids_flag}", f"--generate={gen}", "--threads=1",
           "--dtype=float32", f"--out={out_path}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return cmd, None, "timeout"
    return cmd, p.returncode, (p.stderr.strip() or p.stdout.strip())


def masked_maxdiff(a, b, mask, ignore_nan=False):
    real = mask.bool()
    if not real.any():
        return 0.0, 0.0
    diff = (a.double() - b.double()).abs()[real]
    if ignore_nan:
        diff = diff[~diff.isnan()]
        if diff.numel() == 0:
            return 0.0, 0.0
    return float(diff.max()), float(b.double().abs()[real].max())


def compare(dump, ref, gen):
    """Returns (ok, fields, text)."""
    mask = ref["mask"]
    problems = []
    fields = {}
    for key in ("logits", "hidden"):
        if dump[key].shape != ref[key].shape:
            problems.append(f"{key} shape {tuple(dump[key].shape)} vs {tuple(ref[key].shape)}")
            continue
        diff, scale = masked_maxdiff(dump[key], ref[key], mask)
        fields[key] = (diff, scale)
        if not diff <= ATOL + RTOL * scale:  # NaN fails too
            problems.append(f"{key} max|diff| {diff:.3g} (scale {scale:.3g})")
    # (fp64 transformers can give NaN where a padded query sees no key: its
    # mask, finfo(float64).min, becomes -inf in the fp32 softmax.)
    noise, scale64 = masked_maxdiff(ref["logits"], ref["logits64"], mask, ignore_nan=True)
    fields["fp32_noise"] = (noise, scale64)
    # NaN on both sides when no row has two real tokens (no label counts).
    both_nan = math.isnan(float(dump["loss"])) and math.isnan(ref["loss"])
    dl = 0.0 if both_nan else abs(float(dump["loss"]) - ref["loss"])
    fields["loss"] = dl
    if not dl <= ATOL + RTOL * max(1.0, abs(ref["loss"])):
        problems.append(f"loss {float(dump['loss']):.6g} vs {ref['loss']:.6g}")
    ties = 0
    if gen > 0:
        got = dump["generated"].tolist()
        for r, (g_row, want, margins) in enumerate(zip(got, ref["tokens"], ref["margins"])):
            if g_row == ref["cached_tokens"][r] and g_row != want:
                fields["rows_as_cached_decode"] = fields.get("rows_as_cached_decode", 0) + 1
                continue  # transformers' own cached decode, where it differs
            for t, (a, b) in enumerate(zip(g_row, want)):
                if a != b:
                    tol = ATOL + RTOL * max(1.0, float(ref["logits"].abs().max()))
                    if margins[t] <= 10 * tol:
                        ties += 1  # a near tie: later tokens follow different prefixes
                    else:
                        problems.append(f"generated row {r} step {t}: {a} vs {b} "
                                        f"(reference margin {margins[t]:.3g})")
                    break
    fields["ties"] = ties
    fields["cache_quirk"] = ref["cache_quirk"]
    return not problems, fields, "; ".join(problems)


def refusal_accepted(case, message):
    for key in case["refusals"]:
        if all(part in message for part in EXPECTED_REFUSALS[key][1]):
            return True, key
    return False, None


# ----------------------------------------------------------------------------


def mutated_copy(folder, what):
    """The self-test (--mutate): a copy of `folder` whose config.json differs
    slightly in one setting, for llama_dump only; the comparison must then
    fail. None when the case has nothing that setting would change."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    dicts = [cfg[k] for k in ("rope_scaling", "rope_parameters") if isinstance(cfg.get(k), dict)]
    # Gemma 3's rope_parameters hold one dict per layer type.
    dicts = [sub for d in dicts
             for sub in ([v for v in d.values() if isinstance(v, dict)]
                         if "full_attention" in d or "sliding_attention" in d else [d])]
    if what == "theta" and cfg.get("model_type") == "gemma3_text":
        cfg["rope_local_base_freq"] = (cfg.get("rope_local_base_freq") or 10000.0) * 1.05
    if what == "theta":
        cfg["rope_theta"] = cfg.get("rope_theta") or 10000.0
        for d in dicts:
            d["rope_theta"] = d.get("rope_theta") or cfg["rope_theta"]
        cfg["rope_theta"] *= 1.05
        for d in dicts:
            d["rope_theta"] *= 1.05
    elif what == "factor":
        if not any(isinstance(d.get("factor"), (int, float)) and d.get("rope_type", d.get("type"))
                   in ("linear", "yarn", "llama3") for d in dicts):
            return None
        for d in dicts:
            if isinstance(d.get("factor"), (int, float)):
                d["factor"] *= 1.1
    elif what == "window":
        w = cfg.get("sliding_window")
        if not isinstance(w, int) or w < 2:
            return None
        cfg["sliding_window"] = w - 1
    elif what == "eps":
        cfg["rms_norm_eps"] = 0.1 + 2 * cfg.get("rms_norm_eps", 1e-6)
    out = folder + "_mutated"
    shutil.copytree(folder, out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return out


def check_adapter(args, case, folder, workdir):
    """A random PEFT CAUSAL_LM prompt adapter (plain or multitask) built by
    PEFT on `folder`'s model with random values and saved; llama_dump
    --adapter --task_id must give PEFT's logits at every real position
    (prompt rows included) and its loss. Returns (ok, text, fields)."""
    from peft import (MultitaskPromptTuningConfig, PromptTuningConfig, TaskType,  # noqa: E402
                      get_peft_model)
    rng = random.Random(case["seed"] * 7919 + case["index"])
    kind = rng.choice(["PROMPT_TUNING", "MULTITASK_PROMPT_TUNING"])
    nv = rng.choice([1, 2, 3, 5, 8])
    common = dict(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=nv)
    task_id = 0
    if kind == "PROMPT_TUNING":
        config = PromptTuningConfig(**common)
    else:
        tasks = rng.randint(1, 4)
        task_id = rng.randrange(tasks)
        config = MultitaskPromptTuningConfig(num_tasks=tasks, num_ranks=rng.randint(1, 3), **common)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                attn_implementation="eager").eval()
    model = get_peft_model(base, config).eval()
    gen = torch.Generator().manual_seed(rng.randrange(1 << 30))
    scale = rng.choice([0.05, 0.5, 1.0, 3.0])
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    adapter = os.path.join(workdir, "adapter")
    model.save_pretrained(adapter)
    input_ids, mask = batch_tensors(case["ids"])
    kwargs = {"task_ids": torch.full((input_ids.shape[0],), task_id)} if task_id or \
        kind != "PROMPT_TUNING" else {}
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask,
                    labels=input_ids.masked_fill(mask == 0, -100), **kwargs)
    out_path = os.path.join(workdir, "adapter_out.safetensors")
    cmd = [args.llama_dump, f"--model={folder}", f"--adapter={adapter}", f"--task_id={task_id}",
           "--ids=" + ";".join(",".join(str(t) for t in row) for row in case["ids"]),
           f"--generate={case['generate']}", "--threads=1", "--dtype=float32", f"--out={out_path}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    what = f"{kind[:2].lower()}{nv}"
    if p.returncode != 0:
        return False, f"adapter {what}: llama_dump exit {p.returncode}: {p.stderr.strip()[-300:]}", {}
    dump = load_file(out_path)
    if dump["logits"].shape != out.logits.shape:
        return False, (f"adapter {what}: logits {list(dump['logits'].shape)} against PEFT's "
                       f"{list(out.logits.shape)}"), {}
    diff, scale_ref = masked_maxdiff(dump["logits"], out.logits, dump["attention_mask"])
    loss = abs(dump["loss"].item() - out.loss.item())
    ok = diff <= ATOL + RTOL * scale_ref and loss <= ATOL + RTOL * max(1.0, abs(out.loss.item()))
    text = f"adapter {what}: logits {diff:.1e}/{scale_ref:.2g} loss {loss:.1e}"
    if ok and case["generate"] > 0:
        problem = adapter_greedy_problem(model, case, dump["generated"].tolist(), task_id,
                                         "task_ids" in kwargs)
        if problem:
            ok, text = False, f"{text}; {problem}"
        else:
            text += f"; greedy tokens as PEFT's ({case['generate']} per row)"
    return ok, text, {"rel": diff / max(scale_ref, 1e-30), "kind": kind}


def adapter_greedy_problem(model, case, generated, task_id, with_task):
    """"" when llama_dump's greedy tokens with the adapter are PEFT's: the
    tokens of full forwards over the growing row (a divergence at a step
    whose top two logits are within the tolerance ends the comparison of
    that row), or those of PEFT's own cached generate(). Otherwise what
    differs."""
    gen = case["generate"]
    kw = {"task_ids": torch.tensor([task_id])} if with_task else {}
    for r, row in enumerate(case["ids"]):
        seq, ours = list(row), generated[r]
        for t in range(gen):
            with torch.no_grad():
                fresh_rope(model)
                last = model(input_ids=torch.tensor([seq]), **kw).logits[0, -1]
            want = int(last.argmax())
            if ours[t] == want:
                seq.append(want)
                continue
            top = torch.topk(last, 2).values
            if float(top[0] - top[1]) <= ATOL + RTOL * float(last.abs().max()):
                break  # a near tie: the rest of the row is not comparable
            # transformers' cached decode may differ from its forwards (see
            # the module docstring); llama_dump decodes with a cache too.
            with torch.no_grad():
                fresh_rope(model)
                cached = model.generate(input_ids=torch.tensor([row]),
                                        attention_mask=torch.ones(1, len(row), dtype=torch.long),
                                        max_new_tokens=gen, do_sample=False, num_beams=1,
                                        **kw)[0].tolist()[len(row):]
            if cached and cached == ours[:len(cached)]:
                break
            # Past max_position_embeddings with a "dynamic" rope, PEFT's
            # generate() can differ from both; the base model's own cached
            # decode with the prompt's rows in front is then the reference
            # (what llama_dump is checked against without an adapter).
            by_hand = cached_decode_with_prompt(model, row, gen, task_id, with_task)
            if by_hand == ours:
                break
            return (f"greedy row {r} step {t}: {ours[t]} vs PEFT's {want} (margin "
                    f"{float(top[0] - top[1]):.3g}; PEFT's generate {cached}; the base model's "
                    f"cached decode with the prompt {by_hand})")
    return ""


def cached_decode_with_prompt(model, row, gen, task_id, with_task):
    """Greedy tokens of the PEFT model's base model decoding with its KV
    cache, the adapter's prompt rows in front of `row`."""
    base = model.get_base_model()
    with torch.no_grad():
        prompts = model.get_prompt(batch_size=1,
                                   task_ids=torch.tensor([task_id]) if with_task else None)
        embeds = base.get_input_embeddings()(torch.tensor([row]))
        x = torch.cat([prompts.to(embeds.dtype), embeds], 1)
        fresh_rope(base)
        out = base(inputs_embeds=x, use_cache=True)
        tokens, position = [int(out.logits[0, -1].argmax())], x.shape[1]
        for _ in range(gen - 1):
            out = base(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values,
                       use_cache=True, position_ids=torch.tensor([[position]]))
            position += 1
            tokens.append(int(out.logits[0, -1].argmax()))
    return tokens


def run_case(args, case, workdir):
    """Returns a list of result dicts, one per folder variant."""
    cfg = case["config"]
    raw = os.path.join(workdir, "raw")
    saved = os.path.join(workdir, "saved")
    os.makedirs(raw)
    with open(os.path.join(raw, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    results = []
    try:
        hf_config = AutoConfig.from_pretrained(raw)
        torch.manual_seed(case["seed"] * 100003 + case["index"])
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager",
                                                 dtype=torch.float32)
        randomize_weights(model, case["gain"])
        kwargs = {"max_shard_size": case["shard"]} if case.get("shard") else {}
        model.to(case["stored"]).save_pretrained(saved, **kwargs)
    except Exception as e:  # transformers refuses the config itself
        return [dict(variant="build", status="hf_rejects", text=f"{type(e).__name__}: {e}"[:200])]
    for name in os.listdir(saved):
        if name != "config.json":
            shutil.copy(os.path.join(saved, name), os.path.join(raw, name))

    for variant, folder in (("raw", raw), ("saved", saved)):
        res = dict(variant=variant, folder=folder)
        out_path = os.path.join(workdir, f"{variant}_out.safetensors")
        dump_folder = folder
        if args.mutate:
            dump_folder = mutated_copy(folder, args.mutate)
            if dump_folder is None:
                results.append(dict(variant=variant, status="not_mutable", text=args.mutate))
                continue
        cmd, rc, text = run_dump(args.llama_dump, dump_folder, case["ids"], case["generate"],
                                 out_path)
        res["cmd"] = cmd
        try:
            ref = reference(folder, case["ids"], case["generate"])
            ref_error = None
        except Exception as e:
            ref, ref_error = None, f"{type(e).__name__}: {e}"[:300]
        if rc is None or (rc is not None and rc < 0) or rc not in (0, 1):
            res.update(status="CRASH", text=f"rc={rc}: {text[-400:]}")
        elif rc == 1:
            ok, key = refusal_accepted(case, text)
            if ok:
                res.update(status="refused", text=text.splitlines()[-1][:300], key=key)
            elif ref is None:
                res.update(status="both_reject", text=f"llama_dump: {text[-200:]} | hf: {ref_error}")
            else:
                res.update(status="UNEXPECTED_REFUSAL", text=text[-400:])
        elif ref is None:
            res.update(status="hf_rejects", text=ref_error)
        else:
            ok, fields, text2 = compare(load_file(out_path), ref, case["generate"])
            odd = case["refusals"]
            note = f"computed despite {sorted(odd)}; " if odd else ""
            res.update(status="ok" if ok else "MISMATCH", fields=fields, text=note + text2)
            if ok and args.adapters and variant == "saved":
                a_ok, a_text, a_fields = check_adapter(args, case, folder, workdir)
                res["adapter"] = a_fields
                res["text"] = (res["text"] + "; " if res["text"] else "") + a_text
                if not a_ok:
                    res["status"] = "ADAPTER_MISMATCH"
        results.append(res)
    return results


FAILING = {"CRASH", "UNEXPECTED_REFUSAL", "MISMATCH", "ADAPTER_MISMATCH"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--only", type=int, default=None, help="run only this case index")
    parser.add_argument("--family", choices=FAMILIES, default=None)
    parser.add_argument("--llama_dump", default="bazel-bin/worker/llama_dump")
    parser.add_argument("--keep", default=None, help="copy failing case folders here")
    parser.add_argument("--mutate", choices=["theta", "factor", "window", "eps"], default=None,
                        help="self-test: give llama_dump a slightly different config; every "
                             "case it changes should then be a MISMATCH")
    parser.add_argument("--adapters", action="store_true",
                        help="also give each case's saved folder a random PEFT CAUSAL_LM prompt "
                             "adapter and compare llama_dump --adapter with PEFT (needs peft)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.llama_dump = os.path.abspath(args.llama_dump)
    if not os.access(args.llama_dump, os.X_OK):
        sys.exit(f"{args.llama_dump} is not an executable (bazel build //worker:llama_dump)")

    indices = [args.only] if args.only is not None else range(args.cases)
    counts = {}
    per_family = {f: {"cases": 0, "compared": 0, "logits": 0.0, "hidden": 0.0, "loss": 0.0,
                      "logits_rel": 0.0, "noise_rel": 0.0} for f in FAMILIES}
    refused = {}
    failures = []
    ties = 0
    quirks = 0
    adapters = {}
    adapter_worst = 0.0
    start = time.time()
    for i in indices:
        case = draw_case(args.seed, i, args.family)
        fam = case["family"]
        per_family[fam]["cases"] += 1
        if args.verbose:
            print(json.dumps(case["config"], indent=None))
        with tempfile.TemporaryDirectory(prefix="decoder_fuzz_") as workdir:
            t0 = time.time()
            results = run_case(args, case, workdir)
            for res in results:
                status = res["status"]
                counts[status] = counts.get(status, 0) + 1
                summary = ""
                if "fields" in res:
                    f = res["fields"]
                    lg, hd = f["logits"], f["hidden"]
                    summary = (f"logits {lg[0]:.1e}/{lg[1]:.2g} hidden {hd[0]:.1e} "
                               f"loss {f['loss']:.1e} fp32-noise {f['fp32_noise'][0]:.1e}")
                    pf = per_family[fam]
                    pf["compared"] += 1
                    pf["logits"] = max(pf["logits"], lg[0])
                    pf["hidden"] = max(pf["hidden"], hd[0])
                    pf["loss"] = max(pf["loss"], f["loss"])
                    pf["logits_rel"] = max(pf["logits_rel"], lg[0] / max(lg[1], 1e-30))
                    pf["noise_rel"] = max(pf["noise_rel"], f["fp32_noise"][0] / max(lg[1], 1e-30))
                    ties += f["ties"]
                    if f["cache_quirk"]:
                        quirks += 1
                        summary += " (transformers' cached decode differs from its forward)"
                if status == "refused":
                    refused.setdefault(res["key"], []).append(res["text"])
                if res.get("adapter") and status == "ok":
                    adapters[res["adapter"]["kind"]] = adapters.get(res["adapter"]["kind"], 0) + 1
                    adapter_worst = max(adapter_worst, res["adapter"]["rel"])
                line = (f"[{args.seed}:{i:3d}] {res['variant']:5s} {status:9s} {summary} "
                        f"| {case['desc']}")
                if res.get("text") and status != "ok" or (status == "ok" and res.get("text")):
                    line += f"\n      -> {res['text']}"
                print(line, flush=True)
                if status in FAILING:
                    failures.append((args.seed, i, res["variant"], status, res.get("text", "")))
                    if args.keep:
                        dest = os.path.join(args.keep, f"s{args.seed}_c{i}_{res['variant']}")
                        if os.path.exists(dest):
                            shutil.rmtree(dest)
                        shutil.copytree(res.get("folder", workdir), dest)
                        with open(os.path.join(dest, "ids.txt"), "w") as f:
                            f.write(";".join(",".join(map(str, r)) for r in case["ids"]) + "\n")
                        with open(os.path.join(dest, "cmd.txt"), "w") as f:
                            f.write(" ".join(res.get("cmd", [])) + "\n")
            if args.verbose:
                print(f"      ({time.time() - t0:.1f} s)")

    print(f"\nsummary (seed {args.seed}, {len(list(indices))} cases, {time.time() - start:.0f} s, "
          f"rtol {RTOL:g} atol {ATOL:g}):")
    print("  outcomes per folder variant: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for fam, pf in per_family.items():
        if pf["cases"]:
            print(f"  {fam:7s}: {pf['cases']} cases, {pf['compared']} compared; max |diff| logits "
                  f"{pf['logits']:.2e} (rel {pf['logits_rel']:.2e}; transformers fp32 vs fp64 "
                  f"{pf['noise_rel']:.2e}), hidden {pf['hidden']:.2e}, loss {pf['loss']:.2e}")
    print(f"  greedy near-ties skipped: {ties}; cases where transformers' own KV-cached greedy "
          f"decode differs from its full forward (not counted against llama_dump): {quirks}")
    if args.adapters:
        print(f"  PEFT adapters compared: {adapters}; max |diff| of the logits relative to their "
              f"scale {adapter_worst:.2e}")
    for key, texts in sorted(refused.items()):
        print(f"  refused ({EXPECTED_REFUSALS[key][0]}): {len(texts)}, e.g. {texts[0]}")
    for seed, i, variant, status, text in failures:
        print(f"  FAIL [{seed}:{i}] {variant} {status}: {text}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
