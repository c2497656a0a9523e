#!/usr/bin/env python3
"""Checks that PEFT loads an adapter written by mpt and computes what mpt computes.

Run mpt's t5_dump with the adapter first, then this script on its output:

    bazel-bin/worker/t5_dump --model=MODEL --adapter=ADAPTER --task_id=0 \\
        --text="..." --target="..." --generate=8 --out=/tmp/dump.safetensors
    python3 tools/check_adapter_in_peft.py --model MODEL --adapter ADAPTER \\
        --task_id 0 --dump /tmp/dump.safetensors

It loads the adapter with PeftModel.from_pretrained, runs the same inputs
(and labels) through PEFT and transformers, and prints the largest absolute
difference of the logits and of the loss, and whether greedy generation gives
the same tokens. Exits 1 when the logits differ by more than --tolerance.
"""
import argparse
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--dump", required=True)
    p.add_argument("--task_id", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()

    dump = load_file(args.dump)
    base = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()  # T5 or mT5
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    peft_type = model.peft_config["default"].peft_type
    batch = dump["input_ids"].shape[0]
    kwargs = {}
    if str(peft_type).endswith("MULTITASK_PROMPT_TUNING"):
        kwargs["task_ids"] = torch.full((batch,), args.task_id, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=dump["input_ids"], attention_mask=dump["attention_mask"],
                    labels=dump["labels"], **kwargs)
    diff = (out.logits - dump["logits"]).abs().max().item()
    print(f"adapter {args.adapter}: {peft_type}, logits {tuple(out.logits.shape)}, "
          f"max |difference| {diff:.2e}")
    ok = diff <= args.tolerance
    if "loss" in dump:
        loss_diff = abs(out.loss.item() - dump["loss"].item())
        print(f"loss: PEFT {out.loss.item():.6f}, mpt {dump['loss'].item():.6f}, "
              f"|difference| {loss_diff:.2e}")
        ok &= loss_diff <= args.tolerance
    if "generated" in dump:
        with torch.no_grad():
            gen = model.generate(input_ids=dump["input_ids"], attention_mask=dump["attention_mask"],
                                 max_new_tokens=dump["generated"].shape[1] - 1, do_sample=False,
                                 num_beams=1, **kwargs)
        width = min(gen.shape[1], dump["generated"].shape[1])
        same = torch.equal(gen[:, :width], dump["generated"][:, :width])
        print(f"greedy generation: {'same tokens' if same else 'DIFFERENT tokens'}")
        ok &= same
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
