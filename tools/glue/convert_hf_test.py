#!/usr/bin/env python3
"""Tests convert_hf.py on small files written here (JSON Lines; parquet too
when pyarrow is installed)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

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
        return [json.loads(l) for l in open(out)]

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
                text = open(os.path.join(recipes, f)).read()
                self.assertIn("num_virtual_tokens: 100", text, f)


if __name__ == "__main__":
    unittest.main()
