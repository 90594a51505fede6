"""Phases of a benchmark run: each finished phase's result is stored atomically and never recomputed.

A phase is a named function whose result (tensors, arrays, dicts...) lands in ``<out>/phases/<name>.pt``
with its wall time. Killing a run loses at most the phase in progress, and training phases keep their
own per-epoch checkpoints, so ``--resume`` continues from the last finished epoch.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from fewshot.utils.io import atomic_torch_save

T = TypeVar("T")


class PhaseStore:
    def __init__(self, out: Path, *, log: Callable[[str], None] = tqdm.write) -> None:
        self.folder = Path(out) / "phases"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []
        self.log = log

    def run(self, name: str, fn: Callable[[], T]) -> T:
        """``fn()``'s result, computed once: a stored result is loaded instead of recomputed."""
        path = self.folder / f"{name}.pt"
        if path.exists():
            saved: dict[str, Any] = torch.load(path, weights_only=False)
            self.seconds[name] = saved["seconds"]
            self.reused.append(name)
            self.log(f"[{name}] finished earlier ({saved['seconds']:.0f} s): reusing its result")
            return saved["result"]
        self.log(f"[{name}] running")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        atomic_torch_save({"result": result, "seconds": seconds}, path)
        self.seconds[name] = seconds
        self.log(f"[{name}] done in {seconds:.0f} s")
        return result
