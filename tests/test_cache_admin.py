"""``fewshot cache --list`` and ``--prune``: what the caches under $FEWSHOT_CACHE hold, and deleting them safely."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from fewshot.cli import main
from tests.conftest import style_row

DAY = 86400.0


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FEWSHOT_CACHE", str(root))
    return root


def _image_cache(make_layout, capsys, name: str) -> Path:
    """Build the image cache of a fresh two-image layout; its size folder."""
    data = make_layout([style_row(1, "Shirts"), style_row(2, "Jeans")], name=name)
    assert main(["cache", "--data", str(data), "--size", "40x30"]) == 0
    capsys.readouterr()
    (folder,) = [p.parent for p in Path(os.environ["FEWSHOT_CACHE"]).glob(f"{name}-*/40x30/index.json")]
    return folder


def _features(cache_root: Path, stem: str, checkpoint: Path) -> Path:
    folder = cache_root / "features"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.npy", np.zeros((2, 4), np.float32))
    (folder / f"{stem}.json").write_text(json.dumps({"key": stem * 2, "checkpoint": str(checkpoint),
                                                     "backbone": "conv4", "image_key": "x", "n": 2, "dim": 4,
                                                     "precision": "fp32"}))
    return folder / f"{stem}.npy"


def _run_folder(tmp_path: Path, image_cache: Path) -> Path:
    """A benchmark run folder whose run.json records ``image_cache``'s key, as benchmarks.run writes it."""
    run = tmp_path / "run"
    run.mkdir()
    key = json.loads((image_cache / "index.json").read_text())["key"]
    (run / "run.json").write_text(json.dumps({"dataset": {"image_cache_key": key, "pixels_sha256": "p" * 64}}))
    return run


@pytest.fixture
def two_of_each(cache_root, make_layout, capsys, tmp_path):
    """Image caches of datasets a and b, and two feature caches: one of a checkpoint inside the run folder
    that uses a's image cache, one of a checkpoint elsewhere."""
    kept_images, other_images = _image_cache(make_layout, capsys, "a"), _image_cache(make_layout, capsys, "b")
    run = _run_folder(tmp_path, kept_images)
    kept_features = _features(cache_root, "1" * 32, run / "protonet" / "best.pt")
    other_features = _features(cache_root, "2" * 32, tmp_path / "elsewhere" / "best.pt")
    return run, kept_images, other_images, kept_features, other_features


def _exists(*paths: Path) -> list[bool]:
    return [p.exists() for p in paths]


