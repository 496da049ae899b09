#!/usr/bin/env python3
"""Compares training runs of one model in several precisions (what scripts/compare_precision.sh trains).

    python3 scripts/compare_precision.py runs/compare_precision      # the five runs the .sh makes
    python3 scripts/compare_precision.py DIR --runs fp32 bf16 --last 20 --skip 5 --out DIR2

Reads DIR/<name>/metrics.jsonl for each name in --runs and writes into --out (default DIR):
  table.md  per run: final loss (mean train loss over the last --last logged steps), final eval loss,
            signed relative gap of the final loss vs fp32 and vs bf16, mean step time excluding the
            first --skip steps and its ratio to fp32, tokens/s, peak resident memory, activation MB
            of one micro-batch;
  loss.png  training loss of every run, and the relative gap of each vs fp32 over steps, smoothed.
Prints the table and the paths. Stdlib, plus matplotlib for loss.png (without it only the table).
"""
import argparse
import math
import os
import re
import sys

from plot_metrics import read_records  # scripts/ is on sys.path when run as a script

LABELS = {
    "fp32": "fp32",
    "bf16": "bf16",
    "fp8_blockwise": "fp8 blockwise",
    "fp8_delayed": "fp8 tensorwise_delayed",
    "fp8_blockwise_cache": "fp8 blockwise + cache_activations",
}


def load(path):
    train, evals = [], []
    for rec in read_records(path):
        kind = rec.get("kind", "train")
        if kind == "train" and "loss" in rec:
            train.append(rec)
        elif kind == "eval" and "eval_loss" in rec:
            evals.append(rec)
    train.sort(key=lambda r: r["step"])
    evals.sort(key=lambda r: r["step"])
    return train, evals


def finite(values):
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def mean(values):
    values = finite(values)
    return sum(values) / len(values) if values else None


