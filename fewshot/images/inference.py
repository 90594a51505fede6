"""Batched inference over uint8 images: :func:`predict_scores` and :func:`extract_features` run a model
in eval mode, without augmentation or gradients, on the cache array or an :class:`ImageStore`; plus the
mixed-precision and memory-format choices the trainer shares.

Under torchrun (a process group of several ranks, :mod:`fewshot.utils.distributed`) :func:`map_images` is
collective: every rank maps images ``i mod world`` of ``indices`` and every rank gets the whole result,
gathered back in order. Each image's output does not depend on which others share its batch (eval mode),
up to the kernels' rounding for another batch size.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fewshot.images.augment import eval_transform
from fewshot.images.store import ImageStore
from fewshot.utils import distributed
from fewshot.utils.device import resolve_device


def autocast_dtype(device: torch.device, amp: bool, cpu_amp: bool = False) -> torch.dtype | None:
    """Mixed-precision dtype: with ``amp`` on CUDA bf16 where supported, else fp16 (needs a GradScaler);
    on the CPU bf16 only with ``cpu_amp`` (pays on CPUs with AMX / AVX512-BF16); else None (fp32)."""
    if device.type == "cuda" and amp:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_amp:
        return torch.bfloat16
    return None


def module_memory_format(module: nn.Module) -> torch.memory_format:
    """channels_last when the module's conv kernels are stored that way (inputs should then match)."""
    kernel = next((p for p in module.parameters() if p.ndim == 4), None)
    if kernel is not None and kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def map_images(module: nn.Module, images: np.ndarray | ImageStore, indices: Sequence[int] | np.ndarray, *,
               batch_size: int = 256, device: str | torch.device | None = None, amp: bool = True,
               cpu_amp: bool = False, progress: bool = True, desc: str = "inference") -> torch.Tensor:
    """``module`` applied to the images at ``indices`` in eval mode: float32 [n, ...] on the CPU.

    ``images``: the uint8 array [N, H, W, 3] (a memmap is read batch by batch) or an :class:`ImageStore`.
    ``device``: None runs where the module's parameters are; otherwise the module is moved there. The
    module's train/eval mode is restored afterwards. ``amp``/``cpu_amp``: see :func:`autocast_dtype`.
    Under torchrun every rank must call it with the same arguments (see the module docstring)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError(f"{desc}: no image indices given")
    n_total = len(indices)
    sharded = distributed.is_distributed() and n_total >= distributed.world_size()  # fewer: every rank maps all
    if sharded:
        indices = distributed.shard(indices)
    if device is None:
        device = next(module.parameters()).device
    else:
        device = resolve_device(device)
        module.to(device)
    dtype = autocast_dtype(device, amp, cpu_amp)
    memory_format = module_memory_format(module)
    was_training = module.training
    module.eval()
    out = []
    try:
        for start in tqdm(range(0, len(indices), batch_size), desc=desc, leave=False, disable=not progress):
            idx = indices[start:start + batch_size]
            if isinstance(images, ImageStore):
                x = images.load(images.rows(idx), memory_format=memory_format).to(device)
            else:
                batch = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device)
                x = eval_transform(batch).contiguous(memory_format=memory_format)
            with autocast(device, dtype):
                out.append(module(x).float().cpu())
    finally:
        module.train(was_training)
    result = torch.cat(out)
    return distributed.gather_shards(result, n_total) if sharded else result


def predict_scores(model: nn.Module, images: np.ndarray | ImageStore, indices: Sequence[int] | np.ndarray,
                   batch_size: int = 256, device: str | torch.device | None = None, **kwargs) -> torch.Tensor:
    """Class scores (logits) [n, C] of ``model`` for the images at ``indices``; see :func:`map_images`."""
    return map_images(model, images, indices, batch_size=batch_size, device=device, desc="predict", **kwargs)


def extract_features(backbone: nn.Module, images: np.ndarray | ImageStore, indices: Sequence[int] | np.ndarray,
                     batch_size: int = 256, device: str | torch.device | None = None, **kwargs) -> torch.Tensor:
    """Backbone features [n, D] for the images at ``indices``; see :func:`map_images`."""
    return map_images(backbone, images, indices, batch_size=batch_size, device=device, desc="features", **kwargs)
