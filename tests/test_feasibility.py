"""Every setting checked against the data before any phase runs (benchmarks/protocols/feasibility.py), and
fitted to it with data.fit_to_data: on generated catalogues read without decoding a pixel (a manifest whose
rows all point at tiny files), so each case costs milliseconds. The check must mirror the phases: a config it
passes builds every sampler the phases build, with the phases' own constructors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmarks.builtin  # noqa: F401  (registers the built-in embeddings and methods)
from benchmarks.builtin.embeddings import protonet_rows
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.episodic_split import EpisodicSplit
from benchmarks.engine.feasibility import EpisodeNeed, Setting, merge_adjustments
from benchmarks.protocols.feasibility import settle, walk, with_settings
from benchmarks.registry.methods import configured_methods, resolve_config
from fewshot.config import load_config
from fewshot.data.manifest import ManifestCatalog
from fewshot.data.protocols import EpisodicProtocol, TransferProtocol, class_split_for, split_rule_for
from fewshot.sampling import EpisodeSampler
from fewshot.training.episodic import EpisodicObjective, validation_sampler
from fewshot.training.meta import MetaObjective
from fewshot.utils.errors import UserError
from tests.test_own_data import write_image, write_manifest

CONFIGS = Path(__file__).resolve().parent.parent / "benchmarks" / "configs"


def config(name: str = "smoke", **changes) -> BenchmarkConfig:
    return with_settings(resolve_config(load_config(BenchmarkConfig, CONFIGS / f"{name}.toml")), changes)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """``catalogue(counts, text=True)``: a manifest of ``len(counts)`` classes (C00, C01...) with ``counts[i]``
    rows each (a seeded stratified split), every file a copy of one 2x2 PNG."""
    root = tmp_path_factory.mktemp("catalogues")
    write_image(root / "blank.png", np.zeros((2, 2, 3), np.uint8))
    blank = (root / "blank.png").read_bytes()
    made: dict[tuple, ManifestCatalog] = {}

    def make(counts: tuple[int, ...], text: bool = True) -> ManifestCatalog:
        if (counts, text) not in made:
            folder = root / f"c{len(made)}"
            (folder / "img").mkdir(parents=True)
            rows = []
            for c, n in enumerate(counts):
                for i in range(n):
                    (folder / "img" / f"{c}_{i}.png").write_bytes(blank)
                    rows.append([f"img/{c}_{i}.png", f"C{c:02d}", *([f"a C{c:02d} thing"] if text else [])])
            header = ("path", "label", "text") if text else ("path", "label")
            made[counts, text] = ManifestCatalog(write_manifest(folder / "m.csv", rows, header))
        return made[counts, text]

    return make


def phase_samplers(cfg: BenchmarkConfig, ds: ManifestCatalog) -> int:
    """Build every episode sampler the configured phases build, with their constructors (the objectives'
    and the evaluation's); how many. Raises where a phase would."""
    settings, labels, built = cfg.data.protocol_settings(cfg.seed), ds.labels, 0
    images = np.zeros((len(ds), 1, 1, 3), np.uint8)
    names = {m.name for p in ("transfer", "episodic") for m in configured_methods(cfg, p)}
    if configured_methods(cfg, "transfer"):
        tp = TransferProtocol.from_catalog(ds, split_rule_for(ds, **settings), n_head=cfg.data.n_head,
                                           min_train=cfg.data.min_train)
        assert len(tp.tail) >= 2
        for classes, method in (("head", "protonet"), ("all", "protonet_all")):
            if method in names:
                train, val = protonet_rows(cfg, labels, tp, classes)
                EpisodicObjective(images, labels, train, val, cfg.protonet.episodes, cfg.train("protonet"))
                built += 1
    if configured_methods(cfg, "episodic"):
        ep = EpisodicProtocol.from_catalog(ds, class_split_for(ds, **settings), min_images=cfg.data.min_images)
        split = EpisodicSplit.make(cfg, ep)
        if {"protonet", "baseline_centroid"} & names:  # background_train, and protonet_bg_train from it
            assert len(split.train_classes) >= 2
            validation_sampler(labels[split.val_idx], cfg.protonet.episodes, cfg.seed)
            built += 1
        if "protonet" in names:
            EpisodicObjective(images, labels, split.train_idx, split.val_idx, cfg.protonet.episodes,
                              cfg.train("protonet"))
            built += 1
        if {"maml", "anil"} & names:
            rows = np.concatenate([split.train_idx, split.val_idx])
            positions = np.arange(len(rows))
            MetaObjective(torch.zeros(len(rows), 4), labels[rows], positions[: len(split.train_idx)],
                          positions[len(split.train_idx):], cfg.meta.tasks, cfg.train("meta"))
            built += 1
        for way in cfg.evaluation.ways:
            for shot in cfg.evaluation.shots:
                EpisodeSampler(labels[ep.evaluation_idx], way, shot, cfg.evaluation.n_query, 1)
                built += 1
    return built


# --- an episode need on its own ---------------------------------------------------------------------------


def _need(counts: dict[str, int], way=5, shot=5, query=5) -> EpisodeNeed:
    return EpisodeNeed("ProtoNet training episodes", "the head classes' train images", counts,
                       Setting("p.n_way", way), Setting("p.n_shot", shot), Setting("p.n_query", query))


@pytest.mark.parametrize(("counts", "pinned", "fit"), [
    ({"A": 40, "B": 30, "C": 12, "D": 8, "E": 6}, (), {"p.n_query": 1}),  # the way, then the shots are kept
    ({"A": 40, "B": 30, "C": 12, "D": 8, "E": 3}, (), {"p.n_shot": 2, "p.n_query": 1}),
    ({"A": 40, "B": 30, "C": 12, "D": 1, "E": 1}, (), {"p.n_way": 3}),
    ({"A": 40, "B": 30, "C": 12, "D": 1, "E": 1}, ("p.n_way",), None),  # the way is pinned: nothing fits
    ({"A": 40, "B": 30, "C": 12, "D": 8, "E": 6}, ("p.n_query",), {"p.n_shot": 1}),
    ({"A": 1, "B": 1}, (), None),  # below 2-way 1-shot 1-query
    ({"A": 10, "B": 10, "C": 10, "D": 10, "E": 10}, (), {}),
])
def test_an_episode_need_fits_the_largest_way_then_shot_then_query(counts, pinned, fit):
    need = _need(counts)
    assert need.fit(pinned) == fit and need.met is (fit == {})
    if fit:
        assert dataclasses.replace(need, **{k.split(".")[1].replace("n_", ""): Setting(k, v)
                                            for k, v in fit.items()}).met


def test_evaluation_episodes_need_every_class_to_hold_the_largest_shot_and_the_queries():
    need = EpisodeNeed("evaluation episodes", "evaluation classes (with >= data.min_images=10 images)",
                       {"Belts": 14, "Caps": 16, "Bags": 30, "Ties": 25}, Setting("evaluation.ways", (2, 5, 15)),
                       Setting("evaluation.shots", (1, 5)), Setting("evaluation.n_query", 15), every_class=True)
    assert need.fit() == {"evaluation.ways": (2, 4), "evaluation.n_query": 9}
    assert need.fit({"evaluation.n_query"}) is None and need.fit({"evaluation.ways"}) is None
    line = need.problem(need.fit())
    assert line.startswith("evaluation.ways=[2, 5, 15]: the data has 4 evaluation classes (with >= "
                           "data.min_images=10 images), fewer than 15-way evaluation episodes need; evaluation "
                           "episodes need >= 20 images (max shot 5 + 15 queries) of every one of the 4 evaluation ")
    assert "and 2 have fewer (Caps 16, Belts 14); evaluation.ways=[2, 4] and evaluation.n_query=9 would work" in line


def test_fitted_settings_merge_by_key_and_keep_each_left_out_list():
    entries = [{"key": "a.n", "from": 5, "to": 3, "why": "x"}, {"key": "methods", "from": ["m", "t"], "to": ["m"],
                                                                "why": "y"},
               {"key": "a.n", "from": 3, "to": 2, "why": "z"}, {"key": "methods", "from": ["m"], "to": [], "why": "w"}]
    assert merge_adjustments(entries) == [{"key": "a.n", "from": 5, "to": 2, "why": "x | z"}, entries[1], entries[3]]


# --- the check on a catalogue: the phases' own samplers accept what it passes -------------------------------


def _long_tail(seed: int) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 30))
    return tuple(sorted((int(v) for v in np.clip(12 * rng.pareto(1.0, n) + 2, 2, 60)), reverse=True))


