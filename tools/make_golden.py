#!/usr/bin/env python3
"""Builds the small T5 checkpoints and golden files the C++ tests compare against.

Hugging Face transformers and PEFT are the reference. Everything is seeded, so
running

    python3 tools/make_golden.py --out tests/testdata

again reproduces the same files (given the same library versions). The script
is not part of the build or of CI; see tools/README.md for what it writes and
for the facts about PEFT's prompt handling that the fixtures pin down.

Requirements: python3 with torch, transformers, peft, safetensors and
sentencepiece; `spm_train` on PATH.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask the Hub

import torch
import sentencepiece
from safetensors.torch import load_file, save_file

import peft
import transformers
from peft import (
    MultitaskPromptTuningConfig,
    PeftModel,
    PromptTuningConfig,
    get_peft_model,
)
from peft.tuners.multitask_prompt_tuning.model import MultitaskPromptEmbedding
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration, T5Tokenizer

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(TOOLS_DIR, "spm_corpus.txt")

SPM_VOCAB = 300
EXTRA_IDS = 100
VOCAB = SPM_VOCAB + EXTRA_IDS
NUM_VIRTUAL = 5  # prompt length used in golden_t5_*.safetensors
MPT_VIRTUAL = 4  # prompt length used in mpt/
MPT_TASKS = 3

# Golden batch: unequal input and target lengths so that padding and label
# masking both matter.
INPUTS = [
    "Review: The movie was good.",
    "What is 12 times 12?",
    "Is the café in Zürich cheap?",
]
TARGETS = [
    "positive",
    "Answer: 144",
    "très bon",
]
CANDIDATES = [
    ["positive", "negative", "neutral"],
    ["144", "124", "Answer: 144"],
    ["cheap", "très bon", "no"],
]
TASK_IDS = [0, 2, 1]
INIT_TEXT = "Classify the sentiment of this review"

MODEL_SPECS = {
    # Original T5: ReLU feed-forward, tied embeddings (decoder output scaled by
    # d_model**-0.5 before the LM head).
    "t5_relu": dict(
        d_model=64,
        d_kv=24,
        num_heads=4,
        d_ff=96,
        num_layers=3,
        num_decoder_layers=2,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    ),
    # T5 v1.1 / FLAN-T5: gated GELU, separate LM head, no output scaling.
    "t5_gated": dict(
        d_model=48,
        d_kv=20,
        num_heads=3,
        d_ff=80,
        num_layers=2,
        num_decoder_layers=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=12,
        layer_norm_epsilon=1e-5,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
}
SEEDS = {"t5_relu": 16, "t5_gated": 3}
# The EOS row of the LM head is scaled up so that greedy decoding ends early
# for some examples (eos/pad handling is then covered by gen_output). For the
# tied model this also scales the EOS input embedding.
EOS_BOOST = {"t5_relu": 1.6, "t5_gated": 2.5}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def save_st(tensors, path, metadata=None):
    """safetensors.torch.save_file, then the header's __metadata__ keys sorted.

    The library writes metadata in hash-map order, which changes from run to
    run; sorting makes re-running the script produce identical bytes.
    """
    save_file(tensors, path, metadata=metadata)
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n :])
    check = load_file(path)
    assert set(check) == set(tensors) and all(torch.equal(check[k], tensors[k].cpu()) for k in tensors), path


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def normalization_rules():
    """A small NFKC-like rule set (source code points -> target code points).

    The stock nmt_nfkc rules compile to a ~240 KB table, which would be stored
    several times in the fixtures; this subset keeps the same mechanism (a
    precompiled character map inside spiece.model) at a few KB.
    """
    rows = []
    for c in range(0xFF01, 0xFF5F):  # full-width ASCII
        rows.append(([c], [c - 0xFF01 + 0x21]))
    for c in (0x0009, 0x000A, 0x000D, 0x00A0, 0x2002, 0x2003, 0x2009, 0x3000):
        rows.append(([c], [0x20]))  # tabs, newlines and odd spaces -> space
    rows += [
        ([0xFB01], [0x66, 0x69]),  # fi ligature
        ([0xFB02], [0x66, 0x6C]),  # fl ligature
        ([0x2026], [0x2E, 0x2E, 0x2E]),  # ellipsis
        ([0x65, 0x301], [0xE9]),  # e + combining acute
        ([0x75, 0x308], [0xFC]),  # u + combining diaeresis
        ([0x69, 0x308], [0xEF]),  # i + combining diaeresis
        ([0x61, 0x300], [0xE0]),  # a + combining grave
        ([0x200B], []),  # zero width space is dropped
    ]
    for i in range(9):  # circled digits 1-9
        rows.append(([0x2460 + i], [0x31 + i]))
    return "".join(
        " ".join(f"{c:X}" for c in src) + "\t" + " ".join(f"{c:X}" for c in dst) + "\n" for src, dst in rows
    )


def train_spm(work):
    """Trains the unigram model with T5's special ids; returns spiece.model path."""
    shutil.copyfile(CORPUS, os.path.join(work, "spm_corpus.txt"))
    with open(os.path.join(work, "rules.tsv"), "w", encoding="utf-8") as f:
        f.write(normalization_rules())
    cmd = [
        "spm_train",
        "--input=spm_corpus.txt",
        "--model_prefix=spiece",
        f"--vocab_size={SPM_VOCAB}",
        "--model_type=unigram",
        "--pad_id=0",
        "--eos_id=1",
        "--unk_id=2",
        "--bos_id=-1",
        "--character_coverage=1.0",
        "--normalization_rule_tsv=rules.tsv",
        "--random_seed=17",
        "--num_threads=1",
        "--minloglevel=2",
    ]
    # Relative paths keep the trainer spec stored in the model free of
    # machine-specific directories.
    subprocess.run(cmd, cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(work, "spiece.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    assert sp.get_piece_size() == SPM_VOCAB, sp.get_piece_size()
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    return path


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


def fill_weights(model, cfg, seed, eos_boost):
    """Sets every parameter from a private generator, independent of HF's init.

    Scales follow T5's initialisation, made livelier: RMS-norm gains spread
    around 1, a relative attention bias with std 0.5, and attention/FFN output
    projections three times larger against a small (std 0.3) token embedding,
    so that the layers rather than the input token dominate the residual
    stream (with tied embeddings greedy decoding otherwise just repeats the
    previous token). A wrong bucket, a skipped norm or a missing scale then
    changes the outputs visibly.
    """
    g = torch.Generator().manual_seed(seed)
    d, dkv, h, dff = cfg.d_model, cfg.d_kv, cfg.num_heads, cfg.d_ff
    inner = h * dkv

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            leaf = name.split(".")[-2]
            if name == "shared.weight":
                v = normal(p.shape, 1.0) * 0.3
            elif name == "lm_head.weight":
                v = normal(p.shape, 1.0)
            elif "layer_norm" in name:
                v = 1.0 + normal(p.shape, 0.25)
            elif leaf == "relative_attention_bias":
                v = normal(p.shape, 0.5)
            elif leaf == "q":
                v = normal(p.shape, 0.5 * d**-0.5)
            elif leaf in ("k", "v"):
                v = normal(p.shape, d**-0.5)
            elif leaf == "o":
                v = normal(p.shape, inner**-0.5) * 3.0
            elif leaf in ("wi", "wi_0", "wi_1"):
                v = normal(p.shape, d**-0.5)
            elif leaf == "wo":
                v = normal(p.shape, dff**-0.5) * 3.0
            else:
                raise ValueError(f"unexpected parameter {name}")
            p.copy_(v)
        model.lm_head.weight[1].mul_(eos_boost)


def build_checkpoint(name, out_dir, spm_path):
    spec = MODEL_SPECS[name]
    cfg = T5Config(
        vocab_size=VOCAB,
        dropout_rate=0.1,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **spec,
    )
    model = T5ForConditionalGeneration(cfg)
    if not spec["tie_word_embeddings"]:
        # transformers 5 always ties lm_head to shared at construction time
        # (tie_word_embeddings=False only switches off the output scaling), so
        # give the head its own storage before filling it.
        model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, cfg.d_model))
    fill_weights(model, cfg, SEEDS[name], EOS_BOOST[name])
    folder = os.path.join(out_dir, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    if spec["tie_word_embeddings"]:
        model.save_pretrained(folder)
    else:
        model.save_pretrained(folder, max_shard_size="300KB")
    # transformers 5 writes tie_word_embeddings=true plus its own
    # scale_decoder_outputs key; published T5 v1.1 / FLAN configs say
    # tie_word_embeddings=false, so write the file the way users have it.
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg_json = json.load(f)
    cfg_json["tie_word_embeddings"] = spec["tie_word_embeddings"]
    cfg_json.pop("scale_decoder_outputs", None)
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)
        f.write("\n")

    shutil.copyfile(spm_path, os.path.join(folder, "spiece.model"))
    tok = T5Tokenizer.from_pretrained(folder)
    assert len(tok) == VOCAB, len(tok)
    tok.save_pretrained(folder)

    # Everything below uses the model as read back from disk.
    reloaded = T5ForConditionalGeneration.from_pretrained(folder).eval()
    assert reloaded.config.scale_decoder_outputs == spec["tie_word_embeddings"]
    assert (reloaded.lm_head.weight.data_ptr() == reloaded.shared.weight.data_ptr()) == spec["tie_word_embeddings"]
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    return reloaded


