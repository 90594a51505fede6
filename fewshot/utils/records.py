"""Results saved as tensors and plain containers, loaded with ``torch.load(weights_only=True)``.

A finished phase's result (per-class tables, a stage's test scores, dicts of figures) must be reloadable
from any run folder, including one copied from elsewhere (``--reuse``). ``weights_only=False`` would unpickle
whatever the file names, i.e. run arbitrary code; ``weights_only=True`` loads tensors and plain containers
only. :func:`encode` turns a result into such a structure and :func:`decode` back:

- a dataclass whose class was marked with :func:`record` -> its fields (and its registered name);
- a ``pandas.DataFrame`` -> its columns (numeric ones as tensors, so float64 values round-trip exactly);
- a NumPy array -> a tensor (dtype kept); a NumPy scalar -> a Python number; a path -> its string;
- dicts (str keys), lists, tuples, tensors, str, int, float, bool and None as they are.

Only classes marked with :func:`record` are rebuilt, by name: a file cannot make the loader build anything
else.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from fewshot.utils.io import atomic_torch_save

T = TypeVar("T")
_RECORDS: dict[str, type] = {}
_TAG = "__record__"


def record(cls: type[T]) -> type[T]:
    """Mark the dataclass ``cls`` as savable by :func:`encode` (by its qualified name)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    _RECORDS[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def encode(obj: Any) -> Any:
    """``obj`` as tensors and plain containers (see the module docstring); raises TypeError on anything else."""
    if obj is None or isinstance(obj, (str, bool, int, float, torch.Tensor)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {_TAG: "list_array", "items": [encode(v) for v in obj.tolist()]}
        return {_TAG: "ndarray", "data": torch.from_numpy(np.array(obj, copy=True))}  # a writable copy
    if isinstance(obj, os.PathLike):
        return {_TAG: "path", "path": os.fspath(obj)}
    if isinstance(obj, pd.DataFrame):
        return {_TAG: "frame", "columns": [str(c) for c in obj.columns],
                "data": [encode(obj[c].to_numpy()) for c in obj.columns]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if _RECORDS.get(name) is not type(obj):
            raise TypeError(f"{name} is not marked with fewshot.utils.records.record")
        return {_TAG: "dataclass", "type": name,
                "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"only str keys can be saved, got {sorted(map(repr, obj))[:3]}")
        if _TAG in obj:
            raise TypeError(f"a dict key may not be {_TAG!r}")
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode(v) for v in obj)
    raise TypeError(f"cannot save a {type(obj).__name__} as a record")


def decode(obj: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(obj, dict):
        kind = obj.get(_TAG)
        if kind is None:
            return {k: decode(v) for k, v in obj.items()}
        if kind == "ndarray":
            return obj["data"].numpy()
        if kind == "list_array":
            return np.array([decode(v) for v in obj["items"]], dtype=object)
        if kind == "path":
            return Path(obj["path"])
        if kind == "frame":
            return pd.DataFrame({c: decode(v) for c, v in zip(obj["columns"], obj["data"])}, columns=obj["columns"])
        if kind == "dataclass":
            if obj["type"] not in _RECORDS:
                raise TypeError(f"{obj['type']} is not a known record type")
            return _RECORDS[obj["type"]](**{k: decode(v) for k, v in obj["fields"].items()})
        raise TypeError(f"unknown record tag {kind!r}")
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode(v) for v in obj)
    return obj


def save_record(obj: Any, path: str | os.PathLike) -> None:
    """Write ``encode(obj)`` atomically with ``torch.save``."""
    atomic_torch_save(encode(obj), path)


def load_record(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`save_record` (``weights_only=True``: tensors and containers only)."""
    return decode(torch.load(path, map_location="cpu", weights_only=True))
