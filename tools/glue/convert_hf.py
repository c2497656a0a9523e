#!/usr/bin/env python3
"""Hugging Face dataset exports -> our JSON Lines, in text-to-text form.

    python3 tools/glue/convert_hf.py --task mnli \
        --input glue-mnli/train.parquet --out data/mnli/train.jsonl
    python3 tools/glue/convert_hf.py --list

Input: one split of a dataset as Hugging Face `datasets` exports it
(`ds.to_parquet(...)` or `ds.to_json(...)`, i.e. JSON Lines, or the parquet
files of the Hub's `refs/convert/parquet` branch). Parquet needs pyarrow;
JSON Lines needs nothing beyond the standard library.

Output: {"input": ..., "target": ..., "task": ...} per line. Inputs name
their fields ("premise: ... hypothesis: ..."), the way the MPT paper's T5
text-to-text formats do; there is no task-name prefix by default because
the soft prompt stands for the task (`--task_prefix` adds T5's prefix).
Class labels become words (`entailment`, `not_entailment`, ...); the
candidates for `eval_mode: "rank"` are printed and listed by --list.
Examples without a label (the GLUE/SuperGLUE test splits have label -1)
are skipped and counted.
"""

import argparse
import json
import os
import sys


def _fields(*pairs):
    return " ".join("%s: %s" % (name, str(value).strip()) for name, value in pairs)


def _label(names):
    def get(ex):
        lab = ex.get("label")
        if lab is None or lab == -1 or not (0 <= int(lab) < len(names)):
            return None
        return names[int(lab)]
    return get


def _stsb_target(ex):
    lab = ex.get("label")
    if lab is None or lab < 0:
        return None
    # T5 rounds the 0-5 similarity to the nearest 0.2 and writes it as text.
    return "%.1f" % (round(float(lab) * 5) / 5)


