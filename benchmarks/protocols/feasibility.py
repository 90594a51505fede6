"""Every setting checked against the data before any phase runs, and fitted to it with ``data.fit_to_data``.

From the config and the data alone (class counts of the rows each phase will use; no image is decoded here,
nothing is trained), in the order the phases run:

- transfer protocol: a head of ``data.n_head`` classes and a tail of at least 2 classes (a 1-class tail is
  scored right by construction) with at least one test image; methods that read product names need them on
  the train images; each configured embedding's episodes (``Embedding.needs``: the transfer ProtoNets' training
  and validation episodes on the head / head + tail train images);
- episodic protocol: at least 2 evaluation classes and enough background classes to hold
  ``max(protonet.episodes.val_way, val_classes x background)`` of them out for validation and train on 2 or more
  (1 when nothing is trained there); the evaluation episodes (every evaluation class needs ``max(shots) +
  n_query`` images, and ``max(ways)`` classes); each configured embedding's episodes (background validation,
  ProtoNet, MAML / ANIL tasks).

:func:`settle` walks these needs; each unmet one is a :class:`Step`: one line naming the config key, its value,
what the data lacks and a change that would work (the largest episode sizes, ways or ``n_head`` the data holds,
``data.min_images`` lowered, or methods or a protocol left out), applied before the next need is looked at, so
that the steps together make a config the data holds. Without ``data.fit_to_data`` the run is refused with every
step's line; with it the changes are made and recorded (:class:`~benchmarks.engine.feasibility.Adjustment`),
except those that would change a key given on the command line, which are refused.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.episodic_split import EpisodicSplit, held_out_classes
from benchmarks.engine.feasibility import (
    FLOOR,
    Adjustment,
    ClassCounter,
    EpisodeNeed,
    Setting,
    fmt,
    merge_adjustments,
)
from benchmarks.engine.validation import validation_groups
from benchmarks.registry.embeddings import embedding_chain, get_embedding
from benchmarks.registry.methods import configured_methods, get_method
from fewshot.data.catalog import Catalog
from fewshot.data.protocols import EpisodicProtocol, TransferProtocol, class_split_for, split_rule_for
from fewshot.data.rules import TRAIN
from fewshot.utils.errors import UserError

PROTOCOLS = ("transfer", "episodic")
LEAVE_OUT_KEYS = ("methods", "protocols")


@dataclass(frozen=True)
class Step:
    """One setting the data cannot hold. ``lead``: its key and value; ``why``: what the data lacks; ``fix``:
    {key: value} that makes it hold (a lower value, or ``methods`` / ``protocols`` without what cannot run);
    ``allowed``: False when ``fix`` changes a key given on the command line; ``cfg``: the config it was found in."""

    lead: Setting
    why: str
    fix: dict[str, Any]
    allowed: bool
    cfg: BenchmarkConfig
    also: dict[str, Any] | None = None  # another change that would work, named but never applied
    short: str = ""  # what cannot run, in a few words, for the one line that says nothing can

    @property
    def line(self) -> str:
        return self.line_for(self.cfg)

    def line_for(self, configured: BenchmarkConfig) -> str:
        """The step's line; a lead whose value a change above it made differs from ``configured`` says both."""
        also = f", or {fix_words(self.also, self.cfg)}" if self.also else ""
        if self.lead.key in LEAVE_OUT_KEYS:
            lead = f"{self.lead.key} {', '.join(self.lead.value)}"
        else:
            lead = f"{self.lead.key}={fmt(self.lead.value)}"
            before = setting(configured, self.lead.key)
            if fmt(before) != fmt(self.lead.value):
                lead = f"{self.lead.key}={fmt(before)} ({fmt(self.lead.value)} after the change above)"
        return f"{lead}: {self.why}; {fix_words(self.fix, self.cfg)} would work{also}"

    def adjustments(self) -> list[Adjustment]:
        return [Adjustment(k, setting(self.cfg, k), v, self.why) for k, v in self.fix.items()]


