"""One small trainer, generic over an :class:`Objective` (what a batch is, its loss, a validation score).

    model = Classifier(create_backbone("resnet18", seed=cfg.seed), n_classes, seed=cfg.seed)
    objective = SupervisedObjective(images, labels, train_idx, cfg)     # fewshot.training.supervised
    result = fit(model, objective, cfg, out_dir="runs/stage1", resume=True)

Device ``auto`` (CUDA when present); on CUDA mixed precision (bf16, or fp16 with a GradScaler);
channels_last (on any device). SGD+momentum or AdamW with a per-step warm-up + cosine schedule. The epoch with the best
validation score (higher is better; validation data is carved from the training images) is kept.
``out_dir/last.pt`` is written atomically after every epoch, so a killed run loses at most the epoch in
progress, and ``resume=True`` continues it; on the CPU the result equals an uninterrupted run bit for bit,
because every random number comes from one ``torch.Generator`` whose state is checkpointed (model
initialisation is the caller's, seeded: see ``create_backbone(seed=)``).

Under ``torchrun`` (``WORLD_SIZE > 1``, the process group joined by :func:`fewshot.utils.distributed.init`)
the same call trains with DistributedDataParallel: every rank draws the same global batches and computes
its shard of each, batch norm runs over the global batch, and the result equals one process's up to
floating-point reduction order (:mod:`fewshot.training.distributed`). Rank 0 alone writes the
checkpoints; every rank reads ``last.pt`` on resume (the output folder must be on a file system all
ranks share). One process pays nothing for this: no process group, the code paths of before.
"""
from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from fewshot.images.augment import AugmentConfig
from fewshot.images.inference import autocast, autocast_dtype
from fewshot.training.checkpoint import check_resumable, cpu_state, load_training_state, save_model, save_training_state
from fewshot.training.distributed import data_parallel, reduce_step
from fewshot.training.losses import LOSSES
from fewshot.training.optim import build_optimizer, build_scheduler
from fewshot.utils import distributed
from fewshot.utils.device import resolve_device
from fewshot.utils.errors import UserError
from fewshot.utils.seeding import derive_seed, seeded_global_rng


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (a ``[train]`` table in TOML).

    ``amp``: mixed precision on CUDA (bf16, or fp16 with a GradScaler); ``cpu_amp``: bf16 autocast on the
    CPU too (off by default: fp32 is the reference; it pays on CPUs with AMX / AVX512-BF16);
    ``channels_last``: NHWC activations on any device (measured speeds: ``benchmarks/results/train_speed.md``).
    ``warmup_epochs`` may be fractional. ``class_weights``: "none", "inverse" (the seed's max/count) or
    "effective" (Cui et al. 2019, ``effective_beta``). ``val_min_per_class``: the fewest validation images
    a class with >= 2 train images gives up (0 lets the rarest classes keep all their images for
    training). ``val_metric``: "macro" (mean per-class accuracy, what the benchmark reports on
    rare classes) or "micro". ``loss``: "ce" (cross-entropy) or "logit_adjusted" (Menon et al. 2021,
    "Long-tail learning via logit adjustment", ICLR: cross-entropy of ``logits + loss_tau * log prior``,
    the prior being the training labels' class frequencies; ``loss_tau=1`` is Ren et al. 2020's balanced
    softmax). It combines with ``class_weights`` and ``label_smoothing``; validation and scoring use the
    plain logits, which the loss leaves free of the prior."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    class_weights: Literal["none", "inverse", "effective"] = "none"
    loss: Literal["ce", "logit_adjusted"] = "ce"
    loss_tau: float = 1.0
    effective_beta: float = 0.999
    balanced_sampling: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = 0.1
    val_min_per_class: int = 1
    val_metric: Literal["macro", "micro"] = "macro"
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_amp: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0 or self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"train.lr={self.lr} must be > 0 and 0 <= warmup_epochs={self.warmup_epochs} "
                             f"<= epochs={self.epochs}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown train.loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if not self.loss_tau >= 0:
            raise ValueError(f"train.loss_tau={self.loss_tau} must be >= 0")


class Objective(ABC):
    """What :func:`fit` trains: the batches of an epoch, a batch's loss, and a validation score.

    Under torchrun :func:`fit` first calls :meth:`distribute`; from then on :meth:`train_batches` yields this
    rank's shard of every global batch and :meth:`loss` returns the shard's share of the global batch's
    loss (see :meth:`distribute`)."""

    rank: int = 0
    world: int = 1

    def distribute(self, rank: int, world: int) -> None:
        """Train as rank ``rank`` of ``world`` processes (called by :func:`fit` before :meth:`setup`, only
        when ``world > 1``). An objective that supports it draws every global batch exactly as one
        process does (same generator calls), keeps its shard (item ``i`` on rank ``i mod world``), and
        returns from :meth:`loss` the shard's share of the global batch's mean loss (the ranks' shares
        sum to it) with the shard's correct and total predictions. This default refuses."""
        raise UserError(f"{type(self).__name__} cannot train in several processes (torchrun): it does not "
                        "implement Objective.distribute; run it in one process")

    def setup(self, device: torch.device, memory_format: torch.memory_format) -> None:
        """Called once by :func:`fit` before training: move data to ``device``."""

    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Number of batches :meth:`train_batches` yields per epoch (for the schedule and progress)."""

    @abstractmethod
    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The batches of ``epoch``, on the device; all randomness from ``generator``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor | int, int]:
        """(mean loss, number of correct predictions, number of predictions) of ``model`` on ``batch``."""

    def validate(self, model: nn.Module) -> float | None:
        """Validation score, higher is better (the model is in eval mode); None when there is no
        validation data, in which case the last epoch counts as the best."""
        return None


@dataclass
class FitResult:
    """``best_epoch`` is 1-based; ``history`` has one dict per epoch (epoch, train_loss, train_acc,
    val_score, lr, images_per_s, train_seconds, seconds); ``best_state`` lives on the CPU."""

    best_epoch: int
    best_score: float | None
    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor]


@dataclass
class _Steppers:
    """What one :func:`fit` call steps besides the model, all of it checkpointed in ``last.pt``; plus
    the device and precision it runs at and the number of batches per epoch."""

    device: torch.device
    amp_dtype: torch.dtype | None
    steps: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator


def fit(model: nn.Module, objective: Objective, config: TrainConfig, out_dir: str | Path | None = None, *,
        resume: bool = False, meta: Mapping[str, Any] | None = None, progress: bool = True,
        restore_best: bool = True) -> FitResult:
    """Train ``model`` on ``objective`` for ``config.epochs`` epochs; see the module docstring.

    ``out_dir``: where ``last.pt`` and ``best.pt`` go (None: no checkpoints). An existing ``last.pt`` is
    continued with ``resume=True`` and is an error otherwise. ``meta`` (e.g. {"backbone": "resnet18"})
    (plain str/int/float/bool/list/dict values) is stored in the checkpoints; ``create_backbone`` checks
    its "backbone" entry. With ``restore_best`` the model ends holding the best epoch's weights."""
    st = _prepare(model, objective, config)
    cfg = dataclasses.asdict(config)
    meta = dict(meta or {})
    out = Path(out_dir) if out_dir is not None else None
    run = _resume_run(out, resume, model, st, cfg)
    progress = progress and distributed.is_main()
    with data_parallel(model, objective.loss, st.device) as step_loss:
        for epoch in range(run["epoch"], config.epochs):
            t0 = time.perf_counter()
            row = _train_epoch(model, objective, step_loss, st, epoch, config, progress)
            score = _validate(model, objective, st)
            row.update(val_score=score, seconds=time.perf_counter() - t0)
            improved = _record_epoch(run, row, model, epoch)
            if out is not None:
                _save_checkpoints(out, run, improved, model, st, cfg, meta)
            if progress:
                tqdm.write(_summary(row, config.epochs, improved))

    best = run["best"]
    if best["state"] is None:
        raise RuntimeError("fit finished without a single epoch; check config.epochs")
    if restore_best:
        model.load_state_dict(best["state"])
    return FitResult(best["epoch"], best["score"], list(run["history"]), best["state"])


def _prepare(model: nn.Module, objective: Objective, config: TrainConfig) -> _Steppers:
    """Move the model and the objective's data to the device; build the optimiser, schedule, scaler and
    the training generator (seeded from ``config.seed``)."""
    device = resolve_device(config.device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    if distributed.is_distributed():
        objective.distribute(distributed.rank(), distributed.world_size())
    objective.setup(device, memory_format)
    steps = objective.steps_per_epoch()
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.momentum, config.weight_decay,
                                config.nesterov)
    scheduler = build_scheduler(optimizer, steps * config.epochs, round(config.warmup_epochs * steps))
    amp_dtype = autocast_dtype(device, config.amp, config.cpu_amp)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype is torch.float16)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "train"))
    return _Steppers(device, amp_dtype, steps, optimizer, scheduler, scaler, generator)


