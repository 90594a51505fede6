"""Which validation rule should the benchmark's choices use? Validation against test, by measurement (issue 27).

    python -m benchmarks.studies.validation_rules [--data DIR] [--out DIR] [--config cpu] [key=value ...]

Every choice the benchmark makes on validation images (the long-tail heads' weight decay, epochs and tau, the
text classifier's, the fusion's temperatures, gate and weight) is carved from a group's train images; the
test images are other years. Two rules carve it: ``stratified`` (a random share of each class's train
images) and ``group`` (whole (year, season) groups of each class held out, pixel-identical copies on one
side: :class:`fewshot.data.validation.ValidationRule` and ``fit(..., groups=)``, as the benchmark does).

The catalogue is read as the benchmark reads it (``open_dataset(...).cached(data.image_size)``, the
transfer protocol of its split rule with pixel copies of train images left out of test); every image gets
its frozen ImageNet EfficientNet-Lite0 features (the benchmark's cache entry) and its product name TF-IDF
features (``text.max_features``, fitted on the head and tail train names, the benchmark's text cache).
For the tail and head groups, under each rule, every method that selects on validation and every setting
of its grid gets a validation macro top-1 (trained on the train part of the split, scored on its
validation part) and a test macro top-1 (trained on all the group's train images, scored on its test
images) with the same setting:

- ``crt``, ``tau_norm``, ``logit_adjust`` on the image features: weight decay x epoch x tau
  (``[longtail]``); one training per weight decay scores every epoch and post-hoc tau, exactly as
  :class:`fewshot.methods.LinearHead` chooses (features standardised with the group's train statistics,
  the same trainer, the same seed, the same order of ties), so the setting validation picks is the one
  the library method picks and its test figure is the library method's;
- ``text:<classifier>``: the same heads on the TF-IDF features (``text.weight_decays``), plus ``centroid``
  (no setting); ``text``: the choice among the four classifiers, each at the setting its validation picked;
- ``fusion_gate`` (which branch first x threshold) and ``fusion_product`` (the image's weight): the
  tau_norm image branch and the tau_norm text branch, fitted on the train part (each choosing its own
  settings on an inner split, as :class:`fewshot.methods.LateFusion` does), temperature-scaled on the
  validation part; on test the branches are those fitted on all train images with the same temperatures.

Per (method, group, rule): Spearman and Kendall rank correlations of validation against test over the
settings, the test figure of the setting validation picks against the grid's best test figure (regret), and
the mean optimism (validation minus test); per (group, rule) the same over the methods, each at its picked
setting. The rule whose validation ranks settings and methods most like the test is the one to use.
Writes results.json and README.md into ``--out`` (default: a fresh ``runs/validation_rules-<UTC stamp>/``;
``--out benchmarks/results/validation_rules`` refreshes the committed one). Nothing from the data is copied.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.studies.outdir import OUT_HELP, output_folder
from benchmarks.studies.record import study_config, study_header
from fewshot.utils.errors import UserError, run_cli

RULES = ("stratified", "group")
GROUPS = ("tail", "head")
IMAGE_HEADS = ("crt", "tau_norm", "logit_adjust")
TEXT_CLASSIFIERS = ("centroid", "crt", "tau_norm", "logit_adjust")
PARTS = ("head_train", "head_test", "tail_train", "tail_test")  # the benchmark's text parts (its cache key)
MIN_STEPS = 300  # LinearHead's default, which the benchmark keeps


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.validation_rules", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the dataset (default: $FEWSHOT_DATA): a Kaggle folder, or any layout whose "
                                  "table has the group columns (validation.group_key)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--config", default="cpu", help="the benchmark config whose settings (longtail grids, text, "
                                                  "fusion, data) are measured: a shipped name or a TOML file "
                                                  "(default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine "
                                                          "a second busy process stalls 2-thread kernels ~10x)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="config overrides such as longtail.epochs=3")
    return p


# --------------------------------------------------------------------------------------------------- grids


@dataclass
class Grid:
    """One method's settings in one group under one rule: ``settings`` (column -> values, aligned),
    validation and test macro top-1 of each, and the position validation picks."""

    method: str
    group: str
    rule: str
    settings: dict[str, list]
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    picked: int = 0

    def add(self, setting: dict[str, Any], val: float) -> None:
        for k, v in setting.items():
            self.settings.setdefault(k, []).append(v)
        self.val.append(float(val))

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "group": self.group, "rule": self.rule, **summarise(self.val, self.test,
                                                                                          self.picked),
                "picked_setting": {k: v[self.picked] for k, v in self.settings.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "group": self.group, "rule": self.rule, "picked": self.picked,
                "settings": self.settings, "val": [round(v, 6) for v in self.val],
                "test": [round(v, 6) for v in self.test]}


def rank_correlations(val: Sequence[float], test: Sequence[float]) -> tuple[float | None, float | None]:
    """(Spearman's rho, Kendall's tau-b) of ``val`` against ``test``; None where undefined (fewer than two
    settings, or one side constant)."""
    from scipy.stats import kendalltau, spearmanr

    v, t = np.asarray(val, dtype=np.float64), np.asarray(test, dtype=np.float64)
    if len(v) < 2 or np.ptp(v) == 0 or np.ptp(t) == 0:
        return None, None
    rho, tau = float(spearmanr(v, t).statistic), float(kendalltau(v, t).statistic)
    return (None if math.isnan(rho) else rho), (None if math.isnan(tau) else tau)


def summarise(val: Sequence[float], test: Sequence[float], picked: int) -> dict[str, Any]:
    """Rank correlations, the picked setting's figures, its regret (best test - picked test, >= 0) and the
    optimism (validation - test) at the picked setting and on average over the settings."""
    v, t = np.asarray(val, dtype=np.float64), np.asarray(test, dtype=np.float64)
    rho, tau = rank_correlations(v, t)
    return {"n_settings": len(v), "spearman": rho, "kendall": tau, "val_picked": float(v[picked]),
            "test_picked": float(t[picked]), "test_best": float(t.max()), "regret": float(t.max() - t[picked]),
            "optimism_picked": float(v[picked] - t[picked]), "optimism_mean": float((v - t).mean())}


# ---------------------------------------------------------------------------------------- linear heads


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """As :meth:`fewshot.methods.LinearHead.fit`: the support's mean and (biased) std, std 1 where constant."""
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


