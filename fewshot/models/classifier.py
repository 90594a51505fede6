"""A backbone plus a linear head: the model of every supervised stage."""
from __future__ import annotations

import torch
from torch import nn

from fewshot.utils.seeding import seeded_global_rng


class Classifier(nn.Module):
    """``backbone`` (with ``out_dim``) + linear head: images [B, 3, H, W] -> logits [B, n_classes].

    The head's initialisation is drawn from ``seed`` (torch's CPU stream for that seed) and leaves every
    global RNG state, CPU and CUDA, as it was (:func:`fewshot.utils.seeding.seeded_global_rng`). With
    ``freeze_backbone`` (a linear probe) the backbone gets no gradient, stays in eval mode (its BatchNorm
    statistics do not drift) and runs without autograd, so training costs little more than inference."""

    def __init__(self, backbone: nn.Module, n_classes: int, *, seed: int = 0, freeze_backbone: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        with seeded_global_rng(seed):
            self.head = nn.Linear(backbone.out_dim, n_classes)
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            features = self.backbone(x)
        return self.head(features)
