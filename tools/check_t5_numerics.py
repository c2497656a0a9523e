#!/usr/bin/env python3
"""Differential fuzz of bazel-bin/worker/t5_dump against Hugging Face transformers.

Each case draws a random tiny T5-family configuration (model_type t5, mt5 or
umt5; every config.json field that worker/model/t5_config.cc reads or that
transformers honours: sizes, a num_decoder_layers unlike num_layers, the
relative attention buckets and max distance, layer_norm_epsilon,
feed_forward_proj, dense_act_fn / is_gated_act written or omitted, tied or
untied heads with or without scale_decoder_outputs, pad / eos /
decoder_start ids, embedding tensor names), writes it as a model folder
(config.json, model.safetensors and a tiny spiece.model whose pieces map one
word to one id so that --target can carry chosen label ids), lets
transformers load that same folder in float32 and runs t5_dump on it with a
right-padded batch of --ids rows, one --target per row and --generate. It
compares encoder_hidden (real input positions), decoder_hidden and logits
(positions whose label is not -100), the loss and the greedy generations.

    /tmp/tp-ref/bin/python tools/check_t5_numerics.py --seed 1 --cases 50
    /tmp/tp-ref/bin/python tools/check_t5_numerics.py --spec '{...}'  # rerun one case
    /tmp/tp-ref/bin/python tools/check_t5_numerics.py --seed 1 --cases 50 --adapters

With --adapters every case that runs also gets a random PEFT prompt
adapter (PROMPT_TUNING or MULTITASK_PROMPT_TUNING, 1 to 13 virtual tokens,
1 or 2 transformer submodules, 1 to 4 tasks of rank 1 to 3, random values
at scales 0.05 to 3) that PEFT builds on the case's model and saves; t5_dump
--adapter --task_id must then give PEFT's logits (at the labelled
positions) and loss within --tol (status adapter_mismatch otherwise; where
the prompt makes a length that reaches a bucket tie, PEFT is rerun with a
correctly rounded log first, as for bucket_tie below).

Run it from the repository root after `bazel build //worker:t5_dump`
(--binary to use another build). Python needs torch, transformers,
safetensors and sentencepiece (for its model protobuf). Both sides run on
one thread (torch.set_num_threads(1); OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS=1 for t5_dump, which has no --threads flag).

One line per case and a summary are printed. A case's status is one of
  ok                  everything within tolerance
  ok_fp64             float32 beyond --tol, float64 within its tolerance
  mismatch            numbers or generations differ            (failure)
  crash               t5_dump died of a signal or exited with
                      a status other than 0 or 1               (failure)
  unexpected_refusal  t5_dump refused a config it should run   (failure)
  bad_refusal         t5_dump refused, as expected, but its
                      message does not name the field          (failure)
  refused             t5_dump refused what it does not support, naming the
                      field (listed in the summary by field)
  ref_error_dump_ran  transformers itself cannot run the config (e.g. t5
                      without decoder_start_token_id) and t5_dump ran it
  bucket_tie          differs only because a relative-position bucket sits
                      exactly on an integer boundary of transformers'
                      float32 log formula, where torch 2's log (1 ulp off)
                      and libtorch 1.13's round differently; checked by
                      rerunning transformers (float64) with a correctly
                      rounded log and requiring a match then
The exit status is 1 when any case is a failure, otherwise 0.

Tolerance: every tensor is compared as max|dump - ref| / max|ref| over the
compared positions (the loss as |dump - ref| / max(1, |ref|)).

  float32 (--tol, default 1e-4): both sides compute in float32 with
  different kernels and summation orders. Over a few hundred random cases
  the rounding stays below about 1e-5 of the largest value, and reaches
  8e-5 only in sensitive models (large gains, saturated softmax); a wrong
  activation, bucket, scale, epsilon or start token moves values by 1e-3 of
  their range or more, but the closest pairs of activations (gelu against
  gelu_new or gelu_pytorch_tanh) only by 1e-5 .. 2e-4, under the float32
  noise.
  float64 (1e-6, always, unless --no-fp64): t5_dump --dtype=float64 against
  transformers in float64, with transformers' RMS norms made to accumulate
  in float64 (they use float32 whatever the dtype). The same algorithm then
  agrees to the float32 rounding of the dumped tensors (about 6e-8), so this
  check catches the small systematic differences float32 hides, and a
  float32 excess with float64 agreement is rounding (status ok_fp64).

Greedy generations must be identical, except that a difference at a step
where transformers' two best logits are within --tie-margin of each other is
reported as a near tie, not a mismatch.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from sentencepiece import sentencepiece_model_pb2  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    MT5Config,
    MT5ForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
    UMT5Config,
    UMT5ForConditionalGeneration,
)

import transformers.models.mt5.modeling_mt5 as mt5_modeling  # noqa: E402
import transformers.models.t5.modeling_t5 as t5_modeling  # noqa: E402
import transformers.models.umt5.modeling_umt5 as umt5_modeling  # noqa: E402

transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT on transformers' renames
transformers.utils.logging.disable_progress_bar()

FAMILIES = {
    "t5": (T5Config, T5ForConditionalGeneration),
    "mt5": (MT5Config, MT5ForConditionalGeneration),
    "umt5": (UMT5Config, UMT5ForConditionalGeneration),
}

# ACT2FN names that t5_config.cc maps to an activation.
SUPPORTED_ACTS = [
    "relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu",
    "silu", "swish", "tanh", "sigmoid", "gelu_python", "gelu_python_tanh",
    "gelu_accurate", "gelu_10", "hardswish", "laplace", "leaky_relu", "linear",
    "mish", "relu2", "relu6", "sqrtsoftplus",
]
# ACT2FN names with learned parameters of their own, which t5_dump refuses;
# drawn now and then to check that the refusal is clear.
UNSUPPORTED_ACTS = ["prelu", "xielu"]

IGNORE = -100


# ---------------------------------------------------------------------------
# Drawing a case


def draw_case(rng):
    """A case is a plain dict (printable, and accepted back by --spec)."""
    c = {}
    c["model_type"] = rng.choice(["t5", "mt5", "umt5"])
    c["vocab_size"] = rng.randint(50, 300)
    c["d_model"] = rng.randint(16, 96)
    c["num_heads"] = rng.randint(1, 6)
    c["d_kv"] = rng.randint(2, 24)
    c["d_ff"] = rng.randint(8, 128)
    c["num_layers"] = rng.randint(1, 3)
    if rng.random() < 0.15:
        # Same depth; config.json then omits the field or holds null.
        c["num_decoder_layers"] = c["num_layers"]
        c["num_decoder_layers_json"] = rng.choice(["absent", "null"])
    else:
        c["num_decoder_layers"] = rng.choice([n for n in (1, 2, 3) if n != c["num_layers"]])
        c["num_decoder_layers_json"] = "value"
    nb = rng.randint(4, 48)
    c["relative_attention_num_buckets"] = nb
    r = rng.random()
    if r < 0.7:
        # Small: the sequences below are longer than it, so the log buckets
        # and the clamp to the last bucket both matter.
        c["relative_attention_max_distance"] = rng.randint(nb // 2 + 1, nb // 2 + 24)
    elif r < 0.9:
        c["relative_attention_max_distance"] = rng.choice([64, 128, 200])
    else:
        # Between num_buckets / 4 and num_buckets / 2: valid for the encoder's
        # half of the buckets but not above the decoder's max_exact.
        c["relative_attention_max_distance"] = rng.randint(nb // 4 + 1, max(nb // 4 + 1, nb // 2))
    c["layer_norm_epsilon"] = rng.choice([1e-6, 1e-6, 1e-5, 1e-3, 0.05, 0.5, 2.0])

    gated = rng.random() < 0.5
    r = rng.random()
    if r < 0.92:
        act = rng.choice(SUPPORTED_ACTS)
    else:
        act = rng.choice(UNSUPPORTED_ACTS)
    if gated and rng.random() < 0.25:
        c["feed_forward_proj"] = "gated-gelu"  # means gelu_new
    else:
        c["feed_forward_proj"] = ("gated-" if gated else "") + act
    # How config.json states the activation: as transformers writes it
    # (dense_act_fn and is_gated_act derived from feed_forward_proj), without
    # the two derived fields (older configs), or with them disagreeing with
    # feed_forward_proj (transformers honours the written ones).
    c["act_json"] = rng.choices(
        ["as_saved", "absent", "other_act", "other_gating", "feed_forward_absent"],
        weights=[55, 15, 12, 8, 10])[0]
    c["other_act"] = rng.choice(SUPPORTED_ACTS + ["gelu_new"] * 2)

    c["tie_word_embeddings"] = rng.random() < 0.5
    # lm_head.weight in the checkpoint: absent, a separate matrix, or a copy
    # of the embedding. (transformers 5 uses a separate one whatever the
    # config says, and the embedding when there is none.)
    c["head"] = rng.choices(["absent", "separate", "copy"],
                            weights=[60, 30, 10] if c["tie_word_embeddings"] else [10, 80, 10])[0]
    c["scale_json"] = rng.choices(["as_saved", "absent", "true", "false"], weights=[50, 30, 10, 10])[0]
    c["embed_names"] = rng.choices(
        [["shared.weight"], ["encoder.embed_tokens.weight"], ["decoder.embed_tokens.weight"],
         ["shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]],
        weights=[70, 10, 10, 10])[0]

    v = c["vocab_size"]
    c["pad_token_id"] = 0 if rng.random() < 0.6 else rng.randrange(v)
    r = rng.random()
    if r < 0.5:
        c["eos_token_id"] = 1
    elif r < 0.8:
        c["eos_token_id"] = rng.randrange(v)
    else:
        c["eos_token_id"] = rng.sample(range(v), rng.randint(1, 3))
    r = rng.random()
    if r < 0.5:
        c["decoder_start_token_id"] = c["pad_token_id"]
    elif r < 0.85 or (c["model_type"] == "t5" and rng.random() < 0.8):
        # (transformers' T5Config has no default: without the field it cannot
        # shift labels or generate, so the case teaches little for t5.)
        c["decoder_start_token_id"] = rng.randrange(v)
    else:
        c["decoder_start_token_id"] = None  # absent from config.json

    # Weights: gains on top of a 1/sqrt(fan_in) init.
    c["weight_seed"] = rng.randrange(1 << 30)
    c["qk_gain"] = rng.choice([0.5, 1.0, 1.5])
    c["out_gain"] = rng.choice([0.5, 1.0, 2.0, 3.0])
    c["bias_std"] = rng.choice([0.5, 1.0, 2.0])
    c["embed_std"] = rng.choice([0.3, 1.0])
    # Scale up the LM-head rows of the EOS ids so that some rows finish
    # early and get padded.
    c["boost_eos"] = rng.random() < 0.4

    # Inputs: right-padded rows; some longer than max_distance.
    md = c["relative_attention_max_distance"]
    longest = min(80, max(6, int(md * rng.uniform(0.8, 2.5))))
    batch = rng.randint(1, 4)
    c["inputs"] = [[rng.randrange(v) for _ in range(rng.randint(1, longest))] for _ in range(batch)]
    longest_t = min(60, max(4, int(md * rng.uniform(0.5, 2.0))))
    targets = []
    for _ in range(batch):
        t = [rng.randrange(3, v) for _ in range(rng.randint(0, longest_t))]
        # Now and then the special pieces written literally.
        for _ in range(rng.choice([0, 0, 1, 2])):
            t.insert(rng.randint(0, len(t)), rng.choice([0, 1, 2]))
        targets.append(t)
    c["targets"] = targets
    c["generate"] = rng.randint(1, 8)
    return c


# ---------------------------------------------------------------------------
# Writing the model folder


def word(i):
    return chr(ord("a") + i // 26) + chr(ord("a") + i % 26)


def write_spiece(path, vocab):
    """A unigram model with <pad>, </s>, <unk> and then one piece "▁xy" per
    id, so that the text "xy" is exactly that id."""
    m = sentencepiece_model_pb2.ModelProto()
    for text, kind in (("<pad>", 3), ("</s>", 3), ("<unk>", 2)):
        p = m.pieces.add()
        p.piece, p.score, p.type = text, 0.0, kind
    for i in range(3, vocab):
        p = m.pieces.add()
        p.piece, p.score, p.type = "\u2581" + word(i), -1.0, 1
    m.trainer_spec.model_type = 1  # UNIGRAM
    m.trainer_spec.vocab_size = vocab
    m.trainer_spec.pad_id, m.trainer_spec.eos_id, m.trainer_spec.unk_id = 0, 1, 2
    m.trainer_spec.bos_id = -1
    with open(path, "wb") as f:
        f.write(m.SerializeToString())


def target_text(ids):
    special = {0: "<pad>", 1: "</s>", 2: "<unk>"}
    return " ".join(special.get(i, word(i)) for i in ids)


def build_config_json(c, folder):
    """config.json as transformers writes it, then changed as the case says."""
    cls_config, _ = FAMILIES[c["model_type"]]
    kwargs = dict(
        vocab_size=c["vocab_size"], d_model=c["d_model"], d_kv=c["d_kv"], d_ff=c["d_ff"],
        num_layers=c["num_layers"], num_decoder_layers=c["num_decoder_layers"],
        num_heads=c["num_heads"],
        relative_attention_num_buckets=c["relative_attention_num_buckets"],
        relative_attention_max_distance=c["relative_attention_max_distance"],
        layer_norm_epsilon=c["layer_norm_epsilon"], feed_forward_proj=c["feed_forward_proj"],
        pad_token_id=c["pad_token_id"], eos_token_id=c["eos_token_id"],
        tie_word_embeddings=c["tie_word_embeddings"], dropout_rate=0.0,
    )
    if c["decoder_start_token_id"] is not None:
        kwargs["decoder_start_token_id"] = c["decoder_start_token_id"]
    cls_config(**kwargs).save_pretrained(folder)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        j = json.load(f)
    if c["decoder_start_token_id"] is None:
        j.pop("decoder_start_token_id", None)
    if c["num_decoder_layers_json"] == "absent":
        j.pop("num_decoder_layers", None)
    elif c["num_decoder_layers_json"] == "null":
        j["num_decoder_layers"] = None
    # transformers 5 writes tie_word_embeddings true for the whole family and
    # keeps the choice in scale_decoder_outputs; older configs say it with
    # tie_word_embeddings alone.
    j["tie_word_embeddings"] = c["tie_word_embeddings"]
    if c["scale_json"] == "absent":
        j.pop("scale_decoder_outputs", None)
    elif c["scale_json"] in ("true", "false"):
        j["scale_decoder_outputs"] = c["scale_json"] == "true"
    gated_proj = c["feed_forward_proj"].startswith("gated-")
    if c["act_json"] == "absent":
        j.pop("dense_act_fn", None)
        j.pop("is_gated_act", None)
    elif c["act_json"] == "other_act":
        j["dense_act_fn"] = c["other_act"]
    elif c["act_json"] == "other_gating":
        j["is_gated_act"] = not gated_proj
    elif c["act_json"] == "feed_forward_absent":
        # Only the derived fields; feed_forward_proj takes its default.
        j.pop("feed_forward_proj", None)
    with open(path, "w") as f:
        json.dump(j, f, indent=1, sort_keys=True)
    return j


def reinit(model, c):
    g = torch.Generator().manual_seed(c["weight_seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif "relative_attention_bias" in name:
                p.copy_(c["bias_std"] * torch.randn(p.shape, generator=g))
            elif name in ("shared.weight", "lm_head.weight") or "embed_tokens" in name:
                p.copy_(c["embed_std"] * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                std = 1.0 / math.sqrt(p.shape[1])
                if name.endswith((".q.weight", ".k.weight")):
                    std *= c["qk_gain"]
                elif name.endswith((".o.weight", ".wo.weight")):
                    std *= c["out_gain"]
                p.copy_(std * torch.randn(p.shape, generator=g))
            else:
                raise RuntimeError(f"unexpected parameter {name}")


def write_weights(c, folder, config):
    _, cls = FAMILIES[c["model_type"]]
    torch.manual_seed(c["weight_seed"])
    model = cls(config)
    reinit(model, c)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    shared = sd.pop("shared.weight")
    for k in ("lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        sd.pop(k, None)
    for k in c["embed_names"]:
        sd[k] = shared.clone()
    g = torch.Generator().manual_seed(c["weight_seed"] + 1)
    if c["head"] == "separate":
        sd["lm_head.weight"] = c["embed_std"] * torch.randn(shared.shape, generator=g)
    elif c["head"] == "copy":
        sd["lm_head.weight"] = shared.clone()
    if c.get("boost_eos"):
        eos = c["eos_token_id"] if isinstance(c["eos_token_id"], list) else [c["eos_token_id"]]
        for t in [sd.get("lm_head.weight")] + [sd[k] for k in c["embed_names"]]:
            if t is not None:
                t[eos] *= 3.0
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


# ---------------------------------------------------------------------------
# What t5_dump should refuse


def effective_activation(j, model_type):
    """(activation, gated) the way transformers reads config.json."""
    default = "relu" if model_type == "t5" else "gated-gelu"
    proj = j.get("feed_forward_proj", default)
    parts = proj.split("-")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    gated = parts[0] == "gated"
    if "dense_act_fn" in j:
        act = j["dense_act_fn"]
    if "is_gated_act" in j:
        gated = j["is_gated_act"]
    return act, gated


def expected_refusal(c, j):
    """The config.json field(s) t5_dump may name when refusing the case,
    or None when it must run it."""
    nb = c["relative_attention_num_buckets"]
    if c["relative_attention_max_distance"] <= nb // 2:
        # The decoder's log buckets divide by log(max_distance / (nb // 2)).
        return ["relative_attention_max_distance"]
    act, _ = effective_activation(j, c["model_type"])
    if act not in SUPPORTED_ACTS:
        return ["feed_forward_proj", "dense_act_fn"]
    if c["model_type"] == "mt5" and j.get("scale_decoder_outputs") is True:
        return ["scale_decoder_outputs"]
    if j.get("tie_word_embeddings") is False and c["head"] == "absent":
        return ["tie_word_embeddings", "lm_head.weight"]
    return None


# ---------------------------------------------------------------------------
# Running both sides


def rel(a, b):
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), 1e-30)


def bucket_tie_distances(c, length, bidirectional):
    """Relative distances below `length` whose bucket in transformers'
    float32 formula depends on the last bit of log(): the distances where
    torch's vectorised logf and a correctly rounded log give different
    buckets. (libtorch 1.13's log rounds correctly where torch 2's is 1 ulp
    off, e.g. log(1.5); the bucket formula's ratio can be an integer in exact
    arithmetic, as log(12/8) / log(27/8) * 9 = 3.)"""
    nb, md = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
    n = nb // 2 if bidirectional else nb
    me = n // 2
    rp = torch.arange(me, max(me, length) + 1)
    x = rp.float() / me
    fast = (torch.log(x) / math.log(md / me) * (n - me)).long()
    exact = (torch.log(x.double()).float() / math.log(md / me) * (n - me)).long()
    cap = n - 1 - me
    differ = (fast.clamp(max=cap) != exact.clamp(max=cap)).nonzero().flatten()
    return [int(rp[i]) for i in differ]


class RoundedLog:
    """torch.log on float32 tensors replaced by log in float64 rounded to
    float32, within a `with` block."""

    def __enter__(self):
        self.log = torch.log

        def log(x, *args, **kwargs):
            if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and not args and not kwargs:
                return self.log(x.double()).float()
            return self.log(x, *args, **kwargs)

        torch.log = log
        return self

    def __exit__(self, *exc):
        torch.log = self.log


class Fp64Norm:
    """Within a `with` block, the T5-family RMS norms of transformers
    accumulate a float64 input in float64 (they always use float32, which
    caps a float64 comparison at float32 precision)."""

    CLASSES = [(t5_modeling, "T5LayerNorm"), (mt5_modeling, "MT5LayerNorm"),
               (umt5_modeling, "UMT5LayerNorm")]

    def __enter__(self):
        self.saved = [getattr(m, n).forward for m, n in self.CLASSES]

        def forward(norm, h):
            acc = torch.float64 if h.dtype == torch.float64 else torch.float32
            variance = h.to(acc).pow(2).mean(-1, keepdim=True)
            return norm.weight * (h * torch.rsqrt(variance + norm.variance_epsilon))

        for m, n in self.CLASSES:
            getattr(m, n).forward = forward
        return self

    def __exit__(self, *exc):
        for (m, n), f in zip(self.CLASSES, self.saved):
            getattr(m, n).forward = f


def reference(c, folder, labels, input_ids, mask, with_generate=True, dtype=torch.float32):
    _, cls = FAMILIES[c["model_type"]]
    model = cls.from_pretrained(folder, dtype=dtype)
    model.eval()
    captured = {}

    def hook(name):
        def f(_module, _args, output):
            captured[name] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        return f

    h1 = model.encoder.register_forward_hook(hook("enc"))
    h2 = model.decoder.register_forward_hook(hook("dec"))
    with torch.no_grad():
        # use_cache=False: transformers 5.24 sizes the decoder's cache by
        # num_layers and fails when num_decoder_layers is larger.
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels, use_cache=False)
    h1.remove()
    h2.remove()
    gen, gen_err = None, None
    if not with_generate:
        gen_err = "not run"
    try:
        if not with_generate:
            raise RuntimeError("not run")
        with torch.no_grad():
            gen = model.generate(input_ids=input_ids, attention_mask=mask,
                                 max_new_tokens=c["generate"], do_sample=False, num_beams=1,
                                 use_cache=False)
    except Exception as e:  # e.g. no decoder_start_token_id in the generation config
        if with_generate:
            gen_err = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return model, dict(encoder_hidden=captured["enc"], decoder_hidden=captured["dec"],
                       logits=out.logits, loss=out.loss, generated=gen, generate_error=gen_err)


def compare(dump, ref, model, input_ids, mask, labels, tol, tie_margin, d):
    """Fills `d` with the relative differences; returns (problems, note)."""
    problems, note = [], ""
    for key, want in (("input_ids", input_ids), ("attention_mask", mask), ("labels", labels)):
        if key not in dump or dump[key].shape != want.shape or not torch.equal(dump[key].long(), want):
            problems.append(f"{key} differs (harness or tokenizer)")
    real = mask.bool()
    lab = labels != IGNORE
    d["encoder_hidden"] = rel(dump["encoder_hidden"][real], ref["encoder_hidden"][real])
    d["decoder_hidden"] = rel(dump["decoder_hidden"][lab], ref["decoder_hidden"][lab])
    d["logits"] = rel(dump["logits"][lab], ref["logits"][lab])
    loss_ref = ref["loss"].item()
    d["loss"] = abs(dump["loss"].item() - loss_ref) / max(1.0, abs(loss_ref))
    for k, v in d.items():
        if not (v <= tol):
            problems.append(f"{k} {v:.2e}")
    g_dump = dump["generated"].long()
    g_ref = ref["generated"].long() if ref["generated"] is not None else None
    if g_ref is None:
        note = f"generate: transformers refuses ({ref['generate_error']})"
    elif g_dump.shape != g_ref.shape or not torch.equal(g_dump, g_ref):
        tie, step = near_tie(model, input_ids, mask, g_ref, g_dump, tie_margin)
        if tie:
            note = f"generation near tie at step {step}"
        else:
            problems.append(f"generated differs (dump {list(g_dump.shape)} "
                            f"{g_dump.tolist()} ref {list(g_ref.shape)} {g_ref.tolist()})")
    return problems, note


def near_tie(model, input_ids, mask, ref_gen, dump_gen, margin):
    """Whether the first difference between the generations is at a step
    where transformers' top two logits are within `margin`."""
    n = min(ref_gen.shape[1], dump_gen.shape[1])
    diff = (ref_gen[:, :n] != dump_gen[:, :n])
    if not diff.any():
        return False, None
    cols = diff.any(0).nonzero()
    step = int(cols[0])
    if step == 0:
        return False, step
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=ref_gen[:, :step],
                    use_cache=False)
    last = out.logits[:, -1, :]
    top = last.topk(2, -1).values
    rows = diff[:, step].nonzero().flatten()
    gap = (top[rows, 0] - top[rows, 1]).abs().max().item()
    return gap <= margin, step


