"""Run the benchmark: every method on both protocols, one evaluator, one report.

    python -m benchmarks.run --config cpu [--data DIR] [--out DIR] [--device auto] [key=value ...]
    python -m benchmarks.run --resume runs/cpu-20261129-120000 [evaluation.episodes=2000]
    python -m benchmarks.run --config cpu --reuse runs/cpu-20261129-120000 'methods=[...]'

Writes config.resolved.toml, run.json, per_class.csv, summary.json, summary.md and the plots into the
output folder (default ``runs/<config>-<timestamp>/``). Kill it at any point: ``--resume DIR`` continues
from the last finished epoch or phase; overrides given with it may change what is still to compute
(evaluation settings, methods), never a finished training phase. A crash is recorded in run.json
(``"status": "failed"`` with the error); a resume refused before it starts (other images, another config,
settings the data cannot hold) leaves the run's record as it was. Every setting is checked against the data
before any phase runs (:mod:`benchmarks.protocols.feasibility`): refused one line each, or fitted to it with
``data.fit_to_data``; what the data left out is printed once and listed in run.json.

Several processes (GPUs, machines): the same command under torchrun, e.g.

    torchrun --nproc_per_node=4 -m benchmarks.run --config gpu --out runs/gpu4
    torchrun --nproc_per_node=4 -m benchmarks.run --resume runs/gpu4

Every rank runs every phase (training with DistributedDataParallel, feature extraction and episodic
evaluation sharded); rank 0 alone writes the run folder and logs (see README, "Multiple GPUs / machines").
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

import benchmarks.builtin  # noqa: F401  (registers the built-in embeddings and methods)
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.engine.feasibility import change_words, merge_adjustments
from benchmarks.engine.names import subset_summary
from benchmarks.engine.phases import PhaseStore
from benchmarks.engine.validation import validation_groups
from benchmarks.protocols.episodic import run_episodic
from benchmarks.protocols.feasibility import settle
from benchmarks.protocols.transfer import run_transfer
from benchmarks.registry.embeddings import embeddings
from benchmarks.registry.methods import configured_methods, declaration, get_method, resolve_config
from benchmarks.reports.plots import write_plots
from benchmarks.reports.predictions import FILE as PREDICTIONS
from benchmarks.reports.predictions import collect as collect_predictions
from benchmarks.reports.predictions import write as write_predictions
from benchmarks.reports.statistics import run_statistics
from benchmarks.reports.summary import per_class_table, summary_dict, write_results
from fewshot.config import apply_overrides, load_config, to_dict, to_toml
from fewshot.data.catalog import Catalog
from fewshot.data.duplicates import dataset_groups, describe_duplicates
from fewshot.data.layouts import data_dir, open_dataset
from fewshot.data.leftout import LeftOut, left_out
from fewshot.data.protocols import (
    EpisodicProtocol,
    TransferProtocol,
    class_split_for,
    protocol_digest,
    row_roles,
    split_rule_for,
)
from fewshot.data.synth import write_synthetic
from fewshot.utils import distributed
from fewshot.utils.device import resolve_device
from fewshot.utils.errors import UserError, run_cli
from fewshot.utils.io import atomic_write_json, atomic_write_text
from fewshot.utils.resume import check_same_images, config_differences, recorded_roots, refuse_changes
from fewshot.utils.runinfo import git_revision, machine_info, package_versions

CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = "cpu"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help=f"a TOML file, or the name of a shipped config in benchmarks/configs/ "
                                    f"({', '.join(sorted(c.stem for c in CONFIGS.glob('*.toml')))}); "
                                    f"default: {DEFAULT_CONFIG}")
    p.add_argument("--data", help="the dataset: a Kaggle folder (styles.csv + images/), an image folder (one "
                                  "subfolder per class, or train/ and test/ holding them) or a CSV manifest "
                                  "(columns path,label; optional split, text, others); default: $FEWSHOT_DATA. "
                                  "Given here, it also replaces a synthetic config's generated data")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<config>-<timestamp>); a folder left "
                                            "by a failed start (no finished phase) is reused")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config's device)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR with its own config "
                   "(overrides may change settings that no finished training phase depends on)")
    p.add_argument("--reuse", type=Path, metavar="DIR", action="append", default=[],
                   help="import finished phases whose inputs match from the run folder DIR (repeatable): "
                        "adding a method to a finished run computes only that method's phases")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    p.add_argument("overrides", nargs="*", help="config overrides such as stage1.epochs=2 evaluation.episodes=200")
    return p


def config_path(value: str | None) -> Path:
    """``--config``: a TOML path, or a shipped config's name (``smoke`` -> benchmarks/configs/smoke.toml)."""
    if value is None:
        path = CONFIGS / f"{DEFAULT_CONFIG}.toml"
        tqdm.write(f"no --config given: using {path} (pass --config NAME|FILE to choose)")
        return path
    path = Path(value)
    if path.is_file():
        return path
    if (CONFIGS / f"{value}.toml").is_file():
        return CONFIGS / f"{value}.toml"
    known = ", ".join(sorted(c.stem for c in CONFIGS.glob("*.toml")))
    raise UserError(f"--config {value}: no such file, and not a shipped config ({known})")


