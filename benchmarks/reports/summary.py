"""Result files of a benchmark run: per_class.csv, summary.json and summary.md (all written atomically)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.reports.data_notes import data_lines, is_kaggle_catalogue
from benchmarks.reports.statistics import statistics_markdown, with_statistics
from fewshot.data.protocols import TRANSFER_GROUPS, EpisodicProtocol, TransferProtocol
from fewshot.evaluation import BUCKETS, assign_buckets
from fewshot.utils.io import atomic_write_json, atomic_write_text

# The seed project's figures: as published, and as per-class means of its own notebook (top-1 / top-5).
SEED_REFERENCE = {
    "head": {"published": (0.90, 0.99), "notebook_macro": (0.888, 0.995)},
    "tail": {"published": (0.77, 0.85), "notebook_macro": (0.707, 0.950)},
}
# Best published solution on the same 60x80 images (a Conv4 ProtoNet), episodic accuracy in %.
PUBLISHED_EPISODIC = {"5w1s": 78.8, "5w5s": 91.6, "15w1s": 58.6, "15w5s": 76.9}


def n_train_of(protocol: TransferProtocol, classes: tuple[str, ...]) -> np.ndarray:
    return protocol.counts.loc[list(classes), "n_train"].to_numpy(np.int64)


def summary_dict(transfer: dict, episodic: dict, protocol: TransferProtocol | None, synthetic: bool,
                 duplicates: dict | None = None, name_subsets: dict | None = None, statistics: dict | None = None,
                 methods: dict | None = None, validation: dict | None = None) -> dict:
    """The run's summary.json. Each transfer group's method rows carry macro/micro top-1/top-5 and the
    Many/Medium/Few bucket means (top-1 in ``buckets``, top-5 in ``buckets_top5``); the joint group's also
    ``head_macro_top1`` / ``tail_macro_top1`` (its macro top-1 over the head classes and over the tail
    classes: one classifier, judged on both); with ``statistics`` (:mod:`benchmarks.reports.statistics`) each
    figure's interval in ``ci`` (same keys, [low, high]) and, for the methods run once per seed, every seed's
    figures in ``seeds`` ({metric: {seed: value}}); the group's comparisons and ranking in
    ``statistics``. ``methods``: each method's declaration (groups, inputs); ``validation``: the rule applied."""
    out: dict[str, Any] = {"synthetic": synthetic, "transfer": {g: {} for g in TRANSFER_GROUPS}, "episodic": {},
                           "shots": {}}
    for group in TRANSFER_GROUPS:
        for method, result in transfer.get(group, {}).items():
            row = result.summary()
            n_train = n_train_of(protocol, protocol.classes(group))
            row["buckets"] = result.buckets(n_train, "top1")
            row["buckets_top5"] = result.buckets(n_train, "top5")
            if group == "all":
                row.update(_head_tail_means(result.table, protocol))
            by_seed = transfer.get("seeds", {}).get(group, {}).get(method)
            if by_seed:
                row["seeds"] = {metric: {s: figures[metric] for s, figures in by_seed.items()}
                                for metric in ("macro_top1", "micro_top1", "macro_top5", "micro_top5")}
            out["transfer"][group][method] = row
    out["shots"] = transfer.get("shots", {})
    out["shots_kind"] = transfer.get("shots_kind", {})
    if transfer.get("choices"):
        out["choices"] = transfer["choices"]
    out["episodic"] = episodic.get("episodic", {})
    for method, by_seed in episodic.get("seeds", {}).items():
        for setting, row in out["episodic"][method].items():
            row["seeds"] = {s: means[setting] for s, means in by_seed.items()}
    if "split" in episodic:
        out["episodic_split"] = episodic["split"]
    if statistics:
        out = with_statistics(out, statistics)
    if methods:
        out["methods"] = methods
    if validation:
        out["validation"] = validation
    if duplicates is not None:
        out["duplicates"] = duplicates
    if name_subsets:
        out["name_subsets"] = name_subsets
    return _clean(out)


