"""Run the benchmark: every method on both protocols, one evaluator, one report.

    python -m benchmarks.run --config benchmarks/configs/cpu.toml [--data DIR] [--out DIR] [--device auto]
    python -m benchmarks.run --resume runs/cpu-20261129-120000

Writes config.resolved.toml, run.json, per_class.csv, summary.json, summary.md and the plots into the
output folder (default ``runs/<config>-<timestamp>/``). Kill it at any point: ``--resume DIR`` continues
from the last finished epoch or phase.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from benchmarks.config import BenchmarkConfig
from benchmarks.context import RunContext
from benchmarks.episodic import run_episodic
from benchmarks.phases import PhaseStore
from benchmarks.plots import write_plots
from benchmarks.report import per_class_table, summary_dict, write_results
from benchmarks.transfer import run_transfer
from fewshot.cli import data_dir
from fewshot.config import load_config, to_toml
from fewshot.data.dataset import FashionProducts
from fewshot.data.protocols import EpisodicProtocol, TransferProtocol
from fewshot.data.synth import write_synthetic
from fewshot.utils.device import resolve_device
from fewshot.utils.io import atomic_write_json, atomic_write_text
from fewshot.utils.runinfo import git_revision, machine_info, package_versions


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=Path("benchmarks/configs/cpu.toml"))
    p.add_argument("--data", help="dataset folder (default: $FEWSHOT_DATA); ignored by synthetic configs")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<config>-<timestamp>)")
    p.add_argument("--device", help="auto, cpu or cuda (overrides the config's device)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR with its own config")
    p.add_argument("--reuse", type=Path, metavar="DIR", action="append", default=[],
                   help="import finished phases whose inputs match from the run folder DIR (repeatable): "
                        "adding a method to a finished run computes only that method's phases")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    p.add_argument("overrides", nargs="*", help="config overrides such as stage1.epochs=2 evaluation.episodes=200")
    return p


def _prepare(args: argparse.Namespace) -> tuple[BenchmarkConfig, Path, dict]:
    """The config, the output folder and the previous run record (empty for a fresh run)."""
    if args.resume:
        out = args.resume
        if not (out / "config.resolved.toml").is_file():
            raise SystemExit(f"--resume {out}: no config.resolved.toml there; is it a benchmark run folder?")
        if args.overrides:
            raise SystemExit("--resume continues a run with its own config; drop the overrides "
                             f"({' '.join(args.overrides)}) or start a fresh run")
        device = [f"device={args.device}"] if args.device else []
        cfg = load_config(BenchmarkConfig, out / "config.resolved.toml", device)
        previous = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        return cfg, out, previous
    cfg = load_config(BenchmarkConfig, args.config, [*args.overrides, *([f"device={args.device}"] if args.device else [])])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{cfg.name}-{stamp}"
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass --resume {out} to continue that run, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.resolved.toml", to_toml(cfg))
    return cfg, out, {}


def _dataset(cfg: BenchmarkConfig, out: Path, args: argparse.Namespace, previous: dict) -> FashionProducts:
    if cfg.data.source == "synthetic":
        root = out / "data"
        marker = root / "SYNTHETIC"
        if not (marker.exists() and json.loads(marker.read_text()).get("complete")):
            write_synthetic(root, n_classes=cfg.data.synth_classes, n_images=cfg.data.synth_images, seed=cfg.seed,
                            progress=not args.no_progress)
    else:
        root = data_dir(args.data or previous.get("dataset", {}).get("root"))
    ds = FashionProducts(root, warn=False).cached(cfg.data.image_size, progress=not args.no_progress)
    # Pixels, not the cache key: a fresh copy of the same dataset has new modification times (a new key)
    # but the same pictures, and may resume. Runs recorded before pixel hashes fall back to the key.
    recorded = previous.get("dataset", {})
    field, current = ("pixels_sha256", ds.cache.pixels_sha256) if "pixels_sha256" in recorded else \
        ("image_cache_key", ds.cache.key)
    if field in recorded and recorded[field] != current:
        raise SystemExit(f"the images at {root} changed since this run started ({field} {current[:12]} != "
                         f"{recorded[field][:12]}); results would mix two datasets. Start a fresh run.")
    return ds


def main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    cfg, out, previous = _prepare(args)
    ds = _dataset(cfg, out, args, previous)
    device = resolve_device(cfg.device)
    for source in args.reuse:
        if not (source / "phases").is_dir():
            raise SystemExit(f"--reuse {source}: no phases/ folder there; is it a benchmark run folder?")
    # Phase files written before phases had keys are trusted only when resuming their own folder.
    phases = PhaseStore(out, reuse=args.reuse, trust_unkeyed=bool(args.resume))
    run = {
        "config": cfg.name, "status": "running", "seed": cfg.seed, "git_revision": git_revision(),
        "started": previous.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": bool(previous), "device": str(device), "machine": machine_info(device),
        "packages": package_versions(),
        "dataset": {**ds.describe(), "image_size": list(cfg.data.image_size), "image_cache_key": ds.cache.key,
                    "pixels_sha256": ds.cache.pixels_sha256},
        "phase_seconds": phases.seconds, "reused_phases": phases.reused, "imported_phases": phases.imported,
        "phase_keys": phases.keys,
    }
    atomic_write_json(out / "run.json", run)
    ctx = RunContext(cfg, out, ds.images, ds.labels, ds.cache.pixels_sha256, phases, not args.no_progress, device)
    tp = ep = None
    transfer: dict = {}
    episodic: dict = {}
    if ctx.methods("transfer"):
        tp = TransferProtocol.from_styles(ds.styles, n_head=cfg.data.n_head, min_train=cfg.data.min_train)
        transfer = run_transfer(ctx, tp)
    if ctx.methods("episodic"):
        ep = EpisodicProtocol.from_styles(ds.styles, min_images=cfg.data.min_images)
        episodic = run_episodic(ctx, ep)
    summary = summary_dict(transfer, episodic, tp, ds.synthetic)
    per_class = per_class_table(transfer, episodic, tp, ep, cfg.methods)
    run.update(status="finished", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               wall_seconds=time.perf_counter() - start)
    if previous:
        run["note"] = ("resumed: wall_seconds is this attempt's; phase_seconds keeps every phase's own time, "
                       "reused_phases lists those finished by an earlier attempt")
    run["plots"] = write_plots(out, summary, per_class, f"{cfg.name}{' (SYNTHETIC)' if ds.synthetic else ''}")
    write_results(out, summary, run, per_class)
    atomic_write_json(out / "run.json", run)
    tqdm.write(f"results in {out}: summary.md, summary.json, per_class.csv, run.json, {', '.join(run['plots'])}")
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