# The float64 recheck: the dump holds float32 copies, so agreement is
# limited by their rounding (6e-8 relative).
TOL64 = 1e-6
TIE_MARGIN64 = 1e-6


def run_dump(binary, folder, c, dtype, out_path, extra=()):
    cmd = [binary, f"--model={folder}", f"--out={out_path}", f"--generate={c['generate']}",
           f"--dtype={dtype}", *extra]
    cmd += [f"--ids={','.join(map(str, r))}" for r in c["inputs"]]
    cmd += [f"--target={target_text(t)}" for t in c["targets"]]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def draw_adapter(rng):
    """A random PEFT prompt adapter for a case (drawn from its own RNG, so
    that --adapters leaves the model cases of a seed as they were)."""
    a = {"kind": rng.choice(["PROMPT_TUNING", "MULTITASK_PROMPT_TUNING"]),
         "num_virtual_tokens": rng.choice([1, 2, 3, 5, 8, 13]),
         "num_transformer_submodules": rng.choice([1, 2]),
         "scale": rng.choice([0.05, 0.5, 1.0, 3.0]),
         "weight_seed": rng.randrange(1 << 30)}
    if a["kind"] == "MULTITASK_PROMPT_TUNING":
        a["num_tasks"] = rng.randint(1, 4)
        a["num_ranks"] = rng.randint(1, 3)
        a["task_id"] = rng.randrange(a["num_tasks"])
    return a


