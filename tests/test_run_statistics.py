"""A run's intervals, tests and seeds: every transfer figure of summary.json is recomputed exactly from the
run's predictions.npz, every interval and ranking from the run folder alone; the smoke run carries all of
them (two seeds, the group validation rule)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmarks.builtin  # noqa: F401  (registers the built-in methods get_method reads)
from benchmarks.config import StatisticsConfig
from benchmarks.registry.methods import get_method
from benchmarks.reports import compare
from benchmarks.reports.predictions import FILE, GroupPredictions, read
from benchmarks.reports.statistics import group_statistics, leading, statistics_of_run, verdict
from fewshot.evaluation import BUCKETS, bucket_means

GROUPS = ("head", "tail", "all")


@pytest.fixture(scope="module")
def smoke(smoke_run) -> tuple[Path, dict, dict]:
    return (smoke_run, json.loads((smoke_run / "summary.json").read_text()),
            tomllib.loads((smoke_run / "config.resolved.toml").read_text()))


def test_summary_figures_are_recomputed_exactly_from_the_predictions(smoke):
    run, summary, _ = smoke
    predictions = read(run / FILE)
    checked = 0
    for group in GROUPS:
        for method, row in summary["transfer"][group].items():
            result = predictions[group].result(method)
            assert result.summary() == {k: row[k] for k in result.summary()}, (group, method)
            n_train = predictions[group].n_train
            for key, column in (("buckets", "top1"), ("buckets_top5", "top5")):
                want = {b: None if np.isnan(v) else v for b, v in bucket_means(result.table[column].to_numpy(),
                                                                                n_train).items()}
                assert want == row[key], (group, method, key)  # NaN (no class in the bucket) is JSON's null
            checked += 1
    assert checked >= 30


def test_the_runs_intervals_comparisons_and_ranks_are_recomputed_from_the_run_folder_alone(smoke):
    run, summary, _ = smoke
    again = statistics_of_run(run)
    for group, st in again.items():
        for method, ci in st["intervals"].items():
            assert summary["transfer"][group][method]["ci"] == ci, (group, method)
        assert summary["statistics"][group] == {k: v for k, v in st.items() if k != "intervals"}


def test_every_transfer_figure_has_an_interval_around_it(smoke):
    _, summary, config = smoke
    assert config["statistics"]["n_resamples"] >= 1000
    for group in GROUPS:
        for method, row in summary["transfer"][group].items():
            for metric in ("macro_top1", "macro_top5", "micro_top1", "micro_top5"):
                low, high = row["ci"][metric]
                assert low <= row[metric] <= high and high - low < 0.5, (group, method, metric)
            for bucket, value in row["buckets"].items():
                if value is not None:
                    low, high = row["ci"]["buckets"][bucket]
                    assert low <= value <= high, (group, method, bucket)


def test_methods_run_once_per_seed_where_cheap_and_the_backbones_classifiers_once(smoke):
    _, summary, config = smoke
    seeds = [str(s) for s in config["seeds"]]
    assert len(seeds) >= 2
    for group in GROUPS:
        for method, row in summary["transfer"][group].items():
            if get_method(method).seeded:
                assert sorted(row["seeds"]["macro_top1"]) == sorted(seeds), (group, method)
                assert row["seeds"]["macro_top1"][str(config["seed"])] == row["macro_top1"]
            else:
                assert "seeds" not in row, (group, method)
    for method in ("maml", "anil"):  # meta-learned again per seed, on the cached ImageNet features
        assert sorted(summary["episodic"][method]["5w5s"]["seeds"]) == sorted(seeds)


def test_comparisons_cover_the_reference_and_the_leaders_of_each_group(smoke):
    _, summary, _ = smoke
    for group, st in summary["statistics"].items():
        reference = st["reference"]
        assert reference == ("two_stage_joint" if group == "all" else "two_stage")
        against = {r["a"] for r in st["comparisons"] if r["why"] == "reference"}
        assert against == set(summary["transfer"][group]) - {reference}
        assert len(st["leaders"]) >= 3
        for row in st["comparisons"]:
            assert row["ci"][0] <= row["diff"] <= row["ci"][1]
            assert row["excludes_zero"] == (row["ci"][0] > 0 or row["ci"][1] < 0)
        assert st["ranking"]["methods"] == list(summary["transfer"][group])


def test_summary_markdown_and_plots_say_it(smoke):
    run, summary, _ = smoke
    text = (run / "summary.md").read_text()
    assert "## Differences between methods, with paired 95% intervals" in text
    assert "## Ranks across classes (Friedman test, Nemenyi post-hoc)" in text
    assert "indistinguishable on this data" in text or all(
        r["excludes_zero"] for st in summary["statistics"].values() for r in st["comparisons"])
    assert summary["validation"]["rule"] == "group" and summary["validation"]["words"] in text
    for name in ("intervals.png", "cd_head.png", "cd_tail.png", "cd_all.png"):
        assert (run / name).is_file(), name


def test_predictions_are_small_and_hold_every_method_of_every_group(smoke):
    run, summary, _ = smoke
    predictions = read(run / FILE)
    for group in GROUPS:
        g = predictions[group]
        assert list(g.top) == list(summary["transfer"][group])
        assert all(t.shape == (len(g.rows), min(5, len(g.classes))) and t.dtype == np.int16 for t in g.top.values())
    split = pd.read_csv(run / "split.csv")
    tail_ids = split.loc[split["transfer"] == "tail_test", "id"].to_numpy()
    assert np.array_equal(np.sort(predictions["tail"].rows), np.sort(tail_ids))


def test_compare_gives_paired_intervals_from_both_runs_predictions(smoke):
    run, _, _ = smoke
    intervals = compare.paired_intervals(run, run, n_resamples=200)
    assert intervals and all(ci == [0.0, 0.0] for ci in intervals.values())  # a run against itself
    rows = compare.compare_rows(json.loads((run / "summary.json").read_text()),
                                json.loads((run / "summary.json").read_text()), intervals)
    assert any(r["ci"] == [0.0, 0.0] for r in rows)


def _group(n_per_class: int, accuracy: dict[str, float], seed: int = 0) -> GroupPredictions:
    """Synthetic predictions: 4 classes, each method right on about ``accuracy[method]`` of the images."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(4), n_per_class).astype(np.int16)
    top = {}
    for method, acc in accuracy.items():
        right = rng.random(len(targets)) < acc
        first = np.where(right, targets, (targets + 1) % 4)
        top[method] = np.stack([first, (first + 1) % 4, (first + 2) % 4, (first + 3) % 4], axis=1).astype(np.int16)
    return GroupPredictions(rows=np.arange(len(targets)), targets=targets, classes=("a", "b", "c", "d"),
                            n_train=np.array([500, 50, 10, 5]), top=top, scores={m: t.astype(np.float16) for m, t in top.items()})


