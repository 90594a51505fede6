"""A decoded-image cache: every JPEG decoded once, at one fixed size, into a memory-mapped uint8 array.

Layout of a cache folder::

    images.npy   uint8 [N, H, W, 3], opened with ``mmap_mode="r"``
    index.json   {"key", "size", "ids", "bad": {id: reason}, "pixels_sha256", "build_seconds", ...}

``images[i]`` is the picture of ``ids[i]``. The key hashes ``styles.csv``'s bytes, the image folder's
listing (name, size, modification time of each file) and the size, so any change to any of them makes
the next :func:`load_or_build` rebuild. Layouts other than Kaggle's (an image folder, a CSV manifest) pass
their files as :class:`ImageFiles`: the key then hashes the listing of those files and the bytes the layout
names (the manifest's). ``images.npy`` and ``index.json`` are written to temporary names and renamed, the
index last: an interrupted build leaves the previous cache or none, never a half-written one.

The key is a cheap staleness check; ``pixels_sha256`` (hash of the ids and the decoded pixels, computed once
per build) says whether two caches hold the same pictures, e.g. after the dataset was copied anew and every
modification time changed.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from fewshot.utils.errors import UserError
from fewshot.utils.io import atomic_write_json

CACHE_VERSION = 2  # 2: index.json carries pixels_sha256
_PAD = (255, 255, 255)  # product photos sit on white, so padding is white too


class CorruptImageError(UserError):
    """An image that cannot be decoded, raised by a strict cache build."""


# How a user leaves corrupt images out instead: `fewshot cache` without --strict (the library's strict=False).
_NOT_STRICT_HINT = "or build without --strict to leave corrupt images out (they are then reported)"


@dataclass(frozen=True)
class ImageCache:
    """A loaded cache. ``images``: uint8 [N, H, W, 3] (memory-mapped); ``ids``: int64 [N]."""

    images: np.ndarray
    ids: np.ndarray
    bad: dict[int, str]  # id -> why it could not be decoded; such ids are not in ``ids``
    key: str
    path: Path
    size: tuple[int, int]
    build_seconds: float | None = field(default=None)
    built_now: bool = field(default=False)
    pixels_sha256: str = field(default="")


@dataclass(frozen=True)
class ImageFiles:
    """Where the images are, for a layout other than Kaggle's ``images/<id>.jpg``: ``paths[i]`` (relative to
    ``base``, or absolute) is the file of the i-th requested id. ``key_bytes``: what else the cache key hashes
    (a manifest's bytes)."""

    base: Path
    paths: tuple[str, ...]
    key_bytes: bytes = b""

    def path(self, i: int) -> Path:
        return self.base / self.paths[i]


def _file_of(root: Path, files: ImageFiles | None, ids: np.ndarray, i: int) -> Path:
    return root / "images" / f"{ids[i]}.jpg" if files is None else files.path(i)


def default_cache_root() -> Path:
    """``$FEWSHOT_CACHE``, else ``$XDG_CACHE_HOME/fewshot``, else ``~/.cache/fewshot``."""
    if os.environ.get("FEWSHOT_CACHE"):
        return Path(os.environ["FEWSHOT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fewshot"


def cache_dir_for(root: Path, size: tuple[int, int], cache_root: Path | None = None) -> Path:
    """One folder per dataset location and size; a changed dataset overwrites its own folder."""
    root = Path(root).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name)[:40] or "data"
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    return Path(cache_root or default_cache_root()) / f"{slug}-{digest}" / f"{size[0]}x{size[1]}"


def dataset_key(root: Path, size: tuple[int, int], files: ImageFiles | None = None) -> str:
    """Hash of styles.csv's bytes, the image folder's (name, bytes, mtime) listing and the size; with
    ``files``, of their ``key_bytes`` and the (path, bytes, mtime) listing of their files instead."""
    root = Path(root)
    h = hashlib.sha256(f"fewshot-cache-v{CACHE_VERSION};size={size[0]}x{size[1]};".encode())
    if files is not None:
        h.update(b"files;" + hashlib.sha256(files.key_bytes).digest())
        listing = []
        for rel in files.paths:
            try:
                st = (files.base / rel).stat()
            except OSError as err:
                raise UserError(f"{files.base / rel}: cannot read the image file ({err.strerror}); was it moved "
                                "or deleted while the dataset was being read?") from None
            listing.append((rel, st.st_size, st.st_mtime_ns))
        h.update(json.dumps(listing).encode())
        return h.hexdigest()
    h.update(hashlib.sha256((root / "styles.csv").read_bytes()).digest())
    listing = sorted(
        (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(root / "images") if e.is_file()
    )
    h.update(json.dumps(listing).encode())
    return h.hexdigest()


def decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode one JPEG to uint8 [H, W, 3] of ``size = (H, W)``.

    The picture is scaled to fit inside H x W keeping its aspect ratio, then centred and padded with white
    (letterboxing): it is never stretched. The real images are 60x80 (w x h), so at the default 80x60
    nearly all of them are taken as they are. Raises :class:`CorruptImageError` on an empty, truncated or
    unreadable file.
    """
    h, w = size
    try:
        if path.stat().st_size == 0:
            raise CorruptImageError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as im:
            im.load()  # decoding now is what surfaces a truncated file
            rgb = im.convert("RGB")
    except CorruptImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # PIL's ways of saying "not a readable image"
        raise CorruptImageError(f"{path}: cannot decode ({err})") from err
    if rgb.size != (w, h):
        rgb = ImageOps.pad(rgb, (w, h), method=Image.Resampling.BILINEAR, color=_PAD)
    return np.asarray(rgb, dtype=np.uint8)


def load_or_build(
    root: str | os.PathLike,
    ids: Sequence[int],
    *,
    size: tuple[int, int] = (80, 60),
    cache_root: str | os.PathLike | None = None,
    strict: bool = False,
    progress: bool = True,
    files: ImageFiles | None = None,
) -> ImageCache:
    """Load the cache of ``root`` at ``size``, building it first when missing or stale.

    ``ids`` are the products to decode (those whose ``images/<id>.jpg`` exists; with ``files``, the i-th id's
    image is ``files.path(i)``). With ``strict=True`` a corrupt image raises :class:`CorruptImageError`;
    otherwise it is left out of the cache and reported in ``ImageCache.bad``.
    """
    root = Path(root)
    size = (int(size[0]), int(size[1]))
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"image size must be positive (height, width), got {size}")
    folder = cache_dir_for(root, size, Path(cache_root) if cache_root else None)
    key = dataset_key(root, size, files)
    ids = np.asarray(ids, dtype=np.int64)
    if files is not None and len(files.paths) != len(ids):
        raise ValueError(f"{len(files.paths)} image files for {len(ids)} ids")
    cached = _load(folder, key, size, ids)
    if cached is not None:
        if strict and cached.bad:
            first = next(iter(cached.bad.items()))
            raise CorruptImageError(f"{len(cached.bad)} corrupt image(s), e.g. id {first[0]}: {first[1]}. Remove or "
                                    f"replace them, {_NOT_STRICT_HINT}")
        return cached
    try:
        return _build(root, folder, key, size, ids, strict=strict, progress=progress, files=files)
    except OSError as err:
        # Image files that cannot be read become CorruptImageError inside the build, so an OSError that gets
        # here is about the cache folder: one the user can point elsewhere or make room in.
        if err.errno in _CACHE_WRITE_ERRNOS:
            raise UserError(f"cannot write the image cache in {folder} ({err.strerror}); set FEWSHOT_CACHE to a "
                            "writable folder with free space, or free some with `fewshot cache --prune`") from err
        raise


_CACHE_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOTDIR}


def find_existing(
    root: str | os.PathLike, ids: Sequence[int], *, cache_root: str | os.PathLike | None = None,
    files: ImageFiles | None = None,
) -> ImageCache | None:
    """An up-to-date cache of ``root`` for ``ids`` at any size, without building or decoding anything;
    None when there is none (never built, or stale since ``styles.csv`` or ``images/`` changed).

    For reports that want what a build found (e.g. the corrupt images) without paying for one.
    """
    root = Path(root)
    parent = cache_dir_for(root, (1, 1), Path(cache_root) if cache_root else None).parent
    ids = np.asarray(ids, dtype=np.int64)
    try:
        folders = sorted(p for p in parent.iterdir() if re.fullmatch(r"\d+x\d+", p.name))
    except OSError:
        return None
    for folder in folders:
        size = tuple(int(v) for v in folder.name.split("x"))
        found = _load(folder, dataset_key(root, size, files), size, ids)
        if found is not None:
            return found
    return None


def _load(folder: Path, key: str, size: tuple[int, int], ids: np.ndarray) -> ImageCache | None:
    try:
        index = json.loads((folder / "index.json").read_text())
        if index.get("key") != key or index.get("requested_ids") != _ids_digest(ids):
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    cached_ids = np.asarray(index["ids"], dtype=np.int64)
    if images.shape != (len(cached_ids), size[0], size[1], 3):
        return None
    bad = {int(k): v for k, v in index["bad"].items()}
    return ImageCache(images, cached_ids, bad, key, folder, size, index.get("build_seconds"),
                      pixels_sha256=index.get("pixels_sha256", ""))


def _build(
    root: Path, folder: Path, key: str, size: tuple[int, int], ids: np.ndarray, *, strict: bool, progress: bool,
    files: ImageFiles | None = None,
) -> ImageCache:
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").unlink(missing_ok=True)  # a stale index must never describe new images
    partial = folder / f".images.{os.getpid()}.partial.npy"
    good: list[int] = []
    bad: dict[int, str] = {}
    try:
        buffer = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(ids), *size, 3))
        bar = tqdm(ids, desc=f"decoding images to {size[0]}x{size[1]}", unit="img", disable=not progress)
        for i, pid in enumerate(bar):
            try:
                buffer[len(good)] = decode_image(_file_of(root, files, ids, i), size)
            except CorruptImageError as err:
                if strict:
                    raise CorruptImageError(f"{err}. Remove or replace the file, {_NOT_STRICT_HINT}") from err
                bad[int(pid)] = str(err)
                continue
            good.append(int(pid))
        if bad:  # corrupt images are rare: only then pay for a compacting copy
            compact = np.lib.format.open_memmap(
                partial.with_suffix(".compact.npy"), mode="w+", dtype=np.uint8, shape=(len(good), *size, 3))
            compact[:] = buffer[: len(good)]
            compact.flush()
            del buffer, compact
            os.replace(partial.with_suffix(".compact.npy"), partial)
        else:
            buffer.flush()
            del buffer
        os.replace(partial, folder / "images.npy")
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".compact.npy").unlink(missing_ok=True)
    pixels = _pixels_digest(np.load(folder / "images.npy", mmap_mode="r"), np.asarray(good, dtype=np.int64))
    elapsed = time.perf_counter() - start
    atomic_write_json(folder / "index.json", {
        "key": key, "version": CACHE_VERSION, "size": list(size), "root": str(root.resolve()),
        "requested_ids": _ids_digest(ids), "ids": good, "bad": {str(k): v for k, v in bad.items()},
        "pixels_sha256": pixels, "build_seconds": round(elapsed, 2),
    })
    loaded = _load(folder, key, size, ids)
    if loaded is None:
        raise RuntimeError(f"{folder}: the cache just built does not load; is another process writing it?")
    return ImageCache(loaded.images, loaded.ids, bad, key, folder, size, round(elapsed, 2), built_now=True,
                      pixels_sha256=pixels)


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def _pixels_digest(images: np.ndarray, ids: np.ndarray, chunk: int = 4096) -> str:
    h = hashlib.sha256(_ids_digest(ids).encode())
    h.update(repr(images.shape).encode())
    for start in range(0, len(images), chunk):  # chunks keep a memory-mapped array out of RAM
        h.update(np.ascontiguousarray(images[start:start + chunk]).tobytes())
    return h.hexdigest()
