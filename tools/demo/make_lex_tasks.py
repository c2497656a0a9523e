#!/usr/bin/env python3
"""Generate the lexical task suite: real English words and relations from
WordNet 3.0 (Debian `wordnet-base`) and the word list of `wamerican`.

Unlike tools/demo/make_demo_tasks.py, the targets here are held out of
pretraining entirely: their instructions are never shown to the base model,
only the source and pretrain skills are. What a target shares with the
sources is structure (the same lexicon, the same kinds of input, related
relations), so a prompt learnt on the sources can help, but a plain prompt
cannot simply recall an instruction the model was pretrained on.

Skills (role, instruction):

  source   synonym     give a synonym of the word             (exact match)
  source   antonym     give the opposite of the word          (exact match)
  source   hypernym    what kind of thing is the word         (exact match)
  source   pos         what part of speech is the word        (rank: 4 labels)
  source   gloss       which word has this meaning            (exact match)
  source   category    is the noun an animal , food , ...     (rank: 6 labels)
  source   first       which word comes first in the alphabet (exact match)
  source   longest     which word is the longest              (exact match)
  source   is_synonym  do the two words mean the same         (rank: yes / no)
  target   is_antonym  are the two words opposites            (rank: yes / no)
  target   last        which word comes last in the alphabet  (exact match)
  target   gloss_pos   what part of speech does this meaning describe
                                                              (rank: 4 labels)

The lexicon is the most frequent single words of WordNet (SemCor tag
counts) that also appear in the wamerican list, lower case, 3-10 letters.

Writes <out>/<task>/{train,eval}.jsonl ({"input", "target", "task"}) and
<out>/tasks.json. The module has the interface of make_demo_tasks.py
(SKILLS, SIZES, CLOSED, eval_payloads, format_instructed, damaged_preamble,
BARE_ANSWER), so make_demo_model.py --suite lex pretrains on it.

Usage: python3 tools/demo/make_lex_tasks.py [--out demo/lex/data]
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_demo_tasks as mt  # noqa: E402

WORDNET = os.environ.get("WNDICT", "/usr/share/wordnet")
WORDLIST = "/usr/share/dict/american-english"
LEXICON_SIZE = 1500
POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# noun lexicographer files -> category label (the rest are not used)
CATEGORY = {"noun.animal": "animal", "noun.food": "food", "noun.plant": "plant",
            "noun.artifact": "artifact", "noun.person": "person", "noun.body": "body"}
LEXNAMES = {}


def _lexnames():
    path = os.path.join(WORDNET, "lexnames")
    names = {}
    if os.path.exists(path):
        for line in open(path):
            p = line.split()
            names[int(p[0])] = p[1]
    else:  # the fixed WordNet 3.0 numbering
        fixed = ["adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
                 "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
                 "noun.communication", "noun.event", "noun.feeling", "noun.food",
                 "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
                 "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
                 "noun.quantity", "noun.relation", "noun.shape", "noun.state",
                 "noun.substance", "noun.time"]
        names = dict(enumerate(fixed))
    return names


class WordNet:
    """The parts of WordNet 3.0 the skills need."""

    def __init__(self):
        self.synsets = {}  # (pos, offset) -> dict(words, lex, ptrs, gloss)
        self.freq = {}  # word -> total tag count over senses
        self.senses = {}  # (word, pos) -> [offsets], most frequent first
        self.pos_freq = {}  # word -> {pos: tag count}
        lex = _lexnames()
        for pos, fname in POS_FILES.items():
            for line in open(os.path.join(WORDNET, "data." + fname), encoding="latin-1"):
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition(" | ")
                f = head.split()
                off, lexnum, ss_type = int(f[0]), int(f[1], 10), f[2]
                n = int(f[3], 16)
                words = [f[4 + 2 * i].lower() for i in range(n)]
                words = [w.split("(")[0] for w in words]
                i = 4 + 2 * n
                np_ = int(f[i])
                ptrs = []
                for j in range(np_):
                    sym, toff, tpos, st = f[i + 1 + 4 * j: i + 5 + 4 * j]
                    ptrs.append((sym, int(toff), tpos, st))
                self.synsets[(pos, off)] = {"words": words, "lex": lex.get(lexnum, ""),
                                            "ptrs": ptrs, "gloss": gloss.strip(),
                                            "type": ss_type}
            for line in open(os.path.join(WORDNET, "index." + fname), encoding="latin-1"):
                if line.startswith("  "):
                    continue
                f = line.split()
                word = f[0]
                p_cnt = int(f[3])
                tagged = int(f[5 + p_cnt])
                offs = [int(x) for x in f[6 + p_cnt:]]
                self.senses[(word, pos)] = offs
                self.pos_freq.setdefault(word, {})[pos] = tagged
                self.freq[word] = self.freq.get(word, 0) + tagged

    def synset(self, pos, off):
        return self.synsets.get(("a" if pos == "s" else pos, off))


def _word_ok(w, wordlist):
    return w.isalpha() and w.islower() and 3 <= len(w) <= 10 and w in wordlist


class Lexicon:
    def __init__(self):
        wn = WordNet()
        wordlist = set(l.strip() for l in open(WORDLIST, encoding="utf-8", errors="ignore"))
        cands = [w for w in wn.freq if _word_ok(w, wordlist) and wn.freq[w] > 0]
        cands.sort(key=lambda w: (-wn.freq[w], w))
        self.words = sorted(cands[:LEXICON_SIZE])
        lex = set(self.words)
        self.wn = wn
        self.pos = {}  # word -> most frequent part of speech
        for w in self.words:
            pf = wn.pos_freq[w]
            p = max(sorted(pf), key=lambda q: pf[q])
            self.pos[w] = POS_NAME[p]
        self.synonym, self.antonym, self.hypernym, self.gloss, self.category = {}, {}, {}, {}, {}
        for w in self.words:
            pf = wn.pos_freq[w]
            p = max(sorted(pf), key=lambda q: pf[q])
            offs = wn.senses[(w, p)]
            first = wn.synset(p, offs[0])
            # synonym: another lexicon word of the first sense (then later senses)
            for off in offs[:3]:
                s = wn.synset(p, off)
                syn = [x for x in s["words"] if x != w and x in lex]
                if syn:
                    self.synonym[w] = syn[0]
                    break
            # antonym: a direct antonym pointer of any of the first senses
            for off in offs[:3]:
                s = wn.synset(p, off)
                for sym, toff, tpos, st in s["ptrs"]:
                    if sym != "!":
                        continue
                    src, dst = int(st[:2], 16), int(st[2:], 16)
                    if src and s["words"][src - 1] != w:
                        continue
                    t = wn.synset(tpos, toff)
                    a = t["words"][dst - 1] if dst else t["words"][0]
                    if a in lex and w not in self.antonym:
                        self.antonym[w] = a
            # hypernym (nouns): the nearest ancestor of the first sense with a lexicon word
            if p == "n":
                frontier, seen = [offs[0]], set()
                for _ in range(3):
                    nxt = []
                    for off in frontier:
                        for sym, toff, tpos, _st in wn.synset("n", off)["ptrs"]:
                            if sym in ("@", "@i") and toff not in seen:
                                seen.add(toff)
                                nxt.append(toff)
                    hit = [x for off in nxt for x in wn.synset("n", off)["words"]
                           if x in lex and x != w]
                    if hit:
                        self.hypernym[w] = hit[0]
                        break
                    frontier = nxt
                cat = CATEGORY.get(first["lex"])
                if cat:
                    self.category[w] = cat
            g = first["gloss"].split(";")[0].strip().lower()
            g = "".join(c if c.isalnum() or c in " ,'-" else " " for c in g)
            g = " ".join(g.replace(",", " ,").split()[:12])
            if g and w not in g.split():
                self.gloss[w] = (g, self.pos[w])
        self.antonym_pairs = sorted((a, b) for a, b in self.antonym.items())
        self.synonym_pairs = sorted((a, b) for a, b in self.synonym.items())


_LEX = None


def lexicon():
    global _LEX
    if _LEX is None:
        _LEX = Lexicon()
    return _LEX


# ---------------------------------------------------------------- skills

def _pick(rng, d):
    keys = _keys(d)
    return keys[rng.randrange(len(keys))]


_KEYS = {}


def _keys(d):
    k = id(d)
    if k not in _KEYS:
        _KEYS[k] = sorted(d)
    return _KEYS[k]


def gen_synonym(rng):
    L = lexicon()
    w = _pick(rng, L.synonym)
    return w, L.synonym[w]


def gen_antonym(rng):
    L = lexicon()
    w = _pick(rng, L.antonym)
    return w, L.antonym[w]


def gen_hypernym(rng):
    L = lexicon()
    w = _pick(rng, L.hypernym)
    return w, L.hypernym[w]


def gen_pos(rng):
    L = lexicon()
    w = L.words[rng.randrange(len(L.words))]
    return w, L.pos[w]


def gen_gloss(rng):
    L = lexicon()
    w = _pick(rng, L.gloss)
    return L.gloss[w][0], w


def gen_gloss_pos(rng):
    L = lexicon()
    w = _pick(rng, L.gloss)
    return L.gloss[w][0], L.gloss[w][1]


def gen_category(rng):
    L = lexicon()
    w = _pick(rng, L.category)
    return w, L.category[w]


def _word_list(rng):
    L = lexicon()
    n = rng.randint(3, 5)
    return rng.sample(L.words, n)


def gen_first(rng):
    w = _word_list(rng)
    return " ".join(w), min(w)


def gen_last(rng):
    w = _word_list(rng)
    return " ".join(w), max(w)


def gen_longest(rng):
    while True:
        w = _word_list(rng)
        m = max(len(x) for x in w)
        if sum(len(x) == m for x in w) == 1:
            return " ".join(w), max(w, key=len)


def _pair_task(pairs_attr):
    def gen(rng):
        L = lexicon()
        pairs = getattr(L, pairs_attr)
        if rng.random() < 0.5:
            a, b = pairs[rng.randrange(len(pairs))]
            ans = "yes"
        else:
            while True:
                a = L.words[rng.randrange(len(L.words))]
                b = L.words[rng.randrange(len(L.words))]
                if a != b and (a, b) not in set(pairs) and (b, a) not in set(pairs):
                    break
            ans = "no"
        if rng.random() < 0.5:
            a, b = b, a
        return "%s ; %s" % (a, b), ans
    return gen


POS_LABELS = ["noun", "verb", "adjective", "adverb"]
CAT_LABELS = ["animal", "food", "plant", "artifact", "person", "body"]

# name -> (role, instructions, generator, metric, candidates)
SKILLS = {
    "synonym": ("source", ["give a synonym of the word", "what word means the same"],
                gen_synonym, "accuracy", None),
    "antonym": ("source", ["give the opposite of the word", "what is the antonym of the word"],
                gen_antonym, "accuracy", None),
    "hypernym": ("source", ["what kind of thing is the word", "give a more general word"],
                 gen_hypernym, "accuracy", None),
    "pos": ("source", ["what part of speech is the word", "is the word a noun , verb , "
                       "adjective or adverb"], gen_pos, "rank", POS_LABELS),
    "gloss": ("source", ["which word has this meaning", "name the word that is defined"],
              gen_gloss, "accuracy", None),
    "category": ("source", ["is the noun an animal , food , plant , artifact , person or "
                            "body part", "what category is the noun in"],
                 gen_category, "rank", CAT_LABELS),
    "first": ("source", ["which word comes first in the alphabet",
                         "pick the alphabetically first word"], gen_first, "accuracy", None),
    "longest": ("source", ["which word is the longest", "pick the word with the most letters"],
                gen_longest, "accuracy", None),
    "is_synonym": ("source", ["do the two words mean the same", "are the words synonyms"],
                   _pair_task("synonym_pairs"), "rank", ["yes", "no"]),
    # Targets: never in pretraining (no instruction, no example).
    "is_antonym": ("target", ["are the two words opposites", "are the words antonyms"],
                   _pair_task("antonym_pairs"), "rank", ["yes", "no"]),
    "last": ("target", ["which word comes last in the alphabet",
                        "pick the alphabetically last word"], gen_last, "accuracy", None),
    "gloss_pos": ("target", ["what part of speech does this meaning describe",
                             "is the defined word a noun , verb , adjective or adverb"],
                  gen_gloss_pos, "rank", POS_LABELS),
}

SIZES = {"source": (1000, 200), "target": (128, 200)}
# Skills whose input space is one lexicon word: eval inputs are not held out
# of training (the relation is the skill, the word list is closed).
CLOSED = {"synonym", "antonym", "hypernym", "pos", "category", "gloss"}
SEED = 20230303
PREAMBLE = mt.PREAMBLE
BARE_ANSWER = "unknown"


def pretrain_skills():
    """The skills the base model is pretrained on: never the targets."""
    return [n for n, s in SKILLS.items() if s[0] != "target"]


def make_split(name, n, split, exclude=()):
    return mt.make_split(name, n, split, exclude, SKILLS, CLOSED, SEED)


def eval_payloads(name):
    return mt.eval_payloads(name, SKILLS, SIZES, CLOSED, SEED)


format_instructed = mt.format_instructed


def damaged_preamble(rng):
    """The demo suite's damaged preamble, with the lexicon's words as replacements."""
    return mt.damaged_preamble(rng, lexicon().words)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo/lex/data")
    args = ap.parse_args()
    L = lexicon()
    print("lexicon %d words; synonym %d, antonym %d, hypernym %d, gloss %d, category %d" % (
        len(L.words), len(L.synonym), len(L.antonym), len(L.hypernym), len(L.gloss),
        len(L.category)))
    tasks = []
    for name, (role, instrs, _, metric, cands) in SKILLS.items():
        entry = {"name": name, "role": role, "instruction": instrs[0],
                 "paraphrases": instrs[1:], "metric": metric}
        if cands:
            entry["candidates"] = cands
        n_train, n_eval = SIZES[role]
        ev = make_split(name, n_eval, "eval")
        held = {e["input"] for e in ev} if name not in CLOSED else set()
        tr = make_split(name, n_train, "train", exclude=held)
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        for split, rows in (("train", tr), ("eval", ev)):
            with open(os.path.join(d, split + ".jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        entry.update({"train": "%s/train.jsonl" % name, "eval": "%s/eval.jsonl" % name,
                      "num_train": len(tr), "num_eval": len(ev)})
        tasks.append(entry)
    meta = {"description": "Lexical skills from WordNet 3.0 and wamerican. Targets are "
                           "never in the base model's pretraining.",
            "input_format_with_instruction": "instruction: {instruction} input: {input}",
            "tasks": tasks}
    with open(os.path.join(args.out, "tasks.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for t in tasks:
        print("%-10s %-8s %-8s %s" % (t["name"], t["role"], t["metric"], t["instruction"]))


if __name__ == "__main__":
    main()
