"""The synthetic long-tail catalogue: Kaggle layout, traps, determinism, long tail, year structure,
learnability. Protocol checks are computed inline (even year = train, odd year = test) on purpose."""
from __future__ import annotations

import collections
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot.data.synth import (
    HEADER,
    SynthReport,
    choose_classes,
    class_lists,
    class_sizes,
    taxonomy,
    write_synthetic,
)

SMALL = dict(n_classes=12, n_images=400, progress=False)


def _rows(root: Path) -> list[list[str]]:
    text = (root / "styles.csv").read_text(encoding="utf-8")
    return [line.split(",", 9) for line in text.split("\n")[1:] if line]


def _has_image(root: Path, row: list[str]) -> bool:
    return (root / "images" / f"{row[0]}.jpg").is_file()


def _split_counts(root: Path) -> tuple[collections.Counter, collections.Counter]:
    """(train, test) images per class: rows with a JPEG and a year, even year = train, odd = test."""
    train, test = collections.Counter(), collections.Counter()
    for row in _rows(root):
        if row[7] and _has_image(root, row):
            (train if int(row[7]) % 2 == 0 else test)[row[4]] += 1
    return train, test


def _nearest_centroid_accuracy(root: Path) -> tuple[float, float]:
    """Raw-pixel nearest centroid (Euclidean), centroids from even years, scored on odd years of classes
    that have train images. Returns (accuracy, chance)."""
    xs, labels, is_train = [], [], []
    for row in _rows(root):
        if row[7] and _has_image(root, row):
            xs.append(np.asarray(Image.open(root / "images" / f"{row[0]}.jpg"), dtype=np.float32).ravel())
            labels.append(row[4])
            is_train.append(int(row[7]) % 2 == 0)
    x, y, train = np.stack(xs), np.array(labels), np.array(is_train)
    classes = sorted(set(y[train]))
    centroids = np.stack([x[train & (y == c)].mean(0) for c in classes])
    test = ~train & np.isin(y, classes)
    dist = (x[test] ** 2).sum(1, keepdims=True) - 2 * x[test] @ centroids.T + (centroids**2).sum(1)
    pred = np.array(classes)[dist.argmin(1)]
    return float((pred == y[test]).mean()), 1.0 / len(classes)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthReport:
    return write_synthetic(tmp_path_factory.mktemp("synth_small"), seed=0, **SMALL)


def test_class_lists_are_the_issue_lists_and_all_have_a_taxonomy() -> None:
    background, evaluation = class_lists()
    assert (len(background), len(set(background)), len(evaluation), len(set(evaluation))) == (60, 60, 47, 47)
    assert (background[0], background[-1], evaluation[0], evaluation[-1]) == (
        "Cufflinks", "Bra", "Jeans", "Travel Accessory")
    assert not set(background) & set(evaluation)
    assert set(taxonomy()) == set(background) | set(evaluation)


@pytest.mark.parametrize("n_classes", [4, 12, 40, 80, 107])
def test_choose_classes_mixes_about_60_percent_background_over_all_ranks(n_classes: int) -> None:
    background, evaluation = class_lists()
    names = choose_classes(n_classes, seed=3)
    assert len(set(names)) == n_classes and set(names) <= set(background) | set(evaluation)
    is_bg = np.array([n in background for n in names])
    assert abs(is_bg.mean() - 0.6) <= 0.1 + 1 / n_classes
    if n_classes >= 12:  # both lists appear in the head half and in the tail half
        half = n_classes // 2
        assert 0 < is_bg[:half].sum() < half and 0 < is_bg[half:].sum() < n_classes - half
    assert choose_classes(n_classes, seed=3) == names
    assert choose_classes(n_classes, seed=4) != names


@pytest.mark.parametrize("n_classes,n_images", [(4, 40), (12, 400), (40, 3000), (107, 10_000)])
def test_class_sizes_are_a_non_increasing_long_tail_that_sums_to_n_images(
    n_classes: int, n_images: int
) -> None:
    sizes = class_sizes(n_classes, n_images)
    assert sizes.sum() == n_images and len(sizes) == n_classes
    assert (np.diff(sizes) <= 0).all() and sizes.min() >= 2
    # reference: 2 per class plus the tapered Zipf-Mandelbrot share of the rest, rounded to +-1 image
    share = [(k + 6) ** -1.0 * (1 - (k / (n_classes + 1)) ** 4) for k in range(1, n_classes + 1)]
    expected = [2 + (n_images - 2 * n_classes) * w / sum(share) for w in share]
    assert np.abs(sizes - np.array(expected)).max() < 1.0


def test_class_sizes_at_defaults_put_three_quarters_in_the_20_largest_and_a_handful_in_the_rarest() -> None:
    sizes = class_sizes(40, 3000)
    assert 0.72 <= sizes[:20].sum() / 3000 <= 0.80
    assert sizes[-1] <= 6
    assert 3 <= (sizes < 20).sum() <= 10


