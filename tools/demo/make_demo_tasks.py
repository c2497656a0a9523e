#!/usr/bin/env python3
"""Generate the demo task suite: small synthetic text-to-text skills.

Every skill has a written instruction (with a paraphrase or two) and a
deterministic example generator. Skills play one of three roles:

  pretrain  only used to pretrain the demo base model (with instructions)
  source    MPT source tasks: seen WITH instructions during pretraining; the
            demo trains one soft prompt per source task that stands in for
            the instruction, then distils them into a shared prompt
  target    held-out tasks for target adaptation; each is a sibling of a
            source task (smallest vs largest number,
            the food vs the animal in a word list, topic vs sentiment of
            a templated sentence)

For source and target tasks this writes demo/data/<task>/{train,eval}.jsonl
with {"input": payload without instruction, "target": answer, "task": name}
and demo/data/tasks.json. The generators are imported by make_demo_model.py
to build the pretraining mixture.

Usage: python3 tools/demo/make_demo_tasks.py [--out demo/data]

--hold_out_targets writes the held-out-target setting instead: the
pretrain-only skills (contains, count, parity, add) become source tasks too
(9 sources), and the base model for it (make_demo_model.py
--hold_out_targets) never sees the three targets, neither their
instructions nor their payloads:

    python3 tools/demo/make_demo_tasks.py --hold_out_targets --out demo/heldout/data

--variant_targets writes three yes/no targets for that model
(demo/variants/data), and --yesno_sources six yes/no source questions for
the same targets (demo/yesno/data); demo/README.md describes both.
"""

import argparse
import json
import os
import random

# ---------------------------------------------------------------- lexicons

CATEGORIES = {
    "animal": "cat dog fox owl bee cow pig hen ant bat rat elk yak emu".split(),
    "food": "soup bread rice cake pizza salad cheese apple pie egg".split(),
    "colour": "red blue green pink gold gray black white brown".split(),
    "thing": "tree lake hill rock star moon road boat door lamp cup box".split(),
}
NOUNS = [w for ws in CATEGORIES.values() for w in ws]

POS_ADJ = "great good lovely nice superb fine pleasant excellent".split()
NEG_ADJ = "awful bad terrible poor dull rude horrible boring".split()
REVIEW_THINGS = "movie hotel service room show staff book trip".split()
REVIEW_TEMPLATES = [
    "the {t} was {a}",
    "the {t} was {a} and {b}",
    "i found the {t} {a}",
    "a {a} {t} , really {b}",
    "what a {a} {t}",
    "our {t} was {a} , so {b}",
]

TOPIC_WORDS = {
    "sports": "ball goal team match coach runner race score".split(),
    "food": "soup bread rice cake pizza salad cheese apple".split(),
    "weather": "rain snow wind storm cloud sunshine fog frost".split(),
}
TOPIC_TEMPLATES = [
    "we talked about the {a} and the {b}",
    "the {a} was all i could think of",
    "today the {a} came before the {b}",
    "my friend likes the {a}",
    "there was {a} and {b} all day",
    "everyone wanted the {a}",
]

ANTONYMS = [("hot", "cold"), ("big", "small"), ("up", "down"),
            ("fast", "slow"), ("old", "new"), ("day", "night"),
            ("open", "closed"), ("wet", "dry"), ("light", "dark"),
            ("early", "late"), ("happy", "sad"), ("high", "low"),
            ("hard", "soft"), ("full", "empty"), ("long", "short"),
            ("rich", "poor")]
ANTONYM_MAP = {}
for _a, _b in ANTONYMS:
    ANTONYM_MAP[_a] = _b
    ANTONYM_MAP[_b] = _a

NUMBER_WORDS = "zero one two three four five six seven eight nine".split()


def _numbers(rng, lo, hi):
    return rng.sample(range(100), rng.randint(lo, hi))


def _join(xs):
    return " ".join(str(x) for x in xs)