def epochs_for(n: int, epochs: int, batch_size: int) -> int:
    """:meth:`LinearHead._epochs_for` with its default ``min_steps``: the epochs of a validation training."""
    return max(epochs, math.ceil(MIN_STEPS / math.ceil(n / batch_size)))


@dataclass
class HeadSpec:
    """The heads sharing one training: instance-balanced (tau_norm, logit_adjust) or class-balanced (crt)."""

    balanced: bool
    heads: tuple[str, ...]


SPECS = (HeadSpec(False, ("tau_norm", "logit_adjust")), HeadSpec(True, ("crt",)))


def post_hoc(head: str, logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, prior: torch.Tensor,
             tau: float | None) -> torch.Tensor:
    """The scores of a head, as its ``_post_hoc`` computes them."""
    from fewshot.methods.longtail_functional import adjust_logits, tau_norm_scale

    if head == "tau_norm":
        return logits * tau_norm_scale(weight, tau)
    if head == "logit_adjust":
        return adjust_logits(logits + bias, prior, tau)
    return logits + bias


def head_taus(head: str, taus: Sequence[float]) -> tuple[float | None, ...]:
    return (None,) if head == "crt" else tuple(float(t) for t in taus)


def trace_heads(x: torch.Tensor, y: torch.Tensor, n_classes: int, query: torch.Tensor, y_query: torch.Tensor | None,
                *, weight_decays: Sequence[float], taus: Sequence[float], epochs: int, lr: float, batch_size: int,
                seed: int, keep: Callable[[str, float, int], Sequence[float | None]] | None = None,
                abstain: torch.Tensor | None = None, heads: Sequence[str] = IMAGE_HEADS,
                ) -> tuple[dict[str, list[tuple[dict, float]]], dict[tuple, torch.Tensor]]:
    """Train each (training kind, weight decay) of the heads on ``x [n, d]``, ``y [n]`` for ``epochs``
    epochs (LinearHead's trainer and seed); after every epoch score ``query`` for every tau, by macro top-1
    on ``y_query``. Returns ({head: [(setting, macro top-1)] in LinearHead's order of ties (weight decay,
    epoch, tau)}, {(head, weight decay, epoch, tau): scores} for the settings ``keep(head, weight decay,
    epoch)`` names the taus of). ``abstain`` (bool [q]): rows whose scores are set to zero (TextHead)."""
    from fewshot.methods.linear_training import train_linear
    from fewshot.methods.longtail_functional import log_prior, macro_top1

    prior = log_prior(torch.bincount(y, minlength=n_classes), x.dtype)
    figures: dict[str, list[tuple[dict, float]]] = {h: [] for h in heads}
    kept: dict[tuple, torch.Tensor] = {}
    for spec in SPECS:
        mine = [h for h in spec.heads if h in heads]
        if not mine:
            continue
        for wd in weight_decays:
            def on_epoch(epoch: int, weight: torch.Tensor, bias: torch.Tensor, mine=mine, wd=wd) -> None:
                logits = query @ weight.T
                for head in mine:
                    wanted = set(keep(head, wd, epoch)) if keep is not None else set()
                    for tau in head_taus(head, taus):
                        scores = post_hoc(head, logits, weight, bias, prior, tau)
                        if abstain is not None:
                            scores = torch.where(abstain.unsqueeze(1), torch.zeros_like(scores), scores)
                        if y_query is not None:
                            setting = {"weight_decay": float(wd), "epochs": epoch}
                            if tau is not None:
                                setting["tau"] = tau
                            figures[head].append((setting, macro_top1(scores, y_query)))
                        if tau in wanted:
                            kept[(head, float(wd), epoch, tau)] = scores.clone()

            train_linear(x, y, n_classes, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=wd,
                         balanced=spec.balanced, loss_tau=0.0, generator=torch.Generator().manual_seed(seed),
                         on_epoch=on_epoch)
    return figures, kept


def setting_key(head: str, setting: dict) -> tuple:
    return (head, float(setting["weight_decay"]), int(setting["epochs"]), setting.get("tau"))


# ----------------------------------------------------------------------------------------------- the study


