#!/usr/bin/env python3
"""PyTorch peer for bench/model_step: forward + backward (no optimizer step) throughput of the same
two models, built with transformers' own modeling code, fp32, on the CPU.

  dense: LlamaForCausalLM, vocab 256, d 256, 6 layers, 4 heads / 4 kv heads, SwiGLU 683, untied head;
         attention "eager" and "sdpa".
  MoE:   Qwen3MoeForCausalLM, same dims, 8 experts top-2, expert ffn 512, norm_topk_prob, every layer
         sparse, no router-logit output; experts "eager" (python loop over experts) and the default
         ("grouped_mm") when this transformers has it.

Batch 8 x seq 128 random tokens, labels = input_ids (transformers shifts them, so the last position
has no target, as in bench/model_step), model.train(), 2 warm-up steps, then --steps timed steps.
GFLOP/s uses bench/model_step.cc's model FLOPs (REFERENCE.md section 4):
  6 * active matmul params + 12 * L * H * Dh * T / 2 per token.

  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-golden.txt
  .venv/bin/python scripts/bench_torch_peer.py [--threads 2] [--steps 5]

PyTorch's OpenMP threads spin unless OMP_WAIT_POLICY=PASSIVE is set before the process starts
(/work/shared/TOOLCHAIN.md), so the script re-executes itself with it when it is unset.
"""
import os
import sys

print("note: measure PyTorch with OMP_WAIT_POLICY=PASSIVE (its OpenMP threads otherwise spin); "
      f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)
if "OMP_WAIT_POLICY" not in os.environ:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    print("re-executing with OMP_WAIT_POLICY=PASSIVE", flush=True)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
elif os.environ["OMP_WAIT_POLICY"].upper() != "PASSIVE":
    print(f"warning: OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} is kept as set; figures are not the "
          "PASSIVE ones", flush=True)

import argparse
import copy
import time

try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
except ImportError as e:
    print(f"error: {e}\nThis script needs torch and transformers (scripts/requirements-golden.txt pins "
          "torch==2.15.0 and transformers==5.23.0). From the repository root:\n"
          "  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-golden.txt\n"
          "  .venv/bin/python scripts/bench_torch_peer.py", file=sys.stderr)
    sys.exit(1)

B, T = 8, 128
DIMS = dict(vocab_size=256, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=683, max_position_embeddings=128, tie_word_embeddings=False, use_cache=False)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=512, norm_topk_prob=True,
           decoder_sparse_step=1, output_router_logits=False)


def head_dim(cfg):
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def is_moe_layer(cfg, layer):
    n_experts = getattr(cfg, "num_experts", 0) or 0
    return (n_experts > 0 and layer not in (getattr(cfg, "mlp_only_layers", None) or [])
            and (layer + 1) % cfg.decoder_sparse_step == 0)


def active_matmul_params(cfg):
    """bench/model_step.cc's active_matmul_params: attention, dense MLP or router + k routed experts
    (+ shared experts, none here) and the head; the embedding lookup does not count."""
    C, D = cfg.hidden_size, head_dim(cfg)
    attn = C * D * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    total = cfg.vocab_size * C
    for layer in range(cfg.num_hidden_layers):
        total += attn
        if is_moe_layer(cfg, layer):
            total += cfg.num_experts * C + cfg.num_experts_per_tok * 3.0 * C * cfg.moe_intermediate_size
        else:
            total += 3.0 * C * cfg.intermediate_size
    return total


def flops_per_token(cfg):
    return 6.0 * active_matmul_params(cfg) + 12.0 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim(cfg) * T / 2.0


def build(cls, cfg, **impl):
    torch.manual_seed(1)
    model = cls._from_config(copy.deepcopy(cfg), dtype=torch.float32, **impl)
    model.train()
    return model


def step(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss


def run(model, ids, steps, warmup):
    for _ in range(warmup):
        step(model, ids)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(model, ids)
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if (torch.__version__.split("+")[0], transformers.__version__) != ("2.15.0", "5.23.0"):
        print(f"note: torch {torch.__version__} / transformers {transformers.__version__}, "
              "not the pinned 2.15.0 / 5.23.0", flush=True)

    dense = LlamaConfig(**DIMS)
    moe = Qwen3MoeConfig(**DIMS, **MOE)
    assert moe.num_experts == 8 and moe.num_experts_per_tok == 2  # num_experts aliases num_local_experts

    variants = [("dense Llama 6L d256", "attn eager", LlamaForCausalLM, dense, dict(attn_implementation="eager")),
                ("dense Llama 6L d256", "attn sdpa", LlamaForCausalLM, dense, dict(attn_implementation="sdpa")),
                ("MoE Qwen3Moe 6L d256 8x top-2", "experts eager", Qwen3MoeForCausalLM, moe,
                 dict(attn_implementation="sdpa", experts_implementation="eager"))]
    default_experts = build(Qwen3MoeForCausalLM, moe).config._experts_implementation
    if default_experts != "eager":
        variants.append(("MoE Qwen3Moe 6L d256 8x top-2", f"experts {default_experts} (default)", Qwen3MoeForCausalLM,
                         moe, dict(attn_implementation="sdpa", experts_implementation=default_experts)))
    else:
        print("note: this transformers has no grouped_mm experts on CPU; only the eager loop is measured")

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, DIMS["vocab_size"], (B, T), generator=g)

    print(f"forward+backward (no optimizer), batch {B} x seq {T}, fp32, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.warmup} warm-up + {args.steps} timed steps")
    print(f"{'model':<31} {'variant':<28} {'tokens/s':>9} {'GFLOP/s':>8} {'threads':>7}")
    for name, variant, cls, cfg, impl in variants:
        model = build(cls, cfg, **impl)
        got = {k: getattr(model.config, "_" + k) for k in impl}
        for k, v in impl.items():
            assert got[k] == v, f"{name}: asked for {k}={v}, got {got[k]}"
        sec = run(model, ids, args.steps, args.warmup)
        tok_s = B * T / sec
        print(f"{name:<31} {variant:<28} {tok_s:9.0f} {flops_per_token(model.config) * tok_s / 1e9:8.1f} "
              f"{torch.get_num_threads():7d}", flush=True)
        del model


if __name__ == "__main__":
    main()