def test_a_clearly_better_method_is_a_finding_and_a_tie_is_indistinguishable():
    g = _group(300, {"base": 0.5, "better": 0.8, "same": 0.5, "text": 0.6})
    st = group_statistics(g, StatisticsConfig(n_resamples=500), seed=0, reference="base",
                          inputs={"text": ("name",)})
    rows = {(r["a"], r["metric"]): r for r in st["comparisons"] if r["why"] == "reference"}
    assert verdict(rows[("better", "macro_top1")]) == "better better"
    assert rows[("same", "macro_top1")]["excludes_zero"] is False  # same accuracy: not a finding
    assert set(st["leaders"]) >= {"better", "text"}  # the best of each input among the leaders
    assert set(st["intervals"]["base"]["buckets"]) == set(BUCKETS)


def test_leading_adds_the_best_method_of_each_input():
    point = {"a": 0.9, "b": 0.8, "c": 0.7, "t": 0.2, "f": 0.1}
    assert leading(point, {"t": ("name",), "f": ("image", "name")}, 2) == ["a", "b", "t", "f"]


@pytest.mark.parametrize("point", [0.5 + 1e-16, 0.8, 0.1])  # at the upper end by rounding; above it; below it
def test_the_intervals_plot_draws_a_point_that_lies_outside_its_percentile_interval(point):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.reports.uncertainty import intervals
    summary = {"transfer": {"tail": {"a": {"macro_top1": point, "ci": {"macro_top1": [0.3, 0.5]}},
                                     "b": {"macro_top1": 0.4, "ci": {"macro_top1": [0.35, 0.45]}}}}}
    fig = intervals(plt, summary, pd.DataFrame(), "t")
    segments = fig.axes[0].collections[0].get_segments()
    want = [[35.0, 45.0], [30.0, 50.0]] if point > 0.4 else [[30.0, 50.0], [35.0, 45.0]]  # best at the top
    assert [s[:, 0].tolist() for s in segments] == want
    assert fig.axes[0].collections[1].get_offsets()[:, 0].tolist() == sorted([100 * point, 40.0])
    plt.close(fig)
