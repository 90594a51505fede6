"""What the caches under ``$FEWSHOT_CACHE`` hold, and pruning them (``fewshot cache --list / --prune``).

Three kinds live under the cache root (:func:`fewshot.data.cache.default_cache_root`):

- image caches, ``<dataset>-<hash>/<H>x<W>/`` (``images.npy`` + ``index.json``; :mod:`fewshot.data.cache`);
- feature caches, ``features/<key>.npy`` + ``<key>.json`` (:mod:`fewshot.images.features`);
- text-feature caches, ``text/<key>.pt`` + ``<key>.json`` (:mod:`fewshot.text.cache`).

Anything else under the root is not ours: it is never listed nor deleted. Symbolic links are neither
followed nor deleted, and every path deleted is checked to lie inside the root, so a prune cannot reach
outside it. A cache's age is the time since it was written (built), not since it was last read.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fewshot.utils.errors import UserError

FEATURES_DIR = "features"
TEXT_DIR = "text"  # fewshot.text.cache.TEXT_DIR (not imported: that module loads the text encoders)
_SIZE_DIR = re.compile(r"\d+x\d+")
# A build writes ``.images.<pid>.partial.npy`` and atomic writes ``.<name>.<random>.tmp`` first; a recent one
# means a writer may be running right now, and deleting its file would make it fail.
_BUILDING_GRACE_S = 3600.0
_IN_PROGRESS_SUFFIXES = (".partial.npy", ".tmp")


@dataclass(frozen=True)
class CacheEntry:
    """One cache on disk: ``kind`` "images" (``path`` is its size folder), "features" (``path`` is the .npy;
    its .json goes with it) or "text" (``path`` is the .pt; its .json goes with it). ``image_key``: the pixels' sha256 the cache holds or was computed on."""

    kind: str
    path: Path
    files: tuple[Path, ...]
    n_bytes: int
    written: float  # modification time of its newest file, seconds since the epoch
    description: str
    key: str = ""
    image_key: str = ""
    checkpoint: str = ""  # features only: the checkpoint they were computed with
    building: bool = False  # a writer may be writing it now (a recent temporary file): never pruned

    def age_days(self, now: float | None = None) -> float:
        return ((time.time() if now is None else now) - self.written) / 86400.0


def list_caches(root: str | os.PathLike) -> list[CacheEntry]:
    """Every image, feature and text-feature cache under ``root``, image caches first, each kind by path."""
    root = Path(root)
    images: list[CacheEntry] = []
    features: list[CacheEntry] = []
    for top in _scan(root):
        if not top.is_dir(follow_symlinks=False):
            continue
        if top.name in (FEATURES_DIR, TEXT_DIR):
            features += _feature_entries(Path(top.path), "features" if top.name == FEATURES_DIR else "text")
            continue
        for sub in _scan(Path(top.path)):
            if sub.is_dir(follow_symlinks=False) and _SIZE_DIR.fullmatch(sub.name):
                entry = _image_entry(Path(sub.path))
                if entry is not None:
                    images.append(entry)
    return sorted(images, key=lambda e: str(e.path)) + sorted(features, key=lambda e: str(e.path))


@dataclass(frozen=True)
class RunUse:
    """What a benchmark run folder needs from the cache: its image cache (by key or pixels) and the
    features of its own checkpoints (those inside the folder) or with its feature file names."""

    folder: Path
    image_keys: frozenset[str]
    feature_names: frozenset[str]

    def uses(self, entry: CacheEntry) -> bool:
        if entry.kind == "images":
            return bool({entry.key, entry.image_key} & self.image_keys)
        if entry.kind == "text":  # made from the run's names: recorded with the key its features are named by
            return entry.image_key in self.image_keys
        inside = entry.checkpoint and _is_within(Path(entry.checkpoint), self.folder)
        return bool(inside) or entry.path.name in self.feature_names


def run_use(folder: str | os.PathLike) -> RunUse:
    """Read ``folder/run.json`` (written by ``python -m benchmarks.run``); a clear error when it has none."""
    folder = Path(folder)
    if not (folder / "run.json").is_file():
        raise UserError(f"--keep {folder}: no run.json there; is it a benchmark run folder (written by "
                        "python -m benchmarks.run)?")
    try:
        dataset = json.loads((folder / "run.json").read_text()).get("dataset", {})
        dataset.get("image_cache_key")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"--keep {folder}: cannot read its run.json ({err})") from None
    keys = frozenset(str(dataset[k]) for k in ("image_cache_key", "pixels_sha256", "features_key") if dataset.get(k))
    own = folder / FEATURES_DIR
    names = frozenset(p.name for p in own.glob("*.npy")) if own.is_dir() else frozenset()
    return RunUse(folder.resolve(), keys, names)


