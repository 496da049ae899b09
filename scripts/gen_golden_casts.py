#!/usr/bin/env python3
"""Writes tests/golden/casts.json: fp32 inputs and the codes PyTorch gives them in fp8 E4M3,
fp8 E5M2 and bf16, for tests/core/dtype_test.cc (REFERENCE.md section 3).

The casts are "satfinite": PyTorch's .to(float8_*) does not saturate, so inputs are clamped to
+-max first (clamp keeps NaN, and turns +-Inf into +-max). bf16 is plain round-to-nearest-even
(overflow goes to Inf). Every code is also checked against an exact rational-arithmetic reference
written here, so the file cannot silently inherit a PyTorch quirk (such as a bf16 path that
flushes fp32 denormals). NaN inputs are listed with the NaN code Strata produces; the C++ test
compares those by "is a NaN code", since sign and payload of a NaN are not part of the contract.

Run: python3 scripts/gen_golden_casts.py   (needs torch and numpy)
"""
import json
import math
import os
import struct
import sys
from fractions import Fraction

try:
    import numpy as np
    import torch
except ImportError:
    sys.exit("gen_golden_casts.py needs torch and numpy. Run it from a venv:\n"
             "  python3 -m venv .venv && .venv/bin/pip install torch numpy && "
             ".venv/bin/python scripts/gen_golden_casts.py")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                   "casts.json")
SEED = 1234
NUM_RANDOM = 2000
NAN_CODES = {"e4m3": 0x7F, "e5m2": 0x7E, "bf16": 0x7FC0}


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def bits_of(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def next_up(bits):  # the next fp32 above a positive finite value's bit pattern
    return bits + 1


def next_down(bits):
    return bits - 1


class Fp8:
    """An fp8 format: exact values of all finite codes, for the rational reference."""

    def __init__(self, name, mant_bits, bias, has_inf):
        self.name, self.mant_bits, self.bias, self.has_inf = name, mant_bits, bias, has_inf
        self.values = {}  # code (positive) -> Fraction
        for code in range(0x80):
            e, m = code >> mant_bits, code & ((1 << mant_bits) - 1)
            if (has_inf and e == (1 << (7 - mant_bits)) - 1) or (not has_inf and code == 0x7F):
                continue  # Inf/NaN
            if e == 0:
                v = Fraction(m, 1 << mant_bits) * Fraction(2) ** (1 - bias)
            else:
                v = (1 + Fraction(m, 1 << mant_bits)) * Fraction(2) ** (e - bias)
            self.values[code] = v
        self.max_code = max(self.values)
        self.max = float(self.values[self.max_code])

    def reference(self, x):
        """Satfinite, round to nearest even, exact."""
        if math.isnan(x):
            return NAN_CODES[self.name]
        sign = 0x80 if math.copysign(1.0, x) < 0 else 0
        if math.isinf(x) or abs(x) >= self.max:
            return sign | self.max_code
        a = Fraction(abs(x))
        codes = sorted(self.values)
        for lo, hi in zip(codes, codes[1:]):
            if self.values[lo] <= a <= self.values[hi]:
                d_lo, d_hi = a - self.values[lo], self.values[hi] - a
                best = lo if d_lo < d_hi or (d_lo == d_hi and lo % 2 == 0) else hi
                return sign | best
        raise AssertionError(x)


E4M3 = Fp8("e4m3", 3, 7, False)
E5M2 = Fp8("e5m2", 2, 15, True)


def bf16_reference(u):
    if u & 0x7FFFFFFF > 0x7F800000:
        return NAN_CODES["bf16"]
    lower, rest = u >> 16, u & 0xFFFF
    if rest > 0x8000 or (rest == 0x8000 and lower & 1):
        lower += 1  # carries into the exponent (and to Inf) as round-to-nearest-even must
    return lower


def edge_inputs():
    xs = [0.0, -0.0, math.inf, -math.inf]
    for fmt in (E4M3, E5M2):
        vals = [fmt.values[c] for c in sorted(fmt.values)]
        mx, min_sub = fmt.max, float(vals[1])
        top_tie = float(vals[-1] + (vals[-1] - vals[-2]) / 2)  # max + half ulp
        xs += [mx, mx * 1.01, f32(next_up(bits_of(mx))), f32(next_down(bits_of(mx))),
               top_tie, f32(next_up(bits_of(top_tie))), f32(next_down(bits_of(top_tie))),
               1e9, 3.4028234663852886e38, min_sub, min_sub / 2, min_sub * 1.5, min_sub * 2.5,
               f32(next_up(bits_of(min_sub / 2))), f32(next_down(bits_of(min_sub / 2))),
               min_sub / 4, float(2 ** (1 - fmt.bias))]
        # Every exact code value, and every midpoint between neighbours with its fp32 neighbours:
        # ties go to the even code, including across binades and from subnormal to normal.
        for v in vals[1:]:
            xs.append(float(v))
        for lo, hi in zip(vals, vals[1:]):
            mid = float((lo + hi) / 2)
            xs += [mid, -mid, f32(next_up(bits_of(mid))), f32(next_down(bits_of(mid)))]
    # bf16 ties and carries, fp32 max, fp32 denormals.
    xs += [1 + 2 ** -8, 1 + 3 * 2 ** -8, f32(0x3F808001), f32(0x3F807FFF), f32(0x3FFF8000),
           f32(0x7F7F0000), f32(0x7F7F8000), f32(0x7F7F7FFF), f32(0x7F7FFFFF), f32(0xFF7F8000)]
    xs += [f32(b) for b in (0x00000001, 0x80000001, 0x00008000, 0x00018000, 0x00008001,
                            0x007FFFFF, 0x807FFFFF, 0x00400000, 0x00800000)]
    # NaNs stay bit patterns: a Python float round trip would quiet a signalling payload.
    nans = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFA12345, 0x7FFFFFFF]
    return [bits_of(x) for x in xs] + nans


