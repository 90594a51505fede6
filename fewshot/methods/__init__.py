"""Few-shot methods, one per file, on the :class:`FewShotClassifier` interface; ``create_method`` by name."""
from __future__ import annotations

from typing import Any

from fewshot.methods.anil import ANIL
from fewshot.methods.base import FewShotClassifier
from fewshot.methods.centroid import NearestCentroid
from fewshot.methods.crt import CRT
from fewshot.methods.fusion import LateFusion
from fewshot.methods.logit_adjust import LogitAdjust
from fewshot.methods.maml import MAML
from fewshot.methods.protonet import ProtoNet
from fewshot.methods.tau_norm import TauNorm
from fewshot.methods.text_head import TextHead

METHODS: dict[str, type[FewShotClassifier]] = {
    "centroid": NearestCentroid, "protonet": ProtoNet, "crt": CRT, "tau_norm": TauNorm, "logit_adjust": LogitAdjust,
    "maml": MAML, "anil": ANIL,  # need learn2learn (imported when one is built)
}


def create_method(name: str, **kwargs: Any) -> FewShotClassifier:
    """Instantiate a registered method; unknown names raise with the list of known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**kwargs)


__all__ = ["FewShotClassifier", "NearestCentroid", "ProtoNet", "CRT", "TauNorm", "LogitAdjust", "TextHead", "LateFusion", "METHODS",
           "create_method", "MAML", "ANIL"]
