#!/usr/bin/env python3
"""Times MPT's training steps with Hugging Face transformers and PEFT.

The reference for tools/bench/stage_bench: the same model folder, the same
shapes (random ids of exactly the stated lengths, EOS included), prompts
before the encoder only, AdamW at a constant rate and gradient clipping at
1.0, the same step count after the same warm-up.

  source        PEFT PromptTuning (PROMPT_TUNING), loss = the model's CE
  distillation  PEFT MultitaskPromptTuning student + frozen teacher prompts
                (no grad), loss = CE + 0.9 * (KL + hidden MSE), tau = 1
  target        PEFT MultitaskPromptTuning, loss = CE

    python3 tools/bench/peft_bench.py --model /tmp/t5-small-random --stage source

--device cuda runs on the GPU (each step timed after torch.cuda.synchronize);
--autocast bf16 wraps the forward passes in torch.autocast(bfloat16), the
prompts and AdamW staying fp32, as stage_bench's --autocast=bf16.
"""
import argparse
import contextlib
import json
import resource
import time

import torch
import torch.nn.functional as F
from peft import (MultitaskPromptTuningConfig, PromptTuningConfig, TaskType,
                  get_peft_model)
from transformers import T5ForConditionalGeneration


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_batch(gen, batch, length, vocab):
    ids = torch.randint(3, vocab, (batch, length), generator=gen)
    ids[:, -1] = 1
    return ids


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--stage", default="source", choices=["source", "distillation", "target"])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--input_length", type=int, default=64)
    p.add_argument("--target_length", type=int, default=16)
    p.add_argument("--num_virtual_tokens", type=int, default=100)
    p.add_argument("--num_tasks", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup_steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", default="off", choices=["off", "bf16"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def autocast():
        if args.autocast == "bf16":
            return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    base = T5ForConditionalGeneration.from_pretrained(args.model).eval().to(dev)
    load_seconds = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()
    d = base.config.d_model
    nv = args.num_virtual_tokens
    tasks = 1 if args.stage == "source" else args.num_tasks
    if args.stage == "source":
        cfg = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=nv,
                                 num_transformer_submodules=1)
    else:
        cfg = MultitaskPromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=nv,
                                          num_transformer_submodules=1, num_tasks=tasks,
                                          num_ranks=1)
    model = get_peft_model(base, cfg).to(dev)
    model.train()
    # The base model stays in eval mode (no dropout), as in the product.
    model.base_model.eval()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.3, weight_decay=1e-5)
    teachers = torch.randn(tasks, nv, d).to(dev)
    embed = base.get_input_embeddings()

    gen = torch.Generator().manual_seed(1234)
    vocab = base.config.vocab_size

    def step():
        input_ids = random_batch(gen, args.batch_size, args.input_length, vocab).to(dev)
        labels = random_batch(gen, args.batch_size, args.target_length, vocab).to(dev)
        mask = torch.ones_like(input_ids)
        task_ids = torch.randint(0, tasks, (args.batch_size,), generator=gen).to(dev)
        kwargs = {} if args.stage == "source" else {"task_ids": task_ids}
        opt.zero_grad()
        with autocast():
            out = model(input_ids=input_ids, attention_mask=mask, labels=labels,
                        output_hidden_states=args.stage == "distillation", **kwargs)
        loss = out.loss
        if args.stage == "distillation":
            with torch.no_grad(), autocast():
                t_embeds = torch.cat([teachers[task_ids], embed(input_ids)], 1)
                t_mask = torch.cat([torch.ones(args.batch_size, nv, dtype=mask.dtype,
                                               device=dev), mask], 1)
                t_out = base(inputs_embeds=t_embeds, attention_mask=t_mask, labels=labels,
                             output_hidden_states=True)
            real = (labels != -100).float()
            kl = (F.kl_div(F.log_softmax(out.logits, -1), F.log_softmax(t_out.logits, -1),
                           reduction="none", log_target=True).sum(-1) * real).sum() / real.sum()
            hs, ht = out.decoder_hidden_states[-1], t_out.decoder_hidden_states[-1]
            hidden = (((hs - ht) ** 2) * real.unsqueeze(-1)).sum() / (real.sum() * d)
            loss = loss + 0.9 * (kl + hidden)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(args.warmup_steps):
        step()
    sync()
    start = time.perf_counter()
    cpu_start = time.process_time()  # every thread of this process
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    tokens = args.batch_size * (args.input_length + args.target_length)
    result = {
        "implementation": "peft", "stage": args.stage, "model": args.model,
        "parameters": sum(q.numel() for q in base.parameters()),
        "batch_size": args.batch_size, "input_length": args.input_length,
        "target_length": args.target_length, "num_virtual_tokens": nv,
        "threads": torch.get_num_threads(), "steps": args.steps,
        "step_ms": 1000 * seconds / args.steps,
        "cpu_ms_per_step": 1000 * cpu_seconds / args.steps, "tokens_per_second": tokens * args.steps / seconds,
        "load_seconds": load_seconds, "rss_after_load_mib": rss_after_load,
        "peak_rss_mib": peak_rss_mib(), "torch": torch.__version__,
        "device": str(dev), "autocast": args.autocast,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else 0,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"stage {args.stage:13s} batch {args.batch_size} x ({args.input_length} + "
              f"{args.target_length} tokens), prompt {nv}, {torch.get_num_threads()} threads")
        print(f"  step {result['step_ms']:.1f} ms (CPU {result['cpu_ms_per_step']:.1f} ms)   "
              f"{result['tokens_per_second']:.0f} tokens/s   "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB ({rss_after_load:.0f} MiB after loading)")


if __name__ == "__main__":
    main()
