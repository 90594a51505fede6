"""The README's result tables are written from, and checked against, the committed run files."""
from __future__ import annotations

import json

import pytest

from benchmarks.reports import readme_results as rr
from fewshot.utils.errors import UserError


def _row(top1: float) -> dict:
    return {"macro_top1": top1, "macro_top5": 0.9, "micro_top1": 0.6,
            "buckets": {"many": 0.7, "medium": None, "few": 0.125}}


MAIN = {"transfer": {"tail": {"two_stage": _row(0.45), "tau_norm": _row(0.508), "text": _row(0.794)}},
        "episodic": {"protonet": {"5w1s": {"mean": 0.716, "ci95": 0.008}},
                     "maml": {"5w1s": {"mean": 0.754, "ci95": 0.0081}}}}
SCRATCH = {"transfer": {"tail": {"two_stage": _row(0.424)}}, "episodic": {"protonet": {"5w1s": {"mean": 0.773}}}}


def test_transfer_table_lists_image_methods_then_name_methods_each_best_first_with_the_scratch_figure():
    lines = rr.transfer_table("tail", MAIN, SCRATCH).splitlines()
    assert lines[0].count("|") - 1 == lines[1].count("|") - 1 == 10  # as many separator cells as columns
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| `tau_norm`", "| `two_stage`", "| `text`"]
    assert lines[3] == "| `two_stage` | image | 45.0 | 90.0 | 60.0 | 70.0 | – | 12.5 | – | 42.4 |"
    assert lines[-1] == "| seed, as published | image | 77.0 | 85.0 | – | – | – | – | – | – |"


def test_transfer_table_gives_each_figure_its_interval_and_the_spread_over_seeds():
    row = {**_row(0.508), "ci": {"macro_top1": [0.483, 0.531], "macro_top5": [0.88, 0.92], "micro_top1": [0.58, 0.62],
                                 "buckets": {"many": [0.6, 0.8], "few": [0.05, 0.2]}},
           "seeds": {"macro_top1": {"0": 0.508, "1": 0.501, "2": 0.512}}}
    main = {"transfer": {"tail": {"tau_norm": row}}, "methods": {"tau_norm": {"inputs": ["image"]}}}
    line = rr.transfer_table("tail", main, {}).splitlines()[2]
    assert line == ("| `tau_norm` | image | 50.8 [48.3, 53.1] | 90.0 [88.0, 92.0] | 60.0 [58.0, 62.0] | "
                    "70.0 [60.0, 80.0] | – | 12.5 [5.0, 20.0] | 50.1–51.2 | – |")


def test_differences_table_says_what_each_paired_interval_supports():
    comparisons = [{"a": "crt", "b": "two_stage", "metric": "macro_top1", "diff": 0.05, "ci": [0.02, 0.08],
                    "excludes_zero": True, "why": "reference"},
                   {"a": "crt", "b": "tau_norm", "metric": "macro_top1", "diff": -0.003, "ci": [-0.02, 0.015],
                    "excludes_zero": False, "why": "leaders"},
                   {"a": "crt", "b": "tau_norm", "metric": "macro_top5", "diff": 0.0, "ci": [-0.01, 0.01],
                    "excludes_zero": False, "why": "leaders"}]
    main = {"statistics": {"tail": {"reference": "two_stage", "comparisons": comparisons}}}
    lines = rr.differences_table("tail", main).splitlines()
    assert lines[2:] == ["| `crt` | `two_stage` | reference `two_stage` | +5.0 [+2.0, +8.0] | crt better |",
                         "| `crt` | `tau_norm` | leaders | -0.3 [-2.0, +1.5] | indistinguishable on this data |"]


def test_episodic_table_sorts_by_5way_1shot_and_ends_with_the_published_figures():
    lines = rr.episodic_table(MAIN, SCRATCH).splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[-1].count("|")
    assert lines[2] == "| `maml` | 75.4 ± 0.8 | – / – | – / – |"
    assert lines[3] == "| `protonet` | 71.6 ± 0.8 | – / – | 77.3 / – |"
    assert lines[-1] == "| best published (Conv4 ProtoNet, 80x60, from scratch) | 78.8 | – | – |"


