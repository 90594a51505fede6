"""``write_synthetic``: checks the arguments, plans the rows, draws the JPEGs and writes ``styles.csv``,
``README.md`` and the ``SYNTHETIC`` marker."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fewshot.data.synth.catalog import COLOURS, ITEM, check_n_classes
from fewshot.data.synth.draw import class_styles, draw_item
from fewshot.data.synth.plan import make_plan
from fewshot.data.synth.report import MARKER, SynthReport, readme_text
from fewshot.utils.errors import UserError
from fewshot.utils.io import atomic_write_json, atomic_write_text

GENERATOR = "fewshot.data.synth"
GENERATOR_VERSION = 1
MIN_IMAGES_PER_CLASS = 10
MAX_IMAGES = 1_000_000


class OutputFolderError(UserError, FileExistsError):
    """``out`` is a file, or a non-empty folder that is not an earlier synthetic dataset."""


HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def _check_args(out: Path, n_classes: int, n_images: int, seed: int, size: tuple[int, int]) -> None:
    for name, value in (("n_classes", n_classes), ("n_images", n_images), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    check_n_classes(n_classes)
    if not MIN_IMAGES_PER_CLASS * n_classes <= n_images <= MAX_IMAGES:
        raise UserError(
            f"n_images={n_images} does not fit n_classes={n_classes}: need {MIN_IMAGES_PER_CLASS} images per "
            f"class on average (>= {MIN_IMAGES_PER_CLASS * n_classes}) and at most {MAX_IMAGES}; raise "
            f"n_images or lower n_classes (fewshot synth --images / --classes; benchmark config: "
            f"data.synth_images / data.synth_classes)"
        )
    if seed < 0:
        raise UserError(f"seed={seed} must be >= 0 (numpy SeedSequence takes non-negative ints; fewshot synth "
                        "--seed, benchmark config: seed)")
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and 16 <= s <= 1024 for s in size):
        raise ValueError(f"size={size!r} must be (height, width) with both ints in [16, 1024], e.g. (80, 60)")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"out={out} exists and is not a folder; pass a new or empty folder "
                                "(fewshot synth --out)")


def _prepare_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise OutputFolderError(
                f"{out} is not empty and holds no {MARKER} marker, so it is not an earlier synthetic "
                f"dataset; refusing to write into it. Pass a new or empty folder."
            )
        # Our own earlier output: stale JPEGs would defeat the missing-image trap, so drop them.
        for old in (out / "images").glob("*.jpg"):
            old.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)


def write_synthetic(
    out: Path | str,
    *,
    n_classes: int = 40,
    n_images: int = 3000,
    seed: int = 0,
    size: tuple[int, int] = (80, 60),
    traps: bool = True,
    progress: bool = True,
) -> SynthReport:
    """Write a synthetic long-tail catalogue of ``n_images`` rows over ``n_classes`` articleTypes into
    ``out`` (Kaggle layout; see the :mod:`fewshot.data.synth` docstring). ``size`` is (height, width) of
    the JPEGs.

    Raises ValueError on bad arguments and FileExistsError when ``out`` is a non-empty folder that is not
    an earlier synthetic dataset (earlier synthetic output is regenerated in place).
    """
    start = time.perf_counter()
    out, size = Path(out), tuple(size)
    _check_args(out, n_classes, n_images, seed, size)  # type: ignore[arg-type]
    params = {"synthetic": True, "generator": GENERATOR, "generator_version": GENERATOR_VERSION,
              "seed": int(seed), "n_classes": int(n_classes), "n_images": int(n_images),
              "size_hw": [int(s) for s in size], "traps": bool(traps)}
    plan = make_plan(n_classes, n_images, seed, traps)

    # The marker goes first so an interrupted run is recognised (and regenerated) as our own output.
    _prepare_out(out)
    atomic_write_json(out / MARKER, {**params, "complete": False})
    styles = class_styles(seed, n_classes)
    skip = set(plan.traps.get("missing_image", []))
    for i in tqdm(range(n_images), desc="synthetic images", unit="img", disable=not progress):
        if i in skip:
            continue
        colour = np.asarray(COLOURS[plan.base_colours[i]], dtype=np.float32)
        item_rng = np.random.default_rng([seed, ITEM, int(plan.ids[i])])
        pixels = draw_item(styles[plan.label[i]], colour, item_rng, size)  # type: ignore[arg-type]
        Image.fromarray(pixels, "RGB").save(out / "images" / f"{plan.ids[i]}.jpg", format="JPEG", quality=90)
    atomic_write_text(out / "styles.csv", HEADER + "\n" + "".join(plan.lines[i] + "\n" for i in plan.order))
    atomic_write_text(out / "README.md", readme_text(params, plan.classes, plan.sizes))
    atomic_write_json(out / MARKER, {**params, "complete": True})

    def as_ids(*names: str) -> tuple[int, ...]:
        return tuple(sorted(int(plan.ids[i]) for name in names for i in plan.traps.get(name, [])))

    return SynthReport(
        root=out, styles_csv=out / "styles.csv", images_dir=out / "images", readme=out / "README.md",
        marker=out / MARKER, n_rows=n_images, n_images=n_images - len(skip), n_missing_images=len(skip),
        classes=tuple(plan.classes), class_sizes=tuple(int(s) for s in plan.sizes),
        test_only_classes=tuple(plan.classes[k] for k in sorted(plan.test_only)),
        train_only_classes=tuple(plan.classes[k] for k in sorted(plan.train_only)),
        comma_ids=as_ids("comma1", "comma2"), missing_image_ids=as_ids("missing_image"),
        empty_year_ids=as_ids("empty_year"), empty_season_ids=as_ids("empty_season"),
        seconds=time.perf_counter() - start,
    )