# ---------------------------------------------------------------- skills
# Each generator takes a random.Random and returns (payload, target).
# All skills are content-based (no position counting), which a tiny model
# learns quickly.


def gen_max(rng):
    n = _numbers(rng, 3, 5)
    return _join(n), str(max(n))


def gen_min(rng):
    n = _numbers(rng, 3, 5)
    return _join(n), str(min(n))


def _find(category):
    """A list of 3-5 words with exactly one word of the category."""
    def gen(rng):
        others = [w for c, ws in CATEGORIES.items() if c != category for w in ws]
        w = rng.sample(others, rng.randint(2, 4))
        ans = rng.choice(CATEGORIES[category])
        w.insert(rng.randrange(len(w) + 1), ans)
        return _join(w), ans
    return gen


def gen_count(rng):
    w = rng.sample(NOUNS, rng.randint(1, 6))
    return _join(w), NUMBER_WORDS[len(w)]


def gen_contains(rng):
    w = rng.sample(NOUNS, rng.randint(3, 5))
    if rng.random() < 0.5:
        q = rng.choice(w)
    else:
        q = rng.choice([x for x in NOUNS if x not in w])
    return q + " ; " + _join(w), "yes" if q in w else "no"


def gen_parity(rng):
    n = rng.randrange(100)
    return str(n), "even" if n % 2 == 0 else "odd"


def gen_add(rng):
    a, b = rng.randrange(10), rng.randrange(10)
    return "%d %d" % (a, b), str(a + b)


def gen_antonym(rng):
    w = rng.choice(sorted(ANTONYM_MAP))
    return w, ANTONYM_MAP[w]


def gen_sentiment(rng):
    label = rng.choice(["positive", "negative"])
    adjs = POS_ADJ if label == "positive" else NEG_ADJ
    a, b = rng.sample(adjs, 2)
    t = rng.choice(REVIEW_THINGS)
    return rng.choice(REVIEW_TEMPLATES).format(t=t, a=a, b=b), label


def gen_topic(rng):
    label = rng.choice(sorted(TOPIC_WORDS))
    a, b = rng.sample(TOPIC_WORDS[label], 2)
    return rng.choice(TOPIC_TEMPLATES).format(a=a, b=b), label


# name -> (role, instructions, generator, metric, candidates)
SKILLS = {
    "max": ("source", ["pick the largest number",
                       "which number is the biggest"],
            gen_max, "accuracy", None),
    "animal": ("source", ["find the animal in the list",
                          "which word is an animal"],
               _find("animal"), "accuracy", None),
    "sentiment": ("source", ["is this review positive or negative",
                             "tell the sentiment of the review"],
                  gen_sentiment, "rank", ["positive", "negative"]),
    "antonym": ("source", ["give the opposite of the word",
                           "what is the antonym of the word"],
                gen_antonym, "accuracy", None),
    "min": ("target", ["pick the smallest number",
                       "which number is the least"],
            gen_min, "accuracy", None),
    "food": ("target", ["find the food in the list",
                        "which word is a food"],
             _find("food"), "accuracy", None),
    "topic": ("target", ["is this sentence about sports , food or weather",
                         "tell the topic of the sentence"],
              gen_topic, "rank", ["sports", "food", "weather"]),
    "colour": ("source", ["find the colour in the list",
                            "which word is a colour"],
               _find("colour"), "accuracy", None),
    "contains": ("pretrain", ["is the word before the semicolon in the list",
                            "does the list contain the first word"],
                 gen_contains, "rank", ["yes", "no"]),
    "count": ("pretrain", ["count the words",
                           "how many words are there"],
              gen_count, "accuracy", None),
    "parity": ("pretrain", ["is the number even or odd",
                            "tell if the number is even or odd"],
               gen_parity, "rank", ["even", "odd"]),
    "add": ("pretrain", ["add the two numbers",
                         "what is the sum of the numbers"],
            gen_add, "accuracy", None),
}

