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
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fewshot.io import atomic_write_json, atomic_write_text

GENERATOR_VERSION = 1
MIN_IMAGES_PER_CLASS = 10
MAX_IMAGES = 1_000_000
HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"

# masterCategory/subCategory/genders/usage: articleTypes. Genders: M(en) W(omen) U(nisex) B(oys) G(irls),
# the first one the most common, as in the real file.
_TAXONOMY = """\
Apparel/Topwear/MW/Casual: Tshirts, Shirts, Jackets, Sweaters, Sweatshirts, Rain Jacket, Waistcoat
Apparel/Topwear/WG/Casual: Tops, Tunics
Apparel/Topwear/W/Ethnic: Kurtis, Kurtas, Dupatta
Apparel/Topwear/M/Formal: Suspenders
Apparel/Topwear/BG/Casual: Rompers
Apparel/Bottomwear/MWB/Casual: Trousers, Shorts, Jeans, Track Pants, Capris, Tracksuits
Apparel/Bottomwear/WG/Casual: Stockings, Skirts, Leggings, Jeggings, Swimwear
Apparel/Bottomwear/W/Ethnic: Patiala, Salwar, Churidar
Apparel/Dress/WG/Casual: Dresses, Jumpsuit
Apparel/Saree/W/Ethnic: Sarees
Apparel/Apparel Set/W/Ethnic: Kurta Sets
Apparel/Innerwear/M/Casual: Boxers, Trunk, Innerwear Vests
Apparel/Innerwear/MW/Casual: Briefs
Apparel/Innerwear/W/Casual: Bra, Camisoles
Apparel/Loungewear and Nightwear/W/Casual: Bath Robe, Baby Dolls, Nightdress
Apparel/Loungewear and Nightwear/MW/Casual: Night suits, Lounge Shorts, Lounge Pants
Apparel/Socks/BG/Casual: Booties
Footwear/Shoes/MWU/Casual: Casual Shoes
Footwear/Shoes/MWU/Sports: Sports Shoes
Footwear/Shoes/M/Formal: Formal Shoes
Footwear/Shoes/W/Casual: Flats, Heels
Footwear/Sandal/MWU/Casual: Sandals, Sports Sandals
Footwear/Flip Flops/MWU/Casual: Flip Flops
Accessories/Bags/UMW/Casual: Laptop Bag, Backpacks, Rucksacks, Waist Pouch, Duffel Bag, Messenger Bag
Accessories/Bags/W/Casual: Handbags, Clutches, Mobile Pouch
Accessories/Jewellery/WM/Casual: Pendant, Necklace and Chains, Ring, Bangle, Bracelet, Earrings, Jewellery Set
Accessories/Watches/MWU/Casual: Watches
Accessories/Belts/MW/Casual: Belts
Accessories/Wallets/WM/Casual: Wallets
Accessories/Socks/MWU/Casual: Socks
Accessories/Eyewear/MWU/Casual: Sunglasses
Accessories/Headwear/UMW/Casual: Caps
Accessories/Cufflinks/M/Formal: Cufflinks
Accessories/Ties/M/Formal: Ties
Accessories/Accessories/M/Formal: Accessory Gift Set
Accessories/Accessories/UW/Casual: Travel Accessory
Accessories/Mufflers/MW/Casual: Mufflers
Accessories/Scarves/WM/Casual: Scarves
Accessories/Stoles/W/Ethnic: Stoles
Accessories/Gloves/MBG/Casual: Gloves
Accessories/Water Bottle/U/Sports: Water Bottle
Accessories/Shoe Accessories/U/Casual: Shoe Accessories
Personal Care/Makeup/W/Casual: Kajal and Eyeliner, Compact, Concealer, Foundation and Primer, Eyeshadow
Personal Care/Makeup/W/Casual: Highlighter and Blush
Personal Care/Eyes/W/Casual: Mascara
Personal Care/Lips/W/Casual: Lip Liner, Lip Gloss, Lip Care, Lipstick
Personal Care/Nails/W/Casual: Nail Polish
Personal Care/Hair/W/Casual: Hair Colour
Personal Care/Skin/W/Casual: Face Moisturisers, Mask and Peel
Personal Care/Skin Care/W/Casual: Sunscreen, Face Wash and Cleanser
Personal Care/Fragrance/MW/Casual: Deodorant, Perfume and Body Mist, Fragrance Gift Set
Sporting Goods/Sports Equipment/U/Sports: Basketballs
Free Items/Free Gifts/MWU/Casual: Free Gifts
"""
_GENDERS = {"M": "Men", "W": "Women", "U": "Unisex", "B": "Boys", "G": "Girls"}
_BRANDS = {
    "Apparel": ("Roadster", "Wrangler", "Arrow", "Fabindia", "Locomotive", "Jealous 21"),
    "Footwear": ("Bata", "Woodland", "Catwalk", "Red Tape", "Carlton London", "Puma"),
    "Accessories": ("Fastrack", "Titan", "Baggit", "Lino Perros", "Hidesign", "Rocia"),
    "Personal Care": ("Lakme", "Maybelline", "Colorbar", "Revlon", "Elle 18", "Davidoff"),
    "Sporting Goods": ("Nike", "Spalding", "Nivia"),
    "Free Items": ("Myntra", "Reebok", "Puma"),
}
_STYLE_WORDS = ("Solid", "Printed", "Classic", "Textured", "Basic", "Casual")
# baseColour -> RGB; no White/Off White: they would vanish on the light background.
_COLOURS = {
    "Black": (25, 25, 25), "Navy Blue": (30, 40, 90), "Blue": (40, 90, 200), "Grey": (128, 128, 128),
    "Red": (200, 30, 40), "Green": (40, 140, 60), "Brown": (120, 70, 30), "Pink": (235, 120, 170),
    "Purple": (120, 50, 150), "Yellow": (235, 200, 30), "Beige": (215, 190, 150), "Maroon": (120, 20, 35),
    "Olive": (110, 110, 40), "Orange": (240, 130, 30), "Silver": (175, 175, 185), "Gold": (200, 160, 60),
    "Teal": (20, 130, 130), "Magenta": (200, 30, 150), "Cream": (240, 225, 190), "Charcoal": (60, 60, 65),
}
_SEASONS = (("Summer", 0.48), ("Fall", 0.26), ("Winter", 0.19), ("Spring", 0.07))
# Shaped like the real file: peaks in 2011/2012 and 2015-2017, every year present.
_TRAIN_YEARS = ((2008, 0.03), (2010, 0.10), (2012, 0.50), (2014, 0.05), (2016, 0.27), (2018, 0.05))
_TEST_YEARS = ((2009, 0.03), (2011, 0.50), (2013, 0.07), (2015, 0.17), (2017, 0.19), (2019, 0.04))
_SHAPES = ("ellipse", "rectangle", "triangle", "star", "ring", "cross", "diamond", "hourglass")
_TEXTURES = ("stripes", "checker", "dots", "waves", "rings", "gradient")
_LAYOUTS = ("single", "pair_h", "pair_v", "strap")
# Stream tags keep the metadata, per-class style and per-image generators independent.
_META, _STYLE, _ITEM, _CLASSES = 0, 1, 2, 3


