#!/usr/bin/env python3
"""Trains one PEFT prompt-tuning adapter per source task, one task after
another in one process, as a user's training script would: the reference
side of tools/bench/adapters_per_hour.sh.

    python3 tools/bench/peft_sequential.py --model DIR --data DIR --tasks a,b,c \
        --steps 20 --out DIR

The base model is loaded once and shared by the tasks; each task gets a
fresh PROMPT_TUNING adapter (RANDOM init, encoder only, as the product's
source stage), AdamW at a constant rate with gradient clipping, shuffled
epochs over its examples (`<data>/<task>/train.jsonl`, {"input", "target"}),
batches padded to their longest row, and is written with save_pretrained.
Tokens come from the folder's spiece.model (pieces + EOS, cut to the
stated lengths). --autocast bf16 runs each step's forward under
torch.autocast(bfloat16), the prompt and AdamW staying fp32 (as mpt_train's
--autocast=bf16). Prints one JSON object: seconds from the start of the
script (imports included) to the last adapter written, and per task.
"""
import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402

import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
from peft import PeftModelForSeq2SeqLM, PromptTuningConfig, TaskType  # noqa: E402
from transformers import T5ForConditionalGeneration  # noqa: E402

EOS, PAD = 1, 0


def encode(sp, text, limit):
    return sp.encode(text)[:limit - 1] + [EOS]


def pad(rows, value):
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--tasks", required=True, help="comma-separated task folder names")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--input_length", type=int, default=64)
    p.add_argument("--target_length", type=int, default=16)
    p.add_argument("--num_virtual_tokens", type=int, default=100)
    p.add_argument("--learning_rate", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--autocast", default="off", choices=["off", "bf16"])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "spiece.model"))
    base = T5ForConditionalGeneration.from_pretrained(args.model).eval()
    for q in base.parameters():
        q.requires_grad_(False)
    loaded = time.perf_counter() - START
    per_task = {}
    for name in args.tasks.split(","):
        t0 = time.perf_counter()
        with open(os.path.join(args.data, name, "train.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        examples = [(encode(sp, r["input"], args.input_length),
                     encode(sp, r["target"], args.target_length)) for r in rows]
        cfg = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM,
                                 num_virtual_tokens=args.num_virtual_tokens,
                                 num_transformer_submodules=1)
        model = PeftModelForSeq2SeqLM(base, cfg)
        model.base_model.eval()
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-5)
        rng = random.Random(0)
        order = []
        for _ in range(args.steps):
            if len(order) < args.batch_size:
                epoch = list(range(len(examples)))
                rng.shuffle(epoch)
                order += epoch
            batch = [examples[i] for i in order[:args.batch_size]]
            del order[:args.batch_size]
            input_ids = pad([b[0] for b in batch], PAD)
            labels = pad([b[1] for b in batch], -100)
            opt.zero_grad()
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16,
                                enabled=args.autocast == "bf16"):
                loss = model(input_ids=input_ids, attention_mask=(input_ids != PAD).long(),
                             labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        model.save_pretrained(os.path.join(args.out, name))
        per_task[name] = time.perf_counter() - t0
    print(json.dumps({"seconds": time.perf_counter() - START, "load_seconds": loaded,
                      "task_seconds": per_task, "threads": torch.get_num_threads(),
                      "autocast": args.autocast,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