def _head_tail_means(table: pd.DataFrame, protocol: TransferProtocol) -> dict[str, float]:
    """Macro top-1/top-5 of a joint-group result over its head classes and over its tail classes."""
    out = {}
    for part in ("head", "tail"):
        rows = table[table["name"].isin(protocol.classes(part)) & (table["n"] > 0)]
        for col in ("top1", "top5"):
            out[f"{part}_macro_{col}"] = float(rows[col].mean()) if len(rows) else float("nan")
    return out


def per_class_table(transfer: dict, episodic: dict, tp: TransferProtocol | None, ep: EpisodicProtocol | None,
                    methods: tuple[str, ...]) -> pd.DataFrame:
    """One row per class of the head, tail, all (head + tail again, scored by joint classifiers) and
    evaluation groups, then ``<method>/top1``, ``<method>/top5``.

    Head, tail and all rows: top-k on the transfer protocol's test images. Evaluation rows (episodic
    protocol): ``n_train`` is empty (novel classes), ``n_test`` the class's images, and ``top1`` the
    accuracy of its queries over the 5-way 5-shot evaluation episodes (top-5 is meaningless there).
    """
    rows = []
    if tp is not None:
        for group in TRANSFER_GROUPS:
            if group == "all" and not transfer.get("all"):
                continue
            names = tp.classes(group)
            n_train = n_train_of(tp, names)
            n_test = tp.counts.loc[list(names), "n_test"].to_numpy(np.int64)
            for name, a, b, bucket in zip(names, n_train, n_test, assign_buckets(n_train)):
                rows.append({"class": name, "group": group, "n_train": int(a), "n_test": int(b), "bucket": bucket})
    if ep is not None:
        for name in ep.evaluation:
            rows.append({"class": name, "group": "evaluation", "n_train": np.nan,
                         "n_test": int(ep.counts[name]), "bucket": ""})
    table = pd.DataFrame(rows, columns=["class", "group", "n_train", "n_test", "bucket"])
    for method in methods:
        top1 = np.full(len(table), np.nan)
        top5 = np.full(len(table), np.nan)
        for group in TRANSFER_GROUPS:
            result = transfer.get(group, {}).get(method)
            if result is None:
                continue
            acc = result.table.set_index("name")
            sel = (table["group"] == group).to_numpy()
            top1[sel] = acc.loc[table.loc[sel, "class"], "top1"].to_numpy()
            top5[sel] = acc.loc[table.loc[sel, "class"], "top5"].to_numpy()
        per_class = episodic.get("class_accuracy", {}).get(method)
        if per_class:
            sel = (table["group"] == "evaluation").to_numpy()
            top1[sel] = [per_class.get(c, np.nan) for c in table.loc[sel, "class"]]
        if not (np.isnan(top1).all() and np.isnan(top5).all()):
            table[f"{method}/top1"] = top1
            table[f"{method}/top5"] = top5
    return table


def _pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}"


def _wall_words(run: dict) -> str:
    """This attempt's wall time; a resumed run also gives what its phases took across every attempt, since
    the reused phases' time is not in this attempt's clock."""
    words = f"{run['wall_seconds'] / 60:.1f} min"
    reused = run.get("reused_phases") or []
    if run.get("resumed") and reused:
        total = sum(run.get("phase_seconds", {}).values()) / 60
        words += (f" (this attempt, resumed; its phases took {total:.1f} min across every attempt, "
                  f"{len(reused)} of them finished by an earlier one)")
    return words