def settle(cfg: BenchmarkConfig, ds: Catalog, duplicate_groups: np.ndarray | None, *,
           pinned: Iterable[str] = (), copies: np.ndarray | None = None) -> tuple[BenchmarkConfig, list[dict[str, Any]]]:
    """The config to run on ``ds`` and run.json's ``fitted`` entries: ``cfg`` and [] when the data holds every
    setting; with ``data.fit_to_data``, ``cfg`` fitted to the data and what was changed; otherwise a
    :class:`UserError` listing every setting the data cannot hold, one line each. ``pinned``: keys given on the
    command line, which the fit never changes (a need only they stand in the way of is refused). ``copies``: the
    pixel-copy groups the validation rule keeps on one side (default: ``duplicate_groups``)."""
    pinned = frozenset(pinned)
    fitting = cfg.data.fit_to_data
    fitted, steps = walk(cfg, ds, duplicate_groups, pinned=pinned if fitting else frozenset(), copies=copies)
    if not steps:
        return cfg, []
    where = f"the data at {ds.root}"
    if not runnable(fitted, steps[-1].fix):  # one line: what each protocol lacks
        shorts = [s.short for s in steps if s.short] or [steps[-1].line_for(cfg)]
        raise UserError(f"nothing can run on {where}: {'; '.join(shorts)} (README: Your own data)")
    if not fitting:
        raise UserError(_listed(f"{where} cannot hold {_n(len(steps), 'setting')} (nothing was trained; "
                                "data.fit_to_data=true fits them, each change stated in summary.md)", steps, cfg))
    refused = [s for s in steps if not s.allowed]
    if refused:
        raise UserError(_listed(f"{where} cannot hold {_n(len(refused), 'setting')} given on the command line "
                                "(data.fit_to_data changes only the config's own)", refused, cfg))
    return fitted, merge_adjustments(a.to_dict() for s in steps for a in s.adjustments())


def walk(cfg: BenchmarkConfig, ds: Catalog, duplicate_groups: np.ndarray | None, *,
         pinned: frozenset[str] = frozenset(), copies: np.ndarray | None = None) -> tuple[BenchmarkConfig, list[Step]]:
    """(the config with every step's fix applied, the steps): the unmet needs of ``cfg`` on ``ds``, each found
    in the config the fixes before it made."""
    data = _Data(ds, duplicate_groups, duplicate_groups if copies is None else copies)
    steps: list[Step] = []
    for _ in range(200):  # every fix lowers a value or leaves something out: this ends long before
        step = first_unmet(cfg, data, pinned)
        if step is None:
            return cfg, steps
        steps.append(step)
        if not runnable(cfg, step.fix):  # nothing would be left to run: the config stays, the run is refused
            return cfg, steps
        cfg = with_settings(cfg, step.fix)
    raise RuntimeError("the feasibility check did not settle; this is a bug")


def runnable(cfg: BenchmarkConfig, fix: Mapping[str, Any] | None = None) -> bool:
    """Some configured method runs in some listed protocol (of ``cfg`` with ``fix`` applied)."""
    methods = tuple((fix or {}).get("methods", cfg.methods))
    protocols = tuple((fix or {}).get("protocols", cfg.protocols))
    return any(m.embedding(p) for p in protocols for m in map(get_method, methods))