@dataclass(frozen=True)
class SynthReport:
    """What :func:`write_synthetic` wrote. Classes and sizes are in frequency-rank order (largest first)."""

    root: Path
    styles_csv: Path
    images_dir: Path
    readme: Path
    marker: Path
    n_rows: int
    n_images: int
    n_missing_images: int
    classes: tuple[str, ...]
    class_sizes: tuple[int, ...]
    test_only_classes: tuple[str, ...]
    train_only_classes: tuple[str, ...]
    comma_ids: tuple[int, ...]
    missing_image_ids: tuple[int, ...]
    empty_year_ids: tuple[int, ...]
    empty_season_ids: tuple[int, ...]
    seconds: float

    def __str__(self) -> str:
        return (f"SYNTHETIC {self.root}: {self.n_rows} rows, {self.n_images} images "
                f"({self.n_missing_images} rows without one), {len(self.classes)} classes of "
                f"{self.class_sizes[0]}..{self.class_sizes[-1]} rows, written in {self.seconds:.1f} s")


@dataclass(frozen=True)
class _Style:
    shape: str
    texture: str
    layout: str
    freq: float  # texture angular frequency, radians per pixel
    angle: float  # texture orientation, radians
    rotation: float  # base rotation of the object, radians
    aspect: float  # half-width / half-height of one object
    accent: np.ndarray  # (3,) float RGB mixed in by the texture
    strength: float  # how much of the accent the texture mixes in