def summary_markdown(summary: dict, run: dict, per_class: pd.DataFrame) -> str:
    overrides = " ".join(run.get("overrides", []))
    lines = [f"# Benchmark `{run['config']}`" + (f" with `{overrides}`" if overrides else ""), ""]
    if summary["synthetic"]:
        lines += ["**SYNTHETIC DATA** (written by `fewshot synth`): these numbers say nothing about the real "
                  "catalogue; they only show that the pipeline runs.", ""]
    lines += [f"Data: {run['dataset']['root']} ({run['dataset']['n_images']} images). Git {run['git_revision']}, "
              f"seed {run['seed']}, device {run['device']}, wall time {_wall_words(run)}."
              + (f" Config overrides: `{overrides}`." if overrides else "")
              + (f" Changed on resume: {'; '.join(run['changed_on_resume'])}." if run.get("changed_on_resume") else ""),
              "",
              f"All figures in %. Transfer protocol: {_split_words(run)}; head = the {_n_head(per_class)} most "
              "frequent classes in train, tail = the other classes with train images; all = head + tail, scored "
              "by one classifier over every class. Macro = mean over classes with test images; micro = over "
              "test images.", ""]
    lines += data_lines(summary, run)  # the episodic classes and validation rule, settings fitted, items left out
    lines += _duplicates_line(summary.get("duplicates"))
    # the seed's and the published figures belong to the Kaggle catalogue and its protocols only
    kaggle = is_kaggle_catalogue(run)
    for group in TRANSFER_GROUPS:
        lines += _transfer_table(group, summary["transfer"].get(group, {}), per_class,
                                 reference=kaggle and _n_head(per_class) == 20)
    lines += statistics_markdown(summary.get("statistics", {}))
    if run.get("dataset", {}).get("n_with_text", 1):  # no product name in the data: no section on them
        lines += _subsets_table(summary.get("name_subsets", {}), summary["transfer"])
    lines += _choices_table(summary.get("choices", {}))
    n_query = run.get("evaluation", {}).get("n_query", 15)  # run.json records it since issue 26; 15 before
    lines += _shots_table(summary["shots"], summary.get("shots_kind", {})) + \
        _episodic_table(summary["episodic"], n_query, reference=kaggle) + _worst_classes(per_class)
    lines += ["## Phases", "", "| phase | seconds | reused |", "|---|---:|---|"]
    for name, seconds in run["phase_seconds"].items():
        how = "from " + run["imported_phases"][name] if name in run.get("imported_phases", {}) else "yes"
        lines.append(f"| {name} | {seconds:.0f} | {how if name in run['reused_phases'] else ''} |")
    return "\n".join(lines) + "\n"


def _split_words(run: dict) -> str:
    """The transfer split as run.json records it (the Kaggle layout's, for runs recorded before it did)."""
    return run.get("dataset", {}).get("transfer_split", {}).get("rule", "train = even years, test = odd years")


def _n_head(per_class: pd.DataFrame) -> int:
    n = int((per_class["group"] == "head").sum()) if "group" in per_class.columns else 0
    return n or 20


def _duplicates_line(dup: dict | None) -> list[str]:
    if not dup:
        return []
    if not dup.get("dedupe"):
        return [f"Duplicates: {dup['groups']} groups of pixel-identical images ({dup['files']} files) left in "
                "(data.dedupe = false).", ""]
    return [f"Duplicates: {dup['groups']} groups of pixel-identical images ({dup['files']} files). Transfer: "
            f"{dup.get('transfer_test_dropped', 0)} test images whose copy is in train left out; episodic: "
            f"{dup.get('episodic_dropped', 0)} copies left out (one image kept per group).", ""]


def _with_ci(value: float | None, ci: list | None) -> str:
    """"41.6 [34.6, 48.5]": a figure in % with its interval, when the run has one."""
    if not ci or ci[0] is None:
        return _pct(value)
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _seed_cell(r: dict) -> str:
    """The spread of a method's macro top-1 over the run's seeds: "40.9–42.3 (3)"; "–" when it ran once."""
    values = list((r.get("seeds") or {}).get("macro_top1", {}).values())
    return f"{_pct(min(values))}–{_pct(max(values))} ({len(values)})" if len(values) > 1 else "–"


