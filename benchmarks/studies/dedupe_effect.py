"""How much pixel-identical copies inflate episodic accuracy: the same embeddings, the same seeded episode
settings, on the evaluation classes with and without ``data.dedupe``.

    python -m benchmarks.studies.dedupe_effect --run RUN_DIR [--data DIR] [--out DIR]

The episodic protocol pools years, so a picture and its copy can be drawn as a support and a query of one
episode. This scores each episodic method of a finished run (its trained checkpoints, and the frozen
ImageNet features) on both versions of the evaluation set; only the evaluation images differ, the
embeddings are the run's (trained on the deduplicated background classes when the run deduplicated).
Writes ``dedupe_effect.json`` and ``dedupe_effect.md`` into ``--out`` (default: a fresh
``runs/dedupe_effect-<timestamp>/``; ``--out benchmarks/results/dedupe`` refreshes the committed table).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import benchmarks.builtin  # noqa: F401  (registers the built-in methods and embeddings)
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.engine.episodic_split import EpisodicSplit
from benchmarks.protocols.episodic import evaluate_method, scoring_inputs
from benchmarks.registry.embeddings import checkpoint_of, get_embedding
from benchmarks.registry.methods import get_method
from benchmarks.studies.outdir import OUT_HELP, output_folder
from fewshot.config import load_config
from fewshot.data.dataset import FashionProducts
from fewshot.data.duplicates import dataset_groups
from fewshot.data.layouts import data_dir
from fewshot.data.protocols import EpisodicProtocol
from fewshot.utils.device import resolve_device
from fewshot.utils.errors import UserError, run_cli
from fewshot.utils.io import atomic_write_json, atomic_write_text
from fewshot.utils.runinfo import git_revision


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.dedupe_effect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished benchmark run folder (its checkpoints)")
    p.add_argument("--data", help="dataset folder (default: the run's, or $FEWSHOT_DATA)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    if not (args.run / "config.resolved.toml").is_file():
        raise UserError(f"{args.run} is not a benchmark run folder: no config.resolved.toml")
    cfg = load_config(BenchmarkConfig, args.run / "config.resolved.toml")
    record = json.loads((args.run / "run.json").read_text())
    root = data_dir(args.data or record.get("dataset", {}).get("root"))
    ds = FashionProducts(root, warn=False).cached(cfg.data.image_size, progress=not args.no_progress)
    groups = dataset_groups(ds)
    ctx = RunContext(cfg, args.run, ds.images, ds.labels, ds.cache.pixels_sha256, phases=None,
                     progress=not args.no_progress, device=resolve_device(cfg.device))
    methods = [get_method(n) for n in cfg.methods if get_method(n).episodic and not get_method(n).missing()]
    results: dict = {"run": str(args.run), "config": cfg.name, "git_revision": git_revision(), "methods": {}}
    for dedupe in (False, True):
        protocol = EpisodicProtocol.from_styles(ds.styles, min_images=cfg.data.min_images,
                                                duplicate_groups=groups if dedupe else None)
        split = EpisodicSplit.make(cfg, protocol)
        key = "deduplicated" if dedupe else "with copies"
        results.setdefault("evaluation_images", {})[key] = len(protocol.evaluation_idx)
        for method in methods:
            emb = get_embedding(method.episodic)
            if not emb.frozen and not checkpoint_of(ctx, emb).is_file():
                raise UserError(f"{args.run} has no {emb.checkpoint}: run {method.name} there first")
            settings, _ = evaluate_method(ctx, method, *scoring_inputs(ctx, emb), split)
            results["methods"].setdefault(method.name, {})[key] = settings
    results["seconds"] = time.perf_counter() - start
    out = output_folder("dedupe_effect", args.out)
    if out is not None:
        atomic_write_json(out / "dedupe_effect.json", results)
        atomic_write_text(out / "dedupe_effect.md", markdown(results))
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    imgs = results["evaluation_images"]
    lines = [f"# Episodic accuracy with and without pixel-identical copies ({results['config']} run, git "
             f"{results['git_revision']})", "",
             f"Evaluation images: {imgs['with copies']} with copies, {imgs['deduplicated']} with one image kept per "
             "group. Mean accuracy in % over the same seeded episode settings; the difference is what copies "
             "in support and query add.", "",
             "| method | setting | with copies | deduplicated | difference |", "|---|---|---:|---:|---:|"]
    for method, by in results["methods"].items():
        for setting, row in by["with copies"].items():
            a, b = 100 * row["mean"], 100 * by["deduplicated"][setting]["mean"]
            lines.append(f"| {method} | {setting} | {a:.1f} ± {100 * row['ci95']:.1f} | "
                         f"{b:.1f} ± {100 * by['deduplicated'][setting]['ci95']:.1f} | {a - b:+.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.studies.dedupe_effect"))
