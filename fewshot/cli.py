"""The ``fewshot`` command: ``summary``, ``cache`` (build, --list, --prune), ``synth`` and ``weights`` subcommands.

A mistake the user can fix (a bad path, a malformed styles.csv row, a bad option value) prints one line,
``fewshot: error: ...``, and exits with code 2; ``--debug`` (or ``FEWSHOT_DEBUG=1``) adds the traceback. Any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fewshot.images.cache_admin import CacheEntry, delete_entries, human_bytes, list_caches, run_use, select_prunable
from fewshot.utils.errors import UserError, run_cli

if TYPE_CHECKING:  # the data layer imports torch: loaded only by the subcommands that need it
    import numpy as np

    from fewshot.data.cache import ImageCache
    from fewshot.data.catalog import Catalog

DATA_HELP = ("the dataset (default: $FEWSHOT_DATA): a folder holding styles.csv and images/ (the Kaggle layout), "
             "an image folder with one subfolder per class (or train/ and test/ holding them), or a CSV manifest "
             "with columns path,label (optional split, text, others); make a synthetic one with "
             "`fewshot synth --out DIR`")
DEBUG_HELP = "on an error, show the full traceback too (also FEWSHOT_DEBUG=1)"
SKIP_HELP = ("leave malformed rows of styles.csv or of a manifest out (each is reported) instead of stopping at "
             "the first")


def parse_size(text: str) -> tuple[int, int]:
    """``"80x60"`` -> (80, 60), height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HEIGHTxWIDTH, e.g. 80x60; got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def _int_at_least(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
        return value
    parse.__name__ = f"integer >= {least}"  # argparse names the type by it in "invalid ... value" messages
    return parse


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, e.g. 30 or 0.5; got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0 days, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are :class:`UserError`: one ``fewshot: error:`` line through
    ``run_cli`` instead of argparse's usage block (subcommand parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def get_args_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a --debug given before the subcommand.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    parser = _Parser(prog="fewshot", description=__doc__, parents=[common],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `fewshot COMMAND --help` lists its options")
    positive = _int_at_least(1)

    p = sub.add_parser("summary", help="per-class table of a protocol: counts, roles, exclusions", parents=[common],
                       description="Per-class table of a protocol and its totals. The number of corrupt images "
                                   "and the groups of pixel-identical images come from an up-to-date image cache of "
                                   "the folder (`fewshot cache`), if any; without one they are reported as not "
                                   "checked (null in --json) and the counts are not deduplicated. With the cache, "
                                   "copies are dropped by default (transfer: test images whose copy is a train "
                                   "image; episodic: all but the first image of each group); --no-dedupe keeps "
                                   "them.")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--protocol", choices=("transfer", "episodic"), default="transfer",
                   help="transfer: head/tail classes, train/test split (Kaggle: even/odd years); episodic: "
                        "background/evaluation classes (Kaggle: the shipped lists) (default: transfer)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--n-head", type=positive, default=20, help="transfer: number of head classes (default 20)")
    p.add_argument("--min-train", type=positive, default=1,
                   help="transfer: fewest train images of a tail class (default 1)")
    p.add_argument("--min-images", type=positive, default=20,
                   help="episodic: fewest images of a kept class (default 20)")
    p.add_argument("--skip-bad-rows", action="store_true", help=SKIP_HELP)
    _protocol_options(p)
    p.add_argument("--no-dedupe", action="store_true",
                   help="keep pixel-identical copies in the counts (the protocols without duplicate groups); "
                        "the duplicate groups are still reported. By default, when an image cache exists, "
                        "transfer drops the test images whose copy is in train and episodic keeps one image "
                        "per group")

    p = sub.add_parser("cache", parents=[common],
                       help="build (or check) the decoded-image cache and time its loading; list or prune caches",
                       description="Build (or check) the decoded-image cache of --data and time its loading; "
                                   "or, with --list / --prune, show or delete the image and feature caches "
                                   "under $FEWSHOT_CACHE (default ~/.cache/fewshot).")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--size", type=parse_size, default=(80, 60), help="HEIGHTxWIDTH (default 80x60)")
    p.add_argument("--strict", action="store_true", help="fail on a corrupt image instead of excluding it")
    p.add_argument("--skip-bad-rows", action="store_true", help=SKIP_HELP)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true",
                      help="list the image, feature and text-feature caches under $FEWSHOT_CACHE: kind, size, age, "
                           "what they hold")
    what.add_argument("--prune", action="store_true",
                      help="delete the caches under $FEWSHOT_CACHE that no --keep run folder uses (with "
                           "--older-than, only those older than DAYS; with neither, every cache) and print what "
                           "was deleted and the space freed; caches are rebuilt when next needed")
    p.add_argument("--keep", nargs="+", action="extend", type=Path, default=[], metavar="RUN_DIR",
                   help="--prune: keep the image cache and features that this benchmark run folder uses "
                        "(read from its run.json; repeatable)")
    p.add_argument("--older-than", type=_days, metavar="DAYS",
                   help="--prune: delete only caches written more than DAYS days ago")
    p.add_argument("--dry-run", action="store_true", help="--prune: only list what would be deleted")

    p = sub.add_parser("synth", parents=[common],
                       help="write a deterministic synthetic long-tail dataset in the Kaggle layout")
    p.add_argument("--out", required=True, type=Path,
                   help="folder to write styles.csv, images/ and a SYNTHETIC marker into (new, empty, or an "
                        "earlier synthetic dataset, which is regenerated)")
    p.add_argument("--classes", type=positive, default=40,
                   help="number of article types, 4 to the size of the shipped class lists (default 40)")
    p.add_argument("--images", type=positive, default=3000,
                   help="number of styles.csv rows, at least 10 per class (default 3000)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="random seed; the same seed writes the same files (default 0)")

    p = sub.add_parser("weights", parents=[common],
                       help="which backbones' ImageNet weights load on this machine without network, and from where")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    return parser


def _protocol_options(p: argparse.ArgumentParser) -> None:
    """The protocols' split settings, as the benchmark config's [data] table has them."""
    p.add_argument("--split", choices=("auto", "column", "stratified"), default="auto",
                   help="transfer: auto = the layout's own split (Kaggle: even/odd years; a manifest's split "
                        "column; an image folder's train/ and test/), else a seeded stratified split; column = "
                        "--split-key with --train-values/--test-values; stratified = the seeded split always "
                        "(benchmark config: data.split)")
    p.add_argument("--split-key", default="split", help="--split column: the column to split on (default: split)")
    p.add_argument("--train-values", nargs="*", default=["train"], metavar="VALUE",
                   help="--split column: values that mean train ('even'/'odd': integers by parity; none: every "
                        "other value; default: train)")
    p.add_argument("--test-values", nargs="*", default=["test"], metavar="VALUE",
                   help="--split column: values that mean test (none: every other value; default: test)")
    p.add_argument("--test-fraction", type=_fraction, default=0.25,
                   help="the seeded stratified split: share of each class's images in test (default 0.25)")
    p.add_argument("--class-split", choices=("auto", "lists", "fraction"), default="auto",
                   help="episodic: auto = class-list files when given, else the layout's own lists (Kaggle), else "
                        "a seeded split by --background-fraction; lists; fraction (benchmark config: "
                        "data.class_split)")
    p.add_argument("--background-classes", default="", metavar="FILE",
                   help="episodic: a file with one background class per line")
    p.add_argument("--evaluation-classes", default="", metavar="FILE",
                   help="episodic: a file with one evaluation class per line")
    p.add_argument("--background-fraction", type=_fraction, default=0.6,
                   help="episodic, seeded split: share of the classes (with >= --min-images images) in background "
                        "(default 0.6)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the seeded splits; the benchmark's config seed gives the same split (default 0)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text!r}")
    return value


def _summary(args: argparse.Namespace) -> int:
    from fewshot.data.layouts import data_dir, open_dataset
    from fewshot.data.protocols import EpisodicProtocol, TransferProtocol, class_split_for, split_rule_for

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_dataset(data_dir(args.data, any_layout=True), on_bad_rows="skip" if args.skip_bad_rows else "raise")
    found = ds.recorded_corrupt()  # one up-to-date image cache, if any, for both corrupt images and copies
    if found is not None:  # count what the benchmark uses: the images that decode
        ds = ds.without_corrupt(found.bad)
    duplicates, groups = _duplicate_counts(ds, found)
    use = None if args.no_dedupe else groups
    settings = {"split": args.split, "split_key": args.split_key, "train_values": tuple(args.train_values),
                "test_values": tuple(args.test_values), "test_fraction": args.test_fraction,
                "class_split": args.class_split, "background_classes": args.background_classes,
                "evaluation_classes": args.evaluation_classes, "background_fraction": args.background_fraction,
                "seed": args.seed}
    if args.protocol == "transfer":
        protocol = TransferProtocol.from_catalog(ds, split_rule_for(ds, **settings), n_head=args.n_head,
                                                 min_train=args.min_train, duplicate_groups=use)
    else:
        protocol = EpisodicProtocol.from_catalog(ds, class_split_for(ds, **settings), min_images=args.min_images,
                                                 duplicate_groups=use)
    info = {**ds.describe(), **_corrupt_counts(ds, found), **duplicates, "deduplicated": protocol.deduplicated,
            "protocol": args.protocol, **protocol.totals()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    if ds.synthetic:
        print("SYNTHETIC DATA (written by `fewshot synth`), not the real catalogue")
    print(f"{ds.root} ({ds.layout} layout): {ds.n_rows} rows, {len(ds)} images, {len(ds.missing)} rows without "
          "an image")
    if info["n_corrupt_images"] is None:
        print(f"corrupt images: {info['corrupt_images_checked']}")
    else:
        print(f"corrupt images: {info['n_corrupt_images']} ({info['corrupt_images_checked']})"
              + ("; left out of every count below" if info["n_corrupt_images"] else ""))
    if info["n_duplicate_groups"] is None:
        print(f"duplicate images: {info['duplicates_checked']}; counts below keep every copy")
    else:
        dropped = ("test images whose copy is a train image" if args.protocol == "transfer"
                   else "all but the first image of each group")
        print(f"duplicate images: {info['n_duplicate_groups']} groups of pixel-identical images, "
              f"{info['n_duplicate_files']} files, {info['n_duplicate_within_class_groups']} groups within one "
              f"class ({info['duplicates_checked']}); counts below "
              + (f"leave out {dropped}" if protocol.deduplicated else "keep every copy (--no-dedupe)"))
    print(protocol.summary().to_string(index=False))
    print()
    for key, value in protocol.totals().items():
        if not isinstance(value, (list, dict)):
            print(f"{key}: {value}")
    return 0


def _not_checked(ds: Catalog) -> str:
    """Why a count that needs decoded images is missing, and the command that provides them."""
    return (f"not checked: no up-to-date image cache of this folder; run `fewshot cache --data {ds.root}` to decode "
            "every image")


def _corrupt_counts(ds: Catalog, found: ImageCache | None) -> dict[str, object]:
    """``n_corrupt_images`` as the latest image cache build of ``ds``'s folder (``found``, from
    ``ds.recorded_corrupt()``) found it, and where that number comes from. Only decoding finds a corrupt JPEG,
    and the summary decodes nothing: without an up-to-date cache the count is None ("not checked"), never a 0
    that claims a check."""
    if found is None:
        return {"n_corrupt_images": None, "corrupt_images_checked": _not_checked(ds)}
    return {"n_corrupt_images": len(found.bad),
            "corrupt_images_checked": f"found by the {found.size[0]}x{found.size[1]} image cache build {found.path}"}


def _duplicate_counts(ds: Catalog, found: ImageCache | None) -> tuple[dict[str, object], np.ndarray | None]:
    """The groups of pixel-identical images among ``ds``'s rows (hashing the pixels of the image cache
    ``found``; a corrupt image, absent from it, is in no group) and their counts for the report; None and
    "not checked" without a cache, as for corrupt images."""
    from fewshot.data.duplicates import align_groups, describe_duplicates, pixel_groups

    keys = ("groups", "files", "within_class_groups", "cross_class_groups")
    if found is None:
        return ({f"n_duplicate_{k}": None for k in keys}
                | {"duplicates_checked": _not_checked(ds)}), None
    groups = align_groups(pixel_groups(found.images), found.ids, ds.ids)
    counts = describe_duplicates(groups, ds.row_labels)
    return ({f"n_duplicate_{k}": counts[k] for k in keys}
            | {"duplicates_checked": f"pixels of the {found.size[0]}x{found.size[1]} image cache {found.path}"}), groups


def _cache(args: argparse.Namespace) -> int:
    if args.list or args.prune:
        return _cache_admin(args)
    for flag in ("keep", "older_than", "dry_run"):
        if getattr(args, flag):
            raise UserError(f"--{flag.replace('_', '-')} goes with --prune (see `fewshot cache --help`)")
    from fewshot.data.layouts import data_dir, open_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_dataset(data_dir(args.data, any_layout=True), warn=False,
                          on_bad_rows="skip" if args.skip_bad_rows else "raise")
        cached = ds.cached(args.size, strict=args.strict)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    verb = "built" if cached.cache.built_now else "found"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same notes again
        again = ds.cached(args.size, strict=args.strict, progress=False)
    load_s = time.perf_counter() - start
    print(f"{verb} {again.cache.path}{' (SYNTHETIC data)' if ds.synthetic else ''}: {len(again)} images of "
          f"{args.size[0]}x{args.size[1]}, "
          f"{len(again.corrupt)} corrupt; build took {again.cache.build_seconds} s, loading takes {load_s:.2f} s")
    return 0


def _cache_admin(args: argparse.Namespace) -> int:
    """``fewshot cache --list`` and ``--prune``."""
    from fewshot.data.cache import default_cache_root

    given = [f"--{name.replace('_', '-')}" for name in ("data", "strict", "skip_bad_rows") if getattr(args, name)]
    if given:
        raise UserError(f"{' '.join(given)} does not go with --list/--prune, which act on every cache under "
                        "$FEWSHOT_CACHE")
    if args.list and (args.keep or args.older_than is not None or args.dry_run):
        raise UserError("--keep, --older-than and --dry-run go with --prune, not --list")
    root = default_cache_root()
    entries = list_caches(root)
    if args.list:
        for e in entries:
            print(_entry_line(e))
        total = sum(e.n_bytes for e in entries)
        print(f"{len(entries)} cache(s), {human_bytes(total)} in all, under {root}" if entries
              else f"no caches under {root}")
        return 0
    keep = [run_use(folder) for folder in args.keep]  # read them all first: a bad --keep deletes nothing
    doomed = select_prunable(entries, keep, args.older_than)
    verb = "would delete" if args.dry_run else "deleted"
    freed = sum(e.n_bytes for e in doomed) if args.dry_run else 0
    for e in doomed:
        if not args.dry_run:
            freed += delete_entries(root, [e])
        print(f"{verb} {_entry_line(e)}")
    kept = len(entries) - len(doomed)
    print(f"{verb} {len(doomed)} cache(s), {'would free' if args.dry_run else 'freed'} {human_bytes(freed)}; "
          f"kept {kept} under {root}")
    return 0


def _entry_line(entry: CacheEntry) -> str:
    state = " [being written]" if entry.building else ""
    return (f"{entry.kind:<8} {human_bytes(entry.n_bytes):>9} {entry.age_days():7.1f} days  {entry.path}{state}  "
            f"{entry.description}")


def _synth(args: argparse.Namespace) -> int:
    from fewshot.data.synth import write_synthetic

    report = write_synthetic(args.out, n_classes=args.classes, n_images=args.images, seed=args.seed)
    print(f"wrote SYNTHETIC dataset to {args.out}: {report}")
    return 0


def _weights(args: argparse.Namespace) -> int:
    from fewshot.models.backbones import imagenet_availability

    rows = imagenet_availability()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if not row["imagenet"]:
            print(f"{row['backbone']:<20} none     {row['note']}")
            continue
        where = f"{row['file'] or '-'}" + (f"  ({row['note']})" if row["note"] else "")
        print(f"{row['backbone']:<20} {'offline' if row['offline'] else 'missing':<8} {where}  [{row['source']}]")
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return {"summary": _summary, "cache": _cache, "synth": _synth, "weights": _weights}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``fewshot`` console command; its exit code (2 for a user error, printed as one line)."""
    return run_cli(_main, argv, prog="fewshot")


if __name__ == "__main__":
    sys.exit(main())
