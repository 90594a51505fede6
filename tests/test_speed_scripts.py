"""The speed scripts run end to end at tiny sizes, and write into benchmarks/results/ only when told to."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.studies import sampler_speed, train_speed
from benchmarks.studies.outdir import output_folder

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
TINY_TRAIN = ["--backbone", "conv4", "--height", "32", "--width", "24", "--batch-size", "8", "--steps", "2",
              "--rounds", "2", "--absolute", "conv4", "--absolute-steps", "1"]
TINY_SAMPLER = ["--datasets", "11k", "--repeats", "1", "--seconds", "0.01"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def committed_tables() -> dict[Path, bytes]:
    """The committed tables' bytes before the test; compare afterwards."""
    return {p: p.read_bytes() for p in RESULTS.glob("*.md")}


def test_train_speed_writes_its_table_into_the_given_folder(tmp_path, capsys):
    result = train_speed.main(train_speed.get_args_parser().parse_args([*TINY_TRAIN, "--out", str(tmp_path / "o")]))
    text = (tmp_path / "o" / "train_speed.md").read_text()
    assert result["path"] == tmp_path / "o" / "train_speed.md"
    stdout = capsys.readouterr().out
    assert stdout.rstrip().endswith(f"ratio={result['ratio']:.3f}") and f"ratio={result['ratio']:.3f}" in text
    assert len(result["rounds"]) == 2 and all(r["trainer"] > 0 and r["pure"] > 0 for r in result["rounds"])
    assert "| conv4 |" in text and "## Machine" in text


def test_train_speed_by_default_writes_a_fresh_run_folder_not_the_committed_table(tmp_path, monkeypatch,
                                                                                    committed_tables):
    monkeypatch.chdir(tmp_path)
    result = train_speed.main(train_speed.get_args_parser().parse_args(TINY_TRAIN))
    (written,) = (tmp_path / "runs").glob("train_speed-*/train_speed.md")
    assert result["path"].resolve() == written.resolve() and "ratio=" in written.read_text()
    assert {p: p.read_bytes() for p in RESULTS.glob("*.md")} == committed_tables


def test_sampler_speed_by_default_writes_a_fresh_run_folder_not_the_committed_table(tmp_path, monkeypatch, capsys,
                                                                                    committed_tables):
    monkeypatch.chdir(tmp_path)
    sampler_speed.main(sampler_speed.get_args_parser().parse_args(TINY_SAMPLER))
    (written,) = (tmp_path / "runs").glob("sampler_speed-*/sampler_speed.md")
    text = written.read_text()
    assert "| index-only | fewshot: iterate the sampler |" in text
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == text.rstrip().splitlines()[-1]
    assert text.rstrip().splitlines()[-1].startswith("ratio_vs_best_anchor=")
    assert {p: p.read_bytes() for p in RESULTS.glob("*.md")} == committed_tables


def test_sampler_speed_writes_into_the_given_folder(tmp_path):
    sampler_speed.main(sampler_speed.get_args_parser().parse_args([*TINY_SAMPLER, "--out", str(tmp_path / "o")]))
    assert (tmp_path / "o" / "sampler_speed.md").is_file()


def test_empty_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_folder("train_speed", "") is None
    assert list(tmp_path.iterdir()) == []