def _resume_run(out: Path | None, resume: bool, model: nn.Module, st: _Steppers,
                cfg: dict[str, Any]) -> dict[str, Any]:
    """The run record (epochs done, history, best epoch): fresh, or loaded with the model and ``st``
    from ``out/last.pt`` when ``resume`` allows it."""
    run = {"epoch": 0, "history": [], "best": {"epoch": 0, "score": None, "state": None}}
    if out is None or not (out / "last.pt").exists():
        return run
    if not resume:
        raise FileExistsError(f"{out / 'last.pt'} exists from an earlier run; pass resume=True (--resume) to "
                              "continue it, or choose another output folder")
    saved = load_training_state(out / "last.pt")
    check_resumable(out / "last.pt", saved["config"], cfg, defaults=dataclasses.asdict(TrainConfig()))
    model.load_state_dict(saved["model"])
    st.optimizer.load_state_dict(saved["optimizer"])
    st.scheduler.load_state_dict(saved["scheduler"])
    st.scaler.load_state_dict(saved["scaler"])
    st.generator.set_state(saved["generator"])
    return {k: saved[k] for k in run}


def _validate(model: nn.Module, objective: Objective, st: _Steppers) -> float | None:
    model.eval()
    with torch.no_grad(), autocast(st.device, st.amp_dtype):
        score = objective.validate(model)
    score = None if score is None else float(score)  # numpy scalars would not load with weights_only
    # Every rank validates the same weights on the same (gathered) data; rank 0's score decides anyway,
    # so that the ranks can never disagree about the best epoch.
    return distributed.broadcast_object(score)


