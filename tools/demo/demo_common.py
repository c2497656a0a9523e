"""Shared helpers for the demo scripts: tokenisation, batching, soft-prompt
forward passes and evaluation on a Hugging Face T5.

Tokenisation follows Hugging Face's T5 tokenizer: SentencePiece pieces, then
</s> (id 1) appended; pad is id 0 and is also the decoder start token.
"""

import json
import os

import torch
import torch.nn.functional as F

PAD, EOS = 0, 1


class Tok:
    def __init__(self, spiece_path):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=spiece_path)

    def encode(self, text):
        return self.sp.encode(text) + [EOS]

    def decode(self, ids):
        ids = [i for i in ids if i not in (PAD, EOS)]
        return self.sp.decode(ids)


def load_tasks(data_dir):
    with open(os.path.join(data_dir, "tasks.json")) as f:
        return json.load(f)["tasks"]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pad_batch(seqs, max_len=None):
    n = max(len(s) for s in seqs)
    if max_len:
        n = min(n, max_len)
    ids = torch.full((len(seqs), n), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:n]
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def make_batch(tok, examples, max_in=64, max_out=24):
    """examples: list of (input_text, target_text)."""
    x, xm = pad_batch([tok.encode(a) for a, _ in examples], max_in)
    y, ym = pad_batch([tok.encode(b) for _, b in examples], max_out)
    labels = y.masked_fill(ym == 0, -100)
    return x, xm, labels


def embed_with_prompt(model, ids, mask, prompt):
    """Prepend prompt [T, d] (or [B, T, d]) to the encoder input embeddings."""
    emb = model.get_input_embeddings()(ids)
    if prompt is None:
        return emb, mask
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(ids.shape[0], -1, -1)
    pm = torch.ones(prompt.shape[:2], dtype=mask.dtype)
    return torch.cat([prompt, emb], 1), torch.cat([pm, mask], 1)


def prompt_forward(model, ids, mask, labels, prompt, hidden=False):
    """Returns HF Seq2SeqLMOutput; labels shifted right internally."""
    emb, m = embed_with_prompt(model, ids, mask, prompt)
    return model(inputs_embeds=emb, attention_mask=m, labels=labels,
                 output_hidden_states=hidden)


@torch.no_grad()
def greedy(model, tok, inputs, prompt=None, max_new=24, bs=100):
    outs = []
    for i in range(0, len(inputs), bs):
        ids, mask = pad_batch([tok.encode(a) for a in inputs[i:i + bs]])
        emb, m = embed_with_prompt(model, ids, mask, prompt)
        enc = model.get_encoder()(inputs_embeds=emb, attention_mask=m)
        h = enc.last_hidden_state
        dec = torch.full((ids.shape[0], 1), PAD, dtype=torch.long)
        done = torch.zeros(ids.shape[0], dtype=torch.bool)
        for _ in range(max_new):
            logits = model(encoder_outputs=(h,), attention_mask=m,
                           decoder_input_ids=dec).logits[:, -1]
            nxt = logits.argmax(-1)
            nxt = nxt.masked_fill(done, PAD)
            dec = torch.cat([dec, nxt[:, None]], 1)
            done |= nxt == EOS
            if done.all():
                break
        outs += [tok.decode(r[1:].tolist()) for r in dec]
    return outs


@torch.no_grad()
def rank(model, tok, inputs, candidates, prompt=None, bs=100):
    """Pick the candidate with the highest total log-likelihood."""
    cand_ids = [tok.encode(c) for c in candidates]
    y, ym = pad_batch(cand_ids)
    preds = []
    for i in range(0, len(inputs), bs):
        chunk = inputs[i:i + bs]
        ids, mask = pad_batch([tok.encode(a) for a in chunk])
        emb, m = embed_with_prompt(model, ids, mask, prompt)
        h = model.get_encoder()(inputs_embeds=emb, attention_mask=m).last_hidden_state
        scores = []
        for c in range(len(candidates)):
            lab = y[c:c + 1].expand(len(chunk), -1).masked_fill(
                ym[c:c + 1].expand(len(chunk), -1) == 0, -100)
            logits = model(encoder_outputs=(h,), attention_mask=m, labels=lab).logits
            lp = -F.cross_entropy(logits.transpose(1, 2), lab,
                                  ignore_index=-100, reduction="none").sum(1)
            scores.append(lp)
        best = torch.stack(scores, 1).argmax(1)
        preds += [candidates[j] for j in best.tolist()]
    return preds


def accuracy(model, tok, task, examples, prompt=None, instruction=None):
    """task: entry of tasks.json. examples: dicts with input/target.
    With instruction, the input is formatted as in pretraining."""
    from make_demo_tasks import format_instructed
    inputs = [e["input"] for e in examples]
    if instruction is not None:
        inputs = [format_instructed(instruction, x) for x in inputs]
    if task["metric"] == "rank":
        preds = rank(model, tok, inputs, task["candidates"], prompt)
    else:
        preds = greedy(model, tok, inputs, prompt)
    ok = sum(p.strip() == e["target"] for p, e in zip(preds, examples))
    return ok / len(examples)
