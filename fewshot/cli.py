"""The ``fewshot`` command: ``summary``, ``cache`` and ``synth`` subcommands."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

DATA_HELP = ("dataset folder holding styles.csv and images/ (default: $FEWSHOT_DATA); "
             "make a synthetic one with `fewshot synth --out DIR`")


def data_dir(value: str | None) -> Path:
    """``--data`` or ``$FEWSHOT_DATA``; a clear error when neither names a folder."""
    value = value or os.environ.get("FEWSHOT_DATA")
    if not value:
        raise SystemExit("fewshot: no dataset given; pass --data DIR or set FEWSHOT_DATA (download the Kaggle "
                         "'Fashion Product Images (Small)' dataset, or run `fewshot synth --out DIR`)")
    path = Path(value)
    if not (path / "styles.csv").is_file():
        raise SystemExit(f"fewshot: {path} has no styles.csv; point --data at the folder that holds "
                         "styles.csv and images/")
    return path


def parse_size(text: str) -> tuple[int, int]:
    """``"80x60"`` -> (80, 60), height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HEIGHTxWIDTH, e.g. 80x60; got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="per-class table of a protocol: counts, roles, exclusions")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--protocol", choices=("transfer", "episodic"), default="transfer")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--n-head", type=int, default=20, help="transfer: number of head classes")
    p.add_argument("--min-train", type=int, default=1, help="transfer: fewest train images of a tail class")
    p.add_argument("--min-images", type=int, default=20, help="episodic: fewest images of a kept class")
    p.add_argument("--skip-bad-rows", action="store_true", help="leave malformed styles.csv rows out (reported)")

    p = sub.add_parser("cache", help="build (or check) the decoded-image cache and time its loading")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--size", type=parse_size, default=(80, 60), help="HEIGHTxWIDTH (default 80x60)")
    p.add_argument("--strict", action="store_true", help="fail on a corrupt image instead of excluding it")

    p = sub.add_parser("synth", help="write a deterministic synthetic long-tail dataset in the Kaggle layout")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--classes", type=int, default=40)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    return parser


def _summary(args: argparse.Namespace) -> int:
    from fewshot.data.dataset import FashionProducts
    from fewshot.data.protocols import EpisodicProtocol, TransferProtocol

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FashionProducts(data_dir(args.data), on_bad_rows="skip" if args.skip_bad_rows else "raise")
    if args.protocol == "transfer":
        protocol = TransferProtocol.from_styles(ds.styles, n_head=args.n_head, min_train=args.min_train)
    else:
        protocol = EpisodicProtocol.from_styles(ds.styles, min_images=args.min_images)
    info = {**ds.describe(), "protocol": args.protocol, **protocol.totals()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    if ds.synthetic:
        print("SYNTHETIC DATA (written by `fewshot synth`), not the real catalogue")
    print(f"{ds.root}: {ds.n_rows} rows, {len(ds)} images, {len(ds.missing)} rows without an image")
    print(protocol.summary().to_string(index=False))
    print()
    for key, value in protocol.totals().items():
        if not isinstance(value, (list, dict)):
            print(f"{key}: {value}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from fewshot.data.dataset import FashionProducts

    ds = FashionProducts(data_dir(args.data), warn=False)
    cached = ds.cached(args.size, strict=args.strict)
    verb = "built" if cached.cache.built_now else "found"
    start = time.perf_counter()
    again = ds.cached(args.size, strict=args.strict, progress=False)
    load_s = time.perf_counter() - start
    print(f"{verb} {again.cache.path}{' (SYNTHETIC data)' if ds.synthetic else ''}: {len(again)} images of "
          f"{args.size[0]}x{args.size[1]}, "
          f"{len(again.corrupt)} corrupt; build took {again.cache.build_seconds} s, loading takes {load_s:.2f} s")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from fewshot.data.synth import write_synthetic

    report = write_synthetic(args.out, n_classes=args.classes, n_images=args.images, seed=args.seed)
    print(f"wrote SYNTHETIC dataset to {args.out}: {report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return {"summary": _summary, "cache": _cache, "synth": _synth}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