def _record_epoch(run: dict[str, Any], row: dict[str, Any], model: nn.Module, epoch: int) -> bool:
    """Append ``row`` to the run's history and keep the model as the best when its score improved
    (or there is no score: then the latest epoch counts as the best). Returns whether it did."""
    run["history"].append(row)
    best, score = run["best"], row["val_score"]
    improved = best["state"] is None or score is None or (best["score"] is not None and score > best["score"])
    if improved:
        run["best"] = {"epoch": epoch + 1, "score": score, "state": cpu_state(model)}
    run["epoch"] = epoch + 1
    return improved


def _save_checkpoints(out: Path, run: dict[str, Any], improved: bool, model: nn.Module, st: _Steppers,
                      cfg: dict[str, Any], meta: dict[str, Any]) -> None:
    if not distributed.is_main():  # rank 0 writes; the barrier below lets no rank run ahead of the files
        distributed.barrier()
        return
    if improved:  # best.pt first: last.pt must never point at a best that is not on disk
        best = run["best"]
        save_model(out / "best.pt", best["state"], config=cfg, meta=meta, epoch=best["epoch"], score=best["score"])
    save_training_state(out / "last.pt", {
        **run, "model": model.state_dict(), "optimizer": st.optimizer.state_dict(),
        "scheduler": st.scheduler.state_dict(), "scaler": st.scaler.state_dict(),
        "generator": st.generator.get_state(), "config": cfg, "meta": meta})
    distributed.barrier()