def _transfer_table(group: str, results: dict, per_class: pd.DataFrame, reference: bool = True) -> list[str]:
    if not results:
        return []
    rows = per_class[per_class["group"] == group]
    n_way, n_scored = len(rows), int((rows["n_test"] > 0).sum())
    seeded = any(len((r.get("seeds") or {}).get("macro_top1", {})) > 1 for r in results.values())
    header = "| method | macro top-1 | macro top-5 | micro top-1 | micro top-5 |"
    sep = "|---|---:|---:|---:|---:|"
    if group == "all":
        header += " head macro top-1 | tail macro top-1 |"
        sep += "---:|---:|"
    header += " Many | Medium | Few |" + (" macro top-1 over seeds |" if seeded else "")
    sep += "---:|---:|---:|" + ("---:|" if seeded else "")
    scored = "" if n_scored == n_way else f"; macro over the {n_scored} with test images"
    title = "head + tail together (joint, one classifier)" if group == "all" else f"{group} classes"
    lines = [f"## Transfer, {title} ({n_way}-way{scored})", "", header, sep]
    for method, r in results.items():
        ci = r.get("ci") or {}
        row = "| " + " | ".join([method] + [_with_ci(r[m], ci.get(m)) for m in
                                            ("macro_top1", "macro_top5", "micro_top1", "micro_top5")]) + " |"
        if group == "all":
            row += f" {_pct(r.get('head_macro_top1'))} | {_pct(r.get('tail_macro_top1'))} |"
        row += " " + " | ".join(_with_ci(r.get("buckets", {}).get(b), (ci.get("buckets") or {}).get(b))
                                for b in BUCKETS) + " |"
        lines.append(row + (f" {_seed_cell(r)} |" if seeded else ""))
    if group in SEED_REFERENCE and reference:
        ref = SEED_REFERENCE[group]
        pad = " – | – | – |" + (" – |" if seeded else "")
        lines += [f"| seed, as published | {_pct(ref['published'][0])} | {_pct(ref['published'][1])} | – | – |{pad}",
                  f"| seed notebook, per-class mean | {_pct(ref['notebook_macro'][0])} | "
                  f"{_pct(ref['notebook_macro'][1])} | – | – |{pad}"]
    lines += ["", "Buckets by train images per class: Many > 100, Medium 20–100, Few < 20 (top-1, macro)."
              + (" In brackets: 95% intervals of a class-stratified bootstrap of the test images."
                 if any(r.get("ci") for r in results.values()) else "")
              + (" Over seeds: the lowest and highest macro top-1 of the seeds the method ran with (how many)."
                 if seeded else ""), ""]
    return lines


def _subsets_table(subsets: dict, transfer: dict) -> list[str]:
    """Each method's macro top-1 on every test image and on those whose product name lacks its class name."""
    if not subsets:
        return []
    lines = ["## Test images whose product name does not contain their class name", "",
             "Text methods read product names, a different input than the images. Many names spell out the "
             "article type; this is each method on the images whose names do not.", ""]
    for group, sub in subsets.items():
        lines += [f"{group}: {_pct(sub['share_with_class_word'])}% of {sub['n_test']} test names contain their class "
                  f"name; {sub['n_without_class_word']} do not.", "",
                  "| method | macro top-1 (all) | macro top-1 (without) | micro top-1 (without) | macro top-5 (without) |",
                  "|---|---:|---:|---:|---:|"]
        for method, row in sub["methods"].items():
            overall = transfer.get(group, {}).get(method, {}).get("macro_top1")
            lines.append(f"| {method} | {_pct(overall)} | {_pct(row.get('macro_top1'))} | {_pct(row.get('micro_top1'))} "
                         f"| {_pct(row.get('macro_top5'))} |")
        lines.append("")
    return lines


def _choice_cells(chosen: dict, prefix: str = "") -> list[str]:
    """"key value" cells; nested dicts (a fusion's per-branch validation scores) as "key.sub value"; the
    settings chosen at an edge of their grid in bold with a mark."""
    cells = []
    edges = set(chosen.get("at_grid_edge") or ())
    for k, v in chosen.items():
        if k == "at_grid_edge":
            continue
        if k in edges:
            cells.append(f"**{prefix}{k} {v:.4g} (grid edge)**" if isinstance(v, float) else f"**{prefix}{k} {v} (grid edge)**")
        elif isinstance(v, dict):
            cells += _choice_cells(v, f"{prefix}{k}.")
        else:
            cells.append(f"{prefix}{k} {v:.4g}" if isinstance(v, float) else f"{prefix}{k} {v}")
    return cells


