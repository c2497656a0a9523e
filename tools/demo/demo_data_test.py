#!/usr/bin/env python3
"""The committed demo task data is what the seeded generator writes, for the
four settings (demo/data, demo/heldout/data, demo/variants/data,
demo/yesno/data), and the yes/no variant targets and the yes/no setting's
sources answer what their instructions ask."""

import json
import os
import subprocess
import sys
import tempfile

ROOT = sys.argv[1]
TOOL = os.path.join(ROOT, "tools", "demo", "make_demo_tasks.py")
sys.path.insert(0, os.path.dirname(TOOL))
import make_demo_tasks as mt  # noqa: E402

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def files(d):
    out = {}
    for base, _, names in os.walk(d):
        for n in names:
            p = os.path.join(base, n)
            out[os.path.relpath(p, d)] = p
    return out


with tempfile.TemporaryDirectory() as tmp:
    for flags, committed in (([], "demo/data"),
                             (["--hold_out_targets"], "demo/heldout/data"),
                             (["--variant_targets"], "demo/variants/data"),
                             (["--yesno_sources"], "demo/yesno/data")):
        out = os.path.join(tmp, committed)
        subprocess.run([sys.executable, TOOL, "--out", out] + flags, check=True,
                       stdout=subprocess.DEVNULL)
        want, got = files(os.path.join(ROOT, committed)), files(out)
        check(sorted(want) == sorted(got),
              "%s: files %s, the generator writes %s" % (committed, sorted(want), sorted(got)))
        for rel in sorted(set(want) & set(got)):
            with open(want[rel], "rb") as a, open(got[rel], "rb") as b:
                check(a.read() == b.read(), "%s/%s differs from the generator's" % (committed, rel))

# The variants' sources are the held-out setting's files and the yes/no
# setting's targets the variants' files, named relative to each tasks.json.
vdir = os.path.join(ROOT, "demo", "variants", "data")
ydir = os.path.join(ROOT, "demo", "yesno", "data")
for d in (vdir, ydir):
    meta = json.load(open(os.path.join(d, "tasks.json")))
    roles = {t["name"]: t["role"] for t in meta["tasks"]}
    check(sorted(n for n, r in roles.items() if r == "target") ==
          ["has_animal", "has_colour", "liked"], "%s targets: %s" % (d, roles))
    for t in meta["tasks"]:
        for key in ("train", "eval"):
            check(os.path.exists(os.path.join(d, t[key])), "%s: %s missing" % (t["name"], t[key]))

# Each variant target's answer follows from its payload.
animals, colours = set(mt.CATEGORIES["animal"]), set(mt.CATEGORIES["colour"])
pos, neg = set(mt.POS_ADJ), set(mt.NEG_ADJ)
answers = {
    "has_animal": lambda p: "yes" if animals & set(p.split()) else "no",
    "has_colour": lambda p: "yes" if colours & set(p.split()) else "no",
    "liked": lambda p: ("yes" if pos & set(p.split()) else "no")
    if bool(pos & set(p.split())) != bool(neg & set(p.split())) else None,
}
yes = {True: "yes", False: "no"}
yesno_answers = {
    "contains": lambda p: yes[p.split(" ; ")[0] in p.split(" ; ")[1].split()],
    "is_even": lambda p: yes[int(p) % 2 == 0],
    "big_sum": lambda p: yes[sum(map(int, p.split())) >= 10],
    "many": lambda p: yes[len(p.split()) >= 4],
    "big_max": lambda p: yes[max(map(int, p.split())) >= 50],
    "is_opposite": lambda p: yes[mt.ANTONYM_MAP.get(p.split()[0]) == p.split()[1]],
}
check(sorted(yesno_answers) == sorted(mt.YESNO_SOURCES), "yes/no sources: %s" % mt.YESNO_SOURCES)
checked = [(vdir, task, answer) for task, answer in answers.items()]
checked += [(ydir, task, answer) for task, answer in yesno_answers.items()]
for d, task, answer in checked:
    counts = {"yes": 0, "no": 0}
    for split in ("train", "eval"):
        for line in open(os.path.join(d, task, split + ".jsonl")):
            r = json.loads(line)
            check(r["task"] == task and r["target"] == answer(r["input"]),
                  "%s %s: %r answered %r" % (task, split, r["input"], r["target"]))
            counts[r["target"]] += 1
    check(min(counts.values()) > 0.35 * sum(counts.values()), "%s: labels %s" % (task, counts))

for f in failures:
    print("FAIL:", f)
print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