def _train_epoch(model: nn.Module, objective: Objective,
                 step_loss: Callable[[Any], tuple[torch.Tensor, torch.Tensor | int, int]], st: _Steppers,
                 epoch: int, config: TrainConfig, progress: bool) -> dict[str, Any]:
    """One epoch of optimiser steps; returns its history row (loss, accuracy, lr, throughput).
    ``step_loss(batch)``: the objective's loss of ``model`` (through DDP under torchrun, where the history
    row holds the global batches' numbers, the same on every rank)."""
    model.train()
    world = distributed.world_size()
    loss_sum = torch.zeros((), device=st.device)
    correct_sum = torch.zeros((), device=st.device)
    n_sum = 0
    n_global = torch.zeros((), dtype=torch.float64, device=st.device)  # under torchrun: no sync per step
    bar = tqdm(total=st.steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
               disable=not progress, dynamic_ncols=True)
    # Layers that draw from the global RNG (dropout) get a stream seeded from the training generator;
    # seeded_global_rng puts the caller's CPU and CUDA states back afterwards. Under torchrun each rank
    # gets its own stream (no shipped model has dropout; a mask is then the only draw that depends on the
    # number of processes).
    seed = int(torch.randint(2**62, (1,), generator=st.generator))
    if world > 1:
        seed = derive_seed(seed, f"rank {distributed.rank()}")
    with seeded_global_rng(seed, st.device if st.device.type == "cuda" else None), bar:
        t0 = time.perf_counter()
        for step, batch in enumerate(objective.train_batches(epoch, st.generator)):
            with autocast(st.device, st.amp_dtype):
                loss, correct, n = step_loss(batch)
            st.optimizer.zero_grad(set_to_none=True)
            # Under torchrun loss is this rank's share of the global batch's loss and DDP averages the
            # gradients over the ranks: world * share makes that average the global batch's gradient.
            st.scaler.scale(loss * world if world > 1 else loss).backward()
            st.scaler.step(st.optimizer)
            st.scaler.update()
            st.scheduler.step()
            if world > 1:
                total = reduce_step(loss, correct, n)  # [global loss, correct, n]
                loss_sum += total[0] * total[2]
                correct_sum += total[1]
                n_global += total[2]
            else:
                loss_sum += loss.detach().float() * n
                correct_sum += correct
                n_sum += n
            bar.update(1)
            if step % 10 == 0 or step == st.steps - 1:
                if world > 1:
                    n_sum = int(n_global.item())
                mean_loss = loss_sum.item() / n_sum
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"epoch {epoch + 1}, step {step + 1}: the training loss is "
                                             f"{mean_loss}; lower train.lr (now {config.lr}) or the warm-up")
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct_sum.item() / n_sum:.3f}",
                                img_s=f"{n_sum / (time.perf_counter() - t0):.0f}")
        if st.device.type == "cuda":
            torch.cuda.synchronize(st.device)
        seconds = time.perf_counter() - t0
    if n_sum == 0:
        raise RuntimeError(f"epoch {epoch + 1}: the objective yielded no batch; check its training data")
    return {"epoch": epoch + 1, "train_loss": loss_sum.item() / n_sum, "train_acc": correct_sum.item() / n_sum,
            "lr": st.scheduler.get_last_lr()[0], "images_per_s": n_sum / seconds, "train_seconds": seconds}


def _summary(row: Mapping[str, Any], epochs: int, improved: bool) -> str:
    val = "-" if row["val_score"] is None else f"{row['val_score']:.4f}"
    return (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} "
            f"val {val}{' (best)' if improved else ''} | {row['images_per_s']:.0f} img/s, {row['seconds']:.1f} s")
