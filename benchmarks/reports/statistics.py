"""The intervals and tests of a run's transfer figures, computed from its per-image predictions alone.

For each group: a class-stratified bootstrap of the test images (:func:`fewshot.evaluation.bootstrap_accuracy`,
the same resamples for every method) gives every figure's interval (macro / micro top-1 and top-5, and the
Many / Medium / Few macro top-1 and top-5) and paired intervals of differences: each method against the group's
reference, and the leading methods against each other. A Friedman test with Nemenyi's post-hoc over the
per-class top-1 ranks the group's methods (:func:`fewshot.evaluation.friedman_nemenyi`). Everything is a pure
function of ``predictions.npz``, the statistics settings and the seed.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import BenchmarkConfig, StatisticsConfig
from benchmarks.reports.predictions import FILE as PREDICTIONS
from benchmarks.reports.predictions import GroupPredictions
from benchmarks.reports.predictions import read as read_predictions
from fewshot.config import load_config
from fewshot.evaluation import BUCKETS, assign_buckets, bootstrap_accuracy, friedman_nemenyi, percentile_interval
from fewshot.evaluation.predictions import topk_hits_from_top

METRICS = ("macro_top1", "macro_top5", "micro_top1", "micro_top5")
COMPARED = ("macro_top1", "macro_top5")


def group_statistics(g: GroupPredictions, settings: StatisticsConfig, seed: int, reference: str | None,
                     inputs: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """{"intervals": {method: {metric: [low, high], "buckets": {...}, "buckets_top5": {...}}}, "comparisons":
    [{"a", "b", "metric", "diff", "ci", "excludes_zero", "why"}], "ranking": {...} | None, "n_resamples",
    "level", "seed"} of one group. ``inputs``: what each method reads (for the leaders of each input)."""
    methods = list(g.top)
    draws, column, subsets = resample(g, settings, seed)

    def interval(figure: str, m: str, k: str) -> list[float | None]:
        low, high = draws.interval(figure, settings.level)
        c = column[(m, k)]
        return [None if np.isnan(low[c]) else float(low[c]), None if np.isnan(high[c]) else float(high[c])]

    intervals = {m: {**{f"{avg}_{k}": interval(avg, m, k) for avg in ("macro", "micro") for k in ("top1", "top5")},
                     "buckets": {b: interval(b, m, "top1") for b in subsets},
                     "buckets_top5": {b: interval(b, m, "top5") for b in subsets}} for m in methods}
    point = {m: float(draws.point["macro"][column[(m, "top1")]]) for m in methods}
    pairs: list[tuple[str, str, str]] = []
    if reference in methods:
        pairs += [(m, reference, "reference") for m in methods if m != reference]
    leaders = leading(point, inputs, settings.leaders)
    pairs += [(a, b, "leaders") for a, b in combinations(leaders, 2)
              if not any({a, b} == {x, y} for x, y, _ in pairs)]
    comparisons = compare_pairs(draws, column, pairs, settings.level)
    return {"n_resamples": settings.n_resamples, "level": settings.level, "seed": seed, "intervals": intervals,
            "reference": reference if reference in methods else None, "leaders": leaders,
            "comparisons": comparisons, "ranking": _ranking(g, methods)}


def resample(g: GroupPredictions, settings: StatisticsConfig, seed: int) -> tuple[Any, dict[tuple[str, str], int],
                                                                                  dict[str, np.ndarray]]:
    """(the bootstrap draws of every method's top-1 and top-5 hits, {(method, "top1" | "top5"): column},
    {bucket: class mask}) of one group: the resamples depend on the test images and the seed only, so every
    call on a group gives the run's own."""
    methods = list(g.top)
    targets = g.targets.astype(np.int64)
    ks = (1, min(5, len(g.classes)))
    hits = np.concatenate([topk_hits_from_top(g.top[m], targets, ks) for m in methods], axis=1)
    buckets = assign_buckets(g.n_train)
    subsets = {b: np.asarray(buckets) == b for b in BUCKETS if b in buckets}
    draws = bootstrap_accuracy(hits, targets, len(g.classes), n_resamples=settings.n_resamples, seed=seed,
                               class_subsets=subsets)
    column = {(m, k): 2 * i + j for i, m in enumerate(methods) for j, k in enumerate(("top1", "top5"))}
    return draws, column, subsets


def compare_pairs(draws: Any, column: Mapping[tuple[str, str], int], pairs: Sequence[tuple[str, str, str]],
                  level: float) -> list[dict[str, Any]]:
    """[{"a", "b", "metric", "diff", "ci", "excludes_zero", "why"}]: macro top-1 and top-5 of a − b with the
    paired percentile interval of the same resamples, for each (a, b, why) of ``pairs``."""
    out = []
    for a, b, why in pairs:
        for metric in COMPARED:
            k = metric.rsplit("_", 1)[1]
            diff = draws.difference(column[(a, k)], column[(b, k)], "macro")
            low, high = (float(v) for v in percentile_interval(diff, level))
            point_diff = float(draws.point["macro"][column[(a, k)]] - draws.point["macro"][column[(b, k)]])
            out.append({"a": a, "b": b, "metric": metric, "diff": point_diff, "ci": [low, high],
                        "excludes_zero": bool(low > 0 or high < 0), "why": why})
    return out