@dataclass
class GroupData:
    """One transfer group: raw image features, text features, labels and the validation codes."""

    group: str
    n_classes: int
    x_train: torch.Tensor
    x_test: torch.Tensor
    t_train: torch.Tensor
    t_test: torch.Tensor
    y_train: np.ndarray
    y_test: np.ndarray
    codes: np.ndarray  # the group rule's codes [len(y_train)]


@dataclass
class Catalogue:
    """The data as the benchmark reads it: the cached dataset, its transfer protocol and the group rule's codes
    (each train image's (class, group) merged with its pixel copies; -1 outside the train images)."""

    root: Any
    ds: Any
    protocol: Any
    codes: np.ndarray
    group_rule: Any

    @property
    def train_rows(self) -> np.ndarray:
        return np.concatenate([self.protocol.head_train, self.protocol.tail_train])

    def rows(self, group: str, part: str) -> np.ndarray:
        return np.array(getattr(self.protocol, f"{group}_{part}"))

    def record(self) -> dict[str, Any]:
        return {"dataset": {"root_name": self.root.name, "layout": self.ds.layout, "n_images": len(self.ds),
                            "pixels_sha256": self.ds.cache.pixels_sha256,
                            "transfer_split": self.protocol.rule.describe(),
                            "dedupe": bool(self.protocol.deduplicated)},
                "group_rule": self.group_rule.describe()}


def read_catalogue(data: str | None, cfg: Any, progress: bool = True) -> Catalogue:
    """``--data`` read exactly as ``benchmarks.run`` reads it (its ``_dataset``, ``_protocols`` and
    ``_validation``): the image cache at ``data.image_size``, the transfer protocol of the data's split rule
    with pixel copies of train images left out of test, the group rule's codes over the train images. A one-line
    error when the group rule does not apply (no group column, or every class in one group)."""
    from benchmarks.registry.embeddings import PARTS as BENCH_PARTS
    from fewshot.data.duplicates import dataset_groups
    from fewshot.data.layouts import data_dir, open_dataset
    from fewshot.data.protocols import TransferProtocol, split_rule_for
    from fewshot.data.validation import ValidationRule

    assert tuple(BENCH_PARTS) == PARTS  # the text cache key is the benchmark's only with its parts
    root = data_dir(data, any_layout=True)
    on_bad_rows = "skip" if cfg.data.skip_bad_rows else "raise"
    ds = open_dataset(root, warn=False, on_bad_rows=on_bad_rows).cached(cfg.data.image_size, progress=progress)
    copies = dataset_groups(ds)
    rule = split_rule_for(ds, **cfg.data.protocol_settings(cfg.seed))
    tp = TransferProtocol.from_catalog(ds, rule, n_head=cfg.data.n_head, min_train=cfg.data.min_train,
                                       duplicate_groups=copies if cfg.data.dedupe else None)
    train_rows = np.concatenate([tp.head_train, tp.tail_train])
    group_rule = ValidationRule("group", tuple(cfg.validation.group_key), fraction=cfg.longtail.val_fraction)
    applied, codes = group_rule.row_groups(ds.labels, ds.table, linked=copies, indices=train_rows)
    if codes is None:
        raise UserError(f"{root}: the group validation rule over {list(group_rule.group_key)} does not apply to "
                        f"this data ({applied.fallback}): there is nothing to compare the stratified rule with")
    return Catalogue(root, ds, tp, codes, group_rule)


def text_features_of(cat: Catalogue, encoder: str, max_features: int) -> dict[str, torch.Tensor]:
    """{part: features} of the product names by ``encoder`` fitted on the head and tail train names: the
    benchmark's text embedding and its cache entry (``max_features`` for the encoders that take it)."""
    from fewshot.data.cache import default_cache_root
    from fewshot.text.cache import cached_text_features

    kwargs: dict[str, Any] = {"max_features": max_features} if encoder in ("tfidf", "bow") else {"device": "cpu"}
    names = np.asarray(cat.ds.names, dtype=object)
    parts = {p: getattr(cat.protocol, p) for p in PARTS}
    return cached_text_features(names, cat.train_rows, parts, encoder=encoder, cache_root=default_cache_root(),
                                tag=cat.ds.cache.pixels_sha256, **kwargs)


def load(args: argparse.Namespace, cfg: Any) -> tuple[dict[str, GroupData], dict[str, Any], dict[str, float]]:
    """The groups' features and labels, read as the benchmark reads the data, and what the study records."""
    from fewshot.images.features import cached_features

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    cat = read_catalogue(args.data, cfg, progress=not args.no_progress)
    ds = cat.ds
    seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    image = cached_features("imagenet", "efficientnet_lite0", ds.images, ds.cache.pixels_sha256, None, device="cpu",
                            cpu_amp=False, batch_size=256, progress=not args.no_progress)
    seconds["image_features"] = time.perf_counter() - start
    start = time.perf_counter()
    text = text_features_of(cat, "tfidf", cfg.text.max_features)
    seconds["text_features"] = time.perf_counter() - start
    groups = {}
    for group in GROUPS:
        train, test = cat.rows(group, "train"), cat.rows(group, "test")
        groups[group] = GroupData(group, len(cat.protocol.classes(group)), image[train], image[test],
                                  text[f"{group}_train"], text[f"{group}_test"], cat.protocol.targets(train, group),
                                  cat.protocol.targets(test, group), cat.codes[train])
    record = cat.record()
    record["dataset"]["image_size"] = list(cfg.data.image_size)
    record["groups"] = {g: {"n_classes": d.n_classes, "n_train": len(d.y_train), "n_test": len(d.y_test),
                            "n_text_empty_test": int((~(d.t_test != 0).any(1)).sum())} for g, d in groups.items()}
    return groups, record, seconds


