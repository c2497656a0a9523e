#!/usr/bin/env python3
"""Few-shot study: plain prompt tuning, SPoT-style transfer and MPT on the
demo targets, driven through the built `mpt_train` binary.

    bazel build //worker:mpt_train
    python3 tools/study/run_study.py --out out/study            # full study
    python3 tools/study/run_study.py --out out/study --quick    # smoke run
    python3 tools/study/run_study.py --suite heldout --out out/study_heldout --ks 32 --jobs 1 \
        --kl_all_k          # the held-out-target setting (demo/heldout), k = 32
    python3 tools/study/run_study.py --suite lex --out out/study_lex_text --ks 8,32 \
        --steps 200 --kl_all_k --jobs 2 --prompt_tokens 22 --teacher_init text \
        --source_lr 0.003 --distill_lr 0.001 --lrs 0.001,0.003,0.01   # lexical suite
    python3 tools/study/run_study.py --suite yesno --out out/study_yesno --ks 8,32 --steps 200 \
        --kl_all_k --lrs 0.03,0.1,0.3,1.0 --per_target   # yes/no sources (demo/yesno)

Protocol (every method gets exactly the same treatment):

  * Data. For each target task a pool of unique inputs is drawn from the
    task's generator (tools/demo/make_demo_tasks.py). The test set (500) is
    the committed eval set (200 inputs kept out of pretraining) plus fresh
    inputs; the dev set (200) and the training pool are disjoint from it and
    from each other. A run with k shots and seed s trains on k examples drawn
    from the pool with a generator seeded by (k, s); the seed is also the
    training seed (prompt init, batch order).
  * Budget. Every method: the same number of steps, batch size, linear
    decay schedule, prompt length and token limits.
  * Learning rate. For every (method, k) the rate is chosen from the same
    grid by the mean dev accuracy over the seeds and targets; the test set
    is scored only with the chosen rate. Dev runs evaluate once, at the end.
  * Methods.
      random_prompt  the untrained random prompt of pt_random (no training)
      pt_random      plain prompt tuning, PEFT RANDOM init (N(0, 1))
      pt_vocab       plain prompt tuning, sampled-vocabulary init
      pt_text        (--teacher_init text) plain prompt tuning from the
                     embeddings of the base model's preamble text, the
                     same start the teachers get (PEFT's TEXT init)
      prompt_tuning  the best of pt_random / pt_vocab (/ pt_text), chosen on dev
      spot           plain prompt from the mean of the source prompts
                     (SPoT-style transfer; source.init ADAPTERS)
      spot_best      plain prompt from the one source prompt that is best on
                     dev after training (choice made per k on dev)
      mpt            target adaptation from the distilled P*, AVERAGE_SOURCE_TASKS
      mpt_best       (--mpt_best) MPT's adaptation from P* with the task factors
                     of the one source task that is best on dev (PEFT's
                     EXACT_SOURCE_TASK init; choice made per k on dev)
      spot_target    (--per_target) spot_best, with the (source, rate) chosen
      mpt_target     and mpt_best, with the (source, rate) chosen per target
                     on that target's own dev accuracy (the same dev runs as
                     spot_best and mpt_best); each target is then trained in
                     a run of its own
    Ablations (--ablations): mpt_nodistill (P* = mean of teachers, U = V = 1,
    no distillation: target.init TEACHER_MEAN), mpt_kl (distillation with
    L_KL only), mpt_hidden (L_hidden only), mpt_rank4 (rank 4 factors).
  * The teachers and the distillations are trained once (fixed seed) and
    shared by all target runs.

Writes <out>/report.md, <out>/results.json, <out>/acc_vs_k.png,
<out>/acc_vs_step_k<K>.png and every run's spec, log and events under
<out>/runs.
"""

import argparse
import concurrent.futures as cf
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "demo"))
import make_demo_tasks as tasks_mod  # noqa: E402

SOURCES = ["max", "animal", "sentiment", "antonym", "colour"]
TARGETS = ["min", "food", "topic"]
CANDIDATES = {"sentiment": ["positive", "negative"], "topic": ["sports", "food", "weather"]}

DATA_DIR = os.path.join(REPO, "demo", "data")
SOURCE_DATA_DIR = DATA_DIR  # where the source tasks' train/eval files are
SKILLS = tasks_mod.SKILLS  # name -> (role, instructions, generator, metric, candidates)


