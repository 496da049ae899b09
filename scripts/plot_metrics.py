#!/usr/bin/env python3
"""Turns a run's metrics.jsonl into PNG curves, one panel per metric.

    python3 scripts/plot_metrics.py runs/sft_arithmetic_tiny            # writes runs/.../plots/*.png
    python3 scripts/plot_metrics.py runs/a runs/b --out cmp/ --metrics loss eval_loss

Needs matplotlib (pip install matplotlib). Records are JSON objects with "kind" (train, eval, ...),
"step" and named numbers; every numeric field of every kind becomes a curve "<kind>/<field>"
unless --metrics picks some. Several runs are overlaid, labelled by their directory name.
"""
import argparse
import json
import math
import os
import sys


def read_records(path):
    """Yields the JSON records of a metrics.jsonl file; a bad line ends the script naming it."""
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e})")


def load(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl") if os.path.isdir(run_dir) else run_dir
    series = {}
    for rec in read_records(path):
        kind, step = rec.get("kind", "train"), rec.get("step")
        if step is None:
            continue
        for key, value in rec.items():
            if key in ("kind", "step") or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            series.setdefault(f"{kind}/{key}", []).append((step, value))
    return series


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    ap.add_argument("--out", help="output directory (default: <first run>/plots)")
    ap.add_argument("--metrics", nargs="*", help="field names to plot (default: all)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_metrics.py needs matplotlib: pip install matplotlib")

    runs = {os.path.basename(os.path.normpath(r)): load(r) for r in args.runs}
    out = args.out or os.path.join(args.runs[0] if os.path.isdir(args.runs[0]) else ".", "plots")
    os.makedirs(out, exist_ok=True)
    names = sorted({k for s in runs.values() for k in s})
    if args.metrics:
        names = [k for k in names if k.split("/", 1)[1] in args.metrics]
    written = []
    for name in names:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, series in runs.items():
            if name in series:
                xs, ys = zip(*series[name])
                ax.plot(xs, ys, label=label, linewidth=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        if name.endswith("loss") and all(v > 0 for s in runs.values() for _, v in s.get(name, [])):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend()
        fig.tight_layout()
        path = os.path.join(out, name.replace("/", "_") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    print(f"plot_metrics: {len(written)} plots in {out}")


if __name__ == "__main__":
    main()
