#!/usr/bin/env python3
"""Writes tests/golden/optim/adamw.safetensors: what torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_ do over a few steps, and learning-rate curves from transformers'
own schedule functions, for tests/optim/*_test.cc (STYLE.md item 6, REFERENCE.md section 2).

Two AdamW runs on four small fp32 tensors (shapes with and without a multiple of 8 elements),
CPU, one thread, fixed seeds, torch's default CPU path (foreach=False: the single-tensor loop):
  run_a  10 steps, cosine schedule with 3 warmup steps and min_lr, betas (0.9, 0.95), wd 0.1 on
         three tensors and none on "norm" (a second param group with weight_decay 0), and
         clip_grad_norm_(max_norm=1) before each step; the gradients are scaled so that their
         global norm is 0.5-2.0, so some steps clip and some do not.
  run_b  5 steps, constant lr, beta1 0.4 (torch's lerp takes its other branch for weight >= 0.5),
         beta2 0.6, eps 1e-6, wd 0.05 on all tensors, no clipping.
The learning rate of each step comes from lr_at() below, which is optim/schedule.cc's formula; the
script checks it against transformers' curves before writing anything.

Tensors (F32; <t> is one of w_a (10, 16), w_b (3, 5, 3), norm (16,), bias (7,); k = 1..steps):
  <run>.init.<t>              parameters before step 1
  <run>.step<k>.grad.<t>      the gradient given to step k, before clipping
  <run>.step<k>.clipped.<t>   run_a only: the gradient after clip_grad_norm_, what AdamW used
  <run>.step<k>.param.<t>     parameters after step k
  <run>.norm                  run_a only: (10,) what clip_grad_norm_ returned (torch: fp32)
  schedule.<name>             (50,) F64, lr per step from transformers, for reading in Python
Metadata (JSON strings, floats written by repr so they parse back to the same double):
  <run>.config     the OptimConfig fields, "steps", "max_norm", "decay" (tensor -> bool) and
                   "lrs": the exact learning rate of each step
  schedule.<name>  {"config": OptimConfig fields, "total_steps": 50, "lr": [...],
                    "hf": the transformers call that produced it}
  versions         torch, transformers, safetensors

Run: /tmp/golden-venv/bin/python scripts/make_golden_optim.py
(or any venv with scripts/requirements-golden.txt:
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-golden.txt)
"""
import json
import math
import os
import struct
import sys

try:
    import torch
    import transformers
    import safetensors
    from safetensors import safe_open
    from transformers.optimization import (get_constant_schedule_with_warmup,
                                           get_cosine_schedule_with_warmup,
                                           get_cosine_with_min_lr_schedule_with_warmup,
                                           get_wsd_schedule)
except ImportError as e:
    sys.exit(f"make_golden_optim.py: {e}. It needs torch, transformers and safetensors at the "
             "versions in scripts/requirements-golden.txt. Run it from a venv:\n"
             "  python3 -m venv .venv && .venv/bin/pip install -r "
             "scripts/requirements-golden.txt && .venv/bin/python scripts/make_golden_optim.py")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "optim", "adamw.safetensors")
SHAPES = {"w_a": (10, 16), "w_b": (3, 5, 3), "norm": (16,), "bias": (7,)}


