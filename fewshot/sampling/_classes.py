"""Labels -> per-class item lists, computed once, so that sampling an item is one array gather."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

SMALL_CLASS_POLICIES = ("error", "exclude")


def as_label_array(labels: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """``labels`` as a 1-D int64 array; raises ``ValueError`` on empty, non-integer or multi-dim input."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence of ints (one per item), got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels is empty: pass one int label per dataset item (e.g. ImageFolder.targets)")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"labels must be ints, got dtype {arr.dtype} (first value {arr[0]!r}); map class names to ints first"
        )
    return arr.astype(np.int64, copy=False)


def refuse_negative_labels(labels: np.ndarray, sampler: str) -> None:
    """Raise ``ValueError`` when ``labels`` [n] holds a negative value.

    -1 conventionally marks an unlabelled item (outside the training set, unknown class); grouped by
    value it would silently become one more class, mixing unrelated items in an episode.
    """
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        first = int(negative[0])
        raise ValueError(
            f"labels hold {negative.size} negative value(s) (e.g. {int(labels[first])} at index {first}); "
            f"{sampler} would sample them as a class of their own, so it refuses them. To leave unlabelled "
            f"items out, build the sampler on the labelled subset: keep = np.flatnonzero(labels >= 0); "
            f"{sampler}(labels[keep], ...) with DataLoader(torch.utils.data.Subset(dataset, keep), ...)"
        )


@dataclass(frozen=True)
class ClassIndex:
    """Items grouped by class (CSR layout).

    ``order`` holds every item index sorted by label; eligible class ``c`` (label ``classes[c]``) owns
    ``order[offsets[c] : offsets[c] + counts[c]]``. CSR rather than a padded [C, max_count] matrix: on a
    long-tail catalogue the padding of one huge head class would multiply the memory by C.
    """

    classes: np.ndarray  # [C] eligible labels, ascending
    counts: np.ndarray  # [C]
    offsets: np.ndarray  # [C]
    order: np.ndarray  # [n]
    excluded: dict[int, int]  # label -> count of classes too small to sample

    def gather(self, class_pos: np.ndarray, item_pos: np.ndarray) -> np.ndarray:
        """Dataset indices of item ``item_pos`` within eligible class ``class_pos`` (broadcast)."""
        return self.order[self.offsets[class_pos] + item_pos]


def build_class_index(
    labels: np.ndarray,
    min_items: int,
    need: str,
    classes: Iterable[int] | None = None,
    small_classes: str = "error",
) -> ClassIndex:
    """Group ``labels`` by class, keep the classes of ``classes`` (all by default) with >= ``min_items`` items.

    ``need`` names the requirement in error messages (e.g. ``"n_shot + n_query = 20"``).
    """
    if small_classes not in SMALL_CLASS_POLICIES:
        raise ValueError(f"small_classes={small_classes!r} is not one of {SMALL_CLASS_POLICIES}")
    order = np.argsort(labels, kind="stable")
    uniq, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    keep = np.ones(len(uniq), dtype=bool)
    if classes is not None:
        wanted = _as_class_list(classes)
        missing = np.setdiff1d(wanted, uniq)
        if missing.size:
            raise ValueError(
                f"classes {_preview(missing.tolist())} do not occur in labels "
                f"(labels range over {uniq.size} classes from {uniq[0]} to {uniq[-1]}); remove them from `classes`"
            )
        keep = np.isin(uniq, wanted)
    small = keep & (counts < min_items)
    excluded = {int(c): int(n) for c, n in zip(uniq[small], counts[small])}
    if excluded and small_classes == "error":
        listed = _preview([f"{c} ({n} items)" for c, n in excluded.items()])
        raise ValueError(
            f"{len(excluded)} class(es) have fewer than {need} items: {listed}; pass small_classes='exclude' "
            "to drop them, lower the sizes, or restrict `classes`"
        )
    keep &= ~small
    return ClassIndex(
        classes=uniq[keep], counts=counts[keep], offsets=starts[keep], order=order, excluded=excluded
    )


def _as_class_list(classes: Iterable[int]) -> np.ndarray:
    arr = classes.detach().cpu().numpy() if isinstance(classes, torch.Tensor) else np.asarray(list(classes))
    if arr.size == 0:
        raise ValueError("classes is empty: pass None to sample from every class, or a list of labels")
    if arr.ndim != 1 or arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"classes must be a flat list of int labels, got {arr.dtype} of shape {arr.shape}")
    return np.unique(arr.astype(np.int64))


def _preview(items: list, limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
