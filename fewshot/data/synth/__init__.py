"""Deterministic synthetic long-tail product catalogue in the Kaggle "Fashion Product Images (Small)" layout.

``write_synthetic(out)`` writes ``out/styles.csv`` (the 10 Kaggle columns, no quoting, ``\\n`` endings),
``out/images/<id>.jpg`` (RGB JPEGs, procedurally drawn), ``out/README.md`` and the marker ``out/SYNTHETIC``
(JSON parameters) by which loaders tell synthetic data from the real catalogue.

What the data is built to exercise:

- Class names are real ``articleType`` values drawn from the episodic protocol's fixed background and
  evaluation lists (about 60% / 40%), interleaved over the frequency ranks.
- Class sizes follow a Zipf-Mandelbrot law with a taper, ``(k + 6)^-1 * (1 - (k / (n + 1))^4)`` for rank
  ``k``, plus 2 images per class: at 40 classes / 3,000 images the 20 largest classes hold ~78% and the
  rarest has 5 images (Zipf & Mandelbrot; the taper gives the real file's abrupt end of the tail).
- Years 2008-2019: even years are the transfer protocol's train split, odd years its test split. The
  rarest classes alternate between test-only (odd years only) and train-only (even years only); every
  other class has both.
- Traps copied from the real file: unquoted commas in ``productDisplayName`` (~0.5% of rows, one row with
  2 extra commas), ~1% of rows without a JPEG, one row with an empty ``year``, a few empty ``season``.
- Images: each class has a shape family, texture, layout, aspect, rotation and accent colour; each item
  varies colour (its ``baseColour``), scale, position, rotation, texture phase, background and noise, so a
  raw-pixel nearest-centroid classifier is well above chance but far from perfect.

All randomness comes from ``numpy.random.default_rng`` seeded with ``(seed, stream, ...)``; the same
arguments give byte-identical files on the same platform (numpy + libjpeg versions).

Modules: :mod:`~fewshot.data.synth.catalog` (taxonomy, brands, colours, class lists, sizes and choice),
:mod:`~fewshot.data.synth.draw` (per-class styles and the pixels), :mod:`~fewshot.data.synth.plan`
(years, traps, the rows), :mod:`~fewshot.data.synth.report` (:class:`SynthReport`, README text) and
:mod:`~fewshot.data.synth.writer` (:func:`write_synthetic`).
"""
from __future__ import annotations

from fewshot.data.synth.catalog import choose_classes, class_lists, class_sizes, taxonomy
from fewshot.data.synth.draw import draw_item
from fewshot.data.synth.report import SynthReport
from fewshot.data.synth.writer import (
    GENERATOR_VERSION,
    HEADER,
    MAX_IMAGES,
    MIN_IMAGES_PER_CLASS,
    write_synthetic,
)

__all__ = [
    "GENERATOR_VERSION", "HEADER", "MAX_IMAGES", "MIN_IMAGES_PER_CLASS", "SynthReport", "choose_classes",
    "class_lists", "class_sizes", "draw_item", "taxonomy", "write_synthetic",
]
