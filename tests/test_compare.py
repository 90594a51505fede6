from __future__ import annotations

import json

import pytest

from benchmarks.reports.compare import compare_rows, get_args_parser, main, markdown
from fewshot.utils.errors import UserError


def _summary(tail: dict, episodic: dict) -> dict:
    row = lambda v: {"macro_top1": v, "macro_top5": v + 0.1, "micro_top1": v, "micro_top5": v + 0.1}  # noqa: E731
    return {"transfer": {"head": {}, "tail": {m: row(v) for m, v in tail.items()}},
            "episodic": {m: {"5w1s": {"mean": v, "ci95": 0.01, "n_episodes": 10}} for m, v in episodic.items()}}


def test_compare_gives_both_runs_figures_and_their_difference_per_method():
    a = _summary({"two_stage": 0.40, "protonet": 0.30}, {"protonet": 0.70})
    b = _summary({"two_stage": 0.55, "centroid_imagenet": 0.45}, {"protonet": 0.80})
    rows = {(r["group"], r["method"], r["metric"]): r for r in compare_rows(a, b)}
    assert rows[("tail", "two_stage", "macro_top1")]["diff"] == pytest.approx(0.15)
    assert rows[("tail", "protonet", "macro_top1")]["b"] is None and rows[("tail", "protonet", "macro_top1")]["diff"] is None
    assert rows[("tail", "centroid_imagenet", "macro_top5")]["b"] == pytest.approx(0.55)
    assert rows[("episodic", "protonet", "5w1s")]["diff"] == pytest.approx(0.10)
    text = markdown(list(rows.values()), "scratch", "pretrained")
    assert "| two_stage | 40.0 | 55.0 | +15.0 | 50.0 | 65.0 | +15.0 |" in text
    assert "| protonet | 30.0 | – | – |" in text


def test_compare_refuses_a_folder_without_summary(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(UserError, match="no summary.json"):
        main(get_args_parser().parse_args([str(tmp_path / "a"), str(tmp_path / "a")]))


def test_compare_prints_json_rows(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary({"x": 0.5}, {})))
    main(get_args_parser().parse_args([str(tmp_path / "a"), str(tmp_path / "b"), "--json"]))
    rows = json.loads(capsys.readouterr().out)
    assert {r["diff"] for r in rows} == {0.0}


def test_compare_markdown_has_every_metric_by_default_and_writes_the_chosen_ones_to_a_file(tmp_path, capsys):
    for name, v in (("a", 0.5), ("b", 0.625)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary({"x": v}, {})))
    main(get_args_parser().parse_args([str(tmp_path / "a"), str(tmp_path / "b")]))
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| method"))
    assert header == ("| method | macro_top1 A | B | B-A | macro_top5 A | B | B-A | micro_top1 A | B | B-A "
                      "| micro_top5 A | B | B-A |")
    out = tmp_path / "diff.md"
    main(get_args_parser().parse_args([str(tmp_path / "a"), str(tmp_path / "b"), "--metrics", "micro_top1",
                                       "--out", str(out)]))
    assert "| x | 50.0 | 62.5 | +12.5 |\n" in out.read_text()


def test_compare_common_keeps_only_the_methods_both_runs_report_in_each_group(tmp_path, capsys):
    runs = {"a": _summary({"two_stage": 0.40, "protonet": 0.30}, {"protonet": 0.70, "maml": 0.6}),
            "b": _summary({"two_stage": 0.55, "tau_norm": 0.50}, {"protonet": 0.80})}
    for name, summary in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    rows = main(get_args_parser().parse_args([str(tmp_path / "a"), str(tmp_path / "b"), "--common"]))
    assert {(r["group"], r["method"]) for r in rows} == {("tail", "two_stage"), ("episodic", "protonet")}
    assert "tau_norm" not in capsys.readouterr().out
    assert markdown(rows, "a", "b", ("macro_top1",), heading="####").startswith("#### transfer, tail classes")
