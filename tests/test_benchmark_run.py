"""The benchmark runner end to end on the synthetic smoke config: files, determinism, kill and resume."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmarks import plots
from benchmarks.run import get_args_parser, main

SMOKE = Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "smoke.toml"
EPISODIC_KEYS = {"2w1s", "2w5s", "5w1s", "5w5s"}  # the smoke config's settings (synthetic data has < 15 classes)
METHODS = {"two_stage", "centroid_stage1", "centroid_stage2", "protonet", "protonet_all", "baseline_centroid"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.run", "--no-progress", *args]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    # A subprocess, like the killed run below: both then use torch's default thread count, and CPU
    # kernels give bit-identical results only for the same thread count.
    out = tmp_path_factory.mktemp("runs") / "smoke"
    subprocess.run(_command("--config", str(SMOKE), "--out", str(out)), check=True, capture_output=True,
                   timeout=600)
    return out


def test_smoke_run_writes_every_result_file(smoke_run):
    for name in ("config.resolved.toml", "run.json", "per_class.csv", "summary.json", "summary.md",
                 "per_class_vs_train.png", "shots.png", "episodic.png"):
        assert (smoke_run / name).is_file(), name
    for png in smoke_run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(smoke_run.glob(".*.tmp*")), "a temporary file was left behind"


def test_smoke_summary_json_has_the_documented_structure(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["synthetic"] is True
    assert set(summary["transfer"]["head"]) == METHODS - {"baseline_centroid"}
    for method, row in summary["transfer"]["tail"].items():
        assert {"macro_top1", "macro_top5", "micro_top1", "micro_top5", "buckets"} <= set(row)
        assert set(row["buckets"]) == {"many", "medium", "few"}
        assert 0.0 <= row["macro_top1"] <= row["macro_top5"] <= 1.0
    assert set(summary["episodic"]) == {"baseline_centroid", "protonet"}
    for row in summary["episodic"].values():
        assert set(row) == EPISODIC_KEYS
        assert all(0 < r["mean"] <= 1 and r["ci95"] > 0 for r in row.values())
        assert row["2w5s"]["mean"] > 0.5  # above 2-way chance even after the tiny smoke training
    assert set(summary["shots"]) == {"centroid_stage1", "centroid_stage2", "protonet", "protonet_all"}
    assert set(summary["shots"]["protonet"]) == {"1", "5", "all"}


def test_smoke_per_class_csv_has_every_class_and_method_column(smoke_run):
    table = pd.read_csv(smoke_run / "per_class.csv")
    assert list(table.columns[:5]) == ["class", "group", "n_train", "n_test", "bucket"]
    for method in METHODS:
        assert f"{method}/top1" in table.columns and f"{method}/top5" in table.columns
    assert (table["group"] == "head").sum() == 20
    assert set(table["group"]) == {"head", "tail", "evaluation"}
    summary = json.loads((smoke_run / "summary.json").read_text())
    tail = table[(table["group"] == "tail") & (table["n_test"] > 0)]
    # the table and the summary come from the same evaluation: the macro is the mean of the rows
    assert tail["two_stage/top1"].mean() == pytest.approx(summary["transfer"]["tail"]["two_stage"]["macro_top1"])
    assert tail["bucket"].isin(["many", "medium", "few"]).all()


def test_smoke_run_record_and_markdown_say_what_ran(smoke_run):
    run = json.loads((smoke_run / "run.json").read_text())
    assert run["status"] == "finished" and run["seed"] == 0 and run["git_revision"]
    assert run["dataset"]["synthetic"] is True and len(run["dataset"]["image_cache_key"]) == 64
    phases = {"two_stage", "protonet_train", "background_train", "protonet_bg_train", "eval_episodic_protonet"}
    assert phases <= set(run["phase_seconds"])
    assert run["packages"]["torch"]
    config = tomllib.loads((smoke_run / "config.resolved.toml").read_text())
    assert config["name"] == "smoke" and config["data"]["source"] == "synthetic"
    md = (smoke_run / "summary.md").read_text()
    assert "SYNTHETIC DATA" in md and "seed, as published" in md and "78.8" in md


def test_killed_smoke_run_resumes_to_the_same_results(smoke_run, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_command("--config", str(SMOKE), "--out", str(out)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trigger = out / "two_stage" / "stage2" / "last.pt"  # mid-way: stage 2 has finished an epoch
    deadline = time.monotonic() + 300
    while not trigger.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert trigger.exists(), "the run ended before reaching the kill point"
    assert not (out / "summary.json").exists()
    stage1 = out / "two_stage" / "stage1" / "best.pt"
    stage1_written = stage1.stat().st_mtime_ns
    done = subprocess.run(_command("--resume", str(out)), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert stage1.stat().st_mtime_ns == stage1_written  # the finished stage 1 was reused, not retrained
    assert (out / "per_class.csv").read_bytes() == (smoke_run / "per_class.csv").read_bytes()
    first = json.loads((smoke_run / "summary.json").read_text())
    again = json.loads((out / "summary.json").read_text())
    assert first == again
    assert json.loads((out / "run.json").read_text())["resumed"] is True


def test_resume_accepts_a_fresh_copy_of_the_same_images_and_refuses_changed_ones(smoke_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke_run, out)
    (out / "summary.json").unlink()
    for jpg in (out / "data" / "images").iterdir():
        os.utime(jpg, ns=(10**18, 10**18))
    main(get_args_parser().parse_args(["--resume", str(out), "--no-progress"]))
    assert (out / "per_class.csv").read_bytes() == (smoke_run / "per_class.csv").read_bytes()
    assert set(json.loads((out / "run.json").read_text())["reused_phases"]) >= {"two_stage", "eval_protonet"}
    victim = next((out / "data" / "images").iterdir())
    Image.new("RGB", (60, 80), (1, 2, 3)).save(victim)
    with pytest.raises(SystemExit, match="images at .* changed since this run started"):
        main(get_args_parser().parse_args(["--resume", str(out), "--no-progress"]))


def test_plots_redraw_from_a_finished_runs_files(smoke_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke_run, out)
    for png in out.glob("*.png"):
        png.unlink()
    written = plots.main(plots.get_args_parser().parse_args([str(out)]))
    assert sorted(written) == ["episodic.png", "per_class_vs_train.png", "shots.png"]
    assert all((out / name).stat().st_size > 10_000 for name in written)
    with pytest.raises(SystemExit, match="not a finished run: no summary.json"):
        plots.main(plots.get_args_parser().parse_args([str(tmp_path)]))


@pytest.mark.parametrize("method", plots.KNOWN_METHODS)
def test_a_method_keeps_its_colour_and_marker_whatever_else_is_plotted(method):
    assert plots.method_style(method, [method]) == plots.method_style(method, ["zz_new", *plots.KNOWN_METHODS])


def test_methods_in_one_plot_get_distinct_colours():
    methods = [*plots.KNOWN_METHODS, "my_new_method"]
    assert len({plots.method_style(m, methods)["color"] for m in methods}) == len(methods)


def test_runner_refuses_to_overwrite_a_run_or_to_resume_with_other_settings(smoke_run, tmp_path):
    with pytest.raises(SystemExit, match="not empty; pass --resume"):
        main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(smoke_run)]))
    with pytest.raises(SystemExit, match="drop the overrides"):
        main(get_args_parser().parse_args(["--resume", str(smoke_run), "stage1.epochs=9"]))
    with pytest.raises(SystemExit, match="no config.resolved.toml"):
        main(get_args_parser().parse_args(["--resume", str(tmp_path)]))


def test_runner_rejects_unknown_config_keys(tmp_path):
    from fewshot.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(tmp_path / "x"),
                                           "stage1.epochz=2"]))


@pytest.mark.parametrize("name", ["smoke", "synthetic", "cpu", "gpu"])
def test_shipped_configs_load_with_their_documented_settings(name):
    from benchmarks.config import METHODS as ALL
    from benchmarks.config import BenchmarkConfig
    from fewshot.config import load_config

    cfg = load_config(BenchmarkConfig, SMOKE.parent / f"{name}.toml")
    assert cfg.name == name and set(cfg.methods) == set(ALL)
    assert cfg.train("stage2").class_weights == "inverse"  # the seed's class-weighted stage 2
    assert {cfg.train(t).seed for t in ("stage1", "stage2", "background", "protonet")} == {cfg.seed}
    if name in ("cpu", "gpu"):
        assert cfg.data.source == "path" and cfg.evaluation.episodes == 1000
        assert set(cfg.evaluation.ways) == {2, 5, 15} and set(cfg.evaluation.shots) == {1, 5}
    else:
        assert cfg.data.source == "synthetic"
