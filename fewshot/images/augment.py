"""Batched image augmentation as tensor ops on uint8 NHWC batches straight from the image cache.

Training path: uint8 [B, H, W, 3] -> float [B, 3, H, W] -> random resized crop and horizontal flip (one
``affine_grid`` + ``grid_sample`` call with a per-sample affine matrix) -> colour jitter (brightness,
contrast, saturation; per sample) -> ImageNet normalisation. Evaluation path: convert + normalise only.
The output keeps the input's height and width (the cache already holds images at the training size).

The ImageNet statistics are the pipeline's fixed contract with every backbone, whatever its weights: a
backbone that wants other statistics (EfficientNet-Lite: [-1, 1]) converts in its own first layer
(:mod:`fewshot.models.normalization`), so nothing here depends on the backbone.

Every random number comes from an explicit ``torch.Generator`` (drawn on the CPU, so a CPU run and a CUDA
run of the same seed use the same crops), all of a batch's parameters in one ``torch.rand`` call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Re-exported: the statistics live with the backbones, which declare what they expect relative to them.
from fewshot.models.normalization import PIPELINE_MEAN as IMAGENET_MEAN
from fewshot.models.normalization import PIPELINE_STD as IMAGENET_STD

# ITU-R 601 luma, the grey torchvision's colour jitter blends towards.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. ``scale``: range of the crop's area as a fraction of the image's;
    ``ratio``: range of the crop's aspect ratio *relative to the image's* (1 = same shape, no distortion
    once resized back); ``hflip``: probability of a horizontal flip; ``brightness``/``contrast``/
    ``saturation``: factors drawn uniformly from [1 - x, 1 + x] per sample (0 switches one off)."""

    enabled: bool = True
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"augment.scale={self.scale}: need 0 < low <= high <= 1 (fractions of the image area)")
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"augment.ratio={self.ratio}: need 0 < low <= high (aspect ratios, 1 = the image's)")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"augment.hflip={self.hflip}: a probability, must lie in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"augment.{name}={getattr(self, name)}: must lie in [0, 1)")


def to_float_nchw(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [0, 1]."""
    _check_batch(batch)
    return _to_nchw(batch).div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of float [B, 3, H, W] in [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def eval_transform(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float32 [B, 3, H, W]; equals ``normalize(to_float_nchw(batch))``
    in one pass over the data (the /255 is folded into the scale)."""
    _check_batch(batch)
    return _normalize_255(_to_nchw(batch))


def crop_flip_theta(width: torch.Tensor, height: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
                    flip: torch.Tensor) -> torch.Tensor:
    """Affine matrices [B, 2, 3] for ``affine_grid`` (output -> input, coordinates in [-1, 1]).

    The crop spans ``width``/``height`` (fractions of the image, [B]) around the centre (``cx``, ``cy``)
    in normalised coordinates; ``flip`` [B] bool mirrors it horizontally."""
    sign = 1.0 - 2.0 * flip.to(width.dtype)
    theta = torch.zeros(width.shape[0], 2, 3, dtype=width.dtype, device=width.device)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    return theta


def apply_theta(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float [B, C, H, W] through per-sample affine matrices [B, 2, 3] (bilinear), same size out."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_crop_flip(cfg: AugmentConfig, n: int, u: torch.Tensor) -> torch.Tensor:
    """Random resized crop + flip matrices [n, 2, 3] from uniforms ``u`` [n, 5].

    Area fraction s ~ U(scale), log aspect r ~ U(log ratio); the crop is sqrt(s r) x sqrt(s / r) of the
    image (clamped to 1 instead of torchvision's rejection loop), placed uniformly inside the image."""
    lo, hi = cfg.scale
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    width = torch.sqrt(area * ratio).clamp_(max=1.0)
    height = torch.sqrt(area / ratio).clamp_(max=1.0)
    cx = (1.0 - width) * (2.0 * u[:, 2] - 1.0)
    cy = (1.0 - height) * (2.0 * u[:, 3] - 1.0)
    return crop_flip_theta(width, height, cx, cy, u[:, 4] < cfg.hflip)


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                 saturation: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Per-sample brightness b, contrast c and saturation s factors [B] on float [B, 3, H, W] in
    [0, max_value], as torchvision's ColorJitter defines them, applied in that fixed order:
    x1 = b x;  x2 = c x1 + (1 - c) mean(grey(x1));  x3 = s x2 + (1 - s) grey(x2);  clamp once at the end
    (torchvision clamps after each step and shuffles the order).

    grey() is linear with weights summing to 1, so the chain collapses to one pass over the data,
    x3 = (b c s) x + m (1 - c) + (1 - s) b c grey(x), with m = b mean(grey(x))."""
    luma = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    grey = (x * luma).sum(1, keepdim=True)  # [B, 1, H, W]
    b, c, s = (t.to(x.dtype).view(-1, 1, 1, 1) for t in (brightness, contrast, saturation))
    bc = b * c
    offset = (b * grey.mean((2, 3), keepdim=True)) * (1.0 - c) + grey * ((1.0 - s) * bc)
    return torch.addcmul(offset, x, bc * s).clamp_(0.0, max_value)


def augment_uniforms(n: int, generator: torch.Generator) -> torch.Tensor:
    """The random numbers :func:`augment_batch` draws for a batch of ``n``: one uniform tensor [n, 8]."""
    return torch.rand(n, 8, generator=generator, device=generator.device)


def augment_batch(batch: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None,
                  uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> augmented, normalised float32 [B, 3, H, W] (``eval_transform`` when
    ``cfg.enabled`` is false). Draws exactly one [B, 8] uniform tensor from ``generator``
    (:func:`augment_uniforms`), or uses ``uniforms`` [B, 8] given instead: a process of a distributed run
    augments its shard of a global batch with that batch's draws, as one process would."""
    _check_batch(batch)
    if not cfg.enabled:
        return eval_transform(batch)
    n = batch.shape[0]
    u = (augment_uniforms(n, generator) if uniforms is None else uniforms).to(batch.device)
    x = _to_nchw(batch)  # 0..255: the /255 is folded into the normalisation
    x = apply_theta(x, sample_crop_flip(cfg, n, u[:, :5]))
    if cfg.brightness or cfg.contrast or cfg.saturation:
        factors = 1.0 + (2.0 * u[:, 5:] - 1.0) * x.new_tensor([cfg.brightness, cfg.contrast, cfg.saturation])
        x = color_jitter(x, factors[:, 0], factors[:, 1], factors[:, 2], max_value=255.0)
    return _normalize_255(x)


def _to_nchw(batch: torch.Tensor) -> torch.Tensor:
    # Contiguous NCHW so the model sees one layout on every path (callers ask for channels_last where it
    # pays, on CUDA). The strided transpose copies the 1-byte uint8 values, and only the contiguous result
    # is converted to float, rather than transposing 4-byte floats while converting.
    return batch.permute(0, 3, 1, 2).contiguous().float()


def _normalize_255(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    inv_std = 1.0 / (x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
    # In place is safe: every caller passes a fresh float tensor made from the uint8 batch.
    return x.sub_(mean).mul_(inv_std)


def _check_batch(batch: torch.Tensor) -> None:
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected a uint8 image batch [B, H, W, 3], got {batch.dtype} {tuple(batch.shape)}; "
                         "pass images straight from the uint8 image cache")