SIZES = {"source": (1000, 200), "target": (128, 200)}
# Skills whose whole input space is tiny (a lexicon): eval inputs are not
# unique and are not held out of training and pretraining.
CLOSED = {"antonym", "parity", "add"}
SEED = 20230302


def task_seed(name, split, seed=SEED):
    return seed + sum(ord(c) * 131 ** i for i, c in enumerate(name)) % 100003 \
        + (0 if split == "eval" else 7)


def make_split(name, n, split, exclude=(), skills=SKILLS, closed=CLOSED, seed=SEED):
    """n examples; eval inputs are unique and kept out of train (except
    for the closed skills). `skills`, `closed` and `seed` name the suite
    (make_lex_tasks.py passes its own)."""
    rng = random.Random(task_seed(name, split, seed))
    gen = skills[name][2]
    out, seen = [], set(exclude)
    is_closed = name in closed
    while len(out) < n:
        payload, target = gen(rng)
        if not is_closed and payload in seen:
            continue
        if split == "eval":
            seen.add(payload)
        out.append({"input": payload, "target": target, "task": name})
    return out


def eval_payloads(name, skills=SKILLS, sizes=SIZES, closed=CLOSED, seed=SEED):
    """Payloads of the eval split (kept out of training and pretraining)."""
    if name in closed:
        return set()
    n = sizes[skills[name][0]][1]
    return {ex["input"] for ex in make_split(name, n, "eval", (), skills, closed, seed)}


# Every instructed pretraining input starts with this preamble. The model is
# also shown inputs whose preamble is missing or damaged, answered "unknown",
# so a prompt has to carry the whole preamble as well as the task wording:
# the preamble is what all tasks share, the instruction what each adds.
PREAMBLE = "you are given a task . follow the instruction to answer for the input ."
BARE_ANSWER = "unknown"


def format_instructed(instruction, payload, preamble=PREAMBLE):
    """The pretraining input format (FLAN-style)."""
    return "%s instruction: %s input: %s" % (preamble, instruction, payload)


def damaged_preamble(rng, replacements=None):
    """The preamble with words dropped, replaced (by words of `replacements`,
    default the demo suite's nouns and adjectives) or shuffled (never intact)."""
    if replacements is None:
        replacements = NOUNS + POS_ADJ + NEG_ADJ
    words = PREAMBLE.split()
    while True:
        w = list(words)
        kind = rng.randrange(4)
        if kind == 0:
            return ""
        if kind == 1:
            for _ in range(rng.randint(1, 3)):
                del w[rng.randrange(len(w))]
        elif kind == 2:
            for _ in range(rng.randint(1, 2)):
                w[rng.randrange(len(w))] = replacements[rng.randrange(len(replacements))]
        else:
            i = rng.randrange(len(w) - 1)
            w[i], w[i + 1] = w[i + 1], w[i]
        if w != words:
            return " ".join(w)


def _has(category):
    """A list of 3-5 words holding one word of the category or none (half
    each), answered yes or no."""
    def gen(rng):
        others = [w for c, ws in CATEGORIES.items() if c != category for w in ws]
        w = rng.sample(others, rng.randint(3, 5))
        if rng.random() < 0.5:
            w[rng.randrange(len(w))] = rng.choice(CATEGORIES[category])
            return _join(w), "yes"
        return _join(w), "no"
    return gen


def gen_liked(rng):
    payload, label = gen_sentiment(rng)
    return payload, "yes" if label == "positive" else "no"


# The yes/no variants: three targets that ask a source skill's question in
# another source's answer words (sentiment, animal and colour answered "yes"
# or "no" like `contains`), as the few-shot targets of the MPT paper are
# tasks of a source's kind with their own data and labels (CB and SciTail
# after MNLI, BoolQ after the QA sources). Their instructions are never
# pretrained on; the base model is the held-out-target model.
VARIANT_TARGETS = {
    "liked": ("target", ["did the writer like it"], gen_liked, "rank", ["yes", "no"]),
    "has_animal": ("target", ["is there an animal in the list"], _has("animal"), "rank",
                   ["yes", "no"]),
    "has_colour": ("target", ["is there a colour in the list"], _has("colour"), "rank",
                   ["yes", "no"]),
}


