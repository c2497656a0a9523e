#!/usr/bin/env python3
"""Writes a randomly initialised T5 model folder for benchmarks.

The default shape is T5-small's: d_model 512, 6 + 6 layers, 8 heads, d_kv 64,
d_ff 2048, vocabulary 32128, ReLU feed-forward, tied embeddings. Nothing is
downloaded; the weights come from transformers' initialiser with a fixed seed.

    python3 tools/bench/make_random_t5.py --out /tmp/t5-small-random
"""
import argparse

import torch
from transformers import T5Config, T5ForConditionalGeneration


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--d_model", type=int, default=512)
    p.add_argument("--num_layers", type=int, default=6)
    p.add_argument("--num_heads", type=int, default=8)
    p.add_argument("--d_ff", type=int, default=2048)
    p.add_argument("--vocab_size", type=int, default=32128)
    args = p.parse_args()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=args.vocab_size, d_model=args.d_model, d_kv=args.d_model // args.num_heads,
        d_ff=args.d_ff, num_layers=args.num_layers, num_decoder_layers=args.num_layers,
        num_heads=args.num_heads, feed_forward_proj="relu", tie_word_embeddings=True,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(config).eval()
    model.save_pretrained(args.out, safe_serialization=True)
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
