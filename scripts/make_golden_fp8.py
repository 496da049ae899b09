#!/usr/bin/env python3
"""Writes tests/golden/fp8/linear_fp8.safetensors: FP8-quantised operands and GEMM outputs of a
linear layer under the blockwise (DeepSeek-V3) and tensorwise_delayed (Transformer Engine) recipes,
for tests/kernels/fp8_linear_test.cc (REFERENCE.md section 3, STYLE.md item 6).

An independent emulation written from REFERENCE.md section 3, not a port of kernels/cpu/quant.cc:
  scale      s = amax / fp8_max in fp32 (1 when amax == 0), at least 2^-126; scale_format pow2
             rounds s up to a power of two (frexp: kept if already one, else 2^e).
  quantise   q = cast(x * (1/s)), the fp32 reciprocal then an fp32 multiply; cast = clamp to
             +-fp8_max (satfinite; torch's casts do not all saturate) then torch's round-to-nearest-
             even .to(float8_e4m3fn / float8_e5m2).
  dequantise x' = q * s in fp32.
  tiles      1x128 along the reduction dim for x (T, K) and dy (T, N); 128x128 blocks for W (N, K);
             128x1 (128 tokens of one column) for dy and x in the weight gradient. Partial tiles at
             the edges are scaled over the elements they have (zero padding never raises an amax).
  GEMMs      in float64 from the dequantised fp32 operands, stored as fp32:
               y = x'(1x128) W'^T, dx = dy'(1x128) W', dW = dy'(128x1)^T x'(128x1),
               dW_cached = dy'(128x1)^T x''(128x1), x'' = x quantised 1x128, dequantised, then
               quantised again 128x1 (fp8 activation caching: two quantisations).
  delayed    one scale per operand, s = max(history) / fp8_max * 2^margin (clamp and pow2 as above);
             a history that is empty or all zero uses the tensor's own amax (kernels/precision/
             linear.cc delayed_scale documents that rule for step 1). x and W in E4M3, dy in E4M3
             (format "e4m3") or E5M2 ("hybrid"). "saturated" counts the finite values whose x * (1/s)
             rounds (nearest even, unbounded exponent) beyond fp8_max, i.e. the ones the clamp clips.

Cases (metadata "cases": JSON list of names; metadata "case.<name>": JSON of its parameters):
  bw_fp32, bw_pow2   blockwise, inputs "a": (T, K, N) = (130, 200, 150), partial tiles in every
                     dimension; random normal with rows/columns scaled by large and small factors,
                     an all-zero row and a row of fp32 subnormals, so that tile scales differ.
  bw_pow2_exact      blockwise pow2, inputs "e": (130, 136, 16), values +-[0.25, 2) with 7 mantissa
                     bits, some rows times 2 or 1/2: every product and partial sum of the fp32 GEMMs
                     is exact (checked below), so the C++ outputs must equal these bit for bit.
  dl_*               tensorwise_delayed, inputs "d": (37, 70, 22): e4m3 and hybrid, fp32 and pow2,
                     margin 0 and 1, histories above the tensor's amax, below it (values saturate),
                     empty, and all zero (both use the tensor's own amax).
The (256, 256, 128) blockwise shape of the issue is left out: with its outputs it alone is over
1 MB, and (130, 200, 150) already has full 128-row/column tiles next to partial ones.

Tensors (<case>.<use>: codes F8_E4M3/F8_E5M2 (R, C) and scales F32 per tile, row-major
(ceil(R/tr), ceil(C/tc)); x'= decode(code) * scale):
  in.<set>.x (T, K), in.<set>.W (N, K), in.<set>.dy (T, N)    BF16 (bf16-valued inputs halve the file)
  blockwise uses: x_1x128, w_128x128, dy_1x128, dy_128x1, x_128x1, x_cached_128x1
  delayed uses:   x, w, dy (one scale each, shape (1,))
  <case>.y (T, N), <case>.dx (T, K), <case>.dW (N, K) [, <case>.dW_cached (N, K)]  F32
  bw_pow2 stores operands only (size): the test builds its reference GEMMs from them.
Case metadata keys: recipe ("blockwise" | "tensorwise_delayed"), scale_format ("fp32" | "pow2"),
  inputs, T, K, N, outputs (list of stored outputs), exact (bool); delayed also format ("e4m3" |
  "hybrid"), margin, amax_history_len, history {input, weight, grad_output: newest first},
  amax {..}: the tensors' own amax, saturated {..}: counts as defined above, own_amax {..}: whether
  the tensor's own amax set the scale.

Run: /tmp/golden-venv/bin/python scripts/make_golden_fp8.py
(or any venv with scripts/requirements-golden.txt:
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-golden.txt)
"""
import argparse
import json
import math
import os
import struct
import sys

