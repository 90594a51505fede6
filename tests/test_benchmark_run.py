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
import torch
from PIL import Image

from benchmarks.registry.methods import (
    BenchmarkMethod,
    available_method_names,
    get_method,
    method_names,
    method_style,
    register_method,
    registered,
    resolve_config,
)
from benchmarks.reports import plots
from benchmarks.run import get_args_parser, main
from fewshot.methods import FewShotClassifier
from fewshot.utils.errors import UserError, run_cli

SMOKE = Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "smoke.toml"
EPISODIC_KEYS = {"2w1s", "2w5s", "5w1s", "5w5s"}  # the smoke config's settings (synthetic data has < 15 classes)
# The smoke config runs every registered method; what each protocol must report follows from the registry.
METHODS = set(available_method_names())
TRANSFER = {m for m in METHODS if get_method(m).transfer}
IN_GROUP = {g: {m for m in TRANSFER if g in get_method(m).groups()} for g in ("head", "tail", "all")}
EPISODIC = {m for m in METHODS if get_method(m).episodic}
KSHOT = {m for m in IN_GROUP["tail"] if get_method(m).classifier and get_method(m).kshot}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.run", "--no-progress", *args]


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
    for group in ("head", "tail", "all"):
        assert set(summary["transfer"][group]) == IN_GROUP[group], group
        for method, row in summary["transfer"][group].items():
            assert {"macro_top1", "macro_top5", "micro_top1", "micro_top5", "buckets"} <= set(row)
            assert set(row["buckets"]) == {"many", "medium", "few"}
            assert 0.0 <= row["macro_top1"] <= row["macro_top5"] <= 1.0
    for row in summary["transfer"]["all"].values():
        assert 0.0 <= row["head_macro_top1"] <= 1.0 and 0.0 <= row["tail_macro_top1"] <= 1.0
    assert {"two_stage_joint", "crt", "tau_norm", "logit_adjust"} <= IN_GROUP["all"]
    assert "two_stage" not in IN_GROUP["all"]  # two classifiers: it cannot score every class at once
    assert set(summary["choices"]) >= {"crt", "tau_norm", "logit_adjust"}
    assert summary["duplicates"]["dedupe"] is True
    assert set(summary["episodic"]) == EPISODIC
    for row in summary["episodic"].values():
        assert set(row) == EPISODIC_KEYS
        assert all(0 < r["mean"] <= 1 and r["ci95"] > 0 for r in row.values())
        assert row["2w5s"]["mean"] > 0.5  # above 2-way chance even after the tiny smoke training
    assert set(summary["shots"]) == KSHOT
    assert set(summary["shots"]["protonet"]) == {"1", "5", "all"}
    assert {"maml", "anil"} <= EPISODIC


