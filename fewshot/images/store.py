"""The images a run needs, as one uint8 tensor in RAM (or on the GPU), served as normalised batches.

:class:`ImageStore` copies the images out of the (memory-mapped) cache once (14 KB per 80x60 image), so
a batch is one ``index_select`` plus the tensor augmentation of :mod:`fewshot.images.augment`, on the
device that will consume it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fewshot.images.augment import AugmentConfig, augment_batch, eval_transform
from fewshot.utils.device import resolve_device


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
             memory_format: torch.memory_format = torch.contiguous_format,
             uniforms: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised float [B, 3, H, W] on the store's device for ``rows``; augmented when ``augment``
        is enabled (then ``generator`` is required, or the batch's ``uniforms``: see ``augment_batch``)."""
        batch = self.data.index_select(0, rows.to(self.device, non_blocking=True))
        if augment is not None and augment.enabled:
            if generator is None and uniforms is None:
                raise ValueError("augmentation needs an explicit torch.Generator")
            x = augment_batch(batch, augment, generator, uniforms)
        else:
            x = eval_transform(batch)
        return x.contiguous(memory_format=memory_format)
