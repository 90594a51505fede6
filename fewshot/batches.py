"""Batches straight from the uint8 image cache, and batched inference over it.

:class:`ImageStore` copies the images a run needs out of the (memory-mapped) cache once, into one uint8
tensor in RAM, or on the GPU when training there (14 KB per 80x60 image: the 44k real images are 0.6 GB),
so a batch is one ``index_select`` plus the tensor augmentation of :mod:`fewshot.augment`, on the device
that will consume it. :func:`predict_scores` and :func:`extract_features` run a model over images in eval
mode, without augmentation or gradients.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fewshot.augment import AugmentConfig, augment_batch, eval_transform
from fewshot.io import resolve_device


class ImageStore:
    """uint8 images [n, H, W, 3] on ``device``, addressed by their index in the full image array."""

    def __init__(self, images: np.ndarray, indices: Sequence[int] | np.ndarray,
                 device: str | torch.device = "cpu") -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be a uint8 array [N, H, W, 3] (the image cache), got "
                             f"{images.dtype} {tuple(images.shape)}")
        self.index = np.unique(np.asarray(indices, dtype=np.int64))
        if self.index.size and (self.index[0] < 0 or self.index[-1] >= len(images)):
            raise IndexError(f"image indices span [{self.index[0]}, {self.index[-1]}] but the image array "
                             f"holds {len(images)} images")
        self.device = resolve_device(device)
        # Sorted fancy indexing reads a memmap in file order, once.
        self.data = torch.from_numpy(np.ascontiguousarray(images[self.index])).to(self.device)

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device: str | torch.device) -> ImageStore:
        """Move the held images to ``device`` (in place); returns self."""
        self.device = resolve_device(device)
        self.data = self.data.to(self.device)
        return self

    def rows(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Rows of ``data`` (int64 [n], on the CPU) for dataset ``indices``; KeyError for ones not held."""
        indices = np.asarray(indices, dtype=np.int64)
        pos = np.searchsorted(self.index, indices).clip(max=max(len(self.index) - 1, 0))
        missing = indices[self.index[pos] != indices] if len(self.index) else indices
        if missing.size:
            raise KeyError(f"image indices {missing[:5].tolist()} (of {missing.size}) are not in this store; "
                           "build it with every index the run uses")
        return torch.from_numpy(pos)

    def load(self, rows: torch.Tensor, augment: AugmentConfig | None = None,
             generator: torch.Generator | None = None,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """Normalised float [B, 3, H, W] on the store's device for ``rows``; augmented when ``augment``
        is enabled (then ``generator`` is required)."""
        batch = self.data.index_select(0, rows.to(self.device, non_blocking=True))
        if augment is not None and augment.enabled:
            if generator is None:
                raise ValueError("augmentation needs an explicit torch.Generator")
            x = augment_batch(batch, augment, generator)
        else:
            x = eval_transform(batch)
        return x.contiguous(memory_format=memory_format)


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
    module's train/eval mode is restored afterwards. ``amp``/``cpu_amp``: see :func:`autocast_dtype`."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError(f"{desc}: no image indices given")
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
    return torch.cat(out)


def predict_scores(model: nn.Module, images: np.ndarray | ImageStore, indices: Sequence[int] | np.ndarray,
                   batch_size: int = 256, device: str | torch.device | None = None, **kwargs) -> torch.Tensor:
    """Class scores (logits) [n, C] of ``model`` for the images at ``indices``; see :func:`map_images`."""
    return map_images(model, images, indices, batch_size=batch_size, device=device, desc="predict", **kwargs)


def extract_features(backbone: nn.Module, images: np.ndarray | ImageStore, indices: Sequence[int] | np.ndarray,
                     batch_size: int = 256, device: str | torch.device | None = None, **kwargs) -> torch.Tensor:
    """Backbone features [n, D] for the images at ``indices``; see :func:`map_images`."""
    return map_images(backbone, images, indices, batch_size=batch_size, device=device, desc="features", **kwargs)
