"""Does a product name contain its class name? The honest-reporting split of the text branch.

Titles often spell out the article type ("Levis Men Navy Blue Jeans"): there the text branch reads the
answer rather than recognising the product. :func:`mentions_class` says whether a name contains a class
name, or a simple singular/plural of it, as whole words, case and punctuation ignored.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_NON_WORD = re.compile(r"[^0-9a-z]+")


def _words(text: str) -> str:
    """Lower-case words joined by single spaces and padded with one, so phrase tests are word-bounded."""
    return f" {' '.join(_NON_WORD.sub(' ', text.lower()).split())} "


def class_variants(class_name: str) -> tuple[str, ...]:
    """The class name's word forms: itself, its last word de-pluralised ("-es", "-s") and pluralised."""
    base = _words(class_name).strip()
    if not base:
        return ()
    head, _, last = base.rpartition(" ")
    forms = {last, last + "s", last + "es"}
    if last.endswith("es"):
        forms.add(last[:-2])
    if last.endswith("s"):
        forms.add(last[:-1])
    return tuple(sorted(f"{head} {f}".strip() for f in forms if f))


def mentions_class(name: str | None, class_name: str) -> bool:
    """True when ``name`` holds ``class_name`` (or a simple singular/plural of it) as whole words.

    >>> mentions_class("Puma Men Black Casual Shoe", "Casual Shoes"), mentions_class("Nike Men Tee", "Tshirts")
    (True, False)
    """
    if not name:
        return False
    words = _words(name)
    return any(f" {form} " in words for form in class_variants(class_name))


def mentions_own_class(names: Sequence[str | None], class_names: Sequence[str]) -> np.ndarray:
    """bool [n]: whether ``names[i]`` mentions ``class_names[i]`` (each item's own class)."""
    if len(names) != len(class_names):
        raise ValueError(f"got {len(names)} names for {len(class_names)} class names")
    return np.fromiter((mentions_class(n, c) for n, c in zip(names, class_names)), bool, len(names))
