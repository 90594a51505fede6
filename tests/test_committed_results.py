"""The committed main run (benchmarks/results/cpu): every registered method in every group it supports,
and a per_class.csv that agrees with summary.json; the from-scratch run (cpu-scratch) likewise for the
methods of its config. No data or training needed: these are the files the README quotes."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.methods import get_method, method_names

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "cpu"
SUMMARY = json.loads((RUN / "summary.json").read_text())
PER_CLASS = pd.read_csv(RUN / "per_class.csv")
CONFIG = tomllib.loads((RUN / "config.resolved.toml").read_text())


def test_committed_cpu_run_is_a_real_data_run_of_every_registered_method():
    assert SUMMARY["synthetic"] is False
    assert CONFIG["methods"] == list(method_names())
    assert json.loads((RUN / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("name", method_names())
def test_committed_cpu_summary_has_the_method_in_every_group_it_supports(name: str):
    method = get_method(name)
    for group in ("head", "tail", "all"):
        assert (name in SUMMARY["transfer"][group]) == (group in method.groups()), group
    settings = {f"{w}w{s}s" for w in CONFIG["evaluation"]["ways"] for s in CONFIG["evaluation"]["shots"]}
    if method.episodic:
        rows = SUMMARY["episodic"][name]
        assert set(rows) == settings
        assert all(r["n_episodes"] == CONFIG["evaluation"]["episodes"] and 0 < r["ci95"] < 0.05 for r in rows.values())
    else:
        assert name not in SUMMARY["episodic"]


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


@pytest.mark.parametrize("name", [n for n in method_names() if get_method(n).groups()])
def test_committed_per_class_rows_average_to_the_summary_macro_figures(name: str):
    for group in get_method(name).groups():
        assert_rows_average_to_summary(PER_CLASS, SUMMARY, name, group)


def test_committed_scratch_run_has_its_configs_methods_with_rows_that_average_to_its_summary():
    run = RUN.parent / "cpu-scratch"
    summary, per_class = json.loads((run / "summary.json").read_text()), pd.read_csv(run / "per_class.csv")
    config = tomllib.loads((run / "config.resolved.toml").read_text())
    assert summary["synthetic"] is False and config["weights"] == "none"
    for name in config["methods"]:
        method = get_method(name)
        for group in ("head", "tail", "all"):
            assert (name in summary["transfer"][group]) == (group in method.groups()), (name, group)
            if group in method.groups():
                assert_rows_average_to_summary(per_class, summary, name, group)
        assert (name in summary["episodic"]) == (method.episodic is not None), name
    assert (per_class.filter(like="/top1").columns.str.removesuffix("/top1").tolist()
            == [n for n in config["methods"] if get_method(n).groups() or get_method(n).episodic])


def test_committed_per_class_has_head_tail_all_and_evaluation_rows():
    counts = PER_CLASS["group"].value_counts()
    assert counts["head"] == CONFIG["data"]["n_head"]
    assert counts["all"] == counts["head"] + counts["tail"]
    evaluation = PER_CLASS[PER_CLASS["group"] == "evaluation"]
    assert len(evaluation) > 0 and not set(evaluation["class"]) & set(SUMMARY["episodic_split"]["train_classes"])
    for name in (n for n in method_names() if get_method(n).episodic):
        assert evaluation[f"{name}/top1"].between(0, 1).all(), name
