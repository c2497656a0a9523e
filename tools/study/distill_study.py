#!/usr/bin/env python3
"""Distillation diagnosis on the dev split: the size of L_PLM, L_KL and
L_hidden during MPT's distillation, and MPT's dev accuracy at one k for
several distillation settings (rate, steps, lambda, terms).

    bazel build //worker:mpt_train
    python3 tools/study/distill_study.py --out out/study

Shares its teachers with tools/study/run_study.py (same --out: the runs
are reused). Only dev sets are scored: nothing here looks at test data.
Writes <out>/distill_study.md and <out>/distill_study.json.
"""

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_study as rs  # noqa: E402

# name -> (distillation spec fields, rate, steps); "base" and "kl" are
# run_study's own distillations (same spec, same run folder: reused).
VARIANTS = {
    "base": ({}, 0.03, 300),
    "kl": ({"losses": "kl"}, 0.03, 300),
    "lr0.01": ({}, 0.01, 300),
    "steps100": ({}, 0.03, 100),
    "lambda0.1": ({"lambda": 0.1}, 0.03, 300),
    "plm_only": ({"no_distillation_loss": True}, 0.03, 300),
}


def parts_of(events_path):
    """(first, last) mean loss parts of the STEP events."""
    steps = [e for e in map(json.loads, open(events_path)) if e["kind"] == "STEP"]
    if not steps:
        return None, None
    return steps[0].get("losses"), steps[-1].get("losses")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/study")
    ap.add_argument("--bin", default=os.path.join(rs.REPO, "bazel-bin", "worker", "mpt_train"))
    ap.add_argument("--model", default=os.path.join(rs.REPO, "demo", "model"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--lrs", default="0.1,0.3,1.0")
    ap.add_argument("--dev_seeds", default="0")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--test", default="",
                    help="after the dev grid: run this variant on the test split (seeds "
                         "--seeds) at its dev-best rate; choose it from the dev table only")
    ap.add_argument("--seeds", default="0,1,2")
    args0 = ap.parse_args()
    # run_study's defaults for everything else (same data, budgets, teachers)
    sys.argv = [sys.argv[0], "--out", args0.out, "--bin", args0.bin, "--model", args0.model]
    args = argparse.Namespace(out=os.path.abspath(args0.out), bin=args0.bin, model=args0.model,
                              steps=40, batch_size=8, prompt_tokens=20, source_steps=300,
                              ablations=False, jobs=args0.jobs)
    os.makedirs(args.out, exist_ok=True)
    data = rs.make_target_data(args.out, 500, 200, 128 * 4, 128)
    t0 = time.time()
    teachers, teacher_acc, _, _ = rs.source_artifacts(args)
    src_tasks = [rs.task_entry(t, os.path.join(rs.REPO, "demo", "data", t, "train.jsonl"),
                               os.path.join(rs.REPO, "demo", "data", t, "eval.jsonl"))
                 for t in rs.SOURCES]
    names = args0.variants.split(",")
    lrs = [float(x) for x in args0.lrs.split(",")]
    seeds = [int(x) for x in args0.dev_seeds.split(",")]

    def distil(v):
        fields, lr, steps = VARIANTS[v]
        spec = rs.base_spec(args)
        spec["distillation"] = dict(
            {"tasks": src_tasks, "teacher_adapters": teachers, "sampling": "uniform",
             "train": rs.train_block(args, steps, lr, 0, batch=16, schedule="constant")},
            **fields)
        name = {"base": "distill_mpt", "kl": "distill_mpt_kl"}.get(v, "dd_" + v)
        ev = rs.run_trainer(args, name, spec, "distillation")
        first, last = parts_of(os.path.join(args.out, "runs", name, "events.jsonl"))
        return v, os.path.join(args.out, "runs", name, "out", "distillation"), \
            {t: rs.final_accuracy(ev, t) for t in rs.SOURCES}, first, last

    out = {}
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        for v, path, acc, first, last in ex.map(distil, names):
            out[v] = {"adapter": path, "student_acc": acc, "first": first, "last": last}
            rs.log("distil %s: first %s last %s acc %s" % (v, first, last, acc))

    def dev_run(v, lr, s):
        spec, stage = rs.method_spec(args, "mpt", args0.k, s, lr, "dev", data, teachers,
                                     {"mpt": out[v]["adapter"]})
        name = {"base": "mpt", "kl": "mpt_kl"}.get(v, "dd_" + v)
        ev = rs.run_trainer(args, "%s_k%d_s%d_lr%g_dev" % (name, args0.k, s, lr), spec, stage)
        return v, lr, {t: rs.final_accuracy(ev, t) for t in rs.TARGETS}

    with cf.ThreadPoolExecutor(args.jobs) as ex:
        futs = [ex.submit(dev_run, v, lr, s) for v in names for lr in lrs for s in seeds]
        for f in cf.as_completed(futs):
            v, lr, acc = f.result()
            out[v].setdefault("dev", {}).setdefault(str(lr), []).append(acc)
    L = ["# Distillation on dev (k = %d, seeds %s)" % (args0.k, seeds), "",
         "Teachers: %s" % teacher_acc, "",
         "| variant | rate | steps | L_PLM first → last | L_KL first → last | "
         "L_hidden first → last | student acc (sources) | MPT dev acc by target rate %s | best |"
         % lrs, "|---|---|---|---|---|---|---|---|---|"]

    def fl(o, key):
        a, b = (o["first"] or {}).get(key), (o["last"] or {}).get(key)
        return "-" if a is None else "%.3f → %.3f" % (a, b)

    for v in names:
        o = out[v]
        fields, lr, steps = VARIANTS[v]
        devs = [100 * statistics.mean(statistics.mean(a.values()) for a in o["dev"][str(r)])
                for r in lrs]
        o["dev_mean"] = dict(zip(map(str, lrs), devs))
        L.append("| %s %s | %g | %d | %s | %s | %s | %.1f | %s | %.1f |" % (
            v, json.dumps(fields) if fields else "", lr, steps, fl(o, "plm"), fl(o, "kl"),
            fl(o, "hidden"), 100 * statistics.mean(o["student_acc"].values()),
            " / ".join("%.1f" % d for d in devs), max(devs)))
    if args0.test:
        v = args0.test
        lr = max(lrs, key=lambda r: (out[v]["dev_mean"][str(r)], -r))
        test_seeds = [int(x) for x in args0.seeds.split(",")]

        def test_run(s):
            spec, stage = rs.method_spec(args, "mpt", args0.k, s, lr, "test", data, teachers,
                                         {"mpt": out[v]["adapter"]})
            name = {"base": "mpt", "kl": "mpt_kl"}.get(v, "dd_" + v)
            ev = rs.run_trainer(args, "%s_k%d_s%d_lr%g_test" % (name, args0.k, s, lr), spec,
                                stage)
            return {t: rs.final_accuracy(ev, t) for t in rs.TARGETS}

        with cf.ThreadPoolExecutor(args.jobs) as ex:
            accs = list(ex.map(test_run, test_seeds))
        per_t = {t: rs.mean_std([100 * a[t] for a in accs]) for t in rs.TARGETS}
        avg = rs.mean_std([100 * statistics.mean(a.values()) for a in accs])
        out[v]["test"] = {"rate": lr, "seeds": test_seeds, "per_target": per_t, "average": avg}
        L += ["", "Test (variant `%s` chosen on dev, rate %g, seeds %s): " % (v, lr, test_seeds) +
              ", ".join("%s %s" % (t, rs.fmt(per_t[t])) for t in rs.TARGETS) +
              ", average %s" % rs.fmt(avg)]
    L += ["", "Time: %.0f s." % (time.time() - t0)]
    with open(os.path.join(args.out, "distill_study.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    with open(os.path.join(args.out, "distill_study.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("\n".join(L))


if __name__ == "__main__":
    main()
