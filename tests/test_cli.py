from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from fewshot.cli import get_args_parser, main, parse_size
from fewshot.data.layouts import LAYOUTS_HINT
from tests.conftest import HEADER, style_row


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


def _user_error(capsys, argv: list[str]) -> str:
    """Run ``fewshot argv``, check it failed as a user error (exit 2, one stderr line, no traceback, nothing on
    stdout) and return that line."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.startswith("fewshot: error: "), err
    assert "Traceback" not in err and out == ""
    return err.strip()


def test_summary_without_data_says_how_to_point_at_it(monkeypatch, capsys):
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)
    assert "pass --data DIR or set FEWSHOT_DATA" in _user_error(capsys, ["summary"])


def test_summary_with_bad_row_names_the_line_and_skip_reports_it(make_layout, capsys):
    root = make_layout([style_row(1, "Shirts"), "2,Men,broken", style_row(3, "Shirts")])
    line = _user_error(capsys, ["summary", "--data", str(root)])
    assert "styles.csv, line 3: 3 fields, expected 10" in line and "--skip-bad-rows" in line
    out = _run_json(capsys, "summary", "--data", str(root), "--json", "--skip-bad-rows", "--n-head", "1")
    assert out["n_bad_rows"] == 1 and out["n_rows"] == 2


# --- user errors: one line, exit 2; --debug shows the traceback -------------------------------------


def _good_rows() -> list[str]:
    return [style_row(1, "Shirts"), style_row(2, "Shirts", 2013)]


# (name, how to build argv from make_layout and tmp_path, a fragment of the one line the user gets)
USER_ERRORS = [
    ("missing folder", lambda make, tmp: ["summary", "--data", str(tmp / "nope")], "nope: no such folder"),
    ("no styles.csv", lambda make, tmp: ["summary", "--data", str(tmp)], "has no styles.csv; point --data"),
    ("malformed row", lambda make, tmp: ["summary", "--data", str(make([style_row(1, "Shirts"), "2,Men,x"]))],
     "line 3: 3 fields, expected 10: '2,Men,x'. Fix the row, or pass --skip-bad-rows"),
    ("bad --size", lambda make, tmp: ["cache", "--data", str(make(_good_rows())), "--size", "80"],
     "argument --size: size must look like HEIGHTxWIDTH, e.g. 80x60; got '80' (see `fewshot cache --help`)"),
    ("zero --size", lambda make, tmp: ["cache", "--data", str(make(_good_rows())), "--size", "0x60"],
     "argument --size: size must be positive"),
    ("no images/", lambda make, tmp: ["cache", "--data", str(_styles_only(tmp))], "no images/ folder"),
    ("header-only styles.csv", lambda make, tmp: ["cache", "--data", str(make([]))],
     "no usable products: styles.csv has a header but no data rows"),
    ("too many head classes", lambda make, tmp: ["summary", "--data", str(make(_good_rows())), "--n-head", "5"],
     "only 1 class has train (even-year) images; n_head=5 takes 5 for the head, and a tail needs more (6 in all); "
     "lower n_head (no n_head leaves a tail; fewshot summary --n-head"),
    ("zero --n-head", lambda make, tmp: ["summary", "--data", str(make(_good_rows())), "--n-head", "0"],
     "argument --n-head: must be >= 1, got 0"),
    ("unknown subcommand", lambda make, tmp: ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("synth: too few classes", lambda make, tmp: ["synth", "--out", str(tmp / "s"), "--classes", "2"],
     "n_classes=2 is out of range"),
    ("synth: into a foreign folder", lambda make, tmp: ["synth", "--out", str(_styles_only(tmp))],
     "is not empty and holds no SYNTHETIC marker"),
]


def _styles_only(tmp_path):
    folder = tmp_path / "styles-only"
    folder.mkdir(exist_ok=True)
    (folder / "styles.csv").write_text(HEADER + "\n" + style_row(1, "Shirts") + "\n")
    return folder


@pytest.mark.parametrize(("build", "fragment"), [case[1:] for case in USER_ERRORS], ids=[c[0] for c in USER_ERRORS])
def test_user_error_is_one_line_and_exit_code_2(make_layout, tmp_path, capsys, build, fragment):
    assert fragment in _user_error(capsys, build(make_layout, tmp_path))


def test_strict_cache_build_of_a_corrupt_image_is_a_user_error_naming_the_flag(make_layout, capsys):
    root = make_layout(_good_rows(), {2: b"not a jpeg"})
    assert main(["cache", "--data", str(root), "--strict"]) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]  # after the build's progress bar
    assert "Traceback" not in err and line.startswith("fewshot: error: ")
    assert "2.jpg: cannot decode" in line and "without --strict" in line


@pytest.mark.parametrize("how", ["flag before the subcommand", "flag after it", "FEWSHOT_DEBUG=1"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys, monkeypatch, how):
    argv = ["summary", "--data", str(tmp_path / "nope")]
    if how == "flag before the subcommand":
        argv = ["--debug", *argv]
    elif how == "flag after it":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("FEWSHOT_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "in data_dir" in err
    assert err.strip().splitlines()[-1].startswith("fewshot: error: ")


def test_internal_error_keeps_its_traceback(make_layout, monkeypatch):
    def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr("fewshot.data.dataset.FashionProducts.describe", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not turned into a one-line "error"
        main(["summary", "--data", str(make_layout(_good_rows())), "--n-head", "1"])


def test_python_dash_m_prints_one_error_line_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fewshot.cli", "summary", "--data", str(tmp_path / "nope")],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                               if k != "FEWSHOT_DEBUG"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"fewshot: error: {tmp_path / 'nope'}: no such folder; point --data (or "
                                        f"FEWSHOT_DATA) at {LAYOUTS_HINT}"]


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_help_documents_every_option_of_every_subcommand():
    undocumented = [f"{p.prog} {a.option_strings or a.dest}" for p in _all_parsers(get_args_parser())
                    for a in p._actions if not a.help or a.help == argparse.SUPPRESS]
    assert undocumented == []


def test_help_mentions_debug(capsys):
    assert main(["--help"]) == 0
    assert "--debug" in capsys.readouterr().out


# --- what summary and cache report ----------------------------------------------------------------


def _corrupt_layout(make_layout):
    rows = [style_row(i, "Shirts", 2012) for i in range(1, 7)] + [style_row(i, "Jeans", 2013) for i in range(7, 10)]
    return make_layout(rows, {1: b"", 4: b"not a jpeg", 8: b"\xff\xd8\xff\xe0 truncated"})


def test_summary_reports_corrupt_images_as_not_checked_until_a_cache_build_found_them(make_layout, capsys):
    root = _corrupt_layout(make_layout)
    before = _run_json(capsys, "summary", "--data", str(root), "--json", "--n-head", "1")
    assert before["n_corrupt_images"] is None  # not a 0: nothing was decoded
    checked = before["corrupt_images_checked"]
    assert "not checked" in checked and "fewshot cache --data" in checked
    assert main(["summary", "--data", str(root), "--n-head", "1"]) == 0
    assert "corrupt images: not checked" in capsys.readouterr().out
    assert main(["cache", "--data", str(root), "--size", "40x30"]) == 0
    assert "3 corrupt" in capsys.readouterr().out
    after = _run_json(capsys, "summary", "--data", str(root), "--json", "--n-head", "1")
    assert after["n_corrupt_images"] == 3 and "40x30 image cache" in after["corrupt_images_checked"]
    assert main(["summary", "--data", str(root), "--n-head", "1"]) == 0
    assert "corrupt images: 3 (found by the 40x30 image cache build" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", ["transfer", "episodic"])
def test_summary_counts_leave_out_the_corrupt_images_a_cache_build_found(protocol, make_layout, capsys):
    root = _corrupt_layout(make_layout)  # 9 rows: Shirts 1-6 (1, 4 corrupt), Jeans 7-9 (8 corrupt)
    # grey images 2, 3, 5, 6, 7, 9 are pixel copies: kept, so that only the corrupt ones change the counts
    options = ["--no-dedupe", *(["--n-head", "1"] if protocol == "transfer" else ["--min-images", "1"])]
    before = _run_json(capsys, "summary", "--data", str(root), "--json", "--protocol", protocol, *options)
    assert main(["cache", "--data", str(root), "--size", "40x30"]) == 0
    capsys.readouterr()
    after = _run_json(capsys, "summary", "--data", str(root), "--json", "--protocol", protocol, *options)
    assert (before["n_images"], after["n_images"], after["n_corrupt_images"]) == (9, 6, 3)
    if protocol == "transfer":  # Shirts: even-year train images; Jeans: odd-year test images
        assert (before["n_head_train"], after["n_head_train"]) == (6, 4)
        assert after["excluded"]["Jeans"] == "only in test (odd) years: 0 train, 2 test images"
    else:
        assert before["n_background_images"] + before["n_evaluation_images"] == 9
        assert after["n_background_images"] + after["n_evaluation_images"] == 6
    assert main(["summary", "--data", str(root), "--protocol", protocol, *options]) == 0
    assert "corrupt images: 3 (found by the 40x30 image cache build" in capsys.readouterr().out


def test_summary_drops_pixel_copies_once_a_cache_exists_unless_no_dedupe(make_layout, capsys):
    red, blue = (200, 0, 0), (0, 0, 200)
    rows = [style_row(i, "Shirts", 2012) for i in range(1, 5)] + [style_row(i, "Jeans", 2013) for i in range(5, 8)]
    rows.append(style_row(8, "Jeans", 2012))
    # test image 5 copies train image 1 (of another class); test images 6 and 7 copy each other
    root = make_layout(rows, {1: red, 5: red, 6: blue, 7: blue, 8: (0, 200, 0)})
    before = _run_json(capsys, "summary", "--data", str(root), "--json", "--n-head", "1")
    assert before["n_duplicate_groups"] is None and "not checked" in before["duplicates_checked"]
    assert before["deduplicated"] is False and before["n_tail_test"] == 3 and "n_dropped_test" not in before
    assert main(["summary", "--data", str(root), "--n-head", "1"]) == 0
    assert "duplicate images: not checked" in capsys.readouterr().out
    assert main(["cache", "--data", str(root), "--size", "40x30"]) == 0
    capsys.readouterr()
    after = _run_json(capsys, "summary", "--data", str(root), "--json", "--n-head", "1")
    # grey 2, 3, 4 are copies too: groups {1, 5}, {2, 3, 4}, {6, 7}
    assert (after["n_duplicate_groups"], after["n_duplicate_files"]) == (3, 7)
    assert after["n_duplicate_cross_class_groups"] == 1
    assert "40x30 image cache" in after["duplicates_checked"] and after["deduplicated"] is True
    assert (after["n_tail_test"], after["n_dropped_test"], after["n_tail_test_dropped"]) == (2, 1, 1)
    kept = _run_json(capsys, "summary", "--data", str(root), "--json", "--n-head", "1", "--no-dedupe")
    assert kept["deduplicated"] is False and kept["n_tail_test"] == 3 and kept["n_duplicate_groups"] == 3
    episodic = _run_json(capsys, "summary", "--data", str(root), "--json", "--protocol", "episodic",
                         "--min-images", "1")
    assert (episodic["n_dropped_duplicates"], episodic["n_evaluation_images"]) == (4, 4)  # Shirts 4 -> 2, Jeans 4 -> 2
    assert (episodic["n_evaluation_dropped"], episodic["n_background_dropped"]) == (4, 0)
    assert main(["summary", "--data", str(root), "--n-head", "1"]) == 0
    assert "duplicate images: 3 groups of pixel-identical images, 7 files" in capsys.readouterr().out


def test_cache_skip_bad_rows_leaves_malformed_rows_out_and_reports_them(make_layout, capsys):
    root = make_layout([style_row(1, "Shirts"), "2,Men,broken", style_row(3, "Jeans")])
    assert "line 3" in _user_error(capsys, ["cache", "--data", str(root)])
    assert main(["cache", "--data", str(root), "--skip-bad-rows"]) == 0
    out, err = capsys.readouterr()
    assert "2 images of 80x60, 0 corrupt" in out
    assert "note: " in err and "skipped 1 malformed row(s): line 3: 3 fields" in err


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