def use_suite(name):
    """Switches the module to a task suite: "demo" (tools/demo/make_demo_tasks.py,
    demo/data, demo/model), "heldout" (the demo suite with every non-target
    skill as a source, demo/heldout/data, demo/heldout/model, a model never
    pretrained on the targets), "variants" (the held-out model and sources
    with three yes/no variants of source skills as targets, demo/variants/data),
    "yesno" (the held-out model, six yes/no sources in demo/yesno/data and the
    variants' targets) or "lex" (tools/demo/make_lex_tasks.py,
    demo/lex/data, demo/lex/model; its targets were never in pretraining).
    Returns the default model."""
    global SKILLS, SOURCES, TARGETS, CANDIDATES, DATA_DIR, SOURCE_DATA_DIR
    if name == "demo":
        return os.path.join(REPO, "demo", "model")
    if name in ("heldout", "variants", "yesno"):
        skills = {"heldout": tasks_mod.held_out_skills, "variants": tasks_mod.variant_skills,
                  "yesno": tasks_mod.yesno_skills}[name]()
        SOURCES = [n for n, s in skills.items() if s[0] == "source"]
        TARGETS = [n for n, s in skills.items() if s[0] == "target"]
        CANDIDATES = {n: s[4] for n, s in skills.items() if s[3] == "rank"}
        SKILLS = skills
        DATA_DIR = os.path.join(REPO, "demo", "variants" if name == "yesno" else name, "data")
        SOURCE_DATA_DIR = os.path.join(REPO, "demo", "yesno" if name == "yesno" else "heldout",
                                       "data")
        return os.path.join(REPO, "demo", "heldout", "model")
    import make_lex_tasks as lex
    SKILLS = lex.SKILLS
    SOURCES = [n for n, s in lex.SKILLS.items() if s[0] == "source"]
    TARGETS = [n for n, s in lex.SKILLS.items() if s[0] == "target"]
    CANDIDATES = {n: s[4] for n, s in lex.SKILLS.items() if s[3] == "rank"}
    DATA_DIR = SOURCE_DATA_DIR = os.path.join(REPO, "demo", "lex", "data")
    return os.path.join(REPO, "demo", "lex", "model")


MAIN_METHODS = ["pt_random", "pt_vocab", "spot", "mpt"]
PLAIN_METHODS = ["pt_random", "pt_vocab"]  # plus pt_text with --teacher_init text
ABLATIONS = ["mpt_nodistill", "mpt_kl", "mpt_hidden", "mpt_rank4"]
FACTOR_METHODS = ["mpt_factors", "mpt_kl_factors"]


