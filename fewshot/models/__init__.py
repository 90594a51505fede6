"""Networks: the backbone registry (``create_backbone``, ``register_backbone``) and the linear classifier."""
from __future__ import annotations

from fewshot.models.backbones import available_backbones, create_backbone, register_backbone
from fewshot.models.classifier import Classifier

__all__ = ["Classifier", "available_backbones", "create_backbone", "register_backbone"]
