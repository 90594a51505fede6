"""What the real-data studies (validation_rules, text_encoders) share: their start-up from the command line and
the header of the results they record (the machine, the revision, the command that reproduces them)."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
from collections.abc import Sequence
from typing import Any

import torch

from fewshot.utils.errors import UserError


def study_config(args: argparse.Namespace) -> Any:
    """The study's benchmark config (``--config`` with its overrides), after setting torch to ``--threads``."""
    from benchmarks.config import BenchmarkConfig
    from benchmarks.run import config_path
    from fewshot.config import load_config

    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be >= 1")
    torch.set_num_threads(args.threads)
    return load_config(BenchmarkConfig, config_path(args.config), list(args.overrides))


def study_header(study: str, args: argparse.Namespace, cfg: Any, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The first keys of a study's results.json: its name, git revision, CPU, threads, config and the command."""
    from fewshot.utils.runinfo import cpu_model, git_revision

    return {"study": study, "git_revision": git_revision(), "cpu": cpu_model(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(), "command": command_line(study, args, extra),
            "config": cfg.name, "overrides": list(args.overrides)}


def command_line(study: str, args: argparse.Namespace, extra: Sequence[str] = ()) -> str:
    """``python -m benchmarks.studies.<study>`` with the arguments that differ from the defaults (``extra``: the
    study's own, after ``--out``); the data folder as ``$FEWSHOT_DATA`` when that is where it came from."""
    parts = [f"python -m benchmarks.studies.{study}"]
    if args.data:
        parts.append("--data $FEWSHOT_DATA" if args.data == os.environ.get("FEWSHOT_DATA")
                     else f"--data {shlex.quote(str(args.data))}")
    if args.out:
        parts.append(f"--out {shlex.quote(str(args.out))}")
    parts += extra
    if args.threads != 1:
        parts.append(f"--threads {args.threads}")
    if args.config != "cpu":
        parts.append(f"--config {shlex.quote(str(args.config))}")
    return " ".join([*parts, *(shlex.quote(o) for o in args.overrides)])