def test_styles_csv_has_the_kaggle_header_and_ten_fields_filled_but_for_traps_and_empty_names(
        small: SynthReport) -> None:
    raw = small.styles_csv.read_bytes()
    assert b"\r" not in raw and b'"' not in raw and raw.endswith(b"\n")
    lines = raw.decode("utf-8").split("\n")
    assert lines[0] == HEADER and lines[-1] == ""
    rows = _rows(small.root)
    assert len(rows) == small.n_rows == 400
    assert all(len(r) == 10 for r in rows)
    trap_ids = set(small.empty_year_ids) | set(small.empty_season_ids)
    for r in rows:
        empty = {i for i, field in enumerate(r) if field == ""} - {9}  # an empty productDisplayName is planned
        assert not empty or (int(r[0]) in trap_ids and empty <= {6, 7}), r
    assert 0 < sum(r[9] == "" for r in rows) < 0.1 * len(rows)
    ids = [int(r[0]) for r in rows]
    assert len(set(ids)) == len(ids) and min(ids) > 0
    assert ids != sorted(ids) and sorted(ids) != list(range(min(ids), min(ids) + len(ids)))
    assert {r[4] for r in rows} == set(small.classes)
    assert {int(r[7]) for r in rows if r[7]} <= set(range(2008, 2020))


def test_rows_are_consistent_with_the_taxonomy_and_the_display_name(small: SynthReport) -> None:
    tax = taxonomy()
    for r in _rows(small.root):
        master, sub, _, _ = tax[r[4]]
        assert (r[2], r[3]) == (master, sub)
        name = r[9]
        # a name ends with its article type or its class's line word, or is empty (the text branch's cases)
        assert not name or (f" {r[1]} " in f" {name} " and r[5] in name), r
    ends = Counter("empty" if not r[9] else "article" if r[9].endswith(r[4]) else "other" for r in _rows(small.root))
    assert ends["article"] > ends["other"] > ends["empty"] > 0


def test_trap_counts_in_the_file_match_the_report(small: SynthReport) -> None:
    rows = _rows(small.root)
    extra = {int(r[0]): r[9].count(",") for r in rows if "," in r[9]}
    assert set(extra) == set(small.comma_ids) and len(extra) == 2  # max(2, 0.5% of 400)
    assert sorted(extra.values()) == [1, 2]
    missing = {int(r[0]) for r in rows if not _has_image(small.root, r)}
    assert missing == set(small.missing_image_ids) and len(missing) == 4  # 1% of 400
    assert len(list(small.images_dir.glob("*.jpg"))) == small.n_images == 396
    assert {int(r[0]) for r in rows if r[7] == ""} == set(small.empty_year_ids)
    assert {int(r[0]) for r in rows if r[6] == ""} == set(small.empty_season_ids)
    assert (len(small.empty_year_ids), len(small.empty_season_ids)) == (1, 2)


def test_no_traps_gives_a_clean_file_with_every_image(tmp_path: Path) -> None:
    report = write_synthetic(tmp_path, traps=False, n_classes=4, n_images=60, progress=False)
    rows = _rows(tmp_path)
    assert all("," not in r[9] and all(r) for r in rows)
    assert report.n_missing_images == 0 and all(_has_image(tmp_path, r) for r in rows)


