"""Optimiser and per-step learning-rate schedule: linear warm-up then cosine decay (Loshchilov & Hutter
2017, "SGDR", without restarts; warm-up as in Goyal et al. 2017)."""
from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier for optimiser step ``step`` (0-based): (step + 1) / warmup during warm-up,
    then 0.5 (1 + cos(pi t)), t going from 0 to (total - warmup - 1) / (total - warmup)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """Picklable ``lr_lambda`` for :class:`torch.optim.lr_scheduler.LambdaLR` (its attributes are saved in
    the scheduler's state dict)."""

    def __init__(self, total_steps: int, warmup_steps: int) -> None:
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"schedule needs total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                             f"{total_steps} and {warmup_steps}; lower warmup_epochs")
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps)


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters; weight decay only on weight matrices and
    conv kernels (not on BatchNorm scales or biases, whose decay only hurts)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter (all requires_grad=False); unfreeze something")
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    return torch.optim.AdamW(groups, lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule; call ``step()`` after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps))