def leading(point: Mapping[str, float], inputs: Mapping[str, Sequence[str]], n: int) -> list[str]:
    """The ``n`` best methods by macro top-1, then the best of each kind of input not among them, best first."""
    ranked = sorted(point, key=lambda m: (-point[m], m))
    out = ranked[:n]
    for kind in dict.fromkeys(" + ".join(inputs.get(m, ("image",))) for m in ranked):
        best = next(m for m in ranked if " + ".join(inputs.get(m, ("image",))) == kind)
        if best not in out:
            out.append(best)
    return sorted(out, key=lambda m: (-point[m], m))


def _ranking(g: GroupPredictions, methods: list[str]) -> dict[str, Any] | None:
    """Friedman + Nemenyi over the per-class top-1 of the classes with test images; None when the group has
    fewer than 3 methods or 2 such classes (the test needs both)."""
    table = np.stack([g.result(m).table["top1"].to_numpy(float) for m in methods], axis=1)
    table = table[~np.isnan(table).any(axis=1)]
    if len(methods) < 3 or len(table) < 2:
        return None
    return friedman_nemenyi(table, methods).to_dict()


def run_statistics(groups: Mapping[str, GroupPredictions], settings: StatisticsConfig, seed: int,
                   inputs: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """:func:`group_statistics` of every group, the joint group against ``settings.joint_reference``."""
    return {group: group_statistics(g, settings, seed, settings.joint_reference if group == "all"
                                    else settings.reference, inputs) for group, g in groups.items()}


def statistics_of_run(run: Path) -> dict[str, dict[str, Any]]:
    """:func:`run_statistics` of a finished run folder, from its files alone: ``predictions.npz``, the statistics
    settings and seed of its ``config.resolved.toml``, the methods' inputs declared in its ``summary.json``."""
    cfg = load_config(BenchmarkConfig, run / "config.resolved.toml")
    summary = json.loads((run / "summary.json").read_text())
    inputs = {m: d["inputs"] for m, d in summary.get("methods", {}).items()}
    return run_statistics(read_predictions(run / PREDICTIONS), cfg.statistics, cfg.seed, inputs)


def with_statistics(summary: dict, statistics: Mapping[str, Mapping[str, Any]]) -> dict:
    """``summary`` with the intervals, comparisons and rankings of ``statistics`` (as the run writes them)."""
    out = {**summary, "transfer": {g: {m: dict(r) for m, r in rows.items()} for g, rows in summary["transfer"].items()}}
    for group, st in statistics.items():
        for method, ci in st["intervals"].items():
            out["transfer"][group][method]["ci"] = ci
    out["statistics"] = {g: {k: v for k, v in st.items() if k != "intervals"} for g, st in statistics.items()}
    return out


def _pct(v: float | None, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def difference_cell(row: Mapping[str, Any]) -> str:
    """A paired difference with its interval as the reports print it, "+3.9 [+1.5, +6.1]" (points)."""
    return f"{_pct(row['diff'], True)} [{_pct(row['ci'][0], True)}, {_pct(row['ci'][1], True)}]"


def verdict(row: Mapping[str, Any]) -> str:
    """What a paired interval supports: "a better", "b better" or "indistinguishable on this data"."""
    if not row["excludes_zero"]:
        return "indistinguishable on this data"
    return f"{row['a'] if row['diff'] > 0 else row['b']} better"


def statistics_markdown(statistics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """summary.md's differences and ranking sections, group by group."""
    if not statistics:
        return []
    first = next(iter(statistics.values()))
    lines = ["## Differences between methods, with paired 95% intervals", "",
             f"A class-stratified bootstrap of the test images ({first['n_resamples']} resamples, seed "
             f"{first['seed']}), the same resamples for every method, so each difference has its own (paired) "
             "interval. A difference whose interval holds 0 is not a finding: *indistinguishable on this data*.", ""]
    for group, st in statistics.items():
        if not st["comparisons"]:
            continue
        lines += [f"### {group}" + (f" (reference `{st['reference']}`)" if st.get("reference") else ""), "",
                  "| a | b | why | macro top-1 a − b [95%] | macro top-5 a − b [95%] | verdict (top-1) |",
                  "|---|---|---|---:|---:|---|"]
        by_pair: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in st["comparisons"]:
            by_pair.setdefault((row["a"], row["b"], row["why"]), {})[row["metric"]] = row
        for (a, b, why), rows in by_pair.items():
            cells = [difference_cell(r) if (r := rows.get(m)) else "–" for m in COMPARED]
            lines.append(f"| {a} | {b} | {why} | {' | '.join(cells)} | {verdict(rows['macro_top1'])} |")
        lines.append("")
    lines += ["## Ranks across classes (Friedman test, Nemenyi post-hoc)", "",
              "Per-class top-1 of every method of a group (the classes with test images), ranked within each "
              "class (1 = best). Methods whose average ranks differ by less than the critical difference (CD) are "
              "not told apart by the test; the bars of each group's `cd_<group>.png` join them.", ""]
    for group, st in statistics.items():
        r = st.get("ranking")
        if not r:
            lines += [f"- {group}: too few methods or classes for the test", ""]
            continue
        ranks = ", ".join(f"{m} {v:.2f}" for m, v in sorted(zip(r["methods"], r["average_ranks"]), key=lambda x: x[1]))
        ties = "; ".join("{" + ", ".join(g) + "}" for g in r["groups"] if len(g) > 1) or "none"
        lines += [f"- **{group}**: {r['n_classes']} classes, Friedman χ² = {r['statistic']:.1f}, p = {r['p_value']:.2g}; "
                  f"CD = {r['critical_difference']:.2f} at α = {r['alpha']}. Average ranks: {ranks}. "
                  f"Not told apart: {ties}.", ""]
    return lines
