#!/usr/bin/env python3
"""Builds small mT5 and UMT5 checkpoints and what transformers and PEFT compute with them.

The reference is transformers' MT5ForConditionalGeneration. Running

    python3 tools/make_golden_mt5.py --out tests/testdata

writes, reproducibly (given the same library versions):

  mt5/             an mT5 checkpoint written the way the published ones are:
                   model_type "mt5", gated GELU, tie_word_embeddings false and
                   its own lm_head.weight; small sizes, the 400-id vocabulary
                   of t5_relu/spiece.model.
  mt5_tied/        an mT5 checkpoint without lm_head.weight and without
                   feed_forward_proj, dense_act_fn, is_gated_act and tie_word_embeddings
                   (MT5Config's defaults: gated GELU, head tied to the
                   embedding, no output scaling).
  umt5/            a UMT5 checkpoint as published (untied, tie_word_embeddings
                   false): a relative attention bias in every layer
                   (UMT5ForConditionalGeneration is the reference for it).
  golden_mt5*.safetensors/.json, golden_umt5.safetensors/.json
                   the same quantities as golden_t5_*.safetensors
                   (tools/make_golden.py): states, logits, loss, greedy
                   tokens, rank scores, PEFT prompt layouts.
  mt5/adapter_peft/ a MULTITASK_PROMPT_TUNING adapter saved by PEFT on the
                   mt5 base (one task, all-ones factors, the golden prompt),
                   so that it computes golden_mt5's mt2_ quantities.
  golden_mt5_large_vocab.json
                   a checkpoint with mT5's real vocabulary size (250112) and
                   tiny layers, whose weights follow a formula (below) so that
                   the C++ test rebuilds it instead of the repository storing
                   16 MB; loss, log-normaliser, some logit columns, argmax
                   and greedy tokens computed by transformers.

Large-vocabulary weights: tensor number k (0-based, in the order listed in
the JSON) with n elements holds, for i in [0, n), offset + scale * u with
u = h / 2^31 - 1 computed in float64 and rounded to float32, where h is a
32-bit hash of i and k (all arithmetic modulo 2^32):
    h = (i * 2654435761 + (k + 1) * 40503); h ^= h >> 15; h *= 2246822519;
    h ^= h >> 13; h *= 3266489917; h ^= h >> 16

Requirements: python3 with torch, transformers, peft, safetensors,
sentencepiece; tools/make_golden.py next to this file.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from peft import MultitaskPromptTuningConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    MT5Config,
    MT5ForConditionalGeneration,
    UMT5Config,
    UMT5ForConditionalGeneration,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402

VOCAB = mg.VOCAB
NUM_VIRTUAL = mg.NUM_VIRTUAL

MT5_SPECS = {
    # As the published mT5 configs: untied head, tie_word_embeddings false.
    "mt5": dict(
        d_model=40,
        d_kv=16,
        num_heads=3,
        d_ff=72,
        num_layers=3,
        num_decoder_layers=2,
        relative_attention_num_buckets=12,
        relative_attention_max_distance=18,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
    ),
    # Defaults only: tied head, no lm_head.weight in the file.
    "mt5_tied": dict(
        d_model=32,
        d_kv=12,
        num_heads=2,
        d_ff=56,
        num_layers=2,
        num_decoder_layers=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=14,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
    ),
    # UMT5 as published (untied, tie_word_embeddings false): a relative
    # attention bias in every layer.
    "umt5": dict(
        d_model=36,
        d_kv=12,
        num_heads=3,
        d_ff=64,
        num_layers=3,
        num_decoder_layers=3,
        relative_attention_num_buckets=10,
        relative_attention_max_distance=16,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
    ),
}
SEEDS = {"mt5": 71, "mt5_tied": 72, "umt5": 74}
EOS_BOOST = {"mt5": 2.5, "mt5_tied": 1.6, "umt5": 2.0}
UNTIED = {"mt5": True, "mt5_tied": False, "umt5": True}
CLASSES = {
    "mt5": (MT5Config, MT5ForConditionalGeneration),
    "mt5_tied": (MT5Config, MT5ForConditionalGeneration),
    "umt5": (UMT5Config, UMT5ForConditionalGeneration),
}

LARGE_VOCAB = 250112
LARGE_SPEC = dict(
    d_model=8,
    d_kv=4,
    num_heads=2,
    d_ff=12,
    num_layers=1,
    num_decoder_layers=1,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu",
)
# Ids spread over the whole vocabulary (mT5's rows past T5's 32128 included).
LARGE_INPUTS = [[250000, 17, 123456, 99999, 1], [5, 250111, 1, 0, 0]]
LARGE_LABELS = [[240001, 31, 1], [77777, 1, -100]]
LARGE_COLUMNS = list(range(0, 24)) + list(range(LARGE_VOCAB - 24, LARGE_VOCAB)) + [32128, 125000, 200003]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def write_config(folder, drop=(), set_=None):
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for k in drop:
        cfg.pop(k, None)
    cfg.update(set_ or {})
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return cfg


def build_checkpoint(name, out_dir, spm_dir):
    spec = MT5_SPECS[name]
    config_class, model_class = CLASSES[name]
    cfg = config_class(vocab_size=VOCAB, dropout_rate=0.1, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, **spec)
    model = model_class(cfg)
    if UNTIED[name]:
        # transformers 5 ties lm_head to shared at construction; give the head
        # its own storage (it stays untied when reloaded because the saved
        # values differ).
        model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, cfg.d_model))
    mg.fill_weights(model, cfg, SEEDS[name], EOS_BOOST[name])
    folder = os.path.join(out_dir, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    if UNTIED[name]:
        written = write_config(folder, drop=("scale_decoder_outputs",), set_={"tie_word_embeddings": False})
    else:
        written = write_config(folder, drop=("tie_word_embeddings", "feed_forward_proj", "dense_act_fn", "is_gated_act"))
    assert written["model_type"] == config_class.model_type, written
    assert "scale_decoder_outputs" not in written, written
    keys = set(load_file(os.path.join(folder, "model.safetensors")).keys())
    assert ("lm_head.weight" in keys) == UNTIED[name], sorted(keys)

    # mT5 uses T5's tokenizer: the t5_relu files describe the same
    # spiece.model (tools/make_golden.py wrote them with T5Tokenizer).
    for f in ("spiece.model", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(spm_dir, f), os.path.join(folder, f))
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == VOCAB, (type(tok), len(tok))
    if name != "umt5":  # AutoTokenizer gives UMT5 the generic backend class
        assert type(tok).__name__ == "T5Tokenizer", type(tok)
    ref = AutoTokenizer.from_pretrained(spm_dir)
    texts = mg.INPUTS + mg.TARGETS + ["<extra_id_0> x </s>"]
    assert tok(texts)["input_ids"] == ref(texts)["input_ids"], name

    reloaded = model_class.from_pretrained(folder).eval()
    tied = reloaded.lm_head.weight.data_ptr() == reloaded.shared.weight.data_ptr()
    assert tied == (not UNTIED[name]), name
    assert not getattr(reloaded.config, "scale_decoder_outputs", False)  # untied or mT5
    if name == "umt5":
        biases = [n for n, _ in reloaded.named_parameters() if "relative_attention_bias" in n]
        assert len(biases) == spec["num_layers"] + spec["num_decoder_layers"], biases
    assert reloaded.config.is_gated_act and reloaded.config.dense_act_fn == "gelu_new"
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    return reloaded


def peft_adapter(model, golden, out_dir):
    """A PEFT MULTITASK_PROMPT_TUNING adapter on the mt5 base that holds the
    golden prompt with all-ones factors: it must give golden mt2_ logits."""
    cfg = MultitaskPromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=NUM_VIRTUAL,
                                      num_transformer_submodules=2, num_tasks=1, num_ranks=1)
    pm = get_peft_model(model, cfg).eval()
    enc = pm.prompt_encoder["default"]
    with torch.no_grad():
        enc.embedding.weight.copy_(golden["prompt"])
        enc.prefix_task_cols.fill_(1.0)
        enc.prefix_task_rows.fill_(1.0)
    pm.peft_config["default"].base_model_name_or_path = "mt5"
    folder = os.path.join(out_dir, "mt5", "adapter_peft")
    pm.save_pretrained(folder)
    card = os.path.join(folder, "README.md")
    if os.path.exists(card):
        os.remove(card)
    base = MT5ForConditionalGeneration.from_pretrained(os.path.join(out_dir, "mt5")).eval()
    loaded = PeftModel.from_pretrained(base, folder).eval()
    B = golden["input_ids"].shape[0]
    with torch.no_grad():
        out = loaded(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"],
                     labels=golden["labels"], task_ids=torch.zeros(B, dtype=torch.long))
    torch.testing.assert_close(out.logits, golden["mt2_logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss.reshape(()), golden["mt2_loss"], rtol=0, atol=1e-6)
    with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
        adapter_cfg = json.load(f)
    log(f"mt5 adapter: {adapter_cfg['peft_type']} base={adapter_cfg['base_model_name_or_path']}")


def formula_tensor(shape, k, offset, scale):
    """offset + scale * u, u in [-1, 1) from an integer hash of (k, i); exact
    integer steps, so the C++ test rebuilds the same float32 values."""
    n = math.prod(shape)
    mask = (1 << 32) - 1
    x = (torch.arange(n, dtype=torch.int64) * 2654435761 + (k + 1) * 40503) & mask
    x = x ^ (x >> 15)
    x = (x * 2246822519) & mask
    x = x ^ (x >> 13)
    x = (x * 3266489917) & mask
    x = x ^ (x >> 16)
    u = x.to(torch.float64) / 2.0**31 - 1.0
    return (offset + scale * u).to(torch.float32).reshape(shape)


def large_vocab_golden(out_dir):
    cfg = MT5Config(vocab_size=LARGE_VOCAB, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0, **LARGE_SPEC)
    model = MT5ForConditionalGeneration(cfg)
    model.lm_head.weight = torch.nn.Parameter(torch.empty(LARGE_VOCAB, cfg.d_model))
    d, dff, inner = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
    listing = []
    state = {}
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(model.named_parameters(), key=lambda kv: kv[0])):
            leaf = name.split(".")[-2]
            if name == "shared.weight":
                offset, scale = 0.0, 1.0
            elif name == "lm_head.weight":
                offset, scale = 0.0, 1.5
            elif "layer_norm" in name:
                offset, scale = 1.0, 0.3
            elif leaf == "relative_attention_bias":
                offset, scale = 0.0, 0.7
            elif leaf in ("q", "k", "v", "wi_0", "wi_1"):
                offset, scale = 0.0, 1.4 * d**-0.5
            elif leaf == "o":
                offset, scale = 0.0, 3.0 * inner**-0.5
            elif leaf == "wo":
                offset, scale = 0.0, 3.0 * dff**-0.5
            else:
                raise ValueError(name)
            v = formula_tensor(tuple(p.shape), k, offset, scale)
            p.copy_(v)
            state[name] = v
            listing.append({"name": name, "shape": list(p.shape), "offset": offset, "scale": scale})
    with tempfile.TemporaryDirectory() as work:
        model.save_pretrained(work)
        write_config(work, set_={"tie_word_embeddings": False})
        model = MT5ForConditionalGeneration.from_pretrained(work).eval()
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
        for name, v in state.items():
            assert torch.equal(model.get_parameter(name), v), name
    input_ids = torch.tensor(LARGE_INPUTS)
    attention_mask = (torch.arange(input_ids.shape[1])[None] < torch.tensor([[5], [3]])).long()
    labels = torch.tensor(LARGE_LABELS)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        gen = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=5,
                             do_sample=False, num_beams=1, output_scores=True,
                             return_dict_in_generate=True)
    margin = math.inf
    for step in gen.scores:
        top = torch.topk(step, 2, dim=-1).values
        margin = min(margin, float((top[:, 0] - top[:, 1]).min()))
    if margin <= 1e-3:
        for step in gen.scores:
            top = torch.topk(step, 3, dim=-1)
            log(top)
        log(gen.sequences)
    assert margin > 1e-3, margin
    logits = out.logits
    doc = {
        "model_type": "mt5",
        "config": dict(vocab_size=LARGE_VOCAB, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                       tie_word_embeddings=False, **LARGE_SPEC),
        "formula": "see tools/make_golden_mt5.py formula_tensor",
        "tensors": listing,
        "input_ids": LARGE_INPUTS,
        "attention_mask": attention_mask.tolist(),
        "labels": LARGE_LABELS,
        "loss": float(out.loss),
        "logsumexp": torch.logsumexp(logits, dim=-1).tolist(),
        "argmax": logits.argmax(-1).tolist(),
        "columns": LARGE_COLUMNS,
        "column_logits": logits[:, :, LARGE_COLUMNS].tolist(),
        "generate": "max_new_tokens=5, do_sample=False, num_beams=1",
        "gen_output": gen.sequences.tolist(),
        "gen_min_top2_margin": margin,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    with open(os.path.join(out_dir, "golden_mt5_large_vocab.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    log(f"large vocab: loss {doc['loss']:.6f}, greedy {doc['gen_output']}, margin {margin:.4g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(mg.TOOLS_DIR), "tests", "testdata"))
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    # The vocabulary of the T5 goldens (tools/make_golden.py wrote it).
    spm_dir = os.path.join(out_dir, "t5_relu")
    mg.SEEDS.update(SEEDS)  # golden_for_checkpoint seeds the prompt from these
    for name in MT5_SPECS:
        model = build_checkpoint(name, out_dir, spm_dir)
        model, golden = mg.golden_for_checkpoint(name, model, out_dir)
        if name == "mt5":
            peft_adapter(model, golden, out_dir)
    large_vocab_golden(out_dir)
    log("done")


if __name__ == "__main__":
    main()