def check_adapter(c, a, folder, binary, input_ids, mask, labels, tol):
    """PEFT builds the adapter `a` on the case's model with random values,
    saves it, and computes logits and loss with it; t5_dump --adapter must
    give the same. Returns (diffs, problems)."""
    from peft import (MultitaskPromptTuningConfig, PromptTuningConfig, TaskType,  # noqa: E402
                      get_peft_model)
    _, cls = FAMILIES[c["model_type"]]
    base = cls.from_pretrained(folder, dtype=torch.float32).eval()
    common = dict(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=a["num_virtual_tokens"],
                  num_transformer_submodules=a["num_transformer_submodules"])
    if a["kind"] == "PROMPT_TUNING":
        config = PromptTuningConfig(**common)
    else:
        config = MultitaskPromptTuningConfig(num_tasks=a["num_tasks"], num_ranks=a["num_ranks"],
                                             **common)
    model = get_peft_model(base, config).eval()
    gen = torch.Generator().manual_seed(a["weight_seed"])
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:  # the prompt (and the multitask factors)
                p.copy_(torch.randn(p.shape, generator=gen) * a["scale"])
    adapter = os.path.join(folder, "adapter")
    model.save_pretrained(adapter)
    kwargs = {}
    if a["kind"] != "PROMPT_TUNING":
        kwargs["task_ids"] = torch.full((input_ids.shape[0],), a["task_id"], dtype=torch.long)

    def peft_forward():
        with torch.no_grad():
            return model(input_ids=input_ids, attention_mask=mask, labels=labels, **kwargs)

    out = peft_forward()
    out_path = os.path.join(folder, "dump_adapter.safetensors")
    extra = [f"--adapter={adapter}", f"--task_id={a.get('task_id', 0)}"]
    proc = run_dump(binary, folder, dict(c, generate=0), "float32", out_path, extra)
    if proc.returncode != 0:
        return {}, [f"t5_dump --adapter failed ({proc.returncode}): "
                    f"{proc.stderr.strip()[-200:]}"]
    dump = load_file(out_path)
    if dump["logits"].shape != out.logits.shape:
        return {}, [f"adapter logits shape {list(dump['logits'].shape)} against PEFT's "
                    f"{list(out.logits.shape)}"]
    # With two submodules the decoder's first positions are the prompt's
    # (no labels there): compare the positions that carry labels.
    lab = dump["labels"].long() != IGNORE
    skip = dump["logits"].shape[1] - lab.shape[1]

    def differences(ref):
        return {"adapter_logits": rel(dump["logits"][:, skip:][lab], ref.logits[:, skip:][lab]),
                "adapter_loss": abs(dump["loss"].item() - ref.loss.item()) /
                max(1.0, abs(ref.loss.item()))}

    diffs = differences(out)
    problems = [f"{k} {v:.2e}" for k, v in diffs.items() if not v <= tol]
    # The prompt lengthens the encoder's input, which can reach a distance
    # whose bucket depends on the last bit of float32 log() (see
    # bucket_tie_distances): then PEFT again with a correctly rounded log.
    ties = sorted(set(bucket_tie_distances(c, dump["encoder_hidden"].shape[1], True)) |
                  set(bucket_tie_distances(c, dump["logits"].shape[1], False)))
    if problems and ties:
        with RoundedLog():
            rounded = differences(peft_forward())
        if all(v <= tol for v in rounded.values()):
            diffs = dict(rounded, adapter_bucket_tie=float(ties[0]))
            problems = []
    return diffs, problems


