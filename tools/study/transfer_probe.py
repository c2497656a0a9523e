#!/usr/bin/env python3
"""Why do distilled MPT prompts transfer less than their teachers? A probe
in PyTorch + transformers, outside the C++ trainer.

It reads a study folder that `run_study.py --suite variants` wrote (the
teachers' adapters and the target splits), re-implements the distillation
(shared prompt P* times per-task factors U_k V_k of any rank, L_PLM + 0.9
(L_KL + L_hidden), the student started at the teachers' mean with U V = 1,
as worker/training/mpt_stages.cc does) and the few-shot target training
(AdamW, linear decay, batch 8, gradient norm 1), and measures how a target
learns from a given starting prompt. The C++ numbers are reproduced: on
has_animal (dev, k = 8 seed 0, rate 0.03, 200 steps) the animal teacher
goes 52.0 -> 88.0 % here as there, and the C++ distillation's animal prompt
50.0 -> 55.0 %.

  PY=/path/to/venv/bin/python   # torch, transformers, safetensors, sentencepiece
  $PY tools/study/transfer_probe.py distill --study out/study_variants \\
      --rank 4 --hidden decoder --out /tmp/students_r4.pt
  $PY tools/study/transfer_probe.py transfer --study out/study_variants \\
      --init student:/tmp/students_r4.pt:animal --target has_animal --seeds 0,1,2,3,4

Starting prompts (--init): teacher:TASK (the source teacher), student:FILE:TASK
(a task prompt of `distill`'s output), mpt:FOLDER:TASK (a task prompt of a
MULTITASK_PROMPT_TUNING adapter folder, e.g. the study's distillation).
Prints the dev accuracy before and after target training per seed and
their mean. docs/STUDY.md ("What the rank and the hidden states change")
has the results.
"""
import argparse
import json
import random

import sentencepiece
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import T5ForConditionalGeneration

RANKED = {'sentiment': ['positive', 'negative'], 'contains': ['yes', 'no'],
          'parity': ['even', 'odd'], 'liked': ['yes', 'no'], 'has_animal': ['yes', 'no'],
          'has_colour': ['yes', 'no']}


class Probe:
    def __init__(self, study, model_dir, threads):
        torch.set_num_threads(threads)
        self.study = study
        spec = json.load(open(f'{study}/runs/distill_mpt/spec.json'))
        self.model_dir = model_dir or spec['base_model']
        self.tasks = [t['name'] for t in spec['distillation']['tasks']]
        self.train_paths = {t['name']: t['train_path'] for t in spec['distillation']['tasks']}
        self.sp = sentencepiece.SentencePieceProcessor(model_file=self.model_dir + '/spiece.model')
        self.model = T5ForConditionalGeneration.from_pretrained(self.model_dir).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.embed = self.model.get_input_embeddings()

    def ids(self, text, limit):
        return (self.sp.encode(text) + [1])[:limit]  # </s> = 1

    def batch(self, rows):
        xs = [self.ids(r['input'], 64) for r in rows]
        ys = [self.ids(r['target'], 8) for r in rows]
        lx, ly = max(map(len, xs)), max(map(len, ys))
        ids = torch.tensor([x + [0] * (lx - len(x)) for x in xs])
        mask = torch.tensor([[1] * len(x) + [0] * (lx - len(x)) for x in xs])
        labels = torch.tensor([y + [-100] * (ly - len(y)) for y in ys])
        return ids, mask, labels

    def forward(self, prompt, ids, mask, labels):
        """prompt [B, T, d] before the input's embeddings (PEFT's layout)."""
        b, t = ids.size(0), prompt.size(1)
        out = self.model(inputs_embeds=torch.cat([prompt, self.embed(ids)], 1),
                         attention_mask=torch.cat([torch.ones(b, t, dtype=mask.dtype), mask], 1),
                         labels=labels, output_hidden_states=True)
        return out.logits, out.decoder_hidden_states[-1], out.encoder_last_hidden_state[:, t:]

    def accuracy(self, prompt, rows, task):
        correct = 0
        with torch.no_grad():
            for i in range(0, len(rows), 64):
                chunk = rows[i:i + 64]
                if task in RANKED:  # the candidate with the larger log-likelihood
                    scores = []
                    for c in RANKED[task]:
                        ids, mask, labels = self.batch([{'input': r['input'], 'target': c} for r in chunk])
                        logits, _, _ = self.forward(prompt.expand(len(chunk), -1, -1), ids, mask, labels)
                        nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction='none',
                                              ignore_index=-100).sum(1)
                        scores.append(-nll)
                    best = torch.stack(scores, 1).argmax(1).tolist()
                    correct += sum(RANKED[task][b] == r['target'] for b, r in zip(best, chunk))
                else:  # greedy decoding, exact match
                    ids, mask, _ = self.batch(chunk)
                    b, t = ids.size(0), prompt.size(1)
                    out = self.model.generate(
                        inputs_embeds=torch.cat([prompt.expand(b, -1, -1), self.embed(ids)], 1),
                        attention_mask=torch.cat([torch.ones(b, t, dtype=mask.dtype), mask], 1),
                        max_new_tokens=8, do_sample=False)
                    for tokens, r in zip(out.tolist(), chunk):
                        tokens = [x for x in tokens[1:] if x != 0]
                        if 1 in tokens:
                            tokens = tokens[:tokens.index(1)]
                        correct += self.sp.decode(tokens).strip() == r['target'].strip()
        return 100.0 * correct / len(rows)

    def teacher(self, task):
        path = f'{self.study}/runs/teachers/out/source/{task}/adapter_model.safetensors'
        return load_file(path)['prompt_embeddings']


