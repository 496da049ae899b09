#!/usr/bin/env python3
"""Writes tests/golden/models/<arch>/: tiny random Hugging Face models and what transformers
computes with them, for the C++ golden tests (STYLE.md item 6, REFERENCE.md section 1).

For each architecture: config.json and model.safetensors exactly as save_pretrained writes them
(the published on-disk names: per-expert weights, Mixtral's block_sparse_moe.experts.N.w1), and
golden.safetensors with a batch (input_ids, labels), the logits, the loss, every parameter's
gradient under its on-disk name and, for MoE layers, what each router chose. tests/golden/models/
README.md says what every tensor means; manifest.json lists files, shapes and observed tolerances.

Everything runs in fp32 on the CPU with attn_implementation="eager" and experts_implementation=
"eager" (the plain per-expert loop), one thread, fixed seeds: two runs give bitwise equal files.
Before writing, each architecture is checked four ways: (1) a second run from scratch is bitwise
equal; (2) what save_pretrained wrote reloads with from_pretrained and reproduces every golden
tensor bitwise; (3) the on-disk tensors are exactly the in-memory (fused) parameters split per
expert, which is how gradients get their on-disk names; (4) an independent float64 re-implementation
written here from REFERENCE.md (not calling transformers) reads config.json and model.safetensors by
on-disk name and reproduces logits, losses, router choices and every gradient to 1e-5.

Run: python3 scripts/make_golden_models.py   (needs the versions in scripts/requirements-golden.txt)
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys

try:
    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM
except ImportError as e:
    sys.exit(f"make_golden_models.py: {e}. It needs torch, transformers, safetensors and numpy "
             "at the versions in scripts/requirements-golden.txt. Run it from a venv:\n"
             "  python3 -m venv .venv && .venv/bin/pip install -r "
             "scripts/requirements-golden.txt && .venv/bin/python scripts/make_golden_models.py")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "models")
PINNED = {"torch": "2.15.0", "transformers": "5.23.0"}

B, T, V = 2, 12, 64
MASKED = [(0, 0), (0, 1), (0, 2), (1, 7)]  # label positions set to -100
REF_ATOL = 1e-5  # float64 re-implementation vs transformers' fp32 result

COMMON = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=V, intermediate_size=48, max_position_embeddings=64, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
    attention_dropout=0.0, use_cache=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
MOE_AUX = dict(output_router_logits=True, router_aux_loss_coef=0.02)

# arch -> (model_type, config overrides, seed). head_dim is 8 = 32 / 4 everywhere; it is passed only
# where the config class has the field.
ARCHS = {
    "llama": ("llama", dict(head_dim=8, attention_bias=False, mlp_bias=False), 101),
    # original_max_position_embeddings 128, not 16: with head_dim 8 and theta 1e4 the wavelengths
    # are 6.3, 63, 628, 6283; 128 (high_freq_wavelen 32, low_freq_wavelen 128) puts one frequency in
    # each llama3 regime: kept, smoothed (smooth factor 0.35), divided by factor (two). With 16 none
    # is kept. max_position_embeddings 256 only silences transformers' "original must be less than
    # max" warning; llama3 RoPE does not read it.
    "llama3_rope": ("llama", dict(head_dim=8, max_position_embeddings=256, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 128}), 102),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True, use_sliding_window=False), 103),
    "qwen3": ("qwen3", dict(head_dim=8, attention_bias=False, use_sliding_window=False), 104),
    "mixtral": ("mixtral", dict(head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                intermediate_size=24, sliding_window=None, router_jitter_noise=0.0,
                                **MOE_AUX), 105),
    "qwen2_moe": ("qwen2_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                                    shared_expert_intermediate_size=32, norm_topk_prob=False,
                                    decoder_sparse_step=1, mlp_only_layers=[], qkv_bias=True,
                                    use_sliding_window=False, **MOE_AUX), 106),
    "qwen3_moe": ("qwen3_moe", dict(head_dim=8, num_experts=4, num_experts_per_tok=2,
                                    moe_intermediate_size=24, norm_topk_prob=True,
                                    decoder_sparse_step=1, mlp_only_layers=[],
                                    attention_bias=False, use_sliding_window=False, **MOE_AUX),
                  107),
    # DeepSeek-V3 MoE (sigmoid, e_score_correction_bias, group-limited, routed_scaling_factor,
    # shared expert, first_k_dense_replace) on Llama attention: glm4_moe with use_qk_norm=False,
    # attention_bias=False, partial_rotary_factor=1.0 (dots1 has the same MoE code but always
    # q/k-norms). 8 routed experts rather than 4: with 4, n_group=2 and top-2 the chosen experts are
    # always a whole group, so top-k inside the kept groups would go untested.
    "glm4_moe": ("glm4_moe", dict(
        num_hidden_layers=3, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
        moe_intermediate_size=24, n_group=2, topk_group=1, routed_scaling_factor=2.5,
        norm_topk_prob=True, first_k_dense_replace=1, attention_bias=False, use_qk_norm=False,
        num_nextn_predict_layers=0, output_router_logits=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "partial_rotary_factor": 1.0}), 123),  # 123: every expert gets gradient
}
EXPERT_NAMES = {  # model_type -> (MoE block name on disk, gate, up, down)
    "mixtral": ("block_sparse_moe", "w1", "w3", "w2"),
}
DEFAULT_EXPERT_NAMES = ("mlp", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------------------------------
# Building and running the transformers model

def build_model(arch):
    model_type, overrides, seed = ARCHS[arch]
    kw = dict(COMMON)
    kw.update(overrides)
    config = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                             experts_implementation="eager")
    randomize(model, seed)
    return model.eval()


@torch.no_grad()
def randomize(model, seed):
    """Replaces transformers' init (0.02-std weights, unit norms, zero biases) by values that make
    every term matter: weights of std 1/sqrt(fan_in) so activations stay O(1), norms 1 +- 0.1,
    nonzero biases, and a nonzero e_score_correction_bias that changes some routing choices."""
    gen = torch.Generator().manual_seed(seed)
    tensors = dict(model.named_parameters())
    tensors.update({n: b for n, b in model.named_buffers()
                    if n.endswith("e_score_correction_bias")})
    for name in sorted(tensors):
        t = tensors[name]
        r = torch.randn(t.shape, generator=gen, dtype=torch.float32)
        if name.endswith("embed_tokens.weight"):  # also the head when tied: keep logits O(1)
            t.copy_(r / math.sqrt(t.shape[-1]) if model.config.tie_word_embeddings else r)
        elif name.endswith("norm.weight"):
            t.copy_(1.0 + 0.1 * r)
        elif name.endswith(".bias") or name.endswith("e_score_correction_bias"):
            t.copy_(0.1 * r)
        else:  # Linear weights (out, in) and fused experts (E, out, in): fan_in is the last dim
            t.copy_(r / math.sqrt(t.shape[-1]))


def make_batch(seed):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    labels = input_ids.clone()
    for b, t in MASKED:
        labels[b, t] = -100
    return input_ids, labels


def moe_layers(model):
    return [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "gate")]


def run_golden(model, input_ids, labels):
    """Forward with labels, backward of the loss transformers returns. Returns {name: tensor} with
    in-memory parameter names for the gradients (renamed later)."""
    model.zero_grad(set_to_none=True)
    captured = {}
    hooks = []
    for i in moe_layers(model):
        def hook(_module, _inputs, out, i=i):  # every router returns (logits, weights, indices)
            captured[i] = tuple(o.detach().clone() for o in out)
        hooks.append(model.model.layers[i].mlp.gate.register_forward_hook(hook))
    aux = bool(getattr(model.config, "output_router_logits", False))
    out = model(input_ids=input_ids, labels=labels, use_cache=False)
    for h in hooks:
        h.remove()
    out.loss.backward()
    g = {"input_ids": input_ids.clone(), "labels": labels.clone(),
         "logits": out.logits.detach().clone(), "loss": out.loss.detach().clone()}
    if aux:
        with torch.no_grad():
            g["loss_lm"] = model.loss_function(out.logits, labels, model.config.vocab_size).detach()
        g["aux_loss"] = out.aux_loss.detach().clone()
    for i, (logits, weights, idx) in captured.items():
        g[f"router_logits.{i}"] = logits.float()
        g[f"router_weights.{i}"] = weights.float()
        g[f"router_topk.{i}"] = idx.to(torch.int64)
    for name, p in model.named_parameters():
        g["grad." + name] = p.grad.detach().clone()
    return g


def disk_slices(model):
    """In-memory parameter name -> [(on-disk name, slice of it)]. Fused experts (E, 2I, H) gate_up
    and (E, H, I) down are split per expert; gate_up is [gate; up] along dim 1 (transformers'
    conversion concatenates [w1, w3] / [gate_proj, up_proj]; the experts chunk it in that order)."""
    block, gate, up, down = EXPERT_NAMES.get(model.config.model_type, DEFAULT_EXPERT_NAMES)
    out = {}
    for name, p in model.named_parameters():
        if name.endswith(".experts.gate_up_proj"):
            base = name[:-len("mlp.experts.gate_up_proj")] + block + ".experts."
            i = p.shape[1] // 2
            n_e = p.shape[0]
            out[name] = [(f"{base}{e}.{gate}.weight", (e, slice(0, i))) for e in range(n_e)]
            out[name] += [(f"{base}{e}.{up}.weight", (e, slice(i, None))) for e in range(n_e)]
        elif name.endswith(".experts.down_proj"):
            base = name[:-len("mlp.experts.down_proj")] + block + ".experts."
            out[name] = [(f"{base}{e}.{down}.weight", (e,)) for e in range(p.shape[0])]
        elif ".mlp.gate." in name and block != "mlp":
            out[name] = [(name.replace(".mlp.", f".{block}."), ())]
        else:
            out[name] = [(name, ())]
    return out


def to_disk_names(model, golden):
    slices = disk_slices(model)
    renamed = {}
    for k, v in golden.items():
        if k.startswith("grad."):
            for disk_name, sl in slices[k[len("grad."):]]:
                renamed["grad." + disk_name] = v[sl].contiguous()
        else:
            renamed[k] = v.contiguous()
    return renamed


def max_diffs(a, b):
    """{group: max abs diff} over the keys of a (groups: logits, loss*, grads, router_*)."""
    d = {}
    for k in a:
        if k in ("input_ids", "labels"):
            continue
        if a[k].dtype == torch.int64:
            diff = float((a[k] != b[k]).sum())
        else:
            diff = float((a[k].double() - b[k].double()).abs().max())
        group = "grads" if k.startswith("grad.") else k.split(".")[0]
        d[group] = max(d.get(group, 0.0), diff)
    return d


# --------------------------------------------------------------------------------------------------
# Independent float64 re-implementation, from config.json and the on-disk tensors only

def ref_rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def ref_inv_freq(rp, d):
    out = []
    for i in range(d // 2):
        f = rp["rope_theta"] ** (-2.0 * i / d)
        if rp["rope_type"] == "llama3":
            orig, lo, hi, fac = (rp["original_max_position_embeddings"], rp["low_freq_factor"],
                                 rp["high_freq_factor"], rp["factor"])
            wavelen = 2 * math.pi / f
            if wavelen > orig / lo:
                f = f / fac
            elif wavelen >= orig / hi:
                s = (orig / wavelen - lo) / (hi - lo)
                f = (1 - s) * f / fac + s * f
        else:
            assert rp["rope_type"] == "default" and rp.get("partial_rotary_factor", 1.0) == 1.0
        out.append(f)
    return torch.tensor(out, dtype=torch.float64)


def ref_rope(x, inv_freq):
    """x (B, heads, T, d): pairs (i, i + d/2) rotate by angle t * inv_freq[i]."""
    d = x.shape[-1]
    ang = torch.arange(x.shape[2], dtype=torch.float64)[:, None] * inv_freq[None, :]
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def ref_attention(cfg, W, p, x, inv_freq):
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // nh
    Bx, Tx, _ = x.shape

    def proj(n, heads):
        y = x @ W[f"{p}self_attn.{n}_proj.weight"].T
        if f"{p}self_attn.{n}_proj.bias" in W:
            y = y + W[f"{p}self_attn.{n}_proj.bias"]
        y = y.view(Bx, Tx, heads, d)
        if f"{p}self_attn.{n}_norm.weight" in W:
            y = ref_rms(y, W[f"{p}self_attn.{n}_norm.weight"], cfg["rms_norm_eps"])
        return y.transpose(1, 2)

    q = ref_rope(proj("q", nh), inv_freq)
    k = ref_rope(proj("k", nkv), inv_freq)
    v = proj("v", nkv)
    kv_of_head = torch.arange(nh) // (nh // nkv)
    scores = q @ k[:, kv_of_head].transpose(-1, -2) / math.sqrt(d)
    causal = torch.ones(Tx, Tx, dtype=torch.bool).tril()
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    o = (probs @ v[:, kv_of_head]).transpose(1, 2).reshape(Bx, Tx, nh * d)
    return o @ W[f"{p}self_attn.o_proj.weight"].T


def ref_swiglu(x, wg, wu, wd):
    return (F.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def ref_route(cfg, logits, bias):
    """Chooses experts per token with plain Python loops (no transformers code). Returns the chosen
    expert ids (N, k) and router statistics: the smallest gap at each decision boundary, and how
    many tokens would route differently without the bias / without group limiting."""
    mt, k = cfg["model_type"], cfg["num_experts_per_tok"]
    rows = logits.detach().tolist()
    chosen, stats = [], {"min_margin": float("inf"), "changed_by_bias": 0, "changed_by_groups": 0}

    def top(vals, cand, n):
        order = sorted(cand, key=lambda e: -vals[e])
        if len(order) > n:
            stats["min_margin"] = min(stats["min_margin"], vals[order[n - 1]] - vals[order[n]])
        return order[:n]

    for row in rows:
        E = len(row)
        if mt == "glm4_moe":
            s = [1 / (1 + math.exp(-z)) for z in row]
            sb = [s[e] + bias[e] for e in range(E)]
            G, kg = cfg["n_group"], cfg["topk_group"]
            per = E // G
            gscore = [sum(sorted(sb[g * per:(g + 1) * per], reverse=True)[:2]) for g in range(G)]
            groups = top(gscore, range(G), kg)
            sel = top(sb, [e for g in groups for e in range(g * per, (g + 1) * per)], k)
            no_bias = top_plain(s, k, G, kg, per)
            stats["changed_by_bias"] += set(no_bias) != set(sel)
            ungrouped = sorted(range(E), key=lambda e: -sb[e])[:k]
            stats["changed_by_groups"] += set(ungrouped) != set(sel)
        else:
            m = max(row)
            ex = [math.exp(z - m) for z in row]
            sel = top([v / sum(ex) for v in ex], range(E), k)
        chosen.append(sel)
    return torch.tensor(chosen, dtype=torch.int64), stats


def top_plain(s, k, G, kg, per):
    gscore = [sum(sorted(s[g * per:(g + 1) * per], reverse=True)[:2]) for g in range(G)]
    groups = sorted(range(G), key=lambda g: -gscore[g])[:kg]
    cand = [e for g in groups for e in range(g * per, (g + 1) * per)]
    return sorted(cand, key=lambda e: -s[e])[:k]


def ref_moe(cfg, W, p, x, record):
    mt = cfg["model_type"]
    block, gate, up, down = EXPERT_NAMES.get(mt, DEFAULT_EXPERT_NAMES)
    pb = f"{p}{block}."
    h = x.reshape(-1, x.shape[-1])
    logits = h @ W[pb + "gate.weight"].T
    bias = W[pb + "gate.e_score_correction_bias"].tolist() if mt == "glm4_moe" else None
    sel, stats = ref_route(cfg, logits, bias)
    rows = torch.arange(h.shape[0])[:, None]
    if mt == "glm4_moe":
        w = torch.sigmoid(logits)[rows, sel]
        if cfg["norm_topk_prob"]:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * cfg["routed_scaling_factor"]
    else:
        w = torch.softmax(logits, dim=-1)[rows, sel]
        if mt == "mixtral" or cfg["norm_topk_prob"]:
            w = w / w.sum(-1, keepdim=True)
    E = logits.shape[1]
    ys = torch.stack([ref_swiglu(h, W[f"{pb}experts.{e}.{gate}.weight"],
                                 W[f"{pb}experts.{e}.{up}.weight"],
                                 W[f"{pb}experts.{e}.{down}.weight"]) for e in range(E)])
    out = (w[..., None] * ys[sel, rows]).sum(1)
    if mt == "qwen2_moe":
        shared = ref_swiglu(h, *(W[f"{pb}shared_expert.{n}_proj.weight"]
                                 for n in ("gate", "up", "down")))
        out = out + torch.sigmoid(h @ W[pb + "shared_expert_gate.weight"].T) * shared
    elif mt == "glm4_moe":
        out = out + ref_swiglu(h, *(W[f"{pb}shared_experts.{n}_proj.weight"]
                                    for n in ("gate", "up", "down")))
    record.append((logits, sel, w, stats))
    return out.view_as(x)


def ref_forward(cfg, W, input_ids, labels):
    H = cfg["hidden_size"]
    d = cfg.get("head_dim") or H // cfg["num_attention_heads"]
    eps = cfg["rms_norm_eps"]
    inv_freq = ref_inv_freq(cfg["rope_parameters"], d)
    x = W["model.embed_tokens.weight"][input_ids]
    routers = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = x + ref_attention(cfg, W, p, ref_rms(x, W[p + "input_layernorm.weight"], eps), inv_freq)
        h = ref_rms(x, W[p + "post_attention_layernorm.weight"], eps)
        if p + "mlp.gate_proj.weight" in W:
            x = x + ref_swiglu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                               W[p + "mlp.down_proj.weight"])
        else:
            rec = []
            x = x + ref_moe(cfg, W, p, h, rec)
            routers[i] = rec[0]
    x = ref_rms(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits = x @ head.T
    # Causal LM loss: position t predicts label t+1; mean over targets that are not -100.
    tgt = labels[:, 1:].reshape(-1)
    keep = tgt != -100
    logp = torch.log_softmax(logits[:, :-1].reshape(-1, logits.shape[-1]), dim=-1)
    loss_lm = -logp[keep.nonzero()[:, 0], tgt[keep]].mean()
    res = {"logits": logits, "loss_lm": loss_lm, "loss": loss_lm, "routers": routers}
    if cfg.get("output_router_logits"):
        # Switch loss over all layers together: E * sum_e f_e * P_e with f_e = routed slots of e
        # over (layers * tokens) (so sum_e f_e = k) and P_e = mean softmax prob over the same.
        E, k = cfg.get("num_local_experts") or cfg["num_experts"], cfg["num_experts_per_tok"]
        counts, psum, rows = torch.zeros(E, dtype=torch.float64), 0, 0
        for lg, sel, _, _ in routers.values():
            counts += torch.bincount(sel.reshape(-1), minlength=E).double()
            psum = psum + torch.softmax(lg, dim=-1).sum(0)
            rows += lg.shape[0]
        aux = E * ((counts / rows) * (psum / rows)).sum()
        res["aux_loss"] = aux
        res["loss"] = loss_lm + cfg["router_aux_loss_coef"] * aux
    return res


def reference_check(arch, d, golden):
    """Re-derives golden.safetensors from config.json + model.safetensors in float64."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {k: v.double().requires_grad_(not k.endswith("e_score_correction_bias"))
         for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    res = ref_forward(cfg, W, golden["input_ids"], golden["labels"])
    res["loss"].backward()
    with torch.no_grad():
        return compare_reference(arch, cfg, W, res, golden)


