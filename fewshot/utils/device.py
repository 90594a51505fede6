"""Where tensors go: ``--device auto|cpu|cuda[:N]`` resolved once, with a clear error for a missing GPU."""
from __future__ import annotations

import torch

from fewshot.utils.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other value is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for CUDA, but torch sees no GPU; use --device cpu or auto")
    return dev