def gen_is_even(rng):
    payload, label = gen_parity(rng)
    return payload, "yes" if label == "even" else "no"


def gen_big_sum(rng):
    """Two digits; yes when their sum is ten or more (label drawn first)."""
    big = rng.random() < 0.5
    while True:
        a, b = rng.randrange(10), rng.randrange(10)
        if (a + b >= 10) == big:
            return "%d %d" % (a, b), "yes" if big else "no"


def gen_many(rng):
    """1 to 6 nouns; yes when there are four or more."""
    w = rng.sample(NOUNS, rng.randint(1, 6))
    return _join(w), "yes" if len(w) >= 4 else "no"


def gen_big_max(rng):
    """3 to 5 numbers; yes when one is 50 or more (label drawn first)."""
    big = rng.random() < 0.5
    while True:
        n = _numbers(rng, 3, 5) if big else rng.sample(range(50), rng.randint(3, 5))
        if (max(n) >= 50) == big:
            return _join(n), "yes" if big else "no"


def gen_is_opposite(rng):
    """Two words of the antonym lexicon; yes when they are opposites."""
    a = rng.choice(sorted(ANTONYM_MAP))
    if rng.random() < 0.5:
        return a + " " + ANTONYM_MAP[a], "yes"
    b = rng.choice([w for w in sorted(ANTONYM_MAP) if w not in (a, ANTONYM_MAP[a])])
    return a + " " + b, "no"


# The yes/no setting: six sources that are all yes/no questions about an
# input (contains and five questions over the payloads of pretrained
# skills), and the yes/no variants' three targets, whose properties
# (sentiment, animal, colour) no source asks about. Sources and targets are
# of one kind, as the MPT paper's sources and few-shot targets are
# (sentence-pair classification); of these instructions only contains' was
# pretrained on. The base model is the held-out-target model.
YESNO_SOURCES = {
    "contains": ("source",) + SKILLS["contains"][1:],
    "is_even": ("source", ["is the number even"], gen_is_even, "rank", ["yes", "no"]),
    "big_sum": ("source", ["is the sum of the two numbers ten or more"], gen_big_sum, "rank",
                ["yes", "no"]),
    "many": ("source", ["are there four words or more"], gen_many, "rank", ["yes", "no"]),
    "big_max": ("source", ["is there a number of fifty or more"], gen_big_max, "rank",
                ["yes", "no"]),
    "is_opposite": ("source", ["are the two words opposites"], gen_is_opposite, "rank",
                    ["yes", "no"]),
}
# Closed input spaces (eval inputs not unique, not held out of train).
YESNO_CLOSED = {"is_even", "big_sum", "is_opposite"}


def yesno_skills():
    """SKILLS of the yes/no setting: YESNO_SOURCES and VARIANT_TARGETS."""
    skills = dict(YESNO_SOURCES)
    skills.update(VARIANT_TARGETS)
    return skills


def variant_skills():
    """SKILLS of the yes/no-variants setting: the held-out setting's nine
    sources and VARIANT_TARGETS as targets (the held-out targets dropped)."""
    skills = {n: v for n, v in held_out_skills().items() if v[0] == "source"}
    skills.update(VARIANT_TARGETS)
    return skills