def test_smoke_summary_reports_text_and_fusion_on_names_without_their_class_word(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    for group in ("head", "tail", "all"):
        assert {"text", "fusion_gate", "fusion_product"} <= set(summary["transfer"][group])
        sub = summary["name_subsets"][group]
        # the synthetic names: ~70% end with their class word, the rest a line word or nothing
        assert 0.5 < sub["share_with_class_word"] < 0.9
        assert sub["n_without_class_word"] == round(sub["n_test"] * (1 - sub["share_with_class_word"]))
        assert {"text", "fusion_gate", "fusion_product", "centroid_stage2"} <= set(sub["methods"])
        for row in sub["methods"].values():
            assert row["n"] == sub["n_without_class_word"] and 0 <= row["macro_top1"] <= row["macro_top5"] <= 1
        chosen = summary["choices"]["fusion_product"][group]
        assert chosen["image_temperature"] > 0 and chosen["text_temperature"] > 0 and 0 <= chosen["threshold"] <= 1
        # temperature scaling never raises the validation NLL it was fitted on
        assert chosen["val_nll"]["text_scaled"] <= chosen["val_nll"]["text"]
    md = (smoke_run / "summary.md").read_text()
    assert "## Test images whose product name does not contain their class name" in md


def test_smoke_per_class_csv_has_every_class_and_method_column(smoke_run):
    table = pd.read_csv(smoke_run / "per_class.csv")
    assert list(table.columns[:5]) == ["class", "group", "n_train", "n_test", "bucket"]
    for method in METHODS:
        assert f"{method}/top1" in table.columns and f"{method}/top5" in table.columns
    assert (table["group"] == "head").sum() == 20
    assert set(table["group"]) == {"head", "tail", "all", "evaluation"}
    joint = table[table["group"] == "all"]
    assert joint["class"].tolist() == table[table["group"].isin(["head", "tail"])]["class"].tolist()
    summary = json.loads((smoke_run / "summary.json").read_text())
    tail = table[(table["group"] == "tail") & (table["n_test"] > 0)]
    # the table and the summary come from the same evaluation: the macro is the mean of the rows
    assert tail["two_stage/top1"].mean() == pytest.approx(summary["transfer"]["tail"]["two_stage"]["macro_top1"])
    assert tail["bucket"].isin(["many", "medium", "few"]).all()
    scored = joint[joint["n_test"] > 0]
    for method, row in summary["transfer"]["all"].items():
        assert scored[f"{method}/top1"].mean() == pytest.approx(row["macro_top1"])
        head = scored[scored["class"].isin(table[table["group"] == "head"]["class"])]
        assert head[f"{method}/top1"].mean() == pytest.approx(row["head_macro_top1"])


def test_smoke_run_record_and_markdown_say_what_ran(smoke_run):
    run = json.loads((smoke_run / "run.json").read_text())
    assert run["status"] == "finished" and run["seed"] == 0 and run["git_revision"]
    assert run["dataset"]["synthetic"] is True and len(run["dataset"]["image_cache_key"]) == 64
    phases = {"stage1", "stage2", "protonet_train", "background_train", "protonet_bg_train", "eval_episodic_protonet"}
    assert phases <= set(run["phase_seconds"]) <= set(run["phase_keys"])  # frozen weights have a key, no phase
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
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] is True and "stage1" in run["reused_phases"]
    # this attempt's clock misses the reused phases: the summary gives their total beside it
    total = sum(run["phase_seconds"].values()) / 60
    assert (f"wall time {run['wall_seconds'] / 60:.1f} min (this attempt, resumed; its phases took {total:.1f} min "
            f"across every attempt, {len(run['reused_phases'])} of them finished by an earlier one)"
            in (out / "summary.md").read_text())
    assert "(this attempt" not in (smoke_run / "summary.md").read_text()


def test_resume_accepts_a_fresh_copy_of_the_same_images_and_refuses_changed_ones(smoke_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke_run, out)
    (out / "summary.json").unlink()
    for jpg in (out / "data" / "images").iterdir():
        os.utime(jpg, ns=(10**18, 10**18))
    main(get_args_parser().parse_args(["--resume", str(out), "--no-progress"]))
    assert (out / "per_class.csv").read_bytes() == (smoke_run / "per_class.csv").read_bytes()
    assert set(json.loads((out / "run.json").read_text())["reused_phases"]) >= {"stage1", "stage2", "eval_protonet"}
    victim = next((out / "data" / "images").iterdir())
    Image.new("RGB", (60, 80), (1, 2, 3)).save(victim)
    record, config = (out / "run.json").read_bytes(), (out / "config.resolved.toml").read_bytes()
    # named: the folder that held the run's images before the copy's (which was read last, and has changed)
    with pytest.raises(UserError, match=f"images at {out / 'data'} are not those this run started with .*Point "
                                        f"--data at the run's dataset \\({smoke_run / 'data'}\\)"):
        main(get_args_parser().parse_args(["--resume", str(out), "--no-progress", "evaluation.kshot_draws=1"]))
    # refused before it started: the finished run's record and config are as they were, so it is refused again
    assert (out / "run.json").read_bytes() == record and (out / "config.resolved.toml").read_bytes() == config
    assert _run_json(out)["status"] == "finished" and _run_json(out)["note"].startswith("resumed")
    assert _run_json(out)["dataset"]["roots"] == [str(smoke_run / "data"), str(out / "data")]
    with pytest.raises(UserError, match="images at .* are not those this run started with"):
        main(get_args_parser().parse_args(["--resume", str(out), "--no-progress"]))