def run_case(c, binary, tol, tie_margin, keep_dir=None, fp64=True, adapter=None):
    """Returns a dict with the status (see the module docstring), the float32
    diffs and a note."""
    folder = tempfile.mkdtemp(prefix="t5num_")
    res = {"status": "ok", "diffs": {}, "note": ""}
    try:
        j = build_config_json(c, folder)
        act, gated = effective_activation(j, c["model_type"])
        res["ff"] = ("gated-" if gated else "") + act
        write_spiece(os.path.join(folder, "spiece.model"), c["vocab_size"])
        ref_err = None
        try:
            config = AutoConfig.from_pretrained(folder)
            write_weights(c, folder, config)
        except Exception as e:  # transformers refuses the config itself
            ref_err = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            # Still give t5_dump a checkpoint built the way config.json says.
            config = None

        # Inputs as t5_dump pads them.
        B = len(c["inputs"])
        S = max(len(r) for r in c["inputs"])
        input_ids = torch.full((B, S), c["pad_token_id"], dtype=torch.long)
        mask = torch.zeros((B, S), dtype=torch.long)
        for i, r in enumerate(c["inputs"]):
            input_ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        rows = [t + [1] for t in c["targets"]]
        L = max(len(r) for r in rows)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, :len(r)] = torch.tensor(r)

        out_path = os.path.join(folder, "dump.safetensors")
        proc = run_dump(binary, folder, c, "float32", out_path)
        err = proc.stderr.strip().splitlines()
        err_line = err[-1] if err else ""
        res["stderr"] = err_line[:300]
        if proc.returncode < 0 or proc.returncode not in (0, 1):
            res["status"] = "crash"
            sig = -proc.returncode if proc.returncode < 0 else None
            res["note"] = (f"signal {signal.Signals(sig).name}" if sig else f"exit {proc.returncode}") + \
                f": {err_line[:200]}"
            return res
        expect = expected_refusal(c, j)
        model = ref = None
        if ref_err is None:
            try:
                model, ref = reference(c, folder, labels, input_ids, mask)
            except Exception as e:
                ref_err = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        if proc.returncode == 1:
            named = [f for f in (expect or []) if f in err_line]
            if expect is None:
                res["status"] = "unexpected_refusal"
            elif not named:
                res["status"] = "bad_refusal"
            else:
                res["status"] = "refused"
            res["note"] = err_line[:300]
            if ref_err is not None:
                res["note"] += f" | transformers fails too: {ref_err}"
            return res
        if ref_err is not None:
            res["status"] = "ref_error_dump_ran"
            res["note"] = f"transformers: {ref_err}"
            return res
        dump = load_file(out_path)

        problems, note = compare(dump, ref, model, input_ids, mask, labels, tol, tie_margin,
                                 res["diffs"])
        res["note"] = note
        eos = c["eos_token_id"] if isinstance(c["eos_token_id"], list) else [c["eos_token_id"]]
        res["generated"] = int(torch.isin(dump["generated"][:, 1:].long(),
                                          torch.tensor(eos)).any(1).sum())
        if adapter is not None and not problems:
            res["adapter_diffs"], res["adapter_problems"] = check_adapter(
                c, adapter, folder, binary, input_ids, mask, labels, tol)
        # The same in float64 (t5_dump --dtype=float64; transformers in float64
        # with float64 norms): rounding amplified by a sensitive random model
        # shrinks there to the float32 rounding of the dump, a real difference
        # does not, however small it is in float32.
        if fp64 or problems:
            out64 = os.path.join(folder, "dump64.safetensors")
            proc64 = run_dump(binary, folder, c, "float64", out64)
            if proc64.returncode != 0:
                problems.append(f"float64 run failed: {proc64.stderr.strip()[-200:]}")
            else:
                dump64 = load_file(out64)
                with_gen = ref["generated"] is not None
                diffs64 = res["diffs64"] = {}
                with Fp64Norm():
                    model64, ref64 = reference(c, folder, labels, input_ids, mask, with_gen,
                                               torch.float64)
                    problems64, _ = compare(dump64, ref64, model64, input_ids, mask, labels,
                                            TOL64, TIE_MARGIN64, diffs64)
                fp64_text = " ".join(f"{k[:3]}={v:.1e}" for k, v in diffs64.items())
                if not problems64:
                    if problems:
                        res["status"] = "ok_fp64"
                        res["note"] = (f"float32 {'; '.join(problems)}, but float64 agrees "
                                       f"({fp64_text}): float32 rounding amplified")
                    return res
                # A bucket whose float32 rounding differs between torch builds?
                ties = sorted(set(bucket_tie_distances(c, input_ids.shape[1], True)) |
                              set(bucket_tie_distances(c, labels.shape[1] + c["generate"], False)))
                if ties:
                    diffs2 = {}
                    with Fp64Norm(), RoundedLog():
                        model2, ref2 = reference(c, folder, labels, input_ids, mask, with_gen,
                                                 torch.float64)
                        problems2, _ = compare(dump64, ref2, model2, input_ids, mask, labels,
                                               TOL64, TIE_MARGIN64, diffs2)
                    if not problems2:
                        res["status"] = "bucket_tie"
                        res["note"] = (f"{'; '.join(problems)}; float64 {fp64_text}; matches "
                                       f"when transformers' log is rounded correctly (bucket "
                                       f"ties at distances {ties}): "
                                       + " ".join(f"{k[:3]}={v:.1e}" for k, v in diffs2.items()))
                        return res
                problems.append(f"float64: {'; '.join(problems64)}")
        if problems:
            res["status"] = "mismatch"
            res["note"] = "; ".join(problems)
        elif expect is not None:
            res["note"] = (res["note"] + "; " if res["note"] else "") + \
                f"ran although {expect[0]} was expected to be refused"
        return res
    finally:
        if keep_dir and res["status"] not in ("ok", "ok_fp64"):
            dst = os.path.join(keep_dir, os.path.basename(folder))
            shutil.copytree(folder, dst)
            res["kept"] = dst
        shutil.rmtree(folder, ignore_errors=True)


