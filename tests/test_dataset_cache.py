from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fewshot.data import cache as cache_mod
from fewshot.data.cache import CorruptImageError, decode_image
from fewshot.data.dataset import EmptyDatasetError, FashionProducts
from fewshot.utils.errors import UserError
from tests.conftest import solid_jpeg, style_row

COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (250, 250, 0), 5: (0, 250, 250)}


def _rows() -> list[str]:
    return [style_row(1, "Shirts"), style_row(2, "Shirts", 2011), style_row(3, "Jeans"),
            style_row(4, "Jeans", 2013), style_row(5, "Socks")]


def test_dataset_excludes_and_reports_rows_without_an_image(make_layout):
    root = make_layout(_rows(), COLOURS, missing=(2, 5))
    with pytest.warns(UserWarning, match=r"2 row\(s\) of styles.csv have no image file.*Shirts 1.*Socks 1"):
        ds = FashionProducts(root)
    assert ds.ids.tolist() == [1, 3, 4]
    assert ds.missing["id"].tolist() == [2, 5]
    assert ds.classes == ["Jeans", "Shirts"]  # Socks has no image left
    assert ds.labels.tolist() == [1, 0, 0] and ds.targets == [1, 0, 0]
    assert ds.describe()["n_missing_images"] == 2 and ds.describe()["n_rows"] == 5


def test_dataset_labels_need_no_image_decoding(make_layout, monkeypatch):
    root = make_layout(_rows(), COLOURS)

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("PIL.Image.open", refuse)
    monkeypatch.setattr(cache_mod, "decode_image", refuse)
    ds = FashionProducts(root)
    assert ds.labels.tolist() == [1, 1, 0, 0, 2]


def test_dataset_without_images_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images/ folder.*fewshot synth"):
        FashionProducts(tmp_path)


def test_cache_holds_decoded_pixels_in_dataset_order(make_layout, tmp_path):
    root = make_layout(_rows(), COLOURS)
    ds = FashionProducts(root).cached((80, 60), cache_root=tmp_path / "c", progress=False)
    assert ds.images.shape == (5, 80, 60, 3) and ds.images.dtype == np.uint8
    assert isinstance(ds.images, np.memmap)
    for i, pid in enumerate(ds.ids):
        mean = ds.images[i].reshape(-1, 3).mean(0)
        assert np.abs(mean - np.array(COLOURS[int(pid)])).max() < 3, (pid, mean)
    image, label = ds[2]
    assert image.shape == (3, 80, 60) and image.dtype == torch.uint8 and label == ds.labels[2]


def test_cached_dataset_works_with_a_dataloader(make_layout, tmp_path):
    ds = FashionProducts(make_layout(_rows(), COLOURS)).cached(cache_root=tmp_path / "c", progress=False)
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 80, 60) and y.tolist() == ds.labels[:4].tolist()
    assert torch.equal(x[1], ds[1][0])


