"""benchmarks/studies/text_encoders.py end to end on a tiny synthetic catalogue: both rules, validation beside
test, the files and the picks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.studies import text_encoders as study

pytest.importorskip("sklearn")

OVERRIDES = ["data.n_head=4", "data.image_size=[32, 24]", "longtail.epochs=2", "longtail.batch_size=64",
             "longtail.taus=[0.0, 1.0]", "text.max_features=256"]


def test_runs_end_to_end(tmp_path: Path, one_torch_thread) -> None:
    from fewshot.data.synth import write_synthetic

    write_synthetic(tmp_path / "data", n_classes=10, n_images=360, seed=1, progress=False)
    out = tmp_path / "out"
    args = study.get_args_parser().parse_args(["--data", str(tmp_path / "data"), "--out", str(out), "--no-progress",
                                               *OVERRIDES, "--encoders", "tfidf", "bow", "--classifiers",
                                               "centroid", "tau_norm", "logreg"])
    threads = torch.get_num_threads()
    try:
        result = study.main(args)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((out / "results.json").read_text())
    assert (out / "results.md").is_file()
    assert len(saved["rows"]) == 2 * 2 * 3 * 2  # encoders x groups x classifiers x rules
    for row in saved["rows"]:
        for key in ("val_macro_top1", "test_macro_top1", "val_macro_top5", "test_macro_top5"):
            assert 0.0 <= row[key] <= 1.0
        assert row["val_macro_top1"] <= row["val_macro_top5"]
    by = {(r["encoder"], r["classifier"], r["group"], r["rule"]): r for r in saved["rows"]}
    # nothing chosen on validation: the test figure is the same under both rules
    for enc in ("tfidf", "bow"):
        for clf in ("centroid", "logreg"):
            assert by[(enc, clf, "tail", "group")]["test_macro_top1"] == by[(enc, clf, "tail", "stratified")][
                "test_macro_top1"]
    assert "tau" in by[("bow", "tau_norm", "tail", "group")]["chosen_on_test_fit"]
    assert set(saved["picks"]) == {f"{g}/{r}" for g in ("tail", "head", "mean") for r in ("stratified", "group")}
    assert all(p["regret"] >= 0 for p in saved["picks"].values())
    assert result["picks"]["tail/group"]["encoder"] in ("tfidf", "bow")
    assert "python -m benchmarks.studies.text_encoders" in (out / "results.md").read_text()
