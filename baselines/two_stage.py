"""Two-stage fine-tuning, the seed's baseline done right.

Stage 1 trains a backbone + linear head on the transfer protocol's head classes (train = even years).
Stage 2 starts from stage 1's *best* weights (the seed silently restarted from ImageNet), puts a new head
over the tail classes and fine-tunes on the tail train images with a class-weighted loss (the seed's
``max_count / count`` by default). The best epoch of each stage is chosen on a validation split carved
from its train images; test images (odd years) are only ever scored.

    python -m baselines.two_stage --data DIR [--config baselines/two_stage.toml] [--out DIR] [--resume]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fewshot.data.protocols import TransferProtocol
from fewshot.images.inference import predict_scores
from fewshot.models.backbones import check_weights, create_backbone
from fewshot.models.classifier import Classifier
from fewshot.training.checkpoint import check_resumable, load_training_state
from fewshot.training.loop import TrainConfig, fit
from fewshot.training.supervised import SupervisedObjective
from fewshot.utils import distributed
from fewshot.utils.records import load_record, record, save_record


@dataclass(frozen=True)
class TwoStageConfig:
    """``freeze_backbone``: stage 2 trains the new head only (a linear probe; BatchNorm statistics stay
    those of stage 1)."""

    backbone: str = "resnet18"
    weights: str = "none"
    freeze_backbone: bool = False
    stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=0.05))
    stage2: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=0.01, class_weights="inverse"))
    # the joint variant's stage 2 (train_stage2_joint): head + tail classes together
    stage2_joint: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=0.01, class_weights="inverse",
                                                                          val_min_per_class=0))

    def __post_init__(self) -> None:
        check_weights(self.backbone, self.weights)


@record
@dataclass(frozen=True)
class StageOutput:
    """Scores [n_test, C] of one stage on its test images, with targets [n_test] and the checkpoint."""

    scores: torch.Tensor
    targets: torch.Tensor
    test_indices: np.ndarray
    classes: tuple[str, ...]
    checkpoint: Path
    history: list[dict]
    seconds: float


# (train indices) -> (the indices to train on, the validation indices that choose the epoch)
ValSplit = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def run_stage(
    images: np.ndarray, protocol: TransferProtocol, group: str, config: TrainConfig, model: Classifier,
    out_dir: Path, *, resume: bool, progress: bool, meta: dict, val_split: ValSplit | None = None,
) -> StageOutput:
    """Train ``model`` on ``group``'s train images, score its test images; a finished stage is reloaded.
    ``val_split``: how the epoch's validation images are carved from the train images (default: a stratified
    ``config.val_fraction``, :class:`fewshot.training.supervised.SupervisedObjective`'s own)."""
    done = out_dir / "scores.pt"
    classes = protocol.classes(group)
    if resume and done.exists():
        # A finished stage is reloaded only for the settings it was trained with (its last.pt says which).
        if (out_dir / "last.pt").exists():
            check_resumable(out_dir / "last.pt", load_training_state(out_dir / "last.pt")["config"],
                            dataclasses.asdict(config), defaults=dataclasses.asdict(TrainConfig()))
        saved = _load_scores(done)
        if saved is not None:
            return saved
    start = time.perf_counter()
    train_idx = getattr(protocol, f"{group}_train")
    test_idx = getattr(protocol, f"{group}_test")
    labels = np.full(len(images), -1, dtype=np.int64)
    labels[train_idx] = protocol.targets(train_idx, group)
    fit_idx, val_idx = val_split(np.asarray(train_idx)) if val_split is not None else (train_idx, None)
    objective = SupervisedObjective(images, labels, fit_idx, config, val_indices=val_idx, n_classes=len(classes))
    result = fit(model, objective, config, out_dir, resume=resume, meta=meta, progress=progress)
    scores = (predict_scores(model, images, test_idx, config.eval_batch_size, progress=progress)
              if len(test_idx) else torch.zeros(0, len(classes)))
    out = StageOutput(scores, torch.from_numpy(protocol.targets(test_idx, group)), np.asarray(test_idx),
                      tuple(classes), out_dir / "best.pt", result.history, time.perf_counter() - start)
    if distributed.is_main():  # under torchrun every rank scored the test images (sharded); rank 0 writes
        save_record(out, done)
    distributed.barrier()
    return out


def _load_scores(path: Path) -> StageOutput | None:
    """A finished stage's scores; None for a file of an older version (a pickle, which is never loaded: the
    stage's finished training is then picked up from its checkpoints and only the scoring runs again)."""
    try:
        return load_record(path)
    except (pickle.UnpicklingError, TypeError, KeyError):
        return None