def test_list_shows_every_image_and_feature_cache_with_size_age_and_content(two_of_each, cache_root, capsys):
    run, kept_images, other_images, kept_features, other_features = two_of_each
    (cache_root / "notes.txt").write_text("not a cache")  # foreign: neither listed nor touched
    assert main(["cache", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["images", "images", "features", "features"]
    assert str(kept_images) in lines[0] and "at 40x30: 2 images, 0 corrupt" in lines[0] and "0.0 days" in lines[0]
    assert "conv4 features [2, 4] (fp32) of" in lines[2] and str(kept_features) in lines[2]
    assert lines[4].startswith("4 cache(s), ") and lines[4].endswith(f"in all, under {cache_root}")
    assert not any("notes.txt" in line for line in lines)


def test_prune_deletes_what_no_kept_run_uses_and_reports_the_space_freed(two_of_each, cache_root, capsys):
    run, kept_images, other_images, kept_features, other_features = two_of_each
    (cache_root / "notes.txt").write_text("not a cache")
    freed = sum(f.stat().st_size for f in other_images.iterdir()) + sum(
        f.stat().st_size for f in (other_features, other_features.with_suffix(".json")))
    assert main(["cache", "--prune", "--keep", str(run)]) == 0
    out = capsys.readouterr().out
    assert _exists(kept_images, kept_features, other_images, other_images.parent, other_features,
                   other_features.with_suffix(".json")) == [True, True, False, False, False, False]
    assert (cache_root / "notes.txt").exists()
    assert "deleted images" in out and str(other_images) in out and str(other_features) in out
    assert str(kept_images) not in out
    assert f"deleted 2 cache(s), freed {freed / 1024:.1f} KB; kept 2 under {cache_root}" in out


def test_prune_dry_run_only_lists(two_of_each, capsys):
    run, kept_images, other_images, kept_features, other_features = two_of_each
    assert main(["cache", "--prune", "--dry-run", "--keep", str(run)]) == 0
    out = capsys.readouterr().out
    assert _exists(kept_images, other_images, kept_features, other_features) == [True] * 4
    assert "would delete images" in out and "would delete 2 cache(s), would free" in out


def test_prune_older_than_deletes_only_caches_written_before(two_of_each, capsys):
    run, kept_images, other_images, kept_features, other_features = two_of_each
    old = time.time() - 40 * DAY
    for f in [*other_images.iterdir(), kept_features, kept_features.with_suffix(".json")]:
        os.utime(f, (old, old))
    assert main(["cache", "--prune", "--older-than", "30"]) == 0
    assert _exists(kept_images, other_images, kept_features, other_features) == [True, False, False, True]


def test_prune_never_follows_a_symlink_out_of_the_cache_root(cache_root, make_layout, capsys, tmp_path):
    outside = tmp_path / "outside"
    (outside / "40x30").mkdir(parents=True)
    precious = [outside / "40x30" / "images.npy", outside / "40x30" / "index.json", outside / "features.npy"]
    for f in precious:
        f.write_text("precious")
    _image_cache(make_layout, capsys, "a")
    (cache_root / "linked-0123456789").symlink_to(outside)  # a dataset folder that is a link
    (cache_root / "b-0123456789").mkdir()
    (cache_root / "b-0123456789" / "40x30").symlink_to(outside / "40x30")  # a size folder that is a link
    (cache_root / "features").mkdir()
    (cache_root / "features" / f"{'3' * 32}.npy").symlink_to(outside / "features.npy")  # a file that is a link
    assert main(["cache", "--prune"]) == 0
    assert "deleted 1 cache(s)" in capsys.readouterr().out  # the real one only
    assert all(f.read_text() == "precious" for f in precious)
    assert (cache_root / "linked-0123456789").is_symlink() and (cache_root / "b-0123456789" / "40x30").is_symlink()


def test_prune_spares_a_cache_being_built(cache_root, make_layout, capsys):
    folder = _image_cache(make_layout, capsys, "a")
    (folder / f".images.{os.getpid()}.partial.npy").write_bytes(b"half")
    assert main(["cache", "--list"]) == 0
    assert "[being written]" in capsys.readouterr().out
    assert main(["cache", "--prune"]) == 0
    assert (folder / "images.npy").exists() and "deleted 0 cache(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--prune", "--keep", "{tmp}"], "no run.json there; is it a benchmark run folder"),
        (["--prune", "--older-than", "-1"], "argument --older-than: must be >= 0 days"),
        (["--list", "--dry-run"], "go with --prune, not --list"),
        (["--list", "--prune"], "not allowed with argument"),
        (["--prune", "--data", "{tmp}"], "--data does not go with --list/--prune"),
        (["--data", "{tmp}", "--older-than", "3"], "--older-than goes with --prune"),
    ],
)
def test_bad_prune_arguments_are_user_errors_that_delete_nothing(two_of_each, tmp_path, capsys, argv, fragment):
    run, kept_images, other_images, kept_features, other_features = two_of_each
    assert main(["cache", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewshot: error: ") and fragment in err and err.count("\n") == 1
    assert _exists(kept_images, other_images, kept_features, other_features) == [True] * 4


def test_text_feature_caches_are_listed_and_kept_only_for_the_run_whose_features_key_made_them(
        cache_root, tmp_path, capsys):
    pytest.importorskip("sklearn")
    from fewshot.text.cache import cached_text_features

    names = ["red cotton shirt", "blue denim jeans", "red shirt", "black jeans"]
    parts = {"train": np.array([0, 1]), "test": np.array([2, 3])}
    made = {tag: cached_text_features(names, parts["train"], parts, encoder="tfidf", cache_root=cache_root, tag=tag,
                                      max_features=64 if tag == "run-a" else 32) for tag in ("run-a", "run-b")}
    assert made["run-a"]["test"].shape[0] == 2
    again = cached_text_features(names, parts["train"], parts, encoder="tfidf", cache_root=cache_root, tag="run-a",
                                 max_features=64)
    assert len(list((cache_root / "text").glob("*.pt"))) == 2  # the second call of run-a read its file
    assert all(again[p].equal(v) for p, v in made["run-a"].items())
    assert main(["cache", "--list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("text ") >= 2 and "tfidf text features [4," in listing
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"dataset": {"features_key": "run-a"}}))
    assert main(["cache", "--prune", "--keep", str(run)]) == 0
    left = [json.loads(p.read_text())["image_key"] for p in (cache_root / "text").glob("*.json")]
    assert left == ["run-a"]
