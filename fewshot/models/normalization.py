"""Input normalisation as a property of the backbone.

The whole image pipeline (training augmentation, evaluation transform, the image store, batched inference,
the feature cache) hands every backbone the same thing: float [B, 3, H, W] normalised with the ImageNet
statistics (:data:`PIPELINE_MEAN` / :data:`PIPELINE_STD`, those of the torchvision models, He et al. 2016).
A backbone whose weights expect other statistics declares them (``input_mean`` / ``input_std``, in [0, 1]
pixel units) and converts its input itself with an :class:`InputNormalization` first layer. So no caller can
forget to pass a backbone's statistics, and the backbones that want ImageNet's see their input bit for bit as
before (nothing is inserted in front of them).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What the image pipeline normalises with: the contract every backbone's forward receives.
PIPELINE_MEAN, PIPELINE_STD = IMAGENET_MEAN, IMAGENET_STD


class InputNormalization(nn.Module):
    """Re-normalise pipeline input to the statistics a backbone's weights were trained with.

    With pixels p in [0, 1], the pipeline gives x = (p - m0) / s0 and the weights want (p - m) / s, so
    y = x (s0 / s) + (m0 - m) / s: one per-channel affine map. Its scale and shift [1, 3, 1, 1] are
    non-persistent buffers: they follow ``.to(device)`` but stay out of the state dict, so checkpoints
    and pretrained weights load strictly without them. EfficientNet-Lite (Tan & Le 2019, TF Lite ports)
    wants mean = std = 0.5, i.e. pixels in [-1, 1].
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"need 3 channel means and 3 positive stds, got mean={mean}, std={std}")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        m0, s0 = torch.tensor(PIPELINE_MEAN, dtype=torch.float64), torch.tensor(PIPELINE_STD, dtype=torch.float64)
        m, s = torch.tensor(self.mean, dtype=torch.float64), torch.tensor(self.std, dtype=torch.float64)
        # Composed in float64 and rounded once, so the map is as exact as one fp32 multiply-add allows.
        self.register_buffer("scale", (s0 / s).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m0 - m) / s).float().view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pipeline-normalised [B, 3, H, W] -> normalised with (mean, std), same shape and dtype."""
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std} (input normalised with {PIPELINE_MEAN}, {PIPELINE_STD})"


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a backbone's weights expect: its declared ``input_mean`` / ``input_std``, else the
    pipeline's ImageNet statistics."""
    return (tuple(getattr(model, "input_mean", PIPELINE_MEAN)), tuple(getattr(model, "input_std", PIPELINE_STD)))


def check_input_normalization(model: nn.Module, name: str) -> None:
    """Refuse a backbone that declares statistics other than the pipeline's without converting to them
    (an :class:`InputNormalization` with exactly those statistics among its modules): it would be fed
    wrongly normalised images silently."""
    mean, std = input_stats(model)
    if (mean, std) == (PIPELINE_MEAN, PIPELINE_STD):
        return
    if not any(isinstance(m, InputNormalization) and (m.mean, m.std) == (mean, std) for m in model.modules()):
        raise TypeError(f"backbone {name!r} declares input_mean={mean}, input_std={std} but has no "
                        f"InputNormalization({mean}, {std}) layer; its input arrives ImageNet-normalised")