def train_stage1(
    images: np.ndarray, protocol: TransferProtocol, config: TwoStageConfig, out_dir: str | Path, *,
    resume: bool = False, progress: bool = True, val_split: ValSplit | None = None,
) -> StageOutput:
    """Stage 1: a fresh backbone + head trained on the head classes; scores the head test images."""
    c1 = config.stage1
    model = Classifier(create_backbone(config.backbone, config.weights, seed=c1.seed), len(protocol.head),
                       seed=c1.seed)
    return run_stage(images, protocol, "head", c1, model, Path(out_dir) / "stage1", resume=resume, progress=progress,
                     meta={**_meta(config), "stage": 1, "classes": list(protocol.head)}, val_split=val_split)


def train_stage2(
    images: np.ndarray, protocol: TransferProtocol, config: TwoStageConfig, out_dir: str | Path,
    stage1_checkpoint: str | Path, *, resume: bool = False, progress: bool = True, val_split: ValSplit | None = None,
) -> StageOutput:
    """Stage 2: stage 1's best backbone + a new head fine-tuned on the tail classes; scores the tail test
    images."""
    c2 = config.stage2
    backbone = create_backbone(config.backbone, stage1_checkpoint, seed=c2.seed)
    model = Classifier(backbone, len(protocol.tail), seed=c2.seed, freeze_backbone=config.freeze_backbone)
    return run_stage(images, protocol, "tail", c2, model, Path(out_dir) / "stage2", resume=resume, progress=progress,
                     meta={**_meta(config), "stage": 2, "classes": list(protocol.tail)}, val_split=val_split)


def train_stage2_joint(
    images: np.ndarray, protocol: TransferProtocol, config: TwoStageConfig, out_dir: str | Path,
    stage1_checkpoint: str | Path, *, resume: bool = False, progress: bool = True, val_split: ValSplit | None = None,
) -> StageOutput:
    """The seed's recipe for a whole catalogue: stage 1's best backbone + a new head over head + tail
    classes, fine-tuned on both groups' train images together (``config.stage2_joint``: class-weighted by
    default); scores every head and tail test image, so its forgetting of the head is measured."""
    cj = config.stage2_joint
    backbone = create_backbone(config.backbone, stage1_checkpoint, seed=cj.seed)
    model = Classifier(backbone, len(protocol.all), seed=cj.seed, freeze_backbone=config.freeze_backbone)
    return run_stage(images, protocol, "all", cj, model, Path(out_dir) / "stage2_joint", resume=resume,
                     progress=progress, meta={**_meta(config), "stage": "2-joint", "classes": list(protocol.all)},
                     val_split=val_split)


def _meta(config: TwoStageConfig) -> dict:
    return {"backbone": config.backbone, "protocol": "transfer"}


