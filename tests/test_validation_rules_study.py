"""benchmarks/studies/validation_rules.py end to end on a tiny synthetic catalogue (small grids, 32x24 images):
the files, the summaries' ranges, and that the study's picks and test scores are the library methods' own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.studies import validation_rules as study

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

OVERRIDES = ["data.n_head=4", "data.image_size=[32, 24]", "longtail.epochs=2", "longtail.batch_size=64",
             "longtail.weight_decays=[0.0001, 0.01]", "longtail.taus=[0.0, 1.0]", "text.max_features=256",
             "fusion.thresholds=[0.0, 0.5, 1.0]", "fusion.weights=[0.0, 0.5, 1.0]"]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fewshot.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("vr") / "data"
    write_synthetic(root, n_classes=10, n_images=360, seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def ran(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("vr-out") / "study"
    args = study.get_args_parser().parse_args(["--data", str(synth_data), "--out", str(out), "--no-progress",
                                               *OVERRIDES])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second busy process stalls 2-thread barriers on a 2-core box
    try:
        return study.main(args), out
    finally:
        torch.set_num_threads(threads)


def test_files_and_ranges(ran: tuple[dict, Path]) -> None:
    _, out = ran
    assert (out / "README.md").is_file() and (out / "results.json").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["decision"]["chosen"] in study.RULES
    assert {s["method"] for s in saved["summaries"]} == {*study.METHODS, "text"}
    assert {(s["group"], s["rule"]) for s in saved["summaries"]} == {(g, r) for g in study.GROUPS for r in study.RULES}
    for s in [*saved["summaries"], *saved["methods"]]:
        for key in ("spearman", "kendall"):
            assert s[key] is None or -1.0 <= s[key] <= 1.0, s
        assert s["regret"] >= 0.0 and s["test_best"] >= s["test_picked"]
        assert 0.0 <= s["val_picked"] <= 1.0 and 0.0 <= s["test_picked"] <= 1.0
    for grid in saved["grids"]:
        n = len(grid["val"])
        assert len(grid["test"]) == n and all(len(v) == n for v in grid["settings"].values())
    taus = [g for g in saved["grids"] if g["method"] == "tau_norm"]
    assert taus and all(len(g["val"]) >= 2 * 2 * 2 for g in taus)  # weight decays x taus x >= 2 epochs
    readme = (out / "README.md").read_text()
    assert "python -m benchmarks.studies.validation_rules" in readme and saved["decision"]["chosen"] in readme
    assert saved["cpu"] and saved["git_revision"]


def test_picks_are_the_library_methods(ran: tuple[dict, Path], synth_data: Path, one_torch_thread) -> None:
    """tau_norm / crt fitted by the library on all of a group's train images (with groups= under the group
    rule) choose the setting the study's validation picked, and score the test images as the study did."""
    from benchmarks.builtin.methods import crt_classifier, tau_norm_classifier
    from benchmarks.config import BenchmarkConfig
    from benchmarks.run import config_path
    from fewshot.config import load_config
    from fewshot.methods.longtail_functional import macro_top1

    result, _ = ran
    cfg = load_config(BenchmarkConfig, config_path("cpu"), OVERRIDES)
    args = study.get_args_parser().parse_args(["--data", str(synth_data), "--no-progress"])
    groups, _, _ = study.load(args, cfg)
    grids = {(g["method"], g["group"], g["rule"]): g for g in result["grids"]}
    for group in study.GROUPS:
        d = groups[group]
        for rule in study.RULES:
            for method, make in (("tau_norm", tau_norm_classifier), ("crt", crt_classifier)):
                clf = make(cfg, None).fit(d.x_train, torch.from_numpy(d.y_train),
                                          groups=d.codes if rule == "group" else None)
                grid = grids[(method, group, rule)]
                picked = {k: v[grid["picked"]] for k, v in grid["settings"].items()}
                assert {k: clf.chosen[k] for k in picked} == picked
                assert clf.chosen["val_macro_top1"] == pytest.approx(grid["val"][grid["picked"]], abs=1e-6)
                test = macro_top1(clf.scores(d.x_test), torch.from_numpy(d.y_test))
                assert test == pytest.approx(grid["test"][grid["picked"]], abs=1e-6)