def test_same_arguments_give_byte_identical_files_and_other_seeds_differ(
    small: SynthReport, tmp_path: Path
) -> None:
    again = write_synthetic(tmp_path / "again", seed=0, **SMALL)
    other = write_synthetic(tmp_path / "other", seed=1, **SMALL)
    for name in ("styles.csv", "README.md", "SYNTHETIC"):
        assert (small.root / name).read_bytes() == (again.root / name).read_bytes()
    ids = sorted(p.name for p in small.images_dir.glob("*.jpg"))
    assert ids == sorted(p.name for p in again.images_dir.glob("*.jpg"))
    for name in ids[:: len(ids) // 5]:
        assert (small.images_dir / name).read_bytes() == (again.images_dir / name).read_bytes()
    assert small.styles_csv.read_bytes() != other.styles_csv.read_bytes()
    assert ids != sorted(p.name for p in other.images_dir.glob("*.jpg"))


def test_transfer_split_has_head_tail_test_only_and_train_only_tail_classes(small: SynthReport) -> None:
    train, test = _split_counts(small.root)
    n_head = 6  # the protocol's 20 scaled to 12 classes
    head = sorted(train, key=lambda c: (-train[c], c))[:n_head]
    tail = [c for c in train if c not in head]
    test_only = sorted(set(test) - set(train))
    train_only_tail = sorted(c for c in tail if test[c] == 0)
    assert len(head) == n_head and all(test[c] > 0 for c in head)
    assert len(tail) == 12 - n_head - len(test_only) and sum(1 for c in tail if test[c]) >= 3
    assert test_only == sorted(small.test_only_classes) and len(test_only) == 1
    assert train_only_tail == sorted(small.train_only_classes) and len(train_only_tail) == 1


def test_raw_pixel_nearest_centroid_is_well_above_chance_but_not_perfect(small: SynthReport) -> None:
    accuracy, chance = _nearest_centroid_accuracy(small.root)
    assert 3 * chance <= accuracy < 1.0, (accuracy, chance)


@pytest.mark.parametrize("size", [(80, 60), (48, 40)])
def test_images_are_rgb_jpegs_of_the_requested_height_and_width(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    report = write_synthetic(tmp_path, n_classes=4, n_images=40, size=size, progress=False)
    for path in sorted(report.images_dir.glob("*.jpg"))[:5]:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (size[1], size[0]))
            # a light, product-photo background: the corners are bright
            corners = np.asarray(im, dtype=np.float32)[[0, 0, -1, -1], [0, -1, 0, -1]]
            assert corners.mean() > 190


def test_readme_marker_and_report_text_say_synthetic_with_the_parameters(small: SynthReport) -> None:
    text = f"SYNTHETIC {small.root}: 400 rows, 396 images (4 rows without one), 12 classes of 61..8 rows"
    assert str(small).startswith(text)
    readme = small.readme.read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "version 1" in readme and '"seed": 0' in readme
    marker = json.loads(small.marker.read_text(encoding="utf-8"))
    assert marker == {"synthetic": True, "generator": "fewshot.data.synth", "generator_version": 1, "seed": 0,
                      "n_classes": 12, "n_images": 400, "size_hw": [80, 60], "traps": True, "complete": True}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_classes=3), "n_classes=3 is out of range"),
        (dict(n_classes=108, n_images=5000), "n_classes=108 is out of range"),
        (dict(n_classes=12, n_images=100), "n_images=100 does not fit n_classes=12"),
        (dict(seed=-1), "seed=-1 must be >= 0"),
        (dict(n_classes=True), "n_classes must be an int"),
        (dict(size=(8, 60)), r"size=\(8, 60\) must be \(height, width\)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_synthetic(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_folder_that_is_not_synthetic(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no SYNTHETIC marker"):
        write_synthetic(tmp_path, n_classes=4, n_images=40, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_regenerating_into_earlier_synthetic_output_leaves_no_stale_images(tmp_path: Path) -> None:
    write_synthetic(tmp_path, n_classes=4, n_images=60, seed=0, progress=False)
    report = write_synthetic(tmp_path, n_classes=4, n_images=40, seed=1, progress=False)
    on_disk = {int(p.stem) for p in report.images_dir.glob("*.jpg")}
    assert on_disk == {int(r[0]) for r in _rows(tmp_path)} - set(report.missing_image_ids)


def test_progress_bar_is_shown_unless_disabled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic(tmp_path / "a", n_classes=4, n_images=40, progress=True)
    assert "synthetic images" in capsys.readouterr().err
    write_synthetic(tmp_path / "b", n_classes=4, n_images=40, progress=False)
    assert "synthetic images" not in capsys.readouterr().err


@pytest.mark.slow
def test_defaults_are_fast_and_give_both_protocols_their_structure(tmp_path: Path) -> None:
    start = time.perf_counter()
    report = write_synthetic(tmp_path, progress=False)
    seconds = time.perf_counter() - start
    assert seconds < 30, f"3,000 images took {seconds:.1f} s"
    assert (report.n_rows, report.n_images, report.n_missing_images) == (3000, 2970, 30)
    rows = _rows(tmp_path)
    assert len({r[4] for r in rows}) == 40
    assert {int(r[7]) for r in rows if r[7]} == set(range(2008, 2020))
    assert sorted(r[9].count(",") for r in rows if "," in r[9]) == [1] * 14 + [2]  # 0.5% of rows

    train, test = _split_counts(tmp_path)  # transfer: n_head = 20
    head = sorted(train, key=lambda c: (-train[c], c))[:20]
    tail = [c for c in train if c not in head]
    assert len(head) == 20 and len(tail) == 18
    assert sum(1 for c in tail if test[c]) >= 10 and sum(1 for c in tail if not test[c]) >= 1
    assert len(set(test) - set(train)) >= 1

    background, evaluation = class_lists()  # episodic: >= 20 images, all years pooled
    images = collections.Counter(r[4] for r in rows if _has_image(tmp_path, r))
    assert sum(1 for c, n in images.items() if c in background and n >= 20) >= 5
    assert sum(1 for c, n in images.items() if c in evaluation and n >= 20) >= 5
    assert sum(1 for n in images.values() if n < 20) >= 3

    accuracy, chance = _nearest_centroid_accuracy(tmp_path)
    assert 3 * chance <= accuracy < 1.0, (accuracy, chance)
