#!/usr/bin/env python3
"""Check the demo design with Hugging Face PEFT and plain torch.

With the frozen demo model:
  (a) source training: PEFT prompt tuning (RANDOM init, encoder-only prompt)
      per source task -> teacher prompts;
  (b) MPT distillation (plain torch, following docs/DESIGN): shared prompt
      P* and rank-1 factors per source task, all source tasks mixed in each
      batch, loss = CE + lambda * (KL(teacher || student) * tau^2 + hidden MSE);
      the result is written in PEFT's multitask form;
  (c) per target task at the same step budget: a random prompt (untrained),
      PEFT prompt tuning from RANDOM init, and PEFT multitask prompt tuning
      initialised with AVERAGE_SOURCE_TASKS from the distilled state dict
      (P* and the mean factor pair).

Prints per-stage accuracies, wall times and the final table.

Usage: python3 tools/demo/check_demo_peft.py [--model demo/model] [--data demo/data]
"""

import argparse
import copy
import os
import random
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_common as dc  # noqa: E402


def batches(examples, bs, rng):
    """Endless shuffled mini-batches of (input, target)."""
    idx = list(range(len(examples)))
    while True:
        rng.shuffle(idx)
        for i in range(0, len(idx) - bs + 1, bs):
            yield [(examples[j]["input"], examples[j]["target"]) for j in idx[i:i + bs]]


def pt_config(base, args, seed):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType
    torch.manual_seed(seed)
    return PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, prompt_tuning_init=PromptTuningInit.RANDOM,
        num_virtual_tokens=args.prompt_len, num_transformer_submodules=1,
        token_dim=base.config.d_model, num_layers=base.config.num_layers,
        num_attention_heads=base.config.num_heads)


def mpt_config(base, args, state_path):
    from peft import MultitaskPromptTuningConfig, MultitaskPromptTuningInit, TaskType
    return MultitaskPromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        prompt_tuning_init=MultitaskPromptTuningInit.AVERAGE_SOURCE_TASKS,
        prompt_tuning_init_state_dict_path=state_path,
        num_virtual_tokens=args.prompt_len, num_transformer_submodules=1,
        token_dim=base.config.d_model, num_layers=base.config.num_layers,
        num_attention_heads=base.config.num_heads, num_tasks=1, num_ranks=1)


def peft_prompt(pm, multitask):
    with torch.no_grad():
        if multitask:
            return pm.get_prompt(1, task_ids=torch.zeros(1, dtype=torch.long))[0].detach().clone()
        return pm.get_prompt(1)[0].detach().clone()


def train_peft(pm, tok, train, steps, lr, bs, seed, multitask, args, on_step=None):
    """Train the PEFT prompt; on_step(step_done) is called after each step."""
    rng = random.Random(seed)
    it = batches(train, bs, rng)
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-5)
    pm.train()
    for step in range(steps):
        x, xm, y = dc.make_batch(tok, next(it), args.max_in, args.max_out)
        kw = {"task_ids": torch.zeros(x.shape[0], dtype=torch.long)} if multitask else {}
        loss = pm(input_ids=x, attention_mask=xm, labels=y, **kw).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if on_step:
            pm.eval()
            on_step(step + 1)
            pm.train()
    pm.eval()
    return loss.item()