def test_plots_redraw_from_a_finished_runs_files(smoke_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke_run, out)
    for png in out.glob("*.png"):
        png.unlink()
    written = plots.main(plots.get_args_parser().parse_args([str(out)]))
    assert sorted(written) == ["buckets.png", "cd_all.png", "cd_head.png", "cd_tail.png", "episodic.png",
                               "intervals.png", "per_class_heatmap.png", "per_class_vs_train.png", "shots.png"]
    assert sorted(written) == sorted(p.name for p in smoke_run.glob("*.png"))  # what the run drew
    assert all((out / name).stat().st_size > 10_000 for name in written)
    with pytest.raises(SystemExit, match="not a finished run: no summary.json"):
        plots.main(plots.get_args_parser().parse_args([str(tmp_path)]))


def test_registered_methods_get_distinct_colours_and_markers_fixed_by_the_registry():
    styles = [method_style(m) for m in method_names()]
    assert len({s["color"] for s in styles}) == len(styles) and len({s["marker"] for s in styles}) == len(styles)
    assert method_style("an_old_runs_method") == method_style("an_old_runs_method")  # stable, not hash-seeded


def test_runner_refuses_to_overwrite_a_run_or_to_resume_with_other_training_settings(smoke_run, tmp_path):
    with pytest.raises(UserError, match="holds a run with finished phases; pass --resume"):
        main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(smoke_run)]))
    with pytest.raises(UserError, match=r"change finished training phases \(stage1, stage2, stage2_joint, protonet_train, "
                                         r"protonet_all_train\): "
                                         "stage1.epochs: was 2, now 9"):
        main(get_args_parser().parse_args(["--resume", str(smoke_run), "stage1.epochs=9"]))
    with pytest.raises(UserError, match="no config.resolved.toml"):
        main(get_args_parser().parse_args(["--resume", str(tmp_path)]))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a benchmark run folder"):
        main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(tmp_path)]))


def test_resume_with_an_evaluation_override_recomputes_the_evaluations_only(smoke_run, tmp_path):
    out = tmp_path / "more"
    shutil.copytree(smoke_run, out)
    main(get_args_parser().parse_args(["--resume", str(out), "--no-progress", "evaluation.kshot_draws=1"]))
    assert _computed(out) == {p.partition("@")[0] for p in _run_json(smoke_run)["phase_seconds"] if p.startswith("eval_")}
    run = _run_json(out)
    assert run["changed_on_resume"] == ["evaluation.kshot_draws: was 2, now 1"]
    assert "evaluation.kshot_draws=1" in run["overrides"]
    assert "with `evaluation.kshot_draws=1`" in (out / "summary.md").read_text().splitlines()[0]
    assert json.loads((out / "summary.json").read_text())["shots"]["protonet"]["1"]["draws"] == 1


