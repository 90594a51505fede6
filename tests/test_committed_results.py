"""The committed runs (benchmarks/results/cpu, cpu-scratch) agree with themselves: every method of a run's
config is in its result files, its per_class.csv rows average to its summary.json figures, its episodic rows
have the config's settings. No data, training or registry needed: these check what the files say about
themselves, so adding a method never requires re-running a published benchmark."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
RUNS = ("cpu", "cpu-scratch")
GROUPS = ("head", "tail", "all")


def load(run: str) -> tuple[dict, pd.DataFrame, dict, dict]:
    folder = RESULTS / run
    return (json.loads((folder / "summary.json").read_text()), pd.read_csv(folder / "per_class.csv"),
            tomllib.loads((folder / "config.resolved.toml").read_text()), json.loads((folder / "run.json").read_text()))


def reported(summary: dict) -> dict[str, set[str]]:
    """{method: the groups and protocols the summary reports it in}."""
    out: dict[str, set[str]] = {}
    for group in GROUPS:
        for method in summary["transfer"].get(group, {}):
            out.setdefault(method, set()).add(group)
    for method in summary.get("episodic", {}):
        out.setdefault(method, set()).add("episodic")
    return out


@pytest.mark.parametrize("run", RUNS)
def test_committed_run_is_a_finished_real_data_run_of_exactly_its_configs_methods(run: str):
    summary, per_class, config, record = load(run)
    assert summary["synthetic"] is False and record["status"] == "finished"
    assert set(reported(summary)) == set(config["methods"])
    scored = per_class.filter(like="/top1").columns.str.removesuffix("/top1").tolist()
    assert scored == [m for m in config["methods"] if m in reported(summary)]  # the config's order


def assert_rows_average_to_summary(per_class: pd.DataFrame, summary: dict, name: str, group: str) -> None:
    rows = per_class[(per_class["group"] == group) & (per_class["n_test"] > 0)]
    assert len(rows) > 0 and rows[f"{name}/top1"].notna().all(), group
    for k in ("top1", "top5"):
        # per_class.csv keeps 6 decimals: the mean of the rounded values is within 5e-7 of the macro figure.
        assert rows[f"{name}/{k}"].mean() == pytest.approx(summary["transfer"][group][name][f"macro_{k}"],
                                                          abs=1e-6), (group, k)
    weights = rows["n_test"].to_numpy(np.float64)
    micro = float((rows[f"{name}/top1"] * weights).sum() / weights.sum())
    assert micro == pytest.approx(summary["transfer"][group][name]["micro_top1"], abs=1e-5), group


@pytest.mark.parametrize("run", RUNS)
def test_committed_per_class_rows_average_to_the_summary_figures(run: str):
    summary, per_class, _, _ = load(run)
    checked = 0
    for group in GROUPS:
        for name in summary["transfer"].get(group, {}):
            assert_rows_average_to_summary(per_class, summary, name, group)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("run", RUNS)
def test_committed_episodic_rows_have_the_configs_settings_and_episodes(run: str):
    summary, per_class, config, _ = load(run)
    ev = config["evaluation"]
    settings = {f"{w}w{s}s" for w in ev["ways"] for s in ev["shots"]}
    assert summary["episodic"]
    for name, rows in summary["episodic"].items():
        assert set(rows) == settings, name
        assert all(r["n_episodes"] == ev["episodes"] and 0 < r["ci95"] < 0.05 for r in rows.values()), name
        evaluation = per_class[per_class["group"] == "evaluation"]
        assert evaluation[f"{name}/top1"].between(0, 1).all(), name


@pytest.mark.parametrize("run", RUNS)
def test_committed_per_class_has_head_tail_all_and_evaluation_rows(run: str):
    summary, per_class, config, _ = load(run)
    counts = per_class["group"].value_counts()
    assert counts["head"] == config["data"]["n_head"]
    assert counts["all"] == counts["head"] + counts["tail"]
    evaluation = per_class[per_class["group"] == "evaluation"]
    assert len(evaluation) > 0 and not set(evaluation["class"]) & set(summary["episodic_split"]["train_classes"])


@pytest.mark.parametrize("run", RUNS)
def test_committed_methods_are_in_the_groups_their_run_declares(run: str):
    """Runs that record each method's declaration (summary.json "methods") report it in exactly those groups."""
    summary, _, _, _ = load(run)
    if "methods" not in summary:
        pytest.skip(f"{run} predates the methods' declarations in summary.json")
    found = reported(summary)
    for name, declared in summary["methods"].items():
        expected = set(declared["groups"]) | ({"episodic"} if declared.get("episodic") else set())
        assert found.get(name, set()) == expected, name


@pytest.mark.parametrize("run", RUNS)
def test_committed_predictions_recompute_every_transfer_figure_interval_and_test(run: str):
    """A run that kept per-image predictions: each transfer figure of its summary.json is recomputed exactly from
    predictions.npz, each has its 95% interval holding it, and the statistics are those of the folder alone."""
    import benchmarks.builtin  # noqa: F401  (the registry the statistics' config reader needs)
    from benchmarks.reports.predictions import FILE, read
    from benchmarks.reports.statistics import statistics_of_run

    folder = RESULTS / run
    if not (folder / FILE).is_file():
        pytest.skip(f"{run} predates per-image predictions")
    summary, _, _, _ = load(run)
    predictions = read(folder / FILE)
    for group in GROUPS:
        for method, row in summary["transfer"][group].items():
            result = predictions[group].result(method).summary()
            assert result == {k: row[k] for k in result}, (group, method)
            for metric in ("macro_top1", "macro_top5", "micro_top1", "micro_top5"):
                low, high = row["ci"][metric]
                assert low <= row[metric] <= high, (group, method, metric)
    again = statistics_of_run(folder)
    assert {g: {k: v for k, v in st.items() if k != "intervals"} for g, st in again.items()} == summary["statistics"]
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 20e6, f"{run}: {size / 1e6:.1f} MB"