@pytest.mark.parametrize("seed", range(12))
def test_a_fitted_config_builds_every_sampler_of_its_phases(seed, catalogue):
    ds = catalogue(_long_tail(seed))
    fitted, steps = walk(config(**{"data.min_images": 8 if seed % 2 else 20}), ds, None)
    assert walk(fitted, ds, None)[1] == []  # the fit is a fixed point: fitting again changes nothing
    assert phase_samplers(fitted, ds) > 0
    for step in steps:  # every change lowers a value, or leaves something out
        for key, value in step.fix.items():
            before = step.cfg
            for part in key.split("."):
                before = getattr(before, part)
            assert (set(value) < set(before)) if isinstance(value, tuple) and key in ("methods", "protocols") else \
                (max(value) if isinstance(value, tuple) else value) <= (max(before) if isinstance(before, tuple)
                                                                       else before), key


@pytest.mark.parametrize("seed", range(12))
def test_every_need_the_check_reports_is_one_a_phase_would_stop_on(seed, catalogue):
    """Each step of the check, in the config the steps before it made, is a sampler (or a split) a phase would
    fail to build; once every step's change is made, every one builds."""
    ds = catalogue(_long_tail(seed))
    cfg = config(**{"data.fit_to_data": False, "data.min_images": 8 if seed % 2 else 20})  # odd: small classes
    for step in walk(cfg, ds, None)[1]:
        if step.lead.key != "methods":  # product names: no sampler; the text branch would abstain
            with pytest.raises((ValueError, AssertionError)):
                phase_samplers(cfg, ds)
        cfg = with_settings(cfg, step.fix)
    phase_samplers(cfg, ds)