@pytest.mark.parametrize("size", [(80, 60), (40, 40), (120, 90)])
def test_decode_pads_with_white_instead_of_stretching(tmp_path, size):
    path = tmp_path / "wide.jpg"
    solid_jpeg(path, (0, 0, 0), size=(60, 30))  # a wide black picture, w x h = 60 x 30
    out = decode_image(path, size)
    assert out.shape == (*size, 3)
    h, w = size
    content_h = round(30 * min(h / 30, w / 60))
    top = (h - content_h) // 2
    assert out[top + content_h // 2, w // 2].max() < 30  # centre is the picture
    if top >= 2:
        assert out[0, w // 2].min() > 225 and out[-1, w // 2].min() > 225  # bands above and below are white


@pytest.mark.parametrize(
    ("payload", "why"),
    [(b"", "empty file"), (b"this is not a jpeg", "cannot decode"), ("truncated", "cannot decode")],
)
def test_cache_excludes_and_reports_corrupt_images(make_layout, tmp_path, payload, why):
    root = make_layout(_rows(), COLOURS)
    if payload == "truncated":
        good = (root / "images" / "3.jpg").read_bytes()
        payload = good[: len(good) // 2]
    (root / "images" / "3.jpg").write_bytes(payload)
    with pytest.warns(UserWarning, match=r"1 image\(s\) could not be decoded.*id 3"):
        ds = FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    assert ds.ids.tolist() == [1, 2, 4, 5]
    assert why in ds.corrupt[3] and "3.jpg" in ds.corrupt[3]
    assert ds.images.shape[0] == 4
    assert np.abs(ds.images[2].reshape(-1, 3).mean(0) - np.array(COLOURS[4])).max() < 3  # rows stay aligned
    assert ds.labels.tolist() == [1, 1, 0, 2]


def test_strict_cache_build_raises_on_a_corrupt_image(make_layout, tmp_path):
    root = make_layout(_rows(), {**COLOURS, 4: b""})
    with pytest.raises(CorruptImageError, match=r"4\.jpg: empty file.*without --strict") as info:
        FashionProducts(root).cached(cache_root=tmp_path / "c", strict=True, progress=False)
    assert "strict=False" not in str(info.value)  # the flag a user passes, not the Python keyword


def test_strict_load_of_a_cache_with_corrupt_images_says_what_to_do(make_layout, tmp_path):
    root = make_layout(_rows(), {**COLOURS, 4: b""})
    with pytest.warns(UserWarning, match="could not be decoded"):
        FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    with pytest.raises(CorruptImageError, match=r"1 corrupt image\(s\), e.g. id 4.*without --strict"):
        FashionProducts(root).cached(cache_root=tmp_path / "c", strict=True, progress=False)


@pytest.mark.parametrize(
    ("rows", "missing", "skip", "why"),
    [
        ([], (), False, "styles.csv has a header but no data rows"),
        ([style_row(1, "Shirts"), style_row(2, "Jeans")], (1, 2), False,
         r"none of the 2 row\(s\) of styles.csv has its image file \(e.g. images/1.jpg is missing\)"),
        (["1,Men,short", "2,Men,short"], (), True, r"all 2 row\(s\) of styles.csv are malformed.*line 2"),
    ],
    ids=["header-only", "no-image-files", "all-rows-skipped"],
)
def test_dataset_refuses_a_folder_without_usable_products(make_layout, rows, missing, skip, why):
    root = make_layout(rows, missing=missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped and image-less rows are also reported as warnings
        with pytest.raises(EmptyDatasetError, match=f"no usable products: {why}"):
            FashionProducts(root, on_bad_rows="skip" if skip else "raise")


def test_cached_dataset_refuses_when_every_image_is_corrupt(make_layout, tmp_path):
    root = make_layout(_rows(), {pid: b"not a jpeg" for pid in range(1, 6)})
    with pytest.raises(EmptyDatasetError, match=r"no usable products: all 5 image\(s\) are corrupt"):
        FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)


def test_cache_build_in_an_unwritable_place_says_where_to_point_fewshot_cache(make_layout, tmp_path):
    root = make_layout(_rows(), COLOURS)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot write the image cache in .*set FEWSHOT_CACHE to a writable folder"):
        FashionProducts(root).cached(cache_root=tmp_path / "a-file", progress=False)


@pytest.mark.parametrize("n_corrupt", [0, 3])
def test_recorded_corrupt_reads_an_earlier_build_without_decoding(make_layout, tmp_path, monkeypatch, n_corrupt):
    root = make_layout(_rows(), {**COLOURS, **{pid: b"" for pid in range(1, 1 + n_corrupt)}})
    assert FashionProducts(root).recorded_corrupt(cache_root=tmp_path / "c") is None  # nothing built yet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FashionProducts(root).cached((40, 30), cache_root=tmp_path / "c", progress=False)
    monkeypatch.setattr(cache_mod, "decode_image", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    plain = FashionProducts(root)
    assert plain.describe()["n_corrupt_images"] is None  # it decoded nothing, so it cannot claim 0
    found = plain.recorded_corrupt(cache_root=tmp_path / "c")
    assert found is not None and sorted(found.bad) == list(range(1, 1 + n_corrupt)) and found.size == (40, 30)
    _change_styles(root)  # a stale cache describes other files: it does not count
    assert FashionProducts(root).recorded_corrupt(cache_root=tmp_path / "c") is None


def test_cache_is_reused_when_nothing_changed(make_layout, tmp_path, monkeypatch):
    root = make_layout(_rows(), COLOURS)
    first = FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    assert first.cache.built_now
    monkeypatch.setattr(cache_mod, "decode_image", lambda *a: (_ for _ in ()).throw(AssertionError("rebuilt")))
    second = FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    assert not second.cache.built_now and second.cache.key == first.cache.key


def _change_styles(root):
    with open(root / "styles.csv", "a") as fh:
        fh.write(style_row(6, "Socks") + "\n")
    solid_jpeg(root / "images" / "6.jpg", (9, 9, 9))


def _change_image(root):
    solid_jpeg(root / "images" / "2.jpg", (10, 20, 30))
    os.utime(root / "images" / "2.jpg", ns=(1, 1))  # a new mtime even on coarse-clock file systems


@pytest.mark.parametrize("change", [_change_styles, _change_image, "size"])
def test_cache_is_rebuilt_when_styles_images_or_size_change(make_layout, tmp_path, change):
    root = make_layout(_rows(), COLOURS)
    first = FashionProducts(root).cached((80, 60), cache_root=tmp_path / "c", progress=False)
    size = (80, 60)
    if change == "size":
        size = (40, 30)
    else:
        change(root)
    second = FashionProducts(root).cached(size, cache_root=tmp_path / "c", progress=False)
    assert second.cache.built_now and second.cache.key != first.cache.key
    if change is _change_image:
        assert np.abs(second.images[1].reshape(-1, 3).mean(0) - np.array([10, 20, 30])).max() < 3
    if change is _change_styles:
        assert second.ids.tolist() == [1, 2, 3, 4, 5, 6]


def test_pixel_hash_ignores_modification_times_but_not_pixels(make_layout, tmp_path):
    root = make_layout(_rows(), COLOURS)
    first = FashionProducts(root).cached((80, 60), cache_root=tmp_path / "c", progress=False)
    for jpg in (root / "images").iterdir():  # a fresh copy of the same files: new mtimes, same bytes
        os.utime(jpg, ns=(10**18, 10**18))
    touched = FashionProducts(root).cached((80, 60), cache_root=tmp_path / "c", progress=False)
    assert touched.cache.built_now and touched.cache.key != first.cache.key
    assert len(first.cache.pixels_sha256) == 64 and touched.cache.pixels_sha256 == first.cache.pixels_sha256
    _change_image(root)
    changed = FashionProducts(root).cached((80, 60), cache_root=tmp_path / "c", progress=False)
    assert changed.cache.pixels_sha256 != first.cache.pixels_sha256


def test_interrupted_build_leaves_no_cache_and_the_next_run_rebuilds(make_layout, tmp_path, monkeypatch):
    root = make_layout(_rows(), COLOURS)
    calls = {"n": 0}
    real = cache_mod.decode_image

    def dies_on_fourth(path, size):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(cache_mod, "decode_image", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    folder = cache_mod.cache_dir_for(root, (80, 60), tmp_path / "c")
    assert sorted(p.name for p in folder.iterdir()) == []  # no half-written images.npy, no index
    monkeypatch.setattr(cache_mod, "decode_image", real)
    ds = FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    assert ds.cache.built_now and ds.images.shape[0] == 5


def test_interrupt_during_rebuild_never_leaves_an_index_that_describes_other_images(make_layout, tmp_path, monkeypatch):
    root = make_layout(_rows(), COLOURS)
    FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    _change_image(root)
    monkeypatch.setattr(cache_mod, "decode_image", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    monkeypatch.undo()
    ds = FashionProducts(root).cached(cache_root=tmp_path / "c", progress=False)
    assert ds.cache.built_now
    assert np.abs(ds.images[1].reshape(-1, 3).mean(0) - np.array([10, 20, 30])).max() < 3


@pytest.mark.realdata
def test_real_cache_builds_once_and_loads_five_times_faster_than_decoding(real_data, tmp_path_factory):
    cache_root = tmp_path_factory.getbasetemp() / "real-cache"
    ds = FashionProducts(real_data, warn=False)
    built = ds.cached(cache_root=cache_root, progress=False)
    assert built.images.shape == (44_072, 80, 60, 3) and not built.corrupt
    fresh = FashionProducts(real_data, warn=False)  # reading styles.csv is the same cost with or without a cache
    start = time.perf_counter()
    loaded = fresh.cached(cache_root=cache_root, progress=False)
    elapsed = time.perf_counter() - start
    assert not loaded.cache.built_now
    # Side by side, not an absolute bound: the staleness check stats 44k files at this disk's speed.
    # Decoding every image again, extrapolated from 400 of them, is what the cache saves; measured here
    # 0.6-0.8 s against 16.6 s, so 5x leaves room for a slow disk without letting a regression through.
    start = time.perf_counter()
    for i in range(0, 400):
        decode_image(real_data / "images" / f"{int(ds.ids[i * 100])}.jpg", (80, 60))
    decode_all = (time.perf_counter() - start) * len(ds.ids) / 400
    assert elapsed < decode_all / 5, f"loading the real cache took {elapsed:.2f} s, decoding {decode_all:.1f} s"
    assert np.array_equal(loaded.ids, ds.ids)
    i = int(np.flatnonzero(loaded.ids == 15970)[0])  # the first row of styles.csv, a navy shirt
    assert loaded.styles.loc[i, "articleType"] == "Shirts"
    assert np.array_equal(loaded.images[i], decode_image(real_data / "images" / "15970.jpg", (80, 60)))
