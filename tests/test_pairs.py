"""Pairs among the best methods of one input use the run's own resamples: their intervals equal the run's where
the run compared the same two methods, and the committed image pairs are what the committed predictions give."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.reports import pairs

ROOT = Path(__file__).resolve().parent.parent
CPU = ROOT / "benchmarks" / "results" / "cpu"


def test_pairs_equal_the_runs_own_comparisons_of_the_same_two_methods(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    result = pairs.run_pairs(smoke_run, "image", top=99)
    shared = 0
    for group, st in result["groups"].items():
        theirs = {(r["a"], r["b"], r["metric"]): r for r in summary["statistics"][group]["comparisons"]}
        for r in st["comparisons"]:
            same, flipped = theirs.get((r["a"], r["b"], r["metric"])), theirs.get((r["b"], r["a"], r["metric"]))
            if same:
                assert (r["diff"], r["ci"]) == (same["diff"], same["ci"])
                shared += 1
            elif flipped:
                assert r["diff"] == pytest.approx(-flipped["diff"], abs=1e-12)
                assert r["ci"] == pytest.approx([-flipped["ci"][1], -flipped["ci"][0]], abs=1e-12)
                shared += 1
    assert shared >= 6  # every image method against two_stage, at least, in two metrics


def test_pairs_are_among_the_best_methods_of_the_input_only(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    result = pairs.run_pairs(smoke_run, "image", top=3)
    for group, st in result["groups"].items():
        rows = summary["transfer"][group]
        image = [m for m in rows if summary["methods"][m]["inputs"] == ["image"]]
        assert st["methods"] == sorted(image, key=lambda m: -rows[m]["macro_top1"])[:3]
        assert len(st["comparisons"]) == 3 * 2  # 3 pairs, top-1 and top-5


def test_the_committed_image_pairs_are_what_the_committed_predictions_give():
    committed = json.loads((CPU / "image_pairs.json").read_text())
    assert pairs.run_pairs(CPU, committed["input"], committed["top"]) == committed


def test_pairs_of_a_folder_without_predictions_is_one_line_and_exit_2(tmp_path, capsys):
    from fewshot.utils.errors import run_cli
    code = run_cli(lambda argv: pairs.main(pairs.get_args_parser().parse_args(argv)), [str(tmp_path)],
                   prog="benchmarks.reports.pairs")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "predictions.npz: missing" in err and len(err.splitlines()) == 1