@pytest.mark.parametrize("override, message", [
    ("evaluation.ways=[0]", "evaluation.ways=[0] must be distinct values >= 2"),
    ("evaluation.episodes=0", "evaluation.episodes=0 must be >= 1"),
    ("device=tpu", "device='tpu' is not one of auto, cpu, cuda, cuda:N"),
    ("methods=[\"protonett\"]", "unknown method(s) ['protonett']; known: two_stage"),
    ("backbone=resnet19", "backbone='resnet19' is unknown"),
    ("fusion.image_method=two_stage", "fusion.image_method='two_stage' must be an image-only feature-based"),
    ("text.encoder=bert", "text.encoder"),
    ("weights=nope", "weights='nope' is not \"none\", \"imagenet\" or an existing checkpoint file"),
    ("weights=imagenet", "weights=\"imagenet\": backbone 'conv4' has no ImageNet weights"),
    ("reference_backbone=conv4", "reference_backbone='conv4' has no ImageNet weights, and centroid_imagenet"),
])
def test_config_mistakes_get_one_line_and_exit_2_before_any_work(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli(lambda argv: main(get_args_parser().parse_intermixed_args(argv)),
                   ["--config", "smoke", "--out", str(out), override], prog="benchmarks.run")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("benchmarks.run: error:") and message in err
    assert not out.exists()  # refused before the folder was made


def test_a_config_too_wide_for_the_data_fails_before_training_and_says_so_in_run_json(tmp_path):
    out = tmp_path / "wide"
    with pytest.raises(UserError, match="evaluation.ways=\\[2, 50\\]: the data has 12 evaluation classes"):
        main(get_args_parser().parse_args(["--config", "smoke", "--out", str(out), "--no-progress",
                                           "evaluation.ways=[2, 50]"]))
    run = _run_json(out)
    assert run["status"] == "failed" and "UserError" in run["error"] and not run["phase_seconds"]
    # the folder holds no finished phase: a corrected start may use it
    from benchmarks.run import _prepare

    cfg, again, previous = _prepare(get_args_parser().parse_args(["--config", "smoke", "--out", str(out)]))
    assert again == out and previous == {}


@pytest.mark.parametrize("config", ["cpu", str(SMOKE.parent / "synthetic.toml")])
def test_resume_with_another_config_is_refused_before_anything_is_written(config, smoke_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(smoke_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = run_cli(lambda argv: main(get_args_parser().parse_intermixed_args(argv)),
                   ["--config", config, "--resume", str(out), "--no-progress"], prog="benchmarks.run")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--config {config} with --resume {out}: the run's config is 'smoke'" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("data", ["/nonexistent", "/nonexistent/manifest.csv"])
def test_a_dataset_that_is_not_there_is_refused_before_the_run_folder_is_made(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli(lambda argv: main(get_args_parser().parse_intermixed_args(argv)),
                   ["--config", "smoke", "--data", data, "--out", str(out)], prog="benchmarks.run")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert "an image folder (one subfolder of images per class), or a CSV manifest (columns path,label)" in err
    assert "styles.csv and images/" in err


def test_config_names_resolve_to_the_shipped_configs_and_unknown_ones_list_them():
    from benchmarks.run import config_path

    assert config_path("smoke") == SMOKE
    with pytest.raises(UserError, match="not a shipped config .*cpu.*smoke"):
        config_path("smokey")


def test_the_runner_command_line_prints_no_traceback_for_a_user_error(tmp_path):
    done = subprocess.run(_command("--config", "smoke", "--out", str(tmp_path / "x"), "stage1.epochz=2"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("benchmarks.run: error: override stage1.epochz=2")
    debug = subprocess.run(_command("--debug", "--config", "smoke", "--out", str(tmp_path / "x"), "stage1.epochz=2"),
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_runner_rejects_unknown_config_keys(tmp_path):
    from fewshot.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(tmp_path / "x"),
                                           "stage1.epochz=2"]))


@pytest.mark.parametrize("name", ["smoke", "synthetic", "cpu", "cpu-scratch", "gpu"])
def test_shipped_configs_load_with_their_documented_settings(name):
    from benchmarks.config import BenchmarkConfig
    from fewshot.config import load_config

    cfg = resolve_config(load_config(BenchmarkConfig, SMOKE.parent / f"{name}.toml"))
    assert cfg.name == name
    if name == "cpu-scratch":  # the methods of its committed run, from scratch
        assert cfg.weights == "none" and "centroid_imagenet" not in cfg.methods
    else:
        assert set(cfg.methods) == set(available_method_names())
    assert cfg.train("stage2").class_weights == "inverse"  # the seed's class-weighted stage 2
    assert {cfg.train(t).seed for t in ("stage1", "stage2", "background", "protonet")} == {cfg.seed}
    if name in ("cpu", "cpu-scratch", "gpu"):
        assert cfg.data.source == "path" and cfg.evaluation.episodes == 1000
        assert set(cfg.evaluation.ways) == {2, 5, 15} and set(cfg.evaluation.shots) == {1, 5}
    else:
        assert cfg.data.source == "synthetic"


def _run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _computed(out: Path) -> set[str]:
    """Phases this attempt computed itself (neither resumed nor imported), each seed's ``<phase>@seed<n>`` as
    its phase (the smoke config runs the methods on cached features once per seed)."""
    run = _run_json(out)
    return {p.partition("@")[0] for p in set(run["phase_seconds"]) - set(run["reused_phases"])}


def test_adding_a_method_to_a_finished_run_computes_only_that_methods_phases(tmp_path):
    first = tmp_path / "first"
    main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(first), "--no-progress",
                                       "methods=[\"centroid_stage1\"]"]))
    assert _computed(first) == {"stage1", "eval_centroid_stage1"}
    second = tmp_path / "second"
    main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(second), "--no-progress",
                                       "--reuse", str(first), "methods=[\"centroid_stage1\", \"centroid_stage2\"]"]))
    assert _computed(second) == {"stage2", "eval_centroid_stage2"}
    assert _run_json(second)["imported_phases"] == {"stage1": str(first), "eval_centroid_stage1": str(first),
                                                    "eval_centroid_stage1@seed1": str(first)}
    # the imported stage-1 checkpoint came along, so stage 2 could start from it
    assert (second / "two_stage" / "stage1" / "best.pt").is_file()
    a, b = (pd.read_csv(d / "per_class.csv") for d in (first, second))
    assert a["centroid_stage1/top1"].equals(b["centroid_stage1/top1"])
    assert b["centroid_stage2/top1"].notna().any()


