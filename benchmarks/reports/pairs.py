"""Paired intervals between the best methods of one input, from a finished run folder alone.

    python -m benchmarks.reports.pairs RUN                       # the 4 best image-only methods of each group
    python -m benchmarks.reports.pairs RUN --input image --top 4 --out RUN/image_pairs.json

A run compares every method with its reference and the leading methods of the whole group with each other
(:mod:`benchmarks.reports.statistics`); on the catalogue the leaders read product names, so the question the
toolkit asks first, which image method to use, gets no difference between image methods. This gives it: every
pair among the ``top`` best methods reading exactly ``input`` (by macro top-1), macro top-1 and top-5 of a − b
with the paired 95% interval of the run's own bootstrap resamples (its ``predictions.npz``, statistics settings
and seed), so the intervals agree with the run's ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

from benchmarks.config import BenchmarkConfig
from benchmarks.reports.predictions import FILE as PREDICTIONS
from benchmarks.reports.predictions import read as read_predictions
from benchmarks.reports.statistics import compare_pairs, difference_cell, resample, verdict
from fewshot.config import load_config
from fewshot.utils.errors import UserError, run_cli
from fewshot.utils.io import atomic_write_text


def best_of_input(summary: dict, group: str, kind: str, top: int) -> list[str]:
    """The ``top`` best methods of ``group`` by macro top-1 whose declared inputs are exactly ``kind``
    ("image", "name", "image + name"), best first (ties by name)."""
    rows = summary["transfer"][group]
    declared = {m: " + ".join(d["inputs"]) for m, d in summary.get("methods", {}).items()}
    same = [m for m in rows if declared.get(m) == kind]
    return sorted(same, key=lambda m: (-rows[m]["macro_top1"], m))[:top]


def run_pairs(run: Path, kind: str = "image", top: int = 4) -> dict[str, Any]:
    """{"input", "top", "n_resamples", "level", "seed", "groups": {group: {"methods": [...], "comparisons":
    [...]}}} of a finished run folder (rows as summary.json's ``statistics.<group>.comparisons``, why "pairs")."""
    for name in (PREDICTIONS, "summary.json", "config.resolved.toml"):
        if not (run / name).is_file():
            raise UserError(f"{run / name}: missing; pairs need a finished run folder with per-image predictions")
    summary = json.loads((run / "summary.json").read_text())
    cfg = load_config(BenchmarkConfig, run / "config.resolved.toml")
    predictions = read_predictions(run / PREDICTIONS)
    groups = {}
    for group, g in predictions.items():
        methods = best_of_input(summary, group, kind, top)
        if len(methods) < 2:
            continue
        draws, column, _ = resample(g, cfg.statistics, cfg.seed)
        pairs = [(a, b, "pairs") for a, b in combinations(methods, 2)]
        groups[group] = {"methods": methods, "comparisons": compare_pairs(draws, column, pairs, cfg.statistics.level)}
    return {"input": kind, "top": top, "n_resamples": cfg.statistics.n_resamples, "level": cfg.statistics.level,
            "seed": cfg.seed, "groups": groups}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Pairs among the {result['top']} best `{result['input']}` methods of each group: macro top-1 a − b "
             f"with its paired {100 * result['level']:.0f}% interval ({result['n_resamples']} resamples, seed "
             f"{result['seed']}).", "", "| group | a | b | macro top-1 a − b [95%] | verdict |", "|---|---|---|---:|---|"]
    for group, st in result["groups"].items():
        for r in st["comparisons"]:
            if r["metric"] == "macro_top1":
                lines.append(f"| {group} | `{r['a']}` | `{r['b']}` | {difference_cell(r)} | {verdict(r)} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reports.pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished run folder (with predictions.npz)")
    p.add_argument("--input", default="image", help='what the methods read: "image", "name" or "image + name"')
    p.add_argument("--top", type=int, default=4, help="how many of the best methods of that input (default 4)")
    p.add_argument("--out", type=Path, help="also write the pairs as JSON here")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.top < 2:
        raise UserError(f"--top {args.top}: a pair needs at least 2 methods")
    result = run_pairs(args.run, args.input, args.top)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.reports.pairs"))