def log(msg):
    print("[study %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ----------------------------------------------------------------- data

def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def make_target_data(out, n_test, n_dev, n_pool, min_pool):
    """test/dev/pool per target; returns {task: {"test": path, "dev": path, "pool": rows}}."""
    data = {}
    for t in TARGETS:
        committed = read_jsonl(os.path.join(DATA_DIR, t, "eval.jsonl"))
        gen = SKILLS[t][2]
        rng = random.Random(7919 + sum(map(ord, t)))
        seen = set(r["input"] for r in committed)
        fresh = []
        attempts = 0
        # Draw unique inputs until the generator stops giving new ones (some
        # tasks have a small input space: topic has about 576).
        while len(committed) + len(fresh) < n_test + n_dev + n_pool and attempts < 100000:
            attempts += 1
            payload, target = gen(rng)
            if payload in seen:
                continue
            seen.add(payload)
            fresh.append({"input": payload, "target": target, "task": t})
        # The test set gives way (below n_test) only where the input space
        # cannot hold n_test plus the largest k plus a dev set of 50.
        n_t = max(len(committed), min(n_test, len(committed) + len(fresh) - min_pool - 50))
        test = (committed + fresh)[:n_t]
        rest = (committed + fresh)[n_t:]
        # dev takes what the pool does not need, up to n_dev.
        n_d = min(n_dev, max(len(rest) - n_pool, len(rest) // 3), len(rest) - min_pool)
        dev, pool = rest[:n_d], rest[n_d:]
        d = os.path.join(out, "data", t)
        write_jsonl(os.path.join(d, "test.jsonl"), test)
        write_jsonl(os.path.join(d, "dev.jsonl"), dev)
        write_jsonl(os.path.join(d, "pool.jsonl"), pool)
        data[t] = {"test": os.path.join(d, "test.jsonl"), "dev": os.path.join(d, "dev.jsonl"),
                   "pool": pool, "sizes": (len(test), len(dev), len(pool))}
    return data


def shots(data, out, task, k, seed):
    path = os.path.join(out, "data", task, "k%d_s%d.jsonl" % (k, seed))
    if not os.path.exists(path):
        rng = random.Random(1000003 * (seed + 1) + k)
        write_jsonl(path, rng.sample(data[task]["pool"], k))
    return path


# ----------------------------------------------------------------- runs

def task_entry(name, train, evalp):
    e = {"name": name, "train_path": train}
    if evalp:
        e["eval_path"] = evalp
    if name in CANDIDATES:
        e["eval_mode"] = "rank"
        e["candidates"] = CANDIDATES[name]
    return e


def train_block(args, steps, lr, seed, eval_every=0, batch=None, schedule="linear", extra=None):
    b = {"steps": steps, "batch_size": batch or args.batch_size, "seed": seed,
         "eval_every": eval_every, "max_input_length": 64, "max_target_length": 8,
         "optimizer": {"learning_rate": lr, "schedule": schedule}}
    b.update(extra or {})
    return b


def run_trainer(args, name, spec, stage):
    """Runs mpt_train on `spec`; returns the EVAL events."""
    d = os.path.join(args.out, "runs", name)
    os.makedirs(d, exist_ok=True)
    spec_path = os.path.join(d, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)
    events = os.path.join(d, "events.jsonl")
    done = os.path.join(d, "done")
    if not os.path.exists(done):
        if os.path.exists(events):
            os.remove(events)
        cmd = [args.bin, "--spec=" + spec_path, "--out=" + os.path.join(d, "out"),
               "--stage=" + stage, "--threads=1", "--progress=none", "--events=" + events,
               "--work_dir=" + os.path.join(d, "work")]
        with open(os.path.join(d, "log.txt"), "w") as logf:
            rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT)
        if rc != 0:
            raise RuntimeError("%s failed (rc %d), see %s/log.txt" % (name, rc, d))
        open(done, "w").close()
    return [e for e in map(json.loads, open(events)) if e["kind"] == "EVAL"]


def final_accuracy(evals, task):
    """Accuracy of `task` at its last step (not the best-kept prompt)."""
    last, acc = -1, None
    for e in evals:
        if e["task"] not in (task, "shared", "all") and e["stage"] != "distillation":
            continue
        key = "%s/accuracy" % task
        if key in e["metrics"] and e["step"] >= last:
            last, acc = e["step"], e["metrics"][key]
    return acc


def curve(evals, task):
    pts = {}
    for e in evals:
        if e["task"] != task:
            continue
        m = e["metrics"]
        if "initial/%s/accuracy" % task in m:
            pts[0] = m["initial/%s/accuracy" % task]
        elif "%s/accuracy" % task in m:
            pts[e["step"]] = m["%s/accuracy" % task]
    return sorted(pts.items())


def preamble_text():
    """The text before a payload in the base model's instructed inputs, with
    no instruction: the start of --teacher_init text prompts and pt_text."""
    return tasks_mod.format_instructed("", "").strip()


def base_spec(args):
    return {"base_model": args.model, "prompt": {"num_virtual_tokens": args.prompt_tokens}}


def source_artifacts(args):
    """Teachers (one per source task) and the distillations; trained once."""
    data_dir = SOURCE_DATA_DIR
    src_tasks = [task_entry(t, os.path.join(data_dir, t, "train.jsonl"),
                            os.path.join(data_dir, t, "eval.jsonl")) for t in SOURCES]
    spec = base_spec(args)
    spec["source"] = {"tasks": src_tasks,
                      "train": train_block(args, args.source_steps, args.source_lr,
                                           args.source_seed, batch=16, schedule="constant")}
    t0 = time.time()
    if args.teacher_init == "text":
        spec["source"]["init"] = "TEXT"
        spec["source"]["init_text"] = preamble_text()
    if args.teacher_init == "shared_vocab":
        # One sampled-vocabulary prompt that every teacher starts from: a
        # one-step run at a negligible rate writes the untrained init.
        init_spec = base_spec(args)
        init_spec["source"] = {"tasks": src_tasks[:1], "init": "SAMPLE_VOCAB",
                               "train": train_block(args, 1, 1e-12, args.source_seed, batch=1,
                                                    schedule="constant")}
        run_trainer(args, "teacher_init", init_spec, "source")
        spec["source"]["init"] = "ADAPTERS"
        spec["source"]["init_adapters"] = [
            os.path.join(args.out, "runs", "teacher_init", "out", "source", SOURCES[0])]
    ev = run_trainer(args, "teachers", spec, "source")
    teachers = [os.path.join(args.out, "runs", "teachers", "out", "source", t) for t in SOURCES]
    teacher_acc = {t: final_accuracy(ev, t) for t in SOURCES}
    log("teachers: %s (%.0fs)" % (teacher_acc, time.time() - t0))
    variants = {"mpt": {}, "mpt_kl": {"losses": "kl"}, "mpt_hidden": {"losses": "hidden"},
                "mpt_rank4": {}}
    wanted = ["mpt"] + ([m for m in ABLATIONS if m in variants] if args.ablations else [])
    if (args.mpt_best or args.per_target) and args.one_from not in wanted:
        wanted.append(args.one_from)
    if (args.kl_all_k or args.factors) and "mpt_kl" not in wanted:
        wanted.append("mpt_kl")
    distilled, distill_acc = {}, {}

    def one(v):
        spec = base_spec(args)
        if v == "mpt_rank4":
            spec["prompt"]["num_ranks"] = 4
        spec["distillation"] = dict(
            {"tasks": src_tasks, "teacher_adapters": teachers, "sampling": "uniform",
             "train": train_block(args, args.distill_steps or args.source_steps, args.distill_lr,
                                  args.source_seed, batch=16, schedule="constant")}, **variants[v])
        ev = run_trainer(args, "distill_" + v, spec, "distillation")
        return v, os.path.join(args.out, "runs", "distill_" + v, "out", "distillation"), \
            {t: final_accuracy(ev, t) for t in SOURCES}

    with cf.ThreadPoolExecutor(args.jobs) as ex:
        for v, path, acc in ex.map(one, wanted):
            distilled[v], distill_acc[v] = path, acc
            log("distillation %s: %s" % (v, acc))
    return teachers, teacher_acc, distilled, distill_acc


def method_spec(args, method, k, seed, lr, split, data, teachers, distilled, eval_every=0,
                teacher_index=None, only_task=None):
    evalp = lambda t: data[t][split]
    tasks = [task_entry(t, shots(data, args.out, t, k, seed), evalp(t))
             for t in ([only_task] if only_task else TARGETS)]
    spec = base_spec(args)
    extra = {"eval_before_training": True} if (method == "pt_random" and split == "test") else None
    tb = train_block(args, args.steps, lr, seed, eval_every=eval_every, extra=extra)
    if method in ("pt_random", "pt_vocab", "pt_text", "spot", "spot_one"):
        src = {"tasks": tasks, "train": tb,
               "init": {"pt_random": "RANDOM", "pt_vocab": "SAMPLE_VOCAB",
                        "pt_text": "TEXT"}.get(method, "ADAPTERS")}
        if method == "pt_text":
            src["init_text"] = preamble_text()
        if method == "spot":
            src["init_adapters"] = teachers
        if method == "spot_one":
            src["init_adapters"] = [teachers[teacher_index]]
        spec["source"] = src
        return spec, "source"
    tgt = {"tasks": tasks, "train": tb}
    if method.endswith("_factors"):
        # Only the task factors U, V train; P* stays as distilled.
        tgt["trainable"] = "factors"
        method = method[:-len("_factors")]
    if method == "mpt_nodistill":
        tgt["init"] = "TEACHER_MEAN"
        tgt["teacher_adapters"] = teachers
    elif method.startswith("mpt") and method.endswith("_one"):
        # mpt_one: from the default distillation; mpt_kl_one, mpt_rank4_one:
        # from that variant's (--one_from).
        variant = method[:-len("_one")]
        tgt["init"] = "EXACT_SOURCE_TASK"
        tgt["init_task"] = teacher_index
        tgt["source_adapter"] = distilled[variant]
        if variant == "mpt_rank4":
            spec["prompt"]["num_ranks"] = 4
    else:
        tgt["init"] = "AVERAGE_SOURCE_TASKS"
        tgt["source_adapter"] = distilled[method]
        if method == "mpt_rank4":
            spec["prompt"]["num_ranks"] = 4
    spec["target"] = tgt
    return spec, "target"


def run_name(method, k, seed, lr, split):
    return "%s_k%d_s%d_lr%g_%s" % (method, k, seed, lr, split)


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/study")
    ap.add_argument("--bin", default=os.path.join(REPO, "bazel-bin", "worker", "mpt_train"))
    ap.add_argument("--model", default=None, help="default: the suite's model")
    ap.add_argument("--suite", choices=["demo", "heldout", "variants", "yesno", "lex"],
                    default="demo")
    ap.add_argument("--ks", default="8,32,128")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lrs", default="0.1,0.3,1.0")
    ap.add_argument("--dev_seeds", default="0",
                    help="seeds of the dev runs that choose the rate (same for every method)")
    ap.add_argument("--spot_best", action="store_true",
                    help="also SPoT from the one teacher best on dev (one dev grid per source)")
    ap.add_argument("--mpt_best", action="store_true",
                    help="also MPT from P* with the one source task's factors best on dev "
                         "(EXACT_SOURCE_TASK; one dev grid per source)")
    ap.add_argument("--per_target", action="store_true",
                    help="also spot_target and mpt_target: the one-source starts with the "
                         "(source, rate) chosen on each target's own dev accuracy (implies "
                         "--spot_best and --mpt_best)")
    ap.add_argument("--one_from", choices=["mpt", "mpt_kl", "mpt_rank4"], default="mpt",
                    help="the distillation whose task factors mpt_best and mpt_target start "
                         "from (default mpt: L_KL + L_hidden, rank 1)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--prompt_tokens", type=int, default=20)
    ap.add_argument("--source_steps", type=int, default=300)
    ap.add_argument("--source_seed", type=int, default=0,
                    help="seed of the teachers and distillations (init, batch order)")
    ap.add_argument("--source_lr", type=float, default=0.3, help="the teachers' rate")
    ap.add_argument("--distill_lr", type=float, default=0.03, help="the distillations' rate")
    ap.add_argument("--distill_steps", type=int, default=0,
                    help="the distillations' steps (batch 16, all source tasks mixed; "
                         "0: --source_steps)")
    ap.add_argument("--teacher_init", choices=["random", "shared_vocab", "text"], default="random",
                    help="teachers' start: PEFT RANDOM, a different draw per task (default), "
                         "one sampled-vocabulary prompt shared by every teacher, or the base "
                         "model's preamble text (PEFT TEXT init; adds the pt_text baseline)")
    ap.add_argument("--curve_points", type=int, default=2)
    ap.add_argument("--n_test", type=int, default=500)
    ap.add_argument("--n_dev", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--ablation_k", type=int, default=32, help="k at which ablations run")
    ap.add_argument("--kl_all_k", action="store_true",
                    help="also run mpt_kl (L_KL-only distillation) at every k")
    ap.add_argument("--factors", action="store_true",
                    help="also run mpt_factors and mpt_kl_factors at every k: MPT's adaptation "
                         "training only the task factors U, V (P* frozen as distilled)")
    ap.add_argument("--data_k", type=int, default=128,
                    help="size the test/dev/pool split for this largest k (default 128, so "
                         "that a run with fewer ks reuses the same data and runs later)")
    ap.add_argument("--quick", action="store_true", help="k=8, one seed, two rates: a smoke run")
    args = ap.parse_args()
    if args.per_target:
        args.spot_best = args.mpt_best = True
    default_model = use_suite(args.suite)
    args.model = args.model or default_model
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        sys.exit("run_study: no base model at %s (demo/README.md says how to make the %s "
                 "suite's model)" % (args.model, args.suite))
    if args.quick:
        args.ks, args.seeds, args.lrs, args.steps, args.source_steps = "8", "0", "0.1,0.3", 20, 60
    args.out = os.path.abspath(args.out)
    ks = [int(x) for x in args.ks.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    dev_seeds = [int(x) for x in args.dev_seeds.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    start = time.time()
    os.makedirs(args.out, exist_ok=True)

    data_k = max(ks + [args.data_k or 0])
    data = make_target_data(args.out, args.n_test, args.n_dev, data_k * 4, data_k)
    for t in TARGETS:
        log("%s: test %d, dev %d, training pool %d" % ((t,) + data[t]["sizes"]))
        if data[t]["sizes"][2] < max(ks):
            sys.exit("pool of %s too small for k=%d" % (t, max(ks)))
    teachers, teacher_acc, distilled, distill_acc = source_artifacts(args)
    t_source = time.time() - start

    # (method, k) pairs to run; ablations only at ablation_k.
    if args.teacher_init == "text":
        MAIN_METHODS.insert(2, "pt_text")
        PLAIN_METHODS.append("pt_text")
    plan = [(m, k) for k in ks for m in MAIN_METHODS]
    if args.ablations:
        plan += [(m, args.ablation_k) for m in ABLATIONS if args.ablation_k in ks]
    if args.kl_all_k or args.factors:
        plan += [("mpt_kl", k) for k in ks if ("mpt_kl", k) not in plan]
    if args.factors:
        plan += [(m, k) for k in ks for m in FACTOR_METHODS]
    # spot_best / mpt_best: a dev grid per source task for its "one" method.
    mpt_one = args.one_from + "_one"  # mpt_one, mpt_kl_one, mpt_rank4_one
    best_of = {b: one for b, one in (("spot_best", "spot_one"), ("mpt_best", mpt_one))
               if getattr(args, b)}
    one_runs = [("%s%d" % (one, i), k) for one in best_of.values() for k in ks
                for i in range(len(SOURCES))]

    def submit_dev(ex, method, k):
        futs = {}
        for lr in lrs:
            for s in dev_seeds:
                base = method
                ti = None
                for one in best_of.values():
                    if method.startswith(one):
                        base, ti = one, int(method[len(one):])
                spec, stage = method_spec(args, base, k, s, lr, "dev", data, teachers, distilled,
                                          teacher_index=ti)
                futs[ex.submit(run_trainer, args, run_name(method, k, s, lr, "dev"), spec,
                               stage)] = (method, k, s, lr)
        return futs

    dev = {}  # (method, k, lr) -> list of per-run mean-over-targets dev acc
    dev_task = {}  # (method, k, lr, task) -> list
    t0 = time.time()
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        futs = {}
        for m, k in plan + one_runs:
            futs.update(submit_dev(ex, m, k))
        n = len(futs)
        for i, f in enumerate(cf.as_completed(futs)):
            m, k, s, lr = futs[f]
            ev = f.result()
            accs = {t: final_accuracy(ev, t) for t in TARGETS}
            dev.setdefault((m, k, lr), []).append(statistics.mean(accs.values()))
            for t in TARGETS:
                dev_task.setdefault((m, k, lr, t), []).append(accs[t])
            if (i + 1) % 20 == 0 or i + 1 == n:
                log("dev runs %d/%d (%.0fs)" % (i + 1, n, time.time() - t0))
    t_dev = time.time() - t0

    def best_lr(m, k):
        return max(lrs, key=lambda lr: (statistics.mean(dev[(m, k, lr)]), -lr))

    chosen = {(m, k): best_lr(m, k) for m, k in plan}
    # spot_best / mpt_best: the (source task, rate) best on dev, per k.
    best_choice = {}  # (best method, k) -> (source index, rate)
    for b, one in best_of.items():
        for k in ks:
            sc, i, lr = max((statistics.mean(dev[("%s%d" % (one, i), k, lr)]), i, lr)
                            for i in range(len(SOURCES)) for lr in lrs)
            best_choice[(b, k)] = (i, lr)
    # spot_target / mpt_target: the (source task, rate) best on each target's dev.
    per_target = {"spot_target": "spot_one", "mpt_target": mpt_one} if args.per_target else {}
    target_choice = {}  # (method, k, target) -> (source index, rate)
    for b, one in per_target.items():
        for k in ks:
            for t in TARGETS:
                sc, i, lr = max((statistics.mean(dev_task[("%s%d" % (one, i), k, lr, t)]), i, lr)
                                for i in range(len(SOURCES)) for lr in lrs)
                target_choice[(b, k, t)] = (i, lr)
    for k in ks:
        log("k=%d rates: %s; %s" % (
            k, {m: chosen[(m, kk)] for m, kk in plan if kk == k},
            ", ".join("%s %s lr %g" % (b, SOURCES[i], lr)
                      for (b, kk), (i, lr) in best_choice.items() if kk == k) or "-"))
        for b in per_target:
            log("k=%d %s: %s" % (k, b, ", ".join(
                "%s <- %s lr %g" % (t, SOURCES[target_choice[(b, k, t)][0]],
                                    target_choice[(b, k, t)][1]) for t in TARGETS)))

    # Test runs at the chosen rates, with a learning curve.
    every = max(1, args.steps // args.curve_points)
    test = {}  # (method, k, seed) -> events
    t0 = time.time()
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        futs = {}
        for m, k in plan + list(best_choice):
            for s in seeds:
                name = m
                if m in best_of:
                    i, lr = best_choice[(m, k)]
                    name = "%s%d" % (best_of[m], i)  # the source and distillation in the name
                    spec, stage = method_spec(args, best_of[m], k, s, lr, "test", data, teachers,
                                              distilled, eval_every=every, teacher_index=i)
                else:
                    lr = chosen[(m, k)]
                    spec, stage = method_spec(args, m, k, s, lr, "test", data, teachers,
                                              distilled, eval_every=every)
                futs[ex.submit(run_trainer, args, run_name(name, k, s, lr, "test"), spec,
                               stage)] = (m, k, s)
        for (b, k, t), (i, lr) in target_choice.items():
            for s in seeds:
                spec, stage = method_spec(args, per_target[b], k, s, lr, "test", data, teachers,
                                          distilled, eval_every=every, teacher_index=i,
                                          only_task=t)
                futs[ex.submit(run_trainer, args,
                               run_name("%s%d_%s" % (per_target[b], i, t), k, s, lr, "test"),
                               spec, stage)] = (b, k, s, t)
        for f in cf.as_completed(futs):
            test[futs[f]] = f.result()
    t_test = time.time() - t0
    log("test runs done (%.0fs)" % t_test)

    # ------------------------------------------------------------ results
    methods = MAIN_METHODS + list(best_of) + list(per_target) + \
        ([m for m in ABLATIONS] if args.ablations else []) + \
        (["mpt_kl"] if (args.kl_all_k or args.factors) and not args.ablations else []) + \
        (FACTOR_METHODS if args.factors else [])
    res = {}  # k -> method -> task -> (mean, std); plus "average"
    curves = {}
    for k in ks:
        res[k] = {}
        # random prompt: the untrained prompt of pt_random's test runs
        rows = {"random_prompt": {t: [next((a for st, a in curve(test[("pt_random", k, s)], t)
                                            if st == 0), None) for s in seeds] for t in TARGETS}}
        for m in methods:
            # per-target methods: one run per (target, seed)
            key = (lambda s, t: (m, k, s, t)) if m in per_target else (lambda s, t: (m, k, s))
            if key(seeds[0], TARGETS[0]) not in test:
                continue
            rows[m] = {t: [final_accuracy(test[key(s, t)], t) for s in seeds] for t in TARGETS}
            curves[(m, k)] = {t: [curve(test[key(s, t)], t) for s in seeds] for t in TARGETS}
        # prompt_tuning: the plain variant better on dev (mean over its chosen rate)
        pv = max(PLAIN_METHODS,
                 key=lambda m: statistics.mean(dev[(m, k, chosen[(m, k)])]))
        rows["prompt_tuning"] = rows[pv]
        res[k]["_prompt_tuning_is"] = pv
        seed_avgs = {m: [statistics.mean([per_task[t][i] for t in TARGETS])
                         for i in range(len(seeds))] for m, per_task in rows.items()}
        for m, per_task in rows.items():
            res[k][m] = {t: mean_std([100 * x for x in per_task[t]]) for t in TARGETS}
            res[k][m]["average"] = mean_std([100 * x for x in seed_avgs[m]])
            # The difference from prompt tuning, paired by seed (same k-shot draw).
            res[k][m]["vs_prompt_tuning"] = mean_std(
                [100 * (a - b) for a, b in zip(seed_avgs[m], seed_avgs["prompt_tuning"])])
    total = time.time() - start

    write_report(args, ks, seeds, lrs, res, chosen, best_choice, teacher_acc, distill_acc, data,
                 dev, (t_source, t_dev, t_test, total), methods, target_choice)
    plots(args, ks, res, curves, methods)
    summary = {"setting": "%s suite, model %s, %d sources, %d prompt tokens, %d steps, batch %d, linear decay; "
                          "rate per method chosen on dev from %s" % (
                              args.suite, os.path.relpath(args.model, REPO), len(SOURCES),
                              args.prompt_tokens, args.steps, args.batch_size, lrs),
               "seeds": seeds, "ks": ks, "seconds": round(total),
               "results": {str(k): {m: v for m, v in res[k].items()} for k in ks},
               "rates": {"%s@k%d" % mk: lr for mk, lr in chosen.items()},
               "spot_best": {str(k): [SOURCES[i], lr]
                             for (b, k), (i, lr) in best_choice.items() if b == "spot_best"},
               "mpt_best": {str(k): [SOURCES[i], lr]
                            for (b, k), (i, lr) in best_choice.items() if b == "mpt_best"},
               "per_target": {"%s@k%d" % (b, k): {t: [SOURCES[i], lr]
                                                  for (bb, kk, t), (i, lr) in target_choice.items()
                                                  if bb == b and kk == k}
                              for b in per_target for k in ks}}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log("done in %.0fs: %s" % (total, os.path.join(args.out, "report.md")))


def fmt(ms):
    m, s = ms
    return "-" if m is None else "%.1f ± %.1f" % (m, s)


def write_report(args, ks, seeds, lrs, res, chosen, best_choice, teacher_acc, distill_acc, data,
                 dev, times, methods, target_choice):
    t_source, t_dev, t_test, total = times
    L = ["# Few-shot study", "",
         "Command: `python3 tools/study/run_study.py %s`" % " ".join(sys.argv[1:]), "",
         "Base model `%s`; %d prompt tokens (encoder only); every target run: %d steps, "
         "batch %d, AdamW with linear decay, max 64 input / 8 target tokens. Seeds %s "
         "(k-shot draw, init, batch order). Learning rate per (method, k) from %s by mean "
         "dev accuracy of the runs with seed(s) %s. Test: %s examples per target; dev %s; neither is trained on." % (
             os.path.relpath(args.model, REPO), args.prompt_tokens, args.steps, args.batch_size,
             seeds, lrs, args.dev_seeds, ", ".join("%s %d" % (t, data[t]["sizes"][0]) for t in TARGETS),
             ", ".join("%s %d" % (t, data[t]["sizes"][1]) for t in TARGETS)), "",
         "Teachers start from %s; teachers' and distillations' seed %d." % (
             {"shared_vocab": "one sampled-vocabulary prompt shared by all",
              "text": "the embeddings of the preamble text %r (PEFT TEXT init)" % preamble_text()
              }.get(args.teacher_init, "PEFT RANDOM init, a different draw per task"),
             args.source_seed), "",
         "Teachers' rate %g, distillations' rate %g, %d distillation steps." % (
             args.source_lr, args.distill_lr, args.distill_steps or args.source_steps), "",
         "Teachers (source prompts, eval accuracy): " +
         ", ".join("%s %.1f%%" % (t, 100 * a) for t, a in teacher_acc.items()), ""]
    for v, acc in distill_acc.items():
        L.append("Distillation `%s` student accuracy: " % v +
                 ", ".join("%s %.1f%%" % (t, 100 * a) for t, a in acc.items()))
    L.append("")
    if args.mpt_best or args.per_target:
        L += ["`mpt_best` and `mpt_target` start from the task factors of the `%s` "
              "distillation." % args.one_from, ""]
    for k in ks:
        L += ["## k = %d" % k, "",
              "Test accuracy, mean ± std over %d seeds. `prompt_tuning` is `%s` (chosen on dev)." % (
                  len(seeds), res[k]["_prompt_tuning_is"]), "",
              "| method | rate | " + " | ".join(TARGETS) + " | average |",
              "|---|---|" + "---|" * (len(TARGETS) + 1)]
        for m in ["random_prompt", "prompt_tuning"] + methods:
            if m not in res[k]:
                continue
            if (m, k) in best_choice:
                rate = "%g (%s)" % (best_choice[(m, k)][1], SOURCES[best_choice[(m, k)][0]])
            elif (m, k, TARGETS[0]) in target_choice:
                rate = "per target"
            else:
                rate = "%g" % chosen[(m, k)] if (m, k) in chosen else "-"
            L.append("| %s | %s | " % (m, rate) + " | ".join(fmt(res[k][m][t]) for t in TARGETS) +
                     " | %s |" % fmt(res[k][m]["average"]))
        pt = res[k]["prompt_tuning"]["average"]
        L.append("")
        choices = sorted({m for (m, kk, t) in target_choice if kk == k})
        for m in choices:
            L.append("`%s` per target (source, rate): %s." % (m, ", ".join(
                "%s <- %s %g" % (t, SOURCES[target_choice[(m, k, t)][0]],
                                 target_choice[(m, k, t)][1]) for t in TARGETS)))
        if choices:
            L.append("")
        L += ["Difference from prompt tuning, paired by seed (mean ± std over the seeds of "
              "the per-seed average difference; standard error in brackets):", ""]
        for m in methods:
            if m not in res[k] or m == "prompt_tuning":
                continue
            d, sd = res[k][m]["vs_prompt_tuning"]
            L.append("- %s: %+.1f ± %.1f (%.1f)" % (m, d, sd, sd / math.sqrt(len(seeds))))
        L.append("")
        for m in ("mpt", "mpt_kl", "mpt_best", "mpt_target") + tuple(FACTOR_METHODS):
            if m not in res[k]:
                continue
            mp = res[k][m]["average"]
            L.append("%s − prompt tuning (average): %+.1f points (std %.1f / %.1f)." % (
                {"mpt": "MPT", "mpt_kl": "MPT (L_KL only)", "mpt_best": "MPT (one source's factors)",
                 "mpt_target": "MPT (one source's factors per target)",
                 "mpt_factors": "MPT (factors only)",
                 "mpt_kl_factors": "MPT (L_KL only, factors only)"}[m], mp[0] - pt[0], mp[1],
                pt[1]))
        L.append("")
    L += ["## Dev accuracy by rate (mean over dev seeds and targets)", "",
          "| method | k | " + " | ".join("%g" % lr for lr in lrs) + " |",
          "|---|---|" + "---|" * len(lrs)]
    for (m, k) in sorted(chosen):
        L.append("| %s | %d | " % (m, k) + " | ".join(
            "%.1f" % (100 * statistics.mean(dev[(m, k, lr)])) for lr in lrs) + " |")
    L += ["", "Plots: `acc_vs_k.png`, `acc_vs_step_k<K>.png`.", "",
          "Time: teachers and distillations %.0f s, dev grid %.0f s, test runs %.0f s, "
          "total %.0f s (%d parallel process(es), 1 thread each)." % (
              t_source, t_dev, t_test, total, args.jobs)]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def plots(args, ks, res, curves, methods):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plots")
        return
    show = ["random_prompt", "pt_random", "pt_vocab", "pt_text", "spot", "spot_best", "mpt",
            "mpt_best", "spot_target", "mpt_target"] + \
        [m for m in methods if m in ABLATIONS + FACTOR_METHODS]
    fig, axes = plt.subplots(1, len(TARGETS) + 1, figsize=(4 * (len(TARGETS) + 1), 3.5))
    for ax, t in zip(axes, TARGETS + ["average"]):
        for m in show:
            pts = [(k, res[k][m][t]) for k in ks if m in res[k]]
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [p[1][0] for p in pts]
            e = [p[1][1] for p in pts]
            ax.errorbar(x, y, yerr=e, label=m, marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_title(t)
        ax.set_xlabel("k (training examples)")
        ax.set_ylabel("test accuracy %")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "acc_vs_k.png"), dpi=80)
    plt.close(fig)
    for k in ks:
        fig, axes = plt.subplots(1, len(TARGETS), figsize=(4 * len(TARGETS), 3.5))
        for ax, t in zip(axes, TARGETS):
            for m in show:
                if (m, k) not in curves:
                    continue
                runs = curves[(m, k)][t]
                steps = sorted(set(s for r in runs for s, _ in r))
                ys = [statistics.mean([dict(r).get(s) for r in runs if s in dict(r)]) * 100
                      for s in steps]
                ax.plot(steps, ys, marker=".", label=m)
            ax.set_title("%s, k=%d" % (t, k))
            ax.set_xlabel("step")
            ax.set_ylabel("test accuracy %")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "acc_vs_step_k%d.png" % k), dpi=80)
        plt.close(fig)


if __name__ == "__main__":
    main()
