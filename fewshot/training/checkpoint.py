"""Checkpoints of the trainer, written atomically, carrying their config.

``last.pt`` (after every epoch) holds everything to continue exactly: model, optimiser, scheduler, grad
scaler, the training generator's state, the finished epoch count, the history, the best-so-far weights and
the config as a plain dict. ``best.pt`` holds the weights chosen on validation, their backbone part (for
``create_backbone(name, weights=path)``), the config and caller metadata.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewshot.utils import resume
from fewshot.utils.errors import UserError
from fewshot.utils.io import atomic_torch_save

TRAIN_FORMAT = "fewshot.training.loop/1"
MODEL_FORMAT = "fewshot.model/1"
# Where a run executes does not change what it computes on the CPU path we compare; everything else must
# match for a resumed run to equal an uninterrupted one.
RESUME_IGNORES = ("device",)


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    atomic_torch_save({"format": TRAIN_FORMAT, **state}, path)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or state.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{path} is not a fewshot training checkpoint (format {TRAIN_FORMAT}); "
                         "point --resume at a run folder written by fewshot.training.fit")
    return dict(state)


def save_model(path: str | os.PathLike, model_state: Mapping[str, torch.Tensor], *, config: Mapping[str, Any],
               meta: Mapping[str, Any], epoch: int, score: float | None) -> None:
    """Write ``best.pt``: the weights, their ``backbone.*`` part as ``backbone`` (when there is one)."""
    obj: dict[str, Any] = {"format": MODEL_FORMAT, "model": dict(model_state), "config": dict(config),
                           "meta": dict(meta), "epoch": epoch, "score": score}
    backbone = {k[len("backbone."):]: v for k, v in model_state.items() if k.startswith("backbone.")}
    if backbone:
        obj["backbone"] = backbone
    atomic_torch_save(obj, path)


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and this run's (``RESUME_IGNORES``
    skipped)."""
    return resume.config_differences(saved, current, ignore=RESUME_IGNORES, labels=("checkpoint", "now"))


def check_resumable(path: Path, saved: Mapping[str, Any], current: Mapping[str, Any],
                    defaults: Mapping[str, Any] | None = None) -> None:
    """Refuse to resume ``path`` when its config differs from this run's. A setting the checkpoint lacks
    was added to the config after it was written: it counts as its value in ``defaults`` (the dataclass's
    default, what the checkpoint's training ran with), so older checkpoints stay resumable."""
    if defaults is not None:
        saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    diffs = config_differences(saved, current)
    if diffs:
        raise UserError(f"cannot resume {path}: its config differs from this run's ({'; '.join(diffs)}). "
                         "Resume with the same config, or start a fresh run in another folder.")
