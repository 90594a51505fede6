"""One resumable trainer (``fit``) over an ``Objective``: the supervised and episodic objectives, their
losses, optimiser schedule and checkpoints."""
from __future__ import annotations

from fewshot.training.loop import FitResult, Objective, TrainConfig, fit

__all__ = ["FitResult", "Objective", "TrainConfig", "fit"]
