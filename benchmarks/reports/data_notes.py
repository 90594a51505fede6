"""summary.md's account of the data a run read, from its run.json: how its classes were split, the settings
fitted to it (``data.fit_to_data``), what it left out, and whether it is the Kaggle catalogue the published
reference figures belong to."""
from __future__ import annotations

from typing import Any

from benchmarks.engine.feasibility import change_words
from fewshot.data.protocols import shipped_classes
from fewshot.data.rules import KAGGLE_SPLIT

SHOWN = 3  # items named per group of left-out items (run.json lists every one)


def is_kaggle_catalogue(run: dict[str, Any]) -> bool:
    """The run read the Kaggle catalogue (its layout, real or synthetic) with its own protocols (even / odd
    years, the shipped class lists): only then do the seed's and the published figures compare. A run.json
    written before these fields were recorded read the Kaggle catalogue (nothing else was read then)."""
    d = run.get("dataset", {})
    split, classes = d.get("transfer_split"), d.get("episodic_classes")
    return (d.get("layout", "kaggle") == "kaggle" and (split is None or split == KAGGLE_SPLIT.to_dict())
            and (classes is None or classes == shipped_classes().to_dict()))


def data_lines(summary: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The episodic protocol's classes and the validation rule in words, then the settings fitted to the data
    and the items left out of it (each a section only when there is something to say)."""
    return _protocol_words(summary, run) + _fitted(run) + _left_out(run)


def _protocol_words(summary: dict[str, Any], run: dict[str, Any]) -> list[str]:
    d = run.get("dataset", {})
    words = []
    classes = d.get("episodic_classes")
    split = summary.get("episodic_split")
    if classes and split is not None:
        n_train, n_val = len(split.get("train_classes", [])), len(split.get("val_classes", []))
        words.append(f"Episodic protocol: {classes['rule']}; background classes: {n_train} to train on, {n_val} held "
                     "out whole to choose epochs on.")
    validation = _validation_words(run.get("validation"))
    if validation:
        words.append(f"Validation images (carved from train): {validation}.")
    return [" ".join(words), ""] if words else []


def _validation_words(record: Any) -> str:
    """The validation rule every choice made on validation ran with, in words, as run.json's ``validation``
    records it (benchmarks.run); "" for a run that does not record one."""
    return str(record["words"]) if isinstance(record, dict) and record.get("words") else ""


def _fitted(run: dict[str, Any]) -> list[str]:
    """One line per reason: the settings it changed from the config's values to those used."""
    fitted = run.get("fitted") or []
    if not fitted:
        return []
    lines = ["## Settings fitted to the data", "",
             "`data.fit_to_data = true`: the config asked more than the data holds, so these settings were lowered "
             "(or methods and protocols left out) before anything ran; everything below used them.", ""]
    by_why: dict[str, list[str]] = {}
    for entry in fitted:
        by_why.setdefault(entry["why"], []).append(change_words(entry))
    for why, changes in by_why.items():
        lines.append(f"- {'; '.join(f'`{c}`' for c in changes)}: {why}")
    return lines + [""]


def _left_out(run: dict[str, Any]) -> list[str]:
    groups = run.get("dataset", {}).get("left_out") or []
    if not groups:
        return []
    lines = ["## Left out of the data", "", "Every item is listed in run.json's `dataset.left_out`.", ""]
    for g in groups:
        more = f" and {g['count'] - SHOWN} more" if g["count"] > SHOWN else ""
        line = g.get("line") or f"{g['count']} {g['reason']}: {', '.join(g['items'][:SHOWN])}{more}"
        lines.append(f"- {line}")
    return lines + [""]
