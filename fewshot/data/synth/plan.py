"""The row plan: everything in ``styles.csv`` but the pixels. Years 2008-2019, even years the transfer
protocol's train split and odd years its test split; the rarest classes alternate test-only / train-only.
Traps copied from the real file: unquoted commas in ``productDisplayName``, rows without a JPEG, an empty
``year``, a few empty ``season``. Names, for the text branch: most end with the article type, about a
quarter with a class's product-line word instead (:func:`line_word`), and ~5% are empty (never a
comma-trap row); drawn from their own ``(seed, NAMES)`` generator, so the other columns do not move."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fewshot.data.synth.catalog import (
    BRANDS,
    COLOURS,
    GENDERS,
    META,
    NAMES,
    STYLE_WORDS,
    USAGES,
    choose_classes,
    class_sizes,
    display_name,
    line_word,
    taxonomy,
)

SEASONS = (("Summer", 0.48), ("Fall", 0.26), ("Winter", 0.19), ("Spring", 0.07))
# Shaped like the real file: peaks in 2011/2012 and 2015-2017, every year present.
TRAIN_YEARS = ((2008, 0.03), (2010, 0.10), (2012, 0.50), (2014, 0.05), (2016, 0.27), (2018, 0.05))
TEST_YEARS = ((2009, 0.03), (2011, 0.50), (2013, 0.07), (2015, 0.17), (2017, 0.19), (2019, 0.04))


@dataclass(frozen=True)
class Plan:
    """Everything but the pixels, row ``i`` in class-rank order (rows are shuffled only when written)."""

    classes: list[str]
    sizes: np.ndarray  # (n_classes,)
    label: np.ndarray  # (n_images,) class rank
    ids: np.ndarray  # (n_images,)
    lines: list[str]  # styles.csv lines without "\n"
    base_colours: list[str]
    test_only: list[int]  # class ranks
    train_only: list[int]
    traps: dict[str, list[int]]  # trap name -> rows
    order: np.ndarray  # row order in styles.csv


def _weighted(rng: np.random.Generator, table: tuple[tuple, ...], n: int) -> list:
    values, p = zip(*table)
    p = np.asarray(p, dtype=np.float64)
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def split_years(
    sizes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    """(is_train (n_images,), reserved rows, test-only ranks, train-only ranks). The rarest classes
    alternate test-only / train-only, ``max(1, n // 20)`` of each; every other class gets 45-65% train
    rows and at least one row on each side. Reserved rows (one train, one test per class) take no trap
    that could remove them from the protocol."""
    n = len(sizes)
    n_special = max(1, n // 20)
    test_only = [n - 1 - 2 * i for i in range(n_special)]
    train_only = [n - 2 - 2 * i for i in range(n_special)]
    is_train = np.zeros(int(sizes.sum()), dtype=bool)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    reserved: list[int] = []
    for k, s in enumerate(int(s) for s in sizes):
        # Drawn for every class, used or not, so one class's kind does not shift the others' draws.
        n_train = int(np.clip(round(rng.uniform(0.45, 0.65) * s), 1, s - 1))
        n_train = 0 if k in test_only else s if k in train_only else n_train
        rows = starts[k] + rng.permutation(s)
        is_train[rows[:n_train]] = True
        reserved += rows[:n_train][:1].tolist() + rows[n_train:][:1].tolist()
    return is_train, reserved, test_only, train_only


def pick_traps(label: np.ndarray, reserved: list[int], rng: np.random.Generator) -> dict[str, list[int]]:
    """Disjoint trap rows: ~1% missing JPEGs and the empty year from the larger half of the classes (never a
    reserved row), ~0.5% rows with commas in the name (the first gets 2), ~0.2% empty seasons."""
    n = len(label)
    big = np.flatnonzero(label < max(1, int(label.max() + 1) // 2))
    candidates = rng.permutation(np.setdiff1d(big, reserved))
    n_missing = max(1, round(0.01 * n))
    missing, empty_year = candidates[:n_missing].tolist(), candidates[n_missing:n_missing + 1].tolist()
    others = rng.permutation(np.setdiff1d(np.arange(n), missing + empty_year))
    n_comma, n_season = max(2, round(0.005 * n)), max(2, round(0.002 * n))
    return {"missing_image": missing, "empty_year": empty_year, "comma2": others[:1].tolist(),
            "comma1": others[1:n_comma].tolist(), "empty_season": others[n_comma:n_comma + n_season].tolist()}


def make_plan(n_classes: int, n_images: int, seed: int, traps: bool) -> Plan:
    """The rows of a catalogue, all drawn from the ``(seed, META)`` generator in a fixed order."""
    rng = np.random.default_rng([seed, META])
    classes = choose_classes(n_classes, seed)
    sizes = class_sizes(n_classes, n_images)
    label = np.repeat(np.arange(n_classes), sizes)
    is_train, reserved, test_only, train_only = split_years(sizes, rng)
    train_years, test_years = _weighted(rng, TRAIN_YEARS, n_images), _weighted(rng, TEST_YEARS, n_images)
    years = [str(train_years[i] if is_train[i] else test_years[i]) for i in range(n_images)]
    seasons = _weighted(rng, SEASONS, n_images)
    ids = 1000 + rng.choice(max(59_000, 4 * n_images), size=n_images, replace=False)
    colour_names = list(COLOURS)
    palettes = [rng.choice(len(colour_names), size=3, replace=False) for _ in range(n_classes)]
    trap_rows = pick_traps(label, reserved, rng) if traps else {}
    for i in trap_rows.get("empty_year", []):
        years[i] = ""
    for i in trap_rows.get("empty_season", []):
        seasons[i] = ""
    commas = {i: 1 for i in trap_rows.get("comma1", [])} | {i: 2 for i in trap_rows.get("comma2", [])}

    tax = taxonomy()
    name_rng = np.random.default_rng([seed, NAMES])
    name_kind = name_rng.choice(3, size=n_images, p=[0.70, 0.25, 0.05])  # class word, line word, empty
    name_kind[list(commas)] = 0
    lines, base_colours = [], []
    for i in range(n_images):
        article = classes[label[i]]
        master, sub, genders, usage = tax[article]
        g_p = 0.5 ** np.arange(len(genders))  # the first listed gender is the most common
        gender = GENDERS[genders[int(rng.choice(len(genders), p=g_p / g_p.sum()))]]
        # A class has a usual palette, as real products do (Lipstick: reds and pinks).
        own = palettes[label[i]] if rng.uniform() < 0.75 else rng.choice(len(colour_names), 3, replace=False)
        colours = [colour_names[j] for j in rng.permutation(own)]
        if rng.uniform() >= 0.9:
            usage = USAGES[int(rng.integers(len(USAGES)))]
        brand = BRANDS[master][int(rng.integers(len(BRANDS[master])))]
        style_word = STYLE_WORDS[int(rng.integers(len(STYLE_WORDS)))] if rng.uniform() < 0.4 else ""
        named = {0: article, 1: line_word(int(label[i]))}.get(int(name_kind[i]))
        name = "" if named is None else display_name(brand, gender, colours, named, commas.get(i, 0), style_word)
        base_colours.append(colours[0])
        lines.append(
            f"{ids[i]},{gender},{master},{sub},{article},{colours[0]},{seasons[i]},{years[i]},{usage},{name}")
    return Plan(classes, sizes, label, ids, lines, base_colours, test_only, train_only, trap_rows,
                order=rng.permutation(n_images))  # the real file is sorted by neither id nor class