def _choices_table(choices: dict) -> list[str]:
    """What each long-tail head chose on validation images carved from train, group by group."""
    if not choices:
        return []
    lines = ["## Choices made on validation images (carved from train)", "",
             "A setting chosen at an edge of its grid (or the first or last epoch trained) is marked: a wider grid "
             "might have chosen otherwise.", "", "| method | group | choices |", "|---|---|---|"]
    for method, by_group in choices.items():
        for group, chosen in by_group.items():
            if chosen:
                cells = ", ".join(_choice_cells(chosen))
                lines.append(f"| {method} | {group} | {cells} |")
    return lines + [""]


def _shots_table(shots: dict, kinds: dict) -> list[str]:
    if not shots:
        return []
    ks = list(next(iter(shots.values())))
    lines = ["## Tail macro top-1 with K train images per class as prototypes", "",
             "| method | curve | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|---|" + "---:|" * len(ks)]
    for method, row in shots.items():
        cells = [f"{_pct(row[k]['macro_top1'])} ± {_pct(row[k]['macro_top1_std'])}" if row[k]["draws"] > 1
                 else _pct(row[k]["macro_top1"]) for k in ks]
        lines.append(f"| {method} | {kinds.get(method, '–')} | " + " | ".join(cells) + " |")
    return lines + ["", "K is capped at what a class has; mean ± std over seeded draws; 'all' uses every train image. "
                    "'few-shot': the backbone never saw a tail image, so K images are all the method learns a "
                    "tail class from; 'prototype subsampling': the backbone was trained on every tail train "
                    "image, so the curve only shows how many prototypes the head needs.", ""]


def _episodic_table(episodic: dict, n_query: int = 15, reference: bool = True) -> list[str]:
    if not episodic:
        return []
    settings = list(next(iter(episodic.values())))
    lines = ["## Episodic protocol, evaluation classes", "",
             "| method | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for method, row in episodic.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{_pct(row[s]['mean'])} ± {_pct(row[s]['ci95'])}" for s in settings) + " |")
    if reference:
        lines.append("| best published (Conv4 ProtoNet) | " + " | ".join(
            f"{PUBLISHED_EPISODIC[s]:.1f}" if s in PUBLISHED_EPISODIC else "–" for s in settings) + " |")
    n_eps = next(iter(next(iter(episodic.values())).values()))["n_episodes"]
    return lines + ["", f"Mean accuracy ± 95% confidence interval over {n_eps} seeded episodes ({n_query} "
                        f"{'query' if n_query == 1 else 'queries'} per class).", ""]


def _worst_classes(per_class: pd.DataFrame, n: int = 5, min_test: int = 5) -> list[str]:
    """Each transfer method's worst tail classes among those with enough test images to say so."""
    tail = per_class[(per_class["group"] == "tail") & (per_class["n_test"] >= min_test)]
    methods = [c[:-5] for c in tail.columns if c.endswith("/top1") and tail[c].notna().any()]
    if tail.empty or not methods:
        return []
    lines = [f"## Where each method fails: its {n} worst tail classes with >= {min_test} test images",
             "", "Top-1 in %, then (train images / test images).", ""]
    for m in methods:
        worst = tail.sort_values([f"{m}/top1", "n_train"]).head(n)
        cells = ", ".join(f"{r['class']} {_pct(r[f'{m}/top1'], 0)} ({int(r['n_train'])}/{int(r['n_test'])})"
                          for _, r in worst.iterrows())
        lines.append(f"- **{m}**: {cells}")
    return lines + [""]


def write_results(out: Path, summary: dict, run: dict, per_class: pd.DataFrame) -> None:
    atomic_write_text(out / "per_class.csv", per_class.to_csv(index=False, float_format="%.6g"))
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary, run, per_class))


def _clean(obj: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