class _Data:
    """The catalogue's rows as the protocols see them, built once per setting that changes them."""

    def __init__(self, ds: Catalog, duplicate_groups: np.ndarray | None, copies: np.ndarray | None) -> None:
        self.ds, self.groups, self.copies = ds, duplicate_groups, copies
        self.counter = ClassCounter(ds.labels, ds.classes)
        self._cache: dict[tuple, Any] = {}

    def counter_for(self, cfg: BenchmarkConfig, tp: TransferProtocol | None) -> ClassCounter:
        """The class counter with the run's validation groups on this protocol (what the phases' splits use)."""
        key = ("validation", repr(cfg.validation), id(tp))
        return self._once(key, lambda: ClassCounter(self.ds.labels, self.ds.classes,
                                                    validation_groups(cfg, self.ds, tp, self.copies)[1]))

    def _once(self, key: tuple, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def transfer(self, cfg: BenchmarkConfig, n_head: int | None = None) -> TransferProtocol:
        """The transfer protocol with ``n_head`` (default: the config's) head classes, which must not exceed the
        classes with train images (:meth:`n_train_classes`)."""
        settings = cfg.data.protocol_settings(cfg.seed)
        rule = self._once(("rule", repr(settings)), lambda: split_rule_for(self.ds, **settings))
        n = n_head or cfg.data.n_head
        return self._once(("transfer", repr(settings), n, cfg.data.min_train), lambda: TransferProtocol.from_catalog(
            self.ds, rule, n_head=n, min_train=cfg.data.min_train, duplicate_groups=self.groups))

    def n_train_classes(self, cfg: BenchmarkConfig) -> int:
        """How many classes have train images under the config's split (what the head and tail come from)."""
        settings = cfg.data.protocol_settings(cfg.seed)
        rule = self._once(("rule", repr(settings)), lambda: split_rule_for(self.ds, **settings))
        assignment = self._once(("assign", repr(settings)), lambda: rule.assign(self.ds.table, self.ds.labels))
        labels = self.ds.row_labels[assignment == TRAIN]
        return len(pd.unique(labels[pd.notna(labels)]))

    def episodic(self, cfg: BenchmarkConfig, min_images: int | None = None) -> EpisodicProtocol:
        """The episodic protocol with ``min_images`` (default: the config's)."""
        settings = cfg.data.protocol_settings(cfg.seed)
        m = min_images or cfg.data.min_images
        classes = self._once(("classes", repr(settings)), lambda: class_split_for(self.ds, **settings))
        return self._once(("episodic", repr(settings), m), lambda: EpisodicProtocol.from_catalog(
            self.ds, classes, min_images=m, duplicate_groups=self.groups))


def first_unmet(cfg: BenchmarkConfig, data: _Data, pinned: frozenset[str]) -> Step | None:
    """The first need of ``cfg`` the data does not meet, in the order the phases run; None when it meets all."""
    if configured_methods(cfg, "transfer"):
        step = _head_and_tail(cfg, data, pinned)
        if step is not None:
            return step
        tp = data.transfer(cfg)
        step = _text(cfg, data, tp, pinned)
        if step is not None:
            return step
        step = _embedding_needs(cfg, data, "transfer", tp, pinned)
        if step is not None:
            return step
    if configured_methods(cfg, "episodic"):
        step = _episodic_classes(cfg, data, pinned)
        if step is not None:
            return step
        ep = data.episodic(cfg)
        step = _episode_step(cfg, evaluation_need(cfg, ep, data.counter), pinned,
                             _without_protocol(cfg, "episodic"), alternative=_raise_min_images(cfg, data))
        if step is not None:
            return step
        return _embedding_needs(cfg, data, "episodic", EpisodicSplit.make(cfg, ep), pinned)
    return None


def evaluation_need(cfg: BenchmarkConfig, ep: EpisodicProtocol, counter: ClassCounter) -> EpisodeNeed:
    """The evaluation episodes (:func:`benchmarks.protocols.episodic.evaluate_method` builds one sampler per way x
    shot on the evaluation images, stopping on a class with fewer than shot + n_query of them)."""
    ev = cfg.evaluation
    return EpisodeNeed("evaluation episodes", f"evaluation classes (with >= data.min_images={cfg.data.min_images} "
                       "images)", counter.counts(ep.evaluation_idx), Setting("evaluation.ways", ev.ways),
                       Setting("evaluation.shots", ev.shots), Setting("evaluation.n_query", ev.n_query),
                       every_class=True)


# --- the steps ----------------------------------------------------------------------------------------------


def _step(cfg: BenchmarkConfig, lead: Setting, why: str, fix: dict[str, Any], pinned: frozenset[str],
          short: str = "") -> Step:
    return Step(lead, why, fix, allowed=not (set(fix) & pinned), cfg=cfg, short=short)


def _head_and_tail(cfg: BenchmarkConfig, data: _Data, pinned: frozenset[str]) -> Step | None:
    """A head of ``data.n_head`` classes and a tail of >= 2 classes with >= ``data.min_train`` train images, one
    of them with a test image."""
    n_head, min_train = cfg.data.n_head, cfg.data.min_train
    lead = Setting("data.n_head", n_head)
    n_ranked = data.n_train_classes(cfg)
    if n_ranked == 0:
        why = "no image is a train image under the transfer split; the transfer protocol cannot run"
        return _step(cfg, lead, why, _without_protocol(cfg, "transfer"), pinned,
                     "the transfer protocol has no train image")
    ranked = data.transfer(cfg, 1).counts
    order = sorted(ranked.index[ranked["n_train"] > 0], key=lambda c: (-ranked.at[c, "n_train"], c))

    def tail(n: int) -> tuple[int, int]:
        kept = [c for c in order[n:] if ranked.at[c, "n_train"] >= min_train]
        return len(kept), sum(1 for c in kept if ranked.at[c, "n_test"] > 0)

    def holds(n: int) -> bool:
        size, tested = tail(n)
        return n <= n_ranked and size >= 2 and tested >= 1

    if holds(n_head):
        return None
    size, tested = tail(n_head)
    tail_words = "classes" if min_train == 1 else f"classes with >= data.min_train={min_train} train images"
    why = (f"the transfer protocol needs a tail of >= 2 {tail_words} (a 1-class tail is scored right by "
           f"construction), one with test images, besides the {n_head} head classes; {n_ranked} classes have train "
           f"images, which leaves a tail of {size} ({tested} with test images)")
    ladder = [n_head] if "data.n_head" in pinned else range(n_head - 1, FLOOR["way"] - 1, -1)
    fit = next((n for n in ladder if holds(n)), None)
    if fit is None and "data.n_head" in pinned:
        fit = next((n for n in range(n_head - 1, FLOOR["way"] - 1, -1) if holds(n)), None)
    if fit is not None:
        return _step(cfg, lead, why, {"data.n_head": fit}, pinned)
    why += "; no n_head >= 2 leaves such a tail (the protocol needs 4 classes with train images)"
    return _step(cfg, lead, why, _without_protocol(cfg, "transfer"), pinned,
                 f"the transfer protocol needs 4 classes with train images (2 head, 2 tail), the data has {n_ranked}")


def _text(cfg: BenchmarkConfig, data: _Data, tp: TransferProtocol, pinned: frozenset[str]) -> Step | None:
    """Methods that read product names need some on the train images (the text encoder is fitted on them)."""
    readers = [m.name for m in configured_methods(cfg, "transfer") if "name" in m.reads()]
    if not readers:
        return None
    names = np.asarray(data.ds.names, dtype=object)[np.concatenate([tp.head_train, tp.tail_train])]
    if any(str(n).strip() for n in names):
        return None
    ds = data.ds
    source = {"imagefolder": "an image folder has no text",
              "manifest": "the manifest has no text column" if "text" not in getattr(ds, "columns", ["text"]) else
              "its text column is blank on every train image"}.get(ds.layout, "every train name is blank")
    why = f"{'it reads' if len(readers) == 1 else 'they read'} product names, and no train image has one ({source})"
    fix = {"methods": tuple(m for m in cfg.methods if m not in readers)}
    return _step(cfg, Setting("methods", tuple(readers)), why, fix, pinned)


def _episodic_classes(cfg: BenchmarkConfig, data: _Data, pinned: frozenset[str]) -> Step | None:
    """2 evaluation classes, and background classes to hold out for validation and to train on."""
    trains = any(not get_embedding(e).frozen for m in configured_methods(cfg, "episodic")
                 for e in embedding_chain(cfg, m.episodic))
    least = 2 if trains else 1
    counts = data.episodic(cfg, 1).counts  # every class's images (copies left out with dedupe)
    classes = data.episodic(cfg, 1).class_split

    def sizes(m: int, val_way: int) -> tuple[int, int, int]:
        background, evaluation = classes.resolve(counts, m)
        n_bg = sum(1 for c in background if counts.get(c, 0) >= m)
        n_eval = sum(1 for c in evaluation if counts.get(c, 0) >= m)
        probe = with_settings(cfg, {"protonet.episodes.val_way": val_way})
        return n_bg, held_out_classes(probe, n_bg), n_eval

    def holds(m: int, val_way: int) -> bool:
        n_bg, n_val, n_eval = sizes(m, val_way)
        return n_eval >= 2 and n_bg - n_val >= least

    m0, v0 = cfg.data.min_images, cfg.protonet.episodes.val_way
    if holds(m0, v0):
        return None
    n_bg, n_val, n_eval = sizes(m0, v0)
    why = (f"the episodic protocol has {n_bg} background and {n_eval} evaluation classes with >= data.min_images={m0} "
           f"images; it holds max(protonet.episodes.val_way={v0}, val_classes={cfg.val_classes:g} x {n_bg}) = {n_val} "
           f"background classes out for validation, and needs {least} more to train on and 2 evaluation classes")

    def search(pins: frozenset[str]) -> dict[str, int] | None:
        for m in ([m0] if "data.min_images" in pins else range(m0, FLOOR["shot"] + FLOOR["query"] - 1, -1)):
            for v in ([v0] if "protonet.episodes.val_way" in pins else range(v0, FLOOR["way"] - 1, -1)):
                if holds(m, v):
                    return {k: x for k, x, old in (("protonet.episodes.val_way", v, v0), ("data.min_images", m, m0))
                            if x != old}
        return None

    fit = search(pinned) or search(frozenset())
    if fit:
        lead = Setting("protonet.episodes.val_way", v0) if "protonet.episodes.val_way" in fit else \
            Setting("data.min_images", m0)
        return _step(cfg, lead, why, fit, pinned)
    why += "; no data.min_images >= 2 gives that many (the protocol needs 6 classes with >= 2 images)"
    n_bg, _, n_eval = sizes(FLOOR["shot"] + FLOOR["query"], FLOOR["way"])
    return _step(cfg, Setting("data.min_images", m0), why, _without_protocol(cfg, "episodic"), pinned,
                 f"the episodic protocol needs 2 evaluation classes and {FLOOR['way'] + least} background classes "
                 f"(2 held out for validation) with >= 2 images, the data has {n_eval} and {n_bg}")


def _embedding_needs(cfg: BenchmarkConfig, data: _Data, protocol: str, protocol_data: Any,
                     pinned: frozenset[str]) -> Step | None:
    """The first unmet need of the embeddings the configured methods of ``protocol`` train, upstream first."""
    chains: dict[str, tuple[str, ...]] = {}
    for m in configured_methods(cfg, protocol):
        scored = [m.episodic] if protocol == "episodic" else list(m.groups().values())
        chains[m.name] = tuple(dict.fromkeys(e for name in scored for e in embedding_chain(cfg, name)))
    needed = list(dict.fromkeys(e for chain in chains.values() for e in reversed(chain)))
    for name in needed:
        emb = get_embedding(name)
        if emb.needs is None:
            continue
        users = tuple(m for m, chain in chains.items() if name in chain)
        counter = data.counter_for(cfg, protocol_data if protocol == "transfer" else None)
        for need in emb.needs(cfg, protocol_data, counter):
            step = _episode_step(cfg, need, pinned, {"methods": tuple(m for m in cfg.methods if m not in users)})
            if step is not None:
                return step
    return None


def _episode_step(cfg: BenchmarkConfig, need: EpisodeNeed, pinned: frozenset[str], leave_out: dict[str, Any], *,
                  alternative: Any = None) -> Step | None:
    """The step of an unmet episode need: its largest fitting sizes (honouring ``pinned`` when they can, else
    not: the step is then refused), or, when no size fits, ``leave_out``. ``alternative(need)``: another change
    to name beside the fix, or None."""
    if need.met:
        return None
    fix = need.fit(pinned) or need.fit()
    if fix:
        # a refused step (it changes a key given on the command line) starts with that key
        lead = next((s for s in need.settings if s.key in fix and s.key in pinned), need.lead(fix))
        return dataclasses.replace(_step(cfg, lead, need.lacks(), fix, pinned),
                                   also=alternative(need) if alternative is not None else None)
    why = (f"{need.lacks()}; no episode size fits ({FLOOR['way']}-way {FLOOR['shot']}-shot {FLOOR['query']}-query "
           f"needs {FLOOR['way']} classes with >= {FLOOR['shot'] + FLOOR['query']} images)")
    return _step(cfg, need.lead(None), why, leave_out, pinned,
                 f"{need.what} need {FLOOR['way']} classes with >= {FLOOR['shot'] + FLOOR['query']} images among "
                 f"{need.pool}")


def _raise_min_images(cfg: BenchmarkConfig, data: _Data) -> Any:
    """For the evaluation episodes: ``data.min_images`` raised to max(shots) + n_query, when that leaves a
    protocol whose evaluation and background classes hold (named as another way out, never applied)."""
    def other(need: EpisodeNeed) -> dict[str, int] | None:
        m = max(cfg.evaluation.shots) + cfg.evaluation.n_query
        if m <= cfg.data.min_images:
            return None
        probe = with_settings(cfg, {"data.min_images": m})
        if _episodic_classes(probe, data, frozenset()) is not None:
            return None
        return {"data.min_images": m} if evaluation_need(probe, data.episodic(probe), data.counter).met else None

    return other


# --- config edits and words -----------------------------------------------------------------------------------


def setting(cfg: BenchmarkConfig, key: str) -> Any:
    """The value of the dotted ``key`` in ``cfg``."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def with_settings(cfg: BenchmarkConfig, changes: Mapping[str, Any]) -> BenchmarkConfig:
    """``cfg`` with the dotted keys of ``changes`` set (each table re-validated)."""
    for key, value in changes.items():
        cfg = _replace(cfg, key.split("."), value)
    return cfg


def _replace(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace(getattr(obj, parts[0]), parts[1:], value)})


def _without_protocol(cfg: BenchmarkConfig, protocol: str) -> dict[str, Any]:
    return {"protocols": tuple(p for p in cfg.protocols if p != protocol)}


def fix_words(fix: Mapping[str, Any], cfg: BenchmarkConfig) -> str:
    """``"protonet.episodes.n_way=3"``, ``"leaving out protonet"``, ``"leaving out the episodic protocol"``."""
    words = []
    for key, value in fix.items():
        if key == "methods":
            gone = [m for m in cfg.methods if m not in value]
            words.append(f"leaving out {', '.join(gone)} (methods={fmt(value)})" if len(value) <= 3 else
                         f"leaving out {', '.join(gone)}")
        elif key == "protocols":
            gone = [p for p in cfg.protocols if p not in value]
            only = sorted({m for p in gone for m in (x.name for x in configured_methods(cfg, p))}
                          - {m for p in value for m in (x.name for x in configured_methods(cfg, p))})
            words.append(f"leaving out the {' and '.join(gone)} protocol (protocols={fmt(value)})"
                         + (f", and with it {', '.join(only)}" if only else ""))
        else:
            words.append(f"{key}={fmt(value)}")
    return " and ".join(words)


def _n(k: int, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _listed(head: str, steps: list[Step], configured: BenchmarkConfig) -> str:
    """One line for one step, else a head line and one line per step."""
    if len(steps) == 1:
        return f"{head}: {steps[0].line_for(configured)}"
    return head + ":\n" + "\n".join(f"  {s.line_for(configured)}" for s in steps)