def compare_reference(arch, cfg, W, res, golden):
    diffs = {"logits": float((res["logits"] - golden["logits"].double()).abs().max())}
    for n in ("loss", "loss_lm", "aux_loss"):
        if n in golden:
            diffs[n] = abs(float(res[n].detach()) - float(golden[n]))
    diffs["grads"] = max(float((W[k[5:]].grad - v.double()).abs().max())
                         for k, v in golden.items() if k.startswith("grad."))
    grad_names = {k[5:] for k in golden if k.startswith("grad.")}
    assert grad_names == {k for k, v in W.items() if v.requires_grad}, f"{arch}: grad names"
    router = {"min_margin": None}
    for i, (lg, sel, w, stats) in res["routers"].items():
        order_ref, order_hf = sel.sort(-1), golden[f"router_topk.{i}"].sort(-1)
        assert torch.equal(order_ref.values, order_hf.values), f"{arch}: layer {i} routing differs"
        w_ref = w.gather(1, order_ref.indices)
        w_hf = golden[f"router_weights.{i}"].double().gather(1, order_hf.indices)
        diffs["router_weights"] = max(diffs.get("router_weights", 0.0),
                                      float((w_ref - w_hf).abs().max()))
        lg_hf = golden[f"router_logits.{i}"].double()
        diffs["router_logits"] = max(diffs.get("router_logits", 0.0),
                                     float((lg - lg_hf).abs().max()))
        m = router["min_margin"]
        router["min_margin"] = stats["min_margin"] if m is None else min(m, stats["min_margin"])
        if cfg["model_type"] == "glm4_moe":
            router[f"layer{i}_tokens_changed_by_bias"] = stats["changed_by_bias"]
            router[f"layer{i}_tokens_changed_by_group_limit"] = stats["changed_by_groups"]
    bad = {k: v for k, v in diffs.items() if v > REF_ATOL}
    assert not bad, f"{arch}: float64 re-implementation disagrees: {bad}"
    # The data must exercise what it is meant to test; a failure here asks for another seed.
    assert router["min_margin"] is None or router["min_margin"] > 1e-4, f"{arch}: near tie {router}"
    assert all(v > 0 for k, v in router.items() if k.endswith(("bias", "limit"))), \
        f"{arch}: bias or group limit changes no choice: {router}"
    zero = [k for k, v in golden.items() if k.startswith("grad.") and not v.abs().max() > 0]
    assert not zero, f"{arch}: zero gradients (an expert no scored token uses?): {zero}"
    return diffs, router


