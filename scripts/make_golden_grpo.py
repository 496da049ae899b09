#!/usr/bin/env python3
"""Writes tests/golden/grpo/grpo.safetensors: GRPO advantages and the clipped-surrogate loss with its
gradient d loss / d logp for every variant, for tests/rl/grpo_test.cc (REFERENCE.md section 5).

An independent PyTorch implementation written from REFERENCE.md section 5, not a port of rl/grpo.cc:
the loss is built from padded (S, T) tensors the way a PyTorch trainer would and differentiated by
autograd, in float64, from inputs that are float32 values (so the C++ reads exactly these inputs).
  advantages  A_i = (r_i - mean_g) / (std_g + 1e-4) (group), / (std over the whole batch + 1e-4)
              (batch), or r_i - mean_g (none); unbiased (n - 1) std; a group whose rewards are all
              equal gets A = 0 exactly (not (r - mean) / eps, which is not 0 when the mean rounds).
  ratio       token: rho_t = exp(logp - logp_old); sequence (GSPO): s_i = exp(mean over the
              sequence's masked-in tokens of (logp - logp_old)), used for each of its tokens.
  objective   j_t = min(rho A, clamp(rho, 1 - eps_low, 1 + eps_high) A) - beta k3_t,
              k3_t = exp(lr - lt) - (lr - lt) - 1 (lr = logp_ref, lt = logp).
  loss        L = -aggregate(j) over masked-in tokens, with GLOBAL denominators (GrpoDenominators):
                grpo     sum_i (sum_t j_it / n_i) / den.sequences      (n_i: the sequence's
                                                                        masked-in tokens, >= 1)
                dapo     sum_it j_it / den.tokens
                dr_grpo  sum_it j_it / (den.sequences * den.max_completion_length)
              The stored loss is the share of this piece (6 sequences, 23 masked-in tokens) of a
              global batch of den.sequences = 9 sequences, den.tokens = 34 tokens and
              den.max_completion_length = 12: the other sequences and tokens live in other pieces
              and are not part of this file. A fully masked sequence contributes 0 but still counts
              in den.sequences (it is one of the global batch's completions).
  dlogp       torch.autograd.grad(L, logp) at every token (0 for masked-out tokens).
  stats       [kl_sum, ratio_sum, clipped_low, clipped_high, tokens] over masked-in tokens:
              kl_sum = sum k3 (only when beta > 0, else 0), ratio_sum = sum of rho_t (token) or s_i
              per token (sequence), clipped_low = #(A < 0 and ratio < 1 - eps_low), clipped_high =
              #(A > 0 and ratio > 1 + eps_high), tokens = masked-in tokens (rl/grpo.h's logging sums).

Cases:
  advantages  reward sets (metadata "adv.sets": {name: G}):
                g4  4 groups of 4: mixed 0/1, all-equal 1.0, mixed partial credit, random
                g2  G = 2: {1, 0}, {0.3, 0.9}, all-equal {0.5, 0.5}
                g3  G = 3: all-equal {0.1, 0.1, 0.1} and mixed (the mean of equal float32 values is
                    exact in float64, so the all-equal rule is tested with double rewards by hand in
                    grpo_test.cc, where (0.1 + 0.1 + 0.1) / 3 != 0.1)
              for each scale_rewards in group / batch / none.
  loss        one piece of 6 sequences of lengths 6, 4, 7, 3, 5, 6 (flat, 31 tokens), masks with
              tail padding, a masked token inside a sequence and one fully masked sequence; log-ratios
              chosen so that token ratios and sequence ratios fall on both sides of the clip range
              with both signs of A (the script asserts every branch is hit and no ratio lies within
              1e-3 of a clip boundary, where the min/clamp derivative is ambiguous).
              loss_type grpo / dapo / dr_grpo x importance_sampling_level token / sequence x beta 0 /
              0.04, eps_low 0.2, eps_high 0.28.

Tensors:
  adv.<set>.rewards      (S,) F32
  adv.<set>.<scaling>    (S,) F64 expected advantages, scaling in group / batch / none
  loss.offsets           (S + 1,) I64 token range of each sequence
  loss.logp, loss.logp_old, loss.logp_ref  (n,) F32
  loss.mask              (n,) U8
  loss.advantage         (S,) F32
  <case>.loss            (1,) F64        <case> = loss.<type>.<level>.beta<beta>
  <case>.dlogp           (n,) F64
  <case>.stats           (5,) F64        as above
Metadata (JSON strings; floats by repr): "adv.sets", "loss.cases" (list of {name, loss_type,
  importance_sampling_level, beta}), "loss.config" ({epsilon_low, epsilon_high, sequences, tokens,
  max_completion_length}), "crosscheck" (what was compared against verl, or why not), "versions".

Cross-check against verl (verl.trainer.ppo.core_algos, imported without verl/__init__.py, which
pulls in ray and the whole trainer; needs `pip install --no-deps verl` plus its imports omegaconf,
tensordict, codetiming, orjson, ray): where conventions coincide the script asserts agreement
before writing anything, to 1e-12 relative (1e-8 for seq-mean-token-mean, whose n_i + 1e-8 moves
the loss by ~1e-9 relative):
  - compute_grpo_outcome_advantage(epsilon=1e-4, norm_adv_by_std_in_grpo True / False) = our group /
    none advantages. Differences: verl's default epsilon is 1e-6; it has no batch-std scaling (TRL's
    scale_rewards="batch" has); it does not special-case all-equal groups (it returns
    (r - mean) / (0 + eps), 0 here only because these means are exact; compared with an absolute
    1e-9 besides the relative 1e-12); a group of one gets mean 0, std 1.
  - compute_policy_loss_vanilla (token) and compute_policy_loss_gspo (sequence), plus
    kl_loss_coef * agg_loss(kl_penalty(logp, logp_ref, "low_var_kl")) for beta > 0, with
    loss_agg_mode token-mean = dapo (batch_num_tokens = den.tokens), seq-mean-token-mean = grpo
    (global_batch_size = den.sequences) and seq-mean-token-sum-norm = dr_grpo (global_batch_size =
    den.sequences, loss_scale_factor = den.max_completion_length): loss and autograd d loss / d logp.
    Differences: verl's vanilla loss adds dual-clip PPO (for A < 0 the per-token loss is capped at
    -3 A, clip_ratio_c = 3), which GRPO does not have: disabled here with clip_ratio_c = 1e9 (every
    ratio here is below 3 anyway); seq-mean-token-mean divides by n_i + 1e-8; verl clamps log-ratios
    to +-20 (GSPO: <= 10) and k3 to +-10 (inactive here). verl's GSPO uses the stop-gradient token
    form s_it = sg(s_i) p_t / sg(p_t): same values, and the same gradient as differentiating
    through the sequence mean, for every aggregation.
TRL (GRPOTrainer._compute_loss) needs a trainer instance and is not called; its conventions are
REFERENCE.md's (eps 1e-4, unbiased std, scale_rewards group/batch/none, loss_type grpo: per-sequence
token mean then mean over the local batch, i.e. den.sequences = the local count).
If verl cannot be imported the cross-check is skipped with a printed message (and recorded in the
"crosscheck" metadata); the golden values do not depend on it.

Run: /tmp/golden-venv/bin/python scripts/make_golden_grpo.py
(or any venv with scripts/requirements-golden.txt:
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-golden.txt)
"""
import argparse
import importlib.util
import json
import os
import struct
import sys
import types