def describe(c):
    act = c["feed_forward_proj"]
    extra = []
    if c["act_json"] != "as_saved":
        extra.append(f"act_json={c['act_json']}" + (f"({c['other_act']})" if c["act_json"] == "other_act" else ""))
    return (f"{c['model_type']:4s} {act:22s} d{c['d_model']} h{c['num_heads']}x{c['d_kv']} ff{c['d_ff']} "
            f"L{c['num_layers']}+{c['num_decoder_layers']} V{c['vocab_size']} "
            f"nb{c['relative_attention_num_buckets']}/md{c['relative_attention_max_distance']} "
            f"eps{c['layer_norm_epsilon']:g} tie={int(c['tie_word_embeddings'])}/{c['head']}/"
            f"scale:{c['scale_json']} pad{c['pad_token_id']} eos{c['eos_token_id']} "
            f"start{c['decoder_start_token_id']} S{max(map(len, c['inputs']))}"
            + (" " + " ".join(extra) if extra else ""))


FAILING = ("mismatch", "crash", "bad_refusal", "unexpected_refusal", "adapter_mismatch")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--binary", default="bazel-bin/worker/t5_dump")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--tie-margin", type=float, default=1e-4)
    ap.add_argument("--spec", help="run this one case (JSON as printed for a failure)")
    ap.add_argument("--keep", help="copy the folders of cases that are not ok here")
    ap.add_argument("--verbose", action="store_true", help="print each case's spec")
    ap.add_argument("--adapters", action="store_true",
                    help="also give every case that runs a random PEFT prompt adapter (plain or "
                         "multitask, 1 or 2 submodules) made and saved by PEFT, and compare "
                         "t5_dump --adapter's logits and loss with PEFT's (needs peft)")
    ap.add_argument("--no-fp64", action="store_true",
                    help="compare in float64 only when float32 is beyond --tol")
    args = ap.parse_args()
    torch.set_num_threads(1)
    binary = os.path.abspath(args.binary)
    if not os.path.exists(binary):
        sys.exit(f"{binary}: not found (bazel build //worker:t5_dump)")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)

    if args.spec:
        cases = [json.loads(args.spec)]
    else:
        rng = random.Random(args.seed)
        cases = [draw_case(rng) for _ in range(args.cases)]
    adapter_rng = random.Random(args.seed + 7919)
    adapters = [draw_adapter(adapter_rng) for _ in cases] if args.adapters else [None] * len(cases)
    adapter_worst = {}
    adapter_counts = {}
    adapter_ties = []

    counts = {}
    by_type = {}
    worst = {}
    worst64 = {}
    failures = []
    refusals = []
    ties = []
    finished_early = 0
    start = time.time()
    for i, c in enumerate(cases):
        t0 = time.time()
        res = run_case(c, binary, args.tol, args.tie_margin, args.keep, not args.no_fp64,
                       adapters[i])
        st = res["status"]
        if res.get("adapter_problems"):
            st = res["status"] = "adapter_mismatch"
            res["note"] = (res["note"] + "; " if res["note"] else "") + \
                "; ".join(res["adapter_problems"])
        if "adapter_diffs" in res and not res.get("adapter_problems"):
            a = adapters[i]
            kind = ("mpt" if a["kind"] != "PROMPT_TUNING" else "pt") + \
                f"/{a['num_transformer_submodules']}"
            adapter_counts[kind] = adapter_counts.get(kind, 0) + 1
            for k, v in res["adapter_diffs"].items():
                if k == "adapter_bucket_tie":
                    adapter_ties.append(i)
                elif v > adapter_worst.get(k, (-1,))[0]:
                    adapter_worst[k] = (v, i)
        counts[st] = counts.get(st, 0) + 1
        # By the feed-forward transformers builds (dense_act_fn and
        # is_gated_act may override feed_forward_proj).
        ff = res.get("ff", c["feed_forward_proj"])
        slot = by_type.setdefault(c["model_type"], {}).setdefault(ff, {})
        slot[st] = slot.get(st, 0) + 1
        if st in ("ok", "ok_fp64"):
            for k, v in res["diffs"].items():
                if v > worst.get(k, (-1,))[0]:
                    worst[k] = (v, i)
            for k, v in res.get("diffs64", {}).items():
                if v > worst64.get(k, (-1,))[0]:
                    worst64[k] = (v, i)
        if st in ("ok", "ok_fp64") and "generated" in res:
            finished_early += res["generated"]
        diffs = " ".join(f"{k[:3]}={v:.1e}" for k, v in res["diffs"].items())
        if res.get("adapter_diffs"):
            a = adapters[i]
            diffs += (f" | {a['kind'][:2].lower()}{a['num_virtual_tokens']}x"
                      f"{a['num_transformer_submodules']} "
                      + " ".join(f"{k[8:11]}={v:.1e}" for k, v in res["adapter_diffs"].items()
                                 if k != "adapter_bucket_tie")
                      + (" (bucket tie)" if "adapter_bucket_tie" in res["adapter_diffs"] else ""))
        if res.get("diffs64"):
            diffs += " | f64 max " + f"{max(res['diffs64'].values()):.1e}"
        print(f"[{args.seed}:{i:3d}] {st:18s} {describe(c)} {diffs} {res['note']} "
              f"({time.time() - t0:.1f}s)", flush=True)
        if args.verbose or st in FAILING:
            print("    spec: " + json.dumps(c, separators=(",", ":")), flush=True)
            if adapters[i] is not None:
                print("    adapter: " + json.dumps(adapters[i], separators=(",", ":")), flush=True)
        if st in FAILING:
            failures.append((i, res))
        if st == "refused":
            refusals.append((i, res["note"]))
        if st == "bucket_tie":
            ties.append(i)

    print(f"\nseed {args.seed}: {len(cases)} cases in {time.time() - start:.0f}s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for mt in sorted(by_type):
        parts = []
        for proj in sorted(by_type[mt]):
            n = sum(by_type[mt][proj].values())
            bad = {k: v for k, v in by_type[mt][proj].items() if k != "ok"}
            parts.append(f"{proj} {n}" + (f" {bad}" if bad else ""))
        print(f"  {mt}: " + "; ".join(parts))
    print("  max relative diff (float32) over the ok and ok_fp64 cases: "
          + ", ".join(f"{k} {v:.2e} (case {i})" for k, (v, i) in worst.items()))
    if worst64:
        print("  max relative diff (float64) over the same: "
              + ", ".join(f"{k} {v:.2e} (case {i})" for k, (v, i) in worst64.items()))
    print(f"  generated rows that stopped at an EOS before --generate: {finished_early}")
    if args.adapters:
        print(f"  PEFT adapters compared (kind/submodules): {adapter_counts}; max relative diff: "
              + ", ".join(f"{k} {v:.2e} (case {i})" for k, (v, i) in adapter_worst.items())
              + (f"; after a bucket tie in the prompted lengths (PEFT rerun with a correctly "
                 f"rounded log): cases {adapter_ties}" if adapter_ties else ""))
    if ties:
        print(f"  bucket ties (float32 log rounding, see bucket_tie_distances): cases {ties}")
    if refusals:
        print(f"  refusals ({len(refusals)}):")
        by_field = {}
        for i, note in refusals:
            m = re.search(r"field '([^']+)'|missing tensor \"([^\"]+)\"", note)
            field = (m.group(1) or m.group(2)) if m else "?"
            by_field.setdefault(field, []).append(i)
        for field, ids in sorted(by_field.items()):
            first = next(n for i, n in refusals if i == ids[0])
            print(f"    {field}: {len(ids)} (cases {ids}); e.g. {first[:220]}")
    if failures:
        print(f"  FAILURES ({len(failures)}): cases " + ", ".join(str(i) for i, _ in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
