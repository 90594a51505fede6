"""The at-a-glance plots read the numbers they are given: heatmap cells and bucket bars, checked on a
small hand-made run."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from benchmarks.reports.overview import buckets, heatmap  # noqa: E402

PER_CLASS = pd.DataFrame([
    # class, group, n_train, n_test, bucket, a/top1, a/top5, b/top1, b/top5
    ("Shirts", "head", 500, 40, "many", 0.9, 1.0, 0.8, 1.0),
    ("Watches", "head", 900, 30, "many", 1.0, 1.0, 0.7, 1.0),
    ("Gloves", "tail", 12, 5, "few", 0.2, 0.6, np.nan, np.nan),
    ("Scarves", "tail", 60, 9, "medium", 0.5, 0.9, np.nan, np.nan),
    ("Robe", "tail", 3, 0, "few", np.nan, np.nan, np.nan, np.nan),  # no test image: not a row
    ("Lamp", "evaluation", 0, 25, "", np.nan, np.nan, np.nan, np.nan),  # episodic classes: not drawn
], columns=["class", "group", "n_train", "n_test", "bucket", "a/top1", "a/top5", "b/top1", "b/top5"])

SUMMARY = {"transfer": {
    "head": {"a": {"buckets": {"many": 0.95, "medium": None, "few": None}},
             "b": {"buckets": {"many": 0.75, "medium": None, "few": None}}},
    "tail": {"a": {"buckets": {"many": None, "medium": 0.5, "few": 0.0}}},
}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_heatmap_rows_are_the_groups_test_classes_by_train_images_and_cells_their_top1_percent():
    fig = heatmap(plt, SUMMARY, PER_CLASS, "t")
    head, tail = fig.axes[:2]
    assert [t.get_text() for t in head.get_yticklabels()] == ["Watches (900)", "Shirts (500)"]
    assert [t.get_text() for t in head.get_xticklabels()] == ["a", "b"]
    np.testing.assert_allclose(head.images[0].get_array(), [[100, 70], [90, 80]])
    # a method with no figure for the group is not a column; a class without test images is not a row
    assert [t.get_text() for t in tail.get_xticklabels()] == ["a"]
    assert [t.get_text() for t in tail.get_yticklabels()] == ["Scarves (60)", "Gloves (12)"]
    np.testing.assert_allclose(tail.images[0].get_array(), [[50], [20]])


def test_bucket_bars_give_each_methods_bucket_means_and_leave_empty_buckets_out():
    fig = buckets(plt, SUMMARY, PER_CLASS, "t")
    head, tail = fig.axes
    assert [t.get_text() for t in head.get_legend().get_texts()] == ["Many"]
    assert [p.get_height() for p in head.patches] == pytest.approx([95, 75])
    assert [t.get_text() for t in tail.get_legend().get_texts()] == ["Medium", "Few"]
    assert [p.get_height() for p in tail.patches] == pytest.approx([50, 0])  # a 0.0 mean is a bar, not a gap


def test_overview_plots_are_skipped_for_a_run_without_transfer_results():
    episodic_only = PER_CLASS[PER_CLASS["group"] == "evaluation"]
    assert heatmap(plt, {"episodic": {}}, episodic_only, "t") is None
    assert buckets(plt, {"episodic": {}}, episodic_only, "t") is None
