#!/usr/bin/env python3
"""Compares the tensors of two adapter_model.safetensors files.

  compare_adapters.py A B TOLERANCE

Exits 0 when both files hold the same tensor names, dtypes and shapes and
every float32 tensor of A is within TOLERANCE of B's, relative to the
largest magnitude of B's tensor (max|a - b| <= TOLERANCE * max|b|); prints
the largest relative difference. Standard library only (safetensors: an
8-byte little-endian header length, a JSON header, then raw data).
"""
import array
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], data[begin:end])
    return tensors


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    a, b, tol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
    if sorted(a) != sorted(b):
        print(f"tensor names differ: {sorted(a)} vs {sorted(b)}")
        return 1
    worst = 0.0
    for name in sorted(a):
        da, sa, ra = a[name]
        db, sb, rb = b[name]
        if (da, sa) != (db, sb):
            print(f"{name}: {da}{sa} vs {db}{sb}")
            return 1
        if da != "F32":
            if ra != rb:
                print(f"{name}: {da} bytes differ")
                return 1
            continue
        xa, xb = array.array("f"), array.array("f")
        xa.frombytes(ra)
        xb.frombytes(rb)
        if sys.byteorder != "little":
            xa.byteswap()
            xb.byteswap()
        scale = max((abs(v) for v in xb), default=0.0) or 1.0
        diff = max((abs(p - q) for p, q in zip(xa, xb)), default=0.0) / scale
        worst = max(worst, diff)
    print(f"largest relative difference {worst:.3g} (tolerance {tol:g})")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