try:
    import numpy as np
    import torch
    import safetensors
    from safetensors import safe_open
except ImportError as e:
    sys.exit(f"make_golden_grpo.py: {e}. It needs torch, numpy and safetensors at the versions in "
             "scripts/requirements-golden.txt. Run it from a venv:\n"
             "  python3 -m venv .venv && .venv/bin/pip install -r "
             "scripts/requirements-golden.txt && .venv/bin/python scripts/make_golden_grpo.py")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "grpo", "grpo.safetensors")
PINNED_TORCH = "2.15.0"
MAX_BYTES = 64_000

ADV_EPS = 1e-4
EPS_LOW, EPS_HIGH = 0.2, 0.28
DEN = {"sequences": 9.0, "tokens": 34.0, "max_completion_length": 12.0}
LENGTHS = [6, 4, 7, 3, 5, 6]
# Per-sequence mean log-ratio around which token log-ratios scatter, and the advantage: chosen so
# that s_i lands above the range with A > 0 (clipped high), below with A < 0 (clipped low), inside,
# above with A < 0 and below with A > 0 (unclipped branches); sequence 3 is fully masked.
SEQ_SHIFT = [0.40, -0.38, 0.05, 0.10, 0.36, -0.42]
SEQ_ADV = [0.9, -1.2, 0.5, 0.7, -0.45, 1.3]
LOSS_TYPES = ["grpo", "dapo", "dr_grpo"]
LEVELS = ["token", "sequence"]
BETAS = [0.0, 0.04]


def f32(x):
    """float32-representable float64 tensor: what the C++ reads."""
    return torch.as_tensor(x, dtype=torch.float64).to(torch.float32).to(torch.float64)