def distill(base, tok, tasks, teachers, data, args):
    """MPT distillation; returns P* [T,d], cols [K,T,1], rows [K,1,d]."""
    K = len(tasks)
    T, d = teachers[0].shape
    shared = torch.nn.Parameter(torch.stack(teachers).mean(0).clone()
                                if args.init_shared == "mean" else
                                torch.randn(T, d))
    cols = torch.nn.Parameter(torch.ones(K, T, 1))
    rows = torch.nn.Parameter(torch.ones(K, 1, d))
    opt = torch.optim.AdamW([shared, cols, rows], lr=args.distill_lr, weight_decay=1e-5)
    rng = random.Random(args.seed + 5)
    its = [batches(data[t["name"]], args.batch // K or 1, rng) for t in tasks]
    per = max(1, args.batch // K)
    tau, lam = args.tau, args.lam
    for step in range(args.distill_steps):
        # one mini-batch mixing every source task
        pairs, kidx = [], []
        for k in range(K):
            b = next(its[k])
            pairs += b
            kidx += [k] * len(b)
        kidx = torch.tensor(kidx)
        x, xm, y = dc.make_batch(tok, pairs, args.max_in, args.max_out)
        teach = torch.stack(teachers)[kidx]                 # [B,T,d]
        with torch.no_grad():
            to = dc.prompt_forward(base, x, xm, y, teach, hidden=True)
        student = shared.unsqueeze(0) * torch.matmul(cols[kidx], rows[kidx])
        so = dc.prompt_forward(base, x, xm, y, student, hidden=True)
        real = (y != -100)
        n = real.sum()
        ce = so.loss
        kl = F.kl_div(F.log_softmax(so.logits / tau, -1), F.log_softmax(to.logits / tau, -1),
                      log_target=True, reduction="none").sum(-1)
        kl = (kl * real).sum() / n * tau * tau
        hs, ht = so.decoder_hidden_states[-1], to.decoder_hidden_states[-1]
        mse = (((hs - ht) ** 2).mean(-1) * real).sum() / n
        loss = ce + lam * (kl + mse)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([shared, cols, rows], 1.0)
        opt.step()
        if step % 100 == 0 or step == args.distill_steps - 1:
            print("    distill step %4d  loss %.4f  ce %.4f  kl %.4f  mse %.4f" % (
                step, loss.item(), ce.item(), kl.item(), mse.item()), flush=True)
    return shared.detach(), cols.detach(), rows.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo/model")
    ap.add_argument("--data", default="demo/data")
    ap.add_argument("--prompt-len", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-in", type=int, default=64)
    ap.add_argument("--max-out", type=int, default=24)
    ap.add_argument("--src-steps", type=int, default=300)
    ap.add_argument("--src-lr", type=float, default=0.3)
    ap.add_argument("--src-same-init", type=int, default=0,
                    help="1: every source prompt starts from the same random draw")
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--distill-lr", type=float, default=0.03)
    ap.add_argument("--init-shared", choices=["mean", "random"], default="mean")
    ap.add_argument("--lam", type=float, default=0.9)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--tgt-steps", default="10,20,40,80",
                    help="comma list of step budgets evaluated along one run")
    ap.add_argument("--tgt-lr", type=float, default=0.3)
    ap.add_argument("--mpt-lr", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", default=None,
                    help="folder to keep/reuse the distilled state (skips (a),(b) if present)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mpt_lr = args.mpt_lr or args.tgt_lr

    from transformers import T5ForConditionalGeneration

    tok = dc.Tok(os.path.join(args.model, "spiece.model"))
    base = T5ForConditionalGeneration.from_pretrained(args.model).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    tasks = dc.load_tasks(args.data)
    src = [t for t in tasks if t["role"] == "source"]
    tgt = [t for t in tasks if t["role"] == "target"]
    train = {t["name"]: dc.read_jsonl(os.path.join(args.data, t["train"])) for t in src + tgt}
    evals = {t["name"]: dc.read_jsonl(os.path.join(args.data, t["eval"])) for t in src + tgt}
    print(args)

    if args.reuse and os.path.exists(os.path.join(args.reuse, "mpt_source.safetensors")):
        state_path = os.path.join(args.reuse, "mpt_source.safetensors")
        ta = tb = 0.0
        print("reusing", state_path)
    else:
        state_path, ta, tb = source_and_distill(args, base, tok, src, train, evals)
    stage_c(args, base, tok, tgt, train, evals, state_path, mpt_lr, ta, tb)


def source_and_distill(args, base, tok, src, train, evals):
    from peft import get_peft_model
    from safetensors.torch import save_file
    # (a) source prompts
    t0 = time.time()
    teachers = []
    print("(a) source prompt tuning: %d steps each, batch %d, lr %g" % (
        args.src_steps, args.batch, args.src_lr))
    for i, t in enumerate(src):
        init_seed = args.seed if args.src_same_init else args.seed + i
        pm = get_peft_model(copy.deepcopy(base), pt_config(base, args, init_seed))
        loss = train_peft(pm, tok, train[t["name"]], args.src_steps, args.src_lr,
                          args.batch, args.seed + i, False, args)
        p = peft_prompt(pm, False)
        teachers.append(p)
        acc = dc.accuracy(base, tok, t, evals[t["name"]], prompt=p)
        ins = dc.accuracy(base, tok, t, evals[t["name"]], instruction=t["instruction"])
        print("  %-10s loss %.3f  eval acc %.3f  (instructed %.3f)" % (
            t["name"], loss, acc, ins), flush=True)
    ta = time.time() - t0
    print("  stage (a) %.1fs" % ta)

    # (b) distillation
    t0 = time.time()
    print("(b) distillation: %d steps, batch %d mixed, lr %g, lambda %g, tau %g" % (
        args.distill_steps, args.batch, args.distill_lr, args.lam, args.tau))
    shared, cols, rows = distill(base, tok, src, teachers, train, args)
    tb = time.time() - t0
    for k, t in enumerate(src):
        p = shared * (cols[k] @ rows[k])
        print("  student %-10s eval acc %.3f" % (t["name"], dc.accuracy(base, tok, t, evals[t["name"]], prompt=p)))
    print("  stage (b) %.1fs" % tb)
    tmp = args.reuse or tempfile.mkdtemp()
    os.makedirs(tmp, exist_ok=True)
    state_path = os.path.join(tmp, "mpt_source.safetensors")
    save_file({"prompt_embeddings": shared.contiguous(), "prefix_task_cols": cols.contiguous(),
               "prefix_task_rows": rows.contiguous()}, state_path)

    return state_path, ta, tb


def stage_c(args, base, tok, tgt, train, evals, state_path, mpt_lr, ta=0.0, tb=0.0):
    from peft import get_peft_model
    # (c) targets
    t0 = time.time()
    budgets = [int(v) for v in args.tgt_steps.split(",")]
    print("(c) target adaptation: budgets %s steps, batch %d, lr plain %g, lr mpt %g, %d seeds" % (
        budgets, args.batch, args.tgt_lr, mpt_lr, args.seeds))
    rows_out = []
    for t in tgt:
        name = t["name"]
        ev = evals[name]
        r = {"task": name, "plain": {b: [] for b in budgets}, "mpt": {b: [] for b in budgets}}
        r["instructed"] = dc.accuracy(base, tok, t, ev, instruction=t["instruction"])
        rnd = []
        for s in range(args.seeds):
            seed = args.seed + 100 + s
            for kind in ("plain", "mpt"):
                torch.manual_seed(seed)
                if kind == "plain":
                    pm = get_peft_model(copy.deepcopy(base), pt_config(base, args, seed))
                    rnd.append(dc.accuracy(base, tok, t, ev, prompt=peft_prompt(pm, False)))
                else:
                    pm = get_peft_model(copy.deepcopy(base), mpt_config(base, args, state_path))
                    if s == 0:
                        r["mpt_init"] = dc.accuracy(base, tok, t, ev, prompt=peft_prompt(pm, True))
                mt = kind == "mpt"

                def on_step(k, pm=pm, mt=mt, kind=kind):
                    if k in budgets:
                        r[kind][k].append(dc.accuracy(base, tok, t, ev, prompt=peft_prompt(pm, mt)))
                train_peft(pm, tok, train[name], max(budgets), mpt_lr if mt else args.tgt_lr,
                           args.batch, seed, mt, args, on_step)
        r["random"] = sum(rnd) / len(rnd)
        rows_out.append(r)
        for b in budgets:
            print("  %-8s %4d steps  random %.3f  plain %s  mpt %s  (mpt init %.3f)" % (
                name, b, r["random"], ["%.3f" % v for v in r["plain"][b]],
                ["%.3f" % v for v in r["mpt"][b]], r["mpt_init"]), flush=True)
    tc = time.time() - t0
    print("  stage (c) %.1fs (%d tasks x %d seeds x 2 methods x %d steps)" % (
        tc, len(tgt), args.seeds, max(budgets)))

    def mean(v):
        return sum(v) / len(v)
    print()
    head = "| target | random prompt | " + " | ".join(
        "prompt tuning %d | MPT %d" % (b, b) for b in budgets) + \
        " | MPT init, untrained | instruction text |"
    print(head)
    print("|" + "---|" * (len(head.split("|")) - 2))
    for r in rows_out:
        print("| %s | %.3f | " % (r["task"], r["random"]) + " | ".join(
            "%.3f | %.3f" % (mean(r["plain"][b]), mean(r["mpt"][b])) for b in budgets) +
            " | %.3f | %.3f |" % (r["mpt_init"], r["instructed"]))
    print("times: (a) %.0fs  (b) %.0fs  (c) %.0fs" % (ta, tb, tc))


if __name__ == "__main__":
    main()
