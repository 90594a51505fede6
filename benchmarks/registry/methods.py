"""What a benchmark method is, and the registry of them: everything else derives from it (config
validation of ``methods = [...]``, the runner's phases, report tables, plot styles).

A method names the *embedding* it scores with in each protocol (:mod:`benchmarks.registry.embeddings`), in
the transfer protocol possibly one per group (head, tail, and the joint group "all" = head + tail), and
declares how it is scored there, as capabilities rather than by its name or its class:

- ``classifier``: a factory returning a :class:`fewshot.methods.FewShotClassifier` (``fit`` on support
  features, ``scores`` on queries): a feature-based method; or ``scorer``: a method that brings its own
  scores (a trained classifier, the fusion of two branches);
- ``episodic_path``: "prototypes" when its classifier is a nearest-prototype rule that the batched episodic
  evaluator can run (the classifier then gives ``prototype_settings()``), else "generic": fitted and scored
  episode by episode;
- ``inputs``: what it reads ("image", "name"), by default from its embeddings;
- ``settings``, ``checks``, ``requires``: the config tables that key its phases, the config checks it needs,
  the optional modules it needs.

The built-in methods are registered by :mod:`benchmarks.builtin`; adding one is one file under
``fewshot/methods/`` plus one :func:`register_method` call (README, "Add a method"). The registry's order is
the default ``methods`` list, the per-class table's column order and each method's plot colour and marker.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.codekey import code_digest
from benchmarks.registry.embeddings import embeddings, get_embedding
from fewshot.config import ConfigError, to_dict
from fewshot.data.protocols import TRANSFER_GROUPS
from fewshot.methods import FewShotClassifier

PROTOCOLS = ("transfer", "episodic")
INPUTS = ("image", "name")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p", "H", "d", "8", "1", "2", "3", "4", "+",
           "x", "|", "_", ".")
# matplotlib's default cycle first (C0..C9), then named colours far from it
COLORS = tuple(f"C{i}" for i in range(10)) + ("black", "darkgoldenrod", "teal", "navy", "yellowgreen", "maroon",
                                              "darkviolet", "crimson", "olive", "slategray", "deepskyblue",
                                              "sienna", "mediumseagreen", "darkorange")

# (config, base_mean [d]: the mean feature of the base classes' train images, **model) -> an unfitted classifier
ClassifierFactory = Callable[..., FewShotClassifier]


@dataclass(frozen=True)
class BenchmarkMethod:
    """One benchmark method.

    name: its name in configs, result files and plots.
    description: one line for listings and the README.
    transfer: the embedding it scores in the transfer protocol: one name for every group (head, tail and
        the joint "all"), or ``{group: embedding}`` for the groups it runs in (None: not in this protocol).
    episodic: the embedding it scores in the episodic protocol (None: it does not run there).
    classifier: builds the classifier fitted on support features (feature-based methods).
    scorer: instead of ``classifier``, ``scorer(ctx, protocol, trained) -> {group: TopKResult, ...}`` for the
        groups of ``transfer`` (transfer only).
    episodic_path: "prototypes" (batched nearest-prototype evaluation) or "generic" (episode by episode).
    inputs: what it reads, among "image" and "name"; empty: those of its embeddings.
    kshot: run the transfer protocol's K-shot prototype study on the tail (cheap classifiers only).
    settings: config tables its classifier reads besides ``evaluation`` (they key its evaluation phases).
    checks: config checks run when a run with this method starts (each raises ValueError with one line).
    requires: modules of an optional extra it needs: without them it is left out of the default method
        list, and naming it is refused with the fix.
    code: more objects whose source keys its phases besides ``classifier`` / ``scorer``.
    seeded: runs again for each seed of ``cfg.seeds`` (its classifier is cheap and depends on the seed); a
        method whose figure is a trained backbone's own classifier repeats only with ``cfg.seed_backbones``.
    """

    name: str
    description: str
    transfer: str | Mapping[str, str] | None = None
    episodic: str | None = None
    classifier: ClassifierFactory | None = None
    scorer: Callable[..., dict[str, Any]] | None = None
    episodic_path: Literal["prototypes", "generic"] = "generic"
    inputs: tuple[str, ...] = ()
    kshot: bool = True
    settings: tuple[str, ...] = ()
    checks: tuple[Callable[[BenchmarkConfig], None], ...] = ()
    requires: tuple[str, ...] = ()
    code: tuple[Any, ...] = ()
    seeded: bool = True

    def __post_init__(self) -> None:
        if (self.classifier is None) == (self.scorer is None):
            raise ValueError(f"method {self.name!r}: give exactly one of classifier= (feature-based) or scorer=")
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
        if set(self.inputs) - set(INPUTS):
            raise ValueError(f"method {self.name!r}: inputs must be among {', '.join(INPUTS)}, got {list(self.inputs)}")

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

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

    def reads(self) -> tuple[str, ...]:
        """What it takes as input ("image", "name"), declared or from its embeddings, in :data:`INPUTS` order."""
        used = set(self.inputs) or {get_embedding(e).reads for e in (*self.groups().values(), self.episodic) if e}
        return tuple(i for i in INPUTS if i in used)

    def embeddings(self) -> tuple[str, ...]:
        """Every embedding it scores with, in either protocol."""
        return tuple(dict.fromkeys(e for e in (*self.groups().values(), self.episodic) if e))


_REGISTRY: dict[str, BenchmarkMethod] = {}


def register_method(method: BenchmarkMethod, *, overwrite: bool = False) -> BenchmarkMethod:
    """Add ``method`` to the registry (after the ones already there); a taken name needs ``overwrite``."""
    if method.name in _REGISTRY and not overwrite:
        raise ValueError(f"a method named {method.name!r} is already registered; pass overwrite=True to replace it")
    for name in method.embeddings():
        get_embedding(name)  # raises with the known names
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


def resolve_config(cfg: BenchmarkConfig, where: str = "config") -> BenchmarkConfig:
    """``cfg`` with its methods filled in (empty: every available method) and checked against the registry,
    with the checks of those methods and of their embeddings; a :class:`ConfigError` names what to fix."""
    if not cfg.methods:
        cfg = dataclasses.replace(cfg, methods=available_method_names())
    try:
        check_methods(cfg.methods)
        checks = [c for m in cfg.methods for c in get_method(m).checks]
        checks += [c for m in cfg.methods for e in get_method(m).embeddings() for c in get_embedding(e).checks]
        for check in dict.fromkeys(checks):
            check(cfg)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err
    return cfg


def configured_methods(cfg: BenchmarkConfig, protocol: str) -> list[BenchmarkMethod]:
    """The configured methods that run in ``protocol``, in the registry's order (none when ``cfg.protocols``
    leaves it out)."""
    if protocol not in cfg.protocols:
        return []
    return [m for n, m in _REGISTRY.items() if n in cfg.methods and m.embedding(protocol)]


def in_report_order(methods: list[BenchmarkMethod], protocol: str) -> list[BenchmarkMethod]:
    """``methods`` (in registry order) sorted by the registration order of the embedding each scores in
    ``protocol``, a method on a more basic backbone first; ties keep the registry's order."""
    order = [e.name for e in embeddings()]
    return sorted(methods, key=lambda m: order.index(m.embedding(protocol)))