# ---------------------------------------------------------------- advantages (REFERENCE.md 5)

def advantages(rewards, G, scaling):
    r = rewards.to(torch.float64).view(-1, G)
    centred = r - r.mean(dim=1, keepdim=True)
    equal = (r == r[:, :1]).all(dim=1, keepdim=True)
    centred = torch.where(equal, torch.zeros_like(centred), centred)
    if scaling == "group":
        centred = centred / (r.std(dim=1, unbiased=True, keepdim=True) + ADV_EPS)
    elif scaling == "batch":
        centred = centred / (rewards.to(torch.float64).std(unbiased=True) + ADV_EPS)
    else:
        assert scaling == "none"
    return centred.reshape(-1)


def reward_sets(gen):
    g4 = [0, 1, 1, 0,  1, 1, 1, 1,  0.2, 0.5, 1.0, 0.0]
    g4 += torch.rand(4, generator=gen, dtype=torch.float64).tolist()
    g2 = [1, 0, 0.3, 0.9, 0.5, 0.5]
    g3 = [0.1, 0.1, 0.1, 0.7, 0.2, 0.1]
    return {"g4": (f32(g4), 4), "g2": (f32(g2), 2), "g3": (f32(g3), 3)}


# ---------------------------------------------------------------- loss (REFERENCE.md 5)

def padded(flat, offsets, T, fill=0.0):
    S = len(offsets) - 1
    out = torch.full((S, T), fill, dtype=flat.dtype)
    for i in range(S):
        out[i, : offsets[i + 1] - offsets[i]] = flat[offsets[i]:offsets[i + 1]]
    return out


def unpadded(mat, offsets):
    return torch.cat([mat[i, : offsets[i + 1] - offsets[i]] for i in range(len(offsets) - 1)])


def grpo_objective(logp, old, ref, mask, adv, loss_type, level, beta):
    """All (S, T) float64 except adv (S,); logp may require grad. Returns (loss, ratio, k3)."""
    m = mask.to(torch.float64)
    n_i = m.sum(dim=1)
    log_ratio = logp - old
    if level == "token":
        ratio = torch.exp(log_ratio)
    else:
        seq = (log_ratio * m).sum(dim=1) / n_i.clamp(min=1)
        ratio = torch.exp(seq).unsqueeze(1).expand_as(logp)
    A = adv.unsqueeze(1)
    surrogate = torch.minimum(ratio * A, torch.clamp(ratio, 1 - EPS_LOW, 1 + EPS_HIGH) * A)
    d = ref - logp
    k3 = torch.exp(d) - d - 1
    j = surrogate - beta * k3 if beta > 0 else surrogate
    if loss_type == "grpo":
        agg = ((j * m).sum(dim=1) / n_i.clamp(min=1)).sum() / DEN["sequences"]
    elif loss_type == "dapo":
        agg = (j * m).sum() / DEN["tokens"]
    else:
        assert loss_type == "dr_grpo"
        agg = (j * m).sum() / (DEN["sequences"] * DEN["max_completion_length"])
    return -agg, ratio, k3


def loss_inputs(gen):
    offsets = [0]
    for L in LENGTHS:
        offsets.append(offsets[-1] + L)
    n, T = offsets[-1], max(LENGTHS)
    mask = torch.ones(n, dtype=torch.uint8)
    mask[offsets[1] - 1] = 0            # sequence 0: one padding token at the end
    mask[offsets[2] + 3] = 0            # sequence 2: a masked token inside
    mask[offsets[2] + 5:offsets[3]] = 0  # ... and two padding tokens
    mask[offsets[3]:offsets[4]] = 0     # sequence 3: fully masked
    mask[offsets[5] - 1] = 0            # sequence 4: one padding token
    logp = -(0.05 + 3.0 * torch.rand(n, generator=gen, dtype=torch.float64))
    shift = torch.cat([torch.full((L,), s, dtype=torch.float64) for L, s in zip(LENGTHS, SEQ_SHIFT)])
    noise = 0.7 * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)
    old = logp - (shift + noise)
    ref = logp + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    return {"offsets": offsets, "T": T, "mask": mask, "logp": f32(logp), "logp_old": f32(old),
            "logp_ref": f32(ref), "advantage": f32(SEQ_ADV)}


