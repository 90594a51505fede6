"""Your own catalogue: an image folder or a CSV manifest read through the one dataset interface, the protocols'
split rules on any data, the bad inputs each reader reports, and the whole smoke benchmark on both layouts
(built here from generated images with long-tailed counts: data nobody here made by hand)."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks.run import get_args_parser, main
from fewshot.cli import main as fewshot_main
from fewshot.data import cache as cache_mod
from fewshot.data.cache import CorruptImageError
from fewshot.data.dataset import FashionProducts
from fewshot.data.duplicates import dataset_groups, describe_duplicates
from fewshot.data.imagefolder import ImageFolderCatalog
from fewshot.data.layouts import detect_layout, open_dataset
from fewshot.data.manifest import ManifestCatalog
from fewshot.data.protocols import (
    EpisodicProtocol,
    TransferProtocol,
    class_split_for,
    protocol_digest,
    shipped_classes,
    split_rule_for,
)
from fewshot.data.rules import KAGGLE_SPLIT, NEITHER, TEST, TRAIN, ClassSplit, SplitRule
from fewshot.utils.errors import UserError
from tests.conftest import style_row

SMOKE = Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "smoke.toml"
README = Path(__file__).resolve().parent.parent / "README.md"

# 26 classes: 14 with >= 20 images (the episodic protocol's eligible classes), then a long tail down to 2.
COUNTS = (60, 50, 44, 38, 34, 30, 28, 26, 24, 23, 22, 21, 21, 20, 14, 12, 10, 9, 8, 6, 5, 4, 3, 3, 2, 2)
WORDS = ("Alder", "Birch", "Cedar", "Daisy", "Elm", "Fern", "Gorse", "Hazel", "Iris", "Juniper", "Kale", "Larch",
         "Maple", "Nettle", "Oak", "Poppy", "Quince", "Rowan", "Sage", "Thyme", "Umbel", "Vetch", "Willow", "Yarrow",
         "Zinnia", "Aster")


# --- generated catalogues --------------------------------------------------------------------------------


def class_names(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]}{'' if i < len(WORDS) else i}" for i in range(n)]


def picture(rng: np.random.Generator, c: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """uint8 [h, w, 3]: class ``c``'s colour and stripe plus noise, so that no two pictures are identical."""
    w, h = size
    hue = np.array([(37 * c) % 256, (91 * c + 60) % 256, (53 * c + 120) % 256], dtype=np.float64)
    img = np.tile(hue, (h, w, 1))
    img[(c * 3) % h: (c * 3) % h + 4] = 255 - hue
    img += rng.normal(0, 18, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def make_image_folder(root: Path, counts: tuple[int, ...] = COUNTS, *, split: bool = False, seed: int = 0) -> Path:
    """``root/<class>/...``: every third image in a nested ``batch<k>/`` folder, PNG and JPEG alternating, and a
    text file per class (to be skipped). With ``split``: ``root/train/<class>/`` and ``root/test/<class>/`` (a
    quarter of each class with two or more images in test, at least one)."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(zip(class_names(len(counts)), counts)):
        n_test = max(1, n // 4) if split and n >= 2 else 0
        for i in range(n):
            top = root / ("test" if i < n_test else "train") / name if split else root / name
            folder = top / f"batch{i % 2}" if i % 3 == 0 else top
            write_image(folder / f"{name.lower()}_{i:03d}.{'png' if i % 2 else 'jpg'}", picture(rng, c))
        (root / ("train" if split else "") / name / "notes.txt").write_text("not an image\n")
    return root


def manifest_rows(counts: tuple[int, ...]) -> list[list[str]]:
    """[path, label, split, text, group] rows: a quarter of each class in test (``TEST`` once, any case
    goes), titles that mostly name their class (with commas, so quoted)."""
    rows = []
    for c, (name, n) in enumerate(zip(class_names(len(counts)), counts)):
        for i in range(n):
            split = "test" if n >= 2 and i < max(1, n // 4) else "train"
            text = f"Acme {name}, size {i % 3}" if i % 4 else f"Acme item {i}"
            rows.append([f"img/{c:03d}/{i:03d}.{'png' if i % 2 else 'jpg'}", name,
                         split.upper() if i == 1 else split, text, f"g{i % 3}"])
    return rows


def write_manifest(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("path", "label", "split", "text",
                                                                                  "group")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_manifest(folder: Path, counts: tuple[int, ...] = COUNTS, *, seed: int = 1,
                  pixels: bool = True) -> Path:
    """``folder/manifest.csv`` and its images under ``folder/img/``. ``pixels=False`` writes one tiny PNG's
    bytes to every file (fast, for protocol checks that decode nothing)."""
    rng = np.random.default_rng(seed)
    rows = manifest_rows(counts)
    blank = None
    for path, name, *_ in rows:
        target = folder / path
        if pixels:
            write_image(target, picture(rng, class_names(len(counts)).index(name)))
        else:
            if blank is None:
                write_image(folder / "blank.png", np.zeros((2, 2, 3), np.uint8))
                blank = (folder / "blank.png").read_bytes()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blank)
    return write_manifest(folder / "manifest.csv", rows)


def png(path: Path, colour: int = 0) -> None:
    write_image(path, np.full((8, 6, 3), colour, np.uint8))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("own") / "folder")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("own") / "catalogue")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --- one interface, three readers ------------------------------------------------------------------------


def test_open_dataset_detects_each_layout_and_reads_it_with_its_reader(image_folder, manifest, make_layout):
    kaggle = make_layout([style_row(1, "Shirts"), style_row(2, "Jeans", 2011)])
    for path, layout, reader in ((kaggle, "kaggle", FashionProducts), (image_folder, "imagefolder", ImageFolderCatalog),
                                 (manifest, "manifest", ManifestCatalog)):
        assert detect_layout(path) == layout
        ds = _quiet(open_dataset, path)
        assert type(ds) is reader and ds.layout == layout and ds.describe()["layout"] == layout
        assert {"id", "path", "label", "name"} <= set(ds.table.columns)
        assert ds.labels.tolist() == [ds.classes.index(c) for c in ds.row_labels]


def test_image_folder_lists_nested_images_of_every_format_under_their_class_folder(image_folder):
    with pytest.warns(UserWarning, match=r"26 file\(s\) are not images by their suffix"):
        ds = ImageFolderCatalog(image_folder)
    assert len(ds) == sum(COUNTS) and ds.classes == sorted(class_names(len(COUNTS)))
    assert np.bincount(ds.labels).tolist() == [COUNTS[class_names(len(COUNTS)).index(c)] for c in ds.classes]
    paths = ds.table["path"].tolist()
    assert any("/batch0/" in p for p in paths) and {Path(p).suffix for p in paths} == {".png", ".jpg"}
    assert all(p.split("/")[0] == label for p, label in zip(paths, ds.row_labels))
    assert set(ds.names) == {""} and ds.describe()["n_with_text"] == 0 and not ds.has_split
    assert ds.describe()["n_skipped_files"] == 26 and "split" not in ds.table.columns


def test_manifest_keeps_its_columns_and_reads_titles_as_names(manifest):
    ds = ManifestCatalog(manifest)
    assert len(ds) == sum(COUNTS) and ds.columns == ["path", "label", "split", "text", "group"]
    assert set(ds.table["split"]) == {"train", "test"}  # "TEST" is read as test
    assert ds.names[1] == "Acme Alder, size 1" and ds.describe()["n_with_text"] == sum(COUNTS)
    assert set(ds.table["group"]) == {"g0", "g1", "g2"}


@pytest.mark.parametrize("layout", ["imagefolder", "manifest"])
def test_labels_and_names_need_no_image_decoding(layout, image_folder, manifest, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("PIL.Image.open", refuse)
    monkeypatch.setattr(cache_mod, "decode_image", refuse)
    ds = _quiet(open_dataset, image_folder if layout == "imagefolder" else manifest)
    assert len(ds.labels) == len(ds.names) == sum(COUNTS)
    TransferProtocol.from_catalog(ds, split_rule_for(ds), n_head=20)
    EpisodicProtocol.from_catalog(ds, class_split_for(ds))


@pytest.mark.parametrize("layout", ["imagefolder", "manifest"])
def test_cache_serves_decoded_pixels_and_leaves_corrupt_images_out(layout, tmp_path):
    if layout == "imagefolder":
        for i, colour in enumerate((10, 200, 90)):
            png(tmp_path / "d" / ("Cat" if i < 2 else "Dog") / f"{i}.png", colour)
        (tmp_path / "d" / "Dog" / "broken.png").write_bytes(b"not a png")
        root = tmp_path / "d"
    else:
        for i, colour in enumerate((10, 200, 90)):
            png(tmp_path / f"{i}.png", colour)
        (tmp_path / "broken.jpg").write_bytes(b"")
        root = write_manifest(tmp_path / "m.csv", [["0.png", "Cat"], ["1.png", "Cat"], ["broken.jpg", "Dog"],
                                                   ["2.png", "Dog"]], header=("path", "label"))
    ds = open_dataset(root)
    with pytest.warns(UserWarning, match=r"1 image\(s\) could not be decoded and are excluded: id \d+: .*broken"):
        cached = ds.cached((8, 6), cache_root=tmp_path / "c", progress=False)
    assert len(cached) == 3 and len(cached.corrupt) == 1 and cached.cache.pixels_sha256
    assert [int(cached.images[i, 0, 0, 0]) for i in range(3)] == [10, 200, 90]
    assert cached.row_labels.tolist() == ["Cat", "Cat", "Dog"]
    image, label = ds[0]  # not from the cache: a PIL image
    assert image.size == (6, 8) and label == 0
    assert cached[2][0].shape == (3, 8, 6) and cached[2][1] == 1
    assert ds.recorded_corrupt(cache_root=tmp_path / "c").bad == cached.corrupt  # no decoding: the index says
    again = _quiet(ds.cached, (8, 6), cache_root=tmp_path / "c", progress=False)
    assert not again.cache.built_now and again.cache.key == cached.cache.key
    with pytest.raises(CorruptImageError, match="broken"):
        ds.cached((8, 6), cache_root=tmp_path / "c", strict=True, progress=False)


def test_cache_is_rebuilt_when_the_manifest_or_an_image_changes(tmp_path):
    for i in range(3):
        png(tmp_path / f"{i}.png", 40 * i)
    path = write_manifest(tmp_path / "m.csv", [[f"{i}.png", "A" if i else "B"] for i in range(3)], ("path", "label"))
    first = open_dataset(path).cached((8, 6), cache_root=tmp_path / "c", progress=False)
    write_manifest(path, [[f"{i}.png", "A"] for i in range(3)], ("path", "label"))
    relabelled = open_dataset(path).cached((8, 6), cache_root=tmp_path / "c", progress=False)
    assert relabelled.cache.built_now and relabelled.cache.key != first.cache.key
    assert relabelled.cache.pixels_sha256 == first.cache.pixels_sha256  # the same pictures
    png(tmp_path / "1.png", 250)
    repainted = open_dataset(path).cached((8, 6), cache_root=tmp_path / "c", progress=False)
    assert repainted.cache.built_now and repainted.cache.pixels_sha256 != first.cache.pixels_sha256


def test_pixel_copies_in_an_image_folder_are_found_across_classes(tmp_path):
    for i in range(3):
        png(tmp_path / "d" / "Cat" / f"{i}.png", 30 * i)
    png(tmp_path / "d" / "Dog" / "y.png", 250)
    shutil.copy(tmp_path / "d" / "Cat" / "1.png", tmp_path / "d" / "Dog" / "x.png")
    ds = open_dataset(tmp_path / "d").cached((8, 6), cache_root=tmp_path / "c", progress=False)
    groups = dataset_groups(ds)
    assert describe_duplicates(groups, ds.row_labels) == {"groups": 1, "files": 2, "extra_copies": 1,
                                                         "within_class_groups": 0, "cross_class_groups": 1}


def test_image_folder_with_train_and_test_folders_is_split_by_them(tmp_path):
    root = make_image_folder(tmp_path / "split", COUNTS[:6] + (3,), split=True)
    (root / "test" / "Lonely").mkdir()
    png(root / "test" / "Lonely" / "a.png")  # a class only in test: excluded, with the reason
    ds = _quiet(ImageFolderCatalog, root)
    assert ds.has_split and split_rule_for(ds) == SplitRule.on_column("split", ("train",), ("test",))
    p = TransferProtocol.from_catalog(ds, split_rule_for(ds), n_head=3)
    paths = ds.table["path"].to_numpy()
    assert all(x.startswith("train/") for x in paths[p.all_train]) and all(x.startswith("test/") for x in paths[p.all_test])
    assert p.excluded["Lonely"] == "only in test: 0 train, 1 test images"
    assert len(p.head_test) + len(p.tail_test) == sum(max(1, n // 4) for n in COUNTS[:6] + (3,))


# --- bad inputs: one clear line each, or a reported exclusion ---------------------------------------------


def _folder_with_loose_images(tmp: Path) -> Path:
    png(tmp / "loose" / "Cat" / "a.png")
    png(tmp / "loose" / "b.png")
    return tmp / "loose"


def _split_folder_with_val(tmp: Path) -> Path:
    for part in ("train", "test", "val"):
        png(tmp / "tv" / part / "Cat" / "a.png")
    return tmp / "tv"


def _imageless_folder(tmp: Path) -> Path:
    (tmp / "empty" / "Cat").mkdir(parents=True)
    (tmp / "empty" / "Dog").mkdir()
    (tmp / "empty" / "Dog" / "readme.md").write_text("no pictures\n")
    return tmp / "empty"


def _manifest(tmp: Path, lines: list[str], files: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    for f in files:
        png(tmp / f)
    path = tmp / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _latin1(tmp: Path) -> Path:
    path = _manifest(tmp, ["path,label", "a.png,Cat"])
    path.write_bytes(path.read_bytes() + "b.png,Caf\xe9\n".encode("latin-1"))
    return path


def _five_classes(tmp: Path) -> Path:
    return make_manifest(tmp / "five", (6, 5, 4, 3, 2), pixels=False)


# (name, how to make the --data argument from tmp_path, extra options, a fragment of the one line)
BAD_INPUTS = [
    ("unknown split value", lambda t: _manifest(t, ["path,label,split", "a.png,Cat,train", "b.png,Cat,val"]), [],
     "m.csv, line 3: split 'val' is not train or test (to split on other values, name another column as "
     "data.split_key): 'b.png,Cat,val'. Fix the row, or pass --skip-bad-rows"),
    ("blank label", lambda t: _manifest(t, ["path,label", "a.png,Cat", "b.png,  "]), [],
     "m.csv, line 3: label is empty"),
    ("blank path", lambda t: _manifest(t, ["path,label", ",Cat", "b.png,Cat"]), [], "m.csv, line 2: path is empty"),
    ("wrong number of fields", lambda t: _manifest(t, ["path,label", "a.png,Cat,extra"]), [],
     "m.csv, line 2: 3 fields, expected 2 (path,label)"),
    ("a path listed twice", lambda t: _manifest(t, ["path,label", "a.png,Cat", "./a.png,Dog"]), [],
     "m.csv, line 3: duplicate path ./a.png (first on line 2)"),
    ("no label column", lambda t: _manifest(t, ["path,class", "a.png,Cat"]), [],
     "m.csv, line 1: header 'path,class' has no label column"),
    ("a reserved column", lambda t: _manifest(t, ["path,label,id", "a.png,Cat,7"]), [],
     "column(s) id are the catalogue's own"),
    ("not UTF-8", _latin1, [], "m.csv, line 3: not UTF-8 text"),
    ("header only", lambda t: _manifest(t, ["path,label"]), [], "no usable images: the manifest has a header but no rows"),
    ("every file missing", lambda t: _manifest(t, ["path,label", "gone.png,Cat"], files=()), [],
     "none of the 1 row(s) has its image file (e.g. gone.png is missing; paths are relative to"),
    ("no such manifest", lambda t: t / "nope.csv", [], "nope.csv: no such manifest file"),
    ("neither a folder nor a manifest", lambda t: _manifest(t, ["path,label"]).with_name("a.png"), [],
     "a.png is a file, not a folder or a .csv manifest"),
    ("images beside the class folders", _folder_with_loose_images, [],
     "1 image(s) lie directly in the folder (e.g. b.png); an image folder holds one subfolder per class"),
    ("train/, test/ and val/", _split_folder_with_val, [], "holds train/ and test/ and also val/"),
    ("class folders without images", _imageless_folder, [], "no images: 2 class folder(s), none holding an image file"),
    ("a split column the data lacks", _five_classes, ["--split", "column", "--split-key", "grp"],
     "the split column 'grp' is not in the data; its columns: label, split, text, group"),
    ("fewer classes than n_head", _five_classes, [],
     "only 5 classes have train images; n_head=20 takes 20 for the head, and a tail needs more (21 in all); lower "
     "n_head (n_head=4 leaves one tail class"),
]


@pytest.mark.parametrize(("make", "options", "fragment"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_exit_code_2(make, options, fragment, tmp_path, capsys):
    data = make(tmp_path)
    code = fewshot_main(["summary", "--data", str(data), *options])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    line = err.strip().splitlines()[-1]
    assert line.startswith("fewshot: error: ") and "Traceback" not in err
    assert fragment in line, line


def test_class_lists_asked_of_an_image_folder_without_files_name_the_keys(image_folder):
    ds = _quiet(open_dataset, image_folder)
    with pytest.raises(UserError, match="imagefolder layout has no class lists of its own; name files with "
                                        "data.background_classes"):
        class_split_for(ds, class_split="lists")


def test_missing_files_bad_rows_and_empty_class_folders_are_reported_and_left_out(tmp_path, capsys):
    path = _manifest(tmp_path, ["path,label,split", "a.png,Cat,train", "gone.png,Cat,test", "b.png,Dog,nope",
                                "b.png,Dog,test"])
    with pytest.warns(UserWarning) as caught:
        ds = ManifestCatalog(path, on_bad_rows="skip")
    messages = " | ".join(str(w.message) for w in caught)
    assert "skipped 1 malformed row(s): line 4: split 'nope' is not train or test" in messages
    assert "1 row(s) of the manifest have no image file and are excluded: Cat 1" in messages
    d = ds.describe()
    assert (d["n_rows"], d["n_images"], d["n_missing_images"], d["n_bad_rows"]) == (4, 2, 1, 1)
    assert ds.missing["path"].tolist() == ["gone.png"] and ds.row_labels.tolist() == ["Cat", "Dog"]
    assert fewshot_main(["summary", "--data", str(path), "--skip-bad-rows", "--json", "--n-head", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["n_bad_rows"] == 1

    root = make_image_folder(tmp_path / "folder", (3, 2))
    (root / "Empty" / "sub").mkdir(parents=True)
    with pytest.warns(UserWarning) as caught:
        folder = ImageFolderCatalog(root)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 class folder(s) hold no image and are left out: Empty" in messages
    assert "2 file(s) are not images by their suffix and are skipped (e.g. Alder/notes.txt)" in messages
    assert folder.classes == ["Alder", "Birch"] and folder.describe()["empty_classes"] == ["Empty"]


# --- the protocols' split rules on any data ---------------------------------------------------------------


def test_kaggle_protocol_is_the_column_rule_year_even_odd_and_its_defaults_are_unchanged(synthetic_cached):
    ds = synthetic_cached
    today = TransferProtocol.from_styles(ds.styles, n_head=5)
    as_rule = split_rule_for(ds, split="column", split_key="year", train_values=("even",), test_values=("odd",))
    assert as_rule == KAGGLE_SPLIT == split_rule_for(ds)
    for p in (TransferProtocol.from_catalog(ds, as_rule, n_head=5), TransferProtocol.from_catalog(ds, KAGGLE_SPLIT,
                                                                                                 n_head=5)):
        assert (p.head, p.tail, dict(p.excluded)) == (today.head, today.tail, dict(today.excluded))
        for part in ("head_train", "head_test", "tail_train", "tail_test", "no_year"):
            assert np.array_equal(getattr(p, part), getattr(today, part)), part
    assert class_split_for(ds) == shipped_classes()
    ep, ep_today = EpisodicProtocol.from_catalog(ds, class_split_for(ds)), EpisodicProtocol.from_styles(ds.styles)
    assert (ep.background, ep.evaluation, dict(ep.excluded)) == (ep_today.background, ep_today.evaluation,
                                                                 dict(ep_today.excluded))
    assert protocol_digest(ds, KAGGLE_SPLIT, shipped_classes()) == ""  # today's phase keys stay as they are
    assert protocol_digest(ds, SplitRule.stratified(0.25, 0), shipped_classes()) != ""
    assert KAGGLE_SPLIT.describe() == "train = even years, test = odd years"


def _counts_manifest(tmp: Path, counts: tuple[int, ...]) -> ManifestCatalog:
    return ManifestCatalog(make_manifest(tmp, counts, pixels=False))


@pytest.mark.parametrize(("n_classes", "n_head"), [(5, 3), (300, 20), (300, 250)])
def test_transfer_works_for_any_number_of_classes(n_classes, n_head, tmp_path):
    counts = tuple(max(2, 400 // (i + 1)) for i in range(n_classes))  # long-tailed, every class >= 2 images
    ds = _counts_manifest(tmp_path, counts)
    for rule in (split_rule_for(ds), SplitRule.stratified(0.25, 0)):
        p = TransferProtocol.from_catalog(ds, rule, n_head=n_head)
        assert len(p.head) == n_head and len(p.tail) == n_classes - n_head and not p.excluded
        train = p.counts["n_train"]
        assert sorted(p.head, key=lambda c: (-train[c], c)) == list(p.head)
        assert min(train[list(p.head)]) >= max(train[list(p.tail)])
        assert len(p.all_train) + len(p.all_test) == sum(counts)  # every image in exactly one part
        assert len(np.unique(np.concatenate([p.all_train, p.all_test]))) == sum(counts)


def test_fewer_classes_than_n_head_plus_one_is_refused_with_one_line(tmp_path):
    ds = _counts_manifest(tmp_path, (6, 5, 4, 3, 2))
    with pytest.raises(UserError, match=r"only 5 classes have train images; n_head=20 .*data.n_head"):
        TransferProtocol.from_catalog(ds, split_rule_for(ds), n_head=20)
    assert TransferProtocol.from_catalog(ds, split_rule_for(ds), n_head=5).tail == ()  # the runner's "no tail" line


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_stratified_split_is_seeded_stratified_and_keeps_a_train_image_per_class(fraction, image_folder):
    ds = _quiet(open_dataset, image_folder)
    rule = split_rule_for(ds, test_fraction=fraction, seed=3)
    assert rule == SplitRule.stratified(fraction, 3) and rule.seeded
    first = rule.assign(ds.table, ds.labels)
    assert np.array_equal(first, SplitRule.stratified(fraction, 3).assign(ds.table, ds.labels))
    assert not np.array_equal(first, SplitRule.stratified(fraction, 4).assign(ds.table, ds.labels))
    for c, n in enumerate(np.bincount(ds.labels)):
        n_test = int((first[ds.labels == c] == TEST).sum())
        assert n_test == min(n - 1, max(1, int(np.floor(fraction * n + 0.5)))), ds.classes[c]
    assert not (first == NEITHER).any()
    assert "0.25" in SplitRule.stratified(0.25, 3).describe() and "seed 3" in rule.describe()


@pytest.mark.parametrize(("rule", "expected"), [
    (SplitRule.on_column("group", (), ("g0",)), {"g0": TEST, "g1": TRAIN, "g2": TRAIN}),
    (SplitRule.on_column("group", ("G1", "g2"), ()), {"g0": TEST, "g1": TRAIN, "g2": TRAIN}),
    (SplitRule.on_column("group", ("g1",), ("g2",)), {"g0": NEITHER, "g1": TRAIN, "g2": TEST}),
    (SplitRule.on_column("number", ("even",), ("odd",)), {"g0": TRAIN, "g1": TEST, "g2": TRAIN}),
])
def test_a_rule_on_any_column_assigns_train_test_or_neither(rule, expected, tmp_path):
    rows = [[f"{i}.png", f"C{i % 2}", f"g{i % 3}", str(2010 + i % 3)] for i in range(12)]
    for r in rows:
        png(tmp_path / r[0])
    ds = ManifestCatalog(write_manifest(tmp_path / "m.csv", rows, ("path", "label", "group", "number")))
    got = rule.assign(ds.table, ds.labels)
    assert got.tolist() == [expected[g] for g in ds.table["group"]]
    p = TransferProtocol.from_catalog(ds, rule, n_head=1)
    assert len(p.no_year) == int((got == NEITHER).sum())


def test_a_rule_naming_one_value_on_both_sides_is_refused():
    with pytest.raises(UserError, match=r"\['a'\] among both its train and its test values"):
        SplitRule.on_column("group", ("a", "b"), ("A",))


def test_episodic_seeded_class_split_is_deterministic_and_takes_only_classes_with_enough_images(manifest):
    ds = ManifestCatalog(manifest)
    rule = class_split_for(ds, seed=0)
    assert rule == ClassSplit.fraction(0.6, 0) and rule.seeded
    p = EpisodicProtocol.from_catalog(ds, rule)
    eligible = sorted(c for c, n in zip(class_names(len(COUNTS)), COUNTS) if n >= 20)
    assert sorted(p.background + p.evaluation) == eligible
    assert len(p.background) == round(0.6 * len(eligible)) and set(p.background).isdisjoint(p.evaluation)
    again = EpisodicProtocol.from_catalog(ds, class_split_for(ds, seed=0))
    other = EpisodicProtocol.from_catalog(ds, class_split_for(ds, seed=1, background_fraction=0.5))
    assert (again.background, again.evaluation) == (p.background, p.evaluation)
    assert other.background != p.background and len(other.background) == 7
    assert p.excluded["Oak"] == "14 images, fewer than min_images=20: in neither group"
    assert p.totals()["class_split"].startswith("seeded split of the classes with >= min_images images: 0.6")


def test_episodic_class_lists_from_files_one_list_leaving_the_other_every_other_class(manifest, tmp_path):
    ds = ManifestCatalog(manifest)
    (tmp_path / "rare.txt").write_text("# the classes I care about\nBirch\nCedar\n\nOak\n")
    p = EpisodicProtocol.from_catalog(ds, class_split_for(ds, evaluation_classes=str(tmp_path / "rare.txt")))
    assert p.evaluation == ("Birch", "Cedar") and "Oak" in p.excluded  # Oak: 14 images < 20
    assert set(p.background) == set(class_names(len(COUNTS))[:14]) - {"Birch", "Cedar"}
    (tmp_path / "bg.txt").write_text("Alder\nDaisy\n")
    both = EpisodicProtocol.from_catalog(ds, class_split_for(ds, background_classes=str(tmp_path / "bg.txt"),
                                                             evaluation_classes=str(tmp_path / "rare.txt")))
    assert both.background == ("Alder", "Daisy") and both.excluded["Elm"].startswith("in neither")
    with pytest.raises(UserError, match="cannot read the class list"):
        class_split_for(ds, background_classes=str(tmp_path / "absent.txt"))


@pytest.mark.parametrize("layout", ["kaggle", "imagefolder", "manifest"])
def test_summary_works_on_every_layout(layout, image_folder, manifest, make_layout, capsys):
    if layout == "kaggle":
        rows = [style_row(i, "Shirts", 2012) for i in range(1, 6)] + [style_row(i, "Jeans", 2011 + i % 2)
                                                                        for i in range(6, 10)]
        data, n_head, head = make_layout(rows), 1, ["Shirts"]
    else:
        data, n_head, head = (image_folder if layout == "imagefolder" else manifest), 20, class_names(20)
    assert fewshot_main(["summary", "--data", str(data), "--json", "--n-head", str(n_head)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"] == layout and sorted(out["head"]) == sorted(head)
    assert out["n_head_train"] + out["n_head_test"] + out["n_tail_train"] + out["n_tail_test"] == out["n_images"]
    assert out["split_rule"] == {"kaggle": "train = even years, test = odd years",
                                 "imagefolder": SplitRule.stratified(0.25, 0).describe(),
                                 "manifest": "train = split 'train', test = split 'test'"}[layout]
    assert fewshot_main(["summary", "--data", str(data), "--protocol", "episodic"]) == 0
    assert "n_background_images" in capsys.readouterr().out


# --- the whole benchmark on both layouts ------------------------------------------------------------------

# Fewer long-tail grid points and episodes than smoke.toml itself: the same code paths, a shorter test.
FAST = ["longtail.epochs=3", "longtail.taus=[0.0, 1.0]", "evaluation.episodes=40", "evaluation.kshot_draws=1"]


@pytest.fixture(scope="module")
def own_runs(image_folder, manifest, tmp_path_factory) -> dict[str, Path]:
    """The smoke benchmark, in this process, on each layout. One torch thread: the runs' many small tensor ops
    stall on 2-thread OpenMP barriers when another process is busy on a 2-core machine."""
    import torch

    runs, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for layout, data in (("imagefolder", image_folder), ("manifest", manifest)):
            out = tmp_path_factory.mktemp("runs") / layout
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                main(get_args_parser().parse_intermixed_args(["--config", str(SMOKE), "--data", str(data), "--out",
                                                              str(out), "--no-progress", *FAST]))
            runs[layout] = out
    finally:
        torch.set_num_threads(threads)
    return runs


@pytest.mark.parametrize("layout", ["imagefolder", "manifest"])
def test_smoke_benchmark_runs_end_to_end_on_own_data(layout, own_runs):
    out = own_runs[layout]
    for name in ("config.resolved.toml", "run.json", "per_class.csv", "summary.json", "summary.md", "split.csv",
                 "per_class_vs_train.png", "shots.png", "episodic.png"):
        assert (out / name).is_file(), name
    assert not (out / "data").exists()  # --data on the command line replaced the synthetic data
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["dataset"]["layout"] == layout
    assert run["dataset"]["synthetic"] is False and run["dataset"]["n_images"] == sum(COUNTS)
    table = pd.read_csv(out / "per_class.csv")
    names = set(class_names(len(COUNTS)))
    assert set(table["class"]) == names
    assert (table["group"] == "head").sum() == 20 and (table["group"] == "tail").sum() == len(COUNTS) - 20
    assert set(table.loc[table["group"] == "evaluation", "class"]) < names
    summary = json.loads((out / "summary.json").read_text())
    text = {"text", "fusion_gate", "fusion_product"}
    md = (out / "summary.md").read_text()
    assert summary["synthetic"] is False and "two_stage" in summary["transfer"]["tail"]
    if layout == "manifest":  # titles in its text column: the product-name branch runs, and is reported
        assert text <= set(summary["transfer"]["tail"]) and summary["name_subsets"]
        assert "## Test images whose product name does not contain their class name" in md
    else:  # an image folder has no text: the methods that read it are left out, and said to be
        assert not text & set(summary["transfer"]["tail"]) and "name_subsets" not in summary
        assert [f["to"] for f in run["fitted"] if f["key"] == "methods"] == [[m for m in f["from"] if m not in text]
                                                                           for f in run["fitted"]
                                                                           if f["key"] == "methods"] != []
        assert "product name does not contain" not in md
    assert summary["episodic"] and all(r["2w5s"]["mean"] > 0.5 for r in summary["episodic"].values())
    rule = run["dataset"]["transfer_split"]["rule"]
    assert f"Transfer protocol: {rule};" in md


def test_a_run_records_its_split_image_by_image(own_runs, image_folder, manifest):
    for layout, data in (("imagefolder", image_folder), ("manifest", manifest)):
        run = json.loads((own_runs[layout] / "run.json").read_text())
        split = pd.read_csv(own_runs[layout] / "split.csv", keep_default_na=False)
        assert list(split.columns) == ["id", "path", "label", "split", "transfer", "episodic"]
        ds = _quiet(open_dataset, data)
        rule = split_rule_for(ds, seed=0)
        assert run["dataset"]["transfer_split"] == rule.to_dict()
        expected = np.array(["", "train", "test"], dtype=object)[rule.assign(ds.table, ds.labels)]
        assert split["path"].tolist() == ds.table["path"].tolist() and split["split"].tolist() == expected.tolist()
        assert set(split["transfer"]) == {"head_train", "head_test", "tail_train", "tail_test"}
        episodic = EpisodicProtocol.from_catalog(ds, class_split_for(ds, seed=0))
        assert sorted(set(split.loc[split["episodic"] == "evaluation", "label"])) == sorted(episodic.evaluation)
        assert run["dataset"]["episodic_classes"]["kind"] == "fraction"
    manifest_split = pd.read_csv(own_runs["manifest"] / "split.csv")
    assert manifest_split["split"].tolist() == [r[2].lower() for r in manifest_rows(COUNTS)]


def test_an_own_data_run_under_a_synthetic_config_resumes_on_its_own_data(own_runs, manifest):
    out = own_runs["manifest"]
    before = json.loads((out / "run.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(get_args_parser().parse_intermixed_args(["--resume", str(out), "--no-progress"]))
    after = json.loads((out / "run.json").read_text())
    assert after["dataset"]["root"] == str(manifest) and not (out / "data").exists()
    assert after["status"] == "finished" and set(after["reused_phases"]) == set(before["phase_seconds"])


# --- the README's examples, on generated folders of the same layouts -------------------------------------


def _readme_block() -> str:
    text = README.read_text()
    start = text.index("<!-- tests/test_own_data.py runs the block below")
    return re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)


def _fake_inaturalist(root: Path) -> None:
    """train2018.json / val2018.json (COCO style) and their images under train_val2018/, long-tailed."""
    rng = np.random.default_rng(0)
    species = [("Quercus robur", "Plantae"), ("Bellis perennis", "Plantae"), ("Apis mellifera", "Insecta"),
               ("Parus major", "Aves"), ("Bombus terrestris", "Insecta")]
    categories = [{"id": 10 + i, "name": n, "supercategory": s} for i, (n, s) in enumerate(species)]
    image_id = 0
    for split, counts in (("train2018", (40, 30, 25, 20, 18)), ("val2018", (3, 3, 3, 3, 3))):
        images, annotations = [], []
        for c, n in enumerate(counts):
            for _ in range(n):
                image_id += 1
                file = f"train_val2018/{species[c][1]}/{10 + c}/{image_id}.jpg"
                write_image(root / file, picture(rng, c, (12, 16)))
                images.append({"id": image_id, "file_name": file, "width": 12, "height": 16})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": 10 + c})
        (root / f"{split}.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                         "categories": categories}))


def _fewshot(capsys, args: list[str], cwd: Path, monkeypatch) -> str:
    """``fewshot ARGS`` run from ``cwd`` (in this process); its standard output."""
    monkeypatch.chdir(cwd)
    assert fewshot_main(args) == 0
    return capsys.readouterr().out


def test_readme_inaturalist_conversion_and_summary_commands_run_as_written(tmp_path, capsys, monkeypatch):
    _fake_inaturalist(tmp_path)
    (tmp_path / "rare.txt").write_text("Parus major\nBombus terrestris\n")
    lines = _readme_block().splitlines()
    end = lines.index("EOF")
    subprocess.run(["bash", "-c", "\n".join(lines[: end + 1]).replace("python -", f"{sys.executable} -", 1)],
                   cwd=tmp_path, check=True, timeout=120)
    table = pd.read_csv(tmp_path / "manifest.csv")
    assert list(table.columns) == ["path", "label", "split", "group"] and len(table) == 133 + 15
    assert table.groupby("split").size().to_dict() == {"test": 15, "train": 133}
    summaries = [line.split() for line in lines[end + 1:] if line.startswith("fewshot summary")]
    assert len(summaries) == 2
    # as written, but for --n-head: 100 head classes need more than these 5
    done = [_fewshot(capsys, ["2" if a == "100" else a for a in s[1:]], tmp_path, monkeypatch) for s in summaries]
    assert "(manifest layout): 148 rows, 148 images" in done[0]
    episodic = json.loads(done[1])
    assert episodic["evaluation"] == ["Parus major", "Bombus terrestris"]  # rare.txt, in its order
    assert sorted(episodic["background"]) == ["Apis mellifera", "Bellis perennis", "Quercus robur"]
    # the README's other split, on the command line: whole supercategories held out
    out = json.loads(_fewshot(capsys, ["summary", "--data", "manifest.csv", "--n-head", "2", "--json", "--split",
                                       "column", "--split-key", "group", "--train-values", "--test-values", "Plantae"],
                              tmp_path, monkeypatch))
    assert out["split_rule"] == "train = any other group, test = group 'Plantae'"
    assert set(out["excluded"]) == {"Quercus robur", "Bellis perennis"}  # Plantae: only in test
    assert out["n_head_test"] + out["n_tail_test"] == 0


def test_readme_image_folder_example_runs_as_written(tmp_path, capsys, monkeypatch):
    root = make_image_folder(tmp_path / "101_ObjectCategories", (9, 7, 5, 4, 3))
    png(root / "BACKGROUND_Google" / "clutter.png")
    subprocess.run(["mv", "101_ObjectCategories/BACKGROUND_Google", "."], cwd=tmp_path, check=True)
    out = json.loads(_fewshot(capsys, ["summary", "--data", "101_ObjectCategories", "--n-head", "2", "--json"],
                              tmp_path, monkeypatch))
    assert out["layout"] == "imagefolder" and out["n_classes"] == 5 and "BACKGROUND_Google" not in out["excluded"]


# --- the real catalogue: the same counts through every entry point ----------------------------------------


@pytest.mark.realdata
def test_real_catalogue_counts_are_unchanged_through_open_dataset_and_as_a_manifest(real_data, tmp_path):
    ds = open_dataset(real_data, warn=False)
    assert type(ds) is FashionProducts and split_rule_for(ds) == KAGGLE_SPLIT
    p = TransferProtocol.from_catalog(ds, split_rule_for(ds))
    published = ((18_548, 14_004), (86, 5_207, 4_138))
    assert ((len(p.head_train), len(p.head_test)), (len(p.tail), len(p.tail_train), len(p.tail_test))) == published
    # the catalogue rewritten as a manifest (absolute paths, the year as a plain column): the same protocol
    rows = [[str(real_data / path), label, "" if pd.isna(year) else str(year)]
            for path, label, year in zip(ds.table["path"], ds.row_labels, ds.table["year"])]
    as_manifest = ManifestCatalog(write_manifest(tmp_path / "real.csv", rows, ("path", "label", "year")))
    rule = split_rule_for(as_manifest, split="column", split_key="year", train_values=("even",), test_values=("odd",))
    q = TransferProtocol.from_catalog(as_manifest, rule)
    assert (q.head, q.tail, dict(q.excluded)) == (p.head, p.tail, dict(p.excluded))
    assert all(np.array_equal(getattr(q, part), getattr(p, part))
               for part in ("head_train", "head_test", "tail_train", "tail_test", "no_year"))
    ep = EpisodicProtocol.from_catalog(ds, class_split_for(ds))
    assert (len(ep.background), len(ep.evaluation)) == (47, 39)