def class_lists() -> tuple[list[str], list[str]]:
    """The episodic protocol's (background, evaluation) articleType lists, read from package data."""
    pkg = resources.files("fewshot.data")
    return tuple(  # type: ignore[return-value]
        [line.strip() for line in pkg.joinpath(name).read_text(encoding="utf-8").splitlines() if line.strip()]
        for name in ("background_classes.txt", "evaluation_classes.txt")
    )


def taxonomy() -> dict[str, tuple[str, str, str, str]]:
    """articleType -> (masterCategory, subCategory, gender letters, usage)."""
    out: dict[str, tuple[str, str, str, str]] = {}
    for line in _TAXONOMY.splitlines():
        head, names = line.split(": ")
        master, sub, genders, usage = head.split("/")
        for name in names.split(", "):
            out[name] = (master, sub, genders, usage)
    return out


def class_sizes(n_classes: int, n_images: int) -> np.ndarray:
    """(n_classes,) int64 sizes, largest first, summing to ``n_images``: 2 per class plus a tapered
    Zipf-Mandelbrot share ``(k + 6)^-1 (1 - (k / (n + 1))^4)`` of the rest (largest-remainder rounding)."""
    if n_classes < 1 or n_images < 2 * n_classes:
        raise ValueError(
            f"class_sizes needs n_classes >= 1 and n_images >= 2 * n_classes, got {n_classes} and {n_images}")
    k = np.arange(1, n_classes + 1, dtype=np.float64)
    w = (k + 6.0) ** -1.0 * (1.0 - (k / (n_classes + 1.0)) ** 4)
    rest = n_images - 2 * n_classes
    raw = rest * w / w.sum()
    sizes = np.floor(raw).astype(np.int64)
    sizes[np.argsort(-(raw - sizes), kind="stable")[: rest - int(sizes.sum())]] += 1
    return sizes + 2


def _check_n_classes(n_classes: int) -> None:
    n_max = sum(len(names) for names in class_lists())
    if not 4 <= n_classes <= n_max:
        raise ValueError(
            f"n_classes={n_classes} is out of range: the synthetic classes are real articleTypes from the "
            f"episodic background/evaluation lists, so 4 <= n_classes <= {n_max}; pick a value in that range"
        )


def _check_args(out: Path, n_classes: int, n_images: int, seed: int, size: tuple[int, int]) -> None:
    for name, value in (("n_classes", n_classes), ("n_images", n_images), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    _check_n_classes(n_classes)
    if not MIN_IMAGES_PER_CLASS * n_classes <= n_images <= MAX_IMAGES:
        raise ValueError(
            f"n_images={n_images} does not fit n_classes={n_classes}: need {MIN_IMAGES_PER_CLASS} images per "
            f"class on average (>= {MIN_IMAGES_PER_CLASS * n_classes}) and at most {MAX_IMAGES}; raise "
            f"n_images or lower n_classes"
        )
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0 (numpy SeedSequence takes non-negative ints)")
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and 16 <= s <= 1024 for s in size):
        raise ValueError(f"size={size!r} must be (height, width) with both ints in [16, 1024], e.g. (80, 60)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out} exists and is not a folder; pass a new or empty folder")


