"""The one resume guard of every runner (``benchmarks.run``, ``baselines.two_stage``, the trainer):
a run folder may only be continued with the images and the settings it was started with, or with
settings that change nothing already computed. Anything else is refused, naming what differs."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fewshot.utils.errors import UserError


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "", *,
                       ignore: Sequence[str] = (), labels: tuple[str, str] = ("was", "now")) -> list[str]:
    """``"key.sub: was A, now B"`` for every dotted key whose value differs between two config dicts
    (nested tables compared key by key; tuples and lists compare equal; ``ignore``d keys skipped)."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        name = prefix + key
        if name in ignore:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += config_differences(a, b, name + ".", ignore=ignore, labels=labels)
        elif _plain(a) != _plain(b):
            diffs.append(f"{name}: {labels[0]} {a!r}, {labels[1]} {b!r}")
    return diffs


def _plain(v: Any) -> Any:
    # A config read back from TOML has lists where the dataclass had tuples.
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


def check_same_images(recorded: Mapping[str, Any], pixels_sha256: str, cache_key: str, root: str | Path, *,
                      image_size: Sequence[int] | None = None, size_hint: str = "") -> None:
    """Refuse to continue a run whose recorded dataset (``run.json``'s ``dataset``) is not these images.

    Pixels, not the cache key: a fresh copy of the same dataset has new modification times (a new key) but
    the same pictures, and may resume. Runs recorded before pixel hashes fall back to the key; a record
    with neither cannot be checked and passes. ``image_size`` (height, width), checked first when the record
    has one: decoded at another size, the same files give other pixels, and the refusal says so
    (``size_hint``: how to ask for the run's size, e.g. "--size 80x60"). The refusal names the folders that
    held the run's images (the record's ``roots``, every folder a run read them from, else ``root``)."""
    size = recorded.get("image_size")
    if image_size is not None and size is not None and list(size) != list(image_size):
        hint = f" ({size_hint.format(h=size[0], w=size[1])})" if size_hint else ""
        raise UserError(f"the run's images are {size[0]}x{size[1]} (height x width), these {image_size[0]}x"
                        f"{image_size[1]}: a resumed run keeps its image size. Resume at {size[0]}x{size[1]}{hint}, "
                        "or start a fresh run.")
    field, current = ("pixels_sha256", pixels_sha256) if "pixels_sha256" in recorded else ("image_cache_key", cache_key)
    if field in recorded and recorded[field] != current:
        raise UserError(f"the images at {root} are not those this run started with ({field} {current[:12]} != "
                        f"{recorded[field][:12]}); results would mix two datasets. {_where_they_were(recorded, root)}")


def recorded_roots(recorded: Mapping[str, Any], root: str | Path | None = None) -> list[str]:
    """The folders a run's ``dataset`` record says it read its images from, oldest first (its ``roots``, or
    its ``root`` for a record that predates them), with ``root`` added last when given: what the record
    keeps, so that a refusal can name where the run's images are."""
    known = [str(r) for r in recorded.get("roots", [recorded["root"]] if "root" in recorded else [])]
    return list(dict.fromkeys([*known, *([str(root)] if root is not None else [])]))


def _where_they_were(recorded: Mapping[str, Any], root: str | Path) -> str:
    known = recorded_roots(recorded)
    others = [r for r in known if r != str(root)]
    if others:
        return f"Point --data at the run's dataset ({' or '.join(others)}) or start a fresh run."
    if known:  # the folder given is the one the run read: its files changed since
        return (f"{root} held the run's images when the run last read it: its files have changed since. Restore "
                "them, or start a fresh run.")
    return "Point --data at the run's dataset (see its run.json) or start a fresh run."


def refuse_changes(what: str, diffs: Sequence[str], hint: str) -> None:
    """Raise a :class:`UserError` listing ``diffs`` when there are any."""
    if diffs:
        raise UserError(f"{what}: " + "; ".join(diffs) + f". {hint}")
