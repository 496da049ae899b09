#!/usr/bin/env python3
"""Checks a `strata export` directory with Hugging Face transformers.

    check_hf_export.py EXPORT_DIR [--strata build/strata] [--prompts 4] [--new-tokens 8]

Loads EXPORT_DIR with AutoModelForCausalLM and AutoTokenizer (the pinned versions of
scripts/requirements-golden.txt), then for a batch of prompts (token ids drawn from a fixed seed,
plus one text prompt through the exported tokenizer):
  - compares transformers' logits at every prompt position with Strata's own forward of the same
    export (`strata generate hf:EXPORT_DIR --logits-out`), relative to the largest logit;
  - checks that greedy generation gives the same tokens in both.
Also checks that the tokenizer decodes what it encodes. Prints one line per check and exits 1 on
any mismatch. CPU only; fp32 compute (a bf16 export is upcast, as Strata does).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile


def strata_run(strata, export_dir, ids, new_tokens, logits_path):
    cmd = [strata, "generate", "hf:" + export_dir, "--prompt-ids", " ".join(map(str, ids)),
           "--max-new-tokens", str(new_tokens), "--temperature", "0", "--eos-id", "-1",
           "--logits-out", logits_path]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"strata generate failed ({out.returncode}): {out.stderr.strip()}")
    tokens = [int(t) for t in out.stdout.split()]
    with open(logits_path) as f:
        logits = json.load(f)["logits"]
    return logits, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--strata", default=os.path.join("build", "strata"))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--tol", type=float, default=1e-4, help="largest |logit difference| / max |logit|")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.export_dir, dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.export_dir)
    cfg = model.config
    vocab = cfg.vocab_size
    failures = 0

    def check(ok, what):
        nonlocal failures
        print(("ok    " if ok else "FAIL  ") + what)
        failures += 0 if ok else 1

    text = "12+7=19 (8*3)\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    check(tok.decode(ids, skip_special_tokens=True) == text, f"tokenizer round trip of {text!r} ({len(ids)} tokens)")

    rng = random.Random(1234)
    prompts = [ids] if all(i < vocab for i in ids) else []
    max_len = min(16, cfg.max_position_embeddings - args.new_tokens)
    for _ in range(args.prompts):
        n = rng.randint(3, max(3, max_len))
        prompts.append([rng.randrange(1, vocab) for _ in range(n)])

    with tempfile.TemporaryDirectory() as tmp:
        for k, p in enumerate(prompts):
            s_logits, s_tokens = strata_run(args.strata, args.export_dir, p, args.new_tokens,
                                           os.path.join(tmp, f"logits{k}.json"))
            with torch.no_grad():
                hf = model(torch.tensor([p])).logits[0].float()
            st = torch.tensor(s_logits, dtype=torch.float32)
            scale = max(hf.abs().max().item(), 1e-6)
            rel = (hf - st).abs().max().item() / scale
            check(rel <= args.tol, f"prompt {k} ({len(p)} tokens): logits max diff / max |logit| = {rel:.2e}")
            with torch.no_grad():
                gen = model.generate(torch.tensor([p]), max_new_tokens=args.new_tokens, do_sample=False,
                                     eos_token_id=None, pad_token_id=0)
            hf_tokens = gen[0, len(p):].tolist()
            check(hf_tokens == s_tokens, f"prompt {k}: greedy tokens {s_tokens} (transformers {hf_tokens})")
    print(f"{cfg.model_type}: {len(prompts)} prompts, {failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
