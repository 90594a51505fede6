"""Networks: the backbone registry (``create_backbone``, ``register_backbone``) and the linear classifier."""
from __future__ import annotations

from fewshot.models.backbones import BACKBONES, create_backbone
from fewshot.models.classifier import Classifier

__all__ = ["BACKBONES", "Classifier", "create_backbone"]
