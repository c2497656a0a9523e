#!/usr/bin/env python3
"""Checks that PEFT loads CAUSAL_LM adapters mpt trained and scores them as mpt did.

Train on a decoder-only model with mpt_train, keeping its progress events:

    bazel-bin/worker/mpt_train --spec=SPEC --out=OUT --events=OUT/events.jsonl
    python3 tools/check_causal_adapter_in_peft.py --spec_json SPEC.json \\
        --out OUT --events OUT/events.jsonl

For every adapter under OUT (source/<task>, distillation, target/<task>) it
loads the folder with PeftModel.from_pretrained over
AutoModelForCausalLM(base_model), checks that PEFT's prompt tensors are the
file's (so PEFT did not initialise anything itself), then evaluates each of
the adapter's tasks on its eval set the way mpt does (the first
max_eval_examples examples; input = tokenizer(input), rank candidates
scored as targets tokenizer(c, add_special_tokens=False) + [eos] by their
summed log-probabilities, generated answers by greedy decoding without the
KV cache up to max_target_length tokens, decoded with special tokens
skipped) and compares PEFT's accuracy with the accuracy mpt reported for
the kept prompt (the FINISHED event of that stage and task). Exits 1 on any
difference.

The spec must be JSON (mpt_train reads JSON too) with absolute paths.
Requirements: torch, transformers (5.x), peft (0.21), safetensors.
"""
import argparse
import json
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def read_jsonl(path, n):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows[:n] if n > 0 else rows


def finished_metrics(events_path):
    out = {}
    with open(events_path) as f:
        for line in f:
            e = json.loads(line)
            if e["kind"] == "FINISHED":
                out[(e["stage"], e["task"])] = e["metrics"]
    return out


def evaluate(model, tok, task, task_id, max_examples, max_new):
    eos = tok.eos_token_id
    examples = read_jsonl(task["eval_path"], max_examples)
    correct = 0
    for ex in examples:
        ids = tok(ex["input"]).input_ids
        kwargs = {"task_ids": torch.tensor([task_id])} if task_id is not None else {}
        if task.get("eval_mode") == "rank":
            best, best_score = None, None
            for cand in task["candidates"]:
                tgt = tok(cand, add_special_tokens=False).input_ids + [eos]
                seq = torch.tensor([ids + tgt])
                with torch.no_grad():
                    logits = model(input_ids=seq, attention_mask=torch.ones_like(seq),
                                   **kwargs).logits
                nv = logits.shape[1] - seq.shape[1]
                start = nv + len(ids) - 1
                logp = torch.log_softmax(logits[0, start:start + len(tgt)].float(), -1)
                score = logp.gather(-1, torch.tensor(tgt).unsqueeze(-1)).sum().item()
                if best_score is None or score > best_score:
                    best, best_score = cand, score
            prediction = best
        else:
            with torch.no_grad():
                gen = model.generate(input_ids=torch.tensor([ids]),
                                     attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=max_new, do_sample=False, num_beams=1,
                                     pad_token_id=eos, use_cache=False, **kwargs)
            new = gen[0].tolist()
            if new[:len(ids)] == ids:
                new = new[len(ids):]
            if eos in new:
                new = new[:new.index(eos)]
            prediction = tok.decode(new, skip_special_tokens=True)
        correct += prediction == ex["target"]
    return correct / max(1, len(examples))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec_json", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--events", required=True)
    args = p.parse_args()
    spec = json.load(open(args.spec_json))
    base_dir = spec["base_model"]
    tok = AutoTokenizer.from_pretrained(base_dir)
    reported = finished_metrics(args.events)
    stages = []
    for t in spec["source"]["tasks"]:
        stages.append(("source", t["name"], os.path.join(args.out, "source", t["name"]),
                       [(t, None)], spec["source"].get("train", {})))
    d = spec.get("distillation", {})
    dtasks = d.get("tasks") or spec["source"]["tasks"]
    stages.append(("distillation", "", os.path.join(args.out, "distillation"),
                   [(t, k) for k, t in enumerate(dtasks)], d.get("train", {})))
    for t in spec.get("target", {}).get("tasks", []):
        stages.append(("target", t["name"], os.path.join(args.out, "target", t["name"]),
                       [(t, 0)], spec["target"].get("train", {})))
    ok = True
    for stage, label, folder, tasks, train in stages:
        base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
        model = PeftModel.from_pretrained(base, folder).eval()
        config = model.peft_config["default"]
        assert str(config.task_type).endswith("CAUSAL_LM"), config.task_type
        enc = model.prompt_encoder["default"]
        saved = load_file(os.path.join(folder, "adapter_model.safetensors"))
        same = torch.equal(enc.embedding.weight.detach(), saved["prompt_embeddings"])
        if "prefix_task_cols" in saved:
            same &= torch.equal(enc.prefix_task_cols.detach(), saved["prefix_task_cols"])
            same &= torch.equal(enc.prefix_task_rows.detach(), saved["prefix_task_rows"])
        line = f"{stage}/{label}: {config.peft_type} loaded, tensors {'equal' if same else 'DIFFER'}"
        ok &= same
        metrics = reported.get((stage, label), {})
        for task, task_id in tasks:
            if not task.get("eval_path"):
                continue
            acc = evaluate(model, tok, task, task_id, train.get("max_eval_examples", 0),
                           train.get("max_target_length", 32))
            ours = metrics.get(f"{task['name']}/accuracy")
            match = ours is not None and abs(ours - acc) < 1e-9
            ok &= match
            line += f"; {task['name']} accuracy PEFT {acc:.4f} mpt {ours}"
            line += "" if match else " MISMATCH"
        print(line)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
