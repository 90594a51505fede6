"""Procedural product shots: each class has a shape family, texture, layout, aspect, rotation and accent
colour; each item varies colour, scale, position, rotation, texture phase, background and noise, so a
raw-pixel nearest-centroid classifier is well above chance but far from perfect."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from fewshot.data.synth.catalog import COLOURS, STYLE

SHAPES = ("ellipse", "rectangle", "triangle", "star", "ring", "cross", "diamond", "hourglass")
TEXTURES = ("stripes", "checker", "dots", "waves", "rings", "gradient")
# Layout -> object placements (dy, dx, relative scale); the key order is the order styles draw from.
PLACEMENTS = {
    "single": ((0.0, 0.0, 1.0),),
    "pair_h": ((0.0, -0.5, 0.55), (0.0, 0.5, 0.55)),
    "pair_v": ((-0.6, 0.0, 0.55), (0.6, 0.0, 0.55)),
    "strap": ((0.2, 0.0, 0.9),),
}
LAYOUTS = tuple(PLACEMENTS)


@dataclass(frozen=True)
class Style:
    """How every item of one class is drawn."""

    shape: str
    texture: str
    layout: str
    freq: float  # texture angular frequency, radians per pixel
    angle: float  # texture orientation, radians
    rotation: float  # base rotation of the object, radians
    aspect: float  # half-width / half-height of one object
    accent: np.ndarray  # (3,) float RGB mixed in by the texture
    strength: float  # how much of the accent the texture mixes in


def class_styles(seed: int, n_classes: int) -> list[Style]:
    """One :class:`Style` per class rank, each from its own ``(seed, STYLE, rank)`` generator."""
    # A seeded permutation of the 48 (shape, texture) pairs: no two of the first 48 ranks share both.
    order = np.random.default_rng([seed, STYLE]).permutation(len(SHAPES) * len(TEXTURES))
    accents = np.array(list(COLOURS.values()), dtype=np.float32)
    styles = []
    for rank in range(n_classes):
        rng = np.random.default_rng([seed, STYLE, rank])
        combo = int(order[rank % len(order)])
        styles.append(Style(
            shape=SHAPES[combo % len(SHAPES)],
            texture=TEXTURES[combo // len(SHAPES)],
            layout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
            freq=float(rng.uniform(0.35, 1.1)),
            angle=float(rng.uniform(0.0, np.pi)),
            rotation=float(rng.uniform(-0.5, 0.5)),
            aspect=float(rng.uniform(0.55, 1.3)),
            accent=accents[int(rng.integers(len(accents)))],
            strength=float(rng.uniform(0.45, 0.8)),
        ))
    return styles


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


def _texture(style: Style, u: np.ndarray, v: np.ndarray, vn: np.ndarray, phase: float) -> np.ndarray:
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
    style: Style, colour: np.ndarray, rng: np.random.Generator, size: tuple[int, int]
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
    for dy, dx, rel in PLACEMENTS[style.layout]:
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
