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

A decoder-only folder (config.json model_type llama, qwen2 or mistral) runs
AutoModelForCausalLM with task_type CAUSAL_LM: each row is input + target
(labels -100 over the input), as stage_bench feeds the causal model, and
distillation compares teacher and student at the target-predicting
positions. --dtype bfloat16 loads the frozen weights in bf16 (stage_bench's
--dtype).

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
from transformers import AutoModelForCausalLM, T5ForConditionalGeneration


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
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
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

    with open(f"{args.model}/config.json") as f:
        causal = json.load(f).get("model_type") in ("llama", "qwen2", "mistral")
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    if causal:
        base = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                    attn_implementation="eager").eval().to(dev)
        d = base.config.hidden_size
        task_type = TaskType.CAUSAL_LM
        submodules = {}
    else:
        base = T5ForConditionalGeneration.from_pretrained(args.model, dtype=dtype).eval().to(dev)
        d = base.config.d_model
        task_type = TaskType.SEQ_2_SEQ_LM
        submodules = {"num_transformer_submodules": 1}
    load_seconds = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()
    nv = args.num_virtual_tokens
    tasks = 1 if args.stage == "source" else args.num_tasks
    if args.stage == "source":
        cfg = PromptTuningConfig(task_type=task_type, num_virtual_tokens=nv, **submodules)
    else:
        cfg = MultitaskPromptTuningConfig(task_type=task_type, num_virtual_tokens=nv,
                                          num_tasks=tasks, num_ranks=1, **submodules)
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
        target_positions = slice(None)  # of the logits and hidden states
        if causal:
            # input + target; the loss on the target only.
            L = args.target_length
            input_ids = torch.cat([input_ids, labels], 1)
            labels = torch.cat([torch.full((args.batch_size, args.input_length), -100,
                                           device=dev), labels], 1)
            start = nv + args.input_length - 1
            target_positions = slice(start, start + L)
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
                t_input = embed(input_ids)
                t_embeds = torch.cat([teachers[task_ids].to(t_input.dtype), t_input], 1)
                t_mask = torch.cat([torch.ones(args.batch_size, nv, dtype=mask.dtype,
                                               device=dev), mask], 1)
                t_out = base(inputs_embeds=t_embeds, attention_mask=t_mask,
                             labels=None if causal else labels,
                             output_hidden_states=True)
            if causal:
                real = (labels[:, args.input_length:] != -100).float()
                s_logits = out.logits[:, target_positions]
                t_logits = t_out.logits[:, target_positions]
                hs = out.hidden_states[-1][:, target_positions]
                ht = t_out.hidden_states[-1][:, target_positions]
            else:
                real = (labels != -100).float()
                s_logits, t_logits = out.logits, t_out.logits
                hs, ht = out.decoder_hidden_states[-1], t_out.decoder_hidden_states[-1]
            kl = (F.kl_div(F.log_softmax(s_logits.float(), -1), F.log_softmax(t_logits.float(), -1),
                           reduction="none", log_target=True).sum(-1) * real).sum() / real.sum()
            hidden = (((hs.float() - ht.float()) ** 2) * real.unsqueeze(-1)).sum() / (real.sum() * d)
            loss = loss + 0.9 * (kl + hidden)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(args.warmup_steps):
        step()
    sync()
    start = time.perf_counter()
    cpu_start = time.process_time()
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
        "step_ms": 1000 * seconds / args.steps, "tokens_per_second": tokens * args.steps / seconds,
        "cpu_ms_per_step": 1000 * cpu_seconds / args.steps,
        "load_seconds": load_seconds, "rss_after_load_mib": rss_after_load,
        "peak_rss_mib": peak_rss_mib(), "torch": torch.__version__,
        "device": str(dev), "autocast": args.autocast, "dtype": args.dtype,
        "model_type": base.config.model_type,
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