def load_rows(path, limit=None):
    rows = [json.loads(line) for line in open(path)]
    return rows[:limit] if limit else rows


def distill(probe, args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    teachers = torch.stack([probe.teacher(t) for t in probe.tasks])  # [K, T, d]
    k, t, d = teachers.shape
    shared = teachers.mean(0).clone().requires_grad_(True)
    cols = torch.ones(k, t, args.rank, requires_grad=True)
    rows = (torch.ones(k, args.rank, d) / args.rank).requires_grad_(True)
    data = {task: load_rows(probe.train_paths[task]) for task in probe.tasks}
    params = [shared, cols, rows]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-5)
    for step in range(args.steps):
        members = [random.randrange(k) for _ in range(args.batch)]  # uniform over tasks
        ids, mask, labels = probe.batch([random.choice(data[probe.tasks[m]]) for m in members])
        m = torch.tensor(members)
        logits, dec, enc = probe.forward(shared.unsqueeze(0) * torch.bmm(cols[m], rows[m]),
                                         ids, mask, labels)
        with torch.no_grad():
            t_logits, t_dec, t_enc = probe.forward(teachers[m], ids, mask, labels)
        scored = (labels != -100).float()
        plm = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
        kl = (F.kl_div(F.log_softmax(logits, -1), F.log_softmax(t_logits, -1), log_target=True,
                       reduction='none').sum(-1) * scored).sum() / scored.sum()
        hidden = torch.zeros(())
        if args.hidden in ('decoder', 'both'):
            hidden = hidden + (((dec - t_dec) ** 2).mean(-1) * scored).sum() / scored.sum()
        if args.hidden in ('encoder', 'both'):  # the encoder's output at the input's positions
            real = mask.float()
            hidden = hidden + (((enc - t_enc) ** 2).mean(-1) * real).sum() / real.sum()
        loss = plm + 0.9 * (kl + hidden)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f'step {step}: L_PLM {plm.item():.3f}  L_KL {kl.item():.3f}  '
                  f'L_hidden {hidden.item():.3f}', flush=True)
    with torch.no_grad():
        prompts = shared.unsqueeze(0) * torch.bmm(cols, rows)
        mean = teachers.mean(0).flatten()
        for i, task in enumerate(probe.tasks):
            own = F.cosine_similarity(teachers[i].flatten(), prompts[i].flatten(), 0).item()
            to_mean = F.cosine_similarity(mean, prompts[i].flatten(), 0).item()
            print(f'{task}: cosine with its teacher {own:.2f}, with the teachers\' mean {to_mean:.2f}')
    torch.save({'prompts': prompts, 'tasks': probe.tasks}, args.out)


def transfer(probe, args):
    kind, _, rest = args.init.partition(':')
    if kind == 'teacher':
        start = probe.teacher(rest)
    elif kind in ('student', 'mpt'):
        where, _, task = rest.rpartition(':')
        i = probe.tasks.index(task)
        if kind == 'student':
            start = torch.load(where)['prompts'][i]
        else:
            w = load_file(where + '/adapter_model.safetensors')
            start = w['prompt_embeddings'] * (w['prefix_task_cols'][i] @ w['prefix_task_rows'][i])
    else:
        raise SystemExit(f'--init: "{args.init}" is not teacher:, student: or mpt:')
    dev = load_rows(f'{probe.study}/data/{args.target}/dev.jsonl', args.dev_limit)
    results = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        random.seed(seed)
        prompt = start.clone().unsqueeze(0).requires_grad_(True)
        train = load_rows(f'{probe.study}/data/{args.target}/k{args.k}_s{seed}.jsonl')
        opt = torch.optim.AdamW([prompt], lr=args.lr, weight_decay=1e-5)
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / args.steps)
        before = probe.accuracy(prompt, dev, args.target)
        for _ in range(args.steps):
            random.shuffle(train)
            ids, mask, labels = probe.batch(train[:8])
            logits, _, _ = probe.forward(prompt.expand(ids.size(0), -1, -1), ids, mask, labels)
            loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([prompt], 1.0)
            opt.step()
            decay.step()
        after = probe.accuracy(prompt, dev, args.target)
        results.append(after)
        print(f'{args.init} -> {args.target}, seed {seed}, rate {args.lr}: {before:.1f} -> {after:.1f}',
              flush=True)
    print(f'mean {args.init} -> {args.target}: {sum(results) / len(results):.1f} '
          f'over seeds {",".join(map(str, args.seeds))}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('command', choices=['distill', 'transfer'])
    ap.add_argument('--study', required=True, help='a run_study.py --suite variants folder')
    ap.add_argument('--model', default='', help='base model folder (default: the study\'s)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0, help='distill: the seed of the batches')
    ap.add_argument('--rank', type=int, default=1, help='distill: rank of U_k V_k')
    ap.add_argument('--hidden', choices=['decoder', 'encoder', 'both', 'none'], default='decoder',
                    help='distill: which hidden states L_hidden compares')
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--steps', type=int, default=None, help='default 300 (distill), 200 (transfer)')
    ap.add_argument('--lr', type=float, default=0.03)
    ap.add_argument('--out', default='students.pt', help='distill: where the task prompts go')
    ap.add_argument('--init', default='', help='transfer: the starting prompt (see above)')
    ap.add_argument('--target', default='has_animal')
    ap.add_argument('--k', type=int, default=8)
    ap.add_argument('--seeds', type=lambda s: [int(x) for x in s.split(',')], default=[0])
    ap.add_argument('--dev_limit', type=int, default=200)
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 300 if args.command == 'distill' else 200
    probe = Probe(args.study, args.model, args.threads)
    (distill if args.command == 'distill' else transfer)(probe, args)


if __name__ == '__main__':
    main()