def test_fusion_picks_are_late_fusions(ran: tuple[dict, Path], synth_data: Path, one_torch_thread) -> None:
    """LateFusion (tau_norm on both branches), fitted as the benchmark fits it, picks the temperatures, gate and
    weight the study's validation picked, and scores the test images as the study did."""
    from dataclasses import replace

    from benchmarks.builtin.methods import tau_norm_classifier
    from benchmarks.builtin.text import text_classifier
    from benchmarks.config import BenchmarkConfig
    from benchmarks.run import config_path
    from fewshot.config import load_config
    from fewshot.methods import LateFusion
    from fewshot.methods.fusion_functional import macro_top1

    result, _ = ran
    cfg = load_config(BenchmarkConfig, config_path("cpu"), OVERRIDES)
    text_cfg = replace(cfg, text=replace(cfg.text, classifier="tau_norm"))
    args = study.get_args_parser().parse_args(["--data", str(synth_data), "--no-progress"])
    groups, _, _ = study.load(args, cfg)
    grids = {(g["method"], g["group"], g["rule"]): g for g in result["grids"]}
    d = groups["tail"]
    for rule in study.RULES:
        fusion = LateFusion(tau_norm_classifier(cfg, None), text_classifier(text_cfg), d.x_train.shape[1],
                            val_fraction=cfg.fusion.val_fraction, seed=cfg.seed, thresholds=cfg.fusion.thresholds,
                            weights=cfg.fusion.weights)
        fusion.fit(torch.cat([d.x_train, d.t_train], 1), torch.from_numpy(d.y_train),
                   groups=d.codes if rule == "group" else None)
        fused = fusion.fused(torch.cat([d.x_test, d.t_test], 1))
        gate, product = grids[("fusion_gate", "tail", rule)], grids[("fusion_product", "tail", rule)]
        g = {k: v[gate["picked"]] for k, v in gate["settings"].items()}
        assert (g["primary"], g["threshold"]) == (fusion.chosen["gate_primary"], fusion.chosen["threshold"])
        assert g["image_temperature"] == pytest.approx(fusion.chosen["image_temperature"], rel=1e-6)
        assert g["text_temperature"] == pytest.approx(fusion.chosen["text_temperature"], rel=1e-6)
        assert product["settings"]["image_weight"][product["picked"]] == fusion.chosen["image_weight"]
        y_test = torch.from_numpy(d.y_test)
        assert macro_top1(fused["gate"], y_test) == pytest.approx(gate["test"][gate["picked"]], abs=1e-6)
        assert macro_top1(fused["product"], y_test) == pytest.approx(product["test"][product["picked"]], abs=1e-6)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    from fewshot.utils.errors import UserError

    args = study.get_args_parser().parse_args(["--data", str(tmp_path / "nowhere"), "--out", ""])
    with pytest.raises(UserError, match="no such"):
        study.main(args)


def test_rank_correlations_edge_cases() -> None:
    assert study.rank_correlations([0.5], [0.4]) == (None, None)
    assert study.rank_correlations([0.5, 0.5], [0.1, 0.2]) == (None, None)
    rho, tau = study.rank_correlations([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert rho == pytest.approx(-1.0) and tau == pytest.approx(-1.0)
    s = study.summarise([0.9, 0.8, 0.7], [0.5, 0.6, 0.4], picked=0)
    assert s["regret"] == pytest.approx(0.1) and s["optimism_picked"] == pytest.approx(0.4)
    assert np.isclose(s["optimism_mean"], np.mean([0.4, 0.2, 0.3]))