try:
    import torch
    import safetensors
    from safetensors import safe_open
except ImportError as e:
    sys.exit(f"make_golden_fp8.py: {e}. It needs torch and safetensors at the versions in "
             "scripts/requirements-golden.txt. Run it from a venv:\n"
             "  python3 -m venv .venv && .venv/bin/pip install -r "
             "scripts/requirements-golden.txt && .venv/bin/python scripts/make_golden_fp8.py")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "fp8", "linear_fp8.safetensors")
PINNED_TORCH = "2.15.0"
MAX_BYTES = 1_500_000

# name -> (torch dtype, largest finite value, mantissa bits)
FORMATS = {"e4m3": (torch.float8_e4m3fn, 448.0, 3), "e5m2": (torch.float8_e5m2, 57344.0, 2)}
F32 = torch.float32


# ---- the maths of REFERENCE.md section 3 ------------------------------------------------------

def pow2_up(s):
    """Rounds each positive fp32 scale up to a power of two."""
    m, e = torch.frexp(s)  # s = m * 2^e, m in [0.5, 1)
    up = torch.tensor([math.ldexp(1.0, int(v)) for v in e.flatten()], dtype=F32).reshape(s.shape)
    return torch.where(m == 0.5, s, up)


def scale_for(amax, fmt, pow2):
    """fp32 scales for fp32 amaxes (any shape)."""
    amax = amax.to(F32)
    s = amax / torch.tensor(FORMATS[fmt][1], dtype=F32)
    s = torch.where(amax == 0, torch.ones_like(s), s)
    s = torch.maximum(s, torch.tensor(2.0 ** -126, dtype=F32))
    return pow2_up(s) if pow2 else s


def cast(v, fmt):
    """Satfinite cast of fp32 values: clamp (keeps NaN), then round to nearest even."""
    dtype, fmax, _ = FORMATS[fmt]
    return v.clamp(-fmax, fmax).to(dtype)


def rounds_beyond_max(v, fmt):
    """Finite values that round-to-nearest-even with an unbounded exponent takes past fp8_max."""
    _, fmax, mant = FORMATS[fmt]
    a = v.abs().double()
    m, e = torch.frexp(a)  # a = m * 2^e
    r = torch.ldexp(torch.round(torch.ldexp(m, torch.full_like(e, mant + 1))), e - (mant + 1))
    return torch.isfinite(a) & (r > fmax)


def expand(t, tr, tc, R, C):
    return t.repeat_interleave(tr, 0).repeat_interleave(tc, 1)[:R, :C]


