#!/usr/bin/env python3
"""Make the demo base model: a SentencePiece vocabulary and a tiny T5 v1.1
(gated GELU, untied LM head) pretrained on the demo skills.

The pretraining mixture has every skill (pretrain, source and target roles)
in the FLAN-style form "instruction: <text> input: <payload>" with one of the
skill's instruction wordings after a fixed preamble, plus a share of bare
payloads (no instruction) and of inputs with a damaged or missing preamble,
both answered "unknown": only the full preamble + instruction gives the task
answer. Eval payloads of source and target tasks are kept out.

Writes demo/model/{config.json, model.safetensors, spiece.model}
(plus generation_config.json written by transformers).

Usage: python3 tools/demo/make_demo_model.py [--out demo/model] [--steps N]

--suite lex pretrains on the lexical suite (tools/demo/make_lex_tasks.py)
instead: only its source and pretrain skills, never its targets, e.g.

    python3 tools/demo/make_lex_tasks.py --out demo/lex/data
    python3 tools/demo/make_demo_model.py --suite lex --out demo/lex/model \
        --data demo/lex/data --vocab 2000 --layers 3 --dec-layers 3 --d-ff 384 \
        --steps 9000 --batch 64 --lr 1e-3 --threads 2

(The model of docs/STUDY.md's lexical study was made with this command; it
is not committed, being 8 MB.)

--hold_out_targets pretrains on the demo suite without its three targets
(min, food, topic: neither their instructions nor their payloads); the
other nine skills are the source tasks of that setting:

    python3 tools/demo/make_demo_tasks.py --hold_out_targets --out demo/heldout/data
    python3 tools/demo/make_demo_model.py --hold_out_targets \
        --out demo/heldout/model --data demo/heldout/data --steps 1200

(demo/heldout/model was made with exactly this command; 1,200 steps rather
than 3,000 only to fit the time there was on two shared cores.)
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_common as dc  # noqa: E402
import make_demo_tasks as mt  # noqa: E402  (replaced by --suite lex)

SEED = 1234
BARE_SHARE = 0.05      # payload alone -> "unknown"
DAMAGED_SHARE = 0.15   # damaged preamble + instruction + payload -> "unknown"
BARE_ANSWER = mt.BARE_ANSWER


def sample_example(rng, names, held):
    # names: the skills pretrained on (all of them for the demo suite; the
    # lexical suite leaves its targets out)
    """One pretraining pair (input, target)."""
    if rng.random() < BARE_SHARE:
        name = rng.choice(names)
        payload, _ = mt.SKILLS[name][2](rng)
        return payload, BARE_ANSWER
    damaged = rng.random() < DAMAGED_SHARE / (1 - BARE_SHARE)
    while True:
        name = rng.choice(names)
        _, instrs, gen, _, _ = mt.SKILLS[name]
        payload, target = gen(rng)
        if payload in held.get(name, ()):
            continue
        if damaged:
            pre = mt.damaged_preamble(rng)
            return mt.format_instructed(rng.choice(instrs), payload, pre).strip(), BARE_ANSWER
        return mt.format_instructed(rng.choice(instrs), payload), target


def train_spm(out_dir, vocab_size, names, held):
    rng = random.Random(SEED + 1)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            for _ in range(20000):
                a, b = sample_example(rng, names, held)
                f.write(a + "\n" + b + "\n")
        prefix = os.path.join(tmp, "spiece")
        subprocess.run([
            "spm_train", "--input=" + corpus, "--model_prefix=" + prefix,
            "--vocab_size=%d" % vocab_size, "--model_type=unigram",
            "--character_coverage=1.0", "--pad_id=0", "--eos_id=1",
            "--unk_id=2", "--bos_id=-1", "--split_digits=false",
            "--num_threads=1", "--seed_sentencepiece_size=100000",
            "--minloglevel=2"], check=True)
        with open(prefix + ".model", "rb") as f:
            data = f.read()
    with open(os.path.join(out_dir, "spiece.model"), "wb") as f:
        f.write(data)


def write_v11_layout(out):
    """Store the checkpoint in the classic T5 v1.1 layout: an explicit
    lm_head.weight (a copy of shared.weight) and tie_word_embeddings=false,
    i.e. no d^-0.5 scaling before the head. transformers 5 saves it as
    tied with a private scale_decoder_outputs=false, which readers that
    follow the usual T5 rule (tied => scaled) would get wrong."""
    import json
    from safetensors.torch import load_file, save_file
    path = os.path.join(out, "model.safetensors")
    sd = load_file(path)
    sd["lm_head.weight"] = sd["shared.weight"].clone()
    save_file({k: v.contiguous() for k, v in sorted(sd.items())}, path,
              metadata={"format": "pt"})
    cpath = os.path.join(out, "config.json")
    with open(cpath) as f:
        cfg = json.load(f)
    cfg["tie_word_embeddings"] = False
    cfg.pop("scale_decoder_outputs", None)
    with open(cpath, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo/model")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vocab", type=int, default=None,
                    help="SentencePiece pieces (320; 300 with --hold_out_targets, "
                         "whose smaller corpus cannot fill 320)")
    ap.add_argument("--data", default="demo/data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dec-layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--d-ff", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--suite", choices=["demo", "lex"], default="demo")
    ap.add_argument("--hold_out_targets", action="store_true",
                    help="demo suite: never pretrain on the target skills")
    args = ap.parse_args()
    if args.vocab is None:
        args.vocab = 300 if args.hold_out_targets else 320
    global mt
    skills = mt.SKILLS
    if args.suite == "lex":
        import make_lex_tasks as lex
        mt = lex
        skills = mt.SKILLS
    elif args.hold_out_targets:
        skills = mt.held_out_skills()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    os.makedirs(args.out, exist_ok=True)

    from transformers import T5Config, T5ForConditionalGeneration

    if hasattr(mt, "pretrain_skills"):
        names = mt.pretrain_skills()
    elif args.hold_out_targets:
        names = [n for n, v in skills.items() if v[0] != "target"]
    else:
        names = list(skills)
    print("pretraining skills: %s" % ", ".join(names), flush=True)
    if args.hold_out_targets:
        held = {n: mt.eval_payloads(n, skills) for n in names
                if skills[n][0] in mt.SIZES}
    else:
        held = {n: mt.eval_payloads(n) for n in names
                if skills[n][0] in mt.SIZES}
    train_spm(args.out, args.vocab, names, held)
    tok = dc.Tok(os.path.join(args.out, "spiece.model"))
    n_pieces = tok.sp.get_piece_size()

    cfg = T5Config(
        vocab_size=n_pieces + 100, d_model=args.d_model, d_kv=args.d_model // args.heads,
        num_heads=args.heads, d_ff=args.d_ff, num_layers=args.layers, num_decoder_layers=args.dec_layers,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_factor=1.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg)
    # transformers 5 always ties T5's head to the shared embedding (and, for
    # tie_word_embeddings=False, only drops the d^-0.5 output scaling), so
    # the head IS the embedding here: draw it with std d^-0.5 instead of 1.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, cfg.d_model ** -0.5)
    n_params = sum(p.numel() for p in model.parameters())
    print("pieces %d  vocab %d  params %d (%.2f MB fp32)" % (
        n_pieces, cfg.vocab_size, n_params, n_params * 4 / 2**20), flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = 200

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        return args.lr * max(0.1, 1 - (s - warm) / (args.steps - warm))

    rng = random.Random(SEED)
    t0 = time.time()
    model.train()
    run = 0.0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = [sample_example(rng, names, held) for _ in range(args.batch)]
        x, xm, y = dc.make_batch(tok, batch)
        loss = model(input_ids=x, attention_mask=xm, labels=y).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run = 0.98 * run + 0.02 * loss.item() if step else loss.item()
        if step % 200 == 0 or step == args.steps - 1:
            print("step %5d  loss %.4f  lr %.2e  %.0fs" % (
                step, run, lr_at(step), time.time() - t0), flush=True)

    model.eval()
    print("per-skill accuracy on eval payloads (instructed, bare; share of bare / no-preamble inputs answered 'unknown'):")
    data_dir = args.data
    for name in skills:  # targets too (never pretrained on in the lex suite
        # and with --hold_out_targets)
        role, instrs, gen, metric, cands = skills[name]
        task = {"metric": metric, "candidates": cands}
        if role in mt.SIZES:
            ex = dc.read_jsonl(os.path.join(data_dir, name, "eval.jsonl"))
        else:
            r = random.Random(99)
            ex = [dict(zip(("input", "target"), gen(r))) for _ in range(200)]
        acc = dc.accuracy(model, tok, task, ex, instruction=instrs[0])
        bare = dc.accuracy(model, tok, task, ex)
        unk = sum(p == BARE_ANSWER for p in dc.greedy(
            model, tok, [e["input"] for e in ex[:50]])) / 50
        noamb = sum(p == BARE_ANSWER for p in dc.greedy(model, tok, [
            "instruction: %s input: %s" % (instrs[0], e["input"]) for e in ex[:50]])) / 50
        print("  %-10s %-8s instructed %.3f  bare %.3f  bare->%s %.2f  "
              "no-preamble->%s %.2f" % (name, role, acc, bare, BARE_ANSWER, unk,
                                        BARE_ANSWER, noamb), flush=True)

    model.save_pretrained(args.out, safe_serialization=True)
    write_v11_layout(args.out)
    print("saved to %s in %.0fs" % (args.out, time.time() - t0))


if __name__ == "__main__":
    main()