def _first_answer(ex):
    ans = ex.get("answers")
    if isinstance(ans, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
        texts = ans.get("text") or []
    else:  # ReCoRD: a list of strings
        texts = ans or []
    texts = [t for t in texts if str(t).strip()]
    return str(texts[0]).strip() if texts else None


def _record_input(ex):
    ents = ex.get("entities") or []
    passage = str(ex["passage"]).replace("@highlight\n", "- ")
    return _fields(("query", ex["query"]), ("entities", ", ".join(ents)), ("passage", passage))


def _copa_input(ex):
    return _fields(("choice1", ex["choice1"]), ("choice2", ex["choice2"]),
                   ("premise", ex["premise"]), ("question", ex["question"]))


def _wsc_input(ex):
    return _fields(("text", ex["text"]), ("span1", ex["span1_text"]),
                   ("span2", ex["span2_text"]))


# name -> (T5 prefix, input builder, target builder, rank candidates or None)
TASKS = {
    # GLUE; the paper's source tasks are MNLI, QNLI, QQP, SST-2 (+ SQuAD, ReCoRD)
    "mnli": ("mnli", lambda e: _fields(("premise", e["premise"]), ("hypothesis", e["hypothesis"])),
             _label(["entailment", "neutral", "contradiction"]),
             ["entailment", "neutral", "contradiction"]),
    "qnli": ("qnli", lambda e: _fields(("question", e["question"]), ("sentence", e["sentence"])),
             _label(["entailment", "not_entailment"]), ["entailment", "not_entailment"]),
    "qqp": ("qqp", lambda e: _fields(("question1", e["question1"]), ("question2", e["question2"])),
            _label(["not_duplicate", "duplicate"]), ["not_duplicate", "duplicate"]),
    "sst2": ("sst2", lambda e: _fields(("sentence", e["sentence"])),
             _label(["negative", "positive"]), ["negative", "positive"]),
    "cola": ("cola", lambda e: _fields(("sentence", e["sentence"])),
             _label(["unacceptable", "acceptable"]), ["unacceptable", "acceptable"]),
    "stsb": ("stsb", lambda e: _fields(("sentence1", e["sentence1"]), ("sentence2", e["sentence2"])),
             _stsb_target, None),
    "mrpc": ("mrpc", lambda e: _fields(("sentence1", e["sentence1"]), ("sentence2", e["sentence2"])),
             _label(["not_equivalent", "equivalent"]), ["not_equivalent", "equivalent"]),
    "rte": ("rte", lambda e: _fields(("sentence1", e["sentence1"]), ("sentence2", e["sentence2"])),
            _label(["entailment", "not_entailment"]), ["entailment", "not_entailment"]),
    # question answering sources: the answer is generated
    "squad": ("squad", lambda e: _fields(("question", e["question"]), ("context", e["context"])),
              _first_answer, None),
    "record": ("record", _record_input, _first_answer, None),
    # SuperGLUE targets
    "boolq": ("boolq", lambda e: _fields(("question", e["question"]), ("passage", e["passage"])),
              _label(["False", "True"]), ["False", "True"]),
    "cb": ("cb", lambda e: _fields(("premise", e["premise"]), ("hypothesis", e["hypothesis"])),
           _label(["entailment", "contradiction", "neutral"]),
           ["entailment", "contradiction", "neutral"]),
    "multirc": ("multirc", lambda e: _fields(("question", e["question"]), ("answer", e["answer"]),
                                             ("paragraph", e["paragraph"])),
                _label(["False", "True"]), ["False", "True"]),
    "wic": ("wic", lambda e: _fields(("sentence1", e["sentence1"]), ("sentence2", e["sentence2"]),
                                     ("word", e["word"])),
            _label(["False", "True"]), ["False", "True"]),
    "wsc": ("wsc", _wsc_input, _label(["False", "True"]), ["False", "True"]),
    "copa": ("copa", _copa_input, _label(["choice1", "choice2"]), ["choice1", "choice2"]),
    "superglue-rte": ("rte", lambda e: _fields(("premise", e["premise"]),
                                               ("hypothesis", e["hypothesis"])),
                      _label(["entailment", "not_entailment"]), ["entailment", "not_entailment"]),
}


def read_rows(path):
    """Rows of a parquet file (pyarrow) or a JSON Lines / JSON array file."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            sys.exit("convert_hf: %s: reading parquet needs pyarrow (pip install pyarrow), "
                     "or export the split as JSON Lines" % path)
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit("convert_hf: %s:%d: not JSON: %s" % (path, n, e))
    return rows


def convert(task, rows, task_prefix=False, name=None):
    """Returns (examples, skipped)."""
    prefix, make_input, make_target, _ = TASKS[task]
    out, skipped = [], 0
    for i, ex in enumerate(rows):
        try:
            target = make_target(ex)
            text = make_input(ex)
        except KeyError as e:
            raise SystemExit("convert_hf: row %d of %s has no field %s (fields: %s)" % (
                i, task, e, ", ".join(sorted(ex))))
        if target is None:
            skipped += 1
            continue
        if task_prefix:
            text = prefix + " " + text
        out.append({"input": " ".join(text.split()), "target": target, "task": name or task})
    return out, skipped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS))
    ap.add_argument("--input", help=".parquet, .jsonl or .json export of one split")
    ap.add_argument("--out", help="output JSON Lines file")
    ap.add_argument("--name", help="task name written in each line (default: --task)")
    ap.add_argument("--task_prefix", action="store_true", help="prepend T5's task name")
    ap.add_argument("--limit", type=int, default=0, help="keep at most N examples (0: all)")
    ap.add_argument("--list", action="store_true", help="list the tasks and their candidates")
    args = ap.parse_args(argv)
    if args.list:
        for t in sorted(TASKS):
            cands = TASKS[t][3]
            print("%-14s %s" % (t, "rank: " + ", ".join(cands) if cands else "generate"))
        return 0
    if not (args.task and args.input and args.out):
        ap.error("--task, --input and --out are required")
    rows = read_rows(args.input)
    examples, skipped = convert(args.task, rows, args.task_prefix, args.name)
    if args.limit:
        examples = examples[:args.limit]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    cands = TASKS[args.task][3]
    print("%s: %d examples -> %s (%d without a label skipped); eval: %s" % (
        args.task, len(examples), args.out, skipped,
        ('"rank", candidates: ' + ", ".join(cands)) if cands else '"generate"'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
