#!/usr/bin/env python3
"""Compares the tensors of two Strata checkpoints, whatever layout saved them.

    ckpt_compare.py CKPT_A CKPT_B [--prefix P]...

Each tensor is assembled from its slices as manifest.json lists them (tiles with an offset and a
shape, or flat element ranges of ZeRO-1 shards), read through the recorded byte ranges. Prints one
line per mismatching tensor and, last, `max_rel <x>`: the largest ||a - b||_inf / ||a||_inf over
the tensors compared (those whose name starts with a --prefix; default: the model's weights, i.e.
every tensor outside "optim." and "fp8."). Exits 1 if the two checkpoints hold different tensor
names or shapes. Plain Python (no numpy), for the mpirun tests (tests/cli/dp_test.sh).
"""
import argparse
import array
import json
import os
import sys


def load(ckpt, wanted):
    manifest = json.load(open(os.path.join(ckpt, "manifest.json")))
    out = {}
    for name, rec in manifest["tensors"].items():
        if not wanted(name):
            continue
        if rec["dtype"] != "F32":
            raise SystemExit(f"{ckpt}: {name}: dtype {rec['dtype']}, only F32 is compared")
        shape = rec["shape"]
        numel = 1
        for d in shape:
            numel *= d
        values = array.array("f", bytes(4 * numel))
        for s in rec["slices"]:
            with open(os.path.join(ckpt, s["file"]), "rb") as f:
                begin, end = s["byte_range"]
                f.seek(begin)
                part = array.array("f")
                part.frombytes(f.read(end - begin))
            if "flat" in s:
                first, count = s["flat"]
                values[first:first + count] = part[:count]
                continue
            # A tile: rows of the last dimension copied to their place in the row-major tensor.
            tile, offset = s["shape"], s["offset"]
            inner = tile[-1] if tile else 1
            strides = [1] * len(shape)
            for i in range(len(shape) - 2, -1, -1):
                strides[i] = strides[i + 1] * shape[i + 1]
            rows = len(part) // max(inner, 1)
            for r in range(rows):
                idx, rem = [], r
                for d in reversed(tile[:-1]):
                    idx.append(rem % d)
                    rem //= d
                idx.reverse()
                at = sum((offset[i] + idx[i]) * strides[i] for i in range(len(idx)))
                at += offset[-1] if shape else 0
                values[at:at + inner] = part[r * inner:(r + 1) * inner]
        out[name] = (shape, values)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--prefix", action="append", default=[])
    args = ap.parse_args()
    if args.prefix:
        wanted = lambda n: any(n.startswith(p) for p in args.prefix)
    else:
        wanted = lambda n: not n.startswith(("optim.", "fp8."))
    a, b = load(args.a, wanted), load(args.b, wanted)
    if a.keys() != b.keys():
        print(f"different tensors: only in A {sorted(a.keys() - b.keys())}, only in B {sorted(b.keys() - a.keys())}")
        return 1
    worst = 0.0
    for name in sorted(a):
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb:
            print(f"{name}: shape {sa} vs {sb}")
            return 1
        scale = max((abs(x) for x in va), default=0.0)
        diff = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
        rel = diff / scale if scale > 0 else diff
        if rel > 0:
            print(f"{name}: max |a-b| {diff:.3e}, relative {rel:.3e}")
        worst = max(worst, rel)
    print(f"max_rel {worst:.6e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
