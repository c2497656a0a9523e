#!/usr/bin/env python3
"""Compares two mpt_train runs of the same spec (say one on the CPU and one
on CUDA, or fp32 and bf16 autocast): the training loss at every logged step,
the final evaluation metrics per task and the tensors of every adapter file
(.safetensors) the runs wrote, matched by relative path.

    compare_runs.py --a RUN_A --b RUN_B [--events_a A.jsonl --events_b B.jsonl]
        [--first_loss_rtol X] [--loss_rtol X] [--tensor_rtol X] [--accuracy_pp X]
        [--max_mean_drop_pp X] [--json OUT.json]

A run folder is mpt_train's --out; the events files are its --events (default
RUN/events.jsonl). Checks, each only when its tolerance is given:
  --first_loss_rtol  the first logged step's loss (before any update has
                  diverged the runs): |a - b| <= rtol * max(|a|, |b|)
  --loss_rtol     every common step's loss, the same way
  --tensor_rtol   every adapter tensor: ||a - b|| / ||a|| <= rtol (L2 norms)
  --accuracy_pp   every task's final accuracy within this many percentage
                  points
  --max_mean_drop_pp  b's mean accuracy over the tasks at most this many
                  points below a's (a regression check: b may be better)
Prints the figures and PASS or FAIL; exits 1 on FAIL, 2 on bad input.
Standard library only (reads F32/F64 safetensors itself).
"""
import argparse
import array
import json
import math
import os
import struct
import sys


def fail_input(msg):
    print(f"compare_runs: {msg}", file=sys.stderr)
    sys.exit(2)


