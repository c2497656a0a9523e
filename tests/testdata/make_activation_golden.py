#!/usr/bin/env python3
"""Writes what transformers' ACT2FN activations compute, for activations_test.

    /tmp/tp-ref/bin/python tests/testdata/make_activation_golden.py \
        --out tests/testdata/activations_golden.json

For every name in transformers.activations.ACT2CLS: the outputs and the
gradients (of their sum) at fixed points, in float64. Names whose module
holds learned parameters are listed under "with_parameters" instead, since
a loader has no weights for them and must refuse them. The points avoid the
kinks of the piecewise activations (0, 6, +-3, +-10), where a gradient is a
convention rather than a value.
"""
import argparse
import json

import torch
import transformers
from transformers.activations import ACT2CLS, ACT2FN


def points():
    xs = [-12.25 + 0.4375 * i for i in range(57)]  # -12.25 .. 12.25
    xs += [-1e-3, 1e-3, 0.7071, 2.999, 3.001, 5.999, 6.001, 9.999, 10.001, -9.999, -10.001]
    xs = [x for x in xs if x not in (0.0, 6.0, 3.0, -3.0, 10.0, -10.0)]
    return sorted(set(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    xs = points()
    golden = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "x": xs,
        "activations": {},
        "with_parameters": [],
    }
    for name in sorted(ACT2CLS):
        module = ACT2FN[name]
        if any(True for _ in module.parameters()):
            golden["with_parameters"].append(name)
            continue
        x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
        y = module(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
        golden["activations"][name] = {"y": y.tolist(), "dy": dy.tolist()}
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