def train_two_stage(
    images: np.ndarray, protocol: TransferProtocol, config: TwoStageConfig, out_dir: str | Path, *,
    resume: bool = False, progress: bool = True,
) -> tuple[StageOutput, StageOutput]:
    """Both stages; returns (stage 1 on head test images, stage 2 on tail test images)."""
    stage1 = train_stage1(images, protocol, config, out_dir, resume=resume, progress=progress)
    # Stage 2 starts from the best stage-1 checkpoint on disk, not from the in-memory model: that is
    # also what a resumed run has, so both paths start stage 2 from identical weights.
    stage2 = train_stage2(images, protocol, config, out_dir, stage1.checkpoint, resume=resume, progress=progress)
    return stage1, stage2


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m baselines.two_stage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the dataset (default: $FEWSHOT_DATA): a Kaggle folder (styles.csv + images/), an "
                                  "image folder or a CSV manifest, split by its layout's own rule (Kaggle: even / "
                                  "odd years; else a split column, train/ and test/ folders, or a seeded stratified "
                                  "split)")
    p.add_argument("--config", type=Path, help="TOML file with a TwoStageConfig (default: built-in defaults)")
    p.add_argument("--out", type=Path, default=Path("runs/two_stage"), help="output folder (default runs/two_stage)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out: with the same "
                   "settings and images only (anything else is refused, naming what differs)")
    p.add_argument("--size", default="80x60", help="image size HEIGHTxWIDTH (default 80x60)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (overrides both stages' device)")
    p.add_argument("--n-head", type=int, default=20, help="number of head classes (default 20)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="leave malformed rows of styles.csv or of a manifest out (reported)")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    p.add_argument("overrides", nargs="*", help="config overrides such as stage1.epochs=2 backbone=resnet34")
    return p


def _guard_resume(out: Path, config: TwoStageConfig, ds: object, size: tuple[int, int]) -> None:
    """The one resume guard: same image size and images (run.json's dataset record) and same settings as the
    run in ``out``."""
    from fewshot.config import load_config, to_dict
    from fewshot.utils.resume import check_same_images, config_differences, refuse_changes

    record = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    check_same_images(record.get("dataset", {}), ds.cache.pixels_sha256, ds.cache.key, ds.root, image_size=size,
                      size_hint="--size {h}x{w}")
    if (out / "config.resolved.toml").exists():
        saved = load_config(TwoStageConfig, out / "config.resolved.toml")
        diffs = config_differences(to_dict(saved), to_dict(config),
                                   ignore=("stage1.device", "stage2.device", "stage2_joint.device"))
        refuse_changes(f"--resume {out}: the settings differ from the run's", diffs,
                       "Resume with the run's settings, or start a fresh run with another --out")


def main(args: argparse.Namespace) -> dict:
    from fewshot.cli import parse_size
    from fewshot.config import load_config, to_toml
    from fewshot.data.layouts import data_dir, open_dataset
    from fewshot.data.leftout import left_out
    from fewshot.data.protocols import split_rule_for
    from fewshot.evaluation import per_class_topk
    from fewshot.utils.errors import UserError
    from fewshot.utils.io import atomic_write_json, atomic_write_text
    from fewshot.utils.resume import recorded_roots

    overrides = list(args.overrides)
    if args.device:
        overrides += [f"stage1.device={args.device}", f"stage2.device={args.device}"]
    config = load_config(TwoStageConfig, args.config, overrides)
    size = parse_size(args.size)
    # any layout (a Kaggle folder, an image folder, a CSV manifest), split by its own rule as the benchmark's
    # data.split = "auto" does (Kaggle: even / odd years)
    ds = open_dataset(data_dir(args.data, any_layout=True), on_bad_rows="skip" if args.skip_bad_rows else "raise",
                      warn=False).cached(size, warn=False)
    for group in left_out(ds):  # what the readers and the cache left out: one line per reason, no raw warning
        print(f"left out: {group.line()}")
    record = json.loads((args.out / "run.json").read_text()) if (args.out / "run.json").exists() else {}
    if args.resume:
        _guard_resume(args.out, config, ds, size)
    elif args.out.exists() and any((args.out / s / "scores.pt").exists() for s in ("stage1", "stage2")):
        raise SystemExit(f"{args.out} holds a finished two-stage run; pass --resume to continue it, or another --out")
    rule = split_rule_for(ds)
    protocol = TransferProtocol.from_catalog(ds, rule, n_head=args.n_head)
    if not protocol.tail:
        raise UserError(f"no tail classes: every class with train images is among the --n-head {args.n_head} head "
                        "classes; lower --n-head")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "config.resolved.toml", to_toml(config))
    atomic_write_json(args.out / "run.json", {"dataset": {
        **ds.describe(), "image_size": list(size), "image_cache_key": ds.cache.key,
        "pixels_sha256": ds.cache.pixels_sha256, "transfer_split": rule.to_dict(),
        "roots": recorded_roots(record.get("dataset", {}) if args.resume else {}, ds.root)}})
    stage1, stage2 = train_two_stage(ds.images, protocol, config, args.out, resume=args.resume)
    summary = {}
    for name, stage in (("head", stage1), ("tail", stage2)):
        result = per_class_topk(stage.scores, stage.targets, ks=(1, 5), class_names=stage.classes)
        result.table.to_csv(args.out / f"{name}_per_class.csv", index=False)
        print(f"\n== {name} classes ({len(stage.classes)}-way, {len(stage.targets)} test images)"
              f"{' SYNTHETIC DATA' if ds.synthetic else ''} ==")
        print(result.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"macro top1 {result.macro['top1']:.4f} top5 {result.macro['top5']:.4f} | "
              f"micro top1 {result.micro['top1']:.4f} top5 {result.micro['top5']:.4f} | {stage.seconds:.0f} s")
        summary[name] = {**result.summary(), "seconds": stage.seconds, "synthetic": ds.synthetic}
    atomic_write_json(args.out / "summary.json", summary)
    return summary


if __name__ == "__main__":
    from fewshot.utils.errors import run_cli

    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_intermixed_args(argv)), prog="baselines.two_stage"))
