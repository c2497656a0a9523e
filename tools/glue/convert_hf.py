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
are skipped and counted; a split with no labelled example at all is
refused, and --out is then left as it was.

Bad input is refused with one line naming the file, the row (the line of a
JSON Lines file) and the field: a missing or null text field, text that is
not a string, a class label that is not an integer of the task's range (or
-1), an STS-B score that is not a number in [0, 5] (or -1). --out may not
be --input; it is written to a temporary file in its folder and renamed
into place, so a failure never leaves it half-written.
"""

import argparse
import json
import math
import os
import stat
import sys
import tempfile


class BadField(Exception):
    """A row's field is missing or holds a value this task cannot use."""

    def __init__(self, field, msg):
        Exception.__init__(self, msg if field is None else "field '%s': %s" % (field, msg))
        self.field = field


def _kind(value):
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a " + type(value).__name__


def _what(value):
    """`1.9`, `a string ("x")`: a value as a message shows it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _show(value)
    return "%s (%s)" % (_kind(value), _show(value))


def _show(value, limit=40):
    s = json.dumps(value, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


def _need(ex, field):
    if field not in ex:
        raise BadField(field, "missing (the row has: %s)" % (", ".join(sorted(map(str, ex))) or
                                                             "no fields"))
    return ex[field]


def _text(ex, field):
    value = _need(ex, field)
    if not isinstance(value, str):
        raise BadField(field, "is %s, not text" % _what(value))
    return value


def _fields(*pairs):
    """An input builder: "name: text" for each (name shown, field of the row)."""
    def make(ex):
        return " ".join("%s: %s" % (name, _text(ex, field).strip()) for name, field in pairs)
    return make


def _label(names):
    def get(ex):
        lab = _need(ex, "label")
        if lab is None:  # no label, as -1
            return None
        if isinstance(lab, float) and math.isfinite(lab) and lab.is_integer():
            lab = int(lab)
        if isinstance(lab, bool) or not isinstance(lab, int):
            raise BadField("label", "is %s; it must be an integer class 0..%d (%s), "
                           "or -1 for no label" % (_what(lab), len(names) - 1, ", ".join(names)))
        if lab == -1:
            return None
        if not 0 <= lab < len(names):
            raise BadField("label", "%d is outside 0..%d (%s); -1 means no label" % (
                lab, len(names) - 1, ", ".join(names)))
        return names[lab]
    return get


def _stsb_target(ex):
    lab = _need(ex, "label")
    if lab is None:
        return None
    if isinstance(lab, bool) or not isinstance(lab, (int, float)) or not math.isfinite(lab):
        raise BadField("label", "is %s; it must be a similarity score in [0, 5], or -1 "
                       "for no label" % _what(lab))
    if lab == -1:
        return None
    if not 0 <= lab <= 5:
        raise BadField("label", "%s is outside [0, 5]; -1 means no label" % _show(lab))
    # T5 rounds the 0-5 similarity to the nearest 0.2 and writes it as text.
    return "%.1f" % (round(float(lab) * 5) / 5)


def _first_answer(ex):
    ans = _need(ex, "answers")
    if ans is None:
        return None
    if isinstance(ans, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
        if "text" not in ans:
            raise BadField("answers", "has no 'text' (it has: %s)" % ", ".join(sorted(ans)))
        texts = ans["text"]
        if texts is None:
            texts = []
    else:  # ReCoRD: a list of strings
        texts = ans
    if not isinstance(texts, (list, tuple)):
        raise BadField("answers", "is %s (%s), not a list of strings or SQuAD's "
                       "{\"text\": [...]}" % (_kind(texts), _show(texts)))
    for t in texts:
        if not isinstance(t, str):
            raise BadField("answers", "holds %s, not text" % _what(t))
    texts = [t for t in texts if t.strip()]
    return texts[0].strip() if texts else None


def _record_input(ex):
    ents = _need(ex, "entities")
    if not isinstance(ents, (list, tuple)) or not all(isinstance(e, str) for e in ents):
        raise BadField("entities", "is %s (%s), not a list of strings" % (
            _kind(ents) if not isinstance(ents, (list, tuple)) else "a list with non-text items",
            _show(ents)))
    query = _text(ex, "query")
    passage = _text(ex, "passage").replace("@highlight\n", "- ")
    return "query: %s entities: %s passage: %s" % (query.strip(), ", ".join(ents),
                                                   passage.strip())


# name -> (T5 prefix, input builder, target builder, rank candidates or None)
TASKS = {
    # GLUE; the paper's source tasks are MNLI, QNLI, QQP, SST-2 (+ SQuAD, ReCoRD)
    "mnli": ("mnli", _fields(("premise", "premise"), ("hypothesis", "hypothesis")),
             _label(["entailment", "neutral", "contradiction"]),
             ["entailment", "neutral", "contradiction"]),
    "qnli": ("qnli", _fields(("question", "question"), ("sentence", "sentence")),
             _label(["entailment", "not_entailment"]), ["entailment", "not_entailment"]),
    "qqp": ("qqp", _fields(("question1", "question1"), ("question2", "question2")),
            _label(["not_duplicate", "duplicate"]), ["not_duplicate", "duplicate"]),
    "sst2": ("sst2", _fields(("sentence", "sentence")),
             _label(["negative", "positive"]), ["negative", "positive"]),
    "cola": ("cola", _fields(("sentence", "sentence")),
             _label(["unacceptable", "acceptable"]), ["unacceptable", "acceptable"]),
    "stsb": ("stsb", _fields(("sentence1", "sentence1"), ("sentence2", "sentence2")),
             _stsb_target, None),
    "mrpc": ("mrpc", _fields(("sentence1", "sentence1"), ("sentence2", "sentence2")),
             _label(["not_equivalent", "equivalent"]), ["not_equivalent", "equivalent"]),
    "rte": ("rte", _fields(("sentence1", "sentence1"), ("sentence2", "sentence2")),
            _label(["entailment", "not_entailment"]), ["entailment", "not_entailment"]),
    # question answering sources: the answer is generated
    "squad": ("squad", _fields(("question", "question"), ("context", "context")),
              _first_answer, None),
    "record": ("record", _record_input, _first_answer, None),
    # SuperGLUE targets
    "boolq": ("boolq", _fields(("question", "question"), ("passage", "passage")),
              _label(["False", "True"]), ["False", "True"]),
    "cb": ("cb", _fields(("premise", "premise"), ("hypothesis", "hypothesis")),
           _label(["entailment", "contradiction", "neutral"]),
           ["entailment", "contradiction", "neutral"]),
    "multirc": ("multirc", _fields(("question", "question"), ("answer", "answer"),
                                   ("paragraph", "paragraph")),
                _label(["False", "True"]), ["False", "True"]),
    "wic": ("wic", _fields(("sentence1", "sentence1"), ("sentence2", "sentence2"),
                           ("word", "word")),
            _label(["False", "True"]), ["False", "True"]),
    "wsc": ("wsc", _fields(("text", "text"), ("span1", "span1_text"), ("span2", "span2_text")),
            _label(["False", "True"]), ["False", "True"]),
    "copa": ("copa", _fields(("choice1", "choice1"), ("choice2", "choice2"),
                             ("premise", "premise"), ("question", "question")),
             _label(["choice1", "choice2"]), ["choice1", "choice2"]),
    "superglue-rte": ("rte", _fields(("premise", "premise"), ("hypothesis", "hypothesis")),
                      _label(["entailment", "not_entailment"]), ["entailment", "not_entailment"]),
}


def _fail(msg):
    raise SystemExit("convert_hf: " + msg)


def _check_input(path):
    try:
        st = os.stat(path)
    except OSError as e:
        _fail("%s: %s" % (path, e.strerror or e))
    if stat.S_ISDIR(st.st_mode):
        _fail("%s: is a folder, not a file" % path)
    if not stat.S_ISREG(st.st_mode):
        _fail("%s: is not a regular file" % path)


def read_rows_numbered(path):
    """(rows, line numbers) of a parquet file (pyarrow) or a JSON Lines / JSON
    array file; the line numbers are None unless the file is JSON Lines."""
    _check_input(path)
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            sys.exit("convert_hf: %s: reading parquet needs pyarrow (pip install pyarrow), "
                     "or export the split as JSON Lines" % path)
        try:
            return pq.read_table(path).to_pylist(), None
        except Exception as e:  # pyarrow's own errors: one line naming the file
            _fail("%s: cannot read parquet: %s" % (path, " ".join(str(e).split())))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        _fail("%s: %s" % (path, e.strerror or e))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        _fail("%s: line %d: not UTF-8 (byte 0x%02x at offset %d)" % (
            path, line, data[start], start))
    if text.lstrip(" \t\r\n").startswith("["):  # one JSON array of rows
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            _fail("%s: line %d: not JSON: %s" % (path, e.lineno, e.msg))
        except (ValueError, RecursionError) as e:
            _fail("%s: not JSON: %s" % (path, e))
        return rows, None
    rows, lines = [], []
    # Only "\n" ends a JSON Lines row: str.splitlines() would also split at
    # U+2028, U+2029 and U+0085, which JSON allows unescaped inside strings.
    for n, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip(" \t\r"):
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            _fail("%s: line %d: not JSON: %s (column %d)" % (path, n, e.msg, e.colno))
        except (ValueError, RecursionError) as e:  # huge integers, deep nesting
            _fail("%s: line %d: not JSON: %s" % (path, n, e))
        lines.append(n)
    return rows, lines


def read_rows(path):
    """Rows of a parquet file (pyarrow) or a JSON Lines / JSON array file."""
    return read_rows_numbered(path)[0]


def convert(task, rows, task_prefix=False, name=None, path=None, lines=None):
    """Returns (examples, skipped). `path` and `lines` (the line of each row in
    a JSON Lines file) only name the place of a bad row in the message."""
    prefix, make_input, make_target, _ = TASKS[task]
    out, skipped = [], 0
    for i, ex in enumerate(rows):
        try:
            if not isinstance(ex, dict):
                raise BadField(None, "the row is %s (%s), not a JSON object" % (
                    _kind(ex), _show(ex)))
            target = make_target(ex)
            text = make_input(ex)
        except BadField as e:
            if lines is not None:
                where = "%s: line %d" % (path, lines[i])
            elif path is not None:
                where = "%s: row %d" % (path, i + 1)
            else:
                where = "row %d" % (i + 1)
            _fail("%s (%s): %s" % (where, task, e))
        if target is None:
            skipped += 1
            continue
        if task_prefix:
            text = prefix + " " + text
        out.append({"input": " ".join(text.split()), "target": target, "task": name or task})
    return out, skipped


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def write_jsonl(path, examples):
    """Writes the examples to `path` through a temporary file in its folder
    and os.replace, so `path` is either left as it was or fully written."""
    real = os.path.realpath(path)  # a link to a file: replace the file, keep the link
    if os.path.isdir(real):
        _fail("--out %s: is a folder; name the output file" % path)
    folder = os.path.dirname(real)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        _fail("--out %s: cannot create its folder %s: %s" % (path, folder, e.strerror or e))
    if os.path.exists(real) and not stat.S_ISREG(os.stat(real).st_mode):
        # /dev/null, a FIFO: there is nothing to replace; write in place.
        try:
            with open(real, "w", encoding="utf-8") as f:
                for e in examples:
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
        except OSError as e:
            _fail("--out %s: %s" % (path, e.strerror or e))
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(real) + ".",
                                   suffix=".tmp")
    except OSError as e:
        _fail("--out %s: cannot write in %s: %s" % (path, folder, e.strerror or e))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp, real)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            _fail("--out %s: %s" % (path, e.strerror or e))
        raise


def _limit(value):
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % value)
    if n < 0:
        raise argparse.ArgumentTypeError("%d is negative (0 keeps all examples)" % n)
    return n


def run(args, ap):
    if args.list:
        for t in sorted(TASKS):
            cands = TASKS[t][3]
            print("%-14s %s" % (t, "rank: " + ", ".join(cands) if cands else "generate"))
        return 0
    if not (args.task and args.input and args.out):
        ap.error("--task, --input and --out are required")
    _check_input(args.input)
    if os.path.isdir(args.out):
        _fail("--out %s: is a folder; name the output file" % args.out)
    if os.path.exists(args.out) and _same_file(args.input, args.out):
        _fail("--out %s is the input file %s; write the output elsewhere" % (
            args.out, args.input))
    rows, lines = read_rows_numbered(args.input)
    if not isinstance(rows, list):
        _fail("%s: not a JSON array of rows or JSON Lines" % args.input)
    examples, skipped = convert(args.task, rows, args.task_prefix, args.name,
                                path=args.input, lines=lines)
    if not examples:
        if not rows:
            _fail("%s: no rows; %s was not written" % (args.input, args.out))
        what = ("an answer (answers empty or null, as in ReCoRD's test split)"
                if TASKS[args.task][2] is _first_answer else
                "a label (-1 or null, as in GLUE/SuperGLUE test splits)")
        _fail("%s: no example to write: all %d rows lack %s; %s was not written" % (
            args.input, len(rows), what, args.out))
    if args.limit:
        examples = examples[:args.limit]
    write_jsonl(args.out, examples)
    cands = TASKS[args.task][3]
    print("%s: %d examples -> %s (%d without a label skipped); eval: %s" % (
        args.task, len(examples), args.out, skipped,
        ('"rank", candidates: ' + ", ".join(cands)) if cands else '"generate"'))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS))
    ap.add_argument("--input", help=".parquet, .jsonl or .json export of one split")
    ap.add_argument("--out", help="output JSON Lines file (not --input)")
    ap.add_argument("--name", help="task name written in each line (default: --task)")
    ap.add_argument("--task_prefix", action="store_true", help="prepend T5's task name")
    ap.add_argument("--limit", type=_limit, default=0, help="keep at most N examples (0: all)")
    ap.add_argument("--list", action="store_true", help="list the tasks and their candidates")
    args = ap.parse_args(argv)
    try:
        return run(args, ap)
    except (SystemExit, KeyboardInterrupt):
        raise
    except OSError as e:
        where = e.filename if e.filename is not None else (args.out or args.input)
        raise SystemExit("convert_hf: %s: %s" % (where, e.strerror or e))
    except Exception as e:  # a bug or an input we did not foresee: one line, no traceback
        raise SystemExit("convert_hf: %s: unexpected %s: %s" % (
            args.input, type(e).__name__, " ".join(str(e).split())))


if __name__ == "__main__":
    sys.exit(main())
