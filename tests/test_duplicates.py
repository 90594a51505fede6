from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from fewshot.data.dataset import FashionProducts
from fewshot.data.duplicates import (
    align_groups,
    copies_across,
    dataset_groups,
    describe_duplicates,
    keep_one_per_group,
    pixel_groups,
)
from fewshot.data.protocols import EpisodicProtocol, TransferProtocol
from tests.conftest import style_row


def _reference_groups(images: np.ndarray) -> np.ndarray:
    """Plain Python: group rows by their bytes, number groups of 2+ rows by first occurrence."""
    rows: dict[bytes, list[int]] = {}
    for i, image in enumerate(images):
        rows.setdefault(image.tobytes(), []).append(i)
    groups = np.full(len(images), -1, dtype=np.int64)
    for number, members in enumerate(sorted((m for m in rows.values() if len(m) > 1), key=lambda m: m[0])):
        groups[members] = number
    return groups


def _layout(seed: int) -> np.ndarray:
    """uint8 [N, 4, 3, 3] random pictures, some rows overwritten by copies of others (chains included)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    images = rng.integers(0, 256, size=(n, 4, 3, 3), dtype=np.uint8)
    if seed % 3 == 0:  # few distinct colours: chance copies too
        images = rng.integers(0, 2, size=(n, 4, 3, 3), dtype=np.uint8) * 255
        images[:] = images[:, :1, :1]
    for _ in range(int(rng.integers(0, n))):
        images[rng.integers(n)] = images[rng.integers(n)]
    return images


@pytest.mark.parametrize("seed", range(12))
def test_pixel_groups_and_dedupe_match_a_dict_of_bytes(seed):
    images = _layout(seed)
    groups = pixel_groups(images, chunk=7)  # several chunks: copies across chunk borders
    assert np.array_equal(groups, _reference_groups(images))
    keep = keep_one_per_group(groups)
    kept = [images[i].tobytes() for i in np.flatnonzero(keep)]
    assert len(kept) == len(set(kept)) == len({im.tobytes() for im in images})  # one per picture, none lost
    assert keep[groups < 0].all()  # a unique image is never dropped
    for g in range(groups.max(initial=-1) + 1):
        members = np.flatnonzero(groups == g)
        assert len(members) >= 2 and keep[members].tolist() == [True] + [False] * (len(members) - 1)


def test_pixel_groups_numbers_by_first_occurrence_and_reads_a_memmap(tmp_path):
    a, b, c, d = (np.full((2, 2, 3), v, dtype=np.uint8) for v in (1, 2, 3, 4))
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(7, 2, 2, 3))
    images[:] = np.stack([c, a, b, a, c, d, c])
    images.flush()
    loaded = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert pixel_groups(loaded, chunk=2).tolist() == [0, 1, -1, 1, 0, -1, 0]
    assert keep_one_per_group(pixel_groups(loaded)).tolist() == [True, True, True, False, False, True, False]
    assert pixel_groups(np.zeros((0, 2, 2, 3), np.uint8)).tolist() == []


def test_pixel_groups_rejects_a_wrong_array():
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        pixel_groups(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pixel_groups(np.zeros((3, 4, 4, 3), np.float32))


def test_copies_across_lists_the_test_rows_whose_group_is_in_train():
    groups = np.array([0, 1, -1, 0, 1, 2, 2, -1, 3, 3])
    train, test = np.array([0, 2, 5, 8, 9]), np.array([7, 6, 4, 3, 1])
    assert copies_across(groups, train, test).tolist() == [6, 3]  # group 1 is only in test: kept
    assert copies_across(groups, [], test).tolist() == []
    assert copies_across(np.full(10, -1), train, test).tolist() == []


def test_describe_duplicates_counts_groups_files_and_classes():
    groups = np.array([0, 0, 1, 1, 1, -1, 2, 2, -1])
    articles = np.array(["A", "A", "A", "B", "A", "A", "C", "C", "B"], dtype=object)
    assert describe_duplicates(groups, articles) == {"groups": 3, "files": 7, "extra_copies": 4,
                                                     "within_class_groups": 2, "cross_class_groups": 1}
    assert describe_duplicates(np.full(3, -1), articles[:3])["groups"] == 0


@pytest.mark.parametrize("call", [
    lambda g: describe_duplicates(g, np.array(["A"] * 4, dtype=object)),
    lambda g: TransferProtocol.from_styles(_transfer_styles(), n_head=1, duplicate_groups=g),
    lambda g: EpisodicProtocol.from_styles(_transfer_styles(), duplicate_groups=g),
])
def test_groups_of_the_wrong_length_are_one_clear_error(call):
    with pytest.raises(ValueError, match="duplicate groups have 3 rows, but the table has"):
        call(np.array([0, 0, -1]))


def test_groups_must_be_integers():
    with pytest.raises(ValueError, match="1-D integer array"):
        keep_one_per_group(np.array([0.0, 0.0]))


def test_align_groups_carries_groups_onto_other_ids_and_renumbers():
    groups = np.array([0, 1, 0, 1, -1])
    cache_ids = np.array([10, 11, 12, 13, 14])
    assert align_groups(groups, cache_ids, [10, 99, 11, 12, 13, 14]).tolist() == [0, -1, 1, 0, 1, -1]
    assert align_groups(groups, cache_ids, [13, 12, 11, 10]).tolist() == [0, 1, 0, 1]  # renumbered
    assert align_groups(groups, cache_ids, [10, 11, 13]).tolist() == [-1, 0, 0]  # 10 lost its copy


def test_dataset_groups_of_a_cached_dataset(make_layout, tmp_path):
    rows = [style_row(i, "Shirts") for i in range(1, 6)]
    root = make_layout(rows, {1: (200, 0, 0), 2: (0, 200, 0), 3: (200, 0, 0), 4: (0, 0, 200), 5: (0, 200, 0)})
    ds = FashionProducts(root)
    with pytest.raises(ValueError, match="not served from the image cache"):
        dataset_groups(ds)
    assert dataset_groups(ds.cached(cache_root=tmp_path / "c", progress=False)).tolist() == [0, 1, 0, -1, 1]


def _transfer_styles():
    import pandas as pd
    return pd.DataFrame({"articleType": np.array(["A", "A", "B", "B"], dtype=object),
                         "year": pd.array([2012, 2011, 2012, 2011], dtype="Int64")})


# --- the real catalogue -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_cached(real_data, tmp_path_factory):
    """The real catalogue served from its 80x60 cache, in the folder test_dataset_cache's real test uses
    (one decode per session for both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FashionProducts(real_data, warn=False).cached(
            cache_root=tmp_path_factory.getbasetemp() / "real-cache", progress=False)


@pytest.fixture(scope="module")
def real_groups(real_cached):
    start = time.perf_counter()
    groups = dataset_groups(real_cached)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"hashing 44k images took {elapsed:.1f} s"  # ~1.3 s on 2 cores with a warm page cache
    return groups


@pytest.mark.realdata
def test_real_catalogue_has_651_groups_of_1429_copies(real_cached, real_groups):
    assert real_cached.images.shape == (44_072, 80, 60, 3)
    counts = describe_duplicates(real_groups, real_cached.styles["articleType"].to_numpy(object))
    assert counts == {"groups": 651, "files": 1_429, "extra_copies": 778, "within_class_groups": 644,
                      "cross_class_groups": 7}
    assert np.bincount(np.bincount(real_groups[real_groups >= 0])).tolist() == [0, 0, 527, 121, 3]


@pytest.mark.realdata
def test_real_transfer_drops_six_test_copies_of_train_images(real_cached, real_groups):
    plain = TransferProtocol.from_styles(real_cached.styles)
    p = TransferProtocol.from_styles(real_cached.styles, duplicate_groups=real_groups)
    assert p.head == plain.head and p.tail == plain.tail
    assert np.array_equal(p.head_train, plain.head_train) and np.array_equal(p.tail_train, plain.tail_train)
    assert len(np.unique(real_groups[p.dropped_test])) == 6 and len(p.dropped_test) == 6
    assert sorted(real_cached.ids[p.dropped_test].tolist()) == [1165, 12346, 18592, 21388, 57906, 59516]
    assert (len(p.head_test), len(p.tail_test)) == (14_004 - 5, 4_138 - 1)
    totals = p.totals()
    assert (totals["n_dropped_test"], totals["n_head_test_dropped"], totals["n_tail_test_dropped"]) == (6, 5, 1)
    assert int(p.counts["n_test"].sum()) == int(plain.counts["n_test"].sum()) - 6


@pytest.mark.realdata
def test_real_episodic_keeps_one_image_per_group(real_cached, real_groups):
    plain = EpisodicProtocol.from_styles(real_cached.styles)
    p = EpisodicProtocol.from_styles(real_cached.styles, duplicate_groups=real_groups)
    assert (p.background, p.evaluation) == (plain.background, plain.evaluation)
    totals = p.totals()
    assert (totals["n_dropped_duplicates"], totals["n_background_dropped"], totals["n_evaluation_dropped"]) == (
        778, 435, 343)
    assert (len(p.background_idx), len(p.evaluation_idx)) == (24_722 - 435, 18_939 - 343)
    assert (len(plain.background_idx), len(plain.evaluation_idx)) == (24_722, 18_939)


@pytest.mark.realdata
def test_real_summary_reports_duplicates_from_the_cache(real_data, real_cached, capsys, monkeypatch,
                                                        tmp_path_factory):
    import json

    from fewshot.cli import main
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path_factory.getbasetemp() / "real-cache"))
    assert main(["summary", "--data", str(real_data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_duplicate_groups"], out["n_duplicate_files"], out["deduplicated"]) == (651, 1_429, True)
    assert (out["n_head_test"], out["n_tail_test"], out["n_dropped_test"]) == (13_999, 4_137, 6)
    assert main(["summary", "--data", str(real_data), "--json", "--protocol", "episodic", "--no-dedupe"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deduplicated"] is False and "n_dropped_duplicates" not in out
    assert (out["n_background_images"], out["n_duplicate_within_class_groups"]) == (24_722, 644)