def test_a_changed_upstream_setting_recomputes_exactly_what_depends_on_it(smoke_run, tmp_path):
    out = tmp_path / "changed"
    main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(out), "--no-progress",
                                       "--reuse", str(smoke_run), "stage2.epochs=1"]))
    # stage 2 feeds the two-stage tail scores (read from the stage-2 phase) and the feature methods scored on
    # it (centroid_stage2; the long-tail heads' tail group), not stage2_joint: that starts from stage 1
    on_stage2 = {f"eval_{m}" for m in METHODS if get_method(m).classifier and "stage2" in get_method(m).groups().values()}
    assert on_stage2 == {"eval_centroid_stage2", "eval_crt", "eval_tau_norm", "eval_logit_adjust"}
    # and the fusion methods' one phase: smoke.toml fuses centroid_stage2's image side with the text
    assert _computed(out) == {"stage2", *on_stage2, "eval_fusion"}
    before, after = (pd.read_csv(d / "per_class.csv") for d in (smoke_run, out))
    for method in ("centroid_stage1", "protonet", "protonet_all", "baseline_centroid"):
        assert before[f"{method}/top1"].equals(after[f"{method}/top1"]), method
    tail = after["group"] == "tail"
    assert not before.loc[tail, "centroid_stage2/top1"].equals(after.loc[tail, "centroid_stage2/top1"])
    # an evaluation-only change recomputes the evaluations and no training phase
    again = tmp_path / "eval_only"
    main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(again), "--no-progress",
                                       "--reuse", str(smoke_run), "evaluation.kshot_draws=1"]))
    assert _computed(again) == {p.partition("@")[0] for p in _run_json(smoke_run)["phase_seconds"]
                                if p.startswith("eval_")}


