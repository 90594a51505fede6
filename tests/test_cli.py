from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fewshot.cli import main, parse_size
from tests.conftest import style_row


def _run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_json_gives_transfer_counts(make_layout, capsys):
    rows = [style_row(i, "Shirts", 2012) for i in range(1, 6)] + [style_row(i, "Jeans", 2011) for i in range(6, 9)]
    rows += [style_row(9, "Jeans", 2014), style_row(10, "Socks", 2015), style_row(11, "Belts", "")]
    root = make_layout(rows, missing=(5,))
    out = _run_json(capsys, "summary", "--data", str(root), "--protocol", "transfer", "--json", "--n-head", "1")
    assert (out["n_rows"], out["n_images"], out["n_missing_images"]) == (11, 10, 1)
    assert out["head"] == ["Shirts"] and out["tail"] == ["Jeans"]
    assert (out["n_head_train"], out["n_head_test"], out["n_tail_train"], out["n_tail_test"]) == (4, 0, 1, 3)
    assert set(out["excluded"]) == {"Socks", "Belts"}
    assert out["n_no_year"] == 1 and out["synthetic"] is False


def test_summary_json_gives_episodic_lists(make_layout, capsys):
    rows = [style_row(i, "Jeans") for i in range(1, 21)] + [style_row(i, "Cufflinks") for i in range(21, 30)]
    out = _run_json(capsys, "summary", "--data", str(make_layout(rows)), "--protocol", "episodic", "--json")
    assert out["evaluation"] == ["Jeans"] and out["background"] == []
    assert "9 images" in out["excluded"]["Cufflinks"]


def test_summary_table_prints_every_class_with_role(make_layout, capsys):
    rows = [style_row(i, "Shirts", 2012) for i in range(1, 4)] + [style_row(4, "Jeans", 2010), style_row(5, "Caps", 2011)]
    assert main(["summary", "--data", str(make_layout(rows)), "--n-head", "1"]) == 0
    out = capsys.readouterr().out
    for line in ("Shirts", "Jeans", "Caps"):
        assert line in out
    assert "only in test" in out and "n_head_train: 3" in out


def test_summary_without_data_says_how_to_point_at_it(monkeypatch):
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)
    with pytest.raises(SystemExit, match="pass --data DIR or set FEWSHOT_DATA"):
        main(["summary"])


def test_summary_with_bad_row_names_the_line_and_skip_reports_it(make_layout, capsys):
    root = make_layout([style_row(1, "Shirts"), "2,Men,broken", style_row(3, "Shirts")])
    from fewshot.data.styles import StylesFormatError
    with pytest.raises(StylesFormatError, match="line 3"):
        main(["summary", "--data", str(root)])
    out = _run_json(capsys, "summary", "--data", str(root), "--json", "--skip-bad-rows", "--n-head", "1")
    assert out["n_bad_rows"] == 1 and out["n_rows"] == 2


@pytest.mark.parametrize(("text", "size"), [("80x60", (80, 60)), ("224X224", (224, 224))])
def test_parse_size_reads_height_by_width(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["80", "ax60", "0x60"])
def test_parse_size_rejects_bad_values(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_console_script_entry_point_runs(make_layout):
    root = make_layout([style_row(1, "Shirts"), style_row(2, "Shirts", 2013)])
    done = subprocess.run([sys.executable, "-m", "fewshot.cli", "summary", "--data", str(root), "--json",
                           "--n-head", "1"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["n_head_test"] == 1


@pytest.mark.realdata
def test_real_summary_json_prints_the_published_counts(real_data, capsys):
    out = _run_json(capsys, "summary", "--data", str(real_data), "--protocol", "transfer", "--json")
    assert (out["n_rows"], out["n_images"], out["n_missing_images"]) == (44_446, 44_072, 374)
    assert (out["n_head_train"], out["n_head_test"]) == (18_548, 14_004)
    assert (len(out["tail"]), out["n_tail_train"], out["n_tail_with_test"], out["n_tail_test"]) == (86, 5_207, 67, 4_138)
    assert out["head"][:3] == ["Tshirts", "Watches", "Casual Shoes"] and len(out["head"]) == 20
