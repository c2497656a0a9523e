#!/usr/bin/env python3
"""Tests convert_hf.py on small files written here (JSON Lines; parquet too
when pyarrow is installed)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert_hf  # noqa: E402

ROWS = {
    "mnli": [{"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": 0, "idx": 0},
             {"premise": "A man sleeps.", "hypothesis": "He runs.", "label": 2, "idx": 1},
             {"premise": "x", "hypothesis": "y", "label": -1, "idx": 2}],
    "sst2": [{"sentence": "  a  gorgeous film ", "label": 1, "idx": 0}],
    "stsb": [{"sentence1": "a", "sentence2": "b", "label": 3.27, "idx": 0}],
    "squad": [{"id": "1", "title": "t", "context": "Paris is in France.",
               "question": "Where is Paris?",
               "answers": {"text": ["France", "in France"], "answer_start": [12, 9]}}],
    "record": [{"passage": "Obama met Merkel.\n@highlight\nTalks", "query": "@placeholder met Merkel",
                "entities": ["Obama", "Merkel"], "answers": ["Obama"], "idx": {}}],
    "boolq": [{"question": "is it true", "passage": "it is", "label": 1, "idx": 0}],
    "cb": [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}],
    "wic": [{"word": "bank", "sentence1": "river bank", "sentence2": "bank loan", "label": 0,
             "idx": 0, "start1": 6, "start2": 0, "end1": 10, "end2": 4}],
}


class ConvertTest(unittest.TestCase):
    def run_cli(self, task, rows, ext=".jsonl", extra=()):
        d = tempfile.mkdtemp()
        src = os.path.join(d, "in" + ext)
        if ext == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.Table.from_pylist(rows), src)
        else:
            with open(src, "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        out = os.path.join(d, "sub", "out.jsonl")
        rc = convert_hf.main(["--task", task, "--input", src, "--out", out] + list(extra))
        self.assertEqual(rc, 0)
        return [json.loads(l) for l in read(out).splitlines()]

    def test_mnli_labels_and_skips_unlabelled(self):
        out = self.run_cli("mnli", ROWS["mnli"])
        self.assertEqual(len(out), 2)
        self.assertEqual(out[0], {"input": "premise: A man sleeps. hypothesis: A person rests.",
                                  "target": "entailment", "task": "mnli"})
        self.assertEqual(out[1]["target"], "contradiction")

    def test_prefix_and_whitespace(self):
        out = self.run_cli("sst2", ROWS["sst2"], extra=["--task_prefix", "--name", "sst-2"])
        self.assertEqual(out, [{"input": "sst2 sentence: a gorgeous film", "target": "positive",
                                "task": "sst-2"}])

    def test_stsb_rounds_to_a_fifth(self):
        self.assertEqual(self.run_cli("stsb", ROWS["stsb"])[0]["target"], "3.2")

    def test_generative_sources(self):
        sq = self.run_cli("squad", ROWS["squad"])[0]
        self.assertEqual(sq["target"], "France")
        self.assertEqual(sq["input"], "question: Where is Paris? context: Paris is in France.")
        rec = self.run_cli("record", ROWS["record"])[0]
        self.assertEqual(rec["target"], "Obama")
        self.assertIn("entities: Obama, Merkel", rec["input"])
        self.assertNotIn("@highlight", rec["input"])

    def test_superglue_targets(self):
        self.assertEqual(self.run_cli("boolq", ROWS["boolq"])[0]["target"], "True")
        self.assertEqual(self.run_cli("cb", ROWS["cb"])[0]["target"], "neutral")
        wic = self.run_cli("wic", ROWS["wic"])[0]
        self.assertEqual(wic["target"], "False")
        self.assertTrue(wic["input"].endswith("word: bank"))

    def test_every_task_has_a_format(self):
        for name, (prefix, make_input, make_target, cands) in convert_hf.TASKS.items():
            self.assertTrue(prefix and callable(make_input) and callable(make_target), name)
            self.assertTrue(cands is None or len(cands) >= 2, name)

    def test_missing_field_names_it(self):
        with self.assertRaises(SystemExit) as e:
            convert_hf.convert("qnli", [{"question": "q", "label": 0}])
        self.assertIn("sentence", str(e.exception))

    def test_parquet(self):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            self.skipTest("pyarrow not installed")
        out = self.run_cli("mnli", ROWS["mnli"], ext=".parquet")
        self.assertEqual([o["target"] for o in out], ["entailment", "contradiction"])

    def test_recipe_specs_name_known_tasks(self):
        recipes = os.path.join(os.path.dirname(os.path.dirname(HERE)), "recipes", "glue")
        if not os.path.isdir(recipes):
            self.skipTest("no recipes folder in this runfiles tree")
        for f in os.listdir(recipes):
            if f.endswith(".textproto"):
                text = read(os.path.join(recipes, f))
                self.assertIn("num_virtual_tokens: 100", text, f)


SCRIPT = os.path.join(HERE, "convert_hf.py")


def write_lines(path, lines, mode="w"):
    with open(path, mode) as f:
        for line in lines:
            f.write(line)


class BadInputTest(unittest.TestCase):
    """Bad input ends in one line naming the file, row and field, exit != 0,
    and leaves --out as it was."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.out = os.path.join(self.dir, "out.jsonl")

    def path(self, name):
        return os.path.join(self.dir, name)

    def jsonl(self, rows, name="in.jsonl"):
        write_lines(self.path(name), [json.dumps(r) + "\n" for r in rows])
        return self.path(name)

    def cli(self, *args):
        """Runs the script as a user does; returns (rc, stdout, stderr)."""
        p = subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True,
                           text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def refused(self, task, src, *needles, extra=()):
        """Asserts a one-line refusal naming `src` and each needle; returns it."""
        rc, _, err = self.cli("--task", task, "--input", src, "--out", self.out, *extra)
        self.assertNotEqual(rc, 0, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        for n in (src,) + needles:
            self.assertIn(n, err)
        return err

    # (a) --out is --input; zero examples; atomic writes
    def test_out_same_as_input_is_refused(self):
        sub = os.path.join(self.dir, "sub")
        os.mkdir(sub)
        src = os.path.join(sub, "test.jsonl")
        write_lines(src, ['{"premise":"a","hypothesis":"b","label":-1,"idx":0}\n',
                          '{"premise":"c","hypothesis":"d","label":0,"idx":1}\n'])
        before = read(src)
        os.symlink(src, self.path("link.jsonl"))
        os.link(src, self.path("hard.jsonl"))
        for out in (src, os.path.join(sub, "..", "sub", "test.jsonl"),
                    self.path("link.jsonl"), self.path("hard.jsonl")):
            rc, _, err = self.cli("--task", "mnli", "--input", src, "--out", out)
            self.assertEqual(rc, 1, out)
            self.assertIn("is the input file", err)
            self.assertNotIn("Traceback", err)
        self.assertEqual(read(src), before)

    def test_no_labelled_example_is_an_error_and_keeps_out(self):
        src = self.jsonl([{"premise": "a", "hypothesis": "b", "label": -1, "idx": 0},
                          {"premise": "c", "hypothesis": "d", "label": -1, "idx": 1}])
        write_lines(self.out, ["old\n"])
        err = self.refused("mnli", src, "all 2 rows lack a label", "-1")
        self.assertEqual(read(self.out), "old\n")
        os.remove(self.out)
        self.refused("mnli", src, "all 2 rows lack a label")
        self.assertFalse(os.path.exists(self.out))  # not created either
        write_lines(self.path("empty.jsonl"), ["\n"])
        self.refused("mnli", self.path("empty.jsonl"), "no rows")
        self.assertFalse(os.path.exists(self.out))
        rec = self.jsonl([{"passage": "p", "query": "q", "entities": ["A"], "answers": []}])
        self.refused("record", rec, "lack an answer")

    def test_write_is_atomic(self):
        src = self.jsonl(ROWS["mnli"])
        write_lines(self.out, ["old\n"])
        real_dumps = json.dumps
        calls = []

        def failing_dumps(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real_dumps(*a, **k)
        from unittest import mock
        with mock.patch.object(convert_hf.json, "dumps", failing_dumps):
            with self.assertRaises(SystemExit) as e:
                convert_hf.main(["--task", "mnli", "--input", src, "--out", self.out])
        self.assertIn("No space left", str(e.exception))
        self.assertEqual(read(self.out), "old\n")
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.jsonl", "out.jsonl"])  # no temp left
        # a good run replaces it, with open()'s permissions, and writes through a link
        os.symlink(self.out, self.path("link.jsonl"))
        self.assertEqual(convert_hf.main(["--task", "mnli", "--input", src,
                                          "--out", self.path("link.jsonl")]), 0)
        self.assertTrue(os.path.islink(self.path("link.jsonl")))
        self.assertEqual(len(read(self.out).splitlines()), 2)
        umask = os.umask(0)
        os.umask(umask)
        self.assertEqual(os.stat(self.out).st_mode & 0o777, 0o666 & ~umask)

    # (b) only "\n" ends a JSON Lines row
    def test_unicode_line_separators_inside_strings(self):
        src = self.path("in.jsonl")
        rows = [{"sentence": "a\u2028b", "label": 1}, {"sentence": "c\u2029d", "label": 0},
                {"sentence": "e\u0085f", "label": 1}]
        write_lines(src, [json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows])
        rc, _, err = self.cli("--task", "sst2", "--input", src, "--out", self.out)
        self.assertEqual(rc, 0, err)
        out = [json.loads(l) for l in read(self.out).split("\n") if l]
        self.assertEqual([o["target"] for o in out], ["positive", "negative", "positive"])
        self.assertEqual(out[0]["input"], "sentence: a b")
        write_lines(src, ['{"sentence": "x", "label": 1}\n', "\n", '{"sentence": \n'])
        self.refused("sst2", src, "line 3", "not JSON")

    # (c) no tracebacks: file, line and field named
    def test_row_not_an_object(self):
        src = self.path("in.jsonl")
        write_lines(src, ['{"sentence": "x", "label": 1}\n', '[1, 2]\n'])
        self.refused("sst2", src, "line 2", "not a JSON object")
        write_lines(src, ['[{"sentence": "x", "label": 1}, "y"]\n'])  # a JSON array file
        self.refused("sst2", src, "row 2", "not a JSON object")

    def test_string_labels(self):
        src = self.jsonl([{"sentence": "x", "label": 1}, {"sentence": "x", "label": "positive"}])
        self.refused("sst2", src, "line 2", "'label'", "positive")
        src = self.jsonl([{"sentence1": "a", "sentence2": "b", "label": "4.0"}])
        self.refused("stsb", src, "line 1", "'label'", "4.0")

    def test_invalid_utf8(self):
        src = self.path("in.jsonl")
        write_lines(src, [b'{"sentence": "ok", "label": 1}\n', b'{"sentence": "\xff", "label": 1}\n'],
                    mode="wb")
        self.refused("sst2", src, "line 2", "not UTF-8")

    def test_out_is_a_folder_and_bad_paths(self):
        src = self.jsonl(ROWS["sst2"])
        rc, _, err = self.cli("--task", "sst2", "--input", src, "--out", self.dir)
        self.assertEqual(rc, 1)
        self.assertIn("is a folder", err)
        self.assertNotIn("Traceback", err)
        rc, _, err = self.cli("--task", "sst2", "--input", src, "--out",
                              os.path.join(src, "x.jsonl"))  # parent is a file
        self.assertEqual(rc, 1)
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        for bad in (self.path("missing.jsonl"), self.dir):
            rc, _, err = self.cli("--task", "sst2", "--input", bad, "--out", self.out)
            self.assertEqual(rc, 1)
            self.assertIn(bad, err)
            self.assertNotIn("Traceback", err)

    def test_unexpected_errors_are_one_line(self):
        src = self.jsonl(ROWS["sst2"])
        from unittest import mock
        with mock.patch.object(convert_hf, "convert", side_effect=RuntimeError("boom\nagain")):
            with self.assertRaises(SystemExit) as e:
                convert_hf.main(["--task", "sst2", "--input", src, "--out", self.out])
        msg = str(e.exception)
        self.assertIn(src, msg)
        self.assertIn("RuntimeError: boom again", msg)
        self.assertFalse(os.path.exists(self.out))

    # (d) silently wrong data is refused
    def test_null_and_non_string_text(self):
        src = self.jsonl([{"sentence": None, "label": 1}])
        self.refused("sst2", src, "line 1", "'sentence'", "null")
        src = self.jsonl([{"premise": "p", "hypothesis": 7, "label": 1}])
        self.refused("mnli", src, "line 1", "'hypothesis'", "not text")
        src = self.jsonl([{"passage": "p", "query": "q", "entities": ["A"], "answers": "Obama"}])
        self.refused("record", src, "'answers'")
        src = self.jsonl([{"passage": "p", "query": "q", "entities": [None], "answers": ["A"]}])
        self.refused("record", src, "'entities'")

    def test_non_integer_and_boolean_labels(self):
        for lab in (1.9, True, False, [1], {"a": 1}):
            src = self.jsonl([{"sentence": "x", "label": lab}])
            self.refused("sst2", src, "line 1", "'label'")
        for lab in (float("nan"), float("inf"), True, "x", 5.5, -0.5):
            src = self.jsonl([{"sentence1": "a", "sentence2": "b", "label": lab}])
            self.refused("stsb", src, "line 1", "'label'")
        # an integral float is the integer; -1 and null mean no label
        src = self.jsonl([{"sentence": "x", "label": 1.0}, {"sentence": "y", "label": -1},
                          {"sentence": "z", "label": None}])
        rc, out, err = self.cli("--task", "sst2", "--input", src, "--out", self.out)
        self.assertEqual(rc, 0, err)
        self.assertIn("1 examples", out)
        self.assertIn("2 without a label skipped", out)
        self.assertEqual(json.loads(read(self.out))["target"], "positive")

    def test_label_outside_class_range(self):
        src = self.jsonl([{"premise": "p", "hypothesis": "h", "label": 0},
                          {"premise": "p", "hypothesis": "h", "label": 3}])
        self.refused("mnli", src, "line 2", "'label'", "outside 0..2")
        src = self.jsonl([{"premise": "p", "hypothesis": "h", "label": -2}])
        self.refused("mnli", src, "line 1", "outside")

    def test_missing_columns_are_named(self):
        src = self.jsonl([{"premise": "p", "hypothesis": "h"}])  # no label column
        self.refused("mnli", src, "line 1", "'label'", "missing")
        src = self.jsonl([{"premise": "p", "label": 0}])
        self.refused("mnli", src, "line 1", "'hypothesis'", "missing")
        src = self.jsonl([{"question": "q", "context": "c"}])
        self.refused("squad", src, "line 1", "'answers'", "missing")

    def test_negative_limit(self):
        src = self.jsonl([{"sentence": "s%d" % i, "label": 1} for i in range(3)])
        rc, _, err = self.cli("--task", "sst2", "--input", src, "--out", self.out,
                              "--limit", "-1")
        self.assertEqual(rc, 2)
        self.assertIn("--limit", err)
        self.assertFalse(os.path.exists(self.out))
        rc, out, err = self.cli("--task", "sst2", "--input", src, "--out", self.out,
                                "--limit", "0")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(read(self.out).splitlines()), 3)  # 0 keeps all, as documented


if __name__ == "__main__":
    unittest.main()
