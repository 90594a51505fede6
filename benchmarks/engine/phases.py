"""Content-addressed phases: each finished phase's result is stored atomically and never recomputed.

A phase is a named function whose result (tensors, arrays, dicts...) lands in ``<out>/phases/<name>.pt``
with its wall time and its *key*: the hash of everything it depends on (its slice of the config, the
dataset's pixel hash, the code it runs (:mod:`benchmarks.engine.codekey`), the keys of the phases it consumes,
:data:`PHASES_VERSION`). So:

- ``--resume`` reloads a phase whose stored key matches and recomputes one whose inputs changed;
- ``--reuse DIR`` (any number of finished run folders) imports a phase whose key matches from there,
  with the files it declares as artifacts (checkpoints), instead of computing it: adding a method to a
  finished run costs that method's own phases, a changed upstream setting recomputes exactly the
  phases downstream of it, and a changed method recomputes that method's phases;
- results are stored as tensors and plain containers (:mod:`fewshot.utils.records`) and read with
  ``torch.load(weights_only=True)``: a phase file from another folder cannot run code. A phase file written
  by an older version (a pickle) is not read: the phase is computed again.

Killing a run loses at most the phase in progress; training phases keep their own per-epoch
checkpoints, so ``--resume`` continues from the last finished epoch.

Under torchrun every rank runs every phase (training needs them all; a phase on cached features is
deterministic and cheap), rank 0 alone decides whether a phase is reused, imports it and writes its file,
and the others follow its decision and read what it wrote.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from fewshot.utils import distributed
from fewshot.utils.records import load_record, save_record

T = TypeVar("T")

# Bump when the phase file format changes (2: records instead of pickles; code digests in the keys).
PHASES_VERSION = 2


def phase_key(name: str, inputs: Mapping[str, Any], upstream: Sequence[str] = (), code: str = "") -> str:
    """sha256 of the phase's name, its inputs (JSON-able, order-free), the digest of the code it runs
    (:func:`benchmarks.engine.codekey.code_digest`) and its upstream phases' keys."""
    blob = json.dumps({"phase": name, "version": PHASES_VERSION, "inputs": inputs, "code": code,
                       "upstream": sorted(upstream)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class PhaseStore:
    """The phases of one run folder, with optional finished run folders to import phases from.

    ``seconds``: each phase's own compute time (an imported phase keeps the time it took where it ran);
    ``reused``: phases not computed by this attempt; ``imported``: {phase: source folder}; ``keys``:
    {phase: key}.
    """

    def __init__(self, out: Path, *, reuse: Sequence[Path] = (), log: Callable[[str], None] = tqdm.write) -> None:
        self.out = Path(out)
        self.folder = self.out / "phases"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sources = [Path(p) for p in reuse]
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []
        self.imported: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self._done: dict[str, tuple[str, Any]] = {}  # name -> (key, result) of this attempt
        self.log = log

    def run(self, name: str, key: str, fn: Callable[[], T], artifacts: Sequence[str] = ()) -> T:
        """``fn()``'s result, computed once per key. ``artifacts``: files (relative to the run folder)
        that the phase writes and later phases read; they travel with an imported phase."""
        self.keys[name] = key
        if self._done.get(name, (None,))[0] == key:  # computed by this attempt already (a phase several methods share)
            return self._done[name][1]
        found = self._find(name, key, artifacts) if distributed.is_main() else None
        how = distributed.broadcast_object(None if found is None else found[0])  # rank 0 decides for all
        if how is not None:
            saved = found[1] if found is not None else self._load(self.folder / f"{name}.pt")
            return self._remember(name, key, self._reuse(name, saved, how))
        self.log(f"[{name}] running")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        if distributed.is_main():
            save_record({"result": result, "seconds": seconds, "key": key}, self.folder / f"{name}.pt")
        distributed.barrier()  # the phase's files are there for every rank
        self.seconds[name] = seconds
        self.log(f"[{name}] done in {seconds:.0f} s")
        return self._remember(name, key, result)

    def _find(self, name: str, key: str, artifacts: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
        """(how, saved phase) of a finished phase with this key, in this run folder or imported into it
        from a source folder (with its artifacts); None when it must be computed."""
        own = self._load(self.folder / f"{name}.pt")
        if own is not None and own.get("key") == key:
            return "finished earlier", own
        if own is not None:
            self.log(f"[{name}] its inputs changed since it ran: recomputing")
        for source in self.sources:
            saved = self._load(source / "phases" / f"{name}.pt")
            if saved is not None and saved.get("key") == key and self._import_artifacts(source, artifacts):
                save_record({**saved, "imported_from": str(source)}, self.folder / f"{name}.pt")
                self.imported[name] = str(source)
                return f"imported from {source}", saved
        return None

    def _remember(self, name: str, key: str, result: T) -> T:
        self._done[name] = (key, result)
        return result

    def _reuse(self, name: str, saved: dict[str, Any], how: str) -> Any:
        self.seconds[name] = saved["seconds"]
        self.reused.append(name)
        self.log(f"[{name}] {how} ({saved['seconds']:.0f} s): reusing its result")
        return saved["result"]

    def _load(self, path: Path) -> dict[str, Any] | None:
        """A phase file's record; None when there is none, or when an older version wrote it (a pickle)."""
        if not path.is_file():
            return None
        try:
            return load_record(path)
        except (pickle.UnpicklingError, TypeError, KeyError):
            self.log(f"[{path.stem}] {path} was written by an older version: computing the phase again")
            return None

    def _import_artifacts(self, source: Path, artifacts: Sequence[str]) -> bool:
        """Hard-link (else copy) the phase's files from ``source``; False when one is missing there."""
        if not all((source / a).is_file() for a in artifacts):
            return False
        for rel in artifacts:
            target = self.out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            try:
                os.link(source / rel, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(source / rel, target)
        return True