# ---------------------------------------------------------------------------
# Goldens for one checkpoint
# ---------------------------------------------------------------------------


def batch(tok):
    enc = tok(INPUTS, padding="longest", return_tensors="pt")
    lab = tok(TARGETS, padding="longest", return_tensors="pt")
    labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
    return enc["input_ids"], enc["attention_mask"], labels


def outputs_dict(prefix, out):
    dec = out.decoder_hidden_states[-1]
    return {
        f"{prefix}encoder_hidden": out.encoder_last_hidden_state,
        f"{prefix}decoder_hidden": dec,
        f"{prefix}logits": out.logits,
        f"{prefix}loss": out.loss.reshape(()),
    }


def check_head(model, out):
    """The logits must follow from the final decoder hidden state."""
    h = out.decoder_hidden_states[-1]
    # MT5Config has no such field: mT5 never scales.
    if getattr(model.config, "scale_decoder_outputs", False):
        h = h * model.config.d_model**-0.5
    torch.testing.assert_close(h @ model.lm_head.weight.T, out.logits, rtol=1e-5, atol=1e-5)


def greedy_margin(model_or_peft, gen_kwargs):
    """Greedy generate; also returns the smallest gap between the best and the
    second-best logit over all steps, so that a near tie would be noticed."""
    out = model_or_peft.generate(**gen_kwargs, output_scores=True, return_dict_in_generate=True)
    margin = math.inf
    for step in out.scores:
        top = torch.topk(step, 2, dim=-1).values
        margin = min(margin, float((top[:, 0] - top[:, 1]).min()))
    return out.sequences, margin