def method_code(method: BenchmarkMethod) -> str:
    """The digest of the code that scores ``method`` (its classifier or scorer, and ``code``)."""
    return code_digest(method.classifier or method.scorer, *method.code)


def method_inputs(cfg: BenchmarkConfig, method: BenchmarkMethod) -> dict:
    """The slice of the config that a method's transfer evaluation phase depends on."""
    data = to_dict(cfg.data)
    return {"method": method.name, "groups": method.groups(), "evaluation": to_dict(cfg.evaluation),
            "validation": to_dict(cfg.validation), "seed": cfg.seed, "cpu_amp": cfg.cpu_amp, **{k: data[k] for k in ("n_head", "min_train", "dedupe")},
            **{name: to_dict(getattr(cfg, name)) for name in method.settings}}


def declaration(method: BenchmarkMethod) -> dict[str, Any]:
    """What a run records of a method in summary.json: its description, groups (transfer embedding of each),
    episodic embedding and inputs; the published files then say which groups each method belongs in."""
    return {"description": method.description, "groups": method.groups(), "episodic": method.episodic,
            "inputs": list(method.reads())}


def is_image_classifier(method: BenchmarkMethod) -> bool:
    """A feature-based transfer method that reads images only (what fusion can take as its image side)."""
    return method.classifier is not None and method.transfer is not None and method.reads() == ("image",)


def image_classifier_names() -> list[str]:
    return [m.name for m in _REGISTRY.values() if is_image_classifier(m)]


def method_style(name: str) -> dict[str, str]:
    """matplotlib colour and marker of ``name``: fixed by its registry position, so a method looks the
    same in every plot of every run; names not registered (an old run's) follow the registered ones."""
    names = list(_REGISTRY)
    i = names.index(name) if name in names else len(names) + zlib.crc32(name.encode()) % 10
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}