def choose_classes(n_classes: int, seed: int) -> list[str]:
    """``n_classes`` real articleTypes in rank order (largest first), ~60% background / 40% evaluation,
    interleaved so both lists reach every part of the frequency range (head, mid tail, rare tail)."""
    _check_n_classes(n_classes)
    rng = np.random.default_rng([seed, _CLASSES])
    background, evaluation = class_lists()
    n_ev = max(n_classes - len(background), min(len(evaluation), round(0.4 * n_classes)))
    n_bg = n_classes - n_ev
    bg = [background[i] for i in rng.permutation(len(background))[:n_bg]]
    ev = [evaluation[i] for i in rng.permutation(len(evaluation))[:n_ev]]
    # Even spacing: rank of the j-th member of a list of m among n is about (j + 0.5) * n / m.
    keyed = [((j + 0.5) / n_bg, 0, name) for j, name in enumerate(bg)]
    keyed += [((j + 0.5) / n_ev, 1, name) for j, name in enumerate(ev)]
    return [name for *_, name in sorted(keyed)]


def _class_style(seed: int, rank: int) -> _Style:
    rng = np.random.default_rng([seed, _STYLE, rank])
    # A seeded permutation of the 48 (shape, texture) pairs: no two of the first 48 ranks share both.
    order = np.random.default_rng([seed, _STYLE]).permutation(len(_SHAPES) * len(_TEXTURES))
    combo = int(order[rank % len(order)])
    colours = np.array(list(_COLOURS.values()), dtype=np.float32)
    return _Style(
        shape=_SHAPES[combo % len(_SHAPES)],
        texture=_TEXTURES[combo // len(_SHAPES)],
        layout=_LAYOUTS[int(rng.integers(len(_LAYOUTS)))],
        freq=float(rng.uniform(0.35, 1.1)),
        angle=float(rng.uniform(0.0, np.pi)),
        rotation=float(rng.uniform(-0.5, 0.5)),
        aspect=float(rng.uniform(0.55, 1.3)),
        accent=colours[int(rng.integers(len(colours)))],
        strength=float(rng.uniform(0.45, 0.8)),
    )


def _shape_distance(shape: str, un: np.ndarray, vn: np.ndarray) -> np.ndarray:
    """A level function of normalised object coordinates: the shape is where it is <= 1."""
    au, av = np.abs(un), np.abs(vn)
    if shape == "ellipse":
        return np.sqrt(un * un + vn * vn)
    if shape == "rectangle":
        return np.maximum(au, av)
    if shape == "triangle":
        return np.maximum(av, 2.0 * au - vn)
    if shape == "star":
        r = np.sqrt(un * un + vn * vn)
        return r / (0.6 + 0.4 * np.cos(5.0 * np.arctan2(vn, un)))
    if shape == "ring":
        r = np.sqrt(un * un + vn * vn)
        return np.maximum(r, 1.55 - r)
    if shape == "cross":
        return np.minimum(np.maximum(au / 0.35, av), np.maximum(av / 0.35, au))
    if shape == "diamond":
        return au + av
    return np.maximum(av, au - 0.85 * av + 0.85)  # hourglass


def _texture(style: _Style, u: np.ndarray, v: np.ndarray, vn: np.ndarray, phase: float) -> np.ndarray:
    """Texture weight in [0, 1] over object pixel coordinates ``u, v`` (soft edges, no aliasing mush)."""
    f, c, s = np.float32(style.freq), np.float32(np.cos(style.angle)), np.float32(np.sin(style.angle))
    x, y = u * c + v * s, -u * s + v * c
    if style.texture == "stripes":
        t = np.sin(f * x + phase)
    elif style.texture == "checker":
        t = np.sin(f * x + phase) * np.sin(f * y + phase)
    elif style.texture == "dots":
        t = np.cos(f * x + phase) * np.cos(f * y + phase) - 0.4
    elif style.texture == "waves":
        t = np.sin(f * x + 2.0 * np.sin(0.5 * f * y) + phase)
    elif style.texture == "rings":
        t = np.sin(f * np.sqrt(x * x + y * y) + phase)
    else:
        return np.clip(0.5 * (vn + 1.0), 0.0, 1.0)
    return np.clip(2.0 * t + 0.5, 0.0, 1.0)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def draw_item(
    style: _Style, colour: np.ndarray, rng: np.random.Generator, size: tuple[int, int]
) -> np.ndarray:
    """One (h, w, 3) uint8 product shot: the class's objects in ``colour`` on a light, noisy background."""
    h, w = size
    yy, xx = _grid(h, w)
    f32 = np.float32
    bg = (rng.uniform(222.0, 252.0) + rng.normal(0.0, 3.0, 3)).astype(f32)
    img = bg + (yy * f32(rng.uniform(-12, 12) / h))[..., None]
    base = (colour + rng.normal(0.0, 14.0, 3)).astype(f32)
    scale = rng.uniform(0.75, 1.15) * min(h, w) * 0.36
    cy, cx = h / 2 + rng.uniform(-0.09, 0.09) * h, w / 2 + rng.uniform(-0.1, 0.1) * w
    theta = style.rotation + rng.normal(0.0, 0.18)
    cos, sin = f32(np.cos(theta)), f32(np.sin(theta))
    phase = f32(rng.uniform(0.0, 2 * np.pi))
    # Each layout is a list of (dy, dx, relative scale) object placements.
    offsets = {"single": [(0.0, 0.0, 1.0)], "strap": [(0.2, 0.0, 0.9)],
               "pair_h": [(0.0, -0.5, 0.55), (0.0, 0.5, 0.55)],
               "pair_v": [(-0.6, 0.0, 0.55), (0.6, 0.0, 0.55)]}[style.layout]
    for dy, dx, rel in offsets:
        b = f32(scale * rel)
        a = f32(b * style.aspect)
        u0, v0 = xx - f32(cx + dx * scale * 1.1), yy - f32(cy + dy * scale * 1.3)
        u, v = u0 * cos + v0 * sin, v0 * cos - u0 * sin
        d = _shape_distance(style.shape, u / a, v / b)
        alpha = np.clip((1.0 - d) * min(a, b) + 0.5, 0.0, 1.0)[..., None]
        t = _texture(style, u, v, v / b, phase)[..., None] * f32(style.strength)
        fill = base + (style.accent - base) * t
        img = img + (fill - img) * alpha
    if style.layout == "strap":
        # A bag-like strap: an arc above the object.
        top = cy - 0.35 * scale
        r = np.sqrt((xx - f32(cx)) ** 2 + (yy - f32(top)) ** 2) / f32(scale * 0.6)
        strap = ((np.abs(r - 1.0) < 0.09) & (yy < top))[..., None]
        img = np.where(strap, base * f32(0.7), img)
    img += rng.standard_normal(img.shape, dtype=f32) * f32(rng.uniform(4.0, 10.0))
    return np.clip(img, 0.0, 255.0).astype(np.uint8)


def _weighted(rng: np.random.Generator, table: tuple[tuple, ...], n: int) -> list:
    values, p = zip(*table)
    p = np.asarray(p, dtype=np.float64)
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def _display_name(
    brand: str, gender: str, colours: list[str], article: str, n_commas: int, style: str
) -> str:
    if n_commas == 1:
        colour = f"{colours[0]}, {colours[1]} and {colours[2]}"
    elif n_commas == 2:
        colour = f"{colours[0]}, {colours[1]}, {colours[2]}"
    else:
        colour = colours[0]
    return " ".join(part for part in (brand, gender, colour, style, article) if part)


@dataclass(frozen=True)
class _Plan:
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


def _split_years(
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
        n_train = int(np.clip(round(rng.uniform(0.45, 0.65) * s), 1, s - 1))
        n_train = 0 if k in test_only else s if k in train_only else n_train
        rows = starts[k] + rng.permutation(s)
        is_train[rows[:n_train]] = True
        reserved += rows[:n_train][:1].tolist() + rows[n_train:][:1].tolist()
    return is_train, reserved, test_only, train_only


def _pick_traps(label: np.ndarray, reserved: list[int], rng: np.random.Generator) -> dict[str, list[int]]:
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


def _plan(n_classes: int, n_images: int, seed: int, traps: bool) -> _Plan:
    rng = np.random.default_rng([seed, _META])
    classes = choose_classes(n_classes, seed)
    sizes = class_sizes(n_classes, n_images)
    label = np.repeat(np.arange(n_classes), sizes)
    is_train, reserved, test_only, train_only = _split_years(sizes, rng)
    train_years, test_years = _weighted(rng, _TRAIN_YEARS, n_images), _weighted(rng, _TEST_YEARS, n_images)
    years = [str(train_years[i] if is_train[i] else test_years[i]) for i in range(n_images)]
    seasons = _weighted(rng, _SEASONS, n_images)
    ids = 1000 + rng.choice(max(59_000, 4 * n_images), size=n_images, replace=False)
    colour_names = list(_COLOURS)
    palettes = [rng.choice(len(colour_names), size=3, replace=False) for _ in range(n_classes)]
    trap_rows = _pick_traps(label, reserved, rng) if traps else {}
    for i in trap_rows.get("empty_year", []):
        years[i] = ""
    for i in trap_rows.get("empty_season", []):
        seasons[i] = ""
    commas = {i: 1 for i in trap_rows.get("comma1", [])} | {i: 2 for i in trap_rows.get("comma2", [])}

    tax = taxonomy()
    lines, base_colours = [], []
    for i in range(n_images):
        article = classes[label[i]]
        master, sub, genders, usage = tax[article]
        g_p = 0.5 ** np.arange(len(genders))  # the first listed gender is the most common
        gender = _GENDERS[genders[int(rng.choice(len(genders), p=g_p / g_p.sum()))]]
        # A class has a usual palette, as real products do (Lipstick: reds and pinks).
        own = palettes[label[i]] if rng.uniform() < 0.75 else rng.choice(len(_COLOURS), 3, replace=False)
        colours = [colour_names[j] for j in rng.permutation(own)]
        if rng.uniform() >= 0.9:
            usage = ("Casual", "Sports", "Formal", "Smart Casual")[int(rng.integers(4))]
        brand = _BRANDS[master][int(rng.integers(len(_BRANDS[master])))]
        style_word = _STYLE_WORDS[int(rng.integers(len(_STYLE_WORDS)))] if rng.uniform() < 0.4 else ""
        name = _display_name(brand, gender, colours, article, commas.get(i, 0), style_word)
        base_colours.append(colours[0])
        lines.append(
            f"{ids[i]},{gender},{master},{sub},{article},{colours[0]},{seasons[i]},{years[i]},{usage},{name}")
    return _Plan(classes, sizes, label, ids, lines, base_colours, test_only, train_only, trap_rows,
                 order=rng.permutation(n_images))  # the real file is sorted by neither id nor class


def _prepare_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        if not (out / "SYNTHETIC").is_file():
            raise FileExistsError(
                f"{out} is not empty and holds no SYNTHETIC marker, so it is not an earlier synthetic "
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
    ``out`` (Kaggle layout; see the module docstring). ``size`` is (height, width) of the JPEGs.

    Raises ValueError on bad arguments and FileExistsError when ``out`` is a non-empty folder that is not
    an earlier synthetic dataset (earlier synthetic output is regenerated in place).
    """
    start = time.perf_counter()
    out, size = Path(out), tuple(size)
    _check_args(out, n_classes, n_images, seed, size)  # type: ignore[arg-type]
    params = {"synthetic": True, "generator": "fewshot.data.synth", "generator_version": GENERATOR_VERSION,
              "seed": int(seed), "n_classes": int(n_classes), "n_images": int(n_images),
              "size_hw": [int(s) for s in size], "traps": bool(traps)}
    plan = _plan(n_classes, n_images, seed, traps)

    # The marker goes first so an interrupted run is recognised (and regenerated) as our own output.
    _prepare_out(out)
    atomic_write_json(out / "SYNTHETIC", {**params, "complete": False})
    styles = [_class_style(seed, k) for k in range(n_classes)]
    skip = set(plan.traps.get("missing_image", []))
    for i in tqdm(range(n_images), desc="synthetic images", unit="img", disable=not progress):
        if i in skip:
            continue
        colour = np.asarray(_COLOURS[plan.base_colours[i]], dtype=np.float32)
        item_rng = np.random.default_rng([seed, _ITEM, int(plan.ids[i])])
        pixels = draw_item(styles[plan.label[i]], colour, item_rng, size)  # type: ignore[arg-type]
        Image.fromarray(pixels, "RGB").save(out / "images" / f"{plan.ids[i]}.jpg", format="JPEG", quality=90)
    atomic_write_text(out / "styles.csv", HEADER + "\n" + "".join(plan.lines[i] + "\n" for i in plan.order))
    atomic_write_text(out / "README.md", _readme(params, plan.classes, plan.sizes))
    atomic_write_json(out / "SYNTHETIC", {**params, "complete": True})

    def as_ids(*names: str) -> tuple[int, ...]:
        return tuple(sorted(int(plan.ids[i]) for name in names for i in plan.traps.get(name, [])))

    return SynthReport(
        root=out, styles_csv=out / "styles.csv", images_dir=out / "images", readme=out / "README.md",
        marker=out / "SYNTHETIC", n_rows=n_images, n_images=n_images - len(skip), n_missing_images=len(skip),
        classes=tuple(plan.classes), class_sizes=tuple(int(s) for s in plan.sizes),
        test_only_classes=tuple(plan.classes[k] for k in sorted(plan.test_only)),
        train_only_classes=tuple(plan.classes[k] for k in sorted(plan.train_only)),
        comma_ids=as_ids("comma1", "comma2"), missing_image_ids=as_ids("missing_image"),
        empty_year_ids=as_ids("empty_year"), empty_season_ids=as_ids("empty_season"),
        seconds=time.perf_counter() - start,
    )


def _readme(params: dict, classes: list[str], sizes: np.ndarray) -> str:
    table = "\n".join(f"| {k + 1} | {name} | {int(n)} |" for k, (name, n) in enumerate(zip(classes, sizes)))
    return (
        "# SYNTHETIC dataset - not real product data\n\n"
        f"Generated by `fewshot.data.synth` version {GENERATOR_VERSION} (`fewshot synth`). Every result "
        "computed from this folder is a result on SYNTHETIC data and must say so.\n\n"
        "Layout as the Kaggle \"Fashion Product Images (Small)\" download: `styles.csv` + `images/<id>.jpg`, "
        "with the same parsing traps (unquoted commas in productDisplayName, rows without an image, an empty "
        "year, empty seasons). Images are procedurally drawn class-specific shapes and textures.\n\n"
        f"Parameters (also in `SYNTHETIC` as JSON):\n\n```json\n{json.dumps(params, indent=2)}\n```\n\n"
        "Classes by size (styles.csv rows, including rows without an image):\n\n"
        f"| rank | articleType | rows |\n|---|---|---|\n{table}\n"
    )


__all__ = [
    "HEADER", "SynthReport", "choose_classes", "class_lists", "class_sizes", "draw_item", "taxonomy",
    "write_synthetic",
]