def test_episodic_table_gives_the_lowest_and_highest_mean_over_seeds():
    main = {"episodic": {"maml": {"5w1s": {"mean": 0.754, "ci95": 0.008, "seeds": {"0": 0.754, "1": 0.733, "2": 0.753}},
                                  "5w5s": {"mean": 0.828, "ci95": 0.006, "seeds": {"0": 0.828}}}}}
    line = rr.episodic_table(main, {}).splitlines()[2]
    assert line == "| `maml` | 75.4 ± 0.8 | 82.8 ± 0.6 | 73.3–75.4 / – | – / – |"


def test_validation_table_sets_each_chosen_setting_against_its_test_figure():
    row = {**_row(0.464), "ci": {"macro_top1": [0.443, 0.481]}}
    main = {"transfer": {"tail": {"tau_norm": row, "fusion_product": _row(0.812), "two_stage": _row(0.424)}},
            "methods": {"tau_norm": {"inputs": ["image"]}, "two_stage": {"inputs": ["image"]},
                        "fusion_product": {"inputs": ["image", "name"]}},
            "choices": {"tau_norm": {"tail": {"val_macro_top1": 0.556}},
                        "fusion_product": {"tail": {"val_macro_top1": {"gate": 0.879, "product": 0.898}}}}}
    lines = rr.tables(main, {})["validation-vs-test"].splitlines()
    assert lines[2:] == ["| tail | `tau_norm` | 55.6 | 46.4 [44.3, 48.1] | +9.2 |",  # two_stage chose nothing
                         "| tail | `fusion_product` | 89.8 | 81.2 | +8.6 |"]


def test_update_rewrites_only_the_marked_blocks_and_check_reports_stale_ones(tmp_path, monkeypatch, capsys):
    runs = {}
    for name, summary in (("cpu", MAIN), ("cpu-scratch", SCRATCH)):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        (runs[name] / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(rr, "MAIN", runs["cpu"])
    monkeypatch.setattr(rr, "SCRATCH", runs["cpu-scratch"])
    readme = tmp_path / "README.md"
    readme.write_text("intro 50.8\n<!-- results:transfer-tail -->\nold\n<!-- /results:transfer-tail -->\n"
                      "<!-- results:episodic -->\n\n<!-- /results:episodic -->\n"
                      "<!-- results:scratch-vs-pretrained -->\n\n<!-- /results:scratch-vs-pretrained -->\nend\n")
    assert rr.main(rr.get_args_parser().parse_args(["--readme", str(readme), "--check"])) == 1
    assert "stale README tables: transfer-tail, episodic, scratch-vs-pretrained" in capsys.readouterr().out
    assert rr.main(rr.get_args_parser().parse_args(["--readme", str(readme)])) == 0
    text = readme.read_text()
    assert text.startswith("intro 50.8\n<!-- results:transfer-tail -->\n| method |") and text.endswith("end\n")
    assert rr.blocks(text)["transfer-tail"] == rr.transfer_table("tail", MAIN, SCRATCH)
    assert rr.main(rr.get_args_parser().parse_args(["--readme", str(readme), "--check"])) == 0


def test_update_refuses_a_readme_without_the_block_a_table_needs():
    with pytest.raises(UserError, match="no <!-- results:episodic --> "):
        rr.update("no blocks here", {"episodic": "| x |"})


def test_tables_include_the_compare_output_for_the_methods_both_runs_report():
    block = rr.tables(MAIN, SCRATCH)["scratch-vs-pretrained"]
    assert block.startswith("#### transfer, tail classes (A = cpu-scratch, B = cpu; %, B - A in points)")
    assert "| two_stage | 42.4 | 45.0 | +2.6 | 90.0 | 90.0 | +0.0 |" in block
    assert "tau_norm" not in block and "| protonet | 77.3 | 71.6 | -5.7 |" in block