def golden_for_checkpoint(name, model, out_dir):
    folder = os.path.join(out_dir, name)
    tok = AutoTokenizer.from_pretrained(folder)
    input_ids, attention_mask, labels = batch(tok)
    B = input_ids.shape[0]
    d = model.config.d_model
    t = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels),
    }
    assert input_ids.shape[1] != labels.shape[1]
    assert (labels == -100).any() and (attention_mask == 0).any()

    with torch.no_grad():
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True
        )
    check_head(model, out)
    torch.testing.assert_close(out.decoder_hidden_states[-1], model.decoder(
        input_ids=t["decoder_input_ids"],
        encoder_hidden_states=out.encoder_last_hidden_state,
        encoder_attention_mask=attention_mask,
    ).last_hidden_state)
    t.update(outputs_dict("", out))

    # Rank classification: sum of token log-probs (EOS included) per candidate.
    flat = [c for cands in CANDIDATES for c in cands]
    cand = tok(flat, padding="longest", return_tensors="pt")
    cand_ids = cand["input_ids"].masked_fill(cand["attention_mask"] == 0, -100)
    rep_ids = input_ids.repeat_interleave(3, dim=0)
    rep_mask = attention_mask.repeat_interleave(3, dim=0)
    with torch.no_grad():
        logits = model(input_ids=rep_ids, attention_mask=rep_mask, labels=cand_ids).logits
    logp = torch.log_softmax(logits, dim=-1)
    keep = cand_ids != -100
    tok_lp = torch.gather(logp, 2, cand_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    scores = (tok_lp * keep).sum(dim=1).reshape(B, 3)
    t["cand_ids"] = cand_ids
    t["cand_scores"] = scores

    gen_kwargs = dict(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False, num_beams=1
    )
    gen_note = "max_new_tokens=8, do_sample=False, num_beams=1"
    if model.config.num_decoder_layers > model.config.num_layers:
        # transformers sizes the generation KV cache by config.num_layers (the
        # encoder depth); with a deeper decoder the cached path raises
        # IndexError, so decode without the cache (same greedy result).
        gen_kwargs["use_cache"] = False
        gen_note += ", use_cache=False"
    with torch.no_grad():
        gen, margin0 = greedy_margin(model, gen_kwargs)
    t["gen_output"] = gen

    # Prompt tensor: rows [0, nv) are the encoder prompt, [nv, 2nv) the
    # decoder prompt (used only where PEFT uses it, see README).
    g = torch.Generator().manual_seed(SEEDS[name] + 1)
    prompt = torch.randn(2 * NUM_VIRTUAL, d, generator=g) * 0.5
    t["prompt"] = prompt

    # PROMPT_TUNING with one submodule.
    cfg1 = PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=NUM_VIRTUAL, num_transformer_submodules=1)
    p1 = get_peft_model(model, cfg1).eval()
    with torch.no_grad():
        p1.prompt_encoder["default"].embedding.weight.copy_(prompt[:NUM_VIRTUAL])
        out1 = p1(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True)
        gen1, margin1 = greedy_margin(p1, gen_kwargs)
    check_head(model, out1)
    t.update(outputs_dict("p1_", out1))
    t["p1_gen_output"] = gen1
    model = p1.get_base_model()

    # PROMPT_TUNING with two submodules (PEFT's default for seq2seq).
    cfg2 = PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=NUM_VIRTUAL, num_transformer_submodules=2)
    p2 = get_peft_model(model, cfg2).eval()
    with torch.no_grad():
        p2.prompt_encoder["default"].embedding.weight.copy_(prompt)
        out2 = p2(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True)
    check_head(model, out2)
    # PEFT's PROMPT_TUNING forward only ever uses the first nv prompt rows.
    assert torch.equal(out2.logits, out1.logits) and torch.equal(out2.loss, out1.loss)
    t.update(outputs_dict("p2_", out2))
    model = p2.get_base_model()

    # MULTITASK_PROMPT_TUNING with two submodules, one task and all-ones
    # factors, so the task prompt equals `prompt` exactly: this is the PEFT
    # code path that does put a prompt in front of the decoder.
    cfg3 = MultitaskPromptTuningConfig(
        task_type="SEQ_2_SEQ_LM",
        num_virtual_tokens=NUM_VIRTUAL,
        num_transformer_submodules=2,
        num_tasks=1,
        num_ranks=1,
    )
    p3 = get_peft_model(model, cfg3).eval()
    enc3 = p3.prompt_encoder["default"]
    with torch.no_grad():
        enc3.embedding.weight.copy_(prompt)
        enc3.prefix_task_cols.fill_(1.0)
        enc3.prefix_task_rows.fill_(1.0)
        out3 = p3(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            output_hidden_states=True,
            task_ids=torch.zeros(B, dtype=torch.long),
        )
    check_head(model, out3)
    t.update(outputs_dict("mt2_", out3))

    # The same results spelled out without PEFT (this is what README states).
    nv = NUM_VIRTUAL
    emb = model.shared
    ones = torch.ones(B, nv, dtype=attention_mask.dtype)
    enc_embeds = torch.cat([prompt[:nv].expand(B, -1, -1), emb(input_ids)], dim=1)
    enc_mask = torch.cat([ones, attention_mask], dim=1)
    with torch.no_grad():
        ref1 = model(inputs_embeds=enc_embeds, attention_mask=enc_mask, labels=labels)
        dec_embeds = torch.cat([prompt[nv:].expand(B, -1, -1), emb(t["decoder_input_ids"])], dim=1)
        ref3 = model(
            inputs_embeds=enc_embeds,
            attention_mask=enc_mask,
            decoder_inputs_embeds=dec_embeds,
            labels=torch.cat([torch.full((B, nv), -100), labels], dim=1),
        )
    torch.testing.assert_close(ref1.logits, out1.logits)
    torch.testing.assert_close(ref1.loss, out1.loss)
    torch.testing.assert_close(ref3.logits, out3.logits)
    torch.testing.assert_close(ref3.loss, out3.loss)
    model = p3.get_base_model()

    tensors = {}
    for k, v in t.items():
        v = v.detach().contiguous()
        tensors[k] = v.to(torch.int64) if not v.is_floating_point() else v.to(torch.float32)

    meta = {
        "checkpoint": name,
        "vocab_size": str(VOCAB),
        "d_model": str(d),
        "num_virtual_tokens": str(NUM_VIRTUAL),
        "inputs": json.dumps(INPUTS, ensure_ascii=False),
        "targets": json.dumps(TARGETS, ensure_ascii=False),
        "candidates": json.dumps(CANDIDATES, ensure_ascii=False),
        "tokenizer_class": type(tok).__name__,
        "generate": gen_note,
        "gen_min_top2_margin": f"{margin0:.6g}",
        "p1_gen_min_top2_margin": f"{margin1:.6g}",
        "p1": "PromptTuningConfig num_transformer_submodules=1, weight=prompt[:nv]",
        "p2": "PromptTuningConfig num_transformer_submodules=2, weight=prompt (decoder half unused by PEFT)",
        "mt2": "MultitaskPromptTuningConfig num_tasks=1 num_ranks=1 num_transformer_submodules=2, "
        "weight=prompt, cols=rows=1, task_ids=0",
        "cand_scores": "sum over candidate tokens incl. EOS of log_softmax(logits), no prompt",
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    path = os.path.join(out_dir, f"golden_{name}.safetensors")
    save_st(tensors, path, metadata=meta)
    with open(os.path.join(out_dir, f"golden_{name}.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "inputs": INPUTS,
                "targets": TARGETS,
                "candidates": CANDIDATES,
                "gen_output": tensors["gen_output"].tolist(),
                "p1_gen_output": tensors["p1_gen_output"].tolist(),
                "shapes": {k: list(v.shape) for k, v in tensors.items()},
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")
    log(f"{name}: margins gen={margin0:.4g} p1_gen={margin1:.4g}")
    for k, v in tensors.items():
        log(f"  {k:22s} {str(v.dtype):14s} {list(v.shape)}")
    return model, tensors


# ---------------------------------------------------------------------------
# Tokenizer golden
# ---------------------------------------------------------------------------


def tokenizer_cases():
    cases = [
        "",
        " ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        " \t \n ",
        "a",
        " a",
        "a ",
        "  a  ",
        "a b",
        "a  b",
        "a   b    c",
        "a\tb",
        "a\nb",
        "a\r\nb",
        "a \n b",
        "line one\nline two\n\nline four",
        "\ttabbed\ttext\t",
        "   leading spaces",
        "trailing spaces   ",
        "Hello, world!",
        "Hello,world!",
        "hello world",
        "HELLO WORLD",
        "The quick brown fox jumps over the lazy dog.",
        "Classify the sentiment of this review: The movie was wonderful.",
        "Question: What is 12 times 12? Answer: 144",
        "Translate to French: The cat is clever.",
        "premise: The chef reads a long letter. hypothesis: The pilot counts the answer. label: neutral",
        "0",
        "7",
        "42",
        "1234567890",
        "3.14159",
        "-273.15",
        "1,000,000",
        "1e-5",
        "2023-11-07",
        "12:30",
        "+49 30 1234567",
        "50%",
        "$1,000",
        "€5 £4 ¥600",
        "v2.0.1",
        "x_1 + y^2 = z",
        "a[i] = {\"k\": v};",
        "C:\\temp\\file.txt",
        "/usr/local/bin",
        "<b>bold</b>",
        "[link](#top)",
        "email@example.org",
        "https://www.example.org/path?q=1&r=2",
        "!!!",
        "???",
        "...",
        "…",
        "--",
        "—",
        "'quoted'",
        "\"double quoted\"",
        "“curly quotes”",
        "it's",
        "don't won't can't",
        "(parenthesised)",
        "café",
        "cafe\u0301",
        "naïve",
        "nai\u0308ve",
        "Zürich",
        "Zu\u0308rich",
        "crème brûlée",
        "à la carte",
        "東京",
        "東京大学",
        "北京",
        "こんにちは",
        "안녕하세요",
        "Привет, мир",
        "Γειά σου κόσμε",
        "مرحبا",
        "שלום",
        "नमस्ते",
        "🙂",
        "I ❤️ NLP 🚀",
        "👩‍👩‍👧",
        "ＡＢＣ１２３",
        "Ｈｅｌｌｏ　ｗｏｒｌｄ",
        "ﬁne ﬂow",
        "①②③",
        "a\u00a0b",
        "a\u2009b",
        "a\u3000b",
        "a\u200bb",
        "\u200b",
        "a\u00adb",
        "\u0301",
        "e\u0301\u0301",
        "xylophone",
        "quasar pulsar nebula",
        "antidisestablishmentarianism",
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "qwertyuiop asdfghjkl zxcvbnm",
        "supercalifragilisticexpialidocious",
        "the the the the the",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ababababababababab",
        "<extra_id_0>",
        "<extra_id_1> hello",
        "Hello <extra_id_0> world",
        "Hello<extra_id_0>world",
        "a <extra_id_0> b <extra_id_1> c",
        "<extra_id_99>",
        "<extra_id_100>",
        "</s>",
        "x</s>y",
        "end of text </s>",
        "</s></s>",
        "<pad>",
        "<unk>",
        "<s>",
        "< /s>",
        "<extra_id_0 >",
        "▁",
        "▁hello",
        "a▁b",
        "\x00",
        "a\x00b",
        "\x7f",
        "\ufeffBOM",
        "\U0001d400\U0001d401",
    ]
    with open(CORPUS, encoding="utf-8") as f:
        corpus = [line.rstrip("\n") for line in f]
    g = torch.Generator().manual_seed(99)

    def pick(seq):
        return seq[int(torch.randint(len(seq), (1,), generator=g))]

    for i in range(0, len(corpus), 8):
        cases.append(corpus[i])
    for _ in range(30):
        a, b = pick(corpus), pick(corpus)
        cases.append(a + pick([" ", "  ", "\n", "\t", "", " \n "]) + b)
    pool = list("abcxyzABCXYZ0123456789 .,;:!?'\"-()") + ["é", "ü", "東", "京", "\t", "\n", "  ", "🙂", "ß", "ñ"]
    for _ in range(60):
        n = int(torch.randint(1, 24, (1,), generator=g))
        cases.append("".join(pick(pool) for _ in range(n)))
    words = " ".join(corpus[:40]).split()
    cases.append(" ".join(words[:300]))
    cases.append(("Zürich café 東京 " * 60).strip())
    cases.append("x" * 500)
    cases.append(" ".join(str(i) for i in range(200)))
    seen, unique = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def tokenizer_golden(out_dir):
    folder = os.path.join(out_dir, "t5_relu")
    tok = AutoTokenizer.from_pretrained(folder)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
    cases = []
    n_diff = 0
    for text in tokenizer_cases():
        ids = tok(text)["input_ids"]
        spm_ids = sp.encode(text) + [1]
        case = {"text": text, "ids": ids}
        if spm_ids != ids:
            case["ids_spm"] = spm_ids
            n_diff += 1
        cases.append(case)
    cls = type(tok)
    doc = {
        "spiece_model": "t5_relu/spiece.model",
        "tokenizer_class": f"{cls.__module__}.{cls.__name__}",
        "tokenizer_backend": [b.__name__ for b in cls.__mro__[1:3]],
        "transformers_version": transformers.__version__,
        "sentencepiece_version": sentencepiece.__version__,
        "note": (
            "ids: AutoTokenizer.from_pretrained(t5_relu)(text)['input_ids'], EOS (1) appended. "
            "ids_spm (only where different): sentencepiece.SentencePieceProcessor(spiece.model).encode(text) "
            "+ [1], i.e. plain SentencePiece without HF's special-token matching."
        ),
        "cases": cases,
    }
    with open(os.path.join(out_dir, "tokenizer_golden.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    log(f"tokenizer: {len(cases)} cases, {n_diff} differ from plain sentencepiece ({cls.__name__})")


# ---------------------------------------------------------------------------
# Multitask prompt tuning goldens
# ---------------------------------------------------------------------------


def mpt_source_state(num_ranks, seed):
    g = torch.Generator().manual_seed(seed)
    T = MPT_VIRTUAL * 2
    d = MODEL_SPECS["t5_relu"]["d_model"]
    return {
        "prompt_embeddings": torch.randn(T, d, generator=g) * 0.5,
        "prefix_task_cols": 1.0 + torch.randn(MPT_TASKS, T, num_ranks, generator=g) * 0.3,
        "prefix_task_rows": 1.0 + torch.randn(MPT_TASKS, num_ranks, d, generator=g) * 0.3,
    }


def mpt_config(**kw):
    base = dict(
        task_type="SEQ_2_SEQ_LM",
        num_virtual_tokens=MPT_VIRTUAL,
        num_transformer_submodules=2,
        num_ranks=1,
        num_tasks=1,
    )
    base.update(kw)
    return MultitaskPromptTuningConfig(**base)


def stats(x):
    return f"shape={list(x.shape)} mean={float(x.mean()):.6g} std={float(x.std()):.6g}"


def prompt_state(pm):
    enc = pm.prompt_encoder["default"]
    return {
        "prompt_embeddings": enc.embedding.weight.detach().clone().contiguous(),
        "prefix_task_cols": enc.prefix_task_cols.detach().clone().contiguous(),
        "prefix_task_rows": enc.prefix_task_rows.detach().clone().contiguous(),
    }


def mpt_goldens(model, relu_golden, out_dir):
    mdir = os.path.join(out_dir, "mpt")
    if os.path.isdir(mdir):
        shutil.rmtree(mdir)
    os.makedirs(mdir)
    relu_dir = os.path.join(out_dir, "t5_relu")

    src = mpt_source_state(1, 4242)
    src_r2 = mpt_source_state(2, 4343)
    src_path = os.path.join(mdir, "source_state.safetensors")
    src_r2_path = os.path.join(mdir, "source_state_r2.safetensors")
    save_st(src, src_path, metadata={"num_tasks": str(MPT_TASKS), "num_ranks": "1",
                                       "num_virtual_tokens": str(MPT_VIRTUAL), "num_transformer_submodules": "2"})
    save_st(src_r2, src_r2_path, metadata={"num_tasks": str(MPT_TASKS), "num_ranks": "2",
                                             "num_virtual_tokens": str(MPT_VIRTUAL),
                                             "num_transformer_submodules": "2"})

    modes = {
        "AVERAGE_SOURCE_TASKS": dict(prompt_tuning_init_state_dict_path=src_path),
        "EXACT_SOURCE_TASK": dict(prompt_tuning_init_state_dict_path=src_path, prompt_tuning_init_task=1),
        "ONLY_SOURCE_SHARED": dict(prompt_tuning_init_state_dict_path=src_path),
        "TEXT": dict(prompt_tuning_init_text=INIT_TEXT, tokenizer_name_or_path=relu_dir),
        "RANDOM": dict(),
    }
    init_notes = {}
    for mode, kw in modes.items():
        torch.manual_seed(31337)
        pm = get_peft_model(model, mpt_config(prompt_tuning_init=mode, **kw)).eval()
        st = prompt_state(pm)
        model = pm.get_base_model()
        meta = {"prompt_tuning_init": mode, "num_tasks": "1", "num_ranks": "1", "torch_manual_seed": "31337",
                "num_virtual_tokens": str(MPT_VIRTUAL), "num_transformer_submodules": "2"}
        meta.update({k: str(v) for k, v in kw.items() if k != "prompt_tuning_init_state_dict_path"
                     and k != "tokenizer_name_or_path"})
        if "prompt_tuning_init_state_dict_path" in kw:
            meta["prompt_tuning_init_state_dict_path"] = "source_state.safetensors"
        if "tokenizer_name_or_path" in kw:
            meta["tokenizer_name_or_path"] = "t5_relu"
        # Check the deterministic parts against the source state / word embeddings.
        if mode == "AVERAGE_SOURCE_TASKS":
            torch.testing.assert_close(st["prefix_task_cols"], src["prefix_task_cols"].mean(0, keepdim=True))
            torch.testing.assert_close(st["prefix_task_rows"], src["prefix_task_rows"].mean(0, keepdim=True))
            assert torch.equal(st["prompt_embeddings"], src["prompt_embeddings"])
            meta["random"] = "nothing"
        elif mode == "EXACT_SOURCE_TASK":
            assert torch.equal(st["prefix_task_cols"], src["prefix_task_cols"][1:2])
            assert torch.equal(st["prefix_task_rows"], src["prefix_task_rows"][1:2])
            assert torch.equal(st["prompt_embeddings"], src["prompt_embeddings"])
            meta["random"] = "nothing"
        elif mode == "ONLY_SOURCE_SHARED":
            assert torch.equal(st["prompt_embeddings"], src["prompt_embeddings"])
            meta["random"] = "prefix_task_cols, prefix_task_rows ~ N(0, 0.02): " + stats(
                st["prefix_task_cols"]) + " / " + stats(st["prefix_task_rows"])
        elif mode == "TEXT":
            tok = AutoTokenizer.from_pretrained(relu_dir)
            ids = tok(INIT_TEXT)["input_ids"]
            T = 2 * MPT_VIRTUAL
            ids = (ids * math.ceil(T / len(ids)))[:T]
            assert torch.equal(st["prompt_embeddings"], model.shared.weight[torch.tensor(ids)])
            meta["init_token_ids"] = json.dumps(ids)
            meta["random"] = "prefix_task_cols, prefix_task_rows ~ N(0, 0.02): " + stats(
                st["prefix_task_cols"]) + " / " + stats(st["prefix_task_rows"])
        else:
            meta["random"] = ("everything; prompt_embeddings ~ N(0, 1) (torch.nn.Embedding default): "
                              + stats(st["prompt_embeddings"]) + "; prefix_task_cols, prefix_task_rows ~ N(0, 0.02): "
                              + stats(st["prefix_task_cols"]) + " / " + stats(st["prefix_task_rows"]))
        init_notes[mode] = meta["random"]
        save_st(st, os.path.join(mdir, f"init_{mode}.safetensors"), metadata=meta)
        log(f"mpt init {mode}: {meta['random'][:100]}")

    # num_tasks > 1 with the modes that copy the factor pairs: PEFT loads a
    # [1, T, r] tensor into a [num_tasks, T, r] parameter and fails.
    errors = {}
    for mode in ("AVERAGE_SOURCE_TASKS", "EXACT_SOURCE_TASK"):
        try:
            get_peft_model(model, mpt_config(prompt_tuning_init=mode, num_tasks=MPT_TASKS,
                                             prompt_tuning_init_state_dict_path=src_path))
            errors[mode] = "no error"
        except Exception as e:  # recording what PEFT does, whatever it raises
            errors[mode] = f"{type(e).__name__}: {str(e).splitlines()[-1].strip()}"
    # Start the rest from a freshly loaded base model.
    model = T5ForConditionalGeneration.from_pretrained(relu_dir).eval()

    # Forward of MultitaskPromptEmbedding and the full PEFT model.
    input_ids = relu_golden["input_ids"]
    attention_mask = relu_golden["attention_mask"]
    labels = relu_golden["labels"]
    task_ids = torch.tensor(TASK_IDS, dtype=torch.long)
    B = input_ids.shape[0]
    fwd = {"task_ids": task_ids}
    for suffix, state, ranks in (("", src, 1), ("_r2", src_r2, 2)):
        pm = get_peft_model(model, mpt_config(num_tasks=MPT_TASKS, num_ranks=ranks)).eval()
        enc = pm.prompt_encoder["default"]
        assert isinstance(enc, MultitaskPromptEmbedding)
        with torch.no_grad():
            enc.embedding.weight.copy_(state["prompt_embeddings"])
            enc.prefix_task_cols.copy_(state["prefix_task_cols"])
            enc.prefix_task_rows.copy_(state["prefix_task_rows"])
            indices = pm.prompt_tokens["default"].unsqueeze(0).expand(B, -1)
            prompt = enc(indices, task_ids)
            expect = state["prompt_embeddings"][None] * torch.bmm(
                state["prefix_task_cols"][task_ids], state["prefix_task_rows"][task_ids])
            torch.testing.assert_close(prompt, expect)
            out = pm(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                     output_hidden_states=True, task_ids=task_ids)
            gen = pm.generate(input_ids=input_ids, attention_mask=attention_mask, task_ids=task_ids,
                              max_new_tokens=8, do_sample=False, num_beams=1)
        fwd[f"prompt{suffix}"] = prompt
        fwd[f"loss{suffix}"] = out.loss.reshape(())
        if suffix == "":
            # The rank-2 variant keeps only the prompt and the loss (size).
            fwd["indices"] = indices.contiguous()
            fwd["encoder_hidden"] = out.encoder_last_hidden_state
            fwd["decoder_hidden"] = out.decoder_hidden_states[-1]
            fwd["logits"] = out.logits
            fwd["gen_output"] = gen
            mt_model = pm
            mt_logits, mt_loss = out.logits, out.loss
        else:
            model = pm.get_base_model()
    for k in list(fwd):
        v = fwd[k].detach().contiguous()
        fwd[k] = v.to(torch.int64) if not v.is_floating_point() else v.to(torch.float32)
    save_st(fwd, os.path.join(mdir, "forward.safetensors"), metadata={
        "checkpoint": "t5_relu",
        "batch": "input_ids/attention_mask/labels of golden_t5_relu.safetensors",
        "weights": "source_state.safetensors (no suffix), source_state_r2.safetensors (_r2)",
        "num_tasks": str(MPT_TASKS),
        "num_virtual_tokens": str(MPT_VIRTUAL),
        "num_transformer_submodules": "2",
        "task_ids": json.dumps(TASK_IDS),
    })

    # Adapter folders written by PEFT itself, then read back.
    mt_dir = os.path.join(mdir, "adapter_peft")
    mt_model.peft_config["default"].base_model_name_or_path = "t5_relu"
    mt_model.save_pretrained(mt_dir)
    base_for_pt = mt_model.get_base_model()

    pt_cfg = PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=MPT_VIRTUAL)
    pt_model = get_peft_model(base_for_pt, pt_cfg).eval()
    with torch.no_grad():
        pt_model.prompt_encoder["default"].embedding.weight.copy_(src["prompt_embeddings"])
    pt_model.peft_config["default"].base_model_name_or_path = "t5_relu"
    pt_dir = os.path.join(mdir, "adapter_peft_prompt")
    pt_model.save_pretrained(pt_dir)
    for dname in (mt_dir, pt_dir):
        card = os.path.join(dname, "README.md")
        if os.path.exists(card):
            os.remove(card)

    adapters = {}
    for tag, dname, kw in (("mt", mt_dir, {"task_ids": task_ids}), ("pt", pt_dir, {})):
        base = T5ForConditionalGeneration.from_pretrained(relu_dir).eval()
        loaded = PeftModel.from_pretrained(base, dname).eval()
        with torch.no_grad():
            out = loaded(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kw)
        if tag == "mt":
            # Equal to forward.safetensors "logits" (checked below); not stored twice.
            torch.testing.assert_close(out.logits, mt_logits)
        else:
            adapters[f"{tag}_logits"] = out.logits.contiguous()
        adapters[f"{tag}_loss"] = out.loss.reshape(())
        keys = sorted(load_file(os.path.join(dname, "adapter_model.safetensors")).keys())
        log(f"adapter {tag}: keys {keys}")
    torch.testing.assert_close(adapters["mt_loss"], mt_loss.reshape(()))
    adapters["task_ids"] = task_ids
    save_st(adapters, os.path.join(mdir, "adapter_outputs.safetensors"), metadata={
        "mt": "PeftModel.from_pretrained(t5_relu, adapter_peft) on the golden_t5_relu batch with task_ids; "
        "its logits equal forward.safetensors logits",
        "pt": "PeftModel.from_pretrained(t5_relu, adapter_peft_prompt) on the golden_t5_relu batch",
    })
    with open(os.path.join(mdir, "notes.json"), "w", encoding="utf-8") as f:
        json.dump({"init_random_parts": init_notes, "num_tasks_3_with_copying_init": errors,
                   "init_text": INIT_TEXT, "task_ids": TASK_IDS}, f, indent=1)
        f.write("\n")
    log(f"mpt: num_tasks=3 with AVERAGE/EXACT -> {errors}")


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(TOOLS_DIR), "tests", "testdata"))
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    with tempfile.TemporaryDirectory() as work:
        spm_path = train_spm(work)
        models = {name: build_checkpoint(name, out_dir, spm_path) for name in MODEL_SPECS}
        goldens = {}
        for name, model in models.items():
            models[name], goldens[name] = golden_for_checkpoint(name, model, out_dir)
        tokenizer_golden(out_dir)
        mpt_goldens(models["t5_relu"], goldens["t5_relu"], out_dir)
    log("done")


if __name__ == "__main__":
    main()
