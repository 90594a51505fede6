"""Is the trainer's data path a bottleneck? Trainer images/s against pure forward+backward+step images/s.

    python -m benchmarks.studies.train_speed [--backbone resnet18] [--height 80 --width 60] [--batch-size 128]

Both sides run the same model, batch size, optimiser, memory format and precision in the same process; the
trainer side is :func:`fewshot.training.fit` over synthetic uint8 images (gather from the in-RAM uint8
tensor, augmentation, normalisation, loss, schedule, progress bookkeeping), the pure side feeds a fixed
random float tensor. Rounds alternate which side goes first to cancel drift on a noisy machine. Prints a
table and ``ratio=<trainer / pure>``, then absolute forward+backward(+step) and forward-only images/s of
other backbones, and writes it all (atomically) to ``train_speed.md`` in a fresh ``runs/train_speed-<UTC
timestamp>/`` folder, or in ``--out DIR``: ``--out benchmarks/results`` refreshes the committed table.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.studies.outdir import OUT_HELP, output_folder
from fewshot.images.inference import autocast, autocast_dtype
from fewshot.models.backbones import create_backbone
from fewshot.models.classifier import Classifier
from fewshot.training.loop import TrainConfig, fit
from fewshot.training.optim import build_optimizer
from fewshot.training.supervised import SupervisedObjective
from fewshot.utils.device import resolve_device
from fewshot.utils.io import atomic_write_text
from fewshot.utils.runinfo import cpu_model


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=True)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--height", type=int, default=80)
    p.add_argument("--width", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--classes", type=int, default=20, help="classes of the synthetic labels / linear head")
    p.add_argument("--steps", type=int, default=4, help="batches per timed block")
    p.add_argument("--rounds", type=int, default=4, help="alternating trainer/pure rounds")
    p.add_argument("--no-augment", action="store_true", help="trainer without augmentation")
    p.add_argument("--cpu-amp", action="store_true", help="bf16 autocast on the CPU (both sides)")
    p.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last (both sides)")
    p.add_argument("--absolute", default="resnet18,conv4,resnet12",
                   help="comma-separated backbones whose absolute images/s to measure ('' for none)")
    p.add_argument("--absolute-steps", type=int, default=2, help="timed batches per absolute measurement")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pure_step_fn(model: torch.nn.Module, config: TrainConfig, device: torch.device, batch: int,
                  size: tuple[int, int], classes: int, train: bool) -> Callable[[], None]:
    """One forward+backward+SGD step (train) or one no-grad eval forward on fixed random tensors."""
    g = torch.Generator().manual_seed(1)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, *size, generator=g).to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    dtype = autocast_dtype(device, config.amp, config.cpu_amp)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.momentum, config.weight_decay)

    def step() -> None:
        if train:
            model.train()
            with autocast(device, dtype):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            model.eval()
            with torch.no_grad(), autocast(device, dtype):
                model(x)
    return step


def _images_per_s(step: Callable[[], None], steps: int, batch: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def _model(name: str, classes: int, seed: int, device: torch.device, config: TrainConfig) -> torch.nn.Module:
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    return Classifier(create_backbone(name, seed=seed), classes, seed=seed).to(device=device, memory_format=fmt)


def main(args: argparse.Namespace) -> dict:
    """Measure, print the report and write it to ``train_speed.md`` in the output folder (see the module
    docstring); returns the numbers, and ``path``: the file written (None with ``--out ''``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    device = resolve_device(args.device)
    config = _train_config(args, device)
    rng = np.random.default_rng(args.seed)
    n = args.steps * args.batch_size
    images = rng.integers(0, 256, (n, args.height, args.width, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, n)
    model = _model(args.backbone, args.classes, args.seed, device, config)
    objective = SupervisedObjective(images, labels, np.arange(n), config)
    rounds = _alternating_rounds(args, model, objective, config, device)
    # Total images over total time on each side: equal image counts, so a harmonic mean of the rates.
    agg = {k: statistics.harmonic_mean([r[k] for r in rounds]) for k in ("trainer", "pure")}
    ratio = agg["trainer"] / agg["pure"]
    data_ms = _data_path_ms(objective, config, device)
    absolute = _absolute_rates(args, model, config, device)
    load = (load_before, os.getloadavg()[0])
    report = _report(args, device, rounds, agg, ratio, data_ms, absolute, load)
    print(report)
    print(f"ratio={ratio:.3f}")
    folder = output_folder("train_speed", args.out)
    path = None if folder is None else folder / "train_speed.md"
    if path is not None:
        atomic_write_text(path, report)
        print(f"wrote {path}", file=sys.stderr)  # stdout's last line stays ratio=<x>
    return {"ratio": ratio, "rounds": rounds, "aggregate": agg, "data_ms_per_batch": data_ms, "absolute": absolute,
            "path": path}


def _train_config(args: argparse.Namespace, device: torch.device) -> TrainConfig:
    config = TrainConfig(epochs=1, batch_size=args.batch_size, val_fraction=0.0, warmup_epochs=0.0,
                         device=str(device), seed=args.seed, cpu_amp=args.cpu_amp, channels_last=not args.contiguous)
    if args.no_augment:
        config = dataclasses.replace(config, augment=dataclasses.replace(config.augment, enabled=False))
    return config


def _alternating_rounds(args: argparse.Namespace, model: torch.nn.Module, objective: SupervisedObjective,
                        config: TrainConfig, device: torch.device) -> list[dict[str, float]]:
    """``args.rounds`` rounds of (trainer images/s, pure images/s), the side that goes first alternating,
    after one unrecorded warm-up round."""
    size, batch = (args.height, args.width), args.batch_size
    pure = _pure_step_fn(model, config, device, batch, size, args.classes, train=True)

    def trainer() -> float:
        return fit(model, objective, config, progress=False, restore_best=False).history[0]["images_per_s"]

    def pure_block() -> float:
        return _images_per_s(pure, args.steps, batch, device)

    print(f"warm-up ({args.backbone}, {size[0]}x{size[1]}, batch {batch}, {device}, "
          f"{torch.get_num_threads()} threads)...", flush=True)
    trainer(), pure_block()  # one unrecorded round: oneDNN kernels, allocator and caches settle
    rounds = []
    for r in range(args.rounds):
        order = [("trainer", trainer), ("pure", pure_block)]
        got = dict((name, fn()) for name, fn in (order if r % 2 == 0 else order[::-1]))
        rounds.append(got)
        print(f"round {r + 1}: trainer {got['trainer']:.1f} img/s, pure {got['pure']:.1f} img/s, "
              f"ratio {got['trainer'] / got['pure']:.3f}", flush=True)
    return rounds


def _data_path_ms(objective: SupervisedObjective, config: TrainConfig, device: torch.device) -> float:
    """Milliseconds per batch of the data path alone: gather + augmentation + normalisation of one epoch,
    no model."""
    objective.setup(device, torch.channels_last if config.channels_last else torch.contiguous_format)
    g = torch.Generator().manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    for _ in objective.train_batches(0, g):
        pass
    _sync(device)
    return (time.perf_counter() - t0) / objective.steps_per_epoch() * 1000


def _absolute_rates(args: argparse.Namespace, model: torch.nn.Module, config: TrainConfig,
                    device: torch.device) -> list[dict]:
    """fwd+bwd+step and forward-only images/s of each ``--absolute`` backbone on random tensors."""
    size, batch = (args.height, args.width), args.batch_size
    absolute = []
    for name in [s for s in args.absolute.split(",") if s]:
        m = model if name == args.backbone else _model(name, args.classes, args.seed, device, config)
        row = {"backbone": name}
        for kind, train in (("fwd+bwd+step", True), ("forward", False)):
            step = _pure_step_fn(m, config, device, batch, size, args.classes, train)
            step()  # warm-up at this shape
            row[kind] = _images_per_s(step, args.absolute_steps, batch, device)
        absolute.append(row)
        print(f"{name}: fwd+bwd+step {row['fwd+bwd+step']:.1f} img/s, forward {row['forward']:.1f} img/s", flush=True)
    return absolute


def _report(args, device, rounds, agg, ratio, data_ms, absolute, load) -> str:
    step_ms = 1000.0 * args.batch_size / agg["pure"]
    lines = [
        "# Trainer throughput vs pure forward+backward",
        "",
        f"{args.backbone} at {args.height}x{args.width} (h x w), batch {args.batch_size}, {args.steps} batches per "
        f"block, {args.rounds} alternating rounds after one unrecorded warm-up round (the order flips every "
        f"round), augmentation "
        f"{'off' if args.no_augment else 'on'}, {'bf16 autocast' if args.cpu_amp else 'fp32'} on the CPU, "
        f"{'NCHW' if args.contiguous else 'channels_last'}, SGD with momentum.",
        "",
        "| round | trainer img/s | pure fwd+bwd+step img/s | ratio |",
        "|---|---|---|---|",
        *(f"| {i + 1} | {r['trainer']:.1f} | {r['pure']:.1f} | {r['trainer'] / r['pure']:.3f} |"
          for i, r in enumerate(rounds)),
        f"| all | {agg['trainer']:.1f} | {agg['pure']:.1f} | **{ratio:.3f}** |",
        "",
        f"Data path alone (gather from the uint8 RAM tensor + augmentation + normalisation, no model): "
        f"{data_ms:.1f} ms per batch of {args.batch_size}, i.e. {data_ms / step_ms:.1%} of a pure training step "
        f"({step_ms:.0f} ms at the aggregate pure rate).",
        "",
        f"ratio={ratio:.3f}",
        "",
    ]
    if absolute:
        lines += [f"## Absolute images/s at {args.height}x{args.width}, batch {args.batch_size} "
                  f"(random tensors, {args.absolute_steps} timed batches after one warm-up)", "",
                  "| backbone | fwd+bwd+SGD step img/s | forward-only (eval, no grad) img/s |", "|---|---|---|",
                  *(f"| {r['backbone']} | {r['fwd+bwd+step']:.1f} | {r['forward']:.1f} |" for r in absolute), ""]
    return "\n".join(lines + _machine_lines(device, load))


def _machine_lines(device: torch.device, load: tuple[float, float]) -> list[str]:
    return [
        "## Machine",
        "",
        f"- device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        f"- CPU: {platform.processor() or platform.machine()}, {cpu_model()}, {torch.get_num_threads()} torch threads",
        f"- python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{platform.platform()}",
        f"- command: `{' '.join(['python -m benchmarks.studies.train_speed', *sys.argv[1:]])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- 1-minute load average at start / end: {load[0]:.2f} / {load[1]:.2f} (other busy processes on a "
        "small machine distort every number here, tiny ops most)",
        "",
    ]


if __name__ == "__main__":
    main(get_args_parser().parse_args())