def check_coverage(inp):
    """Every branch of min/clamp is taken at token and sequence level, none near a boundary."""
    off, T = inp["offsets"], inp["T"]
    lp, old = padded(inp["logp"], off, T), padded(inp["logp_old"], off, T)
    m = padded(inp["mask"], off, T).bool()
    A = inp["advantage"].unsqueeze(1).expand_as(lp)
    lo, hi = 1 - EPS_LOW, 1 + EPS_HIGH
    for level in LEVELS:
        _, ratio, _ = grpo_objective(lp, old, lp, m, inp["advantage"], "dapo", level, 0.0)
        r, a = ratio[m], A[m]
        branches = {"clipped high (A>0, r>hi)": (a > 0) & (r > hi), "clipped low (A<0, r<lo)": (a < 0) & (r < lo),
                    "unclipped above (A<0, r>hi)": (a < 0) & (r > hi),
                    "unclipped below (A>0, r<lo)": (a > 0) & (r < lo), "inside": (r > lo) & (r < hi)}
        for what, sel in branches.items():
            assert sel.any(), f"{level}: no {what}"
        gap = torch.minimum((r - lo).abs(), (r - hi).abs()).min().item()
        assert gap > 1e-3, f"{level}: a ratio within {gap} of a clip boundary"


# ---------------------------------------------------------------- building the file

def build():
    gen = torch.Generator().manual_seed(20240917)
    tensors, meta = {}, {}
    sets = reward_sets(gen)
    meta["adv.sets"] = json.dumps({k: G for k, (_, G) in sets.items()})
    for name, (r, G) in sets.items():
        tensors[f"adv.{name}.rewards"] = r.to(torch.float32)
        for scaling in ["group", "batch", "none"]:
            tensors[f"adv.{name}.{scaling}"] = advantages(r, G, scaling)

    inp = loss_inputs(gen)
    check_coverage(inp)
    off, T = inp["offsets"], inp["T"]
    assert int(inp["mask"].sum()) == 23 and len(off) - 1 == 6, "the docstring's counts"
    tensors["loss.offsets"] = torch.tensor(off, dtype=torch.int64)
    for k in ["logp", "logp_old", "logp_ref"]:
        tensors[f"loss.{k}"] = inp[k].to(torch.float32)
    tensors["loss.mask"] = inp["mask"]
    tensors["loss.advantage"] = inp["advantage"].to(torch.float32)
    old, ref = padded(inp["logp_old"], off, T), padded(inp["logp_ref"], off, T)
    m = padded(inp["mask"], off, T).bool()
    cases = []
    for loss_type in LOSS_TYPES:
        for level in LEVELS:
            for beta in BETAS:
                name = f"loss.{loss_type}.{level}.beta{beta:g}"
                lp = padded(inp["logp"], off, T).requires_grad_(True)
                loss, ratio, k3 = grpo_objective(lp, old, ref, m, inp["advantage"], loss_type, level, beta)
                (grad,) = torch.autograd.grad(loss, lp)
                A = inp["advantage"].unsqueeze(1).expand_as(old)
                r = ratio.detach()
                stats = [k3.detach()[m].sum().item() if beta > 0 else 0.0, r[m].sum().item(),
                         float(((A < 0) & (r < 1 - EPS_LOW))[m].sum()),
                         float(((A > 0) & (r > 1 + EPS_HIGH))[m].sum()), float(m.sum())]
                tensors[f"{name}.loss"] = loss.detach().reshape(1)
                tensors[f"{name}.dlogp"] = unpadded(grad, off)
                tensors[f"{name}.stats"] = torch.tensor(stats, dtype=torch.float64)
                cases.append({"name": name, "loss_type": loss_type, "importance_sampling_level": level,
                              "beta": beta})
    meta["loss.cases"] = json.dumps(cases)
    meta["loss.config"] = json.dumps({"epsilon_low": EPS_LOW, "epsilon_high": EPS_HIGH, **DEN})
    meta["versions"] = json.dumps({"torch": torch.__version__, "safetensors": safetensors.__version__})
    return tensors, meta, inp


# ---------------------------------------------------------------- cross-check against verl

def import_verl():
    """verl.trainer.ppo.core_algos without running verl/__init__.py (ray, DataProto, ...)."""
    if "verl" not in sys.modules:
        spec = importlib.util.find_spec("verl")
        if spec is None:
            raise ImportError("verl is not installed (pip install --no-deps verl)")
        pkg = types.ModuleType("verl")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["verl"] = pkg
    import verl.trainer.ppo.core_algos as core_algos
    from verl.workers.config import ActorConfig
    return core_algos, ActorConfig


def close(a, b, rel=1e-9, abs_=0.0):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return bool(((a - b).abs() <= rel * b.abs().max() + abs_).all())