def test_an_unfitted_config_is_refused_with_one_line_per_setting_naming_a_value_that_works(catalogue):
    # the folder, after its own advice: data.min_images=10 leaves evaluation classes of 10-19 images
    counts = (60, 53, 47, 41, 36, 32, 28, 25, 22, 20, 17, 15, 13, 12, 10, 9, 8, 7, 6, 6, 5, 4, 4, 3, 3)
    ds = catalogue(counts, text=False)
    cfg = config(**{"data.fit_to_data": False, "data.min_images": 10})
    with pytest.raises(UserError) as refused:
        settle(cfg, ds, None)
    head, *lines = str(refused.value).splitlines()
    assert head.startswith(f"the data at {ds.root} cannot hold {len(lines)} settings (nothing was trained; "
                           "data.fit_to_data=true fits them")
    assert lines[0].startswith("  methods text, fusion_gate, fusion_product: they read product names, and no train "
                               "image has one (the manifest has no text column); leaving out")
    query = next(line for line in lines if line.startswith("  evaluation.n_query=15:"))
    assert "evaluation episodes need >= 20 images (max shot 5 + 15 queries) of every one of" in query
    assert query.endswith("evaluation.n_query=10 would work")  # 15 images in the smallest evaluation class
    fixed = cfg
    for step in walk(cfg, ds, None)[1]:
        fixed = with_settings(fixed, step.fix)
    assert walk(fixed, ds, None)[1] == [] and phase_samplers(fixed, ds) > 0


def test_eight_classes_with_four_head_classes_fit_protonet_episodes_instead_of_a_traceback(catalogue):
    ds = catalogue((40, 35, 30, 28, 25, 22, 20, 18))
    cfg = config(**{"data.n_head": 4})
    with pytest.raises(UserError, match=r"protonet.episodes.n_way=5: ProtoNet \(protonet_train\) training episodes "
                                        r"need 5 classes with >= 10 images \(5 shots \+ 5 queries\) among the head "
                                        r"classes' train images.*; 4 have that many"):
        settle(with_settings(cfg, {"data.fit_to_data": False}), ds, None)
    fitted, changes = settle(cfg, ds, None, pinned={"data.n_head"})
    assert fitted.data.n_head == 4 and fitted.protonet.episodes.n_way == 2 and phase_samplers(fitted, ds) > 0
    assert {c["key"] for c in changes} >= {"protonet.episodes.n_way", "evaluation.ways"}


@pytest.mark.parametrize(("key", "value"), [("evaluation.ways", (2, 50)), ("evaluation.n_query", 40),
                                            ("protonet.episodes.n_way", 30), ("data.n_head", 40)])
def test_the_fit_never_changes_a_key_given_on_the_command_line(key, value, catalogue):
    ds = catalogue((40, 35, 30, 28, 25, 22, 20, 18))
    with pytest.raises(UserError) as refused:
        settle(config(**{key: value}), ds, None, pinned={key})
    head, *lines = str(refused.value).splitlines() if "\n" in str(refused.value) else str(refused.value).split(": ", 1)
    assert "given on the command line (data.fit_to_data changes only the config's own)" in head
    assert lines and all(line.strip().startswith(f"{key}=") for line in lines)  # one line per setting


def test_smoke_as_shipped_holds_on_22_classes_13_with_20_images_and_is_fitted_below(catalogue):
    enough = (20,) * 13 + (8,) * 9
    assert walk(config(), catalogue(enough), None)[1] == []
    for fewer in ((20,) * 13 + (8,) * 8, (20,) * 12 + (8,) * 10, (19,) * 13 + (8,) * 9):
        ds = catalogue(fewer)
        fitted, changes = settle(config(), ds, None)
        assert changes and phase_samplers(fitted, ds) > 0


@pytest.mark.parametrize(("counts", "protocols"), [
    ((3,) * 6, ("transfer", "episodic")),  # 6 classes of 3 images: both protocols, 1-shot 1-query
    ((2,) * 4, ("transfer",)),  # 4 classes: the transfer protocol only (without its ProtoNets)
    ((30, 25, 20, 18, 16, 14), ("transfer", "episodic")),
])
def test_the_smallest_catalogues_either_protocol_runs_on(counts, protocols, catalogue):
    ds = catalogue(counts)
    fitted, changes = settle(config(), ds, None)
    assert fitted.protocols == protocols and changes and all(c["why"] for c in changes)
    phase_samplers(fitted, ds)


@pytest.mark.parametrize("counts", [(30, 25, 20), (2, 2, 1)])
def test_too_few_classes_for_either_protocol_is_one_line(counts, catalogue):
    ds = catalogue(counts)
    with pytest.raises(UserError) as refused:
        settle(config(), ds, None)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"nothing can run on the data at {ds.root}: the transfer "
                                                       "protocol needs 4 classes with train images (2 head, 2 tail)")
    assert "the episodic protocol needs 2 evaluation classes and 4 background classes" in message