class _Pickled:
    """What an old phase file held: a pickle, which runs code when loaded (here: touching ``sentinel``)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_a_run_folder_of_an_older_version_resumes_without_unpickling_or_retraining(smoke_run, tmp_path):
    """Folders written before results were records: their phase files and stage scores are pickles, which
    are never loaded (a pickle from another folder could run any code). The phases are computed again,
    the trainings picked up finished from their checkpoints: nothing is retrained, the results are equal."""
    import torch

    out = tmp_path / "legacy"
    shutil.copytree(smoke_run, out)
    (out / "summary.json").unlink()
    sentinel = tmp_path / "unpickled"
    for f in [*(out / "phases").glob("*.pt"), *(out / "two_stage").glob("*/scores.pt")]:
        torch.save({"result": _Pickled(sentinel), "seconds": 1.0, "key": "k"}, f)
    checkpoints = {p: p.stat().st_mtime_ns for p in out.rglob("best.pt")}
    main(get_args_parser().parse_args(["--resume", str(out), "--no-progress"]))
    assert not sentinel.exists()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("best.pt")} == checkpoints  # nothing retrained
    assert (out / "per_class.csv").read_bytes() == (smoke_run / "per_class.csv").read_bytes()
    assert (out / "summary.json").read_bytes() == (smoke_run / "summary.json").read_bytes()


class _NearestNeighbour(FewShotClassifier):
    """A stand-in for a new method file under fewshot/methods/: 1-nearest-neighbour on raw features."""

    def fit(self, support, support_labels):
        self.support, self.support_labels = support.clone(), support_labels.clone()
        self.n_classes = self._n_classes(support_labels)
        return self

    def scores(self, query):
        import torch

        dist = torch.cdist(query, self.support)  # [q, n]
        out = torch.full((len(query), self.n_classes), float("-inf"))
        return out.scatter_reduce(1, self.support_labels.expand(len(query), -1), -dist, "amax")


# A new method as a user adds one: a file of its own (here a 1-nearest-neighbour written, on purpose, as a
# NearestCentroid subclass: the benchmark must score it as what it declares, not as what its base class is).
TOY_METHOD_FILE = '''"""Toy method: 1-nearest-neighbour on cached features."""
import torch

from fewshot.methods import NearestCentroid


class NearestNeighbour(NearestCentroid):
    fits = 0  # how many times any instance was fitted: the generic episodic path fits one per episode

    def fit(self, support, support_labels):
        NearestNeighbour.fits += 1
        self.support, self.support_labels = support.clone(), support_labels.clone()
        self.n_classes = self._n_classes(support_labels)
        return self

    def scores(self, query):
        dist = torch.cdist(query, self.support)  # [q, n]
        out = torch.full((len(query), self.n_classes), float("-inf"))
        return out.scatter_reduce(1, self.support_labels.expand(len(query), -1), -dist, "amax")
'''


def test_a_new_method_file_plus_one_registration_reaches_every_result(smoke_run, tmp_path, monkeypatch):
    (tmp_path / "toy_knn.py").write_text(TOY_METHOD_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_knn

    method = BenchmarkMethod("nearest_neighbour", "1-NN on the stage-1 / background features",  # the registration
                             transfer="stage1", episodic="background",
                             classifier=lambda cfg, m: toy_knn.NearestNeighbour())
    out = tmp_path / "nn"
    with registered(method):
        main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(out), "--no-progress",
                                           "--reuse", str(smoke_run), f"methods={json.dumps([*METHODS, method.name])}"]))
        style = method_style(method.name)
    assert method.name not in method_names()  # the registration ended with the block
    assert _computed(out) == {"eval_nearest_neighbour", "eval_episodic_nearest_neighbour"}
    summary = json.loads((out / "summary.json").read_text())
    for part in (summary["transfer"]["head"], summary["transfer"]["tail"], summary["shots"], summary["episodic"]):
        assert method.name in part
    assert all(0.2 < r["mean"] <= 1 for r in summary["episodic"][method.name].values())  # well above chance
    # scored episode by episode (the generic path), although it is a NearestCentroid: one fit per episode
    n_episodes = sum(r["n_episodes"] for r in summary["episodic"][method.name].values())
    assert toy_knn.NearestNeighbour.fits >= n_episodes
    # in the episodic table it follows the method on the same embedding (baseline_centroid), as registered
    order = list(summary["episodic"])
    assert order.index("baseline_centroid") + 1 == order.index(method.name) < order.index("protonet")
    table = pd.read_csv(out / "per_class.csv")
    assert table[f"{method.name}/top1"].notna().sum() > 20
    assert style not in [method_style(m) for m in METHODS]
    assert f"| {method.name} |" in (out / "summary.md").read_text()


def test_registering_a_method_twice_or_without_a_head_or_protocol_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method(get_method("protonet"))
    with pytest.raises(ValueError, match="exactly one of classifier"):
        BenchmarkMethod("x", "no head", transfer="stage1")
    with pytest.raises(ValueError, match="runs in no protocol"):
        BenchmarkMethod("x", "nowhere", classifier=lambda cfg, m: _NearestNeighbour())
    with pytest.raises(ValueError, match="unknown method.*known: two_stage, centroid_stage1"):
        get_method("centroid_stage3")
    with pytest.raises(ValueError, match="transfer groups must be among head, tail, all, got \\['middle'\\]"):
        BenchmarkMethod("x", "odd group", transfer={"middle": "stage1"}, classifier=lambda cfg, m: _NearestNeighbour())


def test_a_method_names_one_embedding_for_every_group_or_one_per_group():
    same = BenchmarkMethod("x", "one embedding", transfer="stage1", classifier=lambda cfg, m: _NearestNeighbour())
    assert same.groups() == {"head": "stage1", "tail": "stage1", "all": "stage1"}
    split = BenchmarkMethod("y", "per group", transfer={"all": "stage2_joint", "head": "stage1"},
                            classifier=lambda cfg, m: _NearestNeighbour())
    assert list(split.groups().items()) == [("head", "stage1"), ("all", "stage2_joint")]  # head, tail, all order
    assert split.embedding("transfer") == "stage1"  # no tail group: its first group's
    assert get_method("crt").embedding("transfer") == "stage2"  # the tail's: what the protocol asks about


def test_a_config_naming_an_unknown_method_is_refused_with_the_known_names():
    from benchmarks.config import BenchmarkConfig

    with pytest.raises(ValueError, match="unknown method.*'protonett'.*known: two_stage"):
        resolve_config(BenchmarkConfig(methods=("protonett",)))


def test_an_empty_methods_list_resolves_to_every_available_method_in_registry_order():
    from benchmarks.config import BenchmarkConfig

    assert BenchmarkConfig().methods == ()
    assert resolve_config(BenchmarkConfig()).methods == available_method_names()


def test_the_gpu_config_starts_and_trains_a_step_on_the_cpu(tmp_path):
    pytest.importorskip("timm", reason="gpu.toml's EfficientNet-Lite2 needs pip install 'fewshot[pretrained]'")
    out = tmp_path / "gpu"
    main(get_args_parser().parse_args([
        "--config", "gpu", "--out", str(out), "--no-progress", "--device", "cpu", "data.source=synthetic",
        "data.synth_classes=24", "data.synth_images=400", "data.image_size=[48, 36]", "data.n_head=8",
        "stage1.epochs=1", "stage1.batch_size=64", "stage1.warmup_epochs=0", 'methods=["centroid_stage1"]',
        "evaluation.kshot=[1]", "evaluation.kshot_draws=1"]))
    history = torch.load(out / "two_stage" / "stage1" / "last.pt", weights_only=True)["history"]
    assert len(history) == 1 and history[0]["train_loss"] > 0
    assert json.loads((out / "summary.json").read_text())["transfer"]["tail"]["centroid_stage1"]["macro_top1"] > 0


def test_dedupe_effect_scores_every_episodic_method_with_and_without_copies(smoke_run, tmp_path):
    from benchmarks.studies import dedupe_effect

    results = dedupe_effect.main(dedupe_effect.get_args_parser().parse_args(
        ["--run", str(smoke_run), "--out", str(tmp_path), "--no-progress"]))
    assert set(results["methods"]) == EPISODIC
    # the synthetic catalogue has no pixel copies: both versions are the same images and the same episodes
    assert results["evaluation_images"]["with copies"] == results["evaluation_images"]["deduplicated"]
    for by in results["methods"].values():
        assert by["with copies"] == by["deduplicated"] and set(by["deduplicated"]) == EPISODIC_KEYS
    assert "| protonet | 5w5s |" in (tmp_path / "dedupe_effect.md").read_text()
    with pytest.raises(UserError, match="not a benchmark run folder"):
        dedupe_effect.main(dedupe_effect.get_args_parser().parse_args(["--run", str(tmp_path)]))