# --------------------------------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def tensor_list(path):
    with safe_open(path, "pt") as f:
        return {k: [str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())]
                for k in sorted(f.keys())}


def make_arch(arch, out_dir):
    d = os.path.join(out_dir, arch)
    shutil.rmtree(d, ignore_errors=True)
    _, _, seed = ARCHS[arch]
    input_ids, labels = make_batch(seed + 1000)

    model = build_model(arch)
    golden_mem = run_golden(model, input_ids, labels)
    golden = to_disk_names(model, golden_mem)

    # (1) determinism: a second run from scratch is bitwise equal
    golden2 = to_disk_names(model, run_golden(build_model(arch), input_ids, labels))
    rerun = max_diffs(golden, golden2)
    assert all(v == 0 for v in rerun.values()), f"{arch}: two runs differ: {rerun}"

    model.save_pretrained(d, safe_serialization=True)
    os.remove(os.path.join(d, "generation_config.json"))  # not needed, keeps the folder to 3 files
    disk = load_file(os.path.join(d, "model.safetensors"))

    # (3) on disk = in-memory parameters split per expert (so grad names are the on-disk names)
    slices = disk_slices(model)
    params = dict(model.named_parameters())
    expect = {dn: params[n][sl] for n, lst in slices.items() for dn, sl in lst}
    expect.update({n: b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")})
    assert set(disk) == set(expect), f"{arch}: on-disk names {sorted(set(disk) ^ set(expect))}"
    for k, v in expect.items():
        assert torch.equal(disk[k], v.detach()), f"{arch}: {k} on disk is not the split parameter"

    # (2) from_pretrained on what was written reproduces everything bitwise
    reloaded = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager",
                                                    experts_implementation="eager").eval()
    golden3 = to_disk_names(reloaded, run_golden(reloaded, input_ids, labels))
    reload_diff = max_diffs(golden, golden3)
    assert all(v == 0 for v in reload_diff.values()), f"{arch}: reload differs: {reload_diff}"

    # Other implementations of the same model, for scale only (not what the golden data is).
    others = {}
    reloaded.set_attn_implementation("sdpa")
    if moe_layers(reloaded):
        try:
            reloaded.set_experts_implementation("grouped_mm")
        except Exception as e:  # noqa: BLE001 - only informative
            print(f"  {arch}: grouped_mm unavailable ({e})")
    impl = "sdpa"
    if moe_layers(reloaded):
        impl += "+" + str(reloaded.config._experts_implementation)
    others[impl] = max_diffs(golden,
                             to_disk_names(reloaded, run_golden(reloaded, input_ids, labels)))

    # No metadata: safetensors writes its keys in hash order, and the versions are in manifest.json.
    save_file(golden, os.path.join(d, "golden.safetensors"))
    # (4) an independent float64 re-implementation agrees
    ref, router = reference_check(arch, d, load_file(os.path.join(d, "golden.safetensors")))

    cfg = model.config
    aux = bool(getattr(cfg, "output_router_logits", False))
    files = ["config.json", "model.safetensors", "golden.safetensors"]
    entry = {
        "model_type": cfg.model_type,
        "files": {f: {"bytes": os.path.getsize(os.path.join(d, f)),
                      "sha256": sha256(os.path.join(d, f))} for f in files},
        "B": B, "T": T, "vocab_size": V, "masked_label_positions": MASKED,
        "moe_layers": moe_layers(model),
        "loss": ("loss = loss_lm + router_aux_loss_coef * aux_loss (router_aux_loss_coef = "
                 f"{cfg.router_aux_loss_coef}); grads are of this total" if aux else
                 "loss = causal LM loss (mean over unmasked shifted targets); grads are of it"),
        "golden_implementation": "attn eager, experts eager, fp32, CPU, 1 thread",
        "tolerances": {
            "rerun_max_abs_diff": rerun,
            "from_pretrained_reload_max_abs_diff": reload_diff,
            "float64_reference_max_abs_diff": ref,
            "other_hf_implementations_max_abs_diff": others,
        },
        "router": router if moe_layers(model) else None,
        "tensors": {f: tensor_list(os.path.join(d, f)) for f in files[1:]},
    }
    print(f"  {arch:12s} loss {float(golden['loss']):.6f}  ref {ref}  "
          f"{sum(e['bytes'] for e in entry['files'].values())} bytes")
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--arch", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--any-version", action="store_true",
                    help="run with other torch/transformers versions than the pinned ones")
    args = ap.parse_args()
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    if have != PINNED and not args.any_version:
        sys.exit(f"make_golden_models.py: have {have}, the golden data is defined by {PINNED} "
                 "(scripts/requirements-golden.txt); pass --any-version to run anyway")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = {"generator": "scripts/make_golden_models.py",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "archs": {}}
    if os.path.exists(manifest_path) and set(args.arch) != set(ARCHS):
        manifest["archs"] = json.load(open(manifest_path))["archs"]
    for arch in args.arch:
        manifest["archs"][arch] = make_arch(arch, args.out)
    order = list(ARCHS)
    manifest["archs"] = dict(sorted(manifest["archs"].items(), key=lambda kv: order.index(kv[0])))
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(args.out) for n in ns)
    print(f"wrote {os.path.relpath(args.out)} ({total} bytes)")


if __name__ == "__main__":
    main()