def cross_check(tensors, meta, inp):
    try:
        core_algos, ActorConfig = import_verl()
    except Exception as e:  # noqa: BLE001 - any import failure means: no cross-check
        msg = f"skipped: verl could not be imported ({type(e).__name__}: {e})"
        print(f"cross-check {msg}")
        return msg
    import verl
    version = getattr(verl, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version
        version = dist_version("verl")
    checked = []
    # Advantages: group (std) and none, epsilon 1e-4; batch scaling has no verl counterpart.
    for name, G in json.loads(meta["adv.sets"]).items():
        r = tensors[f"adv.{name}.rewards"].to(torch.float64)
        index = np.repeat(np.arange(len(r) // G), G)
        for scaling, norm in [("group", True), ("none", False)]:
            got, _ = core_algos.compute_grpo_outcome_advantage(
                r.unsqueeze(1), torch.ones(len(r), 1, dtype=torch.float64), index, epsilon=ADV_EPS,
                norm_adv_by_std_in_grpo=norm)
            want = tensors[f"adv.{name}.{scaling}"]
            assert close(got.squeeze(1), want, 1e-12, 1e-9), f"verl advantages {name}/{scaling}: {got} vs {want}"
            checked.append(f"adv.{name}.{scaling}")
    # Losses.
    off, T = inp["offsets"], inp["T"]
    old = padded(inp["logp_old"], off, T)
    ref = padded(inp["logp_ref"], off, T)
    m = padded(inp["mask"], off, T).to(torch.float64)
    A = inp["advantage"].unsqueeze(1).expand(-1, T).contiguous()
    modes = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm"}
    batch_info = {"dp_size": 1, "batch_num_tokens": DEN["tokens"], "global_batch_size": DEN["sequences"],
                  "loss_scale_factor": DEN["max_completion_length"]}
    for loss_type, mode in modes.items():
        config = ActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=1, clip_ratio=EPS_LOW,
                             clip_ratio_low=EPS_LOW, clip_ratio_high=EPS_HIGH, clip_ratio_c=1e9, loss_agg_mode=mode)
        config.global_batch_info.update(batch_info)
        for level in LEVELS:
            fn = core_algos.compute_policy_loss_vanilla if level == "token" else core_algos.compute_policy_loss_gspo
            for beta in BETAS:
                name = f"loss.{loss_type}.{level}.beta{beta:g}"
                lp = padded(inp["logp"], off, T).requires_grad_(True)
                loss, _ = fn(old_log_prob=old, log_prob=lp, advantages=A, response_mask=m, loss_agg_mode=mode,
                             config=config)
                if beta > 0:
                    kld = core_algos.kl_penalty(lp, ref, "low_var_kl")
                    loss = loss + beta * core_algos.agg_loss(kld, m, mode, **batch_info)
                (grad,) = torch.autograd.grad(loss, lp)
                rel = 1e-8 if loss_type == "grpo" else 1e-12  # verl's n_i + 1e-8: ~1e-9 relative
                assert close(loss.detach().reshape(1), tensors[f"{name}.loss"], rel), \
                    f"verl {name}: loss {loss.item()!r} vs {tensors[name + '.loss'].item()!r}"
                assert close(unpadded(grad, off), tensors[f"{name}.dlogp"], rel), f"verl {name}: dlogp"
                checked.append(name)
    msg = f"verl {version}: agreed (1e-12 relative, grpo 1e-8) on {len(checked)} cases: " + ", ".join(checked)
    print(f"cross-check {msg}")
    return msg


def write_safetensors(path, tensors, metadata):
    """The safetensors layout with the header's keys sorted, so that regenerating gives the same
    bytes (safetensors' own writer orders metadata by a hash map, differently on every run)."""
    dtypes = {torch.float32: ("F32", torch.int32), torch.float64: ("F64", torch.int64),
              torch.int64: ("I64", torch.int64), torch.uint8: ("U8", torch.uint8)}
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dtype, raw = dtypes[t.dtype]
        data = t.view(raw).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the reference writer pads so that data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--any-version", action="store_true", help="run with another torch version than the pinned one")
    args = ap.parse_args()
    if torch.__version__.split("+")[0] != PINNED_TORCH and not args.any_version:
        sys.exit(f"make_golden_grpo.py: have torch {torch.__version__}, the golden data is defined by "
                 f"{PINNED_TORCH} (scripts/requirements-golden.txt); pass --any-version to run anyway")
    torch.set_num_threads(1)
    tensors, meta, inp = build()
    again, meta2, _ = build()  # two runs must agree bit for bit
    assert meta == meta2 and all(same(tensors[k], again[k]) for k in tensors), "not deterministic"
    meta["crosscheck"] = cross_check(tensors, meta, inp)
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
