#!/usr/bin/env python3
"""Times MPT's training steps with Hugging Face transformers and PEFT.

The reference for tools/bench/stage_bench: the same model folder, the same
shapes (random ids of exactly the stated lengths, EOS included), AdamW at a
constant rate and gradient clipping at 1.0, the same step count after the
same warm-up, the base model in eval mode (no dropout).

  source        PEFT PromptTuning (PROMPT_TUNING), loss = the model's CE
  distillation  PEFT MultitaskPromptTuning student + frozen teacher prompts
                (no grad), loss = CE + 0.9 * (KL + hidden MSE), tau = 1
  target        PEFT MultitaskPromptTuning, loss = CE

config.json's model_type picks the family, as stage_bench does:
  t5, mt5, umt5          T5ForConditionalGeneration, task_type SEQ_2_SEQ_LM,
                         the prompt before the encoder only
                         (num_transformer_submodules 1; the target stage
                         also takes 2: the second half before the decoder)
  llama, qwen2, mistral  AutoModelForCausalLM with eager attention,
                         task_type CAUSAL_LM: PEFT's causal-LM recipe, each
                         row input + target (the target ending in EOS),
                         labels -100 over the input; PEFT puts the prompt in
                         front and -100 labels over it. The KL and hidden
                         terms of distillation are taken at the positions
                         that predict the target tokens.

--dtype bfloat16 loads the frozen weights in bf16 (PEFT keeps the prompt
parameters in fp32 and casts them to the model dtype in the forward).

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
from transformers import AutoConfig, AutoModelForCausalLM, T5ForConditionalGeneration

DECODER_ONLY = ("llama", "qwen2", "mistral")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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
    p.add_argument("--num_transformer_submodules", type=int, default=1, choices=[1, 2],
                   help="T5 target stage: 2 puts the multitask prompt's second half before "
                        "the decoder (PEFT's default for SEQ_2_SEQ_LM), as stage_bench's flag")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup_steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", default="off", choices=["off", "bf16"])
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--count_flops", action="store_true",
                   help="after the timed steps, run one more under torch's FlopCounterMode and "
                        "report the matrix-product FLOPs it counts (gflop_per_step)")
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

    model_type = AutoConfig.from_pretrained(args.model).model_type
    causal = model_type in DECODER_ONLY
    if args.num_transformer_submodules == 2 and (causal or args.stage != "target"):
        p.error("--num_transformer_submodules=2: the T5 target stage only")
    dtype = DTYPES[args.dtype]
    t0 = time.perf_counter()
    if causal:
        base = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                    attn_implementation="eager")
    else:
        base = T5ForConditionalGeneration.from_pretrained(args.model, dtype=dtype)
    base = base.eval().to(dev)
    load_seconds = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()
    d = base.config.hidden_size if causal else base.config.d_model
    nv = args.num_virtual_tokens
    tasks = 1 if args.stage == "source" else args.num_tasks
    task_type = TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM
    if args.stage == "source":
        cfg = PromptTuningConfig(task_type=task_type, num_virtual_tokens=nv,
                                 num_transformer_submodules=1)
    else:
        cfg = MultitaskPromptTuningConfig(task_type=task_type, num_virtual_tokens=nv,
                                          num_transformer_submodules=args.num_transformer_submodules,
                                          num_tasks=tasks,
                                          num_ranks=1)
    model = get_peft_model(base, cfg).to(dev)
    model.train()
    # The base model stays in eval mode (no dropout), as in the product.
    model.base_model.eval()
    params = [q for q in model.parameters() if q.requires_grad]
    prompt_dtype = str(params[0].dtype).replace("torch.", "")
    opt = torch.optim.AdamW(params, lr=0.3, weight_decay=1e-5)
    teachers = torch.randn(tasks, nv, d).to(dev, dtype)
    embed = base.get_input_embeddings()

    gen = torch.Generator().manual_seed(1234)
    vocab = base.config.vocab_size

    # Causal LM: the positions of [prompt | input | target] whose logits
    # predict the target tokens.
    predicting = slice(nv + args.input_length - 1, nv + args.input_length - 1 + args.target_length)
    losses = []

    def step():
        input_ids = random_batch(gen, args.batch_size, args.input_length, vocab).to(dev)
        labels = random_batch(gen, args.batch_size, args.target_length, vocab).to(dev)
        task_ids = torch.randint(0, tasks, (args.batch_size,), generator=gen).to(dev)
        if causal:
            input_ids = torch.cat([input_ids, labels], 1)
            labels = torch.cat([torch.full_like(input_ids[:, :args.input_length], -100), labels], 1)
        mask = torch.ones_like(input_ids)
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
                if causal:
                    t_out = base(inputs_embeds=t_embeds, attention_mask=t_mask,
                                 output_hidden_states=True)
                else:
                    t_out = base(inputs_embeds=t_embeds, attention_mask=t_mask, labels=labels,
                                 output_hidden_states=True)
            if causal:
                s_logits, t_logits = out.logits[:, predicting], t_out.logits[:, predicting]
                hs = out.hidden_states[-1][:, predicting]
                ht = t_out.hidden_states[-1][:, predicting]
                real = (labels[:, args.input_length:] != -100).float()
            else:
                s_logits, t_logits = out.logits, t_out.logits
                hs, ht = out.decoder_hidden_states[-1], t_out.decoder_hidden_states[-1]
                real = (labels != -100).float()
            kl = (F.kl_div(F.log_softmax(s_logits.float(), -1), F.log_softmax(t_logits.float(), -1),
                           reduction="none", log_target=True).sum(-1) * real).sum() / real.sum()
            hidden = ((((hs - ht).float()) ** 2) * real.unsqueeze(-1)).sum() / (real.sum() * d)
            loss = loss + 0.9 * (kl + hidden)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())

    for _ in range(args.warmup_steps):
        step()
    sync()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for _ in range(args.steps):
        step()
    sync()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    counted = 0.0
    if args.count_flops:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            step()
        losses.pop()
        counted = counter.get_total_flops()
    tokens = args.batch_size * (args.input_length + args.target_length)
    result = {
        "implementation": "peft", "stage": args.stage, "model": args.model,
        "parameters": sum(q.numel() for q in base.parameters()),
        "batch_size": args.batch_size, "input_length": args.input_length,
        "target_length": args.target_length, "num_virtual_tokens": nv,
        "threads": torch.get_num_threads(), "steps": args.steps,
        "model_type": model_type, "dtype": args.dtype, "prompt_dtype": prompt_dtype,
        "task_type": task_type.value if hasattr(task_type, "value") else str(task_type),
        "step_ms": 1000 * seconds / args.steps, "cpu_ms_per_step": 1000 * cpu / args.steps,
        "tokens_per_second": tokens * args.steps / seconds,
        "tokens_per_cpu_second": tokens * args.steps / cpu, "losses": losses,
        "gflop_per_step": counted / 1e9,
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
        print(f"  {model_type} ({result['task_type']}), weights {args.dtype}; loss per step (warm-up first): "
              + " ".join(f"{x:.4f}" for x in losses))
        print(f"  step {result['step_ms']:.1f} ms (CPU {result['cpu_ms_per_step']:.1f} ms)   "
              f"{result['tokens_per_second']:.0f} tokens/s   "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB ({rss_after_load:.0f} MiB after loading)")


if __name__ == "__main__":
    main()