def quant_tiles(x, tr, tc, fmt="e4m3", pow2=False):
    """x (R, C) f32 -> codes (R, C), scales (ceil(R/tr), ceil(C/tc)), x' (R, C)."""
    R, C = x.shape
    nr, nc = -(-R // tr), -(-C // tc)
    padded = torch.zeros(nr * tr, nc * tc, dtype=F32)
    padded[:R, :C] = x.abs()
    amax = padded.reshape(nr, tr, nc, tc).amax(dim=(1, 3))
    s = scale_for(amax, fmt, pow2)
    inv = torch.tensor(1.0, dtype=F32) / s
    codes = cast(x * expand(inv, tr, tc, R, C), fmt)
    return codes, s, codes.to(F32) * expand(s, tr, tc, R, C)


def quant_tensor(x, s, fmt):
    """One given scale s (a python float, exactly an fp32) for the whole tensor."""
    s = torch.tensor([s], dtype=F32)
    v = x * (torch.tensor(1.0, dtype=F32) / s)
    codes = cast(v, fmt)
    return codes, s, codes.to(F32) * s, int(rounds_beyond_max(v, fmt).sum())


def gemm(a, b):
    """a @ b in float64, stored as fp32."""
    return (a.double() @ b.double()).to(F32)


# ---- inputs ------------------------------------------------------------------------------------

def inputs_a(gen):
    """The large column factors skip the large rows: one huge product next to 127 moderate ones
    would make the fp32 GEMM's own rounding (~6 ulp of the result) most of the 1e-6 tolerance."""
    T, K, N = 130, 200, 150
    x = torch.randn(T, K, generator=gen)
    x[3] *= 1000.0
    x[7] *= 1e-3
    x[64] = 0.0                  # all-zero 1x128 tiles: scale 1
    x[100] *= 1e-39              # fp32 subnormals: the scale clamps at 2^-126
    x[129] *= 50.0               # in the 2-token block of the 128x1 tiles
    x[8:, 150] *= 300.0          # one column dominates its 128x1 tiles and its 1x128 tiles
    W = torch.randn(N, K, generator=gen) * 0.05
    W[140] *= 20.0               # the second 128-row block of W
    W[:, 130] *= 8.0
    W[10, 5] = 0.0
    dy = torch.randn(T, N, generator=gen) * 0.01
    dy[2] *= 100.0
    dy[129] *= 1e-4
    dy[8:, 149] *= 30.0
    return x, W, dy


def inputs_e(gen):
    """Values with 7 mantissa bits in +-[0.25, 2), some rows doubled or halved."""
    T, K, N = 130, 136, 16

    def draw(*shape):
        mant = 1.0 + torch.randint(0, 128, shape, generator=gen).to(F32) / 128.0
        expo = torch.randint(-2, 1, shape, generator=gen).to(F32)
        sign = torch.randint(0, 2, shape, generator=gen).to(F32) * 2.0 - 1.0
        return sign * mant * torch.exp2(expo)

    x, W, dy = draw(T, K), draw(N, K), draw(T, N)
    x[5] *= 2.0
    x[128] *= 0.5
    W[3] *= 2.0
    dy[1] *= 0.5
    dy[129] *= 2.0
    return x, W, dy


def inputs_d(gen):
    T, K, N = 37, 70, 22
    x = torch.randn(T, K, generator=gen) * 2.0
    x[4] *= 10.0
    W = torch.randn(N, K, generator=gen) * 0.1
    dy = torch.randn(T, N, generator=gen) * 1e-3
    dy[30] *= 50.0
    return x, W, dy


def check_exact(a, b, what):
    """a @ b has only exact fp32 partial sums: all products are multiples of 2^-g and the sum of
    their magnitudes stays below 2^(24-g), so any summation order gives the float64 result."""
    def grain(t):  # smallest g with t * 2^g integral
        for g in range(0, 60):
            if torch.equal(torch.ldexp(t.double(), torch.tensor(g)).frac(), torch.zeros_like(t.double())):
                return g
        raise AssertionError(what)
    g = grain(a) + grain(b)
    bound = float((a.double().abs() @ b.double().abs()).max())
    if not bound < 2.0 ** (24 - g):
        sys.exit(f"{what}: sums are not exact in fp32 (products of grain 2^-{g}, sum up to {bound})")


# ---- cases -------------------------------------------------------------------------------------

def blockwise_case(name, set_name, x, W, dy, pow2, store_outputs, exact=False):
    T, K = x.shape
    N = W.shape[0]
    t, ops = {}, {}
    ops["x_1x128"] = quant_tiles(x, 1, 128, pow2=pow2)
    ops["w_128x128"] = quant_tiles(W, 128, 128, pow2=pow2)
    ops["dy_1x128"] = quant_tiles(dy, 1, 128, pow2=pow2)
    ops["dy_128x1"] = quant_tiles(dy, 128, 1, pow2=pow2)
    ops["x_128x1"] = quant_tiles(x, 128, 1, pow2=pow2)
    ops["x_cached_128x1"] = quant_tiles(ops["x_1x128"][2], 128, 1, pow2=pow2)
    for use, (codes, s, _) in ops.items():
        t[f"{name}.{use}.codes"] = codes
        t[f"{name}.{use}.scales"] = s
    deq = {use: v[2] for use, v in ops.items()}
    pairs = {"y": (deq["x_1x128"], deq["w_128x128"].T),
             "dx": (deq["dy_1x128"], deq["w_128x128"]),
             "dW": (deq["dy_128x1"].T, deq["x_128x1"]),
             "dW_cached": (deq["dy_128x1"].T, deq["x_cached_128x1"])}
    if exact:
        for out, (a, b) in pairs.items():
            check_exact(a, b, f"{name}.{out}")
    outputs = list(pairs) if store_outputs else []
    for out in outputs:
        t[f"{name}.{out}"] = gemm(*pairs[out])
    meta = {"recipe": "blockwise", "scale_format": "pow2" if pow2 else "fp32", "inputs": set_name,
            "T": T, "K": K, "N": N, "outputs": outputs, "exact": exact}
    return t, meta


def delayed_case(name, set_name, x, W, dy, fmt, pow2, margin, history, H=4):
    """history: {"input": [...], "weight": [...], "grad_output": [...]}, newest first, fp32 values."""
    T, K = x.shape
    N = W.shape[0]
    operand_fmt = {"input": "e4m3", "weight": "e4m3",
                   "grad_output": "e5m2" if fmt == "hybrid" else "e4m3"}
    tensors = {"input": x, "weight": W, "grad_output": dy}
    short = {"input": "x", "weight": "w", "grad_output": "dy"}
    t, deq, amax, sat, own = {}, {}, {}, {}, {}
    for op, v in tensors.items():
        assert len(history[op]) <= H
        hist = torch.tensor(history[op], dtype=F32)
        amax[op] = float(v.abs().max())
        hmax = float(hist.max()) if len(history[op]) else 0.0
        own[op] = hmax == 0.0
        base = torch.tensor(amax[op] if own[op] else hmax, dtype=F32)
        fmax = torch.tensor(FORMATS[operand_fmt[op]][1], dtype=F32)
        s = base / fmax * torch.tensor(2.0 ** margin, dtype=F32)
        if base == 0:
            s = torch.tensor(1.0, dtype=F32)
        s = torch.maximum(s, torch.tensor(2.0 ** -126, dtype=F32))
        if pow2:
            s = pow2_up(s.reshape(1)).reshape(())
        codes, s1, d, sat[op] = quant_tensor(v, float(s), operand_fmt[op])
        t[f"{name}.{short[op]}.codes"] = codes
        t[f"{name}.{short[op]}.scales"] = s1
        deq[op] = d
    t[f"{name}.y"] = gemm(deq["input"], deq["weight"].T)
    t[f"{name}.dx"] = gemm(deq["grad_output"], deq["weight"])
    t[f"{name}.dW"] = gemm(deq["grad_output"].T, deq["input"])
    meta = {"recipe": "tensorwise_delayed", "scale_format": "pow2" if pow2 else "fp32",
            "format": fmt, "margin": margin, "amax_history_len": H, "inputs": set_name,
            "T": T, "K": K, "N": N, "outputs": ["y", "dx", "dW"], "exact": False,
            "history": history, "amax": amax, "saturated": sat, "own_amax": own}
    return t, meta


def f32_list(values):
    """Python floats that are exactly fp32 values (JSON keeps them exactly)."""
    return [float(torch.tensor(v, dtype=F32)) for v in values]


def build(verbose):
    gen = torch.Generator().manual_seed(20240611)
    tensors, meta, cases = {}, {}, []
    sets = {"a": inputs_a(gen), "e": inputs_e(gen), "d": inputs_d(gen)}
    for s, (x, W, dy) in list(sets.items()):
        # Inputs are bf16 values (stored as BF16); the emulation runs on them as fp32.
        sets[s] = tuple(v.to(torch.bfloat16).to(F32) for v in (x, W, dy))
        for n, v in zip(("x", "W", "dy"), sets[s]):
            tensors[f"in.{s}.{n}"] = v.to(torch.bfloat16)

    def add(name, tm):
        t, m = tm
        tensors.update(t)
        meta[f"case.{name}"] = json.dumps(m, sort_keys=True)
        cases.append(name)
        if verbose:
            extra = f" saturated {m['saturated']}" if "saturated" in m else ""
            print(f"{name:28s} {m['recipe']:18s} {m['scale_format']:5s} T,K,N={m['T']},{m['K']},"
                  f"{m['N']} outputs {m['outputs']}{extra}")

    add("bw_fp32", blockwise_case("bw_fp32", "a", *sets["a"], pow2=False, store_outputs=True))
    add("bw_pow2", blockwise_case("bw_pow2", "a", *sets["a"], pow2=True, store_outputs=False))
    add("bw_pow2_exact", blockwise_case("bw_pow2_exact", "e", *sets["e"], pow2=True,
                                        store_outputs=True, exact=True))
    x, W, dy = sets["d"]
    ax, aw, ady = (float(v.abs().max()) for v in (x, W, dy))
    above = {"input": f32_list([ax * 0.9, ax * 1.5, 0.0, ax * 1.1]),
             "weight": f32_list([aw * 1.25, aw]),
             "grad_output": f32_list([ady * 3.0])}
    below = {"input": f32_list([ax * 0.3, ax * 0.25]),          # x saturates
             "weight": f32_list([aw * 1.01, aw * 0.5, aw * 0.7]),
             "grad_output": f32_list([ady * 0.001, ady * 0.02])}  # dy saturates (E5M2 in hybrid)
    mixed = {"input": f32_list([ax * 0.2]), "weight": f32_list([aw * 0.75, aw * 3.3]),
             "grad_output": f32_list([ady * 0.1, 0.0, ady * 0.05])}
    empty = {"input": [], "weight": [], "grad_output": []}
    zeros = {"input": [0.0, 0.0, 0.0], "weight": [0.0], "grad_output": [0.0, 0.0]}
    for name, fmt, pow2, margin, hist in [
            ("dl_e4m3_fp32_m0_above", "e4m3", False, 0, above),
            ("dl_e4m3_pow2_m1_above", "e4m3", True, 1, above),
            ("dl_e4m3_fp32_m0_below", "e4m3", False, 0, below),
            ("dl_hybrid_fp32_m0_below", "hybrid", False, 0, below),
            ("dl_hybrid_pow2_m1_mixed", "hybrid", True, 1, mixed),
            ("dl_e4m3_fp32_m1_empty", "e4m3", False, 1, empty),
            ("dl_hybrid_pow2_m0_zeros", "hybrid", True, 0, zeros),
            ("dl_hybrid_fp32_m0_empty", "hybrid", False, 0, empty)]:
        add(name, delayed_case(name, "d", x, W, dy, fmt, pow2, margin, hist))
    meta["cases"] = json.dumps(cases)
    meta["versions"] = json.dumps({"torch": torch.__version__, "safetensors": safetensors.__version__})
    return tensors, meta


def write_safetensors(path, tensors, metadata):
    """The safetensors layout with the header's keys sorted, so that regenerating gives the same
    bytes (safetensors' own writer orders metadata by a hash map, differently on every run)."""
    dtypes = {torch.float32: ("F32", torch.int32), torch.bfloat16: ("BF16", torch.int16),
              torch.float8_e4m3fn: ("F8_E4M3", torch.uint8), torch.float8_e5m2: ("F8_E5M2", torch.uint8)}
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dtype, raw = dtypes[t.dtype]
        data = t.view(raw).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the reference writer pads so that data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8),
                                                                     b.view(torch.uint8))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--any-version", action="store_true",
                    help="run with another torch version than the pinned one")
    args = ap.parse_args()
    if torch.__version__.split("+")[0] != PINNED_TORCH and not args.any_version:
        sys.exit(f"make_golden_fp8.py: have torch {torch.__version__}, the golden data is defined by "
                 f"{PINNED_TORCH} (scripts/requirements-golden.txt); pass --any-version to run anyway")
    torch.set_num_threads(1)
    tensors, meta = build(verbose=True)
    again, meta2 = build(verbose=False)  # two runs must agree bit for bit
    assert meta == meta2 and all(same(tensors[k], again[k]) for k in tensors), "not deterministic"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_safetensors(OUT, tensors, meta)
    with safe_open(OUT, "pt") as f:  # the reference reader agrees
        assert f.metadata() == meta and set(f.keys()) == set(tensors)
        assert all(same(f.get_tensor(k), tensors[k]) for k in tensors)
    size = os.path.getsize(OUT)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(tensors)} tensors, {size} bytes")
    if size >= MAX_BYTES:
        sys.exit(f"{OUT} is {size} bytes, over the {MAX_BYTES} budget")


if __name__ == "__main__":
    main()