def splits_of(d: GroupData, fraction: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """{rule: (train positions, validation positions, codes for fit(groups=) or None)} of a group."""
    from fewshot.data.validation import validation_split

    out = {}
    for rule in RULES:
        codes = d.codes if rule == "group" else None
        train, val = validation_split(d.y_train, fraction, seed, groups=codes)
        out[rule] = (train, val, codes)
    return out


def linear_grids(d: GroupData, features: str, cfg: Any, splits: dict, heads: Sequence[str],
                 weight_decays: Sequence[float], progress: Callable[[str], None]
                 ) -> tuple[dict[tuple[str, str], Grid], dict[tuple[str, str], torch.Tensor]]:
    """The grids of the linear ``heads`` on ``features`` ("image" or "text") of group ``d``, both rules; and
    the test scores of each (head, rule) at the setting validation picked (the fitted library method's)."""
    from fewshot.methods.text_head import abstains

    lt = cfg.longtail
    x_raw, q_raw = (d.x_train, d.x_test) if features == "image" else (d.t_train, d.t_test)
    x, q = standardise(x_raw, q_raw)
    y, y_test = torch.from_numpy(d.y_train), torch.from_numpy(d.y_test)
    abstain = abstains(q_raw) if features == "text" else None
    prefix = "" if features == "image" else "text:"
    grids: dict[tuple[str, str], Grid] = {}
    e_max = lt.epochs
    for rule in RULES:
        train, val, _ = splits[rule]
        if len(val) == 0:
            raise UserError(f"the {rule} rule holds out no {d.group} validation image: nothing to measure")
        tr, va = torch.from_numpy(train), torch.from_numpy(val)
        epochs = epochs_for(len(train), lt.epochs, lt.batch_size)
        e_max = max(e_max, epochs)
        progress(f"{d.group} {features} heads, {rule} validation")
        figures, _ = trace_heads(x[tr], y[tr], d.n_classes, x[va], y[va], weight_decays=weight_decays,
                                 taus=lt.taus, epochs=epochs, lr=lt.lr, batch_size=lt.batch_size, seed=cfg.seed,
                                 heads=heads)
        for head, rows in figures.items():
            grid = Grid(prefix + head, d.group, rule, {})
            for setting, score in rows:
                grid.add(setting, score)
            grid.picked = int(np.argmax(grid.val))  # the first best: LinearHead's strict '>' in its order
            grids[(head, rule)] = grid
    wanted: dict[tuple[str, float, int], set] = {}
    for (head, rule), grid in grids.items():
        s = {k: v[grid.picked] for k, v in grid.settings.items()}
        wanted.setdefault((head, s["weight_decay"], s["epochs"]), set()).add(s.get("tau"))
    progress(f"{d.group} {features} heads, test")
    test_figures, kept = trace_heads(x, y, d.n_classes, q, y_test, weight_decays=weight_decays, taus=lt.taus,
                                     epochs=e_max, lr=lt.lr, batch_size=lt.batch_size, seed=cfg.seed,
                                     keep=lambda h, wd, e: wanted.get((h, float(wd), e), ()), abstain=abstain,
                                     heads=heads)
    picked_scores = {}
    for (head, rule), grid in grids.items():
        lookup = {setting_key(head, s): v for s, v in test_figures[head]}
        grid.test = [lookup[setting_key(head, {k: v[i] for k, v in grid.settings.items()})]
                     for i in range(len(grid.val))]
        s = {k: v[grid.picked] for k, v in grid.settings.items()}
        picked_scores[(head, rule)] = kept[setting_key(head, s)]
    return grids, picked_scores


def centroid_grids(d: GroupData, cfg: Any, splits: dict) -> dict[str, Grid]:
    """``text:centroid`` (the text method's nearest-centroid classifier): one setting per rule."""
    from benchmarks.builtin.text import text_classifier
    from fewshot.methods.longtail_functional import macro_top1

    text_cfg = replace(cfg, text=replace(cfg.text, classifier="centroid"))
    y, y_test = torch.from_numpy(d.y_train), torch.from_numpy(d.y_test)
    test = macro_top1(text_classifier(text_cfg).fit(d.t_train, y).scores(d.t_test), y_test)
    out = {}
    for rule, (train, val, _) in splits.items():
        clf = text_classifier(text_cfg).fit(d.t_train[train], y[train])
        grid = Grid("text:centroid", d.group, rule, {"classifier": ["centroid"]},
                    val=[macro_top1(clf.scores(d.t_train[val]), y[val])], test=[test])
        out[rule] = grid
    return out


def fusion_grids(d: GroupData, cfg: Any, splits: dict, image_test: dict[str, torch.Tensor],
                 text_test: dict[str, torch.Tensor], progress: Callable[[str], None]) -> dict[tuple[str, str], Grid]:
    """``fusion_gate`` and ``fusion_product`` under each rule, as :class:`fewshot.methods.LateFusion` chooses:
    both tau_norm branches fitted on the train part (with ``groups`` of that part under the group rule),
    temperatures and every setting scored on the validation part; on test the branches fitted on all train
    images (``image_test`` / ``text_test``: their scores, per rule) with the same temperatures."""
    from benchmarks.builtin.methods import tau_norm_classifier
    from benchmarks.builtin.text import text_classifier
    from fewshot.data.validation import validation_split
    from fewshot.methods.base import fit_validated
    from fewshot.methods.fusion_functional import (
        BRANCHES,
        choose_threshold,
        choose_weight,
        fit_temperature,
        gate_fusion,
        macro_top1,
        product_fusion,
    )
    from fewshot.methods.text_head import abstains

    fu = cfg.fusion
    text_cfg = replace(cfg, text=replace(cfg.text, classifier="tau_norm"))
    y, y_test = torch.from_numpy(d.y_train), torch.from_numpy(d.y_test)
    silent_test = abstains(d.t_test)
    grids = {}
    for rule, (_, _, codes) in splits.items():
        progress(f"{d.group} fusion branches, {rule} validation")
        train, val = validation_split(d.y_train, fu.val_fraction, cfg.seed, groups=codes)
        inner = None if codes is None else codes[train]
        image_head, text_head = tau_norm_classifier(cfg, None), text_classifier(text_cfg)
        fit_validated(image_head, d.x_train[train], y[train], inner)
        fit_validated(text_head, d.t_train[train], y[train], inner)
        raw_image = torch.log_softmax(image_head.scores(d.x_train[val]).double(), dim=1)
        raw_text = torch.log_softmax(text_head.scores(d.t_train[val]).double(), dim=1)
        silent, yv = abstains(d.t_train[val]), y[val]
        t_image = fit_temperature(raw_image, yv)
        t_text = fit_temperature(raw_text[~silent], yv[~silent]) if (~silent).any() else 1.0
        image_logp, text_logp = torch.log_softmax(raw_image / t_image, 1), torch.log_softmax(raw_text / t_text, 1)
        test_image = torch.log_softmax(image_test[rule].double() / t_image, dim=1)
        test_text = torch.log_softmax(text_test[rule].double() / t_text, dim=1)
        temps = {"image_temperature": t_image, "text_temperature": t_text}
        gate = Grid("fusion_gate", d.group, rule, {})
        for primary in BRANCHES:
            for t in fu.thresholds:
                gate.add({"primary": primary, "threshold": float(t)},
                         macro_top1(gate_fusion(image_logp, text_logp, t, silent, primary), yv))
                gate.test.append(macro_top1(gate_fusion(test_image, test_text, t, silent_test, primary), y_test))
        primary, threshold, _ = choose_threshold(image_logp, text_logp, yv, silent, fu.thresholds)
        gate.picked = next(i for i in range(len(gate.val)) if gate.settings["primary"][i] == primary
                           and gate.settings["threshold"][i] == float(threshold))
        product = Grid("fusion_product", d.group, rule, {})
        for w in fu.weights:
            product.add({"image_weight": float(w)}, macro_top1(product_fusion(image_logp, text_logp, w, silent), yv))
            product.test.append(macro_top1(product_fusion(test_image, test_text, w, silent_test), y_test))
        weight, _ = choose_weight(image_logp, text_logp, yv, silent, fu.weights)
        product.picked = product.settings["image_weight"].index(float(weight))
        for grid in (gate, product):
            grid.settings.update({k: [v] * len(grid.val) for k, v in temps.items()})
            grids[(grid.method, rule)] = grid
    return grids


def text_choice(grids: dict[tuple[str, str, str], Grid], group: str, rule: str) -> Grid:
    """``text``: which classifier, each at the setting its own validation picked."""
    choice = Grid("text", group, rule, {})
    for clf in TEXT_CLASSIFIERS:
        g = grids[(f"text:{clf}", group, rule)]
        choice.add({"classifier": clf}, g.val[g.picked])
        choice.test.append(g.test[g.picked])
    choice.picked = int(np.argmax(choice.val))
    return choice


METHODS = (*IMAGE_HEADS, *(f"text:{c}" for c in TEXT_CLASSIFIERS), "fusion_gate", "fusion_product")


def method_level(grids: dict[tuple[str, str, str], Grid], group: str, rule: str) -> dict[str, Any]:
    """The methods of a group ranked by validation (each at its picked setting) against the test."""
    val = [grids[(m, group, rule)].val[grids[(m, group, rule)].picked] for m in METHODS]
    test = [grids[(m, group, rule)].test[grids[(m, group, rule)].picked] for m in METHODS]
    picked = int(np.argmax(val))
    return {"group": group, "rule": rule, "methods": list(METHODS), "val": val, "test": test,
            "picked_method": METHODS[picked], "best_test_method": METHODS[int(np.argmax(test))],
            **summarise(val, test, picked)}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def decide(summaries: list[dict], methods: list[dict]) -> dict[str, Any]:
    """Per rule, the means over (method, group) of the settings-level figures and over groups of the
    method-level ones; the rule with the higher mean Kendall tau over settings and methods together wins
    (ties: lower mean regret)."""
    per_rule: dict[str, dict[str, float | None]] = {}
    for rule in RULES:
        rows = [s for s in summaries if s["rule"] == rule]
        mrows = [m for m in methods if m["rule"] == rule]
        per_rule[rule] = {
            "settings_kendall": _mean([s["kendall"] for s in rows]),
            "settings_spearman": _mean([s["spearman"] for s in rows]),
            "settings_regret": _mean([s["regret"] for s in rows]),
            "settings_optimism": _mean([s["optimism_mean"] for s in rows]),
            "settings_test_picked": _mean([s["test_picked"] for s in rows]),
            "methods_kendall": _mean([m["kendall"] for m in mrows]),
            "methods_spearman": _mean([m["spearman"] for m in mrows]),
            "methods_regret": _mean([m["regret"] for m in mrows]),
            "methods_optimism": _mean([m["optimism_mean"] for m in mrows]),
            "methods_test_picked": _mean([m["test_picked"] for m in mrows]),
            "kendall_wins": sum(1 for s in rows if s["kendall"] is not None and _other(summaries, s) is not None
                                and s["kendall"] > _other(summaries, s)),
        }

    def score(rule: str) -> tuple[float, float]:
        r = per_rule[rule]
        both = [v for v in (r["settings_kendall"], r["methods_kendall"]) if v is not None]
        return (float(np.mean(both)) if both else -2.0, -(r["settings_regret"] or 0.0))

    chosen = max(RULES, key=score)
    return {"per_rule": per_rule, "chosen": chosen,
            "criterion": "the higher mean of (mean settings-level Kendall tau over methods and groups, mean "
                         "method-level Kendall tau over groups); ties: lower mean settings-level regret"}


def _other(summaries: list[dict], s: dict) -> float | None:
    other = next((o for o in summaries if o["method"] == s["method"] and o["group"] == s["group"]
                  and o["rule"] != s["rule"]), None)
    return None if other is None else other["kendall"]


def main(args: argparse.Namespace) -> dict:
    from fewshot.utils.io import atomic_write_json, atomic_write_text

    started = time.perf_counter()
    cfg = study_config(args)
    groups, record, seconds = load(args, cfg)
    lt, fu = cfg.longtail, cfg.fusion
    if not math.isclose(fu.val_fraction, lt.val_fraction):
        raise UserError(f"fusion.val_fraction={fu.val_fraction} differs from longtail.val_fraction="
                        f"{lt.val_fraction}: the study scores both on one split per rule")
    steps = len(GROUPS) * (2 * len(RULES) + 2 + len(RULES))
    bar = tqdm(total=steps, desc="validation rules", unit="step", disable=args.no_progress)

    def progress(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update(1)

    grids: dict[tuple[str, str, str], Grid] = {}
    for group, d in groups.items():
        start = time.perf_counter()
        splits = splits_of(d, lt.val_fraction, cfg.seed)
        record["groups"][group]["n_val"] = {rule: len(s[1]) for rule, s in splits.items()}
        image, image_picked = linear_grids(d, "image", cfg, splits, IMAGE_HEADS, lt.weight_decays, progress)
        text, text_picked = linear_grids(d, "text", cfg, splits, ("crt", "tau_norm", "logit_adjust"),
                                         cfg.text.weight_decays, progress)
        for (head, rule), grid in image.items():
            grids[(head, group, rule)] = grid
        for (head, rule), grid in text.items():
            grids[(f"text:{head}", group, rule)] = grid
        for rule, grid in centroid_grids(d, cfg, splits).items():
            grids[("text:centroid", group, rule)] = grid
        fused = fusion_grids(d, cfg, splits, {r: image_picked[("tau_norm", r)] for r in RULES},
                             {r: text_picked[("tau_norm", r)] for r in RULES}, progress)
        for (method, rule), grid in fused.items():
            grids[(method, group, rule)] = grid
        for rule in RULES:
            grids[("text", group, rule)] = text_choice(grids, group, rule)
        seconds[f"{group}_grids"] = time.perf_counter() - start
    bar.close()
    summaries = [g.summary() for g in grids.values()]
    methods = [method_level(grids, group, rule) for group in GROUPS for rule in RULES]
    decision = decide(summaries, methods)
    seconds["total"] = time.perf_counter() - started
    result = {**study_header("validation_rules", args, cfg),
              "settings": {"longtail": {"epochs": lt.epochs, "lr": lt.lr, "batch_size": lt.batch_size,
                                        "weight_decays": list(lt.weight_decays), "taus": list(lt.taus),
                                        "val_fraction": lt.val_fraction, "min_steps": MIN_STEPS},
                           "text": {"encoder": "tfidf", "max_features": cfg.text.max_features,
                                    "weight_decays": list(cfg.text.weight_decays)},
                           "fusion": {"val_fraction": fu.val_fraction, "thresholds": list(fu.thresholds),
                                      "weights": list(fu.weights)}, "seed": cfg.seed},
              **record, "decision": decision, "summaries": summaries, "methods": methods,
              "grids": [g.to_dict() for g in grids.values()], "seconds": seconds}
    out = output_folder("validation_rules", args.out)
    if out is not None:
        atomic_write_json(out / "results.json", result)
        atomic_write_text(out / "README.md", readme(result))
        tqdm.write(f"results in {out}: README.md, results.json ({seconds['total'] / 60:.1f} min)")
    return result


# ---------------------------------------------------------------------------------------------- README


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def _r(v: float | None) -> str:
    return "–" if v is None else f"{v:+.2f}"


def _setting(s: dict) -> str:
    skip = ("image_temperature", "text_temperature")
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if k not in skip)


def readme(result: dict) -> str:
    """The README of a run of the study: the tables, the decision in words, the command."""
    dec, per = result["decision"], result["decision"]["per_rule"]
    by = {(s["method"], s["group"], s["rule"]): s for s in result["summaries"]}
    chosen = dec["chosen"]
    total = result["seconds"]["total"]
    lines = [
        "# Which validation rule? Validation against test on the real catalogue (issue 27)", "",
        "```bash", result["command"], "```", "",
        f"Git {result['git_revision']}, {result['cpu']} ({result['torch_threads']} torch "
        f"thread{'s' if result['torch_threads'] != 1 else ''}), {total / 60:.1f} min with the feature caches warm "
        "(the image and text features are the benchmark's own cache entries, which its first run computes). "
        f"Config `{result['config']}`"
        f"{' with ' + ' '.join(result['overrides']) if result['overrides'] else ''}; dataset "
        f"{result['dataset']['n_images']} images, {result['dataset']['transfer_split']}, pixel copies of train "
        "images left out of test.", "",
        "Every choice the benchmark makes on validation is carved from a group's train images (even years); the "
        "test images are the odd years. Two rules carve it, both at a fraction of "
        f"{result['settings']['longtail']['val_fraction']:.0%} per class:", "",
        "- **stratified**: a random share of each class's train images (the rule of the earlier runs);",
        f"- **group**: {result['group_rule'].split(': ', 1)[-1]}.", "",
        "For every method that selects on validation, every setting of its grid was trained on the train part "
        "and scored on the validation part (validation macro top-1), and trained on all the group's train images "
        "and scored on its test images (test macro top-1). Image methods on frozen ImageNet EfficientNet-Lite0 "
        "features, text on TF-IDF of product names (the benchmark's caches); the picked setting is the one the "
        "library method picks (same trainer, seed and tie order). See the module docstring of "
        "`benchmarks/studies/validation_rules.py` for the details.", "",
        "## Decision", "",
        decision_words(result), "",
        "| rule | settings: Kendall | settings: Spearman | settings: regret | settings: optimism | settings: test "
        "of picks | methods: Kendall | methods: Spearman | methods: regret | methods: optimism | methods: test of "
        "pick |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rule in RULES:
        r = per[rule]
        lines.append(f"| {rule}{' (chosen)' if rule == chosen else ''} | {_r(r['settings_kendall'])} | "
                     f"{_r(r['settings_spearman'])} | {_pct(r['settings_regret'])} | "
                     f"{_pct(r['settings_optimism'], True)} | {_pct(r['settings_test_picked'])} | "
                     f"{_r(r['methods_kendall'])} | {_r(r['methods_spearman'])} | {_pct(r['methods_regret'])} | "
                     f"{_pct(r['methods_optimism'], True)} | {_pct(r['methods_test_picked'])} |")
    lines += [
        "", "Means over the (method, group) pairs (settings) and over the groups (methods). Regret: the best test "
        "macro top-1 of the grid minus the test figure of the setting validation picks, in points. Optimism: "
        "validation minus test macro top-1, in points, averaged over the settings (over the methods at their "
        "picked settings for the method-level column). Test of picks: the mean test macro top-1 (%) of the "
        "settings (methods) validation picks, what a user ends up with.", "",
        "## Settings: validation against test, per method", "",
        "Rank correlations over each method's grid; `picked`: validation / test macro top-1 (%) of the setting "
        "validation picks; `best test`: the grid's best test figure; regret and mean optimism in points.", "",
        "| group | method | settings | Kendall strat / group | Spearman strat / group | picked strat: val → test "
        "| picked group: val → test | best test | regret strat / group | optimism strat / group |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = [*METHODS[:3], *METHODS[3:7], "text", *METHODS[7:]]
    for group in GROUPS:
        for m in order:
            s, g = by[(m, group, "stratified")], by[(m, group, "group")]
            lines.append(
                f"| {group} | {m} | {s['n_settings']} / {g['n_settings']} | {_r(s['kendall'])} / {_r(g['kendall'])} | "
                f"{_r(s['spearman'])} / {_r(g['spearman'])} | {_pct(s['val_picked'])} → {_pct(s['test_picked'])} | "
                f"{_pct(g['val_picked'])} → {_pct(g['test_picked'])} | {_pct(max(s['test_best'], g['test_best']))} | "
                f"{_pct(s['regret'])} / {_pct(g['regret'])} | {_pct(s['optimism_mean'], True)} / "
                f"{_pct(g['optimism_mean'], True)} |")
    lines += ["", "Picked settings:", ""]
    for group in GROUPS:
        for m in order:
            s, g = by[(m, group, "stratified")], by[(m, group, "group")]
            lines.append(f"- {group} `{m}`: stratified {_setting(s['picked_setting'])}; group "
                         f"{_setting(g['picked_setting'])}")
    lines += ["", "## Methods: validation against test", "",
              "Each method at the setting its validation picks (the text methods are `text:<classifier>` on "
              "TF-IDF; the image heads on ImageNet features).", "",
              "| group | method | stratified: val → test | group: val → test |", "|---|---|---:|---:|"]
    mt = {(m["group"], m["rule"]): m for m in result["methods"]}
    for group in GROUPS:
        s, g = mt[(group, "stratified")], mt[(group, "group")]
        for i, m in enumerate(s["methods"]):
            lines.append(f"| {group} | {m} | {_pct(s['val'][i])} → {_pct(s['test'][i])} | "
                         f"{_pct(g['val'][i])} → {_pct(g['test'][i])} |")
    lines += ["", "| group | rule | Kendall | Spearman | validation picks | its test | best on test | regret |",
              "|---|---|---:|---:|---|---:|---|---:|"]
    for group in GROUPS:
        for rule in RULES:
            m = mt[(group, rule)]
            lines.append(f"| {group} | {rule} | {_r(m['kendall'])} | {_r(m['spearman'])} | {m['picked_method']} | "
                         f"{_pct(m['test_picked'])} | {m['best_test_method']} ({_pct(m['test_best'])}) | "
                         f"{_pct(m['regret'])} |")
    secs = result["seconds"]
    lines += ["", "## What this cannot tell", "",
              "One seed and one split per rule. The image heads run on frozen ImageNet features, not on the "
              "two-stage representation the benchmark's `crt` / `tau_norm` / `logit_adjust` use (retraining it per "
              "setting is out of this study's budget); the text methods on TF-IDF only (the encoder study, "
              "[`../text_encoders/`](../text_encoders/README.md), compares encoders under both rules). As in the "
              "benchmark, the TF-IDF vocabulary is fitted on every head and tail train name, validation names "
              "included, which flatters the text methods' validation under both rules (the encoder study measures "
              "it). Torch runs on one thread here; the benchmark's kernels on more threads can differ in the "
              "last bits, which can move a tie.",
              "", "## Timings", "",
              "Seconds on this machine: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()) + ".",
              "", "Every setting's figures are in `results.json` (`grids`), with the summaries (`summaries`, "
              "`methods`, `decision`)."]
    return "\n".join(lines) + "\n"


def decision_words(result: dict) -> str:
    """The decision in words, from the numbers: the criterion's verdict, then whether the other figures agree."""
    dec, per = result["decision"], result["decision"]["per_rule"]
    chosen, other = dec["chosen"], next(r for r in RULES if r != dec["chosen"])
    c, o = per[chosen], per[other]
    n_grids = len(result["summaries"]) // len(RULES)
    facts = []
    for key, words, better_if in (
            ("settings_kendall", "ranks each method's settings", "higher"),
            ("methods_kendall", "ranks the methods", "higher"),
            ("settings_regret", "loses test accuracy by its picks", "lower"),
            ("settings_test_picked", "gives its picked settings a mean test macro top-1 of", "higher"),
            ("settings_optimism", "overstates the test (validation minus test, mean over settings)", "closer")):
        if c[key] is None or o[key] is None:
            continue
        if better_if == "higher":
            better = c[key] > o[key]
        elif better_if == "lower":
            better = c[key] < o[key]
        else:
            better = abs(c[key]) < abs(o[key])
        verdict = "better" if better else ("the same" if c[key] == o[key] else "worse")
        facts.append(f"{words} {_fmt(key, c[key])} against {_fmt(key, o[key])} ({verdict})")
    gap = abs(score_of(c) - score_of(o))
    close = gap < 0.05
    return (f"**The `{chosen}` rule**, by the criterion ({dec['criterion']}). Under `{chosen}` against "
            f"`{other}`, validation: " + "; ".join(facts) + ". "
            + (f"The rank correlations differ by {gap:.2f} only: within a grid both rules mostly order the "
               "settings alike (epochs and tau move validation and test together); what separates the rules is "
               "which setting each puts first (regret, test of the picks) and how far its figures are from the "
               "test (optimism). " if close else "")
            + f"Kendall tau was higher under `{chosen}` for {c['kendall_wins']} of the {n_grids} (method, group) "
              f"grids, under `{other}` for {o['kendall_wins']} (the others tie or have a single setting). "
            + largest_gaps(result))


def largest_gaps(result: dict, n: int = 3) -> str:
    """The (method, group) grids where the two rules' picks differ most on test, in words."""
    by = {(s["method"], s["group"], s["rule"]): s for s in result["summaries"]}
    pairs = sorted({(s["method"], s["group"]) for s in result["summaries"]},
                   key=lambda k: -abs(by[(*k, "group")]["test_picked"] - by[(*k, "stratified")]["test_picked"]))
    words = [f"{group} `{method}` {_pct(by[(method, group, 'stratified')]['test_picked'])} (stratified) against "
             f"{_pct(by[(method, group, 'group')]['test_picked'])} (group)" for method, group in pairs[:n]]
    return "Test macro top-1 of the picks, where the rules differ most: " + "; ".join(words) + "."


def score_of(r: dict) -> float:
    both = [v for v in (r["settings_kendall"], r["methods_kendall"]) if v is not None]
    return float(np.mean(both)) if both else -2.0


def _fmt(key: str, v: float) -> str:
    if "kendall" in key or "spearman" in key:
        return f"{v:+.2f}"
    if key.endswith("test_picked"):
        return f"{100 * v:.1f}%"
    return f"{100 * v:.1f} points" if "regret" in key else f"{100 * v:+.1f} points"


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.studies.validation_rules"))