def lr_at(cfg, step, total):
    """optim/schedule.cc, line for line."""
    warmup = cfg["warmup_steps"]
    if step < warmup:
        return cfg["lr"] * (float(step) / float(max(1, warmup)))
    if cfg["schedule"] == "constant":
        return cfg["lr"]
    if step >= total:
        return cfg["min_lr"]
    if cfg["schedule"] == "cosine":
        progress = float(step - warmup) / float(max(1, total - warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg["min_lr"] + (cfg["lr"] - cfg["min_lr"]) * factor
    assert cfg["schedule"] == "wsd"
    decay = min(max(round_half_away(cfg["decay_fraction"] * total), 0), max(0, total - warmup))
    decay_start = total - decay
    if step < decay_start:
        return cfg["lr"]
    progress = float(step - decay_start) / float(max(1, decay))
    return cfg["min_lr"] + (cfg["lr"] - cfg["min_lr"]) * (1.0 - progress)


def round_half_away(x):  # C's llround
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def optim_config(**kw):
    """OptimConfig's defaults (optim/config.h) with overrides."""
    cfg = dict(lr=3e-4, min_lr=0.0, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
               grad_clip=1.0, schedule="cosine", warmup_steps=0, decay_fraction=0.2)
    cfg.update(kw)
    return cfg


# ---- schedules --------------------------------------------------------------------------------

def hf_curve(make, base_lr, total):
    """lr of steps 0..total-1 from a transformers scheduler on a dummy optimizer."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = make(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def schedules(verbose):
    total, warmup, lr, min_lr = 50, 5, 3e-4, 3e-5
    out = {}
    out["cosine_min_lr"] = (
        optim_config(lr=lr, min_lr=min_lr, schedule="cosine", warmup_steps=warmup),
        "get_cosine_with_min_lr_schedule_with_warmup(num_warmup_steps=5, num_training_steps=50, "
        "min_lr=3e-5)",
        lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, warmup, total, min_lr=min_lr))
    out["cosine"] = (
        optim_config(lr=lr, min_lr=0.0, schedule="cosine", warmup_steps=warmup),
        "get_cosine_schedule_with_warmup(num_warmup_steps=5, num_training_steps=50)",
        lambda o: get_cosine_schedule_with_warmup(o, warmup, total))
    out["constant"] = (
        optim_config(lr=lr, schedule="constant", warmup_steps=warmup),
        "get_constant_schedule_with_warmup(num_warmup_steps=5)",
        lambda o: get_constant_schedule_with_warmup(o, warmup))
    out["wsd"] = (
        optim_config(lr=lr, min_lr=0.0, schedule="wsd", warmup_steps=warmup, decay_fraction=0.2),
        "get_wsd_schedule(num_warmup_steps=5, num_decay_steps=10, num_training_steps=50, "
        "decay_type='linear')",
        lambda o: get_wsd_schedule(o, warmup, 10, num_training_steps=total, decay_type="linear"))
    # HF's wsd warmup rises from min_lr (min_lr_ratio * lr), ours from 0: with min_lr > 0 the
    # curves agree from step 5 on (the test checks that; schedule.h documents it).
    out["wsd_min_lr"] = (
        optim_config(lr=lr, min_lr=min_lr, schedule="wsd", warmup_steps=warmup, decay_fraction=0.2),
        "get_wsd_schedule(num_warmup_steps=5, num_decay_steps=10, num_training_steps=50, "
        "decay_type='linear', min_lr_ratio=0.1)",
        lambda o: get_wsd_schedule(o, warmup, 10, num_training_steps=total, decay_type="linear",
                                   min_lr_ratio=min_lr / lr))
    tensors, meta = {}, {}
    for name, (cfg, call, make) in out.items():
        hf = hf_curve(make, lr, total)
        ours = [lr_at(cfg, s, total) for s in range(total)]
        first = warmup if name == "wsd_min_lr" else 0
        worst = max(abs(a - b) for a, b in zip(hf[first:], ours[first:]))
        if worst > 4e-16 * lr:
            sys.exit(f"schedule {name}: lr_at differs from transformers by {worst:g}")
        if verbose:
            print(f"schedule {name:14s} max |lr_at - HF| = {worst:.3g} (from step {first})")
        tensors[f"schedule.{name}"] = torch.tensor(hf, dtype=torch.float64)
        meta[f"schedule.{name}"] = json.dumps(
            {"config": cfg, "total_steps": total, "lr": hf, "hf": call})
    return tensors, meta


# ---- AdamW ------------------------------------------------------------------------------------

def adamw_run(run, cfg, steps, max_norm, decay, grad_norms, seed, verbose):
    gen = torch.Generator().manual_seed(seed)
    params = {n: torch.nn.Parameter(torch.randn(s, generator=gen) * 0.5) for n, s in SHAPES.items()}
    tensors = {f"{run}.init.{n}": p.detach().clone() for n, p in params.items()}
    groups = [{"params": [p for n, p in params.items() if decay[n]],
               "weight_decay": cfg["weight_decay"]},
              {"params": [p for n, p in params.items() if not decay[n]], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                            eps=cfg["eps"], foreach=False)
    lrs, norms = [], []
    for k in range(1, steps + 1):
        # Gradients of mixed magnitudes per tensor, scaled to a chosen global norm.
        raw = {n: torch.randn(s, generator=gen) * (0.1 + torch.rand(s, generator=gen))
               for n, s in SHAPES.items()}
        total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in raw.values()))
        for n, p in params.items():
            p.grad = (raw[n] * (grad_norms[k - 1] / total)).float()
            tensors[f"{run}.step{k}.grad.{n}"] = p.grad.detach().clone()
        if max_norm > 0:
            norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm))
            for n, p in params.items():
                tensors[f"{run}.step{k}.clipped.{n}"] = p.grad.detach().clone()
        lr = lr_at(cfg, k - 1, steps)
        lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        for n, p in params.items():
            tensors[f"{run}.step{k}.param.{n}"] = p.detach().clone()
    if norms:
        tensors[f"{run}.norm"] = torch.stack(norms).float()
        clipped = sum(1 for x in norms if float(x) > max_norm)
        if verbose:
            print(f"{run}: clip_grad_norm_ norms {[round(float(x), 4) for x in norms]}, "
                  f"clipped {clipped} of {steps}")
    meta = dict(cfg, steps=steps, max_norm=max_norm, decay=decay, lrs=lrs)
    return tensors, {f"{run}.config": json.dumps(meta)}


def build(verbose):
    torch.manual_seed(0)
    tensors, meta = schedules(verbose)
    cfg_a = optim_config(lr=1e-2, min_lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                         grad_clip=1.0, schedule="cosine", warmup_steps=3)
    norms_a = [0.5, 2.0, 0.8, 1.5, 1.2, 0.6, 2.0, 0.9, 1.1, 0.7]
    decay_a = {"w_a": True, "w_b": True, "norm": False, "bias": True}
    t, m = adamw_run("run_a", cfg_a, 10, cfg_a["grad_clip"], decay_a, norms_a, seed=1234,
                     verbose=verbose)
    tensors.update(t)
    meta.update(m)
    cfg_b = optim_config(lr=3e-3, beta1=0.4, beta2=0.6, eps=1e-6, weight_decay=0.05, grad_clip=0.0,
                         schedule="constant", warmup_steps=0)
    decay_b = {n: True for n in SHAPES}
    t, m = adamw_run("run_b", cfg_b, 5, 0.0, decay_b, [1.0, 3.0, 0.2, 1.0, 0.05], seed=5678,
                     verbose=verbose)
    tensors.update(t)
    meta.update(m)
    meta["versions"] = json.dumps({"torch": torch.__version__,
                                   "transformers": transformers.__version__,
                                   "safetensors": safetensors.__version__})
    return tensors, meta


def write_safetensors(path, tensors, metadata):
    """The safetensors layout with the header's keys sorted, so that regenerating gives the same
    bytes (safetensors' own writer orders metadata by a hash map, differently on every run)."""
    dtypes = {torch.float32: "F32", torch.float64: "F64"}
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the reference writer pads so that data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    torch.set_num_threads(1)
    tensors, meta = build(verbose=True)
    again, meta2 = build(verbose=False)  # two runs must agree bit for bit
    assert meta == meta2 and all(torch.equal(tensors[k], again[k]) for k in tensors), \
        "not deterministic"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_safetensors(OUT, tensors, meta)
    with safe_open(OUT, "pt") as f:  # the reference reader agrees
        assert f.metadata() == meta and set(f.keys()) == set(tensors)
        assert all(torch.equal(f.get_tensor(k), tensors[k]) for k in tensors)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(tensors)} tensors, "
          f"{os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