def summarise(train, evals, last, skip):
    s = {"steps": train[-1]["step"] if train else 0}
    s["final_loss"] = mean(r["loss"] for r in train[-last:])
    s["eval_loss"] = evals[-1]["eval_loss"] if evals else None
    timed = [r for r in train if r["step"] > skip] or train
    s["step_s"] = mean(r.get("step_s") for r in timed)
    times = sorted(finite(r.get("step_s") for r in timed))
    s["step_s_median"] = (times[(len(times) - 1) // 2] + times[len(times) // 2]) / 2 if times else None
    # Tokens per step are the same every step, so the tokens/s over all timed steps is the harmonic
    # mean of the per-step figures (an arithmetic mean would overweight the fast steps).
    tps = [v for v in finite(r.get("tokens_per_s") for r in timed) if v > 0]
    s["tokens_per_s"] = len(tps) / sum(1 / v for v in tps) if tps else None
    mem = finite(r.get("memory_gb") for r in train)
    s["memory_gb"] = max(mem) if mem else None
    act = finite(r.get("act_mb") for r in train)
    s["act_mb"] = max(act) if act else None
    sat = finite(r.get("fp8_saturated") for r in train)
    s["fp8_saturated"] = sum(sat) / len(sat) if sat else None
    s["skipped"] = sum(1 for r in train if r.get("skipped"))
    s["nonfinite"] = sum(1 for r in train if not math.isfinite(r["loss"]))
    return s


def gap(value, ref):
    if value is None or ref is None or ref == 0:
        return None
    return (value - ref) / ref * 100.0


def fmt(v, spec, suffix=""):
    return "n/a" if v is None else format(v, spec) + suffix


def smooth(values, window):
    """Centred moving average; the window shrinks at the ends."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half):i + half + 1]
        out.append(sum(part) / len(part))
    return out


def read_seed(run_dir):
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            m = re.search(r"^train:.*?^  seed: (\d+)", f.read(), re.M | re.S)
            return m.group(1) if m else None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default="runs/compare_precision", help="directory holding one run directory per precision")
    ap.add_argument("--runs", nargs="+", default=list(LABELS), help="run names under DIR (default: the five of compare_precision.sh)")
    ap.add_argument("--out", help="output directory (default: DIR)")
    ap.add_argument("--last", type=int, default=20, help="logged steps averaged for the final loss (default 20)")
    ap.add_argument("--skip", type=int, default=5, help="first steps left out of step time and tokens/s (default 5)")
    ap.add_argument("--smooth", type=int, default=0, help="moving-average window of the gap panel (default: steps/10, at least 5)")
    args = ap.parse_args()
    out = args.out or args.dir
    os.makedirs(out, exist_ok=True)

    runs, stats = {}, {}
    for name in args.runs:
        path = os.path.join(args.dir, name, "metrics.jsonl")
        if not os.path.exists(path):
            print(f"compare_precision: {path} is missing; {name} is left out", file=sys.stderr)
            continue
        train, evals = load(path)
        if not train:
            print(f"compare_precision: {path} has no train records; {name} is left out", file=sys.stderr)
            continue
        runs[name] = (train, evals)
        stats[name] = summarise(train, evals, args.last, args.skip)
    if not runs:
        sys.exit(f"compare_precision: no runs found under {args.dir}")
    step_counts = {s["steps"] for s in stats.values()}
    if len(step_counts) > 1:
        print(f"compare_precision: warning: the runs stop at different steps {sorted(step_counts)}; gaps compare unlike runs",
              file=sys.stderr)

    ref32 = stats.get("fp32", {})
    ref16 = stats.get("bf16", {})
    rows = [
        "| Precision | Final loss | Final eval loss | Gap vs fp32 | Gap vs bf16 | Step time (s), mean (median) | x fp32 | Tokens/s "
        "| Peak RSS (GB) | Activations (MB / micro-batch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in stats.items():
        ratio = s["step_s"] / ref32["step_s"] if s["step_s"] and ref32.get("step_s") else None
        rows.append("| " + " | ".join([
            LABELS.get(name, name),
            fmt(s["final_loss"], ".4f"),
            fmt(s["eval_loss"], ".4f"),
            "ref" if name == "fp32" else fmt(gap(s["final_loss"], ref32.get("final_loss")), "+.2f", "%"),
            "ref" if name == "bf16" else fmt(gap(s["final_loss"], ref16.get("final_loss")), "+.2f", "%"),
            fmt(s["step_s"], ".3f") + " (" + fmt(s["step_s_median"], ".3f") + ")",
            fmt(ratio, ".2f", "x"),
            fmt(s["tokens_per_s"], ".0f"),
            fmt(s["memory_gb"], ".3f"),
            fmt(s["act_mb"], ".1f"),
        ]) + " |")

    steps = max(step_counts)
    seed = read_seed(os.path.join(args.dir, next(iter(runs))))
    notes = [
        "",
        f"{steps} steps" + (f", seed {seed}" if seed else "") + ", one run per precision, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}.",
        f"Final loss: mean training loss (including the MoE aux loss) over the last {args.last} logged steps; "
        "final eval loss: the held-out evaluation after the last step. Gaps: (final loss - reference) / reference, "
        "signed, + = higher loss than the reference.",
        f"Step time: mean (and median) over the steps after the first {args.skip}; x fp32 is the ratio of the means "
        "(on the CPU, "
        "bf16 and fp8 are emulated by rounding operands, so this is emulation overhead, not a speed-up); "
        "tokens/s over the same steps; a mean well above its median means other work shared the cores. Peak RSS: the largest resident set logged at any step (whole process); "
        "activations: bytes held for backward by one micro-batch.",
    ]
    for name, s in stats.items():
        if s["fp8_saturated"] is not None:
            notes.append(f"{LABELS.get(name, name)}: on average {s['fp8_saturated']:.0f} values per step clipped to the "
                         "fp8 range (fp8_saturated).")
        if s["skipped"] or s["nonfinite"]:
            notes.append(f"{LABELS.get(name, name)}: {s['skipped']} skipped steps, {s['nonfinite']} non-finite losses.")
    table = "\n".join(rows + notes) + "\n"
    table_path = os.path.join(out, "table.md")
    with open(table_path, "w") as f:
        f.write(table)

    written = [table_path]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FormatStrFormatter
    except ImportError:
        plt = None
        print("compare_precision: no matplotlib, so no loss.png (pip install matplotlib)", file=sys.stderr)
    if plt is not None:
        window = args.smooth or max(5, steps // 10)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        for name, (train, _) in runs.items():
            xs = [r["step"] for r in train]
            ax1.plot(xs, [r["loss"] for r in train], label=LABELS.get(name, name), linewidth=1.0)
        ax1.set_yscale("log")
        ax1.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax1.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax1.set_ylabel("training loss")
        ax1.set_title(f"Tiny MoE, {steps} steps, same seed and data: training loss by precision")
        ax1.grid(alpha=0.3, which="both")
        ax1.legend(fontsize=8)
        if "fp32" in runs:
            ref = {r["step"]: r["loss"] for r in runs["fp32"][0]}
            ax2.axhline(0.0, color="C0", linewidth=1.0, label="fp32")
            for i, (name, (train, _)) in enumerate(runs.items()):
                if name == "fp32":
                    continue
                pts = [(r["step"], (r["loss"] - ref[r["step"]]) / ref[r["step"]] * 100.0)
                       for r in train if r["step"] in ref and ref[r["step"]] and math.isfinite(r["loss"])]
                if pts:
                    xs, ys = zip(*pts)
                    ax2.plot(xs, smooth(list(ys), window), label=LABELS.get(name, name), color=f"C{i}", linewidth=1.0)
            ax2.set_ylabel(f"gap vs fp32 (%)\n{window}-step moving average")
            ax2.legend(fontsize=7, ncol=2)
        else:
            ax2.text(0.5, 0.5, "no fp32 run to compare with", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_xlabel("step")
        ax2.grid(alpha=0.3)
        fig.tight_layout()
        png = os.path.join(out, "loss.png")
        fig.savefig(png, dpi=110)
        plt.close(fig)
        written.append(png)

    print()
    print(table)
    for p in written:
        print(f"compare_precision: wrote {p}")


if __name__ == "__main__":
    main()
