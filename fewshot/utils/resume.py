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


def check_same_images(recorded: Mapping[str, Any], pixels_sha256: str, cache_key: str, root: str | Path) -> None:
    """Refuse to continue a run whose recorded dataset (``run.json``'s ``dataset``) is not these images.

    Pixels, not the cache key: a fresh copy of the same dataset has new modification times (a new key) but
    the same pictures, and may resume. Runs recorded before pixel hashes fall back to the key; a record
    with neither cannot be checked and passes."""
    field, current = ("pixels_sha256", pixels_sha256) if "pixels_sha256" in recorded else ("image_cache_key", cache_key)
    if field in recorded and recorded[field] != current:
        raise UserError(f"the images at {root} are not those this run started with ({field} {current[:12]} != "
                        f"{recorded[field][:12]}); results would mix two datasets. Point --data at the run's "
                        f"dataset ({recorded.get('root', 'see its run.json')}) or start a fresh run.")


def refuse_changes(what: str, diffs: Sequence[str], hint: str) -> None:
    """Raise a :class:`UserError` listing ``diffs`` when there are any."""
    if diffs:
        raise UserError(f"{what}: " + "; ".join(diffs) + f". {hint}")
