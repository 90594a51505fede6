"""What the synthetic rows are made of: the articleType taxonomy, brands, colours, class lists, class sizes
and the choice of classes. Nothing here draws pixels or writes files."""
from __future__ import annotations

from importlib import resources

import numpy as np

from fewshot.utils.errors import UserError

# Stream tags keep the metadata, per-class style, per-image and class-choice generators independent.
META, STYLE, ITEM, CLASSES, NAMES = 0, 1, 2, 3, 4

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
GENDERS = {"M": "Men", "W": "Women", "U": "Unisex", "B": "Boys", "G": "Girls"}
BRANDS = {
    "Apparel": ("Roadster", "Wrangler", "Arrow", "Fabindia", "Locomotive", "Jealous 21"),
    "Footwear": ("Bata", "Woodland", "Catwalk", "Red Tape", "Carlton London", "Puma"),
    "Accessories": ("Fastrack", "Titan", "Baggit", "Lino Perros", "Hidesign", "Rocia"),
    "Personal Care": ("Lakme", "Maybelline", "Colorbar", "Revlon", "Elle 18", "Davidoff"),
    "Sporting Goods": ("Nike", "Spalding", "Nivia"),
    "Free Items": ("Myntra", "Reebok", "Puma"),
}
STYLE_WORDS = ("Solid", "Printed", "Classic", "Textured", "Basic", "Casual")
USAGES = ("Casual", "Sports", "Formal", "Smart Casual")
# baseColour -> RGB; no White/Off White: they would vanish on the light background.
COLOURS = {
    "Black": (25, 25, 25), "Navy Blue": (30, 40, 90), "Blue": (40, 90, 200), "Grey": (128, 128, 128),
    "Red": (200, 30, 40), "Green": (40, 140, 60), "Brown": (120, 70, 30), "Pink": (235, 120, 170),
    "Purple": (120, 50, 150), "Yellow": (235, 200, 30), "Beige": (215, 190, 150), "Maroon": (120, 20, 35),
    "Olive": (110, 110, 40), "Orange": (240, 130, 30), "Silver": (175, 175, 185), "Gold": (200, 160, 60),
    "Teal": (20, 130, 130), "Magenta": (200, 30, 150), "Cream": (240, 225, 190), "Charcoal": (60, 60, 65),
}


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


def check_n_classes(n_classes: int) -> None:
    n_max = sum(len(names) for names in class_lists())
    if not 4 <= n_classes <= n_max:
        raise UserError(
            f"n_classes={n_classes} is out of range: the synthetic classes are real articleTypes from the "
            f"episodic background/evaluation lists, so 4 <= n_classes <= {n_max}; pick a value in that range "
            "(fewshot synth --classes; benchmark config: data.synth_classes)"
        )


def choose_classes(n_classes: int, seed: int) -> list[str]:
    """``n_classes`` real articleTypes in rank order (largest first), ~60% background / 40% evaluation,
    interleaved so both lists reach every part of the frequency range (head, mid tail, rare tail)."""
    check_n_classes(n_classes)
    rng = np.random.default_rng([seed, CLASSES])
    background, evaluation = class_lists()
    n_ev = max(n_classes - len(background), min(len(evaluation), round(0.4 * n_classes)))
    n_bg = n_classes - n_ev
    bg = [background[i] for i in rng.permutation(len(background))[:n_bg]]
    ev = [evaluation[i] for i in rng.permutation(len(evaluation))[:n_ev]]
    # Even spacing: rank of the j-th member of a list of m among n is about (j + 0.5) * n / m.
    keyed = [((j + 0.5) / n_bg, 0, name) for j, name in enumerate(bg)]
    keyed += [((j + 0.5) / n_ev, 1, name) for j, name in enumerate(ev)]
    return [name for *_, name in sorted(keyed)]


def display_name(brand: str, gender: str, colours: list[str], article: str, n_commas: int, style: str) -> str:
    """``productDisplayName``; ``n_commas`` of 1 or 2 reproduces the real file's unquoted commas
    (from ``colours``, three baseColour names)."""
    first, second, third = colours
    colour = {0: first, 1: f"{first}, {second} and {third}", 2: f"{first}, {second}, {third}"}[n_commas]
    return " ".join(part for part in (brand, gender, colour, style, article) if part)


def line_word(label: int) -> str:
    """A made-up product-line word of class ``label`` ("Zorvo"), standing where real titles name a line
    ("Puma Men Ferrari Scuderia") instead of the article type: informative, but not the class word."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    a, b = divmod(label, len(vowels))
    c, d = divmod(a, len(consonants))
    return f"{consonants[d].upper()}{vowels[b]}r{consonants[c % len(consonants)]}o"
