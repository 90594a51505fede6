"""A first run on one's own data, as a new user makes it: ``python -m benchmarks.run --config smoke --data X`` on
small image folders and manifests with the usual defects, built here. Each finishes (exit 0) or is refused in
seconds with one line per problem (exit 2), never a traceback or exit 1; everything it leaves out is on screen
once, in run.json and in summary.md; every setting it fits to the data is stated and is what ran."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tests.test_own_data import class_names, make_image_folder, picture, write_image

ROOT = Path(__file__).resolve().parent.parent
# Fewer long-tail grid points and episodes than smoke.toml itself: the same code paths, a shorter test.
FAST = ["longtail.epochs=3", "longtail.taus=[0.0, 1.0]", "evaluation.episodes=40", "evaluation.kshot_draws=1"]
LONG_TAIL = (60, 53, 47, 41, 36, 32, 28, 25, 22, 20, 17, 15, 13, 12, 10, 9, 8, 7, 6, 6, 5, 4, 4, 3, 3)  # 25 classes
EIGHT = (40, 35, 30, 28, 25, 22, 20, 18)
REFUSAL_SECONDS = 30


def run_benchmark(*args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m benchmarks.run --no-progress ARGS`` in a fresh process (one torch thread: the 2-core CI box);
    its result and wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


# --- the catalogues, with what each leaves out ------------------------------------------------------------


def long_tailed_folder(root: Path) -> tuple[Path, dict[str, list[str]]]:
    """25 classes of 3-60 images, a notes.txt in each class folder and a class folder without an image."""
    make_image_folder(root, LONG_TAIL)
    (root / "Empty").mkdir()
    (root / "Empty" / "readme.md").write_text("no pictures yet\n")
    skipped = sorted([f"{c}/notes.txt" for c in class_names(len(LONG_TAIL))] + ["Empty/readme.md"])
    return root, {"files that are not images (by their suffix)": skipped, "class folders without an image": ["Empty"]}


def eight_class_folder(root: Path) -> tuple[Path, dict[str, list[str]]]:
    make_image_folder(root, EIGHT)
    return root, {"files that are not images (by their suffix)": sorted(f"{c}/notes.txt"
                                                                      for c in class_names(len(EIGHT)))}


def defective_manifest(folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """path,label only (no text, no split): 10 long-tailed classes, rows whose file is missing, malformed rows
    (a wrong field count, a blank label, a path listed twice), a class made only of missing rows, corrupt
    images (one the only row of its class), a class whose one row is malformed."""
    rng = np.random.default_rng(3)
    names = class_names(10)
    rows = []
    for c, n in enumerate((30, 26, 22, 20, 18, 14, 10, 8, 6, 4)):
        for i in range(n):
            write_image(folder / f"img/{c}/{i}.png", picture(rng, c))
            rows.append([f"img/{c}/{i}.png", names[c]])
    missing = [["img/0/gone.png", names[0]], ["img/3/gone.png", names[3]], ["ghost/1.png", "Ghost"],
               ["ghost/2.png", "Ghost"], ["ghost/3.png", "Ghost"]]
    (folder / "img/1/broken.png").write_bytes(b"not a png")
    (folder / "broken").mkdir()
    (folder / "broken/only.jpg").write_bytes(b"")
    corrupt = [["img/1/broken.png", names[1]], ["broken/only.jpg", "Broken"]]
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows([["path", "label"], *rows, *missing, *corrupt])
        first = len(rows) + len(missing) + len(corrupt) + 2  # the line of the first malformed row
        fh.write("img/0/0.png,Alder,extra\nimg/2/0.png,\nimg/0/1.png,Twin\n")  # Twin: its one row is malformed
    return path, {"rows of the manifest whose image file is missing": [r[0] for r in missing],
                  "malformed rows skipped (data.skip_bad_rows)": [f"line {first + k}" for k in range(3)],
                  "corrupt images (cannot be decoded)": [r[0] for r in corrupt],
                  "classes left without a usable image": ["Broken", "Ghost", "Twin"]}


CATALOGUES = {"long-tailed folder": long_tailed_folder, "eight classes": eight_class_folder,
              "manifest with defects": defective_manifest}
EXTRA = {"manifest with defects": ["data.skip_bad_rows=true", "evaluation.n_query=7"]}


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory) -> dict[str, tuple[Path, dict[str, list[str]]]]:
    return {name: make(tmp_path_factory.mktemp("data") / name.replace(" ", "-")) for name, make in CATALOGUES.items()}


@pytest.fixture(scope="module")
def runs(catalogues, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess, float]]:
    """The smoke benchmark on each catalogue, without any override that fits it to the data."""
    out = {}
    for name, (data, _) in catalogues.items():
        folder = tmp_path_factory.mktemp("runs") / "run"
        done, seconds = run_benchmark("--config", "smoke", "--data", str(data), "--out", str(folder), *FAST,
                                      *EXTRA.get(name, []))
        out[name] = folder, done, seconds
    return out


# --- they finish, and say what they left out and what they fitted ----------------------------------------


@pytest.mark.parametrize("name", CATALOGUES)
def test_smoke_finishes_on_own_data_without_a_traceback_or_a_raw_warning(name, runs):
    out, done, seconds = runs[name]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and (out / "summary.json").is_file() and (out / "per_class.csv").is_file()
    print(f"{name}: finished in {seconds:.0f} s")


@pytest.mark.parametrize("name", CATALOGUES)
def test_every_item_left_out_is_on_screen_once_in_run_json_and_in_summary_md(name, runs, catalogues):
    out, done, _ = runs[name]
    expected = catalogues[name][1]
    run = json.loads((out / "run.json").read_text())
    recorded = {g["reason"]: g for g in run["dataset"]["left_out"]}
    assert {r: sorted(g["items"]) for r, g in recorded.items()} == {r: sorted(v) for r, v in expected.items()}
    md = (out / "summary.md").read_text()
    for reason, group in recorded.items():
        assert done.stdout.count(f"  {group['line']}\n") == 1, (reason, done.stdout[-2000:])
        assert f"- {group['line']}" in md
        assert group["line"].startswith(str(len(expected[reason])))
    rows_left_out = [r for r in expected if r.startswith(("rows", "malformed", "corrupt"))]
    assert run["dataset"]["n_images"] + sum(len(expected[r]) for r in rows_left_out) == run["dataset"]["n_rows"]


@pytest.mark.parametrize("name", CATALOGUES)
def test_every_setting_fitted_to_the_data_is_stated_and_is_what_ran(name, runs):
    out, done, _ = runs[name]
    run = json.loads((out / "run.json").read_text())
    used = tomllib.loads((out / "config.resolved.toml").read_text())
    md = (out / "summary.md").read_text()
    assert run["fitted"], "these catalogues are too small for smoke.toml as it is"
    assert "## Settings fitted to the data" in md and "fitted to the data (data.fit_to_data = true" in done.stdout
    for entry in run["fitted"]:
        value = used
        for part in entry["key"].split("."):
            value = value[part]
        assert value == entry["to"] and entry["to"] != entry["from"] and entry["why"], entry
        assert entry["why"] in md
    # no product names in these catalogues: the text methods are left out, and said to be
    assert not {"text", "fusion_gate", "fusion_product"} & set(used["methods"])
    assert "read product names, and no train image has one" in md
    assert "product name does not contain" not in md


@pytest.mark.parametrize("name", CATALOGUES)
def test_reports_on_own_data_leave_out_the_kaggle_reference_figures_and_count_the_queries_used(name, runs):
    out, _, _ = runs[name]
    md = (out / "summary.md").read_text()
    used = tomllib.loads((out / "config.resolved.toml").read_text())
    assert "seed, as published" not in md and "best published" not in md
    n_query = used["evaluation"]["n_query"]
    assert f"seeded episodes ({n_query} {'query' if n_query == 1 else 'queries'} per class)" in md
    if name == "manifest with defects":
        assert n_query == 7  # given on the command line, and the data holds it: used as given
    run = json.loads((out / "run.json").read_text())
    assert f"Transfer protocol: {run['dataset']['transfer_split']['rule']};" in md
    assert f"Episodic protocol: {run['dataset']['episodic_classes']['rule']};" in md


# --- or they are refused, in seconds, with one line per problem -----------------------------------------


def _three_classes(root: Path) -> Path:
    return make_image_folder(root, (30, 25, 20))


REFUSALS = [
    ("too few classes for either protocol", lambda c, t: (str(_three_classes(t / "three")), []),
     ["nothing can run on the data at", "the transfer protocol needs 4 classes with train images (2 head, 2 tail), "
                                        "the data has 3"]),
    ("malformed rows without data.skip_bad_rows", lambda c, t: (str(c["manifest with defects"][0]), []),
     ["manifest.csv, line 167: 3 fields, expected 2 (path,label)"]),
    ("a config that does not fit the data", lambda c, t: (str(c["long-tailed folder"][0]), ["data.fit_to_data=false"]),
     ["cannot hold 4 settings (nothing was trained; data.fit_to_data=true fits them",
      "  evaluation.ways=[2, 5]: the data has 4 evaluation classes"]),
    ("a setting given on the command line", lambda c, t: (str(c["eight classes"][0]), ["evaluation.ways=[2, 5]"]),
     ["given on the command line (data.fit_to_data changes only the config's own): evaluation.ways=[2, 5]: the "
      "data has 3 evaluation classes"]),
]


@pytest.mark.parametrize(("make", "fragments"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_what_the_data_cannot_hold_is_refused_in_seconds_with_one_line_per_problem(make, fragments, catalogues,
                                                                                  tmp_path):
    data, extra = make(catalogues, tmp_path)
    done, seconds = run_benchmark("--config", "smoke", "--data", data, "--out", str(tmp_path / "run"), *extra)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("benchmarks.run: error: ") and all(line.startswith("  ") for line in lines[1:])
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    assert seconds < REFUSAL_SECONDS
    assert not (tmp_path / "run" / "phases").exists() or not any((tmp_path / "run" / "phases").iterdir())
    print(f"refused in {seconds:.1f} s")


def test_a_shipped_config_that_does_not_fit_is_refused_with_its_lines(catalogues, tmp_path):
    done, seconds = run_benchmark("--config", "cpu", "--data", str(catalogues["eight classes"][0]), "--out",
                                  str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert "cannot hold" in lines[0] and len(lines) > 2 and all(line.startswith("  ") for line in lines[1:])
    assert any(line.startswith("  data.n_head=20: the transfer protocol needs a tail") for line in lines)
    assert seconds < REFUSAL_SECONDS
