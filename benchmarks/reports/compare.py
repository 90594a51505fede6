"""Compare two finished runs method by method: what pretraining, a new method or a new dataset changed.

    python -m benchmarks.reports.compare RUN_A RUN_B [--metrics M ...] [--common] [--out FILE] [--json]

For every method and group (transfer head / tail / all; episodic settings) present in either run's
``summary.json``: A's and B's figures (macro / micro top-1 / top-5, or episodic mean accuracy) and B - A,
in percentage points. A method missing from one run shows "–". When both runs kept their per-image
predictions (``predictions.npz``) of the same test images, each transfer difference gets a paired 95% interval
(a class-stratified bootstrap of those images, both runs' hits on the same resamples); runs on other images
are compared without one.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks.reports.predictions import FILE as PREDICTIONS
from benchmarks.reports.predictions import read as read_predictions
from fewshot.evaluation import bootstrap_accuracy, percentile_interval
from fewshot.evaluation.predictions import topk_hits_from_top
from fewshot.utils.errors import UserError, run_cli
from fewshot.utils.io import atomic_write_text

METRICS = ("macro_top1", "macro_top5", "micro_top1", "micro_top5")


def load_summary(run: Path) -> dict:
    path = run / "summary.json"
    if not path.is_file():
        raise UserError(f"{run}: no summary.json; is it a finished benchmark run folder?")
    return json.loads(path.read_text())


def paired_intervals(run_a: Path, run_b: Path, n_resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[tuple[str, str, str], list[float]]:
    """{(group, method, metric): [low, high]} of B - A for every transfer method both runs kept predictions of,
    in the groups whose test images (rows and classes) are the same in both; {} without both files."""
    files = [run / PREDICTIONS for run in (run_a, run_b)]
    if not all(f.is_file() for f in files):
        return {}
    pa, pb = (read_predictions(f) for f in files)
    out = {}
    for group in set(pa) & set(pb):
        ga, gb = pa[group], pb[group]
        if not (np.array_equal(ga.rows, gb.rows) and np.array_equal(ga.targets, gb.targets)
                and ga.classes == gb.classes):
            continue
        methods = [m for m in ga.top if m in gb.top]
        targets = ga.targets.astype(np.int64)
        ks = (1, min(5, len(ga.classes)))
        hits = np.concatenate([topk_hits_from_top(g.top[m], targets, ks) for m in methods for g in (ga, gb)], axis=1)
        draws = bootstrap_accuracy(hits, targets, len(ga.classes), n_resamples=n_resamples, seed=seed)
        for i, m in enumerate(methods):
            for j, k in enumerate(("top1", "top5")):
                a, b = 4 * i + j, 4 * i + 2 + j  # columns: A top1, A top5, B top1, B top5
                for avg in ("macro", "micro"):
                    low, high = percentile_interval(draws.difference(b, a, avg), level)
                    out[(group, m, f"{avg}_{k}")] = [float(low), float(high)]
    return out


def compare_rows(a: dict, b: dict, intervals: dict | None = None) -> list[dict]:
    """One row per (group, method, metric): {"group", "method", "metric", "a", "b", "diff", "ci"} (fractions;
    ``ci``: the paired interval of B - A from ``intervals`` (:func:`paired_intervals`), or None)."""
    rows = []
    for group in ("head", "tail", "all"):
        ta, tb = a.get("transfer", {}).get(group, {}), b.get("transfer", {}).get(group, {})
        for method in list(ta) + [m for m in tb if m not in ta]:
            for metric in METRICS:
                rows.append(_row(group, method, metric, ta.get(method, {}).get(metric), tb.get(method, {}).get(metric),
                                 (intervals or {}).get((group, method, metric))))
    ea, eb = a.get("episodic", {}), b.get("episodic", {})
    for method in list(ea) + [m for m in eb if m not in ea]:
        settings = list(ea.get(method, {})) + [s for s in eb.get(method, {}) if s not in ea.get(method, {})]
        for s in settings:
            rows.append(_row("episodic", method, s, ea.get(method, {}).get(s, {}).get("mean"),
                             eb.get(method, {}).get(s, {}).get("mean")))
    return rows


def common_rows(rows: list[dict]) -> list[dict]:
    """The rows of the (group, method) pairs that both runs report: what changed, not what is new."""
    both = {(r["group"], r["method"]) for r in rows if r["a"] is not None and r["b"] is not None}
    return [r for r in rows if (r["group"], r["method"]) in both]


def _row(group: str, method: str, metric: str, a: float | None, b: float | None, ci: list | None = None) -> dict:
    diff = b - a if a is not None and b is not None else None
    return {"group": group, "method": method, "metric": metric, "a": a, "b": b, "diff": diff, "ci": ci}


def _pct(v: float | None, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def markdown(rows: list[dict], name_a: str, name_b: str, metrics: tuple[str, ...] = METRICS,
             heading: str = "###") -> str:
    """Tables per group: one line per method, columns A / B / B-A for each of ``metrics`` (transfer
    groups; the episodic table has one column triple per setting), each under a ``heading`` title; B-A with
    its paired 95% interval in brackets where the rows have one."""
    out = []
    for group in dict.fromkeys(r["group"] for r in rows):
        sel = [r for r in rows if r["group"] == group]
        shown = list(metrics) if group != "episodic" else list(dict.fromkeys(r["metric"] for r in sel))
        title = ("episodic, mean accuracy" if group == "episodic" else "transfer, head + tail jointly"
                 if group == "all" else f"transfer, {group} classes")
        out += [f"{heading} {title} (A = {name_a}, B = {name_b}; %, B - A in points)", "",
                "| method | " + " | ".join(f"{m} A | B | B-A" for m in shown) + " |",
                "|---|" + "---:|---:|---:|" * len(shown)]
        for method in dict.fromkeys(r["method"] for r in sel):
            cells = []
            for m in shown:
                r = next((r for r in sel if r["method"] == method and r["metric"] == m), None)
                diff = _pct(r["diff"], sign=True) if r else "–"
                if r and r.get("ci"):
                    diff += f" [{_pct(r['ci'][0], sign=True)}, {_pct(r['ci'][1], sign=True)}]"
                cells += [_pct(r["a"]), _pct(r["b"]), diff] if r else ["–"] * 3
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reports.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path, help="the reference run folder (A)")
    p.add_argument("run_b", type=Path, help="the run compared with it (B)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of Markdown tables")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS), metavar="METRIC",
                   help=f"the transfer metrics of the Markdown tables (default: all of {', '.join(METRICS)})")
    p.add_argument("--common", action="store_true", help="only the methods that both runs report, per group")
    p.add_argument("--out", type=Path, help="also write the output to this file")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return p


def main(args: argparse.Namespace) -> list[dict]:
    rows = compare_rows(load_summary(args.run_a), load_summary(args.run_b), paired_intervals(args.run_a, args.run_b))
    if args.common:
        rows = common_rows(rows)
    text = (json.dumps(rows, indent=1) if args.json
            else markdown(rows, args.run_a.name, args.run_b.name, tuple(args.metrics)))
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.reports.compare"))
