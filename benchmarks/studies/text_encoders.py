"""Which text encoder and classifier for the product-name branch? Validation beside test, under both rules.

    python -m benchmarks.studies.text_encoders [--data DIR] [--out DIR] [--encoders ...] [--classifiers ...]

The catalogue is read as the benchmark reads it (see :func:`benchmarks.studies.validation_rules.read_catalogue`);
every encoder is the benchmark's text embedding (fitted on the head and tail train names, cached by
:func:`fewshot.text.cache.cached_text_features`, the benchmark's cache entry). For the tail and head groups and
each validation rule (``stratified``: a random ``longtail.val_fraction`` of each class's train images;
``group``: whole (year, season) groups of each class, pixel copies on one side, given to ``fit(..., groups=)``
as the benchmark does), every classifier (``benchmarks.builtin.text.text_classifier`` with the config's
``[longtail]`` and ``[text]`` settings, and ``logreg``, a class-balanced logistic regression on standardised
features, :class:`fewshot.methods.balanced_logreg.BalancedLogReg`) gets

- a validation macro top-1 / top-5: fitted on the train part of the rule's split (choosing its own settings
  on an inner split of that part, with that part's groups), scored on the validation part; an encoder that
  learns from names (TF-IDF, bag-of-words) is refitted without the validation part's names for this figure,
  as the benchmark's is fitted without the test names (fitted on them, TF-IDF + logreg scored 2.7 points
  higher on the tail's group-rule validation);
- a test macro top-1 / top-5: fitted on all the group's train images (choosing its settings on the rule's
  split, exactly the benchmark's ``text`` method), scored on the group's test images (odd years).

Validation picks an (encoder, classifier) per group under each rule, and by the mean over the groups (one text
branch serves them all): the group rule's picks are the ones for cpu.toml's ``[text]``. Writes results.json and
results.md (every row, the picks) into ``--out`` (default: a fresh ``runs/text_encoders-<timestamp>/``;
``--out benchmarks/results/text_encoders`` refreshes the committed table).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.studies.outdir import OUT_HELP, output_folder
from benchmarks.studies.record import study_config, study_header
from benchmarks.studies.validation_rules import (
    GROUPS,
    RULES,
    read_catalogue,
    text_features_of,
)
from fewshot.utils.errors import run_cli

ENCODERS = ("tfidf", "bow", "minilm")
CLASSIFIERS = ("centroid", "crt", "tau_norm", "logit_adjust", "logreg")
UNVALIDATED = ("centroid", "logreg")  # nothing chosen on validation: one test fit serves both rules
FITTED = ("tfidf", "bow")  # encoders that learn from the names they are fitted on


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.text_encoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset folder (default: $FEWSHOT_DATA)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    p.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=CLASSIFIERS)
    p.add_argument("--config", default="cpu", help="the benchmark config whose [longtail] and [text] settings the "
                                                  "classifiers take (a shipped name or a TOML file; default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine "
                                                          "a second busy process stalls 2-thread kernels ~10x)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="config overrides such as longtail.epochs=3")
    return p


def make_classifier(cfg: Any, encoder: str, classifier: str) -> Any:
    """The ``text`` method's classifier for (encoder, classifier); ``logreg`` wrapped as text_classifier wraps
    the others (it is not among text.classifier's values yet)."""
    from benchmarks.builtin.text import text_classifier
    from fewshot.methods import TextHead
    from fewshot.methods.balanced_logreg import BalancedLogReg

    if classifier == "logreg":
        return TextHead(BalancedLogReg())
    return text_classifier(replace(cfg, text=replace(cfg.text, classifier=classifier)))


def validation_features(cat: Any, encoder: str, max_features: int, train: np.ndarray, fit_part: np.ndarray,
                        val_part: np.ndarray, cached: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit part, validation part) features of a group's train rows ``train``: an encoder that learns from names
    (``FITTED``) is refitted on every head and tail train name but the validation part's, so that no validation
    name shapes its vocabulary or weights (as no test name shapes the benchmark's); MiniLM learns nothing, so
    its cached features serve as they are."""
    if encoder not in FITTED:
        return cached[fit_part], cached[val_part]
    from fewshot.text import get_encoder

    names = np.asarray(cat.ds.names, dtype=object)
    seen = np.setdiff1d(cat.train_rows, train[val_part])
    model = get_encoder(encoder, max_features=max_features).fit(names[seen].tolist())
    return model.transform(names[train[fit_part]].tolist()), model.transform(names[train[val_part]].tolist())


def score(clf: Any, x: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    from fewshot.evaluation import per_class_topk

    result = per_class_topk(clf.scores(x).float(), torch.from_numpy(y))
    return {"top1": float(result.macro["top1"]), "top5": float(result.macro["top5"])}


def main(args: argparse.Namespace) -> dict:
    from fewshot.data.validation import validation_split
    from fewshot.methods.base import fit_validated
    from fewshot.utils.io import atomic_write_json, atomic_write_text

    started = time.perf_counter()
    cfg = study_config(args)
    cat = read_catalogue(args.data, cfg, progress=not args.no_progress)
    lt = cfg.longtail
    rows: list[dict] = []
    encode_seconds: dict[str, float] = {}
    n_fits = len(args.encoders) * len(GROUPS) * len(args.classifiers) * len(RULES)
    bar = tqdm(total=n_fits, desc="text encoders x classifiers", unit="fit", disable=args.no_progress)
    for encoder in args.encoders:
        start = time.perf_counter()
        bar.set_postfix_str(f"{encoder}: encoding names")
        feats = text_features_of(cat, encoder, cfg.text.max_features)
        encode_seconds[encoder] = time.perf_counter() - start
        for group in GROUPS:
            train, test = cat.rows(group, "train"), cat.rows(group, "test")
            y, y_test = cat.protocol.targets(train, group), cat.protocol.targets(test, group)
            x, x_test = feats[f"{group}_train"], feats[f"{group}_test"]
            codes = cat.codes[train]
            unvalidated_test: dict[str, tuple[dict, float, dict]] = {}
            for rule in RULES:
                groups = codes if rule == "group" else None
                fit_part, val_part = validation_split(y, lt.val_fraction, cfg.seed, groups=groups)
                start = time.perf_counter()
                x_fit, x_val = validation_features(cat, encoder, cfg.text.max_features, train, fit_part, val_part,
                                                   x)
                refit_seconds = time.perf_counter() - start
                for classifier in args.classifiers:
                    bar.set_postfix_str(f"{encoder} {group} {rule} {classifier}")
                    start = time.perf_counter()
                    clf = make_classifier(cfg, encoder, classifier)
                    fit_validated(clf, x_fit, torch.from_numpy(y[fit_part]),
                                  None if groups is None else groups[fit_part])
                    val = score(clf, x_val, y[val_part])
                    val_seconds = time.perf_counter() - start
                    start = time.perf_counter()
                    if classifier in UNVALIDATED and classifier in unvalidated_test:
                        test_figures, test_seconds, chosen = unvalidated_test[classifier]
                    else:
                        clf = make_classifier(cfg, encoder, classifier)
                        fit_validated(clf, x, torch.from_numpy(y), groups)
                        test_figures, chosen = score(clf, x_test, y_test), _plain(getattr(clf, "chosen", {}))
                        test_seconds = time.perf_counter() - start
                        if classifier in UNVALIDATED:
                            unvalidated_test[classifier] = (test_figures, test_seconds, chosen)
                    rows.append({"encoder": encoder, "classifier": classifier, "group": group, "rule": rule,
                                 "dim": int(x.shape[1]), "n_fit": len(fit_part), "n_val": len(val_part),
                                 "n_test": len(y_test), "val_macro_top1": val["top1"], "val_macro_top5": val["top5"],
                                 "test_macro_top1": test_figures["top1"], "test_macro_top5": test_figures["top5"],
                                 "chosen_on_test_fit": chosen, "val_encoder_refit_seconds": refit_seconds,
                                 "val_fit_seconds": val_seconds,
                                 "test_fit_seconds": test_seconds})
                    bar.update(1)
    bar.close()
    picks = pick(rows)
    seconds = {"encode": encode_seconds, "total": time.perf_counter() - started}
    extra = ([] if list(args.encoders) == list(ENCODERS) else ["--encoders " + " ".join(args.encoders)]) + \
        ([] if list(args.classifiers) == list(CLASSIFIERS) else ["--classifiers " + " ".join(args.classifiers)])
    result = {**study_header("text_encoders", args, cfg, extra), **cat.record(),
              "settings": {"longtail": {"epochs": lt.epochs, "lr": lt.lr, "batch_size": lt.batch_size,
                                        "taus": list(lt.taus), "val_fraction": lt.val_fraction},
                           "text": {"max_features": cfg.text.max_features,
                                    "weight_decays": list(cfg.text.weight_decays)}, "seed": cfg.seed},
              "picks": picks, "rows": rows, "seconds": seconds}
    out = output_folder("text_encoders", args.out)
    if out is not None:
        atomic_write_json(out / "results.json", result)
        atomic_write_text(out / "results.md", table(result))
        tqdm.write(f"results in {out}: results.md, results.json ({seconds['total'] / 60:.1f} min)")
    return result


def _plain(chosen: dict) -> dict:
    """A classifier's ``chosen`` as JSON values."""
    return {k: (v if isinstance(v, (int, float, str, list, type(None))) else str(v)) for k, v in chosen.items()}


def pick(rows: list[dict]) -> dict[str, Any]:
    """Per (group, rule): the (encoder, classifier) with the best validation macro top-1 (first in the study's
    order among ties), its test figure, the best test figure of any row and the regret (best test - its test);
    ``mean/<rule>``: the same for the mean over the groups (one text branch serves every group)."""
    out: dict[str, Any] = {}
    pairs = list(dict.fromkeys((r["encoder"], r["classifier"]) for r in rows))
    for rule in RULES:
        tables = {}
        for group in GROUPS:
            mine = {(r["encoder"], r["classifier"]): r for r in rows if r["group"] == group and r["rule"] == rule}
            if mine:
                tables[group] = {k: (v["val_macro_top1"], v["test_macro_top1"]) for k, v in mine.items()}
        if len(tables) == len(GROUPS):
            tables["mean"] = {k: tuple(float(np.mean([tables[g][k][i] for g in GROUPS])) for i in (0, 1))
                              for k in pairs}
        for group, table_ in tables.items():
            best_val = max(table_, key=lambda k: table_[k][0])
            best_test = max(table_, key=lambda k: table_[k][1])
            out[f"{group}/{rule}"] = {
                "encoder": best_val[0], "classifier": best_val[1], "val_macro_top1": table_[best_val][0],
                "test_macro_top1": table_[best_val][1],
                "best_test": {"encoder": best_test[0], "classifier": best_test[1],
                              "test_macro_top1": table_[best_test][1]},
                "regret": table_[best_test][1] - table_[best_val][1]}
    return dict(sorted(out.items(), key=lambda kv: ([*GROUPS, "mean"].index(kv[0].split("/")[0]),
                                                     RULES.index(kv[0].split("/")[1]))))


def _p(v: float) -> str:
    return f"{100 * v:.1f}"


def table(result: dict) -> str:
    """results.md: every (encoder, classifier, group) row, both rules, validation beside test."""
    by = {(r["encoder"], r["classifier"], r["group"], r["rule"]): r for r in result["rows"]}
    lines = ["# Text encoders x classifiers: validation beside test, under both validation rules", "",
             f"Git {result['git_revision']}, {result['cpu']} ({result['torch_threads']} torch "
             f"thread{'s' if result['torch_threads'] != 1 else ''}); "
             f"`{result['command']}`. Macro top-1 (top-5) in %. Validation: fitted on the train part of the rule's "
             "split, scored on its validation part (TF-IDF and bag-of-words refitted without the validation "
             "names); test: fitted on all the group's train images (settings chosen "
             "on the rule's split), scored on the odd years. Seconds: the two fits (validation, test) on this "
             "machine; `logreg` and `centroid` choose nothing on validation, so one test fit serves both rules.", "",
             "| group | encoder | classifier | dim | stratified: val | stratified: test | group: val | group: test "
             "| fit s (strat / group) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    encoders = list(dict.fromkeys(r["encoder"] for r in result["rows"]))
    classifiers = list(dict.fromkeys(r["classifier"] for r in result["rows"]))
    for group in GROUPS:
        for encoder in encoders:
            for classifier in classifiers:
                s, g = by.get((encoder, classifier, group, "stratified")), by.get((encoder, classifier, group, "group"))
                if s is None or g is None:
                    continue
                lines.append(
                    f"| {group} | {encoder} | {classifier} | {s['dim']} | {_p(s['val_macro_top1'])} "
                    f"({_p(s['val_macro_top5'])}) | {_p(s['test_macro_top1'])} ({_p(s['test_macro_top5'])}) | "
                    f"{_p(g['val_macro_top1'])} ({_p(g['val_macro_top5'])}) | {_p(g['test_macro_top1'])} "
                    f"({_p(g['test_macro_top5'])}) | {s['val_fit_seconds'] + s['test_fit_seconds']:.0f} / "
                    f"{g['val_fit_seconds'] + g['test_fit_seconds']:.0f} |")
    enc = result["seconds"]["encode"]
    lines += ["", "Encoding (or reading the cached features of) every head and tail name: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in enc.items()) + f"; total {result['seconds']['total'] / 60:.1f} "
              "min.", "", "## What validation picks", "",
              "Per group, and by the mean of the tail and head figures (`mean`: one text branch serves every group). "
              "Regret: the best test figure of any pair minus the test figure of the pick, in points.", "",
              "| group | rule | validation picks | its validation | its test | best on test | regret |",
              "|---|---|---|---:|---:|---|---:|"]
    for key, p in result["picks"].items():
        group, rule = key.split("/")
        lines.append(f"| {group} | {rule} | {p['encoder']} + {p['classifier']} | {_p(p['val_macro_top1'])} | "
                     f"{_p(p['test_macro_top1'])} | {p['best_test']['encoder']} + {p['best_test']['classifier']} "
                     f"({_p(p['best_test']['test_macro_top1'])}) | {_p(p['regret'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.studies.text_encoders"))