def held_out_skills():
    """SKILLS of the held-out-target setting: every non-target skill is a
    source task; targets keep their role and are never pretrained on."""
    return {n: (("source",) + v[1:] if v[0] == "pretrain" else v)
            for n, v in SKILLS.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo/data")
    setting = ap.add_mutually_exclusive_group()
    setting.add_argument("--hold_out_targets", action="store_true",
                         help="every non-target skill is a source task; the base "
                              "model of this setting never sees the targets")
    setting.add_argument("--variant_targets", action="store_true",
                         help="the held-out setting's sources with the yes/no variant targets "
                              "(liked, has_animal, has_colour) for the held-out model")
    setting.add_argument("--yesno_sources", action="store_true",
                         help="six yes/no sources and the yes/no variant targets (whose files "
                              "--variant_targets writes) for the held-out model")
    args = ap.parse_args()
    skills = held_out_skills() if args.hold_out_targets else SKILLS
    closed = CLOSED
    if args.variant_targets:
        skills = variant_skills()
    if args.yesno_sources:
        skills, closed = yesno_skills(), CLOSED | YESNO_CLOSED
    tasks = []
    for name, (role, instrs, _, metric, cands) in skills.items():
        entry = {"name": name, "role": role, "instruction": instrs[0],
                 "paraphrases": instrs[1:], "metric": metric}
        if cands:
            entry["candidates"] = cands
        if args.variant_targets and role == "source":
            # The sources are the held-out setting's, written by --hold_out_targets.
            entry["train"] = "../../heldout/data/%s/train.jsonl" % name
            entry["eval"] = "../../heldout/data/%s/eval.jsonl" % name
        elif args.yesno_sources and role == "target":
            # The targets are the yes/no variants', written by --variant_targets.
            entry["train"] = "../../variants/data/%s/train.jsonl" % name
            entry["eval"] = "../../variants/data/%s/eval.jsonl" % name
        elif role in SIZES:
            n_train, n_eval = SIZES[role]
            ev = make_split(name, n_eval, "eval", skills=skills, closed=closed)
            held = {e["input"] for e in ev}
            tr = make_split(name, n_train, "train", exclude=held, skills=skills, closed=closed)
            d = os.path.join(args.out, name)
            os.makedirs(d, exist_ok=True)
            for split, rows in (("train", tr), ("eval", ev)):
                with open(os.path.join(d, split + ".jsonl"), "w") as f:
                    for r in rows:
                        f.write(json.dumps(r) + "\n")
            entry["train"] = "%s/train.jsonl" % name
            entry["eval"] = "%s/eval.jsonl" % name
            entry["num_train"], entry["num_eval"] = len(tr), len(ev)
        tasks.append(entry)
    desc = ("Synthetic demo skills for Multitask Prompt Tuning. "
            "Inputs carry no instruction; the base model in "
            "demo/model was pretrained on 'instruction: <text> "
            "input: <payload>' for every skill.")
    if args.yesno_sources:
        desc = ("Synthetic demo skills for Multitask Prompt Tuning, yes/no "
                "setting: six sources that are yes/no questions about an input "
                "and the yes/no variants' three targets, whose properties no "
                "source asks about. The base model (demo/heldout/model) was "
                "pretrained on the held-out setting's sources with their "
                "instructions and never on any of these tasks but contains.")
    elif args.variant_targets:
        desc = ("Synthetic demo skills for Multitask Prompt Tuning, yes/no "
                "variants: the held-out setting's sources and three targets "
                "that ask a source's question answered yes or no. The base "
                "model (demo/heldout/model) was pretrained on the sources "
                "with their instructions and never on these targets.")
    elif args.hold_out_targets:
        desc = ("Synthetic demo skills for Multitask Prompt Tuning, "
                "held-out-target setting. Inputs carry no instruction; the "
                "base model in demo/heldout/model was pretrained on "
                "'instruction: <text> input: <payload>' for the source "
                "skills only, never on the targets.")
    meta = {
        "description": desc,
        "input_format_with_instruction": "instruction: {instruction} input: {input}",
        "tasks": tasks,
    }
    with open(os.path.join(args.out, "tasks.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for t in tasks:
        print("%-10s %-8s %-8s %s" % (t["name"], t["role"], t["metric"],
                                      t["instruction"]))


if __name__ == "__main__":
    main()
