"""The run's plots (PNG): where each method fails by class size, accuracy against shots, episodic CIs.

matplotlib is the optional ``plots`` extra: without it the run still writes every other file and says
that the plots were skipped. ``python -m benchmarks.reports.plots RUN_DIR`` redraws them from a finished run's
``summary.json`` and ``per_class.csv``, the intervals and critical-difference diagrams from its per-image
predictions (``predictions.npz``).
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import benchmarks.builtin  # noqa: F401  (registers the built-in methods: their plot styles)
from benchmarks.registry.methods import method_style
from benchmarks.reports.overview import buckets, heatmap
from benchmarks.reports.predictions import FILE as PREDICTIONS
from benchmarks.reports.statistics import statistics_of_run, with_statistics
from benchmarks.reports.uncertainty import cd_diagrams, intervals


def write_plots(out: Path, summary: dict, per_class: pd.DataFrame, title: str) -> list[str]:
    """Write the plots into ``out``; returns their file names (empty when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install 'fewshot[plots]'): no plots written", stacklevel=2)
        return []
    written = []
    figures = {name: draw(plt, summary, per_class, title) for name, draw in (
        ("per_class_vs_train.png", _per_class), ("per_class_heatmap.png", heatmap), ("buckets.png", buckets),
        ("intervals.png", intervals), ("shots.png", _shots), ("episodic.png", _episodic))}
    figures.update(cd_diagrams(plt, summary, per_class, title))
    for name, fig in figures.items():
        if fig is None:
            continue
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        tmp.replace(out / name)
        written.append(name)
    return written


def _per_class(plt, summary: dict, per_class: pd.DataFrame, title: str):
    groups = [g for g in ("head", "tail", "all") if ((per_class["group"] == g) & (per_class["n_test"] > 0)).any()]
    methods = [c[:-5] for c in per_class.columns if c.endswith("/top1")]
    if not groups or not methods:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.8), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        rows = per_class[(per_class["group"] == group) & (per_class["n_test"] > 0)]
        for i, m in enumerate(methods):
            if rows[f"{m}/top1"].notna().any():
                # a small horizontal jitter per method keeps markers of one class from hiding each other
                x = rows["n_train"].to_numpy(float) * (1 + 0.04 * (i - len(methods) / 2))
                ax.scatter(x, rows[f"{m}/top1"], s=22, alpha=0.75, label=m, **method_style(m))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("train images of the class (log scale)")
        ax.set_title("all classes, one joint classifier: per-class top-1" if group == "all"
                     else f"{group} classes: per-class top-1 on test images")
        ax.axvline(20, color="grey", lw=0.6, ls=":")
        ax.axvline(100, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy")
    # one legend for every panel: a method may be in some groups only (two_stage is not in "all")
    handles: dict = {}
    for ax in axes[0]:
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels()) if label not in handles})
    fig.legend(handles.values(), handles.keys(), fontsize=8, loc="upper center", ncol=min(len(handles), 6),
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    return fig


def _shots(plt, summary: dict, per_class: pd.DataFrame, title: str):
    shots = summary.get("shots") or {}
    if not shots:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, row in shots.items():
        ks = list(row)
        x = np.arange(len(ks))
        y = [row[k]["macro_top1"] for k in ks]
        err = [row[k]["macro_top1_std"] for k in ks]
        ax.errorbar(x, y, yerr=err, capsize=3, label=method, **method_style(method))
        ax.set_xticks(x, [f"K={k}" if k != "all" else "all" for k in ks])
    ax.set_ylabel("tail macro top-1")
    ax.set_xlabel("train images per tail class used as prototypes (capped at what a class has)")
    ax.set_title(f"{title}: accuracy against shots")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _episodic(plt, summary: dict, per_class: pd.DataFrame, title: str):
    episodic = summary.get("episodic") or {}
    if not episodic:
        return None
    settings = list(next(iter(episodic.values())))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.8 / len(episodic)
    x = np.arange(len(settings))
    for i, (method, row) in enumerate(episodic.items()):
        ax.bar(x + (i - (len(episodic) - 1) / 2) * width, [100 * row[s]["mean"] for s in settings], width,
               yerr=[100 * row[s]["ci95"] for s in settings], capsize=3, label=method,
               color=method_style(method)["color"])
    ax.set_xticks(x, settings)
    ax.set_ylabel("accuracy (%) with 95% CI")
    ax.set_title(f"{title}: episodic accuracy on evaluation classes")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Redraw a finished run's plots from its summary.json and "
                                                 "per_class.csv.")
    parser.add_argument("run", type=Path, help="the run's output folder")
    return parser


def main(args: argparse.Namespace) -> list[str]:
    out = args.run
    missing = [n for n in ("summary.json", "per_class.csv", "run.json") if not (out / n).is_file()]
    if missing:
        raise SystemExit(f"{out} is not a finished run: no {', '.join(missing)}")
    run = json.loads((out / "run.json").read_text())
    title = f"{run.get('config', out.name)}{' (SYNTHETIC)' if run.get('dataset', {}).get('synthetic') else ''}"
    summary = json.loads((out / "summary.json").read_text())
    if (out / PREDICTIONS).is_file():  # the intervals and ranks drawn from the per-image predictions themselves
        summary = with_statistics(summary, statistics_of_run(out))
    written = write_plots(out, summary, pd.read_csv(out / "per_class.csv"), title)
    print(f"redrew {', '.join(written) or 'nothing'} in {out}")
    return written


if __name__ == "__main__":
    import sys

    from fewshot.utils.errors import run_cli

    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.reports.plots"))