def random_inputs():
    rng = np.random.default_rng(SEED)
    mags = np.exp(rng.uniform(math.log(1e-12), math.log(1e6), NUM_RANDOM))
    signs = rng.choice([-1.0, 1.0], NUM_RANDOM)
    return [int(b) for b in (mags * signs).astype(np.float32).view(np.uint32)]


def torch_codes(bits, dtype, max_value):
    t = torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32))
    if max_value is not None:
        t = torch.clamp(t, -max_value, max_value)
    bits = t.to(dtype).view(torch.uint8 if max_value is not None else torch.int16)
    return [int(b) & (0xFF if max_value is not None else 0xFFFF) for b in bits.tolist()]


def is_nan_code(name, code):
    if name == "e4m3":
        return code & 0x7F == 0x7F
    if name == "e5m2":
        return code & 0x7C == 0x7C and code & 0x03 != 0
    return code & 0x7F80 == 0x7F80 and code & 0x7F != 0


def main():
    all_bits = edge_inputs() + random_inputs()
    got = {
        "e4m3": torch_codes(all_bits, torch.float8_e4m3fn, E4M3.max),
        "e5m2": torch_codes(all_bits, torch.float8_e5m2, E5M2.max),
        "bf16": torch_codes(all_bits, torch.bfloat16, None),
    }
    refs = {"e4m3": lambda b: E4M3.reference(f32(b)), "e5m2": lambda b: E5M2.reference(f32(b)),
            "bf16": bf16_reference}
    lines = []
    for i, b in enumerate(all_bits):
        x = f32(b)
        entry = {"x": "0x%08x" % b, "v": str(np.uint32(b).view(np.float32))}
        for name, ref in refs.items():
            code, want = got[name][i], ref(b)
            if math.isnan(x):
                assert is_nan_code(name, code), (name, x, hex(code))
                code = want  # the code Strata produces; the test checks only "is NaN"
            assert code == want, f"torch and the exact reference disagree: {name} {x!r} " \
                                 f"{hex(code)} vs {hex(want)}"
            entry[name] = "0x%02x" % code if name != "bf16" else "0x%04x" % code
        lines.append(json.dumps(entry, separators=(",", ":")))
    header = {
        "about": "fp32 -> fp8 (satfinite, RNE) and bf16 (RNE) codes from PyTorch "
                 f"{torch.__version__}, checked against an exact reference; "
                 "written by scripts/gen_golden_casts.py",
        "nan_codes": {k: hex(v) for k, v in NAN_CODES.items()},
        "nan_note": "NaN inputs list these codes; Strata ORs in the input's sign (bf16 also keeps "
                    "the payload's top bits), so compare NaN inputs by 'is a NaN code'",
        "seed": SEED,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("{\n" + "\n".join(f'"{k}":{json.dumps(v)},' for k, v in header.items()))
        f.write('\n"cases":[\n' + ",\n".join(lines) + "\n]}\n")
    print(f"wrote {len(lines)} cases to {os.path.relpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