def read_events(path):
    if not os.path.isfile(path):
        fail_input(f"{path}: no events file")
    losses, metrics = {}, {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except json.JSONDecodeError as err:
                fail_input(f"{path}:{n}: not JSON: {err}")
            key = (e.get("stage", ""), e.get("task", ""))
            if e.get("kind") == "STEP" and e.get("losses"):
                name = sorted(e["losses"])[0] if "loss" not in e["losses"] else "loss"
                losses[key + (e["step"],)] = float(e["losses"][name])
            for k, v in (e.get("metrics") or {}).items():
                # Per task; "average/..." repeats them.
                if (k.endswith("accuracy") and not k.startswith("initial/")
                        and not k.startswith("average/")):
                    metrics[key + (k,)] = float(v)  # the last report wins
    return losses, metrics


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code = {"F32": "f", "F64": "d"}.get(info["dtype"])
        if code is None:
            continue
        begin, end = info["data_offsets"]
        a = array.array(code)
        a.frombytes(data[begin:end])
        out[name] = a
    return out


def adapters(root):
    found = {}
    for d, _, files in os.walk(root):
        if os.sep + ".work" in d or d.endswith(".work"):
            continue  # checkpoints
        for f in files:
            if f.endswith(".safetensors"):
                p = os.path.join(d, f)
                found[os.path.relpath(p, root)] = p
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--events_a")
    p.add_argument("--events_b")
    p.add_argument("--label_a", default="a")
    p.add_argument("--label_b", default="b")
    p.add_argument("--first_loss_rtol", type=float)
    p.add_argument("--loss_rtol", type=float)
    p.add_argument("--tensor_rtol", type=float)
    p.add_argument("--accuracy_pp", type=float)
    p.add_argument("--max_mean_drop_pp", type=float)
    p.add_argument("--json")
    args = p.parse_args()

    la, ma = read_events(args.events_a or os.path.join(args.a, "events.jsonl"))
    lb, mb = read_events(args.events_b or os.path.join(args.b, "events.jsonl"))
    result = {"a": args.label_a, "b": args.label_b, "checks": {}}
    ok = True

    common = sorted(set(la) & set(lb))
    if not common:
        fail_input("the two runs have no logged step in common")
    rel = [abs(la[k] - lb[k]) / max(abs(la[k]), abs(lb[k]), 1e-30) for k in common]
    worst = max(range(len(common)), key=lambda i: rel[i])
    first = [i for i, k in enumerate(common) if k[2] == min(c[2] for c in common)]
    result["losses"] = {
        "steps_compared": len(common),
        "max_rel_diff": rel[worst], "at": list(common[worst]),
        "first_step_max_rel_diff": max(rel[i] for i in first),
        "final": {f"{k[0]}/{k[1]}": [la[k], lb[k]] for k in common
                  if k[2] == max(c[2] for c in common if c[:2] == k[:2])},
    }
    if args.first_loss_rtol is not None:
        passed = result["losses"]["first_step_max_rel_diff"] <= args.first_loss_rtol
        result["checks"]["first_loss"] = {"rtol": args.first_loss_rtol, "pass": passed}
        ok &= passed
    if args.loss_rtol is not None:
        passed = rel[worst] <= args.loss_rtol
        result["checks"]["loss"] = {"rtol": args.loss_rtol, "pass": passed}
        ok &= passed

    fa, fb = adapters(args.a), adapters(args.b)
    tensors = []
    for rel_path in sorted(set(fa) & set(fb)):
        ta, tb = read_safetensors(fa[rel_path]), read_safetensors(fb[rel_path])
        for name in sorted(set(ta) & set(tb)):
            x, y = ta[name], tb[name]
            if len(x) != len(y):
                fail_input(f"{rel_path}: {name}: {len(x)} vs {len(y)} elements")
            diff = math.sqrt(sum((u - v) ** 2 for u, v in zip(x, y)))
            norm = math.sqrt(sum(u * u for u in x)) or 1e-30
            tensors.append({"file": rel_path, "tensor": name,
                            "max_abs_diff": max((abs(u - v) for u, v in zip(x, y)), default=0),
                            "rel_l2_diff": diff / norm})
    if not tensors:
        fail_input("no adapter tensor in common")
    result["tensors"] = {"compared": len(tensors),
                         "max_rel_l2_diff": max(t["rel_l2_diff"] for t in tensors),
                         "max_abs_diff": max(t["max_abs_diff"] for t in tensors),
                         "each": tensors}
    if args.tensor_rtol is not None:
        passed = result["tensors"]["max_rel_l2_diff"] <= args.tensor_rtol
        result["checks"]["tensors"] = {"rtol": args.tensor_rtol, "pass": passed}
        ok &= passed

    keys = sorted(set(ma) & set(mb))
    acc = {"/".join(x for x in k if x): [100 * ma[k], 100 * mb[k]] for k in keys}
    result["accuracy"] = acc
    if keys:
        diffs = [abs(a - b) for a, b in acc.values()]
        mean_a = sum(a for a, _ in acc.values()) / len(acc)
        mean_b = sum(b for _, b in acc.values()) / len(acc)
        result["accuracy_mean"] = [mean_a, mean_b]
        result["accuracy_max_diff_pp"] = max(diffs)
        result["accuracy_mean_diff_pp"] = abs(mean_b - mean_a)
        if args.accuracy_pp is not None:
            passed = max(diffs) <= args.accuracy_pp
            result["checks"]["accuracy"] = {"pp": args.accuracy_pp, "pass": passed}
            ok &= passed
        if args.max_mean_drop_pp is not None:
            passed = mean_b >= mean_a - args.max_mean_drop_pp
            result["checks"]["mean_accuracy_drop"] = {"pp": args.max_mean_drop_pp, "pass": passed}
            ok &= passed
    elif args.accuracy_pp is not None or args.max_mean_drop_pp is not None:
        fail_input("no accuracy metric in common")
    result["pass"] = ok

    print(f"{args.label_a} vs {args.label_b}:")
    L = result["losses"]
    print(f"  loss: {L['steps_compared']} steps, max relative difference {L['max_rel_diff']:.2e} "
          f"(first step {L['first_step_max_rel_diff']:.2e})")
    T = result["tensors"]
    print(f"  adapters: {T['compared']} tensors, max relative L2 difference "
          f"{T['max_rel_l2_diff']:.2e}, max abs difference {T['max_abs_diff']:.2e}")
    for k, (a, b) in acc.items():
        print(f"  {k:40s} {a:6.1f}% {b:6.1f}%  ({b - a:+.1f} pp)")
    if keys:
        print(f"  {'mean over tasks':40s} {mean_a:6.1f}% {mean_b:6.1f}%  ({mean_b - mean_a:+.1f} pp)")
    for name, c in result["checks"].items():
        print(f"  check {name}: {'PASS' if c['pass'] else 'FAIL'} ({c})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