def select_prunable(entries: Iterable[CacheEntry], keep: Sequence[RunUse] = (), older_than_days: float | None = None,
                    now: float | None = None) -> list[CacheEntry]:
    """The entries to delete: not used by any ``keep`` run, older than ``older_than_days`` when given, and
    not being built."""
    now = time.time() if now is None else now
    return [e for e in entries
            if not e.building
            and not any(run.uses(e) for run in keep)
            and (older_than_days is None or e.age_days(now) > older_than_days)]


def delete_entries(root: str | os.PathLike, entries: Iterable[CacheEntry]) -> int:
    """Delete ``entries`` (their regular files, then their folder when it is left empty); the bytes freed.

    Refuses, with ``UserError``, any file that is not inside ``root`` once resolved, and never follows or
    deletes a symbolic link.
    """
    root_real = Path(root).resolve()
    freed = 0
    for entry in entries:
        for f in entry.files:
            if f.is_symlink() or not _is_within(f, root_real):
                raise UserError(f"refusing to delete {f}: not a regular file inside the cache root {root}")
            try:
                size = f.stat(follow_symlinks=False).st_size
                f.unlink()
            except FileNotFoundError:  # gone meanwhile (another prune): nothing to free
                continue
            freed += size
        if entry.kind == "images":
            # The size folder, then its dataset folder, only when empty: a foreign file keeps them.
            for folder in (entry.path, entry.path.parent):
                if folder.resolve() != root_real and _is_within(folder, root_real):
                    try:
                        folder.rmdir()
                    except OSError:
                        break
    return freed


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _regular_files(folder: Path) -> list[os.DirEntry]:
    return [e for e in _scan(folder) if e.is_file(follow_symlinks=False)]


def _image_entry(folder: Path) -> CacheEntry | None:
    files = _regular_files(folder)
    if not files:
        return None
    stats = [f.stat(follow_symlinks=False) for f in files]
    building = _in_progress(files, stats)
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        index = {}
    source = index.get("root", "?")
    gone = "" if source == "?" or Path(source).exists() else " (dataset gone)"
    if index:
        what = (f"{source}{gone} at {folder.name}: {len(index.get('ids', []))} images, "
                f"{len(index.get('bad', {}))} corrupt")
    else:
        what = f"{folder.name}: incomplete build (no index.json)"
    return CacheEntry("images", folder, tuple(Path(f.path) for f in files), sum(s.st_size for s in stats),
                      max(s.st_mtime for s in stats), what, index.get("key", ""), index.get("pixels_sha256", ""),
                      building=building)


def _feature_entries(folder: Path, kind: str = "features") -> list[CacheEntry]:
    data = ".npy" if kind == "features" else ".pt"
    groups: dict[str, list[os.DirEntry]] = {}
    for f in _regular_files(folder):
        # key.npy (.pt) + key.json form one entry; an atomic write's leftover temporary file is its own entry.
        stem = f.name[: -len(Path(f.name).suffix)] if f.name.endswith((data, ".json")) else f.name
        groups.setdefault(stem, []).append(f)
    out = []
    for stem, files in groups.items():
        stats = [f.stat(follow_symlinks=False) for f in files]
        try:
            meta = json.loads((folder / f"{stem}.json").read_text())
        except (OSError, ValueError):
            meta = {}
        if not meta:
            what = "incomplete"
        elif kind == "text":
            what = (f"{meta.get('encoder', '?')} text features [{sum(meta.get('n', {}).values())}, "
                    f"{meta.get('dim', '?')}] (fitted on {meta.get('n_fit', '?')} names)")
        else:
            what = (f"{meta.get('backbone', '?')} features [{meta.get('n', '?')}, {meta.get('dim', '?')}] "
                    f"({meta.get('precision', '?')}) of {meta.get('checkpoint', '?')}")
        npy = folder / f"{stem}{data}"
        out.append(CacheEntry(kind, npy, tuple(Path(f.path) for f in files), sum(s.st_size for s in stats),
                              max(s.st_mtime for s in stats), what, meta.get("key", ""),
                              meta.get("image_key", ""), meta.get("checkpoint", ""), _in_progress(files, stats)))
    return out


def _in_progress(files: list[os.DirEntry], stats: list[os.stat_result]) -> bool:
    now = time.time()
    return any(f.name.endswith(_IN_PROGRESS_SUFFIXES) and now - s.st_mtime < _BUILDING_GRACE_S
               for f, s in zip(files, stats))


def _is_within(path: Path, folder: Path) -> bool:
    """Whether ``path``, with symbolic links in its folders resolved (not the last part), is inside ``folder``."""
    try:
        resolved = path.parent.resolve() / path.name
        return resolved.is_relative_to(folder.resolve())
    except OSError:
        return False