def _overrides(args: argparse.Namespace) -> list[str]:
    return [*args.overrides, *([f"device={args.device}"] if args.device else [])]


def _prepare(args: argparse.Namespace) -> tuple[BenchmarkConfig, Path, dict]:
    """The config, the output folder and the previous run record (empty for a fresh run)."""
    for source in args.reuse:
        if not (source / "phases").is_dir():
            raise UserError(f"--reuse {source}: no phases/ folder there; is it a benchmark run folder?")
    if args.resume:
        return _prepare_resume(args)
    path = config_path(args.config)
    cfg = resolve_config(load_config(BenchmarkConfig, path, _overrides(args)), str(path))
    if cfg.data.source != "synthetic" or args.data:  # a dataset that is not there: refused before a folder is made
        data_dir(args.data, any_layout=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{cfg.name}-{stamp}"
    if out.exists() and any(out.iterdir()):
        if any((out / "phases").glob("*.pt")):
            raise UserError(f"{out} holds a run with finished phases; pass --resume {out} to continue it, "
                            "or choose another --out")
        if not ((out / "config.resolved.toml").exists() or (out / "run.json").exists()):
            raise UserError(f"{out} is not empty and is not a benchmark run folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.resolved.toml", to_toml(cfg))
    return cfg, out, {}


def _prepare_resume(args: argparse.Namespace) -> tuple[BenchmarkConfig, Path, dict]:
    """The run folder's config with the overrides that change no finished training phase (others are
    refused, naming what differs), its folder and its run record."""
    out = args.resume
    if not (out / "config.resolved.toml").is_file():
        raise UserError(f"--resume {out}: no config.resolved.toml there; is it a benchmark run folder?")
    resolved = out / "config.resolved.toml"
    saved = resolve_config(load_config(BenchmarkConfig, resolved), str(resolved))
    if args.config is not None and load_config(BenchmarkConfig, config_path(args.config)).name != saved.name:
        raise UserError(f"--config {args.config} with --resume {out}: the run's config is {saved.name!r} (its "
                        "config.resolved.toml), which a resumed run keeps; drop --config, or start a fresh run with "
                        f"--config {args.config} (--reuse {out} imports the phases it can)")
    cfg = resolve_config(apply_overrides(saved, _overrides(args)), "--resume overrides")
    stale: set[str] = set()  # embeddings whose training the overrides change, directly or upstream
    for e in embeddings():  # parents come first
        if e.inputs(saved) != e.inputs(cfg) or e.upstream(saved) != e.upstream(cfg) or e.upstream(cfg) in stale:
            stale.add(e.name)
    changed = [e.phase for e in embeddings() if e.name in stale and (out / "phases" / f"{e.phase}.pt").exists()]
    diffs = config_differences(to_dict(saved), to_dict(cfg), ignore=("device",))
    if changed:
        refuse_changes(f"--resume {out}: the overrides change finished training phases ({', '.join(changed)})",
                       diffs, f"Resume without them, or start a fresh run with --reuse {out}: it recomputes "
                              "only what they change")
    if diffs:
        tqdm.write(f"resuming {out} with changed settings: {'; '.join(diffs)}")
    previous = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    return cfg, out, {**previous, "changed_on_resume": diffs}


def _dataset(cfg: BenchmarkConfig, out: Path, args: argparse.Namespace, previous: dict) -> Catalog:
    """The run's images: a synthetic config writes its data into the run folder, unless ``--data`` is given on
    the command line (or the run being resumed was started with it); else ``--data`` / $FEWSHOT_DATA, in any
    layout (:func:`fewshot.data.layouts.open_dataset`)."""
    recorded = previous.get("dataset", {})
    # A resumed run keeps its data: the synthetic data in its folder, or what --data named when it started.
    given = args.data or (recorded.get("root") if recorded.get("in_run_folder") is False else None)
    if cfg.data.source == "synthetic" and not given:
        root = out / "data"
        marker = root / "SYNTHETIC"
        if not (marker.exists() and json.loads(marker.read_text()).get("complete")):
            write_synthetic(root, n_classes=cfg.data.synth_classes, n_images=cfg.data.synth_images, seed=cfg.seed,
                            progress=not args.no_progress)
    else:
        root = data_dir(given or recorded.get("root"), any_layout=True)
    on_bad_rows = "skip" if cfg.data.skip_bad_rows else "raise"
    # warn=False: what the readers and the cache leave out is reported once, by report_left_out
    ds = open_dataset(root, warn=False, on_bad_rows=on_bad_rows).cached(cfg.data.image_size, warn=False,
                                                                        progress=not args.no_progress)
    check_same_images(previous.get("dataset", {}), ds.cache.pixels_sha256, ds.cache.key, root,
                      image_size=cfg.data.image_size, size_hint="without a data.image_size override")
    return ds


def _protocols(cfg: BenchmarkConfig, ds: Catalog, ctx: RunContext, dedupe, out: Path,
               run: dict) -> tuple[RunContext, TransferProtocol | None, EpisodicProtocol | None]:
    """The two protocols of the configured methods, by the data's split rules (``cfg.data``): recorded in
    run.json's ``dataset`` and, image by image, in ``split.csv``. A split other than the Kaggle layout's own
    is part of every phase key (with the pixels): another split of the same images is another experiment."""
    settings = cfg.data.protocol_settings(cfg.seed)
    rule, classes = split_rule_for(ds, **settings), class_split_for(ds, **settings)
    tp = TransferProtocol.from_catalog(ds, rule, n_head=cfg.data.n_head, min_train=cfg.data.min_train,
                                       duplicate_groups=dedupe) if configured_methods(cfg, "transfer") else None
    ep = EpisodicProtocol.from_catalog(ds, classes, min_images=cfg.data.min_images,
                                       duplicate_groups=dedupe) if configured_methods(cfg, "episodic") else None
    run["dataset"].update(transfer_split=rule.to_dict(), episodic_classes=classes.to_dict(),
                          in_run_folder=Path(ds.root).resolve() == (out / "data").resolve())
    if distributed.is_main():
        roles = row_roles(len(ds), tp, ep)
        roles.insert(0, "id", ds.ids)
        roles.insert(1, "path", ds.table["path"].to_numpy())
        roles.insert(2, "label", ds.row_labels)
        atomic_write_text(out / "split.csv", roles.to_csv(index=False))
    digest = protocol_digest(ds, rule, classes)
    if digest:
        ctx = dataclasses.replace(ctx, image_key=hashlib.sha256(f"{ctx.image_key};{digest}".encode()).hexdigest())
    return ctx, tp, ep


def _requested_device(args: argparse.Namespace) -> str:
    """The run's device setting, read before anything is written: under torchrun the process group's
    backend (nccl for CUDA, gloo for the CPU) depends on it."""
    if args.device:
        return args.device
    if args.resume:
        saved = args.resume / "config.resolved.toml"
        if not saved.is_file():
            raise UserError(f"--resume {args.resume}: no config.resolved.toml there; is it a benchmark run folder?")
        return apply_overrides(load_config(BenchmarkConfig, saved), _overrides(args)).device
    path = config_path(args.config) if args.config is not None else CONFIGS / f"{DEFAULT_CONFIG}.toml"
    return load_config(BenchmarkConfig, path, _overrides(args)).device


def main(args: argparse.Namespace) -> dict:
    """Run the benchmark; under torchrun (``WORLD_SIZE > 1``) as one rank of the process group it joins
    here and leaves at the end. Ranks other than 0 log nothing and write nothing to the run folder."""
    owned = distributed.launched() and not distributed.is_distributed()
    if owned:
        distributed.init(resolve_device(_requested_device(args)))
    if not distributed.is_main():
        args = argparse.Namespace(**{**vars(args), "no_progress": True})
    finished = False
    try:
        with contextlib.ExitStack() as stack:
            if not distributed.is_main():  # one log, rank 0's
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            summary = _main(args)
        finished = True
        return summary
    finally:
        if owned:  # after a failure no barrier: the other ranks may never reach it (torchrun stops them)
            distributed.shutdown(wait=finished)


def _main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    cfg, out, previous = distributed.on_main(lambda: _prepare(args))  # rank 0 makes the folder and names it
    # Start from the previous record: an attempt that fails early must not erase what the resume guard
    # checks next time (the dataset's pixel hash).
    run = {**{k: v for k, v in previous.items() if k not in ("error", "stopped", "note")},
           "config": cfg.name, "status": "starting", "seed": cfg.seed,
           "overrides": [*previous.get("overrides", []), *args.overrides],
           "started": previous.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "resumed": bool(args.resume)}
    if not previous.get("changed_on_resume"):
        run.pop("changed_on_resume", None)
    try:
        return _run(args, cfg, out, previous, run, start)
    except BaseException as err:  # noqa: BLE001 (recorded, then raised again)
        # A resume refused before it started (other images, settings the data cannot hold) changed nothing: the
        # run's record stays as it was (a finished run stays finished).
        refused = bool(args.resume) and run["status"] == "starting"
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        run.update(status=status, error=f"{type(err).__name__}: {err}",
                   stopped=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if distributed.is_main() and not refused:
            atomic_write_json(out / "run.json", run)
        raise


def _run(args: argparse.Namespace, cfg: BenchmarkConfig, out: Path, previous: dict, run: dict,
         start: float) -> dict:
    device = resolve_device(cfg.device)
    with distributed.main_first():  # rank 0 writes the synthetic data and the image cache, the others read them
        ds = _dataset(cfg, out, args, previous)
    left = left_out(ds)
    if distributed.is_main():
        report_left_out(left)
    phases = PhaseStore(out, reuse=args.reuse)
    run.update({
        "git_revision": git_revision(), "device": str(device), "machine": machine_info(device),
        "packages": package_versions(),
        "dataset": {**ds.describe(), "image_size": list(cfg.data.image_size), "image_cache_key": ds.cache.key,
                    "pixels_sha256": ds.cache.pixels_sha256,
                    "roots": recorded_roots(previous.get("dataset", {}), ds.root),
                    "left_out": [g.to_dict() for g in left]},
        "phase_seconds": phases.seconds, "reused_phases": phases.reused, "imported_phases": phases.imported,
        "phase_keys": phases.keys, "distributed": distributed.describe(),
    })
    groups = dataset_groups(ds)  # pixel-identical copies, reported either way
    dedupe = groups if cfg.data.dedupe else None
    # every setting against the data, before any phase: refused, or fitted (data.fit_to_data), one line each
    cfg, fitted = settle(cfg, ds, dedupe, pinned=given_keys([*previous.get("overrides", []), *args.overrides]),
                         copies=groups)
    run["fitted"] = merge_adjustments([*previous.get("fitted", []), *fitted])
    run["evaluation"] = to_dict(cfg.evaluation)  # the episodes' settings, for the reports
    run["status"] = "running"  # the checks passed: from here on the record says what happened
    if distributed.is_main():
        report_fitted(fitted)
        atomic_write_text(out / "config.resolved.toml", to_toml(cfg))
        atomic_write_json(out / "run.json", run)
    names = tuple(ds.names) if any(n.strip() for n in ds.names) else ()  # no text: no product-name figures
    ctx = RunContext(cfg, out, ds.images, ds.labels, ds.cache.pixels_sha256, phases, not args.no_progress, device,
                     names)
    ctx, tp, ep = _protocols(cfg, ds, ctx, dedupe, out, run)
    run["dataset"]["features_key"] = ctx.image_key  # what feature and text caches of this run are keyed by
    applied, codes = validation_groups(cfg, ds, tp, groups)
    ctx = dataclasses.replace(ctx, validation=applied, val_groups=codes)
    run["validation"] = {"rule": applied.kind, "group_key": list(applied.group_key), "fallback": applied.fallback,
                         "words": applied.describe(share=False)}
    transfer = run_transfer(ctx, tp) if tp is not None else {}
    episodic = run_episodic(ctx, ep) if ep is not None else {}
    duplicates = {**describe_duplicates(groups, ds.row_labels),
                  "dedupe": cfg.data.dedupe}
    if cfg.data.dedupe:
        duplicates.update(transfer_test_dropped=len(tp.dropped_test) if tp is not None else 0,
                          episodic_dropped=len(ep.dropped_duplicates) if ep is not None else 0)
    declared = {m: declaration(get_method(m)) for m in cfg.methods}
    predictions = collect_predictions(transfer, tp, ds.ids) if tp is not None else {}
    started = time.perf_counter()
    statistics = run_statistics(predictions, cfg.statistics, cfg.seed, {m: d["inputs"] for m, d in declared.items()})
    run["statistics_seconds"] = time.perf_counter() - started
    summary = summary_dict(transfer, episodic, tp, ds.synthetic, duplicates,
                           name_subsets=subset_summary(transfer, ctx, tp) if tp is not None else None,
                           statistics=statistics, methods=declared, validation=run["validation"])
    per_class = per_class_table(transfer, episodic, tp, ep, cfg.methods)
    run.update(status="finished", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               wall_seconds=time.perf_counter() - start)
    if args.resume:
        run["note"] = ("resumed: wall_seconds is this attempt's; phase_seconds keeps every phase's own time, "
                       "reused_phases lists those finished by an earlier attempt")
    if not distributed.is_main():  # every rank computed the results; rank 0 writes them
        return summary
    if predictions:
        write_predictions(out / PREDICTIONS, predictions)
    run["plots"] = write_plots(out, summary, per_class, f"{cfg.name}{' (SYNTHETIC)' if ds.synthetic else ''}")
    write_results(out, summary, run, per_class)
    atomic_write_json(out / "run.json", run)
    tqdm.write(f"results in {out}: summary.md, summary.json, per_class.csv, {PREDICTIONS + ', ' if predictions else ''}"
               f"run.json, {', '.join(run['plots'])}")
    return summary


def report_left_out(groups: list[LeftOut]) -> None:
    """Say once what the data left out, a line per reason (run.json's ``dataset.left_out`` lists every item)."""
    if groups:
        tqdm.write("left out of the data (every item in run.json's dataset.left_out):")
    for group in groups:
        tqdm.write(f"  {group.line()}")


def given_keys(overrides: list[str]) -> set[str]:
    """The config keys that ``key=value`` overrides set (those ``data.fit_to_data`` never changes)."""
    return {item.partition("=")[0].strip() for item in overrides if "=" in item}


def report_fitted(fitted: list[dict]) -> None:
    """Say once which settings were fitted to the data (run.json's ``fitted`` and summary.md keep them)."""
    if fitted:
        tqdm.write("fitted to the data (data.fit_to_data = true; run.json's fitted and summary.md say why):")
    for f in fitted:
        tqdm.write(f"  {change_words(f)}: {f['why']}")


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_intermixed_args(argv)), prog="benchmarks.run"))
