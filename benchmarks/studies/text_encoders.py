"""Which text encoder and classifier for the product-name branch? Measured on validation images only.

    python -m benchmarks.studies.text_encoders [--data DIR] [--out DIR]

For the head and tail groups of the transfer protocol, 20% of each class's train (even-year) images are
held out (``stratified_split``, seed 0); every encoder is fitted on the other head and tail train names
(as the benchmark fits it on all of them) and every classifier on the group's remaining items; macro top-1/top-5 on the held-out names decide cpu.toml's ``[text]``.
No test (odd-year) name is read. Writes results.json and results.md into ``--out`` (default: a fresh
``runs/text_encoders-<timestamp>/``; ``--out benchmarks/results/text_encoders`` refreshes the committed table).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmarks.builtin.text import text_classifier
from benchmarks.studies.outdir import OUT_HELP, output_folder
from fewshot.data.layouts import data_dir
from fewshot.data.protocols import TransferProtocol
from fewshot.data.split import stratified_split
from fewshot.data.styles import read_styles
from fewshot.evaluation import per_class_topk
from fewshot.text import get_encoder
from fewshot.utils.errors import run_cli
from fewshot.utils.io import atomic_write_json, atomic_write_text
from fewshot.utils.runinfo import git_revision

ENCODERS = ("tfidf", "minilm")
CLASSIFIERS = ("centroid", "crt", "tau_norm", "logit_adjust")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.text_encoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset folder (default: $FEWSHOT_DATA)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    return p


def main(args: argparse.Namespace) -> list[dict]:
    from benchmarks.config import BenchmarkConfig, TextConfig

    styles = read_styles(data_dir(args.data) / "styles.csv")
    protocol = TransferProtocol.from_styles(styles)
    names = styles["productDisplayName"].fillna("").astype(str).to_numpy(object)
    rows: list[dict] = []
    for encoder_name in args.encoders:
        for group in ("tail", "head"):
            train = getattr(protocol, f"{group}_train")
            y = protocol.targets(train, group)
            fit, val = stratified_split(y, 0.2, seed=0)
            start = time.perf_counter()
            # as in the benchmark, the encoder sees every head and tail train name, here minus the held-out ones
            seen = np.setdiff1d(np.concatenate([protocol.head_train, protocol.tail_train]), train[val])
            encoder = get_encoder(encoder_name).fit(names[seen])
            x_fit, x_val = encoder.transform(names[train[fit]].tolist()), encoder.transform(names[train[val]].tolist())
            encode_s = time.perf_counter() - start
            for classifier in CLASSIFIERS:
                cfg = BenchmarkConfig(text=TextConfig(encoder=encoder_name, classifier=classifier), methods=())
                start = time.perf_counter()
                clf = text_classifier(cfg).fit(x_fit, torch.from_numpy(y[fit]))
                result = per_class_topk(clf.scores(x_val), torch.from_numpy(y[val]))
                rows.append({"encoder": encoder_name, "classifier": classifier, "group": group, "dim": x_fit.shape[1],
                             "val_macro_top1": result.macro["top1"], "val_macro_top5": result.macro["top5"],
                             "encode_seconds": encode_s, "fit_seconds": time.perf_counter() - start})
                print(rows[-1], flush=True)
    out = output_folder("text_encoders", args.out)
    if out is None:
        return rows
    atomic_write_json(out / "results.json", {"git_revision": git_revision(), "rows": rows})
    lines = ["# Text encoders x classifiers on validation names (20% of each class's train images)", "",
             f"Git {git_revision()}. Macro top-1 / top-5 in %; seconds on this machine.", "",
             "| encoder | classifier | group | dim | macro top-1 | macro top-5 | encode s | fit s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['encoder']} | {r['classifier']} | {r['group']} | {r['dim']} | {100 * r['val_macro_top1']:.1f} | "
              f"{100 * r['val_macro_top5']:.1f} | {r['encode_seconds']:.0f} | {r['fit_seconds']:.1f} |" for r in rows]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.studies.text_encoders"))
